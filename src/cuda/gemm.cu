// The products of gemm.cuh: cuBLASLt with a timed algorithm, and the 3xTF32 kernel.
#include "cuda/gemm.cuh"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "cuda/dtype.cuh"
#include "cuda/launch.cuh"

namespace crisp::cuda {

// ---- 3xTF32 ----

namespace {

// k elements per pipeline stage, and stages in flight (copies run two stages ahead of the math).
constexpr int kBK = 16, kStages = 3;

__device__ __forceinline__ void cp_async16(float* dst, const float* src, bool valid) {
  // With a source size of 0 nothing is read and the 16 bytes are zero-filled.
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
                   static_cast<uint32_t>(__cvta_generic_to_shared(dst))),
               "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// x rounded to TF32's 10 significand bits, to nearest with ties away from zero: half a TF32 step
// added to the magnitude, the 13 low bits dropped. This is cvt.rna.tf32.f32 for finite x in two
// integer instructions, where the cvt's own check for infinities and NaN costs two more; the
// product loop issues 24 of these splits per 48 tensor-core products, so their count sets its
// speed. An infinity stays infinite; a NaN may become an infinity, whose low part is then NaN.
__device__ __forceinline__ uint32_t tf32(float x) {
  return (__float_as_uint(x) + 0x1000u) & 0xffffe000u;
}

// x = hi + lo, both rounded to TF32's 10 significand bits: 22 of x's 24 bits. (Truncating
// instead, as the tensor cores do with a raw float, leaves errors 16 times larger.) An infinite
// or NaN x gets a NaN low part, so its products are NaN where float32's would be infinite.
__device__ __forceinline__ void split(float x, uint32_t& hi, uint32_t& lo) {
  hi = tf32(x);
  lo = tf32(x - __uint_as_float(hi));
}

// d += a b for a 16x8 tile over k = 8, in the fragment layouts of PTX's mma.m16n8k8.
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Copies the [ROWS, COLS] tile at (r0, c0) of a row-major [rows, cols] matrix (row stride ld)
// into shared memory with row stride dst_ld, zero-filling past the matrix's edges. cols is a
// multiple of 4, so each 16-byte chunk is wholly inside or outside. The trip count is fixed, so
// the loop unrolls; indices are 32-bit (tf32x3_fits checks the extents), as the copies' index
// arithmetic is a good part of the loop's instructions.
template <int ROWS, int COLS, int THREADS>
__device__ __forceinline__ void load_tile(float* dst, int dst_ld, const float* src, int64_t ld,
                                          int r0, int c0, int rows, int cols) {
  constexpr int kChunks = ROWS * COLS / 4;
  static_assert(kChunks % THREADS == 0, "every thread copies the same number of chunks");
#pragma unroll
  for (int it = 0; it < kChunks / THREADS; ++it) {
    const int i = it * THREADS + static_cast<int>(threadIdx.x);
    const int r = r0 + i / (COLS / 4), c = c0 + i % (COLS / 4) * 4;
    const bool ok = r < rows && c < cols;
    cp_async16(dst + (r - r0) * dst_ld + (c - c0), ok ? src + r * ld + c : src, ok);
  }
}

// Block tile BM x BN, warps of 64x32 each (per 8 k: 24 splits feed 48 tensor-core products). Shared
// layouts: an operand whose k runs along memory keeps rows of kBK floats (+4), else rows of k of BM
// or BN floats (+8); both paddings make the fragment reads free of bank conflicts.
template <int BM, int BN, bool TA, bool TB>
struct Tile {
  static constexpr int kWarpsN = BN / 32, kThreads = BM / 64 * kWarpsN * 32;
  static constexpr int kALd = TA ? BM + 8 : kBK + 4, kBLd = TB ? kBK + 4 : BN + 8;
  static constexpr int kAElems = TA ? kBK * kALd : BM * kALd;
  static constexpr int kBElems = TB ? BN * kBLd : kBK * kBLd;
  static constexpr int kStageElems = kAElems + kBElems;
  static constexpr size_t kSmem = size_t{kStages} * kStageElems * sizeof(float);
  static_assert(kSmem <= 48 * 1024, "static shared-memory limit");
};

// Split-K: blockIdx.z covers sh.batch products times `splits` ranges of k, each kchunk long (a
// multiple of kBK). With one range the block writes c; with several, each range writes its own
// [m, n] slice of `partial` (z-th slice for blockIdx.z), summed into c by sum_splits.
template <int BM, int BN, bool TA, bool TB>
__global__ void __launch_bounds__(Tile<BM, BN, TA, TB>::kThreads, 3)  // 3 blocks per SM
    tf32x3_kernel(GemmShape sh, const float* __restrict__ a, const float* __restrict__ b,
                  float* __restrict__ c, int splits, int64_t kchunk, float* __restrict__ partial) {
  using L = Tile<BM, BN, TA, TB>;
  extern __shared__ __align__(16) float smem[];
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;  // the fragment layouts' row group and column
  const int wm = warp / L::kWarpsN * 64, wn = warp % L::kWarpsN * 32;
  const int m0 = static_cast<int>(blockIdx.y) * BM, n0 = static_cast<int>(blockIdx.x) * BN;
  const int m = static_cast<int>(sh.m), n = static_cast<int>(sh.n);
  const int64_t product = blockIdx.z / splits, range = blockIdx.z % splits;
  const int kbegin = static_cast<int>(range * kchunk);
  const int kend = static_cast<int>(std::min(sh.k, kbegin + kchunk));
  a += product * sh.sa;
  b += product * sh.sb;
  int64_t ldc = sh.ldc;
  if (splits > 1) {
    c = partial + int64_t{blockIdx.z} * sh.m * sh.n;
    ldc = sh.n;
  } else {
    c += product * sh.sc;
  }

  auto load = [&](int stage, int k0) {
    float* as = smem + stage * L::kStageElems;
    float* bs = as + L::kAElems;
    if constexpr (TA)
      load_tile<kBK, BM, L::kThreads>(as, L::kALd, a, sh.lda, k0, m0, kend, m);
    else
      load_tile<BM, kBK, L::kThreads>(as, L::kALd, a, sh.lda, m0, k0, m, kend);
    if constexpr (TB)
      load_tile<BN, kBK, L::kThreads>(bs, L::kBLd, b, sh.ldb, n0, k0, n, kend);
    else
      load_tile<kBK, BN, L::kThreads>(bs, L::kBLd, b, sh.ldb, k0, n0, kend, n);
  };
  auto at_a = [](const float* as, int row, int k) {
    return TA ? as[k * L::kALd + row] : as[row * L::kALd + k];
  };
  auto at_b = [](const float* bs, int k, int col) {
    return TB ? bs[col * L::kBLd + k] : bs[k * L::kBLd + col];
  };

  float acc[4][4][4] = {};
  const int ktiles = (kend - kbegin + kBK - 1) / kBK;
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ktiles) load(s, kbegin + s * kBK);
    cp_async_commit();
  }
  for (int kt = 0; kt < ktiles; ++kt) {
    cp_async_wait<kStages - 2>();
    // Stage kt has landed for every thread, and every warp is done with stage kt - 1, which the
    // copies issued next overwrite.
    __syncthreads();
    const int next = kt + kStages - 1;
    if (next < ktiles) load(next % kStages, kbegin + next * kBK);
    cp_async_commit();
    const float* as = smem + (kt % kStages) * L::kStageElems;
    const float* bs = as + L::kAElems;
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 8) {
      uint32_t ah[4][4], al[4][4], bh[4][2], bl[4][2];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int row = wm + i * 16 + g;
        split(at_a(as, row, kk + t), ah[i][0], al[i][0]);
        split(at_a(as, row + 8, kk + t), ah[i][1], al[i][1]);
        split(at_a(as, row, kk + t + 4), ah[i][2], al[i][2]);
        split(at_a(as, row + 8, kk + t + 4), ah[i][3], al[i][3]);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int col = wn + j * 8 + g;
        split(at_b(bs, kk + t, col), bh[j][0], bl[j][0]);
        split(at_b(bs, kk + t + 4, col), bh[j][1], bl[j][1]);
      }
      // The small terms first, so the large one is added last.
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          mma(acc[i][j], al[i], bh[j]);
          mma(acc[i][j], ah[i], bl[j]);
          mma(acc[i][j], ah[i], bh[j]);
        }
    }
  }
  cp_async_wait<0>();
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = m0 + wm + i * 16 + g + (e / 2) * 8, col = n0 + wn + j * 8 + 2 * t + e % 2;
        if (r < m && col < n) c[r * ldc + col] = acc[i][j][e];
      }
}

