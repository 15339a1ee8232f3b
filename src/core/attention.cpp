// Front end of scaled dot-product attention, composed of differentiable ops.
#include <cmath>

#include "core/tensor_impl.h"
#include "crisp/amp.h"

namespace crisp {

// ---- attention ----

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const std::optional<Tensor>& mask, bool causal,
                                    std::optional<double> scale, Loc loc) {
  CallScope scope("scaled_dot_product_attention", loc);
  for (const Tensor* t : {&q, &k, &v}) {
    check_defined(*t);
    check_floating(*t);
    if (t->ndim() < 2)
      fail("q, k and v must have at least 2 dims [..., L, E], got ", shape_str(t->shape()));
  }
  check_same_dtype(q, k);
  check_same_dtype(q, v);
  const int64_t E = q.shape().back(), Lq = q.shape()[q.shape().size() - 2];
  const int64_t Lk = k.shape()[k.shape().size() - 2];
  if (k.shape().back() != E)
    fail("q ", shape_str(q.shape()), " and k ", shape_str(k.shape()), " differ in embedding size");
  if (v.shape()[v.shape().size() - 2] != Lk)
    fail("k ", shape_str(k.shape()), " and v ", shape_str(v.shape()), " differ in length");
  const double s = scale.value_or(1 / std::sqrt(static_cast<double>(E)));
  Tensor scores = matmul(q, transpose(k, -2, -1)) * s;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  if (causal) {
    // Top-left aligned: query i sees keys j <= i, as PyTorch's is_causal.
    Tensor allowed = reshape(arange(0, double(Lq), 1, i64), {Lq, 1}) >=
                     reshape(arange(0, double(Lk), 1, i64), {1, Lk});
    scores = where(allowed, scores, neg_inf);
  }
  if (mask) {
    check_defined(*mask, "mask");
    if (mask->dtype() != bool_)
      fail("mask must be bool (true = attend), got ", dtype_name(mask->dtype()));
    broadcast_shapes(mask->shape(), scores.shape());
    scores = where(*mask, scores, neg_inf);
  }
  return matmul(softmax(scores, -1), v);
}

}  // namespace crisp
