// Regression and binary-classification losses, composed from differentiable ops.
#include "core/tensor_impl.h"
#include "crisp/amp.h"
#include "crisp/nn.h"

namespace crisp::nn {

namespace {

void check_reduction(const std::string& r) {
  if (r != "none" && r != "mean" && r != "sum")
    fail("reduction must be \"mean\", \"sum\" or \"none\", got \"", r, "\"");
}

void check_pair(const Tensor& input, const Tensor& target, const std::string& reduction) {
  check_defined(input, "input");
  check_defined(target, "target");
  check_floating(input);
  if (input.dtype() != target.dtype())
    fail("input (", dtype_name(input.dtype()), ") and target (", dtype_name(target.dtype()),
         ") differ in dtype");
  if (input.shape() != target.shape())
    fail("input ", shape_str(input.shape()), " and target ", shape_str(target.shape()),
         " differ in shape");
  check_reduction(reduction);
}

bool broadcasts_to(const Shape& s, const Shape& target) {
  if (s.size() > target.size()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const int64_t d = s[s.size() - 1 - i];
    if (d != 1 && d != target[target.size() - 1 - i]) return false;
  }
  return true;
}

Tensor reduce(const Tensor& loss, const std::string& r) {
  if (r == "mean") return mean(loss);
  if (r == "sum") return sum(loss);
  return loss;
}

}  // namespace

Tensor mse_loss(const Tensor& input, const Tensor& target, const std::string& reduction, Loc loc) {
  if (amp::upcasts(input, target))  // autocast
    return mse_loss(amp::f32(input), amp::f32(target), reduction, loc);
  CallScope scope("mse_loss", loc);
  check_pair(input, target, reduction);
  Tensor d = input - target;
  return reduce(d * d, reduction);
}

Tensor l1_loss(const Tensor& input, const Tensor& target, const std::string& reduction, Loc loc) {
  if (amp::upcasts(input, target))  // autocast
    return l1_loss(amp::f32(input), amp::f32(target), reduction, loc);
  CallScope scope("l1_loss", loc);
  check_pair(input, target, reduction);
  return reduce(abs(input - target), reduction);
}

Tensor smooth_l1_loss(const Tensor& input, const Tensor& target, const std::string& reduction,
                      double beta, Loc loc) {
  if (amp::upcasts(input, target))  // autocast
    return smooth_l1_loss(amp::f32(input), amp::f32(target), reduction, beta, loc);
  CallScope scope("smooth_l1_loss", loc);
  check_pair(input, target, reduction);
  if (!(beta >= 0)) fail("beta must be >= 0, got ", beta);
  Tensor d = abs(input - target);
  if (beta == 0) return reduce(d, reduction);
  return reduce(where(d < beta, d * d * (0.5 / beta), d - 0.5 * beta), reduction);
}

Tensor huber_loss(const Tensor& input, const Tensor& target, const std::string& reduction,
                  double delta, Loc loc) {
  if (amp::upcasts(input, target))  // autocast
    return huber_loss(amp::f32(input), amp::f32(target), reduction, delta, loc);
  CallScope scope("huber_loss", loc);
  check_pair(input, target, reduction);
  if (!(delta > 0)) fail("delta must be > 0, got ", delta);
  Tensor d = abs(input - target);
  return reduce(where(d < delta, d * d * 0.5, (d - 0.5 * delta) * delta), reduction);
}

Tensor binary_cross_entropy_with_logits(const Tensor& logits, const Tensor& target, BCEOptions opt,
                                        Loc loc) {
  if (amp::upcasts(logits, target))  // autocast
    return binary_cross_entropy_with_logits(amp::f32(logits), amp::f32(target), std::move(opt),
                                            loc);
  CallScope scope("binary_cross_entropy_with_logits", loc);
  check_pair(logits, target, opt.reduction);
  for (const auto* w : {&opt.weight, &opt.pos_weight}) {
    if (!*w) continue;
    const char* what = w == &opt.weight ? "weight" : "pos_weight";
    check_defined(**w, what);
    if ((*w)->dtype() != logits.dtype())
      fail(what, " (", dtype_name((*w)->dtype()), ") and logits (", dtype_name(logits.dtype()),
           ") differ in dtype");
    if (!broadcasts_to((*w)->shape(), logits.shape()))
      fail(what, " ", shape_str((*w)->shape()), " does not broadcast to logits ",
           shape_str(logits.shape()));
  }
  // log(1 + exp(-|x|)) never overflows; max(-x, 0) + that is -log sigmoid(x).
  const Tensor& x = logits;
  Tensor neg_log_sigmoid = relu(-x) + log1p(exp(-abs(x)));
  Tensor loss;
  if (opt.pos_weight) {
    // (1 - t) x - (1 + (pw - 1) t) log sigmoid(x)
    Tensor log_weight = (*opt.pos_weight - 1) * target + 1;
    loss = (1 - target) * x + log_weight * neg_log_sigmoid;
  } else {
    loss = (1 - target) * x + neg_log_sigmoid;
  }
  if (opt.weight) loss = loss * *opt.weight;
  return reduce(loss, opt.reduction);
}

}  // namespace crisp::nn
