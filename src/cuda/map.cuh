// The elementwise launch machinery: out[i] = f(in_k at i ...) for a contiguous output and
// strided (possibly broadcast) inputs, with a contiguous fast path inside the same kernel.
#pragma once

#include <array>
#include <cstdint>

#include "cuda/common.cuh"

namespace crisp::cuda {

// One input as a kernel reads it: its data and its layout over the output's shape.
template <class T>
struct Operand {
  const T* data;  // storage base: Strided's offset is applied on top
  Strided s;
  bool unit;    // contiguous over the whole output, so element i is data[s.offset + i]
  bool scalar;  // one value broadcast over the whole output: data[s.offset]

  __device__ T get(int64_t i) const { return unit ? data[s.offset + i] : data[s.at(i)]; }
  // Element i when the operand is unit or scalar.
  __device__ T flat(int64_t i) const { return data[s.offset + (scalar ? 0 : i)]; }
};

template <class T>
Operand<T> operand(const Array& a, const Strided& s) {
  const bool unit = s.nd == 0 || (s.nd == 1 && s.strides[0] == 1);
  bool scalar = s.nd > 0;
  for (int d = 0; d < s.nd; ++d) scalar = scalar && s.strides[d] == 0;
  return Operand<T>{static_cast<const T*>(a.storage->data), s, unit, scalar};
}

// Four consecutive elements, loaded and stored as one access (16 bytes for float).
template <class T>
struct alignas(4 * sizeof(T)) Pack {
  T v[4];
};

template <class T>
bool pack_aligned(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % (4 * sizeof(T)) == 0;
}

// Pack v of a unit operand, or its one value four times (x + 1 reads the 1 once per pack).
template <class T>
__device__ Pack<T> pack_at(const Operand<T>& in, int64_t v) {
  if (in.scalar) {
    Pack<T> p;
    const T x = in.data[in.s.offset];
#pragma unroll
    for (int k = 0; k < 4; ++k) p.v[k] = x;
    return p;
  }
  return reinterpret_cast<const Pack<T>*>(in.data + in.s.offset)[v];
}

// Each thread handles kUnroll elements a block apart per step: coalesced, with several
// independent loads in flight.
inline constexpr int kUnroll = 4;

// vec: every operand is a scalar or contiguous and 4-element aligned, so whole packs are read
// and written.
template <class O, class F, class... I>
__global__ void __launch_bounds__(kBlock)
    map_kernel(O* out, int64_t n, bool vec, F f, Operand<I>... in) {
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
  if (vec) {
    const int64_t packs = n / 4, threads = static_cast<int64_t>(gridDim.x) * kBlock;
    for (int64_t v = tid; v < packs; v += threads) {
      Pack<O> r;
      [&](const Pack<I>&... p) {
#pragma unroll
        for (int k = 0; k < 4; ++k) r.v[k] = convert<O>(f(load(p.v[k])...));
      }(pack_at(in, v)...);
      reinterpret_cast<Pack<O>*>(out)[v] = r;
    }
    const int64_t i = packs * 4 + tid;
    if (i < n) out[i] = convert<O>(f(load(in.flat(i))...));
    return;
  }
  const int64_t step = static_cast<int64_t>(gridDim.x) * kBlock * kUnroll;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * kBlock * kUnroll + threadIdx.x;
  if (((in.unit || in.scalar) && ...)) {
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
    const bool vec =
        pack_aligned<O>(out.data<O>()) &&
        ((operand<I>(*in[K], s[K]).scalar ||
          (operand<I>(*in[K], s[K]).unit && pack_aligned<I>(in[K]->template data<I>()))) &&
         ...);
    launch<map_kernel<O, F, I...>>(grid, kBlock, 0, ctx().stream, out.data<O>(), n, vec, f,
                                   operand<I>(*in[K], s[K])...);
  }
  (std::make_index_sequence<sizeof...(I)>{});
  CUDA_LAUNCH_CHECK();
}

}  // namespace crisp::cuda
