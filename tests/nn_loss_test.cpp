// Losses of crisp::nn: values against PyTorch 1.13, gradients against finite differences, errors.
#include <cmath>

#include "testing.h"

namespace crisp::testing {
namespace {

class NnLoss : public BackendTest {};

// Deterministic values scale * sin(0.9 i + seed), the same formula the PyTorch references used.
Tensor det(Shape shape, double seed, double scale, DType dtype = f64) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<double> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = scale * std::sin(0.9 * double(i) + seed);
  return Tensor(v, shape, dtype);
}

// PyTorch 1.13: x = det([3, 4], 1, 2), y = det([3, 4], 2, 2); smooth_l1 beta 0.5, huber delta 0.7.
const std::vector<double> kMseNone = {0.0184017049472, 1.99968310023,   3.58606970218,
                                      0.883927588982,  0.525405683589,  3.39046165258,
                                      2.44709012284,   0.0107061291095, 2.06118075256,
                                      3.56582048716,   0.831631264793,  0.569418567407};
const std::vector<double> kL1None = {0.135652884036, 1.41410151695, 1.8936920822,   0.940174233311,
                                     0.724848731522, 1.84132062732, 1.56431778192,  0.103470426255,
                                     1.43568128516,  1.88833802248, 0.911938191323, 0.754598282139};
const std::vector<double> kSmoothL1None = {0.0184017049472, 1.16410151695,   1.6436920822,
                                           0.690174233311,  0.474848731522,  1.59132062732,
                                           1.31431778192,   0.0107061291095, 1.18568128516,
                                           1.63833802248,   0.661938191323,  0.504598282139};
const std::vector<double> kHuberNone = {0.00920085247358, 0.744871061863,   1.08058445754,
                                        0.413121963318,   0.262394112066,   1.04392443912,
                                        0.850022447346,   0.00535306455474, 0.759976899611,
                                        1.07683661574,    0.393356733926,   0.283218797497};
const std::vector<double> kMseMean = {1.65748306303};
const std::vector<double> kL1Mean = {1.13401117205};
const std::vector<double> kSmoothL1Mean = {0.908176549031};
const std::vector<double> kHuberMean = {0.576905120421};
const std::vector<double> kMseSum = {19.8897967564};
const std::vector<double> kL1Sum = {13.6081340646};
const std::vector<double> kSmoothL1Sum = {10.8981185884};
const std::vector<double> kHuberSum = {6.92286144505};
const std::vector<double> kSmoothL1Default = {0.704766398787};

TEST_P(NnLoss, RegressionLossesMatchPyTorch) {
  Tensor x = det({3, 4}, 1, 2), y = det({3, 4}, 2, 2);
  const std::vector<std::pair<std::string, std::vector<const std::vector<double>*>>> cases = {
      {"none", {&kMseNone, &kL1None, &kSmoothL1None, &kHuberNone}},
      {"mean", {&kMseMean, &kL1Mean, &kSmoothL1Mean, &kHuberMean}},
      {"sum", {&kMseSum, &kL1Sum, &kSmoothL1Sum, &kHuberSum}}};
  for (const auto& [r, want] : cases) {
    expect_close(nn::mse_loss(x, y, r), *want[0], 1e-10, "mse");
    expect_close(nn::l1_loss(x, y, r), *want[1], 1e-10, "l1");
    expect_close(nn::smooth_l1_loss(x, y, r, 0.5), *want[2], 1e-10, "smooth_l1");
    expect_close(nn::huber_loss(x, y, r, 0.7), *want[3], 1e-10, "huber");
  }
  expect_close(nn::smooth_l1_loss(x, y), kSmoothL1Default, 1e-10);
  EXPECT_EQ(nn::mse_loss(x, y, "none").shape(), Shape({3, 4}));
  EXPECT_EQ(nn::mse_loss(x, y).shape(), Shape({}));
  // float32 agrees too.
  expect_close(nn::mse_loss(x.cast(f32), y.cast(f32)), kMseMean, 1e-5);
  // beta = 0 is the L1 loss.
  expect_tensors_close(nn::smooth_l1_loss(x, y, "none", 0), nn::l1_loss(x, y, "none"), 1e-12);
}

// PyTorch 1.13: z = det([3, 4], 4, 6), t = (det([3, 4], 3, 1) + 1) / 2,
// weight = |det([3, 4], 5, 1)| + 0.1, pos_weight = |det([4], 6, 1)| + 0.5.
const std::vector<double> kBceNone = {
    2.60141565329,  0.92301503203, 0.0650928506354, 1.96783264862,   2.00211834612, 0.156789154766,
    0.632387684114, 2.59962409599, 0.884432736587,  0.0725251406173, 2.01416378316, 1.96402745469};
const std::vector<double> kBceMean = {1.32361871505};
const std::vector<double> kBceSum = {15.8834245806};
const std::vector<double> kBceWeighted = {2.14812168345,   0.471618201189, 0.0402898454684,
                                          2.14469740295,   1.6701995988,   0.0275719004987,
                                          0.853362585917,  3.18585076815,  0.316116989966,
                                          0.0445025629757, 2.20640206684,  1.61642216463};
const std::vector<double> kBceExtreme = {80, 0, 0.693147182465, 0, 80};

TEST_P(NnLoss, BinaryCrossEntropyWithLogitsMatchesPyTorch) {
  Tensor z = det({3, 4}, 4, 6), t = (det({3, 4}, 3, 1) + 1) / 2;
  Tensor w = abs(det({3, 4}, 5, 1)) + 0.1, pw = abs(det({4}, 6, 1)) + 0.5;
  expect_close(nn::binary_cross_entropy_with_logits(z, t, {.reduction = "none"}), kBceNone, 1e-10);
  expect_close(nn::binary_cross_entropy_with_logits(z, t), kBceMean, 1e-10);
  expect_close(nn::binary_cross_entropy_with_logits(z, t, {.reduction = "sum"}), kBceSum, 1e-10);
  expect_close(nn::binary_cross_entropy_with_logits(
                   z, t, {.reduction = "none", .weight = w, .pos_weight = pw}),
               kBceWeighted, 1e-10);
  // Large logits stay finite in float32 (a naive log(sigmoid) gives inf).
  Tensor big({-80.f, -30.f, 0.f, 30.f, 80.f}), tb({1.f, 0.f, 0.5f, 1.f, 0.f});
  expect_close(nn::binary_cross_entropy_with_logits(big, tb, {.reduction = "none"}), kBceExtreme,
               1e-6);
}

TEST_P(NnLoss, GradientsMatchFiniteDifferences) {
  Tensor x = randn({2, 3}, f64), y = randn({2, 3}, f64);
  for (const char* r : {"none", "mean", "sum"}) {
    check_gradients([&](const auto& in) { return nn::mse_loss(in[0], in[1], r); }, {x, y});
    check_gradients([&](const auto& in) { return nn::l1_loss(in[0], in[1], r); }, {x, y});
    check_gradients([&](const auto& in) { return nn::smooth_l1_loss(in[0], in[1], r, 0.8); },
                    {x, y});
    check_gradients([&](const auto& in) { return nn::huber_loss(in[0], in[1], r, 0.6); }, {x, y});
  }
  Tensor z = randn({2, 3}, f64) * 3, t = rand({2, 3}, f64);
  Tensor w = rand({2, 3}, f64) + 0.5, pw = rand({3}, f64) + 0.5;
  check_gradients(
      [&](const auto& in) {
        return nn::binary_cross_entropy_with_logits(in[0], in[1],
                                                    {.weight = in[2], .pos_weight = in[3]});
      },
      {z, t, w, pw});
  check_gradients(
      [&](const auto& in) {
        return nn::binary_cross_entropy_with_logits(in[0], in[1], {.reduction = "none"});
      },
      {z, t});
}

TEST_P(NnLoss, BadArgumentsThrowAtTheCallersLine) {
  Tensor x = randn({2, 3}), y = randn({3, 2});
  EXPECT_CRISP_ERROR(nn::mse_loss(x, y), "differ in shape");
  EXPECT_CRISP_ERROR(nn::l1_loss(x, x.cast(f64)), "differ in dtype");
  EXPECT_CRISP_ERROR(nn::huber_loss(x, x, "avg"), "reduction");
  EXPECT_CRISP_ERROR(nn::smooth_l1_loss(x, x, "mean", -1), "beta");
  EXPECT_CRISP_ERROR(nn::binary_cross_entropy_with_logits(x, x, {.pos_weight = randn({4})}),
                     "pos_weight");
  EXPECT_CRISP_ERROR(nn::mse_loss(randint(0, 3, {2, 3}), randint(0, 3, {2, 3})), "floating");
}

INSTANTIATE_TEST_SUITE_P(Backends, NnLoss, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace crisp::testing
