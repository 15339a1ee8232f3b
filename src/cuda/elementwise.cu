// CUDA kernels for the elementwise family: unary and binary ops (arithmetic, comparisons, logic)
// over broadcast inputs, copy/cast and where, and the queue of small ones (SmallMaps in
// common.cuh). One file, because the queue holds device function pointers, which are only valid
// in the module that took them: so ops of every kind here queue together, run by one kernel.
#include <atomic>
#include <cstring>
#include <type_traits>
#include <utility>

#include "cuda/map.cuh"
#include "cuda/profile.h"

namespace crisp::cuda {

namespace {

// ---- the queue of small ops ----

// One queued op, run by every thread of the block: out[i] = f(in_k[i] ...), where input k is
// one value broadcast when bit k of `scalar` is set.
template <class O, class F, class... I>
__device__ void small_map(void* out, const void* a, const void* b, const void* c, int n,
                          unsigned scalar, uint64_t f0, uint64_t f1, uint64_t f2) {
  const uint64_t words[3] = {f0, f1, f2};
  alignas(F) unsigned char bytes[sizeof(F)];
  memcpy(bytes, words, sizeof(F));
  const F& f = *reinterpret_cast<const F*>(bytes);
  const void* in[3] = {a, b, c};
  [&]<size_t... K>(std::index_sequence<K...>) {
    for (int i = static_cast<int>(threadIdx.x); i < n; i += static_cast<int>(blockDim.x))
      static_cast<O*>(out)[i] =
          convert<O>(f(load(static_cast<const I*>(in[K])[(scalar >> K & 1u) ? 0 : i])...));
  }
  (std::index_sequence_for<I...>{});
}

template <class O, class F, class... I>
__device__ SmallMapFn small_map_entry = small_map<O, F, I...>;

// small_map's address on the current device (each device loads the module at its own address),
// read once per device.
template <class O, class F, class... I>
SmallMapFn small_map_fn(int device) {
  static std::atomic<SmallMapFn> fns[kLaunchDevices] = {};
  SmallMapFn fn = fns[device].load(std::memory_order_relaxed);
  if (!fn) {
    CUDA_CHECK(cudaMemcpyFromSymbol(&fn, small_map_entry<O, F, I...>, sizeof fn));
    fns[device].store(fn, std::memory_order_relaxed);
  }
  return fn;
}

// The queued ops in order, in one block: each waits for the one before, which it may read.
__global__ void __launch_bounds__(kBlock) small_maps_kernel(const SmallMaps q) {
  for (int k = 0; k < q.count; ++k) {
    if (k > 0) __syncthreads();
    const SmallMapFn fn = q.ops[k].fn;
    fn(q.ops[k].out, q.ops[k].in[0], q.ops[k].in[1], q.ops[k].in[2], q.ops[k].n, q.ops[k].scalar,
       q.ops[k].functor[0], q.ops[k].functor[1], q.ops[k].functor[2]);
  }
}

// Queues out = f(in...) when out is small, every input is contiguous over out's shape or one
// value, and f fits a record; says whether it did.
template <class O, class... I, class F>
bool queue_small_map(const Array& out, const F& f,
                     const std::array<const Array*, sizeof...(I)>& in) {
  static_assert(sizeof...(I) <= 3, "a queued op has at most three inputs");
  constexpr bool fits =
      sizeof(F) <= sizeof(SmallMap::functor) && alignof(F) <= 8 && std::is_trivially_copyable_v<F>;
  if constexpr (!fits) {
    return false;
  } else {
    Context& c = ctx();
    const int64_t n = out.numel();
    if (n > kSmallMapElements || c.device >= kLaunchDevices || op_profile()) return false;
    SmallMap r{};
    for (size_t k = 0; k < in.size(); ++k) {
      const Array& a = *in[k];
      const int64_t m = a.numel();
      // An input of out's size broadcasts along no axis, so contiguous means position i is i.
      if (m == 1) {
        r.scalar |= 1u << k;
      } else if (m != n || !a.is_contiguous()) {
        return false;
      }
      r.in[k] = a.raw();
    }
    r.fn = small_map_fn<O, F, I...>(c.device);
    r.out = out.raw();
    r.n = static_cast<int>(n);
    std::memcpy(r.functor, &f, sizeof(F));
    c.queue(r);
    return true;
  }
}

// out = f(in...) as map() computes it, queued when queue_small_map can take it; otherwise the
// queue runs first, so the launch stays in order behind it.
template <class O, class... I, class F>
void map_or_queue(const Array& out, F f, const std::array<const Array*, sizeof...(I)>& in) {
  if (out.numel() == 0 || queue_small_map<O, I...>(out, f, in)) return;
  ctx().flush();
  map<O, I...>(out, f, in);
}

// ---- math ----

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

// ---- binary functors: (C, C) -> C or bool in the compute type ----

// Signed integers wrap on overflow, as on the CPU, instead of being undefined behaviour.
template <class C, class F>
__device__ inline C wrapping(C x, C y, F f) {
  if constexpr (std::is_integral_v<C> && std::is_signed_v<C>) {
    using U = std::make_unsigned_t<C>;
    return static_cast<C>(static_cast<U>(f(static_cast<U>(x), static_cast<U>(y))));
  } else {
    return static_cast<C>(f(x, y));
  }
}

#define CRISP_BINARY(Name, R, expr)           \
  struct Name {                               \
    template <class C>                        \
    __device__ R operator()(C x, C y) const { \
      return expr;                            \
    }                                         \
  };
struct Plus {
  template <class C>
  __device__ C operator()(C x, C y) const {
    return x + y;
  }
};
struct Minus {
  template <class C>
  __device__ C operator()(C x, C y) const {
    return x - y;
  }
};
struct Times {
  template <class C>
  __device__ C operator()(C x, C y) const {
    return x * y;
  }
};
CRISP_BINARY(Add, C, wrapping(x, y, Plus{}))
CRISP_BINARY(Sub, C, wrapping(x, y, Minus{}))
CRISP_BINARY(Mul, C, wrapping(x, y, Times{}))
CRISP_BINARY(FDiv, C, x / y)
CRISP_BINARY(Pow, C, static_cast<C>(pow(static_cast<double>(x), static_cast<double>(y))))
CRISP_BINARY(Maximum, C, (x > y || x != x) ? x : y)
CRISP_BINARY(Minimum, C, (x < y || x != x) ? x : y)
CRISP_BINARY(Eq, bool, x == y)
CRISP_BINARY(Ne, bool, x != y)
CRISP_BINARY(Lt, bool, x < y)
CRISP_BINARY(Le, bool, x <= y)
CRISP_BINARY(Gt, bool, x > y)
CRISP_BINARY(Ge, bool, x >= y)
CRISP_BINARY(And, bool, x != C(0) && y != C(0))
CRISP_BINARY(Or, bool, x != C(0) || y != C(0))
CRISP_BINARY(Xor, bool, (x != C(0)) != (y != C(0)))
CRISP_BINARY(ReluBackward, C, x > C(0) ? y : C(0))
CRISP_BINARY(AddRelu, C, x + y < C(0) ? C(0) : x + y)
#undef CRISP_BINARY

// float32 pow in single precision: the double path costs far more and float needs no more.
struct PowF {
  __device__ float operator()(float x, float y) const { return powf(x, y); }
};

// Floor division, as PyTorch's //; a zero divisor is reported and gives 0.
struct IDiv {
  DeviceFault* fault;
  template <class C>
  __device__ C operator()(C x, C y) const {
    if (y == 0) {
      report_fault(fault, 0, 0);
      return C(0);
    }
    if constexpr (std::is_signed_v<C>) {
      // Negating in unsigned arithmetic wraps INT_MIN to itself (no INT_MIN / -1 overflow).
      using U = std::make_unsigned_t<C>;
      if (y == C(-1)) return static_cast<C>(U(0) - static_cast<U>(x));
      C q = static_cast<C>(x / y);
      if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
      return q;
    } else {
      return static_cast<C>(x / y);
    }
  }
};

void binary(const Op& op, In in, Out out) {
  const Array &a = in[0], &b = in[1], &o = out[0];
  visit(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    auto pred = [&](auto f) { map_or_queue<bool, T, T>(o, f, {&a, &b}); };
    auto arith = [&](auto f) { map_or_queue<T, T, T>(o, f, {&a, &b}); };
    switch (op.kind) {
      case OpKind::eq:
        return pred(Eq{});
      case OpKind::ne:
        return pred(Ne{});
      case OpKind::lt:
        return pred(Lt{});
      case OpKind::le:
        return pred(Le{});
      case OpKind::gt:
        return pred(Gt{});
      case OpKind::ge:
        return pred(Ge{});
      case OpKind::logical_and:
        return pred(And{});
      case OpKind::logical_or:
        return pred(Or{});
      case OpKind::logical_xor:
        return pred(Xor{});
      default:
        break;
    }
    if constexpr (!std::is_same_v<T, bool>) {
      switch (op.kind) {
        case OpKind::add:
          return arith(Add{});
        case OpKind::sub:
          return arith(Sub{});
        case OpKind::mul:
          return arith(Mul{});
        case OpKind::div:
          if constexpr (std::is_integral_v<C>) {
            return arith(
                IDiv{ctx().fault([](int, long long) { return "integer division by zero"; })});
          } else {
            return arith(FDiv{});
          }
        case OpKind::pow:
          if constexpr (std::is_same_v<C, float>) {
            return arith(PowF{});
          } else {
            return arith(Pow{});
          }
        case OpKind::maximum:
          return arith(Maximum{});
        case OpKind::minimum:
          return arith(Minimum{});
        case OpKind::relu_backward:
          return arith(ReluBackward{});
        case OpKind::add_relu:
          return arith(AddRelu{});
        default:
          break;
      }
    }
    unsupported(op, a.dtype);
  });
}

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

void launch_small_maps(const SmallMaps& q) {
  launch<small_maps_kernel>(dim3(1), dim3(kBlock), 0, ctx().stream, q);
  CUDA_LAUNCH_CHECK();
}

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
