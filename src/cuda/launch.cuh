// Kernel launches in the CUDA backend: launch<> (through the driver, the fast path) and
// launch_items<> for grid-stride kernels, their geometry, and index helpers the kernels share.
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>

#include "cuda/context.cuh"
#include "cuda/errors.cuh"

namespace crisp::cuda {

// The driver's cuLaunchKernel, found at run time (crisp does not link libcuda), or nullptr.
using DriverLaunch = decltype(&cuLaunchKernel);
DriverLaunch driver_launch();

// Devices whose kernel handles launch() keeps (others launch through the runtime).
inline constexpr int kLaunchDevices = 16;

// kernel<<<grid, block, smem, stream>>>(args...), with each argument converted to its parameter's
// type, through the driver on the kernel's function in the current device's context, looked up
// once per device: the runtime's <<<>>> looks the kernel up from its host stub on every launch
// (about 0.4 us of a 4 us launch on an H200's host), and the context-independent cudaKernel_t
// handle launches 0.1-0.3 us slower than the context's own function there. Any driver failure
// is retried through the runtime, whose failure throws as CUDA_LAUNCH_CHECK does.
template <auto Kernel, class... A>
void launch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, const A&... args) {
  static std::atomic<CUfunction> functions[kLaunchDevices] = {};
  const int device = ctx().device;
  CUfunction function = nullptr;
  if (device < kLaunchDevices) {
    function = functions[device].load(std::memory_order_relaxed);
    if (!function) {
      cudaFunction_t f = nullptr;
      if (cudaGetFuncBySymbol(&f, reinterpret_cast<const void*>(Kernel)) == cudaSuccess) {
        function = reinterpret_cast<CUfunction>(f);
        functions[device].store(function, std::memory_order_relaxed);
      } else {
        (void)cudaGetLastError();
      }
    }
  }
  [&]<class... P>(void (*)(P...)) {
    std::tuple<std::remove_cvref_t<P>...> params(args...);
    std::apply(
        [&](auto&... p) {
          void* ptrs[sizeof...(P) + 1] = {static_cast<void*>(&p)...};
          const DriverLaunch driver = driver_launch();
          if (!driver || !function ||
              driver(function, grid.x, grid.y, grid.z, block.x, block.y, block.z,
                     static_cast<unsigned>(smem), stream, ptrs, nullptr) != CUDA_SUCCESS) {
            (void)cudaLaunchKernel(reinterpret_cast<const void*>(Kernel), grid, block, ptrs, smem,
                                   stream);
            CUDA_LAUNCH_CHECK();
          }
        },
        params);
  }(Kernel);
}

// ---- launch geometry ----
inline constexpr int kBlock = 256;
// Blocks for a grid-stride loop over n items: enough to fill the device, never more than needed.
inline unsigned grid_for(int64_t n, int block = kBlock) {
  const int64_t need = (n + block - 1) / block;
  const int64_t cap = static_cast<int64_t>(ctx().sm_count > 0 ? ctx().sm_count : 132) * 16;
  return static_cast<unsigned>(need < 1 ? 1 : (need < cap ? need : cap));
}

// A grid-stride loop over n items in index type I (int where the launcher has checked that n
// fits: 32-bit index math is several times cheaper than 64-bit on GPUs).
#define CRISP_GRID_STRIDE_AS(I, i, n)                                        \
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<I>(blockDim.x) * gridDim.x)
#define CRISP_GRID_STRIDE(i, n) CRISP_GRID_STRIDE_AS(int64_t, i, n)

// The usual launch of a grid-stride kernel over n items, Kernel(n, args...), on grid_for(n)
// blocks of kBlock threads of the current stream; nothing when there are no items.
template <auto Kernel, class... A>
void launch_items(int64_t n, const A&... args) {
  if (n <= 0) return;
  launch<Kernel>(grid_for(n), kBlock, 0, ctx().stream, n, args...);
}

// v summed over the lanes that differ from this one in bits `from` and up (all lanes get it).
template <class C>
__device__ C lanes_sum(C v, int from) {
  for (int o = from; o < 32; o *= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ---- division by a divisor fixed at launch ----

// n / d in index type I (int or int64_t). GPUs have no integer divider: a 32-bit division is a
// long instruction sequence, a 64-bit one longer. For int, the quotient comes from a
// multiply-high and a shift: with s = ceil(log2 d) and m = floor(2^32 (2^s - d) / d) + 1,
// n / d = (umulhi(n, m) + n) >> s for 0 <= n < 2^31 (Granlund and Montgomery's method).
template <class I>
struct DivBy {
  I d = 1;
  uint32_t m = 0, s = 0;
  DivBy() = default;
  explicit DivBy(int64_t divisor) : d(static_cast<I>(divisor)) {
    if constexpr (sizeof(I) == 4) {
      while ((uint64_t{1} << s) < static_cast<uint64_t>(divisor)) ++s;
      const uint64_t ud = static_cast<uint64_t>(divisor);
      m = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << s) - ud)) / ud + 1);
    }
  }
  __host__ __device__ I div(I n) const {
    if constexpr (sizeof(I) == 4) {
      const uint32_t u = static_cast<uint32_t>(n);
      const uint32_t hi = static_cast<uint32_t>((static_cast<uint64_t>(u) * m) >> 32);
      return static_cast<I>((hi + u) >> s);
    } else {
      return n / d;
    }
  }
  __host__ __device__ I mod(I n) const { return n - div(n) * d; }
};

}  // namespace crisp::cuda
