// CPU pooling kernels: max pooling (with the argmax indices its gradient scatters through) and
// average pooling, over 1-, 2- or 3-d windows seen as 3-d.
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <limits>

#include "cpu/nn_util.h"
#include "kernels/pool.h"

namespace crisp::cpu {

namespace {

// Calls f(out_index, window) for each output of a plane; window(visit) calls visit(in_index)
// for each in-bounds input position of the window.
template <class F>
void each_window(const PoolGeom& g, F&& f) {
  for (int64_t a = 0; a < g.out[0]; ++a)
    for (int64_t b = 0; b < g.out[1]; ++b)
      for (int64_t c = 0; c < g.out[2]; ++c) {
        const int64_t a0 = a * g.s[0] - g.p[0], b0 = b * g.s[1] - g.p[1], c0 = c * g.s[2] - g.p[2];
        auto window = [&](auto&& visit) {
          for (int64_t i = 0; i < g.k[0]; ++i) {
            const int64_t ia = a0 + i * g.d[0];
            if (ia < 0 || ia >= g.in[0]) continue;
            for (int64_t j = 0; j < g.k[1]; ++j) {
              const int64_t ib = b0 + j * g.d[1];
              if (ib < 0 || ib >= g.in[1]) continue;
              for (int64_t l = 0; l < g.k[2]; ++l) {
                const int64_t ic = c0 + l * g.d[2];
                if (ic < 0 || ic >= g.in[2]) continue;
                visit((ia * g.in[1] + ib) * g.in[2] + ic);
              }
            }
          }
        };
        f((a * g.out[1] + b) * g.out[2] + c, window, std::array<int64_t, 3>{a0, b0, c0});
      }
}

// One step of a window scan: v (at flat index p) replaces best when larger, or when it is NaN
// and best is not; ties keep the first (PyTorch's rule). Branch-free through bit masks: on
// real data the comparison is a coin toss, and mispredicted branches cost 10x the arithmetic.
template <class C>
inline void take(C v, int64_t p, C& best, int64_t& at) {
  using U = std::conditional_t<sizeof(C) == 8, uint64_t, uint32_t>;
  static_assert(sizeof(U) == sizeof(C));
  // !(v <= best) holds when v is larger or NaN; (best == best) when best is not NaN.
  const bool t = !(v <= best) & (best == best);
  const U m = U(0) - U(t);
  best = std::bit_cast<C>((std::bit_cast<U>(v) & m) | (std::bit_cast<U>(best) & ~m));
  const int64_t mi = -int64_t(t);
  at = (p & mi) | (at & ~mi);
}

// take() over a 2x2 window as a tournament: the pairs of each row, then the two winners. The
// earlier of two equal candidates wins every round and a NaN beats any number, so the result is
// that of the scan in order, with half the dependent steps.
template <class C>
inline void take_2x2(const C* xp, int64_t first, int64_t W, C& best, int64_t& at) {
  C b0 = xp[first], b1 = xp[first + W];
  int64_t a0 = first, a1 = first + W;
  take(xp[first + 1], first + 1, b0, a0);
  take(xp[first + W + 1], first + W + 1, b1, a1);
  take(b1, a1, b0, a0);
  best = b0;
  at = a0;
}

// Max pooling over 2-d windows without padding or dilation (the common case: 2x2, stride 2)
// for planes [b, e), as one loop over their outputs: small planes (7x7 -> 3x3) would otherwise
// spend more on loop exits than on the windows.
template <class C, int K>
void max_pool_2d(const PoolGeom& g, const C* x, C* y, int64_t* idx, int64_t b, int64_t e) {
  const int64_t W = g.in[2], OH = g.out[1], OW = g.out[2];
  const int64_t kh = K ? K : g.k[1], kw = K ? K : g.k[2], sh = g.s[1], sw = g.s[2];
  const C* xp = x + b * g.S;
  int64_t oh = 0, ow = 0, row = 0;  // row: the window's first row in the plane
  for (int64_t o = b * g.P; o < e * g.P; ++o) {
    const int64_t first = row + ow * sw;
    C best = xp[first];
    int64_t at = first;
    if constexpr (K == 2) {
      take_2x2(xp, first, W, best, at);
    } else {
      for (int64_t i = 0; i < kh; ++i)
        for (int64_t j = 0; j < kw; ++j) take(xp[first + i * W + j], first + i * W + j, best, at);
    }
    y[o] = best;
    idx[o] = at;
    if (++ow == OW) {
      ow = 0;
      row += sh * W;
      if (++oh == OH) {
        oh = 0;
        row = 0;
        xp += g.S;
      }
    }
  }
}

template <class C>
void max_pool(const PoolGeom& g, const Array& xa, Array& ya, Array& ia) {
  ContiguousAs<C> x(xa);
  Result<C> y(ya);
  int64_t* idx = ia.data<int64_t>();
  const bool plain_2d =
      g.in[0] == 1 && g.k[0] == 1 && g.p[1] == 0 && g.p[2] == 0 && g.d[1] == 1 && g.d[2] == 1;
  if (plain_2d) {
    const bool two = g.k[1] == 2 && g.k[2] == 2;
    parallel_for(g.planes, g.planes * g.S, [&](int64_t b, int64_t e) {
      if (two)
        max_pool_2d<C, 2>(g, x.data(), y.data(), idx, b, e);
      else
        max_pool_2d<C, 0>(g, x.data(), y.data(), idx, b, e);
    });
    return y.finish();
  }
  parallel_for(g.planes, g.planes * g.P * g.k[0] * g.k[1] * g.k[2], [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl) {
      const C* xp = x.data() + pl * g.S;
      each_window(g, [&](int64_t o, auto&& window, auto) {
        C best = -std::numeric_limits<C>::infinity();
        int64_t at = -1;
        window([&](int64_t i) {
          const C v = xp[i];
          // NaN wins, as in PyTorch; ties keep the first.
          if (at < 0 || v > best || (std::isnan(v) && !std::isnan(best))) {
            best = v;
            at = i;
          }
        });
        y[pl * g.P + o] = best;
        idx[pl * g.P + o] = at;
      });
    }
  });
  y.finish();
}

template <class C>
void max_pool_backward(const PoolGeom& g, const Array& ga, const Array& ia, Array& dxa) {
  ContiguousAs<C> gy(ga);
  ContiguousAs<int64_t> idx(ia);  // from max_pool: contiguous unless a view was taken
  Result<C> dx(dxa);
  std::atomic<int64_t> bad{-1};  // exceptions must not leave a parallel region
  parallel_for(g.planes, g.planes * (g.P + g.S), [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl) {
      C* d = dx.data() + pl * g.S;
      std::fill_n(d, g.S, C(0));
      for (int64_t o = 0; o < g.P; ++o) {
        const int64_t i = idx[pl * g.P + o];
        if (i < 0 || i >= g.S) {
          bad = i;
          continue;
        }
        d[i] += gy[pl * g.P + o];
      }
    }
  });
  if (bad.load() != -1) fail("max_pool index ", bad.load(), " is out of range [0, ", g.S, ")");
  dx.finish();
}

