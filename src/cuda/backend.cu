// The CUDA backend: one per device, with its context (stream, library handles, fault records),
// caching allocator and host transfers; the routing of each op family to its entry point.
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "cuda/allocator.h"
#include "cuda/buffer.cuh"
#include "cuda/context.cuh"
#include "cuda/dtype.cuh"
#include "cuda/errors.cuh"
#include "cuda/families.cuh"
#include "cuda/launch.cuh"
#include "cuda/profile.h"
#include "cuda/strided.cuh"
#include "kernels/families.h"

namespace crisp::cuda {

[[noreturn]] void cuda_fail(cudaError_t e, const char* what) {
  (void)cudaGetLastError();  // a non-sticky error must not resurface at the next check
  fail("CUDA error ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ") in ", what);
}
[[noreturn]] void cublas_fail(cublasStatus_t s, const char* what) {
  fail("cuBLAS error ", cublasGetStatusName(s), " (", cublasGetStatusString(s), ") in ", what);
}
[[noreturn]] void cudnn_fail(cudnnStatus_t s, const char* what) {
  fail("cuDNN error ", cudnnGetErrorString(s), " in ", what);
}

namespace {

constexpr int kMaxDevices = 64;

// Host-to-device copies of large buffers, in chunks: into pinned host memory, by DMA on the
// device's upload stream into a device-side chunk, then on the compute stream into place. So
// the DMA overlaps the work already queued, and only the ops queued after the copy wait for it
// (on the GPU). A pinned chunk is free once its DMA is done, a device chunk once the compute
// stream has moved it; there are more device chunks, so uploads may run that many ahead of the
// compute stream. The host waits only to reuse a pinned chunk whose DMA is still running.
class Uploads {
 public:
  static constexpr size_t kChunk = size_t{4} << 20;
  static constexpr int kHostChunks = 4, kDeviceChunks = 16;
  void init() {
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    for (int i = 0; i < kHostChunks; ++i) {
      CUDA_CHECK(cudaMallocHost(&host_[i], kChunk));
      CUDA_CHECK(cudaEventCreateWithFlags(&copied_[i], cudaEventDisableTiming));
    }
    for (int i = 0; i < kDeviceChunks; ++i) {
      CUDA_CHECK(cudaMalloc(&device_[i], kChunk));
      CUDA_CHECK(cudaEventCreateWithFlags(&moved_[i], cudaEventDisableTiming));
    }
  }
  void copy(void* dst, const void* src, size_t nbytes, cudaStream_t compute) {
    for (size_t off = 0; off < nbytes; off += kChunk) {
      const size_t n = std::min(kChunk, nbytes - off);
      const int h = next_host_, d = next_device_;
      next_host_ = (h + 1) % kHostChunks;
      next_device_ = (d + 1) % kDeviceChunks;
      CUDA_CHECK(cudaEventSynchronize(copied_[h]));  // the pinned chunk's last DMA is done
      std::memcpy(host_[h], static_cast<const char*>(src) + off, n);
      CUDA_CHECK(cudaStreamWaitEvent(stream_, moved_[d]));  // the device chunk was moved out
      CUDA_CHECK(cudaMemcpyAsync(device_[d], host_[h], n, cudaMemcpyHostToDevice, stream_));
      CUDA_CHECK(cudaEventRecord(copied_[h], stream_));
      CUDA_CHECK(cudaStreamWaitEvent(compute, copied_[h]));
      CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + off, device_[d], n,
                                 cudaMemcpyDeviceToDevice, compute));
      CUDA_CHECK(cudaEventRecord(moved_[d], compute));
    }
  }

 private:
  cudaStream_t stream_ = nullptr;
  void* host_[kHostChunks] = {};
  void* device_[kDeviceChunks] = {};
  cudaEvent_t copied_[kHostChunks] = {}, moved_[kDeviceChunks] = {};
  int next_host_ = 0, next_device_ = 0;
};

struct Device {
  Context context;
  CachingAllocator allocator;
  Uploads uploads;
  std::mutex mutex;  // one op at a time per device: the context's scratch state is shared
  explicit Device(int d) : context(d), allocator(d) {}
};

thread_local Device* current = nullptr;
thread_local int thread_device = -1;

// cudaSetDevice only when this thread's device differs (it is not free).
void ensure_device(int d) {
  if (thread_device != d) {
    CUDA_CHECK(cudaSetDevice(d));
    thread_device = d;
  }
}

// Makes device d current on this thread (and for ctx()) for a scope.
class DeviceGuard {
 public:
  explicit DeviceGuard(Device& d) : previous_(current), lock_(d.mutex) {
    ensure_device(d.context.device);
    current = &d;
  }
  ~DeviceGuard() { current = previous_; }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  Device* previous_;
  std::lock_guard<std::mutex> lock_;
};

int device_count() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
}

cudaDeviceProp properties(int device) {
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return prop;
}
cudaStream_t new_stream() {
  cudaStream_t s = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}
