// Every elementwise op's scalar formula, defined once for host and device code: one functor per
// op over the compute type, the attributes of the ops that take parameters, and the op -> formula
// map that the CPU and CUDA kernels both run.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "crisp/backend.h"
#include "kernels/attrs.h"
#include "kernels/compute_type.h"
#include "kernels/host_device.h"

namespace crisp {

namespace formula {

// The type a kernel over inputs stored as T stores a formula's result of type R in: bool for the
// predicates, T for the rest.
template <class T, class R>
using stored_t = std::conditional_t<std::is_same_v<R, bool>, bool, T>;

// Math in the compute type: single precision for float, double for double, by the same C
// functions on host and device.
namespace math {
#define CRISP_MATH1(name, fname)                                         \
  CRISP_HOST_DEVICE inline float name(float x) { return ::fname##f(x); } \
  CRISP_HOST_DEVICE inline double name(double x) { return ::fname(x); }
CRISP_MATH1(exp, exp)
CRISP_MATH1(log, log)
CRISP_MATH1(log1p, log1p)
CRISP_MATH1(expm1, expm1)
CRISP_MATH1(sqrt, sqrt)
CRISP_MATH1(sin, sin)
CRISP_MATH1(cos, cos)
CRISP_MATH1(tanh, tanh)
CRISP_MATH1(erf, erf)
CRISP_MATH1(floor, floor)
CRISP_MATH1(ceil, ceil)
CRISP_MATH1(rint, rint)
#undef CRISP_MATH1
}  // namespace math

template <class C>
CRISP_HOST_DEVICE inline bool is_nan(C v) {
  if constexpr (std::is_floating_point_v<C>)
    return v != v;
  else
    return false;
}

// v < 0, spelled so that unsigned types compile without a warning.
template <class C>
CRISP_HOST_DEVICE inline bool negative(C v) {
  if constexpr (std::is_unsigned_v<C>)
    return false;
  else
    return v < C(0);
}

// f(x, y), with signed integers wrapping on overflow, as in PyTorch, instead of being undefined.
template <class C, class F>
CRISP_HOST_DEVICE inline C wrapping(C x, C y, F f) {
  if constexpr (std::is_integral_v<C> && std::is_signed_v<C>) {
    using U = std::make_unsigned_t<C>;
    return static_cast<C>(static_cast<U>(f(static_cast<U>(x), static_cast<U>(y))));
  } else {
    return static_cast<C>(f(x, y));
  }
}

// ---- unary: C -> C (or bool) in the compute type ----

#define CRISP_UNARY(Name, expr)                 \
  struct Name {                                 \
    template <class C>                          \
    CRISP_HOST_DEVICE C operator()(C v) const { \
      return static_cast<C>(expr);              \
    }                                           \
  };

CRISP_UNARY(Neg, -v)
CRISP_UNARY(Abs, negative(v) ? static_cast<C>(-v) : v)
CRISP_UNARY(Sign, (C(0) < v) - negative(v))
CRISP_UNARY(Relu, negative(v) ? C(0) : v)  // NaN passes through
CRISP_UNARY(Square, v* v)
CRISP_UNARY(Exp, math::exp(v))
CRISP_UNARY(Log, math::log(v))
CRISP_UNARY(Log1p, math::log1p(v))
CRISP_UNARY(Expm1, math::expm1(v))
CRISP_UNARY(Sqrt, math::sqrt(v))
CRISP_UNARY(Rsqrt, C(1) / math::sqrt(v))
CRISP_UNARY(Sin, math::sin(v))
CRISP_UNARY(Cos, math::cos(v))
CRISP_UNARY(Tanh, math::tanh(v))
CRISP_UNARY(Sigmoid, C(1) / (C(1) + math::exp(-v)))
CRISP_UNARY(Gelu, C(0.5) * v * (C(1) + math::erf(v * C(0.70710678118654752440))))
CRISP_UNARY(GeluTanh,
            C(0.5) * v * (C(1) + math::tanh(C(0.7978845608028654) * (v + C(0.044715) * v * v * v))))
CRISP_UNARY(Silu, v / (C(1) + math::exp(-v)))
CRISP_UNARY(Mish, v* math::tanh(v > C(20) ? v : math::log1p(math::exp(v))))
CRISP_UNARY(Erf, math::erf(v))
CRISP_UNARY(Floor, math::floor(v))
CRISP_UNARY(Ceil, math::ceil(v))
CRISP_UNARY(Round, math::rint(v))  // halves to even
#undef CRISP_UNARY

// The copy op's: conversion to the output's dtype is the store's.
struct Identity {
  template <class C>
  CRISP_HOST_DEVICE C operator()(C v) const {
    return v;
  }
};

struct LogicalNot {
  template <class C>
  CRISP_HOST_DEVICE bool operator()(C v) const {
    return v == C(0);
  }
};

struct IsNan {
  template <class C>
  CRISP_HOST_DEVICE bool operator()(C v) const {
    return is_nan(v);
  }
};

// leaky_relu: v where positive, else v * slope. Encoded: reals slope.
struct LeakyRelu {
  double slope;

