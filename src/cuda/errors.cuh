// Errors in the CUDA backend: checks of CUDA, cuBLAS and cuDNN calls, and the fault records
// through which kernels report bad values to the host.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <functional>
#include <string>

namespace crisp::cuda {

// Each throws crisp::Error through fail(), naming the call that failed and the library's reason.
[[noreturn]] void cuda_fail(cudaError_t e, const char* what);
[[noreturn]] void cublas_fail(cublasStatus_t s, const char* what);
[[noreturn]] void cudnn_fail(cudnnStatus_t s, const char* what);

#define CUDA_CHECK(expr)                                                    \
  do {                                                                      \
    const cudaError_t crisp_e_ = (expr);                                    \
    if (crisp_e_ != cudaSuccess) ::crisp::cuda::cuda_fail(crisp_e_, #expr); \
  } while (0)
#define CUBLAS_CHECK(expr)                                                              \
  do {                                                                                  \
    const cublasStatus_t crisp_s_ = (expr);                                             \
    if (crisp_s_ != CUBLAS_STATUS_SUCCESS) ::crisp::cuda::cublas_fail(crisp_s_, #expr); \
  } while (0)
#define CUDNN_CHECK(expr)                                                             \
  do {                                                                                \
    const cudnnStatus_t crisp_s_ = (expr);                                            \
    if (crisp_s_ != CUDNN_STATUS_SUCCESS) ::crisp::cuda::cudnn_fail(crisp_s_, #expr); \
  } while (0)
// After a kernel launch: a bad launch configuration is reported at once.
#define CUDA_LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

// A bad value found by a kernel (an index out of range, an integer division by zero): the
// first one found is kept with its value; the host raises it later (Context::fault).
struct DeviceFault {
  int set;
  int code;  // the kernel's own meaning
  long long value;
};

__device__ inline void report_fault(DeviceFault* f, int code, long long value) {
  if (atomicCAS(&f->set, 0, 1) == 0) {
    f->code = code;
    f->value = value;
  }
}

// A fault's message from the kernel's code and value (the op's name is prefixed to it).
using FaultMessage = std::function<std::string(int code, long long value)>;

}  // namespace crisp::cuda
