// CUDA kernels for linear algebra: batched matmul through cuBLAS (strided batches, transposed
// views read in place, TF32 only when allowed), matrix-vector kernels of our own for products
// with few rows, and a plain kernel for integers.
#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "cuda/families.cuh"
#include "cuda/gemm.cuh"
#include "cuda/map.cuh"
#include "kernels/matmul.h"

namespace crisp::cuda {

namespace {

// The batch axes of a and b over out's batch shape, merged where both allow: a strided batch
// is then one library call per index of all but the last merged axis.
struct Batch {
  std::vector<int64_t> shape, sa, sb;
};

Batch batch_of(const Array& a, const Array& b, const Array& out, size_t nb) {
  Batch B;
  for (size_t d = 0; d < nb; ++d) {
    const int64_t n = out.shape[d];
    if (n == 1) continue;
    const int64_t sa = a.shape[d] == 1 ? 0 : a.strides[d];
    const int64_t sb = b.shape[d] == 1 ? 0 : b.strides[d];
    if (!B.shape.empty() && B.sa.back() == sa * n && B.sb.back() == sb * n) {
      B.shape.back() *= n;
      B.sa.back() = sa;
      B.sb.back() = sb;
    } else {
      B.shape.push_back(n);
      B.sa.push_back(sa);
      B.sb.push_back(sb);
    }
  }
  return B;
}

int to_int(int64_t v) {
  if (v > std::numeric_limits<int>::max())
    fail("matmul: dimension ", v, " is too large for cuBLAS");
  return static_cast<int>(v);
}

// One product per shape, layout, dtype, TF32 setting and device, its algorithm picked on first
// use (timed for large ones).
using ProductKey = std::array<int64_t, 11>;
std::mutex products_mutex;
std::map<ProductKey, std::unique_ptr<LtGemm>> products;  // never erased: pointers stay valid

template <class T>
LtGemm& product_for(const GemmShape& sh) {
  const BlasTypes t = blas_types<T>();
  const ProductKey key{ctx().device, t.compute, t.data, sh.ta,  sh.tb, sh.m,
                       sh.n,         sh.k,      sh.lda, sh.ldb, sh.ldc};
  std::lock_guard lock(products_mutex);
  std::unique_ptr<LtGemm>& p = products[key];
  if (!p) p = std::make_unique<LtGemm>();
  return *p;
}

// The batch axes of x, an operand of a product over batch shape `batch`, as kernels index them.
Strided batch_strided(const Array& x, const Shape& batch) {
  const auto nb = static_cast<int64_t>(batch.size());
  Array xb = x;
  xb.shape = Shape(x.shape.begin(), x.shape.begin() + nb);
  xb.strides = Shape(x.strides.begin(), x.strides.begin() + nb);
  return strided(xb, batch);
}

// ---- products with few rows: matrix-vector kernels ----
// C[m, n] = A[m, k] B[k, n] with m small (x[1, K] @ W^T in a batch-1 Linear) reads each element of
// B once for m multiply-adds: its floor is the time to read B. cuBLAS spends ~12 us of host time
// per call on it (a launch is ~4 us) and well above the floor on the GPU, so these kernels read B
// with wide loads in one launch. Sums run in compute_t (float for 16-bit types, double for
// double): plain FMAs, float32-accurate whatever allow_tf32 says.

// At most this many rows. Every element of B meets m elements of A, which come from L1, so A's
// traffic is m times B's: at 8 rows it about reaches L1's bandwidth (~128 B/clock per SM) while B
// streams at HBM's (~18 B/clock per SM on an H200), and register use stays small. Beyond that,
// tiled GEMMs, which reuse each load across a tile, do better.
constexpr int64_t kFewRows = 8;
constexpr int kWarps = kBlock / 32;
// Loads of B each thread keeps in flight: in gemv_along_k 64 bytes' worth (8 loads at most);
// gemv_along_n runs about one block per SM at the Linear shapes, so its threads keep 8.
template <class T, int P>
constexpr int in_flight_along_k() {
  return 64 / (P * sizeof(T)) < 8 ? static_cast<int>(64 / (P * sizeof(T))) : 8;
}
constexpr int kInFlightN = 8;
// With fewer blocks than SMs, no block reads more of B than this: a lone block streams some tens
// of GB/s, so more would take longer than cuBLAS, which splits such products more finely.
constexpr int64_t kBytesPerBlock = int64_t{256} << 10;

// P consecutive elements, read as one access of P * sizeof(T) bytes (16 at most).
template <class T, int P>
struct alignas(P * sizeof(T)) Vec {
  T v[P];
};

template <int Bytes>
using bits_t = std::conditional_t<
    Bytes == 16, uint4,
    std::conditional_t<Bytes == 8, uint2,
                       std::conditional_t<Bytes == 4, unsigned, unsigned short>>>;

// B streams past once: not allocated in L1, which keeps A's rows for every warp.
__device__ inline uint4 load_once(const uint4* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}
__device__ inline uint2 load_once(const uint2* p) {
  uint2 r;
  asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(r.x), "=r"(r.y) : "l"(p));
  return r;
}
__device__ inline unsigned load_once(const unsigned* p) {
  unsigned r;
  asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(r) : "l"(p));
  return r;
}
__device__ inline unsigned short load_once(const unsigned short* p) {
  unsigned short r;
  asm("ld.global.nc.L1::no_allocate.u16 %0, [%1];" : "=h"(r) : "l"(p));
  return r;
}

