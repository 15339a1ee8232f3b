// Conformance of the elementwise ops: every unary and binary op against float64 references
// computed here with std:: functions, broadcasting, scalar operands, in-place forms, casts
// between all dtypes, integer division, and gradients against finite differences.
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numbers>

#include "testing.h"

namespace crisp::testing {

class Elementwise : public BackendTest {};
INSTANTIATE_TEST_SUITE_P(Backends, Elementwise, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
const std::vector<DType> kAllDtypes = {bool_, u8, i32, i64, f16, bf16, f32, f64};

// Random float64 values in [low, high), or in [low, high) pushed 0.25 away from zero where the
// op has a kink there (abs, relu, ...), so finite differences never straddle it.
Tensor domain(Shape shape, double low, double high, bool away_from_zero) {
  Tensor u = uniform(std::move(shape), low, high, f64);
  if (!away_from_zero) return u;
  return where(u >= 0, u + 0.25, u - 0.25);
}

// The tolerance a result of dtype can meet: its half-ulp, with margin for float32 arithmetic.
double tolerance(DType dt) {
  switch (dt) {
    case DType::f64:
      return 1e-12;
    case DType::f32:
      return 2e-6;
    case DType::f16:
      return 2e-3;
    default:
      return 1.6e-2;
  }
}

double sigmoid_ref(double v) { return 1 / (1 + std::exp(-v)); }
double softplus_ref(double v, double beta, double threshold) {
  return beta * v > threshold ? v : std::log1p(std::exp(beta * v)) / beta;
}

struct UnaryCase {
  std::string name;
  std::function<Tensor(const Tensor&)> op;
  std::function<double(double)> ref;
  double low, high;
  bool away_from_zero = false;
};

std::vector<UnaryCase> unary_cases() {
  const double k = std::sqrt(2 / std::numbers::pi);
  return {
      {"neg", [](const Tensor& x) { return -x; }, [](double v) { return -v; }, -3, 3},
      {"abs", [](const Tensor& x) { return abs(x); }, [](double v) { return std::abs(v); }, -3, 3,
       true},
      {"sign", [](const Tensor& x) { return sign(x); },
       [](double v) { return static_cast<double>((v > 0) - (v < 0)); }, -3, 3, true},
      {"exp", [](const Tensor& x) { return exp(x); }, [](double v) { return std::exp(v); }, -3, 3},
      {"log", [](const Tensor& x) { return log(x); }, [](double v) { return std::log(v); }, 0.1, 5},
      {"log1p", [](const Tensor& x) { return log1p(x); }, [](double v) { return std::log1p(v); },
       -0.9, 5},
      {"expm1", [](const Tensor& x) { return expm1(x); }, [](double v) { return std::expm1(v); },
       -3, 3},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, [](double v) { return std::sqrt(v); }, 0.1,
       5},
      {"rsqrt", [](const Tensor& x) { return rsqrt(x); }, [](double v) { return 1 / std::sqrt(v); },
       0.1, 5},
      {"sin", [](const Tensor& x) { return sin(x); }, [](double v) { return std::sin(v); }, -4, 4},
      {"cos", [](const Tensor& x) { return cos(x); }, [](double v) { return std::cos(v); }, -4, 4},
      {"tanh", [](const Tensor& x) { return tanh(x); }, [](double v) { return std::tanh(v); }, -3,
       3},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, sigmoid_ref, -6, 6},
      {"relu", [](const Tensor& x) { return relu(x); }, [](double v) { return v > 0 ? v : 0; }, -3,
       3, true},
      {"leaky_relu", [](const Tensor& x) { return leaky_relu(x, 0.1); },
       [](double v) { return v > 0 ? v : 0.1 * v; }, -3, 3, true},
      {"leaky_relu_default", [](const Tensor& x) { return leaky_relu(x); },
       [](double v) { return v > 0 ? v : 0.01 * v; }, -3, 3, true},
      {"gelu", [](const Tensor& x) { return gelu(x); },
       [](double v) { return 0.5 * v * (1 + std::erf(v / std::numbers::sqrt2)); }, -4, 4},
      {"gelu_tanh", [](const Tensor& x) { return gelu(x, "tanh"); },
       [k](double v) { return 0.5 * v * (1 + std::tanh(k * (v + 0.044715 * v * v * v))); }, -4, 4},
      {"silu", [](const Tensor& x) { return silu(x); }, [](double v) { return v * sigmoid_ref(v); },
       -5, 5},
      {"softplus", [](const Tensor& x) { return softplus(x); },
       [](double v) { return softplus_ref(v, 1, 20); }, -5, 5},
      {"softplus_beta2_threshold3", [](const Tensor& x) { return softplus(x, 2, 3); },
       [](double v) { return softplus_ref(v, 2, 3); }, -4, 4},
      {"mish", [](const Tensor& x) { return mish(x); },
       [](double v) { return v * std::tanh(softplus_ref(v, 1, 20)); }, -5, 5},
      {"erf", [](const Tensor& x) { return erf(x); }, [](double v) { return std::erf(v); }, -3, 3},
      {"floor", [](const Tensor& x) { return floor(x); }, [](double v) { return std::floor(v); },
       -5, 5},
      {"ceil", [](const Tensor& x) { return ceil(x); }, [](double v) { return std::ceil(v); }, -5,
       5},
      {"round", [](const Tensor& x) { return round(x); },
       [](double v) { return std::nearbyint(v); }, -5, 5},
      {"clamp", [](const Tensor& x) { return clamp(x, -0.5, 0.7); },
       [](double v) { return std::min(std::max(v, -0.5), 0.7); }, -2, 2},
      {"clamp_low", [](const Tensor& x) { return clamp(x, -0.5, std::nullopt); },
       [](double v) { return std::max(v, -0.5); }, -2, 2},
      {"clamp_high", [](const Tensor& x) { return clamp(x, std::nullopt, 0.7); },
       [](double v) { return std::min(v, 0.7); }, -2, 2},
      {"pow2", [](const Tensor& x) { return pow(x, 2); }, [](double v) { return v * v; }, -2, 2},
      {"pow3", [](const Tensor& x) { return x.pow(3); }, [](double v) { return v * v * v; }, -2, 2},
      {"pow_half", [](const Tensor& x) { return pow(x, 0.5); },
       [](double v) { return std::sqrt(v); }, 0.1, 4},
      {"pow_neg", [](const Tensor& x) { return pow(x, -1.5); },
       [](double v) { return std::pow(v, -1.5); }, 0.2, 4},
      {"pow0", [](const Tensor& x) { return pow(x, 0); }, [](double) { return 1.0; }, -2, 2},
  };
}

