// Front ends of the shape ops: concat, stack, split, chunk, pad, flip, repeat, tril, triu.
#include <algorithm>

#include "core/tensor_impl.h"
#include "kernels/indexing.h"

namespace crisp {

namespace {

size_t at(int64_t i) { return static_cast<size_t>(i); }

// pad's argument (innermost axis first) that pads only `axis` of an ndim tensor.
std::vector<int64_t> axis_pads(int64_t ndim, int64_t axis, int64_t before, int64_t after) {
  std::vector<int64_t> pads(at(2 * (ndim - axis)), 0);
  pads[at(2 * (ndim - 1 - axis))] = before;
  pads[at(2 * (ndim - 1 - axis) + 1)] = after;
  return pads;
}

// Zeros around x along axis: the gradient of taking a piece out of a larger tensor.
Tensor pad_axis(const Tensor& x, int64_t axis, int64_t before, int64_t after) {
  if (before == 0 && after == 0) return x;
  return pad(x, axis_pads(x.ndim(), axis, before, after));
}

// Elements [start, start + length) of x along axis, as a view (no copy).
Tensor narrow(const Tensor& x, int64_t axis, int64_t start, int64_t length) {
  const Array& a = x.impl()->array;
  if (start == 0 && length == a.shape[at(axis)]) return x;
  Shape shape = a.shape;
  shape[at(axis)] = length;
  const int64_t after = a.shape[at(axis)] - start - length;
  return with_grad(
      make_view(x, shape, a.strides, a.offset + start * a.strides[at(axis)]), {x},
      [axis, start, after](const Tensor& g) { return Grads{pad_axis(g, axis, start, after)}; });
}

void check_all_defined(const std::vector<Tensor>& xs) {
  if (xs.empty()) fail("needs at least one tensor");
  for (size_t i = 0; i < xs.size(); ++i)
    if (!xs[i].defined()) fail("tensor ", i, " is undefined");
}

}  // namespace

Tensor concat(const std::vector<Tensor>& xs, int64_t axis, Loc loc) {
  CallScope scope("concat", loc);
  check_all_defined(xs);
  const Tensor& first = xs[0];
  if (first.ndim() == 0) fail("cannot concatenate 0-d tensors (use stack)");
  axis = normalize_axis(axis, first.ndim());
  Shape shape = first.shape();
  shape[at(axis)] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    if (x.dtype() != first.dtype())
      fail("dtype mismatch: tensor 0 is ", dtype_name(first.dtype()), " but tensor ", i, " is ",
           dtype_name(x.dtype()));
    bool fits = x.ndim() == first.ndim();
    for (int64_t d = 0; fits && d < x.ndim(); ++d)
      fits = d == axis || x.shape()[at(d)] == first.shape()[at(d)];
    if (!fits)
      fail("shapes ", shape_str(first.shape()), " (tensor 0) and ", shape_str(x.shape()),
           " (tensor ", i, ") differ outside axis ", axis);
    shape[at(axis)] += x.shape()[at(axis)];
  }
  if (xs.size() == 1) return first;
  Tensor out =
      dispatch(ConcatAttrs{axis}.to_op(OpKind::concat), xs, {OutSpec{shape, first.dtype()}})[0];
  std::vector<int64_t> sizes;
  for (const Tensor& x : xs) sizes.push_back(x.shape()[at(axis)]);
  return with_grad(out, xs, [axis, sizes](const Tensor& g) {
    Grads grads;
    int64_t start = 0;
    for (int64_t n : sizes) {
      grads.push_back(narrow(g, axis, start, n));
      start += n;
    }
    return grads;
  });
}

Tensor stack(const std::vector<Tensor>& xs, int64_t axis, Loc loc) {
  CallScope scope("stack", loc);
  check_all_defined(xs);
  axis = normalize_axis(axis, xs[0].ndim() + 1);
  std::vector<Tensor> parts;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (xs[i].shape() != xs[0].shape())
      fail("shapes ", shape_str(xs[0].shape()), " (tensor 0) and ", shape_str(xs[i].shape()),
           " (tensor ", i, ") differ");
    parts.push_back(unsqueeze(xs[i], axis));
  }
  return concat(parts, axis);
}

