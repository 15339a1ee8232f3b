// CUDA max pooling and per-channel sums against the CPU backend: pooled values, argmax indices
// and gradients bit for bit (overlapping and disjoint windows, odd sides, padding, dilation, 1-
// and 3-d windows, ties, signed zeros, NaN and infinities, every floating type), and channel
// sums within rounding of a float64 reference on shapes that split channels across blocks.
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "core/tensor_impl.h"
#include "testing.h"

namespace crisp::testing {

class CudaPool : public BackendTest {};
INSTANTIATE_TEST_SUITE_P(Backends, CudaPool, ::testing::Values("cuda"),
                         [](const auto& info) { return info.param; });

namespace {

const std::vector<DType> kFloats{bf16, f16, f32, f64};

// A max pooling op as the front end builds it: x [N, C, *spatial], one value per spatial axis.
struct PoolCase {
  Shape x;
  std::vector<int64_t> k, s, p, d;
};

std::vector<int64_t> pool_ints(const PoolCase& c) {
  std::vector<int64_t> ints{static_cast<int64_t>(c.k.size())};
  for (const auto* v : {&c.k, &c.s, &c.p, &c.d}) ints.insert(ints.end(), v->begin(), v->end());
  return ints;
}

Shape pool_out(const PoolCase& c) {
  Shape out{c.x[0], c.x[1]};
  for (size_t j = 0; j < c.k.size(); ++j)
    out.push_back((c.x[2 + j] + 2 * c.p[j] - c.d[j] * (c.k[j] - 1) - 1) / c.s[j] + 1);
  return out;
}

std::string describe(const PoolCase& c, DType dt) {
  std::ostringstream os;
  auto list = [&](const char* name, const std::vector<int64_t>& v) {
    os << name;
    for (int64_t x : v) os << ' ' << x;
  };
  list("x", c.x);
  list(", k", c.k);
  list(", s", c.s);
  list(", p", c.p);
  list(", d", c.d);
  os << ", " << dtype_name(dt);
  return os.str();
}

// Fresh values in half steps (ties in most windows, exact in every dtype, signed zeros among
// them), NaN pairs (two in a window: the first wins), infinities, and a second plane of -inf
// only (each window takes its first tap inside the input).
std::vector<double> pool_input(const Shape& shape, uint64_t seed) {
  Generator gen(seed);
  std::vector<double> v = randn(shape, f64, &gen).to_vector<double>();
  for (double& x : v) x = std::round(x * 4) / 2;
  for (size_t i = 7; i + 1 < v.size(); i += 97) v[i] = v[i + 1] = NAN;
  for (size_t i = 20; i < v.size(); i += 89) v[i] = NAN;
  for (size_t i = 5; i < v.size(); i += 53) v[i] = -INFINITY;
  for (size_t i = 11; i < v.size(); i += 61) v[i] = INFINITY;
  int64_t plane = 1;
  for (size_t j = 2; j < shape.size(); ++j) plane *= shape[j];
  if (shape[0] * shape[1] > 1)
    for (int64_t i = plane; i < 2 * plane; ++i) v[static_cast<size_t>(i)] = -INFINITY;
  return v;
}

// got and want hold the same values bit for bit (NaN matching NaN, zeros matching in sign).
void expect_identical(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  const std::vector<double> a = got.to_vector<double>(), b = want.to_vector<double>();
  size_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const bool same = (std::isnan(a[i]) && std::isnan(b[i])) ||
                      (a[i] == b[i] && std::signbit(a[i]) == std::signbit(b[i]));
    if (!same && bad++ < 5) ADD_FAILURE() << what << " at " << i << ": " << a[i] << " vs " << b[i];
  }
  EXPECT_EQ(bad, 0u) << what;
}

struct PoolResult {
  Tensor y, idx, dx;
};

// max_pool and max_pool_backward on the current backend, from host values.
PoolResult run_pool(const PoolCase& c, DType dt, const std::vector<double>& xv,
                    const std::vector<double>& gv) {
  const std::vector<int64_t> ints = pool_ints(c);
  const Shape out = pool_out(c);
  Tensor x = Tensor(xv, c.x).cast(dt);
  auto outs = dispatch(Op{OpKind::max_pool, ints}, {x}, {OutSpec{out, dt}, OutSpec{out, i64}});
  Tensor g = Tensor(gv, out).cast(dt);
  Tensor dx = dispatch(Op{OpKind::max_pool_backward, ints}, {g, outs[1]}, c.x, dt);
  return {outs[0], outs[1], dx};
}

void check_pool(const PoolCase& c, uint64_t seed) {
  const std::vector<double> xv = pool_input(c.x, seed);
  Generator gen(seed + 1);
  const std::vector<double> gv = randn(pool_out(c), f64, &gen).to_vector<double>();
  for (DType dt : kFloats) {
    const std::string what = describe(c, dt);
    const PoolResult want = Backend::cpu()->use([&] { return run_pool(c, dt, xv, gv); });
    const PoolResult got = run_pool(c, dt, xv, gv);
    ASSERT_EQ(got.y.backend().get(), Backend::cuda().get()) << what;
    expect_identical(got.y, want.y, what + " values");
    expect_identical(got.idx, want.idx, what + " indices");
    expect_identical(got.dx, want.dx, what + " gradient");
  }
}

}  // namespace

