// CPU kernels for gathering and scattering by index: index_select, gather, scatter, scatter_add,
// index_add, and assign_strided (the write behind indexed assignment).
#include <vector>

#include "cpu/kernels.h"
#include "cpu/loops.h"
#include "kernels/indexing.h"

namespace crisp::cpu {

namespace {

// Calls f(coord, linear) for every coordinate of shape in row-major order, split across threads
// when parallel; f must not throw (index values are checked before the parallel pass).
template <class F>
void for_each_coord(const Shape& shape, bool parallel, F&& f) {
  const int64_t n = numel_of(shape);
  const size_t nd = shape.size();
  auto run = [&](int64_t b, int64_t e) {
    std::vector<int64_t> c(nd);
    int64_t rem = b;
    for (size_t d = nd; d-- > 0;) {
      c[d] = rem % shape[d];
      rem /= shape[d];
    }
    for (int64_t i = b; i < e; ++i) {
      f(static_cast<const int64_t*>(c.data()), i);
      for (size_t d = nd; d-- > 0;) {
        if (++c[d] < shape[d]) break;
        c[d] = 0;
      }
    }
  };
  if (n <= 0) return;
  if (parallel)
    parallel_for(n, n * 4, run);
  else
    run(0, n);
}

int64_t offset_of(const int64_t* c, const Shape& strides) {
  int64_t off = 0;
  for (size_t d = 0; d < strides.size(); ++d) off += c[d] * strides[d];
  return off;
}

// The index value at coordinate c of idx, checked against the size of the axis it indexes;
// with wrap, negative values count from the end.
int64_t index_at(const Array& idx, const int64_t* c, int64_t axis, int64_t size, bool wrap) {
  const int64_t v = idx.data<int64_t>()[offset_of(c, idx.strides)];
  const int64_t w = wrap && v < 0 ? v + size : v;
  if (w < 0 || w >= size) fail("index ", v, " is out of range for axis ", axis, " of size ", size);
  return w;
}

int64_t wrapped(int64_t v, int64_t size) { return v < 0 ? v + size : v; }

// Checks every value of idx before a parallel pass that trusts them (wrapped ones included).
void check_indices(const Array& idx, int64_t axis, int64_t size, bool wrap) {
  for_each_coord(idx.shape, false,
                 [&](const int64_t* c, int64_t) { index_at(idx, c, axis, size, wrap); });
}

// out (contiguous) = a copy of x (strided).
template <class T>
void copy_into(const Array& out, const Array& x) {
  map<T, T>(out, [](T v) { return v; }, {&x});
}

template <class T>
T add(T a, T b) {
  using C = compute_t<T>;
  if constexpr (std::is_same_v<T, bool>)
    return a || b;
  else
    return static_cast<T>(static_cast<C>(a) + static_cast<C>(b));
}

template <class T>
void run_typed(const Op& op, In in, const Array& o) {
  const Array& x = in[0];
  T* out = o.data<T>();
  const T* xp = x.data<T>();
  const Shape ostrides = contiguous_strides(o.shape);
  if (op.kind == OpKind::assign_strided) {
    const Array& value = in[1];
    const AssignStridedAttrs a = AssignStridedAttrs::from_op(op);
    a.check_view(value.shape, o.numel());
    copy_into<T>(o, x);
    const T* vp = value.data<T>();
    for_each_coord(value.shape, true, [&](const int64_t* c, int64_t) {
      out[a.offset + offset_of(c, a.strides)] = vp[offset_of(c, value.strides)];
    });
    return;
  }
  const IndexAttrs attrs = IndexAttrs::from_op(op);
  const int64_t axis = attrs.axis;
  const bool wrap = attrs.wrap;
  switch (op.kind) {
    case OpKind::index_select: {
      const int64_t size = x.shape[static_cast<size_t>(axis)];
      const Array& idx = in[1];
      check_indices(idx, axis, size, wrap);
      const int64_t* ip = idx.data<int64_t>();
      const int64_t is = idx.strides[0];
      const Shape& xs = x.strides;
      for_each_coord(o.shape, true, [&](const int64_t* c, int64_t i) {
        int64_t off = 0;
        for (size_t d = 0; d < xs.size(); ++d) {
          int64_t k = c[d];
          if (static_cast<int64_t>(d) == axis) k = wrapped(ip[c[d] * is], size);
          off += k * xs[d];
        }
        out[i] = xp[off];
      });
      return;
    }
    case OpKind::gather: {
      const int64_t size = x.shape[static_cast<size_t>(axis)];
      const Array& idx = in[1];
      check_indices(idx, axis, size, wrap);
      const int64_t* ip = idx.data<int64_t>();
      const Shape& xs = x.strides;
      for_each_coord(o.shape, true, [&](const int64_t* c, int64_t i) {
        int64_t off = 0;
        for (size_t d = 0; d < xs.size(); ++d) {
          int64_t k = c[d];
          if (static_cast<int64_t>(d) == axis) k = wrapped(ip[offset_of(c, idx.strides)], size);
          off += k * xs[d];
        }
        out[i] = xp[off];
      });
      return;
    }
    case OpKind::scatter:
    case OpKind::scatter_add: {
      const Array &idx = in[1], &src = in[2];
      copy_into<T>(o, x);
      const T* sp = src.data<T>();
      const bool accumulate = op.kind == OpKind::scatter_add;
      const int64_t size = o.shape[static_cast<size_t>(axis)];
      // Serial, so that a repeated index resolves the same way every run (the last one wins).
      for_each_coord(idx.shape, false, [&](const int64_t* c, int64_t) {
        const int64_t v = index_at(idx, c, axis, size, wrap);
        const int64_t off = offset_of(c, ostrides) + (v - c[axis]) * ostrides[axis];
        const T s = sp[offset_of(c, src.strides)];
        out[off] = accumulate ? add(out[off], s) : s;
      });
      return;
    }
    case OpKind::index_add: {
      const Array &idx = in[1], &src = in[2];
      const int64_t size = o.shape[static_cast<size_t>(axis)];
      copy_into<T>(o, x);
      check_indices(idx, axis, size, wrap);
      const T* sp = src.data<T>();
      const int64_t* ip = idx.data<int64_t>();
      const int64_t is = idx.strides[0];
      for_each_coord(src.shape, false, [&](const int64_t* c, int64_t) {
        const int64_t v = wrapped(ip[c[axis] * is], size);
        const int64_t off = offset_of(c, ostrides) + (v - c[axis]) * ostrides[axis];
        out[off] = add(out[off], sp[offset_of(c, src.strides)]);
      });
      return;
    }
    default:
      unsupported(op, x.dtype);
  }
}

}  // namespace

void gather_ops(const Op& op, In in, Out out) {
  const Array& o = out[0];
  visit_dtype(o.dtype, [&](auto tag) { run_typed<decltype(tag)>(op, in, o); });
}

}  // namespace crisp::cpu
