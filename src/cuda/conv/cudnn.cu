// CUDA convolutions through cuDNN's legacy API: descriptors, and each pass's algorithm from its
// heuristics (small problems) or measured (large ones), restricted to those that keep the
// dtype's precision.
#include <climits>
#include <new>
#include <optional>
#include <vector>

#include "cuda/conv/conv.cuh"

namespace crisp::cuda::conv {

namespace {

void set_tensor(const TensorDesc& t, const std::vector<int>& dims, DType dtype, bool nhwc) {
  std::vector<int> strides;
  for (int64_t s : strides_of(dims, nhwc)) strides.push_back(as_int(s, "tensor size"));
  CUDNN_CHECK(cudnnSetTensorNdDescriptor(t.d, cudnn_type(dtype), static_cast<int>(dims.size()),
                                         dims.data(), strides.data()));
}

// The math cuDNN may use: float32 stays float32-accurate unless TF32 is allowed; the 16-bit types
// run on tensor cores.
cudnnMathType_t requested_math(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return tf32_enabled() ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH;
    case DType::f16:
    case DType::bf16:
      return CUDNN_TENSOR_OP_MATH;
    default:
      return CUDNN_DEFAULT_MATH;
  }
}

bool acceptable_math(DType dtype, cudnnMathType_t m) {
  if (dtype == DType::f32 && !tf32_enabled())
    return m != CUDNN_TENSOR_OP_MATH && m != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
  return true;
}

// The workspace algorithms may use while they are measured.
constexpr size_t kFindWorkspace = size_t{512} << 20;

// Scratch memory for measuring: as much of kFindWorkspace as the device gives.
Buffer find_workspace() {
  for (size_t bytes = kFindWorkspace; bytes >= (size_t{16} << 20); bytes /= 4) {
    try {
      return Buffer(bytes);
    } catch (const std::bad_alloc&) {
    }
  }
  return Buffer();
}

// Whether an algorithm keeps float32's accuracy. FFT-based ones, and Winograd transforms of
// filters larger than 3x3, lose about three decimal digits against the output's scale (measured
// on the reference CNN's 5x5 layers), which float32 and float64 results may not; 16-bit and TF32
// ones lose more than that anyway. Winograd on 3x3 filters stays within the float32 tests'
// tolerances, and ResNet-50's float32 training is 15% faster with it.
bool keeps_precision(cudnnConvolutionFwdAlgo_t a, bool small_filter) {
  return a != CUDNN_CONVOLUTION_FWD_ALGO_FFT && a != CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING &&
         (small_filter || (a != CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD &&
                           a != CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED));
}
bool keeps_precision(cudnnConvolutionBwdDataAlgo_t a, bool small_filter) {
  return a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT &&
         a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING &&
         (small_filter || (a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD &&
                           a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED));
}
bool keeps_precision(cudnnConvolutionBwdFilterAlgo_t a, bool small_filter) {
  return a != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT &&
         a != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING &&
         (small_filter || a != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED);
}

// The first usable algorithm of a ranked list (measured or heuristic).
template <class Perf>
bool pick(const Perf* perf, int n, const Problem& p, Choice& c) {
  const DType dtype = p.dtype;
  const bool full_precision = dtype == DType::f64 || (dtype == DType::f32 && !tf32_enabled());
  bool small_filter = true;
  for (size_t i = 2; i < p.w.size(); ++i) small_filter = small_filter && p.w[i] <= 3;
  for (int i = 0; i < n; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS || !acceptable_math(dtype, perf[i].mathType) ||
        (full_precision && !keeps_precision(perf[i].algo, small_filter)))
      continue;
    c.algo = static_cast<int>(perf[i].algo);
    // Float32 without TF32 keeps FMA math whatever the listing says: DEFAULT_MATH would let
    // Ampere and later GPUs round the inputs to TF32.
    c.math = dtype == DType::f32 && !tf32_enabled() ? CUDNN_FMA_MATH : perf[i].mathType;
    c.find_ms = perf[i].time;
    return true;
  }
  return false;
}

struct Scalars {
  float f1 = 1, f0 = 0;
  double d1 = 1, d0 = 0;
  const void* one(DType t) const { return t == DType::f64 ? static_cast<const void*>(&d1) : &f1; }
  const void* zero(DType t) const { return t == DType::f64 ? static_cast<const void*>(&d0) : &f0; }
};

}  // namespace

cudnnDataType_t cudnn_type(DType d) {
  switch (d) {
    case DType::f16:
      return CUDNN_DATA_HALF;
    case DType::bf16:
      return CUDNN_DATA_BFLOAT16;
    case DType::f64:
      return CUDNN_DATA_DOUBLE;
    default:
      return CUDNN_DATA_FLOAT;
  }
}

int as_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX) fail(what, " ", v, " is too large for cuDNN");
  return static_cast<int>(v);
}

