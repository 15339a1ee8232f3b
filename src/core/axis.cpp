// Front ends of the axis ops (placeholder bodies until implemented).
#include "core/tensor_impl.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

namespace crisp {

Tensor softmax(const Tensor& x, int64_t axis, Loc loc) {
  CallScope scope("softmax", loc);
  fail("not implemented yet");
}
Tensor log_softmax(const Tensor& x, int64_t axis, Loc loc) {
  CallScope scope("log_softmax", loc);
  fail("not implemented yet");
}
Tensor cumsum(const Tensor& x, int64_t axis, Loc loc) {
  CallScope scope("cumsum", loc);
  fail("not implemented yet");
}
Tensor cumprod(const Tensor& x, int64_t axis, Loc loc) {
  CallScope scope("cumprod", loc);
  fail("not implemented yet");
}
SortResult sort(const Tensor& x, int64_t axis, bool descending, Loc loc) {
  CallScope scope("sort", loc);
  fail("not implemented yet");
}
Tensor argsort(const Tensor& x, int64_t axis, bool descending, Loc loc) {
  CallScope scope("argsort", loc);
  fail("not implemented yet");
}
SortResult topk(const Tensor& x, int64_t k, int64_t axis, bool largest, Loc loc) {
  CallScope scope("topk", loc);
  fail("not implemented yet");
}
}  // namespace crisp
