// CPU kernels for creation ops: fill, arange, eye and the Philox random ops (with dropout), which
// give the same numbers as the CUDA backend (same counter scheme, the same arithmetic in double).
#include <cmath>
#include <numbers>

#include "cpu/kernels.h"
#include "cpu/loops.h"
#include "kernels/creation.h"
#include "kernels/philox.h"

namespace crisp::cpu {

namespace {

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
  explicit Stream(RandomStream s) : seed_(s.seed), offset_(s.offset) {}
  uint32_t operator()(uint64_t i) {
    const uint64_t n = offset_ + i;
    if (n >> 2 != block_) {
      block_ = n >> 2;
      r_ = philox::generate(seed_, block_);
    }
    return philox::lane(r_, n);
  }

 private:
  uint64_t seed_, offset_, block_ = ~uint64_t{0};
  philox::U4 r_{};
};

// generate() for random ops: f(stream, i), with one stream per thread's range; the values are
// those of philox::word(seed, offset, ...) whatever the split.
template <class T, class F>
void generate_random(const Array& out, RandomStream stream, F&& f) {
  T* o = out.data<T>();
  const int64_t n = out.numel();
  parallel_for(n, n * 8, [&](int64_t b, int64_t e) {
    Stream s(stream);
    for (int64_t i = b; i < e; ++i) o[i] = static_cast<T>(f(s, static_cast<uint64_t>(i)));
  });
}

void dropout(const Op& op, In in, Out out) {
  const Array &x = in[0], &o = out[0];
  const DropoutAttrs a = DropoutAttrs::from_op(op);
  const float p = static_cast<float>(a.p);
  visit_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    if constexpr (std::is_floating_point_v<C>) {
      const C keep = static_cast<C>(static_cast<T>(1 / (1 - a.p)));
      const T* src = x.data<T>();
      generate_random<T>(o, a.stream, [=](Stream& s, uint64_t i) {
        const C m = philox::uniform_f32(s(2 * i), s(2 * i + 1)) >= p ? keep : C(0);
        return static_cast<C>(src[i]) * m;
      });
    } else {
      unsupported(op, x.dtype);
    }
  });
}

}  // namespace

void run_creation(const Op& op, In in, Out out) {
  if (op.kind == OpKind::dropout) return dropout(op, in, out);
  const Array& o = out[0];
  visit_dtype(o.dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    switch (op.kind) {
      case OpKind::fill: {
        const T v = static_cast<T>(static_cast<C>(FillAttrs::from_op(op).value));
        return generate<T>(o, [v](int64_t) { return v; });
      }
      case OpKind::arange: {
        const auto [start, step] = ArangeAttrs::from_op(op);
        return generate<T>(
            o, [=](int64_t i) { return static_cast<C>(start + step * static_cast<double>(i)); });
      }
      case OpKind::eye: {
        const int64_t cols = o.shape[1], k = EyeAttrs::from_op(op).k;
        return generate<T>(o, [=](int64_t i) { return static_cast<C>(i % cols - i / cols == k); });
      }
      case OpKind::rand_uniform: {
        const RandomAttrs r = RandomAttrs::from_op(op);
        const double lo = r.a, hi = r.b;
        return generate_random<T>(o, r.stream, [=](Stream& s, uint64_t i) {
          // (0, 1] -> [0, 1)
          const uint32_t w0 = s(2 * i), w1 = s(2 * i + 1);
          double u = 1.0 - philox::uniform(w0, w1);
          C v = static_cast<C>(lo + (hi - lo) * u);
          return v < static_cast<C>(hi) || lo == hi ? v : static_cast<C>(lo);
        });
      }
      case OpKind::rand_normal: {
        const RandomAttrs r = RandomAttrs::from_op(op);
        const double mean = r.a, sd = r.b;
        return generate_random<T>(o, r.stream, [=](Stream& s, uint64_t i) {
          // Box-Muller on the element's own pair of words (the cosine branch only).
          const uint32_t w0 = s(2 * i), w1 = s(2 * i + 1);
          double u1 = philox::uniform(w0, w1);
          double u2 = philox::uniform(w1 * 0x9E3779B9u + 1u, w0 ^ 0x85EBCA6Bu);
          double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2 * std::numbers::pi * u2);
          return static_cast<C>(mean + sd * z);
        });
      }
      case OpKind::rand_int: {
        const RandomAttrs r = RandomAttrs::from_op(op);
        const int64_t lo = r.low;
        const uint64_t range = static_cast<uint64_t>(r.high - r.low);
        return generate_random<T>(o, r.stream, [=](Stream& s, uint64_t i) {
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

}  // namespace crisp::cpu
