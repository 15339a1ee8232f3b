// Internal header of the CUDA backend: the per-device context, error macros, dtype dispatch and
// the strided-indexing helpers every kernel file shares.
//
// Each op family has its own file: creation.cu, elementwise.cu, reduce.cu, axis.cu, matmul.cu,
// indexing.cu, nn.cu (+ conv.cu), optim.cu; backend.cu routes to them.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "crisp/backend.h"
#include "crisp/error.h"

namespace crisp::cuda {

using In = std::span<const Array>;
using Out = std::span<Array>;

// ---- errors ----
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

// ---- memory ----
class CachingAllocator;

// Device memory from the caching allocator, returned to it (stream-ordered) when destroyed.
// Throws std::bad_alloc when the device is out of memory even after the cache is released.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t bytes);
  ~Buffer();
  Buffer(Buffer&& o) noexcept
      : ptr_(o.ptr_), bytes_(o.bytes_), owner_(o.owner_), stream_(o.stream_) {
    o.ptr_ = nullptr;
  }
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* get() const { return ptr_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t size() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  CachingAllocator* owner_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

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

// ---- small elementwise ops, queued ----
// An elementwise op on a few elements takes the GPU well under a microsecond but the host a
// whole kernel launch (3-4 us on an H200's host). So such ops wait in their device's queue and
// run up to kSmallMaps at a time, in order, in one launch of one block (elementwise.cu): at
// the next op that is not one of them, at any read, write or synchronize, and when the queue is
// full. An op's function is a device function pointer, its functor's bytes travel with it.
inline constexpr int64_t kSmallMapElements = 4096;
inline constexpr int kSmallMaps = 32;
using SmallMapFn = void (*)(void* out, const void* a, const void* b, const void* c, int n,
                            unsigned scalar, uint64_t f0, uint64_t f1, uint64_t f2);
struct SmallMap {
  SmallMapFn fn;
  void* out;
  const void* in[3];
  uint64_t functor[3];
  int n;
  unsigned scalar;  // bit k: input k is one value, broadcast
};
struct SmallMaps {
  int count;
  SmallMap ops[kSmallMaps];
};
// Runs a queue's ops, in order, in one launch (elementwise.cu, beside the ops' functions).
void launch_small_maps(const SmallMaps& q);

// ---- the per-device context ----
// Every op on a device is queued on its one stream, so kernels, library calls, the caching
// allocator's reuse and the scratch workspace are ordered without further synchronization
// (uploads from the host use a second stream, joined by events: backend.cu).
struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cublasLtHandle_t cublaslt = nullptr;
  int sm_count = 0;
  size_t shared_per_block_optin = 0;

  // Created on first use (cuDNN's initialization is slow and most programs need no conv).
  cudnnHandle_t cudnn();
  // Scratch memory valid until the next workspace() call on this device; grows as needed.
  // Ordered by the stream, so an op may use it for the whole of its kernels.
  void* workspace(size_t bytes);
  // A zeroed fault record for one op's kernels, checked without blocking the host: the next
  // sync() on this device raises crisp::Error("<op>: " + message(code, value)) with the op's
  // trace (captured here) if the kernels reported. So a device-detected fault is raised at the
  // next read or synchronize on the device, whichever tensor it reads, not only on the op's
  // outputs; the first (oldest) fault wins and the others found with it are dropped.
  DeviceFault* fault(FaultMessage message);
  // Waits for the stream, then raises the first fault recorded since the last sync(), if any.
  void sync();
  // Appends a small op to the queue, which runs when full.
  void queue(const SmallMap& op);
  // Launches the queued small ops (before anything else is queued on the stream).
  void flush();

  // Internal state (backend.cu), used under the device's mutex like everything above.
  struct PendingFault {
    FaultMessage message;
    std::vector<Frame> trace;
  };
  // Records in flight at most: when all are pending, the next fault() waits for the stream.
  static constexpr size_t kFaultSlots = 1024;
  cudnnHandle_t cudnn_ = nullptr;
  Buffer workspace_;
  DeviceFault* fault_dev_ = nullptr;   // kFaultSlots records; pending_[i] owns record i
  DeviceFault* fault_host_ = nullptr;  // their pinned mirror
  std::vector<PendingFault> pending_;
  std::exception_ptr fault_error_;  // the first fault found, until sync() raises it
  SmallMaps small_maps_{};
  void collect_faults();
};

// The context of the device the current op runs on (set by the backend around each op).
Context& ctx();
Context& ctx(int device);
// Whether float32 matmul/conv may use TF32 (crisp::allow_tf32()).
bool tf32_enabled();

// cuBLAS's names for T and the math it accumulates in: float32 stays float32-accurate unless
// TF32 is allowed; the 16-bit types accumulate in float32.
struct BlasTypes {
  cudaDataType_t data;
  cublasComputeType_t compute;
};
template <class T>
BlasTypes blas_types() {
  if constexpr (std::is_same_v<T, double>) {
    return {CUDA_R_64F, CUBLAS_COMPUTE_64F};
  } else if constexpr (std::is_same_v<T, float>) {
    return {CUDA_R_32F, tf32_enabled() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F};
  } else if constexpr (std::is_same_v<T, __half>) {
    return {CUDA_R_16F, CUBLAS_COMPUTE_32F};
  } else {
    return {CUDA_R_16BF, CUBLAS_COMPUTE_32F};
  }
}

// ---- launches ----

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
// is retried through the runtime, which reports it as CUDA_LAUNCH_CHECK expects.
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
                     static_cast<unsigned>(smem), stream, ptrs, nullptr) != CUDA_SUCCESS)
            (void)cudaLaunchKernel(reinterpret_cast<const void*>(Kernel), grid, block, ptrs, smem,
                                   stream);
        },
        params);
  }(Kernel);
}

