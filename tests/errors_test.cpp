// Bad input across the API: each class of mistake throws crisp::Error with a clear message
// traced to the caller's line; errors met while computing are raised on read; zero-size
// tensors are valid input, not mistakes.
#include <functional>
#include <limits>

#include "testing.h"

namespace crisp::testing {

class Errors : public BackendTest {};
INSTANTIATE_TEST_SUITE_P(Backends, Errors, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

namespace {

// Runs read, which must throw crisp::Error containing text and traced to file:line (the line
// that created the failing tensor, not the line that read it).
void expect_raised_from(const std::function<void()>& read, const std::string& text, uint32_t line) {
  try {
    read();
    ADD_FAILURE() << "expected crisp::Error containing \"" << text << "\"";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find(text), std::string::npos) << e.what();
    ASSERT_FALSE(e.trace().empty()) << e.what();
    EXPECT_NE(std::string(e.trace().front().file).find(__FILE__), std::string::npos) << e.what();
    EXPECT_EQ(e.trace().front().line, line) << e.what();
  }
}

}  // namespace

TEST_P(Errors, WrongShapeNamesBothShapes) {
  Tensor a = zeros({2, 3}), b = zeros({4});
  EXPECT_CRISP_ERROR(a + b, "add: shapes [2, 3] and [4] cannot be broadcast together");
  EXPECT_CRISP_ERROR(a * zeros({3, 2}), "shapes [2, 3] and [3, 2] cannot be broadcast");
  EXPECT_CRISP_ERROR(where(zeros({2, 3}) > 0, a, b), "cannot be broadcast together");
  EXPECT_CRISP_ERROR(a.reshape({4}), "reshape: cannot reshape [2, 3] (6 elements) into [4]");
  EXPECT_CRISP_ERROR(a.reshape({-1, 4}), "cannot reshape [2, 3] into [-1, 4]");
  EXPECT_CRISP_ERROR(a.expand({2, 4}), "expand: cannot expand [2, 3] to [2, 4]");
  EXPECT_CRISP_ERROR(a.permute({1, 0, 2}), "permutation of 3 axes for a tensor with 2 dimensions");
  EXPECT_CRISP_ERROR(matmul(a, zeros({2, 3})), "matmul: shapes [2, 3] and [2, 3] do not contract");
  EXPECT_CRISP_ERROR(concat({a, zeros({3, 2})}), "concat: shapes [2, 3] (tensor 0) and [3, 2]");
  EXPECT_CRISP_ERROR(stack({a, b}), "stack: shapes [2, 3] (tensor 0) and [4] (tensor 1) differ");
  EXPECT_CRISP_ERROR(Tensor({1.f, 2.f, 3.f}, {2, 2}), "3 values do not fill shape [2, 2]");
  EXPECT_CRISP_ERROR(tril(b), "tril: needs a tensor of at least 2 dimensions, got shape [4]");
}

TEST_P(Errors, WrongDtypeNamesTheDtypes) {
  Tensor f = zeros({3}), i = zeros({3}, i64), p = zeros({3}, bool_);
  EXPECT_CRISP_ERROR(f + i, "add: dtype mismatch: float32 and int64");
  EXPECT_CRISP_ERROR(maximum(f.cast(f64), f), "dtype mismatch: float64 and float32");
  EXPECT_CRISP_ERROR(where(f, f, f), "where: condition must be bool, got float32");
  EXPECT_CRISP_ERROR(where(p, f, i), "dtype mismatch: float32 and int64");
  EXPECT_CRISP_ERROR(exp(i), "exp: expected a floating-point tensor, got int64");
  EXPECT_CRISP_ERROR(sigmoid(p), "expected a floating-point tensor, got bool");
  EXPECT_CRISP_ERROR(floor(i), "floor: expected a floating-point tensor, got int64");
  EXPECT_CRISP_ERROR(-p, "neg: not defined for bool tensors");
  EXPECT_CRISP_ERROR(p + p, "add: arithmetic is not defined for bool tensors");
  EXPECT_CRISP_ERROR(concat({f, i}),
                     "concat: dtype mismatch: tensor 0 is float32 but tensor 1 "
                     "is int64");
  EXPECT_CRISP_ERROR(index_select(f, 0, zeros({1})), "index must be int64, got float32");
  EXPECT_CRISP_ERROR(gelu(f, "fast"), "gelu: approximate must be \"none\" or \"tanh\"");
}

TEST_P(Errors, BadAxisNamesTheAxisAndRank) {
  Tensor x = zeros({2, 3});
  EXPECT_CRISP_ERROR(x.sum(2), "sum: axis 2 is out of range for a tensor with 2 dimensions");
  EXPECT_CRISP_ERROR(x.sum(-3), "axis -3 is out of range for a tensor with 2 dimensions");
  EXPECT_CRISP_ERROR((x.sum({0, 0})), "sum: axis 0 is repeated");
  EXPECT_CRISP_ERROR(x.transpose(0, 2), "transpose: axis 2 is out of range");
  EXPECT_CRISP_ERROR(x.size(5), "size: axis 5 is out of range");
  EXPECT_CRISP_ERROR(x.unsqueeze(4), "unsqueeze: axis 4 is out of range");
  EXPECT_CRISP_ERROR(x.flatten(1, 0), "flatten: start axis 1 is after end axis 0");
  EXPECT_CRISP_ERROR(x.squeeze(0), "squeeze: cannot squeeze axis 0 of size 2");
  EXPECT_CRISP_ERROR(x.permute({0, 0}), "permute: axis 0 appears twice in the permutation");
  EXPECT_CRISP_ERROR(concat({x, x}, 2), "concat: axis 2 is out of range");
  EXPECT_CRISP_ERROR(split(x, {1, 1}, -3), "split: axis -3 is out of range");
  EXPECT_CRISP_ERROR(flip(x, {3}), "flip: axis 3 is out of range");
  EXPECT_CRISP_ERROR(x.argmax(2), "axis 2 is out of range");
}

TEST_P(Errors, BadIndexNamesTheIndexAndSize) {
  Tensor x = zeros({3, 4});
  EXPECT_CRISP_ERROR(x[3], "index 3 is out of range for axis 0 of size 3");
  EXPECT_CRISP_ERROR(x[-4], "index -4 is out of range for axis 0 of size 3");
  EXPECT_CRISP_ERROR((x[0, 4]), "index 4 is out of range for axis 1 of size 4");
  EXPECT_CRISP_ERROR((x[0, 0, 0]), "too many indices");
  EXPECT_CRISP_ERROR(x[Slice(0, 2, 0)], "slice step must be positive, got 0");
  EXPECT_CRISP_ERROR(x[Permute(0, 0)], "is not a permutation");
  EXPECT_CRISP_ERROR(x[zeros({3})], "index tensors must be int64 or bool, got float32");
  EXPECT_CRISP_ERROR(split(x, {2, 2}), "split: sizes [2, 2] sum to 4 but axis 0");
  EXPECT_CRISP_ERROR(pad(x, {5, 0}, "reflect"), "pad: reflect padding (5, 0) of axis 1");
  EXPECT_CRISP_ERROR(pad(x, {1}), "pad: 1 pad values for a tensor with 2 dimensions");
  EXPECT_CRISP_ERROR(repeat(x, {2, -1}), "repeat: negative repeat count -1");
  EXPECT_CRISP_ERROR(chunk(x, -2), "chunk: number of chunks must be positive, got -2");
}

TEST_P(Errors, EmptyAndUndefinedTensors) {
  Tensor undefined;
  EXPECT_CRISP_ERROR(undefined + 1, "add: input is an undefined tensor");
  EXPECT_CRISP_ERROR(exp(undefined), "exp: input is an undefined tensor");
  EXPECT_CRISP_ERROR(undefined.item<float>(), "item: input is an undefined tensor");
  EXPECT_CRISP_ERROR(concat({}), "concat: needs at least one tensor");
  EXPECT_CRISP_ERROR(stack({}), "stack: needs at least one tensor");
  EXPECT_CRISP_ERROR(zeros({0}).item<float>(),
                     "item() needs a tensor with one element, got "
                     "shape [0]");
  EXPECT_CRISP_ERROR(zeros({2}).item<float>(), "got shape [2]");
  EXPECT_CRISP_ERROR(zeros({0, 3}).max(0), "max: cannot reduce axis 0 of size 0");
  EXPECT_CRISP_ERROR(zeros({0}).argmax(), "cannot take the position in an empty tensor");
}

TEST_P(Errors, ImpossibleSizesAreRejected) {
  EXPECT_CRISP_ERROR(zeros({2, -1}), "negative dimension in shape [2, -1]");
  EXPECT_CRISP_ERROR(zeros({3}).reshape({-1, -1}), "only one dimension can be -1");
  EXPECT_CRISP_ERROR(zeros({0, 3}).reshape({-1, 0}), "cannot reshape [0, 3] into [-1, 0]");
  EXPECT_CRISP_ERROR(zeros({3}).reshape({3, -2}), "negative dimension in shape [3, -2]");
  EXPECT_CRISP_ERROR(zeros({3}).expand({-2, 3}), "cannot expand to [-2, 3]");
  EXPECT_CRISP_ERROR(split(zeros({3}), {4, -1}), "split: negative size -1");
  EXPECT_CRISP_ERROR(pad(zeros({3}), {-2, -2}), "leaves axis 0 of size 3 with negative size -1");
  EXPECT_CRISP_ERROR(linspace(0, 1, -1), "count must be non-negative, got -1");
  const int64_t huge = int64_t{1} << 40;
  EXPECT_CRISP_ERROR(zeros({huge, huge}), "shape [1099511627776, 1099511627776] is too large");
}

TEST_P(Errors, AllocationFailureIsRaisedOnReadAndTheProcessGoesOn) {
  const int line = __LINE__ + 1;
  Tensor t = zeros({int64_t{1} << 45});  // 128 TiB: no allocator can give it
  try {
    t.wait();
    ADD_FAILURE() << "expected an allocation failure";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("out of memory"), std::string::npos) << e.what();
    ASSERT_FALSE(e.trace().empty());
    EXPECT_EQ(e.trace().front().line, static_cast<uint32_t>(line)) << e.what();
  }
  EXPECT_THROW((t + 1).sum().item<float>(), Error);
  expect_close(ones({3}) * 2, {2, 2, 2});
}

