// CUDA kernels for reductions over a set of axes: sum, prod, max, min, argmax/argmin, all/any and
// a two-pass logsumexp, with the CPU backend's accumulation types and NaN rules.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cuda/families.cuh"
#include "cuda/map.cuh"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace crisp::cuda {

namespace {

// ---- reducers: init(o), step(acc, x, r), combine(acc, other), finish(acc, o) ----

template <class C>
using wide_t = std::conditional_t<std::is_floating_point_v<C>, double, int64_t>;

template <class C>
struct SumR {
  using A = wide_t<C>;
  __device__ A init(int64_t) const { return 0; }
  __device__ void step(A& a, C x, int64_t) const { a += static_cast<A>(x); }
  __device__ void combine(A& a, const A& b) const { a += b; }
  __device__ A finish(A a, int64_t) const { return a; }
};

template <class C>
struct ProdR {
  using A = wide_t<C>;
  __device__ A init(int64_t) const { return 1; }
  __device__ void step(A& a, C x, int64_t) const { a *= static_cast<A>(x); }
  __device__ void combine(A& a, const A& b) const { a *= b; }
  __device__ A finish(A a, int64_t) const { return a; }
};

using formula::is_nan;

// NaN wins, as in PyTorch.
template <class C, bool Max>
struct ExtremeR {
  using A = C;
  __device__ A init(int64_t) const {
    if constexpr (std::is_floating_point_v<C>) {
      return Max ? -std::numeric_limits<C>::infinity() : std::numeric_limits<C>::infinity();
    } else {
      return Max ? std::numeric_limits<C>::lowest() : std::numeric_limits<C>::max();
    }
  }
  __device__ void step(A& a, C x, int64_t) const {
    const bool take = Max ? (x > a) : (x < a);
    a = (take || is_nan(x)) ? x : a;
  }
  __device__ void combine(A& a, const A& b) const { step(a, b, 0); }
  __device__ A finish(A a, int64_t) const { return a; }
};

template <class C>
struct ArgAcc {
  C v;
  int64_t i;
};

// The first position of the extreme value; a NaN counts as the extreme.
template <class C, bool Max>
struct ArgR {
  using A = ArgAcc<C>;
  __device__ static bool better(C x, int64_t xi, const A& a) {
    if (a.i < 0) return true;
    if (is_nan(a.v)) return is_nan(x) && xi < a.i;
    if (is_nan(x)) return true;
    if (x == a.v) return xi < a.i;
    return Max ? x > a.v : x < a.v;
  }
  __device__ A init(int64_t) const { return {C{}, -1}; }
  __device__ void step(A& a, C x, int64_t r) const {
    if (better(x, r, a)) a = {x, r};
  }
  __device__ void combine(A& a, const A& b) const {
    if (b.i >= 0 && better(b.v, b.i, a)) a = b;
  }
  __device__ int64_t finish(A a, int64_t) const { return a.i; }
};

template <bool All>
struct LogicR {
  using A = bool;
  __device__ A init(int64_t) const { return All; }
  __device__ void step(A& a, bool x, int64_t) const { a = All ? (a && x) : (a || x); }
  __device__ void combine(A& a, const A& b) const { a = All ? (a && b) : (a || b); }
  __device__ A finish(A a, int64_t) const { return a; }
};

template <class C>
struct ExpAcc {
  double s;
  C m;
};

__device__ inline float exp_c(float x) { return expf(x); }
__device__ inline double exp_c(double x) { return exp(x); }

// Second pass of logsumexp: sums exp(x - max) given each output's max.
template <class C>
struct ExpSumR {
  const C* max;
  using A = ExpAcc<C>;
  __device__ A init(int64_t o) const { return {0.0, max[o]}; }
  __device__ void step(A& a, C x, int64_t) const { a.s += static_cast<double>(exp_c(x - a.m)); }
  __device__ void combine(A& a, const A& b) const { a.s += b.s; }
  __device__ C finish(A a, int64_t) const {
    if (!isfinite(a.m)) return a.m;
    return static_cast<C>(static_cast<double>(a.m) + log(a.s));
  }
};

// ---- the plan (kernels/reduce.h), as kernel parameters ----

struct Plan {
  Strided keep{}, red{};  // keep carries x's offset
  int64_t n_out = 1, n_red = 1;
};

Strided strided_axes(const Shape& shape, const Shape& strides) {
  if (shape.size() > static_cast<size_t>(kMaxDims))
    fail("arrays of more than ", kMaxDims, " dimensions are not supported on CUDA");
  Strided s{};
  s.nd = static_cast<int>(shape.size());
  for (size_t d = 0; d < shape.size(); ++d) {
    s.shape[d] = shape[d];
    s.strides[d] = strides[d];
  }
  return s;
}

Plan make_plan(const Array& x, const std::vector<int64_t>& axes) {
  const ReducePlan rp = reduce_plan(x, axes);
  Plan p;
  p.keep = strided_axes(rp.keep, rp.keep_strides);
  p.red = strided_axes(rp.red, rp.red_strides);
  p.keep.offset = x.offset;
  p.red.offset = 0;
  p.n_out = rp.n_out;
  p.n_red = rp.n_red;
  return p;
}

// ---- kernels ----

// G threads per output, kBlock / G outputs per block; blockIdx.y takes a slice of the
// reduction. With one slice the output is written, else the partial accumulator.
template <class T, class O, class R>
__global__ void __launch_bounds__(kBlock)
    reduce_rows(const T* x, O* out, typename R::A* part, R r, Strided keep, Strided red,
                int64_t n_out, int64_t n_red, int g, int64_t slice) {
  using A = typename R::A;
  __shared__ A sm[kBlock];
  const int tid = threadIdx.x, lane = tid % g;
  const int64_t o = static_cast<int64_t>(blockIdx.x) * (kBlock / g) + tid / g;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * slice;
  const int64_t r1 = min(n_red, r0 + slice);
  A acc = r.init(o < n_out ? o : 0);
  if (o < n_out) {
    const T* base = x + keep.at(o);
    if (red.nd == 1) {
      const int64_t st = red.strides[0];
      for (int64_t i = r0 + lane; i < r1; i += g) r.step(acc, load(base[i * st]), i);
    } else {
      for (int64_t i = r0 + lane; i < r1; i += g) r.step(acc, load(base[red.at(i)]), i);
    }
  }
  sm[tid] = acc;
  __syncthreads();
  for (int s = g / 2; s > 0; s >>= 1) {
    if (lane < s) r.combine(sm[tid], sm[tid + s]);
    __syncthreads();
  }
  if (lane == 0 && o < n_out) {
    if (gridDim.y == 1)
      out[o] = convert<O>(r.finish(sm[tid], o));
    else
      part[o * gridDim.y + blockIdx.y] = sm[tid];
  }
}

// The kept innermost axis is contiguous (columns) and the reduction is not: 32 columns per
// block read side by side (coalesced), 8 rows of the reduction at a time.
template <class T, class O, class R>
__global__ void __launch_bounds__(kBlock)
    reduce_cols(const T* x, O* out, typename R::A* part, R r, Strided keep, Strided red,
                int64_t cols, int64_t tiles, int64_t n_red, int64_t slice) {
  using A = typename R::A;
  constexpr int kRows = kBlock / 32;
  __shared__ A sm[kBlock];
  const int tid = threadIdx.x, lane = tid % 32, row = tid / 32;
  const int64_t t = blockIdx.x;
  const int64_t outer = t / tiles, col = (t % tiles) * 32 + lane;
  const int64_t o = outer * cols + col;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * slice;
  const int64_t r1 = min(n_red, r0 + slice);
  A acc = r.init(col < cols ? o : 0);
  if (col < cols) {
    const T* base = x + keep.at(outer * cols) + col;  // keep's last axis has stride 1
    for (int64_t i = r0 + row; i < r1; i += kRows) r.step(acc, load(base[red.at(i)]), i);
  }
  sm[tid] = acc;
  __syncthreads();
  for (int s = kRows / 2; s > 0; s >>= 1) {
    if (row < s) r.combine(sm[tid], sm[tid + s * 32]);
    __syncthreads();
  }
  if (row == 0 && col < cols) {
    if (gridDim.y == 1)
      out[o] = convert<O>(r.finish(sm[tid], o));
    else
      part[o * gridDim.y + blockIdx.y] = sm[tid];
  }
}

template <class O, class R>
__global__ void combine_parts(O* out, const typename R::A* part, R r, int64_t n_out, int slices) {
  CRISP_GRID_STRIDE(o, n_out) {
    typename R::A acc = part[o * slices];
    for (int s = 1; s < slices; ++s) r.combine(acc, part[o * slices + s]);
    out[o] = convert<O>(r.finish(acc, o));
  }
}

template <class T, class O, class R>
void run_reducer(const R& r, const Array& x, O* out, const std::vector<int64_t>& axes) {
  using A = typename R::A;
  const Plan p = make_plan(x, axes);
  if (p.n_out == 0) return;
  const T* in = static_cast<const T*>(x.storage ? x.storage->data : nullptr);
  Context& c = ctx();
  const int64_t target = int64_t{c.sm_count > 0 ? c.sm_count : 132} * 4;  // blocks in flight
  const bool cols = p.keep.nd > 0 && p.keep.strides[p.keep.nd - 1] == 1 && p.red.nd > 0 &&
                    p.red.strides[p.red.nd - 1] != 1 && p.keep.shape[p.keep.nd - 1] >= 8;
  int64_t blocks;
  int g = kBlock;
  int64_t cols_n = 0, tiles = 0;
  if (cols) {
    cols_n = p.keep.shape[p.keep.nd - 1];
    tiles = (cols_n + 31) / 32;
    blocks = (p.n_out / cols_n) * tiles;
  } else {
    g = p.n_red <= 64 ? 32 : kBlock;  // short rows: a warp each
    blocks = (p.n_out + kBlock / g - 1) / (kBlock / g);
  }
  // Few blocks and long reductions: split each reduction into slices, combined afterwards.
  int64_t slices = 1;
  const int64_t per_block_work = cols ? 32 * 64 : int64_t{g} * 16;
  if (blocks < target && p.n_red > per_block_work)
    slices = std::min<int64_t>({(target + blocks - 1) / blocks, p.n_red / per_block_work, 1024});
  slices = std::max<int64_t>(slices, 1);
  const int64_t slice = (p.n_red + slices - 1) / slices;
  Buffer parts;
  if (slices > 1) parts = Buffer(static_cast<size_t>(p.n_out * slices) * sizeof(A));
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(slices));
  if (blocks > 0x7fffffff) fail("reduction too large for one launch");
  if (cols) {
    launch<reduce_cols<T, O, R>>(grid, kBlock, 0, c.stream, in, out, parts.as<A>(), r, p.keep,
                                 p.red, cols_n, tiles, p.n_red, slice);
  } else {
    launch<reduce_rows<T, O, R>>(grid, kBlock, 0, c.stream, in, out, parts.as<A>(), r, p.keep,
                                 p.red, p.n_out, p.n_red, g, slice);
  }
  if (slices > 1) {
    launch<combine_parts<O, R>>(grid_for(p.n_out), kBlock, 0, c.stream, out, parts.as<A>(), r,
                                p.n_out, static_cast<int>(slices));
  }
}

