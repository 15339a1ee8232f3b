// Channels-last layout: to_channels_last stores [N, C, *] as [N, *, C] without changing values;
// elementwise ops, convolutions, batch norm and pooling keep the layout, and give the values and
// gradients they give in the usual layout (float64 finite differences for the gradients).
#include <cmath>
#include <vector>

#include "testing.h"

namespace crisp::testing {
namespace {

class Layout : public BackendTest {};

// The elements of t in memory order, read through the view that stores it channels-last.
std::vector<double> stored_values(const Tensor& t) { return values(permute(t, {0, 2, 3, 1})); }

TEST_P(Layout, ToChannelsLastStoresChannelsInnermostAndKeepsValues) {
  Tensor x = randn({2, 3, 4, 5});
  Tensor y = to_channels_last(x);
  EXPECT_EQ(y.shape(), x.shape());
  EXPECT_TRUE(is_channels_last(y));
  EXPECT_FALSE(is_channels_last(x));
  EXPECT_FALSE(y.is_contiguous());
  EXPECT_TRUE(permute(y, {0, 2, 3, 1}).is_contiguous());
  expect_tensors_close(y, x, 0, "values");
  EXPECT_TRUE(to_channels_last(y).is_contiguous() == false);
  Tensor back = y.contiguous();
  EXPECT_TRUE(back.is_contiguous());
  expect_tensors_close(back, x, 0, "contiguous() of channels-last");
  // One channel or one position: both layouts are the same memory, so nothing is channels-last.
  EXPECT_FALSE(is_channels_last(to_channels_last(randn({2, 1, 3, 3}))));
  EXPECT_FALSE(is_channels_last(to_channels_last(randn({2, 4, 1, 1}))));
  EXPECT_TRUE(is_channels_last(to_channels_last(randn({2, 3, 4}))));
  EXPECT_TRUE(is_channels_last(to_channels_last(randn({2, 3, 2, 4, 5}))));
  EXPECT_CRISP_ERROR(to_channels_last(randn({3, 4})), "expected [N, C, *spatial], got [3, 4]");
  // The gradient goes back to the original layout's values.
  check_gradients([](const std::vector<Tensor>& in) { return to_channels_last(in[0]) * 3; },
                  {randn({2, 3, 2, 2})});
}

TEST_P(Layout, ElementwiseOpsKeepChannelsLast) {
  Tensor a = randn({2, 5, 3, 4}), b = randn({2, 5, 3, 4}), bias = randn({1, 5, 1, 1});
  Tensor ac = to_channels_last(a), bc = to_channels_last(b);
  struct Case {
    const char* what;
    Tensor got, want;
  };
  const std::vector<Case> cases{
      {"relu", relu(ac), relu(a)},
      {"exp", exp(ac), exp(a)},
      {"add", ac + bc, a + b},
      {"mul by a scalar", ac * 2.5, a * 2.5},
      {"add a broadcast bias", ac + bias, a + bias},
      {"bias first", bias - ac, bias - a},
      {"cast", ac.cast(f64), a.cast(f64)},
      {"where", where(ac > 0, ac, bc), where(a > 0, a, b)},
  };
  for (const Case& c : cases) {
    EXPECT_TRUE(is_channels_last(c.got)) << c.what;
    expect_tensors_close(c.got, c.want, 1e-6, c.what);
  }
  // 3-d: as likely a batch of transposed matrices, and kept to the usual layout.
  EXPECT_TRUE((to_channels_last(randn({2, 3, 4})) * 2).is_contiguous());
  // With one operand in each layout the values are the same whichever layout the result takes.
  expect_tensors_close(ac + b, a + b, 1e-6, "mixed layouts");
  expect_tensors_close(a * bc, a * b, 1e-6, "mixed layouts, contiguous first");
  // The memory order is [N, H, W, C]: element (n, c, h, w) sits at ((n * H + h) * W + w) * C + c.
  const std::vector<double> av = values(a), stored = stored_values(relu(ac));
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 5; ++c)
      for (int64_t h = 0; h < 3; ++h)
        for (int64_t w = 0; w < 4; ++w) {
          const double v = av[static_cast<size_t>(((n * 5 + c) * 3 + h) * 4 + w)];
          EXPECT_EQ(stored[static_cast<size_t>(((n * 3 + h) * 4 + w) * 5 + c)], v > 0 ? v : 0);
        }
  Tensor x = to_channels_last(randn({2, 3, 2, 2}, f64)).requires_grad_();
  Tensor y = relu(x) * x + x;
  Tensor g = grad(y.sum(), {x})[0];
  EXPECT_TRUE(is_channels_last(y));
  EXPECT_TRUE(is_channels_last(g));
  expect_tensors_close(g, where(x > 0, 2 * x, 0) + 1, 1e-12, "gradient");
}

struct ConvCase {
  Shape x, w;
  ConvOptions opt;
  bool bias;
};

TEST_P(Layout, ConvolutionsInChannelsLastMatchTheUsualLayout) {
  const std::vector<ConvCase> cases{
      {{2, 8, 9, 7}, {6, 8, 3, 3}, {.stride = {2}, .padding = {1}}, true},
      {{3, 16, 5, 6}, {12, 16, 1, 1}, {}, false},
      {{2, 4, 8, 8}, {6, 2, 3, 3}, {.padding = {2}, .dilation = {2}, .groups = 2}, true},
      {{1, 3, 12, 10}, {8, 3, 7, 7}, {.stride = {2}, .padding = {3}}, false},
  };
  for (const ConvCase& c : cases) {
    Tensor x = randn(c.x).requires_grad_(), w = randn(c.w).requires_grad_();
    Tensor b = randn({c.w[0]}).requires_grad_();
    Tensor xc = to_channels_last(x.detach()).requires_grad_();
    std::optional<Tensor> bias = c.bias ? std::optional<Tensor>(b) : std::nullopt;
    Tensor y = conv2d(x, w, bias, c.opt), yc = conv2d(xc, w, bias, c.opt);
    EXPECT_TRUE(is_channels_last(yc)) << c.x.size();
    expect_tensors_close(yc, y, 1e-4, "forward");
    Tensor g = randn(y.shape());
    std::vector<Tensor> want = grad(y, {x, w}, g), got = grad(yc, {xc, w}, to_channels_last(g));
    EXPECT_TRUE(is_channels_last(got[0]));
    expect_tensors_close(got[0], want[0], 1e-4, "input gradient");
    expect_tensors_close(got[1], want[1], 1e-4, "weight gradient");
    // A gradient arriving in the usual layout gives the same values.
    expect_tensors_close(grad(conv2d(xc, w, bias, c.opt), {w}, g)[0], want[1], 1e-4,
                         "weight gradient from a contiguous gradient");
  }
  auto f = [](const std::vector<Tensor>& in) {
    return conv2d(to_channels_last(in[0]), in[1], in[2], {.stride = {2}, .padding = {1}});
  };
  check_gradients(f, {randn({2, 3, 5, 4}), randn({4, 3, 3, 3}), randn({4})});
}

TEST_P(Layout, ConvolutionsInChannelsLastRunInTheLowPrecisions) {
  for (DType dt : {f16, bf16}) {
    Tensor x = randn({4, 16, 10, 10}), w = randn({32, 16, 3, 3}) * 0.1;
    Tensor want = conv2d(x, w, {}, {.padding = {1}});
    Tensor got = conv2d(to_channels_last(x.cast(dt)), w.cast(dt), {}, {.padding = {1}});
    EXPECT_TRUE(is_channels_last(got));
    EXPECT_EQ(got.dtype(), dt);
    // Inputs rounded to 8 (bfloat16) or 11 (float16) bits: errors of a few parts in 100 of 1.
    expect_tensors_close(got.cast(f32), want, dt == bf16 ? 5e-2 : 1e-2, dtype_name(dt).data());
  }
}

TEST_P(Layout, BatchNormInChannelsLastMatchesTheUsualLayout) {
  Tensor x = randn({4, 6, 5, 3}) * 2 + 1, w = randn({6}), b = randn({6});
  Tensor rm = zeros({6}), rv = ones({6}), rmc = zeros({6}), rvc = ones({6});
  Tensor y = batch_norm(x, w, b, true, {&rm, &rv, 0.1});
  Tensor yc = batch_norm(to_channels_last(x), w, b, true, {&rmc, &rvc, 0.1});
  EXPECT_TRUE(is_channels_last(yc));
  expect_tensors_close(yc, y, 1e-5, "training");
  expect_tensors_close(rmc, rm, 1e-6, "running mean");
  expect_tensors_close(rvc, rv, 1e-6, "running variance");
  Tensor e = batch_norm(to_channels_last(x), w, b, false, {&rm, &rv});
  EXPECT_TRUE(is_channels_last(e));
  expect_tensors_close(e, batch_norm(x, w, b, false, {&rm, &rv}), 1e-5, "evaluation");
  auto f = [](const std::vector<Tensor>& in) {
    return batch_norm(to_channels_last(in[0]), in[1], in[2], true);
  };
  check_gradients(f, {randn({3, 4, 2, 3}), randn({4}), randn({4})});
  // Many rows, channels in fours: the packed paths, their sums split over blocks.
  Tensor big = randn({16, 64, 9, 9}) + 3, gy = randn({16, 64, 9, 9});
  Tensor bw = randn({64}).requires_grad_(), bigc = to_channels_last(big).requires_grad_();
  big = big.requires_grad_();
  Tensor yb = batch_norm(big, bw, {}, true), ybc = batch_norm(bigc, bw, {}, true);
  expect_tensors_close(ybc, yb, 1e-4, "many rows");
  std::vector<Tensor> want = grad(yb, {big, bw}, gy), got = grad(ybc, {bigc, bw}, gy);
  EXPECT_TRUE(is_channels_last(got[0]));
  expect_tensors_close(got[0], want[0], 1e-4, "many rows: input gradient");
  expect_tensors_close(got[1], want[1], 1e-4, "many rows: weight gradient");
  // Under autocast a bfloat16 input keeps its layout and its float32 statistics.
  amp::Autocast autocast(bf16);
  Tensor h = batch_norm(to_channels_last(x.cast(bf16)), w, b, true);
  EXPECT_TRUE(is_channels_last(h));
  expect_tensors_close(h.cast(f32), y, 3e-2, "bfloat16 input");
}

TEST_P(Layout, PoolingKeepsChannelsLast) {
  // Three channels, and eight (the CUDA gradient's four-channel path), each with ResNet's window,
  // a 2 x 2 one, and one the kernels do not unroll, with dilation.
  const std::vector<PoolOptions> windows{
      {.kernel = {3}, .stride = {2}, .padding = {1}},
      {.kernel = {2}, .stride = {1}},
      {.kernel = {3, 2}, .stride = {1, 2}, .padding = {1}, .dilation = {2, 1}}};
  for (int64_t C : {3, 8})
    for (const PoolOptions& opt : windows) {
      Tensor x = randn({2, C, 8, 7});
      Tensor xg = x.detach().requires_grad_(), xcg = to_channels_last(x).requires_grad_();
      Tensor m = max_pool2d(xg, opt), mc = max_pool2d(xcg, opt);
      EXPECT_TRUE(is_channels_last(mc));
      expect_tensors_close(mc, m, 0, "max");
      Tensor go = randn(m.shape());
      expect_tensors_close(grad(mc, {xcg}, go)[0], grad(m, {xg}, go)[0], 1e-6, "gradient");
    }
  Tensor x = randn({2, 3, 8, 7});
  Tensor a = avg_pool2d(to_channels_last(x), {.kernel = {2}});
  EXPECT_TRUE(is_channels_last(a));
  expect_tensors_close(a, avg_pool2d(x, {.kernel = {2}}), 1e-6, "average");
  for (int64_t C : {3, 4}) {
    auto f = [](const std::vector<Tensor>& in) {
      return max_pool2d(to_channels_last(in[0]), {.kernel = {2}, .stride = {1}});
    };
    check_gradients(f, {randn({2, C, 4, 4})});
  }
}

// ResNet-18 in both layouts from the same weights: the same loss and parameter gradients. In
// float64: the layouts sum in different orders, and in float32 batch norm over the few values
// per channel of the last stages magnifies that past any tolerance that would still test much.
TEST_P(Layout, ResNetInChannelsLastMatchesTheUsualLayout) {
  auto m = vision::resnet18(10);
  m->to(f64);
  Tensor x = randn({4, 3, 32, 32}, f64);
  Tensor target = Tensor(std::vector<int64_t>{3, 7, 0, 9}, {4});
  auto run = [&](const Tensor& input) {
    m->zero_grad();
    Tensor loss = cross_entropy((*m)(input), target);
    loss.backward();
    std::vector<Tensor> grads;
    for (const auto& p : m->parameters()) grads.push_back(p.tensor->grad());
    return std::pair{loss, grads};
  };
  auto [loss, grads] = run(x);
  auto [loss_cl, grads_cl] = run(to_channels_last(x));
  expect_tensors_close(loss_cl, loss, 1e-12, "loss");
  ASSERT_EQ(grads.size(), grads_cl.size());
  for (size_t i = 0; i < grads.size(); ++i) {
    ASSERT_EQ(grads_cl[i].shape(), grads[i].shape());
    const Tensor d = grads_cl[i] - grads[i];
    const double diff = (d * d).sum().item<double>();
    const double norm = (grads[i] * grads[i]).sum().item<double>();
    EXPECT_LE(std::sqrt(diff), 1e-9 * std::sqrt(norm)) << "parameter " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, Layout, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace crisp::testing
