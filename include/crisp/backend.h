// The backend interface: storage, the strided arrays a backend computes on, op descriptors.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "crisp/dtype.h"
#include "crisp/error.h"
#include "crisp/shape.h"

namespace crisp {

// Shape: see shape.h.

class Backend;

// A block of memory owned by a backend; freed through it when the last array lets go.
struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Backend* backend = nullptr;
  // Room for a few elements, so a small CPU tensor costs one allocation, not two.
  alignas(16) unsigned char small[64];
  Storage(void* d, size_t n, Backend* b) : data(d), nbytes(n), backend(b) {}
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
};

// A strided view of storage: what kernels read and write. Strides count elements.
struct Array {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;
  int64_t offset = 0;
  DType dtype = DType::f32;

  int64_t numel() const;
  int64_t ndim() const { return static_cast<int64_t>(shape.size()); }
  bool is_contiguous() const;
  template <class T>
  T* data() const {
    return static_cast<T*>(storage->data) + offset;
  }
  void* raw() const { return static_cast<char*>(storage->data) + offset * itemsize(dtype); }
};

Shape contiguous_strides(const Shape& shape);
int64_t numel_of(const Shape& shape);
// a with its axes in order: the same memory seen another way.
Array permuted(const Array& a, std::span<const int64_t> order);
// The channels-last layout's axis orders for [N, C, *spatial] of ndim axes: to the stored order
// [N, *spatial, C] ({0, 2, ..., ndim - 1, 1}) and back ({0, ndim - 1, 1, ..., ndim - 2}).
std::vector<int64_t> channels_last_order(int64_t ndim);
std::vector<int64_t> channels_first_order(int64_t ndim);

// Every primitive a backend implements (the list and its families: op_kinds.inc).
enum class OpKind : uint16_t {
#define CRISP_OP(name) name,
#include "crisp/op_kinds.inc"
#undef CRISP_OP
};

// An op as data: what the one dispatch point hands a backend.
struct Op {
  OpKind kind;
  std::vector<int64_t> ints = {};
  std::vector<double> reals = {};
};

const char* op_name(OpKind k);

// One parameter's operands in an optimizer update op (op_kinds.inc).
struct ParamOperands {
  std::span<const Array> in;
  std::span<Array> out;
};
// Splits the operands of an update op over its `count` parameters (the count its attributes
// carry), checking them as the kernels read them; throws when the front end handed something else.
std::vector<ParamOperands> optim_operands(const Op& op, int64_t count, std::span<const Array> in,
                                          std::span<Array> out);

// Device memory of a backend, in bytes: held by live tensors, reserved from the device (live
// plus cached for reuse), and the most ever held at once.
struct MemoryStats {
  size_t allocated = 0, reserved = 0, peak = 0;
};

// Whether float32 matmul and convolution may round their inputs to TF32 on GPUs that have it
// (faster, about 1e-3 relative error). Off by default: float32 results stay float32-accurate.
void set_allow_tf32(bool allow);
bool allow_tf32();

class Backend : public std::enable_shared_from_this<Backend> {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  virtual bool is_cpu() const { return false; }

  // Memory. allocate returns storage whose deleter calls deallocate.
  virtual std::shared_ptr<Storage> allocate(size_t nbytes) = 0;
  virtual void deallocate(void* data, size_t nbytes) = 0;

  // The one dispatch point: computes `out` (allocated, contiguous) from `in`. Throwing here
  // records the error on the outputs; it is raised when they are read.
  virtual void run(const Op& op, std::span<const Array> in, std::span<Array> out) = 0;

  // Copies a (possibly strided) array into contiguous host memory, waiting for it. A fault an
  // earlier op's kernels found on the device (CUDA: a bad index or target, an integer division
  // by zero) is raised by the next read or synchronize on that device, whatever it reads, with
  // the faulting op's message and trace; then the device goes on as before.
  virtual void read(const Array& a, void* host) = 0;
  // Copies contiguous host memory into this backend's storage.
  virtual void write(const void* host, size_t nbytes, Storage& dst) = 0;
  // Waits until everything queued so far has finished.
  virtual void synchronize() {}
  // Memory statistics (zero where the backend keeps none).
  virtual MemoryStats memory_stats() const { return {}; }
  // With CRISP_PROFILE=1 in the environment the CUDA backend times every op and prints a table
  // (GPU and host time per op kind) at exit; this forgets what was timed so far (warm-up).
  virtual void reset_profile() {}
  // Prints the table of the ops timed since the last reset under a title, then resets.
  virtual void report_profile(const std::string& /*title*/) {}

  static std::shared_ptr<Backend> cpu();
  // Throws crisp::Error (naming the caller's line) when CUDA is unavailable or device is out of
  // range.
  static std::shared_ptr<Backend> cuda(int device = 0, Loc loc = Loc::current());
  static bool cuda_available();
  // The backend ops use on this thread: the innermost scope, else the default.
  static std::shared_ptr<Backend> current();
  // The process-wide default (CPU unless set).
  static void set_default(std::shared_ptr<Backend> backend);

  // Runs f with this backend as the current one on this thread.
  template <class F>
  decltype(auto) use(F&& f);
};

// Makes a backend current on this thread for the scope's lifetime.
class BackendScope {
 public:
  explicit BackendScope(std::shared_ptr<Backend> backend);
  ~BackendScope();
  BackendScope(const BackendScope&) = delete;
  BackendScope& operator=(const BackendScope&) = delete;

 private:
  std::shared_ptr<Backend> previous_;
};

template <class F>
decltype(auto) Backend::use(F&& f) {
  BackendScope scope(shared_from_this());
  return std::forward<F>(f)();
}

}  // namespace crisp
