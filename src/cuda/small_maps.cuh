// Small elementwise ops queued to run many to a launch (see SmallMaps in common.cuh), for
// elementwise.cu, whose ops are each one map.
//
// Everything here has internal linkage on purpose: the queue holds device function pointers,
// which are only valid in the module that took them, so a file that includes this gets its own
// kernel, its own function pointers and its own caches of them.
#pragma once

#include <atomic>
#include <cstring>
#include <type_traits>
#include <utility>

#include "cuda/map.cuh"

namespace crisp::cuda {

namespace {

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

void launch_small_maps(const SmallMaps& q) {
  launch<small_maps_kernel>(dim3(1), dim3(kBlock), 0, ctx().stream, q);
  CUDA_LAUNCH_CHECK();
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
    if (!c.queue_small_maps || n > kSmallMapElements || c.device >= kLaunchDevices) return false;
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
    c.queue(r, &launch_small_maps);
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

}  // namespace

}  // namespace crisp::cuda
