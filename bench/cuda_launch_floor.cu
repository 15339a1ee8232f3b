// The floor under per-op dispatch on the GPU: back-to-back launches of an empty kernel on one
// stream, with parameter blocks of 16 and 416 bytes (an elementwise op's is about 400). Every
// eager op costs at least one launch, so no framework that launches a kernel per op dispatches
// faster. Prints `us_per_bare_launch <median over repeats>` for bench/gpu.py.
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
  constexpr int kLaunches = 20000, kRepeats = 5;
  for (int large = 0; large < 2; ++large) {
    std::vector<double> us;
    for (int r = 0; r < kRepeats + 1; ++r) {  // the first repeat warms up
      if (!ok(cudaStreamSynchronize(s), "cudaStreamSynchronize")) return 1;
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < kLaunches; ++i) {
        if (large)
          empty_large<<<1, 256, 0, s>>>(p, 1, q);
        else
          empty_small<<<1, 256, 0, s>>>(p, 1);
      }
      if (!ok(cudaStreamSynchronize(s), "launch")) return 1;
      const auto t1 = std::chrono::steady_clock::now();
      if (r > 0)
        us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / kLaunches);
    }
    std::sort(us.begin(), us.end());
    std::printf("%s %.4f us\n", large ? "us_per_bare_launch_416B" : "us_per_bare_launch",
                us[us.size() / 2]);
  }
  return 0;
}
