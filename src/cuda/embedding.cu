// CUDA kernels for embedding lookups and their gradient.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cuda/channel_sums.cuh"
#include "cuda/families.cuh"

namespace crisp::cuda {

namespace {

// ---- embedding ----

constexpr int kBadIndex = 1;

template <class T>
__global__ void embedding_kernel(int64_t n, const int64_t* idx, const T* w, int64_t V, int64_t D,
                                 T* out, DeviceFault* fault) {
  CRISP_GRID_STRIDE(i, n) {
    const int64_t m = i / D, v = idx[m];
    if (v < 0 || v >= V) {
      report_fault(fault, kBadIndex, v);
      out[i] = T{};
      continue;
    }
    out[i] = w[v * D + (i - m * D)];
  }
}

// acc[idx[m], d] += g[m, d]; out-of-range indices are skipped, as on the CPU.
template <class T, class A>
__global__ void embedding_backward_kernel(int64_t n, const T* g, const int64_t* idx, int64_t V,
                                          int64_t D, A* acc) {
  CRISP_GRID_STRIDE(i, n) {
    const int64_t m = i / D, v = idx[m];
    if (v < 0 || v >= V) continue;
    atomicAdd(acc + v * D + (i - m * D), static_cast<A>(load(g[i])));
  }
}

template <class T, class A>
__global__ void convert_kernel(int64_t n, const A* src, T* dst) {
  CRISP_GRID_STRIDE(i, n) { dst[i] = convert<T>(src[i]); }
}

}  // namespace

void run_embedding(const Op& op, In in, Out out) {
  ContiguousInputs d(in);
  if (op.kind == OpKind::embedding) {
    const Array& w = d[1];
    const int64_t V = w.shape[0], D = w.shape[1];
    DeviceFault* fault = ctx().fault([V](int, long long v) {
      return detail::cat("index ", v, " is out of range for ", V, " embeddings");
    });
    visit_float(w.dtype, op_name(op.kind), [&](auto tag) {
      using T = decltype(tag);
      launch_items<embedding_kernel<T>>(out[0].numel(), d.ptr<int64_t>(0), w.data<T>(), V, D,
                                        out[0].data<T>(), fault);
    });
    return;
  }
  // embedding_backward: grad [M, D], indices [M] -> [V, D]
  const Array& o = out[0];
  const int64_t V = o.shape[0], D = o.shape[1], n = d[0].numel();
  visit_float(o.dtype, op_name(op.kind), [&](auto tag) {
    using T = decltype(tag);
    if constexpr (is_half_v<T>) {
      // 16-bit sums accumulate in float, then round once.
      Buffer acc(static_cast<size_t>(o.numel()) * sizeof(float));
      CUDA_CHECK(cudaMemsetAsync(acc.get(), 0, acc.size(), ctx().stream));
      launch_items<embedding_backward_kernel<T, float>>(n, d.ptr<T>(0), d.ptr<int64_t>(1), V, D,
                                                        acc.as<float>());
      launch_items<convert_kernel<T, float>>(o.numel(), acc.as<float>(), o.data<T>());
    } else {
      CUDA_CHECK(
          cudaMemsetAsync(o.raw(), 0, static_cast<size_t>(o.numel()) * sizeof(T), ctx().stream));
      launch_items<embedding_backward_kernel<T, T>>(n, d.ptr<T>(0), d.ptr<int64_t>(1), V, D,
                                                    o.data<T>());
    }
  });
}

}  // namespace crisp::cuda
