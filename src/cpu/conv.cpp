// CPU convolution kernels: one N-d im2col + GEMM path for 1-, 2- and 3-d convolutions, their
// input and weight gradients (col2im), which also serve transposed convolution.

#include <array>
#include <cstddef>
#include <optional>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/nn_util.h"
#include "kernels/conv.h"

namespace crisp::cpu {

namespace {

// Every convolution seen as 3-d: missing leading spatial dims have size 1.
struct Geom {
  int64_t N = 0, C = 0, O = 0, G = 1, Cg = 0, Og = 0;
  std::array<int64_t, 3> in{1, 1, 1}, k{1, 1, 1}, out{1, 1, 1}, s{1, 1, 1}, p{0, 0, 0}, d{1, 1, 1};
  int64_t S = 1, K = 1, P = 1;
  bool pointwise = false;  // the column matrix is the input itself
};

Geom geometry(const ConvAttrs& a, const Shape& x, const Shape& w, const Shape& y) {
  const size_t nd = static_cast<size_t>(a.nd);
  Geom g;
  g.N = x[0];
  g.C = x[1];
  g.O = w[0];
  g.G = a.groups;
  g.Cg = g.C / g.G;
  g.Og = g.O / g.G;
  for (size_t i = 0; i < nd; ++i) {
    const size_t j = 3 - nd + i;
    g.in[j] = x[2 + i];
    g.k[j] = w[2 + i];
    g.out[j] = y[2 + i];
    g.s[j] = a.stride[i];
    g.p[j] = a.padding[i];
    g.d[j] = a.dilation[i];
  }
  g.S = g.in[0] * g.in[1] * g.in[2];
  g.K = g.k[0] * g.k[1] * g.k[2];
  g.P = g.out[0] * g.out[1] * g.out[2];
  g.pointwise = g.K == 1 && g.S == g.P;
  for (int i = 0; i < 3; ++i) g.pointwise = g.pointwise && g.s[i] == 1 && g.p[i] == 0;
  return g;
}

// The range of output positions o in [0, n) whose input position o*s + off lies in [0, in).
inline void valid_range(int64_t n, int64_t s, int64_t off, int64_t in, int64_t& lo, int64_t& hi) {
  lo = off >= 0 ? 0 : (-off + s - 1) / s;
  hi = in - off <= 0 ? 0 : std::min(n, (in - off + s - 1) / s);
  lo = std::min(lo, hi);
}

// Copies x [Cg, S] into columns [col, col + P) of the column matrix (rows ld apart), zeros
// where the window hangs over the padding; Add = true instead adds those columns back into x.
template <bool Add, class C>
void im2col_or_back(const Geom& g, C* x, C* col, int64_t ld) {
  const int64_t oD = g.out[0], oH = g.out[1], oW = g.out[2];
  const int64_t iD = g.in[0], iH = g.in[1], iW = g.in[2];
  for (int64_t c = 0; c < g.Cg; ++c) {
    C* xc = x + c * g.S;
    for (int64_t kd = 0; kd < g.k[0]; ++kd)
      for (int64_t kh = 0; kh < g.k[1]; ++kh)
        for (int64_t kw = 0; kw < g.k[2]; ++kw) {
          C* row = col + (((c * g.k[0] + kd) * g.k[1] + kh) * g.k[2] + kw) * ld;
          const int64_t offw = kw * g.d[2] - g.p[2], st = g.s[2];
          int64_t wlo, whi;
          valid_range(oW, st, offw, iW, wlo, whi);
          for (int64_t od = 0; od < oD; ++od) {
            const int64_t id = od * g.s[0] - g.p[0] + kd * g.d[0];
            for (int64_t oh = 0; oh < oH; ++oh) {
              C* dst = row + (od * oH + oh) * oW;
              const int64_t ih = oh * g.s[1] - g.p[1] + kh * g.d[1];
              const bool inside = id >= 0 && id < iD && ih >= 0 && ih < iH;
              if constexpr (Add) {
                if (!inside) continue;
                C* src = xc + (id * iH + ih) * iW + offw;
                for (int64_t ow = wlo; ow < whi; ++ow) src[ow * st] += dst[ow];
              } else {
                if (!inside) {
                  std::fill(dst, dst + oW, C(0));
                  continue;
                }
                const C* src = xc + (id * iH + ih) * iW + offw;
                std::fill(dst, dst + wlo, C(0));
                if (st == 1) {
                  std::copy(src + wlo, src + whi, dst + wlo);
                } else {
                  for (int64_t ow = wlo; ow < whi; ++ow) dst[ow] = src[ow * st];
                }
                std::fill(dst + whi, dst + oW, C(0));
              }
            }
          }
        }
  }
}

// Samples are processed in chunks whose column matrix [Cg*K, B*P] stays below this many
// elements: one large GEMM per chunk runs far closer to peak than one small GEMM per sample.
constexpr int64_t kColumnBudget = int64_t{1} << 23;

int64_t chunk_size(const Geom& g) {
  return std::max<int64_t>(1,
                           std::min(g.N, kColumnBudget / std::max<int64_t>(1, g.Cg * g.K * g.P)));
}

// Calls f(n0, n1) for each chunk of samples.
template <class F>
void over_chunks(const Geom& g, F&& f) {
  const int64_t B = chunk_size(g);
  for (int64_t n0 = 0; n0 < g.N; n0 += B) f(n0, std::min(g.N, n0 + B));
}

// Scratch memory kept per thread across calls: fresh pages for a 30 MB column matrix cost more
// page faults than the im2col that fills it. Slot 0 holds the column matrix, slot 1 the rest.
template <class C>
C* workspace(int slot, int64_t n) {
  thread_local std::vector<double> buffers[2];
  auto& b = buffers[slot];
  const size_t need = (static_cast<size_t>(n) * sizeof(C) + sizeof(double) - 1) / sizeof(double);
  if (b.size() < need) b.resize(need);
  return reinterpret_cast<C*>(b.data());
}

// Fills the column matrix of samples [n0, n1), group gr.
template <class C>
void im2col_chunk(const Geom& g, const C* x, C* col, int64_t n0, int64_t n1, int64_t gr) {
  const int64_t ld = (n1 - n0) * g.P;
  parallel_for(n1 - n0, ld * g.Cg * g.K, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      im2col_or_back<false>(g, const_cast<C*>(x) + ((n0 + i) * g.C + gr * g.Cg) * g.S,
                            col + i * g.P, ld);
  });
}

template <class C>
void conv_forward(const Geom& g, const C* x, const C* w, const C* bias, C* y) {
  const int64_t CgK = g.Cg * g.K;
  over_chunks(g, [&](int64_t n0, int64_t n1) {
    const int64_t B = n1 - n0, ld = B * g.P;
    C* col = workspace<C>(0, CgK * ld);
    C* yt = workspace<C>(1, g.Og * ld);
    for (int64_t gr = 0; gr < g.G; ++gr) {
      im2col_chunk(g, x, col, n0, n1, gr);
      gemm(false, false, g.Og, ld, CgK, C(1), w + gr * g.Og * CgK, CgK, col, ld, C(0), yt, ld);
      // [Og, B, P] -> y[n, gr*Og + o, P], adding the bias on the way.
      parallel_for(B * g.Og, B * g.Og * g.P, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const int64_t n = i / g.Og, o = i % g.Og;
          const C* src = yt + o * ld + n * g.P;
          C* dst = y + ((n0 + n) * g.O + gr * g.Og + o) * g.P;
          const C bv = bias ? bias[gr * g.Og + o] : C(0);
          for (int64_t p = 0; p < g.P; ++p) dst[p] = src[p] + bv;
        }
      });
    }
  });
}

