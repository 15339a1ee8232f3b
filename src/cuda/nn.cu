// CUDA kernels for the nn family (convolutions aside: conv.cu): pooling, the normalizations,
// per-channel sums, embedding lookups and the fused negative log-likelihood. Inputs are made
// contiguous first; 16-bit floats compute in float, float64 in double; sums over many elements
// accumulate in double, as on the CPU.
#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/map.cuh"

namespace crisp::cuda {

void conv_family(const Op& op, In in, Out out);  // conv.cu
void dropout(const Op& op, In in, Out out);      // creation.cu (with the random streams)

namespace {

// The type a kernel accumulates short sums in: double for float64, float otherwise.
template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class K, class... A>
void launch(K kernel, int64_t n, A... args) {
  if (n <= 0) return;
  kernel<<<grid_for(n), kBlock, 0, ctx().stream>>>(n, args...);
  CUDA_LAUNCH_CHECK();
}

// Contiguous copies of an op's inputs (the inputs themselves where already contiguous).
class Dense {
 public:
  explicit Dense(In in) : keep_(in.size()) {
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
unsigned* arrival_counters() {
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
  if (by_column && W == 4) {
    if constexpr (Packable)
      sums_by_column<4>
          <<<grid, dim3(32, 8), 0, ctx().stream>>>(f, fin, C, S, total, chunk, p, arrived);
  } else if (by_column) {
    sums_by_column<1>
        <<<grid, dim3(32, 8), 0, ctx().stream>>>(f, fin, C, S, total, chunk, p, arrived);
  } else if (V == 4) {
    if constexpr (Packable)
      sums_by_row<4><<<grid, kBlock, 0, ctx().stream>>>(f, fin, C, S, total, chunk, p, arrived);
  } else {
    sums_by_row<1><<<grid, kBlock, 0, ctx().stream>>>(f, fin, C, S, total, chunk, p, arrived);
  }
  CUDA_LAUNCH_CHECK();
}

// ---- channel_sum ----

template <class T>
struct ChannelSumTerm {
  const T* x;
  int64_t C, S;
  __device__ Sum2 operator()(int64_t c, int64_t n, int64_t s) const {
    return Sum2{static_cast<double>(load(x[(n * C + c) * S + s])), 0};
  }
  __device__ Sum2 pack4(int64_t c, int64_t n, int64_t s) const {
    const Pack<T> p = *reinterpret_cast<const Pack<T>*>(x + (n * C + c) * S + s);
    double a = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) a += static_cast<double>(load(p.v[j]));
    return Sum2{a, 0};
  }
  struct Across4 {
    const T* x;
    int64_t C;
    __device__ void operator()(int64_t n, Sum2* out) const {
      const Pack<T> p = *reinterpret_cast<const Pack<T>*>(x + n * C);
#pragma unroll
      for (int j = 0; j < 4; ++j) out[j] = Sum2{static_cast<double>(load(p.v[j])), 0};
    }
  };
  __device__ Across4 across4(int64_t c) const { return {x + c, C}; }
};
template <class T>
struct StoreFirst {
  T* out;
  __device__ void operator()(int64_t c, Sum2 t) const { out[c] = convert<T>(t.a); }
};

void channel_sum(const Op& op, In in, const Array& o) {
  Dense d(in);
  const Array& x = d[0];
  const int64_t N = x.shape[0], C = x.shape[1], S = N * C == 0 ? 0 : x.numel() / (N * C);
  visit_float(x.dtype, op_name(op.kind), [&](auto tag) {
    using T = decltype(tag);
    channel_sums<true>(N, C, S, ChannelSumTerm<T>{d.ptr<T>(0), C, S}, StoreFirst<T>{o.data<T>()},
                       pack_aligned<T>(d.ptr<T>(0)));
  });
}

// ---- pooling: 1-, 2- and 3-d windows seen as 3-d ----

struct PoolGeom {
  int64_t planes = 0;
  int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, k[3] = {1, 1, 1}, s[3] = {1, 1, 1},
          p[3] = {0, 0, 0}, d[3] = {1, 1, 1};
  int64_t S = 1, P = 1;
  bool include_pad = true;
};

PoolGeom pool_geometry(const Op& op, const Shape& xs, const Shape& ys) {
  PoolGeom g;
  const int64_t nd = op.ints[0];
  const bool is_max = op.kind == OpKind::max_pool || op.kind == OpKind::max_pool_backward;
  g.planes = xs[0] * xs[1];
  for (int64_t i = 0; i < nd; ++i) {
    const size_t j = static_cast<size_t>(3 - nd + i);
    g.in[j] = xs[static_cast<size_t>(2 + i)];
    g.out[j] = ys[static_cast<size_t>(2 + i)];
    g.k[j] = op.ints[static_cast<size_t>(1 + i)];
    g.s[j] = op.ints[static_cast<size_t>(1 + nd + i)];
    g.p[j] = op.ints[static_cast<size_t>(1 + 2 * nd + i)];
    if (is_max) g.d[j] = op.ints[static_cast<size_t>(1 + 3 * nd + i)];
  }
  if (!is_max) g.include_pad = op.ints[static_cast<size_t>(1 + 3 * nd)] != 0;
  g.S = g.in[0] * g.in[1] * g.in[2];
  g.P = g.out[0] * g.out[1] * g.out[2];
  return g;
}

// A pooling geometry in the index type I its kernel computes in (see narrow_indices).
template <class I>
struct PoolIndex {
  I in[3], out[3], k[3], s[3], p[3], d[3];
  DivBy<I> by_S, by_P, by_in1, by_in2, by_out1, by_out2;  // by_S.d is S, by_P.d is P
  bool dilated;
  explicit PoolIndex(const PoolGeom& g)
      : by_S(g.S),
        by_P(g.P),
        by_in1(g.in[1]),
        by_in2(g.in[2]),
        by_out1(g.out[1]),
        by_out2(g.out[2]) {
    dilated = false;
    for (int j = 0; j < 3; ++j) {
      in[j] = static_cast<I>(g.in[j]);
      out[j] = static_cast<I>(g.out[j]);
      k[j] = static_cast<I>(g.k[j]);
      s[j] = static_cast<I>(g.s[j]);
      p[j] = static_cast<I>(g.p[j]);
      d[j] = static_cast<I>(g.d[j]);
      dilated = dilated || g.d[j] != 1;
    }
  }
};

// (c0, c1, c2) of flat index i over dims whose last two are d1.d and d2.d.
template <class I>
__device__ inline void split3(I i, const DivBy<I>& d2, const DivBy<I>& d1, I* c) {
  const I q = d2.div(i), r = d1.div(q);
  c[2] = i - q * d2.d;
  c[1] = q - r * d1.d;
  c[0] = r;
}

// a / s for a >= 0, with the common strides spelled out (a shift, not a division).
template <class I>
__device__ inline I div_stride(I a, I s) {
  return s == 1 ? a : s == 2 ? a >> 1 : a / s;
}

template <class T, class I>
__global__ void max_pool_kernel(I n, const T* x, T* y, int64_t* idx, PoolIndex<I> g) {
  using A = acc_t<T>;
  CRISP_GRID_STRIDE_AS(I, i, n) {
    const I pl = g.by_P.div(i);
    I o[3];
    split3<I>(i - pl * g.by_P.d, g.by_out2, g.by_out1, o);
    const T* xp = x + static_cast<int64_t>(pl) * g.by_S.d;
    A best = -INFINITY;
    I at = -1;
    for (I ka = 0; ka < g.k[0]; ++ka) {
      const I a = o[0] * g.s[0] - g.p[0] + ka * g.d[0];
      if (a < 0 || a >= g.in[0]) continue;
      for (I kb = 0; kb < g.k[1]; ++kb) {
        const I b = o[1] * g.s[1] - g.p[1] + kb * g.d[1];
        if (b < 0 || b >= g.in[1]) continue;
        for (I kc = 0; kc < g.k[2]; ++kc) {
          const I c = o[2] * g.s[2] - g.p[2] + kc * g.d[2];
          if (c < 0 || c >= g.in[2]) continue;
          const I pos = (a * g.in[1] + b) * g.in[2] + c;
          const A v = load(xp[pos]);
          // NaN wins, as in PyTorch; ties keep the first.
          if (at < 0 || v > best || (isnan(v) && !isnan(best))) {
            best = v;
            at = pos;
          }
        }
      }
    }
    y[i] = convert<T>(best);
    idx[i] = at;
  }
}

// Whether every flat index of a pooling op fits in int (32-bit index math is several times
// cheaper than 64-bit, and pooling kernels are mostly index math).
bool narrow_indices(const PoolGeom& g) {
  return g.planes * std::max(g.S, g.P) < (int64_t{1} << 31);
}

// Max pooling over undilated KH x KW windows of the last two axes (1- and 2-d pooling), one
// output per thread: with the window's size known, every tap's load is issued before the scan,
// where the generic loop waits on each load in turn. Same taps, order and rule as
// max_pool_kernel (larger wins, NaN wins, ties keep the first), without its branches: a tap
// outside the input reads as -inf, which never wins, and a window whose taps are all -inf takes
// its first tap inside the input (padding < kernel size, so it is one of the window's).
template <class T, int KH, int KW>
__global__ void __launch_bounds__(kBlock)
    max_pool_2d_kernel(int n, const T* x, T* y, int64_t* idx, PoolIndex<int> g) {
  using A = acc_t<T>;
  const int i = static_cast<int>(blockIdx.x) * kBlock + static_cast<int>(threadIdx.x);
  if (i >= n) return;
  const int pl = g.by_P.div(i), o = i - pl * g.by_P.d;
  const int oh = g.by_out2.div(o), ow = o - oh * g.by_out2.d;
  const int h0 = oh * g.s[1] - g.p[1], w0 = ow * g.s[2] - g.p[2], H = g.in[1], W = g.in[2];
  const T* xp = x + static_cast<int64_t>(pl) * g.by_S.d;
  const int first = h0 * W + w0;  // the window's first tap in the plane, inside or not
  A v[KH][KW];
#pragma unroll
  for (int a = 0; a < KH; ++a) {
    const bool row = static_cast<unsigned>(h0 + a) < static_cast<unsigned>(H);
#pragma unroll
    for (int b = 0; b < KW; ++b)
      v[a][b] = row && static_cast<unsigned>(w0 + b) < static_cast<unsigned>(W)
                    ? static_cast<A>(load(xp[first + a * W + b]))
                    : -static_cast<A>(INFINITY);
  }
  // !(v <= best): v is larger or NaN; best == best: best is not NaN (a NaN keeps its place).
  A best = -static_cast<A>(INFINITY);
  int at = -1;
#pragma unroll
  for (int a = 0; a < KH; ++a)
#pragma unroll
    for (int b = 0; b < KW; ++b) {
      const bool take = !(v[a][b] <= best) & (best == best);
      best = take ? v[a][b] : best;
      at = take ? first + a * W + b : at;
    }
  if (at < 0) at = max(h0, 0) * W + max(w0, 0);
  y[i] = convert<T>(best);
  idx[i] = at;
}

// Calls f(std::integral_constant<int, KH>, std::integral_constant<int, KW>) for the window sizes
// the unrolled kernels are built for (the stem's 3x3, the common 2x2, and their 1-d forms);
// false for any other.
template <class F>
bool with_window(int64_t kh, int64_t kw, F&& f) {
  using std::integral_constant;
  if (kh == 2 && kw == 2) return f(integral_constant<int, 2>{}, integral_constant<int, 2>{}), true;
  if (kh == 3 && kw == 3) return f(integral_constant<int, 3>{}, integral_constant<int, 3>{}), true;
  if (kh == 1 && kw == 2) return f(integral_constant<int, 1>{}, integral_constant<int, 2>{}), true;
  if (kh == 1 && kw == 3) return f(integral_constant<int, 1>{}, integral_constant<int, 3>{}), true;
  return false;
}

// Whether a pooling op's windows lie in the last two axes: 1- and 2-d pooling.
bool planar(const PoolGeom& g) { return g.in[0] == 1 && g.k[0] == 1 && g.out[0] == 1; }

// Max pooling by max_pool_2d_kernel where built for the geometry; false where not.
template <class T>
bool max_pool_unrolled(const T* x, T* y, int64_t* idx, const PoolGeom& g, int64_t n) {
  if (!narrow_indices(g) || !planar(g) || g.d[1] != 1 || g.d[2] != 1 || g.p[1] >= g.k[1] ||
      g.p[2] >= g.k[2])
    return false;
  return with_window(g.k[1], g.k[2], [&](auto kh, auto kw) {
    cuda::launch<max_pool_2d_kernel<T, decltype(kh)::value, decltype(kw)::value>>(
        static_cast<unsigned>((n + kBlock - 1) / kBlock), kBlock, 0, ctx().stream,
        static_cast<int>(n), x, y, idx, PoolIndex<int>(g));
    CUDA_LAUNCH_CHECK();
  });
}

template <class T>
void max_pool(const T* x, T* y, int64_t* idx, const PoolGeom& g, int64_t n) {
  if (n <= 0 || max_pool_unrolled(x, y, idx, g, n)) return;
  if (narrow_indices(g))
    max_pool_kernel<T, int><<<grid_for(n), kBlock, 0, ctx().stream>>>(static_cast<int>(n), x, y,
                                                                      idx, PoolIndex<int>(g));
  else
    max_pool_kernel<T, int64_t>
        <<<grid_for(n), kBlock, 0, ctx().stream>>>(n, x, y, idx, PoolIndex<int64_t>(g));
  CUDA_LAUNCH_CHECK();
}

// The window's divisor: its size clipped to the padded input, or to the input itself.
__device__ inline int64_t avg_divisor(const PoolGeom& g, const int64_t* o) {
  int64_t padded = 1, inside = 1;
  for (int j = 0; j < 3; ++j) {
    const int64_t lo = o[j] * g.s[j] - g.p[j];
    const int64_t hi = lo + g.k[j] < g.in[j] + g.p[j] ? lo + g.k[j] : g.in[j] + g.p[j];
    padded *= hi - lo;
    inside *= (hi < g.in[j] ? hi : g.in[j]) - (lo > 0 ? lo : 0);
  }
  return g.include_pad ? padded : inside;
}

template <class T>
__global__ void avg_pool_kernel(int64_t n, const T* x, T* y, PoolIndex<int64_t> g, PoolGeom full) {
  using A = acc_t<T>;
  CRISP_GRID_STRIDE(i, n) {
    const int64_t pl = g.by_P.div(i);
    int64_t o[3];
    split3<int64_t>(i - pl * g.by_P.d, g.by_out2, g.by_out1, o);
    const T* xp = x + pl * g.by_S.d;
    A acc = 0;
    for (int64_t ka = 0; ka < g.k[0]; ++ka) {
      const int64_t a = o[0] * g.s[0] - g.p[0] + ka;
      if (a < 0 || a >= g.in[0]) continue;
      for (int64_t kb = 0; kb < g.k[1]; ++kb) {
        const int64_t b = o[1] * g.s[1] - g.p[1] + kb;
        if (b < 0 || b >= g.in[1]) continue;
        for (int64_t kc = 0; kc < g.k[2]; ++kc) {
          const int64_t c = o[2] * g.s[2] - g.p[2] + kc;
          if (c < 0 || c >= g.in[2]) continue;
          acc += load(xp[(a * g.in[1] + b) * g.in[2] + c]);
        }
      }
    }
    const int64_t div = avg_divisor(full, o);
    y[i] = convert<T>(div > 0 ? acc / static_cast<A>(div) : A(0));
  }
}

// The outputs [lo, hi) along one axis whose window (k positions from o * s - p) covers input
// position a. For dilated windows, k is the window's extent, so the range only bounds the
// candidates (max pooling's index test picks the right ones).
template <class I>
struct Covering {
  I lo, hi;
};
template <class I>
__device__ inline Covering<I> covering(I a, I k, I s, I p, I out) {
  const I t = a + p;  // >= 0
  Covering<I> c{t < k ? I(0) : div_stride<I>(t - k, s) + 1, div_stride<I>(t, s) + 1};
  if (c.hi > out) c.hi = out;
  return c;
}

// dx at each input position: the gradients of the outputs whose window picked it (max) or
// covers it (average), gathered rather than scattered, so no atomics are needed.
template <class T, bool Max, class I>
__global__ void pool_backward_kernel(I n, const T* g, const int64_t* idx, T* dx, PoolIndex<I> geo,
                                     PoolGeom full) {
  using A = acc_t<T>;
  CRISP_GRID_STRIDE_AS(I, i, n) {
    const I pl = geo.by_S.div(i), pos = i - pl * geo.by_S.d;
    I c[3];
    split3<I>(pos, geo.by_in2, geo.by_in1, c);
    Covering<I> r[3];
    for (int j = 0; j < 3; ++j) {
      if (geo.dilated) {  // every output the undilated extent could reach, filtered below
        const I span = (geo.k[j] - 1) * geo.d[j] + 1;
        r[j] = covering<I>(c[j], span, geo.s[j], geo.p[j], geo.out[j]);
      } else {
        r[j] = covering<I>(c[j], geo.k[j], geo.s[j], geo.p[j], geo.out[j]);
      }
    }
    A acc = 0;
    const T* gp = g + static_cast<int64_t>(pl) * geo.by_P.d;
    for (I o0 = r[0].lo; o0 < r[0].hi; ++o0)
      for (I o1 = r[1].lo; o1 < r[1].hi; ++o1)
        for (I o2 = r[2].lo; o2 < r[2].hi; ++o2) {
          const I oi = (o0 * geo.out[1] + o1) * geo.out[2] + o2;
          if constexpr (Max) {
            if (idx[static_cast<int64_t>(pl) * geo.by_P.d + oi] == pos) acc += load(gp[oi]);
          } else {
            const int64_t o[3] = {o0, o1, o2};
            const int64_t div = avg_divisor(full, o);
            if (div > 0) acc += load(gp[oi]) / static_cast<A>(div);
          }
        }
    dx[i] = convert<T>(acc);
  }
}

// ---- max pooling's gradient by tiles ----
// The input plane is cut into tiles of one stride by one stride, a thread per tile. Which
// windows can cover a tile's positions depends only on the stride, the window's extent and the
// padding modulo the stride, so with those known at compile time each thread loads the few
// windows' indices and gradients at once (independent loads, no per-element division) and adds,
// for each of its positions, the gradients of the windows that picked it, in window order (the
// CPU's order), writing every position once, zeros included.

constexpr int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// One axis: stride S, window extent E (the kernel size, dilated), padding R modulo S. A tile
// starting at t * S, with padding p = q * S + R, has its position a (0 <= a < S) covered by the
// windows t + q + lo(a) .. t + q + hi(a), and the tile by windows t + q + first .. + first + M - 1.
template <int S_, int E_, int R_>
struct Axis {
  static constexpr int S = S_;
  static constexpr int hi(int a) { return (a + R_) / S; }
  static constexpr int lo(int a) { return hi(a) - floor_div(E_ - 1 - (a + R_) % S, S); }
  static constexpr int first = [] {
    int m = lo(0);
    for (int a = 1; a < S; ++a) m = lo(a) < m ? lo(a) : m;
    return m;
  }();
  static constexpr int M = [] {
    int m = hi(0);
    for (int a = 1; a < S; ++a) m = hi(a) > m ? hi(a) : m;
    return m;
  }() - first + 1;
  // Whether window first + u can cover position a.
  static constexpr bool covers(int a, int u) { return lo(a) <= first + u && first + u <= hi(a); }
};

struct TileGeom {
  int H, W, OH, OW, P, S;  // input and output plane sides and sizes
  int qh, qw;              // whole strides of padding
  DivBy<int> by_tiles, by_tw;
  bool pairs;  // a tile's two positions in a row are stored as one access
};

// Two adjacent elements, stored as one access.
template <class T>
struct alignas(2 * sizeof(T)) Pair {
  T v[2];
};

template <class T, class AH, class AW>
__global__ void __launch_bounds__(kBlock)
    max_pool_backward_tiled_kernel(int n, const T* g, const int64_t* idx, T* dx, TileGeom t) {
  using A = acc_t<T>;
  constexpr int MH = AH::M, MW = AW::M, SH = AH::S, SW = AW::S;
  const int i = static_cast<int>(blockIdx.x) * kBlock + static_cast<int>(threadIdx.x);
  if (i >= n) return;
  const int pl = t.by_tiles.div(i), r = i - pl * t.by_tiles.d;
  const int th = t.by_tw.div(r), tw = r - th * t.by_tw.d;
  const int64_t base = static_cast<int64_t>(pl) * t.P;
  const int oh0 = th + t.qh + AH::first, ow0 = tw + t.qw + AW::first;
  int64_t at[MH][MW];
  A gv[MH][MW];
#pragma unroll
  for (int u = 0; u < MH; ++u) {
    const bool row = static_cast<unsigned>(oh0 + u) < static_cast<unsigned>(t.OH);
#pragma unroll
    for (int v = 0; v < MW; ++v) {
      const bool ok = row && static_cast<unsigned>(ow0 + v) < static_cast<unsigned>(t.OW);
      const int64_t o = base + (oh0 + u) * t.OW + ow0 + v;
      at[u][v] = ok ? idx[o] : int64_t{-1};
      gv[u][v] = ok ? static_cast<A>(load(g[o])) : A(0);
    }
  }
  const int h0 = th * SH, w0 = tw * SW;
  T out[SH][SW];
#pragma unroll
  for (int a = 0; a < SH; ++a)
#pragma unroll
    for (int b = 0; b < SW; ++b) {
      const int64_t pos = (h0 + a) * t.W + w0 + b;
      A acc = 0;
#pragma unroll
      for (int u = 0; u < MH; ++u)
#pragma unroll
        for (int v = 0; v < MW; ++v)
          if (AH::covers(a, u) && AW::covers(b, v) && at[u][v] == pos) acc += gv[u][v];
      out[a][b] = convert<T>(acc);
    }
  T* dp = dx + static_cast<int64_t>(pl) * t.S;
#pragma unroll
  for (int a = 0; a < SH; ++a) {
    const int h = h0 + a;
    if (h >= t.H) break;
    if constexpr (SW == 2) {
      if (t.pairs) {  // w0 + 1 < W
        *reinterpret_cast<Pair<T>*>(dp + h * t.W + w0) = Pair<T>{{out[a][0], out[a][1]}};
        continue;
      }
    }
#pragma unroll
    for (int b = 0; b < SW; ++b)
      if (w0 + b < t.W) dp[h * t.W + w0 + b] = out[a][b];
  }
}

// Calls f(Axis) for an axis of stride s, window extent e and padding p that the tiled gradient
// is built for (the stem's 3x3 stride 2 with padding 1 or 0, the common 2x2 stride 2); false for
// any other.
template <class F>
bool with_axis(int64_t s, int64_t e, int64_t p, F&& f) {
  if (s != 2) return false;
  if (e == 2 && p % 2 == 0) return f(Axis<2, 2, 0>{}), true;
  if (e == 3 && p % 2 == 1) return f(Axis<2, 3, 1>{}), true;
  if (e == 3 && p % 2 == 0) return f(Axis<2, 3, 0>{}), true;
  return false;
}

// Max pooling's gradient by tiles where built for the geometry (1- and 2-d pooling, square
// windows or 1-d ones, int indices); false where not.
template <class T>
bool max_pool_backward_tiled(const T* g, const int64_t* idx, T* dx, const PoolGeom& geo) {
  if (!narrow_indices(geo) || !planar(geo) || geo.planes == 0) return false;
  const int64_t eh = (geo.k[1] - 1) * geo.d[1] + 1, ew = (geo.k[2] - 1) * geo.d[2] + 1;
  const bool one_d = geo.in[1] == 1 && geo.out[1] == 1 && eh == 1 && geo.p[1] == 0;
  if (!one_d && (geo.s[1] != geo.s[2] || eh != ew || geo.p[1] % 2 != geo.p[2] % 2)) return false;
  return with_axis(geo.s[2], ew, geo.p[2], [&](auto aw) {
    using AW = decltype(aw);
    auto run = [&](auto ah) {
      using H = decltype(ah);
      const int64_t TH = (geo.in[1] + H::S - 1) / H::S, TW = (geo.in[2] + AW::S - 1) / AW::S;
      const int64_t n = geo.planes * TH * TW;
      TileGeom t{static_cast<int>(geo.in[1]),
                 static_cast<int>(geo.in[2]),
                 static_cast<int>(geo.out[1]),
                 static_cast<int>(geo.out[2]),
                 static_cast<int>(geo.P),
                 static_cast<int>(geo.S),
                 static_cast<int>(geo.p[1] / H::S),
                 static_cast<int>(geo.p[2] / AW::S),
                 DivBy<int>(TH * TW),
                 DivBy<int>(TW),
                 AW::S == 2 && geo.in[2] % 2 == 0 &&
                     reinterpret_cast<uintptr_t>(dx) % (2 * sizeof(T)) == 0};
      max_pool_backward_tiled_kernel<T, H, AW>
          <<<static_cast<unsigned>((n + kBlock - 1) / kBlock), kBlock, 0, ctx().stream>>>(
              static_cast<int>(n), g, idx, dx, t);
      CUDA_LAUNCH_CHECK();
    };
    if (one_d)
      run(Axis<1, 1, 0>{});
    else
      run(aw);
  });
}

template <class T, bool Max>
void pool_backward(const T* g, const int64_t* idx, T* dx, const PoolGeom& geo, int64_t n) {
  if (n <= 0) return;
  if constexpr (Max) {
    if (max_pool_backward_tiled(g, idx, dx, geo)) return;
  }
  if (narrow_indices(geo)) {
    pool_backward_kernel<T, Max, int><<<grid_for(n), kBlock, 0, ctx().stream>>>(
        static_cast<int>(n), g, idx, dx, PoolIndex<int>(geo), geo);
  } else {
    pool_backward_kernel<T, Max, int64_t>
        <<<grid_for(n), kBlock, 0, ctx().stream>>>(n, g, idx, dx, PoolIndex<int64_t>(geo), geo);
  }
  CUDA_LAUNCH_CHECK();
}

// Channels-last 2-d max pooling: x [N, H, W, C] -> y, idx [N, OH, OW, C], idx the position
// h * W + w in x's plane as in the usual layout. Adjacent threads take adjacent channels, so
// every load is a whole row of channels. K > 0: a K x K window known at compile time, its loads
// all issued before the first is used (one trip to memory per output, not one per tap); K = 0:
// any window.
template <class T, class I, int K>
__global__ void max_pool_nhwc_kernel(I n, const T* x, T* y, int64_t* idx, DivBy<I> by_C,
                                     PoolIndex<I> g) {
  using A = acc_t<T>;
  constexpr int kTaps = K > 0 ? K * K : 1;
  const I kh = K > 0 ? K : g.k[1], kw = K > 0 ? K : g.k[2];
  CRISP_GRID_STRIDE_AS(I, i, n) {
    const I q = by_C.div(i), c = i - q * by_C.d;
    const I q2 = g.by_out2.div(q), ow = q - q2 * g.out[2];
    const I nb = g.by_out1.div(q2), oh = q2 - nb * g.out[1];
    const T* xp = x + static_cast<int64_t>(nb) * g.by_S.d * by_C.d + c;
    A best = -INFINITY;
    I at = -1;
    // As max_pool_kernel: NaN wins; ties keep the first.
    auto take = [&](A v, I pos) {
      if (at < 0 || v > best || (isnan(v) && !isnan(best))) {
        best = v;
        at = pos;
      }
    };
    if constexpr (K > 0) {
      A v[kTaps];
      I pos[kTaps];
#pragma unroll
      for (int j = 0; j < kTaps; ++j) {
        const I a = oh * g.s[1] - g.p[1] + (j / K) * g.d[1];
        const I b = ow * g.s[2] - g.p[2] + (j % K) * g.d[2];
        const bool inside = a >= 0 && a < g.in[1] && b >= 0 && b < g.in[2];
        pos[j] = inside ? a * g.in[2] + b : -1;
        v[j] = load(xp[static_cast<int64_t>(inside ? pos[j] : 0) * by_C.d]);
      }
#pragma unroll
      for (int j = 0; j < kTaps; ++j)
        if (pos[j] >= 0) take(v[j], pos[j]);
    } else {
      for (I ka = 0; ka < kh; ++ka) {
        const I a = oh * g.s[1] - g.p[1] + ka * g.d[1];
        if (a < 0 || a >= g.in[1]) continue;
        for (I kb = 0; kb < kw; ++kb) {
          const I b = ow * g.s[2] - g.p[2] + kb * g.d[2];
          if (b < 0 || b >= g.in[2]) continue;
          const I pos = a * g.in[2] + b;
          take(load(xp[static_cast<int64_t>(pos) * by_C.d]), pos);
        }
      }
    }
    y[i] = convert<T>(best);
    idx[i] = at;
  }
}

// Its gradient, gathered: each element of dx [N, H, W, C] adds up the gradients of the windows
// whose maximum it is (in window order, so sums repeat run to run). K as above. Each thread
// takes V adjacent channels (V = 4: C a multiple of 4 and the arrays aligned for packs), which
// share the index arithmetic that otherwise bounds the kernel; n counts such groups and by_group
// divides by C / V.
template <class T, class I, int K, int V>
__global__ void max_pool_nhwc_backward_kernel(I n, const T* g, const int64_t* idx, T* dx,
                                              DivBy<I> by_group, PoolIndex<I> geo) {
  using A = acc_t<T>;
  constexpr int kMax = K > 0 ? K : 1;
  const I kh = K > 0 ? K : geo.k[1], kw = K > 0 ? K : geo.k[2];
  const I C = by_group.d * V;
  CRISP_GRID_STRIDE_AS(I, i, n) {
    const I q = by_group.div(i), c = (i - q * by_group.d) * V;
    const I q2 = geo.by_in2.div(q), w = q - q2 * geo.in[2];
    const I nb = geo.by_in1.div(q2), h = q2 - nb * geo.in[1];
    const I pos = h * geo.in[2] + w;
    // The outputs whose window holds (h, w) at tap t along a dim: x + p - t * d = o * s.
    auto output_at = [](I x, I t, I p, I d, I s, I out) -> I {
      const I v = x + p - t * d;
      if (v < 0) return -1;
      const I o = div_stride(v, s);
      return o * s == v && o < out ? o : -1;
    };
    A acc[V] = {};
    // Adds output o's gradients (channels c ..) where (h, w) was its maximum.
    auto take = [&](I o) {
      if constexpr (V == 1) {
        if (idx[o] == pos) acc[0] += static_cast<A>(load(g[o]));
      } else {
        const longlong2 lo = *reinterpret_cast<const longlong2*>(idx + o);
        const longlong2 hi = *reinterpret_cast<const longlong2*>(idx + o + 2);
        const Pack<T> gp = *reinterpret_cast<const Pack<T>*>(g + o);
        const long long at[4] = {lo.x, lo.y, hi.x, hi.y};
#pragma unroll
        for (int j = 0; j < 4; ++j)
          if (at[j] == pos) acc[j] += static_cast<A>(load(gp.v[j]));
      }
    };
    if constexpr (K > 0) {
      // Rows and columns first (at most K each, mostly one or two), then their pairs.
      I rows[kMax], cols[kMax];
#pragma unroll
      for (int t = 0; t < K; ++t) {
        rows[t] = output_at(h, t, geo.p[1], geo.d[1], geo.s[1], geo.out[1]);
        cols[t] = output_at(w, t, geo.p[2], geo.d[2], geo.s[2], geo.out[2]);
      }
#pragma unroll
      for (int j = 0; j < K * K; ++j) {
        const I oh = rows[j / K], ow = cols[j % K];
        if (oh >= 0 && ow >= 0) take(((nb * geo.out[1] + oh) * geo.out[2] + ow) * C + c);
      }
    } else {
      for (I ka = 0; ka < kh; ++ka) {
        const I oh = output_at(h, ka, geo.p[1], geo.d[1], geo.s[1], geo.out[1]);
        if (oh < 0) continue;
        for (I kb = 0; kb < kw; ++kb) {
          const I ow = output_at(w, kb, geo.p[2], geo.d[2], geo.s[2], geo.out[2]);
          if (ow >= 0) take(((nb * geo.out[1] + oh) * geo.out[2] + ow) * C + c);
        }
      }
    }
    if constexpr (V == 1) {
      dx[i] = convert<T>(acc[0]);
    } else {
      Pack<T> r;
#pragma unroll
      for (int j = 0; j < 4; ++j) r.v[j] = convert<T>(acc[j]);
      *reinterpret_cast<Pack<T>*>(dx + q * C + c) = r;
    }
  }
}

// Max pooling and its gradient stored channels-last (2-d only): inputs made channels-last first.
void max_pool_channels_last(const Op& op, In in, Out out) {
  if (op.ints[0] != 2) fail("channels-last max pooling is 2-d");
  const std::vector<int64_t> to_logical = channels_first_order(4);
  Buffer keep0, keep1;
  const bool fwd = op.kind == OpKind::max_pool;
  const Array a = channels_last_storage(in[0], keep0);
  const Shape xs = fwd ? in[0].shape : permuted(out[0], to_logical).shape;
  const Shape ys = fwd ? permuted(out[0], to_logical).shape : in[0].shape;
  const PoolGeom geo = pool_geometry(op, xs, ys);
  const int64_t C = xs[1], n = out[0].numel();
  if (n == 0) return;
  const bool narrow = narrow_indices(geo);
  visit_float(out[0].dtype, op_name(op.kind), [&](auto tag) {
    using T = decltype(tag);
    auto run = [&]<class I>(I) {
      const I count = static_cast<I>(n);
      const DivBy<I> by_C(static_cast<I>(C));
      auto go = [&]<int K>() {
        if (fwd) {
          max_pool_nhwc_kernel<T, I, K><<<grid_for(n), kBlock, 0, ctx().stream>>>(
              count, a.data<T>(), out[0].data<T>(), out[1].data<int64_t>(), by_C,
              PoolIndex<I>(geo));
        } else {
          const Array idx = channels_last_storage(in[1], keep1);
          const T* gp = a.data<T>();
          const int64_t* ip = idx.data<int64_t>();
          T* dp = out[0].data<T>();
          if (C % 4 == 0 && pack_aligned<T>(gp) && pack_aligned<T>(dp) &&
              reinterpret_cast<uintptr_t>(ip) % 16 == 0) {
            max_pool_nhwc_backward_kernel<T, I, K, 4><<<grid_for(n / 4), kBlock, 0, ctx().stream>>>(
                static_cast<I>(n / 4), gp, ip, dp, DivBy<I>(static_cast<I>(C / 4)),
                PoolIndex<I>(geo));
          } else {
            max_pool_nhwc_backward_kernel<T, I, K, 1><<<grid_for(n), kBlock, 0, ctx().stream>>>(
                count, gp, ip, dp, by_C, PoolIndex<I>(geo));
          }
        }
        CUDA_LAUNCH_CHECK();
      };
      // ResNet's 3 x 3 and the common 2 x 2 windows unrolled.
      if (geo.k[1] == 3 && geo.k[2] == 3)
        go.template operator()<3>();
      else if (geo.k[1] == 2 && geo.k[2] == 2)
        go.template operator()<2>();
      else
        go.template operator()<0>();
    };
    if (narrow)
      run(int{});
    else
      run(int64_t{});
  });
}

void pool(const Op& op, In in, Out out) {
  if (stores_channels_last(op)) return max_pool_channels_last(op, in, out);
  Dense d(in);
  visit_float(in[0].dtype, op_name(op.kind), [&](auto tag) {
    using T = decltype(tag);
    switch (op.kind) {
      case OpKind::max_pool: {
        const PoolGeom g = pool_geometry(op, d[0].shape, out[0].shape);
        return max_pool<T>(d.ptr<T>(0), out[0].data<T>(), out[1].data<int64_t>(), g,
                           out[0].numel());
      }
      case OpKind::avg_pool: {
        const PoolGeom g = pool_geometry(op, d[0].shape, out[0].shape);
        return launch(avg_pool_kernel<T>, out[0].numel(), d.ptr<T>(0), out[0].data<T>(),
                      PoolIndex<int64_t>(g), g);
      }
      case OpKind::max_pool_backward: {
        const PoolGeom g = pool_geometry(op, out[0].shape, d[0].shape);
        return pool_backward<T, true>(d.ptr<T>(0), d.ptr<int64_t>(1), out[0].data<T>(), g,
                                      out[0].numel());
      }
      case OpKind::avg_pool_backward: {
        const PoolGeom g = pool_geometry(op, out[0].shape, d[0].shape);
        return pool_backward<T, false>(d.ptr<T>(0), nullptr, out[0].data<T>(), g, out[0].numel());
      }
      default:
        unsupported(op, in[0].dtype);
    }
  });
}

// ---- row normalizers: layer, RMS and group norm as rows of [R, L] ----

// The affine parameter index of element i of row r.
struct PlainChan {
  __device__ int64_t operator()(int64_t, int64_t i) const { return i; }
};
struct GroupChan {
  int64_t G, Cg, S;
  __device__ int64_t operator()(int64_t r, int64_t i) const { return (r % G) * Cg + i / S; }
};

template <class T, class Chan>
__global__ void rows_forward_kernel(const T* x, int64_t R, int64_t L, bool center, double eps,
                                    const T* w, const T* b, Chan chan, T* y, T* mean_out,
                                    T* rstd_out) {
  using A = acc_t<T>;
  using C = compute_t<T>;
  __shared__ A shared[32];
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const T* xr = x + r * L;
    A mean = 0;
    if (center) {
      A s = 0;
      for (int64_t i = threadIdx.x; i < L; i += blockDim.x) s += load(xr[i]);
      mean = block_sum(s, shared) / static_cast<A>(L > 0 ? L : 1);
    }
    A q = 0;
    for (int64_t i = threadIdx.x; i < L; i += blockDim.x) {
      const A dv = static_cast<A>(load(xr[i])) - mean;
      q += dv * dv;
    }
    const A var = block_sum(q, shared) / static_cast<A>(L > 0 ? L : 1);
    const A rstd = static_cast<A>(1) / sqrt(var + static_cast<A>(eps));
    const C m = static_cast<C>(mean), s = static_cast<C>(rstd);
    T* yr = y + r * L;
    for (int64_t i = threadIdx.x; i < L; i += blockDim.x) {
      C v = (load(xr[i]) - m) * s;
      if (w) v *= load(w[chan(r, i)]);
      if (b) v += load(b[chan(r, i)]);
      yr[i] = convert<T>(v);
    }
    if (threadIdx.x == 0) {
      if (mean_out) mean_out[r] = convert<T>(m);
      rstd_out[r] = convert<T>(s);
    }
  }
}

template <class T, class Chan>
__global__ void rows_backward_kernel(const T* g, const T* x, const T* mean, const T* rstd,
                                     int64_t R, int64_t L, bool center, const T* w, Chan chan,
                                     T* dx) {
  using A = acc_t<T>;
  __shared__ A shared[32];
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const T *gr = g + r * L, *xr = x + r * L;
    const A m = center ? static_cast<A>(load(mean[r])) : A(0), s = load(rstd[r]);
    A sgw = 0, sgwx = 0;
    for (int64_t i = threadIdx.x; i < L; i += blockDim.x) {
      const A xhat = (static_cast<A>(load(xr[i])) - m) * s;
      const A gw = w ? static_cast<A>(load(gr[i])) * static_cast<A>(load(w[chan(r, i)]))
                     : static_cast<A>(load(gr[i]));
      sgw += gw;
      sgwx += gw * xhat;
    }
    sgw = block_sum(sgw, shared);
    sgwx = block_sum(sgwx, shared);
    const A a = center ? sgw / static_cast<A>(L) : A(0), bb = sgwx / static_cast<A>(L);
    T* dr = dx + r * L;
    for (int64_t i = threadIdx.x; i < L; i += blockDim.x) {
      const A xhat = (static_cast<A>(load(xr[i])) - m) * s;
      const A gw = w ? static_cast<A>(load(gr[i])) * static_cast<A>(load(w[chan(r, i)]))
                     : static_cast<A>(load(gr[i]));
      dr[i] = convert<T>(s * (gw - a - xhat * bb));
    }
  }
}

// Threads per row: a warp for short rows, up to 512 for long ones.
int row_threads(int64_t L) {
  int t = 32;
  while (t < 512 && t * 8 < L) t *= 2;
  return t;
}

unsigned row_blocks(int64_t R) {
  const int64_t cap = static_cast<int64_t>(ctx().sm_count > 0 ? ctx().sm_count : 132) * 32;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(R, cap)));
}

