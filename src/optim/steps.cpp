// Front ends of the fused update ops: argument checks, output specs, one dispatch per batch of
// parameters.
#include "optim/steps.h"

#include <algorithm>
#include <cmath>
#include <iterator>

#include "core/tensor_impl.h"
#include "kernels/optim.h"

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

// State k of u, or zeros when it has none yet.
Tensor state_or_zeros(const Update& u, size_t k) {
  return k < u.state.size() && u.state[k].defined() ? u.state[k] : zeros_state(u.p);
}

using Outputs = std::vector<std::vector<Tensor>>;

// Runs the updates as one op per batch of updates that one op can take: on one backend, of one
// dtype and step, with as many inputs. inputs(u) lists u's checked inputs (p, g, state);
// op_for(step, count) is the op of a batch of count updates at step; each update has n_state
// outputs after its new parameter.
template <class Inputs, class OpFor>
Outputs batched(std::span<const Update> updates, size_t n_state, Inputs inputs, OpFor op_for) {
  struct Batch {
    std::shared_ptr<Backend> backend;
    DType dtype;
    int64_t step;
    size_t n_in;  // inputs per update
    std::vector<Tensor> in;
    std::vector<size_t> members;
  };
  std::vector<Batch> batches;  // usually one
  for (size_t i = 0; i < updates.size(); ++i) {
    const Update& u = updates[i];
    check_param(u.p, u.g);
    const std::shared_ptr<Backend> backend = u.p.backend();
    BackendScope on(backend);  // where missing state is made
    std::vector<Tensor> in = inputs(u);
    auto it = std::find_if(batches.begin(), batches.end(), [&](const Batch& b) {
      return b.backend == backend && b.dtype == u.p.dtype() && b.step == u.step &&
             b.n_in == in.size();
    });
    if (it == batches.end())
      it = batches.insert(batches.end(), Batch{backend, u.p.dtype(), u.step, in.size(), {}, {}});
    it->in.insert(it->in.end(), std::make_move_iterator(in.begin()),
                  std::make_move_iterator(in.end()));
    it->members.push_back(i);
  }
  Outputs result(updates.size());
  for (const Batch& b : batches) {
    BackendScope on(b.backend);
    std::vector<OutSpec> outs;
    for (size_t i : b.members) {
      const Tensor& p = updates[i].p;
      outs.push_back({p.shape(), p.dtype()});
      for (size_t k = 0; k < n_state; ++k) outs.push_back({p.shape(), state_dtype(p.dtype())});
    }
    const Op op = op_for(b.step, static_cast<int64_t>(b.members.size()));
    const std::vector<Tensor> out = dispatch(op, b.in, outs);
    auto next = out.begin();
    for (size_t i : b.members) {
      result[i].assign(next, next + static_cast<std::ptrdiff_t>(1 + n_state));
      next += static_cast<std::ptrdiff_t>(1 + n_state);
    }
  }
  return result;
}

}  // namespace

Outputs sgd_step(std::span<const Update> updates, const SGDOptions& o) {
  NoGrad no_grad;
  const bool momentum = o.momentum != 0;
  auto inputs = [&](const Update& u) {
    std::vector<Tensor> in{flat(u.p), flat(u.g)};
    if (momentum && !u.state.empty() && u.state[0].defined())
      add_state(in, u.p, u.state[0], "momentum_buffer");
    return in;
  };
  return batched(updates, momentum ? 1 : 0, inputs, [&](int64_t, int64_t count) {
    return SgdStepAttrs{.has_momentum = momentum,
                        .nesterov = o.nesterov,
                        .maximize = o.maximize,
                        .lr = o.lr,
                        .momentum = o.momentum,
                        .dampening = o.dampening,
                        .weight_decay = o.weight_decay,
                        .params = count}
        .to_op(OpKind::sgd_step);
  });
}

Outputs adam_step(std::span<const Update> updates, const AdamOptions& o, bool decoupled) {
  NoGrad no_grad;
  auto inputs = [&](const Update& u) {
    std::vector<Tensor> in{flat(u.p), flat(u.g)};
    add_state(in, u.p, state_or_zeros(u, 0), "exp_avg");
    add_state(in, u.p, state_or_zeros(u, 1), "exp_avg_sq");
    if (o.amsgrad) add_state(in, u.p, state_or_zeros(u, 2), "max_exp_avg_sq");
    return in;
  };
  return batched(updates, o.amsgrad ? 3 : 2, inputs, [&](int64_t step, int64_t count) {
    // The bias corrections depend only on the step: computed once here, in double, as PyTorch.
    const double s = static_cast<double>(step);
    return AdamStepAttrs{.amsgrad = o.amsgrad,
                         .maximize = o.maximize,
                         .decoupled = decoupled,
                         .lr = o.lr,
                         .beta1 = o.beta1,
                         .beta2 = o.beta2,
                         .eps = o.eps,
                         .weight_decay = o.weight_decay,
                         .step_size = o.lr / (1 - std::pow(o.beta1, s)),
                         .bc2_sqrt = std::sqrt(1 - std::pow(o.beta2, s)),
                         .params = count}
        .to_op(OpKind::adam_step);
  });
}

Outputs rmsprop_step(std::span<const Update> updates, const RMSpropOptions& o) {
  NoGrad no_grad;
  const bool momentum = o.momentum > 0;
  auto inputs = [&](const Update& u) {
    std::vector<Tensor> in{flat(u.p), flat(u.g)};
    add_state(in, u.p, state_or_zeros(u, 0), "square_avg");
    if (o.centered) add_state(in, u.p, state_or_zeros(u, 1), "grad_avg");
    if (momentum) add_state(in, u.p, state_or_zeros(u, 2), "momentum_buffer");
    return in;
  };
  const size_t n_state = 1 + (o.centered ? 1 : 0) + (momentum ? 1 : 0);
  return batched(updates, n_state, inputs, [&](int64_t, int64_t count) {
    return RmspropStepAttrs{.centered = o.centered,
                            .has_momentum = momentum,
                            .maximize = o.maximize,
                            .lr = o.lr,
                            .alpha = o.alpha,
                            .eps = o.eps,
                            .weight_decay = o.weight_decay,
                            .momentum = o.momentum,
                            .params = count}
        .to_op(OpKind::rmsprop_step);
  });
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