// v summed over the lanes that differ from this one in bits `from` and up (all lanes get it).
template <class C>
__device__ C lanes_sum(C v, int from) {
  for (int o = from; o < 32; o *= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ---- launch geometry ----
inline constexpr int kBlock = 256;
// Blocks for a grid-stride loop over n items: enough to fill the device, never more than needed.
inline unsigned grid_for(int64_t n, int block = kBlock) {
  const int64_t need = (n + block - 1) / block;
  const int64_t cap = static_cast<int64_t>(ctx().sm_count > 0 ? ctx().sm_count : 132) * 16;
  return static_cast<unsigned>(need < 1 ? 1 : (need < cap ? need : cap));
}

// The same in index type I (int where the launcher has checked that n fits: 32-bit index math
// is several times cheaper than 64-bit on GPUs).
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

// ---- strided indexing ----
inline constexpr int kMaxDims = 10;

// A strided view as kernels see it (passed by value). Strides count elements.
struct Strided {
  int nd;
  int64_t shape[kMaxDims];
  int64_t strides[kMaxDims];
  int64_t offset;

  // Element offset of the element at row-major position i of shape.
  __host__ __device__ int64_t at(int64_t i) const {
    int64_t off = offset;
    for (int d = nd - 1; d > 0; --d) {
      const int64_t q = i / shape[d];
      off += (i - q * shape[d]) * strides[d];
      i = q;
    }
    return nd > 0 ? off + i * strides[0] : off;
  }
};

// a's layout; with `shape`, a's layout broadcast to it (a's axes align with shape's last ones).
// Size-1 axes are dropped and mergeable ones merged; throws crisp::Error beyond kMaxDims.
Strided strided(const Array& a);
Strided strided(const Array& a, const Shape& shape);
// Several arrays viewed over one shape, with axes merged only where every one of them allows,
// so position i means the same element in each (for n-ary elementwise kernels).
void strided_together(const Shape& shape, std::span<const Array* const> arrays, Strided* out);

// ---- dtypes ----
template <class T>
inline constexpr bool is_half_v = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;
// The type arithmetic happens in: float for the 16-bit floats, the type itself otherwise.
template <class T>
using compute_t = std::conditional_t<is_half_v<T>, float, T>;
template <class T>
inline constexpr bool is_float_v = std::is_floating_point_v<compute_t<T>>;

// The device type stored for each dtype.
template <DType D>
struct device_type;
template <>
struct device_type<DType::b8> {
  using type = bool;
};
template <>
struct device_type<DType::u8> {
  using type = uint8_t;
};
template <>
struct device_type<DType::i32> {
  using type = int32_t;
};
template <>
struct device_type<DType::i64> {
  using type = int64_t;
};
template <>
struct device_type<DType::f16> {
  using type = __half;
};
template <>
struct device_type<DType::bf16> {
  using type = __nv_bfloat16;
};
template <>
struct device_type<DType::f32> {
  using type = float;
};
template <>
struct device_type<DType::f64> {
  using type = double;
};

// Calls f with a value of the device type stored for d, e.g. f(__half{}) for f16.
template <class F>
decltype(auto) visit(DType d, F&& f) {
  switch (d) {
    case DType::b8:
      return f(bool{});
    case DType::u8:
      return f(uint8_t{});
    case DType::i32:
      return f(int32_t{});
    case DType::i64:
      return f(int64_t{});
    case DType::f16:
      return f(__half{});
    case DType::bf16:
      return f(__nv_bfloat16{});
    case DType::f32:
      return f(float{});
    case DType::f64:
      return f(double{});
  }
  return f(float{});
}
// The same, over the floating types only (anything else fails naming op).
template <class F>
decltype(auto) visit_float(DType d, const char* op, F&& f) {
  switch (d) {
    case DType::f16:
      return f(__half{});
    case DType::bf16:
      return f(__nv_bfloat16{});
    case DType::f32:
      return f(float{});
    case DType::f64:
      return f(double{});
    default:
      break;
  }
  fail(op, " is not supported for ", dtype_name(d), " on CUDA");
}

// Value conversions with the CPU backend's semantics (16-bit floats through float, bool as != 0).
template <class To, class From>
__host__ __device__ inline To convert(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (is_half_v<From>) {
    return convert<To>(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, bool>) {
    return v != From(0);
  } else if constexpr (std::is_same_v<To, __half>) {
    return __float2half_rn(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, __nv_bfloat16>) {
    return __float2bfloat16_rn(static_cast<float>(v));
  } else {
    return static_cast<To>(v);
  }
}
// The value of v in its compute type.
template <class T>
__host__ __device__ inline compute_t<T> load(T v) {
  return convert<compute_t<T>>(v);
}

[[noreturn]] inline void unsupported(const Op& op, DType dtype) {
  fail(op_name(op.kind), " is not supported for ", dtype_name(dtype), " on CUDA");
}

// ---- op families (each routes on op.kind) ----
void creation(const Op& op, In in, Out out);     // creation.cu
void elementwise(const Op& op, In in, Out out);  // elementwise.cu: unary, binary, where, copy
void reduce(const Op& op, In in, Out out);       // reduce.cu
void along_axis(const Op& op, In in, Out out);   // axis.cu: softmax, cumsum, sort
void linalg(const Op& op, In in, Out out);       // matmul.cu
void indexing(const Op& op, In in, Out out);     // gather, scatter, layout ops
void nn(const Op& op, In in, Out out);           // conv, pool, norms, embedding, losses
void optim(const Op& op, In in, Out out);        // fused optimizer steps

// Copies src (any layout, any dtype) into contiguous dst of the same shape, converting the
// dtype: the copy op, for kernels that want contiguous inputs.
void copy_to_contiguous(const Array& src, const Array& dst);
// A contiguous version of a (a itself when already contiguous), backed by `keep` if copied.
Array contiguous(const Array& a, Buffer& keep);
// a [N, C, *spatial] as its channels-last storage, contiguous [N, *spatial, C]: a's own memory
// when it is stored so, else a copy backed by `keep`.
Array channels_last_storage(const Array& a, Buffer& keep);

}  // namespace crisp::cuda