// dw, db of the row normalizers: sums over rows of g * xhat and g per affine parameter.
template <class T>
struct NormParamTerm {
  const T *g, *x, *mean, *rstd;
  // x as [N, C, S]; statistics per row n (layer/RMS norm: G = 0, S = 1) or per (n, group)
  int64_t C, S, G;
  __device__ Sum2 operator()(int64_t c, int64_t n, int64_t s) const {
    const int64_t k = (n * C + c) * S + s, r = G > 0 ? n * G + c / (C / G) : n;
    const double m = mean ? static_cast<double>(load(mean[r])) : 0.0;
    const double gv = load(g[k]);
    const double xhat = (static_cast<double>(load(x[k])) - m) * static_cast<double>(load(rstd[r]));
    return Sum2{gv * xhat, gv};
  }
};
template <class T>
struct StoreBoth {
  T *first, *second;
  __device__ void operator()(int64_t c, Sum2 t) const {
    if (first) first[c] = convert<T>(t.a);
    if (second) second[c] = convert<T>(t.b);
  }
};

template <class T>
void row_norm(const Op& op, const Dense& d, Out out) {
  const bool group = op.kind == OpKind::group_norm, center = op.kind != OpKind::rms_norm;
  const int64_t G = group ? op.ints[0] : 1;
  const bool has_w = op.ints[group ? 1 : 0] != 0;
  const bool has_b = op.kind != OpKind::rms_norm && op.ints[group ? 2 : 1] != 0;
  const Array& x = d[0];
  const T* w = has_w ? d.ptr<T>(1) : nullptr;
  const T* b = has_b ? d.ptr<T>(1 + has_w) : nullptr;
  T* mean = center ? out[1].data<T>() : nullptr;
  T* rstd = out[center ? 2 : 1].data<T>();
  const double eps = op.reals[0];
  int64_t R, L;
  if (group) {
    const int64_t N = x.shape[0], C = x.shape[1], S = x.shape[2];
    R = N * G;
    L = C / G * S;
  } else {
    R = x.shape[0];
    L = x.shape[1];
  }
  if (R == 0) return;
  const int threads = row_threads(L);
  if (group) {
    const GroupChan chan{G, x.shape[1] / G, x.shape[2]};
    rows_forward_kernel<T><<<row_blocks(R), threads, 0, ctx().stream>>>(
        x.data<T>(), R, L, true, eps, w, b, chan, out[0].data<T>(), mean, rstd);
  } else {
    rows_forward_kernel<T><<<row_blocks(R), threads, 0, ctx().stream>>>(
        x.data<T>(), R, L, center, eps, w, b, PlainChan{}, out[0].data<T>(), mean, rstd);
  }
  CUDA_LAUNCH_CHECK();
}