// out[i] = f(a[ia], b[ib]) with numpy broadcasting, as a naive loop over the output.
std::vector<double> broadcast_ref(const std::vector<double>& a, const Shape& as,
                                  const std::vector<double>& b, const Shape& bs,
                                  const std::function<double(double, double)>& f) {
  const size_t nd = std::max(as.size(), bs.size());
  Shape out(nd);
  auto dim = [nd](const Shape& s, size_t d) {
    return d < nd - s.size() ? int64_t{1} : s[d - (nd - s.size())];
  };
  for (size_t d = 0; d < nd; ++d) out[d] = std::max(dim(as, d), dim(bs, d));
  std::vector<double> r;
  for (int64_t flat = 0; flat < numel_of(out); ++flat) {
    int64_t rem = flat, ia = 0, ib = 0, sa = 1, sb = 1;
    for (size_t d = nd; d-- > 0;) {
      const int64_t i = rem % out[d];
      rem /= out[d];
      if (dim(as, d) != 1) ia += i * sa;
      if (dim(bs, d) != 1) ib += i * sb;
      sa *= dim(as, d);
      sb *= dim(bs, d);
    }
    r.push_back(f(a[static_cast<size_t>(ia)], b[static_cast<size_t>(ib)]));
  }
  return r;
}

struct BinaryCase {
  std::string name;
  std::function<Tensor(const Tensor&, const Tensor&)> op;
  std::function<double(double, double)> ref;
  double a_low, a_high, b_low, b_high;
  bool b_away_from_zero = false;
};

std::vector<BinaryCase> binary_cases() {
  return {
      {"add", [](const Tensor& a, const Tensor& b) { return a + b; },
       [](double x, double y) { return x + y; }, -3, 3, -3, 3},
      {"sub", [](const Tensor& a, const Tensor& b) { return a - b; },
       [](double x, double y) { return x - y; }, -3, 3, -3, 3},
      {"mul", [](const Tensor& a, const Tensor& b) { return a * b; },
       [](double x, double y) { return x * y; }, -3, 3, -3, 3},
      {"div", [](const Tensor& a, const Tensor& b) { return a / b; },
       [](double x, double y) { return x / y; }, -3, 3, -3, 3, true},
      {"pow", [](const Tensor& a, const Tensor& b) { return pow(a, b); },
       [](double x, double y) { return std::pow(x, y); }, 0.5, 2, -2, 2},
      {"maximum", [](const Tensor& a, const Tensor& b) { return maximum(a, b); },
       [](double x, double y) { return std::max(x, y); }, -3, 3, -3, 3},
      {"minimum", [](const Tensor& a, const Tensor& b) { return minimum(a, b); },
       [](double x, double y) { return std::min(x, y); }, -3, 3, -3, 3},
  };
}

