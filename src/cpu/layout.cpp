// CPU kernels for the layout ops: concat, pad (constant, reflect), flip, tril and triu.
#include <cstring>

#include "cpu/kernels.h"
#include "cpu/loops.h"
#include "kernels/indexing.h"
#include "kernels/visit_size.h"

namespace crisp::cpu {

namespace {

// Copies src into dst (same shape, any strides) element by element.
void strided_copy(const Array& dst, const Array& src) {
  if (dst.numel() == 0) return;
  visit_size(src.dtype, [&](auto tag) {
    using U = decltype(tag);
    map<U, U>(dst, [](U v) { return v; }, {&src});
  });
}

// The element offset (relative to a.offset) of the outer multi-index number `flat` over the
// first `nd` axes of a.
int64_t outer_offset(const Array& a, int64_t flat, size_t nd) {
  int64_t off = 0;
  for (size_t d = nd; d-- > 0;) {
    off += (flat % a.shape[d]) * a.strides[d];
    flat /= a.shape[d];
  }
  return off;
}

void concat(const Op& op, In in, const Array& o) {
  const size_t axis = static_cast<size_t>(ConcatAttrs::from_op(op).axis);
  int64_t start = 0;
  for (const Array& x : in) {
    Array dst = o;
    dst.shape = x.shape;
    dst.offset = o.offset + start * o.strides[axis];
    strided_copy(dst, x);
    start += x.shape[axis];
  }
}

void flip(const Op& op, const Array& x, const Array& o) {
  Array src = x;
  for (int64_t a : FlipAttrs::from_op(op).axes) {
    const size_t d = static_cast<size_t>(a);
    if (src.shape[d] == 0) return;
    src.offset += (src.shape[d] - 1) * src.strides[d];
    src.strides[d] = -src.strides[d];
  }
  strided_copy(o, src);
}

// Where output position i along an axis of input size n reads from; -1 for the pad value.
inline int64_t pad_source(int64_t i, int64_t n, bool reflect) {
  if (i >= 0 && i < n) return i;
  if (!reflect) return -1;
  return i < 0 ? -i : 2 * (n - 1) - i;
}

// The pad value in o's dtype, as the bits of T (an unsigned type of the same size).
template <class T>
T pad_value(double v, DType dtype) {
  T bits{};
  visit_dtype(dtype, [&](auto tag) {
    using D = decltype(tag);
    D typed;
    if constexpr (std::is_same_v<D, bool>)
      typed = v != 0;
    else
      typed = static_cast<D>(static_cast<compute_t<D>>(v));
    static_assert(sizeof(D) <= sizeof(uint64_t));
    if constexpr (sizeof(D) == sizeof(T)) std::memcpy(&bits, &typed, sizeof(T));
  });
  return bits;
}

template <class T>
void pad(const Op& op, const Array& x, const Array& o) {
  const PadAttrs a = PadAttrs::from_op(op);
  const bool reflect = a.reflect;
  const size_t nd = o.shape.size();
  const std::vector<int64_t>& before = a.before;
  const T value = pad_value<T>(a.value, o.dtype);
  const T* src = x.data<T>();
  T* dst = o.data<T>();
  if (nd == 0) {
    dst[0] = src[0];
    return;
  }
  const int64_t inner = o.shape[nd - 1], n_inner = x.shape[nd - 1];
  const int64_t b_inner = before[nd - 1], s_inner = x.strides[nd - 1];
  const int64_t rows = o.numel() / inner;
  parallel_for(rows, o.numel(), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      int64_t off = 0, rem = r;
      bool inside = true;
      for (size_t d = nd - 1; d-- > 0;) {
        const int64_t s = pad_source(rem % o.shape[d] - before[d], x.shape[d], reflect);
        rem /= o.shape[d];
        if (s < 0) inside = false;
        off += s * x.strides[d];
      }
      T* row = dst + r * inner;
      if (!inside) {
        std::fill(row, row + inner, value);
        continue;
      }
      const T* in_row = src + off;
      for (int64_t j = 0; j < inner; ++j) {
        const int64_t s = pad_source(j - b_inner, n_inner, reflect);
        row[j] = s < 0 ? value : in_row[s * s_inner];
      }
    }
  });
}

template <class T>
void triangle(const Op& op, const Array& x, const Array& o) {
  const bool lower = op.kind == OpKind::tril;
  const int64_t k = TriangleAttrs::from_op(op).k;
  const size_t nd = o.shape.size();
  const int64_t m = o.shape[nd - 2], n = o.shape[nd - 1];
  const int64_t sm = x.strides[nd - 2], sn = x.strides[nd - 1];
  const int64_t rows = o.numel() / n;
  const T* src = x.data<T>();
  T* dst = o.data<T>();
  parallel_for(rows, o.numel(), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      const int64_t i = r % m;
      const T* in_row = src + outer_offset(x, r / m, nd - 2) + i * sm;
      T* row = dst + r * n;
      for (int64_t j = 0; j < n; ++j) {
        const bool keep = lower ? j - i <= k : j - i >= k;
        row[j] = keep ? in_row[j * sn] : T{};
      }
    }
  });
}

}  // namespace

void layout_ops(const Op& op, In in, Out out) {
  const Array& o = out[0];
  if (o.numel() == 0) return;
  switch (op.kind) {
    case OpKind::concat:
      return concat(op, in, o);
    case OpKind::flip:
      return flip(op, in[0], o);
    case OpKind::pad:
      return visit_size(o.dtype, [&](auto tag) { pad<decltype(tag)>(op, in[0], o); });
    case OpKind::tril:
    case OpKind::triu:
      return visit_size(o.dtype, [&](auto tag) { triangle<decltype(tag)>(op, in[0], o); });
    default:
      unsupported(op, o.dtype);
  }
}

}  // namespace crisp::cpu