template <class T>
void row_norm_backward(const Op& op, const Dense& d, Out out) {
  // inputs: grad, x, [mean,] rstd[, w]; outputs: dx[, dw[, db]]
  const bool group = op.kind == OpKind::group_norm_backward;
  const bool center = op.kind != OpKind::rms_norm_backward;
  const int64_t G = group ? op.ints[0] : 1;
  const bool has_w = op.ints[group ? 1 : 0] != 0;
  const Array& x = d[1];
  const T* g = d.ptr<T>(0);
  const T* mean = center ? d.ptr<T>(2) : nullptr;
  const T* rstd = d.ptr<T>(center ? 3 : 2);
  const T* w = has_w ? d.ptr<T>(center ? 4 : 3) : nullptr;
  T* dw = out.size() > 1 ? out[1].data<T>() : nullptr;
  T* db = out.size() > 2 ? out[2].data<T>() : nullptr;
  int64_t R, L, N = 0, C = 0, S = 0;
  if (group) {
    N = x.shape[0];
    C = x.shape[1];
    S = x.shape[2];
    R = N * G;
    L = C / G * S;
  } else {
    R = x.shape[0];
    L = x.shape[1];
  }
  if (R > 0 && L > 0) {
    const int threads = row_threads(L);
    if (group) {
      rows_backward_kernel<T><<<row_blocks(R), threads, 0, ctx().stream>>>(
          g, x.data<T>(), mean, rstd, R, L, true, w, GroupChan{G, C / G, S}, out[0].data<T>());
    } else {
      rows_backward_kernel<T><<<row_blocks(R), threads, 0, ctx().stream>>>(
          g, x.data<T>(), mean, rstd, R, L, center, w, PlainChan{}, out[0].data<T>());
    }
    CUDA_LAUNCH_CHECK();
  }
  if (!dw && !db) return;
  const StoreBoth<T> store{dw, db};
  if (group)
    channel_sums(N, C, S, NormParamTerm<T>{g, x.data<T>(), mean, rstd, C, S, G}, store);
  else
    channel_sums(R, L, 1, NormParamTerm<T>{g, x.data<T>(), mean, rstd, L, 1, 0}, store);
}

