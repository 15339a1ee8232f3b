// CUDA convolutions: forward, input gradient (also transposed convolution) and weight gradient,
// for 1-, 2- and 3-d (1-d as 2-d of height 1), with groups and dilation. Each pass over a shape
// is planned once and kept: through cuDNN (measured for large problems, its heuristics for small
// ones), for 2-d convolutions with one group as one GEMM over unrolled windows, or, for small
// 1- and 2-d forward passes, as one direct kernel.
#include <algorithm>
#include <array>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <utility>
#include <vector>

#include "cuda/gemm.cuh"

namespace crisp::cuda {

namespace {

// cuDNN's descriptors, destroyed with their owner.
struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc() { CUDNN_CHECK(cudnnCreateTensorDescriptor(&d)); }
  ~TensorDesc() { cudnnDestroyTensorDescriptor(d); }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
};
struct FilterDesc {
  cudnnFilterDescriptor_t d = nullptr;
  FilterDesc() { CUDNN_CHECK(cudnnCreateFilterDescriptor(&d)); }
  ~FilterDesc() { cudnnDestroyFilterDescriptor(d); }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
};
struct ConvDesc {
  cudnnConvolutionDescriptor_t d = nullptr;
  ConvDesc() { CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d)); }
  ~ConvDesc() { cudnnDestroyConvolutionDescriptor(d); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
};

cudnnDataType_t cudnn_type(DType d) {
  switch (d) {
    case DType::f16:
      return CUDNN_DATA_HALF;
    case DType::bf16:
      return CUDNN_DATA_BFLOAT16;
    case DType::f64:
      return CUDNN_DATA_DOUBLE;
    default:
      return CUDNN_DATA_FLOAT;
  }
}

int as_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX) fail(what, " ", v, " is too large for cuDNN");
  return static_cast<int>(v);
}

// A convolution in cuDNN's terms: x [N, C, in...], w [O, C/G, k...], y [N, O, out...] with at
// least two spatial dims (a 1-d convolution gains a leading one of size 1).
struct Problem {
  int nd = 2;  // spatial dims as cuDNN sees them
  std::vector<int> x, w, y, stride, pad, dil;
  int groups = 1;
  DType dtype = DType::f32;
  bool nhwc = false;  // x, w and y stored channels-last (2-d only)
  double flops = 0;
};

Problem problem(const Op& op, const Shape& xs, const Shape& ws, const Shape& ys, DType dtype) {
  const int64_t nd = op.ints[0];
  Problem p;
  p.dtype = dtype;
  p.nhwc = stores_channels_last(op);
  p.nd = static_cast<int>(nd < 2 ? 2 : nd);
  p.groups = as_int(op.ints[1 + 3 * nd], "groups");
  for (int i = 0; i < 2; ++i) {
    p.x.push_back(as_int(xs[static_cast<size_t>(i)], "dimension"));
    p.w.push_back(as_int(ws[static_cast<size_t>(i)], "dimension"));
    p.y.push_back(as_int(ys[static_cast<size_t>(i)], "dimension"));
  }
  if (nd == 1) {
    p.x.push_back(1);
    p.w.push_back(1);
    p.y.push_back(1);
    p.stride.push_back(1);
    p.pad.push_back(0);
    p.dil.push_back(1);
  }
  for (int64_t i = 0; i < nd; ++i) {
    const size_t j = static_cast<size_t>(2 + i);
    p.x.push_back(as_int(xs[j], "dimension"));
    p.w.push_back(as_int(ws[j], "dimension"));
    p.y.push_back(as_int(ys[j], "dimension"));
    p.stride.push_back(as_int(op.ints[static_cast<size_t>(1 + i)], "stride"));
    p.pad.push_back(as_int(op.ints[static_cast<size_t>(1 + nd + i)], "padding"));
    p.dil.push_back(as_int(op.ints[static_cast<size_t>(1 + 2 * nd + i)], "dilation"));
  }
  double f = 2.0 * p.y[0] * p.y[1];
  for (size_t i = 1; i < p.w.size(); ++i) f *= p.w[i];
  for (size_t i = 2; i < p.y.size(); ++i) f *= p.y[i];
  p.flops = f;
  return p;
}

// The strides of dims [N, C, *spatial] stored in that order or (nhwc) as [N, *spatial, C].
std::vector<int64_t> strides_of(const std::vector<int>& dims, bool nhwc) {
  std::vector<int64_t> strides(dims.size());
  int64_t s = 1;
  auto next = [&](size_t i) {
    strides[i] = s;
    s *= dims[i] > 0 ? dims[i] : 1;
  };
  if (nhwc) next(1);
  for (size_t i = dims.size(); i-- > 0;)
    if (!nhwc || i != 1) next(i);
  return strides;
}

void set_tensor(const TensorDesc& t, const std::vector<int>& dims, DType dtype, bool nhwc) {
  std::vector<int> strides;
  for (int64_t s : strides_of(dims, nhwc)) strides.push_back(as_int(s, "tensor size"));
  CUDNN_CHECK(cudnnSetTensorNdDescriptor(t.d, cudnn_type(dtype), static_cast<int>(dims.size()),
                                         dims.data(), strides.data()));
}

// The math cuDNN may use: float32 stays float32-accurate unless TF32 is allowed; the 16-bit types
// run on tensor cores.
cudnnMathType_t requested_math(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return tf32_enabled() ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
    case DType::f16:
    case DType::bf16:
      return CUDNN_TENSOR_OP_MATH;
    default:
      return CUDNN_DEFAULT_MATH;
  }
}

bool acceptable_math(DType dtype, cudnnMathType_t m) {
  if (dtype == DType::f32 && !tf32_enabled())
    return m != CUDNN_TENSOR_OP_MATH && m != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
  return true;
}

struct Descs {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;
  explicit Descs(const Problem& p) {
    set_tensor(x, p.x, p.dtype, p.nhwc);
    set_tensor(y, p.y, p.dtype, p.nhwc);
    CUDNN_CHECK(cudnnSetFilterNdDescriptor(w.d, cudnn_type(p.dtype),
                                           p.nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW,
                                           static_cast<int>(p.w.size()), p.w.data()));
    CUDNN_CHECK(cudnnSetConvolutionNdDescriptor(
        conv.d, p.nd, p.pad.data(), p.stride.data(), p.dil.data(), CUDNN_CROSS_CORRELATION,
        p.dtype == DType::f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv.d, p.groups));
    CUDNN_CHECK(cudnnSetConvolutionMathType(conv.d, requested_math(p.dtype)));
  }
};

enum class Pass { forward, data, filter };

// cuDNN's algorithm for one pass.
struct Choice {
  int algo = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  size_t workspace = 0;
  float find_ms = -1;  // cuDNN's own timing when measured
};

// The workspace algorithms may use while they are measured.
constexpr size_t kFindWorkspace = size_t{512} << 20;

