// Front ends of the shape ops (placeholder bodies until implemented).
#include "core/tensor_impl.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

namespace crisp {

Tensor concat(const std::vector<Tensor>& xs, int64_t axis, Loc loc) {
  CallScope scope("concat", loc);
  fail("not implemented yet");
}
Tensor stack(const std::vector<Tensor>& xs, int64_t axis, Loc loc) {
  CallScope scope("stack", loc);
  fail("not implemented yet");
}
std::vector<Tensor> split(const Tensor& x, std::vector<int64_t> sizes, int64_t axis, Loc loc) {
  CallScope scope("split", loc);
  fail("not implemented yet");
}
std::vector<Tensor> chunk(const Tensor& x, int64_t n, int64_t axis, Loc loc) {
  CallScope scope("chunk", loc);
  fail("not implemented yet");
}
Tensor pad(const Tensor& x, std::vector<int64_t> pads, const std::string& mode, double value,
           Loc loc) {
  CallScope scope("pad", loc);
  fail("not implemented yet");
}
Tensor flip(const Tensor& x, Axes axes, Loc loc) {
  CallScope scope("flip", loc);
  fail("not implemented yet");
}
Tensor repeat(const Tensor& x, std::vector<int64_t> repeats, Loc loc) {
  CallScope scope("repeat", loc);
  fail("not implemented yet");
}
Tensor tril(const Tensor& x, int64_t k, Loc loc) {
  CallScope scope("tril", loc);
  fail("not implemented yet");
}
Tensor triu(const Tensor& x, int64_t k, Loc loc) {
  CallScope scope("triu", loc);
  fail("not implemented yet");
}
}  // namespace crisp
