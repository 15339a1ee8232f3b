// Shared test helpers: the backend-parameterized fixture, value and gradient checks.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "crisp/crisp.h"

namespace crisp::testing {

// Every conformance test runs once per backend; backends absent here are skipped.
class BackendTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "cuda") {
      if (!Backend::cuda_available()) GTEST_SKIP() << "no CUDA device";
      scope_.emplace(Backend::cuda());
    } else {
      scope_.emplace(Backend::cpu());
    }
    manual_seed(::testing::UnitTest::GetInstance()->random_seed() + 17);
  }
  std::optional<BackendScope> scope_;
};

// Values of t as doubles.
inline std::vector<double> values(const Tensor& t) { return t.to_vector<double>(); }

inline void expect_close(const Tensor& t, const std::vector<double>& expected, double tol = 1e-5,
                         const char* what = "") {
  std::vector<double> got = values(t);
  ASSERT_EQ(got.size(), expected.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(expected[i])) {
      EXPECT_TRUE(std::isnan(got[i])) << what << " at " << i;
      continue;
    }
    EXPECT_NEAR(got[i], expected[i], tol * (1 + std::abs(expected[i]))) << what << " at " << i;
  }
}

inline void expect_tensors_close(const Tensor& a, const Tensor& b, double tol = 1e-5,
                                 const char* what = "") {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  expect_close(a, values(b), tol, what);
}

// Checks autograd's gradients of f at inputs against float64 central finite differences of a
// random projection of f's output. Inputs are converted to float64.
inline void check_gradients(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                            std::vector<Tensor> inputs, double eps = 1e-6, double tol = 1e-6) {
  for (Tensor& x : inputs) x = x.cast(f64).detach().requires_grad_();
  Tensor out = f(inputs);
  ASSERT_TRUE(out.requires_grad()) << "output does not require grad";
  std::vector<double> w = values(randn(out.shape(), f64));
  Tensor wt = Tensor(w, out.shape(), f64).to(out.backend());
  std::vector<Tensor> analytic = grad(out, inputs, wt);
  auto project = [&](const std::vector<Tensor>& in) {
    NoGrad ng;
    std::vector<double> o = values(f(in));
    double s = 0;
    for (size_t i = 0; i < o.size(); ++i) s += o[i] * w[i];
    return s;
  };
  for (size_t k = 0; k < inputs.size(); ++k) {
    std::vector<double> base = values(inputs[k]);
    std::vector<double> ga = values(analytic[k]);
    ASSERT_EQ(ga.size(), base.size());
    for (size_t j = 0; j < base.size(); ++j) {
      std::vector<Tensor> in = inputs;
      std::vector<double> v = base;
      v[j] = base[j] + eps;
      in[k] = Tensor(v, inputs[k].shape(), f64);
      const double up = project(in);
      v[j] = base[j] - eps;
      in[k] = Tensor(v, inputs[k].shape(), f64);
      const double down = project(in);
      const double numeric = (up - down) / (2 * eps);
      EXPECT_NEAR(ga[j], numeric, tol * (1 + std::abs(numeric)))
          << "input " << k << " element " << j;
    }
  }
}

}  // namespace crisp::testing

// Asserts that stmt throws crisp::Error whose message contains `text` and whose traceback starts
// at this file and line.
#define EXPECT_CRISP_ERROR(stmt, text)                                                   \
  do {                                                                                   \
    const int crisp_line_ = __LINE__;                                                    \
    try {                                                                                \
      stmt;                                                                              \
      ADD_FAILURE() << "expected crisp::Error from " #stmt;                              \
    } catch (const crisp::Error& e) {                                                    \
      EXPECT_NE(std::string(e.message()).find(text), std::string::npos) << e.what();     \
      ASSERT_FALSE(e.trace().empty()) << e.what();                                       \
      EXPECT_NE(std::string(e.trace().front().file).find(__FILE__), std::string::npos)   \
          << e.what();                                                                   \
      EXPECT_EQ(e.trace().front().line, static_cast<uint32_t>(crisp_line_)) << e.what(); \
    }                                                                                    \
  } while (0)
