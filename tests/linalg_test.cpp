// Linear algebra tests: matmul against a naive float64 loop for every operand rank, strided and
// transposed operands, dtypes, gradients by finite differences, outer, dot and shape errors.
#include <string>

#include "testing.h"

namespace crisp::testing {
namespace {

class Linalg : public BackendTest {};
INSTANTIATE_TEST_SUITE_P(Backends, Linalg, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

// [M, K] x [K, N], row-major float64.
std::vector<double> naive_mm(const std::vector<double>& a, const std::vector<double>& b, int64_t m,
                             int64_t k, int64_t n) {
  std::vector<double> c(static_cast<size_t>(m * n), 0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p)
      for (int64_t j = 0; j < n; ++j)
        c[static_cast<size_t>(i * n + j)] +=
            a[static_cast<size_t>(i * k + p)] * b[static_cast<size_t>(p * n + j)];
  return c;
}

TEST_P(Linalg, MatmulMatchesHandValues) {
  Tensor a({1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f}, {2, 3});
  Tensor b({7.0f, 8.0f, 9.0f, 10.0f, 11.0f, 12.0f}, {3, 2});
  Tensor c = matmul(a, b);
  EXPECT_EQ(c.shape(), (Shape{2, 2}));
  expect_close(c, {58, 64, 139, 154});
  expect_close(a.matmul(Tensor({1.0f, 1.0f, 1.0f})), {6, 15});
  expect_close(matmul(Tensor({1.0f, 1.0f}), a), {5, 7, 9});
  EXPECT_EQ(matmul(Tensor({1.0f, 2.0f}), Tensor({3.0f, 4.0f})).shape(), Shape{});
  expect_close(dot(Tensor({1.0f, 2.0f}), Tensor({3.0f, 4.0f})), {11});
  Tensor o = outer(Tensor({1.0, 2.0}), Tensor({3.0, 4.0, 5.0}));
  EXPECT_EQ(o.shape(), (Shape{2, 3}));
  expect_close(o, {3, 4, 5, 6, 8, 10});
}

TEST_P(Linalg, BatchedAndBroadcastMatmulMatchesNaiveLoop) {
  Tensor a = randn({2, 1, 3, 4}, f64);
  Tensor b = randn({5, 4, 2}, f64);
  Tensor c = matmul(a, b);
  ASSERT_EQ(c.shape(), (Shape{2, 5, 3, 2}));
  std::vector<double> av = values(a), bv = values(b), cv = values(c);
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t j = 0; j < 5; ++j) {
      std::vector<double> am(av.begin() + i * 12, av.begin() + i * 12 + 12);
      std::vector<double> bm(bv.begin() + j * 8, bv.begin() + j * 8 + 8);
      auto ref = naive_mm(am, bm, 3, 4, 2);
      for (size_t e = 0; e < ref.size(); ++e)
        EXPECT_NEAR(cv[static_cast<size_t>((i * 5 + j) * 6) + e], ref[e], 1e-12);
    }
  // A batch times one matrix (folded into one product) and a 1-d operand with a batch.
  Tensor x = randn({3, 4, 5}, f64), w = randn({5, 6}, f64);
  Tensor y = matmul(x, w);
  auto ref = naive_mm(values(x), values(w), 12, 5, 6);
  expect_close(y, ref, 1e-12);
  EXPECT_EQ(y.shape(), (Shape{3, 4, 6}));
  Tensor v = randn({5}, f64);
  EXPECT_EQ(matmul(x, v).shape(), (Shape{3, 4}));
  expect_close(matmul(x, v), naive_mm(values(x), values(v), 12, 5, 1), 1e-12);
  EXPECT_EQ(matmul(Tensor({1.0, 2.0, 3.0, 4.0}), randn({2, 4, 3}, f64)).shape(), (Shape{2, 3}));
}

TEST_P(Linalg, TransposedAndStridedOperandsMatchContiguous) {
  for (DType dt : {f32, f64}) {
    Tensor a = randn({6, 5}, dt), b = randn({7, 6}, dt);
    Tensor at = transpose(a, 0, 1), bt = transpose(b, 0, 1);  // [5, 6], [6, 7]
    Tensor ref = matmul(at.contiguous(), bt.contiguous());
    expect_tensors_close(matmul(at, bt), ref, 1e-5);
    expect_tensors_close(matmul(at, bt.contiguous()), ref, 1e-5);
    // Every other column: neither layout BLAS reads, so it is copied.
    Tensor wide = randn({5, 12}, dt);
    Tensor s = wide[Ellipsis, Slice(_, _, 2)];
    expect_tensors_close(matmul(s, bt), matmul(s.contiguous(), bt), 1e-5);
  }
}

TEST_P(Linalg, LargeFloat32MatmulMatchesFloat64) {
  Tensor a = randn({130, 257}, f32), b = randn({257, 65}, f32);
  Tensor ref = matmul(a.cast(f64), b.cast(f64));
  expect_tensors_close(matmul(a, b), ref, 1e-4);
  Tensor many = randn({64, 8, 9}, f32), other = randn({64, 9, 7}, f32);
  expect_tensors_close(matmul(many, other), matmul(many.cast(f64), other.cast(f64)), 1e-4);
}

TEST_P(Linalg, ReducedPrecisionAndIntegerMatmul) {
  Tensor a = randn({4, 8}), b = randn({8, 3});
  Tensor ref = matmul(a, b);
  for (DType dt : {f16, bf16}) {
    Tensor c = matmul(a.cast(dt), b.cast(dt));
    EXPECT_EQ(c.dtype(), dt);
    expect_tensors_close(c.cast(f32), ref, 5e-2);
  }
  Tensor ia({1, 2, 3, 4}, {2, 2}), ib({5, 6, 7, 8}, {2, 2});
  Tensor ic = matmul(ia, ib);
  EXPECT_EQ(ic.dtype(), i64);
  EXPECT_EQ(ic.to_vector<int64_t>(), (std::vector<int64_t>{19, 22, 43, 50}));
}

TEST_P(Linalg, EmptyContractionGivesZeros) {
  Tensor c = matmul(zeros({2, 0}), zeros({0, 3}));
  EXPECT_EQ(c.shape(), (Shape{2, 3}));
  expect_close(c, std::vector<double>(6, 0.0));
  EXPECT_EQ(matmul(zeros({0, 4}), zeros({4, 3})).shape(), (Shape{0, 3}));
}

TEST_P(Linalg, MatmulGradientMatchesFiniteDifferences) {
  auto mm = [](const std::vector<Tensor>& in) { return matmul(in[0], in[1]); };
  check_gradients(mm, {randn({3, 4}), randn({4, 2})});
  check_gradients(mm, {randn({2, 1, 3, 4}), randn({3, 4, 2})});
  check_gradients(mm, {randn({2, 3, 4}), randn({4, 2})});
  check_gradients(mm, {randn({4}), randn({2, 4, 3})});
  check_gradients(mm, {randn({2, 3, 4}), randn({4})});
  check_gradients(mm, {randn({4}), randn({4})});
  check_gradients([](const std::vector<Tensor>& in) { return matmul(in[0].t(), in[1]); },
                  {randn({4, 3}), randn({4, 2})});
  check_gradients([](const std::vector<Tensor>& in) { return outer(in[0], in[1]); },
                  {randn({3}), randn({2})});
  check_gradients([](const std::vector<Tensor>& in) { return dot(in[0], in[1]); },
                  {randn({5}), randn({5})});
}

// linear(x, w, b) = x @ w^T + b against a float64 loop, over the shapes each backend routes
// differently (on CUDA: one or few rows, matrix-vector kernels that add the bias as they store;
// more rows, a GEMM and then the bias; a large product, cuBLASLt or 3xTF32), with a strided
// bias; 1-d and batched inputs; gradients by finite differences.
TEST_P(Linalg, LinearMatchesNaiveLoopAndFiniteDifferences) {
  struct Dims {
    int64_t m, k, n;
  };
  for (const Dims d :
       {Dims{1, 5, 1}, Dims{1, 130, 66}, Dims{3, 130, 9}, Dims{70, 5, 66}, Dims{128, 512, 256}}) {
    Tensor x = randn({d.m, d.k}, f64), w = randn({d.n, d.k}, f64);
    Tensor b = randn({2 * d.n}, f64)[Slice(0, _, 2)];
    std::vector<double> want = naive_mm(values(x), values(w.t().contiguous()), d.m, d.k, d.n);
    const std::vector<double> bias = values(b);
    for (size_t i = 0; i < want.size(); ++i) want[i] += bias[i % static_cast<size_t>(d.n)];
    const std::string what =
        "linear " + std::to_string(d.m) + "x" + std::to_string(d.k) + "x" + std::to_string(d.n);
    Tensor y = linear(x, w, b);
    ASSERT_EQ(y.shape(), (Shape{d.m, d.n})) << what;
    expect_close(y, want, 1e-12, what.c_str());
    // float32 sums of k terms of randn products: rounding near 1e-6 * sqrt(k) of each output.
    expect_close(linear(x.cast(f32), w.cast(f32), b.cast(f32)), want, 1e-4, what.c_str());
  }
  Tensor w = randn({4, 3}), b = randn({4}), x3 = randn({2, 5, 3});
  EXPECT_EQ(linear(randn({3}), w, b).shape(), (Shape{4}));
  expect_tensors_close(linear(x3, w, b), matmul(x3, w.t()) + b, 1e-5, "batched linear");
  expect_tensors_close(linear(x3, w), matmul(x3, w.t()), 0, "linear without bias");
  auto lin = [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); };
  check_gradients(lin, {randn({3, 4}), randn({2, 4}), randn({2})});
  check_gradients(lin, {randn({1, 4}), randn({5, 4}), randn({5})});
  check_gradients(lin, {randn({2, 3, 4}), randn({5, 4}), randn({5})});
  check_gradients(lin, {randn({4}), randn({5, 4}), randn({5})});
  EXPECT_CRISP_ERROR(linear(zeros({2, 3}), zeros({4, 2}), zeros({4})),
                     "does not end in weight's in_features 2");
  EXPECT_CRISP_ERROR(linear(zeros({2, 3}), zeros({4, 3}), zeros({3})), "bias must have shape [4]");
}

TEST_P(Linalg, ShapeAndDtypeErrors) {
  EXPECT_CRISP_ERROR(matmul(zeros({2, 2}), zeros({3})),
                     "matmul: shapes [2, 2] and [3] do not contract: 2 != 3");
  EXPECT_CRISP_ERROR(matmul(zeros({2, 3}), zeros({2, 3})), "do not contract: 3 != 2");
  EXPECT_CRISP_ERROR(matmul(zeros({2, 2, 3}), zeros({3, 3, 2})), "cannot be broadcast");
  EXPECT_CRISP_ERROR(matmul(scalar(1), zeros({2})), "at least one dimension");
  EXPECT_CRISP_ERROR(matmul(zeros({2, 2}), zeros({2, 2}, f64)), "dtype mismatch");
  EXPECT_CRISP_ERROR(dot(zeros({2}), zeros({3})), "lengths differ: 2 != 3");
  EXPECT_CRISP_ERROR(outer(zeros({2, 2}), zeros({3})), "expects 1-d tensors");
}

}  // namespace
}  // namespace crisp::testing
