// The CUDA nn, indexing and optimizer kernels against the CPU backend on inputs large enough to
// take the paths the small conformance cases do not: measured cuDNN algorithms, split
// per-channel sums, packed and wide plane passes, long rows, atomics under repeated indices.
#include <algorithm>
#include <functional>
#include <sstream>

#include "testing.h"

namespace crisp::testing {

class CudaNn : public BackendTest {};
INSTANTIATE_TEST_SUITE_P(Backends, CudaNn, ::testing::Values("cuda"),
                         [](const auto& info) { return info.param; });

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

std::vector<Tensor> on_cpu(const std::vector<Tensor>& in) {
  std::vector<Tensor> host;
  for (const Tensor& t : in) host.push_back(t.to(Backend::cpu()));
  return host;
}

// f and its gradients with respect to the floating inputs agree on CUDA and on the CPU (values
// within tol, gradients within tol or 1e-5).
void expect_same(const Fn& f, const std::vector<Tensor>& in, double tol, const char* what,
                 bool grads = true) {
  auto run = [&](std::vector<Tensor> xs) {
    std::vector<Tensor> diff;
    for (Tensor& x : xs)
      if (grads && is_floating(x.dtype())) {
        x = x.detach().requires_grad_();
        diff.push_back(x);
      }
    Tensor y = f(xs);
    std::vector<Tensor> out{y.detach()};
    if (!diff.empty()) {
      Generator gen(7);
      Tensor g = randn(y.shape(), f32, &gen).cast(y.dtype()).to(y.backend());
      for (Tensor& d : crisp::grad(y, diff, g)) out.push_back(d);
    }
    return out;
  };
  std::vector<Tensor> ref = Backend::cpu()->use([&] { return run(on_cpu(in)); });
  std::vector<Tensor> got = run(in);
  ASSERT_EQ(got.size(), ref.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].backend().get(), Backend::cuda().get()) << what;
    // Gradients may sum through atomics, in an order of their own.
    if (i == 0)
      expect_tensors_close(got[i], ref[i], tol, what);
    else
      expect_tensors_close(got[i], ref[i], std::max(tol, 1e-5),
                           (std::string(what) + " grad").c_str());
  }
}

}  // namespace

// Float32 f on CUDA, and its gradients with respect to every input for an output gradient g,
// against float64 on the CPU. Errors are measured against each value's sum of |terms| (f and
// its gradients run in float64 on |inputs| and |g|, which f's linearity in each input makes
// exactly that), float32's error-bound scale, whatever order the sums run in: below 1e-5
// everywhere, as for products (Tf32x3ProductsKeepFloat32Accuracy).
void expect_float32_accurate(const Fn& f, const std::vector<Tensor>& in, const char* what) {
  auto run = [&](std::vector<Tensor> xs, const Tensor& g) {
    for (Tensor& x : xs) x = x.detach().requires_grad_();
    Tensor y = f(xs);
    std::vector<Tensor> out{y.detach()};
    for (Tensor& d : crisp::grad(y, xs, g.to(y.backend()).cast(y.dtype()))) out.push_back(d);
    return out;
  };
  std::vector<Tensor> got, ref, scale;
  Backend::cpu()->use([&] {
    std::vector<Tensor> wide, mag;
    for (const Tensor& t : in) {
      wide.push_back(t.to(Backend::cpu()).cast(f64));
      mag.push_back(wide.back().abs());
    }
    const Tensor g = randn(f(wide).shape(), f64);
    ref = run(wide, g);
    scale = run(mag, g.abs());
    got = Backend::cuda()->use([&] { return run(in, g.cast(f32)); });
  });
  ASSERT_EQ(got.size(), ref.size()) << what;
  for (size_t t = 0; t < got.size(); ++t) {
    EXPECT_EQ(got[t].dtype(), f32) << what;
    const std::vector<double> a = values(got[t]), b = values(ref[t]), s = values(scale[t]);
    ASSERT_EQ(a.size(), b.size()) << what;
    size_t worst = 0;
    double worst_error = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const double e = std::abs(a[i] - b[i]) / std::max(s[i], 1e-30);
      if (!(e <= worst_error)) {
        worst = i;
        worst_error = e;
      }
    }
    EXPECT_LE(worst_error, 1e-5) << what << (t == 0 ? " value" : " gradient ") << t << " at "
                                 << worst << ": " << a[worst] << " vs " << b[worst]
                                 << ", terms' scale " << s[worst];
  }
}

