// How a BLAS library reads the matrices of a product in place: the layout both backends give
// their GEMM calls (OpenBLAS on the CPU, cuBLAS on CUDA).
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>

namespace crisp {

// A rows x cols matrix as BLAS reads it: `trans` when it is stored column-major, ld its leading
// dimension.
struct GemmLayout {
  bool trans;
  int64_t ld;
};

// How BLAS can read a rows x cols matrix with strides (rs, cs) without a copy, if it can.
inline std::optional<GemmLayout> gemm_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  // A size-1 dimension's stride is never used; pick the one that makes the layout valid.
  if (cs == 1 || cols == 1) {
    const int64_t ld = rows == 1 ? std::max<int64_t>(cols, 1) : rs;
    if (ld >= std::max<int64_t>(cols, 1)) return GemmLayout{false, ld};
  }
  if (rs == 1 || rows == 1) {
    const int64_t ld = cols == 1 ? std::max<int64_t>(rows, 1) : cs;
    if (ld >= std::max<int64_t>(rows, 1)) return GemmLayout{true, ld};
  }
  return std::nullopt;
}

}  // namespace crisp
