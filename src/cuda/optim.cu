// CUDA kernels of the optim family: each optimizer update is one elementwise pass that reads a
// parameter, its gradient and its state and writes the new ones (op_kinds.inc has the formulas).
#include "cuda/common.cuh"
#include "cuda/map.cuh"

namespace crisp::cuda {

namespace {

// Values in the state type S (float for 16-bit parameters).
template <class S, class T>
__device__ inline S get(const T* p, int64_t i) {
  return static_cast<S>(load(p[i]));
}

// NaN-propagating, as torch.maximum.
template <class S>
__device__ inline S nan_max(S a, S b) {
  return a != a ? a : b != b ? b : a < b ? b : a;
}

struct SgdArgs {
  bool momentum_on, nesterov, has_buf, decay;
  double neg_lr, mom, keep, w, sign;
};

template <class P, class S>
__global__ void sgd_kernel(int64_t n, const P* p, const P* g, const S* buf, P* po, S* bo,
                           SgdArgs a) {
  const S sign = static_cast<S>(a.sign), neg_lr = static_cast<S>(a.neg_lr),
          mom = static_cast<S>(a.mom), keep = static_cast<S>(a.keep), w = static_cast<S>(a.w);
  CRISP_GRID_STRIDE(i, n) {
    const S pi = get<S>(p, i);
    S d = get<S>(g, i) * sign;
    if (a.decay) d = d + w * pi;
    if (a.momentum_on) {
      const S b = a.has_buf ? buf[i] * mom + keep * d : d;
      bo[i] = b;
      d = a.nesterov ? d + mom * b : b;
    }
    po[i] = convert<P>(pi + neg_lr * d);
  }
}

struct AdamArgs {
  bool amsgrad, decoupled, l2;
  double sign, b1, c1, b2, c2, eps, w, shrink, neg_step, bc2;
};

// AdamArgs in the state type, and the update of one element.
template <class S>
struct AdamMath {
  S sign, b1, c1, b2, c2, e, w, shrink, neg_step, bc2;
  bool amsgrad, decoupled, l2;
  __device__ explicit AdamMath(const AdamArgs& a)
      : sign(static_cast<S>(a.sign)),
        b1(static_cast<S>(a.b1)),
        c1(static_cast<S>(a.c1)),
        b2(static_cast<S>(a.b2)),
        c2(static_cast<S>(a.c2)),
        e(static_cast<S>(a.eps)),
        w(static_cast<S>(a.w)),
        shrink(static_cast<S>(a.shrink)),
        neg_step(static_cast<S>(a.neg_step)),
        bc2(static_cast<S>(a.bc2)),
        amsgrad(a.amsgrad),
        decoupled(a.decoupled),
        l2(a.l2) {}
  // p, m, v (and vmax with amsgrad) become their new values.
  __device__ void step(S& p, S g, S& m, S& v, S& vmax) const {
    S d = g * sign;
    if (l2) d = d + w * p;
    if (decoupled) p = p * shrink;
    m = m * b1 + c1 * d;
    v = v * b2 + c2 * d * d;
    S vi = v;
    if (amsgrad) vi = vmax = nan_max(vmax, v);
    p = p + neg_step * m / (sqrt(vi) / bc2 + e);
  }
};

// vec: no amsgrad and every array 4-element aligned, so the bulk moves as 16-byte packs (the
// update is bound by its seven streams of memory traffic).
template <class P, class S>
__global__ void adam_kernel(int64_t n, bool vec, const P* p, const P* g, const S* m, const S* v,
                            const S* vmax, P* po, S* mo, S* vo, S* vmo, AdamArgs a) {
  const AdamMath<S> k(a);
  int64_t done = 0;
  if (vec) {
    done = n / 4 * 4;
    CRISP_GRID_STRIDE(i, n / 4) {
      Pack<P> pp = reinterpret_cast<const Pack<P>*>(p)[i];
      const Pack<P> gp = reinterpret_cast<const Pack<P>*>(g)[i];
      Pack<S> mp = reinterpret_cast<const Pack<S>*>(m)[i];
      Pack<S> vp = reinterpret_cast<const Pack<S>*>(v)[i];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        S pj = static_cast<S>(load(pp.v[j])), unused = 0;
        k.step(pj, static_cast<S>(load(gp.v[j])), mp.v[j], vp.v[j], unused);
        pp.v[j] = convert<P>(pj);
      }
      reinterpret_cast<Pack<P>*>(po)[i] = pp;
      reinterpret_cast<Pack<S>*>(mo)[i] = mp;
      reinterpret_cast<Pack<S>*>(vo)[i] = vp;
    }
  }
  CRISP_GRID_STRIDE(t, n - done) {
    const int64_t i = done + t;
    S pi = get<S>(p, i), mi = m[i], vi = v[i], vm = k.amsgrad ? vmax[i] : S(0);
    k.step(pi, get<S>(g, i), mi, vi, vm);
    mo[i] = mi;
    vo[i] = vi;
    if (k.amsgrad) vmo[i] = vm;
    po[i] = convert<P>(pi);
  }
}

struct RmspropArgs {
  bool centered, momentum_on, decay;
  double sign, neg_lr, a, c, eps, w, mom;
};

template <class P, class S>
__global__ void rmsprop_kernel(int64_t n, const P* p, const P* g, const S* sq, const S* ga,
                               const S* buf, P* po, S* sqo, S* gao, S* bo, RmspropArgs r) {
  const S sign = static_cast<S>(r.sign), neg_lr = static_cast<S>(r.neg_lr), a = static_cast<S>(r.a),
          c = static_cast<S>(r.c), e = static_cast<S>(r.eps), w = static_cast<S>(r.w),
          mom = static_cast<S>(r.mom);
  CRISP_GRID_STRIDE(i, n) {
    const S pi = get<S>(p, i);
    S d = get<S>(g, i) * sign;
    if (r.decay) d = d + w * pi;
    const S s = sq[i] * a + c * d * d;
    sqo[i] = s;
    S avg;
    if (r.centered) {
      const S gm = ga[i] * a + c * d;
      gao[i] = gm;
      avg = sqrt(s - gm * gm) + e;
    } else {
      avg = sqrt(s) + e;
    }
    if (r.momentum_on) {
      const S b = buf[i] * mom + d / avg;
      bo[i] = b;
      po[i] = convert<P>(pi + neg_lr * b);
    } else {
      po[i] = convert<P>(pi + neg_lr * d / avg);
    }
  }
}

template <class K, class... A>
void launch(K kernel, int64_t n, A... args) {
  if (n <= 0) return;
  kernel<<<grid_for(n), kBlock, 0, ctx().stream>>>(n, args...);
  CUDA_LAUNCH_CHECK();
}

template <class P, class S>
void route(const Op& op, In in, Out out) {
  const int64_t n = in[0].numel();
  const P* p = in[0].data<P>();
  const P* g = in[1].data<P>();
  P* po = out[0].data<P>();
  switch (op.kind) {
    case OpKind::sgd_step: {
      SgdArgs a{};
      a.momentum_on = op.ints.at(0) != 0;
      a.nesterov = op.ints.at(1) != 0;
      a.sign = op.ints.at(2) ? -1 : 1;
      a.has_buf = in.size() > 2;
      a.neg_lr = -op.reals.at(0);
      a.mom = op.reals.at(1);
      a.keep = 1 - op.reals.at(2);
      a.w = op.reals.at(3);
      a.decay = a.w != 0;
      return launch(sgd_kernel<P, S>, n, p, g, a.has_buf ? in[2].data<S>() : nullptr, po,
                    a.momentum_on ? out[1].data<S>() : nullptr, a);
    }
    case OpKind::adam_step: {
      AdamArgs a{};
      a.amsgrad = op.ints.at(0) != 0;
      a.sign = op.ints.at(1) ? -1 : 1;
      a.decoupled = op.ints.at(2) != 0;
      const double lr = op.reals.at(0), beta1 = op.reals.at(1), beta2 = op.reals.at(2);
      a.b1 = beta1;
      a.c1 = 1 - beta1;
      a.b2 = beta2;
      a.c2 = 1 - beta2;
      a.eps = op.reals.at(3);
      a.w = op.reals.at(4);
      a.l2 = !a.decoupled && a.w != 0;
      a.shrink = 1 - lr * a.w;
      a.neg_step = -op.reals.at(5);
      a.bc2 = op.reals.at(6);
      const S *m = in[2].data<S>(), *v = in[3].data<S>();
      S *mo = out[1].data<S>(), *vo = out[2].data<S>();
      const bool vec = !a.amsgrad && n >= 4 && pack_aligned<P>(p) && pack_aligned<P>(g) &&
                       pack_aligned<P>(po) && pack_aligned<S>(m) && pack_aligned<S>(v) &&
                       pack_aligned<S>(mo) && pack_aligned<S>(vo);
      if (n <= 0) return;
      adam_kernel<P, S><<<grid_for(vec ? n / 4 : n), kBlock, 0, ctx().stream>>>(
          n, vec, p, g, m, v, a.amsgrad ? in[4].data<S>() : nullptr, po, mo, vo,
          a.amsgrad ? out[3].data<S>() : nullptr, a);
      CUDA_LAUNCH_CHECK();
      return;
    }
    case OpKind::rmsprop_step: {
      RmspropArgs r{};
      r.centered = op.ints.at(0) != 0;
      r.momentum_on = op.ints.at(1) != 0;
      r.sign = op.ints.at(2) ? -1 : 1;
      r.neg_lr = -op.reals.at(0);
      r.a = op.reals.at(1);
      r.c = 1 - op.reals.at(1);
      r.eps = op.reals.at(2);
      r.w = op.reals.at(3);
      r.decay = r.w != 0;
      r.mom = op.reals.at(4);
      const size_t buf_at = r.centered ? 4 : 3, buf_out = r.centered ? 3 : 2;
      return launch(rmsprop_kernel<P, S>, n, p, g, in[2].data<S>(),
                    r.centered ? in[3].data<S>() : nullptr,
                    r.momentum_on ? in[buf_at].data<S>() : nullptr, po, out[1].data<S>(),
                    r.centered ? out[2].data<S>() : nullptr,
                    r.momentum_on ? out[buf_out].data<S>() : nullptr, r);
    }
    default:
      unsupported(op, in[0].dtype);
  }
}

}  // namespace

