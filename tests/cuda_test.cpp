// The CUDA backend against the CPU backend on inputs large and oddly laid out enough to take
// every kernel path (split reductions, block scans, radix sorts, strided batches), plus the
// backend's own API: random streams equal to the CPU's, transfers, memory statistics.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "testing.h"

namespace crisp::testing {

class CudaBackend : public BackendTest {};
INSTANTIATE_TEST_SUITE_P(Backends, CudaBackend, ::testing::Values("cuda"),
                         [](const auto& info) { return info.param; });

namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

// f on the inputs (on CUDA) agrees with f on their CPU copies.
void expect_same(const Fn& f, const std::vector<Tensor>& in, double tol, const char* what) {
  auto cpu = Backend::cpu();
  std::vector<Tensor> host;
  for (const Tensor& t : in) host.push_back(t.to(cpu));
  Tensor ref = cpu->use([&] { return f(host); });
  Tensor got = f(in);
  EXPECT_EQ(got.backend().get(), Backend::cuda().get()) << what;
  EXPECT_EQ(got.dtype(), ref.dtype()) << what;
  expect_tensors_close(got, ref, tol, what);
}

// got within tol times want's root mean square, everywhere.
void expect_close_to_scale(const Tensor& got, const Tensor& want, double tol, const char* what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  const std::vector<double> g = got.to_vector<double>(), w = want.to_vector<double>();
  double squares = 0;
  for (double v : w) squares += v * v;
  const double bound = tol * std::sqrt(squares / static_cast<double>(w.size()));
  for (size_t i = 0; i < g.size(); ++i) ASSERT_NEAR(g[i], w[i], bound) << what << " at " << i;
}

}  // namespace

TEST_P(CudaBackend, ElementwiseMatchesCpuOnLargeBroadcastAndStridedInputs) {
  Tensor x = randn({1000, 257}), b = randn({257}), c = randn({1000, 1});
  expect_same([](auto& v) { return exp(v[0]) * v[1] + v[2] / (1 + v[0] * v[0]); }, {x, b, c}, 1e-5,
              "broadcast arithmetic");
  expect_same([](auto& v) { return sigmoid(v[0]) + gelu(v[0]) + mish(v[0]) + tanh(v[0]); }, {x.t()},
              1e-5, "unary on a transposed view");
  expect_same([](auto& v) { return where(v[0] > v[1], v[0], v[2]); }, {x, b, c}, 0, "where");
  expect_same([](auto& v) { return maximum(v[0], v[1]) - minimum(v[0], v[1]); }, {x, b}, 0,
              "maximum/minimum");
  Tensor i = randint(-1000, 1000, {4096}, i32), d = randint(1, 50, {4096}, i32);
  expect_same([](auto& v) { return v[0] / v[1] + v[0] * v[1] - v[1]; }, {i, d}, 0, "int32");
  expect_same([](auto& v) { return (v[0] / (-v[1])).cast(i64); }, {i, d}, 0, "floor division");
  for (DType to : {f16, bf16, f64, i32, i64, u8, bool_}) {
    expect_same([to](auto& v) { return (v[0] * 10).cast(to).cast(f64); }, {x.abs()}, 0, "cast");
  }
  expect_same([](auto& v) { return (v[0].cast(f16) * 3).cast(f32); }, {x}, 0, "half arithmetic");
  expect_same([](auto& v) { return pow(abs(v[0]), v[1]); }, {x, b}, 1e-5, "pow");
}

