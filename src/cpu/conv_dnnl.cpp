// CPU convolutions through oneDNN for contiguous float32 data: forward, input and weight
// gradients, primitives cached per shape; conv.cpp falls back to im2col when this declines.

#include <dnnl.hpp>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "cpu/nn_util.h"

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
  std::vector<int64_t> x, w, y, ints;
  auto operator<=>(const Signature&) const = default;
};

struct Descs {
  memory::desc x, w, b, y;
  memory::dims stride, dilation, pad_l, pad_r;
};

// The right padding makes the sizes exact; it is negative (down to 1 - stride) where the
// last input columns are never read, which oneDNN accepts.
std::optional<Descs> descriptors(const Signature& s) {
  const int64_t nd = s.ints[0], groups = s.ints[1 + 3 * nd];
  Descs d;
  for (int64_t i = 0; i < nd; ++i) {
    const int64_t st = s.ints[1 + i], p = s.ints[1 + nd + i], dl = s.ints[1 + 2 * nd + i];
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

// A primitive with the layouts it chose for x, w and y (blocked ones need reorders).
struct Prepared {
  dnnl::primitive prim;
  memory::desc x, w, y, scratchpad;
};

// Whether oneDNN may pick its own (blocked, 16-channel) layouts: its direct kernels then beat
// the plain-layout GEMM implementation by 1.5x on the reference CNN, except the input gradient
// with few input channels (1 -> 20 channels: 5 ms blocked, 0.9 ms plain).
bool blocked_layouts(const Signature& s) {
  const int64_t groups = s.ints[1 + 3 * s.ints[0]];
  return s.kind != OpKind::conv_backward_input || s.x[1] / groups >= 16;
}

std::optional<Prepared> make_primitive(const Signature& s) {
  const auto d = descriptors(s);
  if (!d) return std::nullopt;
  const bool any = blocked_layouts(s);
  const auto x = any ? any_like(d->x) : d->x, w = any ? any_like(d->w) : d->w,
             y = any ? any_like(d->y) : d->y;
  const auto algo = dnnl::algorithm::convolution_direct;
  switch (s.kind) {
    case OpKind::conv: {
      const auto pd = forward_pd(*d, s.bias, any);
      return Prepared{dnnl::convolution_forward(pd), pd.src_desc(), pd.weights_desc(),
                      pd.dst_desc(), pd.scratchpad_desc()};
    }
    case OpKind::conv_backward_input: {
      using dnnl::convolution_backward_data;
      const convolution_backward_data::desc desc(algo, x, w, y, d->stride, d->dilation, d->pad_l,
                                                 d->pad_r);
      const convolution_backward_data::primitive_desc pd(desc, user_scratchpad(), cpu_engine(),
                                                         forward_pd(*d, false, any));
      return Prepared{convolution_backward_data(pd), pd.diff_src_desc(), pd.weights_desc(),
                      pd.diff_dst_desc(), pd.scratchpad_desc()};
    }
    case OpKind::conv_backward_weight: {
      using dnnl::convolution_backward_weights;
      const convolution_backward_weights::desc desc(algo, x, w, y, d->stride, d->dilation, d->pad_l,
                                                    d->pad_r);
      const convolution_backward_weights::primitive_desc pd(desc, user_scratchpad(), cpu_engine(),
                                                            forward_pd(*d, false, any));
      return Prepared{convolution_backward_weights(pd), pd.src_desc(), pd.diff_weights_desc(),
                      pd.diff_dst_desc(), pd.scratchpad_desc()};
    }
    default:
      return std::nullopt;
  }
}

// Creating a primitive costs far more than running a small one, so each shape is built once.
// A declined signature is remembered too (as nullopt) so it is not retried on every call.
std::optional<Prepared> cached_primitive(const Signature& s) {
  static std::mutex mutex;
  static std::map<Signature, std::optional<Prepared>> cache;
  std::lock_guard lock(mutex);
  if (auto it = cache.find(s); it != cache.end()) return it->second;
  std::optional<Prepared> p;
  try {
    p = make_primitive(s);
  } catch (const dnnl::error&) {
    p = std::nullopt;
  }
  if (cache.size() > 256) cache.clear();  // bound the memory of shape-varying workloads
  return cache.emplace(s, p).first->second;
}

bool usable(const Array& a) { return a.dtype == DType::f32 && a.is_contiguous() && a.numel() > 0; }

std::vector<int64_t> dims(const Array& a) { return {a.shape.begin(), a.shape.end()}; }

memory wrap(const memory::desc& md, const Array& a) {
  return memory(md, cpu_engine(), const_cast<float*>(a.data<float>()));
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

}  // namespace

bool conv_dnnl(const Op& op, In in, Out out) {
  if (op.kind != OpKind::conv && op.kind != OpKind::conv_backward_input &&
      op.kind != OpKind::conv_backward_weight)
    return false;
  for (const Array& a : in)
    if (!usable(a)) return false;
  if (!usable(out[0])) return false;
  const bool bias = in.size() > 2;
  Signature s{op.kind, bias, {}, {}, {}, std::vector<int64_t>(op.ints.begin(), op.ints.end())};
  switch (op.kind) {
    case OpKind::conv:
      s.x = dims(in[0]), s.w = dims(in[1]), s.y = dims(out[0]);
      break;
    case OpKind::conv_backward_input:
      s.x = dims(out[0]), s.w = dims(in[1]), s.y = dims(in[0]);
      // The transposed convolution's bias is added below, not by the primitive.
      s.bias = false;
      break;
    default:
      s.x = dims(in[0]), s.w = dims(out[0]), s.y = dims(in[1]);
      break;
  }
  const auto prim = cached_primitive(s);
  if (!prim) return false;
  const auto d = descriptors(s);
  thread_local dnnl::stream stream(cpu_engine());
  // User memory in the primitive's layout: the array itself, or a reordered copy.
  int slot = 0;
  auto input = [&](const memory::desc& user, const Array& a, const memory::desc& want) {
    memory m = wrap(user, a);
    if (want == user) return m;
    memory t = scratch(slot++, want);
    dnnl::reorder(m, t).execute(stream, m, t);
    return t;
  };
  auto output = [&](const memory::desc& user, const Array& a, const memory::desc& want) {
    return want == user ? wrap(user, a) : scratch(slot++, want);
  };
  auto finish = [&](const memory::desc& user, const Array& a, memory& m) {
    if (m.get_desc() == user) return;
    memory u = wrap(user, a);
    dnnl::reorder(m, u).execute(stream, m, u);
  };
  memory pad = scratch(3, prim->scratchpad);
  switch (op.kind) {
    case OpKind::conv: {
      memory y = output(d->y, out[0], prim->y);
      std::unordered_map<int, memory> args{{DNNL_ARG_SRC, input(d->x, in[0], prim->x)},
                                           {DNNL_ARG_WEIGHTS, input(d->w, in[1], prim->w)},
                                           {DNNL_ARG_DST, y},
                                           {DNNL_ARG_SCRATCHPAD, pad}};
      if (bias) args.emplace(DNNL_ARG_BIAS, wrap(d->b, in[2]));
      prim->prim.execute(stream, args);
      finish(d->y, out[0], y);
      break;
    }
    case OpKind::conv_backward_input: {
      memory dx = output(d->x, out[0], prim->x);
      prim->prim.execute(stream, {{DNNL_ARG_DIFF_DST, input(d->y, in[0], prim->y)},
                                  {DNNL_ARG_WEIGHTS, input(d->w, in[1], prim->w)},
                                  {DNNL_ARG_DIFF_SRC, dx},
                                  {DNNL_ARG_SCRATCHPAD, pad}});
      finish(d->x, out[0], dx);
      break;
    }
    default: {
      memory dw = output(d->w, out[0], prim->w);
      prim->prim.execute(stream, {{DNNL_ARG_SRC, input(d->x, in[0], prim->x)},
                                  {DNNL_ARG_DIFF_DST, input(d->y, in[1], prim->y)},
                                  {DNNL_ARG_DIFF_WEIGHTS, dw},
                                  {DNNL_ARG_SCRATCHPAD, pad}});
      finish(d->w, out[0], dw);
      break;
    }
  }
  stream.wait();
  if (op.kind == OpKind::conv_backward_input && bias) {
    float* dx = out[0].data<float>();
    const float* b = in[2].data<float>();
    const int64_t N = s.x[0], C = s.x[1], S = out[0].numel() / (N * C);
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
