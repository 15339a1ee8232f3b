// Autograd: backward closures that hold handles to their inputs' records, and the pass that
// runs each record once every consumer reachable from the loss has handed it its gradient.
#include <unordered_map>
#include <unordered_set>

#include "core/tensor_impl.h"
#include "crisp/amp.h"

namespace crisp {

namespace {
thread_local bool grad_mode = true;

// Releases chains of records iteratively: a 10,000-op chain must not recurse 10,000 deep.
thread_local bool releasing = false;
thread_local std::vector<std::shared_ptr<GradNode>> to_release;
}  // namespace

GradNode::~GradNode() {
  for (auto& in : inputs)
    if (in) to_release.push_back(std::move(in));
  if (releasing) return;
  releasing = true;
  while (!to_release.empty()) {
    auto n = std::move(to_release.back());
    to_release.pop_back();
    n.reset();
  }
  releasing = false;
}

NoGrad::NoGrad() : previous_(grad_mode) { grad_mode = false; }
NoGrad::~NoGrad() { grad_mode = previous_; }
bool grad_enabled() { return grad_mode; }

bool any_requires_grad(std::initializer_list<Tensor> inputs) {
  if (!grad_mode) return false;
  for (const Tensor& x : inputs)
    if (x.defined() && x.impl()->node) return true;
  return false;
}

namespace {
template <class Range>
Tensor attach(Tensor out, const Range& inputs, BackwardFn backward) {
  if (!grad_mode) return out;
  bool any = false;
  for (const Tensor& x : inputs) any = any || (x.defined() && x.impl()->node);
  if (!any) return out;
  auto node = std::make_shared<GradNode>();
  node->backward = std::move(backward);
  node->inputs.reserve(inputs.size());
  for (const Tensor& x : inputs) node->inputs.push_back(x.defined() ? x.impl()->node : nullptr);
  node->shape = out.shape();
  node->dtype = out.dtype();
  out.impl()->node = std::move(node);
  return out;
}
}  // namespace

Tensor with_grad(Tensor out, std::initializer_list<Tensor> inputs, BackwardFn backward) {
  return attach(std::move(out), inputs, std::move(backward));
}
Tensor with_grad(Tensor out, const std::vector<Tensor>& inputs, BackwardFn backward) {
  return attach(std::move(out), inputs, std::move(backward));
}

Tensor reduce_to(const Tensor& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  const int64_t lead = grad.ndim() - static_cast<int64_t>(shape.size());
  std::vector<int64_t> axes;
  for (int64_t i = 0; i < grad.ndim(); ++i)
    if (i < lead || shape[static_cast<size_t>(i - lead)] == 1) axes.push_back(i);
  Tensor g = axes.empty() ? grad : sum(grad, Axes(axes), true);
  return reshape(g, shape);
}

namespace {

// Runs the backward pass from root. With targets, their gradients are returned instead of
// being accumulated into leaves.
std::vector<Tensor> run_backward(const std::shared_ptr<GradNode>& root, Tensor root_grad,
                                 const std::vector<GradNode*>& targets) {
  std::unordered_map<GradNode*, int> pending_inputs;
  std::unordered_set<GradNode*> seen{root.get()};
  std::vector<GradNode*> stack{root.get()};
  while (!stack.empty()) {
    GradNode* n = stack.back();
    stack.pop_back();
    if (n->released) fail("the graph was already freed by an earlier backward pass");
    for (auto& in : n->inputs) {
      if (!in) continue;
      ++pending_inputs[in.get()];
      if (seen.insert(in.get()).second) stack.push_back(in.get());
    }
  }
  std::vector<Tensor> captured(targets.size());
  std::unordered_map<GradNode*, Tensor> grads;
  grads[root.get()] = std::move(root_grad);
  std::vector<std::shared_ptr<GradNode>> ready{root};
  NoGrad no_grad;
  amp::Autocast no_autocast(DType::f32, false);  // backward ops keep the forward's dtypes
  while (!ready.empty()) {
    std::shared_ptr<GradNode> node = std::move(ready.back());
    ready.pop_back();
    Tensor g = std::move(grads[node.get()]);
    grads.erase(node.get());
    for (size_t i = 0; i < targets.size(); ++i) {
      if (targets[i] == node.get()) {
        captured[i] = g;
      }
    }
    if (g.defined()) {
      for (auto& cb : node->callbacks) cb(g);
      if (node->accumulates && targets.empty()) {
        std::lock_guard lock(node->mutex);
        node->grad = node->grad.defined() ? node->grad + g : g;
      }
    }
    std::vector<Tensor> in_grads;
    if (g.defined() && node->backward) in_grads = node->backward(g);
    for (size_t i = 0; i < node->inputs.size(); ++i) {
      const auto& in = node->inputs[i];
      if (!in) continue;
      if (i < in_grads.size() && in_grads[i].defined()) {
        Tensor& acc = grads[in.get()];
        acc = acc.defined() ? acc + in_grads[i] : in_grads[i];
      }
      if (--pending_inputs[in.get()] == 0) ready.push_back(in);
    }
    if (node->backward) {
      node->backward = nullptr;  // frees what the closure saved
      node->released = true;
    }
  }
  return captured;
}

std::shared_ptr<GradNode> root_of(const Tensor& loss, const std::optional<Tensor>& grad,
                                  Tensor& root_grad) {
  check_defined(loss, "loss");
  if (!loss.impl()->node)
    fail(
        "the tensor does not require a gradient (no input it depends on has requires_grad_ or "
        "on_grad)");
  if (grad) {
    check_defined(*grad, "gradient");
    if (grad->shape() != loss.shape())
      fail("gradient shape ", shape_str(grad->shape()), " does not match the tensor's ",
           shape_str(loss.shape()));
    check_same_dtype(loss, *grad);
    root_grad = *grad;
  } else {
    if (loss.numel() != 1)
      fail("backward() without a gradient needs a single-element tensor, got shape ",
           shape_str(loss.shape()));
    root_grad = ones(loss.shape(), loss.dtype());
  }
  return loss.impl()->node;
}

}  // namespace

void Tensor::backward(Loc loc) const {
  CallScope scope("backward", loc);
  Tensor g;
  auto root = root_of(*this, std::nullopt, g);
  run_backward(root, g, {});
}

void Tensor::backward(const Tensor& grad, Loc loc) const {
  CallScope scope("backward", loc);
  Tensor g;
  auto root = root_of(*this, grad, g);
  run_backward(root, g, {});
}

std::vector<Tensor> grad(const Tensor& loss, const std::vector<Tensor>& wrt,
                         std::optional<Tensor> loss_grad, Loc loc) {
  CallScope scope("grad", loc);
  Tensor g;
  auto root = root_of(loss, loss_grad, g);
  std::vector<GradNode*> targets;
  for (const Tensor& t : wrt) {
    check_defined(t);
    if (!t.impl()->node) fail("a tensor to differentiate with respect to does not require grad");
    targets.push_back(t.impl()->node.get());
  }
  std::vector<Tensor> out = run_backward(root, g, targets);
  for (size_t i = 0; i < out.size(); ++i)
    if (!out[i].defined()) out[i] = zeros(wrt[i].shape(), wrt[i].dtype());
  return out;
}

bool Tensor::requires_grad() const { return impl_ && impl_->node; }

Tensor& Tensor::requires_grad_(bool on, Loc loc) {
  CallScope scope("requires_grad_", loc);
  check_defined(*this);
  if (on && !is_floating(dtype()))
    fail("only floating-point tensors can require gradients, got ", dtype_name(dtype()));
  if (impl_->node && !impl_->node->accumulates)
    fail("only leaf tensors can be made to require grad; use detach() first");
  auto impl = std::make_shared<TensorImpl>(*impl_);
  if (on) {
    if (!impl->node) {
      impl->node = std::make_shared<GradNode>();
      impl->node->accumulates = true;
      impl->node->shape = shape();
      impl->node->dtype = dtype();
    }
  } else {
    impl->node = nullptr;
  }
  impl_ = std::move(impl);
  return *this;
}

Tensor Tensor::grad() const {
  if (!impl_ || !impl_->node) return Tensor();
  std::lock_guard lock(impl_->node->mutex);
  return impl_->node->grad;
}

void Tensor::zero_grad() {
  if (!impl_ || !impl_->node) return;
  std::lock_guard lock(impl_->node->mutex);
  impl_->node->grad = Tensor();
}

Tensor Tensor::on_grad(GradCallback f, Loc loc) const {
  CallScope scope("on_grad", loc);
  check_defined(*this);
  if (!is_floating(dtype()))
    fail("only floating-point tensors have gradients, got ", dtype_name(dtype()));
  auto impl = std::make_shared<TensorImpl>(*impl_);
  auto node = std::make_shared<GradNode>();
  node->callbacks.push_back(std::move(f));
  node->shape = shape();
  node->dtype = dtype();
  if (impl_->node) {
    node->inputs.push_back(impl_->node);
    node->backward = [](const Tensor& g) { return std::vector<Tensor>{g}; };
  }
  impl->node = std::move(node);
  return Tensor(std::move(impl));
}

Tensor Tensor::detach() const {
  if (!impl_) return Tensor();
  auto impl = std::make_shared<TensorImpl>();
  impl->array = impl_->array;
  impl->error = impl_->error;
  return Tensor(std::move(impl));
}

}  // namespace crisp