// Scratch memory for measuring: as much of kFindWorkspace as the device gives.
Buffer find_workspace() {
  for (size_t bytes = kFindWorkspace; bytes >= (size_t{16} << 20); bytes /= 4) {
    try {
      return Buffer(bytes);
    } catch (const std::bad_alloc&) {
    }
  }
  return Buffer();
}

// Whether an algorithm keeps float32's accuracy. FFT-based ones, and Winograd transforms of
// filters larger than 3x3, lose about three decimal digits against the output's scale (measured
// on the reference CNN's 5x5 layers), which float32 and float64 results may not; 16-bit and TF32
// ones lose more than that anyway. Winograd on 3x3 filters stays within the float32 tests'
// tolerances, and ResNet-50's float32 training is 15% faster with it.
bool keeps_precision(cudnnConvolutionFwdAlgo_t a, bool small_filter) {
  return a != CUDNN_CONVOLUTION_FWD_ALGO_FFT && a != CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING &&
         (small_filter || (a != CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD &&
                           a != CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED));
}
bool keeps_precision(cudnnConvolutionBwdDataAlgo_t a, bool small_filter) {
  return a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT &&
         a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING &&
         (small_filter || (a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD &&
                           a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED));
}
bool keeps_precision(cudnnConvolutionBwdFilterAlgo_t a, bool small_filter) {
  return a != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT &&
         a != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING &&
         (small_filter || a != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED);
}

// The first usable algorithm of a ranked list (measured or heuristic).
template <class Perf>
bool pick(const Perf* perf, int n, const Problem& p, Choice& c) {
  const DType dtype = p.dtype;
  const bool full_precision = dtype == DType::f64 || (dtype == DType::f32 && !tf32_enabled());
  bool small_filter = true;
  for (size_t i = 2; i < p.w.size(); ++i) small_filter = small_filter && p.w[i] <= 3;
  for (int i = 0; i < n; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS || !acceptable_math(dtype, perf[i].mathType) ||
        (full_precision && !keeps_precision(perf[i].algo, small_filter)))
      continue;
    c.algo = static_cast<int>(perf[i].algo);
    // Float32 without TF32 keeps FMA math whatever the listing says: DEFAULT_MATH would let
    // Ampere and later GPUs round the inputs to TF32.
    c.math = dtype == DType::f32 && !tf32_enabled() ? CUDNN_FMA_MATH : perf[i].mathType;
    c.find_ms = perf[i].time;
    return true;
  }
  return false;
}

// cuDNN's algorithm for a pass over problem p, or nothing when it has none (the pointers are the
// op's own buffers; measuring overwrites its output, which the pass then writes again). Sets
// the chosen math type on d.conv.
std::optional<Choice> choose(Pass pass, const Problem& p, const Descs& d, const void* x,
                             const void* w, void* y) {
  cudnnHandle_t h = ctx().cudnn();
  const bool measure = p.flops >= kMeasureFlops;
  Choice c;
  bool found = false;
  int n = 0;
  switch (pass) {
    case Pass::forward: {
      int count = 0;
      CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &count));
      std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(static_cast<size_t>(count));
      if (measure) {
        Buffer ws = find_workspace();
        CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(h, d.x.d, x, d.w.d, w, d.conv.d, d.y.d,
                                                           y, count, &n, perf.data(), ws.get(),
                                                           ws.size()));
      } else {
        CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x.d, d.w.d, d.conv.d, d.y.d, count,
                                                           &n, perf.data()));
      }
      found = pick(perf.data(), n, p, c);
      if (found) {
        CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, c.math));
        CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(
            h, d.x.d, d.w.d, d.conv.d, d.y.d, static_cast<cudnnConvolutionFwdAlgo_t>(c.algo),
            &c.workspace));
      }
      break;
    }
    case Pass::data: {
      // x: dy, y: dx
      int count = 0;
      CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &count));
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(static_cast<size_t>(count));
      if (measure) {
        Buffer ws = find_workspace();
        CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(h, d.w.d, w, d.y.d, x, d.conv.d,
                                                                d.x.d, y, count, &n, perf.data(),
                                                                ws.get(), ws.size()));
      } else {
        CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w.d, d.y.d, d.conv.d, d.x.d,
                                                                count, &n, perf.data()));
      }
      found = pick(perf.data(), n, p, c);
      if (found) {
        CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, c.math));
        CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
            h, d.w.d, d.y.d, d.conv.d, d.x.d, static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo),
            &c.workspace));
      }
      break;
    }
    case Pass::filter: {
      // x: x, w: dy, y: dw
      int count = 0;
      CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &count));
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(static_cast<size_t>(count));
      if (measure) {
        Buffer ws = find_workspace();
        CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, d.x.d, x, d.y.d, w, d.conv.d,
                                                                  d.w.d, y, count, &n, perf.data(),
                                                                  ws.get(), ws.size()));
      } else {
        CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x.d, d.y.d, d.conv.d, d.w.d,
                                                                  count, &n, perf.data()));
      }
      found = pick(perf.data(), n, p, c);
      if (found) {
        CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, c.math));
        CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
            h, d.x.d, d.y.d, d.conv.d, d.w.d, static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo),
            &c.workspace));
      }
      break;
    }
  }
  if (!found) return std::nullopt;
  return c;
}

// A 2-d convolution (1-d as height 1) whose input and output index in 32 bits.
struct Geom {
  int n, c, h, w, o, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, groups;
  __host__ __device__ int64_t positions() const { return int64_t{n} * oh * ow; }  // unrolled rows
  __host__ __device__ int64_t taps() const {  // each output's terms: columns
    return int64_t{c} / groups * kh * kw;
  }
};

std::optional<Geom> geometry(const Problem& p) {
  if (p.nd != 2) return std::nullopt;
  const Geom g{p.x[0], p.x[1],      p.x[2],      p.x[3],   p.y[1],   p.w[2],   p.w[3],   p.y[2],
               p.y[3], p.stride[0], p.stride[1], p.pad[0], p.pad[1], p.dil[0], p.dil[1], p.groups};
  if (int64_t{g.n} * g.c * g.h * g.w > INT_MAX || g.positions() * g.o > INT_MAX)
    return std::nullopt;
  return g;
}

// ---- convolution as one GEMM over unrolled windows ----
// Each output position's input window, unrolled into a row of a matrix, turns a convolution
// into one cuBLASLt GEMM. Small problems (a classifier CNN at inference, one image) take this
// path: three short launches, against 30-60 us of host time per cuDNN call. Large ones time it,
// at several splits of the product's inner dimension, against cuDNN's best and keep the faster.

// Elements of the largest matrix the GEMM path builds (bounding scratch memory and indices).
constexpr int64_t kMaxUnrolled = int64_t{1} << 26;
// What row_stride rounds rows up to.
constexpr int64_t kRowBytes = 128;

