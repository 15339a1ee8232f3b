// Front ends of the normalizations (layer, RMS, group and batch norm): argument checks, output
// shapes, gradients.
#include <cmath>
#include <limits>

#include "core/tensor_impl.h"
#include "crisp/amp.h"
#include "kernels/norm.h"

namespace crisp {

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

// ---- normalization ----

namespace {

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
  const RowNormAttrs attrs{.has_w = w.has_value(), .has_b = b.has_value(), .eps = eps};
  std::vector<OutSpec> outs{{{M, D}, x.dtype()}};
  if (center) outs.push_back({{M}, x.dtype()});
  outs.push_back({{M}, x.dtype()});
  auto r = dispatch(attrs.to_op(center ? OpKind::layer_norm : OpKind::rms_norm), in, outs);
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
    const RowNormBackwardAttrs battrs{.has_w = w.has_value()};
    auto d = dispatch(
        battrs.to_op(center ? OpKind::layer_norm_backward : OpKind::rms_norm_backward), bin, bouts);
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
  const RowNormAttrs attrs{
      .groups = groups, .has_w = w.has_value(), .has_b = b.has_value(), .eps = eps};
  auto r = dispatch(attrs.to_op(OpKind::group_norm), in,
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
    const RowNormBackwardAttrs battrs{.groups = groups, .has_w = has_w};
    auto d = dispatch(battrs.to_op(OpKind::group_norm_backward), bin, bouts);
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
    auto st =
        dispatch(BatchNormStatsAttrs{state.momentum}.to_op(OpKind::batch_norm_stats), in, outs);
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
  const BatchNormAttrs attrs{
      .has_w = w.has_value(), .has_b = b.has_value(), .relu = relu, .eps = eps};
  Tensor y = from3(dispatch(attrs.to_op(OpKind::batch_norm), in, {{s3, x.dtype()}})[0]);
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
    const BatchNormBackwardAttrs battrs{
        .training = batch_stats, .has_w = has_w, .relu = relu, .has_b = relu && has_b, .eps = eps};
    auto d = dispatch(battrs.to_op(OpKind::batch_norm_backward), bin,
                      {{s3, g.dtype()}, {{C}, pdt}, {{C}, pdt}});
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

}  // namespace crisp
