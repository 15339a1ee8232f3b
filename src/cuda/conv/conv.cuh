// What the CUDA convolution strategies share: the problem in cuDNN's terms, its 2-d geometry, and
// each strategy's plan and entry points (cudnn.cu, cudnn_graph.cu, gemm.cu, direct.cu; plan.cu
// chooses among them).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "cuda/buffer.cuh"
#include "cuda/context.cuh"
#include "cuda/dtype.cuh"
#include "cuda/errors.cuh"
#include "cuda/families.cuh"
#include "cuda/gemm.cuh"
#include "cuda/launch.cuh"
#include "cuda/strided.cuh"
#include "kernels/conv.h"

namespace crisp::cuda::conv {

enum class Pass { forward, data, filter };

// A convolution in cuDNN's terms: x [N, C, in...], w [O, C/G, k...], y [N, O, out...] with at
// least two spatial dims (a 1-d convolution gains a leading one of size 1).
struct Problem {
  int nd = 2;  // spatial dims as cuDNN sees them
  std::vector<int> x, w, y, stride, pad, dil;
  int groups = 1;
  DType dtype = DType::f32;
  bool nhwc = false;  // x, w and y stored channels-last (2-d only)
  double flops = 0;
};

// The problem of a pass whose x, w and y have these shapes, in [N, C, *] order wherever stored.
Problem problem(const ConvAttrs& a, const Shape& xs, const Shape& ws, const Shape& ys, DType dtype);

// A 2-d convolution (1-d as height 1) whose input and output index in 32 bits.
struct Geom {
  int n, c, h, w, o, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, groups;
  __host__ __device__ int64_t positions() const { return int64_t{n} * oh * ow; }  // unrolled rows
  __host__ __device__ int64_t taps() const {  // each output's terms: columns
    return int64_t{c} / groups * kh * kw;
  }
};

// p's 2-d geometry, or nothing when it is not 2-d or does not index in 32 bits.
std::optional<Geom> geometry(const Problem& p);

// ---- cuDNN's legacy API (cudnn.cu) ----

// v as cuDNN's int; fails when it does not fit.
int as_int(int64_t v, const char* what);
cudnnDataType_t cudnn_type(DType d);
// The strides of dims [N, C, *spatial] stored in that order or (nhwc) as [N, *spatial, C].
std::vector<int64_t> strides_of(const std::vector<int>& dims, bool nhwc);

// cuDNN's descriptors, destroyed with their owner.
struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  TensorDesc() { CUDNN_CHECK(cudnnCreateTensorDescriptor(&d)); }
  ~TensorDesc() { cudnnDestroyTensorDescriptor(d); }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
};
struct FilterDesc {
  cudnnFilterDescriptor_t d = nullptr;
  FilterDesc() { CUDNN_CHECK(cudnnCreateFilterDescriptor(&d)); }
  ~FilterDesc() { cudnnDestroyFilterDescriptor(d); }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
};
struct ConvDesc {
  cudnnConvolutionDescriptor_t d = nullptr;
  ConvDesc() { CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d)); }
  ~ConvDesc() { cudnnDestroyConvolutionDescriptor(d); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
};

// A problem's descriptors, built once per plan.
struct Descs {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;
  explicit Descs(const Problem& p);
};

// cuDNN's algorithm for one pass.
struct Choice {
  int algo = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  size_t workspace = 0;
  float find_ms = -1;  // cuDNN's own timing when measured
};

// cuDNN's algorithm for a pass over problem p, or nothing when it has none (the pointers are the
// op's own buffers; measuring overwrites its output, which the pass then writes again). Sets
// the chosen math type on d.conv.
std::optional<Choice> choose(Pass pass, const Problem& p, const Descs& d, const void* x,
                             const void* w, void* y);

// One pass through cuDNN. forward: a = x, b = w, o = y; data: a = dy, b = w, o = dx; filter:
// a = x, b = dy, o = dw.
void run_cudnn(Pass pass, const Descs& d, const Choice& c, DType dt, const void* a, const void* b,
               void* o);

