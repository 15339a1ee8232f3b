// CUDA kernels of the optim family: each optimizer update is one elementwise pass that reads a
// parameter, its gradient and its state and writes the new ones (op_kinds.inc has the formulas).
// One launch updates many parameters: a model's dozens of small tensors would otherwise cost a
// launch each, longer than their memory traffic.
#include "cuda/context.cuh"
#include "cuda/dtype.cuh"
#include "cuda/errors.cuh"
#include "cuda/families.cuh"
#include "cuda/launch.cuh"
#include "cuda/map.cuh"
#include "kernels/optim.h"

namespace crisp::cuda {

namespace {

// NaN-propagating, as torch.maximum.
template <class S>
__device__ inline S nan_max(S a, S b) {
  return a != a ? a : b != b ? b : a < b ? b : a;
}

// Each update as a function of one element: p and the state st (up to three arrays, in the op's
// order; absent ones read as 0) become their new values, in the state type S.
template <class S>
struct SgdMath {
  S sign, neg_lr, mom, keep, w;
  bool momentum_on, nesterov, has_buf, decay;
  __device__ void operator()(S& p, S g, S (&st)[3]) const {
    S d = g * sign;
    if (decay) d = d + w * p;
    if (momentum_on) {
      const S b = has_buf ? st[0] * mom + keep * d : d;
      st[0] = b;
      d = nesterov ? d + mom * b : b;
    }
    p = p + neg_lr * d;
  }
};

template <class S>
struct AdamMath {
  S sign, b1, c1, b2, c2, e, w, shrink, neg_step, bc2;
  bool amsgrad, decoupled, l2;
  // st: m, v, vmax.
  __device__ void operator()(S& p, S g, S (&st)[3]) const {
    S d = g * sign;
    if (l2) d = d + w * p;
    if (decoupled) p = p * shrink;
    st[0] = st[0] * b1 + c1 * d;
    st[1] = st[1] * b2 + c2 * d * d;
    S u = st[1];
    if (amsgrad) u = st[2] = nan_max(st[2], st[1]);
    p = p + neg_step * st[0] / (sqrt(u) / bc2 + e);
  }
};

template <class S>
struct RmspropMath {
  S sign, neg_lr, a, c, e, w, mom;
  bool centered, momentum_on, decay;
  // st: square_avg[, grad_avg][, momentum buffer].
  __device__ void operator()(S& p, S g, S (&st)[3]) const {
    S d = g * sign;
    if (decay) d = d + w * p;
    const S s = st[0] = st[0] * a + c * d * d;
    S avg;
    if (centered) {
      const S gm = st[1] = st[1] * a + c * d;
      avg = sqrt(s - gm * gm) + e;
    } else {
      avg = sqrt(s) + e;
    }
    if (momentum_on) {
      // Selected by value: indexing st by a run-time value would put it in local memory.
      const S b = (centered ? st[2] : st[1]) * mom + d / avg;
      if (centered)
        st[2] = b;
      else
        st[1] = b;
      p = p + neg_lr * b;
    } else {
      p = p + neg_lr * d / avg;
    }
  }
};

// One parameter of a launch: its arrays (null state pointers: not read, or not written) and the
// blocks [first, next slab's first) that cover it, kChunk elements each.
template <class P, class S>
struct Slab {
  const P* p;
  const P* g;
  const S* s[3];
  P* po;
  S* so[3];
  int64_t n;
  int first;
  bool vec;  // every array 16-byte aligned: moved as packs of four
};

constexpr int kSlabs = 24;               // parameters per launch (~2 KB of kernel parameters)
constexpr int64_t kChunk = kBlock * 16;  // elements per block: four packs per thread

template <class P, class S, class M>
struct Slabs {
  Slab<P, S> t[kSlabs];
  int count;
  M math;
};

template <class P, class S, class M>
__device__ inline void update_one(const Slab<P, S>& s, const M& math, int64_t i) {
  S st[3];
#pragma unroll
  for (int k = 0; k < 3; ++k) st[k] = s.s[k] ? s.s[k][i] : S(0);
  S p = static_cast<S>(load(s.p[i]));
  math(p, static_cast<S>(load(s.g[i])), st);
#pragma unroll
  for (int k = 0; k < 3; ++k)
    if (s.so[k]) s.so[k][i] = st[k];
  s.po[i] = convert<P>(p);
}

// __grid_constant__: the table is indexed by the block's slab without a per-thread copy.
template <class P, class S, class M>
__global__ void __launch_bounds__(kBlock) update_kernel(const __grid_constant__ Slabs<P, S, M> b) {
  int t = 0;
  while (t + 1 < b.count && static_cast<int>(blockIdx.x) >= b.t[t + 1].first) ++t;
  const Slab<P, S>& s = b.t[t];
  const int64_t begin = static_cast<int64_t>(static_cast<int>(blockIdx.x) - s.first) * kChunk;
  const int64_t end = min(begin + kChunk, s.n);
  int64_t tail = begin;
  if (s.vec) {
    tail = begin + (end - begin) / 4 * 4;
    for (int64_t i = begin + 4 * threadIdx.x; i < tail; i += 4 * kBlock) {
      const int64_t v = i / 4;
      Pack<P> pp = reinterpret_cast<const Pack<P>*>(s.p)[v];
      const Pack<P> gp = reinterpret_cast<const Pack<P>*>(s.g)[v];
      Pack<S> sp[3]{};
#pragma unroll
      for (int k = 0; k < 3; ++k)
        if (s.s[k]) sp[k] = reinterpret_cast<const Pack<S>*>(s.s[k])[v];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        S st[3];
#pragma unroll
        for (int k = 0; k < 3; ++k) st[k] = s.s[k] ? sp[k].v[j] : S(0);
        S p = static_cast<S>(load(pp.v[j]));
        b.math(p, static_cast<S>(load(gp.v[j])), st);
#pragma unroll
        for (int k = 0; k < 3; ++k) sp[k].v[j] = st[k];
        pp.v[j] = convert<P>(p);
      }
#pragma unroll
      for (int k = 0; k < 3; ++k)
        if (s.so[k]) reinterpret_cast<Pack<S>*>(s.so[k])[v] = sp[k];
      reinterpret_cast<Pack<P>*>(s.po)[v] = pp;
    }
  }
  for (int64_t i = tail + threadIdx.x; i < end; i += kBlock) update_one(s, b.math, i);
}

// Updates every parameter, kSlabs per launch. Input and output state k are the k-th after the
// parameter and gradient, and after the new parameter.
template <class P, class S, class M>
void update(const M& math, const std::vector<ParamOperands>& params) {
  Slabs<P, S, M> b{};
  b.math = math;
  int blocks = 0;
  auto flush = [&] {
    if (b.count == 0) return;
    launch<update_kernel<P, S, M>>(blocks, kBlock, 0, ctx().stream, b);
    b.count = 0;
    blocks = 0;
  };
  for (const ParamOperands& p : params) {
    const int64_t n = p.in[0].numel();
    if (n == 0) continue;
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    if (chunks > (int64_t{1} << 30)) fail("a parameter of ", n, " elements is too large");
    if (b.count == kSlabs || blocks + chunks > (int64_t{1} << 30)) flush();
    Slab<P, S>& s = b.t[b.count++];
    s = Slab<P, S>{};
    s.p = p.in[0].data<P>();
    s.g = p.in[1].data<P>();
    s.po = p.out[0].data<P>();
    bool vec = pack_aligned<P>(s.p) && pack_aligned<P>(s.g) && pack_aligned<P>(s.po);
    for (size_t k = 2; k < p.in.size() && k < 5; ++k) {
      s.s[k - 2] = p.in[k].data<S>();
      vec = vec && pack_aligned<S>(s.s[k - 2]);
    }
    for (size_t k = 1; k < p.out.size() && k < 4; ++k) {
      s.so[k - 1] = p.out[k].data<S>();
      vec = vec && pack_aligned<S>(s.so[k - 1]);
    }
    s.n = n;
    s.first = blocks;
    s.vec = vec;
    blocks += static_cast<int>(chunks);
  }
  flush();
}

// The update's arithmetic in S from the op's attributes, and every parameter updated with it.
template <class P, class S>
void route(const Op& op, In in, Out out) {
  switch (op.kind) {
    case OpKind::sgd_step: {
      const SgdStepAttrs a = SgdStepAttrs::from_op(op);
      const auto params = optim_operands(op, a.params, in, out);
      SgdMath<S> m{};
      m.momentum_on = a.has_momentum;
      m.nesterov = a.nesterov;
      m.sign = a.maximize ? S(-1) : S(1);
      m.has_buf = params[0].in.size() > 2;
      m.neg_lr = -static_cast<S>(a.lr);
      m.mom = static_cast<S>(a.momentum);
      m.keep = static_cast<S>(1 - a.dampening);
      m.w = static_cast<S>(a.weight_decay);
      m.decay = a.weight_decay != 0;
      return update<P, S>(m, params);
    }
    case OpKind::adam_step: {
      const AdamStepAttrs a = AdamStepAttrs::from_op(op);
      const auto params = optim_operands(op, a.params, in, out);
      AdamMath<S> m{};
      m.amsgrad = a.amsgrad;
      m.sign = a.maximize ? S(-1) : S(1);
      m.decoupled = a.decoupled;
      m.b1 = static_cast<S>(a.beta1);
      m.c1 = static_cast<S>(1 - a.beta1);
      m.b2 = static_cast<S>(a.beta2);
      m.c2 = static_cast<S>(1 - a.beta2);
      m.e = static_cast<S>(a.eps);
      m.w = static_cast<S>(a.weight_decay);
      m.l2 = !m.decoupled && a.weight_decay != 0;
      m.shrink = static_cast<S>(1 - a.lr * a.weight_decay);
      m.neg_step = -static_cast<S>(a.step_size);
      m.bc2 = static_cast<S>(a.bc2_sqrt);
      return update<P, S>(m, params);
    }
    case OpKind::rmsprop_step: {
      const RmspropStepAttrs a = RmspropStepAttrs::from_op(op);
      const auto params = optim_operands(op, a.params, in, out);
      RmspropMath<S> m{};
      m.centered = a.centered;
      m.momentum_on = a.has_momentum;
      m.sign = a.maximize ? S(-1) : S(1);
      m.neg_lr = -static_cast<S>(a.lr);
      m.a = static_cast<S>(a.alpha);
      m.c = static_cast<S>(1 - a.alpha);
      m.e = static_cast<S>(a.eps);
      m.w = static_cast<S>(a.weight_decay);
      m.decay = a.weight_decay != 0;
      m.mom = static_cast<S>(a.momentum);
      return update<P, S>(m, params);
    }
    default:
      unsupported(op, in[0].dtype);
  }
}

}  // namespace

void run_optim(const Op& op, In in, Out out) {
  if (in.empty()) fail(op_name(op.kind), ": expected a parameter and gradient");
  switch (in[0].dtype) {
    case DType::f32:
      return route<float, float>(op, in, out);
    case DType::f64:
      return route<double, double>(op, in, out);
    case DType::f16:
      return route<__half, float>(op, in, out);
    case DType::bf16:
      return route<__nv_bfloat16, float>(op, in, out);
    default:
      unsupported(op, in[0].dtype);
  }
}

}  // namespace crisp::cuda