std::string dims(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::vector<double> as_doubles(const std::vector<bool>& v) { return {v.begin(), v.end()}; }

// add_relu(a, b) = relu(a + b) in one op: values by hand (with broadcasting and each dtype),
// the layout of a channels-last operand kept, gradients by finite differences.
TEST_P(Elementwise, AddReluIsTheReluOfTheSum) {
  Tensor a = Tensor(std::vector<float>{1.5f, -2, 0.25f, -0.5f, 3, -1}, {2, 3});
  Tensor b = Tensor(std::vector<float>{-1, 1, 0.5f}, {3});
  expect_close(add_relu(a, b), {0.5, 0, 0.75, 0, 4, 0}, 0);
  for (DType dt : {f64, f16, bf16, i32}) {
    Tensor x = (randn({4, 5}) * 3).cast(dt), y = (randn({4, 5}) * 3).cast(dt);
    expect_tensors_close(add_relu(x, y), relu(x + y), 0, dtype_name(dt).data());
  }
  Tensor xc = to_channels_last(randn({2, 3, 4, 5})), yc = to_channels_last(randn({2, 3, 4, 5}));
  Tensor z = add_relu(xc, yc);
  EXPECT_TRUE(is_channels_last(z));
  expect_tensors_close(z, relu(xc.contiguous() + yc.contiguous()), 0, "channels-last");
  check_gradients([](const std::vector<Tensor>& in) { return add_relu(in[0], in[1]); },
                  {randn({3, 4}), randn({4})});
}

}  // namespace

// ---- unary ----

TEST_P(Elementwise, UnaryOpsMatchFloat64Reference) {
  for (const UnaryCase& c : unary_cases()) {
    Tensor x = domain({3, 7}, c.low, c.high, c.away_from_zero);
    for (DType dt : {f64, f32, f16, bf16}) {
      const std::string what = c.name + " " + std::string(dtype_name(dt));
      Tensor xt = x.cast(dt);
      std::vector<double> expected;
      for (double v : values(xt)) expected.push_back(c.ref(v));  // from the rounded inputs
      Tensor y = c.op(xt);
      EXPECT_EQ(y.dtype(), dt) << what;
      EXPECT_EQ(y.shape(), (Shape{3, 7})) << what;
      expect_close(y, expected, tolerance(dt), what.c_str());
    }
    // Strided inputs (a transposed view) take the kernels' strided path.
    Tensor xf = x.cast(f32);
    expect_tensors_close(c.op(xf.t()), c.op(xf).t(), 1e-6, c.name.c_str());
  }
}

TEST_P(Elementwise, UnaryGradientsMatchFiniteDifferences) {
  for (const UnaryCase& c : unary_cases()) {
    SCOPED_TRACE(c.name);
    check_gradients([&c](const std::vector<Tensor>& in) { return c.op(in[0]); },
                    {domain({2, 3}, c.low, c.high, c.away_from_zero)});
  }
}

TEST_P(Elementwise, RoundHalvesToEvenAndFloorCeilTruncate) {
  Tensor x({0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, -2.6});
  expect_close(round(x), {0, 2, 2, 0, -2, -2, 2, -3});
  expect_close(floor(x), {0, 1, 2, -1, -2, -3, 2, -3});
  expect_close(ceil(x), {1, 2, 3, 0, -1, -2, 3, -2});
  expect_close(round(x.cast(f16)), {0, 2, 2, 0, -2, -2, 2, -3});
}