// The divisor of a window: its size clipped to the padded input, or to the input itself.
inline int64_t avg_divisor(const PoolGeom& g, const std::array<int64_t, 3>& start) {
  int64_t padded = 1, inside = 1;
  for (size_t j = 0; j < 3; ++j) {
    const int64_t lo = start[j], hi = std::min(start[j] + g.k[j], g.in[j] + g.p[j]);
    padded *= hi - lo;
    inside *= std::min(hi, g.in[j]) - std::max<int64_t>(lo, 0);
  }
  return g.count_include_pad ? padded : inside;
}

template <class C>
void avg_pool(const PoolGeom& g, const Array& xa, Array& ya) {
  ContiguousAs<C> x(xa);
  Result<C> y(ya);
  parallel_for(g.planes, g.planes * g.P * g.k[0] * g.k[1] * g.k[2], [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl) {
      const C* xp = x.data() + pl * g.S;
      each_window(g, [&](int64_t o, auto&& window, const std::array<int64_t, 3>& start) {
        C acc = 0;
        window([&](int64_t i) { acc += xp[i]; });
        const int64_t div = avg_divisor(g, start);
        y[pl * g.P + o] = div > 0 ? acc / static_cast<C>(div) : C(0);
      });
    }
  });
  y.finish();
}

template <class C>
void avg_pool_backward(const PoolGeom& g, const Array& ga, Array& dxa) {
  ContiguousAs<C> gy(ga);
  Result<C> dx(dxa);
  parallel_for(g.planes, g.planes * g.P * g.k[0] * g.k[1] * g.k[2], [&](int64_t b, int64_t e) {
    for (int64_t pl = b; pl < e; ++pl) {
      C* d = dx.data() + pl * g.S;
      std::fill_n(d, g.S, C(0));
      each_window(g, [&](int64_t o, auto&& window, const std::array<int64_t, 3>& start) {
        const int64_t div = avg_divisor(g, start);
        if (div <= 0) return;
        const C v = gy[pl * g.P + o] / static_cast<C>(div);
        window([&](int64_t i) { d[i] += v; });
      });
    }
  });
  dx.finish();
}

}  // namespace

void run_pool(const Op& op, In in, Out out) {
  if (PoolAttrs::from_op(op).channels_last) return run_in_usual_layout(op, in, out, run_pool);
  with_compute_type(op, in[0].dtype, [&]<class C>() {
    switch (op.kind) {
      case OpKind::max_pool:
        return max_pool<C>(pool_geometry(op, in[0].shape, out[0].shape), in[0], out[0], out[1]);
      case OpKind::max_pool_backward:
        return max_pool_backward<C>(pool_geometry(op, out[0].shape, in[0].shape), in[0], in[1],
                                    out[0]);
      case OpKind::avg_pool:
        return avg_pool<C>(pool_geometry(op, in[0].shape, out[0].shape), in[0], out[0]);
      case OpKind::avg_pool_backward:
        return avg_pool_backward<C>(pool_geometry(op, out[0].shape, in[0].shape), in[0], out[0]);
      default:
        unsupported(op, in[0].dtype);
    }
  });
}

}  // namespace crisp::cpu
