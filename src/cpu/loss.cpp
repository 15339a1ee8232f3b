// CPU kernels for the fused negative log-likelihood behind cross_entropy and nll_loss.
#include "kernels/loss.h"
#include "cpu/nn_util.h"

namespace crisp::cpu {

namespace {

// Per element (n, s): its loss and its weight in the mean's denominator.
template <class C>
struct NllTerms {
  std::vector<double> loss, weight;
};

template <class C>
NllTerms<C> nll_terms(const NllAttrs& at, const C* logp, const Array& target_a, const C* w,
                      int64_t N, int64_t Cn, int64_t S) {
  NllTerms<C> t;
  t.loss.assign(static_cast<size_t>(N * S), 0.0);
  t.weight.assign(static_cast<size_t>(N * S), 0.0);
  const double eps = at.label_smoothing;
  auto wc = [&](int64_t c) { return w ? static_cast<double>(w[c]) : 1.0; };
  if (at.prob_target) {
    ContiguousAs<C> tgt(target_a);
    parallel_for(N * S, N * S * Cn, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) {
        const int64_t n = j / S, s = j % S;
        double acc = 0;
        for (int64_t c = 0; c < Cn; ++c) {
          const int64_t k = (n * Cn + c) * S + s;
          const double p = tgt[k] * (1 - eps) + eps / static_cast<double>(Cn);
          acc -= wc(c) * p * logp[k];
        }
        t.loss[static_cast<size_t>(j)] = acc;
        t.weight[static_cast<size_t>(j)] = 1;
      }
    });
    return t;
  }
  ContiguousAs<int64_t> tgt(target_a);
  BadIndex bad;
  parallel_for(N * S, N * S * (eps > 0 ? Cn : 1), [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      const int64_t n = j / S, s = j % S, c = tgt[j];
      if (c == at.ignore_index) continue;
      if (c < 0 || c >= Cn) {
        bad.note(c);
        continue;
      }
      double acc = (1 - eps) * wc(c) * -static_cast<double>(logp[(n * Cn + c) * S + s]);
      if (eps > 0) {
        double smooth = 0;
        for (int64_t k = 0; k < Cn; ++k) smooth -= wc(k) * logp[(n * Cn + k) * S + s];
        acc += eps / static_cast<double>(Cn) * smooth;
      }
      t.loss[static_cast<size_t>(j)] = acc;
      t.weight[static_cast<size_t>(j)] = wc(c);
    }
  });
  if (bad.seen)
    fail("target ", bad.value.load(), " is out of range for ", Cn, " classes (ignore_index is ",
         at.ignore_index, ")");
  return t;
}

template <class C>
void nll_loss(const Op& op, In in, Array& out_a) {
  const NllAttrs at = NllAttrs::from_op(op);
  ContiguousAs<C> logp(in[0]);
  std::optional<ContiguousAs<C>> w;
  if (at.has_weight) w.emplace(in[2]);
  const int64_t N = in[0].shape[0], Cn = in[0].shape[1], S = in[0].shape[2];
  NllTerms<C> t = nll_terms<C>(at, logp.data(), in[1], w ? w->data() : nullptr, N, Cn, S);
  Result<C> out(out_a);
  if (at.reduction == Reduction::none) {
    for (int64_t j = 0; j < N * S; ++j) out[j] = static_cast<C>(t.loss[static_cast<size_t>(j)]);
  } else {
    double total = 0, den = 0;
    for (int64_t j = 0; j < N * S; ++j) {
      total += t.loss[static_cast<size_t>(j)];
      den += t.weight[static_cast<size_t>(j)];
    }
    out[0] = static_cast<C>(at.reduction == Reduction::mean ? total / den : total);
  }
  out.finish();
}

template <class C>
void nll_loss_backward(const Op& op, In in, Out out) {
  // inputs: grad, logp, target[, weight]; outputs: dlogp[, dtarget]
  const NllAttrs at = NllAttrs::from_op(op);
  ContiguousAs<C> g(in[0]), logp(in[1]);
  std::optional<ContiguousAs<C>> w;
  if (at.has_weight) w.emplace(in[3]);
  const C* wp = w ? w->data() : nullptr;
  auto wc = [&](int64_t c) { return wp ? static_cast<double>(wp[c]) : 1.0; };
  const int64_t N = in[1].shape[0], Cn = in[1].shape[1], S = in[1].shape[2];
  const double eps = at.label_smoothing;
  // The mean's denominator: the summed weights of the counted elements.
  double den = 1;
  if (at.reduction == Reduction::mean) {
    if (at.prob_target) {
      den = static_cast<double>(N * S);
    } else {
      ContiguousAs<int64_t> tgt(in[2]);
      den = 0;
      for (int64_t j = 0; j < N * S; ++j) {
        const int64_t c = tgt[j];
        if (c != at.ignore_index && c >= 0 && c < Cn) den += wc(c);
      }
    }
  }
  auto scale = [&](int64_t j) { return (at.reduction == Reduction::none ? g[j] : g[0]) / den; };
  Result<C> dlogp(out[0]);
  if (at.prob_target) {
    ContiguousAs<C> tgt(in[2]);
    Result<C> dtgt(out[1]);
    parallel_for(N * S, N * S * Cn, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) {
        const int64_t n = j / S, s = j % S;
        const double sc = scale(j);
        for (int64_t c = 0; c < Cn; ++c) {
          const int64_t k = (n * Cn + c) * S + s;
          const double p = tgt[k] * (1 - eps) + eps / static_cast<double>(Cn);
          dlogp[k] = static_cast<C>(-sc * wc(c) * p);
          dtgt[k] = static_cast<C>(-sc * wc(c) * logp[k] * (1 - eps));
        }
      }
    });
    dtgt.finish();
  } else {
    ContiguousAs<int64_t> tgt(in[2]);
    parallel_for(N * S, N * S * Cn, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) {
        const int64_t n = j / S, s = j % S, t = tgt[j];
        const bool counted = t != at.ignore_index && t >= 0 && t < Cn;
        const double sc = counted ? scale(j) : 0.0;
        for (int64_t c = 0; c < Cn; ++c) {
          double v = eps / static_cast<double>(Cn) * wc(c);
          if (c == t) v += (1 - eps) * wc(c);
          dlogp[(n * Cn + c) * S + s] = static_cast<C>(-sc * v);
        }
      }
    });
  }
  dlogp.finish();
}

}  // namespace

void run_loss(const Op& op, In in, Out out) {
  with_compute_type(op, in[0].dtype, [&]<class C>() {
    switch (op.kind) {
      case OpKind::nll_loss:
        return nll_loss<C>(op, in, out[0]);
      case OpKind::nll_loss_backward:
        return nll_loss_backward<C>(op, in, out);
      default:
        unsupported(op, in[0].dtype);
    }
  });
}

}  // namespace crisp::cpu