std::vector<Tensor> split(const Tensor& x, std::vector<int64_t> sizes, int64_t axis, Loc loc) {
  CallScope scope("split", loc);
  check_defined(x);
  if (x.ndim() == 0) fail("cannot split a 0-d tensor");
  axis = normalize_axis(axis, x.ndim());
  int64_t total = 0;
  for (int64_t n : sizes) {
    if (n < 0) fail("negative size ", n, " in sizes ", shape_str(sizes));
    total += n;
  }
  if (total != x.shape()[at(axis)])
    fail("sizes ", shape_str(sizes), " sum to ", total, " but axis ", axis, " of shape ",
         shape_str(x.shape()), " has size ", x.shape()[at(axis)]);
  std::vector<Tensor> out;
  int64_t start = 0;
  for (int64_t n : sizes) {
    out.push_back(narrow(x, axis, start, n));
    start += n;
  }
  return out;
}

std::vector<Tensor> chunk(const Tensor& x, int64_t n, int64_t axis, Loc loc) {
  CallScope scope("chunk", loc);
  check_defined(x);
  if (n <= 0) fail("number of chunks must be positive, got ", n);
  if (x.ndim() == 0) fail("cannot chunk a 0-d tensor");
  axis = normalize_axis(axis, x.ndim());
  const int64_t size = x.shape()[at(axis)];
  // As torch.chunk: pieces of ceil(size / n), so there may be fewer than n of them; an empty
  // axis gives n empty pieces.
  std::vector<int64_t> sizes;
  if (size == 0) {
    sizes.assign(at(n), 0);
  } else {
    const int64_t piece = (size + n - 1) / n;
    for (int64_t start = 0; start < size; start += piece)
      sizes.push_back(std::min(piece, size - start));
  }
  return split(x, sizes, axis);
}

Tensor pad(const Tensor& x, std::vector<int64_t> pads, const std::string& mode, double value,
           Loc loc) {
  CallScope scope("pad", loc);
  check_defined(x);
  const bool reflect = mode == "reflect";
  if (!reflect && mode != "constant")
    fail("mode must be \"constant\" or \"reflect\", got \"", mode, "\"");
  if (pads.size() % 2 != 0 || pads.size() > at(2 * x.ndim()))
    fail(pads.size(), " pad values for a tensor with ", x.ndim(),
         " dimensions: need (before, after) pairs for at most ", x.ndim(), " axes");
  const int64_t nd = x.ndim();
  // Per axis, outermost first, as the kernel takes them.
  std::vector<int64_t> before(at(nd), 0), after(at(nd), 0);
  for (size_t i = 0; i < pads.size() / 2; ++i) {
    before[at(nd) - 1 - i] = pads[2 * i];
    after[at(nd) - 1 - i] = pads[2 * i + 1];
  }
  Shape shape = x.shape();
  for (int64_t d = 0; d < nd; ++d) {
    const int64_t n = x.shape()[at(d)], b = before[at(d)], a = after[at(d)];
    if (reflect && (b < 0 || a < 0 || b >= n || a >= n))
      fail("reflect padding (", b, ", ", a, ") of axis ", d, " must be non-negative and less than ",
           "its size ", n);
    shape[at(d)] = n + b + a;
    if (shape[at(d)] < 0)
      fail("padding (", b, ", ", a, ") leaves axis ", d, " of size ", n, " with negative size ",
           shape[at(d)]);
  }
  if (shape == x.shape() && std::all_of(pads.begin(), pads.end(), [](int64_t p) { return !p; }))
    return x;
  Tensor out =
      dispatch(PadAttrs{reflect, before, after, value}.to_op(OpKind::pad), {x}, shape, x.dtype());
  if (!reflect) {
    // Constant padding's gradient crops the padding off again: padding by the negated amounts.
    return with_grad(out, {x}, [pads](const Tensor& g) {
      std::vector<int64_t> crop(pads.size());
      for (size_t i = 0; i < pads.size(); ++i) crop[i] = -pads[i];
      return Grads{pad(g, crop)};
    });
  }
  return with_grad(out, {x}, [before, after, in_shape = x.shape()](const Tensor& g) {
    // Reflect padding is separable, so its gradient folds each axis back in turn: the
    // mirrored borders add onto the elements they copied (positions 1..b and n-1-a..n-2).
    Tensor r = g;
    for (size_t d = 0; d < before.size(); ++d) {
      const int64_t b = before[d], a = after[d], n = in_shape[d];
      const int64_t axis = static_cast<int64_t>(d);
      if (b == 0 && a == 0) continue;
      Tensor acc = narrow(r, axis, b, n);
      if (b > 0) acc = acc + pad_axis(flip(narrow(r, axis, 0, b), {axis}), axis, 1, n - 1 - b);
      if (a > 0) acc = acc + pad_axis(flip(narrow(r, axis, b + n, a), {axis}), axis, n - 1 - a, 1);
      r = acc;
    }
    return Grads{r};
  });
}

