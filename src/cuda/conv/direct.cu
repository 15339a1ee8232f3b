// CUDA convolutions by crisp's own kernels: a small forward pass in one launch, and the filter
// gradient of few weights as direct sums.
#include <algorithm>
#include <cstdint>
#include <optional>

#include "cuda/conv/conv.cuh"

namespace crisp::cuda::conv {

// ---- direct convolution: a small forward pass in one launch ----
// A block stages one image's input channels of one group, and the weights of kDirectCo of the
// group's output channels, in shared memory in the compute type, and computes those channels'
// outputs over a range of positions, bias included: one launch per convolution, where the GEMM
// path takes three or four (~29 us of host time, most of it cuBLASLt's) and cuDNN 30-60 us.

namespace {

constexpr int kDirectCo = 4;   // output channels per block and per thread (one weight load)
constexpr int kDirectPos = 2;  // output positions per thread: each weight load serves both
// The fewest taps a thread sums when an output's taps are split over threads.
constexpr int kDirectMinTaps = 8;
// The most multiply-adds a direct forward pass takes (see direct_launch).
constexpr int64_t kDirectMaxMacs = int64_t{1} << 26;
// Shared memory a kernel may use without opting in.
constexpr int64_t kDefaultShared = 48 << 10;

// Bytes of T's compute type (what the direct kernels stage in shared memory).
int64_t compute_size(DType dtype) {
  return visit_float(dtype, "conv",
                     [](auto tag) { return int64_t{sizeof(compute_t<decltype(tag)>)}; });
}

// The staging of `channels` input channels for g, or nothing when it exceeds `limit` bytes in
// elements of `size` bytes.
std::optional<Staged> staged_input(const Geom& g, int channels, int64_t size, int64_t limit) {
  const int64_t hs = int64_t{g.oh - 1} * g.sh + int64_t{g.kh - 1} * g.dh + 1,
                ws = int64_t{g.ow - 1} * g.sw + int64_t{g.kw - 1} * g.dw + 1;
  // In double: hs and ws may be large before they meet 32-bit math.
  if (static_cast<double>(hs) * static_cast<double>(ws) * channels * size > limit)
    return std::nullopt;
  return Staged{channels, static_cast<int>(hs), static_cast<int>(ws), DivBy<int>(hs),
                DivBy<int>(ws)};
}

// xs = the staged channels of xn (the first of them), zero in the padding, by the whole block.
template <class T, class C>
__device__ void stage_input(C* xs, const T* xn, const Geom& g, const Staged& s) {
  const int staged = s.elements();
  // kStage loads in flight per thread: one at a time, staging waits out a memory latency per
  // element (most of the direct kernel's time for the reference CNN's second and third layers).
  constexpr int kStage = 8;
  for (int e0 = threadIdx.x; e0 < staged; e0 += kStage * blockDim.x) {
    C v[kStage];
#pragma unroll
    for (int u = 0; u < kStage; ++u) {
      const int e = e0 + u * static_cast<int>(blockDim.x);
      const int q = s.ws_div.div(e), c = e - q * s.ws;  // q = ci * hs + r
      const int ci = s.hs_div.div(q), r = q - ci * s.hs;
      const int iy = r - g.ph, ix = c - g.pw;
      v[u] = e < staged && iy >= 0 && iy < g.h && ix >= 0 && ix < g.w
                 ? load(xn[(ci * g.h + iy) * g.w + ix])
                 : C(0);
    }
#pragma unroll
    for (int u = 0; u < kStage; ++u)
      if (const int e = e0 + u * static_cast<int>(blockDim.x); e < staged) xs[e] = v[u];
  }
}

// kDirectCo output channels' weights at one tap: one shared-memory load gives all of them.
template <class C>
struct alignas(16) CoWeights {
  C v[kDirectCo];
};

// Elements of the staged input, rounded up so that the weights after it are aligned.
__host__ __device__ inline int direct_staged(const Direct& d) {
  return (d.in.elements() + kDirectCo - 1) / kDirectCo * kDirectCo;
}

// Shared memory: xs [cg, hs, ws] the input with its padding, then wk [taps] the chunk's weights,
// then off [taps] each tap's offset in xs from a window's corner. When taps are split over
// threads, the partial sums [kDirectCo * kDirectPos, pairs * slices] overwrite them at the end.
template <class T>
__global__ void __launch_bounds__(kBlock)
    direct_kernel(const T* x, const T* w, const T* bias, T* y, Direct d) {
  using C = compute_t<T>;
  extern __shared__ __align__(16) unsigned char shared[];
  const Geom& g = d.g;
  C* xs = reinterpret_cast<C*>(shared);
  CoWeights<C>* wk = reinterpret_cast<CoWeights<C>*>(xs + direct_staged(d));
  int* off = reinterpret_cast<int*>(wk + d.taps);
  int b = static_cast<int>(blockIdx.x);
  const int part = b % d.parts;
  b /= d.parts;
  const int chunk = b % d.chunks;
  b /= d.chunks;
  const int group = b % g.groups, n = b / g.groups;
  // The chunk's first output channel, and how many of its kDirectCo the group has.
  const int co0 = group * d.og + chunk * kDirectCo, nco = min(kDirectCo, d.og - chunk * kDirectCo);

  const T* xn = x + (n * g.c + group * d.cg) * g.h * g.w;
  stage_input(xs, xn, g, d.in);
  const int window = g.kh * g.kw;
  for (int k = threadIdx.x; k < d.taps; k += blockDim.x) {
    CoWeights<C> v;
#pragma unroll
    for (int j = 0; j < kDirectCo; ++j) v.v[j] = j < nco ? load(w[(co0 + j) * d.taps + k]) : C(0);
    wk[k] = v;
    const int ci = k / window, t = k - ci * window, ky = t / g.kw, kx = t - ky * g.kw;
    off[k] = (ci * d.in.hs + ky * g.dh) * d.in.ws + kx * g.dw;
  }
  __syncthreads();

  const int plane = g.oh * g.ow, first = part * d.span, count = min(d.span, plane - first);
  const int items = d.pairs * d.slices;  // (slice, position group) pairs
  C acc[kDirectCo][kDirectPos];
  // Loops only when the taps are not split (then an item is a position group).
  for (int item = threadIdx.x; item < items; item += blockDim.x) {
    const int s = item / d.pairs, q = item - s * d.pairs;
    int at[kDirectPos];  // each position's window corner in xs
#pragma unroll
    for (int i = 0; i < kDirectPos; ++i) {
      const int pos = first + min(q + i * d.pairs, count - 1), oy = pos / g.ow;
      at[i] = oy * g.sh * d.in.ws + (pos - oy * g.ow) * g.sw;
    }
#pragma unroll
    for (int j = 0; j < kDirectCo; ++j)
#pragma unroll
      for (int i = 0; i < kDirectPos; ++i) acc[j][i] = 0;
    const int k1 = (s + 1) * d.taps / d.slices;
#pragma unroll 4
    for (int k = s * d.taps / d.slices; k < k1; ++k) {
      const C* xk = xs + off[k];
      const CoWeights<C> wv = wk[k];
#pragma unroll
      for (int i = 0; i < kDirectPos; ++i) {
        const C v = xk[at[i]];
#pragma unroll
        for (int j = 0; j < kDirectCo; ++j) acc[j][i] += wv.v[j] * v;
      }
    }
    if (d.slices > 1) continue;  // then each thread has one item, summed with its slices below
    for (int j = 0; j < nco; ++j) {
      const C bj = bias ? load(bias[co0 + j]) : C(0);
      T* yj = y + (n * g.o + co0 + j) * plane + first;
#pragma unroll
      for (int i = 0; i < kDirectPos; ++i)
        if (q + i * d.pairs < count) yj[q + i * d.pairs] = convert<T>(acc[j][i] + bj);
    }
  }
  if (d.slices == 1) return;

  __syncthreads();  // the staged data is read no more
  C* sums = xs;
  if (static_cast<int>(threadIdx.x) < items)
#pragma unroll
    for (int j = 0; j < kDirectCo; ++j)
#pragma unroll
      for (int i = 0; i < kDirectPos; ++i)
        sums[(j * kDirectPos + i) * items + threadIdx.x] = acc[j][i];
  __syncthreads();
  for (int e = threadIdx.x; e < nco * count; e += blockDim.x) {
    const int j = e / count, p = e - j * count, i = p / d.pairs, q = p - i * d.pairs;
    const C* sj = sums + (j * kDirectPos + i) * items + q;
    C v = bias ? load(bias[co0 + j]) : C(0);
    for (int s = 0; s < d.slices; ++s) v += sj[s * d.pairs];
    y[(n * g.o + co0 + j) * plane + first + p] = convert<T>(v);
  }
}

}  // namespace

// The direct launch for a small forward pass whose staged data fits in shared memory, or
// nothing. Small: at most max_outputs outputs and 2^26 multiply-adds (~8 us at a quarter of an
// H200's float32 FMA rate). Up to 2^16 outputs the direct kernel is taken untimed: with few
// outputs, the libraries' tiled kernels fill few SMs too (cuBLASLt's product for the reference
// CNN's 7x7 layer fills 20 of 132), so their per-term speed doesn't pay for their host cost. Past
// that it is one more timed candidate: at the reference CNN's training batch of 64 its first layer
// (1M outputs of 25 terms) is mostly im2col and output traffic on the GEMM path.
std::optional<Direct> direct_launch(const Problem& p, int64_t max_outputs) {
  const std::optional<Geom> geom = geometry(p);
  if (!geom) return std::nullopt;
  const Geom& g = *geom;
  const int64_t plane = int64_t{g.oh} * g.ow, outputs = g.positions() * g.o;
  if (outputs > max_outputs || outputs * g.taps() > kDirectMaxMacs) return std::nullopt;
  Direct d{};
  d.g = g;
  d.cg = g.c / g.groups;
  d.og = g.o / g.groups;
  d.taps = static_cast<int>(g.taps());
  const int64_t cs = compute_size(p.dtype);
  const int64_t limit =
      std::max(kDefaultShared, static_cast<int64_t>(ctx().shared_per_block_optin));
  const std::optional<Staged> in = staged_input(g, d.cg, cs, limit);
  if (!in || int64_t{d.taps} * kDirectCo * cs > limit) return std::nullopt;
  d.in = *in;
  d.chunks = (d.og + kDirectCo - 1) / kDirectCo;
  // Parts of at least a warp's positions, enough to give every SM a block where they can.
  const int64_t base = int64_t{g.n} * g.groups * d.chunks, sms = std::max(ctx().sm_count, 1);
  const int64_t parts = std::max<int64_t>(
      1, std::min((sms + base - 1) / base, (plane + 32 * kDirectPos - 1) / (32 * kDirectPos)));
  d.span = static_cast<int>((plane + parts - 1) / parts);
  d.parts = static_cast<int>((plane + d.span - 1) / d.span);
  d.blocks = static_cast<int>(base * d.parts);
  d.pairs = (d.span + kDirectPos - 1) / kDirectPos;
  d.slices =
      d.pairs >= kBlock ? 1 : std::max(1, std::min(kBlock / d.pairs, d.taps / kDirectMinTaps));
  d.threads = std::min(kBlock, (d.pairs * d.slices + 31) / 32 * 32);
  const int64_t staged = direct_staged(d) * cs + int64_t{d.taps} * (kDirectCo * cs + 4),
                sums = d.slices > 1 ? int64_t{kDirectCo} * kDirectPos * d.pairs * d.slices * cs : 0;
  const int64_t shared = std::max(staged, sums);
  if (shared > limit) return std::nullopt;
  d.shared = static_cast<int>(shared);
  // Past the default, the kernel may use all the device offers (set per device, once per plan).
  if (shared > kDefaultShared)
    visit_float(p.dtype, "conv", [&](auto tag) {
      CUDA_CHECK(cudaFuncSetAttribute(direct_kernel<decltype(tag)>,
                                      cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(ctx().shared_per_block_optin)));
    });
  return d;
}

void run_direct(const Direct& d, DType dt, const void* x, const void* w, const void* bias,
                void* y) {
  visit_float(dt, "conv", [&](auto tag) {
    using T = decltype(tag);
    launch<direct_kernel<T>>(d.blocks, d.threads, d.shared, ctx().stream, static_cast<const T*>(x),
                             static_cast<const T*>(w), static_cast<const T*>(bias),
                             static_cast<T*>(y), d);
  });
}

// ---- filter gradient of few weights: direct sums ----
// dw[o, t] = the sum over output positions of dy[n, o, position] times the input that tap t
// reads there. A block stages one image's input (with its padding) in shared memory, and each
// thread sums one weight (output channel, tap) over a range of the image's output rows; the
// (image, range) partial sums are added by sum_over_parts_kernel after, in a fixed order. For
// filters with few weights and small images (the reference CNN's first layer: 500 weights, each a
// sum over 50,176 positions at batch 64), where the GEMM path unrolls a 32-column matrix and cuDNN
// takes ~35 us.

namespace {

constexpr int kFilterMaxWeights = 1024;  // a thread each

template <class T>
__global__ void __launch_bounds__(kFilterMaxWeights)
    filter_sums_kernel(const T* x, const T* dy, compute_t<T>* partial, FilterSums f) {
  using C = compute_t<T>;
  extern __shared__ __align__(16) unsigned char shared[];
  C* xs = reinterpret_cast<C*>(shared);
  const Geom& g = f.g;
  const int n = static_cast<int>(blockIdx.x), part = static_cast<int>(blockIdx.y);
  stage_input(xs, x + int64_t{n} * g.c * g.h * g.w, g, f.in);
  __syncthreads();
  const int window = g.kh * g.kw, taps = g.c * window, weights = g.o * taps;
  const int rows = (g.oh + f.parts - 1) / f.parts, oy0 = part * rows;
  const int oy1 = min(g.oh, oy0 + rows);
  for (int q = threadIdx.x; q < weights; q += blockDim.x) {
    const int o = q / taps, t = q - o * taps, ci = t / window, i = (t - ci * window) / g.kw;
    const int j = t - ci * window - i * g.kw;
    const C* xt = xs + (ci * f.in.hs + i * g.dh) * f.in.ws + j * g.dw;
    const T* d = dy + (int64_t{n} * g.o + o) * g.oh * g.ow;
    C acc = 0;
    for (int oy = oy0; oy < oy1; ++oy) {
      const C* xrow = xt + oy * g.sh * f.in.ws;
      const T* drow = d + oy * g.ow;
#pragma unroll 4
      for (int ox = 0; ox < g.ow; ++ox) acc += load(drow[ox]) * xrow[ox * g.sw];
    }
    partial[(int64_t{n} * f.parts + part) * weights + q] = acc;
  }
}

// dw[w] = the sum of partial[part, w] over the parts: a warp per weight, its lanes taking every
// 32nd part (a thread per weight would wait out one load latency per part).
template <class T>
__global__ void sum_over_parts_kernel(const compute_t<T>* partial, T* dw, int weights, int parts) {
  const int w = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) / 32);
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (w >= weights) return;  // whole warps: blockDim.x is a multiple of 32
  compute_t<T> v = 0;
  for (int part = lane; part < parts; part += 32) v += partial[int64_t{part} * weights + w];
  v = lanes_sum(v, 1);
  if (lane == 0) dw[w] = convert<T>(v);
}

}  // namespace

