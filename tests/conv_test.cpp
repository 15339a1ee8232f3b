// Convolution tests: conv1d/2d/3d and their transposes against naive float64 loops, gradients
// by finite differences, reduced-precision dtypes and argument errors.
#include <array>

#include "testing.h"

namespace crisp::testing {
namespace {

struct Params {
  std::vector<int64_t> stride, padding, dilation, output_padding;
  int64_t groups = 1;
};

// Direct convolution over 3-d spatial dims (lower dims padded with size 1), in float64.
// transposed: w is [C, O/groups, k...] and each input element scatters into the output.
std::vector<double> naive(const std::vector<double>& x, Shape xs, const std::vector<double>& w,
                          Shape ws, const std::vector<double>* bias, const Params& p,
                          bool transposed, Shape& ys) {
  const size_t nd = xs.size() - 2;
  std::array<int64_t, 3> in{1, 1, 1}, k{1, 1, 1}, s{1, 1, 1}, pd{0, 0, 0}, dl{1, 1, 1}, op{0, 0, 0},
      out{1, 1, 1};
  for (size_t i = 0; i < nd; ++i) {
    const size_t j = 3 - nd + i;
    in[j] = xs[2 + i];
    k[j] = ws[2 + i];
    auto at = [i](const std::vector<int64_t>& v) { return v.size() == 1 ? v[0] : v[i]; };
    s[j] = at(p.stride);
    pd[j] = at(p.padding);
    dl[j] = at(p.dilation);
    op[j] = p.output_padding.empty() ? 0 : at(p.output_padding);
  }
  const int64_t N = xs[0], C = xs[1], G = p.groups;
  const int64_t O = transposed ? ws[1] * G : ws[0];
  ys = {N, O};
  for (size_t j = 0; j < 3; ++j) {
    out[j] = transposed ? (in[j] - 1) * s[j] - 2 * pd[j] + dl[j] * (k[j] - 1) + op[j] + 1
                        : (in[j] + 2 * pd[j] - dl[j] * (k[j] - 1) - 1) / s[j] + 1;
    if (j >= 3 - nd) ys.push_back(out[j]);
  }
  const int64_t Cg = C / G, Og = O / G;
  std::vector<double> y(static_cast<size_t>(N * O * out[0] * out[1] * out[2]), 0.0);
  auto X = [&](int64_t n, int64_t c, int64_t a, int64_t b, int64_t e) {
    return x[static_cast<size_t>((((n * C + c) * in[0] + a) * in[1] + b) * in[2] + e)];
  };
  auto Y = [&](int64_t n, int64_t o, int64_t a, int64_t b, int64_t e) -> double& {
    return y[static_cast<size_t>((((n * O + o) * out[0] + a) * out[1] + b) * out[2] + e)];
  };
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t o = 0; o < O; ++o) {
        const int64_t g = c / Cg;
        if (o / Og != g) continue;
        // w index: conv [o, c % Cg, ...], transposed [c, o % Og, ...]
        const int64_t wrow = transposed ? c * Og + o % Og : o * Cg + c % Cg;
        for (int64_t ka = 0; ka < k[0]; ++ka)
          for (int64_t kb = 0; kb < k[1]; ++kb)
            for (int64_t kc = 0; kc < k[2]; ++kc) {
              const double wv =
                  w[static_cast<size_t>(((wrow * k[0] + ka) * k[1] + kb) * k[2] + kc)];
              if (!transposed) {
                for (int64_t a = 0; a < out[0]; ++a)
                  for (int64_t b = 0; b < out[1]; ++b)
                    for (int64_t e = 0; e < out[2]; ++e) {
                      const int64_t ia = a * s[0] - pd[0] + ka * dl[0],
                                    ib = b * s[1] - pd[1] + kb * dl[1],
                                    ie = e * s[2] - pd[2] + kc * dl[2];
                      if (ia < 0 || ib < 0 || ie < 0 || ia >= in[0] || ib >= in[1] || ie >= in[2])
                        continue;
                      Y(n, o, a, b, e) += wv * X(n, c, ia, ib, ie);
                    }
              } else {
                for (int64_t a = 0; a < in[0]; ++a)
                  for (int64_t b = 0; b < in[1]; ++b)
                    for (int64_t e = 0; e < in[2]; ++e) {
                      const int64_t oa = a * s[0] - pd[0] + ka * dl[0],
                                    ob = b * s[1] - pd[1] + kb * dl[1],
                                    oe = e * s[2] - pd[2] + kc * dl[2];
                      if (oa < 0 || ob < 0 || oe < 0 || oa >= out[0] || ob >= out[1] ||
                          oe >= out[2])
                        continue;
                      Y(n, o, oa, ob, oe) += wv * X(n, c, a, b, e);
                    }
              }
            }
      }
  if (bias) {
    const int64_t P = out[0] * out[1] * out[2];
    for (int64_t n = 0; n < N; ++n)
      for (int64_t o = 0; o < O; ++o)
        for (int64_t i = 0; i < P; ++i) y[static_cast<size_t>((n * O + o) * P + i)] += (*bias)[o];
  }
  return y;
}

class Conv : public BackendTest {};

using ConvFn = Tensor (*)(const Tensor&, const Tensor&, const std::optional<Tensor>&, ConvOptions,
                          Loc);

ConvOptions options(const Params& p) {
  ConvOptions o;
  o.stride = p.stride;
  o.padding = p.padding;
  o.dilation = p.dilation;
  o.groups = p.groups;
  if (!p.output_padding.empty()) o.output_padding = p.output_padding;
  return o;
}

void check_against_naive(ConvFn f, bool transposed, Shape xs, Shape ws, const Params& p,
                         DType dtype = f32, double tol = 1e-4) {
  Tensor x = randn(xs, f64), w = randn(ws, f64);
  const int64_t O = transposed ? ws[1] * p.groups : ws[0];
  Tensor b = randn({O}, f64);
  std::vector<double> bv = values(b);
  Shape ys;
  std::vector<double> expected = naive(values(x), xs, values(w), ws, &bv, p, transposed, ys);
  Tensor y = f(x.cast(dtype), w.cast(dtype), b.cast(dtype), options(p), Loc::current());
  EXPECT_EQ(y.shape(), ys);
  EXPECT_EQ(y.dtype(), dtype);
  expect_close(y, expected, tol);
}

TEST_P(Conv, Conv2dHandValues) {
  Tensor x = arange(0, 9, 1, f32).reshape({1, 1, 3, 3});
  Tensor w = ones({1, 1, 2, 2});
  expect_close(conv2d(x, w), {8, 12, 20, 24});
  // padding 1, stride 2: the corners of the padded 4x4 windows
  expect_close(conv2d(x, w, Tensor({1.f}, {1}), {.stride = {2}, .padding = {1}}), {1, 4, 10, 25});
}

TEST_P(Conv, Conv2dMatchesNaiveLoop) {
  check_against_naive(conv2d, false, {2, 4, 7, 6}, {6, 2, 3, 2}, {{2, 1}, {1, 2}, {2, 1}, {}, 2});
  check_against_naive(conv2d, false, {3, 3, 5, 5}, {4, 3, 5, 5}, {{1}, {2}, {1}, {}, 1});
}

TEST_P(Conv, Conv2dPointwiseKernelMatchesNaiveLoop) {
  check_against_naive(conv2d, false, {2, 4, 3, 5}, {6, 4, 1, 1}, {{1}, {0}, {1}, {}, 1});
  check_against_naive(conv2d, false, {2, 4, 3, 5}, {6, 2, 1, 1}, {{1}, {0}, {1}, {}, 2});
}

TEST_P(Conv, Conv1dMatchesNaiveLoop) {
  check_against_naive(conv1d, false, {2, 4, 11}, {6, 2, 3}, {{2}, {3}, {2}, {}, 2});
}

TEST_P(Conv, Conv3dMatchesNaiveLoop) {
  check_against_naive(conv3d, false, {2, 2, 5, 4, 6}, {3, 2, 2, 3, 2},
                      {{1, 2, 1}, {1, 0, 1}, {2, 1, 1}, {}, 1});
}

TEST_P(Conv, ConvTranspose1dMatchesNaiveLoop) {
  check_against_naive(conv_transpose1d, true, {2, 4, 5}, {4, 3, 3}, {{3}, {1}, {2}, {1}, 2});
}

TEST_P(Conv, ConvTranspose2dMatchesNaiveLoop) {
  check_against_naive(conv_transpose2d, true, {2, 3, 4, 3}, {3, 2, 3, 2},
                      {{2, 1}, {1, 0}, {1, 2}, {1, 0}, 1});
  check_against_naive(conv_transpose2d, true, {1, 4, 3, 3}, {4, 3, 1, 1}, {{1}, {0}, {1}, {}, 2});
}

TEST_P(Conv, ConvTranspose3dMatchesNaiveLoop) {
  check_against_naive(conv_transpose3d, true, {1, 2, 3, 2, 3}, {2, 2, 2, 2, 3},
                      {{2, 1, 2}, {0, 1, 1}, {1, 1, 1}, {1, 0, 0}, 1});
}

TEST_P(Conv, Conv2dReducedPrecisionMatchesNaiveLoop) {
  check_against_naive(conv2d, false, {2, 2, 5, 5}, {3, 2, 3, 3}, {{1}, {1}, {1}, {}, 1}, f64,
                      1e-12);
  check_against_naive(conv2d, false, {2, 2, 5, 5}, {3, 2, 3, 3}, {{1}, {1}, {1}, {}, 1}, f16, 3e-2);
  check_against_naive(conv2d, false, {2, 2, 5, 5}, {3, 2, 3, 3}, {{1}, {1}, {1}, {}, 1}, bf16,
                      1e-1);
}

TEST_P(Conv, Conv2dStridedInputMatchesContiguous) {
  Tensor x = randn({2, 5, 3, 6}), w = randn({4, 3, 2, 2});
  Tensor xt = x.permute({0, 3, 2, 1});  // [2, 6, 3, 5], not contiguous
  expect_tensors_close(conv2d(xt[Slice(), Slice(1, 4)], w),
                       conv2d(xt[Slice(), Slice(1, 4)].contiguous(), w));
}

TEST_P(Conv, Conv2dUnbatchedInputDropsTheBatchDim) {
  Tensor x = randn({3, 5, 5}), w = randn({2, 3, 3, 3});
  Tensor y = conv2d(x, w);
  EXPECT_EQ(y.shape(), (Shape{2, 3, 3}));
  expect_tensors_close(y, conv2d(x.unsqueeze(0), w)[0]);
}

TEST_P(Conv, Conv2dGradientMatchesFiniteDifferences) {
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return conv2d(in[0], in[1], in[2],
                      {.stride = {2, 1}, .padding = {1}, .dilation = {1, 2}, .groups = 2});
      },
      {randn({2, 4, 5, 6}), randn({4, 2, 2, 3}), randn({4})});
}

