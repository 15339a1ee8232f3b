// Tests of cross_entropy and nll_loss (values from PyTorch 1.13, pasted), dropout, embedding
// and scaled_dot_product_attention.
#include <cmath>

#include "testing.h"

namespace crisp::testing {
namespace {

class Loss : public BackendTest {};

// Reading t raises an error found while computing, traced (when line is given) to that line.
void expect_error_on_read(const Tensor& t, const std::string& text, int line = 0) {
  try {
    t.to_vector<double>();
    ADD_FAILURE() << "expected an error reading the tensor";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.message()).find(text), std::string::npos) << e.what();
    if (!line) return;
    ASSERT_FALSE(e.trace().empty()) << e.what();
    EXPECT_NE(std::string(e.trace().front().file).find(__FILE__), std::string::npos) << e.what();
    EXPECT_EQ(e.trace().front().line, static_cast<uint32_t>(line)) << e.what();
  }
}

Tensor logits4x3() {
  return Tensor({0.5, -1.0, 2.0, 1.5, 0.2, -0.3, 0.0, 0.3, 0.9, -2.0, 1.0, 0.1}, {4, 3});
}
Tensor targets4() { return Tensor({2, 0, -100, 1}, {4}); }  // one ignored
Tensor class_weights() { return Tensor({0.2, 1.0, 3.0}, {3}); }

TEST_P(Loss, CrossEntropyMatchesPyTorch) {
  Tensor x = logits4x3(), t = targets4(), w = class_weights();
  expect_close(cross_entropy(x, t), {0.32679490945348033}, 1e-10);
  expect_close(cross_entropy(x, t, {.weight = w}), {0.27916640870946485}, 1e-10);
  expect_close(cross_entropy(x, t, {.label_smoothing = 0.2}), {0.5823504650090359}, 1e-10);
  expect_close(cross_entropy(x, t, {.label_smoothing = 0.3, .weight = w}), {0.610121625599336},
               1e-10);
  expect_close(cross_entropy(x, t, {.reduction = "sum", .label_smoothing = 0.1, .weight = w}),
               {1.6358362202255723}, 1e-10);
  expect_close(cross_entropy(x, t, {.reduction = "none", .label_smoothing = 0.1, .weight = w}),
               {0.795324082506326, 0.33953669537133446, 0.0, 0.5009754423479117}, 1e-10);
}

TEST_P(Loss, CrossEntropyWithProbabilityTargetsMatchesPyTorch) {
  Tensor x = logits4x3(), w = class_weights();
  Tensor p({0.2, 0.3, 0.5, 1.0, 0.0, 0.0, 0.1, 0.1, 0.8, 0.0, 0.5, 0.5}, {4, 3});
  expect_close(cross_entropy(x, p), {0.8627424847533054}, 1e-10);
  expect_close(cross_entropy(x, p, {.label_smoothing = 0.2, .weight = w}), {1.4195126561249898},
               1e-10);
  expect_close(cross_entropy(x, p, {.reduction = "none", .weight = w}),
               {1.404012785849169, 0.0726271012737507, 1.7678747308450076, 2.1018758506690607},
               1e-10);
}

TEST_P(Loss, CrossEntropyOverSpatialDimsMatchesPyTorch) {
  Tensor x = sin(arange(0, 24, 1, f64).reshape({2, 3, 4}));
  Tensor t({0, 1, 2, 1, 2, 2, 0, -100}, {2, 4});
  expect_close(cross_entropy(x, t, {.weight = class_weights()}), {1.0608408239363438}, 1e-10);
  Tensor none = cross_entropy(x, t, {.reduction = "none"});
  EXPECT_EQ(none.shape(), (Shape{2, 4}));
  expect_close(none,
               {1.4251958174228057, 2.3971218446144213, 1.8840654959498295, 0.5809285950766677,
                0.4289355597652648, 0.6015685049828331, 0.43393553802443496, 0.0},
               1e-10);
}

TEST_P(Loss, CrossEntropyGradientMatchesFiniteDifferences) {
  Tensor t({2, 0, -100, 1, 1}, {5});
  Tensor w = rand({3}, f64) + 0.5;
  check_gradients(
      [&](const std::vector<Tensor>& in) {
        return cross_entropy(in[0], t, {.label_smoothing = 0.15, .weight = w});
      },
      {randn({5, 3})});
  check_gradients(
      [&](const std::vector<Tensor>& in) {
        return cross_entropy(in[0], Tensor({1, 0, 2, 2, 1, 0}, {2, 3}), {.reduction = "none"});
      },
      {randn({2, 4, 3})});
  // Probability targets: gradients reach the targets too.
  check_gradients(
      [&](const std::vector<Tensor>& in) {
        return cross_entropy(in[0], in[1], {.reduction = "sum", .label_smoothing = 0.1});
      },
      {randn({3, 4}), rand({3, 4})});
}

