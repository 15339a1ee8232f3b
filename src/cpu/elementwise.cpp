// CPU kernels for creation ops and elementwise ops (unary, binary, where, copy/cast).
#include <atomic>
#include <bit>
#include <cmath>
#include <functional>
#include <numbers>

#include "core/philox.h"
#include "cpu/kernels.h"
#include "cpu/loops.h"
#include "cpu/nn_util.h"

namespace crisp::cpu {

namespace {

template <class T>
constexpr bool is_float_v = std::is_floating_point_v<compute_t<T>>;

// Writes f(i) to every element of contiguous `out`, i being the flat index.
template <class T, class F>
void generate(const Array& out, F&& f) {
  T* o = out.data<T>();
  const int64_t n = out.numel();
  parallel_for(n, n * 8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) o[i] = static_cast<T>(f(i));
  });
}

// Words of one Philox stream read in increasing order: each block of four words is computed
// once rather than once per word.
class Stream {
 public:
  Stream(uint64_t seed, uint64_t offset) : seed_(seed), offset_(offset) {}
  uint32_t operator()(uint64_t i) {
    const uint64_t n = offset_ + i;
    if (n >> 2 != block_) {
      block_ = n >> 2;
      r_ = philox::generate(seed_, block_);
    }
    switch (n & 3) {
      case 0:
        return r_.x;
      case 1:
        return r_.y;
      case 2:
        return r_.z;
      default:
        return r_.w;
    }
  }

 private:
  uint64_t seed_, offset_, block_ = ~uint64_t{0};
  philox::U4 r_{};
};

// generate() for random ops: f(stream, i), with one stream per thread's range; the values are
// those of philox::word(seed, offset, ...) whatever the split.
template <class T, class F>
void generate_random(const Array& out, const Op& op, F&& f) {
  T* o = out.data<T>();
  const int64_t n = out.numel();
  const uint64_t seed = static_cast<uint64_t>(op.ints[0]), off = static_cast<uint64_t>(op.ints[1]);
  parallel_for(n, n * 8, [&](int64_t b, int64_t e) {
    Stream stream(seed, off);
    for (int64_t i = b; i < e; ++i) o[i] = static_cast<T>(f(stream, static_cast<uint64_t>(i)));
  });
}

}  // namespace

void creation(const Op& op, In, Out out) {
  const Array& o = out[0];
  visit_dtype(o.dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    switch (op.kind) {
      case OpKind::fill: {
        const T v = static_cast<T>(static_cast<C>(op.reals[0]));
        return generate<T>(o, [v](int64_t) { return v; });
      }
      case OpKind::arange: {
        const double start = op.reals[0], step = op.reals[1];
        return generate<T>(
            o, [=](int64_t i) { return static_cast<C>(start + step * static_cast<double>(i)); });
      }
      case OpKind::eye: {
        const int64_t cols = o.shape[1], k = op.ints[0];
        return generate<T>(o, [=](int64_t i) { return static_cast<C>(i % cols - i / cols == k); });
      }
      case OpKind::rand_uniform: {
        const double lo = op.reals[0], hi = op.reals[1];
        return generate_random<T>(o, op, [=](Stream& s, uint64_t i) {
          // (0, 1] -> [0, 1)
          const uint32_t w0 = s(2 * i), w1 = s(2 * i + 1);
          double u = 1.0 - philox::uniform(w0, w1);
          C v = static_cast<C>(lo + (hi - lo) * u);
          return v < static_cast<C>(hi) || lo == hi ? v : static_cast<C>(lo);
        });
      }
      case OpKind::rand_normal: {
        const double mean = op.reals[0], sd = op.reals[1];
        return generate_random<T>(o, op, [=](Stream& s, uint64_t i) {
          // Box-Muller on the element's own pair of words (the cosine branch only).
          const uint32_t w0 = s(2 * i), w1 = s(2 * i + 1);
          double u1 = philox::uniform(w0, w1);
          double u2 = philox::uniform(w1 * 0x9E3779B9u + 1u, w0 ^ 0x85EBCA6Bu);
          double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2 * std::numbers::pi * u2);
          return static_cast<C>(mean + sd * z);
        });
      }
      case OpKind::rand_int: {
        const int64_t lo = op.ints[2];
        const uint64_t range = static_cast<uint64_t>(op.ints[3] - op.ints[2]);
        return generate_random<T>(o, op, [=](Stream& s, uint64_t i) {
          const uint32_t w0 = s(2 * i), w1 = s(2 * i + 1);
          uint64_t r = (static_cast<uint64_t>(w0) << 32) | w1;
          return static_cast<C>(lo + static_cast<int64_t>(r % range));
        });
      }
      default:
        unsupported(op, o.dtype);
    }
  });
}

