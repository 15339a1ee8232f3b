// Front ends of the nn ops: argument checks, output shapes, gradients.
#include <algorithm>
#include <cmath>
#include <limits>

#include "core/tensor_impl.h"
#include "crisp/amp.h"

namespace crisp {

// ---- convolution ----

namespace {

using Grads = std::vector<Tensor>;

// A per-dimension parameter given once (applies to every dim) or once per dim.
std::vector<int64_t> per_dim(const char* what, const std::vector<int64_t>& v, int64_t nd,
                             int64_t min) {
  std::vector<int64_t> out;
  if (v.size() == 1)
    out.assign(static_cast<size_t>(nd), v[0]);
  else if (static_cast<int64_t>(v.size()) == nd)
    out = v;
  else
    fail(what, " needs 1 or ", nd, " values, got ", v.size());
  for (int64_t x : out)
    if (x < min) fail(what, " must be >= ", min, ", got ", shape_str(v));
  return out;
}

// The attributes every conv kernel shares: nd, stride..., padding..., dilation..., groups,
// channels_last.
struct ConvAttrs {
  std::vector<int64_t> ints;
  Shape x_shape, w_shape;      // of the forward convolution
  bool channels_last = false;  // outputs are stored channels-last
  // The output of kind, of the given shape, computed from in.
  Tensor run(OpKind kind, const std::vector<Tensor>& in, const Shape& shape, DType dtype) const {
    if (channels_last) return dispatch_channels_last(Op{kind, ints}, in, {{shape, dtype}})[0];
    return dispatch(Op{kind, ints}, in, {OutSpec{shape, dtype}})[0];
  }
};

Tensor conv_raw(const Tensor& x, const Tensor& w, const Tensor& b, const ConvAttrs& a,
                const Shape& y_shape);
Tensor conv_input_raw(const Tensor& dy, const Tensor& w, const Tensor& b, const ConvAttrs& a);
Tensor conv_weight_raw(const Tensor& x, const Tensor& dy, const ConvAttrs& a);

// Sums x [N, C, *] over all axes but 1; its gradient broadcasts back.
Tensor channel_sum(const Tensor& x) {
  Tensor s = dispatch(Op{OpKind::channel_sum}, {x}, {x.shape()[1]}, x.dtype());
  return with_grad(s, {x}, [shape = x.shape()](const Tensor& g) {
    Shape gs(shape.size(), 1);
    gs[1] = shape[1];
    return Grads{expand(reshape(g, gs), shape)};
  });
}

// The three kernels are each other's gradients, so every order of derivative is available.
Tensor conv_raw(const Tensor& x, const Tensor& w, const Tensor& b, const ConvAttrs& a,
                const Shape& y_shape) {
  std::vector<Tensor> in{x, w};
  if (b.defined()) in.push_back(b);
  Tensor y = a.run(OpKind::conv, in, y_shape, x.dtype());
  const bool nx = x.requires_grad(), nw = w.requires_grad();
  return with_grad(
      y, in, [x = x.detach(), w = w.detach(), has_b = b.defined(), a, nx, nw](const Tensor& g) {
        Grads out{nx ? conv_input_raw(g, w, Tensor(), a) : Tensor(),
                  nw ? conv_weight_raw(x, g, a) : Tensor()};
        if (has_b) out.push_back(channel_sum(g));
        return out;
      });
}

Tensor conv_input_raw(const Tensor& dy, const Tensor& w, const Tensor& b, const ConvAttrs& a) {
  std::vector<Tensor> in{dy, w};
  if (b.defined()) in.push_back(b);
  Tensor dx = a.run(OpKind::conv_backward_input, in, a.x_shape, dy.dtype());
  const bool ndy = dy.requires_grad(), nw = w.requires_grad();
  return with_grad(
      dx, in, [dy = dy.detach(), w = w.detach(), has_b = b.defined(), a, ndy, nw](const Tensor& g) {
        Grads out{ndy ? conv_raw(g, w, Tensor(), a, dy.shape()) : Tensor(),
                  nw ? conv_weight_raw(g, dy, a) : Tensor()};
        if (has_b) out.push_back(channel_sum(g));
        return out;
      });
}

Tensor conv_weight_raw(const Tensor& x, const Tensor& dy, const ConvAttrs& a) {
  Tensor dw = a.run(OpKind::conv_backward_weight, {x, dy}, a.w_shape, x.dtype());
  const bool nx = x.requires_grad(), ndy = dy.requires_grad();
  return with_grad(dw, {x, dy}, [x = x.detach(), dy = dy.detach(), a, nx, ndy](const Tensor& g) {
    return Grads{nx ? conv_input_raw(dy, g, Tensor(), a) : Tensor(),
                 ndy ? conv_raw(x, g, Tensor(), a, dy.shape()) : Tensor()};
  });
}

Tensor conv_nd(int64_t nd, bool transposed, const Tensor& x_in, const Tensor& w,
               const std::optional<Tensor>& bias, const ConvOptions& opt) {
  if (amp::lowers(x_in, w, bias))  // autocast
    return conv_nd(nd, transposed, amp::lower(x_in), amp::lower(w), amp::lower(bias), opt);
  check_defined(x_in, "input");
  check_defined(w, "weight");
  check_floating(x_in);
  check_same_dtype(x_in, w);
  if (x_in.ndim() != nd + 2 && x_in.ndim() != nd + 1)
    fail("expected input of ", nd + 1, " (unbatched) or ", nd + 2, " dims, got ",
         shape_str(x_in.shape()));
  if (w.ndim() != nd + 2) fail("expected weight of ", nd + 2, " dims, got ", shape_str(w.shape()));
  const bool unbatched = x_in.ndim() == nd + 1;
  Tensor x = unbatched ? unsqueeze(x_in, 0) : x_in;
  const auto stride = per_dim("stride", opt.stride, nd, 1);
  const auto padding = per_dim("padding", opt.padding, nd, 0);
  const auto dilation = per_dim("dilation", opt.dilation, nd, 1);
  const auto out_pad = per_dim("output_padding", opt.output_padding, nd, 0);
  const int64_t groups = opt.groups;
  if (groups < 1) fail("groups must be >= 1, got ", groups);
  const Shape& xs = x.shape();
  const Shape& ws = w.shape();
  const int64_t N = xs[0], C = xs[1];
  // The forward convolution's channels: transposed, x plays the part of its output.
  const int64_t conv_out = transposed ? C : ws[0];
  const int64_t conv_in = transposed ? ws[1] * groups : ws[1] * groups;
  if (transposed) {
    if (ws[0] != C)
      fail("weight ", shape_str(ws), " expects ", ws[0], " input channels, got input ",
           shape_str(x_in.shape()));
    if (C % groups != 0) fail("input channels ", C, " are not divisible by groups ", groups);
  } else {
    if (ws[1] * groups != C)
      fail("weight ", shape_str(ws), " with groups=", groups, " expects ", ws[1] * groups,
           " input channels, got input ", shape_str(x_in.shape()));
    if (ws[0] % groups != 0)
      fail("output channels ", ws[0], " are not divisible by groups ", groups);
  }
  const int64_t out_channels = transposed ? conv_in : conv_out;
  Tensor b;
  if (bias) {
    b = *bias;
    check_defined(b, "bias");
    check_same_dtype(x, b);
    if (b.ndim() != 1 || b.shape()[0] != out_channels)
      fail("bias must have shape [", out_channels, "], got ", shape_str(b.shape()));
  }
  Shape out_shape{N, out_channels};
  for (int64_t i = 0; i < nd; ++i) {
    const size_t j = static_cast<size_t>(i);
    const int64_t in = xs[2 + j], k = ws[2 + j];
    const int64_t span = dilation[j] * (k - 1) + 1;
    if (transposed) {
      if (out_pad[j] >= stride[j] && out_pad[j] >= dilation[j])
        fail("output_padding ", out_pad[j], " must be smaller than stride ", stride[j],
             " or dilation ", dilation[j]);
      const int64_t o = (in - 1) * stride[j] - 2 * padding[j] + span + out_pad[j];
      if (o < 1)
        fail("input ", shape_str(x_in.shape()), " gives an empty output along spatial dim ", i);
      out_shape.push_back(o);
    } else {
      if (in + 2 * padding[j] < span)
        fail("input ", shape_str(x_in.shape()), " padded by ", padding[j],
             " is smaller than the kernel's span ", span, " along spatial dim ", i);
      out_shape.push_back((in + 2 * padding[j] - span) / stride[j] + 1);
    }
  }
  ConvAttrs a;
  a.ints.push_back(nd);
  for (const auto* v : {&stride, &padding, &dilation})
    a.ints.insert(a.ints.end(), v->begin(), v->end());
  a.ints.push_back(groups);
  // A channels-last input gives a channels-last output, with the weight stored so too: cuDNN's
  // fastest kernels want all three in that layout.
  a.channels_last = nd == 2 && is_channels_last(x);
  a.ints.push_back(a.channels_last ? 1 : 0);
  const Tensor wk = a.channels_last ? to_channels_last(w) : w;
  Tensor y;
  if (transposed) {
    a.x_shape = out_shape;
    a.w_shape = ws;
    y = conv_input_raw(x, wk, b, a);
  } else {
    a.x_shape = xs;
    a.w_shape = ws;
    y = conv_raw(x, wk, b, a, out_shape);
  }
  return unbatched ? squeeze(y, 0) : y;
}

}  // namespace

Tensor conv1d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias, ConvOptions opt,
              Loc loc) {
  CallScope scope("conv1d", loc);
  return conv_nd(1, false, x, w, bias, opt);
}
Tensor conv2d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias, ConvOptions opt,
              Loc loc) {
  CallScope scope("conv2d", loc);
  return conv_nd(2, false, x, w, bias, opt);
}
Tensor conv3d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias, ConvOptions opt,
              Loc loc) {
  CallScope scope("conv3d", loc);
  return conv_nd(3, false, x, w, bias, opt);
}
Tensor conv_transpose1d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias,
                        ConvOptions opt, Loc loc) {
  CallScope scope("conv_transpose1d", loc);
  return conv_nd(1, true, x, w, bias, opt);
}
Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias,
                        ConvOptions opt, Loc loc) {
  CallScope scope("conv_transpose2d", loc);
  return conv_nd(2, true, x, w, bias, opt);
}
Tensor conv_transpose3d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias,
                        ConvOptions opt, Loc loc) {
  CallScope scope("conv_transpose3d", loc);
  return conv_nd(3, true, x, w, bias, opt);
}

