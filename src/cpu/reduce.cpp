// CPU kernels for reductions over a set of axes: sum, prod, max, min, argmax/argmin, all/any and
// a fused, numerically stable logsumexp.
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/loops.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace crisp::cpu {

namespace {

// The plan; a reduction over no axes reads one element per output, as over one size-1 axis,
// so that the loops below always have an innermost reduced run.
ReducePlan make_plan(const Array& x, const std::vector<int64_t>& axes) {
  ReducePlan p = reduce_plan(x, axes);
  if (p.red.empty()) {
    p.red = {1};
    p.red_strides = {0};
  }
  return p;
}

// Element offset of flat index i over shape/strides.
int64_t offset_of(int64_t i, const Shape& shape, const Shape& strides) {
  int64_t off = 0;
  for (size_t d = shape.size(); d-- > 0;) {
    off += (i % shape[d]) * strides[d];
    i /= shape[d];
  }
  return off;
}

template <class O, class V>
O convert(V v) {
  if constexpr (std::is_same_v<O, Half> || std::is_same_v<O, BFloat16>) {
    return O(static_cast<float>(v));
  } else {
    return static_cast<O>(v);
  }
}

using formula::is_nan;

// ---- reducers: init(o), step(acc, x, r), combine(acc, other), finish(acc, o) ----

template <class C>
using wide_t = std::conditional_t<std::is_floating_point_v<C>, double, int64_t>;

template <class C>
struct SumR {
  using A = wide_t<C>;
  A init(int64_t) const { return 0; }
  void step(A& a, C x, int64_t) const { a += static_cast<A>(x); }
  void combine(A& a, const A& b) const { a += b; }
  A finish(A a, int64_t) const { return a; }
};

template <class C>
struct ProdR {
  using A = wide_t<C>;
  A init(int64_t) const { return 1; }
  void step(A& a, C x, int64_t) const { a *= static_cast<A>(x); }
  void combine(A& a, const A& b) const { a *= b; }
  A finish(A a, int64_t) const { return a; }
};

// NaN wins, as in PyTorch.
template <class C, bool Max>
struct ExtremeR {
  using A = C;
  A init(int64_t) const {
    if constexpr (std::is_floating_point_v<C>) {
      return Max ? -std::numeric_limits<C>::infinity() : std::numeric_limits<C>::infinity();
    } else {
      return Max ? std::numeric_limits<C>::lowest() : std::numeric_limits<C>::max();
    }
  }
  void step(A& a, C x, int64_t) const {
    const bool take = Max ? (x > a) : (x < a);
    a = (take || x != x) ? x : a;
  }
  void combine(A& a, const A& b) const { step(a, b, 0); }
  A finish(A a, int64_t) const { return a; }
};

// The first position of the extreme value; a NaN counts as the extreme.
template <class C, bool Max>
struct ArgR {
  struct A {
    C v;
    int64_t i;
  };
  static bool better(C x, int64_t xi, const A& a) {
    if (a.i < 0) return true;
    if (is_nan(a.v)) return is_nan(x) && xi < a.i;
    if (is_nan(x)) return true;
    if (x == a.v) return xi < a.i;
    return Max ? x > a.v : x < a.v;
  }
  A init(int64_t) const { return {C{}, -1}; }
  void step(A& a, C x, int64_t r) const {
    if (better(x, r, a)) a = {x, r};
  }
  void combine(A& a, const A& b) const {
    if (b.i >= 0 && better(b.v, b.i, a)) a = b;
  }
  int64_t finish(A a, int64_t) const { return a.i; }
};

template <class C, bool All>
struct LogicR {
  using A = bool;
  A init(int64_t) const { return All; }
  void step(A& a, C x, int64_t) const {
    const bool nz = x != C(0);
    a = All ? (a && nz) : (a || nz);
  }
  void combine(A& a, const A& b) const { a = All ? (a && b) : (a || b); }
  A finish(A a, int64_t) const { return a; }
};

// Second pass of logsumexp: sums exp(x - max) given each output's max.
template <class C>
struct ExpSumR {
  const C* max;
  struct A {
    double s;
    C m;
  };
  A init(int64_t o) const { return {0.0, max[o]}; }
  void step(A& a, C x, int64_t) const { a.s += static_cast<double>(std::exp(x - a.m)); }
  void combine(A& a, const A& b) const { a.s += b.s; }
  C finish(A a, int64_t) const {
    if (!std::isfinite(a.m)) return a.m;
    return static_cast<C>(static_cast<double>(a.m) + std::log(a.s));
  }
};

// Reduces a run of n elements at stride st into acc; independent lanes let the compiler
// vectorize contiguous runs.
template <class T, class R>
void reduce_run(const R& r, typename R::A& acc, const T* p, int64_t n, int64_t st, int64_t r0,
                int64_t o) {
  using C = compute_t<T>;
  constexpr int64_t L = 8;
  if constexpr (std::is_same_v<T, float> && std::is_same_v<R, SumR<float>>) {
    if (st == 1) {
      // Float lanes over short blocks (exact enough: 64 terms each), block sums in double:
      // no conversions in the hot loop, so it runs at memory speed.
      constexpr int64_t B = 1024, W = 16;
      int64_t i = 0;
      for (; i + B <= n; i += B) {
        float lanes[W] = {};
        for (int64_t k = 0; k < B; k += W)
          for (int64_t j = 0; j < W; ++j) lanes[j] += p[i + k + j];
        double s = 0;
        for (int64_t j = 0; j < W; ++j) s += lanes[j];
        acc += s;
      }
      for (; i < n; ++i) acc += p[i];
      return;
    }
  }
  if (st == 1 && n >= 4 * L) {
    typename R::A lanes[L];
    lanes[0] = acc;
    for (int64_t j = 1; j < L; ++j) lanes[j] = r.init(o);
    int64_t i = 0;
    for (; i + L <= n; i += L)
      for (int64_t j = 0; j < L; ++j) r.step(lanes[j], static_cast<C>(p[i + j]), r0 + i + j);
    for (; i < n; ++i) r.step(lanes[0], static_cast<C>(p[i]), r0 + i);
    acc = lanes[0];
    for (int64_t j = 1; j < L; ++j) r.combine(acc, lanes[j]);
    return;
  }
  for (int64_t i = 0; i < n; ++i) r.step(acc, static_cast<C>(p[i * st]), r0 + i);
}

// Reduces the flat reduction indices [b, e) starting at base into acc.
template <class T, class R>
void reduce_range(const R& r, typename R::A& acc, const T* base, const ReducePlan& p, int64_t b,
                  int64_t e, int64_t o) {
  const int64_t inner = p.red.back(), st = p.red_strides.back();
  Shape outer_shape(p.red.begin(), p.red.end() - 1),
      outer_strides(p.red_strides.begin(), p.red_strides.end() - 1);
  while (b < e) {
    const int64_t row = b / inner, col = b % inner, len = std::min(inner - col, e - b);
    const T* q = base + offset_of(row, outer_shape, outer_strides) + col * st;
    reduce_run<T>(r, acc, q, len, st, b, o);
    b += len;
  }
}

template <class T, class O, class R>
void run_reducer(const R& r, const Array& x, const Array& out, const std::vector<int64_t>& axes) {
  const ReducePlan p = make_plan(x, axes);
  const T* in = x.data<T>();
  O* o = out.data<O>();
  if (p.n_out == 0) return;
  const int threads = num_threads();
  const bool outer = !p.keep.empty() && p.keep_strides.back() == 1 && p.red_strides.back() != 1 &&
                     p.keep.back() >= 8;
  if (outer) {
    // The kept innermost axis is contiguous: accumulate a block of outputs per reduced row.
    constexpr int64_t CB = 256;
    const int64_t cols = p.keep.back(), blocks = (cols + CB - 1) / CB;
    const int64_t rows = p.n_out / cols;
    Shape kshape(p.keep.begin(), p.keep.end() - 1),
        kstr(p.keep_strides.begin(), p.keep_strides.end() - 1);
    parallel_for(rows * blocks, p.n_out * std::max<int64_t>(p.n_red, 1), [&](int64_t b, int64_t e) {
      using C = compute_t<T>;
      typename R::A acc[CB];
      for (int64_t t = b; t < e; ++t) {
        const int64_t row = t / blocks, c0 = (t % blocks) * CB, len = std::min(CB, cols - c0);
        const int64_t o0 = row * cols + c0;
        const T* base = in + offset_of(row, kshape, kstr) + c0;
        for (int64_t c = 0; c < len; ++c) acc[c] = r.init(o0 + c);
        for (int64_t k = 0; k < p.n_red; ++k) {
          const T* q = base + offset_of(k, p.red, p.red_strides);
          for (int64_t c = 0; c < len; ++c) r.step(acc[c], static_cast<C>(q[c]), k);
        }
        for (int64_t c = 0; c < len; ++c) o[o0 + c] = convert<O>(r.finish(acc[c], o0 + c));
      }
    });
    return;
  }
  if (p.n_out < threads && p.n_red * p.n_out >= 2 * kParallelGrain) {
    // Few outputs: split each reduction across threads and combine the partials in order.
    for (int64_t oi = 0; oi < p.n_out; ++oi) {
      const T* base = in + offset_of(oi, p.keep, p.keep_strides);
      // Not std::vector: vector<bool> has no bool& elements.
      std::unique_ptr<typename R::A[]> part(new typename R::A[static_cast<size_t>(threads)]);
      for (int t = 0; t < threads; ++t) part[static_cast<size_t>(t)] = r.init(oi);
      const int64_t n = p.n_red;
      parallel_for(threads, n, [&](int64_t b, int64_t e) {
        for (int64_t t = b; t < e; ++t)
          reduce_range<T>(r, part[static_cast<size_t>(t)], base, p, n * t / threads,
                          n * (t + 1) / threads, oi);
      });
      typename R::A acc = part[0];
      for (int t = 1; t < threads; ++t) r.combine(acc, part[static_cast<size_t>(t)]);
      o[oi] = convert<O>(r.finish(acc, oi));
    }
    return;
  }
  parallel_for(p.n_out, p.n_out * std::max<int64_t>(p.n_red, 1), [&](int64_t b, int64_t e) {
    for (int64_t oi = b; oi < e; ++oi) {
      typename R::A acc = r.init(oi);
      reduce_range<T>(r, acc, in + offset_of(oi, p.keep, p.keep_strides), p, 0, p.n_red, oi);
      o[oi] = convert<O>(r.finish(acc, oi));
    }
  });
}

}  // namespace

void run_reduce(const Op& op, In in, Out out) {
  const Array& x = in[0];
  const Array& y = out[0];
  const std::vector<int64_t>& axes = op.ints;
  visit_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    switch (op.kind) {
      case OpKind::sum:
        if constexpr (std::is_same_v<T, bool>) {
          return run_reducer<T, int64_t>(SumR<C>{}, x, y, axes);
        } else {
          return run_reducer<T, T>(SumR<C>{}, x, y, axes);
        }
      case OpKind::prod:
        if constexpr (std::is_same_v<T, bool>) {
          return run_reducer<T, int64_t>(ProdR<C>{}, x, y, axes);
        } else {
          return run_reducer<T, T>(ProdR<C>{}, x, y, axes);
        }
      case OpKind::max:
        return run_reducer<T, T>(ExtremeR<C, true>{}, x, y, axes);
      case OpKind::min:
        return run_reducer<T, T>(ExtremeR<C, false>{}, x, y, axes);
      case OpKind::argmax:
        return run_reducer<T, int64_t>(ArgR<C, true>{}, x, y, axes);
      case OpKind::argmin:
        return run_reducer<T, int64_t>(ArgR<C, false>{}, x, y, axes);
      case OpKind::all:
        return run_reducer<T, bool>(LogicR<C, true>{}, x, y, axes);
      case OpKind::any:
        return run_reducer<T, bool>(LogicR<C, false>{}, x, y, axes);
      case OpKind::logsumexp:
        if constexpr (std::is_floating_point_v<C>) {
          std::vector<C> m(static_cast<size_t>(y.numel()));
          Array ma{nullptr, y.shape, y.strides, 0, dtype_of<C>::value};
          ma.storage = std::make_shared<Storage>(m.data(), 0, nullptr);  // borrowed
          run_reducer<T, C>(ExtremeR<C, true>{}, x, ma, axes);
          return run_reducer<T, T>(ExpSumR<C>{m.data()}, x, y, axes);
        }
        break;
      default:
        break;
    }
    unsupported(op, x.dtype);
  });
}

}  // namespace crisp::cpu
