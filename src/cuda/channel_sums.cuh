// Per-channel sums over x [N, C, S] in one kernel (bias gradients, the norms' statistics and
// parameter gradients, the reduced negative log-likelihood), block and warp sums, and contiguous
// copies of an op's inputs, for the CUDA kernels of several families. Sums over many elements
// accumulate in double, as on the CPU.
#pragma once

#include <algorithm>
#include <mutex>
#include <vector>

#include "cuda/buffer.cuh"
#include "cuda/context.cuh"
#include "cuda/dtype.cuh"
#include "cuda/errors.cuh"
#include "cuda/families.cuh"
#include "cuda/launch.cuh"
#include "cuda/map.cuh"
#include "cuda/strided.cuh"

namespace crisp::cuda {

// The type a kernel accumulates short sums in: double for float64, float otherwise.
template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Contiguous copies of an op's inputs (the inputs themselves where already contiguous).
class ContiguousInputs {
 public:
  explicit ContiguousInputs(In in) : keep_(in.size()) {
    for (size_t i = 0; i < in.size(); ++i) arrays_.push_back(contiguous(in[i], keep_[i]));
  }
  const Array& operator[](size_t i) const { return arrays_[i]; }
  template <class T>
  const T* ptr(size_t i) const {
    return arrays_[i].template data<T>();
  }