TEST_P(Loss, NllLossPicksWeightedLogProbabilities) {
  Tensor lp = log_softmax(logits4x3(), 1);
  std::vector<double> v = values(lp);
  // mean over non-ignored targets, weighted: (0.2... ) by hand from the log-probabilities
  const double w[3] = {0.2, 1.0, 3.0};
  const double num = -(w[2] * v[2] + w[0] * v[3] + w[1] * v[10]);
  expect_close(nll_loss(lp, targets4(), {.weight = class_weights()}), {num / (w[2] + w[0] + w[1])},
               1e-12);
  expect_close(nll_loss(lp, targets4(), {.reduction = "sum"}), {-(v[2] + v[3] + v[10])}, 1e-12);
  check_gradients([](const std::vector<Tensor>& in) { return nll_loss(in[0], targets4()); },
                  {randn({4, 3})});
}

TEST_P(Loss, LossRejectsBadTargets) {
  Tensor x = logits4x3();
  Tensor bad = cross_entropy(x, Tensor({0, 3, 1, 1}, {4}));  // class 3 of 3: found computing
  expect_error_on_read(bad, "target 3 is out of range for 3 classes");
  EXPECT_CRISP_ERROR(cross_entropy(x, Tensor({0, 1}, {2})), "does not match input");
  EXPECT_CRISP_ERROR(cross_entropy(x, Tensor({0, 1, 1, 1}, {4}, i32)), "must be int64");
  EXPECT_CRISP_ERROR(cross_entropy(x, targets4(), {.reduction = "avg"}), "reduction must be");
  EXPECT_CRISP_ERROR(cross_entropy(x, targets4(), {.label_smoothing = 1.5}), "label_smoothing");
  EXPECT_CRISP_ERROR(cross_entropy(x, targets4(), {.weight = ones({4}, f64)}),
                     "weight must have shape [3]");
  EXPECT_CRISP_ERROR(nll_loss(x, rand({4, 3}, f64)), "int64 class indices");
}

// On CUDA the kernel finds a bad target without making the host wait: the next read on the
// device, of any tensor, raises it naming the nll_loss line, and the device goes on.
TEST_P(Loss, BadTargetOnTheDeviceIsRaisedAtTheNextReadAndTheDeviceGoesOn) {
  if (GetParam() != "cuda") GTEST_SKIP() << "the CPU raises it at the op, on its outputs";
  Tensor lp = log_softmax(logits4x3(), 1);
  const int line = __LINE__ + 1;
  Tensor bad = nll_loss(lp, Tensor({0, 3, 1, 1}, {4}));
  Tensor unrelated = lp.sum();  // not computed from bad
  expect_error_on_read(unrelated, "nll_loss: target 3 is out of range for 3 classes", line);
  std::vector<double> v = values(lp);  // raised once: the next read works
  expect_close(nll_loss(lp, targets4(), {.reduction = "sum"}), {-(v[2] + v[3] + v[10])}, 1e-12);
}

// More unread checks than the device keeps records for (1024): the oldest are checked early,
// and the first fault waits for the next read.
TEST_P(Loss, ManyUnreadDeviceChecksNeitherHangNorLoseTheFirstFault) {
  if (GetParam() != "cuda") GTEST_SKIP() << "the CPU raises it at the op, on its outputs";
  Tensor lp = log_softmax(logits4x3(), 1), bad({0, 3, 1, 1}, {4}), good = targets4();
  const int line = __LINE__ + 1;
  Tensor first = nll_loss(lp, bad);
  Tensor last;
  for (int i = 0; i < 2500; ++i) last = nll_loss(lp, i % 500 == 7 ? bad : good);
  expect_error_on_read(last, "target 3 is out of range for 3 classes", line);
  std::vector<double> v = values(lp);
  expect_close(nll_loss(lp, good, {.reduction = "sum"}), {-(v[2] + v[3] + v[10])}, 1e-12);
}

TEST_P(Loss, DropoutZeroesAndScales) {
  Tensor x = ones({2000});
  Generator gen(7);
  std::vector<double> y = values(dropout(x, 0.25, true, &gen));
  int zeros_seen = 0;
  for (double v : y) {
    if (v == 0)
      ++zeros_seen;
    else
      EXPECT_NEAR(v, 1 / 0.75, 1e-6);
  }
  EXPECT_NEAR(zeros_seen / 2000.0, 0.25, 0.05);
  expect_tensors_close(dropout(x, 0.5, false), x);  // eval: identity
  // The same generator state gives the same mask, and the gradient uses that mask.
  Generator a(3), b(3);
  Tensor xr = randn({50}, f64);
  expect_tensors_close(dropout(xr, 0.3, true, &a), dropout(xr, 0.3, true, &b));
  check_gradients(
      [](const std::vector<Tensor>& in) {
        Generator g(11);
        return dropout(in[0], 0.4, true, &g);
      },
      {randn({20})});
  EXPECT_CRISP_ERROR(dropout(x, 1.0), "p must be in [0, 1)");
  EXPECT_CRISP_ERROR(dropout(x, -0.1), "p must be in [0, 1)");
}