TEST_P(CudaNn, MeasuredConvolutionsMatchCpu) {
  Tensor x = randn({4, 32, 20, 20}), w = randn({48, 16, 3, 3}), b = randn({48});
  expect_same([](auto& v) { return conv2d(v[0], v[1], v[2], {.padding = {1}, .groups = 2}); },
              {x, w, b}, 2e-4, "conv2d");
  Tensor wt = randn({32, 8, 3, 3});
  expect_same(
      [](auto& v) {
        return conv_transpose2d(v[0], v[1], v[2],
                                {.stride = {2}, .padding = {1}, .output_padding = {1}});
      },
      {x, wt, randn({8})}, 2e-4, "conv_transpose2d");
  expect_same(
      [](auto& v) {
        return conv3d(v[0], v[1], {}, {.stride = {1, 2, 1}});
      },
      {randn({2, 8, 10, 12, 10}), randn({16, 8, 3, 3, 3})}, 2e-4, "conv3d");
  expect_same([](auto& v) { return conv1d(v[0], v[1], v[2], {.padding = {2}, .dilation = {2}}); },
              {randn({8, 64, 300}), randn({64, 64, 5}), randn({64})}, 2e-4, "conv1d");
  // The reference CNN's convolutions, at a training batch and for one image: each pass picks
  // cuDNN, the GEMM path (split or not, on FMA or 3xTF32 kernels) or the direct kernel by timing
  // them.
  for (int64_t n : {64, 1})
    for (const auto& [c, o] : {std::pair<int64_t, int64_t>{1, 20}, {20, 50}, {50, 500}}) {
      const int64_t side = c == 1 ? 28 : c == 20 ? 14 : 7;
      expect_float32_accurate([](auto& v) { return conv2d(v[0], v[1], v[2], {.padding = {2}}); },
                              {randn({n, c, side, side}), randn({o, c, 5, 5}), randn({o})},
                              "reference CNN conv2d");
    }
  // The direct forward kernel and the filter gradient's direct sums, forced, past the sizes
  // where they are taken untimed: stride, dilation and padding on both axes.
  ASSERT_EQ(setenv("CRISP_CONV_DIRECT", "1", 1), 0);
  expect_float32_accurate(
      [](auto& v) {
        return conv2d(v[0], v[1], v[2], {.stride = {2, 1}, .padding = {2}, .dilation = {1, 2}});
      },
      {randn({128, 3, 40, 36}), randn({8, 3, 5, 5}), randn({8})}, "direct kernels");
  ASSERT_EQ(unsetenv("CRISP_CONV_DIRECT"), 0);
  // 16-bit data: both backends round the same inputs and accumulate in float.
  for (DType dt : {f16, bf16})
    expect_same([](auto& v) { return conv2d(v[0], v[1], v[2], {.padding = {1}, .groups = 2}); },
                {x.cast(dt), w.cast(dt), b.cast(dt)}, 1e-2, dtype_name(dt).data());
  // TF32 within its own precision.
  set_allow_tf32(true);
  expect_same([](auto& v) { return conv2d(v[0], v[1], v[2], {.padding = {1}, .groups = 2}); },
              {x, w, b}, 3e-2, "conv2d tf32");
  set_allow_tf32(false);
}