// ---- pooling ----

namespace {

Tensor pool_nd(int64_t nd, bool is_max, const Tensor& x_in, const PoolOptions& opt) {
  check_defined(x_in);
  check_floating(x_in);
  if (x_in.ndim() != nd + 2 && x_in.ndim() != nd + 1)
    fail("expected input of ", nd + 1, " (unbatched) or ", nd + 2, " dims, got ",
         shape_str(x_in.shape()));
  if (opt.kernel.empty()) fail("kernel size must be given");
  const auto kernel = per_dim("kernel", opt.kernel, nd, 1);
  const auto stride = opt.stride.empty() ? kernel : per_dim("stride", opt.stride, nd, 1);
  const auto padding = per_dim("padding", opt.padding, nd, 0);
  const auto dilation = per_dim("dilation", opt.dilation, nd, 1);
  if (!is_max)
    for (int64_t d : dilation)
      if (d != 1) fail("dilation is not supported by average pooling");
  // Channels-last input: 2-d max pooling runs in that layout; the others in the usual one, the
  // output given back in the input's.
  const bool channels_last = is_channels_last(x_in) && x_in.ndim() == nd + 2;
  if (channels_last && !(is_max && nd == 2))
    return to_channels_last(pool_nd(nd, is_max, x_in.contiguous(), opt));
  const bool unbatched = x_in.ndim() == nd + 1;
  Tensor x = unbatched ? unsqueeze(x_in, 0) : x_in;
  Shape out_shape{x.shape()[0], x.shape()[1]};
  for (size_t j = 0; j < static_cast<size_t>(nd); ++j) {
    if (padding[j] * 2 > kernel[j])
      fail("padding ", padding[j], " must be at most half of kernel size ", kernel[j]);
    const int64_t in = x.shape()[2 + j], span = dilation[j] * (kernel[j] - 1) + 1;
    const int64_t o = (in + 2 * padding[j] - span) / stride[j] + 1;
    if (in + 2 * padding[j] < span || o < 1)
      fail("input ", shape_str(x_in.shape()), " is too small for kernel ", shape_str(kernel),
           " (padding ", shape_str(padding), ", dilation ", shape_str(dilation), ")");
    out_shape.push_back(o);
  }
  std::vector<int64_t> ints{nd};
  for (const auto* v : {&kernel, &stride, &padding}) ints.insert(ints.end(), v->begin(), v->end());
  Tensor y;
  if (is_max) {
    ints.insert(ints.end(), dilation.begin(), dilation.end());
    ints.push_back(channels_last ? 1 : 0);
    auto run = [channels_last](const Op& op, const std::vector<Tensor>& in,
                               const std::vector<OutSpec>& outs) {
      return channels_last ? dispatch_channels_last(op, in, outs) : dispatch(op, in, outs);
    };
    auto outs = run(Op{OpKind::max_pool, ints}, {x}, {{out_shape, x.dtype()}, {out_shape, i64}});
    y = with_grad(outs[0], {x}, [=, idx = outs[1], xs = x.shape()](const Tensor& g) {
      return Grads{run(Op{OpKind::max_pool_backward, ints}, {g, idx}, {{xs, g.dtype()}})[0]};
    });
  } else {
    ints.push_back(opt.count_include_pad ? 1 : 0);
    y = dispatch(Op{OpKind::avg_pool, ints}, {x}, out_shape, x.dtype());
    y = with_grad(y, {x}, [ints, xs = x.shape()](const Tensor& g) {
      return Grads{dispatch(Op{OpKind::avg_pool_backward, ints}, {g}, xs, g.dtype())};
    });
  }
  return unbatched ? squeeze(y, 0) : y;
}

}  // namespace