// c = the sum of each product's `splits` slices of partial, in a fixed order (so results repeat).
__global__ void sum_splits(GemmShape sh, int splits, const float* __restrict__ partial,
                           float* __restrict__ c) {
  const int64_t mn = sh.m * sh.n;
  CRISP_GRID_STRIDE(e, mn * sh.batch) {
    const int64_t product = e / mn, i = e % mn;
    const float* p = partial + product * splits * mn + i;
    float sum = 0;
    for (int s = 0; s < splits; ++s) sum += p[s * mn];
    c[product * sh.sc + i / sh.n * sh.ldc + i % sh.n] = sum;
  }
}

template <int BM, int BN, bool TA, bool TB>
void launch_split(const GemmShape& sh, int splits, const float* a, const float* b, float* c) {
  using L = Tile<BM, BN, TA, TB>;
  const int64_t ktiles = (sh.k + kBK - 1) / kBK;
  const int64_t kchunk = (ktiles + splits - 1) / splits * kBK;
  splits = static_cast<int>((sh.k + kchunk - 1) / kchunk);  // no empty ranges
  float* partial = nullptr;
  if (splits > 1)
    partial = static_cast<float*>(
        ctx().workspace(static_cast<size_t>(splits) * sh.batch * sh.m * sh.n * sizeof(float)));
  const dim3 grid(static_cast<unsigned>((sh.n + BN - 1) / BN),
                  static_cast<unsigned>((sh.m + BM - 1) / BM),
                  static_cast<unsigned>(sh.batch * splits));
  launch<tf32x3_kernel<BM, BN, TA, TB>>(grid, L::kThreads, L::kSmem, ctx().stream, sh, a, b, c,
                                        splits, kchunk, partial);
  if (splits > 1) {
    launch<sum_splits>(grid_for(sh.m * sh.n * sh.batch), kBlock, 0, ctx().stream, sh, splits,
                       partial, c);
  }
}