// ---- cuDNN's graph API (cudnn_graph.cu) ----

// A backend descriptor, destroyed with its owner.
struct BackendDesc {
  cudnnBackendDescriptor_t d = nullptr;
  explicit BackendDesc(cudnnBackendDescriptorType_t type) {
    if (cudnnBackendCreateDescriptor(type, &d) != CUDNN_STATUS_SUCCESS) d = nullptr;
  }
  ~BackendDesc() {
    if (d) cudnnBackendDestroyDescriptor(d);
  }
  BackendDesc(BackendDesc&& o) noexcept : d(std::exchange(o.d, nullptr)) {}
  BackendDesc(const BackendDesc&) = delete;
  BackendDesc& operator=(const BackendDesc&) = delete;
};

// A finalized execution plan and the workspace it needs.
struct GraphPlan {
  BackendDesc plan{CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR};
  int64_t workspace = 0;
  float ms = -1;  // measured when chosen
};

// The fastest of cuDNN's heuristic candidates for a 16-bit or TF32 pass over p, timed on the op's
// own buffers (as PyTorch's benchmark mode does), or nothing when no candidate builds. align: the
// bytes every buffer's address is a multiple of.
std::unique_ptr<GraphPlan> graph_plan(Pass pass, const Problem& p, int64_t align, const void* a,
                                      const void* b, void* o);
// Runs a pass's plan, with the arguments of run_cudnn.
void execute(const GraphPlan& g, const void* a, const void* b, void* o);

// ---- convolution as one GEMM over unrolled windows (gemm.cu) ----

// p's geometry when the GEMM path takes it: 2-d, one group, unrolled matrices within its bound.
std::optional<Geom> gemm_geometry(const Problem& p);
// The splits of the product's inner dimension a pass may use.
std::vector<int> gemm_splits(Pass pass, const Geom& g, DType dt);
// One pass of the GEMM path, with the arguments of run_cudnn (forward adds the bias, if given).
void run_gemm(Pass pass, const Geom& g, int split, LtGemm& gemm, DType dt, const void* a,
              const void* b, void* o, const void* bias);

// ---- direct kernels (direct.cu) ----

// `channels` input channels of one image in shared memory, with the convolution's padding
// around them: hs rows and ws columns each, all that the output positions' windows read.
struct Staged {
  int channels, hs, ws;
  DivBy<int> hs_div, ws_div;
  __host__ __device__ int elements() const { return channels * hs * ws; }
};

// A direct convolution's launch: the grid is images x groups x chunks of kDirectCo output
// channels x parts of the output positions.
struct Direct {
  Geom g;
  int cg, og;       // input and output channels per group
  int taps;         // terms of each output: cg * kh * kw
  Staged in;        // the group's input channels
  int chunks;       // output-channel chunks per group
  int parts, span;  // position parts per image and chunk, of span positions each
  int pairs;        // position groups per part: each thread takes kDirectPos, pairs apart
  int slices;       // threads each output's taps are split over
  int blocks, threads;
  int shared;  // dynamic shared memory, in bytes
};

// Up to this many outputs a small forward pass takes the direct kernel untimed (see
// direct_launch).
constexpr int64_t kDirectMaxOutputs = int64_t{1} << 16;

// The direct launch for a small forward pass (at most max_outputs outputs), or nothing.
std::optional<Direct> direct_launch(const Problem& p, int64_t max_outputs);
void run_direct(const Direct& d, DType dt, const void* x, const void* w, const void* bias, void* y);

// The direct sums' launch: a block per image and range of its output rows.
struct FilterSums {
  Geom g;
  Staged in;    // an image's input channels
  int parts;    // ranges of output rows per image
  int threads;  // a thread per weight, in whole warps
};

// The direct sums for a filter gradient of few weights, or nothing.
std::optional<FilterSums> filter_sums_launch(const Problem& p);
void run_filter_sums(const FilterSums& f, DType dt, const void* x, const void* dy, void* dw);

}  // namespace crisp::cuda::conv