Tensor flip(const Tensor& x, Axes axes, Loc loc) {
  CallScope scope("flip", loc);
  check_defined(x);
  std::vector<int64_t> ax = normalize_axes(axes, x.ndim());
  if (x.ndim() == 0) return x;
  // A flip is a view with negated strides: no copy.
  const Array& a = x.impl()->array;
  Shape strides = a.strides;
  int64_t offset = a.offset;
  for (int64_t d : ax) {
    if (a.shape[at(d)] == 0) continue;
    offset += (a.shape[at(d)] - 1) * strides[at(d)];
    strides[at(d)] = -strides[at(d)];
  }
  return with_grad(make_view(x, a.shape, strides, offset), {x},
                   [ax](const Tensor& g) { return Grads{flip(g, Axes(ax))}; });
}

Tensor repeat(const Tensor& x, std::vector<int64_t> repeats, Loc loc) {
  CallScope scope("repeat", loc);
  check_defined(x);
  if (static_cast<int64_t>(repeats.size()) < x.ndim())
    fail(repeats.size(), " repeats for a tensor with ", x.ndim(),
         " dimensions: need at least one per dimension");
  for (int64_t r : repeats)
    if (r < 0) fail("negative repeat count ", r, " in ", shape_str(repeats));
  // Interleave a broadcast axis before each axis: [r0, s0, r1, s1, ...] -> [r0*s0, r1*s1, ...].
  Shape sizes(repeats.size() - x.shape().size(), 1);
  sizes.insert(sizes.end(), x.shape().begin(), x.shape().end());
  Shape unit, wide, result;
  for (size_t i = 0; i < repeats.size(); ++i) {
    unit.insert(unit.end(), {1, sizes[i]});
    wide.insert(wide.end(), {repeats[i], sizes[i]});
    result.push_back(repeats[i] * sizes[i]);
  }
  return reshape(expand(reshape(x, unit), wide), result);
}

namespace {
Tensor triangle(const char* name, OpKind kind, const Tensor& x, int64_t k, Loc loc) {
  CallScope scope(name, loc);
  check_defined(x);
  if (x.ndim() < 2)
    fail("needs a tensor of at least 2 dimensions, got shape ", shape_str(x.shape()));
  Tensor out = dispatch(TriangleAttrs{k}.to_op(kind), {x}, x.shape(), x.dtype());
  const bool lower = kind == OpKind::tril;
  return with_grad(out, {x},
                   [lower, k](const Tensor& g) { return Grads{lower ? tril(g, k) : triu(g, k)}; });
}
}  // namespace

Tensor tril(const Tensor& x, int64_t k, Loc loc) {
  return triangle("tril", OpKind::tril, x, k, loc);
}
Tensor triu(const Tensor& x, int64_t k, Loc loc) {
  return triangle("triu", OpKind::triu, x, k, loc);
}

}  // namespace crisp