struct NonZero {
  template <class C>
  __device__ bool operator()(C v) const {
    return v != C(0);
  }
};

}  // namespace

void run_reduce(const Op& op, In in, Out out) {
  const Array& x = in[0];
  const Array& y = out[0];
  const std::vector<int64_t>& axes = op.ints;
  if (y.numel() == 0) return;
  if ((op.kind == OpKind::all || op.kind == OpKind::any)) {
    // Over bool values only: other dtypes are first compared with zero.
    Buffer keep;
    Array b = x;
    if (x.dtype != DType::b8) {
      keep = Buffer(static_cast<size_t>(x.numel()));
      b = Array{std::make_shared<Storage>(keep.get(), 0, nullptr), x.shape,
                contiguous_strides(x.shape), 0, DType::b8};
      visit(x.dtype, [&](auto tag) { map<bool, decltype(tag)>(b, NonZero{}, {&x}); });
    }
    if (op.kind == OpKind::all) return run_reducer<bool>(LogicR<true>{}, b, y.data<bool>(), axes);
    return run_reducer<bool>(LogicR<false>{}, b, y.data<bool>(), axes);
  }
  visit(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    switch (op.kind) {
      case OpKind::sum:
        if constexpr (std::is_same_v<T, bool>) {
          return run_reducer<T>(SumR<C>{}, x, y.data<int64_t>(), axes);
        } else {
          return run_reducer<T>(SumR<C>{}, x, y.data<T>(), axes);
        }
      case OpKind::prod:
        if constexpr (std::is_same_v<T, bool>) {
          return run_reducer<T>(ProdR<C>{}, x, y.data<int64_t>(), axes);
        } else {
          return run_reducer<T>(ProdR<C>{}, x, y.data<T>(), axes);
        }
      case OpKind::max:
        return run_reducer<T>(ExtremeR<C, true>{}, x, y.data<T>(), axes);
      case OpKind::min:
        return run_reducer<T>(ExtremeR<C, false>{}, x, y.data<T>(), axes);
      case OpKind::argmax:
        return run_reducer<T>(ArgR<C, true>{}, x, y.data<int64_t>(), axes);
      case OpKind::argmin:
        return run_reducer<T>(ArgR<C, false>{}, x, y.data<int64_t>(), axes);
      case OpKind::logsumexp:
        if constexpr (std::is_floating_point_v<C>) {
          Buffer m(static_cast<size_t>(y.numel()) * sizeof(C));
          run_reducer<T>(ExtremeR<C, true>{}, x, m.as<C>(), axes);
          return run_reducer<T>(ExpSumR<C>{m.as<C>()}, x, y.data<T>(), axes);
        }
        break;
      default:
        break;
    }
    unsupported(op, x.dtype);
  });
}

}  // namespace crisp::cuda