TEST_P(Elementwise, UnaryOpsOnIntegers) {
  for (DType dt : {i32, i64}) {
    Tensor x = Tensor({-3, 0, 2, 5}).cast(dt);
    EXPECT_EQ((-x).dtype(), dt);
    expect_close(-x, {3, 0, -2, -5});
    expect_close(abs(x), {3, 0, 2, 5});
    expect_close(sign(x), {-1, 0, 1, 1});
    expect_close(relu(x), {0, 0, 2, 5});
    expect_close(clamp(x, -1, 3), {-1, 0, 2, 3});
    expect_close(pow(x, 2), {9, 0, 4, 25});
    EXPECT_EQ(pow(x, 3).to_vector<int64_t>(), (std::vector<int64_t>{-27, 0, 8, 125}));
  }
  Tensor u = Tensor({0, 3, 200}).cast(u8);
  expect_close(abs(u), {0, 3, 200});
  expect_close(clamp(u, 1, 100), {1, 3, 100});
}

TEST_P(Elementwise, NaNPropagatesThroughUnaryOps) {
  Tensor x({kNaN, 1.0});
  for (auto f : std::vector<std::function<Tensor(const Tensor&)>>{
           [](const Tensor& t) { return relu(t); }, [](const Tensor& t) { return abs(t); },
           [](const Tensor& t) { return clamp(t, 0, 0.5); }, [](const Tensor& t) { return exp(t); },
           [](const Tensor& t) { return sigmoid(t); },
           [](const Tensor& t) { return leaky_relu(t); }, [](const Tensor& t) { return gelu(t); }})
    EXPECT_TRUE(std::isnan(values(f(x))[0]));
  EXPECT_EQ(isnan(x).to_vector<bool>(), (std::vector<bool>{true, false}));
  EXPECT_EQ(isnan(Tensor({1, 2})).to_vector<bool>(), (std::vector<bool>{false, false}));
  // Extreme inputs stay finite where the function is.
  expect_close(sigmoid(Tensor({-200.f, 200.f})), {0, 1});
  expect_close(softplus(Tensor({-200.f, 200.f})), {0, 200});
  expect_close(silu(Tensor({-200.f, 200.f})), {0, 200});
  expect_close(mish(Tensor({-200.f, 200.f})), {0, 200});
}

// ---- binary ----

TEST_P(Elementwise, BinaryOpsBroadcastAndMatchFloat64Reference) {
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{2, 3, 4}, {3, 1}}, {{4}, {2, 3, 4}}, {{2, 1}, {1, 3}}, {{2, 3}, {}}, {{}, {5}}};
  for (const BinaryCase& c : binary_cases()) {
    for (const auto& [as, bs] : shapes) {
      Tensor a = domain(as, c.a_low, c.a_high, false);
      Tensor b = domain(bs, c.b_low, c.b_high, c.b_away_from_zero);
      for (DType dt : {f64, f32, f16, bf16}) {
        const std::string what =
            c.name + " " + dims(as) + " " + dims(bs) + " " + std::string(dtype_name(dt));
        Tensor at = a.cast(dt), bt = b.cast(dt);
        Tensor y = c.op(at, bt);
        std::vector<double> expected = broadcast_ref(values(at), as, values(bt), bs, c.ref);
        EXPECT_EQ(y.dtype(), dt) << what;
        EXPECT_EQ(y.shape(), broadcast_shapes(as, bs)) << what;
        expect_close(y, expected, tolerance(dt), what.c_str());
      }
    }
  }
}

TEST_P(Elementwise, BinaryGradientsMatchFiniteDifferences) {
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {{2, 3}, {2, 3}}, {{2, 3}, {3}}, {{2, 1}, {1, 3}}, {{}, {2, 2}}};
  for (const BinaryCase& c : binary_cases()) {
    for (const auto& [as, bs] : shapes) {
      SCOPED_TRACE(c.name + " " + dims(as) + " " + dims(bs));
      check_gradients([&c](const std::vector<Tensor>& in) { return c.op(in[0], in[1]); },
                      {domain(as, c.a_low, c.a_high, false),
                       domain(bs, c.b_low, c.b_high, c.b_away_from_zero)});
    }
  }
  // One operand a scalar.
  check_gradients([](const std::vector<Tensor>& in) { return 2 / in[0] - in[0] * 3; },
                  {domain({3}, 0.5, 2, false)});
}

TEST_P(Elementwise, MaximumMinimumSplitTiedGradients) {
  Tensor x({1.0, 2.0, 3.0}), y({1.0, 0.0, 5.0});
  x.requires_grad_();
  y.requires_grad_();
  std::vector<Tensor> g = grad(maximum(x, y).sum(), {x, y});
  expect_close(g[0], {0.5, 1, 0});
  expect_close(g[1], {0.5, 0, 1});
  g = grad(minimum(x, y).sum(), {x, y});
  expect_close(g[0], {0.5, 0, 1});
  expect_close(g[1], {0.5, 1, 0});
}

