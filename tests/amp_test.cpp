// Mixed precision: the autocast scope's dtypes and gradients, and the gradient scaler.
#include <cmath>
#include <limits>

#include "testing.h"

namespace crisp::testing {
namespace {

using Amp = BackendTest;

// Values rounded to dtype and back: what a 16-bit operand holds.
Tensor rounded(const Tensor& x, DType dtype) { return x.cast(dtype).cast(f32); }

TEST_P(Amp, ScopeSetsRestoresAndNests) {
  EXPECT_FALSE(amp::autocast_enabled());
  {
    amp::Autocast outer(bf16);
    EXPECT_TRUE(amp::autocast_enabled());
    EXPECT_EQ(amp::autocast_dtype(), bf16);
    {
      amp::Autocast inner(f16);
      EXPECT_EQ(amp::autocast_dtype(), f16);
      EXPECT_EQ(matmul(randn({2, 3}), randn({3, 2})).dtype(), f16);
    }
    EXPECT_EQ(amp::autocast_dtype(), bf16);
    {
      amp::Autocast off(bf16, false);
      EXPECT_FALSE(amp::autocast_enabled());
      EXPECT_EQ(matmul(randn({2, 3}), randn({3, 2})).dtype(), f32);
    }
    EXPECT_TRUE(amp::autocast_enabled());
  }
  EXPECT_FALSE(amp::autocast_enabled());
  EXPECT_CRISP_ERROR(amp::Autocast bad(f32), "float16 or bfloat16");
  EXPECT_FALSE(amp::autocast_enabled());
}

TEST_P(Amp, MatmulLinearAndConvComputeInTheLowDtype) {
  Tensor a = randn({4, 5}), b = randn({5, 3});
  nn::Linear lin(5, 3);
  nn::Conv2d conv(2, 3, 3, {.padding = 1});
  Tensor img = randn({2, 2, 6, 6});
  for (DType dt : {bf16, f16}) {
    Tensor y, l, c;
    {
      amp::Autocast ac(dt);
      y = matmul(a, b);
      l = lin(a);
      c = conv(img);
    }
    EXPECT_EQ(y.dtype(), dt);
    EXPECT_EQ(l.dtype(), dt);
    EXPECT_EQ(c.dtype(), dt);
    // The product of the rounded operands, rounded once more.
    const double tol = dt == bf16 ? 1e-2 : 2e-3;
    expect_tensors_close(y.cast(f32), matmul(rounded(a, dt), rounded(b, dt)), tol);
    Tensor ref_l = matmul(rounded(a, dt), rounded(lin.weight, dt).t()) + rounded(lin.bias, dt);
    expect_tensors_close(l.cast(f32), ref_l, tol);
    Tensor ref_c = conv2d(rounded(img, dt), rounded(conv.weight, dt), rounded(conv.bias, dt),
                          {.padding = {1}});
    expect_tensors_close(c.cast(f32), ref_c, tol);
  }
  // Outside the scope everything is float32 again.
  EXPECT_EQ(matmul(a, b).dtype(), f32);
  EXPECT_EQ(lin(a).dtype(), f32);
  EXPECT_EQ(conv(img).dtype(), f32);
  // float64 is not autocast's business.
  amp::Autocast ac(bf16);
  EXPECT_EQ(matmul(a.cast(f64), b.cast(f64)).dtype(), f64);
}

TEST_P(Amp, ReductionsSoftmaxNormsAndLossesStayFloat32) {
  Tensor x = randn({4, 6}).cast(bf16);
  Tensor target = randint(0, 6, {4});
  Tensor w = 1 + randn({6}) * 0.1, b = randn({6}) * 0.1;
  Tensor xf = x.cast(f32);
  amp::Autocast ac(bf16);
  // Same values as the float32 op on the upcast input, in float32.
  auto same = [](const Tensor& got, const Tensor& want, const char* what) {
    EXPECT_EQ(got.dtype(), f32) << what;
    expect_tensors_close(got, want, 1e-6, what);
  };
  same(log_softmax(x, 1), log_softmax(xf, 1), "log_softmax");
  same(softmax(x, 1), softmax(xf, 1), "softmax");
  same(sum(x), sum(xf), "sum");
  same(mean(x, 1), mean(xf, 1), "mean");
  same(logsumexp(x, 1), logsumexp(xf, 1), "logsumexp");
  same(cumsum(x, 1), cumsum(xf, 1), "cumsum");
  same(layer_norm(x, {6}, w, b), layer_norm(xf, {6}, w, b), "layer_norm");
  same(group_norm(x.reshape({4, 6, 1}), 2, w, b), group_norm(xf.reshape({4, 6, 1}), 2, w, b),
       "group_norm");
  same(rms_norm(x, {6}, w), rms_norm(xf, {6}, w), "rms_norm");
  same(cross_entropy(x, target), cross_entropy(xf, target), "cross_entropy");
  same(nll_loss(log_softmax(xf, 1).cast(bf16), target),
       nll_loss(log_softmax(xf, 1).cast(bf16).cast(f32), target), "nll_loss");
  Tensor y = randn({4, 6});
  same(nn::mse_loss(x, y), nn::mse_loss(xf, y), "mse_loss");
  same(nn::l1_loss(x, y), nn::l1_loss(xf, y), "l1_loss");
  EXPECT_EQ(nn::binary_cross_entropy_with_logits(x, rand({4, 6})).dtype(), f32);
  // batch_norm keeps bf16 activations in bf16, as PyTorch does, with statistics and parameter
  // gradients in float32: the float32 op's values, rounded once to bf16.
  nn::BatchNorm1d bn(6);
  Tensor wf = bn.weight.detach().requires_grad_(), bf = bn.bias.detach().requires_grad_();
  Tensor bn_ref = batch_norm(xf, wf, bf, true);
  Tensor bn_out = bn(x);
  EXPECT_EQ(bn_out.dtype(), bf16);
  expect_tensors_close(bn_out.cast(f32), bn_ref.detach().cast(bf16).cast(f32), 4e-3, "batch_norm");
  EXPECT_EQ(bn.running_mean.dtype(), f32);
  expect_tensors_close(bn.running_mean, mean(xf, 0) * 0.1, 1e-6, "running_mean");
  Tensor cot = randn({4, 6});
  (bn_out.cast(f32) * cot).sum().backward();
  (bn_ref * cot.cast(bf16).cast(f32)).sum().backward();
  EXPECT_EQ(bn.weight.grad().dtype(), f32);
  expect_tensors_close(bn.weight.grad(), wf.grad(), 1e-2, "batch_norm weight grad");
  expect_tensors_close(bn.bias.grad(), bf.grad(), 1e-2, "batch_norm bias grad");
  // Mixed floating operands of arithmetic meet in the wider dtype.
  EXPECT_EQ((x + y).dtype(), f32);
  EXPECT_EQ((x * xf).dtype(), f32);
  EXPECT_EQ((x.cast(f16) + x).dtype(), f32);
  EXPECT_EQ((x + 1).dtype(), bf16);
}

TEST_P(Amp, OutsideTheScopeNothingIsCast) {
  Tensor x = randn({3, 4}).cast(bf16);
  EXPECT_EQ(log_softmax(x, 1).dtype(), bf16);
  EXPECT_EQ(sum(x).dtype(), bf16);
  EXPECT_CRISP_ERROR(x + randn({3, 4}), "dtype");
}

// A small network whose float32 parameters get float32 gradients through the casts, close to
// the gradients of the same computation done in float32 on the rounded values.
TEST_P(Amp, GradientsOfFloat32ParametersAreFloat32) {
  nn::Conv2d conv(2, 4, 3, {.padding = 1});
  nn::Linear lin(4 * 5 * 5, 3);
  Tensor x = randn({3, 2, 5, 5});
  Tensor target = randint(0, 3, {3});
  auto loss_of = [&](bool autocast) {
    amp::Autocast ac(bf16, autocast);
    // Smooth on purpose: bf16 rounding flips ReLU near 0, which changes gradients by whole terms.
    Tensor h = tanh(conv(x));
    return cross_entropy(lin(h.flatten(1)), target);
  };
  Tensor loss = loss_of(true);
  EXPECT_EQ(loss.dtype(), f32);
  {
    // Backward inside the scope as well: its ops are not autocast.
    amp::Autocast ac(bf16);
    loss.backward();
  }
  std::vector<Tensor> got;
  for (const auto& p : std::vector<Tensor*>{&conv.weight, &conv.bias, &lin.weight, &lin.bias}) {
    ASSERT_TRUE(p->grad().defined());
    EXPECT_EQ(p->grad().dtype(), f32);
    EXPECT_EQ(p->grad().shape(), p->shape());
    got.push_back(p->grad());
    p->zero_grad();
  }
  loss_of(false).backward();
  std::vector<Tensor> want{conv.weight.grad(), conv.bias.grad(), lin.weight.grad(),
                           lin.bias.grad()};
  for (size_t i = 0; i < got.size(); ++i) {
    // bf16 keeps 8 bits, and each gradient entry is a sum of rounded products that partly
    // cancel: compare relative to the gradient's scale. Over 80 seeds on CUDA the worst entry
    // was off by 4% of it (the biases); a wrong cast or a missed term is off by all of it.
    const double scale = values(want[i].abs().max())[0];
    std::vector<double> g = values(got[i]), w = values(want[i]);
    for (size_t j = 0; j < g.size(); ++j) EXPECT_NEAR(g[j], w[j], 0.1 * scale) << i << " " << j;
  }
}

// ---- gradient scaler ----

struct Tiny : nn::Module {
  Param w{this, "w", Tensor({1.0f, -2.0f, 0.5f})};
};

// loss = sum(w * x): the gradient of w is x.
Tensor tiny_loss(Tiny& m, const Tensor& x) { return (m.w * x).sum(); }

TEST_P(Amp, ScalerScalesUnscalesAndSteps) {
  Tiny m;
  optim::SGD opt(m.parameters(), {.lr = 0.5});
  amp::GradScaler scaler;
  EXPECT_EQ(scaler.get_scale(), 65536.0);
  Tensor x({3.0f, -1.0f, 0.25f});
  Tensor loss = tiny_loss(m, x);
  Tensor scaled = scaler.scale(loss);
  expect_close(scaled, {values(loss)[0] * 65536}, 1e-6);
  scaled.backward();
  expect_close(m.w.grad(), {3 * 65536.0, -65536.0, 0.25 * 65536}, 1e-6);
  scaler.unscale(opt);
  expect_close(m.w.grad(), {3.0, -1.0, 0.25}, 1e-6);
  EXPECT_FALSE(scaler.found_inf(opt));
  EXPECT_CRISP_ERROR(scaler.unscale(opt), "already");
  // step() does not divide a second time.
  EXPECT_TRUE(scaler.step(opt));
  expect_close(m.w, {1 - 0.5 * 3, -2 + 0.5, 0.5 - 0.5 * 0.25}, 1e-6);
  scaler.update();
  EXPECT_EQ(scaler.get_scale(), 65536.0);
  EXPECT_EQ(scaler.growth_tracker(), 1);
  EXPECT_CRISP_ERROR(scaler.update(), "no gradients were checked");
}

TEST_P(Amp, ScalerSkipsInfiniteAndNaNStepsAndFollowsTheScaleSequence) {
  Tiny m;
  optim::Adam opt(m.parameters(), {.lr = 0.1});
  amp::GradScaler scaler({.init_scale = 1024, .growth_interval = 3});
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor good({1.0f, 2.0f, 3.0f});
  // (input, whether the step runs, scale and growth count after update) — by hand: three finite
  // steps in a row double the scale, an overflow halves it and restarts the count.
  struct Case {
    Tensor x;
    bool steps;
    double scale;
    int64_t tracker;
  };
  std::vector<Case> cases{
      {good, true, 1024, 1},
      {good, true, 1024, 2},
      {Tensor({1.0f, inf, 3.0f}), false, 512, 0},
      {good, true, 512, 1},
      {Tensor({nan, 2.0f, 3.0f}), false, 256, 0},
      {good, true, 256, 1},
      {good, true, 256, 2},
      {good, true, 512, 0},
      {good, true, 512, 1},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    opt.zero_grad();
    Tensor before = m.w.detach();
    scaler.scale(tiny_loss(m, cases[i].x)).backward();
    EXPECT_EQ(scaler.step(opt), cases[i].steps) << i;
    EXPECT_EQ(scaler.found_inf(opt), !cases[i].steps) << i;
    if (cases[i].steps)
      EXPECT_GT(values((m.w - before).abs().sum())[0], 0) << i;
    else
      expect_tensors_close(m.w, before, 0, "a skipped step leaves the parameter");
    scaler.update();
    EXPECT_EQ(scaler.get_scale(), cases[i].scale) << i;
    EXPECT_EQ(scaler.growth_tracker(), cases[i].tracker) << i;
  }
  // The optimizer took only the finite steps: its step count says so.
  EXPECT_EQ(opt.state().at("w.step").item<int64_t>(), 7);
}

TEST_P(Amp, ScalerStateRoundTripsAndDisabledScalerPassesThrough) {
  amp::GradScaler a({.init_scale = 8, .growth_interval = 5});
  Tiny m;
  optim::SGD opt(m.parameters(), {.lr = 0.1});
  a.scale(tiny_loss(m, Tensor({1.0f, 1.0f, 1.0f}))).backward();
  a.step(opt);
  a.update();
  State s = a.state();
  EXPECT_EQ(s.names(), (std::vector<std::string>{"scale", "growth_factor", "backoff_factor",
                                                 "growth_interval", "growth_tracker"}));
  EXPECT_EQ(s.at("scale").dtype(), f32);
  amp::GradScaler b;
  b.load_state(s);
  EXPECT_EQ(b.get_scale(), 8.0);
  EXPECT_EQ(b.growth_tracker(), 1);
  State bad = s;
  bad.set("scale", scalar(-1));
  EXPECT_CRISP_ERROR(b.load_state(bad), "scale");
  EXPECT_CRISP_ERROR(amp::GradScaler({.backoff_factor = 2}), "backoff_factor");

  amp::GradScaler off({.enabled = false});
  Tensor loss = tiny_loss(m, Tensor({1.0f, 1.0f, 1.0f}));
  EXPECT_EQ(off.scale(loss).impl(), loss.impl());
  EXPECT_EQ(off.get_scale(), 1.0);
}

// Float16 training as it is meant to run: autocast forward, scaled backward, scaler step.
TEST_P(Amp, Float16TrainingWithTheScalerReducesTheLoss) {
  manual_seed(3);
  nn::Linear lin(8, 4);
  Tensor x = randn({32, 8});
  Tensor target = randint(0, 4, {32});
  optim::SGD opt(lin.parameters(), {.lr = 0.5});
  amp::GradScaler scaler;
  double first = 0, last = 0;
  for (int step = 0; step < 20; ++step) {
    Tensor loss;
    {
      amp::Autocast ac(f16);
      loss = cross_entropy(lin(x), target);
    }
    if (step == 0) first = loss.item<float>();
    last = loss.item<float>();
    opt.zero_grad();
    scaler.scale(loss).backward();
    EXPECT_EQ(lin.weight.grad().dtype(), f32);
    scaler.step(opt);
    scaler.update();
  }
  EXPECT_EQ(lin.weight.dtype(), f32);
  EXPECT_LT(last, first * 0.8);
}

INSTANTIATE_TEST_SUITE_P(Backends, Amp, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace crisp::testing
