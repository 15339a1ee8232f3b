// Core behaviour: construction, dtypes, reading, errors and traces, autograd mechanics.
#include <thread>

#include "testing.h"

namespace crisp::testing {

INSTANTIATE_TEST_SUITE_P(Backends, BackendTest, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

TEST_P(BackendTest, ConstructsFromValuesAndShape) {
  Tensor m({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(m.dtype(), i64);
  EXPECT_EQ(m.shape(), (Shape{2, 3}));
  EXPECT_EQ(m.to_vector<int64_t>(), (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  Tensor f({1.f, 2.f, 3.f}, {3}, f32);
  EXPECT_EQ(f.dtype(), f32);
  EXPECT_EQ(Tensor({1.0, 2.0}).dtype(), f64);
  EXPECT_EQ(Tensor({1.5, 2.5}, {2}, bf16).to_vector<float>(), (std::vector<float>{1.5f, 2.5f}));
}

TEST_P(BackendTest, CreationOps) {
  expect_close(zeros({2, 2}), {0, 0, 0, 0});
  expect_close(full({3}, 2.5), {2.5, 2.5, 2.5});
  expect_close(arange(0, 5, 2), {0, 2, 4});
  EXPECT_EQ(arange(4).dtype(), i64);
  expect_close(linspace(0, 1, 5), {0, 0.25, 0.5, 0.75, 1});
  expect_close(eye(2, 3), {1, 0, 0, 0, 1, 0});
}

TEST_P(BackendTest, RandomIsReproducibleAndResumable) {
  manual_seed(42);
  std::vector<float> a = rand({100}).to_vector<float>();
  manual_seed(42);
  EXPECT_EQ(rand({100}).to_vector<float>(), a);
  Generator g(7);
  auto st = g.state();
  std::vector<float> b = randn({50}, f32, &g).to_vector<float>();
  g.set_state(st);
  EXPECT_EQ(randn({50}, f32, &g).to_vector<float>(), b);
  double mean = 0, sq = 0;
  std::vector<double> n = randn({20000}, f64).to_vector<double>();
  for (double v : n) mean += v / n.size();
  for (double v : n) sq += (v - mean) * (v - mean) / n.size();
  EXPECT_NEAR(mean, 0, 0.03);
  EXPECT_NEAR(sq, 1, 0.05);
  for (float v : a) {
    EXPECT_GE(v, 0.f);
    EXPECT_LT(v, 1.f);
  }
  for (int64_t v : randint(3, 7, {200}).to_vector<int64_t>()) {
    EXPECT_GE(v, 3);
    EXPECT_LT(v, 7);
  }
}

TEST_P(BackendTest, BroadcastingArithmetic) {
  Tensor a({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3});
  Tensor b({10.f, 20.f, 30.f}, {3});
  expect_close(a + b, {11, 22, 33, 14, 25, 36});
  expect_close(a * 2, {2, 4, 6, 8, 10, 12});
  expect_close(1 - a, {0, -1, -2, -3, -4, -5});
  expect_close(a / b.reshape({1, 3}), {0.1, 0.1, 0.1, 0.4, 0.25, 0.2});
  EXPECT_EQ((a > 3).dtype(), bool_);
  EXPECT_EQ((a > 3).to_vector<bool>(), (std::vector<bool>{false, false, false, true, true, true}));
}

TEST_P(BackendTest, DtypeMismatchIsAnErrorAtTheUsersLine) {
  Tensor f({1.f, 2.f, 3.f});
  Tensor g = f.cast(i64);
  EXPECT_CRISP_ERROR(f + g, "dtype mismatch: float32 and int64");
  EXPECT_CRISP_ERROR(Tensor({1, 2, 3}, {2, 2}), "3 values do not fill shape [2, 2]");
}

TEST_P(BackendTest, ValueSemantics) {
  Tensor x({1.f, 2.f});
  Tensor y = x;
  y += 1;
  expect_close(x, {1, 2});
  expect_close(y, {2, 3});
}

TEST_P(BackendTest, BackwardThroughArithmetic) {
  std::optional<Tensor> gx;
  Tensor x = Tensor({1.0, 2.0, 3.0}).on_grad([&](const Tensor& g) { gx = g; });
  Tensor y = x * x + exp(x);
  y.backward(ones({3}, f64));
  ASSERT_TRUE(gx.has_value());
  expect_close(*gx, {2 + std::exp(1.0), 4 + std::exp(2.0), 6 + std::exp(3.0)});
}

TEST_P(BackendTest, LeafGradientsAccumulate) {
  Tensor w = Tensor({0.5f, -1.f}).requires_grad_();
  (w * 3).backward(ones({2}));
  (w * w).backward(ones({2}));
  expect_close(w.grad(), {3 + 1.0, 3 - 2.0});
}

TEST_P(BackendTest, GradOfChosenTensors) {
  Tensor a = Tensor({2.0}).requires_grad_();
  Tensor b = Tensor({5.0}).requires_grad_();
  auto g = grad(a * b + a, {a, b});
  expect_close(g[0], {6});
  expect_close(g[1], {2});
  EXPECT_FALSE(a.grad().defined());
}

TEST_P(BackendTest, DeepGraphDoesNotOverflowTheStack) {
  Tensor x = Tensor({1.0}).requires_grad_();
  Tensor y = x;
  for (int i = 0; i < 10000; ++i) y = y * 1.0001;
  y.backward();
  expect_close(x.grad(), {std::pow(1.0001, 10000)}, 1e-9);
  Tensor z = x;
  for (int i = 0; i < 10000; ++i) z = z + 1;  // dropped without backward
}

TEST_P(BackendTest, NoGradScope) {
  Tensor x = Tensor({1.0}).requires_grad_();
  NoGrad ng;
  EXPECT_FALSE((x * 2).requires_grad());
}

TEST_P(BackendTest, TensorsWorkOnAnyThread) {
  Tensor x({1.f, 2.f, 3.f});
  Tensor y;
  std::thread t([&] { y = x * 2; });
  t.join();
  expect_close(y, {2, 4, 6});
}

TEST_P(BackendTest, UnaryGradients) {
  auto x = uniform({5}, 0.5, 2.0, f64);
  check_gradients([](const std::vector<Tensor>& v) { return exp(v[0]) * log(v[0]) + sqrt(v[0]); },
                  {x});
}

}  // namespace crisp::testing
