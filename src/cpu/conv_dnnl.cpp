// CPU convolutions through oneDNN for contiguous float32 data: forward, input and weight
// gradients, primitives cached per shape; conv.cpp falls back to im2col when this declines.
//
// Threads: Debian's oneDNN runs on OpenMP, whose idle workers spin for milliseconds after each
// primitive and then compete for the cores with crisp's own pool (the ops between two
// convolutions, BLAS). So the OpenMP team is kept at one thread while oneDNN runs, and crisp's
// pool splits a convolution itself: the batch into one slice per thread (weight gradients are
// summed over the slices), or a single image's output channels.

#include <dnnl.hpp>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "cpu/nn_util.h"
#include "kernels/conv.h"

namespace crisp::cpu {

namespace {

using dnnl::memory;

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

memory::desc plain(const memory::dims& dims) {
  memory::dims strides(dims.size(), 1);
  for (size_t i = dims.size() - 1; i > 0; --i) strides[i - 1] = strides[i] * dims[i];
  return memory::desc(dims, memory::data_type::f32, strides);
}

// The forward convolution's shapes and attributes, which also key the primitive cache.
struct Signature {
  OpKind kind;
  bool bias;
  std::vector<int64_t> x, w, y;
  ConvAttrs attrs;
  auto operator<=>(const Signature&) const = default;
};

struct Descs {
  memory::desc x, w, b, y;
  memory::dims stride, dilation, pad_l, pad_r;
};

// The right padding makes the sizes exact; it is negative (down to 1 - stride) where the
// last input columns are never read, which oneDNN accepts.
Descs descriptors(const Signature& s) {
  const int64_t groups = s.attrs.groups;
  Descs d;
  for (size_t i = 0; i < static_cast<size_t>(s.attrs.nd); ++i) {
    const int64_t st = s.attrs.stride[i], p = s.attrs.padding[i], dl = s.attrs.dilation[i];
    const int64_t extent = dl * (s.w[2 + i] - 1) + 1;
    const int64_t pr = (s.y[2 + i] - 1) * st + extent - s.x[2 + i] - p;
    d.stride.push_back(st);
    d.dilation.push_back(dl - 1);  // oneDNN counts the gaps between taps
    d.pad_l.push_back(p);
    d.pad_r.push_back(pr);
  }
  memory::dims w(s.w.begin(), s.w.end());
  if (groups > 1) {
    w[0] /= groups;
    w.insert(w.begin(), groups);
  }
  d.x = plain(memory::dims(s.x.begin(), s.x.end()));
  d.w = plain(w);
  d.y = plain(memory::dims(s.y.begin(), s.y.end()));
  if (s.bias) d.b = plain({s.y[1]});
  return d;
}

memory::desc any_like(const memory::desc& md) {
  return memory::desc(md.dims(), memory::data_type::f32, memory::format_tag::any);
}

// Primitives take their scratch memory from us (reused per thread) rather than allocating it on
// every call, which cost a third of the time of the input gradient in page faults.
const dnnl::primitive_attr& user_scratchpad() {
  static const dnnl::primitive_attr attr = [] {
    dnnl::primitive_attr a;
    a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return a;
  }();
  return attr;
}

dnnl::convolution_forward::primitive_desc forward_pd(const Descs& d, bool bias, bool any) {
  using dnnl::convolution_forward;
  const auto x = any ? any_like(d.x) : d.x, w = any ? any_like(d.w) : d.w,
             y = any ? any_like(d.y) : d.y;
  const auto prop = dnnl::prop_kind::forward_training;
  const auto algo = dnnl::algorithm::convolution_direct;
  const auto desc =
      bias ? convolution_forward::desc(prop, algo, x, w, d.b, y, d.stride, d.dilation, d.pad_l,
                                       d.pad_r)
           : convolution_forward::desc(prop, algo, x, w, y, d.stride, d.dilation, d.pad_l, d.pad_r);
  return convolution_forward::primitive_desc(desc, user_scratchpad(), cpu_engine());
}

// A primitive with the user's plain layouts and the layouts it chose for x, w and y (blocked
// ones need reorders).
struct Prepared {
  dnnl::primitive prim;
  Descs user;
  memory::desc x, w, y, scratchpad;
};

// Whether oneDNN may pick its own (blocked, 16-channel) layouts: its direct kernels then beat
// the plain-layout GEMM implementation by 1.5x on the reference CNN, except the input gradient
// with few input channels (1 -> 20 channels: 5 ms blocked, 0.9 ms plain).
bool blocked_layouts(const Signature& s) {
  return s.kind != OpKind::conv_backward_input || s.x[1] / s.attrs.groups >= 16;
}

Prepared make_primitive(const Signature& s) {
  const Descs d = descriptors(s);
  const bool any = blocked_layouts(s);
  const auto x = any ? any_like(d.x) : d.x, w = any ? any_like(d.w) : d.w,
             y = any ? any_like(d.y) : d.y;
  const auto algo = dnnl::algorithm::convolution_direct;
  switch (s.kind) {
    case OpKind::conv: {
      const auto pd = forward_pd(d, s.bias, any);
      return Prepared{
          dnnl::convolution_forward(pd), d, pd.src_desc(), pd.weights_desc(), pd.dst_desc(),
          pd.scratchpad_desc()};
    }
    case OpKind::conv_backward_input: {
      using dnnl::convolution_backward_data;
      const convolution_backward_data::desc desc(algo, x, w, y, d.stride, d.dilation, d.pad_l,
                                                 d.pad_r);
      const convolution_backward_data::primitive_desc pd(desc, user_scratchpad(), cpu_engine(),
                                                         forward_pd(d, false, any));
      return Prepared{convolution_backward_data(pd),
                      d,
                      pd.diff_src_desc(),
                      pd.weights_desc(),
                      pd.diff_dst_desc(),
                      pd.scratchpad_desc()};
    }
    default: {
      using dnnl::convolution_backward_weights;
      const convolution_backward_weights::desc desc(algo, x, w, y, d.stride, d.dilation, d.pad_l,
                                                    d.pad_r);
      const convolution_backward_weights::primitive_desc pd(desc, user_scratchpad(), cpu_engine(),
                                                            forward_pd(d, false, any));
      return Prepared{convolution_backward_weights(pd),
                      d,
                      pd.src_desc(),
                      pd.diff_weights_desc(),
                      pd.diff_dst_desc(),
                      pd.scratchpad_desc()};
    }
  }
}

// Creating a primitive costs far more than running a small one, so each shape is built once.
// A declined signature is remembered too (as null) so it is not retried on every call.
std::shared_ptr<const Prepared> cached_primitive(const Signature& s) {
  static std::mutex mutex;
  static std::map<Signature, std::shared_ptr<const Prepared>> cache;
  std::lock_guard lock(mutex);
  if (auto it = cache.find(s); it != cache.end()) return it->second;
  std::shared_ptr<const Prepared> p;
  try {
    SerialOpenMp one;  // primitives are tuned for the thread count they are created under
    p = std::make_shared<const Prepared>(make_primitive(s));
  } catch (const dnnl::error&) {
    p = nullptr;
  }
  if (cache.size() > 256) cache.clear();  // bound the memory of shape-varying workloads
  return cache.emplace(s, p).first->second;
}

bool usable(const Array& a) { return a.dtype == DType::f32 && a.is_contiguous() && a.numel() > 0; }

memory wrap(const memory::desc& md, const float* p) {
  return memory(md, cpu_engine(), const_cast<float*>(p));
}

// Memory for a reordered operand, kept per thread across calls: fresh pages for megabytes of
// activations each call cost more page faults than the reorder itself.
memory scratch(int slot, const memory::desc& md) {
  thread_local std::vector<float> buffers[4];
  auto& b = buffers[slot];
  // 64 bytes of slack so the memory handed over can start on a cache line: the AVX-512 kernels
  // run markedly slower on unaligned blocks.
  const size_t need = (md.get_size() + 64 + sizeof(float) - 1) / sizeof(float);
  if (b.size() < need) b.resize(need);
  void* p = b.data();
  size_t space = b.size() * sizeof(float);
  return memory(md, cpu_engine(), std::align(64, md.get_size(), p, space));
}

// One convolution on the calling thread. Pointers are to plain (user-layout) data: the input x
// or dy, the weights w (or, for the weight gradient, dy), the bias, and the output.
void execute(const Prepared& p, OpKind kind, const float* in0, const float* in1, const float* bias,
             float* out) {
  const Descs& d = p.user;
  thread_local dnnl::stream stream(cpu_engine());
  int slot = 0;
  auto input = [&](const memory::desc& user, const float* a, const memory::desc& want) {
    memory m = wrap(user, a);
    if (want == user) return m;
    memory t = scratch(slot++, want);
    dnnl::reorder(m, t).execute(stream, m, t);
    return t;
  };
  auto output = [&](const memory::desc& user, float* a, const memory::desc& want) {
    return want == user ? wrap(user, a) : scratch(slot++, want);
  };
  auto finish = [&](const memory::desc& user, float* a, memory& m) {
    if (m.get_desc() == user) return;
    memory u = wrap(user, a);
    dnnl::reorder(m, u).execute(stream, m, u);
  };
  memory pad = scratch(3, p.scratchpad);
  switch (kind) {
    case OpKind::conv: {
      memory y = output(d.y, out, p.y);
      std::unordered_map<int, memory> args{{DNNL_ARG_SRC, input(d.x, in0, p.x)},
                                           {DNNL_ARG_WEIGHTS, input(d.w, in1, p.w)},
                                           {DNNL_ARG_DST, y},
                                           {DNNL_ARG_SCRATCHPAD, pad}};
      if (bias) args.emplace(DNNL_ARG_BIAS, wrap(d.b, bias));
      p.prim.execute(stream, args);
      finish(d.y, out, y);
      break;
    }
    case OpKind::conv_backward_input: {
      memory dx = output(d.x, out, p.x);
      p.prim.execute(stream, {{DNNL_ARG_DIFF_DST, input(d.y, in0, p.y)},
                              {DNNL_ARG_WEIGHTS, input(d.w, in1, p.w)},
                              {DNNL_ARG_DIFF_SRC, dx},
                              {DNNL_ARG_SCRATCHPAD, pad}});
      finish(d.x, out, dx);
      break;
    }
    default: {
      memory dw = output(d.w, out, p.w);
      p.prim.execute(stream, {{DNNL_ARG_SRC, input(d.x, in0, p.x)},
                              {DNNL_ARG_DIFF_DST, input(d.y, in1, p.y)},
                              {DNNL_ARG_DIFF_WEIGHTS, dw},
                              {DNNL_ARG_SCRATCHPAD, pad}});
      finish(d.w, out, dw);
      break;
    }
  }
  stream.wait();
}

// Runs task(i) for i in [0, n) on the pool; an exception in any task is rethrown here.
template <class F>
void run_tasks(int64_t n, F&& task) {
  std::exception_ptr error;
  std::mutex mutex;
  parallel_for(n, n * kParallelGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      try {
        task(i);
      } catch (...) {
        std::lock_guard lock(mutex);
        if (!error) error = std::current_exception();
      }
    }
  });
  if (error) std::rethrow_exception(error);
}

}  // namespace