TEST_P(Errors, ZeroSizeTensorsFlowThroughElementwiseOpsAndReductions) {
  Tensor e = zeros({0, 3});
  EXPECT_EQ((e + 1).shape(), (Shape{0, 3}));
  EXPECT_EQ(exp(e * 2 - e).shape(), (Shape{0, 3}));
  EXPECT_EQ((e + ones({3})).shape(), (Shape{0, 3}));
  EXPECT_EQ((e < 1).shape(), (Shape{0, 3}));
  EXPECT_EQ(e.cast(i64).shape(), (Shape{0, 3}));
  EXPECT_TRUE((e + 1).to_vector<float>().empty());
  // Reductions over an empty axis give the reduction's identity.
  Tensor s = e.sum(0);
  EXPECT_EQ(s.shape(), (Shape{3}));
  expect_close(s, {0, 0, 0});
  EXPECT_EQ(e.sum(1).shape(), (Shape{0}));
  EXPECT_EQ(e.sum().item<float>(), 0.f);
  expect_close(e.prod(0), {1, 1, 1});
  EXPECT_TRUE(std::isnan(e.mean().item<float>()));
  EXPECT_EQ(e.max(1).shape(), (Shape{0}));  // nothing to reduce over the empty axis 0
  EXPECT_EQ(e.any().item<bool>(), false);
  EXPECT_EQ(e.all().item<bool>(), true);
  // Layout and linear algebra.
  EXPECT_EQ(e.reshape({3, 0}).shape(), (Shape{3, 0}));
  EXPECT_EQ(e.t().shape(), (Shape{3, 0}));
  expect_close(matmul(zeros({2, 0}), zeros({0, 3})), {0, 0, 0, 0, 0, 0});
  EXPECT_EQ(matmul(e, ones({3, 2})).shape(), (Shape{0, 2}));
  // Gradients through empty tensors are empty too.
  Tensor w = zeros({0, 3}, f64).requires_grad_();
  (w * 2).sum().backward();
  EXPECT_EQ(w.grad().shape(), (Shape{0, 3}));
}

