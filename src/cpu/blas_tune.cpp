// Picks OpenBLAS's kernels when its own CPU detection falls back to the generic ones.
//
// Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) does not know recent Xeon models (as this project's
// build machine reports them) and falls back to its "Prescott" SSE3 kernels, which run GEMM
// about 4.5x slower than the AVX-512 ones the CPU supports. OpenBLAS reads OPENBLAS_CORETYPE
// only when it loads, so we set it and re-run its selection: at static-initialization time,
// before any thread can be inside BLAS. A user's own OPENBLAS_CORETYPE is left alone.
#include <cblas.h>

#include <cstdlib>
#include <cstring>

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

}  // namespace

// Called by the GEMM callers: links this object, so its initializer runs at start-up.
bool blas_tuned() { return retuned; }

}  // namespace crisp::cpu