// P elements at p (aligned to their size): B's (Once) or A's, through L1.
template <bool Once, class T, int P>
__device__ Vec<T, P> load_vec(const T* p) {
  using W = bits_t<static_cast<int>(P * sizeof(T))>;
  const W* q = reinterpret_cast<const W*>(p);
  W w;
  if constexpr (Once) {
    w = load_once(q);
  } else {
    w = __ldg(q);
  }
  Vec<T, P> r;
  memcpy(&r, &w, sizeof r);
  return r;
}

// A bias added to every row of a product: bias[j * stride], or none.
template <class T>
struct RowBias {
  const T* p;
  int64_t stride;
};

// The block's last step: out[batch, r, j0 + c] = the sum over q < terms of
// part[c * cs + r * rs + q * qs] (+ the bias at j0 + c), for the rows r < m and the block's
// `cols` columns.
template <class T, class C>
__device__ void store_sums(const C* part, int rows, int cols, int terms, int cs, int rs, int qs,
                           T* out, int m, int64_t n, int64_t j0, RowBias<T> bias) {
  const int64_t bi = blockIdx.y;
  for (int t = threadIdx.x; t < rows * cols; t += kBlock) {
    const int r = t / cols, c = t % cols;
    if (r >= m || j0 + c >= n) continue;
    C s = bias.p ? static_cast<C>(load(bias.p[(j0 + c) * bias.stride])) : C(0);
    for (int q = 0; q < terms; ++q) s += part[c * cs + r * rs + q * qs];
    out[(bi * m + r) * n + j0 + c] = convert<T>(s);
  }
}

// Walking along k, when B's columns are rows of B^T (k stride 1, as W^T in x @ W^T): `split`
// warps per column j, their lanes reading P elements of the column and of A's R rows at once
// (P > 1: both contiguous along k and P-aligned), the sums reduced over lanes by shuffles and
// over the column's warps through shared memory. A's rows past m repeat row m - 1 (unused).
template <class T, int R, int P>
__global__ void __launch_bounds__(kBlock)
    gemv_along_k(const T* a, const T* b, T* out, Strided ba, Strided bb, int m, int64_t n,
                 int64_t k, int64_t ars, int64_t acs, int64_t bns, int64_t bks, int split,
                 RowBias<T> bias) {
  using C = compute_t<T>;
  constexpr int kInFlight = in_flight_along_k<T, P>();
  __shared__ C part[kWarps * R];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, cols = kWarps / split;
  const int64_t bi = blockIdx.y, j = static_cast<int64_t>(blockIdx.x) * cols + warp / split;
  C acc[R] = {};
  if (j < n) {
    const T* bj = b + bb.at(bi) + j * bns;
    const T* ar[R];
    const int64_t a0 = ba.at(bi);
#pragma unroll
    for (int r = 0; r < R; ++r) ar[r] = a + a0 + min(r, m - 1) * ars;
    const int64_t packs = k / P, step = 32 * split, first = (warp % split) * 32 + lane;
    auto add = [&](int64_t v, const Vec<T, P>& bv) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const Vec<T, P> av = load_vec<false, T, P>(ar[r] + v * P * acs);
#pragma unroll
        for (int i = 0; i < P; ++i) acc[r] += load(av.v[i]) * load(bv.v[i]);
      }
    };
    int64_t v = first;
    for (; v + (kInFlight - 1) * step < packs; v += kInFlight * step) {
      Vec<T, P> bv[kInFlight];
#pragma unroll
      for (int u = 0; u < kInFlight; ++u)
        bv[u] = load_vec<true, T, P>(bj + (v + u * step) * P * bks);
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) add(v + u * step, bv[u]);
    }
    for (; v < packs; v += step) add(v, load_vec<true, T, P>(bj + v * P * bks));
    // The last k % P elements.
    const int64_t t = packs * P + first;
    if (t < k) {
      const C y = load(bj[t * bks]);
#pragma unroll
      for (int r = 0; r < R; ++r) acc[r] += load(ar[r][t * acs]) * y;
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = lanes_sum(acc[r], 1);
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < R; ++r) part[warp * R + r] = acc[r];
  }
  __syncthreads();
  store_sums(part, R, cols, split, split * R, 1, R, out, m, n,
             static_cast<int64_t>(blockIdx.x) * cols, bias);
}