Tensor max_pool1d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("max_pool1d", loc);
  return pool_nd(1, true, x, opt);
}
Tensor max_pool2d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("max_pool2d", loc);
  return pool_nd(2, true, x, opt);
}
Tensor max_pool3d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("max_pool3d", loc);
  return pool_nd(3, true, x, opt);
}
Tensor avg_pool1d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("avg_pool1d", loc);
  return pool_nd(1, false, x, opt);
}
Tensor avg_pool2d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("avg_pool2d", loc);
  return pool_nd(2, false, x, opt);
}
Tensor avg_pool3d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("avg_pool3d", loc);
  return pool_nd(3, false, x, opt);
}

// ---- dropout and embedding ----

namespace {
// t times dropout op's mask; its gradient is the gradient times the same mask.
Tensor apply_dropout(const Op& op, const Tensor& t) {
  Tensor y = dispatch(op, {t.contiguous()}, t.shape(), t.dtype());
  return with_grad(y, {t}, [op](const Tensor& g) { return Grads{apply_dropout(op, g)}; });
}
}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen, Loc loc) {
  CallScope scope("dropout", loc);
  check_defined(x);
  check_floating(x);
  if (!(p >= 0 && p < 1)) fail("p must be in [0, 1), got ", p);
  if (!training || p == 0) return x;
  // Keep with probability 1 - p; the kept elements are scaled so the expectation is unchanged.
  // The mask is drawn again from the same stream for the gradient instead of being stored.
  return apply_dropout(Op{OpKind::dropout, random_stream(gen, x.numel()), {p}}, x);
}

