// CUDA convolutions: forward, input gradient (also transposed convolution) and weight gradient,
// for 1-, 2- and 3-d (1-d as 2-d of height 1), with groups and dilation. Each pass over a shape
// is planned once and kept: through cuDNN (measured for large problems, its heuristics for small
// ones), for 2-d convolutions with one group as one GEMM over unrolled windows, or, for small
// 1- and 2-d forward passes, as one direct kernel.
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "cuda/conv/conv.cuh"
#include "cuda/families.cuh"

namespace crisp::cuda::conv {

Problem problem(const ConvAttrs& a, const Shape& xs, const Shape& ws, const Shape& ys,
                DType dtype) {
  const int64_t nd = a.nd;
  Problem p;
  p.dtype = dtype;
  p.nhwc = a.channels_last;
  p.nd = static_cast<int>(nd < 2 ? 2 : nd);
  p.groups = as_int(a.groups, "groups");
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
  for (size_t i = 0; i < static_cast<size_t>(nd); ++i) {
    p.x.push_back(as_int(xs[2 + i], "dimension"));
    p.w.push_back(as_int(ws[2 + i], "dimension"));
    p.y.push_back(as_int(ys[2 + i], "dimension"));
    p.stride.push_back(as_int(a.stride[i], "stride"));
    p.pad.push_back(as_int(a.padding[i], "padding"));
    p.dil.push_back(as_int(a.dilation[i], "dilation"));
  }
  double f = 2.0 * p.y[0] * p.y[1];
  for (size_t i = 1; i < p.w.size(); ++i) f *= p.w[i];
  for (size_t i = 2; i < p.y.size(); ++i) f *= p.y[i];
  p.flops = f;
  return p;
}

std::optional<Geom> geometry(const Problem& p) {
  if (p.nd != 2) return std::nullopt;
  const Geom g{p.x[0], p.x[1],      p.x[2],      p.x[3],   p.y[1],   p.w[2],   p.w[3],   p.y[2],
               p.y[3], p.stride[0], p.stride[1], p.pad[0], p.pad[1], p.dil[0], p.dil[1], p.groups};
  if (int64_t{g.n} * g.c * g.h * g.w > INT_MAX || g.positions() * g.o > INT_MAX)
    return std::nullopt;
  return g;
}

namespace {

// How one pass over one problem runs: through cuDNN (with descriptors built once), as a GEMM, or
// (forward only) as one direct kernel.
struct Plan {
  std::optional<Direct> direct;
  std::optional<FilterSums> filter_sums;
  std::optional<Geom> gemm;
  int split = 1;
  std::unique_ptr<LtGemm> lt;  // the GEMM path's product
  Choice cudnn;
  std::unique_ptr<Descs> descs;
  std::unique_ptr<GraphPlan> graph;  // 16-bit and TF32 passes through cuDNN's graph API
};

std::mutex plans_mutex;
std::map<std::vector<int64_t>, Plan> plans;  // never erased: references stay valid

std::vector<int64_t> plan_key(Pass pass, const Problem& p) {
  std::vector<int64_t> k{static_cast<int64_t>(pass),
                         ctx().device,
                         static_cast<int64_t>(p.dtype),
                         tf32_enabled() ? 1 : 0,
                         p.nd,
                         p.groups,
                         p.nhwc ? 1 : 0};
  for (const auto* v : {&p.x, &p.w, &p.y, &p.stride, &p.pad, &p.dil})
    k.insert(k.end(), v->begin(), v->end());
  return k;
}

// The plan for a pass, chosen on first use: the direct kernel for small forward passes; the
// GEMM path for other small problems where it applies; for large ones cuDNN's measured best, unless
// the GEMM path is faster. Both are timed here the same way (cuDNN's own timings of its algorithms
// proved too optimistic to compare against).
const Plan& plan_for(Pass pass, const Problem& p, const void* a, const void* b, void* o) {
  std::vector<int64_t> key = plan_key(pass, p);
  // The graph API's plans hold for buffers aligned as the ones they were built for.
  const bool use_graph =
      p.dtype == DType::f16 || p.dtype == DType::bf16 || (p.dtype == DType::f32 && tf32_enabled());
  int64_t align = 16;
  for (const void* ptr : {a, b, static_cast<const void*>(o)})
    while (reinterpret_cast<uintptr_t>(ptr) % static_cast<uintptr_t>(align)) align /= 2;
  if (use_graph) key.push_back(align);
  {
    std::lock_guard lock(plans_mutex);
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
  }
  Plan plan;
  // The GEMM and direct paths read the usual layout.
  const std::optional<Geom> g = p.nhwc ? std::nullopt : gemm_geometry(p);
  float gemm_ms = -1, cudnn_ms = -1;
  if (pass == Pass::forward && !p.nhwc) plan.direct = direct_launch(p, kDirectMaxOutputs);
  if (plan.direct) {
    // One kernel: nothing to build or time.
  } else if (g && p.flops < kMeasureFlops) {
    plan.lt = std::make_unique<LtGemm>();
    plan.gemm = g;
  } else {
    // cuDNN's arguments by pass: forward (x, w, y), data (dy, w, dx), filter (x, dy, dw).
    if (use_graph) plan.graph = graph_plan(pass, p, align, a, b, o);
    if (plan.graph) cudnn_ms = plan.graph->ms;
    std::optional<Choice> c;
    if (!plan.graph) {
      plan.descs = std::make_unique<Descs>(p);
      c = choose(pass, p, *plan.descs, a, b, o);
      if (!c && !g) fail("cuDNN has no ", dtype_name(p.dtype), " algorithm for this convolution");
      if (c) plan.cudnn = *c;
    }
    if (g) {
      // The GEMM path at each split it allows, each with its own tuned product.
      for (int split : gemm_splits(pass, *g, p.dtype)) {
        auto lt = std::make_unique<LtGemm>();
        const float ms = gpu_ms([&] { run_gemm(pass, *g, split, *lt, p.dtype, a, b, o, nullptr); });
        if (gemm_ms < 0 || ms < gemm_ms) {
          gemm_ms = ms;
          plan.split = split;
          plan.lt = std::move(lt);
        }
      }
      if (c) cudnn_ms = gpu_ms([&] { run_cudnn(pass, *plan.descs, *c, p.dtype, a, b, o); });
      if (cudnn_ms < 0 || gemm_ms < cudnn_ms) {
        plan.gemm = g;
        plan.descs.reset();
        plan.graph.reset();
      } else {
        plan.lt.reset();
      }
    }
    // Own kernels where they apply, against whichever won above (which still has its bias pass
    // to come, where the direct forward kernel adds the bias as it stores). CRISP_CONV_DIRECT=1
    // takes them wherever they apply: how the tests reach them.
    auto consider = [&](const char* what, auto&& run, auto&& take) {
      const float ms = gpu_ms(run);
      const float best = plan.gemm ? gemm_ms : cudnn_ms;
      if (best < 0 || ms < best || std::getenv("CRISP_CONV_DIRECT")) {
        plan = Plan{};
        take();
      }
      if (std::getenv("CRISP_PROFILE"))
        std::fprintf(stderr, "crisp conv plan: %s %.1f us\n", what, ms * 1e3);
    };
    if (pass == Pass::forward && !p.nhwc)
      if (const auto d = direct_launch(p, std::numeric_limits<int64_t>::max()))
        consider(
            "forward direct kernel", [&] { run_direct(*d, p.dtype, a, b, nullptr, o); },
            [&] { plan.direct = d; });
    if (pass == Pass::filter && !p.nhwc)
      if (const auto f = filter_sums_launch(p))
        consider(
            "filter direct sums", [&] { run_filter_sums(*f, p.dtype, a, b, o); },
            [&] { plan.filter_sums = f; });
  }
  if (std::getenv("CRISP_PROFILE")) {
    static const char* names[] = {"forward", "data", "filter"};
    std::fprintf(stderr,
                 "crisp conv plan: %s x[%d,%d,%d,%d] w[%d,%d,%d,%d] %s%s -> %s (gemm %.1f us in "
                 "%d parts, cudnn %.1f us; cudnn algo %d math %d, %.1f us by its own timing)\n",
                 names[static_cast<int>(pass)], p.x[0], p.x[1], p.x[2], p.x[3], p.w[0], p.w[1],
                 p.w[2], p.w[3], std::string(dtype_name(p.dtype)).c_str(),
                 p.nhwc ? " channels-last" : "",
                 plan.direct        ? "direct"
                 : plan.filter_sums ? "direct sums"
                 : plan.gemm        ? "gemm"
                 : plan.graph       ? "cudnn graph"
                                    : "cudnn",
                 gemm_ms * 1e3, plan.split, cudnn_ms * 1e3, plan.cudnn.algo,
                 static_cast<int>(plan.cudnn.math), plan.cudnn.find_ms * 1e3);
  }
  std::lock_guard lock(plans_mutex);
  return plans.emplace(std::move(key), std::move(plan)).first->second;
}

// y[n, c, *] += bias[c] over an output [N, Ch, P].
template <class T>
__global__ void add_bias_kernel(int64_t n, T* y, const T* bias, int64_t ch, int64_t plane) {
  CRISP_GRID_STRIDE(i, n) {
    const int64_t c = (i / plane) % ch;
    y[i] = convert<T>(load(y[i]) + load(bias[c]));
  }
}

// y is [N, Ch, *], or stored channels-last [N, *, Ch].
void add_bias(const Array& y, const Array& bias, bool channels_last) {
  const int64_t n = y.numel();
  if (n == 0) return;
  Buffer keep;
  const Array b = contiguous(bias, keep);
  const int64_t ch = channels_last ? y.shape.back() : y.shape[1];
  const int64_t plane = channels_last ? 1 : n / (y.shape[0] * ch);
  visit_float(y.dtype, "conv", [&](auto tag) {
    using T = decltype(tag);
    launch_items<add_bias_kernel<T>>(n, y.data<T>(), b.data<T>(), ch, plane);
  });
}

void check_dtype(const Op& op, DType d) {
  if (!is_floating(d)) unsupported(op, d);
}

// a [N, C, *] stored channels-last: a itself when it is, else a copy in keep (seen as [N, C, *]).
Array channels_last(const Array& a, Buffer& keep) {
  return permuted(channels_last_storage(a, keep), channels_first_order(a.ndim()));
}

// The pass op.kind names with attributes attrs (their channels_last may differ from op's).
void convolve(const Op& op, const ConvAttrs& attrs, In in, Out out) {
  const Array& o = out[0];
  check_dtype(op, o.dtype);
  if (o.numel() == 0) return;
  const bool has_bias = op.kind != OpKind::conv_backward_weight && in.size() > 2;
  // An empty input leaves nothing to sum: the output is zero (plus the bias).
  if (in[0].numel() == 0 || in[1].numel() == 0) {
    CUDA_CHECK(cudaMemsetAsync(o.raw(), 0, static_cast<size_t>(o.numel()) * itemsize(o.dtype),
                               ctx().stream));
    if (has_bias) add_bias(o, in[2], attrs.channels_last);
    return;
  }
  Buffer keep0, keep1, keep2;
  const bool cl = attrs.channels_last;
  if (cl && o.shape.size() != 4) fail("channels-last convolutions are 2-d");
  if (cl && o.dtype == DType::f64) {
    // cuDNN has no float64 kernels for this layout: computed as usual, then permuted into place.
    ConvAttrs plain = attrs;
    plain.channels_last = false;
    const Buffer tmp(static_cast<size_t>(o.numel()) * itemsize(o.dtype));
    const Shape shape = permuted(o, channels_first_order(4)).shape;
    Array logical{std::make_shared<Storage>(tmp.get(), 0, nullptr), shape,
                  contiguous_strides(shape), 0, o.dtype};
    convolve(op, plain, in, std::span<Array>(&logical, 1));
    copy_to_contiguous(permuted(logical, channels_last_order(4)), o);
    return;
  }
  const Array a = cl ? channels_last(in[0], keep0) : contiguous(in[0], keep0);
  const Array b = cl ? channels_last(in[1], keep1) : contiguous(in[1], keep1);
  // The output's dims in [N, C, *] order, wherever it is stored.
  const Shape os = cl ? permuted(o, channels_first_order(4)).shape : o.shape;
  const DType dt = o.dtype;
  // Shapes by pass: forward a = x, b = w, o = y; data a = dy, b = w, o = dx; filter a = x,
  // b = dy, o = dw.
  Pass pass = Pass::forward;
  Problem p;
  switch (op.kind) {
    case OpKind::conv:
      p = problem(attrs, a.shape, b.shape, os, dt);
      break;
    case OpKind::conv_backward_input:
      pass = Pass::data;
      p = problem(attrs, os, b.shape, a.shape, dt);
      break;
    case OpKind::conv_backward_weight:
      pass = Pass::filter;
      p = problem(attrs, a.shape, os, b.shape, dt);
      break;
    default:
      unsupported(op, dt);
  }
  const Plan& plan = plan_for(pass, p, a.raw(), b.raw(), o.raw());
  if (plan.direct) {
    run_direct(*plan.direct, dt, a.raw(), b.raw(),
               has_bias ? contiguous(in[2], keep2).raw() : nullptr, o.raw());
    return;
  }
  if (plan.filter_sums) return run_filter_sums(*plan.filter_sums, dt, a.raw(), b.raw(), o.raw());
  if (plan.gemm) {
    // The forward pass adds the bias in its last kernel; a transposed convolution's afterwards.
    const bool fused = has_bias && pass == Pass::forward;
    run_gemm(pass, *plan.gemm, plan.split, *plan.lt, dt, a.raw(), b.raw(), o.raw(),
             fused ? contiguous(in[2], keep2).raw() : nullptr);
    if (has_bias && !fused) add_bias(o, in[2], false);
    return;
  }
  if (plan.graph)
    execute(*plan.graph, a.raw(), b.raw(), o.raw());
  else
    run_cudnn(pass, *plan.descs, plan.cudnn, dt, a.raw(), b.raw(), o.raw());
  if (has_bias) add_bias(o, in[2], cl);
}

}  // namespace

}  // namespace crisp::cuda::conv

namespace crisp::cuda {

// conv, conv_backward_input, conv_backward_weight (op_kinds.inc describes their ints).
void run_conv(const Op& op, In in, Out out) { conv::convolve(op, ConvAttrs::from_op(op), in, out); }

}  // namespace crisp::cuda