// ---- batch norm: per-channel statistics of x [N, C, S] ----

// Sums of x - K and its square, K being the channel's first element: shifting by a value near
// the mean keeps the variance from cancelling away.
template <class T>
struct ShiftedMoments {
  const T* x;
  int64_t C, S;
  __device__ Sum2 operator()(int64_t c, int64_t n, int64_t s) const {
    const double v =
        static_cast<double>(load(x[(n * C + c) * S + s])) - static_cast<double>(load(x[c * S]));
    return Sum2{v, v * v};
  }
  // A pack's four terms are summed in the accumulation type before joining the double sums:
  // double arithmetic and conversions per element, not memory, would bound the pass.
  __device__ Sum2 pack4(int64_t c, int64_t n, int64_t s) const {
    using A = acc_t<T>;
    const A k = load(x[c * S]);
    const Pack<T> p = *reinterpret_cast<const Pack<T>*>(x + (n * C + c) * S + s);
    A a = 0, b = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const A v = static_cast<A>(load(p.v[j])) - k;
      a += v;
      b += v * v;
    }
    return Sum2{a, b};
  }
  // Channels c .. c + 3 of a row (S = 1).
  struct Across4 {
    const T* x;
    int64_t C;
    acc_t<T> k[4];
    __device__ void operator()(int64_t n, Sum2* out) const {
      const Pack<T> p = *reinterpret_cast<const Pack<T>*>(x + n * C);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const acc_t<T> v = static_cast<acc_t<T>>(load(p.v[j])) - k[j];
        out[j] = Sum2{v, static_cast<double>(v) * v};
      }
    }
  };
  __device__ Across4 across4(int64_t c) const {
    Across4 a{x + c, C, {}};
    for (int j = 0; j < 4; ++j) a.k[j] = load(x[c + j]);
    return a;
  }
};
// Mean and variance in P, the parameters' type (float32 for 16-bit x under autocast), and
// where new_rm is set, the running statistics' update.
template <class T, class P>
struct StoreMoments {
  const T* x;
  int64_t S;
  double M;
  P *mean, *var;
  const P *rm = nullptr, *rv = nullptr;
  P *new_rm = nullptr, *new_rv = nullptr;
  double momentum = 0;
  __device__ void operator()(int64_t c, Sum2 t) const {
    const double k = M > 0 ? static_cast<double>(load(x[c * S])) : 0.0;
    const double m = t.a / M, d = t.b / M - m * m, v = d < 0 ? 0.0 : d;
    mean[c] = convert<P>(k + m);
    var[c] = convert<P>(v);  // NaN (no elements) stays NaN
    if (new_rm) {
      new_rm[c] =
          convert<P>((1 - momentum) * static_cast<double>(load(rm[c])) + momentum * (k + m));
      new_rv[c] = convert<P>((1 - momentum) * static_cast<double>(load(rv[c])) +
                             momentum * v * M / (M - 1));
    }
  }
};

