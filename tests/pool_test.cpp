// Pooling tests: max and average pooling in 1, 2 and 3 dims against naive float64 loops,
// gradients (overlapping windows too) and argument errors.
#include <array>
#include <limits>

#include "testing.h"

namespace crisp::testing {
namespace {

class Pool : public BackendTest {};

// Naive pooling over [N, C, *spatial]; lower dims padded to 3-d with size 1.
std::vector<double> naive_pool(const std::vector<double>& x, const Shape& xs, bool is_max,
                               const PoolOptions& o, Shape& ys) {
  const size_t nd = xs.size() - 2;
  auto at = [](const std::vector<int64_t>& v, size_t i) { return v.size() == 1 ? v[0] : v[i]; };
  std::array<int64_t, 3> in{1, 1, 1}, k{1, 1, 1}, s{1, 1, 1}, p{0, 0, 0}, d{1, 1, 1}, out{1, 1, 1};
  ys = {xs[0], xs[1]};
  for (size_t i = 0; i < nd; ++i) {
    const size_t j = 3 - nd + i;
    in[j] = xs[2 + i];
    k[j] = at(o.kernel, i);
    s[j] = o.stride.empty() ? k[j] : at(o.stride, i);
    p[j] = at(o.padding, i);
    d[j] = at(o.dilation, i);
    out[j] = (in[j] + 2 * p[j] - d[j] * (k[j] - 1) - 1) / s[j] + 1;
    ys.push_back(out[j]);
  }
  const int64_t planes = xs[0] * xs[1], S = in[0] * in[1] * in[2];
  std::vector<double> y;
  for (int64_t pl = 0; pl < planes; ++pl)
    for (int64_t a = 0; a < out[0]; ++a)
      for (int64_t b = 0; b < out[1]; ++b)
        for (int64_t c = 0; c < out[2]; ++c) {
          double best = -std::numeric_limits<double>::infinity(), total = 0;
          int64_t count = 0;
          for (int64_t i = 0; i < k[0]; ++i)
            for (int64_t j = 0; j < k[1]; ++j)
              for (int64_t l = 0; l < k[2]; ++l) {
                const int64_t ia = a * s[0] - p[0] + i * d[0], ib = b * s[1] - p[1] + j * d[1],
                              ic = c * s[2] - p[2] + l * d[2];
                if (ia < 0 || ib < 0 || ic < 0 || ia >= in[0] || ib >= in[1] || ic >= in[2])
                  continue;
                const double v = x[static_cast<size_t>(pl * S + (ia * in[1] + ib) * in[2] + ic)];
                best = std::max(best, v);
                total += v;
                ++count;
              }
          const int64_t window = k[0] * k[1] * k[2];
          y.push_back(is_max ? best : total / double(o.count_include_pad ? window : count));
        }
  return y;
}

using PoolFn = Tensor (*)(const Tensor&, PoolOptions, Loc);

void check_pool(PoolFn f, bool is_max, const Shape& xs, const PoolOptions& o) {
  Tensor x = randn(xs, f64);
  Shape ys;
  std::vector<double> expected = naive_pool(values(x), xs, is_max, o, ys);
  Tensor y = f(x.cast(f32), o, Loc::current());
  EXPECT_EQ(y.shape(), ys);
  expect_close(y, expected, 1e-5);
  check_gradients([&](const std::vector<Tensor>& in) { return f(in[0], o, Loc::current()); }, {x});
}

TEST_P(Pool, MaxPool2dHandValues) {
  Tensor x = arange(0, 16, 1, f32).reshape({1, 1, 4, 4});
  expect_close(max_pool2d(x, {.kernel = {2}}), {5, 7, 13, 15});
  expect_close(avg_pool2d(x, {.kernel = {2}}), {2.5, 4.5, 10.5, 12.5});
}

TEST_P(Pool, MaxPoolOverlappingWindowsAccumulateGradient) {
  std::optional<Tensor> g;
  Tensor x = Tensor({1.0, 3.0, 2.0}, {1, 1, 3}).on_grad([&](const Tensor& t) { g = t; });
  Tensor y = max_pool1d(x, {.kernel = {2}, .stride = {1}});
  expect_close(y, {3, 3});
  y.backward(ones_like(y));
  ASSERT_TRUE(g.has_value());
  expect_close(*g, {0, 2, 0});
}

TEST_P(Pool, MaxPoolMatchesNaiveLoopAndGradients) {
  check_pool(max_pool1d, true, {2, 3, 9}, {.kernel = {3}, .stride = {2}, .padding = {1}});
  check_pool(max_pool2d, true, {1, 2, 7, 6},
             {.kernel = {3, 2}, .stride = {2, 1}, .padding = {1, 1}, .dilation = {2, 1}});
  check_pool(max_pool3d, true, {1, 2, 4, 5, 3}, {.kernel = {2}, .stride = {1, 2, 1}});
}

TEST_P(Pool, AvgPoolMatchesNaiveLoopAndGradients) {
  check_pool(avg_pool1d, false, {2, 3, 9}, {.kernel = {3}, .stride = {2}, .padding = {1}});
  check_pool(avg_pool2d, false, {1, 2, 7, 6},
             {.kernel = {3, 2}, .stride = {2, 1}, .padding = {1}, .count_include_pad = false});
  check_pool(avg_pool2d, false, {1, 2, 5, 5}, {.kernel = {3}, .stride = {1}, .padding = {1}});
  check_pool(avg_pool3d, false, {1, 2, 4, 5, 3},
             {.kernel = {2}, .stride = {1, 2, 1}, .padding = {1, 0, 1}});
}

TEST_P(Pool, MaxPoolPropagatesNaN) {
  Tensor x = Tensor({1.f, NAN, 2.f, 0.f}, {1, 1, 4});
  std::vector<double> y = values(max_pool1d(x, {.kernel = {2}}));
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(y[1], 2.0);
}

TEST_P(Pool, PoolRejectsBadArguments) {
  Tensor x = randn({1, 2, 4, 4});
  EXPECT_CRISP_ERROR(max_pool2d(x, {}), "kernel size must be given");
  EXPECT_CRISP_ERROR(max_pool2d(x, {.kernel = {2}, .padding = {2}}), "at most half");
  EXPECT_CRISP_ERROR(max_pool2d(x, {.kernel = {5}}), "too small");
  EXPECT_CRISP_ERROR(avg_pool2d(x, {.kernel = {2}, .dilation = {2}}), "dilation");
  EXPECT_CRISP_ERROR(max_pool2d(randn({4}), {.kernel = {2}}), "expected input of 3");
  EXPECT_CRISP_ERROR(max_pool1d(randn({1, 2, 4}), {.kernel = {2, 2}}),
                     "kernel needs 1 or 1 values");
}

INSTANTIATE_TEST_SUITE_P(Backends, Pool, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace crisp::testing
