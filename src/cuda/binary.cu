// CUDA kernels for binary elementwise ops (arithmetic, comparisons, logic) over broadcast inputs.
#include "cuda/small_maps.cuh"

namespace crisp::cuda {

namespace {

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

}  // namespace

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

}  // namespace crisp::cuda
