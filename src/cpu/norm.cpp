// CPU normalization kernels: one fused row-normalizer (layer, RMS and group norm are rows of a
// [R, L] matrix with per-element affine parameters) and the per-channel batch norm.
#include <cmath>
#include <optional>
#include <utility>

#include "cpu/nn_util.h"
#include "kernels/norm.h"

namespace crisp::cpu {

namespace {

// Normalizes each row of x [R, L]: (x - mean) * rstd (mean = 0 unless center), then
// * w[chan(r, i)] + b[chan(r, i)] where given.
template <class C, class Chan>
void rows_forward(const C* x, int64_t R, int64_t L, bool center, double eps, const C* w, const C* b,
                  Chan chan, C* y, C* mean_out, C* rstd_out) {
  parallel_for(R, R * L * 3, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const C* xr = x + r * L;
      double mean = 0;
      if (center) {
        for (int64_t i = 0; i < L; ++i) mean += xr[i];
        mean /= static_cast<double>(std::max<int64_t>(L, 1));
      }
      double var = 0;
      for (int64_t i = 0; i < L; ++i) {
        const double d = xr[i] - mean;
        var += d * d;
      }
      var /= static_cast<double>(std::max<int64_t>(L, 1));
      const double rstd = 1 / std::sqrt(var + eps);
      const C m = static_cast<C>(mean), s = static_cast<C>(rstd);
      C* yr = y + r * L;
      for (int64_t i = 0; i < L; ++i) {
        C v = (xr[i] - m) * s;
        if (w) v *= w[chan(r, i)];
        if (b) v += b[chan(r, i)];
        yr[i] = v;
      }
      if (mean_out) mean_out[r] = m;
      rstd_out[r] = s;
    }
  });
}

// The gradient of rows_forward: dx per row, and dw, db (length A) summed over rows through
// per-thread partial sums.
template <class C, class Chan>
void rows_backward(const C* g, const C* x, const C* mean, const C* rstd, int64_t R, int64_t L,
                   bool center, const C* w, int64_t A, Chan chan, C* dx, C* dw, C* db) {
  const int threads = num_threads();
  std::vector<double> partial(static_cast<size_t>(threads) * 2 * static_cast<size_t>(A), 0.0);
  // One slot of partial sums per block of rows, whichever thread runs it.
  parallel_for(threads, R * L * 4, [&](int64_t s0, int64_t s1) {
    for (int64_t slot = s0; slot < s1; ++slot) {
      double* pw = partial.data() + static_cast<size_t>(slot) * 2 * static_cast<size_t>(A);
      double* pb = pw + A;
      const int64_t r0 = R * slot / threads, r1 = R * (slot + 1) / threads;
      for (int64_t r = r0; r < r1; ++r) {
        const C* gr = g + r * L;
        const C* xr = x + r * L;
        const double m = center ? static_cast<double>(mean[r]) : 0.0, s = rstd[r];
        double sum_gw = 0, sum_gwx = 0;
        for (int64_t i = 0; i < L; ++i) {
          const double xhat = (xr[i] - m) * s;
          const double gw = w ? gr[i] * static_cast<double>(w[chan(r, i)]) : gr[i];
          sum_gw += gw;
          sum_gwx += gw * xhat;
          if (dw || db) {
            const int64_t c = chan(r, i);
            pw[c] += gr[i] * xhat;
            pb[c] += gr[i];
          }
        }
        const double a = center ? sum_gw / static_cast<double>(L) : 0.0;
        const double bb = sum_gwx / static_cast<double>(L);
        C* dr = dx + r * L;
        for (int64_t i = 0; i < L; ++i) {
          const double xhat = (xr[i] - m) * s;
          const double gw = w ? gr[i] * static_cast<double>(w[chan(r, i)]) : gr[i];
          dr[i] = static_cast<C>(s * (gw - a - xhat * bb));
        }
      }
    }
  });
  for (int64_t c = 0; c < A; ++c) {
    double sw = 0, sb = 0;
    for (int t = 0; t < threads; ++t) {
      sw += partial[static_cast<size_t>(t) * 2 * A + c];
      sb += partial[static_cast<size_t>(t) * 2 * A + A + c];
    }
    if (dw) dw[c] = static_cast<C>(sw);
    if (db) db[c] = static_cast<C>(sb);
  }
}