// The direct sums for the filter gradient of one group, at most kFilterMaxWeights weights and an
// image that fits in shared memory, or nothing.
std::optional<FilterSums> filter_sums_launch(const Problem& p) {
  const std::optional<Geom> geom = geometry(p);
  if (!geom || geom->groups != 1) return std::nullopt;
  const Geom& g = *geom;
  const int64_t weights = g.o * g.taps();
  const std::optional<Staged> in = staged_input(g, g.c, compute_size(p.dtype), kDefaultShared);
  if (weights > kFilterMaxWeights || !in) return std::nullopt;
  FilterSums f{g, *in, 1, static_cast<int>((weights + 31) / 32 * 32)};
  // Ranges of rows until there are about two blocks per SM.
  const int64_t sms = std::max(ctx().sm_count, 1);
  f.parts = static_cast<int>(std::clamp<int64_t>((2 * sms + g.n - 1) / g.n, 1, g.oh));
  return f;
}

void run_filter_sums(const FilterSums& f, DType dt, const void* x, const void* dy, void* dw) {
  visit_float(dt, "conv", [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    const int weights = static_cast<int>(f.g.o * f.g.taps()), parts = f.g.n * f.parts;
    Buffer partial(static_cast<size_t>(parts) * weights * sizeof(C));
    const size_t staged = static_cast<size_t>(f.in.elements()) * sizeof(C);
    launch<filter_sums_kernel<T>>(
        dim3(static_cast<unsigned>(f.g.n), static_cast<unsigned>(f.parts)), f.threads, staged,
        ctx().stream, static_cast<const T*>(x), static_cast<const T*>(dy), partial.as<C>(), f);
    launch<sum_over_parts_kernel<T>>((weights + kBlock / 32 - 1) / (kBlock / 32), kBlock, 0,
                                     ctx().stream, partial.as<C>(), static_cast<T*>(dw), weights,
                                     parts);
  });
}

}  // namespace crisp::cuda::conv
