// Ops along one axis: softmax and log_softmax, cumsum and cumprod, sort, argsort and topk.
#include "kernels/axis.h"
#include "core/tensor_impl.h"
#include "crisp/amp.h"

namespace crisp {

namespace {

// axis normalized; a 0-d tensor is treated as one line of length 1.
int64_t line_axis(const Tensor& x, int64_t axis) {
  const int64_t a = normalize_axis(axis, x.ndim());
  return x.ndim() == 0 ? 0 : a;
}

Tensor softmax_like(OpKind fwd, OpKind bwd, const Tensor& x, int64_t axis) {
  check_defined(x);
  check_floating(x);
  const int64_t a = line_axis(x, axis);
  Tensor y = dispatch(AxisAttrs{a}.to_op(fwd), {x}, x.shape(), x.dtype());
  return with_grad(y, {x}, [y = y.detach(), a, bwd](const Tensor& g) {
    return Grads{dispatch(AxisAttrs{a}.to_op(bwd), {y, g}, y.shape(), y.dtype())};
  });
}

// The first k entries along axis of a contiguous tensor, as a view.
Tensor leading(const Tensor& t, int64_t axis, int64_t k) {
  Shape shape = t.shape();
  if (t.ndim() == 0) return t;
  shape[static_cast<size_t>(axis)] = k;
  return make_view(t, shape, t.impl()->array.strides, t.impl()->array.offset);
}

// Sends the gradient of values picked from x back to the positions in indices.
Tensor with_pick_grad(const Tensor& values, const Tensor& x, const Tensor& indices, int64_t axis) {
  if (!is_floating(x.dtype())) return values;
  return with_grad(values, {x},
                   [shape = x.shape(), dt = x.dtype(), indices, axis](const Tensor& g) {
                     if (shape.empty()) return Grads{g};
                     return Grads{scatter_add(zeros(shape, dt), axis, indices, g)};
                   });
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t axis, Loc loc) {
  if (amp::upcasts(x)) return softmax(amp::f32(x), axis, loc);  // autocast
  CallScope scope("softmax", loc);
  return softmax_like(OpKind::softmax, OpKind::softmax_backward, x, axis);
}

Tensor log_softmax(const Tensor& x, int64_t axis, Loc loc) {
  if (amp::upcasts(x)) return log_softmax(amp::f32(x), axis, loc);  // autocast
  CallScope scope("log_softmax", loc);
  return softmax_like(OpKind::log_softmax, OpKind::log_softmax_backward, x, axis);
}

Tensor cumsum(const Tensor& x, int64_t axis, Loc loc) {
  if (amp::upcasts(x)) return cumsum(amp::f32(x), axis, loc);  // autocast
  CallScope scope("cumsum", loc);
  check_defined(x);
  const int64_t a = line_axis(x, axis);
  const DType dt = x.dtype() == bool_ ? i64 : x.dtype();
  Tensor y = dispatch(AxisAttrs{a}.to_op(OpKind::cumsum), {x}, x.shape(), dt);
  if (!is_floating(dt)) return y;
  // Each input feeds every later output: the gradient is a reversed cumulative sum.
  return with_grad(y, {x}, [a, nd = x.ndim()](const Tensor& g) {
    if (nd == 0) return Grads{g};
    return Grads{flip(cumsum(flip(g, a), a), a)};
  });
}

Tensor cumprod(const Tensor& x, int64_t axis, Loc loc) {
  if (amp::upcasts(x)) return cumprod(amp::f32(x), axis, loc);  // autocast
  CallScope scope("cumprod", loc);
  check_defined(x);
  const int64_t a = line_axis(x, axis);
  const DType dt = x.dtype() == bool_ ? i64 : x.dtype();
  Tensor y = dispatch(AxisAttrs{a}.to_op(OpKind::cumprod), {x}, x.shape(), dt);
  if (!is_floating(dt)) return y;
  return with_grad(y, {x}, [x = x.detach(), a](const Tensor& g) {
    return Grads{
        dispatch(AxisAttrs{a}.to_op(OpKind::cumprod_backward), {x, g}, x.shape(), x.dtype())};
  });
}

SortResult sort(const Tensor& x, int64_t axis, bool descending, Loc loc) {
  CallScope scope("sort", loc);
  check_defined(x);
  const int64_t a = line_axis(x, axis);
  auto out = dispatch(AxisAttrs{a, descending}.to_op(OpKind::sort), {x.detach()},
                      {{x.shape(), x.dtype()}, {x.shape(), i64}});
  return {with_pick_grad(out[0], x, out[1], a), out[1]};
}

Tensor argsort(const Tensor& x, int64_t axis, bool descending, Loc loc) {
  CallScope scope("argsort", loc);
  return sort(x.detach(), axis, descending).indices;
}

SortResult topk(const Tensor& x, int64_t k, int64_t axis, bool largest, Loc loc) {
  CallScope scope("topk", loc);
  check_defined(x);
  const int64_t a = line_axis(x, axis);
  const int64_t n = x.ndim() == 0 ? 1 : x.shape()[static_cast<size_t>(a)];
  if (k < 0 || k > n) fail("k ", k, " is out of range for an axis of size ", n);
  // A full stable sort: ties keep their order, as in the sorted result.
  auto out = dispatch(AxisAttrs{a, largest}.to_op(OpKind::sort), {x.detach()},
                      {{x.shape(), x.dtype()}, {x.shape(), i64}});
  Tensor idx = leading(out[1], a, k);
  return {with_pick_grad(leading(out[0], a, k), x, idx, a), idx};
}

}  // namespace crisp
