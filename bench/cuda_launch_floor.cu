// The floor under per-op dispatch on the GPU: back-to-back launches of an empty kernel on one
// stream, with parameter blocks of 16 and 416 bytes (an elementwise op's is about 400). Every
// eager op costs at least one launch, so no framework that launches a kernel per op dispatches
// faster. Prints `us_per_bare_launch <median over repeats>` for bench/gpu.py.
#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

namespace {

struct Params {
  char bytes[400];
};

__global__ void empty_small(float* p, long n) {
  if (n < 0) p[0] = 1;  // never true: keeps the kernel from being optimized away
}
__global__ void empty_large(float* p, long n, Params q) {
  if (n < 0) p[0] = q.bytes[0];
}

bool ok(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  std::fprintf(stderr, "error: %s: %s\n", what, cudaGetErrorString(e));
  return false;
}

}  // namespace

int main() {
  float* p = nullptr;
  cudaStream_t s = nullptr;
  if (!ok(cudaMalloc(&p, sizeof(float)), "cudaMalloc") ||
      !ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate"))
    return 1;
  const Params q{};
  // The driver's cuLaunchKernel on a function looked up once, without the runtime's per-launch
  // lookup of the kernel from its host stub (found at run time: no link to libcuda): on the
  // context's function, and on the context-independent kernel handle (crisp's launches).
  using LaunchFn = decltype(&cuLaunchKernel);
  void* entry = nullptr;
  cudaDriverEntryPointQueryResult found{};
  cudaFunction_t fn = nullptr;
  cudaKernel_t kernel = nullptr;
  if (!ok(cudaGetDriverEntryPointByVersion("cuLaunchKernel", &entry, 12000, cudaEnableDefault,
                                           &found),
          "cudaGetDriverEntryPointByVersion") ||
      found != cudaDriverEntryPointSuccess ||
      !ok(cudaGetFuncBySymbol(&fn, reinterpret_cast<const void*>(&empty_small)),
          "cudaGetFuncBySymbol") ||
      !ok(cudaGetKernel(&kernel, reinterpret_cast<const void*>(&empty_small)), "cudaGetKernel"))
    return 1;
  const auto driver_launch = reinterpret_cast<LaunchFn>(entry);
  constexpr int kLaunches = 20000, kRepeats = 5;
  for (int variant = 0; variant < 4; ++variant) {
    std::vector<double> us;
    for (int r = 0; r < kRepeats + 1; ++r) {  // the first repeat warms up
      if (!ok(cudaStreamSynchronize(s), "cudaStreamSynchronize")) return 1;
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < kLaunches; ++i) {
        if (variant >= 2) {
          long n = 1;
          void* args[] = {&p, &n};
          const auto f = variant == 2 ? reinterpret_cast<CUfunction>(fn)
                                      : reinterpret_cast<CUfunction>(kernel);
          driver_launch(f, 1, 1, 1, 256, 1, 1, 0, reinterpret_cast<CUstream>(s), args, nullptr);
        } else if (variant == 1) {
          empty_large<<<1, 256, 0, s>>>(p, 1, q);
        } else {
          empty_small<<<1, 256, 0, s>>>(p, 1);
        }
      }
      if (!ok(cudaStreamSynchronize(s), "launch")) return 1;
      const auto t1 = std::chrono::steady_clock::now();
      if (r > 0)
        us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / kLaunches);
    }
    std::sort(us.begin(), us.end());
    const char* names[] = {"us_per_bare_launch", "us_per_bare_launch_416B",
                           "us_per_bare_launch_driver", "us_per_bare_launch_driver_kernel"};
    std::printf("%s %.4f us\n", names[variant], us[us.size() / 2]);
  }
  // Host time alone: bursts too short to fill the launch queue, timed up to the last launch.
  std::vector<double> issue;
  for (int b = 0; b < 50; ++b) {
    if (!ok(cudaStreamSynchronize(s), "cudaStreamSynchronize")) return 1;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 100; ++i) empty_small<<<1, 256, 0, s>>>(p, 1);
    const auto t1 = std::chrono::steady_clock::now();
    issue.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / 100);
  }
  std::sort(issue.begin(), issue.end());
  std::printf("us_issue_bare_launch %.4f us\n", issue[issue.size() / 2]);
  return 0;
}