Tensor embedding(const Tensor& indices, const Tensor& weight, Loc loc) {
  CallScope scope("embedding", loc);
  check_defined(indices, "indices");
  check_defined(weight, "weight");
  if (indices.dtype() != i64) fail("indices must be int64, got ", dtype_name(indices.dtype()));
  check_floating(weight);
  if (weight.ndim() != 2) fail("weight must be 2-d [num, dim], got ", shape_str(weight.shape()));
  Shape out_shape = indices.shape();
  out_shape.push_back(weight.shape()[1]);
  Tensor y = dispatch(Op{OpKind::embedding}, {indices, weight}, out_shape, weight.dtype());
  return with_grad(
      y, {indices, weight}, [idx = indices.detach(), ws = weight.shape()](const Tensor& g) {
        const int64_t m = idx.numel();
        Tensor dw = dispatch(Op{OpKind::embedding_backward},
                             {reshape(g, {m, ws[1]}), reshape(idx, {m})}, ws, g.dtype());
        return Grads{Tensor(), dw};
      });
}

// ---- normalization ----

namespace {

std::optional<Tensor> checked_param(const std::optional<Tensor>& t, DType dtype, const Shape& shape,
                                    const char* what) {
  if (!t) return std::nullopt;
  check_defined(*t, what);
  if (t->dtype() != dtype)
    fail("dtype mismatch: ", dtype_name(dtype), " and ", dtype_name(t->dtype()), " (", what,
         "; cast one of them explicitly)");
  if (t->shape() != shape)
    fail(what, " must have shape ", shape_str(shape), ", got ", shape_str(t->shape()));
  return t;
}

// layer_norm and rms_norm: x viewed as [M, D], D the product of the normalized trailing dims.
Tensor trailing_norm(bool center, const Tensor& x, const Shape& normalized,
                     const std::optional<Tensor>& weight, const std::optional<Tensor>& bias,
                     double eps) {
  check_defined(x);
  check_floating(x);
  const size_t k = normalized.size();
  if (k == 0) fail("normalized_shape must not be empty");
  if (k > x.shape().size() ||
      !std::equal(normalized.begin(), normalized.end(), x.shape().end() - k))
    fail("normalized_shape ", shape_str(normalized), " does not match the trailing dims of input ",
         shape_str(x.shape()));
  if (!(eps >= 0)) fail("eps must be >= 0, got ", eps);
  auto w = checked_param(weight, x.dtype(), normalized, "weight");
  auto b = checked_param(bias, x.dtype(), normalized, "bias");
  const int64_t D = numel_of(normalized), M = D == 0 ? 0 : x.numel() / D;
  std::vector<Tensor> in{reshape(x, {M, D})};
  if (w) in.push_back(reshape(*w, {D}));
  if (b) in.push_back(reshape(*b, {D}));
  std::vector<int64_t> ints{w ? 1 : 0};
  if (center) ints.push_back(b ? 1 : 0);
  std::vector<OutSpec> outs{{{M, D}, x.dtype()}};
  if (center) outs.push_back({{M}, x.dtype()});
  outs.push_back({{M}, x.dtype()});
  auto r = dispatch(Op{center ? OpKind::layer_norm : OpKind::rms_norm, ints, {eps}}, in, outs);
  Tensor y = reshape(r[0], x.shape());
  std::vector<Tensor> grad_in{x};
  if (w) grad_in.push_back(*w);
  if (b) grad_in.push_back(*b);
  std::vector<Tensor> saved{in[0].detach()};
  for (size_t i = 1; i < r.size(); ++i) saved.push_back(r[i]);
  if (w) saved.push_back(in[1].detach());
  return with_grad(y, grad_in, [=, xs = x.shape()](const Tensor& g) {
    std::vector<Tensor> bin{reshape(g, {M, D})};
    bin.insert(bin.end(), saved.begin(), saved.end());
    std::vector<OutSpec> bouts{{{M, D}, g.dtype()}};
    if (w) bouts.push_back({{D}, g.dtype()});
    if (b) bouts.push_back({{D}, g.dtype()});
    auto d =
        dispatch(Op{center ? OpKind::layer_norm_backward : OpKind::rms_norm_backward, {w ? 1 : 0}},
                 bin, bouts);
    Grads out{reshape(d[0], xs)};
    if (w) out.push_back(reshape(d[1], normalized));
    if (b) out.push_back(reshape(d[2], normalized));
    return out;
  });
}

}  // namespace