// Per-channel coefficients of an elementwise pass over [N, C, S]: out = a * x + b (forward) or
// a * g + b * (x - m) + c (input gradient).
template <class A>
struct Coef {
  A a, b, c, m;
};

// g where batch_norm_relu's output x * f.a + f.b (f: the forward's coefficients) is positive,
// else 0: its ReLU's gradient, recomputed from x (read anyway) rather than read from the output.
template <class A>
__device__ inline A through_relu(const Coef<A>* f, const Coef<A>& k, A xv, A gv) {
  return f && !(xv * k.a + k.b > 0) ? A(0) : gv;
}

template <class T, class P>
__global__ void batch_norm_coef_kernel(int64_t C, const P* mean, const P* var, const P* w,
                                       const P* b, double eps, Coef<acc_t<T>>* coef) {
  using A = acc_t<T>;
  CRISP_GRID_STRIDE(c, C) {
    const double s = 1 / sqrt(static_cast<double>(load(var[c])) + eps);
    const A scale = static_cast<A>(s * (w ? static_cast<double>(load(w[c])) : 1.0));
    const A shift = static_cast<A>((b ? static_cast<double>(load(b[c])) : 0.0) -
                                   static_cast<double>(load(mean[c])) * scale);
    coef[c] = Coef<A>{scale, shift, 0, 0};
  }
}