// Lanes across a tile of gemv_along_n's columns: 128 bytes of a row of B (a cache line).
template <class T, int P>
constexpr int tile_lanes() {
  return 128 / (P * sizeof(T)) < 32 ? static_cast<int>(128 / (P * sizeof(T))) : 32;
}

// Walking along n, when B's rows are contiguous (as W in g @ W, a Linear's input gradient): a
// block per tile of columns, each lane holding P of them; the warp's other lanes and the block's
// warps take different rows of B, their sums reduced by shuffles and through shared memory.
// A's elements are the same for a whole warp row: broadcast loads through L1.
template <class T, int R, int P>
__global__ void __launch_bounds__(kBlock)
    gemv_along_n(const T* a, const T* b, T* out, Strided ba, Strided bb, int m, int64_t n,
                 int64_t k, int64_t ars, int64_t acs, int64_t bks, RowBias<T> bias) {
  using C = compute_t<T>;
  constexpr int kLanes = tile_lanes<T, P>(), kTile = kLanes * P, kRows = 32 / kLanes;
  __shared__ C part[kWarps * R * kTile];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, x = lane % kLanes;
  const int64_t bi = blockIdx.y, j0 = static_cast<int64_t>(blockIdx.x) * kTile, j = j0 + x * P;
  const T* bj = b + bb.at(bi) + j;
  const T* ar[R];
  const int64_t a0 = ba.at(bi);
#pragma unroll
  for (int r = 0; r < R; ++r) ar[r] = a + a0 + min(r, m - 1) * ars;
  const bool whole = j + P <= n;
  C acc[R][P] = {};
  auto add = [&](int64_t kk, const Vec<T, P>& bv) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const C y = load(__ldg(ar[r] + kk * acs));
#pragma unroll
      for (int i = 0; i < P; ++i) acc[r][i] += y * load(bv.v[i]);
    }
  };
  auto row = [&](int64_t kk) {
    if (whole) return load_vec<true, T, P>(bj + kk * bks);
    Vec<T, P> bv;
#pragma unroll
    for (int i = 0; i < P; ++i) bv.v[i] = j + i < n ? bj[kk * bks + i] : convert<T>(0.0f);
    return bv;
  };
  const int64_t step = kWarps * kRows;
  int64_t kk = warp * kRows + lane / kLanes;
  for (; kk + (kInFlightN - 1) * step < k; kk += kInFlightN * step) {
    Vec<T, P> bv[kInFlightN];
#pragma unroll
    for (int u = 0; u < kInFlightN; ++u) bv[u] = row(kk + u * step);
#pragma unroll
    for (int u = 0; u < kInFlightN; ++u) add(kk + u * step, bv[u]);
  }
  for (; kk < k; kk += step) add(kk, row(kk));
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int i = 0; i < P; ++i) {
      acc[r][i] = lanes_sum(acc[r][i], kLanes);
      if (lane < kLanes) part[(warp * R + r) * kTile + x * P + i] = acc[r][i];
    }
  }
  __syncthreads();
  store_sums(part, R, kTile, kWarps, 1, kTile, R * kTile, out, m, n, j0, bias);
}