TEST_P(CudaNn, BatchNormMatchesCpuOnEveryPlaneLayout) {
  const std::vector<Shape> shapes{{16, 24, 24, 24}, {256, 32, 2, 2}, {512, 100}, {4, 8, 50}};
  for (const Shape& s : shapes) {
    const int64_t c = s[1];
    Tensor x = randn(s) * 3 + 5, w = randn({c}), b = randn({c});
    expect_same([](auto& v) { return batch_norm(v[0], v[1], v[2], true); }, {x, w, b}, 1e-4,
                "batch_norm training");
    Tensor rm = randn({c}), rv = rand({c}) + 0.5;
    expect_same(
        [](auto& v) {
          Tensor m = v[3], var = v[4];
          return batch_norm(v[0], v[1], v[2], false, {&m, &var});
        },
        {x, w, b, rm.detach(), rv.detach()}, 1e-4, "batch_norm eval", false);
  }
  // 16-bit x with float32 parameters (autocast): statistics and parameter gradients in float32.
  for (size_t k : {0, 3}) {
    const Shape& s = shapes[k];
    Tensor xh = (randn(s) * 3 + 5).cast(bf16), w = randn({s[1]}), b = randn({s[1]});
    expect_same(
        [](auto& v) {
          amp::Autocast ac(bf16);
          return batch_norm(v[0], v[1], v[2], true);
        },
        {xh, w, b}, 2e-2, "batch_norm bf16 with float32 parameters");
  }
  // Running statistics follow the batch's.
  Tensor x = randn({64, 16, 7, 7}) + 2;
  Tensor rm = zeros({16}), rv = ones({16});
  Tensor rmc = rm.to(Backend::cpu()), rvc = rv.to(Backend::cpu());
  batch_norm(x, {}, {}, true, {&rm, &rv});
  Backend::cpu()->use([&] { return batch_norm(x.to(Backend::cpu()), {}, {}, true, {&rmc, &rvc}); });
  expect_tensors_close(rm, rmc, 1e-5, "running mean");
  expect_tensors_close(rv, rvc, 1e-5, "running var");
}

TEST_P(CudaNn, RowNormalizersMatchCpuOnLongAndShortRows) {
  for (Shape s : {Shape{64, 4096}, Shape{3000, 48}}) {
    const int64_t d = s[1];
    Tensor x = randn(s) + 1, w = randn({d}), b = randn({d});
    expect_same([d](auto& v) { return layer_norm(v[0], {d}, v[1], v[2]); }, {x, w, b}, 1e-4,
                "layer_norm");
    expect_same([d](auto& v) { return rms_norm(v[0], {d}, v[1]); }, {x, w}, 1e-4, "rms_norm");
    expect_same([d](auto& v) { return layer_norm(v[0], {d}); }, {x}, 1e-4, "layer_norm plain");
  }
  Tensor x = randn({6, 64, 30, 30}), w = randn({64}), b = randn({64});
  expect_same([](auto& v) { return group_norm(v[0], 8, v[1], v[2]); }, {x, w, b}, 1e-4,
              "group_norm");
  expect_same([](auto& v) { return group_norm(v[0], 4, v[1], v[2]); },
              {randn({64, 16, 3}), randn({16}), randn({16})}, 1e-4, "group_norm short rows");
  for (DType dt : {f16, bf16})
    expect_same([](auto& v) { return layer_norm(v[0], {512}, v[1], v[2]); },
                {randn({128, 512}).cast(dt), randn({512}).cast(dt), randn({512}).cast(dt)}, 5e-2,
                "layer_norm 16-bit");
}

TEST_P(CudaNn, PoolingMatchesCpu) {
  Tensor x = randn({8, 16, 33, 31});
  expect_same(
      [](auto& v) { return max_pool2d(v[0], {.kernel = {3}, .stride = {2}, .padding = {1}}); }, {x},
      1e-6, "max_pool2d");
  expect_same(
      [](auto& v) {
        return max_pool2d(v[0], {.kernel = {2, 3}, .dilation = {2, 1}});
      },
      {x}, 1e-6, "max_pool2d dilated");
  expect_same(
      [](auto& v) {
        return avg_pool2d(
            v[0], {.kernel = {3}, .stride = {2}, .padding = {1}, .count_include_pad = false});
      },
      {x}, 1e-5, "avg_pool2d");
  expect_same(
      [](auto& v) {
        return max_pool3d(v[0], {.kernel = {2}, .stride = {1, 2, 2}});
      },
      {randn({2, 4, 9, 10, 11})}, 1e-6, "max_pool3d");
  expect_same([](auto& v) { return avg_pool1d(v[0], {.kernel = {4}, .stride = {3}}); },
              {randn({4, 8, 100})}, 1e-5, "avg_pool1d");
  expect_same([](auto& v) { return max_pool2d(v[0], {.kernel = {2}}); },
              {randn({4, 8, 16, 16}).cast(bf16)}, 1e-2, "max_pool2d bf16");
}

