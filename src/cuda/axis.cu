// CUDA kernels for ops along one axis: softmax/log_softmax and their backward passes, cumsum,
// cumprod (and its zero-safe backward), stable sort. Semantics follow src/cpu/axis.cpp.
#include <cub/device/device_segmented_radix_sort.cuh>

#include <limits>

#include "cuda/buffer.cuh"
#include "cuda/context.cuh"
#include "cuda/dtype.cuh"
#include "cuda/errors.cuh"
#include "cuda/families.cuh"
#include "cuda/launch.cuh"
#include "cuda/strided.cuh"
#include "kernels/axis.h"

namespace crisp::cuda {

namespace {

// The lines of an array along axis: line l starts at lines.at(l), its elements `stride` apart.
struct Lines {
  Strided lines;
  int64_t n, stride, count;
};

Lines lines_of(const Array& a, int64_t axis) {
  Lines L{};
  L.lines.offset = a.offset;
  L.count = 1;
  for (int64_t d = 0; d < a.ndim(); ++d) {
    if (d == axis) continue;
    const int64_t len = a.shape[static_cast<size_t>(d)];
    L.count *= len;
    if (len == 1) continue;
    if (L.lines.nd == kMaxDims)
      fail("arrays of more than ", kMaxDims, " dimensions are not supported on CUDA");
    L.lines.shape[L.lines.nd] = len;
    L.lines.strides[L.lines.nd] = a.strides[static_cast<size_t>(d)];
    ++L.lines.nd;
  }
  L.n = a.ndim() == 0 ? 1 : a.shape[static_cast<size_t>(axis)];
  L.stride = a.ndim() == 0 ? 1 : a.strides[static_cast<size_t>(axis)];
  return L;
}

template <class T>
const T* base_of(const Array& a) {
  return static_cast<const T*>(a.storage->data);
}
template <class T>
T* base_of_mut(const Array& a) {
  return static_cast<T*>(a.storage->data);
}

__device__ inline float exp_w(float x) { return expf(x); }
__device__ inline double exp_w(double x) { return exp(x); }

// Sums (or maxes) v over the g threads of each group of the block; every thread gets the result.
// All threads of the block must call it.
template <class V, class F>
__device__ V group_reduce(V v, V* sm, int g, F f) {
  const int tid = threadIdx.x, lane = tid % g;
  __syncthreads();  // sm may still be read from a previous call
  sm[tid] = v;
  __syncthreads();
  for (int s = g / 2; s > 0; s >>= 1) {
    if (lane < s) sm[tid] = f(sm[tid], sm[tid + s]);
    __syncthreads();
  }
  return sm[tid - lane];
}

struct AddF {
  template <class V>
  __device__ V operator()(V a, V b) const {
    return a + b;
  }
};
struct MaxF {  // std::max: a NaN on the right is skipped, as on the CPU
  template <class V>
  __device__ V operator()(V a, V b) const {
    return a < b ? b : a;
  }
};

// kind: 0 softmax, 1 log_softmax, 2 softmax_backward, 3 log_softmax_backward.
template <class T, int Kind>
__global__ void __launch_bounds__(kBlock)
    softmax_kernel(const T* x, Lines lx, const T* gr, Lines lg, T* out, Lines lo, int g) {
  using W = std::conditional_t<std::is_same_v<T, double>, double, float>;
  __shared__ double sm_d[kBlock];
  __shared__ W sm_w[kBlock];
  const int tid = threadIdx.x, lane = tid % g;
  const int64_t l = static_cast<int64_t>(blockIdx.x) * (kBlock / g) + tid / g;
  const bool live = l < lx.count;
  const int64_t n = lx.n;
  const T* px = live ? x + lx.lines.at(l) : x;
  T* po = live ? out + lo.lines.at(l) : out;
  if constexpr (Kind <= 1) {
    W m = -INFINITY;
    if (live)
      for (int64_t i = lane; i < n; i += g) m = MaxF{}(m, static_cast<W>(load(px[i * lx.stride])));
    m = group_reduce(m, sm_w, g, MaxF{});
    double s = 0;
    if (live)
      for (int64_t i = lane; i < n; i += g) s += exp_w(static_cast<W>(load(px[i * lx.stride])) - m);
    s = group_reduce(s, sm_d, g, AddF{});
    if (!live) return;
    if (Kind == 1) {
      const W shift = m + static_cast<W>(log(s));
      for (int64_t i = lane; i < n; i += g)
        po[i * lo.stride] = convert<T>(static_cast<W>(load(px[i * lx.stride])) - shift);
    } else {
      const W inv = static_cast<W>(1 / s);
      for (int64_t i = lane; i < n; i += g)
        po[i * lo.stride] = convert<T>(exp_w(static_cast<W>(load(px[i * lx.stride])) - m) * inv);
    }
  } else {
    const T* pg = live ? gr + lg.lines.at(l) : gr;
    double s = 0;
    if (live)
      for (int64_t i = lane; i < n; i += g) {
        const W gv = static_cast<W>(load(pg[i * lg.stride]));
        s += Kind == 3 ? static_cast<double>(gv)
                       : static_cast<double>(gv) * static_cast<W>(load(px[i * lx.stride]));
      }
    s = group_reduce(s, sm_d, g, AddF{});
    if (!live) return;
    for (int64_t i = lane; i < n; i += g) {
      const W y = static_cast<W>(load(px[i * lx.stride]));
      const W gv = static_cast<W>(load(pg[i * lg.stride]));
      po[i * lo.stride] =
          convert<T>(Kind == 3 ? gv - exp_w(y) * static_cast<W>(s) : y * (gv - static_cast<W>(s)));
    }
  }
}

template <class T>
void softmax_family(const Op& op, In in, const Array& out, int64_t axis) {
  const Lines lx = lines_of(in[0], axis), lo = lines_of(out, axis);
  const Lines lg = in.size() > 1 ? lines_of(in[1], axis) : lx;
  const T* g_ptr = in.size() > 1 ? base_of<T>(in[1]) : base_of<T>(in[0]);
  const int g = lx.n <= 64 ? 32 : kBlock;
  const int64_t blocks = (lx.count + kBlock / g - 1) / (kBlock / g);
  auto run = [&]<int Kind>() {
    launch<softmax_kernel<T, Kind>>(static_cast<unsigned>(blocks), kBlock, 0, ctx().stream,
                                    base_of<T>(in[0]), lx, g_ptr, lg, base_of_mut<T>(out), lo, g);
  };
  switch (op.kind) {
    case OpKind::softmax:
      return run.template operator()<0>();
    case OpKind::log_softmax:
      return run.template operator()<1>();
    case OpKind::softmax_backward:
      return run.template operator()<2>();
    default:
      return run.template operator()<3>();
  }
}

// ---- scans ----

template <class A>
struct ScanOp {
  bool product;
  __device__ A operator()(A a, A b) const { return product ? a * b : a + b; }
};

// One thread per line (short lines).
template <class T, class O>
__global__ void scan_lines(const T* x, Lines lx, O* out, Lines lo, bool product) {
  using C = compute_t<T>;
  using A = std::conditional_t<std::is_floating_point_v<C>, double, int64_t>;
  CRISP_GRID_STRIDE(l, lx.count) {
    const T* p = x + lx.lines.at(l);
    O* o = out + lo.lines.at(l);
    A acc = product ? 1 : 0;
    for (int64_t i = 0; i < lx.n; ++i) {
      const A v = static_cast<A>(load(p[i * lx.stride]));
      acc = product ? acc * v : acc + v;
      o[i * lo.stride] = convert<O>(acc);
    }
  }
}

// One block per line (long lines): chunks of kBlock * kPer elements, each thread scanning its
// kPer sequentially, the block scanning the thread totals, a running carry between chunks.
template <class T, class O>
__global__ void __launch_bounds__(kBlock)
    scan_block(const T* x, Lines lx, O* out, Lines lo, bool product) {
  using C = compute_t<T>;
  using A = std::conditional_t<std::is_floating_point_v<C>, double, int64_t>;
  constexpr int kPer = 4;
  __shared__ A sm[kBlock];
  const int64_t l = blockIdx.x;
  const T* p = x + lx.lines.at(l);
  O* o = out + lo.lines.at(l);
  const int tid = threadIdx.x;
  const ScanOp<A> f{product};
  A carry = product ? 1 : 0;
  for (int64_t c0 = 0; c0 < lx.n; c0 += int64_t{kBlock} * kPer) {
    A v[kPer];
    A total = product ? 1 : 0;
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int64_t i = c0 + tid * kPer + k;
      v[k] = i < lx.n ? static_cast<A>(load(p[i * lx.stride])) : A(product ? 1 : 0);
      total = f(total, v[k]);
    }
    // Inclusive block scan of the totals (Hillis-Steele).
    sm[tid] = total;
    __syncthreads();
    for (int s = 1; s < kBlock; s <<= 1) {
      const A add = tid >= s ? sm[tid - s] : A(product ? 1 : 0);
      __syncthreads();
      sm[tid] = f(sm[tid], add);
      __syncthreads();
    }
    A run = f(carry, tid > 0 ? sm[tid - 1] : A(product ? 1 : 0));
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
      const int64_t i = c0 + tid * kPer + k;
      run = f(run, v[k]);
      if (i < lx.n) o[i * lo.stride] = convert<O>(run);
    }
    carry = f(carry, sm[kBlock - 1]);
    __syncthreads();
  }
}