TEST_P(Errors, ComputeErrorIsRaisedOnReadWithTheTraceOfTheCreatingLine) {
  Tensor a({4, 5, 6}), b({2, 0, 3});
  const uint32_t line = __LINE__ + 1;
  auto divide = [&] { return a / b; };  // does not throw: the zero is found while computing
  Tensor q = divide();
  EXPECT_EQ(q.shape(), (Shape{3}));
  const std::string text = "integer division by zero";
  expect_raised_from([&] { q.to_vector<int64_t>(); }, text, line);
  // A fault found on a device is raised once, at the next read there: each read below gets a
  // fresh one. On the CPU the error stays on q, so every read raises it.
  if (GetParam() == "cpu") expect_raised_from([&] { q.to_vector<int64_t>(); }, text, line);
  expect_raised_from([&] { divide().wait(); }, text, line);
  expect_raised_from([&] { divide().sum().item<int64_t>(); }, text, line);  // through a later op
  expect_raised_from([&] { (divide() * 2 + 1).wait(); }, text, line);
  // The process stays usable: other tensors, and the same inputs, still compute.
  EXPECT_EQ((a / Tensor({2, 1, 3})).to_vector<int64_t>(), (std::vector<int64_t>{2, 5, 2}));
  EXPECT_EQ((a + b).to_vector<int64_t>(), (std::vector<int64_t>{6, 5, 9}));
  EXPECT_EQ(a.to_vector<int64_t>(), (std::vector<int64_t>{4, 5, 6}));
}

TEST_P(Errors, OutOfRangeIndexFoundWhileComputingIsRaisedOnRead) {
  Tensor x({1.f, 2.f, 3.f});
  const uint32_t line = __LINE__ + 1;
  auto bad = [&] { return gather(x, 0, Tensor({0, 3})); };
  Tensor y = bad();
  EXPECT_EQ(y.shape(), (Shape{2}));
  expect_raised_from([&] { y.to_vector<float>(); }, "out of range", line);
  // Through later ops (on a fresh fault: a device raises one once).
  expect_raised_from([&] { (bad() + 1).sum().item<float>(); }, "out of range", line);
  expect_close(gather(x, 0, Tensor({2, 0})), {3, 1});
}

// Asking for a GPU that is not there names the asking line (no GPU here: any device; on a GPU
// machine: one out of range).
TEST(BackendErrors, CudaBackendErrorsNameTheCallersLine) {
  if (Backend::cuda_available())
    EXPECT_CRISP_ERROR(Backend::cuda(1000), "CUDA device 1000 is out of range");
  else
    EXPECT_CRISP_ERROR(Backend::cuda(), "CUDA");
}

}  // namespace crisp::testing