Tensor layer_norm(const Tensor& x, Shape normalized_shape, const std::optional<Tensor>& weight,
                  const std::optional<Tensor>& bias, double eps, Loc loc) {
  if (amp::upcasts(x, weight, bias))  // autocast
    return layer_norm(amp::f32(x), normalized_shape, amp::f32(weight), amp::f32(bias), eps, loc);
  CallScope scope("layer_norm", loc);
  return trailing_norm(true, x, normalized_shape, weight, bias, eps);
}

Tensor rms_norm(const Tensor& x, Shape normalized_shape, const std::optional<Tensor>& weight,
                double eps, Loc loc) {
  if (amp::upcasts(x, weight))  // autocast
    return rms_norm(amp::f32(x), normalized_shape, amp::f32(weight), eps, loc);
  CallScope scope("rms_norm", loc);
  return trailing_norm(false, x, normalized_shape, weight, std::nullopt, eps);
}

Tensor group_norm(const Tensor& x, int64_t groups, const std::optional<Tensor>& weight,
                  const std::optional<Tensor>& bias, double eps, Loc loc) {
  if (amp::upcasts(x, weight, bias))  // autocast
    return group_norm(amp::f32(x), groups, amp::f32(weight), amp::f32(bias), eps, loc);
  CallScope scope("group_norm", loc);
  check_defined(x);
  check_floating(x);
  if (x.ndim() < 2) fail("expected input [N, C, *], got ", shape_str(x.shape()));
  const int64_t N = x.shape()[0], C = x.shape()[1];
  if (groups < 1 || C % groups != 0)
    fail("channels ", C, " are not divisible into ", groups, " groups");
  if (!(eps >= 0)) fail("eps must be >= 0, got ", eps);
  auto w = checked_param(weight, x.dtype(), {C}, "weight");
  auto b = checked_param(bias, x.dtype(), {C}, "bias");
  const int64_t S = N * C == 0 ? 0 : x.numel() / (N * C);
  Tensor x3 = reshape(x, {N, C, S});
  std::vector<Tensor> in{x3};
  if (w) in.push_back(*w);
  if (b) in.push_back(*b);
  auto r = dispatch(Op{OpKind::group_norm, {groups, w ? 1 : 0, b ? 1 : 0}, {eps}}, in,
                    {{{N, C, S}, x.dtype()}, {{N, groups}, x.dtype()}, {{N, groups}, x.dtype()}});
  Tensor y = reshape(r[0], x.shape());
  std::vector<Tensor> grad_in{x};
  if (w) grad_in.push_back(*w);
  if (b) grad_in.push_back(*b);
  std::vector<Tensor> saved{x3.detach(), r[1], r[2]};
  if (w) saved.push_back(w->detach());
  const bool has_w = w.has_value(), has_b = b.has_value();
  return with_grad(y, grad_in, [=, xs = x.shape()](const Tensor& g) {
    std::vector<Tensor> bin{reshape(g, {N, C, S})};
    bin.insert(bin.end(), saved.begin(), saved.end());
    std::vector<OutSpec> bouts{{{N, C, S}, g.dtype()}};
    if (has_w || has_b) bouts.push_back({{C}, g.dtype()});
    if (has_b) bouts.push_back({{C}, g.dtype()});
    auto d = dispatch(Op{OpKind::group_norm_backward, {groups, has_w ? 1 : 0}}, bin, bouts);
    Grads out{reshape(d[0], xs)};
    if (has_w) out.push_back(d[1]);
    if (has_b) out.push_back(d[2]);
    return out;
  });
}

