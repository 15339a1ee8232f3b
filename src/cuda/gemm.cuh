// Matrix products for the convolutions' GEMM path: cuBLASLt with its algorithm timed on first
// use, and for float32 a product on the tensor cores that keeps float32's accuracy (3xTF32),
// timed against cuBLASLt's candidates.
#pragma once

#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>

#include "cuda/context.cuh"
#include "cuda/errors.cuh"
#include "cuda/families.cuh"

namespace crisp::cuda {

// Products (and convolutions) of at least this many flops are worth timing their candidate
// algorithms for; smaller ones take the library's first guess.
constexpr double kMeasureFlops = double{1 << 24};

// A CUDA event, destroyed with its owner.
struct Event {
  cudaEvent_t e = nullptr;
  Event() { CUDA_CHECK(cudaEventCreate(&e)); }
  ~Event() { cudaEventDestroy(e); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};

// GPU time of run() in ms: the better of two runs after a warm-up.
template <class F>
float gpu_ms(F&& run) {
  const cudaStream_t s = ctx().stream;
  Event start, stop;
  run();
  float best = 0;
  for (int i = 0; i < 2; ++i) {
    CUDA_CHECK(cudaEventRecord(start.e, s));
    run();
    CUDA_CHECK(cudaEventRecord(stop.e, s));
    CUDA_CHECK(cudaEventSynchronize(stop.e));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start.e, stop.e));
    if (i == 0 || ms < best) best = ms;
  }
  return best;
}

// A product: row-major c[m, n] = op(a)[m, k] op(b)[k, n] with row strides lda, ldb, ldc, where
// op transposes when asked (a stored [k, m], b stored [n, k]); `batch` of them, the operands of
// each sa, sb, sc elements after the previous one's.
struct GemmShape {
  bool ta, tb;
  int64_t m, n, k, lda, ldb, ldc;
  int batch = 1;
  int64_t sa = 0, sb = 0, sc = 0;
  double flops() const {
    return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) * batch;
  }
};

// ---- float32 through TF32 tensor cores, three products per term ----
// Each float x is split into x_hi = tf32(x) and x_lo = tf32(x - x_hi), and a b is accumulated in
// float32 as a_lo b_hi + a_hi b_lo + a_hi b_hi: 22 of float32's 24 significand bits per term,
// against TF32's 11, at three tensor-core products (still several times float32's FMA rate).
// Finite inputs keep float32's accuracy; an infinite input gives NaN instead of an infinity.
// Tile shapes on offer; each is timed as a candidate.
inline constexpr int kTf32x3Tiles = 3;
// Products with few output tiles split k into up to this many ranges, run side by side and
// summed in a fixed order after.
inline constexpr int kTf32x3MaxSplits = 16;
// Whether the kernels can read these operands: 16-byte aligned rows along each operand's
// contiguous dimension.
bool tf32x3_fits(const GemmShape& sh, const void* a, const void* b);
// The ranges of k that fill the GPU with blocks of tile `tile`.
int tf32x3_splits(int tile, const GemmShape& sh);
void tf32x3_gemm(int tile, int splits, const GemmShape& sh, const float* a, const float* b,
                 float* c);

// A product through cuBLASLt, which is column-major, so it computes c^T = op(b)^T op(a)^T. The
// algorithm is picked on first use: for large products the fastest of cuBLASLt's candidates
// (and for float32 of the 3xTF32 tiles and of the TF32 product of split operands), timed; else
// cuBLASLt's first guess. cuBLASLt's first guess for the reference CNN's 7x7 convolution keeps
// 20 of the GPU's 132 SMs busy.
class LtGemm {
 public:
  // tf32_parts: float32 operands whose values are exact in TF32 (the split parts below), run on
  // cuBLASLt's TF32 kernels.
  explicit LtGemm(bool tf32_parts = false) : tf32_parts_(tf32_parts) {}
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  template <class T>
  void run(const GemmShape& sh, const T* a, const T* b, T* c);

 private:
  // cuBLASLt's call with algorithm `algo`.
  void call(const void* a, const void* b, void* c, const cublasLtMatmulAlgo_t& algo,
            size_t workspace, bool dbl);
  // The float32 product as one TF32 product over 3k of split operands (see gemm.cu).
  void run_split(const GemmShape& sh, const float* a, const float* b, float* c);

  cublasLtMatmulDesc_t desc_ = nullptr;
  cublasLtMatrixLayout_t la_ = nullptr, lb_ = nullptr, lc_ = nullptr;  // b, a, c as cuBLASLt's
  cublasLtMatmulAlgo_t algo_{};
  size_t workspace_ = 0;
  int tf32x3_tile_ = -1;   // the 3xTF32 tile chosen over cuBLASLt, or -1
  int tf32x3_splits_ = 1;  // and its ranges of k
  const bool tf32_parts_;
  std::unique_ptr<LtGemm> split_;  // the TF32 product of split operands, when chosen
};

}  // namespace crisp::cuda