// Per-channel statistics of x [N, C, S] over N and S: mean and biased variance; given running
// statistics, also their update (op_kinds.inc).
template <class C>
void batch_stats(const Op& op, In in, Out out) {
  ContiguousAs<C> x(in[0]);
  Result<C> mean(out[0]), var(out[1]);
  const bool update = in.size() > 1;
  std::optional<ContiguousAs<C>> rm, rv;
  std::optional<Result<C>> new_rm, new_rv;
  if (update) {
    rm.emplace(in[1]);
    rv.emplace(in[2]);
    new_rm.emplace(out[2]);
    new_rv.emplace(out[3]);
  }
  const double momentum = BatchNormStatsAttrs::from_op(op).momentum;
  const int64_t N = in[0].shape[0], Ch = in[0].shape[1], S = in[0].shape[2];
  const double M = static_cast<double>(N * S);
  parallel_for(Ch, N * Ch * S * 2, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double sum = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < S; ++i) sum += x[(n * Ch + c) * S + i];
      const double m = sum / static_cast<double>(N * S);
      double sq = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < S; ++i) {
          const double d = x[(n * Ch + c) * S + i] - m;
          sq += d * d;
        }
      mean[c] = static_cast<C>(m);
      var[c] = static_cast<C>(sq / M);
      if (update) {
        (*new_rm)[c] = static_cast<C>((1 - momentum) * (*rm)[c] + momentum * m);
        (*new_rv)[c] = static_cast<C>((1 - momentum) * (*rv)[c] + momentum * sq / (M - 1));
      }
    }
  });
  mean.finish();
  var.finish();
  if (update) {
    new_rm->finish();
    new_rv->finish();
  }
}

// Batch norm's output x * scale + shift for channel c. The backward of batch_norm_relu finds
// where that output was positive with this same arithmetic.
template <class C>
std::pair<C, C> batch_norm_affine(const ContiguousAs<C>& mean, const ContiguousAs<C>& var,
                                  const std::optional<ContiguousAs<C>>& w,
                                  const std::optional<ContiguousAs<C>>& b, double eps, int64_t c) {
  const double s = 1 / std::sqrt(static_cast<double>(var[c]) + eps);
  const C scale = static_cast<C>(s * (w ? static_cast<double>((*w)[c]) : 1.0));
  const C shift = static_cast<C>((b ? static_cast<double>((*b)[c]) : 0.0) -
                                 static_cast<double>(mean[c]) * scale);
  return {scale, shift};
}

template <class C>
void batch_norm_forward(const Op& op, In in, Array& ya) {
  const BatchNormAttrs a = BatchNormAttrs::from_op(op);
  ContiguousAs<C> x(in[0]), mean(in[1]), var(in[2]);
  std::optional<ContiguousAs<C>> w, b;
  if (a.has_w) w.emplace(in[3]);
  if (a.has_b) b.emplace(in[3 + a.has_w]);
  Result<C> y(ya);
  const int64_t N = in[0].shape[0], Ch = in[0].shape[1], S = in[0].shape[2];
  parallel_for(N * Ch, N * Ch * S, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const auto [scale, shift] = batch_norm_affine(mean, var, w, b, a.eps, p % Ch);
      for (int64_t i = 0; i < S; ++i) {
        const C v = x[p * S + i] * scale + shift;
        y[p * S + i] = a.relu && v < C(0) ? C(0) : v;  // NaN passes through, as relu's
      }
    }
  });
  y.finish();
}

// dx, dw, db of batch norm; training: also through the batch mean and variance.
template <class C>
void batch_norm_backward(const Op& op, In in, Out out) {
  const BatchNormBackwardAttrs a = BatchNormBackwardAttrs::from_op(op);
  ContiguousAs<C> g(in[0]), x(in[1]), mean(in[2]), var(in[3]);
  std::optional<ContiguousAs<C>> w, b;
  if (a.has_w) w.emplace(in[4]);
  if (a.has_b) b.emplace(in[4 + a.has_w]);
  Result<C> dx(out[0]), dw(out[1]), db(out[2]);
  const int64_t N = in[1].shape[0], Ch = in[1].shape[1], S = in[1].shape[2];
  const double M = static_cast<double>(N * S);
  parallel_for(Ch, N * Ch * S * 3, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const double m = mean[c], s = 1 / std::sqrt(static_cast<double>(var[c]) + a.eps);
      // The gradient reaching batch norm: through the ReLU (batch_norm_relu), zero where the
      // forward's output was not positive.
      const auto [scale, shift] = batch_norm_affine(mean, var, w, b, a.eps, c);
      auto grad = [&](int64_t j) { return a.relu && !(x[j] * scale + shift > 0) ? C(0) : g[j]; };
      double sg = 0, sgx = 0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < S; ++i) {
          const int64_t j = (n * Ch + c) * S + i;
          const double gj = grad(j);
          sg += gj;
          sgx += gj * ((x[j] - m) * s);
        }
      dw[c] = static_cast<C>(sgx);
      db[c] = static_cast<C>(sg);
      const double wc = w ? static_cast<double>((*w)[c]) : 1.0;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < S; ++i) {
          const int64_t j = (n * Ch + c) * S + i;
          double v = grad(j);
          if (a.training) v -= sg / M + (x[j] - m) * s * sgx / M;
          dx[j] = static_cast<C>(wc * s * v);
        }
    }
  });
  dx.finish();
  dw.finish();
  db.finish();
}