namespace {

// batch_norm, and with relu, relu(batch_norm) as the same ops: the ReLU applied as the output is
// written, and its gradient (zero where the output is) taken inside batch norm's backward.
Tensor batch_norm_any(const Tensor& x, const std::optional<Tensor>& weight,
                      const std::optional<Tensor>& bias, bool training, BatchNormState state,
                      double eps, bool relu, Loc loc) {
  // Autocast: 16-bit x with float32 parameters is normalized as it is, with statistics and
  // parameter gradients in float32 (casting x up and back would cost two passes over it); any
  // other mismatch casts x to the parameters' dtype.
  const std::optional<DType> autocast = amp::batch_norm_dtype(x, weight, state.running_mean);
  const bool half_x = x.defined() && (x.dtype() == f16 || x.dtype() == bf16);
  if (autocast && !(half_x && *autocast == f32))
    return batch_norm_any(x.cast(*autocast), weight, bias, training, state, eps, relu, loc);
  CallScope scope(relu ? "batch_norm_relu" : "batch_norm", loc);
  check_defined(x);
  check_floating(x);
  const DType pdt = autocast.value_or(x.dtype());  // statistics' and parameters' dtype
  if (x.ndim() < 2) fail("expected input [N, C, *], got ", shape_str(x.shape()));
  if (!(eps >= 0)) fail("eps must be >= 0, got ", eps);
  const int64_t N = x.shape()[0], C = x.shape()[1];
  const int64_t S = N * C == 0 ? 0 : x.numel() / (N * C);
  auto w = checked_param(weight, pdt, {C}, "weight");
  auto b = checked_param(bias, pdt, {C}, "bias");
  if ((state.running_mean == nullptr) != (state.running_var == nullptr))
    fail("running_mean and running_var must be given together");
  const bool tracked = state.running_mean != nullptr;
  if (tracked) {
    checked_param(*state.running_mean, pdt, {C}, "running_mean");
    checked_param(*state.running_var, pdt, {C}, "running_var");
  }
  const bool batch_stats = training || !tracked;
  if (batch_stats && N * S <= 1)
    fail("expected more than 1 value per channel when training, got input ", shape_str(x.shape()));
  // Channels-last, x is [N * S, C] rows in memory; the kernels see it as [N * S, C, 1].
  const bool rows = is_channels_last(x);
  const std::vector<int64_t> order = channels_last_order(x.ndim());
  Shape stored_shape = permuted(x, order).shape();
  const Shape s3 = rows ? Shape{N * S, C, 1} : Shape{N, C, S};
  auto as3 = [=](const Tensor& t) {
    if (!rows) return reshape(t, s3);
    return reshape(permuted(is_channels_last(t) ? t : to_channels_last(t), order), s3);
  };
  auto from3 = [=, xs = x.shape()](const Tensor& t) {
    return rows ? unpermuted(reshape(t, stored_shape), order) : reshape(t, xs);
  };
  Tensor x3 = as3(x);
  Tensor mean, var;
  if (batch_stats) {
    // The running statistics' update rides along: four small ops each would cost more than
    // the pass over x on a GPU.
    const bool update = training && tracked;
    std::vector<Tensor> in{x3};
    std::vector<OutSpec> outs{{{C}, pdt}, {{C}, pdt}};
    if (update) {
      in.push_back(state.running_mean->detach());
      in.push_back(state.running_var->detach());
      outs.insert(outs.end(), {{{C}, pdt}, {{C}, pdt}});
    }
    auto st = dispatch(Op{OpKind::batch_norm_stats, {}, {state.momentum}}, in, outs);
    mean = st[0];
    var = st[1];
    if (update) {
      *state.running_mean = st[2];
      *state.running_var = st[3];
    }
  } else {
    mean = state.running_mean->detach();
    var = state.running_var->detach();
  }
  std::vector<Tensor> in{x3, mean, var};
  if (w) in.push_back(*w);
  if (b) in.push_back(*b);
  Tensor y = from3(dispatch(Op{OpKind::batch_norm, {w ? 1 : 0, b ? 1 : 0, relu ? 1 : 0}, {eps}}, in,
                            {{s3, x.dtype()}})[0]);
  std::vector<Tensor> grad_in{x};
  if (w) grad_in.push_back(*w);
  if (b) grad_in.push_back(*b);
  std::vector<Tensor> saved{x3.detach(), mean, var};
  if (w) saved.push_back(w->detach());
  // The ReLU's gradient needs to know where the output was positive: the backward recomputes
  // that from x and the coefficients, cheaper than reading the output back.
  if (relu && b) saved.push_back(b->detach());
  const bool has_w = w.has_value(), has_b = b.has_value();
  return with_grad(y, grad_in, [=](const Tensor& g) {
    std::vector<Tensor> bin{as3(g)};
    bin.insert(bin.end(), saved.begin(), saved.end());
    auto d = dispatch(Op{OpKind::batch_norm_backward,
                         {batch_stats ? 1 : 0, has_w ? 1 : 0, relu ? 1 : 0, relu && has_b ? 1 : 0},
                         {eps}},
                      bin, {{s3, g.dtype()}, {{C}, pdt}, {{C}, pdt}});
    Grads out{from3(d[0])};
    if (has_w) out.push_back(d[1]);
    if (has_b) out.push_back(d[2]);
    return out;
  });
}

}  // namespace

