// The per-device op queue (see op_queue.h).
#include "cuda/op_queue.h"

#include <chrono>
#include <thread>

namespace crisp::cuda {

namespace {

// A polite busy-wait step: the other thread is usually a few microseconds from done.
inline void relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

}  // namespace

OpQueue::OpQueue(std::function<void(Task&)> run) : run_(std::move(run)), slots_(kSlots) {
  std::thread([this] { work(); }).detach();
}

template <class Ready>
void OpQueue::wait_until(Ready ready, int spin_us) {
  if (ready()) return;
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us);
  do {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return;
      relax();
    }
  } while (std::chrono::steady_clock::now() < until);
  // Counted before the last check, so the worker, which counts after finishing an op, either
  // sees a sleeper to wake or finished before the check below.
  sleepers_.fetch_add(1);
  {
    std::unique_lock lock(mutex_);
    done_.wait(lock, ready);
  }
  sleepers_.fetch_sub(1);
}

void OpQueue::push(const Op& op, std::span<const Array> in, std::span<const Array> out) {
  std::unique_lock lock(mutex_);
  uint64_t n = pushed_.load(std::memory_order_relaxed);
  while (n - finished_.load() >= kSlots) {
    lock.unlock();
    wait_until([&] { return n - finished_.load() < kSlots; }, 2000);
    lock.lock();
    n = pushed_.load(std::memory_order_relaxed);  // another caller may have pushed meanwhile
  }
  Task& t = slots_[n % kSlots];
  t.op.kind = op.kind;
  t.op.ints.assign(op.ints.begin(), op.ints.end());
  t.op.reals.assign(op.reals.begin(), op.reals.end());
  t.arrays.assign(in.begin(), in.end());
  t.arrays.insert(t.arrays.end(), out.begin(), out.end());
  t.inputs = in.size();
  detail::copy_trace(t.trace);
  t.tf32 = allow_tf32();
  pushed_.store(n + 1, std::memory_order_release);
  if (worker_asleep_) work_.notify_one();
}

void OpQueue::drain() {
  const uint64_t target = pushed_.load(std::memory_order_acquire);
  wait_until([&] { return finished_.load() >= target; }, 200);
}

void OpQueue::work() {
  for (uint64_t i = 0;; ++i) {
    auto has_work = [&] { return pushed_.load(std::memory_order_acquire) > i; };
    if (!has_work()) {
      // A caller issuing ops back to back pushes the next within microseconds: spin briefly
      // before sleeping, since waking a sleeping thread costs more than that.
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
      while (!has_work() && std::chrono::steady_clock::now() < until) relax();
    }
    if (!has_work()) {
      std::unique_lock lock(mutex_);
      worker_asleep_ = true;
      work_.wait(lock, has_work);
      worker_asleep_ = false;
    }
    Task& t = slots_[i % kSlots];
    run_(t);
    t.arrays.clear();  // memory back to the allocator, reused in stream order after the kernels
    finished_.store(i + 1);
    if (sleepers_.load() > 0) {
      std::lock_guard lock(mutex_);
      done_.notify_all();
    }
  }
}

}  // namespace crisp::cuda