// Whether the `rows` rows (stride rs) of every batch of x start on a multiple of `bytes`.
bool rows_aligned(const Array& x, const Strided& batch, int64_t rows, int64_t rs, int64_t bytes) {
  const auto size = static_cast<int64_t>(itemsize(x.dtype));
  if (reinterpret_cast<uintptr_t>(x.storage->data) % static_cast<uintptr_t>(bytes) != 0 ||
      batch.offset * size % bytes != 0 || (rows > 1 && rs * size % bytes != 0))
    return false;
  for (int d = 0; d < batch.nd; ++d)
    if (batch.strides[d] * size % bytes != 0) return false;
  return true;
}

// f.template operator()<R, P>() with R the rows m rounded up to 1, 2, 4 or 8 and P the first of
// Ps equal to pack; what f returns.
template <int... Ps, class F>
bool with_rows_and_pack(int64_t m, int pack, F&& f) {
  auto rows = [&]<int P>() {
    if (m == 1) return f.template operator()<1, P>();
    if (m == 2) return f.template operator()<2, P>();
    if (m <= 4) return f.template operator()<4, P>();
    return f.template operator()<8, P>();
  };
  bool done = false;
  (void)((pack == Ps && (done = rows.template operator()<Ps>(), true)) || ...);
  return done;
}

// Blocks of Kernel (kBlock threads) that fit on an SM at once, as its registers allow.
template <auto Kernel>
int64_t resident_blocks() {
  static const int64_t blocks = [] {
    int b = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, Kernel, kBlock, 0) != cudaSuccess)
      (void)cudaGetLastError();
    return static_cast<int64_t>(std::max(b, 1));
  }();
  return blocks;
}

// C = A B in one launch of gemv_along_k or gemv_along_n when A has at most kFewRows rows, B's
// layout suits one of them and the grid keeps the GPU busy enough; false leaves it to cuBLAS.
template <class T>
bool matmul_few_rows(const Array& a, const Array& b, const Array& out, RowBias<T> bias) {
  const size_t nb = a.shape.size() - 2;
  const int64_t m = a.shape[nb], k = a.shape[nb + 1], n = b.shape[nb + 1];
  const int64_t ars = a.strides[nb], acs = a.strides[nb + 1];
  const int64_t bks = b.strides[nb], bns = b.strides[nb + 1];
  const int64_t batches = out.numel() / (m * n);
  if (m > kFewRows || batches > 65535) return false;
  const bool along_n = n > 1 && bns == 1 && (k == 1 || bks != 1);
  if (!along_n && n > 1 && k > 1 && bks != 1) return false;  // neither stride is 1
  const Shape batch(out.shape.begin(), out.shape.begin() + static_cast<int64_t>(nb));
  const Strided sa = batch_strided(a, batch), sb = batch_strided(b, batch);
  constexpr auto size = static_cast<int64_t>(sizeof(T));
  const int64_t sms = ctx().sm_count > 0 ? ctx().sm_count : 132;
  auto worth = [&](int64_t blocks) {
    return blocks >= sms || batches * n * k * size <= blocks * kBytesPerBlock;
  };
  const T* pa = static_cast<const T*>(a.storage->data);
  const T* pb = static_cast<const T*>(b.storage->data);
  T* po = out.data<T>();
  const cudaStream_t stream = ctx().stream;
  const int rows = static_cast<int>(m);
  constexpr int kPack16 = static_cast<int>(16 / size), kPack8 = static_cast<int>(8 / size);
  bool done = false;
  if (along_n) {
    const int pack = rows_aligned(b, sb, k, bks, 16) ? kPack16 : 1;
    done = with_rows_and_pack<kPack16, 1>(m, pack, [&]<int R, int P>() {
      constexpr int64_t tile = tile_lanes<T, P>() * P;
      const int64_t tiles = (n + tile - 1) / tile;
      if (!worth(tiles * batches)) return false;
      launch<gemv_along_n<T, R, P>>(
          dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(batches)), dim3(kBlock), 0,
          stream, pa, pb, po, sa, sb, rows, n, k, ars, acs, bks, bias);
      return true;
    });
  } else {
    int pack = 1;
    if (k > 1 && bks == 1 && acs == 1) {
      for (int bytes : {16, 8}) {
        if (bytes / size > 1 && rows_aligned(a, sa, m, ars, bytes) &&
            rows_aligned(b, sb, n, bns, bytes)) {
          pack = static_cast<int>(bytes / size);
          break;
        }
      }
    }
    done = with_rows_and_pack<kPack16, kPack8, 1>(m, pack, [&]<int R, int P>() {
      // Warps per column: more while all of them still fit on the GPU at once (a second wave
      // would double the time) and each lane keeps 2 packs or more.
      const int64_t fit = sms * resident_blocks<gemv_along_k<T, R, P>>() * kWarps;
      int split = 1;
      while (split < kWarps && batches * n * split * 2 <= fit && k / P >= 32 * 2 * split * 2)
        split *= 2;
      const int64_t cols = kWarps / split, blocks = (n + cols - 1) / cols;
      if (!worth(blocks * batches)) return false;
      launch<gemv_along_k<T, R, P>>(
          dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(batches)), dim3(kBlock), 0,
          stream, pa, pb, po, sa, sb, rows, n, k, ars, acs, bns, bks, split, bias);
      return true;
    });
  }
  return done;
}