template <class T, class O>
void scan(const Array& x, const Array& out, int64_t axis, bool product) {
  const Lines lx = lines_of(x, axis), lo = lines_of(out, axis);
  if (lx.n <= 64 || lx.count >= 4 * 132 * 8) {
    launch<scan_lines<T, O>>(grid_for(lx.count), kBlock, 0, ctx().stream, base_of<T>(x), lx,
                             base_of_mut<O>(out), lo, product);
  } else {
    launch<scan_block<T, O>>(static_cast<unsigned>(lx.count), kBlock, 0, ctx().stream,
                             base_of<T>(x), lx, base_of_mut<O>(out), lo, product);
  }
}

// dx_i = sum_{j>=i} g_j y_j / x_i before the first zero z; at z, the products skipping x_z;
// after z, 0. One thread per line, y kept in scratch.
template <class T>
__global__ void cumprod_backward_kernel(const T* x, Lines lx, const T* gr, Lines lg, T* out,
                                        Lines lo, double* scratch) {
  CRISP_GRID_STRIDE(l, lx.count) {
    const T* px = x + lx.lines.at(l);
    const T* pg = gr + lg.lines.at(l);
    T* po = out + lo.lines.at(l);
    const int64_t n = lx.n;
    double* y = scratch + l * n;
    auto X = [&](int64_t i) { return static_cast<double>(load(px[i * lx.stride])); };
    auto G = [&](int64_t i) { return static_cast<double>(load(pg[i * lg.stride])); };
    int64_t z = 0;
    while (z < n && X(z) != 0) ++z;
    double run = 1;
    for (int64_t i = 0; i < n; ++i) y[i] = run *= X(i);
    double acc = 0;
    for (int64_t i = n; i-- > 0;) {
      acc += G(i) * y[i];
      po[i * lo.stride] = convert<T>(i < z ? acc / X(i) : 0.0);
    }
    if (z < n) {
      double p = z > 0 ? y[z - 1] : 1, s = 0;
      for (int64_t j = z; j < n; ++j) {
        if (j > z) p *= X(j);
        s += G(j) * p;
      }
      po[z * lo.stride] = convert<T>(s);
    }
  }
}