TEST_P(Elementwise, NaNPropagatesThroughBinaryOps) {
  Tensor n({kNaN, 1.0}), one({1.0, kNaN});
  for (const Tensor& t : {maximum(n, one), maximum(one, n), minimum(n, one), minimum(one, n)})
    expect_close(t, {kNaN, kNaN});
  std::vector<double> q = values(Tensor({1.0, -1.0, 0.0}) / 0.0);
  EXPECT_EQ(q[0], std::numeric_limits<double>::infinity());
  EXPECT_EQ(q[1], -std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(q[2]));
  expect_close(pow(Tensor({-2.0}), Tensor({0.5})), {kNaN});
}

TEST_P(Elementwise, IntegerArithmetic) {
  for (DType dt : {u8, i32, i64}) {
    Tensor a = Tensor({7, 2, 0, 9}).cast(dt), b = Tensor({2, 5, 3, 1}).cast(dt);
    EXPECT_EQ((a + b).dtype(), dt);
    expect_close(a + b, {9, 7, 3, 10});
    expect_close(a * b, {14, 10, 0, 9});
    expect_close(maximum(a, b), {7, 5, 3, 9});
    expect_close(minimum(a, b), {2, 2, 0, 1});
    expect_close(pow(a, b), {49, 32, 0, 9});
    expect_close(a - minimum(a, b), {5, 0, 0, 8});
  }
}

TEST_P(Elementwise, IntegerDivisionFloorsLikePythonFloorDivision) {
  for (DType dt : {i32, i64}) {
    Tensor a = Tensor({7, -7, 7, -7, 6, -6, 0, 1}).cast(dt);
    Tensor b = Tensor({2, 2, -2, -2, 3, 3, 5, -1}).cast(dt);
    Tensor q = a / b;
    EXPECT_EQ(q.dtype(), dt);
    // Python: [7 // 2, -7 // 2, 7 // -2, -7 // -2, 6 // 3, -6 // 3, 0 // 5, 1 // -1]
    expect_close(q, {3, -4, -4, 3, 2, -2, 0, -1});
    expect_close(a / 2, {3, -4, 3, -4, 3, -3, 0, 0});
  }
  // The most negative value divided by -1 wraps to itself instead of trapping.
  Tensor m32 = Tensor({std::numeric_limits<int32_t>::min()}, {1}, i32);
  EXPECT_EQ((m32 / -1).to_vector<int32_t>(),
            std::vector<int32_t>{std::numeric_limits<int32_t>::min()});
  Tensor m64 = Tensor({std::numeric_limits<int64_t>::min()}, {1}, i64);
  EXPECT_EQ((m64 / -1).to_vector<int64_t>(),
            std::vector<int64_t>{std::numeric_limits<int64_t>::min()});
  // Unsigned: 255 is a divisor like any other.
  Tensor u = Tensor({200, 255, 7}).cast(u8);
  expect_close(u / Tensor({255, 2, 2}).cast(u8), {0, 127, 3});
}

TEST_P(Elementwise, IntegerDivisionByZeroIsRaisedOnReadNotAtTheOp) {
  Tensor a({1, 2, 3}), b({1, 0, 1});
  Tensor q;
  EXPECT_NO_THROW(q = a / b);
  EXPECT_EQ(q.shape(), (Shape{3}));
  EXPECT_THROW(q.to_vector<int64_t>(), Error);
  // Float division by zero is not an error.
  EXPECT_EQ((a.cast(f32) / b.cast(f32)).to_vector<float>(),
            (std::vector<float>{1, std::numeric_limits<float>::infinity(), 3}));
}

