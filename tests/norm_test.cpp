// Normalization tests: layer, RMS, group and batch norm against naive float64 loops, their
// gradients, running statistics and argument errors.
#include <cmath>

#include "testing.h"

namespace crisp::testing {
namespace {

class Norm : public BackendTest {};

// Normalizes each consecutive block of `len` values (biased variance), then applies
// w[chan(i)] and b[chan(i)] per flat index i.
std::vector<double> naive_rows(const std::vector<double>& x, int64_t len, bool center, double eps,
                               const std::function<double(int64_t)>& w,
                               const std::function<double(int64_t)>& b) {
  std::vector<double> y(x.size());
  for (size_t r = 0; r < x.size() / size_t(len); ++r) {
    double m = 0, v = 0;
    for (int64_t i = 0; i < len; ++i) m += x[r * len + i];
    m = center ? m / len : 0;
    for (int64_t i = 0; i < len; ++i) v += (x[r * len + i] - m) * (x[r * len + i] - m);
    const double s = 1 / std::sqrt(v / len + eps);
    for (int64_t i = 0; i < len; ++i) {
      const int64_t j = int64_t(r) * len + i;
      y[j] = (x[j] - m) * s * w(j) + b(j);
    }
  }
  return y;
}

TEST_P(Norm, LayerNormMatchesNaiveLoop) {
  Tensor x = randn({3, 2, 4}, f64), w = randn({2, 4}, f64), b = randn({2, 4}, f64);
  std::vector<double> wv = values(w), bv = values(b);
  auto expected = naive_rows(
      values(x), 8, true, 1e-5, [&](int64_t j) { return wv[j % 8]; },
      [&](int64_t j) { return bv[j % 8]; });
  expect_close(layer_norm(x, {2, 4}, w, b), expected, 1e-10);
  expect_close(layer_norm(x.cast(f32), {2, 4}, w.cast(f32), b.cast(f32)), expected, 1e-4);
  expect_close(layer_norm(x.cast(bf16), {2, 4}, w.cast(bf16), b.cast(bf16)), expected, 1e-1);
  auto plain = naive_rows(
      values(x), 4, true, 1e-5, [](int64_t) { return 1.0; }, [](int64_t) { return 0.0; });
  expect_close(layer_norm(x, {4}), plain, 1e-10);
}

TEST_P(Norm, LayerNormGradientMatchesFiniteDifferences) {
  check_gradients(
      [](const std::vector<Tensor>& in) { return layer_norm(in[0], {5}, in[1], in[2]); },
      {randn({3, 5}), randn({5}), randn({5})});
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return layer_norm(in[0], {2, 3});
      },
      {randn({2, 2, 3})});
}

TEST_P(Norm, RmsNormMatchesNaiveLoopAndGradients) {
  Tensor x = randn({4, 6}, f64), w = randn({6}, f64);
  std::vector<double> wv = values(w);
  expect_close(rms_norm(x, {6}, w, 1e-6),
               naive_rows(
                   values(x), 6, false, 1e-6, [&](int64_t j) { return wv[j % 6]; },
                   [](int64_t) { return 0.0; }),
               1e-10);
  check_gradients([](const std::vector<Tensor>& in) { return rms_norm(in[0], {4}, in[1]); },
                  {randn({3, 4}), randn({4})});
  check_gradients([](const std::vector<Tensor>& in) { return rms_norm(in[0], {4}); },
                  {randn({3, 4})});
}

TEST_P(Norm, GroupNormMatchesNaiveLoopAndGradients) {
  // [N=2, C=6, 2x2] in 3 groups: each group is 2 channels x 4 positions.
  Tensor x = randn({2, 6, 2, 2}, f64), w = randn({6}, f64), b = randn({6}, f64);
  std::vector<double> wv = values(w), bv = values(b);
  auto chan = [](int64_t j) { return (j / 4) % 6; };
  expect_close(group_norm(x, 3, w, b),
               naive_rows(
                   values(x), 8, true, 1e-5, [&](int64_t j) { return wv[chan(j)]; },
                   [&](int64_t j) { return bv[chan(j)]; }),
               1e-10);
  check_gradients([](const std::vector<Tensor>& in) { return group_norm(in[0], 2, in[1], in[2]); },
                  {randn({2, 4, 3}), randn({4}), randn({4})});
  check_gradients([](const std::vector<Tensor>& in) { return group_norm(in[0], 3); },
                  {randn({2, 3, 2})});
}

TEST_P(Norm, BatchNormTrainingUsesBatchStatisticsAndUpdatesRunningStats) {
  Tensor x = randn({4, 3, 5}, f64), w = randn({3}, f64), b = randn({3}, f64);
  std::vector<double> xv = values(x), wv = values(w), bv = values(b);
  std::vector<double> expected(xv.size()), mean(3, 0), var(3, 0);
  for (int c = 0; c < 3; ++c) {
    for (int n = 0; n < 4; ++n)
      for (int i = 0; i < 5; ++i) mean[c] += xv[(n * 3 + c) * 5 + i] / 20;
    for (int n = 0; n < 4; ++n)
      for (int i = 0; i < 5; ++i) var[c] += std::pow(xv[(n * 3 + c) * 5 + i] - mean[c], 2) / 20;
    for (int n = 0; n < 4; ++n)
      for (int i = 0; i < 5; ++i) {
        const int j = (n * 3 + c) * 5 + i;
        expected[j] = (xv[j] - mean[c]) / std::sqrt(var[c] + 1e-5) * wv[c] + bv[c];
      }
  }
  Tensor rm = zeros({3}, f64), rv = ones({3}, f64);
  expect_close(batch_norm(x, w, b, true, {&rm, &rv, 0.1}), expected, 1e-10);
  std::vector<double> rme, rve;
  for (int c = 0; c < 3; ++c) {
    rme.push_back(0.1 * mean[c]);
    rve.push_back(0.9 + 0.1 * var[c] * 20 / 19);  // unbiased, as PyTorch
  }
  expect_close(rm, rme, 1e-10);
  expect_close(rv, rve, 1e-10);
  // Eval mode normalizes with the running statistics.
  std::vector<double> ev(xv.size());
  for (size_t j = 0; j < xv.size(); ++j) {
    const int c = (j / 5) % 3;
    ev[j] = (xv[j] - rme[c]) / std::sqrt(rve[c] + 1e-5) * wv[c] + bv[c];
  }
  expect_close(batch_norm(x, w, b, false, {&rm, &rv}), ev, 1e-10);
}