// ---- sort ----

// Keys whose unsigned order is the CPU's sort order: NaN after everything, -0 equal to +0;
// descending flips every bit (so NaN comes first, as on the CPU). Indices start as 0..n-1.
template <class T>
__global__ void sort_keys(const T* x, Lines lx, uint64_t* keys, int64_t* idx, bool descending,
                          uint64_t mask) {
  using C = compute_t<T>;
  const int64_t total = lx.count * lx.n;
  CRISP_GRID_STRIDE(e, total) {
    const int64_t l = e / lx.n, i = e % lx.n;
    const C v = load(x[lx.lines.at(l) + i * lx.stride]);
    uint64_t k;
    if constexpr (std::is_same_v<C, float>) {
      if (v != v) {
        k = 0xffffffffu;
      } else {
        const uint32_t b = __float_as_uint(v == 0.0f ? 0.0f : v);
        k = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
      }
    } else if constexpr (std::is_same_v<C, double>) {
      if (v != v) {
        k = ~uint64_t{0};
      } else {
        const uint64_t b = static_cast<uint64_t>(__double_as_longlong(v == 0.0 ? 0.0 : v));
        k = (b >> 63) ? ~b : (b | (uint64_t{1} << 63));
      }
    } else if constexpr (std::is_same_v<C, int64_t>) {
      k = static_cast<uint64_t>(v) ^ (uint64_t{1} << 63);
    } else if constexpr (std::is_same_v<C, int32_t>) {
      k = static_cast<uint32_t>(v) ^ 0x80000000u;
    } else {
      k = static_cast<uint64_t>(v);
    }
    keys[e] = descending ? (~k & mask) : k;
    idx[e] = i;
  }
}

template <class U>
__global__ void sort_gather(const U* x, Lines lx, const int64_t* idx, U* values, int64_t* indices,
                            Lines lo) {
  const int64_t total = lx.count * lx.n;
  CRISP_GRID_STRIDE(e, total) {
    const int64_t l = e / lx.n, i = e % lx.n;
    const int64_t s = idx[e];
    const int64_t o = lo.lines.at(l) + i * lo.stride;
    values[o] = x[lx.lines.at(l) + s * lx.stride];
    indices[o] = s;
  }
}

