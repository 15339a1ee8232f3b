// Front end of embedding lookups.
#include "core/tensor_impl.h"

namespace crisp {

Tensor embedding(const Tensor& indices, const Tensor& weight, Loc loc) {
  CallScope scope("embedding", loc);
  check_defined(indices, "indices");
  check_defined(weight, "weight");
  if (indices.dtype() != i64) fail("indices must be int64, got ", dtype_name(indices.dtype()));
  check_floating(weight);
  if (weight.ndim() != 2) fail("weight must be 2-d [num, dim], got ", shape_str(weight.shape()));
  Shape out_shape = indices.shape();
  out_shape.push_back(weight.shape()[1]);
  Tensor y = dispatch(Op{OpKind::embedding}, {indices, weight}, out_shape, weight.dtype());
  return with_grad(
      y, {indices, weight}, [idx = indices.detach(), ws = weight.shape()](const Tensor& g) {
        const int64_t m = idx.numel();
        Tensor dw = dispatch(Op{OpKind::embedding_backward},
                             {reshape(g, {m, ws[1]}), reshape(idx, {m})}, ws, g.dtype());
        return Grads{Tensor(), dw};
      });
}

}  // namespace crisp