template <class C>
void norm_kernel(const Op& op, In in, Out out) {
  switch (op.kind) {
    case OpKind::layer_norm:
    case OpKind::rms_norm:
    case OpKind::group_norm: {
      const bool group = op.kind == OpKind::group_norm, center = op.kind != OpKind::rms_norm;
      const RowNormAttrs a = RowNormAttrs::from_op(op);
      const int64_t G = a.groups;
      ContiguousAs<C> x(in[0]);
      std::optional<ContiguousAs<C>> w, b;
      if (a.has_w) w.emplace(in[1]);
      if (a.has_b) b.emplace(in[1 + a.has_w]);
      Result<C> y(out[0]);
      std::optional<Result<C>> mean;
      if (center) mean.emplace(out[1]);
      Result<C> rstd(out[center ? 2 : 1]);
      const C* wp = w ? w->data() : nullptr;
      const C* bp = b ? b->data() : nullptr;
      if (group) {
        const int64_t N = in[0].shape[0], Ch = in[0].shape[1], S = in[0].shape[2];
        const int64_t Cg = Ch / G, L = Cg * S;
        rows_forward<C>(
            x.data(), N * G, L, true, a.eps, wp, bp,
            [=](int64_t r, int64_t i) { return (r % G) * Cg + i / S; }, y.data(), mean->data(),
            rstd.data());
      } else {
        const int64_t L = in[0].shape[1];
        rows_forward<C>(
            x.data(), in[0].shape[0], L, center, a.eps, wp, bp,
            [](int64_t, int64_t i) { return i; }, y.data(), mean ? mean->data() : nullptr,
            rstd.data());
      }
      y.finish();
      if (mean) mean->finish();
      return rstd.finish();
    }
    case OpKind::layer_norm_backward:
    case OpKind::rms_norm_backward:
    case OpKind::group_norm_backward: {
      // inputs: grad, x, [mean,] rstd[, w]; outputs: dx[, dw[, db]]
      const bool group = op.kind == OpKind::group_norm_backward;
      const bool center = op.kind != OpKind::rms_norm_backward;
      const RowNormBackwardAttrs a = RowNormBackwardAttrs::from_op(op);
      const int64_t G = a.groups;
      ContiguousAs<C> g(in[0]), x(in[1]);
      std::optional<ContiguousAs<C>> mean;
      if (center) mean.emplace(in[2]);
      ContiguousAs<C> rstd(in[center ? 3 : 2]);
      std::optional<ContiguousAs<C>> w;
      if (a.has_w) w.emplace(in[center ? 4 : 3]);
      Result<C> dx(out[0]);
      std::optional<Result<C>> dw, db;
      if (out.size() > 1) dw.emplace(out[1]);
      if (out.size() > 2) db.emplace(out[2]);
      const C* wp = w ? w->data() : nullptr;
      const C* mp = mean ? mean->data() : nullptr;
      C* dwp = dw ? dw->data() : nullptr;
      C* dbp = db ? db->data() : nullptr;
      if (group) {
        const int64_t N = in[1].shape[0], Ch = in[1].shape[1], S = in[1].shape[2];
        const int64_t Cg = Ch / G;
        rows_backward<C>(
            g.data(), x.data(), mp, rstd.data(), N * G, Cg * S, true, wp, Ch,
            [=](int64_t r, int64_t i) { return (r % G) * Cg + i / S; }, dx.data(), dwp, dbp);
      } else {
        const int64_t L = in[1].shape[1];
        rows_backward<C>(
            g.data(), x.data(), mp, rstd.data(), in[1].shape[0], L, center, wp, L,
            [](int64_t, int64_t i) { return i; }, dx.data(), dwp, dbp);
      }
      dx.finish();
      if (dw) dw->finish();
      if (db) db->finish();
      return;
    }
    case OpKind::batch_norm_stats:
      return batch_stats<C>(op, in, out);
    case OpKind::batch_norm:
      return batch_norm_forward<C>(op, in, out[0]);
    case OpKind::batch_norm_backward:
      return batch_norm_backward<C>(op, in, out);
    default:
      unsupported(op, in[0].dtype);
  }
}

}  // namespace

void run_norm(const Op& op, In in, Out out) {
  with_compute_type(op, in[0].dtype, [&]<class C>() { norm_kernel<C>(op, in, out); });
}

}  // namespace crisp::cpu