std::vector<int64_t> strides_of(const std::vector<int>& dims, bool nhwc) {
  std::vector<int64_t> strides(dims.size());
  int64_t s = 1;
  auto next = [&](size_t i) {
    strides[i] = s;
    s *= dims[i] > 0 ? dims[i] : 1;
  };
  if (nhwc) next(1);
  for (size_t i = dims.size(); i-- > 0;)
    if (!nhwc || i != 1) next(i);
  return strides;
}

Descs::Descs(const Problem& p) {
  set_tensor(x, p.x, p.dtype, p.nhwc);
  set_tensor(y, p.y, p.dtype, p.nhwc);
  CUDNN_CHECK(cudnnSetFilterNdDescriptor(w.d, cudnn_type(p.dtype),
                                         p.nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW,
                                         static_cast<int>(p.w.size()), p.w.data()));
  CUDNN_CHECK(cudnnSetConvolutionNdDescriptor(
      conv.d, p.nd, p.pad.data(), p.stride.data(), p.dil.data(), CUDNN_CROSS_CORRELATION,
      p.dtype == DType::f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT));
  CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv.d, p.groups));
  CUDNN_CHECK(cudnnSetConvolutionMathType(conv.d, requested_math(p.dtype)));
}

std::optional<Choice> choose(Pass pass, const Problem& p, const Descs& d, const void* x,
                             const void* w, void* y) {
  cudnnHandle_t h = ctx().cudnn();
  const bool measure = p.flops >= kMeasureFlops;
  Choice c;
  bool found = false;
  int n = 0;
  switch (pass) {
    case Pass::forward: {
      int count = 0;
      CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &count));
      std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(static_cast<size_t>(count));
      if (measure) {
        Buffer ws = find_workspace();
        CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(h, d.x.d, x, d.w.d, w, d.conv.d, d.y.d,
                                                           y, count, &n, perf.data(), ws.get(),
                                                           ws.size()));
      } else {
        CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, d.x.d, d.w.d, d.conv.d, d.y.d, count,
                                                           &n, perf.data()));
      }
      found = pick(perf.data(), n, p, c);
      if (found) {
        CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, c.math));
        CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(
            h, d.x.d, d.w.d, d.conv.d, d.y.d, static_cast<cudnnConvolutionFwdAlgo_t>(c.algo),
            &c.workspace));
      }
      break;
    }
    case Pass::data: {
      // x: dy, y: dx
      int count = 0;
      CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &count));
      std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(static_cast<size_t>(count));
      if (measure) {
        Buffer ws = find_workspace();
        CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(h, d.w.d, w, d.y.d, x, d.conv.d,
                                                                d.x.d, y, count, &n, perf.data(),
                                                                ws.get(), ws.size()));
      } else {
        CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.w.d, d.y.d, d.conv.d, d.x.d,
                                                                count, &n, perf.data()));
      }
      found = pick(perf.data(), n, p, c);
      if (found) {
        CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, c.math));
        CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
            h, d.w.d, d.y.d, d.conv.d, d.x.d, static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo),
            &c.workspace));
      }
      break;
    }
    case Pass::filter: {
      // x: x, w: dy, y: dw
      int count = 0;
      CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &count));
      std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(static_cast<size_t>(count));
      if (measure) {
        Buffer ws = find_workspace();
        CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(h, d.x.d, x, d.y.d, w, d.conv.d,
                                                                  d.w.d, y, count, &n, perf.data(),
                                                                  ws.get(), ws.size()));
      } else {
        CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.x.d, d.y.d, d.conv.d, d.w.d,
                                                                  count, &n, perf.data()));
      }
      found = pick(perf.data(), n, p, c);
      if (found) {
        CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, c.math));
        CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
            h, d.x.d, d.y.d, d.conv.d, d.w.d, static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo),
            &c.workspace));
      }
      break;
    }
  }
  if (!found) return std::nullopt;
  return c;
}

void run_cudnn(Pass pass, const Descs& d, const Choice& c, DType dt, const void* a, const void* b,
               void* o) {
  const Scalars s;
  cudnnHandle_t h = ctx().cudnn();
  void* ws = c.workspace ? ctx().workspace(c.workspace) : nullptr;
  switch (pass) {
    case Pass::forward:
      CUDNN_CHECK(cudnnConvolutionForward(h, s.one(dt), d.x.d, a, d.w.d, b, d.conv.d,
                                          static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), ws,
                                          c.workspace, s.zero(dt), d.y.d, o));
      break;
    case Pass::data:
      CUDNN_CHECK(cudnnConvolutionBackwardData(h, s.one(dt), d.w.d, b, d.y.d, a, d.conv.d,
                                               static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo),
                                               ws, c.workspace, s.zero(dt), d.x.d, o));
      break;
    case Pass::filter:
      CUDNN_CHECK(
          cudnnConvolutionBackwardFilter(h, s.one(dt), d.x.d, a, d.y.d, b, d.conv.d,
                                         static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo), ws,
                                         c.workspace, s.zero(dt), d.w.d, o));
      break;
  }
}

}  // namespace crisp::cuda::conv