template <int BM, int BN>
void launch_tile(const GemmShape& sh, int splits, const float* a, const float* b, float* c) {
  if (sh.ta)
    sh.tb ? launch_split<BM, BN, true, true>(sh, splits, a, b, c)
          : launch_split<BM, BN, true, false>(sh, splits, a, b, c);
  else
    sh.tb ? launch_split<BM, BN, false, true>(sh, splits, a, b, c)
          : launch_split<BM, BN, false, false>(sh, splits, a, b, c);
}

constexpr int kTileRows[kTf32x3Tiles] = {128, 64, 64}, kTileCols[kTf32x3Tiles] = {64, 128, 64};

}  // namespace

bool tf32x3_fits(const GemmShape& sh, const void* a, const void* b) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  // The extent along each operand's rows in memory.
  const int64_t a_cols = sh.ta ? sh.m : sh.k, b_cols = sh.tb ? sh.k : sh.n;
  return sh.m > 0 && sh.n > 0 && sh.k > 0 && aligned(a) && aligned(b) && a_cols % 4 == 0 &&
         b_cols % 4 == 0 && sh.lda % 4 == 0 && sh.ldb % 4 == 0 && sh.sa % 4 == 0 &&
         sh.sb % 4 == 0 && (sh.m + 63) / 64 <= 65535 && sh.batch * kTf32x3MaxSplits <= 65535 &&
         std::max({sh.m, sh.n, sh.k}) < (int64_t{1} << 30);
}