TEST_P(CudaNn, EmbeddingAndLossesMatchCpu) {
  Tensor idx = randint(0, 300, {64, 50});  // many repeats: the gradient's atomics collide
  for (DType dt : {f32, f64, bf16})
    expect_same([](auto& v) { return embedding(v[0], v[1]); }, {idx, randn({300, 96}).cast(dt)},
                dt == bf16 ? 2e-2 : 1e-5, "embedding");
  Tensor logits = randn({512, 1000}), target = randint(0, 1000, {512});
  target[Slice(0, 20)] = -100;
  expect_same([](auto& v) { return cross_entropy(v[0], v[1]); }, {logits, target}, 1e-5,
              "cross_entropy");
  Tensor wc = rand({1000}) + 0.5;
  expect_same(
      [](auto& v) {
        return cross_entropy(v[0], v[1], {.label_smoothing = 0.1, .weight = v[2].detach()});
      },
      {logits, target, wc}, 1e-5, "cross_entropy smoothed, weighted", false);
  expect_same([](auto& v) { return cross_entropy(v[0], v[1], {.reduction = "sum"}); },
              {randn({16, 10, 40, 3}), randint(0, 10, {16, 40, 3})}, 1e-5,
              "cross_entropy spatial sum");
  expect_same([](auto& v) { return cross_entropy(v[0], softmax(v[1], 1), {.reduction = "none"}); },
              {randn({64, 30}), randn({64, 30})}, 1e-5, "cross_entropy probabilities");
}

TEST_P(CudaNn, IndexingMatchesCpuOnLargeInputs) {
  Tensor x = randn({200, 300}), xt = randn({300, 200}).t();
  Tensor idx = randint(-300, 300, {200, 250});
  idx = where(idx < 0, idx + 300, idx);
  expect_same([](auto& v) { return gather(v[0], 1, v[1]); }, {xt, idx}, 0, "gather strided");
  expect_same([](auto& v) { return scatter_add(v[0], 1, v[1], v[2]); }, {x, idx, randn({200, 250})},
              1e-5, "scatter_add repeated");
  expect_same([](auto& v) { return scatter(v[0], 1, v[1], v[2]); }, {x, idx, randn({200, 250})}, 0,
              "scatter repeated: the last write wins", false);
  Tensor rows = randint(0, 200, {500});
  expect_same([](auto& v) { return index_select(v[0], 0, v[1]); }, {xt, rows}, 0, "index_select");
  expect_same([](auto& v) { return index_add(v[0], 0, v[1], v[2]); }, {x, rows, randn({500, 300})},
              1e-5, "index_add repeated");
  expect_same([](auto& v) { return concat({v[0], v[1], v[0] * 2}, 1); }, {x, xt}, 0, "concat");
  expect_same([](auto& v) { return pad(v[0], {3, 5, 2, 1}, "reflect"); }, {xt}, 0, "pad reflect");
  expect_same([](auto& v) { return pad(v[0], {1, -2, 0, 4}, "constant", 2.5); }, {xt}, 0, "pad");
  expect_same([](auto& v) { return flip(v[0], {0, 1}) + 0; }, {xt}, 0, "flip");
  expect_same([](auto& v) { return tril(v[0], -3) + triu(v[0], 5); }, {xt}, 0, "tril/triu");
  Tensor y = x.cast(i64);
  y[Slice(1, _, 3), Slice(2, _, 7)] = 9;
  Tensor yc = x.to(Backend::cpu()).cast(i64);
  Backend::cpu()->use([&] { yc[Slice(1, _, 3), Slice(2, _, 7)] = 9; });
  EXPECT_EQ(y.to_vector<int64_t>(), yc.to_vector<int64_t>());
}

