// Per-op time on the GPU and on the host, for finding where a CUDA program spends its time.
// Set CRISP_PROFILE=1 and the process prints a table to stderr at exit: for each op kind the
// calls, the GPU time between events recorded around its kernels, and the host time to issue
// them; CRISP_PROFILE=shapes gives a row per op kind and input shapes instead. Each convolution
// pass also prints its plan (cuDNN or GEMM, with both timings) when it is chosen. Events cost a
// little and results are gathered in batches (a stream synchronization per batch), so profiled runs
// are somewhat slower than plain ones.
#pragma once

#include <cuda_runtime.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "crisp/backend.h"

namespace crisp::cuda {

class OpProfile {
 public:
  explicit OpProfile(bool by_shape) : by_shape_(by_shape) {}
  cudaEvent_t event();
  // The row an op's time goes to.
  std::string row(OpKind kind, std::span<const Array> in) const;
  void add(std::string row, cudaEvent_t start, cudaEvent_t stop, double host_us);
  void reset();  // forgets the ops timed so far
  void report(const char* title = "CUDA");

 private:
  struct Pending {
    std::string row;
    cudaEvent_t start, stop;
    double host_us;
  };
  struct Row {
    int64_t calls = 0;
    double gpu_ms = 0, host_us = 0;
  };
  void gather();

  const bool by_shape_;
  std::mutex mutex_;
  std::vector<Pending> pending_;
  std::vector<cudaEvent_t> free_;
  std::map<std::string, Row> rows_;
};

// nullptr unless CRISP_PROFILE is set.
OpProfile* op_profile();

// Times one op: events around everything it queues on the stream.
class ProfileScope {
 public:
  ProfileScope(OpProfile& p, std::string row, cudaStream_t stream);
  ~ProfileScope();
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  OpProfile& profile_;
  std::string row_;
  cudaStream_t stream_;
  cudaEvent_t start_ = nullptr;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace crisp::cuda
