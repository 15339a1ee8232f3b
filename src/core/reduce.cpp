// Front ends of the reduce ops (placeholder bodies until implemented).
#include "core/tensor_impl.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

namespace crisp {

Tensor sum(const Tensor& x, Axes axes, bool keepdims, Loc loc) {
  CallScope scope("sum", loc);
  fail("not implemented yet");
}
Tensor mean(const Tensor& x, Axes axes, bool keepdims, Loc loc) {
  CallScope scope("mean", loc);
  fail("not implemented yet");
}
Tensor prod(const Tensor& x, Axes axes, bool keepdims, Loc loc) {
  CallScope scope("prod", loc);
  fail("not implemented yet");
}
Tensor max(const Tensor& x, Axes axes, bool keepdims, Loc loc) {
  CallScope scope("max", loc);
  fail("not implemented yet");
}
Tensor min(const Tensor& x, Axes axes, bool keepdims, Loc loc) {
  CallScope scope("min", loc);
  fail("not implemented yet");
}
Tensor argmax(const Tensor& x, std::optional<int64_t> axis, bool keepdims, Loc loc) {
  CallScope scope("argmax", loc);
  fail("not implemented yet");
}
Tensor argmin(const Tensor& x, std::optional<int64_t> axis, bool keepdims, Loc loc) {
  CallScope scope("argmin", loc);
  fail("not implemented yet");
}
Tensor var(const Tensor& x, Axes axes, int64_t correction, bool keepdims, Loc loc) {
  CallScope scope("var", loc);
  fail("not implemented yet");
}
Tensor std(const Tensor& x, Axes axes, int64_t correction, bool keepdims, Loc loc) {
  CallScope scope("std", loc);
  fail("not implemented yet");
}
Tensor logsumexp(const Tensor& x, Axes axes, bool keepdims, Loc loc) {
  CallScope scope("logsumexp", loc);
  fail("not implemented yet");
}
Tensor all(const Tensor& x, Axes axes, bool keepdims, Loc loc) {
  CallScope scope("all", loc);
  fail("not implemented yet");
}
Tensor any(const Tensor& x, Axes axes, bool keepdims, Loc loc) {
  CallScope scope("any", loc);
  fail("not implemented yet");
}
}  // namespace crisp
