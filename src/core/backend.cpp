// Backend selection (default and per-thread scopes), storage release and array layout helpers.
#include "crisp/backend.h"

#include <atomic>

#include "core/tensor_impl.h"

namespace crisp {

Storage::~Storage() {
  if (backend && data != small) backend->deallocate(data, nbytes);
}

int64_t numel_of(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t Array::numel() const { return numel_of(shape); }

Shape contiguous_strides(const Shape& shape) {
  Shape s(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

Array permuted(const Array& a, std::span<const int64_t> order) {
  Array p = a;
  for (size_t i = 0; i < order.size(); ++i) {
    p.shape[i] = a.shape[static_cast<size_t>(order[i])];
    p.strides[i] = a.strides[static_cast<size_t>(order[i])];
  }
  return p;
}

std::vector<int64_t> channels_last_order(int64_t ndim) {
  std::vector<int64_t> order{0};
  for (int64_t i = 2; i < ndim; ++i) order.push_back(i);
  order.push_back(1);
  return order;
}

std::vector<int64_t> channels_first_order(int64_t ndim) {
  std::vector<int64_t> order{0, ndim - 1};
  for (int64_t i = 1; i < ndim - 1; ++i) order.push_back(i);
  return order;
}

bool Array::is_contiguous() const {
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    if (shape[i] != 1 && strides[i] != acc) return false;
    acc *= shape[i];
  }
  return true;
}

namespace {
std::shared_ptr<Backend>& default_holder() {
  static std::shared_ptr<Backend> b;
  return b;
}
std::atomic<Backend*> default_backend{nullptr};
std::atomic<bool> tf32_allowed{false};
std::mutex default_mutex;
thread_local Backend* scoped_backend = nullptr;
}  // namespace

Backend& current_backend() {
  if (scoped_backend) return *scoped_backend;
  Backend* b = default_backend.load(std::memory_order_acquire);
  if (b) return *b;
  return *Backend::cpu();
}

void set_allow_tf32(bool allow) { tf32_allowed.store(allow, std::memory_order_relaxed); }
bool allow_tf32() { return tf32_allowed.load(std::memory_order_relaxed); }

std::shared_ptr<Backend> Backend::current() { return current_backend().shared_from_this(); }

void Backend::set_default(std::shared_ptr<Backend> backend) {
  if (!backend) backend = cpu();
  std::lock_guard lock(default_mutex);
  default_holder() = backend;
  default_backend.store(backend.get(), std::memory_order_release);
}

BackendScope::BackendScope(std::shared_ptr<Backend> backend) {
  if (scoped_backend) previous_ = scoped_backend->shared_from_this();
  scoped_backend = backend ? backend.get() : nullptr;
  // Backends are process-lifetime singletons, so the raw pointer stays valid.
}
BackendScope::~BackendScope() { scoped_backend = previous_.get(); }

const char* op_name(OpKind k) {
  switch (k) {
#define CRISP_OP(name) \
  case OpKind::name:   \
    return #name;
#include "crisp/op_kinds.inc"
#undef CRISP_OP
    default:
      return "op";
  }
}

std::vector<ParamOperands> optim_operands(const Op& op, int64_t count, std::span<const Array> in,
                                          std::span<Array> out) {
  if (count < 1 || in.size() % static_cast<size_t>(count) != 0 ||
      out.size() % static_cast<size_t>(count) != 0)
    fail(op_name(op.kind), ": ", in.size(), " inputs and ", out.size(),
         " outputs do not split evenly into ", count, " parameters");
  const size_t n_in = in.size() / static_cast<size_t>(count);
  const size_t n_out = out.size() / static_cast<size_t>(count);
  if (n_in < 2 || n_out < 1) fail(op_name(op.kind), ": expected a parameter and gradient");
  const DType pd = in[0].dtype, sd = pd == DType::f16 || pd == DType::bf16 ? DType::f32 : pd;
  std::vector<ParamOperands> params;
  for (size_t k = 0; k < static_cast<size_t>(count); ++k) {
    ParamOperands p{in.subspan(k * n_in, n_in), out.subspan(k * n_out, n_out)};
    const int64_t n = p.in[0].numel();
    auto check = [&](const Array& a, bool is_state, size_t i) {
      const DType want = is_state ? sd : pd;
      if (!a.is_contiguous() || a.numel() != n || a.dtype != want)
        fail(op_name(op.kind), ": operand ", i, " of parameter ", k, " must be contiguous, ", n,
             " elements of ", dtype_name(want));
    };
    for (size_t i = 0; i < n_in; ++i) check(p.in[i], i >= 2, i);
    for (size_t i = 0; i < n_out; ++i) check(p.out[i], i >= 1, i);
    params.push_back(p);
  }
  return params;
}

}  // namespace crisp

#ifndef CRISP_HAVE_CUDA
namespace crisp {
std::shared_ptr<Backend> Backend::cuda(int, Loc loc) {
  CallScope scope("Backend::cuda", loc);
  fail("crisp was built without CUDA support");
}
bool Backend::cuda_available() { return false; }
}  // namespace crisp
#endif
