// CUDA kernel of channel_sum: x [N, C, *] summed over all axes but 1 (bias gradients).
#include "cuda/channel_sums.cuh"
#include "cuda/families.cuh"

namespace crisp::cuda {

namespace {

// ---- channel_sum ----

template <class T>
struct ChannelSumTerm {
  const T* x;
  int64_t C, S;
  __device__ Sum2 operator()(int64_t c, int64_t n, int64_t s) const {
    return Sum2{static_cast<double>(load(x[(n * C + c) * S + s])), 0};
  }
  __device__ Sum2 pack4(int64_t c, int64_t n, int64_t s) const {
    const Pack<T> p = *reinterpret_cast<const Pack<T>*>(x + (n * C + c) * S + s);
    double a = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) a += static_cast<double>(load(p.v[j]));
    return Sum2{a, 0};
  }
  struct Across4 {
    const T* x;
    int64_t C;
    __device__ void operator()(int64_t n, Sum2* out) const {
      const Pack<T> p = *reinterpret_cast<const Pack<T>*>(x + n * C);
#pragma unroll
      for (int j = 0; j < 4; ++j) out[j] = Sum2{static_cast<double>(load(p.v[j])), 0};
    }
  };
  __device__ Across4 across4(int64_t c) const { return {x + c, C}; }
};
template <class T>
struct StoreFirst {
  T* out;
  __device__ void operator()(int64_t c, Sum2 t) const { out[c] = convert<T>(t.a); }
};

}  // namespace

void run_channel_sum(const Op& op, In in, Out out) {
  ContiguousInputs d(in);
  const Array& x = d[0];
  const int64_t N = x.shape[0], C = x.shape[1], S = N * C == 0 ? 0 : x.numel() / (N * C);
  visit_float(x.dtype, op_name(op.kind), [&](auto tag) {
    using T = decltype(tag);
    channel_sums<true>(N, C, S, ChannelSumTerm<T>{d.ptr<T>(0), C, S},
                       StoreFirst<T>{out[0].data<T>()}, pack_aligned<T>(d.ptr<T>(0)));
  });
}

}  // namespace crisp::cuda