// How the elementwise pass reads: one element at a time; in packs of four of one channel
// (planes hold whole packs); or, channels-last (S = 1), packs of four adjacent channels.
enum class Packs { none, plane, channels };

// The elementwise pass as a flat loop, with index arithmetic in I (int where it fits: 32-bit
// division is far cheaper).
// relu (forward): the output is max(0, value); fwd (gradient, batch_norm_relu): the forward's
// coefficients, g taken as zero where its output was not positive.
template <class T, bool Grad, class I>
__global__ void channel_affine_kernel(I n, DivBy<I> by_C, DivBy<I> by_S, Packs packs, const T* x,
                                      const T* g, const Coef<acc_t<T>>* fwd, bool relu,
                                      const Coef<acc_t<T>>* coef, T* out) {
  using A = acc_t<T>;
  const I first = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x;
  const I step = static_cast<I>(gridDim.x) * blockDim.x;
  auto value = [relu](const Coef<A>& k, A xv, A gv) {
    if constexpr (Grad) {
      return k.a * gv + k.b * (xv - k.m) + k.c;
    } else {
      const A v = xv * k.a + k.b;
      return relu && v < 0 ? A(0) : v;
    }
  };
  if (packs != Packs::none) {
    const bool plane = packs == Packs::plane;
    // The pack's coefficients, loaded again only when its first channel changes (with grid
    // strides a multiple of C, never).
    Coef<A> k[4], f[4];
    I at = -1;
    for (I v = first; v < n / 4; v += step) {
      const I c0 = plane ? by_C.mod(by_S.div(v * 4)) : by_C.mod(v * 4);
      if (c0 != at) {
        at = c0;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          k[j] = coef[plane ? c0 : c0 + j];
          if (fwd) f[j] = fwd[plane ? c0 : c0 + j];
        }
      }
      const Pack<T> xp = reinterpret_cast<const Pack<T>*>(x)[v];
      Pack<T> gp;
      if constexpr (Grad) gp = reinterpret_cast<const Pack<T>*>(g)[v];
      Pack<T> r;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const A xv = load(xp.v[j]);
        A gv = 0;
        if constexpr (Grad) gv = through_relu(fwd, f[j], xv, static_cast<A>(load(gp.v[j])));
        r.v[j] = convert<T>(value(k[j], xv, gv));
      }
      reinterpret_cast<Pack<T>*>(out)[v] = r;
    }
    return;
  }
  for (I i = first; i < n; i += step) {
    const I c = by_C.mod(by_S.div(i));
    const Coef<A> k = coef[c];
    const A xv = load(x[i]);
    A gv = 0;
    if constexpr (Grad) gv = through_relu(fwd, fwd ? fwd[c] : k, xv, static_cast<A>(load(g[i])));
    out[i] = convert<T>(value(k, xv, gv));
  }
}

template <class T, bool Grad>
void channel_affine(int64_t N, int64_t C, int64_t S, const T* x, const T* g,
                    const Coef<acc_t<T>>* fwd, bool relu, const Coef<acc_t<T>>* coef, T* out) {
  const int64_t n = N * C * S;
  if (n == 0) return;
  const bool aligned = pack_aligned<T>(x) && pack_aligned<T>(out) && (!Grad || pack_aligned<T>(g));
  const Packs packs = !aligned               ? Packs::none
                      : S % 4 == 0           ? Packs::plane
                      : S == 1 && C % 4 == 0 ? Packs::channels
                                             : Packs::none;
  const unsigned grid = grid_for(packs != Packs::none ? n / 4 : n);
  if (n < (int64_t{1} << 31)) {
    channel_affine_kernel<T, Grad, int><<<grid, kBlock, 0, ctx().stream>>>(
        static_cast<int>(n), DivBy<int>(C), DivBy<int>(S), packs, x, g, fwd, relu, coef, out);
  } else {
    channel_affine_kernel<T, Grad, int64_t><<<grid, kBlock, 0, ctx().stream>>>(
        n, DivBy<int64_t>(C), DivBy<int64_t>(S), packs, x, g, fwd, relu, coef, out);
  }
  CUDA_LAUNCH_CHECK();
}