  template <class C>
  CRISP_HOST_DEVICE C operator()(C v) const {
    return v > C(0) ? v : static_cast<C>(v * static_cast<C>(slope));
  }
  Op to_op(OpKind kind) const { return Op{kind, {}, {slope}}; }
  static LeakyRelu from_op(const Op& op) {
    check_counts(op, 0, 0, 1);
    return LeakyRelu{op.reals[0]};
  }
};

// softplus: log(1 + exp(beta v)) / beta, or v where beta v exceeds threshold (where the two agree
// to rounding and exp would overflow). Encoded: reals beta, threshold.
struct Softplus {
  double beta, threshold;

  template <class C>
  CRISP_HOST_DEVICE C operator()(C v) const {
    const C b = static_cast<C>(beta), bv = b * v;
    return bv > static_cast<C>(threshold) ? v : static_cast<C>(math::log1p(math::exp(bv)) / b);
  }
  Op to_op(OpKind kind) const { return Op{kind, {}, {beta, threshold}}; }
  static Softplus from_op(const Op& op) {
    check_counts(op, 0, 0, 2);
    return Softplus{op.reals[0], op.reals[1]};
  }
};

// clamp: v limited to [lo, hi], a side without a bound left open. Encoded: reals lo, hi, NaN for
// an open side.
struct Clamp {
  double lo, hi;
  bool has_lo, has_hi;

  template <class C>
  CRISP_HOST_DEVICE C operator()(C v) const {
    if (has_lo && v < static_cast<C>(lo)) v = static_cast<C>(lo);
    if (has_hi && v > static_cast<C>(hi)) v = static_cast<C>(hi);
    return v;
  }
  Op to_op(OpKind kind) const {
    const double open = std::numeric_limits<double>::quiet_NaN();
    return Op{kind, {}, {has_lo ? lo : open, has_hi ? hi : open}};
  }
  static Clamp from_op(const Op& op) {
    check_counts(op, 0, 0, 2);
    const double lo = op.reals[0], hi = op.reals[1];
    return Clamp{lo, hi, lo == lo, hi == hi};
  }
};

// pow_scalar: v to a fixed power, in double (integers too). Encoded: reals exponent.
struct PowScalar {
  double exponent;