// A 2-d convolution with one group, whose unrolled matrices stay within kMaxUnrolled.
std::optional<Geom> gemm_geometry(const Problem& p) {
  const std::optional<Geom> geom = geometry(p);
  if (!geom || geom->groups != 1) return std::nullopt;
  const Geom& g = *geom;
  // The widest row row_stride may give, with 2-byte elements.
  const int64_t rows = g.positions(),
                widest_row = (g.taps() + kRowBytes / 2 - 1) / (kRowBytes / 2) * (kRowBytes / 2);
  if (rows * widest_row > kMaxUnrolled || rows * g.o > kMaxUnrolled ||
      int64_t{g.n} * g.c * g.h * g.w > kMaxUnrolled)
    return std::nullopt;
  return g;
}

// The row stride of the unrolled matrix for large problems: the taps rounded up to kRowBytes, so
// that rows, and the parts a split cuts them into, start 16-byte aligned (cuBLAS's vectorized
// kernels; with the reference CNN's 1250 taps it otherwise falls back to scalar ones, 3-4x
// slower). The weights then go through a copy with that stride, which small problems don't
// repay.
template <class T>
int64_t row_stride(const Geom& g) {
  const int64_t taps = g.taps(), step = kRowBytes / sizeof(T);
  if (2.0 * static_cast<double>(g.positions() * taps) * g.o < kMeasureFlops) return taps;
  return (taps + step - 1) / step * step;
}

// The divisors of the unrolled matrix's index math, fixed per launch.
struct Unroll {
  Geom g;
  DivBy<int> row, window, kw, positions, ow, w, h, c;  // row: by the row stride
  int taps;
  Unroll(const Geom& geom, int64_t row_stride)
      : g(geom),
        row(row_stride),
        window(int64_t{geom.kh} * geom.kw),
        kw(geom.kw),
        positions(int64_t{geom.oh} * geom.ow),
        ow(geom.ow),
        w(geom.w),
        h(geom.h),
        c(geom.c),
        taps(static_cast<int>(geom.taps())) {}
};

// cols[r, k]: tap k of output position r's window; zero in the image's padding and in the
// columns past the last tap (up to the row stride). A thread takes one column k over a run of
// kIm2colRows rows: the tap is decoded once and the position advances without division, and a
// warp's stores are contiguous. (A thread per element spent ~90 instructions on index math,
// 19 us for the reference CNN's 3136 x 1280 matrix.)
constexpr int kIm2colRows = 32;
template <class T>
__global__ void im2col_kernel(const T* x, T* cols, Unroll u) {
  const Geom& g = u.g;
  const int k = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (k >= u.row.d) return;
  const bool tap = k < u.taps;
  const int c = tap ? u.window.div(k) : 0, t = k - c * u.window.d;
  const int i = tap ? u.kw.div(t) : 0, j = t - i * g.kw;
  const int positions = static_cast<int>(g.positions());
  // Runs of rows, gridDim.y apart (a grid's y extent is at most 65,535).
  for (int r0 = static_cast<int>(blockIdx.y) * kIm2colRows; r0 < positions;
       r0 += static_cast<int>(gridDim.y) * kIm2colRows) {
    const int r1 = min(r0 + kIm2colRows, positions);
    T* out = cols + int64_t{r0} * u.row.d + k;
    if (!tap) {
      for (int r = r0; r < r1; ++r, out += u.row.d) *out = convert<T>(0.0f);
      continue;
    }
    int n = u.positions.div(r0), pos = r0 - n * u.positions.d;
    int oy = u.ow.div(pos), ox = pos - oy * g.ow;
    for (int r = r0; r < r1; ++r, out += u.row.d) {
      const int y = oy * g.sh - g.ph + i * g.dh, xx = ox * g.sw - g.pw + j * g.dw;
      *out = y >= 0 && y < g.h && xx >= 0 && xx < g.w ? x[((n * g.c + c) * g.h + y) * g.w + xx]
                                                      : convert<T>(0.0f);
      if (++ox == g.ow) {
        ox = 0;
        if (++oy == g.oh) {
          oy = 0;
          ++n;
        }
      }
    }
  }
}

// dx[n, c, y, x]: the sum of dcols over the (position, tap) pairs that read input (y, x), and
// over the partial products of a split GEMM (parts of part_size elements).
template <class T>
__global__ void col2im_kernel(int total, const T* dcols, T* dx, Unroll u, int parts,
                              int64_t part_size) {
  const Geom& g = u.g;
  CRISP_GRID_STRIDE_AS(int, e, total) {
    const int q = u.w.div(e), xx = e - q * g.w;  // q = (n * C + c) * H + y
    const int nc = u.h.div(q), y = q - nc * g.h;
    const int n = u.c.div(nc), c = nc - n * g.c;
    compute_t<T> acc = 0;
    // Tap i reads row y from output row (y + ph - i dh) / sh when that divides evenly.
    for (int i = 0; i < g.kh; ++i) {
      const int ty = y + g.ph - i * g.dh;
      if (ty < 0) break;
      const int oy = ty / g.sh;
      if (oy * g.sh != ty || oy >= g.oh) continue;
      for (int j = 0; j < g.kw; ++j) {
        const int tx = xx + g.pw - j * g.dw;
        if (tx < 0) break;
        const int ox = tx / g.sw;
        if (ox * g.sw != tx || ox >= g.ow) continue;
        const T* d = dcols + ((n * g.oh + oy) * g.ow + ox) * u.row.d + (c * g.kh + i) * g.kw + j;
        for (int s = 0; s < parts; ++s) acc += load(d[s * part_size]);
      }
    }
    dx[e] = convert<T>(acc);
  }
}

// out[b, j, i] = in[b, i, j] (+ bias[j]) for in [batch, rows, cols], through 32x32 tiles; in
// may be the sum of parts (a split GEMM's partial products, part_size elements apart).
constexpr int kTile = 32;
template <class T>
__global__ void transpose_kernel(const T* in, T* out, int rows, int cols, int col_tiles,
                                 const T* bias, int parts, int64_t part_size) {
  __shared__ alignas(T) unsigned char raw[kTile * (kTile + 1) * sizeof(T)];
  T* tile = reinterpret_cast<T*>(raw);  // [kTile][kTile + 1]: the extra column spreads banks
  const int64_t base = int64_t{blockIdx.y} * rows * cols;
  const int r0 = static_cast<int>(blockIdx.x) / col_tiles * kTile;
  const int c0 = static_cast<int>(blockIdx.x) % col_tiles * kTile;
  for (int i = threadIdx.y; i < kTile; i += blockDim.y) {
    const int r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) {
      compute_t<T> v = 0;
      for (int s = 0; s < parts; ++s) v += load(in[s * part_size + base + r * cols + c]);
      tile[i * (kTile + 1) + threadIdx.x] = convert<T>(v);
    }
  }
  __syncthreads();
  for (int i = threadIdx.y; i < kTile; i += blockDim.y) {
    const int c = c0 + i, r = r0 + threadIdx.x;
    if (r < rows && c < cols) {
      const T v = tile[threadIdx.x * (kTile + 1) + i];
      out[base + c * rows + r] = bias ? convert<T>(load(v) + load(bias[c])) : v;
    }
  }
}