void optim(const Op& op, In in, Out out) {
  if (in.size() < 2 || out.empty()) fail(op_name(op.kind), ": expected a parameter and gradient");
  const DType pd = in[0].dtype, sd = pd == DType::f16 || pd == DType::bf16 ? DType::f32 : pd;
  const int64_t n = in[0].numel();
  // The front end hands every operand contiguous and of one size; anything else is a bug there.
  auto check_operand = [&](const Array& a, size_t i) {
    if (!a.is_contiguous() || a.numel() != n || a.dtype != (i < 2 ? pd : sd))
      fail(op_name(op.kind), ": operand ", i, " must be contiguous, ", n, " elements of ",
           dtype_name(i < 2 ? pd : sd));
  };
  for (size_t i = 0; i < in.size(); ++i) check_operand(in[i], i);
  for (size_t i = 0; i < out.size(); ++i) check_operand(out[i], i == 0 ? 0 : 2);
  switch (pd) {
    case DType::f32:
      return route<float, float>(op, in, out);
    case DType::f64:
      return route<double, double>(op, in, out);
    case DType::f16:
      return route<__half, float>(op, in, out);
    case DType::bf16:
      return route<__nv_bfloat16, float>(op, in, out);
    default:
      unsupported(op, pd);
  }
}

}  // namespace crisp::cuda
