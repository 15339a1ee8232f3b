// Mixed precision: the autocast scope (matmul and convolution in a 16-bit float type, losses,
// reductions and norms in float32). The gradient scaler for float16 training is in
// crisp/grad_scaler.h, beside the optimizers it steps.
#pragma once

#include <cstdint>
#include <optional>

#include "crisp/dtype.h"
#include "crisp/error.h"
#include "crisp/tensor.h"

namespace crisp::amp {

// Inside the scope (on this thread), as PyTorch's torch.autocast:
//  - matmul (so Linear and attention) and every convolution cast their floating-point inputs
//    (float32, float16 or bfloat16; float64 is left alone) to dtype and compute there; their
//    outputs are in dtype;
//  - softmax, log_softmax, sum, prod, cumsum, cumprod, logsumexp, layer_norm, group_norm,
//    rms_norm and the losses upcast 16-bit inputs to float32, so their outputs are float32;
//  - batch_norm runs in the dtype of its parameters (float32 unless the model was cast);
//  - binary arithmetic between floating-point tensors of different dtypes promotes to the wider.
// The casts are differentiable, so gradients of float32 parameters arrive in float32. Backward
// passes run with autocast off (their ops already see the forward's dtypes).
// Scopes nest; an inner scope with enabled = false turns autocast off for its extent.
class Autocast {
 public:
  // dtype is float16 or bfloat16 (any dtype when enabled is false).
  explicit Autocast(DType dtype = DType::bf16, bool enabled = true, Loc loc = Loc::current());
  ~Autocast();
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  bool previous_enabled_;
  DType previous_dtype_;
};

namespace detail {
struct AutocastState {
  bool enabled = false;
  DType dtype = DType::bf16;
};
inline thread_local AutocastState autocast_state;

inline bool castable(const Tensor& t) {
  return t.defined() && is_floating(t.dtype()) && t.dtype() != DType::f64;
}
inline bool needs_lower(const Tensor& t) {
  return castable(t) && t.dtype() != autocast_state.dtype;
}
inline bool needs_lower(const std::optional<Tensor>& t) { return t && needs_lower(*t); }
inline bool is_16bit(const Tensor& t) {
  return t.defined() && (t.dtype() == DType::f16 || t.dtype() == DType::bf16);
}
inline bool is_16bit(const std::optional<Tensor>& t) { return t && is_16bit(*t); }
}  // namespace detail

// Whether autocast is on on this thread, and its dtype.
inline bool autocast_enabled() { return detail::autocast_state.enabled; }
inline DType autocast_dtype() { return detail::autocast_state.dtype; }

// ---- what op front ends call (the fast path is one thread-local test) ----

// For the ops that compute in the autocast dtype (matmul, convolutions): whether any input
// must be cast, and the cast itself (identity when autocast is off or t is not eligible).
template <class... T>
bool lowers(const T&... t) {
  return detail::autocast_state.enabled && (detail::needs_lower(t) || ...);
}
Tensor lower(const Tensor& t);
std::optional<Tensor> lower(const std::optional<Tensor>& t);

// For the ops that compute in float32: whether any input is 16-bit under autocast, and the
// upcast (identity for tensors that are not float16/bfloat16).
template <class... T>
bool upcasts(const T&... t) {
  return detail::autocast_state.enabled && (detail::is_16bit(t) || ...);
}
Tensor f32(const Tensor& t);
std::optional<Tensor> f32(const std::optional<Tensor>& t);

// batch_norm's dtype under autocast: the parameters' (weight, else running_mean) when x's
// differs from it, else none (no cast).
std::optional<DType> batch_norm_dtype(const Tensor& x, const std::optional<Tensor>& weight,
                                      const Tensor* running_mean);

// Binary arithmetic under autocast: two floating-point operands of different dtypes meet in
// the wider one (float16 with bfloat16 in float32). promoted_dtype is the dtype of the result
// (the first tensor's otherwise); promote casts both operands to it.
namespace detail {
DType promoted_dtype_on(const Tensor* a, const Tensor* b);
void promote_on(Tensor& a, Tensor& b);
}  // namespace detail
inline DType promoted_dtype(const Tensor* a, const Tensor* b) {
  if (!detail::autocast_state.enabled) [[likely]]
    return a ? a->dtype() : b->dtype();
  return detail::promoted_dtype_on(a, b);
}
inline void promote(Tensor& a, Tensor& b) {
  if (detail::autocast_state.enabled) [[unlikely]]
    detail::promote_on(a, b);
}

}  // namespace crisp::amp
