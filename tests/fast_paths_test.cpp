// The fast paths of the reference CNN's kernels, on each backend, against plain references:
// matrix-vector products in every layout, the layout of a linear layer's weight gradient, 2-d max
// pooling, scalar-broadcast elementwise loops, random streams split over threads, and dropout.
#include <cmath>
#include <limits>

#include "testing.h"

namespace crisp::testing {
namespace {

class FastPaths : public BackendTest {};

// Reference product in float64 loops.
std::vector<double> naive_matmul(const Tensor& a, const Tensor& b) {
  const int64_t m = a.shape()[0], k = a.shape()[1], n = b.shape()[1];
  std::vector<double> av = values(a), bv = values(b), out(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p)
        s += av[static_cast<size_t>(i * k + p)] * bv[static_cast<size_t>(p * n + j)];
      out[static_cast<size_t>(i * n + j)] = s;
    }
  return out;
}

TEST_P(FastPaths, MatrixVectorProductsInEveryLayout) {
  for (DType dt : {f32, f64}) {
    // One row of output, from plain and transposed operands (a single image through a linear
    // layer is x @ w^T), and one column.
    Tensor x = randn({1, 300}, dt), w = randn({130, 300}, dt), v = randn({300, 1}, dt);
    Tensor wt = transpose(w);  // [300, 130], a view
    expect_close(matmul(x, wt), naive_matmul(x, wt.contiguous()), 1e-4, "x w^T");
    expect_close(matmul(x, wt.contiguous()), naive_matmul(x, wt.contiguous()), 1e-4, "x b");
    expect_close(matmul(w, v), naive_matmul(w, v), 1e-4, "w v");
    Tensor w2 = randn({300, 130}, dt);
    expect_close(matmul(transpose(w2), v), naive_matmul(transpose(w2).contiguous(), v), 1e-4,
                 "w^T v");
    Tensor xcol = randn({300, 1}, dt);
    expect_close(matmul(transpose(xcol), wt), naive_matmul(transpose(xcol).contiguous(), wt), 1e-4,
                 "x^T as a row");
  }
}

TEST_P(FastPaths, LinearWeightGradientIsContiguousAndRight) {
  Tensor x = randn({6, 9}), w = randn({5, 9}).requires_grad_(), b = randn({5}).requires_grad_();
  Tensor g = randn({6, 5});
  (matmul(x, transpose(w)) + b).backward(g);
  Tensor dw = w.grad();
  EXPECT_TRUE(dw.is_contiguous());
  // dw = g^T x
  expect_close(dw, naive_matmul(transpose(g).contiguous(), x), 1e-5, "dw");
  expect_close(b.grad(), values(sum(g, Axes{0})), 1e-5, "db");
  check_gradients([](const std::vector<Tensor>& in) { return matmul(in[0], transpose(in[1])); },
                  {randn({3, 4}), randn({2, 4})});
  check_gradients([](const std::vector<Tensor>& in) { return matmul(transpose(in[0]), in[1]); },
                  {randn({4, 3}), randn({4, 2})});
}

// 2-d max pooling against a scan of each window in order (larger wins, NaN wins, ties keep the
// first), with the gradient landing on the chosen element.
void check_max_pool(const Tensor& x, int64_t k, int64_t s) {
  Tensor xg = x.detach().requires_grad_();
  Tensor y = max_pool2d(xg, {.kernel = {k}, .stride = {s}});
  const int64_t P = x.shape()[0] * x.shape()[1], H = x.shape()[2], W = x.shape()[3];
  const int64_t OH = (H - k) / s + 1, OW = (W - k) / s + 1;
  ASSERT_EQ(y.shape(), (Shape{x.shape()[0], x.shape()[1], OH, OW}));
  Tensor g = rand(y.shape(), x.dtype()) + 1;  // positive: a chosen element's gradient is never 0
  y.backward(g);
  std::vector<double> xv = values(x), yv = values(y), gv = values(g);
  std::vector<double> dx(xv.size(), 0.0);
  std::vector<double> expected;
  for (int64_t p = 0; p < P; ++p)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        double best = 0;
        int64_t at = -1;
        for (int64_t i = 0; i < k; ++i)
          for (int64_t j = 0; j < k; ++j) {
            const int64_t idx = (p * H + oh * s + i) * W + ow * s + j;
            const double v = xv[static_cast<size_t>(idx)];
            if (at < 0 || v > best || (std::isnan(v) && !std::isnan(best))) best = v, at = idx;
          }
        expected.push_back(best);
        dx[static_cast<size_t>(at)] += gv[static_cast<size_t>((p * OH + oh) * OW + ow)];
      }
  ASSERT_EQ(yv.size(), expected.size());
  for (size_t i = 0; i < yv.size(); ++i)  // exact, infinities and NaN included
    EXPECT_TRUE(yv[i] == expected[i] || (std::isnan(yv[i]) && std::isnan(expected[i]))) << i;
  expect_close(xg.grad(), dx, 1e-6, "dx");
}