TEST_P(Elementwise, ComparisonsGiveBoolWithTies) {
  const Shape as{2, 3}, bs{3};
  // Small integers, so that ties occur; every dtype that orders.
  std::vector<double> av = {0, 1, 2, 3, 1, 0}, bv = {1, 1, 0};
  const std::vector<std::pair<std::string, std::function<Tensor(const Tensor&, const Tensor&)>>>
      ops = {{"eq", [](const Tensor& a, const Tensor& b) { return a == b; }},
             {"ne", [](const Tensor& a, const Tensor& b) { return a != b; }},
             {"lt", [](const Tensor& a, const Tensor& b) { return a < b; }},
             {"le", [](const Tensor& a, const Tensor& b) { return a <= b; }},
             {"gt", [](const Tensor& a, const Tensor& b) { return a > b; }},
             {"ge", [](const Tensor& a, const Tensor& b) { return ge(a, b); }}};
  const std::vector<std::function<double(double, double)>> refs = {
      [](double x, double y) { return double(x == y); },
      [](double x, double y) { return double(x != y); },
      [](double x, double y) { return double(x < y); },
      [](double x, double y) { return double(x <= y); },
      [](double x, double y) { return double(x > y); },
      [](double x, double y) { return double(x >= y); }};
  for (DType dt : {u8, i32, i64, f16, bf16, f32, f64}) {
    Tensor a = Tensor(av, as, f64).cast(dt), b = Tensor(bv, bs, f64).cast(dt);
    for (size_t i = 0; i < ops.size(); ++i) {
      const std::string what = ops[i].first + " " + std::string(dtype_name(dt));
      Tensor y = ops[i].second(a, b);
      EXPECT_EQ(y.dtype(), bool_) << what;
      EXPECT_EQ(y.shape(), as) << what;
      EXPECT_EQ(as_doubles(y.to_vector<bool>()), broadcast_ref(av, as, bv, bs, refs[i])) << what;
    }
  }
  // Scalars compare in the tensor's dtype; NaN compares unequal to everything.
  EXPECT_EQ((Tensor({1, 2, 3}) > 1).to_vector<bool>(), (std::vector<bool>{false, true, true}));
  EXPECT_EQ((Tensor({kNaN}) == Tensor({kNaN})).to_vector<bool>(), std::vector<bool>{false});
  EXPECT_EQ((Tensor({kNaN}) != Tensor({kNaN})).to_vector<bool>(), std::vector<bool>{true});
}

TEST_P(Elementwise, LogicalOpsTreatNonzeroAsTrue) {
  Tensor p({true, true, false, false}), q({true, false, true, false});
  EXPECT_EQ((p && q).to_vector<bool>(), (std::vector<bool>{true, false, false, false}));
  EXPECT_EQ((p || q).to_vector<bool>(), (std::vector<bool>{true, true, true, false}));
  EXPECT_EQ(logical_xor(p, q).to_vector<bool>(), (std::vector<bool>{false, true, true, false}));
  EXPECT_EQ((!p).to_vector<bool>(), (std::vector<bool>{false, false, true, true}));
  EXPECT_EQ(logical_not(q).dtype(), bool_);
  // Numbers: nonzero (NaN included) is true; broadcasting and scalars work as elsewhere.
  Tensor f({0.0, -2.0, kNaN, 0.5});
  EXPECT_EQ(logical_and(f, Tensor({1.0})).to_vector<bool>(),
            (std::vector<bool>{false, true, true, true}));
  EXPECT_EQ(logical_or(Tensor({0, 3}), 0).to_vector<bool>(), (std::vector<bool>{false, true}));
  EXPECT_EQ((!Tensor({0, 3})).to_vector<bool>(), (std::vector<bool>{true, false}));
  EXPECT_EQ((p && true).to_vector<bool>(), (std::vector<bool>{true, true, false, false}));
  Tensor m = Tensor({true, false}, {2, 1}) || Tensor({false, false, true}, {1, 3});
  EXPECT_EQ(m.shape(), (Shape{2, 3}));
  EXPECT_EQ(m.to_vector<bool>(), (std::vector<bool>{true, true, true, false, false, true}));
}

TEST_P(Elementwise, WhereBroadcastsAndTakesScalars) {
  Tensor cond({true, false}, {2, 1});
  Tensor a({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3});
  Tensor b({10.f, 20.f, 30.f});
  Tensor y = where(cond, a, b);
  EXPECT_EQ(y.shape(), (Shape{2, 3}));
  expect_close(y, {1, 2, 3, 10, 20, 30});
  expect_close(where(cond, a, 0.5), {1, 2, 3, 0.5, 0.5, 0.5});
  expect_close(where(cond, -1, b), {-1, -1, -1, 10, 20, 30});
  EXPECT_EQ(where(cond, Tensor({1, 2}), 7).dtype(), i64);
  for (DType dt : kAllDtypes) {
    Tensor w = where(Tensor({true, false, true}), ones({3}, dt), zeros({3}, dt));
    EXPECT_EQ(w.dtype(), dt);
    expect_close(w, {1, 0, 1}, 0, dtype_name(dt).data());
  }
  check_gradients([cond](const std::vector<Tensor>& in) { return where(cond, in[0], in[1]); },
                  {randn({2, 3}, f64), randn({3}, f64)});
  check_gradients([cond](const std::vector<Tensor>& in) { return where(cond, in[0], 2.0); },
                  {randn({1, 3}, f64)});
}

