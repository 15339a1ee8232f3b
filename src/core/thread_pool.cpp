// A small fork-join thread pool: one job at a time, tasks handed out by an atomic counter.
#include "core/thread_pool.h"

#include <dlfcn.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace crisp {

namespace {

thread_local bool inside = false;

// How long a waiting thread polls before it sleeps: long enough to catch the next op of a
// training step, short enough not to steal a core from BLAS or another process.
constexpr int kSpins = 20000;

class Pool {
 public:
  explicit Pool(int size) : size_(size) {
    for (int i = 1; i < size_; ++i) std::thread([this] { work(); }).detach();
  }
  int size() const { return size_; }

  void run(int64_t tasks, const std::function<void(int64_t)>& task) {
    std::unique_lock busy(job_mutex_, std::try_to_lock);
    if (!busy.owns_lock() || size_ == 1) {
      for (int64_t i = 0; i < tasks; ++i) task(i);
      return;
    }
    task_ = &task;
    tasks_ = tasks;
    next_.store(0, std::memory_order_relaxed);
    pending_.store(size_ - 1, std::memory_order_relaxed);
    {
      std::lock_guard lock(mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    inside = true;
    take_tasks();
    inside = false;
    // Wait for the workers to finish their tasks and let go of task_.
    for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
      if (spin < kSpins) continue;
      std::unique_lock lock(mutex_);
      done_.wait(lock, [&] { return pending_.load(std::memory_order_acquire) == 0; });
    }
  }

 private:
  void take_tasks() {
    for (int64_t i; (i = next_.fetch_add(1, std::memory_order_relaxed)) < tasks_;) (*task_)(i);
  }

  void work() {
    inside = true;
    FlushDenormals flush;
    uint64_t seen = 0;
    while (true) {
      uint64_t g;
      for (int spin = 0; (g = generation_.load(std::memory_order_acquire)) == seen; ++spin) {
        if (spin < kSpins) continue;
        std::unique_lock lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      }
      seen = g;
      take_tasks();
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard lock(mutex_);
        done_.notify_one();
      }
    }
  }

  const int size_;
  std::mutex job_mutex_;  // one job at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<int> pending_{0};
  const std::function<void(int64_t)>* task_ = nullptr;
  int64_t tasks_ = 0;
};

int configured_threads() {
  if (const char* env = std::getenv("CRISP_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

Pool& pool() {
  // Never destroyed: its detached workers outlive static destruction.
  static Pool* p = new Pool(configured_threads());
  return *p;
}

}  // namespace

#if defined(__SSE__)
// MXCSR bits: flush-to-zero (results) and denormals-are-zero (inputs).
constexpr unsigned kFlushBits = 0x8040;
FlushDenormals::FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFlushBits); }
FlushDenormals::~FlushDenormals() { _mm_setcsr(saved_); }
#else
FlushDenormals::FlushDenormals() {}
FlushDenormals::~FlushDenormals() {}
#endif

namespace {

// The OpenMP runtime some libraries bring, found at run time: crisp itself does not link it.
struct OpenMp {
  int (*get_max_threads)() = nullptr;
  void (*set_num_threads)(int) = nullptr;
};

const OpenMp& openmp() {
  static const OpenMp omp = [] {
    OpenMp o;
    o.get_max_threads = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
    o.set_num_threads = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    if (!o.get_max_threads || !o.set_num_threads) o = OpenMp{};
    return o;
  }();
  return omp;
}

}  // namespace

bool SerialOpenMp::available() { return openmp().set_num_threads != nullptr; }

SerialOpenMp::SerialOpenMp() {
  if (!available()) return;
  saved_ = openmp().get_max_threads();
  if (saved_ != 1) openmp().set_num_threads(1);
}

SerialOpenMp::~SerialOpenMp() {
  if (saved_ > 1) openmp().set_num_threads(saved_);
}

SerialScope::SerialScope() : saved_(inside) { inside = true; }
SerialScope::~SerialScope() { inside = saved_; }

int num_threads() { return pool().size(); }
bool in_parallel() { return inside; }

void run_parallel(int64_t tasks, const std::function<void(int64_t)>& task) {
  if (tasks <= 1 || inside) {
    for (int64_t i = 0; i < tasks; ++i) task(i);
    return;
  }
  pool().run(tasks, task);
}

}  // namespace crisp