  template <class C>
  CRISP_HOST_DEVICE C operator()(C v) const {
    return static_cast<C>(::pow(static_cast<double>(v), exponent));
  }
  Op to_op(OpKind kind) const { return Op{kind, {}, {exponent}}; }
  static PowScalar from_op(const Op& op) {
    check_counts(op, 0, 0, 1);
    return PowScalar{op.reals[0]};
  }
};

// ---- binary: (C, C) -> C or bool in the compute type ----

#define CRISP_BINARY(Name, R, expr)                  \
  struct Name {                                      \
    template <class C>                               \
    CRISP_HOST_DEVICE R operator()(C x, C y) const { \
      return expr;                                   \
    }                                                \
  };

CRISP_BINARY(Plus, C, x + y)
CRISP_BINARY(Minus, C, x - y)
CRISP_BINARY(Times, C, x* y)
CRISP_BINARY(Add, C, wrapping(x, y, Plus{}))
CRISP_BINARY(Sub, C, wrapping(x, y, Minus{}))
CRISP_BINARY(Mul, C, wrapping(x, y, Times{}))
CRISP_BINARY(Divide, C, x / y)                       // floats; integers divide by FloorDivide
CRISP_BINARY(Maximum, C, (x > y || x != x) ? x : y)  // NaN wins
CRISP_BINARY(Minimum, C, (x < y || x != x) ? x : y)
CRISP_BINARY(Eq, bool, x == y)
CRISP_BINARY(Ne, bool, x != y)
CRISP_BINARY(Lt, bool, x < y)
CRISP_BINARY(Le, bool, x <= y)
CRISP_BINARY(Gt, bool, x > y)
CRISP_BINARY(Ge, bool, x >= y)
CRISP_BINARY(LogicalAnd, bool, x != C(0) && y != C(0))
CRISP_BINARY(LogicalOr, bool, x != C(0) || y != C(0))
CRISP_BINARY(LogicalXor, bool, (x != C(0)) != (y != C(0)))
CRISP_BINARY(ReluBackward, C, x > C(0) ? y : C(0))  // x: relu's output, y: the gradient
CRISP_BINARY(AddRelu, C, x + y < C(0) ? C(0) : x + y)
#undef CRISP_BINARY

// x^y: float in single precision (double would cost far more on the GPU, and float needs no
// more), everything else through double.
struct Pow {
  template <class C>
  CRISP_HOST_DEVICE C operator()(C x, C y) const {
    if constexpr (std::is_same_v<C, float>)
      return ::powf(x, y);
    else
      return static_cast<C>(::pow(static_cast<double>(x), static_cast<double>(y)));
  }
};

// Floor division of integers, as PyTorch's //, for y != 0: each backend reports a zero divisor
// its own way before calling this.
struct FloorDivide {
  template <class C>
  CRISP_HOST_DEVICE C operator()(C x, C y) const {
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

// ---- where: selects move bits, so they run on the unsigned type U of the element's size ----

struct Where {
  template <class U>
  CRISP_HOST_DEVICE U operator()(bool c, U x, U y) const {
    return c ? x : y;
  }
};

// Where through bit masks, the condition read as a byte (bools hold 0 or 1): on the CPU `c ? x :
// y` compiles to a branch, which random conditions (a ReLU's gradient) mispredict half the time,
// 10x slower, and loops over bool do not vectorize.
struct WhereBits {
  template <class U>
  CRISP_HOST_DEVICE U operator()(uint8_t c, U x, U y) const {
    const U m = static_cast<U>(U(0) - static_cast<U>(c));
    return static_cast<U>((x & m) | (y & static_cast<U>(~m)));
  }
};

// ---- op -> formula ----

// Calls f(formula) with the formula of unary op `op` for inputs stored as T (computing in
// compute_t<T>) and says whether there is one: bool has only logical_not and isnan, the integers
// no float function.
template <class T, class F>
bool visit_unary(const Op& op, F&& f) {
  using C = compute_t<T>;
  auto use = [&](auto formula) {
    f(formula);
    return true;
  };
  switch (op.kind) {
    case OpKind::logical_not:
      return use(LogicalNot{});
    case OpKind::isnan:
      return use(IsNan{});
    default:
      break;
  }
  if constexpr (!std::is_same_v<C, bool>) {
    switch (op.kind) {
      case OpKind::neg:
        return use(Neg{});
      case OpKind::abs:
        return use(Abs{});
      case OpKind::sign:
        return use(Sign{});
      case OpKind::relu:
        return use(Relu{});
      case OpKind::clamp:
        return use(Clamp::from_op(op));
      case OpKind::pow_scalar: {
        const PowScalar p = PowScalar::from_op(op);
        return p.exponent == 2 ? use(Square{}) : use(p);
      }
      default:
        break;
    }
  }
  if constexpr (std::is_floating_point_v<C>) {
    switch (op.kind) {
      case OpKind::exp:
        return use(Exp{});
      case OpKind::log:
        return use(Log{});
      case OpKind::log1p:
        return use(Log1p{});
      case OpKind::expm1:
        return use(Expm1{});
      case OpKind::sqrt:
        return use(Sqrt{});
      case OpKind::rsqrt:
        return use(Rsqrt{});
      case OpKind::sin:
        return use(Sin{});
      case OpKind::cos:
        return use(Cos{});
      case OpKind::tanh:
        return use(Tanh{});
      case OpKind::sigmoid:
        return use(Sigmoid{});
      case OpKind::leaky_relu:
        return use(LeakyRelu::from_op(op));
      case OpKind::gelu:
        return use(Gelu{});
      case OpKind::gelu_tanh:
        return use(GeluTanh{});
      case OpKind::silu:
        return use(Silu{});
      case OpKind::softplus:
        return use(Softplus::from_op(op));
      case OpKind::mish:
        return use(Mish{});
      case OpKind::erf:
        return use(Erf{});
      case OpKind::floor:
        return use(Floor{});
      case OpKind::ceil:
        return use(Ceil{});
      case OpKind::round:
        return use(Round{});
      default:
        break;
    }
  }
  return false;
}

// Calls f(formula) with the formula of binary op `op` for inputs stored as T (computing in
// compute_t<T>) and says whether there is one: bool has only comparisons and logic. Integer div
// has none here: it is FloorDivide behind each backend's check for a zero divisor.
template <class T, class F>
bool visit_binary(const Op& op, F&& f) {
  using C = compute_t<T>;
  auto use = [&](auto formula) {
    f(formula);
    return true;
  };
  switch (op.kind) {
    case OpKind::eq:
      return use(Eq{});
    case OpKind::ne:
      return use(Ne{});
    case OpKind::lt:
      return use(Lt{});
    case OpKind::le:
      return use(Le{});
    case OpKind::gt:
      return use(Gt{});
    case OpKind::ge:
      return use(Ge{});
    case OpKind::logical_and:
      return use(LogicalAnd{});
    case OpKind::logical_or:
      return use(LogicalOr{});
    case OpKind::logical_xor:
      return use(LogicalXor{});
    default:
      break;
  }
  if constexpr (!std::is_same_v<C, bool>) {
    switch (op.kind) {
      case OpKind::add:
        return use(Add{});
      case OpKind::sub:
        return use(Sub{});
      case OpKind::mul:
        return use(Mul{});
      case OpKind::div:
        if constexpr (std::is_floating_point_v<C>) return use(Divide{});
        break;
      case OpKind::pow:
        return use(Pow{});
      case OpKind::maximum:
        return use(Maximum{});
      case OpKind::minimum:
        return use(Minimum{});
      case OpKind::relu_backward:
        return use(ReluBackward{});
      case OpKind::add_relu:
        return use(AddRelu{});
      default:
        break;
    }
  }
  return false;
}

}  // namespace formula
}  // namespace crisp
