// CUDA kernels for the normalizations: layer, RMS and group norm as rows, batch norm by channel.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/channel_sums.cuh"
#include "cuda/families.cuh"
#include "kernels/norm.h"

namespace crisp::cuda {

namespace {

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
void row_norm(const Op& op, const ContiguousInputs& d, Out out) {
  const bool group = op.kind == OpKind::group_norm, center = op.kind != OpKind::rms_norm;
  const RowNormAttrs a = RowNormAttrs::from_op(op);
  const int64_t G = a.groups;
  const Array& x = d[0];
  const T* w = a.has_w ? d.ptr<T>(1) : nullptr;
  const T* b = a.has_b ? d.ptr<T>(1 + a.has_w) : nullptr;
  T* mean = center ? out[1].data<T>() : nullptr;
  T* rstd = out[center ? 2 : 1].data<T>();
  const double eps = a.eps;
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
    launch<rows_forward_kernel<T, GroupChan>>(row_blocks(R), threads, 0, ctx().stream, x.data<T>(),
                                              R, L, true, eps, w, b, chan, out[0].data<T>(), mean,
                                              rstd);
  } else {
    launch<rows_forward_kernel<T, PlainChan>>(row_blocks(R), threads, 0, ctx().stream, x.data<T>(),
                                              R, L, center, eps, w, b, PlainChan{},
                                              out[0].data<T>(), mean, rstd);
  }
}

template <class T>
void row_norm_backward(const Op& op, const ContiguousInputs& d, Out out) {
  // inputs: grad, x, [mean,] rstd[, w]; outputs: dx[, dw[, db]]
  const bool group = op.kind == OpKind::group_norm_backward;
  const bool center = op.kind != OpKind::rms_norm_backward;
  const RowNormBackwardAttrs a = RowNormBackwardAttrs::from_op(op);
  const int64_t G = a.groups;
  const Array& x = d[1];
  const T* g = d.ptr<T>(0);
  const T* mean = center ? d.ptr<T>(2) : nullptr;
  const T* rstd = d.ptr<T>(center ? 3 : 2);
  const T* w = a.has_w ? d.ptr<T>(center ? 4 : 3) : nullptr;
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
      launch<rows_backward_kernel<T, GroupChan>>(row_blocks(R), threads, 0, ctx().stream, g,
                                                 x.data<T>(), mean, rstd, R, L, true, w,
                                                 GroupChan{G, C / G, S}, out[0].data<T>());
    } else {
      launch<rows_backward_kernel<T, PlainChan>>(row_blocks(R), threads, 0, ctx().stream, g,
                                                 x.data<T>(), mean, rstd, R, L, center, w,
                                                 PlainChan{}, out[0].data<T>());
    }
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
    launch<channel_affine_kernel<T, Grad, int>>(grid, kBlock, 0, ctx().stream, static_cast<int>(n),
                                                DivBy<int>(C), DivBy<int>(S), packs, x, g, fwd,
                                                relu, coef, out);
  } else {
    launch<channel_affine_kernel<T, Grad, int64_t>>(grid, kBlock, 0, ctx().stream, n,
                                                    DivBy<int64_t>(C), DivBy<int64_t>(S), packs, x,
                                                    g, fwd, relu, coef, out);
  }
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
void batch_norm_op(const Op& op, const ContiguousInputs& d, Out out) {
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
        store.momentum = BatchNormStatsAttrs::from_op(op).momentum;
      }
      return channel_sums<true>(N, C, S, ShiftedMoments<T>{x.data<T>(), C, S}, store,
                                pack_aligned<T>(x.data<T>()));
    }
    case OpKind::batch_norm: {
      const BatchNormAttrs a = BatchNormAttrs::from_op(op);
      const Array& x = d[0];
      const int64_t N = x.shape[0], C = x.shape[1], S = x.shape[2];
      if (x.numel() == 0) return;
      Buffer coef(static_cast<size_t>(C) * sizeof(Coef<acc_t<T>>));
      launch_items<batch_norm_coef_kernel<T, P>>(
          C, d.ptr<P>(1), d.ptr<P>(2), a.has_w ? d.ptr<P>(3) : nullptr,
          a.has_b ? d.ptr<P>(3 + a.has_w) : nullptr, a.eps, coef.as<Coef<acc_t<T>>>());
      return channel_affine<T, false>(N, C, S, x.data<T>(), nullptr, nullptr, a.relu,
                                      coef.as<Coef<acc_t<T>>>(), out[0].data<T>());
    }
    case OpKind::batch_norm_backward: {
      // inputs: grad, x, mean, var[, w][, b]; outputs: dx, dw, db
      const BatchNormBackwardAttrs a = BatchNormBackwardAttrs::from_op(op);
      const Array& x = d[1];
      const int64_t N = x.shape[0], C = x.shape[1], S = x.shape[2];
      if (C == 0) return;
      const double eps = a.eps;
      Buffer coef(static_cast<size_t>(C) * sizeof(Coef<acc_t<T>>));
      const P *mean = d.ptr<P>(2), *var = d.ptr<P>(3);
      const P* w = a.has_w ? d.ptr<P>(4) : nullptr;
      // batch_norm_relu: the forward's coefficients, to know where its output was positive.
      Buffer fwd_coef(a.relu ? static_cast<size_t>(C) * sizeof(Coef<acc_t<T>>) : 0);
      const Coef<acc_t<T>>* fwd = nullptr;
      if (a.relu) {
        launch_items<batch_norm_coef_kernel<T, P>>(C, mean, var, w,
                                                   a.has_b ? d.ptr<P>(4 + a.has_w) : nullptr, eps,
                                                   fwd_coef.as<Coef<acc_t<T>>>());
        fwd = fwd_coef.as<Coef<acc_t<T>>>();
      }
      channel_sums<true>(N, C, S,
                         BatchNormGradTerm<T, P>{d.ptr<T>(0), x.data<T>(), mean, C, S, fwd},
                         StoreBatchNormGrad<T, P>{out[1].data<P>(), out[2].data<P>(), mean, var, w,
                                                  eps, static_cast<double>(N * S), a.training,
                                                  coef.as<Coef<acc_t<T>>>()},
                         pack_aligned<T>(d.ptr<T>(0)) && pack_aligned<T>(x.data<T>()));
      return channel_affine<T, true>(N, C, S, x.data<T>(), d.ptr<T>(0), fwd, false,
                                     coef.as<Coef<acc_t<T>>>(), out[0].data<T>());
    }
    default:
      unsupported(op, d[0].dtype);
  }
}

template <class T>
void batch_norm_any(const Op& op, const ContiguousInputs& d, Out out) {
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

}  // namespace

void run_norm(const Op& op, In in, Out out) {
  ContiguousInputs d(in);
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

}  // namespace crisp::cuda