template <class T>
void transpose(const T* in, T* out, int batch, int64_t rows, int64_t cols, const T* bias,
               int parts = 1, int64_t part_size = 0) {
  const int64_t row_tiles = (rows + kTile - 1) / kTile, col_tiles = (cols + kTile - 1) / kTile;
  const dim3 grid(static_cast<unsigned>(row_tiles * col_tiles), static_cast<unsigned>(batch));
  transpose_kernel<T><<<grid, dim3(kTile, 8), 0, ctx().stream>>>(
      in, out, static_cast<int>(rows), static_cast<int>(cols), static_cast<int>(col_tiles), bias,
      parts, part_size);
  CUDA_LAUNCH_CHECK();
}

// dst[r, c] = the sum over parts of src[r, c] (row stride ld) for c < cols: a split GEMM's
// partial products, summed and unpadded.
template <class T>
__global__ void sum_parts_kernel(int total, const T* src, int ld, int parts, int64_t part_size,
                                 T* dst, DivBy<int> cols) {
  CRISP_GRID_STRIDE_AS(int, e, total) {
    const int r = cols.div(e), c = e - r * cols.d;
    compute_t<T> v = 0;
    for (int s = 0; s < parts; ++s) v += load(src[s * part_size + r * ld + c]);
    dst[e] = convert<T>(v);
  }
}

// dst [rows, ld] = src [rows, cols] with zeros in the columns past cols.
template <class T>
__global__ void pad_rows_kernel(int total, const T* src, T* dst, DivBy<int> ld, int cols) {
  CRISP_GRID_STRIDE_AS(int, e, total) {
    const int r = ld.div(e), c = e - r * ld.d;
    dst[e] = c < cols ? src[r * cols + c] : convert<T>(0.0f);
  }
}

template <class T>
void im2col(const Unroll& u, const T* x, T* cols) {
  const int64_t runs = (u.g.positions() + kIm2colRows - 1) / kIm2colRows;
  const dim3 grid(static_cast<unsigned>((u.row.d + kBlock - 1) / kBlock),
                  static_cast<unsigned>(std::min<int64_t>(runs, 65535)));
  launch<im2col_kernel<T>>(grid, kBlock, 0, ctx().stream, x, cols, u);
  CUDA_LAUNCH_CHECK();
}

// One pass of the GEMM path. forward: a = x, b = w, o = y (+ bias); data: a = dy, b = w, o = dx;
// filter: a = x, b = dy, o = dw. The product's inner dimension is split into `split` parts
// computed side by side and summed by the next kernel: the reference CNN's 7x7 convolution is
// a 576 x 500 product over 1250 taps, whose output alone fills 20 of the GPU's 132 SMs.
template <class T>
void gemm_conv(Pass pass, const Geom& g, int split, LtGemm& gemm, const void* a_raw,
               const void* b_raw, void* o_raw, const void* bias) {
  const int64_t rows = g.positions(), taps = g.taps(), plane = int64_t{g.oh} * g.ow;
  const int64_t ld = row_stride<T>(g), out = rows * g.o;
  const bool padded = ld != taps;
  const Unroll u(g, ld);
  const T* a = static_cast<const T*>(a_raw);
  const T* b = static_cast<const T*>(b_raw);
  T* o = static_cast<T*>(o_raw);
  auto scratch = [](int64_t n) { return Buffer(static_cast<size_t>(n) * sizeof(T)); };
  Buffer w_copy;
  auto weights = [&]() -> const T* {  // w [O, taps] with row stride ld, zeros past the taps
    if (!padded) return b;
    w_copy = scratch(g.o * ld);
    const int total = static_cast<int>(g.o * ld);
    pad_rows_kernel<T><<<grid_for(total), kBlock, 0, ctx().stream>>>(
        total, b, w_copy.as<T>(), DivBy<int>(ld), static_cast<int>(taps));
    CUDA_LAUNCH_CHECK();
    return w_copy.as<T>();
  };
  switch (pass) {
    case Pass::forward: {  // y^T [rows, O] = cols [rows, ld] w^T, over ld / split columns each
      Buffer cols = scratch(rows * ld), prod = scratch(split * out);
      const T* w = weights();
      im2col(u, a, cols.as<T>());
      const int64_t kc = ld / split;
      gemm.run(GemmShape{false, true, rows, g.o, kc, ld, ld, g.o, split, kc, kc, out}, cols.as<T>(),
               w, prod.as<T>());
      transpose(prod.as<T>(), o, g.n, plane, g.o, static_cast<const T*>(bias), split, out);
      break;
    }
    case Pass::data: {  // dcols [rows, ld] = dy^T [rows, O] w, over O / split channels each
      Buffer dyt = scratch(out), dcols = scratch(split * rows * ld);
      const T* w = weights();
      transpose(a, dyt.as<T>(), g.n, g.o, plane, static_cast<const T*>(nullptr));
      const int64_t kc = g.o / split;
      gemm.run(GemmShape{false, false, rows, ld, kc, g.o, ld, ld, split, kc, kc * ld, rows * ld},
               dyt.as<T>(), w, dcols.as<T>());
      const int total = g.n * g.c * g.h * g.w;
      col2im_kernel<T><<<grid_for(total), kBlock, 0, ctx().stream>>>(total, dcols.as<T>(), o, u,
                                                                     split, rows * ld);
      CUDA_LAUNCH_CHECK();
      break;
    }
    case Pass::filter: {  // dw [O, ld] = dy [O, rows] cols, over rows / split positions each
      Buffer cols = scratch(rows * ld), dyt = scratch(out);
      const bool direct = split == 1 && !padded;
      Buffer parts = direct ? Buffer() : scratch(split * g.o * ld);
      T* dw = direct ? o : parts.as<T>();
      im2col(u, a, cols.as<T>());
      transpose(b, dyt.as<T>(), g.n, g.o, plane, static_cast<const T*>(nullptr));
      const int64_t kc = rows / split;
      gemm.run(GemmShape{true, false, g.o, ld, kc, g.o, ld, ld, split, kc * g.o, kc * ld, g.o * ld},
               dyt.as<T>(), cols.as<T>(), dw);
      if (!direct) {
        const int total = static_cast<int>(g.o * taps);
        sum_parts_kernel<T><<<grid_for(total), kBlock, 0, ctx().stream>>>(
            total, dw, static_cast<int>(ld), split, g.o * ld, o, DivBy<int>(taps));
        CUDA_LAUNCH_CHECK();
      }
      break;
    }
  }
}

