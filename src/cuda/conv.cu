// CUDA convolutions through cuDNN: forward, input gradient (also transposed convolution) and
// weight gradient, for 1-, 2- and 3-d (1-d as 2-d of height 1), with groups and dilation. The
// algorithm for each shape is chosen once (measured for large problems, cuDNN's heuristics for
// small ones) and cached.
#include <climits>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include "cuda/common.cuh"

namespace crisp::cuda {

namespace {

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

// A convolution in cuDNN's terms: x [N, C, in...], w [O, C/G, k...], y [N, O, out...] with at
// least two spatial dims (a 1-d convolution gains a leading one of size 1).
struct Problem {
  int nd = 2;  // spatial dims as cuDNN sees them
  std::vector<int> x, w, y, stride, pad, dil;
  int groups = 1;
  DType dtype = DType::f32;
  double flops = 0;
};

Problem problem(const Op& op, const Shape& xs, const Shape& ws, const Shape& ys, DType dtype) {
  const int64_t nd = op.ints[0];
  Problem p;
  p.dtype = dtype;
  p.nd = static_cast<int>(nd < 2 ? 2 : nd);
  p.groups = as_int(op.ints[1 + 3 * nd], "groups");
  for (int i = 0; i < 2; ++i) {
    p.x.push_back(as_int(xs[static_cast<size_t>(i)], "dimension"));
    p.w.push_back(as_int(ws[static_cast<size_t>(i)], "dimension"));
    p.y.push_back(as_int(ys[static_cast<size_t>(i)], "dimension"));
  }
  if (nd == 1) {
    p.x.push_back(1);
    p.w.push_back(1);
    p.y.push_back(1);
    p.stride.push_back(1);
    p.pad.push_back(0);
    p.dil.push_back(1);
  }
  for (int64_t i = 0; i < nd; ++i) {
    const size_t j = static_cast<size_t>(2 + i);
    p.x.push_back(as_int(xs[j], "dimension"));
    p.w.push_back(as_int(ws[j], "dimension"));
    p.y.push_back(as_int(ys[j], "dimension"));
    p.stride.push_back(as_int(op.ints[static_cast<size_t>(1 + i)], "stride"));
    p.pad.push_back(as_int(op.ints[static_cast<size_t>(1 + nd + i)], "padding"));
    p.dil.push_back(as_int(op.ints[static_cast<size_t>(1 + 2 * nd + i)], "dilation"));
  }
  double f = 2.0 * p.y[0] * p.y[1];
  for (size_t i = 1; i < p.w.size(); ++i) f *= p.w[i];
  for (size_t i = 2; i < p.y.size(); ++i) f *= p.y[i];
  p.flops = f;
  return p;
}

void set_tensor(const TensorDesc& t, const std::vector<int>& dims, DType dtype) {
  std::vector<int> strides(dims.size());
  int64_t s = 1;
  for (size_t i = dims.size(); i-- > 0;) {
    strides[i] = as_int(s, "tensor size");
    s *= dims[i] > 0 ? dims[i] : 1;
  }
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

struct Descs {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;
  explicit Descs(const Problem& p) {
    set_tensor(x, p.x, p.dtype);
    set_tensor(y, p.y, p.dtype);
    CUDNN_CHECK(cudnnSetFilterNdDescriptor(w.d, cudnn_type(p.dtype), CUDNN_TENSOR_NCHW,
                                           static_cast<int>(p.w.size()), p.w.data()));
    CUDNN_CHECK(cudnnSetConvolutionNdDescriptor(
        conv.d, p.nd, p.pad.data(), p.stride.data(), p.dil.data(), CUDNN_CROSS_CORRELATION,
        p.dtype == DType::f64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT));
    CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv.d, p.groups));
    CUDNN_CHECK(cudnnSetConvolutionMathType(conv.d, requested_math(p.dtype)));
  }
};

enum class Pass { forward, data, filter };

struct Choice {
  int algo = 0;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  size_t workspace = 0;
};

std::mutex cache_mutex;
std::map<std::vector<int64_t>, Choice> cache;

std::vector<int64_t> cache_key(Pass pass, const Problem& p) {
  std::vector<int64_t> k{static_cast<int64_t>(pass), ctx().device, static_cast<int64_t>(p.dtype),
                         tf32_enabled() ? 1 : 0,     p.nd,         p.groups};
  for (const auto* v : {&p.x, &p.w, &p.y, &p.stride, &p.pad, &p.dil})
    k.insert(k.end(), v->begin(), v->end());
  return k;
}

// Problems below this many flops take cuDNN's heuristic choice: measuring costs more than it saves.
constexpr double kMeasureFlops = double{1 << 24};
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

// The first usable algorithm of a ranked list (measured or heuristic).
template <class Perf>
bool pick(const Perf* perf, int n, DType dtype, Choice& c) {
  for (int i = 0; i < n; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS || !acceptable_math(dtype, perf[i].mathType))
      continue;
    c.algo = static_cast<int>(perf[i].algo);
    // Float32 without TF32 keeps FMA math whatever the listing says: DEFAULT_MATH would let
    // Ampere and later GPUs round the inputs to TF32.
    c.math = dtype == DType::f32 && !tf32_enabled() ? CUDNN_FMA_MATH : perf[i].mathType;
    return true;
  }
  return false;
}