// Thirty parameters in one optimizer: more than one launch's table, sizes that leave packs and
// tails, an unaligned view, and one parameter that skips the first step (so two step counts).
TEST_P(CudaNn, OptimizerStepsMatchCpu) {
  using Params = std::vector<nn::NamedParam>;
  struct Case {
    const char* name;
    std::function<std::unique_ptr<optim::Optimizer>(const Params&)> make;
  };
  const std::vector<Case> cases = {
      {"sgd",
       [](const Params& p) {
         return std::make_unique<optim::SGD>(
             p,
             optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = true});
       }},
      {"adam",
       [](const Params& p) {
         return std::make_unique<optim::Adam>(
             p, optim::AdamOptions{.lr = 0.01, .weight_decay = 0.1, .amsgrad = true});
       }},
      {"adamw",
       [](const Params& p) {
         return std::make_unique<optim::AdamW>(p, optim::AdamWOptions{.lr = 0.01});
       }},
      {"rmsprop",
       [](const Params& p) {
         return std::make_unique<optim::RMSprop>(
             p, optim::RMSpropOptions{.lr = 0.01, .momentum = 0.5, .centered = true});
       }},
  };
  const Shape shapes[] = {{101, 70}, {3}, {2, 4101}, {1000}};
  constexpr size_t kParams = 30;
  for (DType dt : {f32, f64, bf16}) {
    for (const Case& c : cases) {
      std::vector<Tensor> p(kParams), pc(kParams);
      Params named, named_c;
      for (size_t i = 0; i < kParams; ++i) {
        const Shape& shape = shapes[i % 4];
        // The last shape as a view one element into a larger array: not 16-byte aligned.
        Tensor init = i % 4 == 3 ? randn({1001})[Slice(1, _)].cast(dt) : randn(shape).cast(dt);
        p[i] = init.detach().requires_grad_();
        pc[i] = init.to(Backend::cpu()).detach().requires_grad_();
      }
      for (size_t i = 0; i < kParams; ++i) {
        std::ostringstream name;
        name << 'p' << i;
        named.push_back({name.str(), &p[i]});
        named_c.push_back({name.str(), &pc[i]});
      }
      auto opt = c.make(named);
      auto optc = Backend::cpu()->use([&] { return c.make(named_c); });
      for (int step = 0; step < 3; ++step) {
        opt->zero_grad();
        optc->zero_grad();
        Tensor loss = zeros({}, dt);
        Tensor loss_c = Backend::cpu()->use([&] { return zeros({}, dt); });
        for (size_t i = step == 0 ? 1 : 0; i < kParams; ++i) {
          Tensor g = randn(p[i].shape()).cast(dt);
          loss = loss + (p[i] * g).sum();
          loss_c =
              Backend::cpu()->use([&] { return loss_c + (pc[i] * g.to(Backend::cpu())).sum(); });
        }
        loss.backward();
        opt->step();
        Backend::cpu()->use([&] {
          loss_c.backward();
          optc->step();
          return 0;
        });
      }
      for (size_t i = 0; i < kParams; ++i) {
        std::ostringstream what;
        what << c.name << " parameter " << i;
        expect_tensors_close(p[i], pc[i],
                             dt == bf16  ? 1e-2
                             : dt == f64 ? 1e-12
                                         : 1e-5,
                             what.str().c_str());
      }
    }
  }
}

