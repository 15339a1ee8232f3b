// Front ends of the fused losses: negative log-likelihood and cross entropy.
#include "kernels/loss.h"
#include "core/tensor_impl.h"
#include "crisp/amp.h"

namespace crisp {

// ---- losses ----

namespace {

Reduction reduction_of(const std::string& r) {
  if (r == "none") return Reduction::none;
  if (r == "mean") return Reduction::mean;
  if (r == "sum") return Reduction::sum;
  fail("reduction must be \"mean\", \"sum\" or \"none\", got \"", r, "\"");
}

// The fused negative log-likelihood of log-probabilities logp [N, C, *] (or [C]).
Tensor nll(const Tensor& logp_in, const Tensor& target_in, const CrossEntropyOptions& opt,
           bool allow_probs) {
  check_defined(logp_in, "input");
  check_defined(target_in, "target");
  check_floating(logp_in);
  const Reduction red = reduction_of(opt.reduction);
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
  const NllAttrs attrs{prob, opt.ignore_index, red, w.has_value(), opt.label_smoothing};
  std::vector<Tensor> in{lp3, t3};
  if (w) in.push_back(*w);
  const bool per_element = red == Reduction::none;
  Shape out_shape = per_element ? Shape{N, S} : Shape{};
  Tensor loss = dispatch(attrs.to_op(OpKind::nll_loss), in, {{out_shape, logp.dtype()}})[0];
  if (per_element) loss = reshape(loss, unbatched ? Shape{} : elem_shape);
  std::vector<Tensor> saved{lp3.detach(), t3.detach()};
  if (w) saved.push_back(w->detach());
  const Shape lps = logp_in.shape(), ts = target_in.shape();
  return with_grad(loss, {logp_in, target_in}, [=](const Tensor& g) {
    std::vector<Tensor> bin{per_element ? reshape(g, {N, S}) : g};
    bin.insert(bin.end(), saved.begin(), saved.end());
    std::vector<OutSpec> bouts{{{N, C, S}, g.dtype()}};
    if (prob) bouts.push_back({{N, C, S}, g.dtype()});
    auto d = dispatch(attrs.to_op(OpKind::nll_loss_backward), bin, bouts);
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