TEST_P(Conv, Conv1dAndConv3dGradientsMatchFiniteDifferences) {
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return conv1d(in[0], in[1], in[2], {.stride = {2}, .padding = {1}, .dilation = {2}});
      },
      {randn({2, 3, 9}), randn({2, 3, 3}), randn({2})});
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return conv3d(in[0], in[1], {}, {.stride = {1, 2, 1}, .padding = {1, 0, 0}});
      },
      {randn({1, 2, 3, 4, 3}), randn({2, 2, 2, 2, 2})});
}

TEST_P(Conv, ConvTransposeGradientsMatchFiniteDifferences) {
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return conv_transpose2d(
            in[0], in[1], in[2],
            {.stride = {2}, .padding = {1}, .groups = 2, .output_padding = {1, 0}});
      },
      {randn({2, 4, 3, 2}), randn({4, 1, 3, 2}), randn({2})});
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return conv_transpose1d(in[0], in[1], in[2], {.stride = {3}, .dilation = {2}});
      },
      {randn({1, 2, 4}), randn({2, 3, 2}), randn({3})});
}

TEST_P(Conv, ConvRejectsBadArguments) {
  Tensor x = randn({1, 3, 5, 5});
  EXPECT_CRISP_ERROR(conv2d(x, randn({2, 2, 3, 3})), "expects 2 input channels");
  EXPECT_CRISP_ERROR(conv2d(x, randn({2, 3, 7, 3})), "smaller than the kernel");
  EXPECT_CRISP_ERROR(conv2d(x, randn({2, 3, 3, 3}), {}, {.stride = {0}}), "stride must be >= 1");
  EXPECT_CRISP_ERROR(conv2d(x, randn({2, 3, 3, 3}), {}, {.padding = {1, 1, 1}}),
                     "padding needs 1 or 2 values");
  EXPECT_CRISP_ERROR(conv2d(x, randn({2, 3, 3, 3}), randn({3})), "bias must have shape [2]");
  EXPECT_CRISP_ERROR(conv2d(x, randn({2, 3, 3, 3}, f64)), "dtype mismatch");
  EXPECT_CRISP_ERROR(conv2d(randn({3, 5}), randn({2, 3, 3, 3})), "expected input of 3");
  EXPECT_CRISP_ERROR(conv2d(x, randn({4, 1, 3, 3}), {}, {.groups = 3}), "not divisible");
  EXPECT_CRISP_ERROR(
      conv_transpose2d(x, randn({3, 2, 3, 3}), {}, {.stride = {2}, .output_padding = {2}}),
      "output_padding 2 must be smaller");
  EXPECT_CRISP_ERROR(conv_transpose2d(x, randn({2, 2, 3, 3})), "expects 2 input channels");
}