// The splits a pass may use: the inner dimension divides evenly, each part's start is 16-byte
// aligned, and the partial products stay within the scratch bound.
template <class T>
std::vector<int> splits_for(Pass pass, const Geom& g) {
  const int64_t ld = row_stride<T>(g), align = 16 / sizeof(T);
  const int64_t inner = pass == Pass::forward ? ld : pass == Pass::data ? g.o : g.positions();
  const int64_t part = pass == Pass::data      ? g.positions() * ld
                       : pass == Pass::forward ? g.positions() * g.o
                                               : int64_t{g.o} * ld;
  std::vector<int> out{1};
  for (int s = 2; s <= 8; ++s)
    if (inner % s == 0 && inner / s % align == 0 && part * s <= kMaxUnrolled) out.push_back(s);
  return out;
}

void run_gemm(Pass pass, const Geom& g, int split, LtGemm& gemm, DType dt, const void* a,
              const void* b, void* o, const void* bias) {
  visit_float(dt, "conv",
              [&](auto tag) { gemm_conv<decltype(tag)>(pass, g, split, gemm, a, b, o, bias); });
}

// ---- direct convolution: a small forward pass in one launch ----
// A block stages one image's input channels of one group, and the weights of kDirectCo of the
// group's output channels, in shared memory in the compute type, and computes those channels'
// outputs over a range of positions, bias included: one launch per convolution, where the GEMM
// path takes three or four (~29 us of host time, most of it cuBLASLt's) and cuDNN 30-60 us.

constexpr int kDirectCo = 4;   // output channels per block and per thread (one weight load)
constexpr int kDirectPos = 2;  // output positions per thread: each weight load serves both
// The fewest taps a thread sums when an output's taps are split over threads.
constexpr int kDirectMinTaps = 8;
// Shared memory a kernel may use without opting in.
constexpr int64_t kDefaultShared = 48 << 10;

// Bytes of T's compute type (what the direct kernels stage in shared memory).
int64_t compute_size(DType dtype) {
  return visit_float(dtype, "conv",
                     [](auto tag) { return int64_t{sizeof(compute_t<decltype(tag)>)}; });
}

// `channels` input channels of one image in shared memory, with the convolution's padding
// around them: hs rows and ws columns each, all that the output positions' windows read.
struct Staged {
  int channels, hs, ws;
  DivBy<int> hs_div, ws_div;
  __host__ __device__ int elements() const { return channels * hs * ws; }
};

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

// A direct convolution's launch: the grid is images x groups x chunks of kDirectCo output
// channels x parts of the output positions.
struct Direct {
  Geom g;
  int cg, og;       // input and output channels per group
  int taps;         // terms of each output: cg * kh * kw
  Staged in;        // the group's input channels
  int chunks;       // output-channel chunks per group
  int parts, span;  // position parts per image and chunk, of span positions each
  int pairs;        // position groups per part: each thread takes kDirectPos, pairs apart
  int slices;       // threads each output's taps are split over
  int blocks, threads;
  int shared;  // dynamic shared memory, in bytes
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

// The direct launch for a small forward pass whose staged data fits in shared memory, or
// nothing. Small: at most max_outputs outputs and 2^26 multiply-adds (~8 us at a quarter of an
// H200's float32 FMA rate). Up to 2^16 outputs the direct kernel is taken untimed: with few
// outputs, the libraries' tiled kernels fill few SMs too (cuBLASLt's product for the reference
// CNN's 7x7 layer fills 20 of 132), so their per-term speed doesn't pay for their host cost. Past
// that it is one more timed candidate: at the reference CNN's training batch of 64 its first layer
// (1M outputs of 25 terms) is mostly im2col and output traffic on the GEMM path.
constexpr int64_t kDirectMaxOutputs = int64_t{1} << 16;
constexpr int64_t kDirectMaxMacs = int64_t{1} << 26;
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
    CUDA_LAUNCH_CHECK();
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

constexpr int kFilterMaxWeights = 1024;  // a thread each

struct FilterSums {
  Geom g;
  Staged in;    // an image's input channels
  int parts;    // ranges of output rows per image
  int threads;  // a thread per weight, in whole warps
};

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
    CUDA_LAUNCH_CHECK();
    launch<sum_over_parts_kernel<T>>((weights + kBlock / 32 - 1) / (kBlock / 32), kBlock, 0,
                                     ctx().stream, partial.as<C>(), static_cast<T*>(dw), weights,
                                     parts);
    CUDA_LAUNCH_CHECK();
  });
}

struct Scalars {
  float f1 = 1, f0 = 0;
  double d1 = 1, d0 = 0;
  const void* one(DType t) const { return t == DType::f64 ? static_cast<const void*>(&d1) : &f1; }
  const void* zero(DType t) const { return t == DType::f64 ? static_cast<const void*>(&d0) : &f0; }
};

// One pass through cuDNN, with the arguments of gemm_conv.
void run_cudnn(Pass pass, const Descs& d, const Choice& c, DType dt, const void* a, const void* b,
               void* o) {
  const Scalars s;
  cudnnHandle_t h = ctx().cudnn();
  void* ws = c.workspace ? ctx().workspace(c.workspace) : nullptr;
  switch (pass) {
    case Pass::forward:
      CUDNN_CHECK(cudnnConvolutionForward(h, s.one(dt), d.x.d, a, d.w.d, b, d.conv.d,
                                          static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), ws,
                                          c.workspace, s.zero(dt), d.y.d, o));
      break;
    case Pass::data:
      CUDNN_CHECK(cudnnConvolutionBackwardData(h, s.one(dt), d.w.d, b, d.y.d, a, d.conv.d,
                                               static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo),
                                               ws, c.workspace, s.zero(dt), d.x.d, o));
      break;
    case Pass::filter:
      CUDNN_CHECK(
          cudnnConvolutionBackwardFilter(h, s.one(dt), d.x.d, a, d.y.d, b, d.conv.d,
                                         static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo), ws,
                                         c.workspace, s.zero(dt), d.w.d, o));
      break;
  }
}

// ---- cuDNN's graph API ----
// The 16-bit and TF32 convolutions go through execution plans built once per problem: cuDNN 9's
// legacy calls rebuild theirs on every call, 70-200 us of host time per convolution on an H200's
// host, which capped bfloat16 ResNet-50 training below the GPU's speed. (Full-precision float32
// and float64 keep the legacy calls, whose algorithm list says which keep their accuracy.)

// A backend descriptor, destroyed with its owner.
struct BackendDesc {
  cudnnBackendDescriptor_t d = nullptr;
  explicit BackendDesc(cudnnBackendDescriptorType_t type) {
    if (cudnnBackendCreateDescriptor(type, &d) != CUDNN_STATUS_SUCCESS) d = nullptr;
  }
  ~BackendDesc() {
    if (d) cudnnBackendDestroyDescriptor(d);
  }
  BackendDesc(BackendDesc&& o) noexcept : d(std::exchange(o.d, nullptr)) {}
  BackendDesc(const BackendDesc&) = delete;
  BackendDesc& operator=(const BackendDesc&) = delete;
};