TEST_P(CudaPool, OverlappingWindowsMatchCpuExactly) {
  // 3x3 stride 2 (the ResNet stem): with padding 1, even and odd sides; without padding.
  check_pool({{2, 3, 16, 14}, {3, 3}, {2, 2}, {1, 1}, {1, 1}}, 1);
  check_pool({{2, 3, 17, 15}, {3, 3}, {2, 2}, {1, 1}, {1, 1}}, 2);
  check_pool({{2, 3, 15, 16}, {3, 3}, {2, 2}, {0, 0}, {1, 1}}, 3);
  // Stride 1, a non-square window, and padding on one axis only.
  check_pool({{2, 3, 9, 10}, {3, 3}, {1, 1}, {1, 1}, {1, 1}}, 4);
  check_pool({{2, 3, 11, 12}, {2, 3}, {2, 2}, {1, 1}, {1, 1}}, 5);
  check_pool({{2, 3, 13, 14}, {3, 3}, {2, 2}, {0, 1}, {1, 1}}, 6);
}

TEST_P(CudaPool, DisjointWindowsMatchCpuExactly) {
  // 2x2 stride 2 (the reference CNN's): even sides, odd sides (a last row and column no window
  // covers), padding, and 3x3 stride 3.
  check_pool({{3, 4, 12, 10}, {2, 2}, {2, 2}, {0, 0}, {1, 1}}, 11);
  check_pool({{3, 4, 13, 11}, {2, 2}, {2, 2}, {0, 0}, {1, 1}}, 12);
  check_pool({{2, 5, 7, 7}, {2, 2}, {2, 2}, {0, 0}, {1, 1}}, 13);
  check_pool({{3, 4, 9, 10}, {2, 2}, {2, 2}, {1, 1}, {1, 1}}, 14);
  check_pool({{2, 3, 10, 11}, {3, 3}, {3, 3}, {1, 1}, {1, 1}}, 15);
}

TEST_P(CudaPool, DilatedWindowsMatchCpuExactly) {
  check_pool({{2, 3, 13, 11}, {2, 3}, {1, 1}, {0, 0}, {2, 1}}, 21);
  check_pool({{2, 3, 15, 14}, {3, 3}, {2, 2}, {1, 1}, {2, 2}}, 22);
  check_pool({{2, 3, 12, 12}, {2, 2}, {2, 2}, {1, 1}, {2, 2}}, 23);
}

TEST_P(CudaPool, OneAndThreeDimensionalWindowsMatchCpuExactly) {
  check_pool({{4, 6, 33}, {3}, {2}, {1}, {1}}, 31);
  check_pool({{4, 6, 34}, {3}, {2}, {1}, {1}}, 32);
  check_pool({{4, 6, 33}, {2}, {2}, {0}, {1}}, 33);
  check_pool({{4, 6, 31}, {3}, {2}, {0}, {1}}, 34);
  check_pool({{4, 6, 30}, {4}, {3}, {2}, {1}}, 35);
  check_pool({{2, 3, 5, 7, 6}, {2, 2, 2}, {1, 2, 2}, {0, 0, 0}, {1, 1, 1}}, 36);
  check_pool({{2, 3, 6, 7, 9}, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, {1, 1, 1}}, 37);
  check_pool({{2, 3, 1, 8, 9}, {1, 2, 2}, {1, 2, 2}, {0, 0, 0}, {1, 1, 1}}, 38);
}

TEST_P(CudaPool, LargePlanesMatchCpuExactly) {
  // Many blocks: the stem's geometry on a small batch, and the reference CNN's pools.
  check_pool({{4, 16, 56, 56}, {3, 3}, {2, 2}, {1, 1}, {1, 1}}, 41);
  check_pool({{16, 20, 28, 28}, {2, 2}, {2, 2}, {0, 0}, {1, 1}}, 42);
  check_pool({{16, 50, 14, 14}, {2, 2}, {2, 2}, {0, 0}, {1, 1}}, 43);
}