// Forward values and the gradients of x, w and bias in float32 (oneDNN's path where the CPU
// build has it) against the same convolution in float64 (the im2col path). An empty bs: no bias.
void check_f32_against_f64(ConvFn conv, Shape xs, Shape ws, Shape bs, ConvOptions opt) {
  const bool with_bias = !bs.empty();
  Tensor x = randn(xs, f64), w = randn(ws, f64), b = randn(bs, f64);
  std::vector<Tensor> grads[2];
  Tensor ys[2], g;
  for (int i = 0; i < 2; ++i) {
    const DType dt = i == 0 ? f64 : f32;
    Tensor xi = x.cast(dt).detach().requires_grad_(), wi = w.cast(dt).detach().requires_grad_(),
           bi = b.cast(dt).detach().requires_grad_();
    ys[i] = conv(xi, wi, with_bias ? std::optional<Tensor>(bi) : std::nullopt, opt, Loc::current());
    if (i == 0) g = randn(ys[0].shape(), f64);
    ys[i].backward(g.cast(dt));
    grads[i] = {xi.grad(), wi.grad()};
    if (with_bias) grads[i].push_back(bi.grad());
  }
  expect_tensors_close(ys[1], ys[0], 2e-4, "y");
  const char* names[] = {"dx", "dw", "db"};
  for (size_t k = 0; k < grads[0].size(); ++k)
    expect_tensors_close(grads[1][k], grads[0][k], 2e-4, names[k]);
}