TEST_P(Loss, EmbeddingGathersRowsAndAccumulatesDuplicateGradients) {
  Tensor w = arange(0, 8, 1, f32).reshape({4, 2});
  Tensor idx({3, 0, 3}, {3});
  expect_close(embedding(idx, w), {6, 7, 0, 1, 6, 7});
  EXPECT_EQ(embedding(Tensor({1, 2, 0, 1}, {2, 2}), w).shape(), (Shape{2, 2, 2}));
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return embedding(Tensor({1, 2, 1, 1, 0}, {5}), in[0]);
      },
      {randn({3, 4})});
  std::optional<Tensor> g;
  Tensor wg = w.on_grad([&](const Tensor& t) { g = t; });
  embedding(idx, wg).sum().backward();
  ASSERT_TRUE(g.has_value());
  expect_close(*g, {1, 1, 0, 0, 0, 0, 2, 2});
}

TEST_P(Loss, EmbeddingRejectsBadIndices) {
  Tensor w = ones({4, 2});
  Tensor out = embedding(Tensor({1, 4}, {2}), w);
  expect_error_on_read(out, "index 4 is out of range for 4 embeddings");
  EXPECT_CRISP_ERROR(embedding(Tensor({1.f}, {1}), w), "indices must be int64");
  EXPECT_CRISP_ERROR(embedding(Tensor({1}, {1}), ones({4})), "weight must be 2-d");
}

// Naive attention in float64 for one head: softmax(q k^T * scale + mask) v.
std::vector<double> naive_attention(const std::vector<double>& q, const std::vector<double>& k,
                                    const std::vector<double>& v, int64_t L, int64_t S, int64_t E,
                                    bool causal, const std::vector<bool>* keep) {
  std::vector<double> out(static_cast<size_t>(L * E), 0.0);
  for (int64_t i = 0; i < L; ++i) {
    std::vector<double> s(static_cast<size_t>(S));
    double mx = -INFINITY;
    for (int64_t j = 0; j < S; ++j) {
      double d = 0;
      for (int64_t e = 0; e < E; ++e) d += q[i * E + e] * k[j * E + e];
      d /= std::sqrt(double(E));
      if ((causal && j > i) || (keep && !(*keep)[i * S + j])) d = -INFINITY;
      s[j] = d;
      mx = std::max(mx, d);
    }
    double z = 0;
    for (double& x : s) z += (x = std::exp(x - mx));
    for (int64_t j = 0; j < S; ++j)
      for (int64_t e = 0; e < E; ++e) out[i * E + e] += s[j] / z * v[j * E + e];
  }
  return out;
}

TEST_P(Loss, AttentionMatchesNaiveLoop) {
  Tensor q = randn({4, 3}, f64), k = randn({5, 3}, f64), v = randn({5, 3}, f64);
  expect_close(scaled_dot_product_attention(q, k, v),
               naive_attention(values(q), values(k), values(v), 4, 5, 3, false, nullptr), 1e-10);
  expect_close(scaled_dot_product_attention(q, k, v, {}, true),
               naive_attention(values(q), values(k), values(v), 4, 5, 3, true, nullptr), 1e-10);
  Tensor keep = rand({4, 5}, f64) > 0.3;
  keep = logical_or(keep, Tensor({true, false, false, false, false}, {1, 5}));  // no empty row
  std::vector<bool> kv = keep.to_vector<bool>();
  expect_close(scaled_dot_product_attention(q, k, v, keep),
               naive_attention(values(q), values(k), values(v), 4, 5, 3, false, &kv), 1e-10);
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return scaled_dot_product_attention(in[0], in[1], in[2], {}, true);
      },
      {randn({2, 3, 2}), randn({2, 3, 2}), randn({2, 3, 2})});
  EXPECT_CRISP_ERROR(scaled_dot_product_attention(q, randn({5, 2}, f64), v), "embedding size");
  EXPECT_CRISP_ERROR(scaled_dot_product_attention(q, k, v, ones({4, 5})), "mask must be bool");
}

INSTANTIATE_TEST_SUITE_P(Backends, Loss, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace crisp::testing