__global__ void segment_offsets(int64_t* off, int64_t count, int64_t n) {
  CRISP_GRID_STRIDE(s, count + 1) { off[s] = s * n; }
}

void sort(const Array& x, const Array& values, const Array& indices, int64_t axis,
          bool descending) {
  const Lines lx = lines_of(x, axis), lo = lines_of(values, axis);
  const int64_t total = lx.count * lx.n;
  if (total == 0) return;
  if (total > std::numeric_limits<int>::max())
    fail("sort of ", total, " elements is too large on CUDA");
  Context& c = ctx();
  const int bits = static_cast<int>(itemsize(x.dtype)) * 8 > 32 ? 64 : 32;
  const uint64_t mask = bits == 64 ? ~uint64_t{0} : 0xffffffffull;
  Buffer keys_in(static_cast<size_t>(total) * 8), keys_out(static_cast<size_t>(total) * 8),
      idx_in(static_cast<size_t>(total) * 8), idx_out(static_cast<size_t>(total) * 8);
  visit(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch<sort_keys<T>>(grid_for(total), kBlock, 0, c.stream, base_of<T>(x), lx,
                         keys_in.as<uint64_t>(), idx_in.as<int64_t>(), descending, mask);
  });
  // Radix sort is stable, so equal keys keep their order: the CPU's stable_sort.
  Buffer offsets_buf(static_cast<size_t>(lx.count + 1) * sizeof(int64_t));
  const int64_t* offsets = offsets_buf.as<int64_t>();
  launch<segment_offsets>(grid_for(lx.count + 1), kBlock, 0, c.stream, offsets_buf.as<int64_t>(),
                          lx.count, lx.n);
  size_t temp = 0;
  CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(
      nullptr, temp, keys_in.as<uint64_t>(), keys_out.as<uint64_t>(), idx_in.as<int64_t>(),
      idx_out.as<int64_t>(), static_cast<int>(total), static_cast<int>(lx.count), offsets,
      offsets + 1, 0, bits, c.stream));
  Buffer tmp(temp);
  CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(
      tmp.get(), temp, keys_in.as<uint64_t>(), keys_out.as<uint64_t>(), idx_in.as<int64_t>(),
      idx_out.as<int64_t>(), static_cast<int>(total), static_cast<int>(lx.count), offsets,
      offsets + 1, 0, bits, c.stream));
  auto gather = [&](auto tag) {
    using U = decltype(tag);
    launch<sort_gather<U>>(grid_for(total), kBlock, 0, c.stream, base_of<U>(x), lx,
                           idx_out.as<int64_t>(), base_of_mut<U>(values),
                           base_of_mut<int64_t>(indices), lo);
  };
  switch (itemsize(x.dtype)) {
    case 1:
      gather(uint8_t{});
      break;
    case 2:
      gather(uint16_t{});
      break;
    case 4:
      gather(uint32_t{});
      break;
    default:
      gather(uint64_t{});
  }
}

}  // namespace

void run_axis(const Op& op, In in, Out out) {
  const AxisAttrs attrs = AxisAttrs::from_op(op);
  const int64_t axis = attrs.axis;
  const Array& x = in[0];
  if (out[0].numel() == 0) return;
  if (op.kind == OpKind::sort) return sort(x, out[0], out[1], axis, attrs.descending);
  visit(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    switch (op.kind) {
      case OpKind::cumsum:
      case OpKind::cumprod:
        if constexpr (std::is_same_v<T, bool>) {
          return scan<T, int64_t>(x, out[0], axis, op.kind == OpKind::cumprod);
        } else {
          return scan<T, T>(x, out[0], axis, op.kind == OpKind::cumprod);
        }
      case OpKind::cumprod_backward:
        if constexpr (std::is_floating_point_v<C>) {
          const Lines lx = lines_of(x, axis), lg = lines_of(in[1], axis),
                      lo = lines_of(out[0], axis);
          Buffer scratch(static_cast<size_t>(lx.count * lx.n) * sizeof(double));
          return launch<cumprod_backward_kernel<T>>(
              grid_for(lx.count), kBlock, 0, ctx().stream, base_of<T>(x), lx, base_of<T>(in[1]), lg,
              base_of_mut<T>(out[0]), lo, scratch.as<double>());
        }
        break;
      case OpKind::softmax:
      case OpKind::log_softmax:
      case OpKind::softmax_backward:
      case OpKind::log_softmax_backward:
        if constexpr (std::is_floating_point_v<C>) return softmax_family<T>(op, in, out[0], axis);
        break;
      default:
        break;
    }
    unsupported(op, x.dtype);
  });
}

}  // namespace crisp::cuda