TEST_P(CudaBackend, ReductionsMatchCpuOnEveryPath) {
  Tensor x = randn({3000, 700});
  const double tol = 1e-5;
  expect_same([](auto& v) { return sum(v[0], {0}); }, {x}, tol, "column sums (split)");
  expect_same([](auto& v) { return sum(v[0], {1}); }, {x}, tol, "row sums");
  // Small integers sum exactly in float32 in any order, so a lost or doubled element shows
  // (rounding in a 2.1M-element sum of randn values is as large as the tolerance would be).
  expect_same([](auto& v) { return sum(v[0]); }, {randint(-4, 5, {3000, 700}).cast(f32)}, 0,
              "full sum (split)");
  expect_same([](auto& v) { return sum(v[0].t(), {1}); }, {x}, tol, "sum of a transposed view");
  expect_same(
      [](auto& v) {
        return mean(v[0].reshape({30, 100, 700}), {0, 2});
      },
      {x}, tol, "two axes");
  for (int64_t axis : {0, 1}) {
    expect_same([axis](auto& v) { return max(v[0], {axis}) - min(v[0], {axis}); }, {x}, 0,
                "max/min");
    expect_same([axis](auto& v) { return argmax(v[0], axis) * 7 + argmin(v[0], axis); }, {x}, 0,
                "argmax/argmin");
    expect_same([axis](auto& v) { return logsumexp(v[0], {axis}); }, {x}, tol, "logsumexp");
  }
  expect_same([](auto& v) { return argmax(v[0]); }, {x}, 0, "flat argmax");
  Tensor near_one = uniform({1000, 64}, 0.99, 1.01, f64);
  expect_same([](auto& v) { return prod(v[0], {0}); }, {near_one}, 1e-12, "prod");
  expect_same([](auto& v) { return sum(v[0].cast(f16), {1}).cast(f32); }, {x}, 1e-3, "f16 sum");
  Tensor ints = randint(-5, 5, {200, 300});
  expect_same([](auto& v) { return sum(v[0], {0}) + prod(clamp(v[0], 1, 2), {1}).sum(); }, {ints},
              0, "integer sums");
  expect_same([](auto& v) { return sum(v[0] > 0, {1}); }, {x}, 0, "bool count");
  expect_same([](auto& v) { return all(v[0] > -4, {0}).cast(i64) + any(v[0] > 3, {0}).cast(i64); },
              {x}, 0, "all/any");
  // NaN wins max and argmax.
  Tensor nan = full({1}, std::numeric_limits<double>::quiet_NaN(), f32);
  Tensor with_nan = concat({x.reshape({-1})[Slice(0, 5000)], nan, x.reshape({-1})[Slice(0, 99)]});
  expect_same([](auto& v) { return max(v[0]); }, {with_nan}, 0, "max with NaN");
  expect_same([](auto& v) { return argmax(v[0]) + argmin(v[0]); }, {with_nan}, 0, "arg with NaN");
}

TEST_P(CudaBackend, AlongAxisOpsMatchCpuOnLongAndShortLines) {
  for (Shape s : {Shape{4, 5000}, Shape{20000, 7}}) {
    Tensor x = randn(s) * 4;
    for (int64_t axis : {0, 1}) {
      expect_same([axis](auto& v) { return softmax(v[0], axis); }, {x}, 1e-5, "softmax");
      expect_same([axis](auto& v) { return log_softmax(v[0], axis); }, {x}, 1e-5, "log_softmax");
    }
  }
  Tensor w = randn({300, 50}, f64);
  expect_same(
      [](auto& v) {
        Tensor x = v[0].detach().requires_grad_();
        Tensor g = grad((softmax(x, 1) * v[1]).sum() + (log_softmax(x, 0) * v[1]).sum(), {x})[0];
        return g;
      },
      {randn({300, 50}, f64), w}, 1e-9, "softmax backward");
  expect_same([](auto& v) { return cumsum(v[0], 1); }, {randn({3, 100000}, f64)}, 1e-9,
              "long cumsum");
  expect_same([](auto& v) { return cumsum(v[0], 0); }, {randn({100, 5000})}, 1e-5, "many cumsums");
  expect_same([](auto& v) { return cumprod(v[0], 1); }, {uniform({50, 300}, 0.9, 1.1, f64)}, 1e-9,
              "cumprod");
  expect_same([](auto& v) { return cumsum(v[0], 0) + cumprod(clamp(v[0], 1, 2), 0); },
              {randint(-3, 3, {2000, 3})}, 0, "integer scans");
  // Sorting: ties (stability), NaN, both directions, several dtypes.
  Tensor keys = round(randn({3, 20000}) * 10);
  Tensor with_nan = where(rand({3, 20000}) < 0.01, full({1}, NAN, f32), keys);
  for (bool desc : {false, true}) {
    for (const Tensor& k : {keys, with_nan, keys.cast(i64), keys.cast(f16), keys.t()}) {
      expect_same([desc](auto& v) { return sort(v[0], -1, desc).values.cast(f64); }, {k}, 0,
                  "sort values");
      expect_same([desc](auto& v) { return sort(v[0], -1, desc).indices; }, {k}, 0, "sort indices");
    }
  }
  expect_same([](auto& v) { return sort(v[0], 0, true).indices; }, {keys}, 0, "sort axis 0");
}

