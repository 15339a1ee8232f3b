// CUDA kernels for creation ops: fill, arange, eye and the Philox random ops (with dropout), which
// give the same numbers as the CPU backend (same counter scheme, the same arithmetic in double).
#include <cmath>

#include "cuda/dtype.cuh"
#include "cuda/families.cuh"
#include "cuda/launch.cuh"
#include "kernels/creation.h"
#include "kernels/philox.h"

namespace crisp::cuda {

namespace {

template <class T, class F>
__global__ void generate_kernel(int64_t n, T* out, F f) {
  CRISP_GRID_STRIDE(i, n) { out[i] = convert<T>(f(i)); }
}

template <class T, class F>
void generate(const Array& o, F f) {
  launch_items<generate_kernel<T, F>>(o.numel(), o.data<T>(), f);
}

template <class C>
struct Fill {
  C v;
  __device__ C operator()(int64_t) const { return v; }
};

template <class C>
struct Arange {
  double start, step;
  __device__ C operator()(int64_t i) const {
    return static_cast<C>(start + step * static_cast<double>(i));
  }
};

template <class C>
struct Eye {
  int64_t cols, k;
  __device__ C operator()(int64_t i) const { return static_cast<C>(i % cols - i / cols == k); }
};

template <class C>
struct Uniform {
  uint64_t seed, off;
  double lo, hi;
  __device__ C operator()(int64_t i) const {
    const uint64_t j = 2 * static_cast<uint64_t>(i);
    // (0, 1] -> [0, 1)
    const double u =
        1.0 - philox::uniform(philox::word(seed, off, j), philox::word(seed, off, j + 1));
    const C v = static_cast<C>(lo + (hi - lo) * u);
    return v < static_cast<C>(hi) || lo == hi ? v : static_cast<C>(lo);
  }
};

template <class C>
struct Normal {
  uint64_t seed, off;
  double mean, sd;
  __device__ C operator()(int64_t i) const {
    // Box-Muller on the element's own pair of words (the cosine branch only).
    const uint64_t j = 2 * static_cast<uint64_t>(i);
    const uint32_t w0 = philox::word(seed, off, j), w1 = philox::word(seed, off, j + 1);
    const double u1 = philox::uniform(w0, w1);
    const double u2 = philox::uniform(w1 * 0x9E3779B9u + 1u, w0 ^ 0x85EBCA6Bu);
    const double z = sqrt(-2.0 * log(u1)) * cos(2 * 3.14159265358979323846 * u2);
    return static_cast<C>(mean + sd * z);
  }
};

template <class C>
struct RandInt {
  uint64_t seed, off;
  int64_t lo;
  uint64_t range;
  __device__ C operator()(int64_t i) const {
    const uint64_t j = 2 * static_cast<uint64_t>(i);
    const uint64_t r =
        (static_cast<uint64_t>(philox::word(seed, off, j)) << 32) | philox::word(seed, off, j + 1);
    return static_cast<C>(lo + static_cast<int64_t>(r % range));
  }
};

template <class T>
struct Dropout {
  const T* x;
  uint64_t seed, off;
  float p;
  compute_t<T> keep;
  __device__ compute_t<T> operator()(int64_t i) const {
    const uint64_t j = 2 * static_cast<uint64_t>(i);
    const float u = philox::uniform_f32(philox::word(seed, off, j), philox::word(seed, off, j + 1));
    return load(x[i]) * (u >= p ? keep : compute_t<T>(0));
  }
};

void dropout(const Op& op, In in, Out out) {
  const DropoutAttrs a = DropoutAttrs::from_op(op);
  visit_float(in[0].dtype, "dropout", [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    generate<T>(out[0],
                Dropout<T>{in[0].data<T>(), a.stream.seed, a.stream.offset, static_cast<float>(a.p),
                           load(convert<T>(static_cast<C>(1 / (1 - a.p))))});
  });
}

}  // namespace

void run_creation(const Op& op, In in, Out out) {
  if (op.kind == OpKind::dropout) return dropout(op, in, out);
  const Array& o = out[0];
  visit(o.dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    switch (op.kind) {
      case OpKind::fill:
        return generate<T>(o, Fill<C>{static_cast<C>(FillAttrs::from_op(op).value)});
      case OpKind::arange: {
        const ArangeAttrs a = ArangeAttrs::from_op(op);
        return generate<T>(o, Arange<C>{a.start, a.step});
      }
      case OpKind::eye:
        return generate<T>(o, Eye<C>{o.shape[1], EyeAttrs::from_op(op).k});
      case OpKind::rand_uniform: {
        const RandomAttrs r = RandomAttrs::from_op(op);
        return generate<T>(o, Uniform<C>{r.stream.seed, r.stream.offset, r.a, r.b});
      }
      case OpKind::rand_normal: {
        const RandomAttrs r = RandomAttrs::from_op(op);
        return generate<T>(o, Normal<C>{r.stream.seed, r.stream.offset, r.a, r.b});
      }
      case OpKind::rand_int: {
        const RandomAttrs r = RandomAttrs::from_op(op);
        return generate<T>(o, RandInt<C>{r.stream.seed, r.stream.offset, r.low,
                                         static_cast<uint64_t>(r.high - r.low)});
      }
      default:
        unsupported(op, o.dtype);
    }
  });
}

}  // namespace crisp::cuda
