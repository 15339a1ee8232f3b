// CUDA kernels for unary elementwise ops, copy/cast and where, and the routing of the
// elementwise family (binary ops: binary.cu).
#include "cuda/small_maps.cuh"

namespace crisp::cuda {

void binary(const Op& op, In in, Out out);  // binary.cu

namespace {

// Math in the compute type: single precision for float (and the 16-bit types), double for f64.
#define CRISP_MATH1(name, fname, dname)                      \
  __device__ inline float name(float x) { return fname(x); } \
  __device__ inline double name(double x) { return dname(x); }
CRISP_MATH1(m_exp, expf, exp)
CRISP_MATH1(m_log, logf, log)
CRISP_MATH1(m_log1p, log1pf, log1p)
CRISP_MATH1(m_expm1, expm1f, expm1)
CRISP_MATH1(m_sqrt, sqrtf, sqrt)
CRISP_MATH1(m_sin, sinf, sin)
CRISP_MATH1(m_cos, cosf, cos)
CRISP_MATH1(m_tanh, tanhf, tanh)
CRISP_MATH1(m_erf, erff, erf)
CRISP_MATH1(m_floor, floorf, floor)
CRISP_MATH1(m_ceil, ceilf, ceil)
CRISP_MATH1(m_rint, rintf, rint)
#undef CRISP_MATH1

template <class C>
__device__ inline bool is_nan(C v) {
  if constexpr (std::is_floating_point_v<C>)
    return v != v;
  else
    return false;
}

template <class C>
__device__ inline bool negative(C v) {
  if constexpr (std::is_unsigned_v<C>)
    return false;
  else
    return v < C(0);
}

// ---- unary functors: C -> C in the compute type ----
#define CRISP_UNARY(Name, expr)          \
  struct Name {                          \
    double r0, r1;                       \
    template <class C>                   \
    __device__ C operator()(C v) const { \
      (void)r0;                          \
      (void)r1;                          \
      return static_cast<C>(expr);       \
    }                                    \
  };

CRISP_UNARY(Neg, -v)
CRISP_UNARY(Abs, negative(v) ? static_cast<C>(-v) : v)
CRISP_UNARY(Sign, (C(0) < v) - negative(v))
CRISP_UNARY(Relu, negative(v) ? C(0) : v)
CRISP_UNARY(Square, v* v)
CRISP_UNARY(PowScalar, pow(static_cast<double>(v), r0))
CRISP_UNARY(Exp, m_exp(v))
CRISP_UNARY(Log, m_log(v))
CRISP_UNARY(Log1p, m_log1p(v))
CRISP_UNARY(Expm1, m_expm1(v))
CRISP_UNARY(Sqrt, m_sqrt(v))
CRISP_UNARY(Rsqrt, C(1) / m_sqrt(v))
CRISP_UNARY(Sin, m_sin(v))
CRISP_UNARY(Cos, m_cos(v))
CRISP_UNARY(Tanh, m_tanh(v))
CRISP_UNARY(Sigmoid, C(1) / (C(1) + m_exp(-v)))
CRISP_UNARY(LeakyRelu, v > C(0) ? v : static_cast<C>(v * static_cast<C>(r0)))
CRISP_UNARY(Gelu, C(0.5) * v * (C(1) + m_erf(v * C(0.70710678118654752440))))
CRISP_UNARY(GeluTanh,
            C(0.5) * v * (C(1) + m_tanh(C(0.7978845608028654) * (v + C(0.044715) * v * v * v))))
CRISP_UNARY(Silu, v / (C(1) + m_exp(-v)))
CRISP_UNARY(Softplus,
            static_cast<C>(r0) * v > static_cast<C>(r1)
                ? v
                : static_cast<C>(m_log1p(m_exp(static_cast<C>(r0) * v)) / static_cast<C>(r0)))
CRISP_UNARY(Mish, v* m_tanh(v > C(20) ? v : m_log1p(m_exp(v))))
CRISP_UNARY(Erf, m_erf(v))
CRISP_UNARY(Floor, m_floor(v))
CRISP_UNARY(Ceil, m_ceil(v))
CRISP_UNARY(Round, m_rint(v))
#undef CRISP_UNARY

// NaN bounds leave that side open.
struct Clamp {
  double lo, hi;
  bool has_lo, has_hi;
  template <class C>
  __device__ C operator()(C v) const {
    if (has_lo && v < static_cast<C>(lo)) v = static_cast<C>(lo);
    if (has_hi && v > static_cast<C>(hi)) v = static_cast<C>(hi);
    return v;
  }
};

struct Identity {
  template <class C>
  __device__ C operator()(C v) const {
    return v;
  }
};
struct LogicalNot {
  template <class C>
  __device__ bool operator()(C v) const {
    return v == C(0);
  }
};
struct IsNan {
  template <class C>
  __device__ bool operator()(C v) const {
    return is_nan(v);
  }
};

template <class T>
void unary(const Op& op, const Array& x, const Array& o) {
  using C = compute_t<T>;
  const double r0 = op.reals.empty() ? 0 : op.reals[0];
  const double r1 = op.reals.size() > 1 ? op.reals[1] : 0;
  auto run = [&](auto f) { map_or_queue<T, T>(o, f, {&x}); };
  if constexpr (std::is_same_v<T, bool>) {
    unsupported(op, x.dtype);
  } else {
    switch (op.kind) {
      case OpKind::neg:
        return run(Neg{r0, r1});
      case OpKind::abs:
        return run(Abs{r0, r1});
      case OpKind::sign:
        return run(Sign{r0, r1});
      case OpKind::relu:
        return run(Relu{r0, r1});
      case OpKind::clamp:
        return run(Clamp{r0, r1, r0 == r0, r1 == r1});
      case OpKind::pow_scalar:
        if (r0 == 2) return run(Square{r0, r1});
        return run(PowScalar{r0, r1});
      default:
        break;
    }
    if constexpr (std::is_floating_point_v<C>) {
      switch (op.kind) {
        case OpKind::exp:
          return run(Exp{r0, r1});
        case OpKind::log:
          return run(Log{r0, r1});
        case OpKind::log1p:
          return run(Log1p{r0, r1});
        case OpKind::expm1:
          return run(Expm1{r0, r1});
        case OpKind::sqrt:
          return run(Sqrt{r0, r1});
        case OpKind::rsqrt:
          return run(Rsqrt{r0, r1});
        case OpKind::sin:
          return run(Sin{r0, r1});
        case OpKind::cos:
          return run(Cos{r0, r1});
        case OpKind::tanh:
          return run(Tanh{r0, r1});
        case OpKind::sigmoid:
          return run(Sigmoid{r0, r1});
        case OpKind::leaky_relu:
          return run(LeakyRelu{r0, r1});
        case OpKind::gelu:
          return run(Gelu{r0, r1});
        case OpKind::gelu_tanh:
          return run(GeluTanh{r0, r1});
        case OpKind::silu:
          return run(Silu{r0, r1});
        case OpKind::softplus:
          return run(Softplus{r0, r1});
        case OpKind::mish:
          return run(Mish{r0, r1});
        case OpKind::erf:
          return run(Erf{r0, r1});
        case OpKind::floor:
          return run(Floor{r0, r1});
        case OpKind::ceil:
          return run(Ceil{r0, r1});
        case OpKind::round:
          return run(Round{r0, r1});
        default:
          break;
      }
    }
    unsupported(op, x.dtype);
  }
}

// Same-size element moves need no conversion: one kernel per element size.
template <class F>
void visit_size(size_t size, F&& f) {
  switch (size) {
    case 1:
      return f(uint8_t{});
    case 2:
      return f(uint16_t{});
    case 4:
      return f(uint32_t{});
    default:
      return f(uint64_t{});
  }
}

struct Select {
  template <class U>
  __device__ U operator()(bool c, U a, U b) const {
    return c ? a : b;
  }
};

}  // namespace

namespace {

// Copies src into contiguous dst, converting the dtype. Queue: as the copy op, which may be
// queued with other small ops; other ops' copies are launched at once, as their kernels follow.
template <bool Queue>
void copy_elements(const Array& src, const Array& dst) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  const auto identity = [&](auto dtag, auto stag) {
    using D = decltype(dtag);
    using S = decltype(stag);
    if constexpr (Queue)
      map_or_queue<D, S>(dst, Identity{}, {&src});
    else
      map<D, S>(dst, Identity{}, {&src});
  };
  if (src.dtype == dst.dtype) {
    if (src.is_contiguous() && !(Queue && n <= kSmallMapElements)) {
      ctx().flush();
      CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), static_cast<size_t>(n) * itemsize(src.dtype),
                                 cudaMemcpyDeviceToDevice, ctx().stream));
      return;
    }
    return visit_size(itemsize(src.dtype), [&](auto tag) { identity(tag, tag); });
  }
  visit(src.dtype, [&](auto stag) {
    visit(dst.dtype, [&](auto dtag) {
      if constexpr (!std::is_same_v<decltype(dtag), decltype(stag)>) identity(dtag, stag);
    });
  });
}

}  // namespace