TEST_P(CudaBackend, MatmulMatchesCpuForBatchesViewsAndDtypes) {
  Tensor a = randn({4, 1, 33, 65}, f64), b = randn({1, 3, 65, 17}, f64);
  expect_same([](auto& v) { return matmul(v[0], v[1]); }, {a, b}, 1e-12, "broadcast batch");
  expect_same([](auto& v) { return matmul(v[1].transpose(-2, -1), v[0].transpose(-2, -1)); },
              {a, b}, 1e-12, "transposed views");
  expect_same([](auto& v) { return matmul(v[0][Ellipsis, Slice(_, _, 2), Slice()], v[1]); }, {a, b},
              1e-12, "row-strided view");
  expect_same([](auto& v) { return matmul(v[0].cast(f32), v[1].cast(f32)).cast(f64); }, {a, b},
              1e-5, "float32");
  for (DType dt : {f16, bf16}) {
    expect_same([dt](auto& v) { return matmul(v[0].cast(dt), v[1].cast(dt)).cast(f64); }, {a, b},
                3e-2, "16-bit");
  }
  Tensor ia = randint(-100, 100, {2, 5, 7}, i32), ib = randint(-100, 100, {7, 3}, i32);
  expect_same([](auto& v) { return matmul(v[0], v[1]); }, {ia, ib}, 0, "int32");
  // TF32 is off by default (float32-accurate: TF32's 10-bit mantissa would miss 1e-4 by far)
  // and, when allowed, close to it: rounding both inputs to 10 bits gives each of these dot
  // products (512 terms of unit variance) an error of about 0.01 standard deviation.
  Tensor x = randn({256, 512}), y = randn({512, 128});
  Tensor ref = matmul(x.cast(f64), y.cast(f64));
  EXPECT_FALSE(allow_tf32());
  expect_tensors_close(matmul(x, y), ref, 1e-4, "float32");
  set_allow_tf32(true);
  Tensor fast = matmul(x, y);
  set_allow_tf32(false);
  expect_tensors_close(fast, ref, 1e-1, "tf32");
}

// Float32 products may run on the tensor cores in three TF32 parts (3xTF32) when timing favours
// it; CRISP_TF32X3_TILE forces each tile shape here, whole or with k split in three ranges, and
// the TF32 product of split operands through cuBLASLt, for every operand layout, at sizes that
// leave partial tiles on every edge and a short last range. The result must keep float32's
// accuracy against float64.
TEST_P(CudaBackend, Tf32x3ProductsKeepFloat32Accuracy) {
  for (int variant = 0; variant < 7; ++variant) {
    const int tile = variant % 3, splits = variant < 3 ? 1 : 3;
    const std::string forced =
        variant == 6 ? "split" : std::to_string(tile) + "," + std::to_string(splits);
    ASSERT_EQ(setenv("CRISP_TF32X3_TILE", forced.c_str(), 1), 0);
    // Each variant gets shapes of its own: plans are kept per shape.
    const int64_t m = 260 + 4 * variant, n = 196, k = 300;
    Tensor a = randn({m, k}, f64) * 3, b = randn({k, n}, f64);
    Tensor ref = matmul(a, b);
    // Errors are measured against each output's sum of |terms|, float32's error-bound scale:
    // float32 and 3xTF32 stay near 1e-7 of it on average and below 1e-5 everywhere; TF32 alone
    // is near 3e-5 on average.
    const std::vector<double> scale = values(matmul(a.abs(), b.abs())), want = values(ref);
    Tensor af = a.cast(f32), bf = b.cast(f32);
    Tensor at = af.t().contiguous().t(), bt = bf.t().contiguous().t();  // stored transposed
    for (const auto& [x, y, what] :
         {std::tuple{af, bf, "a b"}, std::tuple{at, bf, "a^T stored"},
          std::tuple{af, bt, "b^T stored"}, std::tuple{at, bt, "both stored transposed"}}) {
      const std::vector<double> got = values(matmul(x, y));
      ASSERT_EQ(got.size(), want.size());
      double sq = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        const double e = std::abs(got[i] - want[i]) / scale[i];
        ASSERT_LE(e, 1e-5) << what << " at " << i << " with tile,splits " << forced;
        sq += e * e;
      }
      EXPECT_LE(std::sqrt(sq / static_cast<double>(got.size())), 1e-6) << what << " " << forced;
    }
    // An infinite or NaN input makes its row non-finite (NaN here, where float32 gives
    // infinities) and leaves the other rows alone.
    Tensor bad_rows = af.clone();
    bad_rows[0, 0] = std::numeric_limits<float>::infinity();
    bad_rows[1, 7] = std::numeric_limits<float>::quiet_NaN();
    Tensor prod = matmul(bad_rows, bf);
    for (double v : values(prod[0])) EXPECT_FALSE(std::isfinite(v)) << v;
    for (double v : values(prod[1])) EXPECT_TRUE(std::isnan(v)) << v;
    for (double v : values(prod[2])) EXPECT_TRUE(std::isfinite(v)) << v;
  }
  ASSERT_EQ(unsetenv("CRISP_TF32X3_TILE"), 0);
}