 private:
  std::vector<Buffer> keep_;
  std::vector<Array> arrays_;
};

// ---- block and warp sums ----

template <class A>
__device__ inline A warp_sum(A v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// The sum of v over the block, returned to every thread; `shared` holds 32 values.
template <class A>
__device__ inline A block_sum(A v, A* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int warps = (blockDim.x * blockDim.y + 31) / 32;
  v = warp_sum(v);
  __syncthreads();  // shared may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? shared[lane] : A(0);
    v = warp_sum(v);
    if (lane == 0) shared[0] = v;
  }
  __syncthreads();
  return shared[0];
}

// ---- per-channel sums of two quantities over x [N, C, S]: for each c, the sum over n and s
// of f(c, n, s) ----

struct Sum2 {
  double a, b;
};

// A walk over positions j = first, first + step, ... of an [N, S] plane as (n, s) pairs, with
// one division up front rather than one per position.
struct Walk {
  int64_t n, s, dn, ds, S;
  __device__ Walk(int64_t first, int64_t step, int64_t S_) : S(S_) {
    n = first / S;
    s = first - n * S;
    dn = step / S;
    ds = step - dn * S;
  }
  __device__ void next() {
    s += ds;
    n += dn;
    if (s >= S) {
      s -= S;
      ++n;
    }
  }
};

// Term (c, n, s) of a per-channel sum, or with V = 4 the sum of terms s*4 .. s*4+3 read as one
// access (the functor's pack4).
template <int V, class F>
__device__ inline Sum2 term(const F& f, int64_t c, int64_t n, int64_t s) {
  if constexpr (V == 1)
    return f(c, n, s);
  else
    return f.pack4(c, n, s * 4);
}

// Loads in flight per thread: the sums walk their positions four at a time, issuing the four
// loads before adding (in order) what they return; one at a time, each waits a full trip to
// memory.
constexpr int kSumUnroll = 4;

// A thread's share of a channel's sum: positions first, first + step, ... below hi.
template <int V, class F>
__device__ inline Sum2 walk_sum(const F& f, int64_t c, int64_t S, int64_t first, int64_t step,
                                int64_t hi) {
  double a = 0, b = 0;
  Walk w(first, step, S);
  int64_t j = first;
  for (; j + (kSumUnroll - 1) * step < hi; j += kSumUnroll * step) {
    Sum2 v[kSumUnroll];
#pragma unroll
    for (int u = 0; u < kSumUnroll; ++u, w.next()) v[u] = term<V>(f, c, w.n, w.s);
#pragma unroll
    for (int u = 0; u < kSumUnroll; ++u) {
      a += v[u].a;
      b += v[u].b;
    }
  }
  for (; j < hi; j += step, w.next()) {
    const Sum2 v = term<V>(f, c, w.n, w.s);
    a += v.a;
    b += v.b;
  }
  return Sum2{a, b};
}

// A split's sum, written by another block of this kernel: read from L2, past this SM's cache.
__device__ inline Sum2 read_partial(const Sum2* p) {
  const double2 v = __ldcg(reinterpret_cast<const double2*>(p));
  return Sum2{v.x, v.y};
}

// The sum kernels finish their channels themselves. Split over blocks (gridDim.y > 1), each
// block of a channel leaves its sum in partial and counts itself in arrived; the last to arrive
// adds the channel's sums in split order (so totals repeat run to run, whichever block comes
// last), hands the total to fin and sets the counter back to zero for the next kernel.

// One block per (channel, split of the positions): threads walk adjacent positions (packs of V
// positions: S, total and chunk count packs).
template <int V, class F, class Fin>
__global__ void __launch_bounds__(kBlock)
    sums_by_row(F f, Fin fin, int64_t C, int64_t S, int64_t total, int64_t chunk, Sum2* partial,
                unsigned* arrived) {
  __shared__ double sa[32], sb[32];
  __shared__ bool last;
  const int64_t c = blockIdx.x, split = blockIdx.y;
  const int64_t lo = split * chunk, hi = lo + chunk < total ? lo + chunk : total;
  Sum2 t = walk_sum<V>(f, c, S, lo + threadIdx.x, blockDim.x, hi);
  t.a = block_sum(t.a, sa);
  t.b = block_sum(t.b, sb);
  if (gridDim.y == 1) {
    if (threadIdx.x == 0) fin(c, t);
    return;
  }
  if (threadIdx.x == 0) {
    partial[split * C + c] = t;
    __threadfence();
    last = atomicAdd(arrived + c, 1u) == gridDim.y - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  t = Sum2{0, 0};
  for (int64_t k = threadIdx.x; k < gridDim.y; k += blockDim.x) {
    const Sum2 v = read_partial(partial + k * C + c);
    t.a += v.a;
    t.b += v.b;
  }
  t.a = block_sum(t.a, sa);
  t.b = block_sum(t.b, sb);
  if (threadIdx.x == 0) {
    fin(c, t);
    arrived[c] = 0;
  }
}

// A thread's share of W adjacent channels' sums over rows first, first + step, ... below hi
// (S = 1: channels-last data), W = 4 read as one access. f.across4(c) gives the terms of row n
// of those channels, with what they share (shift, mean) loaded once.
template <int W, class F>
__device__ inline void walk_rows(const F& f_all, int64_t c, int64_t first, int64_t step, int64_t hi,
                                 Sum2 (&t)[W]) {
  static_assert(W == 4);
  const auto f = f_all.across4(c);
  int64_t n = first;
  for (; n + (kSumUnroll - 1) * step < hi; n += kSumUnroll * step) {
    Sum2 v[kSumUnroll][W];
#pragma unroll
    for (int u = 0; u < kSumUnroll; ++u) f(n + u * step, v[u]);
#pragma unroll
    for (int u = 0; u < kSumUnroll; ++u)
#pragma unroll
      for (int w = 0; w < W; ++w) {
        t[w].a += v[u][w].a;
        t[w].b += v[u][w].b;
      }
  }
  for (; n < hi; n += step) {
    Sum2 v[W];
    f(n, v);
#pragma unroll
    for (int w = 0; w < W; ++w) {
      t[w].a += v[w].a;
      t[w].b += v[w].b;
    }
  }
}

// Blocks of 32 x W channels x 8 lanes of positions, for small S, where adjacent channels are
// the nearest in memory; W = 4: S = 1, each thread reading four adjacent channels at once.
template <int W, class F, class Fin>
__global__ void sums_by_column(F f, Fin fin, int64_t C, int64_t S, int64_t total, int64_t chunk,
                               Sum2* partial, unsigned* arrived) {
  __shared__ Sum2 tile[8][32 * W + 1];
  __shared__ bool last;
  const int64_t c0 = (static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x) * W;
  const int64_t split = blockIdx.y;
  const int64_t lo = split * chunk, hi = lo + chunk < total ? lo + chunk : total;
  // The lanes' sums of each channel, added in lane order by lane 0.
  auto lanes_sum = [&](Sum2(&t)[W]) {
#pragma unroll
    for (int w = 0; w < W; ++w) tile[threadIdx.y][threadIdx.x * W + w] = t[w];
    __syncthreads();
    if (threadIdx.y == 0)
      for (int k = 1; k < 8; ++k)
#pragma unroll
        for (int w = 0; w < W; ++w) {
          t[w].a += tile[k][threadIdx.x * W + w].a;
          t[w].b += tile[k][threadIdx.x * W + w].b;
        }
  };
  Sum2 t[W] = {};
  if (c0 < C) {
    if constexpr (W == 1)
      t[0] = walk_sum<1>(f, c0, S, lo + threadIdx.y, 8, hi);
    else
      walk_rows<W>(f, c0, lo + threadIdx.y, 8, hi, t);
  }
  lanes_sum(t);
  const bool owner = threadIdx.y == 0 && c0 < C;
  if (gridDim.y == 1) {
    if (owner)
      for (int w = 0; w < W; ++w) fin(c0 + w, t[w]);
    return;
  }
  if (owner) {
    for (int w = 0; w < W; ++w) partial[split * C + c0 + w] = t[w];
    __threadfence();
  }
  __syncthreads();
  if (threadIdx.x == 0 && threadIdx.y == 0)
    last = atomicAdd(arrived + blockIdx.x, 1u) == gridDim.y - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  for (int w = 0; w < W; ++w) t[w] = Sum2{0, 0};
  if (c0 < C)
    for (int64_t k = threadIdx.y; k < gridDim.y; k += 8)
      for (int w = 0; w < W; ++w) {
        const Sum2 v = read_partial(partial + k * C + c0 + w);
        t[w].a += v.a;
        t[w].b += v.b;
      }
  lanes_sum(t);
  if (owner)
    for (int w = 0; w < W; ++w) fin(c0 + w, t[w]);
  if (threadIdx.x == 0 && threadIdx.y == 0) arrived[blockIdx.x] = 0;
}

// The most blocks a split sum spreads its channels over (see channel_sums).
constexpr int64_t kMaxSplitBlocks = 4096;

// The arrival counters of split sums on the current device: allocated and zeroed on first use,
// and left zero by every kernel that uses them. Outside the caching allocator: they live as long
// as the process.
inline unsigned* arrival_counters() {
  static std::mutex mutex;
  static std::vector<unsigned*> per_device;
  std::lock_guard lock(mutex);
  const size_t d = static_cast<size_t>(ctx().device);
  if (per_device.size() <= d) per_device.resize(d + 1, nullptr);
  if (!per_device[d]) {
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, kMaxSplitBlocks * sizeof(unsigned)));
    CUDA_CHECK(cudaMemsetAsync(p, 0, kMaxSplitBlocks * sizeof(unsigned), ctx().stream));
    per_device[d] = static_cast<unsigned*>(p);
  }
  return per_device[d];
}

