// The elementwise launch machinery: out[i] = f(in_k at i ...) for a contiguous output and
// strided (possibly broadcast) inputs, with a contiguous fast path inside the same kernel.
#pragma once

#include <array>
#include <cstdint>

#include "cuda/context.cuh"
#include "cuda/dtype.cuh"
#include "cuda/errors.cuh"
#include "cuda/launch.cuh"
#include "cuda/strided.cuh"

namespace crisp::cuda {

// Four consecutive elements, loaded and stored as one access (16 bytes for float).
template <class T>
struct alignas(4 * sizeof(T)) Pack {
  T v[4];
};

template <class T>
bool pack_aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % (4 * sizeof(T)) == 0;
}

// One input as a kernel reads it, over the output's shape. Flat: contiguous or one value
// broadcast (x + 1), the common case, whose few bytes of parameters launch faster.
template <class T>
struct FlatOperand {
  const T* data;  // offset applied
  bool scalar;

  __device__ T flat(int64_t i) const { return data[scalar ? 0 : i]; }
  __device__ T get(int64_t i) const { return flat(i); }
  static constexpr bool always_flat = true;
  // Pack v, or the one value four times (x + 1 reads the 1 once per pack).
  __device__ Pack<T> pack(int64_t v) const {
    if (scalar) {
      Pack<T> p;
      const T x = data[0];
#pragma unroll
      for (int k = 0; k < 4; ++k) p.v[k] = x;
      return p;
    }
    return reinterpret_cast<const Pack<T>*>(data)[v];
  }
};

// Any strided (possibly broadcast) input; unit: contiguous over the whole output (y in
// x[::2] + y), read without index arithmetic.
template <class T>
struct StridedOperand {
  const T* data;  // storage base: Strided's offset is applied on top
  Strided s;
  bool unit;

  __device__ T get(int64_t i) const { return unit ? data[s.offset + i] : data[s.at(i)]; }
  __device__ T flat(int64_t i) const { return get(i); }
  static constexpr bool always_flat = false;
  __device__ Pack<T> pack(int64_t) const { return {}; }  // never called: not vectorized
};

inline bool is_unit(const Strided& s) { return s.nd == 0 || (s.nd == 1 && s.strides[0] == 1); }
inline bool is_scalar(const Strided& s) {
  bool scalar = s.nd > 0;
  for (int d = 0; d < s.nd; ++d) scalar = scalar && s.strides[d] == 0;
  return scalar;
}

// Each thread handles kUnroll elements a block apart per step: coalesced, with several
// independent loads in flight.
inline constexpr int kUnroll = 4;

// vec: every operand is flat and 4-element aligned, so whole packs are read and written.
template <class O, class F, class... In>
__global__ void __launch_bounds__(kBlock) map_kernel(O* out, int64_t n, bool vec, F f, In... in) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
  if constexpr ((In::always_flat && ...)) {
    if (vec) {
      const int64_t packs = n / 4, threads = static_cast<int64_t>(gridDim.x) * kBlock;
      for (int64_t v = tid; v < packs; v += threads) {
        Pack<O> r;
        [&](const auto&... p) {
#pragma unroll
          for (int k = 0; k < 4; ++k) r.v[k] = convert<O>(f(load(p.v[k])...));
        }(in.pack(v)...);
        reinterpret_cast<Pack<O>*>(out)[v] = r;
      }
      const int64_t i = packs * 4 + tid;
      if (i < n) out[i] = convert<O>(f(load(in.flat(i))...));
      return;
    }
  }
  const int64_t step = static_cast<int64_t>(gridDim.x) * kBlock * kUnroll;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kBlock * kUnroll + threadIdx.x;
  if constexpr ((In::always_flat && ...)) {
    for (int64_t base = first; base < n; base += step) {
      O r[kUnroll];
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        const int64_t i = base + k * kBlock;
        if (i < n) r[k] = convert<O>(f(load(in.flat(i))...));
      }
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        const int64_t i = base + k * kBlock;
        if (i < n) out[i] = r[k];
      }
    }
  } else {
    for (int64_t base = first; base < n; base += step) {
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        const int64_t i = base + k * kBlock;
        if (i < n) out[i] = convert<O>(f(load(in.get(i))...));
      }
    }
  }
}

// out (contiguous, of the output's shape) = f(inputs...), the inputs broadcast to out's shape.
// f takes each input's compute type and returns a value converted to O.
template <class O, class... I, class F>
void map(const Array& out, F f, const std::array<const Array*, sizeof...(I)>& in) {
  const int64_t n = out.numel();
  if (n == 0) return;
  Strided s[sizeof...(I) > 0 ? sizeof...(I) : 1];
  strided_together(out.shape, std::span<const Array* const>(in.data(), in.size()), s);
  const unsigned grid = grid_for((n + kUnroll - 1) / kUnroll);
  [&]<size_t... K>(std::index_sequence<K...>) {
    const bool flat = ((is_unit(s[K]) || is_scalar(s[K])) && ...);
    if (flat) {
      const bool vec = pack_aligned<O>(out.data<O>()) &&
                       ((is_scalar(s[K]) || pack_aligned<I>(in[K]->template data<I>())) && ...);
      launch<map_kernel<O, F, FlatOperand<I>...>>(
          grid, kBlock, 0, ctx().stream, out.data<O>(), n, vec, f,
          FlatOperand<I>{static_cast<const I*>(in[K]->storage->data) + s[K].offset,
                         is_scalar(s[K])}...);
    } else {
      launch<map_kernel<O, F, StridedOperand<I>...>>(
          grid, kBlock, 0, ctx().stream, out.data<O>(), n, false, f,
          StridedOperand<I>{static_cast<const I*>(in[K]->storage->data), s[K], is_unit(s[K])}...);
    }
  }
  (std::make_index_sequence<sizeof...(I)>{});
  CUDA_LAUNCH_CHECK();
}

}  // namespace crisp::cuda