// Small forward convolutions (one image of a small CNN) run as one direct kernel. Its outputs
// against the CPU's float64 ones from the same (rounded) inputs, within each dtype's rounding
// relative to the sum of the output's terms' magnitudes; its gradients through the unchanged
// backward passes against the CPU's.
TEST_P(CudaNn, SmallConvolutionsMatchCpu) {
  struct Case {
    const char* name;
    Shape x, w;
    ConvOptions opt;
    bool bias = true;
  };
  const std::vector<Case> cases{
      {"reference CNN conv1", {1, 1, 28, 28}, {20, 1, 5, 5}, {.padding = {2}}},
      {"reference CNN conv2", {1, 20, 14, 14}, {50, 20, 5, 5}, {.padding = {2}}},
      {"reference CNN conv3", {1, 50, 7, 7}, {500, 50, 5, 5}, {.padding = {2}}},
      {"stride 2", {2, 8, 15, 15}, {12, 8, 3, 3}, {.stride = {2}, .padding = {1}}},
      {"dilation 2", {3, 6, 12, 11}, {10, 6, 3, 3}, {.padding = {2}, .dilation = {2}}},
      {"groups 2", {2, 8, 9, 9}, {6, 4, 3, 3}, {.padding = {1}, .groups = 2}},
      {"no bias, odd size", {1, 3, 13, 17}, {7, 3, 4, 2}, {.padding = {3, 1}}, false},
      {"one input channel", {3, 1, 20, 19}, {5, 1, 3, 3}, {.padding = {1}}},
      {"1-d", {2, 5, 40}, {9, 5, 7}, {.stride = {3}, .padding = {2}}},
  };
  auto conv = [](const Case& c, const std::vector<Tensor>& v) {
    const std::optional<Tensor> b = c.bias ? std::optional(v[2]) : std::nullopt;
    return v[0].ndim() == 3 ? conv1d(v[0], v[1], b, c.opt) : conv2d(v[0], v[1], b, c.opt);
  };
  for (const Case& c : cases) {
    const std::vector<Tensor> in{randn(c.x), randn(c.w), randn({c.w[0]})};
    for (DType dt : {f32, f64, f16, bf16}) {
      std::vector<Tensor> typed;
      for (const Tensor& t : in) typed.push_back(t.cast(dt));
      const std::vector<double> got = values(conv(c, typed));
      const auto [ref, scale] = Backend::cpu()->use([&] {
        std::vector<Tensor> v, mag;
        for (const Tensor& t : typed) {
          v.push_back(t.to(Backend::cpu()).cast(f64));
          mag.push_back(v.back().abs());
        }
        return std::pair{values(conv(c, v)), values(conv(c, mag))};
      });
      const double tol = dt == f64 ? 1e-12 : dt == f32 ? 1e-5 : dt == f16 ? 1e-3 : 8e-3;
      ASSERT_EQ(got.size(), ref.size()) << c.name;
      size_t worst = 0;
      double worst_ratio = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        const double ratio = std::abs(got[i] - ref[i]) / (tol * scale[i]);
        if (!(ratio <= worst_ratio)) {
          worst = i;
          worst_ratio = ratio;
        }
      }
      EXPECT_LE(worst_ratio, 1.0) << c.name << " " << dtype_name(dt) << " at " << worst << ": "
                                  << got[worst] << " vs " << ref[worst] << ", terms' scale "
                                  << scale[worst];
    }
    // With gradients: conv3's input gradient adds 12,500 terms of size ~1, summed in an order
    // of the plan's (chosen by timing).
    expect_float32_accurate([&](auto& v) { return conv(c, v); },
                            c.bias ? in : std::vector{in[0], in[1]}, c.name);
  }
  // loss.backward() through the reference CNN's first two convolutions for one image.
  const std::vector<Tensor> params{randn({1, 1, 28, 28}), randn({20, 1, 5, 5}), randn({20}),
                                   randn({50, 20, 5, 5}), randn({50})};
  auto grads = [](std::vector<Tensor> p) {
    for (Tensor& t : p) t = t.detach().requires_grad_();
    Tensor h =
        conv2d(conv2d(p[0], p[1], p[2], {.padding = {2}}).relu(), p[3], p[4], {.padding = {2}});
    (h * h).mean().backward();
    std::vector<Tensor> g;
    for (const Tensor& t : p) g.push_back(t.grad());
    return g;
  };
  const std::vector<Tensor> got = grads(params);
  const std::vector<Tensor> ref = Backend::cpu()->use([&] { return grads(on_cpu(params)); });
  for (size_t i = 0; i < got.size(); ++i)
    expect_tensors_close(got[i], ref[i], 1e-4,
                         ("reference CNN gradient " + std::to_string(i)).c_str());
}

}  // namespace crisp::testing
