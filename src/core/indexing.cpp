// Indexing: x[...] views and indexed assignment, gather/scatter by index tensors, masks, one_hot.
#include <algorithm>
#include <numeric>

#include "core/tensor_impl.h"
#include "kernels/indexing.h"

namespace crisp {

namespace {

void check_index_tensor(const Tensor& index) {
  check_defined(index, "index");
  if (index.dtype() != i64) fail("index must be int64, got ", dtype_name(index.dtype()));
}

void check_has_axes(const Tensor& x) {
  if (x.ndim() == 0) fail("needs a tensor with at least one dimension, got a 0-d tensor");
}

// ---- the primitives, without call scopes, so that errors name the public op using them ----
// wrap: negative indices count from the end (x[idx] does this; the public ops do not).

Tensor select_impl(const Tensor& x, int64_t axis, const Tensor& index, bool wrap);
Tensor index_add_impl(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src,
                      bool wrap);
Tensor gather_impl(const Tensor& x, int64_t axis, const Tensor& index, bool wrap);
Tensor scatter_impl(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src,
                    bool wrap, bool accumulate);
Tensor assign_strided(const Tensor& x, const Tensor& value, int64_t offset, const Shape& strides);

// A view of x's storage; lstrides and loffset give the same view in a contiguous layout of x's
// shape, which is what the gradient (an assign_strided into zeros) writes through.
struct ViewLayout {
  Shape shape, strides, lstrides;
  int64_t offset = 0, loffset = 0;
};

Tensor strided_view(const Tensor& x, const ViewLayout& v) {
  Tensor out = make_view(x, v.shape, v.strides, v.offset);
  if (!any_requires_grad({x})) return out;
  return with_grad(out, {x}, [xs = x.shape(), v](const Tensor& g) {
    return Grads{assign_strided(zeros(xs, g.dtype()), g, v.loffset, v.lstrides)};
  });
}

// A copy of x (any layout) with the elements at offset + sum(i * strides), in a contiguous
// layout of x's shape, replaced by value (whose shape is the view's).
Tensor assign_strided(const Tensor& x, const Tensor& value, int64_t offset, const Shape& strides) {
  Tensor out = dispatch(AssignStridedAttrs{offset, strides}.to_op(OpKind::assign_strided),
                        {x, value}, x.shape(), x.dtype());
  if (!any_requires_grad({x, value})) return out;
  const bool need_x = x.requires_grad(), need_value = value.requires_grad();
  return with_grad(
      out, {x, value}, [vs = value.shape(), offset, strides, need_x, need_value](const Tensor& g) {
        Tensor gc = g.contiguous(), gx, gv;
        if (need_x) gx = assign_strided(gc, zeros(vs, g.dtype()), offset, strides);
        if (need_value)
          gv = strided_view(gc, {vs, strides, strides, gc.impl()->array.offset + offset, offset});
        return Grads{gx, gv};
      });
}

// t (its shape within shape) placed in the leading corner of zeros of shape.
Tensor pad_to(const Tensor& t, const Shape& shape) {
  if (t.shape() == shape) return t;
  return assign_strided(zeros(shape, t.dtype()), t, 0, contiguous_strides(shape));
}

Tensor select_impl(const Tensor& x, int64_t axis, const Tensor& index, bool wrap) {
  Shape shape = x.shape();
  shape[static_cast<size_t>(axis)] = index.numel();
  Tensor out =
      dispatch(IndexAttrs{axis, wrap}.to_op(OpKind::index_select), {x, index}, shape, x.dtype());
  if (!any_requires_grad({x})) return out;
  return with_grad(out, {x}, [xs = x.shape(), axis, index = index.detach(), wrap](const Tensor& g) {
    return Grads{index_add_impl(zeros(xs, g.dtype()), axis, index, g, wrap)};
  });
}

Tensor index_add_impl(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src,
                      bool wrap) {
  Tensor out = dispatch(IndexAttrs{axis, wrap}.to_op(OpKind::index_add), {x, index, src}, x.shape(),
                        x.dtype());
  if (!any_requires_grad({x, src})) return out;
  return with_grad(out, {x, Tensor(), src}, [axis, index = index.detach(), wrap](const Tensor& g) {
    return Grads{g, Tensor(), select_impl(g, axis, index, wrap)};
  });
}

Tensor gather_impl(const Tensor& x, int64_t axis, const Tensor& index, bool wrap) {
  Tensor out =
      dispatch(IndexAttrs{axis, wrap}.to_op(OpKind::gather), {x, index}, index.shape(), x.dtype());
  if (!any_requires_grad({x})) return out;
  return with_grad(out, {x}, [xs = x.shape(), axis, index = index.detach(), wrap](const Tensor& g) {
    return Grads{scatter_impl(zeros(xs, g.dtype()), axis, index, g, wrap, true)};
  });
}

Tensor scatter_impl(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src,
                    bool wrap, bool accumulate) {
  const OpKind kind = accumulate ? OpKind::scatter_add : OpKind::scatter;
  Tensor out = dispatch(IndexAttrs{axis, wrap}.to_op(kind), {x, index, src}, x.shape(), x.dtype());
  if (!any_requires_grad({x, src})) return out;
  return with_grad(
      out, {x, Tensor(), src},
      [axis, index = index.detach(), ss = src.shape(), wrap, accumulate](const Tensor& g) {
        // Overwritten positions pass no gradient back to x.
        Tensor gx =
            accumulate ? g
                       : scatter_impl(g, axis, index, zeros(index.shape(), g.dtype()), wrap, false);
        return Grads{gx, Tensor(), pad_to(gather_impl(g, axis, index, wrap), ss)};
      });
}

// ---- parsing x[...] ----

// A parsed index list: the basic view, and the tensor index (at most one) with the view axes it
// covers, [tensor_axis, tensor_axis + tensor_axes).
struct Parsed {
  ViewLayout view;
  std::shared_ptr<Tensor> tensor;
  int64_t tensor_axis = 0, tensor_axes = 0;
};

// Index semantics, as numpy and PyTorch, plus Permute:
//   int        picks one position (negative counts from the end) and drops the axis;
//   Slice      start/stop clamp to the axis as in PyTorch; step must be positive;
//   Ellipsis   stands for as many full slices as the other pieces leave;
//   NewAxis    inserts an axis of size 1;
//   Permute(p) covers the next k = p.size() axes (as full slices) and puts them in the order p:
//              result axis i of the group is the group's axis p[i], so on a 3-d x,
//              x[Permute(0, 2, 1)] swaps the last two axes and x[Slice(2, _), Permute(1, 0)]
//              slices axis 0 and swaps axes 1 and 2;
//   tensor     an int64 tensor replaces its axis by the index's shape (gathering positions);
//              a bool mask covers mask.ndim() axes, which must match its shape, and replaces
//              them by one axis of the positions where it is true.
// Unindexed trailing axes are kept whole. Everything but a tensor index is a view (no copy).
Parsed parse(const Tensor& x, const std::vector<Index>& indices) {
  const int64_t ndim = x.ndim();
  int64_t consumed = 0, ellipses = 0, tensors = 0;
  for (const Index& ix : indices) {
    if (std::holds_alternative<int64_t>(ix.item) || std::holds_alternative<Slice>(ix.item)) {
      ++consumed;
    } else if (auto* p = std::get_if<Permute>(&ix.item)) {
      consumed += static_cast<int64_t>(p->axes.size());
    } else if (std::holds_alternative<EllipsisIndex>(ix.item)) {
      ++ellipses;
    } else if (auto* t = std::get_if<std::shared_ptr<Tensor>>(&ix.item)) {
      check_defined(**t, "index tensor");
      ++tensors;
      const DType dt = (*t)->dtype();
      if (dt == bool_) {
        if ((*t)->ndim() == 0) fail("a bool mask index needs at least one dimension");
        consumed += (*t)->ndim();
      } else if (dt == i64) {
        ++consumed;
      } else {
        fail("index tensors must be int64 or bool, got ", dtype_name(dt));
      }
    }
  }
  if (ellipses > 1) fail("only one Ellipsis is allowed in an index, got ", ellipses);
  if (tensors > 1)
    fail("only one tensor index is supported, got ", tensors, " (index them one at a time)");
  if (consumed > ndim)
    fail("too many indices: ", consumed, " axes indexed on a tensor with ", ndim, " dimensions");

  const Array& a = x.impl()->array;
  const Shape logical = contiguous_strides(a.shape);
  Parsed p;
  ViewLayout& v = p.view;
  v.offset = a.offset;
  int64_t axis = 0;  // the next axis of x
  auto keep = [&](int64_t ax, int64_t start, int64_t size, int64_t step) {
    const size_t k = static_cast<size_t>(ax);
    v.shape.push_back(size);
    v.strides.push_back(a.strides[k] * step);
    v.lstrides.push_back(logical[k] * step);
    v.offset += start * a.strides[k];
    v.loffset += start * logical[k];
  };
  auto keep_whole = [&](int64_t count) {
    for (int64_t i = 0; i < count; ++i, ++axis)
      keep(axis, 0, a.shape[static_cast<size_t>(axis)], 1);
  };
  for (const Index& ix : indices) {
    if (auto* i = std::get_if<int64_t>(&ix.item)) {
      const int64_t size = a.shape[static_cast<size_t>(axis)];
      if (*i < -size || *i >= size)
        fail("index ", *i, " is out of range for axis ", axis, " of size ", size);
      const int64_t k = *i < 0 ? *i + size : *i;
      v.offset += k * a.strides[static_cast<size_t>(axis)];
      v.loffset += k * logical[static_cast<size_t>(axis)];
      ++axis;
    } else if (auto* s = std::get_if<Slice>(&ix.item)) {
      if (s->step <= 0) fail("slice step must be positive, got ", s->step);
      const int64_t size = a.shape[static_cast<size_t>(axis)];
      auto clamp = [size](std::optional<int64_t> b, int64_t dflt) {
        if (!b) return dflt;
        const int64_t e = *b < 0 ? *b + size : *b;
        return std::clamp<int64_t>(e, 0, size);
      };
      const int64_t start = clamp(s->start, 0), stop = std::max(clamp(s->stop, size), start);
      keep(axis, start, (stop - start + s->step - 1) / s->step, s->step);
      ++axis;
    } else if (std::holds_alternative<EllipsisIndex>(ix.item)) {
      keep_whole(ndim - consumed);
    } else if (std::holds_alternative<NewAxisIndex>(ix.item)) {
      v.shape.push_back(1);
      v.strides.push_back(0);
      v.lstrides.push_back(0);
    } else if (auto* perm = std::get_if<Permute>(&ix.item)) {
      const int64_t k = static_cast<int64_t>(perm->axes.size());
      std::vector<bool> seen(static_cast<size_t>(k));
      for (int64_t q : perm->axes) {
        if (q < -k || q >= k || seen[static_cast<size_t>(q < 0 ? q + k : q)]) {
          std::string list;
          for (int64_t r : perm->axes) list += (list.empty() ? "" : ", ") + std::to_string(r);
          fail("Permute(", list, ") is not a permutation of ", k, " axes");
        }
        seen[static_cast<size_t>(q < 0 ? q + k : q)] = true;
      }
      for (int64_t q : perm->axes) {
        const int64_t ax = axis + (q < 0 ? q + k : q);
        keep(ax, 0, a.shape[static_cast<size_t>(ax)], 1);
      }
      axis += k;
    } else {
      const Tensor& t = *std::get<std::shared_ptr<Tensor>>(ix.item);
      p.tensor = std::get<std::shared_ptr<Tensor>>(ix.item);
      p.tensor_axis = static_cast<int64_t>(v.shape.size());
      p.tensor_axes = t.dtype() == bool_ ? t.ndim() : 1;
      if (t.dtype() == bool_) {
        Shape covered(a.shape.begin() + axis, a.shape.begin() + axis + t.ndim());
        if (covered != t.shape())
          fail("mask of shape ", shape_str(t.shape()), " does not match the indexed axes ",
               shape_str(covered), " starting at axis ", axis);
      }
      keep_whole(p.tensor_axes);
    }
  }
  keep_whole(ndim - axis);
  return p;
}

// Row-major positions of the true elements of a bool tensor (waits for its data).
std::vector<int64_t> true_positions(const Tensor& mask) {
  std::vector<bool> m = mask.to_vector<bool>();
  std::vector<int64_t> out;
  for (size_t i = 0; i < m.size(); ++i)
    if (m[i]) out.push_back(static_cast<int64_t>(i));
  return out;
}

// The tensor index of p, applied to the view v: v with the covered axes merged into one
// (`merged`), the 1-d positions along it, and the shape the index puts in their place.
struct TensorSelection {
  Tensor merged, positions;
  Shape replacement;
  bool wrap = false;
};

TensorSelection select_axes(const Tensor& v, const Parsed& p) {
  const Tensor& t = *p.tensor;
  const size_t ax = static_cast<size_t>(p.tensor_axis), k = static_cast<size_t>(p.tensor_axes);
  TensorSelection s;
  if (t.dtype() == bool_) {
    std::vector<int64_t> pos = true_positions(t);
    const int64_t count = static_cast<int64_t>(pos.size());
    s.positions = Tensor(pos, {count});
    s.replacement = {count};
  } else {
    s.positions = reshape(t, {t.numel()});
    s.replacement = t.shape();
    s.wrap = true;
  }
  Shape merged(v.shape().begin(), v.shape().begin() + static_cast<int64_t>(ax));
  merged.push_back(numel_of(Shape(v.shape().begin() + static_cast<int64_t>(ax),
                                  v.shape().begin() + static_cast<int64_t>(ax + k))));
  merged.insert(merged.end(), v.shape().begin() + static_cast<int64_t>(ax + k), v.shape().end());
  s.merged = reshape(v, merged);
  return s;
}

// shape with axes [axis, axis + k) replaced by `by`.
Shape replace_axes(const Shape& shape, int64_t axis, int64_t k, const Shape& by) {
  Shape out(shape.begin(), shape.begin() + axis);
  out.insert(out.end(), by.begin(), by.end());
  out.insert(out.end(), shape.begin() + axis + k, shape.end());
  return out;
}

// value broadcast to shape (leading size-1 axes beyond it are dropped, as numpy does).
Tensor fit_value(const Tensor& value, const Shape& shape) {
  Tensor v = value;
  if (v.ndim() > static_cast<int64_t>(shape.size())) {
    const int64_t extra = v.ndim() - static_cast<int64_t>(shape.size());
    for (int64_t i = 0; i < extra; ++i)
      if (v.shape()[static_cast<size_t>(i)] != 1)
        fail("value of shape ", shape_str(value.shape()),
             " cannot be broadcast to the indexed shape ", shape_str(shape));
    v = reshape(v, Shape(v.shape().begin() + extra, v.shape().end()));
  }
  const size_t lead = shape.size() - static_cast<size_t>(v.ndim());
  for (size_t i = 0; i < static_cast<size_t>(v.ndim()); ++i) {
    const int64_t d = v.shape()[i];
    if (d != 1 && d != shape[lead + i])
      fail("value of shape ", shape_str(value.shape()),
           " cannot be broadcast to the indexed shape ", shape_str(shape));
  }
  return expand(v, shape);
}

}  // namespace

// ---- gather and scatter ----

Tensor index_select(const Tensor& x, int64_t axis, const Tensor& index, Loc loc) {
  CallScope scope("index_select", loc);
  check_defined(x);
  check_has_axes(x);
  check_index_tensor(index);
  if (index.ndim() > 1) fail("index must be 1-d, got shape ", shape_str(index.shape()));
  // A 0-d index selects one slice and keeps the axis, as in PyTorch.
  return select_impl(x, normalize_axis(axis, x.ndim()), reshape(index, {index.numel()}), false);
}

namespace {
// Checks shared by gather and take_along_axis; returns the normalized axis.
int64_t check_along_axis(const Tensor& x, int64_t axis, const Tensor& index) {
  check_defined(x);
  check_has_axes(x);
  check_index_tensor(index);
  axis = normalize_axis(axis, x.ndim());
  if (index.ndim() != x.ndim())
    fail("index of shape ", shape_str(index.shape()), " needs as many dimensions as x of shape ",
         shape_str(x.shape()));
  return axis;
}
}  // namespace

Tensor gather(const Tensor& x, int64_t axis, const Tensor& index, Loc loc) {
  CallScope scope("gather", loc);
  axis = check_along_axis(x, axis, index);
  for (int64_t d = 0; d < x.ndim(); ++d)
    if (d != axis && index.shape()[static_cast<size_t>(d)] > x.shape()[static_cast<size_t>(d)])
      fail("index of shape ", shape_str(index.shape()), " is larger than x of shape ",
           shape_str(x.shape()), " on axis ", d);
  return gather_impl(x, axis, index, false);
}

Tensor take_along_axis(const Tensor& x, const Tensor& index, int64_t axis, Loc loc) {
  CallScope scope("take_along_axis", loc);
  axis = check_along_axis(x, axis, index);
  // The other axes broadcast against each other, as numpy does.
  Shape xs = x.shape(), is = index.shape();
  for (size_t d = 0; d < xs.size(); ++d) {
    if (static_cast<int64_t>(d) == axis) continue;
    if (xs[d] != is[d] && xs[d] != 1 && is[d] != 1)
      fail("index of shape ", shape_str(index.shape()), " does not broadcast with x of shape ",
           shape_str(x.shape()), " on axis ", d);
    xs[d] = is[d] = xs[d] == 1 ? is[d] : xs[d];
  }
  return gather_impl(expand(x, xs), axis, expand(index, is), false);
}

namespace {
Tensor scatter_op(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src,
                  bool accumulate) {
  check_defined(x);
  check_defined(src, "src");
  check_has_axes(x);
  check_index_tensor(index);
  axis = normalize_axis(axis, x.ndim());
  if (src.dtype() != x.dtype())
    fail("src dtype ", dtype_name(src.dtype()), " does not match x dtype ", dtype_name(x.dtype()));
  if (index.ndim() != x.ndim() || src.ndim() != x.ndim())
    fail("x ", shape_str(x.shape()), ", index ", shape_str(index.shape()), " and src ",
         shape_str(src.shape()), " need the same number of dimensions");
  for (size_t d = 0; d < x.shape().size(); ++d) {
    const int64_t n = index.shape()[d];
    if (n > src.shape()[d] || (static_cast<int64_t>(d) != axis && n > x.shape()[d]))
      fail("index of shape ", shape_str(index.shape()), " does not fit x of shape ",
           shape_str(x.shape()), " and src of shape ", shape_str(src.shape()), " on axis ", d);
  }
  return scatter_impl(x, axis, index, src, false, accumulate);
}
}  // namespace

Tensor scatter(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src, Loc loc) {
  CallScope scope("scatter", loc);
  return scatter_op(x, axis, index, src, false);
}

Tensor scatter_add(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src, Loc loc) {
  CallScope scope("scatter_add", loc);
  return scatter_op(x, axis, index, src, true);
}

Tensor index_add(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src, Loc loc) {
  CallScope scope("index_add", loc);
  check_defined(x);
  check_defined(src, "src");
  check_has_axes(x);
  check_index_tensor(index);
  axis = normalize_axis(axis, x.ndim());
  if (index.ndim() > 1) fail("index must be 1-d, got shape ", shape_str(index.shape()));
  if (src.dtype() != x.dtype())
    fail("src dtype ", dtype_name(src.dtype()), " does not match x dtype ", dtype_name(x.dtype()));
  Shape expected = x.shape();
  expected[static_cast<size_t>(axis)] = index.numel();
  if (src.shape() != expected)
    fail("src of shape ", shape_str(src.shape()), " should have shape ", shape_str(expected),
         " (x's shape with axis ", axis, " the index's length)");
  return index_add_impl(x, axis, reshape(index, {index.numel()}), src, false);
}

// ---- masks ----

Tensor nonzero(const Tensor& mask, Loc loc) {
  CallScope scope("nonzero", loc);
  check_defined(mask);
  std::vector<int64_t> pos = true_positions(mask.dtype() == bool_ ? mask : mask != 0);
  const Shape& shape = mask.shape();
  const Shape strides = contiguous_strides(shape);
  std::vector<int64_t> coords;
  coords.reserve(pos.size() * shape.size());
  for (int64_t p : pos)
    for (size_t d = 0; d < shape.size(); ++d) coords.push_back(p / strides[d] % shape[d]);
  return Tensor(coords, {static_cast<int64_t>(pos.size()), mask.ndim()});
}

Tensor masked_select(const Tensor& x, const Tensor& mask, Loc loc) {
  CallScope scope("masked_select", loc);
  check_defined(x);
  check_defined(mask, "mask");
  if (mask.dtype() != bool_) fail("mask must be bool, got ", dtype_name(mask.dtype()));
  Shape shape = broadcast_shapes(x.shape(), mask.shape());
  std::vector<int64_t> pos = true_positions(expand(mask, shape));
  Tensor flat = reshape(expand(x, shape), {numel_of(shape)});
  return select_impl(flat, 0, Tensor(pos, {static_cast<int64_t>(pos.size())}), false);
}

Tensor one_hot(const Tensor& labels, int64_t classes, DType dtype, Loc loc) {
  CallScope scope("one_hot", loc);
  check_defined(labels, "labels");
  if (labels.dtype() != i64) fail("labels must be int64, got ", dtype_name(labels.dtype()));
  if (classes <= 0) fail("classes must be positive, got ", classes);
  Shape column = labels.shape();
  column.push_back(1);
  Shape shape = labels.shape();
  shape.push_back(classes);
  // Out-of-range labels make the scatter kernel fail; the error is raised on read.
  return dispatch(IndexAttrs{labels.ndim(), false}.to_op(OpKind::scatter),
                  {zeros(shape, dtype), reshape(labels, column), ones(column, dtype)}, shape,
                  dtype);
}

// ---- x[...] and indexed assignment ----

Tensor Tensor::index(const std::vector<Index>& indices, Loc loc) const {
  CallScope scope("index", loc);
  check_defined(*this);
  Parsed p = parse(*this, indices);
  Tensor v = strided_view(*this, p.view);
  if (!p.tensor) return v;
  TensorSelection s = select_axes(v, p);
  Tensor out = select_impl(s.merged, p.tensor_axis, s.positions, s.wrap);
  return crisp::reshape(out, replace_axes(v.shape(), p.tensor_axis, p.tensor_axes, s.replacement));
}

Tensor Tensor::index_put(const std::vector<Index>& indices, const Operand& value, Loc loc) const {
  CallScope scope("index_put", loc);
  check_defined(*this);
  Tensor val = operand_tensor(value, dtype());
  if (val.dtype() != dtype())
    fail("value dtype ", dtype_name(val.dtype()), " does not match the tensor's dtype ",
         dtype_name(dtype()), " (cast it explicitly)");
  Parsed p = parse(*this, indices);
  const ViewLayout& layout = p.view;
  if (!p.tensor)
    return assign_strided(*this, fit_value(val, layout.shape), layout.loffset, layout.lstrides);
  // Scatter the value into the indexed view, then write the view back.
  Tensor v = strided_view(*this, layout);
  TensorSelection s = select_axes(v, p);
  const int64_t ax = p.tensor_axis, n = s.positions.numel();
  val = fit_value(val, replace_axes(v.shape(), ax, p.tensor_axes, s.replacement));
  Shape target = s.merged.shape();
  target[static_cast<size_t>(ax)] = n;
  val = crisp::reshape(val, target);
  Shape column(target.size(), 1);
  column[static_cast<size_t>(ax)] = n;
  Tensor index = crisp::expand(crisp::reshape(s.positions, column), target);
  Tensor updated = scatter_impl(s.merged, ax, index, val, s.wrap, false);
  return assign_strided(*this, crisp::reshape(updated, v.shape()), layout.loffset, layout.lstrides);
}

}  // namespace crisp
