// CUDA kernels for pooling: max and average, 1-, 2- and 3-d windows seen as 3-d, and their
// gradients.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/channel_sums.cuh"
#include "cuda/families.cuh"
#include "kernels/channels_last.h"
#include "kernels/pool.h"

namespace crisp::cuda {

namespace {

// ---- pooling: 1-, 2- and 3-d windows seen as 3-d ----

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
  });
}

template <class T>
void max_pool(const T* x, T* y, int64_t* idx, const PoolGeom& g, int64_t n) {
  if (n <= 0 || max_pool_unrolled(x, y, idx, g, n)) return;
  if (narrow_indices(g))
    launch_items<max_pool_kernel<T, int>>(n, x, y, idx, PoolIndex<int>(g));
  else
    launch_items<max_pool_kernel<T, int64_t>>(n, x, y, idx, PoolIndex<int64_t>(g));
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
  return g.count_include_pad ? padded : inside;
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
      launch<max_pool_backward_tiled_kernel<T, H, AW>>(
          static_cast<unsigned>((n + kBlock - 1) / kBlock), kBlock, 0, ctx().stream,
          static_cast<int>(n), g, idx, dx, t);
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
  if (narrow_indices(geo))
    launch_items<pool_backward_kernel<T, Max, int>>(n, g, idx, dx, PoolIndex<int>(geo), geo);
  else
    launch_items<pool_backward_kernel<T, Max, int64_t>>(n, g, idx, dx, PoolIndex<int64_t>(geo),
                                                        geo);
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
  if (PoolAttrs::from_op(op).nd != 2) fail("channels-last max pooling is 2-d");
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
      const DivBy<I> by_C(static_cast<I>(C));
      auto go = [&]<int K>() {
        if (fwd) {
          launch_items<max_pool_nhwc_kernel<T, I, K>>(
              n, a.data<T>(), out[0].data<T>(), out[1].data<int64_t>(), by_C, PoolIndex<I>(geo));
        } else {
          const Array idx = channels_last_storage(in[1], keep1);
          const T* gp = a.data<T>();
          const int64_t* ip = idx.data<int64_t>();
          T* dp = out[0].data<T>();
          if (C % 4 == 0 && pack_aligned<T>(gp) && pack_aligned<T>(dp) &&
              reinterpret_cast<uintptr_t>(ip) % 16 == 0) {
            launch_items<max_pool_nhwc_backward_kernel<T, I, K, 4>>(
                n / 4, gp, ip, dp, DivBy<I>(static_cast<I>(C / 4)), PoolIndex<I>(geo));
          } else {
            launch_items<max_pool_nhwc_backward_kernel<T, I, K, 1>>(n, gp, ip, dp, by_C,
                                                                    PoolIndex<I>(geo));
          }
        }
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

}  // namespace

void run_pool(const Op& op, In in, Out out) {
  if (stores_channels_last(op)) return max_pool_channels_last(op, in, out);
  ContiguousInputs d(in);
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
        launch_items<avg_pool_kernel<T>>(out[0].numel(), d.ptr<T>(0), out[0].data<T>(),
                                         PoolIndex<int64_t>(g), g);
        return;
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

}  // namespace crisp::cuda