Tensor batch_norm(const Tensor& x, const std::optional<Tensor>& weight,
                  const std::optional<Tensor>& bias, bool training, BatchNormState state,
                  double eps, Loc loc) {
  return batch_norm_any(x, weight, bias, training, state, eps, false, loc);
}

Tensor batch_norm_relu(const Tensor& x, const std::optional<Tensor>& weight,
                       const std::optional<Tensor>& bias, bool training, BatchNormState state,
                       double eps, Loc loc) {
  return batch_norm_any(x, weight, bias, training, state, eps, true, loc);
}

// ---- attention ----

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const std::optional<Tensor>& mask, bool causal,
                                    std::optional<double> scale, Loc loc) {
  CallScope scope("scaled_dot_product_attention", loc);
  for (const Tensor* t : {&q, &k, &v}) {
    check_defined(*t);
    check_floating(*t);
    if (t->ndim() < 2)
      fail("q, k and v must have at least 2 dims [..., L, E], got ", shape_str(t->shape()));
  }
  check_same_dtype(q, k);
  check_same_dtype(q, v);
  const int64_t E = q.shape().back(), Lq = q.shape()[q.shape().size() - 2];
  const int64_t Lk = k.shape()[k.shape().size() - 2];
  if (k.shape().back() != E)
    fail("q ", shape_str(q.shape()), " and k ", shape_str(k.shape()), " differ in embedding size");
  if (v.shape()[v.shape().size() - 2] != Lk)
    fail("k ", shape_str(k.shape()), " and v ", shape_str(v.shape()), " differ in length");
  const double s = scale.value_or(1 / std::sqrt(static_cast<double>(E)));
  Tensor scores = matmul(q, transpose(k, -2, -1)) * s;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (causal) {
    // Top-left aligned: query i sees keys j <= i, as PyTorch's is_causal.
    Tensor allowed = reshape(arange(0, double(Lq), 1, i64), {Lq, 1}) >=
                     reshape(arange(0, double(Lk), 1, i64), {1, Lk});
    scores = where(allowed, scores, neg_inf);
  }
  if (mask) {
    check_defined(*mask, "mask");
    if (mask->dtype() != bool_)
      fail("mask must be bool (true = attend), got ", dtype_name(mask->dtype()));
    broadcast_shapes(mask->shape(), scores.shape());
    scores = where(*mask, scores, neg_inf);
  }
  return matmul(softmax(scores, -1), v);
}

// ---- losses ----