TEST_P(CudaPool, MaxPoolGradientThroughAutogradMatchesCpu) {
  // The public op on random data (no ties): the stem's pool, its value and its gradient.
  Tensor x = randn({4, 8, 30, 30}, f32);
  Tensor g = randn({4, 8, 15, 15}, f32);
  auto run = [&](const Tensor& xin, const Tensor& gin) {
    Tensor xr = xin.detach().requires_grad_();
    Tensor y = max_pool2d(xr, {.kernel = {3}, .stride = {2}, .padding = {1}});
    return std::vector<Tensor>{y.detach(), crisp::grad(y, {xr}, gin)[0]};
  };
  const std::vector<Tensor> want =
      Backend::cpu()->use([&] { return run(x.to(Backend::cpu()), g.to(Backend::cpu())); });
  const std::vector<Tensor> got = run(x, g);
  expect_identical(got[0], want[0], "max_pool2d");
  expect_identical(got[1], want[1], "max_pool2d gradient");
}

namespace {

// channel_sum of x (on the current backend) against float64 sums of its values.
void check_channel_sum(const Tensor& x, DType dt, double tol, const std::string& what) {
  const int64_t N = x.shape()[0], C = x.shape()[1], S = N * C == 0 ? 0 : x.numel() / (N * C);
  Tensor xt = x.cast(dt);
  const std::vector<double> v = xt.to_vector<double>();
  std::vector<double> want(static_cast<size_t>(C), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t s = 0; s < S; ++s)
        want[static_cast<size_t>(c)] += v[static_cast<size_t>((n * C + c) * S + s)];
  Tensor got = dispatch(Op{OpKind::channel_sum}, {xt}, {C}, dt);
  EXPECT_EQ(got.dtype(), dt) << what;
  expect_close(got, want, tol, what.c_str());
  // Split sums are added in a fixed order: the same bits every run.
  Tensor again = dispatch(Op{OpKind::channel_sum}, {xt}, {C}, dt);
  expect_identical(again, got, what + " repeated");
}

double sum_tolerance(DType dt) { return dt == f64 ? 1e-10 : dt == f32 ? 1e-5 : 1e-2; }

}  // namespace

TEST_P(CudaPool, ChannelSumsMatchFloat64OnEveryLayout) {
  const std::vector<Shape> shapes{
      {8, 3, 257, 129},                   // few channels, long planes: many splits per channel
      {64, 20, 28, 28},                   // the reference CNN's bias gradients
      {64, 50, 14, 14}, {64, 500, 7, 7},  // odd planes: no packs
      {4, 37, 3},                         // short planes: channels side by side
      {3000, 70, 2},                      // short planes, many rows: split columns
      {2, 1, 100000},                     // one channel
      {5, 2000, 6},  // more channels than blocks the device runs at once: no splits
      {0, 5, 3},     // no elements: zeros
  };
  for (const Shape& s : shapes) {
    Tensor x = randn(s, f64);
    for (DType dt : kFloats) {
      std::ostringstream what;
      what << "channel_sum";
      for (int64_t v : s) what << ' ' << v;
      what << ", " << dtype_name(dt);
      check_channel_sum(x, dt, sum_tolerance(dt), what.str());
    }
  }
  // A contiguous view one element into its storage: not aligned for packed reads.
  Tensor flat = randn({1 + 8 * 3 * 64 * 64}, f32);
  Tensor view = reshape(flat[Slice(1, _)], {8, 3, 64, 64});
  check_channel_sum(view, f32, 1e-5, "channel_sum unaligned");
}

TEST_P(CudaPool, BatchNormOnSplitChannelsMatchesCpu) {
  // Batch statistics and their gradients share channel_sums' split path.
  for (const Shape& s : std::vector<Shape>{{8, 3, 65, 64}, {6, 3, 33, 31}}) {
    Tensor x = randn(s) * 2 + 3, w = randn({s[1]}), b = randn({s[1]}), g = randn(s);
    auto run = [&](const Tensor& xi, const Tensor& wi, const Tensor& bi, const Tensor& gi) {
      Tensor xr = xi.detach().requires_grad_(), wr = wi.detach().requires_grad_(),
             br = bi.detach().requires_grad_();
      Tensor y = batch_norm(xr, wr, br, true);
      std::vector<Tensor> out{y.detach()};
      for (Tensor& d : crisp::grad(y, {xr, wr, br}, gi)) out.push_back(d);
      return out;
    };
    auto cpu = Backend::cpu();
    const std::vector<Tensor> want =
        cpu->use([&] { return run(x.to(cpu), w.to(cpu), b.to(cpu), g.to(cpu)); });
    const std::vector<Tensor> got = run(x, w, b, g);
    const char* names[] = {"batch_norm", "dx", "dw", "db"};
    for (size_t i = 0; i < got.size(); ++i) expect_tensors_close(got[i], want[i], 1e-4, names[i]);
  }
}

}  // namespace crisp::testing
