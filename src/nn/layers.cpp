// The layers: linear, convolution, pooling, dropout, normalization, embedding, activations.
#include <cmath>
#include <limits>

#include "core/tensor_impl.h"
#include "crisp/nn.h"

namespace crisp::nn {

namespace {

std::optional<Tensor> opt(const Tensor& t) {
  return t.defined() ? std::optional<Tensor>(t) : std::nullopt;
}

int64_t positive(int64_t v, const char* what, const char* layer, Loc loc) {
  CallScope scope(layer, loc);
  if (v < 1) fail(what, " must be >= 1, got ", v);
  return v;
}

// A size given once for every dimension, or once per dimension, each at least min.
std::vector<int64_t> per_dim(const Ints& v, int nd, const char* what, int64_t min) {
  std::vector<int64_t> out;
  if (v.v.size() == 1)
    out.assign(static_cast<size_t>(nd), v.v[0]);
  else if (v.v.size() == static_cast<size_t>(nd))
    out = v.v;
  else
    fail(what, " needs 1 or ", nd, " values, got ", v.v.size());
  for (int64_t x : out)
    if (x < min) fail(what, " must be >= ", min, ", got ", shape_str(v.v));
  return out;
}

// kaiming_uniform(a = sqrt(5)) as PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
Tensor fan_in_uniform(Shape shape, int64_t fan_in) {
  const double bound = fan_in > 0 ? 1 / std::sqrt(static_cast<double>(fan_in)) : 0;
  return uniform(std::move(shape), -bound, bound);
}

const char* conv_name(int nd, bool transposed) {
  static const char* names[2][3] = {{"Conv1d", "Conv2d", "Conv3d"},
                                    {"ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"}};
  return names[transposed ? 1 : 0][nd - 1];
}

std::vector<int64_t> conv_kernel(int nd, bool transposed, const Ints& kernel, const ConvArgs& a,
                                 int64_t in, int64_t out, Loc loc) {
  CallScope scope(conv_name(nd, transposed), loc);
  auto k = per_dim(kernel, nd, "kernel", 1);
  per_dim(a.stride, nd, "stride", 1);
  per_dim(a.padding, nd, "padding", 0);
  per_dim(a.dilation, nd, "dilation", 1);
  per_dim(a.output_padding, nd, "output_padding", 0);
  if (a.groups < 1) fail("groups must be >= 1, got ", a.groups);
  if (in % a.groups != 0) fail("in_channels ", in, " are not divisible by groups ", a.groups);
  if (out % a.groups != 0) fail("out_channels ", out, " are not divisible by groups ", a.groups);
  return k;
}

Shape conv_weight_shape(const ConvNd& c) {
  Shape s = c.transposed ? Shape{c.in_channels, c.out_channels / c.args.groups}
                         : Shape{c.out_channels, c.in_channels / c.args.groups};
  for (int64_t k : c.kernel) s.push_back(k);
  return s;
}

int64_t conv_fan_in(const ConvNd& c) {
  const Shape s = conv_weight_shape(c);
  int64_t f = s[1];
  for (size_t i = 2; i < s.size(); ++i) f *= s[i];
  return f;
}

Shape to_shape(const Ints& v, const char* what, const char* layer, Loc loc) {
  CallScope scope(layer, loc);
  if (v.v.empty()) fail(what, " must not be empty");
  for (int64_t d : v.v)
    if (d < 1) fail(what, " must be positive, got ", shape_str(v.v));
  return Shape(v.v);
}

}  // namespace

// ---- Linear ----

Linear::Linear(int64_t in, int64_t out, bool has_bias, Loc loc)
    : in_features(positive(in, "in_features", "Linear", loc)),
      out_features(positive(out, "out_features", "Linear", loc)),
      weight(this, "weight", fan_in_uniform({out, in}, in), loc),
      bias(this, "bias", has_bias ? fan_in_uniform({out}, in) : Tensor(), loc) {}

Tensor Linear::forward(const Tensor& x, Loc loc) {
  CallScope scope("Linear", loc);
  check_defined(x);
  if (x.ndim() < 1 || x.shape().back() != in_features)
    fail("expected input whose last dimension is in_features = ", in_features, ", got ",
         shape_str(x.shape()));
  return linear(x, weight, opt(bias));
}

// ---- convolution ----

ConvNd::ConvNd(int nd, bool transposed, int64_t in, int64_t out, Ints kernel_size, ConvArgs a,
               Loc loc)
    : nd(nd),
      transposed(transposed),
      in_channels(positive(in, "in_channels", conv_name(nd, transposed), loc)),
      out_channels(positive(out, "out_channels", conv_name(nd, transposed), loc)),
      kernel(conv_kernel(nd, transposed, kernel_size, a, in, out, loc)),
      args(std::move(a)),
      weight(this, "weight", fan_in_uniform(conv_weight_shape(*this), conv_fan_in(*this)), loc),
      bias(this, "bias", args.bias ? fan_in_uniform({out_channels}, conv_fan_in(*this)) : Tensor(),
           loc) {}

Tensor ConvNd::forward(const Tensor& x, Loc loc) {
  CallScope scope(conv_name(nd, transposed), loc);
  ConvOptions o{args.stride.v, args.padding.v, args.dilation.v, args.groups, args.output_padding.v};
  const auto b = opt(bias);
  if (transposed) {
    if (nd == 1) return conv_transpose1d(x, weight, b, o);
    if (nd == 2) return conv_transpose2d(x, weight, b, o);
    return conv_transpose3d(x, weight, b, o);
  }
  if (nd == 1) return conv1d(x, weight, b, o);
  if (nd == 2) return conv2d(x, weight, b, o);
  return conv3d(x, weight, b, o);
}

// ---- pooling ----

namespace {
const char* pool_name(int nd, bool max) {
  static const char* names[2][3] = {{"AvgPool1d", "AvgPool2d", "AvgPool3d"},
                                    {"MaxPool1d", "MaxPool2d", "MaxPool3d"}};
  return names[max ? 1 : 0][nd - 1];
}

PoolOptions pool_options(int nd, bool max, const Ints& kernel, const Ints& stride,
                         const Ints& padding, const Ints& dilation, bool count_include_pad,
                         Loc loc) {
  CallScope scope(pool_name(nd, max), loc);
  PoolOptions o;
  o.kernel = per_dim(kernel, nd, "kernel", 1);
  o.stride = stride.v.empty() ? o.kernel : per_dim(stride, nd, "stride", 1);
  o.padding = per_dim(padding, nd, "padding", 0);
  o.dilation = per_dim(dilation, nd, "dilation", 1);
  for (size_t i = 0; i < o.kernel.size(); ++i)
    if (o.padding[i] * 2 > o.kernel[i])
      fail("padding ", o.padding[i], " must be at most half of kernel size ", o.kernel[i]);
  o.count_include_pad = count_include_pad;
  return o;
}
}  // namespace

PoolNd::PoolNd(int nd, bool max, Ints kernel, Ints stride, Ints padding, Ints dilation,
               bool count_include_pad, Loc loc)
    : nd(nd),
      max(max),
      options(pool_options(nd, max, kernel, stride, padding, dilation, count_include_pad, loc)) {}

Tensor PoolNd::forward(const Tensor& x, Loc loc) {
  CallScope scope(pool_name(nd, max), loc);
  if (max) {
    if (nd == 1) return max_pool1d(x, options);
    if (nd == 2) return max_pool2d(x, options);
    return max_pool3d(x, options);
  }
  if (nd == 1) return avg_pool1d(x, options);
  if (nd == 2) return avg_pool2d(x, options);
  return avg_pool3d(x, options);
}

namespace {
// Row i averages input positions [floor(i*in/out), ceil((i+1)*in/out)).
Tensor adaptive_weights(int64_t out, int64_t in, DType dtype) {
  std::vector<double> a(static_cast<size_t>(out * in), 0.0);
  for (int64_t i = 0; i < out; ++i) {
    const int64_t start = (i * in) / out, end = ((i + 1) * in + out - 1) / out;
    for (int64_t j = start; j < end; ++j)
      a[static_cast<size_t>(i * in + j)] = 1.0 / static_cast<double>(end - start);
  }
  return Tensor(a, {out, in}, dtype);
}
}  // namespace

AdaptiveAvgPool2d::AdaptiveAvgPool2d(Ints size, Loc loc)
    : output_size([&] {
        CallScope scope("AdaptiveAvgPool2d", loc);
        return per_dim(size, 2, "output_size", 1);
      }()) {}

Tensor AdaptiveAvgPool2d::forward(const Tensor& x, Loc loc) {
  CallScope scope("AdaptiveAvgPool2d", loc);
  check_defined(x);
  check_floating(x);
  if (x.ndim() != 3 && x.ndim() != 4)
    fail("expected input [N, C, H, W] or [C, H, W], got ", shape_str(x.shape()));
  const int64_t H = x.shape()[x.ndim() - 2], W = x.shape()[x.ndim() - 1];
  const int64_t oh = output_size[0], ow = output_size[1];
  if (H == 0 || W == 0) fail("input ", shape_str(x.shape()), " has an empty spatial dimension");
  // Global pooling (ResNet's head) is a mean: its gradient is a broadcast, not a pool backward.
  if (oh == 1 && ow == 1) return mean(x, {-2, -1}, true);
  if (H % oh == 0 && W % ow == 0) return avg_pool2d(x, {.kernel = {H / oh, W / ow}});
  // Overlapping cells of unequal sizes: average rows, then columns, by matrix products.
  return matmul(matmul(adaptive_weights(oh, H, x.dtype()), x),
                adaptive_weights(ow, W, x.dtype()).t());
}

// ---- dropout ----

Dropout::Dropout(double p_, Loc loc)
    : p([&] {
        CallScope scope("Dropout", loc);
        if (!(p_ >= 0 && p_ <= 1)) fail("p must be in [0, 1], got ", p_);
        return p_;
      }()) {}

Tensor Dropout::forward(const Tensor& x, Loc loc) {
  CallScope scope("Dropout", loc);
  check_defined(x);
  if (!training() || p == 0) return x;
  if (p == 1) return x * 0;
  return dropout(x, p, true);
}

// ---- normalization ----

BatchNorm::BatchNorm(int64_t c, BatchNormArgs a, std::vector<int64_t> input_ndims, const char* name,
                     Loc loc)
    : num_features(positive(c, "num_features", name, loc)),
      args([&] {
        CallScope scope(name, loc);
        if (!(a.momentum >= 0 && a.momentum <= 1))
          fail("momentum must be in [0, 1], got ", a.momentum);
        if (!(a.eps >= 0)) fail("eps must be >= 0, got ", a.eps);
        return a;
      }()),
      weight(this, "weight", a.affine ? ones({c}) : Tensor(), loc),
      bias(this, "bias", a.affine ? zeros({c}) : Tensor(), loc),
      running_mean(this, "running_mean", a.track_running_stats ? zeros({c}) : Tensor(), loc),
      running_var(this, "running_var", a.track_running_stats ? ones({c}) : Tensor(), loc),
      num_batches_tracked(this, "num_batches_tracked",
                          a.track_running_stats ? scalar(0, i64) : Tensor(), loc),
      input_ndims_(std::move(input_ndims)),
      name_(name) {}

Tensor BatchNorm::forward(const Tensor& x, Loc loc) {
  CallScope scope(name_, loc);
  return run(x, false);
}

Tensor BatchNorm::forward_relu(const Tensor& x, Loc loc) {
  CallScope scope(name_, loc);
  return run(x, true);
}

Tensor BatchNorm::run(const Tensor& x, bool relu) {
  check_defined(x);
  if (std::find(input_ndims_.begin(), input_ndims_.end(), x.ndim()) == input_ndims_.end()) {
    std::string dims;
    for (int64_t d : input_ndims_) dims += (dims.empty() ? "" : " or ") + std::to_string(d);
    fail("expected ", dims, "-d input, got ", shape_str(x.shape()));
  }
  if (x.shape()[1] != num_features)
    fail("expected ", num_features, " channels (axis 1), got input ", shape_str(x.shape()));
  const bool track = args.track_running_stats;
  BatchNormState st;
  if (track) {
    st = {&running_mean, &running_var, args.momentum};
    if (training()) {
      NoGrad no_grad;
      num_batches_tracked += 1;
    }
  }
  return relu ? batch_norm_relu(x, opt(weight), opt(bias), training(), st, args.eps)
              : batch_norm(x, opt(weight), opt(bias), training(), st, args.eps);
}

LayerNorm::LayerNorm(Ints shape, double eps, bool affine, bool has_bias, Loc loc)
    : normalized_shape(to_shape(shape, "normalized_shape", "LayerNorm", loc)),
      eps(eps),
      weight(this, "weight", affine ? ones(normalized_shape) : Tensor(), loc),
      bias(this, "bias", affine && has_bias ? zeros(normalized_shape) : Tensor(), loc) {}

Tensor LayerNorm::forward(const Tensor& x, Loc loc) {
  CallScope scope("LayerNorm", loc);
  return layer_norm(x, normalized_shape, opt(weight), opt(bias), eps);
}

GroupNorm::GroupNorm(int64_t groups, int64_t channels, double eps, bool affine, Loc loc)
    : num_groups(positive(groups, "num_groups", "GroupNorm", loc)),
      num_channels([&] {
        CallScope scope("GroupNorm", loc);
        if (channels < 1) fail("num_channels must be >= 1, got ", channels);
        if (channels % groups != 0)
          fail("num_channels ", channels, " is not divisible by num_groups ", groups);
        return channels;
      }()),
      eps(eps),
      weight(this, "weight", affine ? ones({channels}) : Tensor(), loc),
      bias(this, "bias", affine ? zeros({channels}) : Tensor(), loc) {}

Tensor GroupNorm::forward(const Tensor& x, Loc loc) {
  CallScope scope("GroupNorm", loc);
  check_defined(x);
  if (x.ndim() < 2 || x.shape()[1] != num_channels)
    fail("expected input [N, ", num_channels, ", *], got ", shape_str(x.shape()));
  return group_norm(x, num_groups, opt(weight), opt(bias), eps);
}

RMSNorm::RMSNorm(Ints shape, std::optional<double> eps, bool affine, Loc loc)
    : normalized_shape(to_shape(shape, "normalized_shape", "RMSNorm", loc)),
      eps(eps),
      weight(this, "weight", affine ? ones(normalized_shape) : Tensor(), loc) {}

Tensor RMSNorm::forward(const Tensor& x, Loc loc) {
  CallScope scope("RMSNorm", loc);
  check_defined(x);
  double e = 0;
  if (eps) {
    e = *eps;
  } else {
    switch (x.dtype()) {
      case DType::f64:
        e = std::numeric_limits<double>::epsilon();
        break;
      case DType::f16:
        e = 0x1p-10;
        break;
      case DType::bf16:
        e = 0x1p-7;
        break;
      default:
        e = std::numeric_limits<float>::epsilon();
        break;
    }
  }
  return rms_norm(x, normalized_shape, opt(weight), e);
}

// ---- embedding ----

Embedding::Embedding(int64_t n, int64_t d, Loc loc)
    : num_embeddings(positive(n, "num_embeddings", "Embedding", loc)),
      embedding_dim(positive(d, "embedding_dim", "Embedding", loc)),
      weight(this, "weight", normal({n, d}, 0, 1), loc) {}

Tensor Embedding::forward(const Tensor& x, Loc loc) {
  CallScope scope("Embedding", loc);
  return embedding(x, weight);
}

// ---- shape and activations ----

Tensor Flatten::forward(const Tensor& x, Loc loc) {
  CallScope scope("Flatten", loc);
  return flatten(x, start_dim, end_dim);
}

Tensor Identity::forward(const Tensor& x, Loc) { return x; }

Tensor ReLU::forward(const Tensor& x, Loc loc) {
  CallScope scope("ReLU", loc);
  return relu(x);
}

Tensor GELU::forward(const Tensor& x, Loc loc) {
  CallScope scope("GELU", loc);
  return gelu(x, approximate);
}

Tensor SiLU::forward(const Tensor& x, Loc loc) {
  CallScope scope("SiLU", loc);
  return silu(x);
}

Tensor Tanh::forward(const Tensor& x, Loc loc) {
  CallScope scope("Tanh", loc);
  return tanh(x);
}

Tensor Sigmoid::forward(const Tensor& x, Loc loc) {
  CallScope scope("Sigmoid", loc);
  return sigmoid(x);
}

Tensor LeakyReLU::forward(const Tensor& x, Loc loc) {
  CallScope scope("LeakyReLU", loc);
  return leaky_relu(x, negative_slope);
}

Tensor Softmax::forward(const Tensor& x, Loc loc) {
  CallScope scope("Softmax", loc);
  return softmax(x, dim);
}

Tensor LogSoftmax::forward(const Tensor& x, Loc loc) {
  CallScope scope("LogSoftmax", loc);
  return log_softmax(x, dim);
}

}  // namespace crisp::nn