struct PlusBias {
  template <class C>
  __device__ C operator()(C x, C y) const {
    return x + y;
  }
};

// out [..., N] += bias [N] on every row, in place.
template <class T>
void add_row_bias(const Array& out, const Array& bias) {
  Array rows = bias;
  rows.shape = out.shape;
  rows.strides = Shape(out.shape.size(), 0);
  rows.strides.back() = bias.strides[0];
  map<T, T, T>(out, PlusBias{}, {&out, &rows});
}

// C = A B; true when the bias was added as C was written.
template <class T>
bool matmul_product(const Array& a_in, const Array& b_in, const Array& out, RowBias<T> bias) {
  const size_t nb = a_in.shape.size() - 2;
  const int64_t m = a_in.shape[nb], k = a_in.shape[nb + 1], n = b_in.shape[nb + 1];
  Context& c = ctx();
  if (out.numel() == 0) return true;
  T* o = out.data<T>();
  if (k == 0) {
    CUDA_CHECK(cudaMemsetAsync(o, 0, static_cast<size_t>(out.numel()) * sizeof(T), c.stream));
    return false;
  }
  if (matmul_few_rows<T>(a_in, b_in, out, bias)) return true;
  // Operands BLAS cannot read in place are made contiguous first.
  Buffer keep_a, keep_b;
  Array a = a_in, b = b_in;
  auto la = gemm_layout(m, k, a.strides[nb], a.strides[nb + 1]);
  if (!la) {
    a = contiguous(a_in, keep_a);
    la = gemm_layout(m, k, a.strides[nb], a.strides[nb + 1]);
  }
  auto lb = gemm_layout(k, n, b.strides[nb], b.strides[nb + 1]);
  if (!lb) {
    b = contiguous(b_in, keep_b);
    lb = gemm_layout(k, n, b.strides[nb], b.strides[nb + 1]);
  }
  const Batch B = batch_of(a, b, out, nb);
  const size_t nd = B.shape.size();
  const int64_t inner = nd ? B.shape.back() : 1;
  const int64_t sa = nd ? B.sa.back() : 0, sb = nd ? B.sb.back() : 0;
  int64_t outer = 1;
  for (size_t d = 0; d + 1 < nd; ++d) outer *= B.shape[d];
  // One large product: cuBLASLt (or 3xTF32), timed for the shape. Thin ones stay with cuBLAS,
  // which runs matrix-vector kernels that cuBLASLt doesn't offer.
  const GemmShape sh{la->trans, lb->trans, m, n, k, la->ld, lb->ld, n};
  if (outer == 1 && inner == 1 && m >= 64 && n >= 64 && sh.flops() >= kMeasureFlops) {
    const T* pa = static_cast<const T*>(a.storage->data) + a.offset;
    const T* pb = static_cast<const T*>(b.storage->data) + b.offset;
    product_for<T>(sh).run(sh, pa, pb, o);
    return false;
  }
  const BlasTypes t = blas_types<T>();
  const float alpha_f = 1, beta_f = 0;
  const double alpha_d = 1, beta_d = 0;
  const void* alpha = std::is_same_v<T, double> ? static_cast<const void*>(&alpha_d) : &alpha_f;
  const void* beta = std::is_same_v<T, double> ? static_cast<const void*>(&beta_d) : &beta_f;
  // Row-major C = A B is column-major C^T = B^T A^T: B goes first.
  const cublasOperation_t opa = la->trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t opb = lb->trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  for (int64_t i = 0; i < outer; ++i) {
    int64_t oa = a.offset, ob = b.offset;
    for (int64_t d = static_cast<int64_t>(nd) - 2, r = i; d >= 0; --d) {
      const int64_t j = r % B.shape[static_cast<size_t>(d)];
      r /= B.shape[static_cast<size_t>(d)];
      oa += j * B.sa[static_cast<size_t>(d)];
      ob += j * B.sb[static_cast<size_t>(d)];
    }
    const T* pa = static_cast<const T*>(a.storage->data) + oa;
    const T* pb = static_cast<const T*>(b.storage->data) + ob;
    T* pc = o + i * inner * m * n;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(c.cublas, opb, opa, to_int(n), to_int(m), to_int(k),
                                            alpha, pb, t.data, to_int(lb->ld), sb, pa, t.data,
                                            to_int(la->ld), sa, beta, pc, t.data, to_int(n), m * n,
                                            to_int(inner), t.compute, CUBLAS_GEMM_DEFAULT));
  }
  return false;
}

