// Reduction tests: values against naive float64 loops and hand-computed numbers, strided inputs,
// dtypes, empty tensors, gradients by finite differences and argument errors.
#include <limits>
#include <numeric>

#include "testing.h"

namespace crisp::testing {
namespace {

class Reduce : public BackendTest {};
INSTANTIATE_TEST_SUITE_P(Backends, Reduce, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

// Folds x (row-major, shape s) over axes with f, starting from init; the result keeps the
// reduced axes as size 1.
template <class F>
std::vector<double> naive_reduce(const std::vector<double>& x, const Shape& s,
                                 const std::vector<int64_t>& axes, double init, F f) {
  Shape os = s;
  for (int64_t a : axes) os[static_cast<size_t>(a)] = 1;
  std::vector<double> out(static_cast<size_t>(numel_of(os)), init);
  for (size_t i = 0; i < x.size(); ++i) {
    int64_t rem = static_cast<int64_t>(i), o = 0, mul = 1;
    for (size_t d = s.size(); d-- > 0;) {
      const int64_t c = rem % s[d];
      rem /= s[d];
      o += (os[d] == 1 ? 0 : c) * mul;
      mul *= os[d];
    }
    out[static_cast<size_t>(o)] = f(out[static_cast<size_t>(o)], x[i]);
  }
  return out;
}

std::vector<std::vector<int64_t>> axis_subsets(int64_t ndim) {
  std::vector<std::vector<int64_t>> out;
  for (int64_t m = 1; m < (1 << ndim); ++m) {
    std::vector<int64_t> a;
    for (int64_t d = 0; d < ndim; ++d)
      if (m & (1 << d)) a.push_back(d);
    out.push_back(a);
  }
  return out;
}

TEST_P(Reduce, SumOverEveryAxisSetMatchesNaiveLoop) {
  const Shape s{3, 4, 5};
  Tensor x = randn(s, f64);
  std::vector<double> xv = values(x);
  for (const auto& axes : axis_subsets(3)) {
    auto ref = naive_reduce(xv, s, axes, 0, [](double a, double b) { return a + b; });
    Tensor k = sum(x, Axes(axes), true);
    Shape ks = s;
    for (int64_t a : axes) ks[static_cast<size_t>(a)] = 1;
    EXPECT_EQ(k.shape(), ks);
    expect_close(k, ref, 1e-12);
    expect_close(sum(x, Axes(axes)), ref, 1e-12);
  }
  EXPECT_EQ(sum(x).shape(), Shape{});
  EXPECT_EQ(sum(x, {0, 2}).shape(), Shape{4});
  EXPECT_EQ(x.sum(-1, true).shape(), (Shape{3, 4, 1}));
}

TEST_P(Reduce, SumOfPermutedAndBroadcastViewsMatchesNaiveLoop) {
  Tensor base = randn({4, 6, 5}, f32);
  Tensor x = permute(base, {2, 0, 1});  // [5, 4, 6], strided
  Tensor xc = x.contiguous();
  std::vector<double> xv = values(xc);
  for (const auto& axes : axis_subsets(3)) {
    auto ref = naive_reduce(xv, {5, 4, 6}, axes, 0, [](double a, double b) { return a + b; });
    expect_close(sum(x, Axes(axes), true), ref, 1e-5);
    expect_close(max(x, Axes(axes), true),
                 naive_reduce(xv, {5, 4, 6}, axes, -INFINITY,
                              [](double a, double b) { return std::max(a, b); }),
                 1e-6);
  }
  // A stride-0 (broadcast) axis.
  Tensor b = expand(Tensor({1.0, 2.0, 3.0}, {3, 1}), {3, 4});
  expect_close(sum(b, 1), {4, 8, 12});
  expect_close(sum(b, 0), {6, 6, 6, 6});
  // A reversed (negative-stride-free) column view: every other column.
  Tensor m = Tensor({1.0, 2.0, 3.0, 4.0, 5.0, 6.0}, {2, 3});
  expect_close(sum(m[Ellipsis, Slice(_, _, 2)], 1), {4, 10});
}

TEST_P(Reduce, SumOfMillionFloat32IsAccurate) {
  const int64_t n = 1 << 20;
  Tensor x = rand({n}, f32);
  std::vector<float> xv = x.to_vector<float>();
  double ref = 0;
  for (float v : xv) ref += v;
  const double got = sum(x).item<float>();
  EXPECT_NEAR(got, ref, 1e-5 * ref);
  // Columns of a tall matrix (the outer-reduction path) and rows (the inner one).
  Tensor m = reshape(x, {1024, 1024});
  std::vector<double> cols(1024, 0), rows(1024, 0);
  for (size_t i = 0; i < xv.size(); ++i) {
    cols[i % 1024] += xv[i];
    rows[i / 1024] += xv[i];
  }
  expect_close(sum(m, 0), cols, 1e-5);
  expect_close(sum(m, 1), rows, 1e-5);
  expect_close(
      mean(m, 0),
      [&] {
        for (double& c : cols) c /= 1024;
        return cols;
      }(),
      1e-5);
}

TEST_P(Reduce, IntegerSumsKeepDtypeAndBoolsCount) {
  Tensor m({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor s = m.sum(1);
  EXPECT_EQ(s.dtype(), i64);
  EXPECT_EQ(s.to_vector<int64_t>(), (std::vector<int64_t>{6, 15}));
  EXPECT_EQ(m.prod(0).to_vector<int64_t>(), (std::vector<int64_t>{4, 10, 18}));
  Tensor big = full({3}, 3e9, i64);
  EXPECT_EQ(sum(big).item<int64_t>(), int64_t{9000000000});
  Tensor i32s = Tensor({1, 2, 3}, {3}, i32);
  EXPECT_EQ(sum(i32s).dtype(), i32);
  Tensor b = Tensor({1, 0, 1, 1}, {4}, bool_);
  EXPECT_EQ(sum(b).dtype(), i64);
  EXPECT_EQ(sum(b).item<int64_t>(), 3);
  EXPECT_EQ(max(m).item<int64_t>(), 6);
  EXPECT_EQ(min(m, 0).to_vector<int64_t>(), (std::vector<int64_t>{1, 2, 3}));
}

TEST_P(Reduce, HalfPrecisionSumsAccumulateWide) {
  for (DType dt : {f16, bf16}) {
    Tensor x = ones({4096}, dt);
    // Accumulating in the 16-bit type itself would stall at 2048 (f16) or 256 (bf16).
    EXPECT_EQ(sum(x).item<float>(), 4096.f) << dtype_name(dt);
    expect_close(mean(reshape(x, {64, 64}), 1), std::vector<double>(64, 1.0));
  }
}

TEST_P(Reduce, EmptyReductions) {
  Tensor e = zeros({0, 3});
  expect_close(sum(e, 0), {0, 0, 0});
  EXPECT_EQ(sum(e).item<float>(), 0.f);
  expect_close(prod(e, 0), {1, 1, 1});
  EXPECT_EQ(sum(e, 1).shape(), Shape{0});
  EXPECT_EQ(max(e, 1).shape(), Shape{0});
  EXPECT_TRUE(all(e).item<bool>());
  EXPECT_FALSE(any(e).item<bool>());
  EXPECT_EQ(logsumexp(e, 0).to_vector<float>()[0], -INFINITY);
  EXPECT_CRISP_ERROR(max(e, 0), "cannot reduce axis 0 of size 0");
  EXPECT_CRISP_ERROR(argmax(e), "empty");
  EXPECT_TRUE(std::isnan(mean(e).item<float>()));
}

TEST_P(Reduce, ZeroDimensionalTensorsReduceToThemselves) {
  Tensor s = scalar(2.5);
  EXPECT_EQ(sum(s).item<float>(), 2.5f);
  EXPECT_EQ(sum(s, 0).shape(), Shape{});
  EXPECT_EQ(max(s, -1, true).item<float>(), 2.5f);
  EXPECT_EQ(argmax(s).item<int64_t>(), 0);
}

TEST_P(Reduce, MeanVarStdMatchHandValues) {
  Tensor x({1.0, 2.0, 3.0, 4.0, 6.0, 8.0}, {2, 3});
  expect_close(mean(x), {4});
  expect_close(mean(x, 1), {2, 6});
  expect_close(var(x, 1), {1, 4});
  expect_close(var(x, 1, 0), {2.0 / 3, 8.0 / 3});
  expect_close(std(x, 1), {1, 2});
  expect_close(var(x), {(9 + 4 + 1 + 0 + 4 + 16) / 5.0});
  expect_close(x.std(0, 1, true), {std::sqrt(4.5), std::sqrt(8.0), std::sqrt(12.5)});
  EXPECT_EQ(x.std(0, 1, true).shape(), (Shape{1, 3}));
  // Variance of large values with a small spread: one-pass formulas lose it all in float32.
  Tensor big = Tensor({1e4f + 1, 1e4f + 2, 1e4f + 3}, {3});
  expect_close(var(big), {1}, 1e-4);
  EXPECT_CRISP_ERROR(mean(Tensor({1, 2})), "int64");
}

TEST_P(Reduce, ProdMaxMinArgMatchHandValues) {
  Tensor x({2.0, -1.0, 4.0, 3.0, 5.0, -6.0}, {2, 3});
  expect_close(prod(x, 1), {-8, -90});
  expect_close(prod(x), {720});
  expect_close(max(x, 0), {3, 5, 4});
  expect_close(min(x, 1, true), {-1, -6});
  EXPECT_EQ(argmax(x).item<int64_t>(), 4);
  EXPECT_EQ(argmax(x, 1).to_vector<int64_t>(), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(argmin(x, 0).to_vector<int64_t>(), (std::vector<int64_t>{0, 0, 1}));
  EXPECT_EQ(argmax(x, 1, true).shape(), (Shape{2, 1}));
  EXPECT_EQ(argmax(x, {}, true).shape(), (Shape{1, 1}));
  // Ties go to the first position; a NaN counts as the maximum.
  EXPECT_EQ(argmax(Tensor({1.f, 5.f, 5.f, 2.f})).item<int64_t>(), 1);
  EXPECT_EQ(argmin(Tensor({3, 1, 1})).item<int64_t>(), 1);
  EXPECT_EQ(argmax(Tensor({1.f, NAN, 7.f})).item<int64_t>(), 1);
  EXPECT_TRUE(std::isnan(max(Tensor({1.f, NAN, 7.f})).item<float>()));
  // A long row (the threaded path) keeps the first of equal maxima.
  Tensor big = zeros({300000});
  big = big.index_put({Slice(200000, 200001)}, 1.0);
  big = big.index_put({Slice(250000, 250001)}, 1.0);
  EXPECT_EQ(argmax(big).item<int64_t>(), 200000);
}

TEST_P(Reduce, AllAndAnyGiveBools) {
  Tensor b({1, 0, 1, 1, 1, 1}, {2, 3}, bool_);
  EXPECT_EQ(all(b).dtype(), bool_);
  EXPECT_FALSE(all(b).item<bool>());
  EXPECT_EQ(all(b, 1).to_vector<bool>(), (std::vector<bool>{false, true}));
  EXPECT_EQ(any(b, 0).to_vector<bool>(), (std::vector<bool>{true, true, true}));
  EXPECT_EQ(any(Tensor({0.f, 0.f, 2.f}, {3})).item<bool>(), true);
  EXPECT_EQ(all(Tensor({0, 1}), 0, true).to_vector<bool>(), (std::vector<bool>{false}));
}

TEST_P(Reduce, LogsumexpIsStableAndMatchesFloat64) {
  Tensor x = randn({4, 6}, f64);
  std::vector<double> xv = values(x), ref(4);
  for (int r = 0; r < 4; ++r) {
    double s = 0;
    for (int c = 0; c < 6; ++c) s += std::exp(xv[r * 6 + c]);
    ref[r] = std::log(s);
  }
  expect_close(logsumexp(x, 1), ref, 1e-12);
  expect_close(logsumexp(Tensor({1000.f, 1000.f}, {2})), {1000 + std::log(2.0)}, 1e-6);
  expect_close(logsumexp(Tensor({-1000.f, -1000.f}, {2})), {-1000 + std::log(2.0)}, 1e-6);
  EXPECT_EQ(logsumexp(Tensor({-INFINITY, -INFINITY})).item<double>(), -INFINITY);
}

TEST_P(Reduce, GradientsMatchFiniteDifferences) {
  using In = const std::vector<Tensor>&;
  check_gradients([](In in) { return sum(in[0], {0, 2}); }, {randn({2, 3, 4})});
  check_gradients([](In in) { return sum(in[0], 1, true); }, {randn({2, 3})});
  check_gradients([](In in) { return sum(in[0]); }, {randn({2, 3})});
  check_gradients([](In in) { return mean(in[0], -1); }, {randn({3, 4})});
  check_gradients([](In in) { return prod(in[0], 1); }, {randn({3, 4})});
  check_gradients([](In in) { return max(in[0], 0); }, {randn({4, 3})});
  check_gradients([](In in) { return min(in[0], {0, 1}); }, {randn({3, 4})});
  check_gradients([](In in) { return var(in[0], 1); }, {randn({3, 5})});
  check_gradients([](In in) { return std(in[0], 0, 0); }, {randn({4, 3})});
  check_gradients([](In in) { return logsumexp(in[0], 1); }, {randn({3, 4})});
  check_gradients([](In in) { return logsumexp(in[0]); }, {randn({3, 4})});
  check_gradients([](In in) { return sum(permute(in[0], {1, 0}), 1); }, {randn({3, 4})});
}

TEST_P(Reduce, ProdGradientHandlesZeros) {
  // Rows: no zero, one zero, two zeros. prod is linear in each element, so finite differences
  // are exact even at the zeros.
  Tensor x({1.5, -2.0, 0.5, 3.0, 0.0, 2.0, 0.0, 4.0, 0.0}, {3, 3});
  check_gradients([](const std::vector<Tensor>& in) { return prod(in[0], 1); }, {x});
  Tensor v = Tensor({3.0, 0.0, 2.0}).requires_grad_();
  prod(v).backward();
  expect_close(v.grad(), {0, 6, 0});
}

TEST_P(Reduce, MaxGradientSplitsTiesEvenly) {
  Tensor x = Tensor({1.0, 3.0, 3.0, 2.0}).requires_grad_();
  max(x).backward();
  expect_close(x.grad(), {0, 0.5, 0.5, 0});
  Tensor y = Tensor({2.0, 1.0, 2.0, 5.0}, {2, 2}).requires_grad_();
  min(y, 0).sum().backward();
  expect_close(y.grad(), {0.5, 1, 0.5, 0});
}

TEST_P(Reduce, ArgumentErrors) {
  Tensor x = zeros({2, 3});
  EXPECT_CRISP_ERROR(sum(x, 2), "axis 2 is out of range for a tensor with 2 dimensions");
  EXPECT_CRISP_ERROR(sum(x, {1, -1}), "is repeated");
  EXPECT_CRISP_ERROR(argmax(x, -3), "out of range");
  EXPECT_CRISP_ERROR(var(x, 1, -1), "correction must be non-negative");
  EXPECT_CRISP_ERROR(logsumexp(Tensor({1, 2})), "expected a floating-point tensor");
  EXPECT_CRISP_ERROR(argmax(Tensor({1, 0}, {2}, bool_)), "bool");
}

}  // namespace
}  // namespace crisp::testing
