// CUDA kernels for the elementwise family: unary and binary ops (arithmetic, comparisons, logic)
// over broadcast inputs, copy/cast and where, and the queue of small ones (SmallMaps in
// context.cuh). One file, because the queue holds device function pointers, which are only valid
// in the module that took them: so ops of every kind here queue together, run by one kernel.
#include <atomic>
#include <cstring>
#include <type_traits>
#include <utility>

#include "cuda/families.cuh"
#include "cuda/map.cuh"
#include "cuda/profile.h"
#include "kernels/elementwise.h"
#include "kernels/visit_size.h"

namespace crisp::cuda {

namespace {

// ---- the queue of small ops ----

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
    if (n > kSmallMapElements || c.device >= kLaunchDevices || op_profile()) return false;
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
    c.queue(r);
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

// ---- the ops: each a formula of src/kernels/elementwise.h ----

// out = f(in...) by map_or_queue, stored as formula::stored_t says.
template <class T, class... Ins, class F>
void run_formula(const Array& o, F f, const std::array<const Array*, sizeof...(Ins)>& in) {
  map_or_queue<formula::stored_t<T, decltype(f(load(Ins{})...))>, Ins...>(o, f, in);
}

// Integer division: floor division, a zero divisor reported and giving 0.
struct DivideIntegers {
  DeviceFault* fault;
  template <class C>
  __device__ C operator()(C x, C y) const {
    if (y == 0) {
      report_fault(fault, 0, 0);
      return C(0);
    }
    return formula::FloorDivide{}(x, y);
  }
};

template <class T>
void unary(const Op& op, const Array& x, const Array& o) {
  const bool found = formula::visit_unary<T>(op, [&](auto f) { run_formula<T, T>(o, f, {&x}); });
  if (!found) unsupported(op, x.dtype);
}

void binary(const Op& op, In in, Out out) {
  const Array &a = in[0], &b = in[1], &o = out[0];
  visit(a.dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
      if (op.kind == OpKind::div) {
        const DivideIntegers f{
            ctx().fault([](int, long long) { return "integer division by zero"; })};
        return map_or_queue<T, T, T>(o, f, {&a, &b});
      }
    }
    const bool found = formula::visit_binary<T>(op, [&](auto f) {
      run_formula<T, T, T>(o, f, {&a, &b});
    });
    if (!found) unsupported(op, a.dtype);
  });
}

// Copies src into contiguous dst, converting the dtype. Queue: as the copy op, which may be
// queued with other small ops; other ops' copies are launched at once, as their kernels follow.
template <bool Queue>
void copy_elements(const Array& src, const Array& dst) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  const auto identity = [&](auto dtag, auto stag) {
    using D = decltype(dtag);
    using S = decltype(stag);
    if constexpr (Queue)
      map_or_queue<D, S>(dst, formula::Identity{}, {&src});
    else
      map<D, S>(dst, formula::Identity{}, {&src});
  };
  if (src.dtype == dst.dtype) {
    if (src.is_contiguous() && !(Queue && n <= kSmallMapElements)) {
      ctx().flush();
      CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), static_cast<size_t>(n) * itemsize(src.dtype),
                                 cudaMemcpyDeviceToDevice, ctx().stream));
      return;
    }
    return visit_size(src.dtype, [&](auto tag) { identity(tag, tag); });
  }
  visit(src.dtype, [&](auto stag) {
    visit(dst.dtype, [&](auto dtag) {
      if constexpr (!std::is_same_v<decltype(dtag), decltype(stag)>) identity(dtag, stag);
    });
  });
}

}  // namespace

void launch_small_maps(const SmallMaps& q) {
  launch<small_maps_kernel>(dim3(1), dim3(kBlock), 0, ctx().stream, q);
}

void copy_to_contiguous(const Array& src, const Array& dst) { copy_elements<false>(src, dst); }

Array contiguous(const Array& a, Buffer& keep) {
  if (a.is_contiguous()) return a;
  keep = Buffer(static_cast<size_t>(a.numel()) * itemsize(a.dtype));
  Array c{std::make_shared<Storage>(keep.get(), 0, nullptr), a.shape, contiguous_strides(a.shape),
          0, a.dtype};
  copy_to_contiguous(a, c);
  return c;
}

Array channels_last_storage(const Array& a, Buffer& keep) {
  return contiguous(permuted(a, channels_last_order(a.ndim())), keep);
}

void run_elementwise(const Op& op, In in, Out out) {
  const Array& o = out[0];
  if (o.numel() == 0) return;
  if (op.kind == OpKind::where) {
    return visit_size(o.dtype, [&](auto tag) {
      using U = decltype(tag);
      map_or_queue<U, bool, U, U>(o, formula::Where{}, {&in[0], &in[1], &in[2]});
    });
  }
  if (op.kind == OpKind::copy) return copy_elements<true>(in[0], o);
  if (op.kind > OpKind::unary_end) return binary(op, in, out);
  visit(in[0].dtype, [&](auto tag) { unary<decltype(tag)>(op, in[0], o); });
}

}  // namespace crisp::cuda
