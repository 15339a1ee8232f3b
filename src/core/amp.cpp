// Mixed precision: the autocast scope's casts.
#include "crisp/amp.h"

#include "core/tensor_impl.h"

namespace crisp::amp {

Autocast::Autocast(DType dtype, bool enabled, Loc loc)
    : previous_enabled_(detail::autocast_state.enabled),
      previous_dtype_(detail::autocast_state.dtype) {
  if (enabled && dtype != DType::f16 && dtype != DType::bf16) {
    CallScope scope("Autocast", loc);
    fail("dtype must be float16 or bfloat16, got ", dtype_name(dtype));
  }
  detail::autocast_state.enabled = enabled;
  if (enabled) detail::autocast_state.dtype = dtype;
}

Autocast::~Autocast() {
  detail::autocast_state.enabled = previous_enabled_;
  detail::autocast_state.dtype = previous_dtype_;
}

Tensor lower(const Tensor& t) { return lowers(t) ? t.cast(autocast_dtype()) : t; }

std::optional<Tensor> lower(const std::optional<Tensor>& t) {
  if (!t) return t;
  return lower(*t);
}

Tensor f32(const Tensor& t) { return detail::is_16bit(t) ? t.cast(DType::f32) : t; }

std::optional<Tensor> f32(const std::optional<Tensor>& t) {
  if (!t) return t;
  return f32(*t);
}

std::optional<DType> batch_norm_dtype(const Tensor& x, const std::optional<Tensor>& weight,
                                      const Tensor* running_mean) {
  if (!autocast_enabled() || !x.defined() || !is_floating(x.dtype())) return std::nullopt;
  const Tensor* ref = weight && weight->defined() ? &*weight : running_mean;
  if (ref == nullptr || !ref->defined() || !is_floating(ref->dtype()) || ref->dtype() == x.dtype())
    return std::nullopt;
  return ref->dtype();
}

namespace {
// The dtype two floating-point dtypes promote to (float16 with bfloat16 meets in float32).
DType wider(DType a, DType b) {
  if (a == DType::f64 || b == DType::f64) return DType::f64;
  if (a == DType::f32 || b == DType::f32) return DType::f32;
  return a == b ? a : DType::f32;
}
}  // namespace

namespace detail {

DType promoted_dtype_on(const Tensor* a, const Tensor* b) {
  const DType first = a ? a->dtype() : b->dtype();
  if (!a || !b || !a->defined() || !b->defined()) return first;
  if (!is_floating(a->dtype()) || !is_floating(b->dtype())) return first;
  return wider(a->dtype(), b->dtype());
}

void promote_on(Tensor& a, Tensor& b) {
  if (!a.defined() || !b.defined() || a.dtype() == b.dtype()) return;
  if (!is_floating(a.dtype()) || !is_floating(b.dtype())) return;
  const DType to = wider(a.dtype(), b.dtype());
  a = a.cast(to);
  b = b.cast(to);
}

}  // namespace detail

}  // namespace crisp::amp
