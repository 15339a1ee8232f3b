// Per-op time on the GPU and on the host, for finding where a CUDA program spends its time.
// Set CRISP_PROFILE=1 and the process prints a table to stderr at exit: for each op kind the
// calls, the GPU time between events recorded around its kernels, and the host time to issue
// them. Each convolution pass also prints its plan (cuDNN or GEMM, with both timings) when it
// is chosen. Events cost a little and results are gathered in batches (a stream synchronization per
// batch), so profiled runs are somewhat slower than plain ones.
#pragma once

#include <cuda_runtime.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <vector>

#include "crisp/backend.h"

namespace crisp::cuda {

class OpProfile {
 public:
  cudaEvent_t event();
  void add(OpKind kind, cudaEvent_t start, cudaEvent_t stop, double host_us);
  void reset();  // forgets the ops timed so far
  void report(const char* title = "CUDA");

 private:
  struct Pending {
    OpKind kind;
    cudaEvent_t start, stop;
    double host_us;
  };
  struct Row {
    int64_t calls = 0;
    double gpu_ms = 0, host_us = 0;
  };
  void gather();

  std::mutex mutex_;
  std::vector<Pending> pending_;
  std::vector<cudaEvent_t> free_;
  std::vector<Row> rows_;
};

// nullptr unless CRISP_PROFILE is set.
OpProfile* op_profile();

// Times one op: events around everything it queues on the stream.
class ProfileScope {
 public:
  ProfileScope(OpProfile& p, OpKind kind, cudaStream_t stream);
  ~ProfileScope();
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  OpProfile& profile_;
  OpKind kind_;
  cudaStream_t stream_;
  cudaEvent_t start_ = nullptr;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace crisp::cuda