// Integers: one thread per output element, accumulating with wrap-around as on the CPU.
template <class T>
__global__ void matmul_int(const T* a, const T* b, T* out, Strided ba, Strided bb, int64_t m,
                           int64_t k, int64_t n, int64_t ars, int64_t acs, int64_t brs, int64_t bcs,
                           int64_t total) {
  CRISP_GRID_STRIDE(e, total) {
    const int64_t j = e % n, row = (e / n) % m, bi = e / (m * n);
    const T* pa = a + ba.at(bi) + row * ars;
    const T* pb = b + bb.at(bi) + j * bcs;
    uint64_t acc = 0;
    for (int64_t p = 0; p < k; ++p)
      acc += static_cast<uint64_t>(static_cast<int64_t>(pa[p * acs])) *
             static_cast<uint64_t>(static_cast<int64_t>(pb[p * brs]));
    out[e] = static_cast<T>(acc);
  }
}

// The product, then the bias when given (the matrix-vector kernels add it as they store).
template <class T>
void matmul_blas(const Array& a, const Array& b, const Array& out, const Array* bias) {
  const RowBias<T> rb{bias ? bias->data<T>() : nullptr, bias ? bias->strides[0] : 0};
  if (!matmul_product<T>(a, b, out, rb) && bias) add_row_bias<T>(out, *bias);
}

template <class T>
void matmul_loops(const Array& a, const Array& b, const Array& out) {
  const size_t nb = a.shape.size() - 2;
  const int64_t m = a.shape[nb], k = a.shape[nb + 1], n = b.shape[nb + 1];
  const int64_t total = out.numel();
  if (total == 0) return;
  const Shape bshape(out.shape.begin(), out.shape.begin() + static_cast<int64_t>(nb));
  const Strided sa = batch_strided(a, bshape), sb = batch_strided(b, bshape);
  launch<matmul_int<T>>(grid_for(total), kBlock, 0, ctx().stream,
                        static_cast<const T*>(a.storage->data),
                        static_cast<const T*>(b.storage->data), out.data<T>(), sa, sb, m, k, n,
                        a.strides[nb], a.strides[nb + 1], b.strides[nb], b.strides[nb + 1], total);
}

}  // namespace

void run_matmul(const Op& op, In in, Out out) {
  if (op.kind != OpKind::matmul) unsupported(op, in[0].dtype);
  const Array &a = in[0], &b = in[1], &o = out[0];
  const Array* bias = in.size() > 2 ? &in[2] : nullptr;
  if (bias && !is_floating(a.dtype)) unsupported(op, a.dtype);
  switch (a.dtype) {
    case DType::f32:
      return matmul_blas<float>(a, b, o, bias);
    case DType::f64:
      return matmul_blas<double>(a, b, o, bias);
    case DType::f16:
      return matmul_blas<__half>(a, b, o, bias);
    case DType::bf16:
      return matmul_blas<__nv_bfloat16>(a, b, o, bias);
    case DType::u8:
      return matmul_loops<uint8_t>(a, b, o);
    case DType::i32:
      return matmul_loops<int32_t>(a, b, o);
    case DType::i64:
      return matmul_loops<int64_t>(a, b, o);
    default:
      unsupported(op, a.dtype);
  }
}

}  // namespace crisp::cuda
