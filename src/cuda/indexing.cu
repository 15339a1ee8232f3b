// CUDA kernels for the indexing family: gathering and scattering by index (index_select, gather,
// scatter, scatter_add, index_add, assign_strided) and the layout ops (concat, pad, flip, tril,
// triu). Index values are checked on the device; the first bad one is raised after the kernel.
#include <cstring>
#include <vector>

#include "cuda/context.cuh"
#include "cuda/dtype.cuh"
#include "cuda/errors.cuh"
#include "cuda/families.cuh"
#include "cuda/launch.cuh"
#include "cuda/strided.cuh"
#include "kernels/indexing.h"
#include "kernels/visit_size.h"

namespace crisp::cuda {

namespace {

// An iteration space (a shape, all of its axes kept) and the strides of up to three arrays over
// it, so a kernel can recover coordinates along one axis from a flat position.
struct Iter {
  int nd = 0;
  int64_t shape[kMaxDims] = {};
  int64_t st[3][kMaxDims] = {};
};

Iter iter_over(const Shape& shape) {
  if (shape.size() > static_cast<size_t>(kMaxDims))
    fail("tensors of ", shape.size(), " dimensions are not supported on CUDA (at most ", kMaxDims,
         ")");
  Iter it;
  it.nd = static_cast<int>(shape.size());
  for (size_t d = 0; d < shape.size(); ++d) it.shape[d] = shape[d];
  return it;
}

void set_strides(Iter& it, int k, const Shape& strides) {
  for (size_t d = 0; d < strides.size(); ++d) it.st[k][d] = strides[d];
}

// Fault codes: an index out of range.
constexpr int kBadIndex = 1;

__device__ inline bool resolve(int64_t v, int64_t size, bool wrap, int64_t& out) {
  out = wrap && v < 0 ? v + size : v;
  return out >= 0 && out < size;
}

// out[i] = x[coords of i with the axis coordinate replaced by index[coords]] (gather; index_select
// is the same with the index broadcast along every other axis). st[0]: index, st[1]: x.
template <class T>
__global__ void gather_kernel(int64_t n, T* out, const T* x, const int64_t* idx, Iter it, int axis,
                              int64_t size, bool wrap, DeviceFault* fault) {
  CRISP_GRID_STRIDE(i, n) {
    int64_t rem = i, io = 0, xo = 0;
    for (int d = it.nd - 1; d >= 0; --d) {
      const int64_t q = rem / it.shape[d], c = rem - q * it.shape[d];
      rem = q;
      io += c * it.st[0][d];
      if (d != axis) xo += c * it.st[1][d];
    }
    const int64_t v = idx[io];
    int64_t w;
    if (!resolve(v, size, wrap, w)) {
      report_fault(fault, kBadIndex, v);
      out[i] = T{};
      continue;
    }
    out[i] = x[xo + w * it.st[1][axis]];
  }
}

// Every value of a strided index checked against size (for outputs with no elements to gather).
__global__ void check_index_kernel(int64_t n, const int64_t* idx, Iter it, int64_t size, bool wrap,
                                   DeviceFault* fault) {
  CRISP_GRID_STRIDE(i, n) {
    int64_t rem = i, io = 0;
    for (int d = it.nd - 1; d >= 0; --d) {
      const int64_t q = rem / it.shape[d], c = rem - q * it.shape[d];
      rem = q;
      io += c * it.st[0][d];
    }
    int64_t w;
    if (!resolve(idx[io], size, wrap, w)) report_fault(fault, kBadIndex, idx[io]);
  }
}

// The output offset that iteration position i (over the index's shape, or the source's for
// index_add) writes, and the offset of its source element. st[0]: index, st[1]: src, st[2]: out.
struct Target {
  int64_t out, src, value;
  bool ok;
};

__device__ inline Target scatter_target(const int64_t* idx, const Iter& it, int axis, int64_t size,
                                        bool wrap, int64_t i) {
  int64_t rem = i, io = 0, so = 0, oo = 0;
  for (int d = it.nd - 1; d >= 0; --d) {
    const int64_t q = rem / it.shape[d], c = rem - q * it.shape[d];
    rem = q;
    io += c * it.st[0][d];
    so += c * it.st[1][d];
    if (d != axis) oo += c * it.st[2][d];
  }
  Target t;
  t.value = idx[io];
  int64_t w;
  t.ok = resolve(t.value, size, wrap, w);
  t.out = oo + w * it.st[2][axis];
  t.src = so;
  return t;
}

// Scatter writes race when an index repeats; the last position in row-major order wins, as on
// the CPU: a first pass claims each target for the largest position writing it.
__global__ void scatter_claim_kernel(int64_t n, unsigned long long* claim, const int64_t* idx,
                                     Iter it, int axis, int64_t size, bool wrap,
                                     DeviceFault* fault) {
  CRISP_GRID_STRIDE(i, n) {
    const Target t = scatter_target(idx, it, axis, size, wrap, i);
    if (!t.ok) {
      report_fault(fault, kBadIndex, t.value);
      continue;
    }
    atomicMax(claim + t.out, static_cast<unsigned long long>(i) + 1);
  }
}

template <class T>
__global__ void scatter_write_kernel(int64_t n, T* out, const T* src,
                                     const unsigned long long* claim, const int64_t* idx, Iter it,
                                     int axis, int64_t size, bool wrap) {
  CRISP_GRID_STRIDE(i, n) {
    const Target t = scatter_target(idx, it, axis, size, wrap, i);
    if (t.ok && claim[t.out] == static_cast<unsigned long long>(i) + 1) out[t.out] = src[t.src];
  }
}

// Atomic accumulation for every dtype (bool: logical or; uint8: through its 32-bit word).
template <class T>
__device__ inline void atomic_accumulate(T* p, T v) {
  if constexpr (std::is_same_v<T, bool>) {
    if (v) *p = true;
  } else if constexpr (std::is_same_v<T, uint8_t>) {
    auto* word = reinterpret_cast<unsigned int*>(reinterpret_cast<uintptr_t>(p) & ~uintptr_t{3});
    const unsigned shift = (reinterpret_cast<uintptr_t>(p) & 3u) * 8u;
    unsigned int old = *word, assumed;
    do {
      assumed = old;
      const unsigned byte = ((assumed >> shift) + v) & 0xffu;
      old = atomicCAS(word, assumed, (assumed & ~(0xffu << shift)) | (byte << shift));
    } while (assumed != old);
  } else if constexpr (std::is_same_v<T, int64_t>) {
    atomicAdd(reinterpret_cast<unsigned long long*>(p), static_cast<unsigned long long>(v));
  } else if constexpr (std::is_same_v<T, int32_t>) {
    atomicAdd(reinterpret_cast<int*>(p), v);
  } else {
    atomicAdd(p, v);  // float, double, __half, __nv_bfloat16
  }
}

template <class T>
__global__ void scatter_add_kernel(int64_t n, T* out, const T* src, const int64_t* idx, Iter it,
                                   int axis, int64_t size, bool wrap, DeviceFault* fault) {
  CRISP_GRID_STRIDE(i, n) {
    const Target t = scatter_target(idx, it, axis, size, wrap, i);
    if (!t.ok) {
      report_fault(fault, kBadIndex, t.value);
      continue;
    }
    atomic_accumulate(out + t.out, src[t.src]);
  }
}

// out[base + coords . strides] = value[coords]; st[0]: value's strides, st[1]: the view's.
template <class T>
__global__ void assign_kernel(int64_t n, T* out, const T* value, Iter it, int64_t base) {
  CRISP_GRID_STRIDE(i, n) {
    int64_t rem = i, vo = 0, oo = base;
    for (int d = it.nd - 1; d >= 0; --d) {
      const int64_t q = rem / it.shape[d], c = rem - q * it.shape[d];
      rem = q;
      vo += c * it.st[0][d];
      oo += c * it.st[1][d];
    }
    out[oo] = value[vo];
  }
}

// The offset of row-major position i of a strided array (all axes kept).
__device__ inline int64_t offset_of(const Iter& it, int k, int64_t i) {
  int64_t off = 0;
  for (int d = it.nd - 1; d >= 0; --d) {
    const int64_t q = i / it.shape[d];
    off += (i - q * it.shape[d]) * it.st[k][d];
    i = q;
  }
  return off;
}

// Copies x (strided) into rows of the output: element i of x lands at row i / row_len, column
// i % row_len, with rows dst_pitch elements apart (one input of a concat).
template <class T>
__global__ void concat_kernel(int64_t n, T* dst, const T* x, Iter it, int64_t row_len,
                              int64_t dst_pitch) {
  CRISP_GRID_STRIDE(i, n) {
    const int64_t r = i / row_len;
    dst[r * dst_pitch + (i - r * row_len)] = x[offset_of(it, 0, i)];
  }
}

// Output coordinates map back to input ones: before[d] shifts them; outside the input they take
// the pad value (constant) or mirror (reflect). it.shape: out's, st[0]: x's strides, st[1][d]:
// x's size along d, st[2][d]: before[d].
template <class T>
__global__ void pad_kernel(int64_t n, T* out, const T* x, Iter it, bool reflect, T value) {
  CRISP_GRID_STRIDE(i, n) {
    int64_t rem = i, off = 0;
    bool inside = true;
    for (int d = it.nd - 1; d >= 0; --d) {
      const int64_t q = rem / it.shape[d];
      int64_t s = rem - q * it.shape[d] - it.st[2][d];
      rem = q;
      const int64_t size = it.st[1][d];
      if (s < 0 || s >= size) {
        if (!reflect) {
          inside = false;
          break;
        }
        s = s < 0 ? -s : 2 * (size - 1) - s;
      }
      off += s * it.st[0][d];
    }
    out[i] = inside ? x[off] : value;
  }
}

// st[0]: x's strides, st[1][d]: 1 where axis d is flipped.
template <class T>
__global__ void flip_kernel(int64_t n, T* out, const T* x, Iter it) {
  CRISP_GRID_STRIDE(i, n) {
    int64_t rem = i, off = 0;
    for (int d = it.nd - 1; d >= 0; --d) {
      const int64_t q = rem / it.shape[d];
      int64_t c = rem - q * it.shape[d];
      rem = q;
      if (it.st[1][d]) c = it.shape[d] - 1 - c;
      off += c * it.st[0][d];
    }
    out[i] = x[off];
  }
}

template <class T>
__global__ void triangle_kernel(int64_t n, T* out, const T* x, Iter it, bool lower, int64_t k) {
  const int64_t cols = it.shape[it.nd - 1], rows = it.shape[it.nd - 2];
  CRISP_GRID_STRIDE(i, n) {
    const int64_t j = i % cols, r = (i / cols) % rows;
    const bool keep = lower ? j - r <= k : j - r >= k;
    out[i] = keep ? x[offset_of(it, 0, i)] : T{};
  }
}

// The op's attributes as the kernels take them, with the size of the indexed axis.
struct IndexArgs {
  int axis;
  int64_t size;
  bool wrap;
};

IndexArgs index_args(const Op& op, const Shape& indexed) {
  const IndexAttrs attrs = IndexAttrs::from_op(op);
  IndexArgs a;
  a.axis = static_cast<int>(attrs.axis);
  a.wrap = attrs.wrap;
  a.size = indexed[static_cast<size_t>(a.axis)];
  return a;
}

DeviceFault* bad_index_fault(const IndexArgs& a) {
  return ctx().fault([a](int, long long v) {
    return detail::cat("index ", v, " is out of range for axis ", a.axis, " of size ", a.size);
  });
}

// The strides of a 1-d index broadcast along every axis but `axis` of shape.
Shape index_along(const Array& idx, const Shape& shape, int axis) {
  Shape st(shape.size(), 0);
  st[static_cast<size_t>(axis)] = idx.strides.empty() ? 0 : idx.strides[0];
  return st;
}

void gather_like(const Op& op, In in, const Array& o) {
  const Array &x = in[0], &idx = in[1];
  const IndexArgs a = index_args(op, x.shape);
  DeviceFault* fault = bad_index_fault(a);
  if (o.numel() == 0) {
    Iter ii = iter_over(idx.shape);
    set_strides(ii, 0, idx.strides);
    launch_items<check_index_kernel>(idx.numel(), idx.data<int64_t>(), ii, a.size, a.wrap, fault);
    return;
  }
  Iter it = iter_over(o.shape);
  set_strides(it, 0, op.kind == OpKind::gather ? idx.strides : index_along(idx, o.shape, a.axis));
  set_strides(it, 1, x.strides);
  visit_size(o.dtype, [&](auto tag) {
    using U = decltype(tag);
    launch_items<gather_kernel<U>>(o.numel(), o.data<U>(), x.data<U>(), idx.data<int64_t>(), it,
                                   a.axis, a.size, a.wrap, fault);
  });
}

void scatter_like(const Op& op, In in, const Array& o) {
  const Array &x = in[0], &idx = in[1], &src = in[2];
  const IndexArgs a = index_args(op, o.shape);
  copy_to_contiguous(x, o);
  const bool index_add = op.kind == OpKind::index_add;
  // index_add is scatter_add over src's shape with the 1-d index broadcast.
  const Shape& space = index_add ? src.shape : idx.shape;
  const int64_t n = numel_of(space);
  if (n == 0) return;
  Iter it = iter_over(space);
  set_strides(it, 0, index_add ? index_along(idx, space, a.axis) : idx.strides);
  set_strides(it, 1, src.strides);
  set_strides(it, 2, o.strides);
  DeviceFault* fault = bad_index_fault(a);
  if (op.kind == OpKind::scatter) {
    const size_t bytes = static_cast<size_t>(o.numel()) * sizeof(unsigned long long);
    auto* claim = static_cast<unsigned long long*>(ctx().workspace(bytes));
    CUDA_CHECK(cudaMemsetAsync(claim, 0, bytes, ctx().stream));
    launch_items<scatter_claim_kernel>(n, claim, idx.data<int64_t>(), it, a.axis, a.size, a.wrap,
                                       fault);
    visit_size(o.dtype, [&](auto tag) {
      using U = decltype(tag);
      launch_items<scatter_write_kernel<U>>(n, o.data<U>(), src.data<U>(),
                                            static_cast<const unsigned long long*>(claim),
                                            idx.data<int64_t>(), it, a.axis, a.size, a.wrap);
    });
  } else {
    visit(o.dtype, [&](auto tag) {
      using T = decltype(tag);
      launch_items<scatter_add_kernel<T>>(n, o.data<T>(), src.data<T>(), idx.data<int64_t>(), it,
                                          a.axis, a.size, a.wrap, fault);
    });
  }
}

void assign_strided(const Op& op, In in, const Array& o) {
  const Array &x = in[0], &value = in[1];
  const AssignStridedAttrs a = AssignStridedAttrs::from_op(op);
  a.check_view(value.shape, o.numel());
  copy_to_contiguous(x, o);
  if (value.numel() == 0) return;
  Iter it = iter_over(value.shape);
  set_strides(it, 0, value.strides);
  set_strides(it, 1, a.strides);
  visit_size(o.dtype, [&](auto tag) {
    using U = decltype(tag);
    launch_items<assign_kernel<U>>(value.numel(), o.data<U>(), value.data<U>(), it, a.offset);
  });
}

// Pitches of 2-d copies stay below this (the driver's limit).
constexpr size_t kMaxPitch = size_t{1} << 31;

void concat(const Op& op, In in, const Array& o) {
  const size_t axis = static_cast<size_t>(ConcatAttrs::from_op(op).axis);
  int64_t inner = 1;
  for (size_t d = axis + 1; d < o.shape.size(); ++d) inner *= o.shape[d];
  const int64_t pitch = o.shape[axis] * inner;
  const size_t item = itemsize(o.dtype);
  int64_t start = 0;
  for (const Array& x : in) {
    const int64_t n = x.numel(), row = x.shape[axis] * inner;
    if (n > 0) {
      char* dst = static_cast<char*>(o.raw()) + static_cast<size_t>(start * inner) * item;
      const size_t row_bytes = static_cast<size_t>(row) * item;
      const size_t pitch_bytes = static_cast<size_t>(pitch) * item;
      if (x.is_contiguous() && n == row) {
        CUDA_CHECK(
            cudaMemcpyAsync(dst, x.raw(), row_bytes, cudaMemcpyDeviceToDevice, ctx().stream));
      } else if (x.is_contiguous() && pitch_bytes < kMaxPitch) {
        CUDA_CHECK(cudaMemcpy2DAsync(dst, pitch_bytes, x.raw(), row_bytes, row_bytes,
                                     static_cast<size_t>(n / row), cudaMemcpyDeviceToDevice,
                                     ctx().stream));
      } else {
        Iter it = iter_over(x.shape);
        set_strides(it, 0, x.strides);
        visit_size(o.dtype, [&](auto tag) {
          using U = decltype(tag);
          launch_items<concat_kernel<U>>(n, reinterpret_cast<U*>(dst), x.data<U>(), it, row, pitch);
        });
      }
    }
    start += x.shape[axis];
  }
}

// The pad value in the output's dtype, as the bits of U (an unsigned type of the same size).
template <class U>
U pad_bits(double v, DType dtype) {
  U bits{};
  visit(dtype, [&](auto tag) {
    using T = decltype(tag);
    T typed;
    if constexpr (std::is_same_v<T, bool>)
      typed = v != 0;
    else
      typed = convert<T>(static_cast<compute_t<T>>(v));
    if constexpr (sizeof(T) == sizeof(U)) std::memcpy(&bits, &typed, sizeof(U));
  });
  return bits;
}

void pad(const Op& op, const Array& x, const Array& o) {
  const PadAttrs a = PadAttrs::from_op(op);
  Iter it = iter_over(o.shape);
  set_strides(it, 0, x.strides);
  set_strides(it, 1, x.shape);
  for (size_t d = 0; d < o.shape.size(); ++d) it.st[2][d] = a.before[d];
  visit_size(o.dtype, [&](auto tag) {
    using U = decltype(tag);
    launch_items<pad_kernel<U>>(o.numel(), o.data<U>(), x.data<U>(), it, a.reflect,
                                pad_bits<U>(a.value, o.dtype));
  });
}

void flip(const Op& op, const Array& x, const Array& o) {
  Iter it = iter_over(x.shape);
  set_strides(it, 0, x.strides);
  for (int64_t a : FlipAttrs::from_op(op).axes) it.st[1][a] = 1;
  visit_size(o.dtype, [&](auto tag) {
    using U = decltype(tag);
    launch_items<flip_kernel<U>>(o.numel(), o.data<U>(), x.data<U>(), it);
  });
}

void triangle(const Op& op, const Array& x, const Array& o) {
  const int64_t k = TriangleAttrs::from_op(op).k;
  Iter it = iter_over(x.shape);
  set_strides(it, 0, x.strides);
  visit_size(o.dtype, [&](auto tag) {
    using U = decltype(tag);
    launch_items<triangle_kernel<U>>(o.numel(), o.data<U>(), x.data<U>(), it,
                                     op.kind == OpKind::tril, k);
  });
}

}  // namespace

void run_indexing(const Op& op, In in, Out out) {
  const Array& o = out[0];
  switch (op.kind) {
    case OpKind::index_select:
    case OpKind::gather:
      return gather_like(op, in, o);
    case OpKind::scatter:
    case OpKind::scatter_add:
    case OpKind::index_add:
      return scatter_like(op, in, o);
    case OpKind::assign_strided:
      return assign_strided(op, in, o);
    default:
      break;
  }
  if (o.numel() == 0) return;
  switch (op.kind) {
    case OpKind::concat:
      return concat(op, in, o);
    case OpKind::pad:
      return pad(op, in[0], o);
    case OpKind::flip:
      return flip(op, in[0], o);
    case OpKind::tril:
    case OpKind::triu:
      return triangle(op, in[0], o);
    default:
      unsupported(op, o.dtype);
  }
}

}  // namespace crisp::cuda
