// Scratch device memory for the kernels of one op, from the current device's caching allocator.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace crisp::cuda {

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

}  // namespace crisp::cuda
