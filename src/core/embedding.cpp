// Front ends of dropout and embedding lookups.
#include "core/tensor_impl.h"
#include "crisp/amp.h"

namespace crisp {

// ---- dropout and embedding ----

namespace {
// t times dropout op's mask; its gradient is the gradient times the same mask.
Tensor apply_dropout(const Op& op, const Tensor& t) {
  Tensor y = dispatch(op, {t.contiguous()}, t.shape(), t.dtype());
  return with_grad(y, {t}, [op](const Tensor& g) { return Grads{apply_dropout(op, g)}; });
}
}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen, Loc loc) {
  CallScope scope("dropout", loc);
  check_defined(x);
  check_floating(x);
  if (!(p >= 0 && p < 1)) fail("p must be in [0, 1), got ", p);
  if (!training || p == 0) return x;
  // Keep with probability 1 - p; the kept elements are scaled so the expectation is unchanged.
  // The mask is drawn again from the same stream for the gradient instead of being stored.
  return apply_dropout(Op{OpKind::dropout, random_stream(gen, x.numel()), {p}}, x);
}

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
