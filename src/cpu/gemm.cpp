// GEMM through OpenBLAS: kernel selection, threading, and the gemm() entry point.
//
// Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) does not know recent Xeon models (as this project's
// build machine reports them) and falls back to its "Prescott" SSE3 kernels, which run GEMM
// about 4.5x slower than the AVX-512 ones the CPU supports. OpenBLAS reads OPENBLAS_CORETYPE
// only when it loads, so we set it and re-run its selection: at static-initialization time,
// before any thread can be inside BLAS. A user's own OPENBLAS_CORETYPE is left alone.
#include <cblas.h>

#include <cstdlib>
#include <cstring>
#ifdef CRISP_HAVE_DNNL
#include <dnnl.h>
#endif

#include "cpu/gemm.h"
#include "cpu/loops.h"

extern "C" {
void gotoblas_dynamic_init(void);
void gotoblas_dynamic_quit(void);
}

namespace crisp::cpu {

namespace {

bool retune_blas() {
  if (std::getenv("OPENBLAS_CORETYPE")) return false;
  const char* core = openblas_get_corename();
  if (!core || std::strcmp(core, "Prescott") != 0) return false;
  __builtin_cpu_init();
  const char* better = __builtin_cpu_supports("avx512f") ? "SkylakeX"
                       : __builtin_cpu_supports("avx2")  ? "Haswell"
                                                         : nullptr;
  if (!better) return false;
  setenv("OPENBLAS_CORETYPE", better, 0);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
  unsetenv("OPENBLAS_CORETYPE");
  return true;
}

const bool retuned = retune_blas();

// Splits C into row (or column) blocks, one per thread, each a single-threaded BLAS call.
template <class T, class Blas>
void parallel_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
                   const T* b, int64_t ldb, T* c, int64_t ldc, Blas blas) {
  static const bool single = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)single;
  if (m == 0 || n == 0) return;
  const int64_t flops = m * n * std::max<int64_t>(k, 1);
  const bool by_rows = m >= n;
  const int64_t extent = by_rows ? m : n;
  // Blocks of at least 16 rows/columns keep each BLAS call efficient.
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(num_threads(), extent / 16));
  parallel_for(blocks, blocks > 1 ? flops / 4 : 0, [&](int64_t b0, int64_t b1) {
    for (int64_t i = b0; i < b1; ++i) {
      const int64_t lo = extent * i / blocks, hi = extent * (i + 1) / blocks;
      if (by_rows) {
        const T* ai = ta ? a + lo : a + lo * lda;
        blas(hi - lo, n, ai, b, c + lo * ldc);
      } else {
        const T* bi = tb ? b + lo * ldb : b + lo;
        blas(m, hi - lo, a, bi, c + lo);
      }
    }
  });
}

// A product with one row or one column of output is a matrix-vector product: BLAS's gemm
// would pack (copy) the whole matrix first, which for a single image through a large linear
// layer costs more than the product. y[i] (stride incy) = alpha * sum_j M[i, j] x[j] + beta *
// y[i] over rows [lo, hi) of the matrix M, whose element (i, j) is at m[i * rs + j * cs].
template <class T, class Gemv>
void parallel_gemv(int64_t rows, int64_t cols, const T* mat, int64_t rs, int64_t cs, const T* x,
                   int64_t incx, T* y, int64_t incy, Gemv gemv) {
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(num_threads(), rows / 64));
  parallel_for(blocks, rows * cols, [&](int64_t b0, int64_t b1) {
    for (int64_t i = b0; i < b1; ++i) {
      const int64_t lo = rows * i / blocks, hi = rows * (i + 1) / blocks;
      // Row-major with the rows rs apart, or its transpose (columns cs apart).
      if (cs == 1)
        gemv(false, hi - lo, cols, mat + lo * rs, rs, x, incx, y + lo * incy, incy);
      else
        gemv(true, cols, hi - lo, mat + lo, cs, x, incx, y + lo * incy, incy);
    }
  });
}

// Routes c = alpha * op(a) @ op(b) + beta * c to gemv when m or n is 1, else to parallel_gemm.
template <class T, class Gemm, class Gemv>
void gemm_any(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
              const T* b, int64_t ldb, T* c, int64_t ldc, Gemm gemm, Gemv gemv) {
  if (k > 1 && m == 1 && n > 1) {
    // c row = op(b)^T a: op(b) is k x n, so the matrix is op(b)^T (n x k).
    return parallel_gemv(n, k, b, tb ? ldb : 1, tb ? 1 : ldb, a, ta ? lda : 1, c, 1, gemv);
  }
  if (k > 1 && n == 1 && m > 1) {
    return parallel_gemv(m, k, a, ta ? 1 : lda, ta ? lda : 1, b, tb ? 1 : ldb, c, ldc, gemv);
  }
  parallel_gemm(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, gemm);
}

}  // namespace

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  gemm_any(
      ta, tb, m, n, k, a, lda, b, ldb, c, ldc,
      [&](int64_t mm, int64_t nn, const float* aa, const float* bb, float* cc) {
#ifdef CRISP_HAVE_DNNL
        // oneDNN's GEMM, where present, beats OpenBLAS's on the training batch's products
        // (a few rows against a large weight: 1.2-1.4x per thread on the reference CNN's
        // linear layers); below ~64^3 its larger fixed cost loses.
        if (mm * nn * k >= (int64_t{1} << 18) && SerialOpenMp::available()) {
          SerialOpenMp serial;
          if (dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', mm, nn, k, alpha, aa, lda, bb, ldb, beta,
                         cc, ldc) == dnnl_success)
            return;
        }
#endif
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    blasint(mm), blasint(nn), blasint(k), alpha, aa, blasint(lda), bb, blasint(ldb),
                    beta, cc, blasint(ldc));
      },
      [&](bool trans, int64_t rows, int64_t cols, const float* mat, int64_t ld, const float* x,
          int64_t incx, float* y, int64_t incy) {
        // The output may hold anything (NaN too), which beta = 0 must not let through.
        if (beta == 0)
          for (int64_t i = 0, n = trans ? cols : rows; i < n; ++i) y[i * incy] = 0;
        cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, blasint(rows), blasint(cols),
                    alpha, mat, blasint(ld), x, blasint(incx), beta, y, blasint(incy));
      });
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
          int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  gemm_any(
      ta, tb, m, n, k, a, lda, b, ldb, c, ldc,
      [&](int64_t mm, int64_t nn, const double* aa, const double* bb, double* cc) {
        cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    blasint(mm), blasint(nn), blasint(k), alpha, aa, blasint(lda), bb, blasint(ldb),
                    beta, cc, blasint(ldc));
      },
      [&](bool trans, int64_t rows, int64_t cols, const double* mat, int64_t ld, const double* x,
          int64_t incx, double* y, int64_t incy) {
        // The output may hold anything (NaN too), which beta = 0 must not let through.
        if (beta == 0)
          for (int64_t i = 0, n = trans ? cols : rows; i < n; ++i) y[i * incy] = 0;
        cblas_dgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, blasint(rows), blasint(cols),
                    alpha, mat, blasint(ld), x, blasint(incx), beta, y, blasint(incy));
      });
}

}  // namespace crisp::cpu
