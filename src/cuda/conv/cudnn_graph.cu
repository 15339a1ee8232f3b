// CUDA convolutions through cuDNN's graph API: execution plans built once per problem.
#include <array>
#include <memory>
#include <utility>
#include <vector>

#include "cuda/conv/conv.cuh"

namespace crisp::cuda::conv {

// The 16-bit and TF32 convolutions go through execution plans built once per problem: cuDNN 9's
// legacy calls rebuild theirs on every call, 70-200 us of host time per convolution on an H200's
// host, which capped bfloat16 ResNet-50 training below the GPU's speed. (Full-precision float32
// and float64 keep the legacy calls, whose algorithm list says which keep their accuracy.)

namespace {

// Sets attributes and finalizes, remembering whether every step succeeded.
struct Builder {
  bool ok = true;
  template <class T>
  void set(const BackendDesc& b, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
           const T* values, int64_t n = 1) {
    ok = ok && b.d && cudnnBackendSetAttribute(b.d, name, type, n, values) == CUDNN_STATUS_SUCCESS;
  }
  void set(const BackendDesc& b, cudnnBackendAttributeName_t name, const BackendDesc& value) {
    set(b, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, &value.d);
  }
  void finalize(const BackendDesc& b) {
    ok = ok && b.d && cudnnBackendFinalize(b.d) == CUDNN_STATUS_SUCCESS;
  }
};

// Tensor uids in a plan's variant pack: the pass's a, b and o (see run_conv).
constexpr int64_t kUids[3] = {1, 2, 3};

// Whether an engine configuration may run a pass in dtype: float32 (here only with TF32
// allowed) takes tensor cores but not engines that convert its inputs to 16 bits.
bool keeps_precision(cudnnBackendDescriptor_t config, DType dtype) {
  if (dtype != DType::f32) return true;
  BackendDesc engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  int64_t n = 0;
  cudnnBackendNumericalNote_t notes[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
  if (!engine.d ||
      cudnnBackendGetAttribute(config, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                               1, &n, &engine.d) != CUDNN_STATUS_SUCCESS ||
      cudnnBackendGetAttribute(engine.d, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE,
                               CUDNN_TYPE_NUMERICAL_NOTE, CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n,
                               notes) != CUDNN_STATUS_SUCCESS)
    return false;
  for (int64_t i = 0; i < n; ++i)
    if (notes[i] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS) return false;
  return true;
}

}  // namespace

void execute(const GraphPlan& g, const void* a, const void* b, void* o) {
  void* ptrs[3] = {const_cast<void*>(a), const_cast<void*>(b), o};
  void* ws = g.workspace ? ctx().workspace(static_cast<size_t>(g.workspace)) : nullptr;
  BackendDesc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  Builder k;
  k.set(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, kUids, 3);
  k.set(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, ptrs, 3);
  k.set(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, &ws);
  k.finalize(pack);
  if (!k.ok) fail("cuDNN could not describe a convolution's buffers");
  CUDNN_CHECK(cudnnBackendExecute(ctx().cudnn(), g.plan.d, pack.d));
}

std::unique_ptr<GraphPlan> graph_plan(Pass pass, const Problem& p, int64_t align, const void* a,
                                      const void* b, void* o) {
  cudnnHandle_t h = ctx().cudnn();
  Builder k;
  // Tensors by uid: a, b, o of the pass, each [N, C, *] or [O, C/G, *] in cuDNN's dim order.
  const std::vector<int>* dims[3] = {&p.x, &p.w, &p.y};      // forward: x, w, y
  if (pass == Pass::data) dims[0] = &p.y, dims[2] = &p.x;    // dy, w, dx
  if (pass == Pass::filter) dims[1] = &p.y, dims[2] = &p.w;  // x, dy, dw
  const cudnnDataType_t type = cudnn_type(p.dtype);
  std::vector<BackendDesc> tensors;
  for (int i = 0; i < 3; ++i) {
    const std::vector<int>& d = *dims[i];
    const std::vector<int64_t> shape(d.begin(), d.end()), strides = strides_of(d, p.nhwc);
    tensors.emplace_back(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const BackendDesc& t = tensors.back();
    k.set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, &type);
    k.set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, shape.data(),
          static_cast<int64_t>(shape.size()));
    k.set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, strides.data(),
          static_cast<int64_t>(strides.size()));
    k.set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, &kUids[i]);
    k.set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, &align);
    k.finalize(t);
  }
  BackendDesc conv(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  const cudnnDataType_t compute = CUDNN_DATA_FLOAT;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  const int64_t spatial = p.nd;
  const std::vector<int64_t> pad(p.pad.begin(), p.pad.end()),
      stride(p.stride.begin(), p.stride.end()), dil(p.dil.begin(), p.dil.end());
  k.set(conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, &compute);
  k.set(conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, &mode);
  k.set(conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, &spatial);
  k.set(conv, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, dil.data(), spatial);
  k.set(conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, stride.data(), spatial);
  k.set(conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, pad.data(), spatial);
  k.set(conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, pad.data(), spatial);
  k.finalize(conv);
  const float one = 1, zero = 0;
  auto op_desc = [&](cudnnBackendDescriptorType_t type, cudnnBackendAttributeName_t alpha,
                     cudnnBackendAttributeName_t beta, cudnnBackendAttributeName_t conv_attr,
                     std::array<cudnnBackendAttributeName_t, 3> uses) {
    BackendDesc op(type);
    for (int i = 0; i < 3; ++i)
      k.set(op, uses[static_cast<size_t>(i)], tensors[static_cast<size_t>(i)]);
    k.set(op, conv_attr, conv);
    k.set(op, alpha, CUDNN_TYPE_FLOAT, &one);
    k.set(op, beta, CUDNN_TYPE_FLOAT, &zero);
    k.finalize(op);
    return op;
  };
  BackendDesc op =
      pass == Pass::forward ? op_desc(CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
                                      CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
                                      CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA,
                                      CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
                                      {CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
                                       CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
                                       CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y})
      : pass == Pass::data  ? op_desc(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
                                      CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
                                      CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA,
                                      CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
                                      {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY,
                                       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
                                       CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX})
                           : op_desc(CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
                                     CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA,
                                     CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA,
                                     CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
                                     {CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X,
                                      CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY,
                                      CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW});
  BackendDesc graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  k.set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, op);
  k.set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, &h);
  k.finalize(graph);
  BackendDesc heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  const cudnnBackendHeurMode_t heur_mode = CUDNN_HEUR_MODE_A;
  k.set(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph);
  k.set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, &heur_mode);
  k.finalize(heur);
  int64_t count = 0;
  if (!k.ok ||
      cudnnBackendGetAttribute(heur.d, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                               0, &count, nullptr) != CUDNN_STATUS_SUCCESS ||
      count <= 0)
    return nullptr;
  std::vector<BackendDesc> configs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < count; ++i) {
    configs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    raw.push_back(configs.back().d);
  }
  if (cudnnBackendGetAttribute(heur.d, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                               count, &count, raw.data()) != CUDNN_STATUS_SUCCESS)
    return nullptr;
  // Time the first few candidates that build: the heuristics' order is close, not exact.
  constexpr int kCandidates = 6;
  constexpr int64_t kMaxWorkspace = int64_t{1} << 30;
  std::unique_ptr<GraphPlan> best;
  int tried = 0;
  for (int64_t i = 0; i < count && tried < kCandidates; ++i) {
    if (!keeps_precision(raw[static_cast<size_t>(i)], p.dtype)) continue;
    auto g = std::make_unique<GraphPlan>();
    Builder pk;
    pk.set(g->plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, &h);
    pk.set(g->plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR,
           &raw[static_cast<size_t>(i)]);
    pk.finalize(g->plan);
    int64_t n = 0;
    if (!pk.ok ||
        cudnnBackendGetAttribute(g->plan.d, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                 CUDNN_TYPE_INT64, 1, &n, &g->workspace) != CUDNN_STATUS_SUCCESS ||
        g->workspace > kMaxWorkspace)
      continue;
    ++tried;
    float ms = 0;
    try {
      ms = gpu_ms([&] { execute(*g, a, b, o); });
    } catch (const Error&) {
      continue;  // a candidate that fails to run (out of workspace memory, say) is skipped
    }
    if (!best || ms < best->ms) {
      g->ms = ms;
      best = std::move(g);
    }
  }
  return best;
}

}  // namespace crisp::cuda::conv