TEST_P(Norm, BatchNormGradientMatchesFiniteDifferences) {
  check_gradients(
      [](const std::vector<Tensor>& in) { return batch_norm(in[0], in[1], in[2], true); },
      {randn({3, 2, 4}), randn({2}), randn({2})});
  check_gradients([](const std::vector<Tensor>& in) { return batch_norm(in[0], {}, {}, true); },
                  {randn({5, 3})});
  Tensor rm = randn({2}, f64), rv = rand({2}, f64) + 0.5;
  check_gradients(
      [&](const std::vector<Tensor>& in) {
        return batch_norm(in[0], in[1], {}, false, {&rm, &rv});
      },
      {randn({3, 2, 2}), randn({2})});
}

TEST_P(Norm, NormsRejectBadArguments) {
  Tensor x = randn({2, 3, 4});
  EXPECT_CRISP_ERROR(layer_norm(x, {3}), "does not match the trailing dims");
  EXPECT_CRISP_ERROR(layer_norm(x, {4}, ones({3})), "weight must have shape [4]");
  EXPECT_CRISP_ERROR(group_norm(x, 2), "not divisible into 2 groups");
  EXPECT_CRISP_ERROR(batch_norm(randn({1, 3}), {}, {}, true), "more than 1 value per channel");
  EXPECT_CRISP_ERROR(batch_norm(x, ones({4}), {}, true), "weight must have shape [3]");
  EXPECT_CRISP_ERROR(layer_norm(Tensor({1, 2}, {2}), {2}), "floating-point");
}

// batch_norm_relu against relu(batch_norm): the same outputs, running statistics and
// gradients, in training and evaluation, in both layouts and in the kernels' packed paths
// (planes and channels in fours); its gradients also by finite differences.
TEST_P(Norm, BatchNormReluMatchesReluOfBatchNorm) {
  struct Case {
    Shape shape;
    bool channels_last;
  };
  for (const Case& c : {Case{{4, 3, 5}, false}, Case{{8, 16, 6, 6}, false},
                        Case{{8, 16, 6, 6}, true}, Case{{6, 5, 3, 3}, true}}) {
    const int64_t C = c.shape[1];
    Tensor x0 = randn(c.shape) * 2 + 0.5;
    if (c.channels_last) x0 = to_channels_last(x0);
    Tensor g = randn(c.shape);
    for (bool training : {true, false}) {
      Tensor w = randn({C}).requires_grad_(), b = randn({C}).requires_grad_();
      Tensor rm = randn({C}), rv = rand({C}) + 0.5, rm2 = rm, rv2 = rv;
      Tensor x = x0.detach().requires_grad_(), x2 = x0.detach().requires_grad_();
      Tensor want = relu(batch_norm(x, w, b, training, {&rm, &rv, 0.1}));
      Tensor got = batch_norm_relu(x2, w, b, training, {&rm2, &rv2, 0.1});
      EXPECT_EQ(is_channels_last(got), c.channels_last);
      expect_tensors_close(got, want, 1e-5, "output");
      expect_tensors_close(rm2, rm, 1e-6, "running mean");
      expect_tensors_close(rv2, rv, 1e-6, "running variance");
      std::vector<Tensor> gw = grad(want, {x, w, b}, g), gg = grad(got, {x2, w, b}, g);
      for (size_t i = 0; i < 3; ++i) expect_tensors_close(gg[i], gw[i], 1e-4, "gradient");
    }
  }
  // A NaN passes through the ReLU, as relu's does (running statistics: only that element).
  {
    std::vector<double> v = values(randn({2, 3, 4}));
    v[5] = std::nan("");
    Tensor x(v, {2, 3, 4}, f32), w = randn({3}), b = randn({3});
    Tensor rm = randn({3}), rv = rand({3}) + 0.5;
    Tensor got = batch_norm_relu(x, w, b, false, {&rm, &rv});
    expect_tensors_close(got, relu(batch_norm(x, w, b, false, {&rm, &rv})), 1e-6, "with a NaN");
    EXPECT_TRUE(std::isnan(values(got)[5]));
  }
  check_gradients(
      [](const std::vector<Tensor>& in) { return batch_norm_relu(in[0], in[1], in[2], true); },
      {randn({4, 3, 5}), randn({3}), randn({3})});
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return batch_norm_relu(to_channels_last(in[0]), in[1], {}, true);
      },
      {randn({3, 4, 2, 3}), randn({4})});
}

INSTANTIATE_TEST_SUITE_P(Backends, Norm, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace crisp::testing
