// Front ends of the linalg ops (placeholder bodies until implemented).
#include "core/tensor_impl.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

namespace crisp {

Tensor matmul(const Tensor& a, const Tensor& b, Loc loc) {
  CallScope scope("matmul", loc);
  fail("not implemented yet");
}
Tensor outer(const Tensor& a, const Tensor& b, Loc loc) {
  CallScope scope("outer", loc);
  fail("not implemented yet");
}
Tensor dot(const Tensor& a, const Tensor& b, Loc loc) {
  CallScope scope("dot", loc);
  fail("not implemented yet");
}
}  // namespace crisp