bool conv_dnnl(const Op& op, const ConvAttrs& attrs, In in, Out out) {
  if (op.kind != OpKind::conv && op.kind != OpKind::conv_backward_input &&
      op.kind != OpKind::conv_backward_weight)
    return false;
  for (const Array& a : in)
    if (!usable(a)) return false;
  if (!usable(out[0])) return false;
  const bool bias = in.size() > 2;
  Signature s{op.kind, bias, {}, {}, {}, attrs};
  const Array *x, *w, *y;
  switch (op.kind) {
    case OpKind::conv:
      x = &in[0], w = &in[1], y = &out[0];
      break;
    case OpKind::conv_backward_input:
      x = &out[0], w = &in[1], y = &in[0];
      // The transposed convolution's bias is added below, not by the primitive.
      s.bias = false;
      break;
    default:
      x = &in[0], w = &out[0], y = &in[1];
      break;
  }
  s.x.assign(x->shape.begin(), x->shape.end());
  s.w.assign(w->shape.begin(), w->shape.end());
  s.y.assign(y->shape.begin(), y->shape.end());
  const int64_t N = s.x[0], groups = s.attrs.groups;
  const int64_t xs = x->numel() / N, ys = y->numel() / N;

  // The slices: of the batch when there is one image per thread or more; of a single image's
  // output channels for its forward pass (the weights, bias and output split along them).
  const int64_t threads = SerialOpenMp::available() ? num_threads() : 1;
  int64_t parts = std::min<int64_t>(threads, N);
  bool by_channel = false;
  if (parts == 1 && op.kind == OpKind::conv && groups == 1 && threads > 1 && s.y[1] >= 32) {
    parts = std::min<int64_t>(threads, s.y[1] / 16);
    by_channel = parts > 1;
  }
  std::vector<int64_t> bounds(static_cast<size_t>(parts) + 1);
  for (int64_t i = 0; i < parts; ++i) {
    // Channel slices start on whole 16-channel blocks, the width of the blocked layouts.
    const int64_t b = by_channel ? (s.y[1] * i / parts + 15) / 16 * 16 : N * i / parts;
    bounds[static_cast<size_t>(i)] = b;
  }
  bounds.back() = by_channel ? s.y[1] : N;
  std::vector<std::shared_ptr<const Prepared>> prims(static_cast<size_t>(parts));
  for (int64_t i = 0; i < parts; ++i) {
    Signature si = s;
    const int64_t n = bounds[static_cast<size_t>(i) + 1] - bounds[static_cast<size_t>(i)];
    if (by_channel) {
      si.w[0] = n;
      si.y[1] = n;
    } else {
      si.x[0] = si.y[0] = n;
    }
    prims[static_cast<size_t>(i)] = cached_primitive(si);
    if (!prims[static_cast<size_t>(i)]) return false;
  }

  // Weight gradients of the slices after the first go to buffers of the calling thread, and are
  // added up at the end.
  const bool partial_dw = op.kind == OpKind::conv_backward_weight && parts > 1;
  const int64_t wn = w->numel();
  thread_local std::vector<float> partials;
  if (partial_dw && partials.size() < static_cast<size_t>((parts - 1) * wn))
    partials.resize(static_cast<size_t>((parts - 1) * wn));
  float* const partial = partials.data();  // the tasks run on other threads

  run_tasks(parts, [&](int64_t i) {
    SerialOpenMp one;
    const int64_t lo = bounds[static_cast<size_t>(i)];
    const Prepared& p = *prims[static_cast<size_t>(i)];
    switch (op.kind) {
      case OpKind::conv:
        if (by_channel) {
          const int64_t per_o = wn / s.w[0];  // weights per output channel
          return execute(p, op.kind, in[0].data<float>(), in[1].data<float>() + lo * per_o,
                         bias ? in[2].data<float>() + lo : nullptr,
                         out[0].data<float>() + lo * (ys / s.y[1]));
        }
        return execute(p, op.kind, in[0].data<float>() + lo * xs, in[1].data<float>(),
                       bias ? in[2].data<float>() : nullptr, out[0].data<float>() + lo * ys);
      case OpKind::conv_backward_input:
        return execute(p, op.kind, in[0].data<float>() + lo * ys, in[1].data<float>(), nullptr,
                       out[0].data<float>() + lo * xs);
      default:
        return execute(p, op.kind, in[0].data<float>() + lo * xs, in[1].data<float>() + lo * ys,
                       nullptr, i == 0 ? out[0].data<float>() : partial + (i - 1) * wn);
    }
  });

  if (partial_dw) {
    float* dw = out[0].data<float>();
    parallel_for(wn, wn * parts, [&](int64_t b, int64_t e) {
      for (int64_t j = 1; j < parts; ++j) {
        const float* part = partial + (j - 1) * wn;
        for (int64_t k = b; k < e; ++k) dw[k] += part[k];
      }
    });
  }
  if (op.kind == OpKind::conv_backward_input && bias) {
    float* dx = out[0].data<float>();
    const float* b = in[2].data<float>();
    const int64_t C = s.x[1], S = xs / C;
    parallel_for(N * C, N * C * S, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const float bv = b[i % C];
        for (float* p = dx + i * S; p < dx + (i + 1) * S; ++p) *p += bv;
      }
    });
  }
  return true;
}

}  // namespace crisp::cpu
