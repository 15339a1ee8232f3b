// Front ends of the fused update ops: argument checks, output specs, one dispatch each.
#include "optim/steps.h"

#include <cmath>

#include "core/tensor_impl.h"

namespace crisp::optim {

DType state_dtype(DType d) { return d == f16 || d == bf16 ? f32 : d; }

namespace {

void check_param(const Tensor& p, const Tensor& g) {
  check_defined(p, "parameter");
  check_defined(g, "gradient");
  if (!is_floating(p.dtype()))
    fail("parameters must be floating-point, got ", dtype_name(p.dtype()));
  if (g.shape() != p.shape())
    fail("gradient shape ", shape_str(g.shape()), " does not match the parameter's ",
         shape_str(p.shape()));
  if (g.dtype() != p.dtype())
    fail("gradient dtype ", dtype_name(g.dtype()), " does not match the parameter's ",
         dtype_name(p.dtype()));
}

// Kernels read every operand as one contiguous run.
Tensor flat(const Tensor& t) { return t.is_contiguous() ? t : t.contiguous(); }

// Appends a state operand, checking it against the parameter.
void add_state(std::vector<Tensor>& in, const Tensor& p, const Tensor& s, const char* name) {
  if (s.shape() != p.shape())
    fail(name, " shape ", shape_str(s.shape()), " does not match the parameter's ",
         shape_str(p.shape()));
  if (s.dtype() != state_dtype(p.dtype()))
    fail(name, " dtype ", dtype_name(s.dtype()), " should be ", dtype_name(state_dtype(p.dtype())));
  in.push_back(flat(s));
}

Tensor zeros_state(const Tensor& p) { return zeros(p.shape(), state_dtype(p.dtype())); }

std::vector<Tensor> run(const Op& op, const std::vector<Tensor>& in, size_t n_state) {
  const Tensor& p = in[0];
  std::vector<OutSpec> outs{{p.shape(), p.dtype()}};
  for (size_t i = 0; i < n_state; ++i) outs.push_back({p.shape(), state_dtype(p.dtype())});
  return dispatch(op, in, outs);
}

}  // namespace

std::vector<Tensor> sgd_step(const Tensor& p, const Tensor& g, const Tensor& buf,
                             const SGDOptions& o) {
  check_param(p, g);
  BackendScope on(p.backend());
  NoGrad no_grad;
  const bool momentum = o.momentum != 0;
  std::vector<Tensor> in{flat(p), flat(g)};
  if (momentum && buf.defined()) add_state(in, p, buf, "momentum_buffer");
  Op op{OpKind::sgd_step,
        {momentum, o.nesterov, o.maximize},
        {o.lr, o.momentum, o.dampening, o.weight_decay}};
  return run(op, in, momentum ? 1 : 0);
}

std::vector<Tensor> adam_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v,
                              const Tensor& vmax, const AdamOptions& o, bool decoupled,
                              int64_t step) {
  check_param(p, g);
  BackendScope on(p.backend());
  NoGrad no_grad;
  std::vector<Tensor> in{flat(p), flat(g)};
  add_state(in, p, m.defined() ? m : zeros_state(p), "exp_avg");
  add_state(in, p, v.defined() ? v : zeros_state(p), "exp_avg_sq");
  if (o.amsgrad) add_state(in, p, vmax.defined() ? vmax : zeros_state(p), "max_exp_avg_sq");
  // The bias corrections depend only on the step: computed once here, in double, as PyTorch.
  const double s = static_cast<double>(step);
  const double step_size = o.lr / (1 - std::pow(o.beta1, s));
  const double bc2_sqrt = std::sqrt(1 - std::pow(o.beta2, s));
  Op op{OpKind::adam_step,
        {o.amsgrad, o.maximize, decoupled},
        {o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, step_size, bc2_sqrt}};
  return run(op, in, o.amsgrad ? 3 : 2);
}

std::vector<Tensor> rmsprop_step(const Tensor& p, const Tensor& g, const Tensor& square_avg,
                                 const Tensor& grad_avg, const Tensor& buf,
                                 const RMSpropOptions& o) {
  check_param(p, g);
  BackendScope on(p.backend());
  NoGrad no_grad;
  const bool momentum = o.momentum > 0;
  std::vector<Tensor> in{flat(p), flat(g)};
  add_state(in, p, square_avg.defined() ? square_avg : zeros_state(p), "square_avg");
  if (o.centered) add_state(in, p, grad_avg.defined() ? grad_avg : zeros_state(p), "grad_avg");
  if (momentum) add_state(in, p, buf.defined() ? buf : zeros_state(p), "momentum_buffer");
  Op op{OpKind::rmsprop_step,
        {o.centered, momentum, o.maximize},
        {o.lr, o.alpha, o.eps, o.weight_decay, o.momentum}};
  return run(op, in, 1 + (o.centered ? 1 : 0) + (momentum ? 1 : 0));
}

void replace_value(Tensor& param, const Tensor& value) {
  auto impl = std::make_shared<TensorImpl>();
  impl->array = value.impl()->array;
  impl->error = value.impl()->error;
  impl->node = param.impl()->node;
  param = Tensor(std::move(impl));
}

void set_grad(const Tensor& param, Tensor grad) {
  const auto& node = param.impl()->node;
  if (!node) return;
  std::lock_guard lock(node->mutex);
  node->grad = std::move(grad);
}

}  // namespace crisp::optim