// ---- scalars, in-place forms ----

TEST_P(Elementwise, ScalarsAdoptTheTensorsDtype) {
  Tensor i = Tensor({1, 2, 3});
  EXPECT_EQ((i + 2).dtype(), i64);
  EXPECT_EQ((i + 2).to_vector<int64_t>(), (std::vector<int64_t>{3, 4, 5}));
  Tensor i32t = i.cast(i32);
  EXPECT_EQ((10 - i32t).dtype(), i32);
  EXPECT_EQ((10 - i32t).to_vector<int32_t>(), (std::vector<int32_t>{9, 8, 7}));
  Tensor u = i.cast(u8);
  EXPECT_EQ((u * 2).dtype(), u8);
  expect_close(u * 2, {2, 4, 6});
  Tensor h = Tensor({1.f, 2.f}).cast(f16);
  EXPECT_EQ((h * 2.5).dtype(), f16);
  expect_close(h * 2.5, {2.5, 5});
  Tensor bh = Tensor({1.f, 2.f}).cast(bf16);
  EXPECT_EQ((0.5 + bh).dtype(), bf16);
  expect_close(0.5 + bh, {1.5, 2.5});
  Tensor d = Tensor({1.0, 4.0});
  EXPECT_EQ((2.0f / d).dtype(), f64);
  expect_close(2.0f / d, {2, 0.5});
  EXPECT_EQ(pow(2, d).dtype(), f64);
  expect_close(pow(2, d), {2, 16});
  expect_close(maximum(d, 2), {2, 4});
  EXPECT_EQ((i > 1.0).dtype(), bool_);
}

TEST_P(Elementwise, InPlaceOperatorsRebindOnlyTheirHandle) {
  Tensor x({1.f, 2.f, 3.f});
  Tensor keep = x;
  x += Tensor({10.f, 20.f, 30.f});
  expect_close(x, {11, 22, 33});
  x -= 1;
  expect_close(x, {10, 21, 32});
  x *= 2;
  expect_close(x, {20, 42, 64});
  x /= Tensor({4.f});
  expect_close(x, {5, 10.5, 16});
  expect_close(keep, {1, 2, 3});
  Tensor n({5, 7});
  n /= 2;
  EXPECT_EQ(n.to_vector<int64_t>(), (std::vector<int64_t>{2, 3}));
  // In-place updates stay differentiable.
  Tensor w = randn({3}, f64).requires_grad_();
  Tensor v = w * 1;
  v *= w;
  v += w;
  std::vector<Tensor> g = grad(v.sum(), {w});
  std::vector<double> wv = values(w), expected;
  for (double e : wv) expected.push_back(2 * e + 1);
  expect_close(g[0], expected);
}

// ---- casts ----

TEST_P(Elementwise, CastBetweenAllDtypes) {
  const std::vector<double> vals = {0, 1, 2, 100};
  for (DType from : kAllDtypes) {
    for (DType to : kAllDtypes) {
      const std::string what = std::string(dtype_name(from)) + " -> " + std::string(dtype_name(to));
      Tensor x = Tensor(vals, {2, 2}, f64).cast(from);
      Tensor y = x.cast(to);
      EXPECT_EQ(y.dtype(), to) << what;
      EXPECT_EQ(y.shape(), (Shape{2, 2})) << what;
      std::vector<double> expected = vals;
      if (from == bool_ || to == bool_) expected = {0, 1, 1, 1};
      expect_close(y, expected, 0, what.c_str());
      // A strided source converts the same way.
      expect_close(x.t().cast(to), {expected[0], expected[2], expected[1], expected[3]}, 0,
                   what.c_str());
    }
  }
}