// Gathers dy[n0:n1, gr*Og : (gr+1)*Og] into dyt [Og, B*P].
template <class C>
void gather_grad(const Geom& g, const C* dy, C* dyt, int64_t n0, int64_t n1, int64_t gr) {
  const int64_t B = n1 - n0, ld = B * g.P;
  parallel_for(B * g.Og, B * g.Og * g.P, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t n = i / g.Og, o = i % g.Og;
      std::copy_n(dy + ((n0 + n) * g.O + gr * g.Og + o) * g.P, g.P, dyt + o * ld + n * g.P);
    }
  });
}

// dx from dy: col = W^T dy, scattered back into dx. With bias, this is conv_transpose.
template <class C>
void conv_input_grad(const Geom& g, const C* dy, const C* w, const C* bias, C* dx) {
  const int64_t CgK = g.Cg * g.K;

  over_chunks(g, [&](int64_t n0, int64_t n1) {
    const int64_t B = n1 - n0, ld = B * g.P;
    C* col = workspace<C>(0, CgK * ld);
    C* dyt = workspace<C>(1, g.Og * ld);
    for (int64_t gr = 0; gr < g.G; ++gr) {
      gather_grad(g, dy, dyt, n0, n1, gr);
      gemm(true, false, CgK, ld, g.Og, C(1), w + gr * g.Og * CgK, CgK, dyt, ld, C(0), col, ld);
      parallel_for(B, ld * CgK, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          C* dxg = dx + ((n0 + i) * g.C + gr * g.Cg) * g.S;
          for (int64_t c = 0; c < g.Cg; ++c)
            std::fill_n(dxg + c * g.S, g.S, bias ? bias[gr * g.Cg + c] : C(0));
          im2col_or_back<true>(g, dxg, col + i * g.P, ld);
        }
      });
    }
  });
}

