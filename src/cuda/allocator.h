// The CUDA caching allocator: device blocks rounded to size classes and kept for reuse per
// stream, so steady-state training calls cudaMalloc/cudaFree (which synchronize) almost never.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <mutex>
#include <set>
#include <tuple>
#include <unordered_map>

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
  void free(void* p);
  // Gives every cached (unused) block back to the device.
  void release_cache();
  MemoryStats stats() const;

  // The size class of a request: multiples of a quarter of its power of two (512 B at least),
  // so a block serves any request of its class and wastes under 25%.
  static size_t round(size_t bytes);

 private:
  struct Block {
    size_t size;
    cudaStream_t stream;
  };
  void release_cache_locked();

  int device_;
  mutable std::mutex mutex_;
  std::set<std::tuple<cudaStream_t, size_t, void*>> free_;
  std::unordered_map<void*, Block> live_;
  MemoryStats stats_;
};

}  // namespace crisp::cuda
