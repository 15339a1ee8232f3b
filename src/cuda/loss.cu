// CUDA kernels for the fused negative log-likelihood and its gradient.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/channel_sums.cuh"
#include "cuda/families.cuh"
#include "kernels/loss.h"

namespace crisp::cuda {

namespace {

// ---- negative log-likelihood ----

constexpr int kBadTarget = 2;

template <class T>
struct Nll {
  const T* logp;
  const int64_t* target;  // class indices [N, S]
  const T* prob;          // or probabilities [N, C, S]
  const T* w;             // class weights [C] or null
  int64_t N, C, S;
  int64_t ignore;
  double eps;
  DeviceFault* fault;

  __device__ double wc(int64_t c) const { return w ? static_cast<double>(load(w[c])) : 1.0; }
  __device__ double lp(int64_t n, int64_t c, int64_t s) const {
    return load(logp[(n * C + c) * S + s]);
  }

  // Element j = n * S + s: its loss and its weight in the mean's denominator.
  __device__ Sum2 term(int64_t n, int64_t s) const {
    const int64_t j = n * S + s;
    if (prob) {
      double acc = 0;
      for (int64_t c = 0; c < C; ++c) {
        const double p = static_cast<double>(load(prob[(n * C + c) * S + s])) * (1 - eps) + eps / C;
        acc -= wc(c) * p * lp(n, c, s);
      }
      return Sum2{acc, 1};
    }
    const int64_t t = target[j];
    if (t == ignore) return Sum2{0, 0};
    if (t < 0 || t >= C) {
      if (fault) report_fault(fault, kBadTarget, t);
      return Sum2{0, 0};
    }
    double acc = (1 - eps) * wc(t) * -lp(n, t, s);
    if (eps > 0) {
      double smooth = 0;
      for (int64_t k = 0; k < C; ++k) smooth -= wc(k) * lp(n, k, s);
      acc += eps / C * smooth;
    }
    return Sum2{acc, wc(t)};
  }
  __device__ Sum2 operator()(int64_t, int64_t n, int64_t s) const { return term(n, s); }
};

template <class T>
__global__ void nll_none_kernel(int64_t n, Nll<T> f, T* out) {
  CRISP_GRID_STRIDE(j, n) { out[j] = convert<T>(f.term(j / f.S, j % f.S).a); }
}

template <class T>
struct StoreReduced {
  T* out;
  bool mean;
  __device__ void operator()(int64_t, Sum2 t) const { out[0] = convert<T>(mean ? t.a / t.b : t.a); }
};

// The mean's denominator for class targets: the summed weights of the counted elements.
template <class T>
struct CountedWeight {
  Nll<T> f;
  __device__ Sum2 operator()(int64_t, int64_t n, int64_t s) const {
    const int64_t t = f.target[n * f.S + s];
    const bool counted = t != f.ignore && t >= 0 && t < f.C;
    return Sum2{counted ? f.wc(t) : 0.0, 0};
  }
};
struct StoreDouble {
  double* out;
  __device__ void operator()(int64_t, Sum2 t) const { out[0] = t.a; }
};

template <class T>
__global__ void nll_backward_kernel(int64_t n, Nll<T> f, const T* g, bool per_element,
                                    const double* den_dev, double den, T* dlogp, T* dprob) {
  CRISP_GRID_STRIDE(k, n) {
    const int64_t s = k % f.S, nc = k / f.S, c = nc % f.C, nn = nc / f.C, j = nn * f.S + s;
    const double dn = den_dev ? *den_dev : den;
    if (f.prob) {
      const double sc = static_cast<double>(load(g[per_element ? j : 0])) / dn;
      const double p = static_cast<double>(load(f.prob[k])) * (1 - f.eps) + f.eps / f.C;
      dlogp[k] = convert<T>(-sc * f.wc(c) * p);
      dprob[k] = convert<T>(-sc * f.wc(c) * static_cast<double>(load(f.logp[k])) * (1 - f.eps));
      continue;
    }
    const int64_t t = f.target[j];
    const bool counted = t != f.ignore && t >= 0 && t < f.C;
    const double sc = counted ? static_cast<double>(load(g[per_element ? j : 0])) / dn : 0.0;
    double v = f.eps / f.C * f.wc(c);
    if (c == t) v += (1 - f.eps) * f.wc(c);
    dlogp[k] = convert<T>(-sc * v);
  }
}

}  // namespace

void run_loss(const Op& op, In in, Out out) {
  ContiguousInputs d(in);
  const NllAttrs attrs = NllAttrs::from_op(op);
  const bool prob = attrs.prob_target, has_w = attrs.has_weight;
  const int64_t ignore = attrs.ignore_index;
  const Reduction reduction = attrs.reduction;
  const bool backward = op.kind == OpKind::nll_loss_backward;
  const size_t base = backward ? 1 : 0;  // the backward's inputs start with the gradient
  const Array& logp = d[base];
  const int64_t N = logp.shape[0], C = logp.shape[1], S = logp.shape[2];
  visit_float(logp.dtype, op_name(op.kind), [&](auto tag) {
    using T = decltype(tag);
    Nll<T> f{logp.data<T>(),
             prob ? nullptr : d.ptr<int64_t>(base + 1),
             prob ? d.ptr<T>(base + 1) : nullptr,
             has_w ? d.ptr<T>(base + 2) : nullptr,
             N,
             C,
             S,
             ignore,
             attrs.label_smoothing,
             nullptr};
    if (!backward) {
      if (!prob)
        f.fault = ctx().fault([C, ignore](int, long long v) {
          return detail::cat("target ", v, " is out of range for ", C, " classes (ignore_index is ",
                             ignore, ")");
        });
      if (reduction == Reduction::none) {
        launch_items<nll_none_kernel<T>>(N * S, f, out[0].data<T>());
      } else {
        channel_sums(N, 1, S, f, StoreReduced<T>{out[0].data<T>(), reduction == Reduction::mean});
      }
      return;
    }
    Buffer den_buf;
    const double* den_dev = nullptr;
    double den = 1;
    if (reduction == Reduction::mean) {
      if (prob) {
        den = static_cast<double>(N * S);
      } else {
        den_buf = Buffer(sizeof(double));
        channel_sums(N, 1, S, CountedWeight<T>{f}, StoreDouble{den_buf.as<double>()});
        den_dev = den_buf.as<double>();
      }
    }
    launch_items<nll_backward_kernel<T>>(N * C * S, f, d.ptr<T>(0), reduction == Reduction::none,
                                         den_dev, den, out[0].data<T>(),
                                         prob ? out[1].data<T>() : nullptr);
  });
}

}  // namespace crisp::cuda