cublasHandle_t new_cublas(cudaStream_t stream) {
  cublasHandle_t h = nullptr;
  CUBLAS_CHECK(cublasCreate(&h));
  CUBLAS_CHECK(cublasSetStream(h, stream));
  return h;
}
cublasLtHandle_t new_cublaslt() {
  cublasLtHandle_t h = nullptr;
  CUBLAS_CHECK(cublasLtCreate(&h));
  return h;
}

}  // namespace

Context& ctx() {
  if (!current) fail("no CUDA device is current (internal: a kernel ran outside an op)");
  return current->context;
}

bool tf32_enabled() { return allow_tf32(); }

Context::Context(int d) : Context(d, properties(d)) {}

Context::Context(int d, const cudaDeviceProp& prop)
    : device(d),
      stream(new_stream()),
      cublas(new_cublas(stream)),
      cublaslt(new_cublaslt()),
      sm_count(prop.multiProcessorCount),
      shared_per_block_optin(prop.sharedMemPerBlockOptin) {
  const size_t fault_bytes = kFaultSlots * sizeof(DeviceFault);
  CUDA_CHECK(cudaMalloc(&fault_dev_, fault_bytes));
  CUDA_CHECK(cudaMemsetAsync(fault_dev_, 0, fault_bytes, stream));
  CUDA_CHECK(cudaMallocHost(&fault_host_, fault_bytes));
  pending_.reserve(kFaultSlots);
}

cudnnHandle_t Context::cudnn() {
  if (!cudnn_) {
    CUDNN_CHECK(cudnnCreate(&cudnn_));
    CUDNN_CHECK(cudnnSetStream(cudnn_, stream));
  }
  return cudnn_;
}

DriverLaunch driver_launch() {
  static const DriverLaunch launch = [] {
    void* entry = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuLaunchKernel", &entry, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return DriverLaunch{};
    }
    return reinterpret_cast<DriverLaunch>(entry);
  }();
  return launch;
}

void* Context::workspace(size_t bytes) {
  if (workspace_.size() < bytes) {
    workspace_ = Buffer();  // back to the pool first, so the larger block may reuse it
    workspace_ = Buffer(bytes);
  }
  return workspace_.get();
}

DeviceFault* Context::fault(FaultMessage message) {
  if (pending_.size() == kFaultSlots) collect_faults();  // rare: many ops and no read
  pending_.push_back({std::move(message), current_trace()});
  return fault_dev_ + (pending_.size() - 1);
}

void Context::queue(const SmallMap& op) {
  small_maps_.ops[small_maps_.count++] = op;
  if (small_maps_.count == kSmallMaps) flush();
}

void Context::flush() {
  if (small_maps_.count == 0) return;
  const SmallMaps q = small_maps_;
  small_maps_.count = 0;  // empty afterwards, launched or not
  launch_small_maps(q);
}

void Context::sync() {
  collect_faults();
  if (fault_error_) std::rethrow_exception(std::exchange(fault_error_, nullptr));
}

// Waits for the stream and keeps the first fault the pending records hold; frees them all.
void Context::collect_faults() {
  flush();  // queued ops may hold fault records
  const size_t n = pending_.size();
  if (n)
    CUDA_CHECK(cudaMemcpyAsync(fault_host_, fault_dev_, n * sizeof(DeviceFault),
                               cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaStreamSynchronize(stream));
  bool any = false;
  for (size_t i = 0; i < n; ++i) {
    const DeviceFault& f = fault_host_[i];
    if (!f.set) continue;
    any = true;
    if (fault_error_) continue;
    PendingFault& p = pending_[i];
    fault_error_ =
        std::make_exception_ptr(detail::error_in(p.message(f.code, f.value), std::move(p.trace)));
  }
  pending_.clear();
  // Records that reported are zeroed for their next ops (queued before any of them).
  if (any) CUDA_CHECK(cudaMemsetAsync(fault_dev_, 0, n * sizeof(DeviceFault), stream));
}

Buffer::Buffer(size_t bytes) : bytes_(bytes) {
  if (!current) fail("no CUDA device is current (internal: scratch memory outside an op)");
  owner_ = &current->allocator;
  stream_ = current->context.stream;
  ptr_ = owner_->allocate(bytes, stream_);
}
Buffer::~Buffer() {
  if (ptr_) owner_->free(ptr_, bytes_, stream_);
}
Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) owner_->free(ptr_, bytes_, stream_);
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    owner_ = o.owner_;
    stream_ = o.stream_;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

// ---- the backend ----

namespace {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(Device& d) : dev_(d) {}

  std::string name() const override { return "cuda:" + std::to_string(dev_.context.device); }

  std::shared_ptr<Storage> allocate(size_t nbytes) override {
    DeviceGuard guard(dev_);  // running out of memory launches the queued small ops
    void* p = dev_.allocator.allocate(nbytes, dev_.context.stream);
    return std::make_shared<Storage>(p, nbytes, this);
  }
  void deallocate(void* data, size_t nbytes) override {
    dev_.allocator.free(data, nbytes, dev_.context.stream);
  }