TEST_P(FastPaths, MaxPool2dFastPathMatchesAnOrderedScan) {
  // Few distinct values make ties common; a sprinkling of NaN and infinities.
  Tensor x = floor(rand({3, 5, 9, 8}) * 4);
  std::vector<float> xv = x.to_vector<float>();
  for (size_t i = 0; i < xv.size(); i += 37) xv[i] = NAN;
  for (size_t i = 5; i < xv.size(); i += 53) xv[i] = -INFINITY;
  for (size_t i = 11; i < xv.size(); i += 61) xv[i] = INFINITY;
  Tensor xs = Tensor(xv, x.shape());
  check_max_pool(xs, 2, 2);
  check_max_pool(xs, 3, 2);
  check_max_pool(xs, 2, 1);
  check_max_pool(randn({2, 3, 7, 7}, f64), 2, 2);
}

TEST_P(FastPaths, ScalarOperandsBroadcastOverLongRuns) {
  // Lengths around the chunk size of the broadcast loop.
  for (int64_t n : {1, 255, 256, 257, 1000, 70001}) {
    Tensor a = randn({n});
    std::vector<double> av = values(a), prod, sel, cmp;
    for (double v : av) {
      prod.push_back(static_cast<float>(v) * 3.0f);
      sel.push_back(v > 0 ? v : -1.5);
      cmp.push_back(v >= 0.25);
    }
    expect_close(a * 3, prod, 1e-6, "a * 3");
    expect_close(where(a > 0, a, -1.5), sel, 0, "where");
    expect_close((a >= 0.25).cast(f32), cmp, 0, "a >= 0.25");
  }
  Tensor ints = arange(0, 1000, 1, i64);
  std::vector<double> iv;
  for (int i = 0; i < 1000; ++i) iv.push_back(i >= 500 ? i : -1);
  expect_close(where(ints >= 500, ints, -1), iv, 0, "int where");
}

TEST_P(FastPaths, RandomStreamsKeepTheirValues) {
  // Values recorded from the generator before the per-thread streams; each thread's share of a
  // tensor must draw the same words.
  Generator g(123);
  expect_close(rand({6}, f32, &g),
               {0.933052063, 0.251211405, 0.360350162, 0.793603897, 0.827707708, 0.301033705}, 1e-6,
               "rand");
  expect_close(randn({6}, f32, &g),
               {-1.6624589, -0.521155536, -0.705432296, -1.13179493, -0.905079126, 0.775797009},
               1e-6, "randn");
  expect_close(randint(0, 1000, {6}, i64, &g), {271, 403, 856, 892, 185, 44}, 0, "randint");
  // A long draw (split over threads) starts with the short one's values.
  Generator a(9), b(9);
  std::vector<double> small = values(rand({1000}, f32, &a)),
                      large = values(rand({300001}, f32, &b));
  for (size_t i = 0; i < small.size(); ++i) EXPECT_EQ(small[i], large[i]) << i;
}

TEST_P(FastPaths, DropoutKeepsOrScalesAndPassesTheSameMaskBack) {
  Generator g(7);
  Tensor x = ones({3, 4});
  expect_close(dropout(x, 0.5, true, &g), {0, 2, 2, 2, 2, 0, 2, 2, 2, 0, 2, 0}, 0, "recorded");
  Tensor v = (randn({50, 40}) + 3).requires_grad_();
  Tensor y = dropout(v, 0.3, true);
  y.backward(ones(y.shape()));
  std::vector<double> yv = values(y), vv = values(v), gv = values(v.grad());
  int64_t kept = 0;
  for (size_t i = 0; i < yv.size(); ++i) {
    const bool keep = yv[i] != 0;
    kept += keep;
    EXPECT_NEAR(yv[i], keep ? vv[i] / 0.7 : 0, 1e-5) << i;
    EXPECT_NEAR(gv[i], keep ? 1 / 0.7 : 0, 1e-6) << i;
  }
  EXPECT_NEAR(static_cast<double>(kept) / 2000, 0.7, 0.05);
  expect_tensors_close(dropout(v, 0.3, false), v, 0, "eval");
}

INSTANTIATE_TEST_SUITE_P(Backends, FastPaths, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace crisp::testing
