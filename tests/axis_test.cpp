// Tests of ops along one axis: softmax/log_softmax, cumsum/cumprod, sort/argsort/topk; values
// against hand numbers and float64 loops, stability, gradients by finite differences, errors.
#include <cmath>
#include <limits>

#include "testing.h"

namespace crisp::testing {
namespace {

class Axis : public BackendTest {};
INSTANTIATE_TEST_SUITE_P(Backends, Axis, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

TEST_P(Axis, SoftmaxMatchesFloat64Reference) {
  Tensor x = randn({3, 5}, f64);
  std::vector<double> xv = values(x), ref(15), lref(15);
  for (int r = 0; r < 3; ++r) {
    double s = 0;
    for (int c = 0; c < 5; ++c) s += std::exp(xv[r * 5 + c]);
    for (int c = 0; c < 5; ++c) {
      ref[r * 5 + c] = std::exp(xv[r * 5 + c]) / s;
      lref[r * 5 + c] = xv[r * 5 + c] - std::log(s);
    }
  }
  expect_close(softmax(x), ref, 1e-12);
  expect_close(log_softmax(x, 1), lref, 1e-12);
  // Along the first axis (strided lines) equals the transpose's last-axis softmax.
  expect_tensors_close(softmax(x, 0), transpose(softmax(transpose(x, 0, 1)), 0, 1), 1e-12);
  expect_tensors_close(x.cast(f32).softmax(0), softmax(x, 0), 1e-6);
}

TEST_P(Axis, SoftmaxIsStableForLargeLogits) {
  Tensor x({1000.f, 1001.f, 1002.f}, {3});
  const double e1 = std::exp(-1.0), e2 = std::exp(-2.0), s = 1 + e1 + e2;
  expect_close(softmax(x), {e2 / s, e1 / s, 1 / s});
  expect_close(log_softmax(x), {-2 - std::log(s), -1 - std::log(s), -std::log(s)}, 1e-5);
  Tensor neg({-1e4f, 0.f}, {2});
  expect_close(log_softmax(neg), {-1e4, 0}, 1e-6);
  expect_close(logsumexp(Tensor({1000.0, 1000.0})), {1000 + std::log(2.0)}, 1e-12);
  expect_close(softmax(Tensor({1.f, 2.f}, {2}, f16)).cast(f32),
               {1 / (1 + std::exp(1.0)), 1 / (1 + std::exp(-1.0))}, 2e-3);
}

TEST_P(Axis, SoftmaxGradientsMatchFiniteDifferences) {
  check_gradients([](const std::vector<Tensor>& in) { return softmax(in[0], -1); },
                  {randn({3, 4})});
  check_gradients([](const std::vector<Tensor>& in) { return softmax(in[0], 0); }, {randn({3, 4})});
  check_gradients([](const std::vector<Tensor>& in) { return log_softmax(in[0], 1); },
                  {randn({2, 5, 3})});
  check_gradients([](const std::vector<Tensor>& in) { return log_softmax(in[0].t(), 0); },
                  {randn({3, 4})});
}

TEST_P(Axis, CumsumAndCumprodMatchHandValues) {
  Tensor x({1.0, 2.0, 3.0, 4.0, 5.0, 6.0}, {2, 3});
  expect_close(cumsum(x, 1), {1, 3, 6, 4, 9, 15});
  expect_close(cumsum(x, 0), {1, 2, 3, 5, 7, 9});
  expect_close(cumprod(x, 1), {1, 2, 6, 4, 20, 120});
  expect_close(cumprod(x, -2), {1, 2, 3, 4, 10, 18});
  Tensor i({1, 2, 3}, {3});
  EXPECT_EQ(cumsum(i, 0).dtype(), i64);
  EXPECT_EQ(cumsum(i, 0).to_vector<int64_t>(), (std::vector<int64_t>{1, 3, 6}));
  EXPECT_EQ(cumsum(Tensor({1, 1, 0}, {3}, bool_), 0).to_vector<int64_t>(),
            (std::vector<int64_t>{1, 2, 2}));
  EXPECT_EQ(cumsum(zeros({0, 2}), 0).shape(), (Shape{0, 2}));
}

TEST_P(Axis, CumsumAndCumprodGradientsMatchFiniteDifferences) {
  check_gradients([](const std::vector<Tensor>& in) { return cumsum(in[0], 1); }, {randn({3, 4})});
  check_gradients([](const std::vector<Tensor>& in) { return cumsum(in[0], 0); }, {randn({3, 4})});
  check_gradients([](const std::vector<Tensor>& in) { return cumprod(in[0], 1); }, {randn({3, 5})});
  check_gradients([](const std::vector<Tensor>& in) { return cumprod(in[0], 0); }, {randn({4, 2})});
}

TEST_P(Axis, CumprodGradientHandlesZeros) {
  // One zero, two zeros, a zero first and a zero last; finite differences are exact here
  // because cumprod is linear in each single element.
  Tensor x = Tensor({1.5, 0.0, 2.0, -1.0, 0.0, 3.0, 0.0, 0.5, 2.0, 0.7, -1.2, 0.0}, {3, 4});
  check_gradients([](const std::vector<Tensor>& in) { return cumprod(in[0], 1); }, {x});
  // By hand: y = [2, 0, 0] for x = [2, 0, 3]; dy/dx with g = 1: [0, 2 + 2*3, 0].
  Tensor v = Tensor({2.0, 0.0, 3.0}).requires_grad_();
  cumprod(v, 0).sum().backward();
  expect_close(v.grad(), {1, 8, 0});
}

TEST_P(Axis, SortIsStableAndPutsNaNLast) {
  Tensor x({3.f, 1.f, 2.f, 1.f, NAN, 0.f}, {6});
  SortResult s = sort(x);
  expect_close(s.values, {0, 1, 1, 2, 3, NAN});
  EXPECT_EQ(s.indices.to_vector<int64_t>(), (std::vector<int64_t>{5, 1, 3, 2, 0, 4}));
  SortResult d = sort(x, 0, true);
  expect_close(d.values, {NAN, 3, 2, 1, 1, 0});
  EXPECT_EQ(d.indices.to_vector<int64_t>(), (std::vector<int64_t>{4, 0, 2, 1, 3, 5}));
  Tensor m({3, 1, 2, 9, 8, 7}, {2, 3});
  EXPECT_EQ(argsort(m).to_vector<int64_t>(), (std::vector<int64_t>{1, 2, 0, 2, 1, 0}));
  EXPECT_EQ(argsort(m, 0, true).to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 1, 0, 0, 0}));
  EXPECT_EQ(sort(m, 0).values.to_vector<int64_t>(), (std::vector<int64_t>{3, 1, 2, 9, 8, 7}));
}

TEST_P(Axis, TopkPicksLargestAndSmallest) {
  Tensor x({4.0, 9.0, 1.0, 7.0, 3.0, 8.0}, {2, 3});
  SortResult t = topk(x, 2);
  EXPECT_EQ(t.values.shape(), (Shape{2, 2}));
  expect_close(t.values, {9, 4, 8, 7});
  EXPECT_EQ(t.indices.to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 2, 0}));
  SortResult s = topk(x, 1, 0, false);
  expect_close(s.values, {4, 3, 1});
  EXPECT_EQ(s.indices.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 0}));
  EXPECT_EQ(topk(x, 0).values.shape(), (Shape{2, 0}));
  EXPECT_CRISP_ERROR(topk(x, 4), "k 4 is out of range for an axis of size 3");
  EXPECT_CRISP_ERROR(sort(x, 2), "axis 2 is out of range");
}

TEST_P(Axis, SortAndTopkGradientsFlowToPickedPositions) {
  check_gradients([](const std::vector<Tensor>& in) { return sort(in[0], 1).values; },
                  {randn({3, 5})});
  check_gradients([](const std::vector<Tensor>& in) { return sort(in[0], 0, true).values; },
                  {randn({4, 3})});
  check_gradients([](const std::vector<Tensor>& in) { return topk(in[0], 2, 1).values; },
                  {randn({3, 5})});
  check_gradients([](const std::vector<Tensor>& in) { return topk(in[0], 3, 0, false).values; },
                  {randn({4, 2})});
}

TEST_P(Axis, ErrorsNameTheProblem) {
  EXPECT_CRISP_ERROR(softmax(Tensor({1, 2}), 0), "expected a floating-point tensor");
  EXPECT_CRISP_ERROR(log_softmax(zeros({2, 3}), 2), "axis 2 is out of range");
  EXPECT_CRISP_ERROR(cumsum(zeros({2}), 1), "axis 1 is out of range");
}

}  // namespace
}  // namespace crisp::testing