void copy_to_contiguous(const Array& src, const Array& dst) { copy_elements<false>(src, dst); }

Array contiguous(const Array& a, Buffer& keep) {
  if (a.is_contiguous()) return a;
  keep = Buffer(static_cast<size_t>(a.numel()) * itemsize(a.dtype));
  Array c{std::make_shared<Storage>(keep.get(), 0, nullptr), a.shape, contiguous_strides(a.shape),
          0, a.dtype};
  copy_to_contiguous(a, c);
  return c;
}

Array channels_last_storage(const Array& a, Buffer& keep) {
  return contiguous(permuted(a, channels_last_order(a.ndim())), keep);
}

void elementwise(const Op& op, In in, Out out) {
  const Array& o = out[0];
  if (o.numel() == 0) return;
  if (op.kind == OpKind::where) {
    return visit_size(itemsize(o.dtype), [&](auto tag) {
      using U = decltype(tag);
      map_or_queue<U, bool, U, U>(o, Select{}, {&in[0], &in[1], &in[2]});
    });
  }
  if (op.kind == OpKind::copy) return copy_elements<true>(in[0], o);
  if (op.kind > OpKind::unary_end) return binary(op, in, out);
  visit(in[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    switch (op.kind) {
      case OpKind::logical_not:
        return map_or_queue<bool, T>(o, LogicalNot{}, {&in[0]});
      case OpKind::isnan:
        return map_or_queue<bool, T>(o, IsNan{}, {&in[0]});
      default:
        return unary<T>(op, in[0], o);
    }
  });
}

}  // namespace crisp::cuda
