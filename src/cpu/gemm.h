// GEMM on the CPU: the one place that calls BLAS.
#pragma once

#include <cstdint>

namespace crisp::cpu {

// c = alpha * op(a) @ op(b) + beta * c, row-major; op transposes when ta/tb is set. Runs on the
// library's own threads (BLAS itself is kept single-threaded so that the two never compete for
// cores); inside a parallel region it runs on the calling thread.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
          int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc);

}  // namespace crisp::cpu