int tf32x3_splits(int tile, const GemmShape& sh) {
  const int64_t blocks = (sh.m + kTileRows[tile] - 1) / kTileRows[tile] *
                         ((sh.n + kTileCols[tile] - 1) / kTileCols[tile]) * sh.batch;
  // Three blocks fit on an SM (registers and shared memory), and a product wants them all busy;
  // each range of k keeps at least four stages, to amortize the pipeline's fill.
  const int64_t want = int64_t{ctx().sm_count > 0 ? ctx().sm_count : 132} * 3;
  const int64_t most = std::max<int64_t>(1, (sh.k + 4 * kBK - 1) / (4 * kBK));
  return static_cast<int>(std::clamp<int64_t>((want + blocks - 1) / blocks, 1,
                                              std::min<int64_t>(most, kTf32x3MaxSplits)));
}

void tf32x3_gemm(int tile, int splits, const GemmShape& sh, const float* a, const float* b,
                 float* c) {
  switch (tile) {
    case 0:
      return launch_tile<kTileRows[0], kTileCols[0]>(sh, splits, a, b, c);
    case 1:
      return launch_tile<kTileRows[1], kTileCols[1]>(sh, splits, a, b, c);
    default:
      return launch_tile<kTileRows[2], kTileCols[2]>(sh, splits, a, b, c);
  }
}

// ---- 3xTF32 through cuBLASLt's TF32 kernels ----
// The same three products per term as one TF32 product over 3k: a' = [a_hi | a_hi | a_lo] and
// b' = [b_hi | b_lo | b_hi] along k, each part exact in TF32, so cuBLASLt's tensor-core kernels
// (wgmma on Hopper, where the kernel above has mma.sync) sum a_hi b_hi + a_hi b_lo + a_lo b_hi in
// float32. The operands are first written out split, three times their size: this pays where the
// product is large against its operands (a convolution's unrolled matrix times its weights).

