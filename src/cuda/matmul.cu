// CUDA kernels for linear algebra: batched matmul through cuBLAS (strided batches, transposed
// views read in place, TF32 only when allowed) and a plain kernel for integers.
#include <algorithm>
#include <array>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "cuda/gemm.cuh"
#include "cuda/map.cuh"

namespace crisp::cuda {

namespace {

// How BLAS can read a rows x cols matrix with strides (rs, cs) without a copy: `trans` when it
// is stored column-major.
struct GemmLayout {
  bool trans;
  int64_t ld;
};

std::optional<GemmLayout> gemm_layout(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  // A size-1 dimension's stride is never used; pick the one that makes the layout valid.
  if (cs == 1 || cols == 1) {
    const int64_t ld = rows == 1 ? std::max<int64_t>(cols, 1) : rs;
    if (ld >= std::max<int64_t>(cols, 1)) return GemmLayout{false, ld};
  }
  if (rs == 1 || rows == 1) {
    const int64_t ld = cols == 1 ? std::max<int64_t>(rows, 1) : cs;
    if (ld >= std::max<int64_t>(rows, 1)) return GemmLayout{true, ld};
  }
  return std::nullopt;
}

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

template <class T>
void matmul_blas(const Array& a_in, const Array& b_in, const Array& out) {
  const size_t nb = a_in.shape.size() - 2;
  const int64_t m = a_in.shape[nb], k = a_in.shape[nb + 1], n = b_in.shape[nb + 1];
  Context& c = ctx();
  if (out.numel() == 0) return;
  T* o = out.data<T>();
  if (k == 0) {
    CUDA_CHECK(cudaMemsetAsync(o, 0, static_cast<size_t>(out.numel()) * sizeof(T), c.stream));
    return;
  }
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
    return;
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

template <class T>
void matmul_loops(const Array& a, const Array& b, const Array& out) {
  const size_t nb = a.shape.size() - 2;
  const int64_t m = a.shape[nb], k = a.shape[nb + 1], n = b.shape[nb + 1];
  const int64_t total = out.numel();
  if (total == 0) return;
  const Shape bshape(out.shape.begin(), out.shape.begin() + static_cast<int64_t>(nb));
  Array ab = a, bb = b;  // batch parts only, for their strided layouts
  ab.shape = Shape(a.shape.begin(), a.shape.begin() + static_cast<int64_t>(nb));
  ab.strides = Shape(a.strides.begin(), a.strides.begin() + static_cast<int64_t>(nb));
  bb.shape = Shape(b.shape.begin(), b.shape.begin() + static_cast<int64_t>(nb));
  bb.strides = Shape(b.strides.begin(), b.strides.begin() + static_cast<int64_t>(nb));
  const Strided sa = strided(ab, bshape), sb = strided(bb, bshape);
  matmul_int<T><<<grid_for(total), kBlock, 0, ctx().stream>>>(
      static_cast<const T*>(a.storage->data), static_cast<const T*>(b.storage->data), out.data<T>(),
      sa, sb, m, k, n, a.strides[nb], a.strides[nb + 1], b.strides[nb], b.strides[nb + 1], total);
  CUDA_LAUNCH_CHECK();
}

}  // namespace

void linalg(const Op& op, In in, Out out) {
  if (op.kind != OpKind::matmul) unsupported(op, in[0].dtype);
  const Array &a = in[0], &b = in[1], &o = out[0];
  switch (a.dtype) {
    case DType::f32:
      return matmul_blas<float>(a, b, o);
    case DType::f64:
      return matmul_blas<double>(a, b, o);
    case DType::f16:
      return matmul_blas<__half>(a, b, o);
    case DType::bf16:
      return matmul_blas<__nv_bfloat16>(a, b, o);
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
