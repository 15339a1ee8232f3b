// CPU kernels for linear algebra: batched matrix multiplication through OpenBLAS (float types)
// or plain loops (integers).
#include <cstring>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/kernels.h"
#include "cpu/loops.h"
#include "kernels/matmul.h"

namespace crisp::cpu {

namespace {

int64_t offset_of(int64_t i, const Array& a, size_t dims) {
  int64_t off = 0;
  for (size_t d = dims; d-- > 0;) {
    off += (i % a.shape[d]) * a.strides[d];
    i /= a.shape[d];
  }
  return off;
}

// One matrix of a batch as BLAS sees it: a pointer and a layout, copied to a contiguous
// (converted) buffer when the strides or element type need it.
template <class S, class T>
const S* as_gemm(const T* p, int64_t rows, int64_t cols, int64_t rs, int64_t cs,
                 std::vector<S>& buf, GemmLayout& layout) {
  if constexpr (std::is_same_v<S, T>) {
    if (auto l = gemm_layout(rows, cols, rs, cs)) {
      layout = *l;
      return p;
    }
  }
  buf.resize(static_cast<size_t>(rows * cols));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      buf[static_cast<size_t>(i * cols + j)] =
          static_cast<S>(static_cast<compute_t<T>>(p[i * rs + j * cs]));
  layout = {false, std::max<int64_t>(cols, 1)};
  return buf.data();
}

template <class S>
void gemm(const GemmLayout& la, const GemmLayout& lb, int64_t m, int64_t n, int64_t k, const S* a,
          const S* b, S* c) {
  cpu::gemm(la.trans, lb.trans, m, n, k, S(1), a, la.ld, b, lb.ld, S(0), c,
            std::max<int64_t>(n, 1));
}

// Sizes and row/column strides of [*batch, M, K] x [*batch, K, N].
struct MatmulDims {
  size_t nb;
  int64_t m, k, n, batch, ars, acs, brs, bcs;
  MatmulDims(const Array& a, const Array& b, const Array& out)
      : nb(a.shape.size() - 2),
        m(a.shape[nb]),
        k(a.shape[nb + 1]),
        n(b.shape[nb + 1]),
        batch(numel_of(Shape(out.shape.begin(), out.shape.begin() + nb))),
        ars(a.strides[nb]),
        acs(a.strides[nb + 1]),
        brs(b.strides[nb]),
        bcs(b.strides[nb + 1]) {}
};

// S is the type BLAS computes in (float for the 16-bit types).
template <class T, class S>
void matmul_blas(const Array& a, const Array& b, const Array& out) {
  const MatmulDims md(a, b, out);
  const size_t nb = md.nb;
  const int64_t m = md.m, k = md.k, n = md.n, batch = md.batch;
  const int64_t ars = md.ars, acs = md.acs, brs = md.brs, bcs = md.bcs;
  T* o = out.data<T>();
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  auto one = [&](int64_t i) {
    T* c = o + i * m * n;
    if (k == 0) {
      for (int64_t j = 0; j < m * n; ++j) c[j] = T(0.0f);
      return;
    }
    std::vector<S> abuf, bbuf, cbuf;
    GemmLayout la, lb;
    const S* ma = as_gemm<S>(pa + offset_of(i, a, nb), m, k, ars, acs, abuf, la);
    const S* mb = as_gemm<S>(pb + offset_of(i, b, nb), k, n, brs, bcs, bbuf, lb);
    if constexpr (std::is_same_v<S, T>) {
      gemm(la, lb, m, n, k, ma, mb, c);
    } else {
      cbuf.resize(static_cast<size_t>(m * n));
      gemm(la, lb, m, n, k, ma, mb, cbuf.data());
      for (int64_t j = 0; j < m * n; ++j) c[j] = T(cbuf[static_cast<size_t>(j)]);
    }
  };
  if (m == 0 || n == 0) return;
  // BLAS threads each product itself; many small products go faster one per thread.
  if (batch > 1 && m * n * k <= (int64_t{1} << 18)) {
    parallel_for(batch, batch * m * n * k / 8, [&](int64_t b0, int64_t e) {
      for (int64_t i = b0; i < e; ++i) one(i);
    });
  } else {
    for (int64_t i = 0; i < batch; ++i) one(i);
  }
}

template <class T>
void matmul_loops(const Array& a, const Array& b, const Array& out) {
  const MatmulDims md(a, b, out);
  const size_t nb = md.nb;
  const int64_t m = md.m, k = md.k, n = md.n, batch = md.batch;
  const int64_t ars = md.ars, acs = md.acs, brs = md.brs, bcs = md.bcs;
  T* o = out.data<T>();
  parallel_for(batch * m, batch * m * n * std::max<int64_t>(k, 1), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r / m, row = r % m;
      const T* pa = a.data<T>() + offset_of(i, a, nb) + row * ars;
      const T* pb = b.data<T>() + offset_of(i, b, nb);
      T* c = o + r * n;
      for (int64_t j = 0; j < n; ++j) c[j] = T(0);
      for (int64_t p = 0; p < k; ++p) {
        const T av = pa[p * acs];
        for (int64_t j = 0; j < n; ++j) c[j] = static_cast<T>(c[j] + av * pb[p * brs + j * bcs]);
      }
    }
  });
}

// out [..., N] += bias [N] on every row, in S.
template <class T, class S>
void add_row_bias(const Array& out, const Array& bias) {
  const int64_t n = out.shape.empty() ? 1 : out.shape.back();
  if (n == 0) return;
  const int64_t rows = out.numel() / n, bs = bias.strides.empty() ? 1 : bias.strides[0];
  T* o = out.data<T>();
  const T* b = bias.data<T>();
  parallel_for(rows, rows * n, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t j = 0; j < n; ++j)
        o[r * n + j] = T(static_cast<S>(o[r * n + j]) + static_cast<S>(b[j * bs]));
  });
}

// The product, then the bias when given.
template <class T, class S>
void matmul_float(const Array& a, const Array& b, const Array& o, In in) {
  matmul_blas<T, S>(a, b, o);
  if (in.size() > 2) add_row_bias<T, S>(o, in[2]);
}

}  // namespace

void run_matmul(const Op& op, In in, Out out) {
  if (op.kind != OpKind::matmul) unsupported(op, in[0].dtype);
  const Array &a = in[0], &b = in[1], &o = out[0];
  if (in.size() > 2 && !is_floating(a.dtype)) unsupported(op, a.dtype);
  switch (a.dtype) {
    case DType::f32:
      return matmul_float<float, float>(a, b, o, in);
    case DType::f64:
      return matmul_float<double, double>(a, b, o, in);
    case DType::f16:
      return matmul_float<Half, float>(a, b, o, in);
    case DType::bf16:
      return matmul_float<BFloat16, float>(a, b, o, in);
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

}  // namespace crisp::cpu
