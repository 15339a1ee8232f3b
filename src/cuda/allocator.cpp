// The CUDA caching allocator (see allocator.h).
#include "cuda/allocator.h"

#include <bit>
#include <new>

namespace crisp::cuda {

size_t CachingAllocator::round(size_t bytes) {
  constexpr size_t kMin = 512;
  if (bytes <= kMin) return kMin;
  const size_t p = std::bit_floor(bytes);
  const size_t step = p / 4 > kMin ? p / 4 : kMin;
  return (bytes + step - 1) / step * step;
}

void* CachingAllocator::allocate(size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return nullptr;
  const size_t size = round(bytes);
  if (size < bytes) throw std::bad_alloc();  // the rounding overflowed
  std::lock_guard lock(mutex_);
  void* p = nullptr;
  std::vector<Cached>& cached = free_[size];
  for (size_t i = cached.size(); i-- > 0;) {
    if (cached[i].stream == stream) {
      p = cached[i].p;
      cached[i] = cached.back();
      cached.pop_back();
      break;
    }
  }
  if (!p) {
    if (cudaMalloc(&p, size) != cudaSuccess) {
      // Out of memory (or a size the device cannot have): clear the error so later launches
      // do not report it, give the cache back and try once more.
      (void)cudaGetLastError();
      release_cache_locked();
      if (cudaMalloc(&p, size) != cudaSuccess) {
        (void)cudaGetLastError();
        throw std::bad_alloc();
      }
    }
    stats_.reserved += size;
  }
  stats_.allocated += size;
  if (stats_.allocated > stats_.peak) stats_.peak = stats_.allocated;
  return p;
}

void CachingAllocator::free(void* p, size_t bytes, cudaStream_t stream) {
  if (!p) return;
  const size_t size = round(bytes);
  std::lock_guard lock(mutex_);
  free_[size].push_back({p, stream});
  stats_.allocated -= size;
}

void CachingAllocator::release_cache() {
  std::lock_guard lock(mutex_);
  release_cache_locked();
}

void CachingAllocator::release_cache_locked() {
  if (before_release_) before_release_();
  int previous = 0;
  cudaGetDevice(&previous);
  if (previous != device_) cudaSetDevice(device_);
  // cudaFree waits for the device, so blocks still in use by queued work are safe to free.
  for (auto& [size, cached] : free_) {
    for (const Cached& c : cached) {
      cudaFree(c.p);
      stats_.reserved -= size;
    }
    cached.clear();
  }
  if (previous != device_) cudaSetDevice(previous);
}

MemoryStats CachingAllocator::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

}  // namespace crisp::cuda
