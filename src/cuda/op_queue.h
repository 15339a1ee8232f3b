// A device's ops, run in the order issued on a thread of their own. Issuing an op only queues
// it, so the caller's next op (its shape checks, autograd record and allocation) overlaps this
// one's kernel launches, which cost several microseconds each on some hosts. Reads and
// synchronization wait for the queue first (drain).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <vector>

#include "crisp/backend.h"
#include "crisp/error.h"

namespace crisp::cuda {

class OpQueue {
 public:
  // One queued op with what the worker needs of its caller's state.
  struct Task {
    Op op;
    std::vector<Array> arrays;  // the inputs, then the outputs: holds their memory until it ran
    size_t inputs = 0;
    std::vector<Frame> trace;  // the issuing call's, for the errors the op raises
    bool tf32 = false;         // allow_tf32() when it was issued

    std::span<const Array> in() const { return {arrays.data(), inputs}; }
    std::span<Array> out() { return {arrays.data() + inputs, arrays.size() - inputs}; }
  };

  // Starts the worker thread, which calls run for each task; run must not throw. The queue
  // lives as long as the process (the thread is never joined).
  explicit OpQueue(std::function<void(Task&)> run);
  OpQueue(const OpQueue&) = delete;
  OpQueue& operator=(const OpQueue&) = delete;

  void push(const Op& op, std::span<const Array> in, std::span<const Array> out);
  // Returns once every op pushed before the call has run (its kernels are queued on the
  // stream, not necessarily finished).
  void drain();

 private:
  // A full queue holds this many ops: enough to smooth out the caller's uneven per-op cost,
  // few enough that the memory their inputs hold is returned soon.
  static constexpr uint64_t kSlots = 128;

  void work();
  // Waits until ready() holds: spinning for up to spin_us (the wait is usually shorter than
  // a sleep and wake-up), then asleep until the worker's next notification.
  template <class Ready>
  void wait_until(Ready ready, int spin_us);

  std::function<void(Task&)> run_;
  std::vector<Task> slots_;
  std::mutex mutex_;              // pushes, and sleeping on the condition variables
  std::condition_variable work_;  // the worker waits for ops
  std::condition_variable done_;  // callers wait for room or for the queue to empty
  std::atomic<uint64_t> pushed_{0}, finished_{0};
  std::atomic<int> sleepers_{0};  // callers asleep on done_
  bool worker_asleep_ = false;    // under mutex_
};

}  // namespace crisp::cuda
