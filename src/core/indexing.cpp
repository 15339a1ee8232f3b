// Front ends of the indexing ops (placeholder bodies until implemented).
#include "core/tensor_impl.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

namespace crisp {

Tensor index_select(const Tensor& x, int64_t axis, const Tensor& index, Loc loc) {
  CallScope scope("index_select", loc);
  fail("not implemented yet");
}
Tensor gather(const Tensor& x, int64_t axis, const Tensor& index, Loc loc) {
  CallScope scope("gather", loc);
  fail("not implemented yet");
}
Tensor take_along_axis(const Tensor& x, const Tensor& index, int64_t axis, Loc loc) {
  CallScope scope("take_along_axis", loc);
  fail("not implemented yet");
}
Tensor scatter(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src, Loc loc) {
  CallScope scope("scatter", loc);
  fail("not implemented yet");
}
Tensor scatter_add(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src, Loc loc) {
  CallScope scope("scatter_add", loc);
  fail("not implemented yet");
}
Tensor index_add(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src, Loc loc) {
  CallScope scope("index_add", loc);
  fail("not implemented yet");
}
Tensor nonzero(const Tensor& mask, Loc loc) {
  CallScope scope("nonzero", loc);
  fail("not implemented yet");
}
Tensor masked_select(const Tensor& x, const Tensor& mask, Loc loc) {
  CallScope scope("masked_select", loc);
  fail("not implemented yet");
}
Tensor one_hot(const Tensor& labels, int64_t classes, DType dtype, Loc loc) {
  CallScope scope("one_hot", loc);
  fail("not implemented yet");
}
}  // namespace crisp
namespace crisp {
Tensor Tensor::index(const std::vector<Index>& indices, Loc loc) const {
  CallScope scope("index", loc);
  (void)indices;
  fail("not implemented yet");
}
Tensor Tensor::index_put(const std::vector<Index>& indices, const Operand& value, Loc loc) const {
  CallScope scope("index_put", loc);
  (void)indices;
  (void)value;
  fail("not implemented yet");
}
}  // namespace crisp