TEST_P(CudaBackend, RandomStreamsEqualTheCpus) {
  auto cpu = Backend::cpu();
  auto draw = [](auto make) {
    manual_seed(1234);
    return make().template to_vector<double>();
  };
  auto same = [&](auto make, const char* what) {
    std::vector<double> got = draw(make);
    std::vector<double> ref = cpu->use([&] { return draw(make); });
    ASSERT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], ref[i], 1e-15 * (1 + std::abs(ref[i]))) << what << " at " << i;
  };
  same([] { return rand({5000}); }, "rand");
  same([] { return randn({5000}); }, "randn");
  same([] { return randn({5000}, f64); }, "randn f64");
  same([] { return uniform({5000}, -3, 2, bf16); }, "uniform bf16");
  same([] { return randn({5000}, f16); }, "randn f16");
  same([] { return randint(-7, 1000, {5000}); }, "randint");
  same([] { return randperm(3000); }, "randperm");
}

TEST_P(CudaBackend, TransfersAndMemoryStatistics) {
  auto cuda = Backend::cuda();
  try {
    Backend::cuda(1000);
    ADD_FAILURE() << "expected an error for device 1000";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("CUDA device 1000 is out of range"), std::string::npos) << e.what();
  }
  std::vector<float> host(3'000'001);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i % 1013) * 0.5f;
  const MemoryStats before = cuda->memory_stats();
  {
    Tensor t(host, {static_cast<int64_t>(host.size())}, f32);  // staged through pinned memory
    EXPECT_EQ(t.backend().get(), cuda.get());
    const MemoryStats during = cuda->memory_stats();
    EXPECT_GE(during.allocated, before.allocated + host.size() * sizeof(float));
    EXPECT_GE(during.peak, during.allocated);
    EXPECT_GE(during.reserved, during.allocated);
    EXPECT_EQ(t.to_vector<float>(), host);
    Tensor m = t[Slice(0, 3'000'000)].reshape({1000, 3000});
    std::vector<float> col = m.t()[5].to_vector<float>();  // a strided read
    for (int64_t r = 0; r < 1000; ++r)
      ASSERT_EQ(col[static_cast<size_t>(r)], host[static_cast<size_t>(r * 3000 + 5)]);
    // Across backends both ways, and in another backend's scope.
    Tensor back = m.to(Backend::cpu());
    EXPECT_TRUE(back.backend()->is_cpu());
    expect_tensors_close(Backend::cpu()->use([&] { return m.sum(1); }), m.sum(1), 1e-6);
  }
  EXPECT_LE(cuda->memory_stats().allocated, before.allocated);
}

TEST_P(CudaBackend, LargeUploadsArriveInPlaceBehindQueuedWork) {
  // Uploads go through rings of 4 MB chunks (4 pinned, 16 on the device) beside the compute
  // stream. Six uploads of three chunks each, queued back to back among other work and read
  // only at the end: chunks of both rings are reused while earlier uploads may be in flight.
  constexpr size_t kSize = (size_t{3} << 20) - 17;
  Tensor w = randn({512, 512});
  std::vector<std::vector<float>> hosts;
  std::vector<Tensor> uploads, doubled, products;
  for (int k = 0; k < 6; ++k) {
    products.push_back(matmul(w, w));  // work queued ahead of the copy
    std::vector<float>& host = hosts.emplace_back(kSize);
    for (size_t j = 0; j < kSize; ++j)
      host[j] = static_cast<float>(k * 1000) + static_cast<float>(j % 977);
    uploads.emplace_back(host);
    doubled.push_back(uploads.back() * 2);  // work that needs the copy
  }
  for (int k = 0; k < 6; ++k) {
    const auto idx = static_cast<size_t>(k);
    EXPECT_EQ(uploads[idx].to_vector<float>(), hosts[idx]) << "upload " << k;
    const std::vector<float> d = doubled[idx].to_vector<float>();
    for (size_t j = 0; j < kSize; j += 4099) ASSERT_EQ(d[j], 2 * hosts[idx][j]) << k << ", " << j;
  }
  expect_tensors_close(products.back(), products.front(), 0, "products queued among uploads");
}

