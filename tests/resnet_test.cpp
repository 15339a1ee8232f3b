// ResNet: torchvision's names, parameter counts, init, and values against PyTorch.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>

#include "testing.h"

namespace crisp::testing {
namespace {

using ResNetTest = BackendTest;

std::vector<std::string> split_words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

bool is_counter(const std::string& name) { return name.ends_with("num_batches_tracked"); }

// torchvision.models.resnet18().state_dict() keys without the num_batches_tracked counters.
const char* kResNet18Names =
    "conv1.weight bn1.weight bn1.bias bn1.running_mean bn1.running_var layer1.0.conv1.weight "
    "layer1.0.bn1.weight layer1.0.bn1.bias layer1.0.bn1.running_mean layer1.0.bn1.running_var "
    "layer1.0.conv2.weight layer1.0.bn2.weight layer1.0.bn2.bias layer1.0.bn2.running_mean "
    "layer1.0.bn2.running_var layer1.1.conv1.weight layer1.1.bn1.weight layer1.1.bn1.bias "
    "layer1.1.bn1.running_mean layer1.1.bn1.running_var layer1.1.conv2.weight "
    "layer1.1.bn2.weight layer1.1.bn2.bias layer1.1.bn2.running_mean layer1.1.bn2.running_var "
    "layer2.0.conv1.weight layer2.0.bn1.weight layer2.0.bn1.bias layer2.0.bn1.running_mean "
    "layer2.0.bn1.running_var layer2.0.conv2.weight layer2.0.bn2.weight layer2.0.bn2.bias "
    "layer2.0.bn2.running_mean layer2.0.bn2.running_var layer2.0.downsample.0.weight "
    "layer2.0.downsample.1.weight layer2.0.downsample.1.bias layer2.0.downsample.1.running_mean "
    "layer2.0.downsample.1.running_var layer2.1.conv1.weight layer2.1.bn1.weight "
    "layer2.1.bn1.bias layer2.1.bn1.running_mean layer2.1.bn1.running_var layer2.1.conv2.weight "
    "layer2.1.bn2.weight layer2.1.bn2.bias layer2.1.bn2.running_mean layer2.1.bn2.running_var "
    "layer3.0.conv1.weight layer3.0.bn1.weight layer3.0.bn1.bias layer3.0.bn1.running_mean "
    "layer3.0.bn1.running_var layer3.0.conv2.weight layer3.0.bn2.weight layer3.0.bn2.bias "
    "layer3.0.bn2.running_mean layer3.0.bn2.running_var layer3.0.downsample.0.weight "
    "layer3.0.downsample.1.weight layer3.0.downsample.1.bias layer3.0.downsample.1.running_mean "
    "layer3.0.downsample.1.running_var layer3.1.conv1.weight layer3.1.bn1.weight "
    "layer3.1.bn1.bias layer3.1.bn1.running_mean layer3.1.bn1.running_var layer3.1.conv2.weight "
    "layer3.1.bn2.weight layer3.1.bn2.bias layer3.1.bn2.running_mean layer3.1.bn2.running_var "
    "layer4.0.conv1.weight layer4.0.bn1.weight layer4.0.bn1.bias layer4.0.bn1.running_mean "
    "layer4.0.bn1.running_var layer4.0.conv2.weight layer4.0.bn2.weight layer4.0.bn2.bias "
    "layer4.0.bn2.running_mean layer4.0.bn2.running_var layer4.0.downsample.0.weight "
    "layer4.0.downsample.1.weight layer4.0.downsample.1.bias layer4.0.downsample.1.running_mean "
    "layer4.0.downsample.1.running_var layer4.1.conv1.weight layer4.1.bn1.weight "
    "layer4.1.bn1.bias layer4.1.bn1.running_mean layer4.1.bn1.running_var layer4.1.conv2.weight "
    "layer4.1.bn2.weight layer4.1.bn2.bias layer4.1.bn2.running_mean layer4.1.bn2.running_var "
    "fc.weight fc.bias";

TEST_P(ResNetTest, ResNet18NamesCountsAndInitMatchTorchvision) {
  auto model = vision::resnet18();
  State s = model->state();
  std::vector<std::string> names;
  size_t counters = 0;
  for (const auto& [name, t] : s) {
    if (is_counter(name)) {
      ++counters;
      EXPECT_EQ(t.dtype(), i64) << name;
    } else {
      names.push_back(name);
    }
  }
  EXPECT_EQ(names, split_words(kResNet18Names));
  EXPECT_EQ(counters, 20u);  // one per batch norm: 122 state entries in all
  EXPECT_EQ(model->parameters().size(), 62u);
  EXPECT_EQ(model->num_parameters(), 11689512);
  EXPECT_EQ(s.at("layer2.0.conv1.weight").shape(), Shape({128, 64, 3, 3}));
  EXPECT_EQ(s.at("layer2.0.downsample.0.weight").shape(), Shape({128, 64, 1, 1}));
  EXPECT_EQ(s.at("fc.weight").shape(), Shape({1000, 512}));

  // Init as torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu") for convolutions,
  // std = sqrt(2 / (out * kh * kw)); batch norms weight 1, bias 0; fc PyTorch's Linear default.
  auto& conv = *model->layer4->get<vision::BasicBlock>(1).conv2;  // 2.4M draws
  const double want = std::sqrt(2.0 / (512 * 9));
  EXPECT_NEAR(conv.weight.std().item<float>(), want, 0.01 * want);
  EXPECT_NEAR(conv.weight.mean().item<float>(), 0, 0.01 * want);
  const double want1 = std::sqrt(2.0 / (64 * 49));
  EXPECT_NEAR(model->conv1->weight.std().item<float>(), want1, 0.05 * want1);
  expect_close(model->bn1->weight, std::vector<double>(64, 1.0), 0);
  expect_close(model->bn1->bias, std::vector<double>(64, 0.0), 0);
  const double bound = 1 / std::sqrt(512.0);  // U(-1/sqrt(in), 1/sqrt(in))
  EXPECT_LE(model->fc->weight.abs().max().item<float>(), bound);
  EXPECT_GT(model->fc->weight.abs().max().item<float>(), 0.9 * bound);
}

TEST_P(ResNetTest, ResNet50CountsAndStrideOnTheThreeByThree) {
  auto model = vision::resnet50();
  State s = model->state();
  size_t counters = 0;
  for (const auto& [name, t] : s) counters += is_counter(name) ? 1 : 0;
  EXPECT_EQ(s.size(), 320u);
  EXPECT_EQ(counters, 53u);
  EXPECT_EQ(model->parameters().size(), 161u);
  EXPECT_EQ(model->num_parameters(), 25557032);
  EXPECT_EQ(s.at("layer1.0.downsample.0.weight").shape(), Shape({256, 64, 1, 1}));
  EXPECT_EQ(s.at("layer3.5.conv3.weight").shape(), Shape({1024, 256, 1, 1}));
  EXPECT_EQ(s.at("fc.weight").shape(), Shape({1000, 2048}));
  EXPECT_FALSE(s.contains("layer3.6.conv1.weight"));
  // v1.5: the first block of a stage strides on its 3x3 convolution and its shortcut.
  auto& block = model->layer2->get<vision::Bottleneck>(0);
  EXPECT_EQ(block.conv1->args.stride.v, std::vector<int64_t>{1});
  EXPECT_EQ(block.conv2->args.stride.v, std::vector<int64_t>{2});
  EXPECT_EQ(block.downsample->get<nn::Conv2d>(0).args.stride.v, std::vector<int64_t>{2});
}

// Uniform in [-0.5, 0.5) from an integer hash of (j, k): the same numbers in any language.
double hash_uniform(int64_t j, int64_t k) {
  uint64_t h =
      (static_cast<uint64_t>(j) * 2654435761u + static_cast<uint64_t>(k) * 40503u + 12345u) %
      4294967296u;
  h = (h * 2246822519u) % 4294967296u;
  return static_cast<double>(h) / 4294967296.0 - 0.5;
}

// Sets every entry but the counters from the hash: entry k's j-th value comes from
// hash_uniform(j, k) (kaiming-uniform-like weights, batch-norm statistics near 0 and 1).
void set_reference_weights(nn::Module& model) {
  State in = model.state(), out;
  int64_t k = 0;
  for (const auto& [name, t] : in) {
    if (is_counter(name)) {
      out.set(name, t);
      continue;
    }
    const int64_t n = t.numel();
    const double fan_in = static_cast<double>(n / t.shape()[0]);
    std::vector<float> v(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) {
      const double u = hash_uniform(j, k);
      double x;
      if (name.ends_with("running_var"))
        x = 1 + u;
      else if (name.ends_with("running_mean") || name.ends_with("bias"))
        x = 0.2 * u;
      else if (t.ndim() == 1)
        x = 1 + 0.4 * u;
      else
        x = u * std::sqrt(24 / fan_in);
      v[static_cast<size_t>(j)] = static_cast<float>(x);
    }
    out.set(name, Tensor(v, t.shape()));
    ++k;
  }
  model.load_state(out);
}

// Largest error relative to the largest reference value.
void expect_close_rel(const Tensor& got, const std::vector<double>& want, double rel,
                      const char* what) {
  std::vector<double> g = values(got);
  ASSERT_EQ(g.size(), want.size()) << what;
  double scale = 0, err = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    scale = std::max(scale, std::abs(want[i]));
    err = std::max(err, std::abs(g[i] - want[i]));
  }
  EXPECT_LE(err, rel * scale) << what;
}

// The reference values come from torchvision's resnet18(num_classes=10) in float64 with the
// same weights and input (PyTorch 1.13; float32 there differs from them by < 3e-5). The
// training-mode backward is checked in float64: batch norm over layer4's 8 values per channel
// amplifies float32 rounding to about 1% in conv1's gradient, whichever GEMM order runs.
TEST_P(ResNetTest, ResNet18MatchesTorchvisionForwardAndBackwardAtAnySize) {
  vision::ResNet model(18, 10);
  set_reference_weights(model);
  const int64_t n = 2 * 3 * 64 * 64;
  std::vector<float> xv(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j)
    xv[static_cast<size_t>(j)] = static_cast<float>(2 * hash_uniform(j, 1000));
  Tensor x(xv, {2, 3, 64, 64});
  const std::vector<double> train_out = {
      1.35933705,  -1.93127108, 0.0733863437, -0.174899435, -1.67732732, 1.06915219,  -2.77121927,
      1.47562339,  -1.28789954, -0.373736092, 1.20035204,   -2.14150602, 0.475661051, -0.0135730174,
      -1.60500849, 0.27311158,  -3.16535622,  1.72992521,   -1.21704525, -0.334018459};

  model.eval();
  {
    NoGrad no_grad;
    Tensor y = model(x);
    EXPECT_EQ(y.shape(), Shape({2, 10}));
    expect_close_rel(y, {5486.9602,  -10620.7244, -3588.14274, -598.721353, -658.831462,
                         1827.13968, -8533.45798, 5014.27633,  -7674.95734, -5185.99457,
                         4773.77051, -10229.3202, -4911.04404, 454.11374,   -711.156134,
                         2030.58362, -8817.91175, 3938.54355,  -7229.12163, -6560.49878},
                     1e-4, "eval");
    model.train();
    expect_close_rel(model(x), train_out, 1e-4, "train");
  }

  vision::ResNet model64(18, 10);
  set_reference_weights(model64);
  model64.to(f64);
  model64.train();
  Tensor y = model64(x.cast(f64));
  expect_close_rel(y, train_out, 1e-5, "train float64");
  std::vector<double> cv(20);
  for (size_t j = 0; j < 20; ++j) cv[j] = std::cos(static_cast<double>(j));
  (y * Tensor(cv, {2, 10})).sum().backward();
  auto head = [](const Tensor& g, int64_t k) { return g.flatten()[Slice(0, k)]; };
  expect_close_rel(head(model64.conv1->weight.grad(), 6),
                   {0.274737542, 0.250433717, 0.254359759, 0.302628808, 0.302657813, 0.292530075},
                   1e-5, "conv1 grad");
  expect_close_rel(head(model64.fc->weight.grad(), 6),
                   {0.268851857, 0.0487489314, 1.11037802, -0.536957705, -0.157328772, 1.43328758},
                   1e-5, "fc grad");
  auto& b40 = model64.layer4->get<vision::BasicBlock>(0);
  expect_close_rel(head(b40.downsample->get<nn::Conv2d>(0).weight.grad(), 4),
                   {0.026297677, 0.0956110169, -0.0152724448, 0.120587875}, 1e-5,
                   "layer4.0.downsample.0 grad");
  auto& b10 = model64.layer1->get<vision::BasicBlock>(0);
  expect_close_rel(head(b10.bn1->running_mean, 4),
                   {-0.111889751, -0.134676016, 0.141836078, -0.152596603}, 1e-6,
                   "layer1.0.bn1.running_mean");
  EXPECT_EQ(b10.bn1->num_batches_tracked.item<int64_t>(), 1);

  // Small images still reach the head: [N, 3, 32, 32] ends at 1x1 after layer4.
  model.zero_grad();
  {
    NoGrad no_grad;
    model.eval();
    EXPECT_EQ(model(randn({1, 3, 32, 32})).shape(), Shape({1, 10}));
    model.train();
  }
  cross_entropy(model(randn({2, 3, 32, 32})), Tensor({1, 4})).backward();
  for (const auto& p : model.parameters()) {
    ASSERT_TRUE(p.tensor->grad().defined()) << p.name;
    EXPECT_EQ(p.tensor->grad().shape(), p.tensor->shape()) << p.name;
  }
  EXPECT_CRISP_ERROR(model(randn({1, 1, 32, 32})), "expected images [N, 3, H, W]");
  EXPECT_CRISP_ERROR(vision::ResNet bad(20), "depth must be 18, 34, 50, 101 or 152");
}

INSTANTIATE_TEST_SUITE_P(Backends, ResNetTest, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace crisp::testing