// Sums f's terms over n and s per channel and hands each total to fin, in one kernel. Packable:
// f has pack4; aligned: its arrays are 4-element aligned. Then planes whose length is a multiple
// of 4 are read in packs.
template <bool Packable = false, class F, class Fin>
void channel_sums(int64_t N, int64_t C, int64_t S, F f, Fin fin, bool aligned = false) {
  if (C <= 0) return;
  if (S <= 0) S = 1;  // no positions: the walk only needs a divisor
  const bool by_column = S <= 4 && C > 1;
  const int V = Packable && aligned && !by_column && S % 4 == 0 ? 4 : 1;
  // Channels-last rows: a thread reads four adjacent channels at once.
  const int W = Packable && aligned && S == 1 && C % 4 == 0 ? 4 : 1;
  S /= V;
  const int64_t total = N * S;
  // Enough blocks to keep every multiprocessor's memory pipeline full: channels are split until
  // there are, while each thread still has a few loads to issue at once.
  const int64_t sms = ctx().sm_count > 0 ? ctx().sm_count : 132;
  const int64_t target = std::min<int64_t>(8 * sms, kMaxSplitBlocks);
  const int64_t blocks = by_column ? (C + 32 * W - 1) / (32 * W) : C;
  const int64_t per_split = by_column ? 8 * 8 : kBlock * 2;  // the least work worth a split
  const int64_t want = (target + blocks - 1) / blocks;
  int64_t splits = std::max<int64_t>(1, std::min<int64_t>({want, total / per_split, 4096}));
  const int64_t chunk = std::max<int64_t>(1, (total + splits - 1) / splits);
  splits = std::max<int64_t>(1, (total + chunk - 1) / chunk);
  // Splits only where blocks < target <= kMaxSplitBlocks: every channel block has a counter.
  Buffer partial;
  unsigned* arrived = nullptr;
  if (splits > 1) {
    partial = Buffer(static_cast<size_t>(splits * C) * sizeof(Sum2));
    arrived = arrival_counters();
  }
  auto* p = partial.as<Sum2>();
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(splits));
  const dim3 column_block(32, 8);
  if (by_column && W == 4) {
    if constexpr (Packable)
      launch<sums_by_column<4, F, Fin>>(grid, column_block, 0, ctx().stream, f, fin, C, S, total,
                                        chunk, p, arrived);
  } else if (by_column) {
    launch<sums_by_column<1, F, Fin>>(grid, column_block, 0, ctx().stream, f, fin, C, S, total,
                                      chunk, p, arrived);
  } else if (V == 4) {
    if constexpr (Packable)
      launch<sums_by_row<4, F, Fin>>(grid, kBlock, 0, ctx().stream, f, fin, C, S, total, chunk, p,
                                     arrived);
  } else {
    launch<sums_by_row<1, F, Fin>>(grid, kBlock, 0, ctx().stream, f, fin, C, S, total, chunk, p,
                                   arrived);
  }
}

}  // namespace crisp::cuda