// ---- ordering, errors and settings across ops ----

TEST_P(CudaBackend, OpsFromSeveralThreadsComputeInIssueOrder) {
  auto cuda = Backend::cuda();
  constexpr int kThreads = 4, kSteps = 300;
  std::vector<Tensor> sums(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      BackendScope scope(cuda);
      Tensor y = full({257}, static_cast<double>(t));
      for (int i = 0; i < kSteps; ++i) y = y + 1;
      sums[static_cast<size_t>(t)] = y.sum();
    });
  // Meanwhile a long chain of dependent ops here, read once at the end.
  Tensor x = randn({1000});
  const std::vector<float> start = x.to_vector<float>();
  for (int i = 0; i < 2000; ++i) x = i % 2 ? x * 0.5f : x * 2.0f + 1.0f;
  for (std::thread& th : threads) th.join();
  const std::vector<float> got = x.to_vector<float>();
  for (size_t i = 0; i < got.size(); ++i) {
    double want = start[i];
    for (int k = 0; k < 2000; ++k) want = k % 2 ? want * 0.5 : want * 2.0 + 1.0;
    ASSERT_NEAR(got[i], want, 1e-4 * (1 + std::abs(want))) << "at " << i;
  }
  for (int t = 0; t < kThreads; ++t)
    EXPECT_EQ(sums[static_cast<size_t>(t)].item<float>(), 257.f * static_cast<float>(t + kSteps));
}

// Elementwise ops on a few elements wait in a queue and run many to a launch. Each must see
// what the ones before it wrote, whatever ends the queue: a full queue, an op of another kind, a
// large elementwise op, a read, a write from the host into memory a queued op had used.
TEST_P(CudaBackend, SmallOpsQueuedTogetherComputeInIssueOrder) {
  Tensor x = randn({37}), y = rand({37}) * 0.5, s = randn({1});
  expect_same(
      [](auto& v) {
        Tensor a = v[0];
        for (int k = 0; k < 100; ++k) {  // over three queues' worth, each op reading the last
          a = tanh(a * v[1] + v[2]) - 0.25 * a;
          if (k % 17 == 0) a = a + v[0].sum() * 0.01;                       // a reduction
          if (k % 23 == 0) a = where(a > 0, a, v[1]).cast(f16).cast(f32);   // where, casts
          if (k % 29 == 0) a = a + (full({3000, 37}, 0.5) * v[1]).mean(0);  // a large op
        }
        return a;
      },
      {x, y, s}, 1e-4, "a chain across queues");
  Tensor i = randint(-50, 50, {37}, i32), d = randint(1, 9, {37}, i32);
  expect_same([](auto& v) { return v[0] - (v[0] / v[1]) * v[1] + (v[0] > 3).cast(i32) * v[1]; },
              {i, d}, 0, "integers and comparisons");
  // A large op reading a queued op's output.
  Tensor big = randn({2000, 37});
  expect_same([](auto& v) { return v[1] + (v[0] * 2 + 1); }, {x, big}, 1e-6, "large after small");
  // Memory a queued op wrote, freed and refilled from the host: the host's values stay.
  for (int k = 0; k < 5; ++k) {
    Tensor t = x + static_cast<float>(k);
    t = Tensor();
    std::vector<float> host(37);
    for (size_t j = 0; j < host.size(); ++j) host[j] = static_cast<float>(j * 3 + k);
    Tensor u(host);
    Tensor w = u * 1;  // queued behind the write
    EXPECT_EQ(u.to_vector<float>(), host) << "round " << k;
    EXPECT_EQ(w.to_vector<float>(), host) << "round " << k;
  }
}

TEST_P(CudaBackend, RunningOutOfMemoryRunsTheQueuedOpsBeforeTheCacheIsGivenBack) {
  // Out of memory, the allocator gives its cached blocks back to the device. Queued small ops
  // may still write to them (outputs of tensors already gone), so they must run first.
  Tensor x = randn({1000});
  Tensor kept = x * 3;
  for (int k = 0; k < 8; ++k) Tensor gone = x + static_cast<float>(k);
  Tensor huge = zeros({int64_t{1} << 45});  // 128 TiB
  EXPECT_THROW(huge.wait(), Error);
  const std::vector<float> xs = x.to_vector<float>(), got = kept.to_vector<float>();
  for (size_t i = 0; i < xs.size(); ++i) ASSERT_EQ(got[i], xs[i] * 3) << "at " << i;
  expect_tensors_close(x * 2 + 1, Backend::cpu()->use([&] { return x.to(Backend::cpu()) * 2 + 1; }),
                       1e-6, "after the failure");
}

