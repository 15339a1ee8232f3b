// CPU kernels for the index-driven nn ops: embedding lookups (and their scatter-add gradient)
// and the fused negative log-likelihood behind cross_entropy and nll_loss.
#include <atomic>

#include "cpu/nn_util.h"

namespace crisp::cpu {

namespace {

// Contiguous int64 indices of a (possibly strided) array.
class Indices {
 public:
  explicit Indices(const Array& a) {
    if (a.dtype == DType::i64 && a.is_contiguous()) {
      ptr_ = a.data<int64_t>();
      return;
    }
    copy_.resize(static_cast<size_t>(a.numel()));
    Array dst = borrowed(copy_.data(), a.shape, DType::i64);
    elementwise(Op{OpKind::copy}, std::span<const Array>(&a, 1), std::span<Array>(&dst, 1));
    ptr_ = copy_.data();
  }
  int64_t operator[](int64_t i) const { return ptr_[i]; }

 private:
  const int64_t* ptr_ = nullptr;
  std::vector<int64_t> copy_;
};

// The first out-of-range index a parallel loop met (exceptions must not leave the loop).
struct BadIndex {
  std::atomic<bool> seen{false};
  std::atomic<int64_t> value{0};
  void note(int64_t v) {
    if (!seen.exchange(true)) value = v;
  }
};

template <class C>
void embedding(const Array& idx_a, const Array& w_a, Array& out_a) {
  Indices idx(idx_a);
  ContiguousAs<C> w(w_a);
  Result<C> out(out_a);
  const int64_t V = w_a.shape[0], D = w_a.shape[1], M = idx_a.numel();
  BadIndex bad;
  parallel_for(M, M * D, [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      const int64_t i = idx[m];
      if (i < 0 || i >= V) {
        bad.note(i);
        std::fill_n(out.data() + m * D, D, C(0));
        continue;
      }
      std::copy_n(w.data() + i * D, D, out.data() + m * D);
    }
  });
  if (bad.seen) fail("index ", bad.value.load(), " is out of range for ", V, " embeddings");
  out.finish();
}

template <class C>
void embedding_backward(const Array& g_a, const Array& idx_a, Array& dw_a) {
  ContiguousAs<C> g(g_a);
  Indices idx(idx_a);
  Result<C> dw(dw_a);
  const int64_t V = dw_a.shape[0], D = dw_a.shape[1], M = idx_a.numel();
  std::fill_n(dw.data(), V * D, C(0));
  // Split over columns: every thread sees every index, so duplicates never race.
  parallel_for(D, M * D, [&](int64_t d0, int64_t d1) {
    for (int64_t m = 0; m < M; ++m) {
      const int64_t i = idx[m];
      if (i < 0 || i >= V) continue;
      C* dst = dw.data() + i * D;
      const C* src = g.data() + m * D;
      for (int64_t d = d0; d < d1; ++d) dst[d] += src[d];
    }
  });
  dw.finish();
}

struct NllAttrs {
  bool prob = false;
  int64_t ignore = -100;
  int64_t reduction = 1;  // 0 none, 1 mean, 2 sum
  bool has_w = false;
  double smoothing = 0;
  explicit NllAttrs(const Op& op)
      : prob(op.ints[0] != 0),
        ignore(op.ints[1]),
        reduction(op.ints[2]),
        has_w(op.ints[3] != 0),
        smoothing(op.reals[0]) {}
};

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
  const double eps = at.smoothing;
  auto wc = [&](int64_t c) { return w ? static_cast<double>(w[c]) : 1.0; };
  if (at.prob) {
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
  Indices tgt(target_a);
  BadIndex bad;
  parallel_for(N * S, N * S * (eps > 0 ? Cn : 1), [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      const int64_t n = j / S, s = j % S, c = tgt[j];
      if (c == at.ignore) continue;
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
         at.ignore, ")");
  return t;
}

template <class C>
void nll_loss(const Op& op, In in, Array& out_a) {
  const NllAttrs at(op);
  ContiguousAs<C> logp(in[0]);
  std::optional<ContiguousAs<C>> w;
  if (at.has_w) w.emplace(in[2]);
  const int64_t N = in[0].shape[0], Cn = in[0].shape[1], S = in[0].shape[2];
  NllTerms<C> t = nll_terms<C>(at, logp.data(), in[1], w ? w->data() : nullptr, N, Cn, S);
  Result<C> out(out_a);
  if (at.reduction == 0) {
    for (int64_t j = 0; j < N * S; ++j) out[j] = static_cast<C>(t.loss[static_cast<size_t>(j)]);
  } else {
    double total = 0, den = 0;
    for (int64_t j = 0; j < N * S; ++j) {
      total += t.loss[static_cast<size_t>(j)];
      den += t.weight[static_cast<size_t>(j)];
    }
    out[0] = static_cast<C>(at.reduction == 1 ? total / den : total);
  }
  out.finish();
}

template <class C>
void nll_loss_backward(const Op& op, In in, Out out) {
  // inputs: grad, logp, target[, weight]; outputs: dlogp[, dtarget]
  const NllAttrs at(op);
  ContiguousAs<C> g(in[0]), logp(in[1]);
  std::optional<ContiguousAs<C>> w;
  if (at.has_w) w.emplace(in[3]);
  const C* wp = w ? w->data() : nullptr;
  auto wc = [&](int64_t c) { return wp ? static_cast<double>(wp[c]) : 1.0; };
  const int64_t N = in[1].shape[0], Cn = in[1].shape[1], S = in[1].shape[2];
  const double eps = at.smoothing;
  // The mean's denominator: the summed weights of the counted elements.
  double den = 1;
  if (at.reduction == 1) {
    if (at.prob) {
      den = static_cast<double>(N * S);
    } else {
      Indices tgt(in[2]);
      den = 0;
      for (int64_t j = 0; j < N * S; ++j) {
        const int64_t c = tgt[j];
        if (c != at.ignore && c >= 0 && c < Cn) den += wc(c);
      }
    }
  }
  auto scale = [&](int64_t j) { return (at.reduction == 0 ? g[j] : g[0]) / den; };
  Result<C> dlogp(out[0]);
  if (at.prob) {
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
    Indices tgt(in[2]);
    parallel_for(N * S, N * S * Cn, [&](int64_t b, int64_t e) {
      for (int64_t j = b; j < e; ++j) {
        const int64_t n = j / S, s = j % S, t = tgt[j];
        const bool counted = t != at.ignore && t >= 0 && t < Cn;
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

void loss_family(const Op& op, In in, Out out) {
  const DType dt = op.kind == OpKind::embedding ? in[1].dtype : in[0].dtype;
  with_compute_type(op, dt, [&]<class C>() {
    switch (op.kind) {
      case OpKind::embedding:
        return embedding<C>(in[0], in[1], out[0]);
      case OpKind::embedding_backward:
        return embedding_backward<C>(in[0], in[1], out[0]);
      case OpKind::nll_loss:
        return nll_loss<C>(op, in, out[0]);
      case OpKind::nll_loss_backward:
        return nll_loss_backward<C>(op, in, out);
      default:
        unsupported(op, dt);
    }
  });
}

}  // namespace crisp::cpu
