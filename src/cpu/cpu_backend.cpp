// The CPU backend: host memory, and the routing of each op family to its kernels.
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>
#include <optional>

#include "core/thread_pool.h"
#include "cpu/kernels.h"
#include "cpu/loops.h"
#include "kernels/families.h"

namespace crisp {

namespace {

// Large blocks are kept for reuse: fresh pages from the OS cost a fault per 4 KiB, which for a
// 64 MiB tensor is as much as an elementwise pass over it.
class BlockCache {
 public:
  static constexpr size_t kMin = size_t{1} << 18;
  static constexpr size_t kMaxCached = size_t{1} << 31;

  void* take(size_t nbytes) {
    std::lock_guard lock(mutex_);
    auto it = free_.find(nbytes);
    if (it == free_.end()) return nullptr;
    void* p = it->second;
    free_.erase(it);
    cached_ -= nbytes;
    return p;
  }
  bool give(void* p, size_t nbytes) {
    std::lock_guard lock(mutex_);
    if (cached_ + nbytes > kMaxCached) return false;
    free_.emplace(nbytes, p);
    cached_ += nbytes;
    return true;
  }

 private:
  std::mutex mutex_;
  std::multimap<size_t, void*> free_;
  size_t cached_ = 0;
};

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  bool is_cpu() const override { return true; }

  std::shared_ptr<Storage> allocate(size_t nbytes) override {
    if (nbytes <= sizeof(Storage::small)) {
      auto s = std::make_shared<Storage>(nullptr, nbytes, this);
      s->data = s->small;  // freed with the Storage itself
      return s;
    }
    const size_t rounded = (std::max<size_t>(nbytes, 1) + 63) & ~size_t{63};
    void* p = rounded >= BlockCache::kMin ? cache_.take(rounded) : nullptr;
    if (!p) p = std::aligned_alloc(64, rounded);
    if (!p) throw std::bad_alloc();
    return std::make_shared<Storage>(p, rounded, this);
  }
  void deallocate(void* data, size_t nbytes) override {
    if (nbytes >= BlockCache::kMin && cache_.give(data, nbytes)) return;
    std::free(data);
  }

  void run(const Op& op, std::span<const Array> in, std::span<Array> out) override {
    // Only ops big enough to feel denormal slowdowns pay for switching the FPU mode.
    std::optional<FlushDenormals> flush;
    if (!out.empty() && out[0].numel() >= 4096) flush.emplace();
    switch (family_of(op.kind)) {
      case Family::creation:
        return cpu::run_creation(op, in, out);
      case Family::elementwise:
        return cpu::run_elementwise(op, in, out);
      case Family::reduce:
        return cpu::run_reduce(op, in, out);
      case Family::axis:
        return cpu::run_axis(op, in, out);
      case Family::matmul:
        return cpu::run_matmul(op, in, out);
      case Family::indexing:
        return cpu::run_indexing(op, in, out);
      case Family::conv:
        return cpu::run_conv(op, in, out);
      case Family::channel_sum:
        return cpu::run_channel_sum(op, in, out);
      case Family::pool:
        return cpu::run_pool(op, in, out);
      case Family::norm:
        return cpu::run_norm(op, in, out);
      case Family::embedding:
        return cpu::run_embedding(op, in, out);
      case Family::loss:
        return cpu::run_loss(op, in, out);
      case Family::optim:
        return cpu::run_optim(op, in, out);
    }
  }

  void read(const Array& a, void* host) override {
    if (a.is_contiguous()) {
      std::memcpy(host, a.raw(), static_cast<size_t>(a.numel()) * itemsize(a.dtype));
      return;
    }
    Array dst{nullptr, a.shape, contiguous_strides(a.shape), 0, a.dtype};
    dst.storage = std::make_shared<Storage>(host, 0, nullptr);  // borrowed: not freed
    cpu::copy_to_contiguous(a, dst);
  }
  void write(const void* host, size_t nbytes, Storage& dst) override {
    std::memcpy(dst.data, host, nbytes);
  }

 private:
  BlockCache cache_;
};

}  // namespace

std::shared_ptr<Backend> Backend::cpu() {
  // Never destroyed: tensors in static storage may outlive any other static.
  static auto* b = new std::shared_ptr<Backend>(std::make_shared<CpuBackend>());
  return *b;
}

}  // namespace crisp