// One image split over output channels, and odd batches whose weight gradients are summed
// over slices (oneDNN's paths for the reference CNN's shapes).
TEST_P(Conv, Float32MatchesFloat64ForOneImageAndOddBatches) {
  check_f32_against_f64(conv2d, {1, 16, 9, 9}, {40, 16, 5, 5}, {40}, {.padding = {2}});
  check_f32_against_f64(conv2d, {1, 20, 7, 7}, {33, 20, 5, 5}, {}, {.padding = {2}});
  check_f32_against_f64(conv2d, {5, 20, 8, 8}, {24, 20, 5, 5}, {24}, {.padding = {2}});
  check_f32_against_f64(conv2d, {3, 1, 12, 12}, {20, 1, 5, 5}, {20}, {.padding = {2}});
  check_f32_against_f64(conv2d, {3, 8, 6, 6}, {8, 4, 5, 5}, {8}, {.padding = {2}, .groups = 2});
}

// The reference CNN's last convolution at a batch large enough that each pass picks its path by
// measuring (on CUDA: cuDNN or one GEMM over unrolled windows).
TEST_P(Conv, LargeConvolutionsMatchNaiveLoopAndFloat64) {
  check_against_naive(conv2d, false, {16, 50, 7, 7}, {500, 50, 5, 5}, {{1}, {0}, {1}, {}, 1}, f32,
                      2e-4);
  check_against_naive(conv_transpose2d, true, {16, 50, 7, 7}, {50, 40, 5, 5},
                      {{2}, {1}, {1}, {1}, 1}, f32, 2e-4);
  check_f32_against_f64(conv2d, {16, 50, 7, 7}, {500, 50, 5, 5}, {500}, {});
}

TEST_P(Conv, Float32MatchesFloat64WithGroupsStrideDilation) {
  check_f32_against_f64(conv2d, {3, 20, 9, 9}, {32, 20, 3, 3}, {32}, {.padding = {1}});
  check_f32_against_f64(conv2d, {2, 32, 11, 10}, {48, 16, 3, 2}, {48},
                        {.stride = {2, 1}, .padding = {2, 1}, .dilation = {2, 3}, .groups = 2});
  check_f32_against_f64(conv2d, {2, 1, 12, 12}, {20, 1, 5, 5}, {20}, {.padding = {2}});
  check_f32_against_f64(conv2d, {2, 6, 7, 7}, {6, 2, 3, 3}, {6}, {.stride = {3}, .groups = 3});
  check_f32_against_f64(conv1d, {2, 16, 20}, {24, 8, 3}, {24},
                        {.stride = {2}, .padding = {3}, .dilation = {2}, .groups = 2});
  check_f32_against_f64(conv3d, {2, 16, 5, 6, 4}, {16, 16, 3, 3, 2}, {16},
                        {.stride = {1, 2, 1}, .padding = {1}, .dilation = {1, 1, 2}});
  check_f32_against_f64(conv_transpose2d, {2, 16, 5, 6}, {16, 8, 3, 3}, {16},
                        {.stride = {2}, .padding = {1}, .groups = 2, .output_padding = {1}});
  check_f32_against_f64(conv_transpose1d, {2, 4, 9}, {4, 3, 4}, {3},
                        {.stride = {3}, .padding = {1}, .dilation = {2}, .output_padding = {2}});
  check_f32_against_f64(conv_transpose3d, {1, 16, 3, 4, 3}, {16, 16, 2, 3, 2}, {16},
                        {.stride = {2}, .output_padding = {1}});
}

INSTANTIATE_TEST_SUITE_P(Backends, Conv, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace crisp::testing