TEST_P(Elementwise, CastFloatToIntegerTruncatesTowardZero) {
  Tensor f({3.7f, -3.7f, -0.5f, 0.5f, 126.9f});
  for (DType dt : {i32, i64})
    expect_close(f.cast(dt), {3, -3, 0, 0, 126}, 0, dtype_name(dt).data());
  expect_close(Tensor({3.7f, 0.5f, 200.9f}).cast(u8), {3, 0, 200});
  // Nonzero (NaN included) is true; zero of either sign is false.
  EXPECT_EQ(Tensor({0.0, -0.0, 0.25, kNaN}).cast(bool_).to_vector<bool>(),
            (std::vector<bool>{false, false, true, true}));
  expect_close(Tensor({-5, 7}).cast(i32).cast(i64), {-5, 7});
  expect_close(Tensor({-5, 7}).cast(f16), {-5, 7});
}

TEST_P(Elementwise, CastToHalfRoundsToNearestEven) {
  // Reference values from torch's float32 -> float16 conversion.
  const std::vector<double> in = {1 + std::ldexp(1, -11),      // halfway: to even (1)
                                  1 + 3 * std::ldexp(1, -11),  // halfway: to even (up)
                                  1 + std::ldexp(1, -11) + std::ldexp(1, -20),  // above halfway
                                  65504,
                                  65519,
                                  65520,
                                  std::ldexp(1, -25),
                                  3 * std::ldexp(1, -26),
                                  0.1,
                                  -2.5,
                                  1e-8,
                                  3.14159};
  const std::vector<double> expected = {1.0,
                                        1.001953125,
                                        1.0009765625,
                                        65504,
                                        65504,
                                        std::numeric_limits<double>::infinity(),
                                        0.0,
                                        5.960464477539063e-08,
                                        0.0999755859375,
                                        -2.5,
                                        0.0,
                                        3.140625};
  Tensor h = Tensor(in, {-1}, f32).cast(f16);
  std::vector<double> got = values(h);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], expected[i]) << "element " << i;
  // Integers beyond 2048 are spaced 2 apart: 2049 and 2051 tie, to even.
  expect_close(Tensor({2049, 2051}).cast(f16), {2048, 2052}, 0);
  EXPECT_TRUE(std::isnan(values(Tensor({kNaN}).cast(f16))[0]));
  EXPECT_EQ(values(Tensor({-1e6}).cast(f16))[0], -std::numeric_limits<double>::infinity());
}

TEST_P(Elementwise, CastToBFloat16RoundsToNearestEven) {
  // Reference values from torch's float32 -> bfloat16 conversion.
  const std::vector<double> in = {1 + std::ldexp(1, -8),
                                  1 + 3 * std::ldexp(1, -8),
                                  0.1,
                                  3.14159,
                                  -2.5,
                                  1 + std::ldexp(1, -8) + std::ldexp(1, -20),
                                  3e38};
  const std::vector<double> expected = {1.0,  1.015625,  0.10009765625,       3.140625,
                                        -2.5, 1.0078125, 3.00405527047391e+38};
  std::vector<double> got = values(Tensor(in, {-1}, f32).cast(bf16));
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], expected[i]) << "element " << i;
  expect_close(Tensor({257, 259}).cast(bf16), {256, 260}, 0);
  EXPECT_TRUE(std::isnan(values(Tensor({kNaN}).cast(bf16))[0]));
}

TEST_P(Elementwise, CastIsDifferentiableBetweenFloats) {
  Tensor x = randn({3}, f64).requires_grad_();
  std::vector<Tensor> g = grad((x.cast(f32) * 2).sum(), {x});
  EXPECT_EQ(g[0].dtype(), f64);
  expect_close(g[0], {2, 2, 2});
}

// ---- zero-size tensors ----

TEST_P(Elementwise, ZeroSizeTensorsFlowThrough) {
  Tensor e = zeros({0, 3});
  EXPECT_EQ((e + 1).shape(), (Shape{0, 3}));
  EXPECT_EQ((e + zeros({3})).shape(), (Shape{0, 3}));
  EXPECT_EQ(exp(e).shape(), (Shape{0, 3}));
  EXPECT_EQ((e > 0).shape(), (Shape{0, 3}));
  EXPECT_EQ(where(e > 0, e, 1).shape(), (Shape{0, 3}));
  EXPECT_EQ(e.cast(i64).shape(), (Shape{0, 3}));
  EXPECT_TRUE((e * 2).to_vector<float>().empty());
  EXPECT_EQ((zeros({2, 1}) * zeros({0})).shape(), (Shape{2, 0}));
  EXPECT_EQ((Tensor({1, 2}, {2, 1}) / zeros({0}, i64)).shape(), (Shape{2, 0}));
}

}  // namespace crisp::testing
