// CUDA kernels of the optim family: each optimizer update is one elementwise pass that reads a
// parameter, its gradient and its state and writes the new ones (op_kinds.inc has the formulas).
#include "cuda/common.cuh"

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

template <class P, class S>
__global__ void adam_kernel(int64_t n, const P* p, const P* g, const S* m, const S* v,
                            const S* vmax, P* po, S* mo, S* vo, S* vmo, AdamArgs a) {
  const S sign = static_cast<S>(a.sign), b1 = static_cast<S>(a.b1), c1 = static_cast<S>(a.c1),
          b2 = static_cast<S>(a.b2), c2 = static_cast<S>(a.c2), e = static_cast<S>(a.eps),
          w = static_cast<S>(a.w), shrink = static_cast<S>(a.shrink),
          neg_step = static_cast<S>(a.neg_step), bc2 = static_cast<S>(a.bc2);
  CRISP_GRID_STRIDE(i, n) {
    S pi = get<S>(p, i);
    S d = get<S>(g, i) * sign;
    if (a.l2) d = d + w * pi;
    if (a.decoupled) pi = pi * shrink;
    const S mi = m[i] * b1 + c1 * d;
    S vi = v[i] * b2 + c2 * d * d;
    mo[i] = mi;
    vo[i] = vi;
    if (a.amsgrad) {
      vi = nan_max(vmax[i], vi);
      vmo[i] = vi;
    }
    po[i] = convert<P>(pi + neg_step * mi / (sqrt(vi) / bc2 + e));
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
      return launch(adam_kernel<P, S>, n, p, g, in[2].data<S>(), in[3].data<S>(),
                    a.amsgrad ? in[4].data<S>() : nullptr, po, out[1].data<S>(), out[2].data<S>(),
                    a.amsgrad ? out[3].data<S>() : nullptr, a);
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
