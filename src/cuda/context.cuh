// The per-device context of the CUDA backend: the stream every op is queued on, the library
// handles, the scratch workspace, the fault records and the queue of small elementwise ops.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <vector>

#include "crisp/error.h"
#include "cuda/buffer.cuh"
#include "cuda/errors.cuh"

namespace crisp::cuda {

// ---- small elementwise ops, queued ----
// An elementwise op on a few elements takes the GPU well under a microsecond but the host a
// whole kernel launch (3-4 us on an H200's host). So such ops wait in their device's queue and
// run up to kSmallMaps at a time, in order, in one launch of one block (elementwise.cu): at
// the next op that is not one of them, at any read, write or synchronize, and when the queue is
// full. An op's function is a device function pointer, its functor's bytes travel with it.
inline constexpr int64_t kSmallMapElements = 4096;
inline constexpr int kSmallMaps = 32;
using SmallMapFn = void (*)(void* out, const void* a, const void* b, const void* c, int n,
                            unsigned scalar, uint64_t f0, uint64_t f1, uint64_t f2);
struct SmallMap {
  SmallMapFn fn;
  void* out;
  const void* in[3];
  uint64_t functor[3];
  int n;
  unsigned scalar;  // bit k: input k is one value, broadcast
};
struct SmallMaps {
  int count;
  SmallMap ops[kSmallMaps];
};
// Runs a queue's ops, in order, in one launch (elementwise.cu, beside the ops' functions).
void launch_small_maps(const SmallMaps& q);

// Every op on a device is queued on its one stream, so kernels, library calls, the caching
// allocator's reuse and the scratch workspace are ordered without further synchronization
// (uploads from the host use a second stream, joined by events: backend.cu). Used under the
// device's mutex (one op at a time per device).
class Context {
 public:
  // The context of device d, which must be this thread's current device: creates its stream,
  // library handles and fault records.
  explicit Context(int d);
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // Fixed when the context is created.
  const int device;
  const cudaStream_t stream;
  const cublasHandle_t cublas;
  const cublasLtHandle_t cublaslt;
  const int sm_count;
  const size_t shared_per_block_optin;

  // Created on first use (cuDNN's initialization is slow and most programs need no conv).
  cudnnHandle_t cudnn();
  // Scratch memory valid until the next workspace() call on this device; grows as needed.
  // Ordered by the stream, so an op may use it for the whole of its kernels.
  void* workspace(size_t bytes);
  // A zeroed fault record for one op's kernels, checked without blocking the host: the next
  // sync() on this device raises crisp::Error("<op>: " + message(code, value)) with the op's
  // trace (captured here) if the kernels reported. So a device-detected fault is raised at the
  // next read or synchronize on the device, whichever tensor it reads, not only on the op's
  // outputs; the first (oldest) fault wins and the others found with it are dropped.
  DeviceFault* fault(FaultMessage message);
  // Waits for the stream, then raises the first fault recorded since the last sync(), if any.
  void sync();
  // Appends a small op to the queue, which runs when full.
  void queue(const SmallMap& op);
  // Launches the queued small ops (before anything else is queued on the stream).
  void flush();

 private:
  Context(int d, const cudaDeviceProp& prop);
  void collect_faults();

  struct PendingFault {
    FaultMessage message;
    std::vector<Frame> trace;
  };
  // Records in flight at most: when all are pending, the next fault() waits for the stream.
  static constexpr size_t kFaultSlots = 1024;
  cudnnHandle_t cudnn_ = nullptr;
  Buffer workspace_;
  DeviceFault* fault_dev_ = nullptr;   // kFaultSlots records; pending_[i] owns record i
  DeviceFault* fault_host_ = nullptr;  // their pinned mirror
  std::vector<PendingFault> pending_;
  std::exception_ptr fault_error_;  // the first fault found, until sync() raises it
  SmallMaps small_maps_{};
};

// The context of the device the current op runs on (set by the backend around each op).
Context& ctx();

}  // namespace crisp::cuda
