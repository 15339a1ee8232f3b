// The host's worker threads for parallel work (the CPU backend's kernels run on them; the data
// loader's workers keep off them). Workers spin briefly for new work, then sleep, so that an idle
// pool never competes for cores with other work (BLAS, other processes).
#pragma once

#include <cstdint>
#include <functional>

namespace crisp {

// The number of threads parallel work is spread over (CRISP_NUM_THREADS, else the core count).
int num_threads();
// True on a pool worker, or on a thread already running parallel work.
bool in_parallel();
// Runs task(i) for every i in [0, tasks) across the pool and the calling thread; returns when
// all are done. Nested calls, and calls while another thread uses the pool, run serially.
void run_parallel(int64_t tasks, const std::function<void(int64_t)>& task);

// Runs the parallel work this thread starts on this thread alone, for the scope's lifetime. For
// helper threads such as data-loader workers: their small jobs would otherwise hold the pool
// while the training thread's ops, finding it taken, ran serially.
class SerialScope {
 public:
  SerialScope();
  ~SerialScope();
  SerialScope(const SerialScope&) = delete;
  SerialScope& operator=(const SerialScope&) = delete;

 private:
  bool saved_;
};

// Keeps libraries that thread through OpenMP (Debian's oneDNN) on the calling thread for the
// scope's lifetime, restoring the thread's setting after. Their idle OpenMP workers would spin
// for milliseconds after each call, competing with this pool for the cores; instead the pool
// splits such work itself. available() is false where no OpenMP runtime was found to ask (the
// libraries then thread as they like, and callers should not split their work).
class SerialOpenMp {
 public:
  SerialOpenMp();
  ~SerialOpenMp();
  SerialOpenMp(const SerialOpenMp&) = delete;
  SerialOpenMp& operator=(const SerialOpenMp&) = delete;
  static bool available();

 private:
  int saved_ = 0;
};

// Treats denormal floats as zero on this thread for the scope's lifetime. Arithmetic on
// denormals is ~100x slower on x86, and values that small are noise in training; PyTorch's
// set_flush_denormal does the same. Pool workers run with it always on.
class FlushDenormals {
 public:
  FlushDenormals();
  ~FlushDenormals();
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  unsigned saved_ = 0;
};

}  // namespace crisp
