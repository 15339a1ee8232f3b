// Gradient clipping by total norm and by value.
#include <cmath>

#include "core/tensor_impl.h"
#include "optim/steps.h"

namespace crisp::optim {

namespace {

// The parameters' gradients that exist, with the tensors they belong to.
std::vector<std::pair<const Tensor*, Tensor>> gradients(const std::vector<nn::NamedParam>& params) {
  std::vector<std::pair<const Tensor*, Tensor>> out;
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor* t = params[i].tensor;
    if (!t) fail("parameter '", params[i].name, "' is a null pointer");
    if (!t->defined()) continue;
    Tensor g = t->grad();
    if (g.defined()) out.emplace_back(t, std::move(g));
  }
  return out;
}

// The p-norm of x as a float64 0-d tensor; 16-bit gradients are summed in float32.
Tensor norm_of(const Tensor& x, double p) {
  const Tensor g = x.dtype() == f16 || x.dtype() == bf16 ? x.cast(f32) : x;
  Tensor n;
  if (std::isinf(p))
    n = g.abs().max();
  else if (p == 1)
    n = g.abs().sum();
  else if (p == 2)
    n = (g * g).sum().sqrt();
  else
    n = g.abs().pow(p).sum().pow(1 / p);
  return n.cast(f64);
}

}  // namespace

double clip_grad_norm(const std::vector<nn::NamedParam>& params, double max_norm, double norm_type,
                      bool error_if_nonfinite, Loc loc) {
  CallScope scope("clip_grad_norm", loc);
  if (!(norm_type > 0)) fail("norm_type must be > 0 or infinity, got ", norm_type);
  if (!(max_norm >= 0)) fail("max_norm must be >= 0, got ", max_norm);
  NoGrad no_grad;
  auto grads = gradients(params);
  if (grads.empty()) return 0;
  // Per-gradient norms stay on the device; only the total is read (a single wait).
  BackendScope on(grads[0].second.backend());
  std::vector<Tensor> norms;
  for (auto& [t, g] : grads) norms.push_back(norm_of(g, norm_type));
  const double total = norm_of(stack(norms), norm_type).item<double>();
  if (error_if_nonfinite && !std::isfinite(total))
    fail("the total norm of order ", norm_type, " of the gradients is non-finite (", total,
         "), so they cannot be clipped");
  const double coef = max_norm / (total + 1e-6);
  if (coef < 1)
    for (auto& [t, g] : grads) set_grad(*t, g * coef);
  return total;
}

void clip_grad_value(const std::vector<nn::NamedParam>& params, double clip, Loc loc) {
  CallScope scope("clip_grad_value", loc);
  if (!(clip >= 0)) fail("clip must be >= 0, got ", clip);
  NoGrad no_grad;
  for (auto& [t, g] : gradients(params)) set_grad(*t, clamp(g, -clip, clip));
}

}  // namespace crisp::optim