namespace {

template <class T>
void unary_kernel(const Op& op, const Array& x, const Array& o) {
  using C = compute_t<T>;
  auto run = [&](auto f) {
    map<T, T>(o, [f](T v) { return static_cast<T>(f(static_cast<C>(v))); }, {&x});
  };
  const double r0 = op.reals.empty() ? 0 : op.reals[0];
  const double r1 = op.reals.size() > 1 ? op.reals[1] : 0;
  if constexpr (std::is_same_v<T, bool>) {
    unsupported(op, x.dtype);
  } else {
    switch (op.kind) {
      case OpKind::neg:
        return run([](C v) { return static_cast<C>(-v); });
      case OpKind::abs:
        return run([](C v) { return v < 0 ? static_cast<C>(-v) : v; });
      case OpKind::sign:
        return run([](C v) { return static_cast<C>((C(0) < v) - (v < C(0))); });
      case OpKind::relu:
        return run([](C v) { return v < C(0) ? C(0) : v; });  // NaN passes through
      case OpKind::clamp:
        return run([=](C v) {
          if (!std::isnan(r0) && v < static_cast<C>(r0)) v = static_cast<C>(r0);
          if (!std::isnan(r1) && v > static_cast<C>(r1)) v = static_cast<C>(r1);
          return v;
        });
      case OpKind::pow_scalar:
        if (r0 == 2) return run([](C v) { return static_cast<C>(v * v); });
        return run([=](C v) { return static_cast<C>(std::pow(static_cast<double>(v), r0)); });
      default:
        break;
    }
    if constexpr (is_float_v<T>) {
      switch (op.kind) {
        case OpKind::exp:
          return run([](C v) { return std::exp(v); });
        case OpKind::log:
          return run([](C v) { return std::log(v); });
        case OpKind::log1p:
          return run([](C v) { return std::log1p(v); });
        case OpKind::expm1:
          return run([](C v) { return std::expm1(v); });
        case OpKind::sqrt:
          return run([](C v) { return std::sqrt(v); });
        case OpKind::rsqrt:
          return run([](C v) { return C(1) / std::sqrt(v); });
        case OpKind::sin:
          return run([](C v) { return std::sin(v); });
        case OpKind::cos:
          return run([](C v) { return std::cos(v); });
        case OpKind::tanh:
          return run([](C v) { return std::tanh(v); });
        case OpKind::sigmoid:
          return run([](C v) { return C(1) / (C(1) + std::exp(-v)); });
        case OpKind::leaky_relu:
          return run([=](C v) { return v > 0 ? v : static_cast<C>(v * r0); });
        case OpKind::gelu:
          return run([](C v) {
            return static_cast<C>(0.5 * v * (1 + std::erf(v * std::numbers::sqrt2 / 2)));
          });
        case OpKind::gelu_tanh:
          return run([](C v) {
            const C k = static_cast<C>(0.7978845608028654);
            return static_cast<C>(0.5 * v * (1 + std::tanh(k * (v + C(0.044715) * v * v * v))));
          });
        case OpKind::silu:
          return run([](C v) { return v / (C(1) + std::exp(-v)); });
        case OpKind::softplus:
          return run([=](C v) {
            const C bv = static_cast<C>(r0) * v;
            return bv > static_cast<C>(r1) ? v : static_cast<C>(std::log1p(std::exp(bv)) / r0);
          });
        case OpKind::mish:
          return run([](C v) {
            const C sp = v > C(20) ? v : std::log1p(std::exp(v));
            return v * std::tanh(sp);
          });
        case OpKind::erf:
          return run([](C v) { return std::erf(v); });
        case OpKind::floor:
          return run([](C v) { return std::floor(v); });
        case OpKind::ceil:
          return run([](C v) { return std::ceil(v); });
        case OpKind::round:
          return run([](C v) { return std::nearbyint(v); });
        default:
          break;
      }
    }
    unsupported(op, x.dtype);
  }
}

// Signed integers wrap on overflow, as in PyTorch, instead of being undefined behaviour.
template <class C, class F>
C wrapping(C x, C y, F f) {
  if constexpr (std::is_integral_v<C> && std::is_signed_v<C>) {
    using U = std::make_unsigned_t<C>;
    return static_cast<C>(static_cast<U>(f(static_cast<U>(x), static_cast<U>(y))));
  } else {
    return static_cast<C>(f(x, y));
  }
}

template <class T>
void binary_kernel(const Op& op, const Array& a, const Array& b, const Array& o) {
  using C = compute_t<T>;
  auto arith = [&](auto f) {
    map<T, T, T>(o,
                 [f](T x, T y) { return static_cast<T>(f(static_cast<C>(x), static_cast<C>(y))); },
                 {&a, &b});
  };
  auto pred = [&](auto f) {
    map<bool, T, T>(
        o, [f](T x, T y) { return static_cast<bool>(f(static_cast<C>(x), static_cast<C>(y))); },
        {&a, &b});
  };
  switch (op.kind) {
    case OpKind::eq:
      return pred([](C x, C y) { return x == y; });
    case OpKind::ne:
      return pred([](C x, C y) { return x != y; });
    case OpKind::lt:
      return pred([](C x, C y) { return x < y; });
    case OpKind::le:
      return pred([](C x, C y) { return x <= y; });
    case OpKind::gt:
      return pred([](C x, C y) { return x > y; });
    case OpKind::ge:
      return pred([](C x, C y) { return x >= y; });
    case OpKind::logical_and:
      return pred([](C x, C y) { return x != C(0) && y != C(0); });
    case OpKind::logical_or:
      return pred([](C x, C y) { return x != C(0) || y != C(0); });
    case OpKind::logical_xor:
      return pred([](C x, C y) { return (x != C(0)) != (y != C(0)); });
    default:
      break;
  }
  if constexpr (!std::is_same_v<T, bool>) {
    switch (op.kind) {
      case OpKind::add:
        return arith([](C x, C y) { return wrapping(x, y, std::plus<>()); });
      case OpKind::sub:
        return arith([](C x, C y) { return wrapping(x, y, std::minus<>()); });
      case OpKind::mul:
        return arith([](C x, C y) { return wrapping(x, y, std::multiplies<>()); });
      case OpKind::div:
        if constexpr (std::is_integral_v<C>) {
          // Integer division by zero is found while computing, so it is raised on read.
          std::atomic<bool> zero = false;  // set from several threads
          map<T, T, T>(o,
                       [&zero](T x, T y) {
                         if (y == 0) {
                           zero.store(true, std::memory_order_relaxed);
                           return T(0);
                         }
                         // Floor division, as PyTorch's // (and never INT_MIN / -1 overflow).
                         if constexpr (std::is_signed_v<T>) {
                           // Negating in unsigned arithmetic wraps INT_MIN to itself.
                           using U = std::make_unsigned_t<T>;
                           if (y == T(-1)) return static_cast<T>(U(0) - static_cast<U>(x));
                         }
                         T q = static_cast<T>(x / y);
                         if ((x % y != 0) && ((x < 0) != (y < 0))) --q;
                         return q;
                       },
                       {&a, &b});
          if (zero) fail("integer division by zero");
          return;
        } else {
          return arith([](C x, C y) { return x / y; });
        }
      case OpKind::pow:
        return arith([](C x, C y) {
          return static_cast<C>(std::pow(static_cast<double>(x), static_cast<double>(y)));
        });
      case OpKind::maximum:
        return arith([](C x, C y) { return (x > y || x != x) ? x : y; });
      case OpKind::minimum:
        return arith([](C x, C y) { return (x < y || x != x) ? x : y; });
      case OpKind::relu_backward:
        return arith([](C y, C g) { return y > C(0) ? g : C(0); });
      case OpKind::add_relu:
        return arith([](C x, C y) { return x + y < C(0) ? C(0) : x + y; });
      default:
        break;
    }
  }
  unsupported(op, a.dtype);
}

template <class T>
void copy_kernel(const Array& x, const Array& o) {
  visit_dtype(o.dtype, [&](auto otag) {
    using O = decltype(otag);
    using CO = compute_t<O>;
    if (x.dtype == o.dtype && x.is_contiguous()) {
      const char* src = static_cast<const char*>(x.raw());
      char* dst = static_cast<char*>(o.raw());
      const int64_t n = x.numel() * static_cast<int64_t>(sizeof(T));
      parallel_for(n, n / 4, [&](int64_t b, int64_t e) {
        std::memcpy(dst + b, src + b, static_cast<size_t>(e - b));
      });
      return;
    }
    map<O, T>(o,
              [](T v) {
                if constexpr (std::is_same_v<O, bool>)
                  return static_cast<compute_t<T>>(v) != compute_t<T>(0);
                else
                  return static_cast<O>(static_cast<CO>(static_cast<compute_t<T>>(v)));
              },
              {&x});
  });
}

}  // namespace