namespace {

// dst[batch, r, part * k + c] for the rows x k matrix src[batch] (element (r, c) at r * rs +
// c * cs; one of rs and cs is 1): parts hi, hi, lo (lo_last) or hi, lo, hi of each element.
// 32 x 32 tiles through shared memory, so both the reads and the writes are contiguous.
__global__ void split_parts_kernel(const float* __restrict__ src, int64_t rows, int64_t k,
                                   int64_t rs, int64_t cs, int64_t batch_stride, bool lo_last,
                                   float* __restrict__ dst) {
  __shared__ float tile[32][33];
  const int64_t r0 = int64_t{blockIdx.y} * 32, c0 = int64_t{blockIdx.x} * 32;
  src += int64_t{blockIdx.z} * batch_stride;
  dst += int64_t{blockIdx.z} * rows * 3 * k;
  for (int i = static_cast<int>(threadIdx.y); i < 32; i += static_cast<int>(blockDim.y)) {
    const int ri = cs == 1 ? i : static_cast<int>(threadIdx.x);
    const int ci = cs == 1 ? static_cast<int>(threadIdx.x) : i;
    if (r0 + ri < rows && c0 + ci < k) tile[ri][ci] = src[(r0 + ri) * rs + (c0 + ci) * cs];
  }
  __syncthreads();
  for (int i = static_cast<int>(threadIdx.y); i < 32; i += static_cast<int>(blockDim.y)) {
    const int64_t r = r0 + i, col = c0 + threadIdx.x;
    if (r >= rows || col >= k) continue;
    uint32_t hi, lo;
    split(tile[i][threadIdx.x], hi, lo);
    float* d = dst + r * 3 * k + col;
    d[0] = __uint_as_float(hi);
    d[k] = __uint_as_float(lo_last ? hi : lo);
    d[2 * k] = __uint_as_float(lo_last ? lo : hi);
  }
}

// The same for rows of k contiguous, 16-byte aligned floats (k a multiple of 4): four elements
// per thread, read and written as packs (the tile kernel reaches about 60% of the bandwidth).
__global__ void split_rows_kernel(const float* __restrict__ src, int64_t k, int64_t rs,
                                  int64_t batch_stride, bool lo_last, float* __restrict__ dst) {
  const int64_t c = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) * 4;
  if (c >= k) return;
  const int64_t r = blockIdx.y, rows = gridDim.y;
  const float4 x = *reinterpret_cast<const float4*>(src + blockIdx.z * batch_stride + r * rs + c);
  uint4 h, l;
  split(x.x, h.x, l.x);
  split(x.y, h.y, l.y);
  split(x.z, h.z, l.z);
  split(x.w, h.w, l.w);
  auto floats = [](uint4 v) {
    return make_float4(__uint_as_float(v.x), __uint_as_float(v.y), __uint_as_float(v.z),
                       __uint_as_float(v.w));
  };
  const float4 hi = floats(h), lo = floats(l);
  float* d = dst + (int64_t{blockIdx.z} * rows + r) * 3 * k + c;
  *reinterpret_cast<float4*>(d) = hi;
  *reinterpret_cast<float4*>(d + k) = lo_last ? hi : lo;
  *reinterpret_cast<float4*>(d + 2 * k) = lo_last ? lo : hi;
}

void split_parts(const float* src, int64_t rows, int64_t k, int64_t rs, int64_t cs,
                 int64_t batch_stride, int batch, bool lo_last, float* dst) {
  if (cs == 1 && k % 4 == 0 && rs % 4 == 0 && batch_stride % 4 == 0 &&
      reinterpret_cast<uintptr_t>(src) % 16 == 0 && rows <= 65535) {
    const dim3 grid(static_cast<unsigned>((k / 4 + kBlock - 1) / kBlock),
                    static_cast<unsigned>(rows), static_cast<unsigned>(batch));
    launch<split_rows_kernel>(grid, kBlock, 0, ctx().stream, src, k, rs, batch_stride, lo_last,
                              dst);
    return;
  }
  const dim3 grid(static_cast<unsigned>((k + 31) / 32), static_cast<unsigned>((rows + 31) / 32),
                  static_cast<unsigned>(batch));
  launch<split_parts_kernel>(grid, dim3(32, 8), 0, ctx().stream, src, rows, k, rs, cs, batch_stride,
                             lo_last, dst);
}

// Whether the split operands of a product are worth trying (any_size: can be written): a large
// enough product, grids and buffers within bounds.
bool split_fits(const GemmShape& sh, bool any_size) {
  const double parts_bytes = 12.0 * static_cast<double>(sh.m + sh.n) * sh.k * sh.batch;
  return (any_size || sh.flops() >= 64 * kMeasureFlops) && parts_bytes <= double{1 << 30} &&
         (std::max(sh.m, sh.n) + 31) / 32 <= 65535 && sh.batch <= 65535;
}

}  // namespace

void LtGemm::run_split(const GemmShape& sh, const float* a, const float* b, float* c) {
  const int64_t k3 = 3 * sh.k;
  Buffer ap(static_cast<size_t>(sh.m * k3 * sh.batch) * sizeof(float)),
      bp(static_cast<size_t>(sh.n * k3 * sh.batch) * sizeof(float));
  // a as [m, k] and b as [n, k], wherever they are stored.
  split_parts(a, sh.m, sh.k, sh.ta ? 1 : sh.lda, sh.ta ? sh.lda : 1, sh.sa, sh.batch, true,
              ap.as<float>());
  split_parts(b, sh.n, sh.k, sh.tb ? sh.ldb : 1, sh.tb ? 1 : sh.ldb, sh.sb, sh.batch, false,
              bp.as<float>());
  split_->run(
      GemmShape{false, true, sh.m, sh.n, k3, k3, k3, sh.ldc, sh.batch, sh.m * k3, sh.n * k3, sh.sc},
      ap.as<const float>(), bp.as<const float>(), c);
}

