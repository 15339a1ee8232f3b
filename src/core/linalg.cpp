// Linear algebra: matmul with numpy semantics (1-d operands, broadcast batch axes), outer, dot.
#include "core/tensor_impl.h"
#include "crisp/amp.h"

namespace crisp {

namespace {

// A 2-d view whose transpose is contiguous (a weight used as w^T).
bool transposed_contiguous(const Tensor& t) {
  const Array& a = t.impl()->array;
  return a.shape.size() == 2 && a.shape[0] > 1 && a.shape[1] > 1 && a.strides[0] == 1 &&
         a.strides[1] == a.shape[0];
}

// a [..., M, K] @ b [..., K, N], both at least 2-d, K already checked.
Tensor matmul2(const Tensor& a, const Tensor& b) {
  const size_t na = a.shape().size(), nb = b.shape().size();
  const int64_t m = a.shape()[na - 2], k = a.shape()[na - 1], n = b.shape()[nb - 1];
  Shape batch = broadcast_shapes(Shape(a.shape().begin(), a.shape().end() - 2),
                                 Shape(b.shape().begin(), b.shape().end() - 2));
  Shape out_shape = batch;
  out_shape.push_back(m);
  out_shape.push_back(n);
  Tensor y;
  if (nb == 2 && na > 2 && a.is_contiguous()) {
    // A batch times one matrix is one tall product: fold the batch into M.
    Tensor flat = make_view(a, {numel_of(batch) * m, k}, {k, 1}, a.impl()->array.offset);
    y = dispatch(Op{OpKind::matmul}, {flat, b}, {flat.shape()[0], n}, a.dtype());
    y = make_view(y, out_shape, contiguous_strides(out_shape), 0);
  } else {
    Shape as = batch, bs = batch;
    as.insert(as.end(), {m, k});
    bs.insert(bs.end(), {k, n});
    y = dispatch(Op{OpKind::matmul}, {broadcast_view(a, as), broadcast_view(b, bs)}, out_shape,
                 a.dtype());
  }
  if (!is_floating(a.dtype())) return y;
  return with_grad(y, {a, b}, [a = a.detach(), b = b.detach()](const Tensor& g) {
    // An operand that is the transpose of a contiguous matrix (x @ w^T) gets its gradient as
    // the transpose of a contiguous product, so the gradient that reaches w is contiguous.
    Tensor ga = a.ndim() == 2 && b.ndim() == 2 && transposed_contiguous(a)
                    ? transpose(matmul(b, transpose(g)))
                    : reduce_to(matmul(g, transpose(b, -2, -1)), a.shape());
    Tensor gb;
    if (b.ndim() == 2 && a.ndim() > 2) {
      // One product over the folded batch instead of a batch of products and a sum.
      const int64_t k = a.shape().back(), n = g.shape().back();
      Tensor a2 = reshape(a, {-1, k}), g2 = reshape(g, {-1, n});
      gb = transposed_contiguous(b) ? transpose(matmul(transpose(g2), a2))
                                    : matmul(transpose(a2), g2);
    } else if (a.ndim() == 2 && b.ndim() == 2 && transposed_contiguous(b)) {
      gb = transpose(matmul(transpose(g), a));
    } else {
      gb = reduce_to(matmul(transpose(a, -2, -1), g), b.shape());
    }
    return Grads{ga, gb};
  });
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, Loc loc) {
  if (amp::lowers(a, b)) return matmul(amp::lower(a), amp::lower(b), loc);  // autocast
  CallScope scope("matmul", loc);
  check_defined(a, "first operand");
  check_defined(b, "second operand");
  check_same_dtype(a, b);
  if (a.dtype() == bool_) fail("not defined for bool tensors");
  if (a.ndim() == 0 || b.ndim() == 0)
    fail("operands need at least one dimension, got shapes ", shape_str(a.shape()), " and ",
         shape_str(b.shape()));
  const int64_t ka = a.shape().back();
  const int64_t kb = b.ndim() == 1 ? b.shape()[0] : b.shape()[b.shape().size() - 2];
  if (ka != kb)
    fail("shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()), " do not contract: ", ka,
         " != ", kb);
  Tensor a2 = a.ndim() == 1 ? unsqueeze(a, 0) : a;
  Tensor b2 = b.ndim() == 1 ? unsqueeze(b, 1) : b;
  Tensor y = matmul2(a2, b2);
  if (a.ndim() == 1 && b.ndim() == 1) return reshape(y, {});
  if (a.ndim() == 1) return squeeze(y, -2);
  if (b.ndim() == 1) return squeeze(y, -1);
  return y;
}

Tensor linear(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias, Loc loc) {
  if (amp::lowers(x, weight, bias))  // autocast
    return linear(amp::lower(x), amp::lower(weight), amp::lower(bias), loc);
  CallScope scope("linear", loc);
  check_defined(x, "input");
  check_defined(weight, "weight");
  check_floating(x);
  check_same_dtype(x, weight);
  if (weight.ndim() != 2) fail("weight must be 2-d [out, in], got ", shape_str(weight.shape()));
  const int64_t out = weight.shape()[0], in = weight.shape()[1];
  if (x.ndim() < 1 || x.shape().back() != in)
    fail("input ", shape_str(x.shape()), " does not end in weight's in_features ", in);
  if (!bias) return matmul(x, transpose(weight));
  const Tensor& b = *bias;
  check_defined(b, "bias");
  check_same_dtype(x, b);
  if (b.ndim() != 1 || b.shape()[0] != out)
    fail("bias must have shape [", out, "], got ", shape_str(b.shape()));
  if (in == 0) return matmul(x, transpose(weight)) + b;  // no rows to fold x into
  Tensor x2 = reshape(x, {-1, in});
  Tensor y =
      dispatch(Op{OpKind::matmul}, {x2, transpose(weight), b}, {x2.shape()[0], out}, x.dtype());
  y = with_grad(y, {x2, weight, b}, [x2 = x2.detach(), w = weight.detach()](const Tensor& g) {
    // As matmul's gradient of x @ w^T: w's is the transpose of a contiguous product.
    return Grads{matmul(g, w), matmul(transpose(g), x2), g.sum(0)};
  });
  Shape shape(x.shape().begin(), x.shape().end() - 1);
  shape.push_back(out);
  return reshape(y, shape);
}

Tensor outer(const Tensor& a, const Tensor& b, Loc loc) {
  CallScope scope("outer", loc);
  check_defined(a, "first operand");
  check_defined(b, "second operand");
  if (a.ndim() != 1 || b.ndim() != 1)
    fail("expects 1-d tensors, got shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()));
  check_same_dtype(a, b);
  return unsqueeze(a, 1) * unsqueeze(b, 0);
}

Tensor dot(const Tensor& a, const Tensor& b, Loc loc) {
  CallScope scope("dot", loc);
  check_defined(a, "first operand");
  check_defined(b, "second operand");
  if (a.ndim() != 1 || b.ndim() != 1)
    fail("expects 1-d tensors, got shapes ", shape_str(a.shape()), " and ", shape_str(b.shape()));
  if (a.shape()[0] != b.shape()[0]) fail("lengths differ: ", a.shape()[0], " != ", b.shape()[0]);
  return matmul(a, b);
}

}  // namespace crisp