  void run(const Op& op, In in, Out out) override {
    DeviceGuard guard(dev_);
    const Family family = family_of(op.kind);
    // Elementwise ops are each one map, queued or launched after the queue (elementwise.cu);
    // anything else is queued on the stream behind the queued ops.
    if (family != Family::elementwise) dev_.context.flush();
    if (OpProfile* p = op_profile()) {
      ProfileScope scope(*p, p->row(op.kind, in), dev_.context.stream);
      return route(family, op, in, out);
    }
    route(family, op, in, out);
  }

  static void route(Family family, const Op& op, In in, Out out) {
    switch (family) {
      case Family::creation:
        return run_creation(op, in, out);
      case Family::elementwise:
        return run_elementwise(op, in, out);
      case Family::reduce:
        return run_reduce(op, in, out);
      case Family::axis:
        return run_axis(op, in, out);
      case Family::matmul:
        return run_matmul(op, in, out);
      case Family::indexing:
        return run_indexing(op, in, out);
      case Family::conv:
        return run_conv(op, in, out);
      case Family::channel_sum:
        return run_channel_sum(op, in, out);
      case Family::pool:
        return run_pool(op, in, out);
      case Family::norm:
        return run_norm(op, in, out);
      case Family::embedding:
        return run_embedding(op, in, out);
      case Family::loss:
        return run_loss(op, in, out);
      case Family::optim:
        return run_optim(op, in, out);
    }
  }

  void read(const Array& a, void* host) override {
    DeviceGuard guard(dev_);
    const size_t nbytes = static_cast<size_t>(a.numel()) * itemsize(a.dtype);
    if (nbytes == 0) return;
    dev_.context.flush();
    cudaStream_t s = dev_.context.stream;
    if (a.is_contiguous()) {
      CUDA_CHECK(cudaMemcpyAsync(host, a.raw(), nbytes, cudaMemcpyDeviceToHost, s));
    } else {
      Buffer tmp(nbytes);
      Array dst{std::make_shared<Storage>(tmp.get(), 0, nullptr), a.shape,
                contiguous_strides(a.shape), 0, a.dtype};
      copy_to_contiguous(a, dst);
      CUDA_CHECK(cudaMemcpyAsync(host, tmp.get(), nbytes, cudaMemcpyDeviceToHost, s));
    }
    dev_.context.sync();
  }

  void write(const void* host, size_t nbytes, Storage& dst) override {
    DeviceGuard guard(dev_);
    if (nbytes == 0) return;
    dev_.context.flush();  // dst's memory may be a queued op's until then
    if (nbytes <= (size_t{64} << 10)) {
      // Small: the driver stages pageable memory itself and returns once it has read it.
      CUDA_CHECK(
          cudaMemcpyAsync(dst.data, host, nbytes, cudaMemcpyHostToDevice, dev_.context.stream));
    } else {
      dev_.uploads.copy(dst.data, host, nbytes, dev_.context.stream);
    }
  }

  void synchronize() override {
    DeviceGuard guard(dev_);
    dev_.context.sync();
  }

  MemoryStats memory_stats() const override { return dev_.allocator.stats(); }

  void reset_profile() override {
    if (OpProfile* p = op_profile()) p->reset();
  }
  void report_profile(const std::string& title) override {
    if (OpProfile* p = op_profile()) {
      p->report(title.c_str());
      p->reset();
    }
  }

 private:
  Device& dev_;
};

Device& open_device(int d) {
  CUDA_CHECK(cudaSetDevice(d));
  thread_device = d;
  auto* dev = new Device(d);  // lives as long as the process: tensors may outlive any static
  Context& c = dev->context;
  dev->allocator.set_before_release([&c] { c.flush(); });
  dev->uploads.init();
  return *dev;
}

}  // namespace

}  // namespace crisp::cuda

namespace crisp {

bool Backend::cuda_available() { return cuda::device_count() > 0; }

std::shared_ptr<Backend> Backend::cuda(int device, Loc loc) {
  CallScope scope("Backend::cuda", loc);
  static std::mutex mutex;
  static std::shared_ptr<Backend>* backends[cuda::kMaxDevices] = {};
  const int count = cuda::device_count();
  if (count == 0) fail("no CUDA device is available");
  if (device < 0 || device >= count || device >= cuda::kMaxDevices)
    fail("CUDA device ", device, " is out of range: ", count, " device", count == 1 ? "" : "s",
         " available");
  std::lock_guard lock(mutex);
  if (!backends[device]) {
    cuda::Device& d = cuda::open_device(device);
    backends[device] = new std::shared_ptr<Backend>(std::make_shared<cuda::CudaBackend>(d));
  }
  return *backends[device];
}

}  // namespace crisp