// Sets attributes and finalizes, remembering whether every step succeeded.
struct Builder {
  bool ok = true;
  template <class T>
  void set(const BackendDesc& b, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
           const T* values, int64_t n = 1) {
    ok = ok && b.d && cudnnBackendSetAttribute(b.d, name, type, n, values) == CUDNN_STATUS_SUCCESS;
  }
  void set(const BackendDesc& b, cudnnBackendAttributeName_t name, const BackendDesc& value) {
    set(b, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, &value.d);
  }
  void finalize(const BackendDesc& b) {
    ok = ok && b.d && cudnnBackendFinalize(b.d) == CUDNN_STATUS_SUCCESS;
  }
};

// Tensor uids in a plan's variant pack: the pass's a, b and o (see conv_family).
constexpr int64_t kUids[3] = {1, 2, 3};

// A finalized execution plan and the workspace it needs.
struct GraphPlan {
  BackendDesc plan{CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR};
  int64_t workspace = 0;
  float ms = -1;  // measured when chosen
};

void execute(const GraphPlan& g, const void* a, const void* b, void* o) {
  void* ptrs[3] = {const_cast<void*>(a), const_cast<void*>(b), o};
  void* ws = g.workspace ? ctx().workspace(static_cast<size_t>(g.workspace)) : nullptr;
  BackendDesc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  Builder k;
  k.set(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, kUids, 3);
  k.set(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, ptrs, 3);
  k.set(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, &ws);
  k.finalize(pack);
  if (!k.ok) fail("cuDNN could not describe a convolution's buffers");
  CUDNN_CHECK(cudnnBackendExecute(ctx().cudnn(), g.plan.d, pack.d));
}

// Whether an engine configuration may run a pass in dtype: float32 (here only with TF32
// allowed) takes tensor cores but not engines that convert its inputs to 16 bits.
bool keeps_precision(cudnnBackendDescriptor_t config, DType dtype) {
  if (dtype != DType::f32) return true;
  BackendDesc engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  int64_t n = 0;
  cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
  if (!engine.d ||
      cudnnBackendGetAttribute(config, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                               1, &n, &engine.d) != CUDNN_STATUS_SUCCESS ||
      cudnnBackendGetAttribute(engine.d, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
                               CUDNN_TYPE_NUMERICAL_NOTE, CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n,
                               notes) != CUDNN_STATUS_SUCCESS)
    return false;
  for (int64_t i = 0; i < n; ++i)
    if (notes[i] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS) return false;
  return true;
}

// The fastest of cuDNN's heuristic candidates for a 16-bit or TF32 pass over p, timed on the op's
// own buffers (as PyTorch's benchmark mode does), or nothing when no candidate builds. align: the
// bytes every buffer's address is a multiple of.
std::unique_ptr<GraphPlan> graph_plan(Pass pass, const Problem& p, int64_t align, const void* a,
                                      const void* b, void* o) {
  cudnnHandle_t h = ctx().cudnn();
  Builder k;
  // Tensors by uid: a, b, o of the pass, each [N, C, *] or [O, C/G, *] in cuDNN's dim order.
  const std::vector<int>* dims[3] = {&p.x, &p.w, &p.y};      // forward: x, w, y
  if (pass == Pass::data) dims[0] = &p.y, dims[2] = &p.x;    // dy, w, dx
  if (pass == Pass::filter) dims[1] = &p.y, dims[2] = &p.w;  // x, dy, dw
  const cudnnDataType_t type = cudnn_type(p.dtype);
  std::vector<BackendDesc> tensors;
  for (int i = 0; i < 3; ++i) {
    const std::vector<int>& d = *dims[i];
    const std::vector<int64_t> shape(d.begin(), d.end()), strides = strides_of(d, p.nhwc);
    tensors.emplace_back(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const BackendDesc& t = tensors.back();
    k.set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, &type);
    k.set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, shape.data(),
          static_cast<int64_t>(shape.size()));
    k.set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, strides.data(),
          static_cast<int64_t>(strides.size()));
    k.set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, &kUids[i]);
    k.set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, &align);
    k.finalize(t);
  }
  BackendDesc conv(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  const int64_t spatial = p.nd;
  const std::vector<int64_t> pad(p.pad.begin(), p.pad.end()),
      stride(p.stride.begin(), p.stride.end()), dil(p.dil.begin(), p.dil.end());
  k.set(conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, &compute);
  k.set(conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, &mode);
  k.set(conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, &spatial);
  k.set(conv, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, dil.data(), spatial);
  k.set(conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, stride.data(), spatial);
  k.set(conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, pad.data(), spatial);
  k.set(conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, pad.data(), spatial);
  k.finalize(conv);
  const float one = 1, zero = 0;
  auto op_desc = [&](cudnnBackendDescriptorType_t type, cudnnBackendAttributeName_t alpha,
                     cudnnBackendAttributeName_t beta, cudnnBackendAttributeName_t conv_attr,
                     std::array<cudnnBackendAttributeName_t, 3> uses) {
    BackendDesc op(type);
    for (int i = 0; i < 3; ++i)
      k.set(op, uses[static_cast<size_t>(i)], tensors[static_cast<size_t>(i)]);
    k.set(op, conv_attr, conv);
    k.set(op, alpha, CUDNN_TYPE_FLOAT, &one);
    k.set(op, beta, CUDNN_TYPE_FLOAT, &zero);
    k.finalize(op);
    return op;
  };
  BackendDesc op =
      pass == Pass::forward ? op_desc(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
                                      CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
                                      CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA,
                                      CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
                                      {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
                                       CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
                                       CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y})
      : pass == Pass::data  ? op_desc(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
                                      CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
                                      CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA,
                                      CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
                                      {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY,
                                       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
                                       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX})
                           : op_desc(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
                                     CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA,
                                     CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA,
                                     CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
                                     {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X,
                                      CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY,
                                      CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW});
  BackendDesc graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  k.set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, op);
  k.set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, &h);
  k.finalize(graph);
  BackendDesc heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  const cudnnBackendHeurMode_t heur_mode = CUDNN_HEUR_MODE_A;
  k.set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph);
  k.set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, &heur_mode);
  k.finalize(heur);
  int64_t count = 0;
  if (!k.ok ||
      cudnnBackendGetAttribute(heur.d, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                               0, &count, nullptr) != CUDNN_STATUS_SUCCESS ||
      count <= 0)
    return nullptr;
  std::vector<BackendDesc> configs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < count; ++i) {
    configs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    raw.push_back(configs.back().d);
  }
  if (cudnnBackendGetAttribute(heur.d, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                               count, &count, raw.data()) != CUDNN_STATUS_SUCCESS)
    return nullptr;
  // Time the first few candidates that build: the heuristics' order is close, not exact.
  constexpr int kCandidates = 6;
  constexpr int64_t kMaxWorkspace = int64_t{1} << 30;
  std::unique_ptr<GraphPlan> best;
  int tried = 0;
  for (int64_t i = 0; i < count && tried < kCandidates; ++i) {
    if (!keeps_precision(raw[static_cast<size_t>(i)], p.dtype)) continue;
    auto g = std::make_unique<GraphPlan>();
    Builder pk;
    pk.set(g->plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, &h);
    pk.set(g->plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR,
           &raw[static_cast<size_t>(i)]);
    pk.finalize(g->plan);
    int64_t n = 0;
    if (!pk.ok ||
        cudnnBackendGetAttribute(g->plan.d, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                 CUDNN_TYPE_INT64, 1, &n, &g->workspace) != CUDNN_STATUS_SUCCESS ||
        g->workspace > kMaxWorkspace)
      continue;
    ++tried;
    float ms = 0;
    try {
      ms = gpu_ms([&] { execute(*g, a, b, o); });
    } catch (const Error&) {
      continue;  // a candidate that fails to run (out of workspace memory, say) is skipped
    }
    if (!best || ms < best->ms) {
      g->ms = ms;
      best = std::move(g);
    }
  }
  return best;
}

