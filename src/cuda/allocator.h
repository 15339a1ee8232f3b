// The CUDA caching allocator: device blocks rounded to size classes and kept for reuse per
// stream, so steady-state training calls cudaMalloc/cudaFree (which synchronize) almost never.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "crisp/backend.h"

namespace crisp::cuda {

class CachingAllocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}

  // A block of at least `bytes` for work queued on `stream` (nullptr for 0 bytes). Blocks are
  // reused in stream order: a freed block goes back to its stream's pool at once, since any
  // later use on that stream runs after every earlier use. Throws std::bad_alloc when the
  // device is out of memory even after the cache is given back.
  void* allocate(size_t bytes, cudaStream_t stream);
  // Returns a block of allocate(bytes, stream) to the cache.
  void free(void* p, size_t bytes, cudaStream_t stream);
  // Gives every cached (unused) block back to the device.
  void release_cache();
  // Called before cached blocks are given back: work not yet queued on the stream may still
  // use them (the backend launches its queued small ops here).
  void set_before_release(std::function<void()> f) { before_release_ = std::move(f); }
  MemoryStats stats() const;

  // The size class of a request: multiples of a quarter of its power of two (512 B at least),
  // so a block serves any request of its class and wastes under 25%.
  static size_t round(size_t bytes);

 private:
  struct Cached {
    void* p;
    cudaStream_t stream;
  };
  void release_cache_locked();

  int device_;
  std::function<void()> before_release_;
  mutable std::mutex mutex_;
  // Cached blocks by size class. Callers say each block's size when freeing it, so no map of
  // live blocks is kept, and in steady state neither call allocates host memory.
  std::unordered_map<size_t, std::vector<Cached>> free_;
  MemoryStats stats_;
};

}  // namespace crisp::cuda