// Sums of g and g * (x - mean) per channel; the finisher scales the second by 1 / sqrt(var +
// eps) once per channel rather than once per element.
template <class T, class P>
struct BatchNormGradTerm {
  using A = acc_t<T>;
  const T *g, *x;
  const P* mean;
  int64_t C, S;
  const Coef<A>* fwd = nullptr;  // batch_norm_relu: g counts only where its output was positive
  __device__ Sum2 operator()(int64_t c, int64_t n, int64_t s) const {
    const int64_t k = (n * C + c) * S + s;
    const A xv = load(x[k]);
    const double gv = through_relu(fwd, fwd ? fwd[c] : Coef<A>{}, xv, static_cast<A>(load(g[k])));
    return Sum2{gv, gv * (static_cast<double>(xv) - static_cast<double>(load(mean[c])))};
  }
  __device__ Sum2 pack4(int64_t c, int64_t n, int64_t s) const {
    const int64_t k = (n * C + c) * S + s;
    // As ShiftedMoments::pack4.
    const Pack<T> gp = *reinterpret_cast<const Pack<T>*>(g + k);
    const Pack<T> xp = *reinterpret_cast<const Pack<T>*>(x + k);
    const A m = static_cast<A>(load(mean[c]));
    const Coef<A> f = fwd ? fwd[c] : Coef<A>{};
    A a = 0, b = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const A xv = load(xp.v[j]);
      const A gv = through_relu(fwd, f, xv, static_cast<A>(load(gp.v[j])));
      a += gv;
      b += gv * (xv - m);
    }
    return Sum2{a, b};
  }
  struct Across4 {
    const T *g, *x;
    const Coef<A>* fwd;
    int64_t C;
    A m[4];
    Coef<A> f[4];
    __device__ void operator()(int64_t n, Sum2* out) const {
      const Pack<T> gp = *reinterpret_cast<const Pack<T>*>(g + n * C);
      const Pack<T> xp = *reinterpret_cast<const Pack<T>*>(x + n * C);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const A xv = load(xp.v[j]);
        const A gv = through_relu(fwd, f[j], xv, static_cast<A>(load(gp.v[j])));
        out[j] = Sum2{gv, gv * (xv - m[j])};
      }
    }
  };
  __device__ Across4 across4(int64_t c) const {
    Across4 a{g + c, x + c, fwd, C, {}, {}};
    for (int j = 0; j < 4; ++j) {
      a.m[j] = static_cast<A>(load(mean[c + j]));
      if (fwd) a.f[j] = fwd[c + j];
    }
    return a;
  }
};

// dw = sum g * xhat = r * sum g (x - mean), db = sum g (in P); and the coefficients of dx = w *
// r * (g - [training] (db / M + xhat * dw / M)) with r = 1 / sqrt(var + eps), xhat = (x - mean)
// * r.
template <class T, class P>
struct StoreBatchNormGrad {
  P *dw, *db;
  const P *mean, *var, *w;
  double eps, M;
  bool training;
  Coef<acc_t<T>>* coef;
  __device__ void operator()(int64_t c, Sum2 t) const {
    using A = acc_t<T>;
    const double r = 1 / sqrt(static_cast<double>(load(var[c])) + eps);
    const double gxhat = r * t.b;
    dw[c] = convert<P>(gxhat);
    db[c] = convert<P>(t.a);
    const double wr = (w ? static_cast<double>(load(w[c])) : 1.0) * r;
    Coef<A> k{static_cast<A>(wr), 0, 0, static_cast<A>(static_cast<double>(load(mean[c])))};
    if (training) {
      k.b = static_cast<A>(-wr * r * gxhat / M);
      k.c = static_cast<A>(-wr * t.a / M);
    }
    coef[c] = k;
  }
};

// T: x's type; P: the statistics' and parameters' (T, or float32 for 16-bit x under autocast).
template <class T, class P>
void batch_norm_op(const Op& op, const Dense& d, Out out) {
  switch (op.kind) {
    case OpKind::batch_norm_stats: {
      const Array& x = d[0];
      const int64_t N = x.shape[0], C = x.shape[1], S = x.shape[2];
      StoreMoments<T, P> store{x.data<T>(), S, static_cast<double>(N * S), out[0].data<P>(),
                               out[1].data<P>()};
      if (out.size() > 2) {
        store.rm = d.ptr<P>(1);
        store.rv = d.ptr<P>(2);
        store.new_rm = out[2].data<P>();
        store.new_rv = out[3].data<P>();
        store.momentum = op.reals[0];
      }
      return channel_sums<true>(N, C, S, ShiftedMoments<T>{x.data<T>(), C, S}, store,
                                pack_aligned<T>(x.data<T>()));
    }
    case OpKind::batch_norm: {
      const bool has_w = op.ints[0] != 0, has_b = op.ints[1] != 0;
      const Array& x = d[0];
      const int64_t N = x.shape[0], C = x.shape[1], S = x.shape[2];
      if (x.numel() == 0) return;
      Buffer coef(static_cast<size_t>(C) * sizeof(Coef<acc_t<T>>));
      launch(batch_norm_coef_kernel<T, P>, C, d.ptr<P>(1), d.ptr<P>(2),
             has_w ? d.ptr<P>(3) : nullptr, has_b ? d.ptr<P>(3 + has_w) : nullptr, op.reals[0],
             coef.as<Coef<acc_t<T>>>());
      const bool relu = op.ints.size() > 2 && op.ints[2] != 0;
      return channel_affine<T, false>(N, C, S, x.data<T>(), nullptr, nullptr, relu,
                                      coef.as<Coef<acc_t<T>>>(), out[0].data<T>());
    }
    case OpKind::batch_norm_backward: {
      // inputs: grad, x, mean, var[, w][, b]; outputs: dx, dw, db
      const bool training = op.ints[0] != 0, has_w = op.ints[1] != 0;
      const bool relu = op.ints.size() > 2 && op.ints[2] != 0;
      const bool has_b = op.ints.size() > 3 && op.ints[3] != 0;
      const Array& x = d[1];
      const int64_t N = x.shape[0], C = x.shape[1], S = x.shape[2];
      if (C == 0) return;
      const double eps = op.reals[0];
      Buffer coef(static_cast<size_t>(C) * sizeof(Coef<acc_t<T>>));
      const P *mean = d.ptr<P>(2), *var = d.ptr<P>(3);
      const P* w = has_w ? d.ptr<P>(4) : nullptr;
      // batch_norm_relu: the forward's coefficients, to know where its output was positive.
      Buffer fwd_coef(relu ? static_cast<size_t>(C) * sizeof(Coef<acc_t<T>>) : 0);
      const Coef<acc_t<T>>* fwd = nullptr;
      if (relu) {
        launch(batch_norm_coef_kernel<T, P>, C, mean, var, w,
               has_b ? d.ptr<P>(4 + (has_w ? 1 : 0)) : nullptr, eps, fwd_coef.as<Coef<acc_t<T>>>());
        fwd = fwd_coef.as<Coef<acc_t<T>>>();
      }
      channel_sums<true>(
          N, C, S, BatchNormGradTerm<T, P>{d.ptr<T>(0), x.data<T>(), mean, C, S, fwd},
          StoreBatchNormGrad<T, P>{out[1].data<P>(), out[2].data<P>(), mean, var, w, eps,
                                   static_cast<double>(N * S), training, coef.as<Coef<acc_t<T>>>()},
          pack_aligned<T>(d.ptr<T>(0)) && pack_aligned<T>(x.data<T>()));
      return channel_affine<T, true>(N, C, S, x.data<T>(), d.ptr<T>(0), fwd, false,
                                     coef.as<Coef<acc_t<T>>>(), out[0].data<T>());
    }
    default:
      unsupported(op, d[0].dtype);
  }
}

template <class T>
void batch_norm_any(const Op& op, const Dense& d, Out out) {
  const DType p = op.kind == OpKind::batch_norm_stats ? out[0].dtype
                  : op.kind == OpKind::batch_norm     ? d[1].dtype
                                                      : d[2].dtype;
  if (p == d[op.kind == OpKind::batch_norm_backward ? 1 : 0].dtype)
    return batch_norm_op<T, T>(op, d, out);
  if constexpr (is_half_v<T>) {
    if (p == DType::f32) return batch_norm_op<T, float>(op, d, out);
  }
  unsupported(op, p);
}

// ---- embedding ----

constexpr int kBadIndex = 1;

template <class T>
__global__ void embedding_kernel(int64_t n, const int64_t* idx, const T* w, int64_t V, int64_t D,
                                 T* out, DeviceFault* fault) {
  CRISP_GRID_STRIDE(i, n) {
    const int64_t m = i / D, v = idx[m];
    if (v < 0 || v >= V) {
      report_fault(fault, kBadIndex, v);
      out[i] = T{};
      continue;
    }
    out[i] = w[v * D + (i - m * D)];
  }
}

// acc[idx[m], d] += g[m, d]; out-of-range indices are skipped, as on the CPU.
template <class T, class A>
__global__ void embedding_backward_kernel(int64_t n, const T* g, const int64_t* idx, int64_t V,
                                          int64_t D, A* acc) {
  CRISP_GRID_STRIDE(i, n) {
    const int64_t m = i / D, v = idx[m];
    if (v < 0 || v >= V) continue;
    atomicAdd(acc + v * D + (i - m * D), static_cast<A>(load(g[i])));
  }
}

template <class T, class A>
__global__ void convert_kernel(int64_t n, const A* src, T* dst) {
  CRISP_GRID_STRIDE(i, n) { dst[i] = convert<T>(src[i]); }
}