// The algorithm for a pass over problem p (the pointers are the op's own buffers; measuring
// overwrites its output, which the pass then writes again).
Choice choose(Pass pass, const Problem& p, const Descs& d, const void* x, const void* w, void* y) {
  const std::vector<int64_t> key = cache_key(pass, p);
  {
    std::lock_guard lock(cache_mutex);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
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
      found = pick(perf.data(), n, p.dtype, c);
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
      found = pick(perf.data(), n, p.dtype, c);
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
      found = pick(perf.data(), n, p.dtype, c);
      if (found) {
        CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, c.math));
        CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
            h, d.x.d, d.y.d, d.conv.d, d.w.d, static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo),
            &c.workspace));
      }
      break;
    }
  }
  if (!found)
    fail("cuDNN has no ", dtype_name(p.dtype), " algorithm for this convolution (", n,
         " candidates rejected)");
  std::lock_guard lock(cache_mutex);
  cache.emplace(key, c);
  return c;
}

// y[n, c, *] += bias[c] over an output [N, Ch, P].
template <class T>
__global__ void add_bias_kernel(int64_t n, T* y, const T* bias, int64_t ch, int64_t plane) {
  CRISP_GRID_STRIDE(i, n) {
    const int64_t c = (i / plane) % ch;
    y[i] = convert<T>(load(y[i]) + load(bias[c]));
  }
}

void add_bias(const Array& y, const Array& bias) {
  const int64_t n = y.numel();
  if (n == 0) return;
  Buffer keep;
  const Array b = contiguous(bias, keep);
  const int64_t ch = y.shape[1], plane = n / (y.shape[0] * ch);
  visit_float(y.dtype, "conv", [&](auto tag) {
    using T = decltype(tag);
    add_bias_kernel<T>
        <<<grid_for(n), kBlock, 0, ctx().stream>>>(n, y.data<T>(), b.data<T>(), ch, plane);
    CUDA_LAUNCH_CHECK();
  });
}

struct Scalars {
  float f1 = 1, f0 = 0;
  double d1 = 1, d0 = 0;
  const void* one(DType t) const { return t == DType::f64 ? static_cast<const void*>(&d1) : &f1; }
  const void* zero(DType t) const { return t == DType::f64 ? static_cast<const void*>(&d0) : &f0; }
};

void check_dtype(const Op& op, DType d) {
  if (!is_floating(d)) unsupported(op, d);
}

}  // namespace

// conv, conv_backward_input, conv_backward_weight (op_kinds.inc describes their ints).
void conv_family(const Op& op, In in, Out out) {
  const Array& o = out[0];
  check_dtype(op, o.dtype);
  if (o.numel() == 0) return;
  const bool has_bias = op.kind != OpKind::conv_backward_weight && in.size() > 2;
  // An empty input leaves nothing to sum: the output is zero (plus the bias).
  if (in[0].numel() == 0 || in[1].numel() == 0) {
    CUDA_CHECK(cudaMemsetAsync(o.raw(), 0, static_cast<size_t>(o.numel()) * itemsize(o.dtype),
                               ctx().stream));
    if (has_bias) add_bias(o, in[2]);
    return;
  }
  Buffer keep0, keep1;
  const Array a = contiguous(in[0], keep0), b = contiguous(in[1], keep1);
  const Scalars s;
  const DType dt = o.dtype;
  cudnnHandle_t h = ctx().cudnn();
  switch (op.kind) {
    case OpKind::conv: {
      const Problem p = problem(op, a.shape, b.shape, o.shape, dt);
      Descs d(p);
      const Choice c = choose(Pass::forward, p, d, a.raw(), b.raw(), o.raw());
      CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, c.math));
      void* ws = c.workspace ? ctx().workspace(c.workspace) : nullptr;
      CUDNN_CHECK(cudnnConvolutionForward(h, s.one(dt), d.x.d, a.raw(), d.w.d, b.raw(), d.conv.d,
                                          static_cast<cudnnConvolutionFwdAlgo_t>(c.algo), ws,
                                          c.workspace, s.zero(dt), d.y.d, o.raw()));
      break;
    }
    case OpKind::conv_backward_input: {
      // a: dy, b: w; o: dx
      const Problem p = problem(op, o.shape, b.shape, a.shape, dt);
      Descs d(p);
      const Choice c = choose(Pass::data, p, d, a.raw(), b.raw(), o.raw());
      CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, c.math));
      void* ws = c.workspace ? ctx().workspace(c.workspace) : nullptr;
      CUDNN_CHECK(cudnnConvolutionBackwardData(h, s.one(dt), d.w.d, b.raw(), d.y.d, a.raw(),
                                               d.conv.d,
                                               static_cast<cudnnConvolutionBwdDataAlgo_t>(c.algo),
                                               ws, c.workspace, s.zero(dt), d.x.d, o.raw()));
      break;
    }
    case OpKind::conv_backward_weight: {
      // a: x, b: dy; o: dw
      const Problem p = problem(op, a.shape, o.shape, b.shape, dt);
      Descs d(p);
      const Choice c = choose(Pass::filter, p, d, a.raw(), b.raw(), o.raw());
      CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv.d, c.math));
      void* ws = c.workspace ? ctx().workspace(c.workspace) : nullptr;
      CUDNN_CHECK(
          cudnnConvolutionBackwardFilter(h, s.one(dt), d.x.d, a.raw(), d.y.d, b.raw(), d.conv.d,
                                         static_cast<cudnnConvolutionBwdFilterAlgo_t>(c.algo), ws,
                                         c.workspace, s.zero(dt), d.w.d, o.raw()));
      break;
    }
    default:
      unsupported(op, dt);
  }
  if (has_bias) add_bias(o, in[2]);
}

}  // namespace crisp::cuda