TEST_P(CudaBackend, AnErrorFoundWhileComputingIsRaisedOnReadWithTheIssuingLine) {
  // Eleven axes of which no two merge: more than the CUDA kernels index.
  std::vector<int64_t> shape(11, 2), reversed(11);
  for (int64_t i = 0; i < 11; ++i) reversed[static_cast<size_t>(i)] = 10 - i;
  Tensor x = randn(Shape(shape)).permute(reversed);
  const uint32_t line = __LINE__ + 1;
  Tensor y = x * 2;
  try {
    y.to_vector<float>();
    ADD_FAILURE() << "expected an error for an 11-axis strided input";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("more than 10 dimensions"), std::string::npos) << e.what();
    ASSERT_FALSE(e.trace().empty()) << e.what();
    EXPECT_EQ(e.trace().front().line, line) << e.what();
  }
  // The device goes on.
  EXPECT_EQ((Tensor({1.f, 2.f}) * 2).to_vector<float>(), (std::vector<float>{2, 4}));
}

TEST_P(CudaBackend, EachProductUsesTheTf32SettingOfItsCall) {
  struct Restore {
    ~Restore() { set_allow_tf32(false); }
  } restore;
  Tensor a = randn({512, 512}), b = randn({512, 512});
  std::vector<Tensor> products;
  for (int i = 0; i < 20; ++i) {
    set_allow_tf32(false);
    products.push_back(matmul(a, b));
    set_allow_tf32(true);  // before the product may have run on the device
  }
  set_allow_tf32(false);
  // float32 keeps about 1e-4 here over 512 terms of size ~1; TF32's 10-bit inputs miss by ~1e-2.
  const std::vector<double> want = matmul(a.cast(f64), b.cast(f64)).to_vector<double>();
  for (const Tensor& p : products) {
    const std::vector<float> got = p.to_vector<float>();
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
    EXPECT_LT(worst, 2e-3);
  }
}

TEST_P(CudaBackend, HalfPrecisionConvolutionsOfUnalignedBuffersMatchTheCpu) {
  // Views one element into their storage: 2-byte aligned, which cuDNN's faster engines may not
  // take; each layout and pass must still compute the same convolution.
  for (DType dt : {bf16, f16}) {
    const int64_t n = 16 * 32 * 16 * 16;
    Tensor x = (randn({n + 1}).cast(dt))[Slice(1, _)].reshape({16, 32, 16, 16});
    Tensor w = (randn({64 * 32 * 9 + 1}).cast(dt) * 0.2)[Slice(1, _)].reshape({64, 32, 3, 3});
    x.requires_grad_();
    w.requires_grad_();
    ConvOptions opt;
    opt.padding = {1};
    for (bool cl : {false, true}) {
      Tensor xi = cl ? to_channels_last(x) : x;
      Tensor y = conv2d(xi, w, {}, opt);
      Tensor g = randn(y.shape()).cast(dt);
      const std::vector<Tensor> grads = grad((y * g).sum(), {x, w});
      const Tensor &gx = grads[0], &gw = grads[1];
      auto cpu = Backend::cpu();
      cpu->use([&] {
        Tensor xc = x.detach().to(cpu).cast(f32).requires_grad_();
        Tensor wc = w.detach().to(cpu).cast(f32).requires_grad_();
        Tensor yc = conv2d(xc, wc, {}, opt);
        (yc * g.to(cpu).cast(f32)).sum().backward();
        // Both sides sum the same 16-bit inputs; the GPU may round partial sums to 16 bits
        // (bfloat16: 8 significant bits, float16: 11), so errors scale with the result's size.
        const double tol = dt == bf16 ? 0.03 : 0.005;
        expect_close_to_scale(y.to(cpu).cast(f32), yc, tol, "output");
        expect_close_to_scale(gx.to(cpu).cast(f32), xc.grad(), tol, "input gradient");
        expect_close_to_scale(gw.to(cpu).cast(f32), wc.grad(), tol, "weight gradient");
      });
    }
  }
}

// ---- products with few rows (matrix-vector kernels) ----