void embedding(const Op& op, In in, Out out) {
  Dense d(in);
  if (op.kind == OpKind::embedding) {
    const Array& w = d[1];
    const int64_t V = w.shape[0], D = w.shape[1];
    DeviceFault* fault = ctx().fault([V](int, long long v) {
      return detail::cat("index ", v, " is out of range for ", V, " embeddings");
    });
    visit_float(w.dtype, op_name(op.kind), [&](auto tag) {
      using T = decltype(tag);
      launch(embedding_kernel<T>, out[0].numel(), d.ptr<int64_t>(0), w.data<T>(), V, D,
             out[0].data<T>(), fault);
    });
    return;
  }
  // embedding_backward: grad [M, D], indices [M] -> [V, D]
  const Array& o = out[0];
  const int64_t V = o.shape[0], D = o.shape[1], n = d[0].numel();
  visit_float(o.dtype, op_name(op.kind), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (is_half_v<T>) {
      // 16-bit sums accumulate in float, then round once.
      Buffer acc(static_cast<size_t>(o.numel()) * sizeof(float));
      CUDA_CHECK(cudaMemsetAsync(acc.get(), 0, acc.size(), ctx().stream));
      launch(embedding_backward_kernel<T, float>, n, d.ptr<T>(0), d.ptr<int64_t>(1), V, D,
             acc.as<float>());
      launch(convert_kernel<T, float>, o.numel(), static_cast<const float*>(acc.as<float>()),
             o.data<T>());
    } else {
      CUDA_CHECK(
          cudaMemsetAsync(o.raw(), 0, static_cast<size_t>(o.numel()) * sizeof(T), ctx().stream));
      launch(embedding_backward_kernel<T, T>, n, d.ptr<T>(0), d.ptr<int64_t>(1), V, D, o.data<T>());
    }
  });
}

// ---- negative log-likelihood ----

constexpr int kBadTarget = 2;

template <class T>
struct Nll {
  const T* logp;
  const int64_t* target;  // class indices [N, S]
  const T* prob;          // or probabilities [N, C, S]
  const T* w;             // class weights [C] or null
  int64_t N, C, S;
  int64_t ignore;
  double eps;
  DeviceFault* fault;

  __device__ double wc(int64_t c) const { return w ? static_cast<double>(load(w[c])) : 1.0; }
  __device__ double lp(int64_t n, int64_t c, int64_t s) const {
    return load(logp[(n * C + c) * S + s]);
  }

  // Element j = n * S + s: its loss and its weight in the mean's denominator.
  __device__ Sum2 term(int64_t n, int64_t s) const {
    const int64_t j = n * S + s;
    if (prob) {
      double acc = 0;
      for (int64_t c = 0; c < C; ++c) {
        const double p = static_cast<double>(load(prob[(n * C + c) * S + s])) * (1 - eps) + eps / C;
        acc -= wc(c) * p * lp(n, c, s);
      }
      return Sum2{acc, 1};
    }
    const int64_t t = target[j];
    if (t == ignore) return Sum2{0, 0};
    if (t < 0 || t >= C) {
      if (fault) report_fault(fault, kBadTarget, t);
      return Sum2{0, 0};
    }
    double acc = (1 - eps) * wc(t) * -lp(n, t, s);
    if (eps > 0) {
      double smooth = 0;
      for (int64_t k = 0; k < C; ++k) smooth -= wc(k) * lp(n, k, s);
      acc += eps / C * smooth;
    }
    return Sum2{acc, wc(t)};
  }
  __device__ Sum2 operator()(int64_t, int64_t n, int64_t s) const { return term(n, s); }
};

template <class T>
__global__ void nll_none_kernel(int64_t n, Nll<T> f, T* out) {
  CRISP_GRID_STRIDE(j, n) { out[j] = convert<T>(f.term(j / f.S, j % f.S).a); }
}

template <class T>
struct StoreReduced {
  T* out;
  bool mean;
  __device__ void operator()(int64_t, Sum2 t) const { out[0] = convert<T>(mean ? t.a / t.b : t.a); }
};

// The mean's denominator for class targets: the summed weights of the counted elements.
template <class T>
struct CountedWeight {
  Nll<T> f;
  __device__ Sum2 operator()(int64_t, int64_t n, int64_t s) const {
    const int64_t t = f.target[n * f.S + s];
    const bool counted = t != f.ignore && t >= 0 && t < f.C;
    return Sum2{counted ? f.wc(t) : 0.0, 0};
  }
};
struct StoreDouble {
  double* out;
  __device__ void operator()(int64_t, Sum2 t) const { out[0] = t.a; }
};

template <class T>
__global__ void nll_backward_kernel(int64_t n, Nll<T> f, const T* g, bool per_element,
                                    const double* den_dev, double den, T* dlogp, T* dprob) {
  CRISP_GRID_STRIDE(k, n) {
    const int64_t s = k % f.S, nc = k / f.S, c = nc % f.C, nn = nc / f.C, j = nn * f.S + s;
    const double dn = den_dev ? *den_dev : den;
    if (f.prob) {
      const double sc = static_cast<double>(load(g[per_element ? j : 0])) / dn;
      const double p = static_cast<double>(load(f.prob[k])) * (1 - f.eps) + f.eps / f.C;
      dlogp[k] = convert<T>(-sc * f.wc(c) * p);
      dprob[k] = convert<T>(-sc * f.wc(c) * static_cast<double>(load(f.logp[k])) * (1 - f.eps));
      continue;
    }
    const int64_t t = f.target[j];
    const bool counted = t != f.ignore && t >= 0 && t < f.C;
    const double sc = counted ? static_cast<double>(load(g[per_element ? j : 0])) / dn : 0.0;
    double v = f.eps / f.C * f.wc(c);
    if (c == t) v += (1 - f.eps) * f.wc(c);
    dlogp[k] = convert<T>(-sc * v);
  }
}

void nll_loss(const Op& op, In in, Out out) {
  Dense d(in);
  const bool prob = op.ints[0] != 0, has_w = op.ints[3] != 0;
  const int64_t ignore = op.ints[1], reduction = op.ints[2];
  const bool backward = op.kind == OpKind::nll_loss_backward;
  const size_t base = backward ? 1 : 0;  // the backward's inputs start with the gradient
  const Array& logp = d[base];
  const int64_t N = logp.shape[0], C = logp.shape[1], S = logp.shape[2];
  visit_float(logp.dtype, op_name(op.kind), [&](auto tag) {
    using T = decltype(tag);
    Nll<T> f{logp.data<T>(),
             prob ? nullptr : d.ptr<int64_t>(base + 1),
             prob ? d.ptr<T>(base + 1) : nullptr,
             has_w ? d.ptr<T>(base + 2) : nullptr,
             N,
             C,
             S,
             ignore,
             op.reals[0],
             nullptr};
    if (!backward) {
      if (!prob)
        f.fault = ctx().fault([C, ignore](int, long long v) {
          return detail::cat("target ", v, " is out of range for ", C, " classes (ignore_index is ",
                             ignore, ")");
        });
      if (reduction == 0)
        launch(nll_none_kernel<T>, N * S, f, out[0].data<T>());
      else
        channel_sums(N, 1, S, f, StoreReduced<T>{out[0].data<T>(), reduction == 1});
      return;
    }
    Buffer den_buf;
    const double* den_dev = nullptr;
    double den = 1;
    if (reduction == 1) {
      if (prob) {
        den = static_cast<double>(N * S);
      } else {
        den_buf = Buffer(sizeof(double));
        channel_sums(N, 1, S, CountedWeight<T>{f}, StoreDouble{den_buf.as<double>()});
        den_dev = den_buf.as<double>();
      }
    }
    launch(nll_backward_kernel<T>, N * C * S, f, d.ptr<T>(0), reduction == 0, den_dev, den,
           out[0].data<T>(), prob ? out[1].data<T>() : nullptr);
  });
}

void norm(const Op& op, In in, Out out) {
  Dense d(in);
  visit_float(in[0].dtype, op_name(op.kind), [&](auto tag) {
    using T = decltype(tag);
    switch (op.kind) {
      case OpKind::layer_norm:
      case OpKind::rms_norm:
      case OpKind::group_norm:
        return row_norm<T>(op, d, out);
      case OpKind::layer_norm_backward:
      case OpKind::rms_norm_backward:
      case OpKind::group_norm_backward:
        return row_norm_backward<T>(op, d, out);
      default:
        return batch_norm_any<T>(op, d, out);
    }
  });
}

}  // namespace

void nn(const Op& op, In in, Out out) {
  switch (op.kind) {
    case OpKind::conv:
    case OpKind::conv_backward_input:
    case OpKind::conv_backward_weight:
      return conv_family(op, in, out);
    case OpKind::channel_sum:
      return channel_sum(op, in, out[0]);
    case OpKind::max_pool:
    case OpKind::max_pool_backward:
    case OpKind::avg_pool:
    case OpKind::avg_pool_backward:
      return pool(op, in, out);
    case OpKind::layer_norm:
    case OpKind::layer_norm_backward:
    case OpKind::rms_norm:
    case OpKind::rms_norm_backward:
    case OpKind::group_norm:
    case OpKind::group_norm_backward:
    case OpKind::batch_norm_stats:
    case OpKind::batch_norm:
    case OpKind::batch_norm_backward:
      return norm(op, in, out);
    case OpKind::dropout:
      return dropout(op, in, out);
    case OpKind::embedding:
    case OpKind::embedding_backward:
      return embedding(op, in, out);
    case OpKind::nll_loss:
    case OpKind::nll_loss_backward:
      return nll_loss(op, in, out);
    default:
      unsupported(op, in.empty() ? DType::f32 : in[0].dtype);
  }
}

}  // namespace crisp::cuda
