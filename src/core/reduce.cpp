// Reductions over a set of axes (sum, mean, prod, max, min, arg-extremes, var/std, logsumexp,
// all/any) and their gradients.
#include <cmath>
#include <limits>

#include "core/tensor_impl.h"
#include "crisp/amp.h"

namespace crisp {

namespace {

// The axes to reduce, sorted; a 0-d tensor has none (axis 0 or -1 still names it).
std::vector<int64_t> reduce_axes(const Tensor& x, const Axes& axes) {
  std::vector<int64_t> ax = normalize_axes(axes, x.ndim());
  if (x.ndim() == 0) ax.clear();
  return ax;
}

// x's shape with the reduced axes kept as size 1 (the backend op's output shape).
Shape kept_shape(const Shape& s, const std::vector<int64_t>& axes) {
  Shape out = s;
  for (int64_t a : axes) out[static_cast<size_t>(a)] = 1;
  return out;
}

Shape dropped_shape(const Shape& s, const std::vector<int64_t>& axes) {
  Shape out;
  for (size_t i = 0; i < s.size(); ++i)
    if (std::find(axes.begin(), axes.end(), static_cast<int64_t>(i)) == axes.end())
      out.push_back(s[i]);
  return out;
}

int64_t reduced_count(const Shape& s, const std::vector<int64_t>& axes) {
  int64_t n = 1;
  for (int64_t a : axes) n *= s[static_cast<size_t>(a)];
  return n;
}

Tensor run_reduce(OpKind kind, const Tensor& x, const std::vector<int64_t>& axes, DType dtype) {
  return dispatch(Op{kind, axes}, {x}, kept_shape(x.shape(), axes), dtype);
}

Tensor finish(const Tensor& y, const Shape& xshape, const std::vector<int64_t>& axes,
              bool keepdims) {
  return keepdims ? y : reshape(y, dropped_shape(xshape, axes));
}

void check_nonempty(const Tensor& x, const std::vector<int64_t>& axes) {
  for (int64_t a : axes)
    if (x.shape()[static_cast<size_t>(a)] == 0)
      fail("cannot reduce axis ", a, " of size 0 of a tensor of shape ", shape_str(x.shape()));
}

// max and min: the gradient goes to the positions holding the extreme, split evenly on ties.
Tensor extreme(OpKind kind, const Tensor& x, const Axes& axes, bool keepdims) {
  check_defined(x);
  std::vector<int64_t> ax = reduce_axes(x, axes);
  check_nonempty(x, ax);
  Tensor y = run_reduce(kind, x, ax, x.dtype());
  if (is_floating(x.dtype())) {
    y = with_grad(y, {x}, [x = x.detach(), y = y.detach(), ax](const Tensor& g) {
      Tensor hit = x == expand(y, x.shape());
      Tensor count = sum(hit.cast(g.dtype()), Axes(ax), true);
      return Grads{where(hit, expand(g / count, x.shape()), 0)};
    });
  }
  return finish(y, x.shape(), ax, keepdims);
}

Tensor arg_extreme(OpKind kind, const Tensor& x, std::optional<int64_t> axis, bool keepdims) {
  check_defined(x);
  if (x.dtype() == bool_) fail("not defined for bool tensors");
  if (!axis) {
    if (x.numel() == 0) fail("cannot take the position in an empty tensor");
    Tensor flat = reshape(x.detach(), {x.numel()});
    Tensor i = run_reduce(kind, flat, {0}, i64);
    return reshape(i, keepdims ? Shape(static_cast<size_t>(x.ndim()), 1) : Shape{});
  }
  std::vector<int64_t> ax = reduce_axes(x, Axes(*axis));
  check_nonempty(x, ax);
  Tensor i = run_reduce(kind, x.detach(), ax, i64);
  return finish(i, x.shape(), ax, keepdims);
}

Tensor logic(OpKind kind, const Tensor& x, const Axes& axes, bool keepdims) {
  check_defined(x);
  std::vector<int64_t> ax = reduce_axes(x, axes);
  return finish(run_reduce(kind, x.detach(), ax, bool_), x.shape(), ax, keepdims);
}

}  // namespace

Tensor sum(const Tensor& x, Axes axes, bool keepdims, Loc loc) {
  if (amp::upcasts(x)) return sum(amp::f32(x), std::move(axes), keepdims, loc);  // autocast
  CallScope scope("sum", loc);
  check_defined(x);
  std::vector<int64_t> ax = reduce_axes(x, axes);
  // Bools count; other dtypes keep their type (int64 stays int64).
  const DType dt = x.dtype() == bool_ ? i64 : x.dtype();
  Tensor y = run_reduce(OpKind::sum, x, ax, dt);
  if (is_floating(dt)) {
    y = with_grad(y, {x}, [shape = x.shape()](const Tensor& g) { return Grads{expand(g, shape)}; });
  }
  return finish(y, x.shape(), ax, keepdims);
}

Tensor mean(const Tensor& x, Axes axes, bool keepdims, Loc loc) {
  CallScope scope("mean", loc);
  check_defined(x);
  check_floating(x);
  std::vector<int64_t> ax = reduce_axes(x, axes);
  // An empty reduction is 0 / 0 = NaN, as in PyTorch.
  return sum(x, Axes(ax), keepdims) / static_cast<double>(reduced_count(x.shape(), ax));
}

Tensor prod(const Tensor& x, Axes axes, bool keepdims, Loc loc) {
  if (amp::upcasts(x)) return prod(amp::f32(x), std::move(axes), keepdims, loc);  // autocast
  CallScope scope("prod", loc);
  check_defined(x);
  std::vector<int64_t> ax = reduce_axes(x, axes);
  const DType dt = x.dtype() == bool_ ? i64 : x.dtype();
  Tensor y = run_reduce(OpKind::prod, x, ax, dt);
  if (is_floating(dt)) {
    // d prod / d x_i is the product of the others: y / x_i without zeros; with exactly one zero
    // in the group only that position gets the product of the rest; with more, all get 0.
    y = with_grad(y, {x}, [x = x.detach(), ax](const Tensor& g) {
      NoGrad no_grad;
      Tensor is_zero = x == 0;
      Tensor safe = where(is_zero, 1, x);
      Tensor rest = expand(prod(safe, Axes(ax), true), x.shape());
      Tensor zeros = expand(sum(is_zero, Axes(ax), true), x.shape());
      Tensor d = where(is_zero, where(zeros == 1, rest, 0), where(zeros == 0, rest / safe, 0));
      return Grads{expand(g, x.shape()) * d};
    });
  }
  return finish(y, x.shape(), ax, keepdims);
}

Tensor max(const Tensor& x, Axes axes, bool keepdims, Loc loc) {
  CallScope scope("max", loc);
  return extreme(OpKind::max, x, axes, keepdims);
}
Tensor min(const Tensor& x, Axes axes, bool keepdims, Loc loc) {
  CallScope scope("min", loc);
  return extreme(OpKind::min, x, axes, keepdims);
}
Tensor argmax(const Tensor& x, std::optional<int64_t> axis, bool keepdims, Loc loc) {
  CallScope scope("argmax", loc);
  return arg_extreme(OpKind::argmax, x, axis, keepdims);
}
Tensor argmin(const Tensor& x, std::optional<int64_t> axis, bool keepdims, Loc loc) {
  CallScope scope("argmin", loc);
  return arg_extreme(OpKind::argmin, x, axis, keepdims);
}

Tensor var(const Tensor& x, Axes axes, int64_t correction, bool keepdims, Loc loc) {
  CallScope scope("var", loc);
  check_defined(x);
  check_floating(x);
  if (correction < 0) fail("correction must be non-negative, got ", correction);
  std::vector<int64_t> ax = reduce_axes(x, axes);
  const int64_t n = reduced_count(x.shape(), ax);
  // Two passes (mean, then squared deviations) stay accurate where E[x^2] - E[x]^2 cancels.
  Tensor d = x - mean(x, Axes(ax), true);
  return sum(d * d, Axes(ax), keepdims) / static_cast<double>(std::max<int64_t>(n - correction, 0));
}

Tensor std(const Tensor& x, Axes axes, int64_t correction, bool keepdims, Loc loc) {
  CallScope scope("std", loc);
  return sqrt(var(x, std::move(axes), correction, keepdims));
}

Tensor logsumexp(const Tensor& x, Axes axes, bool keepdims, Loc loc) {
  if (amp::upcasts(x)) return logsumexp(amp::f32(x), std::move(axes), keepdims, loc);  // autocast
  CallScope scope("logsumexp", loc);
  check_defined(x);
  check_floating(x);
  std::vector<int64_t> ax = reduce_axes(x, axes);
  Tensor y = run_reduce(OpKind::logsumexp, x, ax, x.dtype());
  y = with_grad(y, {x}, [x = x.detach(), y = y.detach()](const Tensor& g) {
    return Grads{expand(g, x.shape()) * exp(x - expand(y, x.shape()))};
  });
  return finish(y, x.shape(), ax, keepdims);
}

Tensor all(const Tensor& x, Axes axes, bool keepdims, Loc loc) {
  CallScope scope("all", loc);
  return logic(OpKind::all, x, axes, keepdims);
}
Tensor any(const Tensor& x, Axes axes, bool keepdims, Loc loc) {
  CallScope scope("any", loc);
  return logic(OpKind::any, x, axes, keepdims);
}

}  // namespace crisp