namespace {

// The float64 product of a and b on the CPU, and each output's sum of |terms| (float32's
// error-bound scale), as row-major values.
struct Reference {
  std::vector<double> want, scale;
};

Reference reference(const Tensor& a, const Tensor& b) {
  auto cpu = Backend::cpu();
  return cpu->use([&] {
    Tensor ha = a.to(cpu).cast(f64), hb = b.to(cpu).cast(f64);
    return Reference{values(matmul(ha, hb)), values(matmul(ha.abs(), hb.abs()))};
  });
}

// got (on CUDA) within tol of want, each output's error measured against its scale; the first
// `count` values of ref (all when 0). `spacing`: the output dtype's smallest step (float16's
// subnormals are 2^-24 apart): rounding may cost an output up to one step however small its
// scale (a float16 product was seen 0.64 of a step off).
void expect_within(const Tensor& got, const Reference& ref, double tol, const std::string& what,
                   size_t count = 0, double spacing = 0) {
  EXPECT_EQ(got.backend().get(), Backend::cuda().get()) << what;
  const std::vector<double> g = values(got);
  ASSERT_EQ(g.size(), count ? count : ref.want.size()) << what;
  for (size_t i = 0; i < g.size(); ++i) {
    const double off = std::max(std::abs(g[i] - ref.want[i]) - spacing, 0.0);
    const double e = off / std::max(ref.scale[i], 1e-300);
    ASSERT_LE(e, tol) << what << " at " << i << ": " << g[i] << " vs " << ref.want[i];
  }
}

void expect_product_within(const Tensor& a, const Tensor& b, double tol, const std::string& what) {
  expect_within(matmul(a, b), reference(a, b), tol, what);
}

// Rounding both inputs and the output to the dtype's precision (u = 2^-11 for float16, 2^-8 for
// bfloat16) moves an output by at most about 3u of its sum of |terms|.
double few_rows_tolerance(DType dt) {
  return dt == f64 ? 1e-12 : dt == f32 ? 1e-5 : dt == f16 ? 2e-3 : 1.5e-2;
}

}  // namespace

// Every row count the kernels handle (rounded up to 1, 2, 4 or 8 inside) against odd and even
// sizes, with B stored as rows of B^T (x @ W^T, walking along k) and row-major (walking along n),
// in every floating dtype.
TEST_P(CudaBackend, FewRowProductsMatchFloat64ForEveryShapeAndLayout) {
  for (int64_t k : {1, 7, 64, 1125, 4500}) {
    Tensor a8 = randn({8, k}, f64);
    for (int64_t n : {1, 10, 33, 2250}) {
      Tensor w = randn({n, k}, f64);
      const Reference ref = reference(a8, w.t());
      for (DType dt : {f32, f16, bf16, f64}) {
        Tensor ad = a8.cast(dt), wd = w.cast(dt);
        for (bool stored_transposed : {true, false}) {
          Tensor b = stored_transposed ? wd.t() : wd.t().contiguous();
          for (int64_t m : {1, 2, 3, 5, 8}) {
            const std::string what = std::string(dtype_name(dt)) + " m=" + std::to_string(m) +
                                     " k=" + std::to_string(k) + " n=" + std::to_string(n) +
                                     (stored_transposed ? " B^T stored" : " B stored");
            expect_within(matmul(ad[Slice(0, m)], b), ref, few_rows_tolerance(dt), what,
                          static_cast<size_t>(m * n), dt == f16 ? std::ldexp(1.0, -24) : 0.0);
          }
        }
      }
    }
  }
}