// dw = dy col^T, summed over the chunks of samples.
template <class C>
void conv_weight_grad(const Geom& g, const C* x, const C* dy, C* dw) {
  const int64_t CgK = g.Cg * g.K;

  bool first = true;
  over_chunks(g, [&](int64_t n0, int64_t n1) {
    const int64_t B = n1 - n0, ld = B * g.P;
    C* col = workspace<C>(0, CgK * ld);
    C* dyt = workspace<C>(1, g.Og * ld);
    for (int64_t gr = 0; gr < g.G; ++gr) {
      im2col_chunk(g, x, col, n0, n1, gr);
      gather_grad(g, dy, dyt, n0, n1, gr);
      gemm(false, true, g.Og, CgK, ld, C(1), dyt, ld, col, ld, first ? C(0) : C(1),
           dw + gr * g.Og * CgK, CgK);
    }
    first = false;
  });
  if (first) std::fill_n(dw, g.O * CgK, C(0));  // no samples
}

// The sum of p[0, n) in lanes: one running sum would be a chain of dependent additions (the
// compiler may not reorder them), sixteen independent ones vectorize.
template <class C>
double lane_sum(const C* p, int64_t n) {
  constexpr int64_t L = 16;
  C lanes[L] = {};
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int64_t j = 0; j < L; ++j) lanes[j] += p[i + j];
  double s = 0;
  for (; i < n; ++i) s += p[i];
  for (int64_t j = 0; j < L; ++j) s += lanes[j];
  return s;
}

template <class C>
void channel_sum(const Array& x, Array& out) {
  ContiguousAs<C> xd(x);
  Result<C> r(out);
  const int64_t N = x.shape[0], Ch = x.shape[1], S = x.numel() / std::max<int64_t>(1, N * Ch);
  parallel_for(Ch, N * Ch * S, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      double acc = 0;
      for (int64_t n = 0; n < N; ++n) acc += lane_sum(xd.data() + (n * Ch + c) * S, S);
      r[c] = static_cast<C>(acc);
    }
  });
  r.finish();
}

}  // namespace

#ifdef CRISP_HAVE_DNNL
// conv_dnnl.cpp: false when it declines the case.
bool conv_dnnl(const Op& op, const ConvAttrs& attrs, In in, Out out);
#endif

void run_conv(const Op& op, In in, Out out) {
  const ConvAttrs attrs = ConvAttrs::from_op(op);
  if (attrs.channels_last) return run_in_usual_layout(op, in, out, run_conv);
#ifdef CRISP_HAVE_DNNL
  if (conv_dnnl(op, attrs, in, out)) return;
#endif
  with_compute_type(op, in[0].dtype, [&]<class C>() {
    switch (op.kind) {
      case OpKind::conv: {
        const Geom g = geometry(attrs, in[0].shape, in[1].shape, out[0].shape);
        ContiguousAs<C> x(in[0]), w(in[1]);
        std::optional<ContiguousAs<C>> b;
        if (in.size() > 2) b.emplace(in[2]);
        Result<C> y(out[0]);
        conv_forward<C>(g, x.data(), w.data(), b ? b->data() : nullptr, y.data());
        return y.finish();
      }
      case OpKind::conv_backward_input: {
        const Geom g = geometry(attrs, out[0].shape, in[1].shape, in[0].shape);
        ContiguousAs<C> dy(in[0]), w(in[1]);
        std::optional<ContiguousAs<C>> b;
        if (in.size() > 2) b.emplace(in[2]);
        Result<C> dx(out[0]);
        conv_input_grad<C>(g, dy.data(), w.data(), b ? b->data() : nullptr, dx.data());
        return dx.finish();
      }
      case OpKind::conv_backward_weight: {
        const Geom g = geometry(attrs, in[0].shape, out[0].shape, in[1].shape);
        ContiguousAs<C> x(in[0]), dy(in[1]);
        Result<C> dw(out[0]);
        conv_weight_grad<C>(g, x.data(), dy.data(), dw.data());
        return dw.finish();
      }
      default:
        unsupported(op, in[0].dtype);
    }
  });
}

void run_channel_sum(const Op& op, In in, Out out) {
  with_compute_type(op, in[0].dtype, [&]<class C>() { channel_sum<C>(in[0], out[0]); });
}

}  // namespace crisp::cpu
