// The CUDA backend: one per device, with its stream, library handles and caching allocator; the
// routing of each op family to its kernels; host transfers.
#include <array>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "cuda/allocator.h"
#include "cuda/common.cuh"
#include "cuda/profile.h"

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
  explicit Device(int d) : allocator(d) {}
};

Device* devices[kMaxDevices] = {};
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

}  // namespace

Context& ctx() {
  if (!current) fail("no CUDA device is current (internal: a kernel ran outside an op)");
  return current->context;
}
Context& ctx(int device) { return devices[device]->context; }

bool tf32_enabled() { return allow_tf32(); }

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

// ---- strided layouts ----

namespace {

void push_axis(Strided& s, int64_t n, int64_t st) {
  if (n == 1) return;
  if (s.nd > 0 && s.strides[s.nd - 1] == st * n) {
    s.shape[s.nd - 1] *= n;
    s.strides[s.nd - 1] = st;
    return;
  }
  if (s.nd == kMaxDims)
    fail("arrays of more than ", kMaxDims, " dimensions are not supported on CUDA");
  s.shape[s.nd] = n;
  s.strides[s.nd] = st;
  ++s.nd;
}

}  // namespace

Strided strided(const Array& a) { return strided(a, a.shape); }

Strided strided(const Array& a, const Shape& shape) {
  Strided s{};
  s.offset = a.offset;
  const size_t lead = shape.size() - a.shape.size();
  for (size_t d = 0; d < shape.size(); ++d) {
    const bool own = d >= lead && a.shape[d - lead] == shape[d];
    push_axis(s, shape[d], own ? a.strides[d - lead] : 0);
  }
  return s;
}

void strided_together(const Shape& shape, std::span<const Array* const> arrays, Strided* out) {
  const size_t n = arrays.size();
  std::vector<std::array<int64_t, 2>> tmp;
  for (size_t k = 0; k < n; ++k) {
    out[k] = Strided{};
    out[k].offset = arrays[k]->offset;
  }
  int nd = 0;
  auto stride_of = [&](size_t k, size_t d) -> int64_t {
    const Array& a = *arrays[k];
    const size_t lead = shape.size() - a.shape.size();
    return d >= lead && a.shape[d - lead] == shape[d] ? a.strides[d - lead] : 0;
  };
  for (size_t d = 0; d < shape.size(); ++d) {
    const int64_t len = shape[d];
    if (len == 1) continue;
    bool merge = nd > 0;
    for (size_t k = 0; k < n && merge; ++k) merge = out[k].strides[nd - 1] == stride_of(k, d) * len;
    if (merge) {
      for (size_t k = 0; k < n; ++k) {
        out[k].shape[nd - 1] *= len;
        out[k].strides[nd - 1] = stride_of(k, d);
      }
      continue;
    }
    if (nd == kMaxDims)
      fail("arrays of more than ", kMaxDims, " dimensions are not supported on CUDA");
    for (size_t k = 0; k < n; ++k) {
      out[k].shape[nd] = len;
      out[k].strides[nd] = stride_of(k, d);
    }
    ++nd;
  }
  for (size_t k = 0; k < n; ++k) out[k].nd = nd;
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
    // Elementwise ops are each one map, queued or launched after the queue (elementwise.cu);
    // anything else is queued on the stream behind the queued ops.
    if (op.kind < OpKind::creation_end || op.kind >= OpKind::elementwise_end) dev_.context.flush();
    if (OpProfile* p = op_profile()) {
      ProfileScope scope(*p, p->row(op.kind, in), dev_.context.stream);
      return route(op, in, out);
    }
    route(op, in, out);
  }

  static void route(const Op& op, In in, Out out) {
    const OpKind k = op.kind;
    if (k < OpKind::creation_end) return creation(op, in, out);
    if (k < OpKind::elementwise_end) return elementwise(op, in, out);
    if (k < OpKind::reduce_end) return reduce(op, in, out);
    if (k < OpKind::axis_end) return along_axis(op, in, out);
    if (k < OpKind::linalg_end) return linalg(op, in, out);
    if (k < OpKind::indexing_end) return indexing(op, in, out);
    if (k < OpKind::nn_end) return nn(op, in, out);
    return optim(op, in, out);
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
  auto* dev = new Device(d);  // lives as long as the process: tensors may outlive any static
  Context& c = dev->context;
  c.device = d;
  CUDA_CHECK(cudaSetDevice(d));
  thread_device = d;
  CUDA_CHECK(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking));
  CUBLAS_CHECK(cublasCreate(&c.cublas));
  CUBLAS_CHECK(cublasSetStream(c.cublas, c.stream));
  CUBLAS_CHECK(cublasLtCreate(&c.cublaslt));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, d));
  c.sm_count = prop.multiProcessorCount;
  c.shared_per_block_optin = prop.sharedMemPerBlockOptin;
  const size_t fault_bytes = Context::kFaultSlots * sizeof(DeviceFault);
  CUDA_CHECK(cudaMalloc(&c.fault_dev_, fault_bytes));
  CUDA_CHECK(cudaMemsetAsync(c.fault_dev_, 0, fault_bytes, c.stream));
  CUDA_CHECK(cudaMallocHost(&c.fault_host_, fault_bytes));
  c.pending_.reserve(Context::kFaultSlots);
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
    cuda::devices[device] = &d;
    backends[device] = new std::shared_ptr<Backend>(std::make_shared<cuda::CudaBackend>(d));
  }
  return *backends[device];
}

}  // namespace crisp