// Views whose rows are not 16-byte aligned or not contiguous take the kernels' element-wise
// loads; batches (broadcast too) run as one grid; a B with neither stride 1 goes to cuBLAS.
TEST_P(CudaBackend, FewRowProductsOfViewsAndBatchesMatchFloat64) {
  const double tol = few_rows_tolerance(f32);
  Tensor w = randn({33, 1126});
  Tensor x = randn({3, 1126});
  expect_product_within(x[Slice(), Slice(1, _)], w[Slice(), Slice(1, _)].t(), tol,
                        "B^T rows and A at an odd offset");
  expect_product_within(x[Slice(), Slice(_, 1125)], w[Slice(), Slice(_, 1125)].t(), tol,
                        "B^T rows 8-byte aligned");
  expect_product_within(randn({2, 2250})[Slice(), Slice(_, _, 2)], w[Slice(), Slice(1, _)].t(), tol,
                        "A strided along k");
  expect_product_within(randn({5, 2250}), randn({10, 2250}).t(), tol, "B^T rows of 2250");
  expect_product_within(randn({4, 1125}), randn({1125, 36})[Slice(), Slice(1, 34)], tol,
                        "B rows at an odd offset");
  expect_product_within(randn({4, 1125}).t().contiguous().t(), randn({1125, 64}), tol,
                        "A stored transposed");
  expect_product_within(randn({2, 4500}), randn({4500, 3})[Slice(), Slice(1, 2)], tol,
                        "one strided column of B");
  expect_product_within(randn({3, 1}), randn({33, 2})[Slice(), Slice(0, 1)].t(), tol,
                        "k = 1 with strided columns");
  expect_product_within(randn({3, 1}), randn({1, 33}), tol, "k = 1 (outer products)");
  expect_product_within(randn({3, 20}), randn({40, 66})[Slice(_, _, 2), Slice(_, _, 2)], tol,
                        "B with neither stride 1");
  expect_product_within(randn({4, 1, 700}), randn({4, 700, 33}), tol, "batch, B stored");
  expect_product_within(randn({4, 2, 700}), randn({4, 33, 700}).transpose(-2, -1), tol,
                        "batch, B^T stored");
  expect_product_within(randn({1, 3, 700}), randn({2, 33, 700}).transpose(-2, -1), tol,
                        "broadcast batch of A");
  expect_product_within(randn({3, 700}), randn({5, 700, 33}), tol, "A broadcast over B's batch");
  expect_product_within(randn({700}), randn({33, 700}).t(), tol, "vector @ matrix");
  expect_product_within(randn({5, 700}), randn({700}), tol, "matrix @ vector");
}

// The reference CNN's three Linear layers at batch 1, as the Linear module computes them, in
// float32 (float32-accurate even with TF32 allowed: the kernels are plain FMAs) and under
// autocast.
TEST_P(CudaBackend, FewRowProductsRunTheReferenceCnnsBatchOneLinearLayers) {
  for (auto [in, out] : {std::pair<int64_t, int64_t>{4500, 2250}, {2250, 1125}, {1125, 10}}) {
    Tensor x = randn({1, in}), w = randn({out, in}) / std::sqrt(static_cast<double>(in));
    const Reference ref = reference(x, w.t());
    const std::string shape = " [1, " + std::to_string(in) + "] @ W^T [" + std::to_string(out) +
                              ", " + std::to_string(in) + "]";
    expect_within(matmul(x, w.t()), ref, 1e-5, "float32" + shape);
    set_allow_tf32(true);
    Tensor tf32_allowed = matmul(x, w.t());
    set_allow_tf32(false);
    expect_within(tf32_allowed, ref, 1e-5, "float32, TF32 allowed" + shape);
    for (DType dt : {f16, bf16}) {
      amp::Autocast ac(dt);
      Tensor y = matmul(x, w.t());
      EXPECT_EQ(y.dtype(), dt);
      expect_within(y, ref, few_rows_tolerance(dt), "autocast" + shape);
    }
  }
}

// Gradients through a product with one row (a batch-1 Linear): x's is g @ W (walking along n),
// W's an outer product (cuBLAS).
TEST_P(CudaBackend, FewRowProductGradientsMatchCpu) {
  for (DType dt : {f64, f32}) {
    for (int64_t n : {10, 33, 2250}) {
      Tensor x = randn({1, 1125}, dt), w = randn({n, 1125}, dt), g = randn({1, n}, dt);
      expect_same(
          [](auto& v) {
            Tensor x = v[0].detach().requires_grad_(), w = v[1].detach().requires_grad_();
            (matmul(x, w.t()) * v[2]).sum().backward();
            return concat({x.grad().reshape({-1}), w.grad().reshape({-1})});
          },
          {x, w, g}, dt == f64 ? 1e-12 : 1e-4, "x @ W^T backward");
      expect_same(
          [](auto& v) {
            Tensor x = v[0].detach().reshape({-1}).requires_grad_();
            Tensor w = v[1].detach().requires_grad_();
            (matmul(x, w.t()) * v[2].reshape({-1})).sum().backward();
            return concat({x.grad(), w.grad().reshape({-1})});
          },
          // g @ W sums n terms: at n = 2250 float32's rounding on either side reaches 2e-5.
          {x, w, g}, dt == f64 ? 1e-12 : 1e-4, "vector @ W^T backward");
    }
  }
}

}  // namespace crisp::testing
