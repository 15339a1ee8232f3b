// CUDA convolutions as one cuBLASLt GEMM over unrolled windows (im2col), with the kernels that
// unroll, fold back (col2im), transpose and sum the split products.
#include <algorithm>
#include <vector>

#include "cuda/conv/conv.cuh"

namespace crisp::cuda::conv {

// Each output position's input window, unrolled into a row of a matrix, turns a convolution
// into one cuBLASLt GEMM. Small problems (a classifier CNN at inference, one image) take this
// path: three short launches, against 30-60 us of host time per cuDNN call. Large ones time it,
// at several splits of the product's inner dimension, against cuDNN's best and keep the faster.

namespace {

// Elements of the largest matrix the GEMM path builds (bounding scratch memory and indices).
constexpr int64_t kMaxUnrolled = int64_t{1} << 26;
// What row_stride rounds rows up to.
constexpr int64_t kRowBytes = 128;

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
  launch<transpose_kernel<T>>(grid, dim3(kTile, 8), 0, ctx().stream, in, out,
                              static_cast<int>(rows), static_cast<int>(cols),
                              static_cast<int>(col_tiles), bias, parts, part_size);
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
    launch_items<pad_rows_kernel<T>>(total, b, w_copy.as<T>(), DivBy<int>(ld),
                                     static_cast<int>(taps));
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
      launch_items<col2im_kernel<T>>(total, dcols.as<T>(), o, u, split, rows * ld);
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
        launch_items<sum_parts_kernel<T>>(total, dw, static_cast<int>(ld), split, g.o * ld, o,
                                          DivBy<int>(taps));
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

}  // namespace

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

std::vector<int> gemm_splits(Pass pass, const Geom& g, DType dt) {
  return visit_float(dt, "conv", [&](auto tag) { return splits_for<decltype(tag)>(pass, g); });
}

void run_gemm(Pass pass, const Geom& g, int split, LtGemm& gemm, DType dt, const void* a,
              const void* b, void* o, const void* bias) {
  visit_float(dt, "conv",
              [&](auto tag) { gemm_conv<decltype(tag)>(pass, g, split, gemm, a, b, o, bias); });
}

}  // namespace crisp::cuda::conv