// How one pass over one problem runs: through cuDNN (with descriptors built once), as a GEMM, or
// (forward only) as one direct kernel.
struct Plan {
  std::optional<Direct> direct;
  std::optional<FilterSums> filter_sums;
  std::optional<Geom> gemm;
  int split = 1;
  std::unique_ptr<LtGemm> lt;  // the GEMM path's product
  Choice cudnn;
  std::unique_ptr<Descs> descs;
  std::unique_ptr<GraphPlan> graph;  // 16-bit and TF32 passes through cuDNN's graph API
};

std::mutex plans_mutex;
std::map<std::vector<int64_t>, Plan> plans;  // never erased: references stay valid

std::vector<int64_t> plan_key(Pass pass, const Problem& p) {
  std::vector<int64_t> k{static_cast<int64_t>(pass),
                         ctx().device,
                         static_cast<int64_t>(p.dtype),
                         tf32_enabled() ? 1 : 0,
                         p.nd,
                         p.groups,
                         p.nhwc ? 1 : 0};
  for (const auto* v : {&p.x, &p.w, &p.y, &p.stride, &p.pad, &p.dil})
    k.insert(k.end(), v->begin(), v->end());
  return k;
}

// The plan for a pass, chosen on first use: the direct kernel for small forward passes; the
// GEMM path for other small problems where it applies; for large ones cuDNN's measured best, unless
// the GEMM path is faster. Both are timed here the same way (cuDNN's own timings of its algorithms
// proved too optimistic to compare against).
const Plan& plan_for(Pass pass, const Problem& p, const void* a, const void* b, void* o) {
  std::vector<int64_t> key = plan_key(pass, p);
  // The graph API's plans hold for buffers aligned as the ones they were built for.
  const bool use_graph =
      p.dtype == DType::f16 || p.dtype == DType::bf16 || (p.dtype == DType::f32 && tf32_enabled());
  int64_t align = 16;
  for (const void* ptr : {a, b, static_cast<const void*>(o)})
    while (reinterpret_cast<uintptr_t>(ptr) % static_cast<uintptr_t>(align)) align /= 2;
  if (use_graph) key.push_back(align);
  {
    std::lock_guard lock(plans_mutex);
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
  }
  Plan plan;
  // The GEMM and direct paths read the usual layout.
  const std::optional<Geom> g = p.nhwc ? std::nullopt : gemm_geometry(p);
  float gemm_ms = -1, cudnn_ms = -1;
  if (pass == Pass::forward && !p.nhwc) plan.direct = direct_launch(p, kDirectMaxOutputs);
  if (plan.direct) {
    // One kernel: nothing to build or time.
  } else if (g && p.flops < kMeasureFlops) {
    plan.lt = std::make_unique<LtGemm>();
    plan.gemm = g;
  } else {
    // cuDNN's arguments by pass: forward (x, w, y), data (dy, w, dx), filter (x, dy, dw).
    if (use_graph) plan.graph = graph_plan(pass, p, align, a, b, o);
    if (plan.graph) cudnn_ms = plan.graph->ms;
    std::optional<Choice> c;
    if (!plan.graph) {
      plan.descs = std::make_unique<Descs>(p);
      c = choose(pass, p, *plan.descs, a, b, o);
      if (!c && !g) fail("cuDNN has no ", dtype_name(p.dtype), " algorithm for this convolution");
      if (c) plan.cudnn = *c;
    }
    if (g) {
      // The GEMM path at each split it allows, each with its own tuned product.
      const std::vector<int> splits = visit_float(
          p.dtype, "conv", [&](auto tag) { return splits_for<decltype(tag)>(pass, *g); });
      for (int split : splits) {
        auto lt = std::make_unique<LtGemm>();
        const float ms = gpu_ms([&] { run_gemm(pass, *g, split, *lt, p.dtype, a, b, o, nullptr); });
        if (gemm_ms < 0 || ms < gemm_ms) {
          gemm_ms = ms;
          plan.split = split;
          plan.lt = std::move(lt);
        }
      }
      if (c) cudnn_ms = gpu_ms([&] { run_cudnn(pass, *plan.descs, *c, p.dtype, a, b, o); });
      if (cudnn_ms < 0 || gemm_ms < cudnn_ms) {
        plan.gemm = g;
        plan.descs.reset();
        plan.graph.reset();
      } else {
        plan.lt.reset();
      }
    }
    // Own kernels where they apply, against whichever won above (which still has its bias pass
    // to come, where the direct forward kernel adds the bias as it stores). CRISP_CONV_DIRECT=1
    // takes them wherever they apply: how the tests reach them.
    auto consider = [&](const char* what, auto&& run, auto&& take) {
      const float ms = gpu_ms(run);
      const float best = plan.gemm ? gemm_ms : cudnn_ms;
      if (best < 0 || ms < best || std::getenv("CRISP_CONV_DIRECT")) {
        plan = Plan{};
        take();
      }
      if (std::getenv("CRISP_PROFILE"))
        std::fprintf(stderr, "crisp conv plan: %s %.1f us\n", what, ms * 1e3);
    };
    if (pass == Pass::forward && !p.nhwc)
      if (const auto d = direct_launch(p, std::numeric_limits<int64_t>::max()))
        consider(
            "forward direct kernel", [&] { run_direct(*d, p.dtype, a, b, nullptr, o); },
            [&] { plan.direct = d; });
    if (pass == Pass::filter && !p.nhwc)
      if (const auto f = filter_sums_launch(p))
        consider(
            "filter direct sums", [&] { run_filter_sums(*f, p.dtype, a, b, o); },
            [&] { plan.filter_sums = f; });
  }
  if (std::getenv("CRISP_PROFILE")) {
    static const char* names[] = {"forward", "data", "filter"};
    std::fprintf(stderr,
                 "crisp conv plan: %s x[%d,%d,%d,%d] w[%d,%d,%d,%d] %s%s -> %s (gemm %.1f us in "
                 "%d parts, cudnn %.1f us; cudnn algo %d math %d, %.1f us by its own timing)\n",
                 names[static_cast<int>(pass)], p.x[0], p.x[1], p.x[2], p.x[3], p.w[0], p.w[1],
                 p.w[2], p.w[3], std::string(dtype_name(p.dtype)).c_str(),
                 p.nhwc ? " channels-last" : "",
                 plan.direct        ? "direct"
                 : plan.filter_sums ? "direct sums"
                 : plan.gemm        ? "gemm"
                 : plan.graph       ? "cudnn graph"
                                    : "cudnn",
                 gemm_ms * 1e3, plan.split, cudnn_ms * 1e3, plan.cudnn.algo,
                 static_cast<int>(plan.cudnn.math), plan.cudnn.find_ms * 1e3);
  }
  std::lock_guard lock(plans_mutex);
  return plans.emplace(std::move(key), std::move(plan)).first->second;
}

