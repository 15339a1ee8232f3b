// CPU kernels of the optim family: each optimizer update is one pass over its operands.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <type_traits>

#include "cpu/kernels.h"
#include "cpu/loops.h"
#include "cpu/optim.h"
#include "kernels/optim.h"

// The square root in Adam's and RMSprop's denominators keeps a plain loop from vectorizing
// (std::sqrt may set errno); explicit vectors keep the update memory-bound.
#if __has_include(<experimental/simd>)
#include <experimental/simd>
#define CRISP_OPTIM_SIMD 1
namespace stdx = std::experimental;
#if defined(__SSE2__)
#include <immintrin.h>
#define CRISP_OPTIM_STREAM 1
#endif
#endif

namespace crisp::cpu {

namespace {

// One element at a time, in the compute type C (float for 16-bit parameters).
template <class C>
struct Scalar {
  using V = C;
  static constexpr int64_t width = 1;
  template <class T>
  static V load(const T* p) {
    return static_cast<C>(*p);
  }
  template <class T>
  static void store(T* p, V v) {
    *p = static_cast<T>(v);
  }
  static V sqrt(V x) { return std::sqrt(x); }
  // NaN-propagating, as torch.maximum.
  static V max(V a, V b) { return a != a ? a : b != b ? b : a < b ? b : a; }
};

#ifdef CRISP_OPTIM_SIMD
// A machine vector of C, for operands stored as C. Stream: stores bypass the cache (the
// destination must be vector-aligned).
template <class C, bool Stream>
struct Vector {
  using V = stdx::native_simd<C>;
  static constexpr int64_t width = static_cast<int64_t>(V::size());
  static V load(const C* p) { return V(p, stdx::element_aligned); }
  static void store(C* p, const V& v) {
#ifdef CRISP_OPTIM_STREAM
    if constexpr (Stream && sizeof(V) == 16) {
      if constexpr (std::is_same_v<C, float>)
        _mm_stream_ps(p, static_cast<__m128>(v));
      else
        _mm_stream_pd(p, static_cast<__m128d>(v));
      return;
    }
#endif
#if defined(__AVX__)
    if constexpr (Stream && sizeof(V) == 32) {
      if constexpr (std::is_same_v<C, float>)
        _mm256_stream_ps(p, static_cast<__m256>(v));
      else
        _mm256_stream_pd(p, static_cast<__m256d>(v));
      return;
    }
#endif
    v.copy_to(p, stdx::element_aligned);
  }
  static V sqrt(const V& x) { return stdx::sqrt(x); }
  static V max(const V& a, const V& b) {
    V r = stdx::max(a, b);
    stdx::where(b != b, r) = b;
    stdx::where(a != a, r) = a;
    return r;
  }
};
#endif

// Calls body<L>(i) for the elements [i, i + L::width) of [0, n), split across threads; `arrays`
// is how many arrays of n elements a pass touches, `out` the arrays it writes.
template <class P, class S, class F>
void sweep(int64_t n, int64_t arrays, Out out, F&& body) {
#ifdef CRISP_OPTIM_STREAM
  // Outputs are new arrays: written through the cache, each line is first read from memory.
  // When the operands overflow the cache anyway, streaming stores skip that read.
  constexpr int64_t kAlign = sizeof(stdx::native_simd<S>);
  bool stream =
      std::is_same_v<P, S> && n * arrays * static_cast<int64_t>(sizeof(S)) >= optim_stream_bytes();
  for (const Array& a : out) stream = stream && reinterpret_cast<uintptr_t>(a.raw()) % kAlign == 0;
#else
  (void)out;
#endif
  parallel_for(n, n * arrays, [&](int64_t b, int64_t e) {
    int64_t i = b;
#ifdef CRISP_OPTIM_SIMD
    if constexpr (std::is_same_v<P, S>) {
#ifdef CRISP_OPTIM_STREAM
      if (stream) {
        for (; i < e && (i * static_cast<int64_t>(sizeof(S))) % kAlign != 0; ++i)
          body.template operator()<Scalar<S>>(i);
        using L = Vector<S, true>;
        for (; i + L::width <= e; i += L::width) body.template operator()<L>(i);
        for (; i < e; ++i) body.template operator()<Scalar<S>>(i);
        _mm_sfence();  // streamed stores are weakly ordered: publish them before returning
        return;
      }
#endif
      using L = Vector<S, false>;
      for (; i + L::width <= e; i += L::width) body.template operator()<L>(i);
    }
#endif
    for (; i < e; ++i) body.template operator()<Scalar<S>>(i);
  });
}

template <class P, class S>
void sgd(const SgdStepAttrs& a, In in, Out out) {
  const bool momentum_on = a.has_momentum, nesterov = a.nesterov;
  const S sign = a.maximize ? S(-1) : S(1);
  const double lr = a.lr, momentum = a.momentum, dampening = a.dampening, wd = a.weight_decay;
  const bool has_buf = in.size() > 2, decay = wd != 0;
  const S neg_lr = static_cast<S>(-lr), mom = static_cast<S>(momentum),
          keep = static_cast<S>(1 - dampening), w = static_cast<S>(wd);
  const P* p = in[0].data<P>();
  const P* g = in[1].data<P>();
  const S* buf = has_buf ? in[2].data<S>() : nullptr;
  P* po = out[0].data<P>();
  S* bo = momentum_on ? out[1].data<S>() : nullptr;
  sweep<P, S>(in[0].numel(), 2 + (has_buf ? 1 : 0) + (momentum_on ? 2 : 1), out,
              [&]<class L>(int64_t i) {
                using V = typename L::V;
                const V pi = L::load(p + i);
                V d = L::load(g + i) * sign;
                if (decay) d = d + w * pi;
                if (momentum_on) {
                  const V b = has_buf ? L::load(buf + i) * mom + keep * d : d;
                  L::store(bo + i, b);
                  d = nesterov ? d + mom * b : b;
                }
                L::store(po + i, pi + neg_lr * d);
              });
}

template <class P, class S>
void adam(const AdamStepAttrs& a, In in, Out out) {
  const bool amsgrad = a.amsgrad, decoupled = a.decoupled;
  const S sign = a.maximize ? S(-1) : S(1);
  const double lr = a.lr, beta1 = a.beta1, beta2 = a.beta2, eps = a.eps, wd = a.weight_decay,
               step_size = a.step_size, bc2_sqrt = a.bc2_sqrt;
  const bool l2 = !decoupled && wd != 0;
  const S b1 = static_cast<S>(beta1), c1 = static_cast<S>(1 - beta1), b2 = static_cast<S>(beta2),
          c2 = static_cast<S>(1 - beta2), e = static_cast<S>(eps), w = static_cast<S>(wd),
          shrink = static_cast<S>(1 - lr * wd), neg_step = static_cast<S>(-step_size),
          bc2 = static_cast<S>(bc2_sqrt);
  const P* p = in[0].data<P>();
  const P* g = in[1].data<P>();
  const S* m = in[2].data<S>();
  const S* v = in[3].data<S>();
  const S* vmax = amsgrad ? in[4].data<S>() : nullptr;
  P* po = out[0].data<P>();
  S* mo = out[1].data<S>();
  S* vo = out[2].data<S>();
  S* vmo = amsgrad ? out[3].data<S>() : nullptr;
  sweep<P, S>(in[0].numel(), amsgrad ? 9 : 7, out, [&]<class L>(int64_t i) {
    using V = typename L::V;
    V pi = L::load(p + i);
    V d = L::load(g + i) * sign;
    if (l2) d = d + w * pi;
    if (decoupled) pi = pi * shrink;
    const V mi = L::load(m + i) * b1 + c1 * d;
    V vi = L::load(v + i) * b2 + c2 * d * d;
    L::store(mo + i, mi);
    L::store(vo + i, vi);
    if (amsgrad) {
      vi = L::max(L::load(vmax + i), vi);
      L::store(vmo + i, vi);
    }
    L::store(po + i, pi + neg_step * mi / (L::sqrt(vi) / bc2 + e));
  });
}

template <class P, class S>
void rmsprop(const RmspropStepAttrs& attrs, In in, Out out) {
  const bool centered = attrs.centered, momentum_on = attrs.has_momentum;
  const S sign = attrs.maximize ? S(-1) : S(1);
  const double lr = attrs.lr, alpha = attrs.alpha, eps = attrs.eps, wd = attrs.weight_decay,
               momentum = attrs.momentum;
  const bool decay = wd != 0;
  const S neg_lr = static_cast<S>(-lr), a = static_cast<S>(alpha), c = static_cast<S>(1 - alpha),
          e = static_cast<S>(eps), w = static_cast<S>(wd), mom = static_cast<S>(momentum);
  const P* p = in[0].data<P>();
  const P* g = in[1].data<P>();
  const S* sq = in[2].data<S>();
  const S* ga = centered ? in[3].data<S>() : nullptr;
  const S* buf = momentum_on ? in[centered ? 4 : 3].data<S>() : nullptr;
  P* po = out[0].data<P>();
  S* sqo = out[1].data<S>();
  S* gao = centered ? out[2].data<S>() : nullptr;
  S* bo = momentum_on ? out[centered ? 3 : 2].data<S>() : nullptr;
  const int64_t arrays = 5 + (centered ? 2 : 0) + (momentum_on ? 2 : 0);
  sweep<P, S>(in[0].numel(), arrays, out, [&]<class L>(int64_t i) {
    using V = typename L::V;
    const V pi = L::load(p + i);
    V d = L::load(g + i) * sign;
    if (decay) d = d + w * pi;
    const V s = L::load(sq + i) * a + c * d * d;
    L::store(sqo + i, s);
    V avg;
    if (centered) {
      const V gm = L::load(ga + i) * a + c * d;
      L::store(gao + i, gm);
      avg = L::sqrt(s - gm * gm) + e;
    } else {
      avg = L::sqrt(s) + e;
    }
    if (momentum_on) {
      const V b = L::load(buf + i) * mom + d / avg;
      L::store(bo + i, b);
      L::store(po + i, pi + neg_lr * b);
    } else {
      L::store(po + i, pi + neg_lr * d / avg);
    }
  });
}

// Runs the update on every parameter, the attributes decoded once for all of them.
template <class P, class S>
void update_all(const Op& op, In in, Out out) {
  auto each = [&](const auto& attrs, auto&& update) {
    for (const ParamOperands& p : optim_operands(op, attrs.params, in, out))
      update(attrs, p.in, p.out);
  };
  switch (op.kind) {
    case OpKind::sgd_step:
      return each(SgdStepAttrs::from_op(op), sgd<P, S>);
    case OpKind::adam_step:
      return each(AdamStepAttrs::from_op(op), adam<P, S>);
    case OpKind::rmsprop_step:
      return each(RmspropStepAttrs::from_op(op), rmsprop<P, S>);
    default:
      unsupported(op, in[0].dtype);
  }
}

}  // namespace

int64_t& optim_stream_bytes() {
  static int64_t bytes = []() -> int64_t {
    if (const char* env = std::getenv("CRISP_OPTIM_STREAM_BYTES")) return std::atoll(env);
#ifdef _SC_LEVEL3_CACHE_SIZE
    const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (l3 > 0) return static_cast<int64_t>(l3);
#endif
    return int64_t{32} << 20;
  }();
  return bytes;
}

void run_optim(const Op& op, In in, Out out) {
  if (in.empty()) fail(op_name(op.kind), ": expected a parameter and gradient");
  switch (in[0].dtype) {
    case DType::f32:
      return update_all<float, float>(op, in, out);
    case DType::f64:
      return update_all<double, double>(op, in, out);
    case DType::f16:
      return update_all<Half, float>(op, in, out);
    case DType::bf16:
      return update_all<BFloat16, float>(op, in, out);
    default:
      unsupported(op, in[0].dtype);
  }
}

}  // namespace crisp::cpu
