// The ready-made models: PyTorch's names and shapes, and outputs equal to PyTorch's.
#include <cmath>

#include "testing.h"

namespace crisp::testing {
namespace {

class Models : public BackendTest {};
INSTANTIATE_TEST_SUITE_P(Backends, Models, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

using Names = std::vector<std::pair<std::string, Shape>>;

Names names_and_shapes(const nn::Module& m) {
  Names out;
  for (const auto& [name, t] : m.state()) out.emplace_back(name, t.shape());
  return out;
}

// Every parameter j gets values 0.2 sin(1.37 i + j), the inputs 0.5 + 0.5 sin(0.71 i^2): the
// same in the PyTorch script that produced the expected outputs below.
void fill_deterministic(nn::Module& m) {
  int j = 0;
  State s;
  for (const auto& [name, t] : m.state()) {
    std::vector<float> v(static_cast<size_t>(t.numel()));
    for (size_t i = 0; i < v.size(); ++i)
      v[i] = static_cast<float>(0.2 * std::sin(1.37 * static_cast<double>(i) + j));
    s.set(name, Tensor(v, t.shape()));
    ++j;
  }
  m.load_state(s);
}

TEST_P(Models, ReferenceCNNHasPyTorchsNamesAndShapes) {
  // SeedCNN(final_out_channels=8).state_dict() of torch_cpu_seed_cnn.py.
  models::ReferenceCNN m(1, 28, 8);
  const Names expected = {{"conv1.0.weight", {20, 1, 5, 5}},  {"conv1.0.bias", {20}},
                          {"conv2.0.weight", {50, 20, 5, 5}}, {"conv2.0.bias", {50}},
                          {"conv3.0.weight", {8, 50, 5, 5}},  {"conv3.0.bias", {8}},
                          {"linear1.0.weight", {36, 72}},     {"linear1.0.bias", {36}},
                          {"linear2.0.weight", {18, 36}},     {"linear2.0.bias", {18}},
                          {"linear3.0.weight", {10, 18}},     {"linear3.0.bias", {10}}};
  EXPECT_EQ(names_and_shapes(m), expected);
  EXPECT_EQ(m.fc_inputs, 8 * 3 * 3);                               // 28 -> 14 -> 7 -> 3
  EXPECT_EQ(models::ReferenceCNN(3, 32, 8).fc_inputs, 8 * 4 * 4);  // CIFAR-10: 32 -> 4
}

TEST_P(Models, ReferenceCNNMatchesPyTorch) {
  models::ReferenceCNN m(1, 28, 8);
  fill_deterministic(m);
  m.eval();
  std::vector<float> x(2 * 784);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>(0.5 + 0.5 * std::sin(0.71 * static_cast<double>(i * i)));
  Tensor out = m(Tensor(x, {2, 1, 28, 28}));
  // PyTorch 1.13: SeedCNN(8) with the same parameters and inputs, in eval mode.
  expect_close(out,
               {-2.49363374710083,   -2.2153425216674805, -1.9186428785324097, -1.97737455368042,
                -2.2793898582458496, -2.4100863933563232, -2.30110239982605,   -2.308863878250122,
                -2.604004383087158,  -2.8580079078674316, -2.5278520584106445, -2.253591299057007,
                -1.9518595933914185, -1.9976001977920532, -2.281514883041382,  -2.392971992492676,
                -2.2678298950195312, -2.2660586833953857, -2.5603833198547363, -2.8224663734436035},
               1e-4);
}

TEST_P(Models, ReferenceCNNDropsOutOnlyInTraining) {
  models::ReferenceCNN m(1, 28, 8, 10, 0.5);
  Tensor x = rand({4, 1, 28, 28});
  m.eval();
  expect_tensors_close(m(x), m(x), 0);
  m.train();
  Tensor a = m(x), b = m(x);
  EXPECT_GT((a - b).abs().max().item<float>(), 0);
  // Rows are log-probabilities.
  expect_close(a.exp().sum(1), {1, 1, 1, 1}, 1e-5);
}

TEST_P(Models, MLPLayersAndOutput) {
  models::MLP m(12, {8, 6}, 3, 0.1);
  const Names expected = {{"layers.1.weight", {8, 12}}, {"layers.1.bias", {8}},
                          {"layers.4.weight", {6, 8}},  {"layers.4.bias", {6}},
                          {"layers.7.weight", {3, 6}},  {"layers.7.bias", {3}}};
  EXPECT_EQ(names_and_shapes(m), expected);
  EXPECT_EQ(m(rand({5, 2, 2, 3})).shape(), (Shape{5, 3}));
  models::MLP plain(4, {}, 2);
  EXPECT_EQ(plain.num_parameters(), 4 * 2 + 2);
}

TEST(ModelsErrors, RejectBadSizes) {
  EXPECT_CRISP_ERROR(models::ReferenceCNN(1, 4), "at least 8x8");
  EXPECT_CRISP_ERROR(models::MLP(0, {4}, 2), "positive");
}

}  // namespace
}  // namespace crisp::testing