// y[n, c, *] += bias[c] over an output [N, Ch, P].
template <class T>
__global__ void add_bias_kernel(int64_t n, T* y, const T* bias, int64_t ch, int64_t plane) {
  CRISP_GRID_STRIDE(i, n) {
    const int64_t c = (i / plane) % ch;
    y[i] = convert<T>(load(y[i]) + load(bias[c]));
  }
}

// y is [N, Ch, *], or stored channels-last [N, *, Ch].
void add_bias(const Array& y, const Array& bias, bool channels_last) {
  const int64_t n = y.numel();
  if (n == 0) return;
  Buffer keep;
  const Array b = contiguous(bias, keep);
  const int64_t ch = channels_last ? y.shape.back() : y.shape[1];
  const int64_t plane = channels_last ? 1 : n / (y.shape[0] * ch);
  visit_float(y.dtype, "conv", [&](auto tag) {
    using T = decltype(tag);
    add_bias_kernel<T>
        <<<grid_for(n), kBlock, 0, ctx().stream>>>(n, y.data<T>(), b.data<T>(), ch, plane);
    CUDA_LAUNCH_CHECK();
  });
}

void check_dtype(const Op& op, DType d) {
  if (!is_floating(d)) unsupported(op, d);
}

// a [N, C, *] stored channels-last: a itself when it is, else a copy in keep (seen as [N, C, *]).
Array channels_last(const Array& a, Buffer& keep) {
  return permuted(channels_last_storage(a, keep), channels_first_order(a.ndim()));
}

}  // namespace

// conv, conv_backward_input, conv_backward_weight (op_kinds.inc describes their ints).
void conv_family(const Op& op, In in, Out out) {
  const Array& o = out[0];
  check_dtype(op, o.dtype);
  if (o.numel() == 0) return;
  const bool has_bias = op.kind != OpKind::conv_backward_weight && in.size() > 2;
  // An empty input leaves nothing to sum: the output is zero (plus the bias).
  if (in[0].numel() == 0 || in[1].numel() == 0) {
    CUDA_CHECK(cudaMemsetAsync(o.raw(), 0, static_cast<size_t>(o.numel()) * itemsize(o.dtype),
                               ctx().stream));
    if (has_bias) add_bias(o, in[2], stores_channels_last(op));
    return;
  }
  Buffer keep0, keep1, keep2;
  const bool cl = stores_channels_last(op);
  if (cl && o.shape.size() != 4) fail("channels-last convolutions are 2-d");
  if (cl && o.dtype == DType::f64) {
    // cuDNN has no float64 kernels for this layout: computed as usual, then permuted into place.
    Op plain = op;
    plain.ints.back() = 0;
    const Buffer tmp(static_cast<size_t>(o.numel()) * itemsize(o.dtype));
    const Shape shape = permuted(o, channels_first_order(4)).shape;
    Array logical{std::make_shared<Storage>(tmp.get(), 0, nullptr), shape,
                  contiguous_strides(shape), 0, o.dtype};
    conv_family(plain, in, std::span<Array>(&logical, 1));
    copy_to_contiguous(permuted(logical, channels_last_order(4)), o);
    return;
  }
  const Array a = cl ? channels_last(in[0], keep0) : contiguous(in[0], keep0);
  const Array b = cl ? channels_last(in[1], keep1) : contiguous(in[1], keep1);
  // The output's dims in [N, C, *] order, wherever it is stored.
  const Shape os = cl ? permuted(o, channels_first_order(4)).shape : o.shape;
  const DType dt = o.dtype;
  // Shapes by pass: forward a = x, b = w, o = y; data a = dy, b = w, o = dx; filter a = x,
  // b = dy, o = dw.
  Pass pass = Pass::forward;
  Problem p;
  switch (op.kind) {
    case OpKind::conv:
      p = problem(op, a.shape, b.shape, os, dt);
      break;
    case OpKind::conv_backward_input:
      pass = Pass::data;
      p = problem(op, os, b.shape, a.shape, dt);
      break;
    case OpKind::conv_backward_weight:
      pass = Pass::filter;
      p = problem(op, a.shape, os, b.shape, dt);
      break;
    default:
      unsupported(op, dt);
  }
  const Plan& plan = plan_for(pass, p, a.raw(), b.raw(), o.raw());
  if (plan.direct) {
    run_direct(*plan.direct, dt, a.raw(), b.raw(),
               has_bias ? contiguous(in[2], keep2).raw() : nullptr, o.raw());
    return;
  }
  if (plan.filter_sums) return run_filter_sums(*plan.filter_sums, dt, a.raw(), b.raw(), o.raw());
  if (plan.gemm) {
    // The forward pass adds the bias in its last kernel; a transposed convolution's afterwards.
    const bool fused = has_bias && pass == Pass::forward;
    run_gemm(pass, *plan.gemm, plan.split, *plan.lt, dt, a.raw(), b.raw(), o.raw(),
             fused ? contiguous(in[2], keep2).raw() : nullptr);
    if (has_bias && !fused) add_bias(o, in[2], false);
    return;
  }
  if (plan.graph)
    execute(*plan.graph, a.raw(), b.raw(), o.raw());
  else
    run_cudnn(pass, *plan.descs, plan.cudnn, dt, a.raw(), b.raw(), o.raw());
  if (has_bias) add_bias(o, in[2], cl);
}

}  // namespace crisp::cuda