namespace {

int64_t reduction_code(const std::string& r) {
  if (r == "none") return 0;
  if (r == "mean") return 1;
  if (r == "sum") return 2;
  fail("reduction must be \"mean\", \"sum\" or \"none\", got \"", r, "\"");
}

// The fused negative log-likelihood of log-probabilities logp [N, C, *] (or [C]).
Tensor nll(const Tensor& logp_in, const Tensor& target_in, const CrossEntropyOptions& opt,
           bool allow_probs) {
  check_defined(logp_in, "input");
  check_defined(target_in, "target");
  check_floating(logp_in);
  const int64_t red = reduction_code(opt.reduction);
  if (!(opt.label_smoothing >= 0 && opt.label_smoothing <= 1))
    fail("label_smoothing must be in [0, 1], got ", opt.label_smoothing);
  if (logp_in.ndim() < 1) fail("input must have a class dim, got a 0-d tensor");
  const bool unbatched = logp_in.ndim() == 1;
  Tensor logp = unbatched ? unsqueeze(logp_in, 0) : logp_in;
  const bool prob = is_floating(target_in.dtype());
  if (prob && !allow_probs)
    fail("target must hold int64 class indices, got ", dtype_name(target_in.dtype()));
  Tensor target = unbatched ? unsqueeze(target_in, 0) : target_in;
  const Shape& ls = logp.shape();
  const int64_t N = ls[0], C = ls[1], S = N * C == 0 ? 0 : logp.numel() / (N * C);
  Shape elem_shape{N};  // the shape of per-element losses
  elem_shape.insert(elem_shape.end(), ls.begin() + 2, ls.end());
  if (prob) {
    check_same_dtype(logp, target);
    if (target.shape() != ls)
      fail("probability target ", shape_str(target_in.shape()), " must match input ",
           shape_str(logp_in.shape()));
  } else {
    if (target.dtype() != i64)
      fail("target must be int64 class indices or floating probabilities, got ",
           dtype_name(target.dtype()));
    if (target.shape() != elem_shape)
      fail("target ", shape_str(target_in.shape()), " does not match input ",
           shape_str(logp_in.shape()), ": expected ", shape_str(unbatched ? Shape{} : elem_shape));
  }
  auto w = checked_param(opt.weight, logp.dtype(), {C}, "weight");
  Tensor lp3 = reshape(logp, {N, C, S});
  Tensor t3 = prob ? reshape(target, {N, C, S}) : reshape(target, {N, S});
  std::vector<int64_t> ints{prob ? 1 : 0, opt.ignore_index, red, w ? 1 : 0};
  std::vector<double> reals{opt.label_smoothing};
  std::vector<Tensor> in{lp3, t3};
  if (w) in.push_back(*w);
  Shape out_shape = red == 0 ? Shape{N, S} : Shape{};
  Tensor loss = dispatch(Op{OpKind::nll_loss, ints, reals}, in, {{out_shape, logp.dtype()}})[0];
  if (red == 0) loss = reshape(loss, unbatched ? Shape{} : elem_shape);
  std::vector<Tensor> saved{lp3.detach(), t3.detach()};
  if (w) saved.push_back(w->detach());
  const Shape lps = logp_in.shape(), ts = target_in.shape();
  return with_grad(loss, {logp_in, target_in}, [=](const Tensor& g) {
    std::vector<Tensor> bin{red == 0 ? reshape(g, {N, S}) : g};
    bin.insert(bin.end(), saved.begin(), saved.end());
    std::vector<OutSpec> bouts{{{N, C, S}, g.dtype()}};
    if (prob) bouts.push_back({{N, C, S}, g.dtype()});
    auto d = dispatch(Op{OpKind::nll_loss_backward, ints, reals}, bin, bouts);
    return Grads{reshape(d[0], lps), prob ? reshape(d[1], ts) : Tensor()};
  });
}

}  // namespace

Tensor cross_entropy(const Tensor& logits, const Tensor& target, CrossEntropyOptions opt, Loc loc) {
  if (amp::upcasts(logits, target))  // autocast
    return cross_entropy(amp::f32(logits), amp::f32(target), std::move(opt), loc);
  CallScope scope("cross_entropy", loc);
  check_defined(logits, "input");
  check_floating(logits);
  if (logits.ndim() < 1) fail("input must have a class dim, got a 0-d tensor");
  return nll(log_softmax(logits, logits.ndim() == 1 ? 0 : 1), target, opt, true);
}

Tensor nll_loss(const Tensor& log_probs, const Tensor& target, CrossEntropyOptions opt, Loc loc) {
  if (amp::upcasts(log_probs, target))  // autocast
    return nll_loss(amp::f32(log_probs), amp::f32(target), std::move(opt), loc);
  CallScope scope("nll_loss", loc);
  if (opt.label_smoothing != 0) fail("label_smoothing is only supported by cross_entropy");
  return nll(log_probs, target, opt, false);
}

}  // namespace crisp