void elementwise(const Op& op, In in, Out out) {
  const Array& o = out[0];
  if (o.numel() == 0) return;
  if (op.kind == OpKind::where) {
    return visit_dtype(o.dtype, [&](auto tag) {
      using T = decltype(tag);
      // A select through bit masks: `c ? x : y` compiles to a branch here, which random
      // conditions (a ReLU's gradient) mispredict half the time, 10x slower. The condition is
      // read as bytes (bools hold 0 or 1): loops over bool do not vectorize.
      using U = std::conditional_t<
          sizeof(T) == 8, uint64_t,
          std::conditional_t<sizeof(T) == 4, uint32_t,
                             std::conditional_t<sizeof(T) == 2, uint16_t, uint8_t>>>;
      static_assert(sizeof(U) == sizeof(T));
      map<T, uint8_t, T, T>(
          o,
          [](uint8_t c, T x, T y) {
            const U m = static_cast<U>(U(0) - static_cast<U>(c));
            return std::bit_cast<T>(static_cast<U>((std::bit_cast<U>(x) & m) |
                                                   (std::bit_cast<U>(y) & static_cast<U>(~m))));
          },
          {&in[0], &in[1], &in[2]});
    });
  }
  visit_dtype(in[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    switch (op.kind) {
      case OpKind::copy:
        return copy_kernel<T>(in[0], o);
      case OpKind::logical_not:
        return map<bool, T>(o, [](T v) { return static_cast<C>(v) == C(0); }, {&in[0]});
      case OpKind::isnan:
        return map<bool, T>(o, [](T v) { return static_cast<C>(v) != static_cast<C>(v); },
                            {&in[0]});
      default:
        break;
    }
    if (op.kind < OpKind::unary_end) return unary_kernel<T>(op, in[0], o);
    return binary_kernel<T>(op, in[0], in[1], o);
  });
}

void dropout(const Op& op, In in, Out out) {
  const Array &x = in[0], &o = out[0];
  const float p = static_cast<float>(op.reals[0]);
  visit_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (is_float_v<T>) {
      using C = compute_t<T>;
      const C keep = static_cast<C>(static_cast<T>(1 / (1 - op.reals[0])));
      const T* src = x.data<T>();
      generate_random<T>(o, op, [=](Stream& s, uint64_t i) {
        const C m = philox::uniform_f32(s(2 * i), s(2 * i + 1)) >= p ? keep : C(0);
        return static_cast<C>(src[i]) * m;
      });
    } else {
      unsupported(op, x.dtype);
    }
  });
}

}  // namespace crisp::cpu