// ---- cuBLASLt ----

LtGemm::~LtGemm() {
  if (desc_) cublasLtMatmulDescDestroy(desc_);
  for (cublasLtMatrixLayout_t l : {la_, lb_, lc_})
    if (l) cublasLtMatrixLayoutDestroy(l);
}

void LtGemm::call(const void* a, const void* b, void* c, const cublasLtMatmulAlgo_t& algo,
                  size_t workspace, bool dbl) {
  const float f1 = 1, f0 = 0;
  const double d1 = 1, d0 = 0;
  const void* one = dbl ? static_cast<const void*>(&d1) : &f1;
  const void* zero = dbl ? static_cast<const void*>(&d0) : &f0;
  void* ws = workspace ? ctx().workspace(workspace) : nullptr;
  CUBLAS_CHECK(cublasLtMatmul(ctx().cublaslt, desc_, one, b, la_, a, lb_, zero, c, lc_, c, lc_,
                              &algo, ws, workspace, ctx().stream));
}

template <class T>
void LtGemm::run(const GemmShape& sh, const T* a, const T* b, T* c) {
  constexpr bool dbl = std::is_same_v<T, double>;
  if (!desc_) {
    const auto [ta, tb, m, n, k, lda, ldb, ldc, batch, sa, sb, sc] = sh;
    BlasTypes t = blas_types<T>();
    if (tf32_parts_) t.compute = CUBLAS_COMPUTE_32F_FAST_TF32;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc_, t.compute, dbl ? CUDA_R_64F : CUDA_R_32F));
    const cublasOperation_t op_b = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t op_a = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &op_b, sizeof(op_b)));
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSB, &op_a, sizeof(op_a)));
    auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la_, t.data, u(tb ? k : n), u(tb ? n : k), ldb));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb_, t.data, u(ta ? m : k), u(ta ? k : m), lda));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lc_, t.data, u(n), u(m), ldc));
    if (batch > 1) {
      const std::pair<cublasLtMatrixLayout_t, int64_t> strides[] = {
          {la_, sb}, {lb_, sa}, {lc_, sc}};
      for (const auto& [layout, stride] : strides) {
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                      &batch, sizeof(batch)));
        CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
            layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
      }
    }
    cublasLtMatmulPreference_t pref = nullptr;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const size_t max_workspace = size_t{32} << 20;
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                         &max_workspace, sizeof(max_workspace));
    constexpr int kCandidates = 8;
    cublasLtMatmulHeuristicResult_t found[kCandidates] = {};
    int count = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx().cublaslt, desc_, la_, lb_, lc_,
                                                             lc_, pref, kCandidates, found, &count);
    cublasLtMatmulPreferenceDestroy(pref);
    if (st != CUBLAS_STATUS_SUCCESS || count == 0)
      fail("cuBLASLt has no algorithm for a ", m, "x", n, "x", k, " product");
    int best = 0;
    float best_ms = -1;
    if (sh.flops() >= kMeasureFlops) {
      for (int i = 0; i < count; ++i) {
        const float ms = gpu_ms([&] { call(a, b, c, found[i].algo, found[i].workspaceSize, dbl); });
        if (best_ms < 0 || ms < best_ms) {
          best = i;
          best_ms = ms;
        }
      }
    }
    algo_ = found[best].algo;
    workspace_ = found[best].workspaceSize;
    if constexpr (std::is_same_v<T, float>) {
      // CRISP_TF32X3_TILE=i (or i,s) gives every float32 product these kernels can read tile i
      // (in s ranges of k), and CRISP_TF32X3_TILE=split the split operands, untimed: how the
      // tests reach each kernel.
      const char* forced = std::getenv("CRISP_TF32X3_TILE");
      const bool candidates = !tf32_enabled() && !tf32_parts_;
      if (forced && candidates && std::string_view(forced) == "split") {
        if (split_fits(sh, true)) split_ = std::make_unique<LtGemm>(true);
      } else if (forced && candidates && tf32x3_fits(sh, a, b)) {
        tf32x3_tile_ = std::clamp(std::atoi(forced), 0, kTf32x3Tiles - 1);
        const char* comma = std::strchr(forced, ',');
        tf32x3_splits_ = comma ? std::clamp(std::atoi(comma + 1), 1, kTf32x3MaxSplits) : 1;
      } else if (best_ms >= 0 && candidates) {
        auto report = [&](const char* what, float ms) {
          if (std::getenv("CRISP_PROFILE"))
            std::fprintf(stderr, "crisp gemm plan: %lldx%lldx%lld%s%s %s %.1f us\n",
                         static_cast<long long>(m), static_cast<long long>(n),
                         static_cast<long long>(k), ta ? " a^T" : "", tb ? " b^T" : "", what,
                         ms * 1e3);
        };
        for (int tile = 0; tile < kTf32x3Tiles && tf32x3_fits(sh, a, b); ++tile) {
          const int filling = tf32x3_splits(tile, sh);
          // The ranges of k that fill the GPU, then (if that was more than one) a single range.
          for (int splits = filling;; splits = 1) {
            const float ms = gpu_ms([&] { tf32x3_gemm(tile, splits, sh, a, b, c); });
            if (ms < best_ms) {
              best_ms = ms;
              tf32x3_tile_ = tile;
              tf32x3_splits_ = splits;
            }
            report(("3xTF32 tile " + std::to_string(tile) + " in " + std::to_string(splits) +
                    " parts of k")
                       .c_str(),
                   ms);
            if (splits == 1) break;
          }
        }
        if (split_fits(sh, false)) {
          split_ = std::make_unique<LtGemm>(true);
          const float ms = gpu_ms([&] { run_split(sh, a, b, c); });
          report("TF32 over split parts", ms);
          if (ms < best_ms) {
            best_ms = ms;
            tf32x3_tile_ = -1;
          } else {
            split_.reset();
          }
        }
      }
    }
    if (best_ms >= 0 && std::getenv("CRISP_PROFILE"))
      std::fprintf(stderr, "crisp gemm plan: %lldx%lldx%lld%s%s batch %d -> %s (%.1f us)\n",
                   static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k),
                   ta ? " a^T" : "", tb ? " b^T" : "", batch,
                   split_              ? "TF32 over split parts"
                   : tf32x3_tile_ >= 0 ? "3xTF32"
                                       : "cuBLASLt",
                   best_ms * 1e3);
  }
  if constexpr (std::is_same_v<T, float>) {
    // Operands of a later call may sit elsewhere; cuBLASLt takes any that these kernels can't.
    if (split_) return run_split(sh, a, b, c);
    if (tf32x3_tile_ >= 0 && tf32x3_fits(sh, a, b))
      return tf32x3_gemm(tf32x3_tile_, tf32x3_splits_, sh, a, b, c);
  }
  call(a, b, c, algo_, workspace_, dbl);
}

template void LtGemm::run(const GemmShape&, const float*, const float*, float*);
template void LtGemm::run(const GemmShape&, const double*, const double*, double*);
template void LtGemm::run(const GemmShape&, const __half*, const __half*, __half*);
template void LtGemm::run(const GemmShape&, const __nv_bfloat16*, const __nv_bfloat16*,
                          __nv_bfloat16*);

}  // namespace crisp::cuda
