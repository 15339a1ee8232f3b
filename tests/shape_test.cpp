// Shape ops: concat, stack, split, chunk, pad, flip, repeat, tril, triu — values, views,
// gradients and argument checks.
#include "core/tensor_impl.h"  // to check that views share storage
#include "testing.h"

namespace crisp::testing {

class ShapeOps : public BackendTest {};
INSTANTIATE_TEST_SUITE_P(Backends, ShapeOps, ::testing::Values("cpu", "cuda"),
                         [](const auto& info) { return info.param; });

namespace {

// Values of a row-major [rows, cols] tensor as a nested index helper.
std::vector<double> iota_values(int64_t n, double start = 0) {
  std::vector<double> v(static_cast<size_t>(n));
  for (size_t i = 0; i < v.size(); ++i) v[i] = start + static_cast<double>(i);
  return v;
}

Tensor iota(Shape shape, DType dtype = f32, double start = 0) {
  return Tensor(iota_values(numel_of(shape), start), shape, dtype);
}

bool shares_storage(const Tensor& a, const Tensor& b) {
  return a.impl()->array.storage == b.impl()->array.storage;
}

// A reference for pad with torch's argument order, as a naive loop over a 2-d tensor.
std::vector<double> pad2d_reference(const std::vector<double>& x, int64_t rows, int64_t cols,
                                    int64_t left, int64_t right, int64_t top, int64_t bottom,
                                    bool reflect, double value) {
  std::vector<double> out;
  auto src = [&](int64_t i, int64_t n) -> int64_t {
    if (i >= 0 && i < n) return i;
    if (!reflect) return -1;
    return i < 0 ? -i : 2 * (n - 1) - i;
  };
  for (int64_t r = 0; r < rows + top + bottom; ++r) {
    for (int64_t c = 0; c < cols + left + right; ++c) {
      const int64_t sr = src(r - top, rows), sc = src(c - left, cols);
      out.push_back(sr < 0 || sc < 0 ? value : x[static_cast<size_t>(sr * cols + sc)]);
    }
  }
  return out;
}

}  // namespace

TEST_P(ShapeOps, ConcatJoinsAlongAnyAxis) {
  Tensor a = iota({2, 3}), b = iota({2, 1}, f32, 100), c = iota({2, 2}, f32, 200);
  Tensor y = concat({a, b, c}, 1);
  EXPECT_EQ(y.shape(), (Shape{2, 6}));
  expect_close(y, {0, 1, 2, 100, 200, 201, 3, 4, 5, 101, 202, 203});
  Tensor z = concat({a, iota({1, 3}, f32, 10)}, -2);
  EXPECT_EQ(z.shape(), (Shape{3, 3}));
  expect_close(z, {0, 1, 2, 3, 4, 5, 10, 11, 12});
}

TEST_P(ShapeOps, ConcatWorksForEveryDtypeAndStridedInputs) {
  for (DType dt : {bool_, u8, i32, i64, f16, bf16, f32, f64}) {
    Tensor a = iota({2, 2}, f32, 1).cast(dt);
    Tensor b = iota({2, 2}, f32, 5).cast(dt).transpose();  // strided input
    std::vector<double> expected = dt == bool_ ? std::vector<double>{1, 1, 1, 1, 1, 1, 1, 1}
                                               : std::vector<double>{1, 2, 5, 7, 3, 4, 6, 8};
    Tensor y = concat({a, b}, 1);
    EXPECT_EQ(y.dtype(), dt);
    expect_close(y, expected, 1e-6, dtype_name(dt).data());
  }
}

TEST_P(ShapeOps, ConcatAcceptsEmptyPiecesAndOneInput) {
  Tensor a = iota({2, 0}), b = iota({2, 2});
  expect_close(concat({a, b, a}, 1), {0, 1, 2, 3});
  EXPECT_EQ(concat({a, a}, 1).shape(), (Shape{2, 0}));
  expect_close(concat({b}), {0, 1, 2, 3});
}

TEST_P(ShapeOps, ConcatGradientMatchesFiniteDifferences) {
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return concat({in[0], in[1], in[2]}, 1) * 1.5;
      },
      {randn({2, 3}), randn({2, 1}), randn({2, 2})});
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return concat({in[0], in[1]}, 0);
      },
      {randn({1, 3}), randn({2, 3})});
}

TEST_P(ShapeOps, ConcatRejectsMismatches) {
  Tensor a = zeros({2, 3});
  EXPECT_CRISP_ERROR(concat({a, zeros({2, 3}, f64)}), "dtype mismatch: tensor 0 is float32");
  EXPECT_CRISP_ERROR(concat({a, zeros({3, 3})}, 1), "differ outside axis 1");
  EXPECT_CRISP_ERROR(concat({a, zeros({2, 3, 1})}), "differ outside axis 0");
  EXPECT_CRISP_ERROR(concat({a, a}, 2), "axis 2 is out of range for a tensor with 2 dimensions");
  EXPECT_CRISP_ERROR(concat({}), "needs at least one tensor");
  EXPECT_CRISP_ERROR(concat({a, Tensor()}), "tensor 1 is undefined");
  EXPECT_CRISP_ERROR(concat({scalar(1), scalar(2)}), "cannot concatenate 0-d tensors");
}

TEST_P(ShapeOps, StackAddsAnAxis) {
  Tensor a = iota({2, 2}), b = iota({2, 2}, f32, 10);
  Tensor y = stack({a, b});
  EXPECT_EQ(y.shape(), (Shape{2, 2, 2}));
  expect_close(y, {0, 1, 2, 3, 10, 11, 12, 13});
  Tensor z = stack({a, b}, -1);
  EXPECT_EQ(z.shape(), (Shape{2, 2, 2}));
  expect_close(z, {0, 10, 1, 11, 2, 12, 3, 13});
  Tensor s = stack({scalar(1), scalar(2), scalar(3)});
  EXPECT_EQ(s.shape(), (Shape{3}));
  expect_close(s, {1, 2, 3});
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return stack({in[0], in[1]}, 1);
      },
      {randn({2, 3}), randn({2, 3})});
  EXPECT_CRISP_ERROR(stack({a, iota({2, 3})}), "shapes [2, 2] (tensor 0) and [2, 3] (tensor 1)");
  EXPECT_CRISP_ERROR(stack({a, b}, 3), "axis 3 is out of range");
}

TEST_P(ShapeOps, SplitReturnsViewsOfTheGivenSizes) {
  Tensor x = iota({2, 5});
  std::vector<Tensor> parts = split(x, {2, 0, 3}, 1);
  ASSERT_EQ(parts.size(), 3u);
  EXPECT_EQ(parts[0].shape(), (Shape{2, 2}));
  EXPECT_EQ(parts[1].shape(), (Shape{2, 0}));
  EXPECT_EQ(parts[2].shape(), (Shape{2, 3}));
  expect_close(parts[0], {0, 1, 5, 6});
  expect_close(parts[2], {2, 3, 4, 7, 8, 9});
  for (const Tensor& p : parts) EXPECT_TRUE(shares_storage(p, x));
  // Value semantics survive: updating a piece leaves the source alone.
  Tensor p = parts[0];
  p += 1;
  expect_close(x, iota_values(10));
}

TEST_P(ShapeOps, SplitGradientPadsBack) {
  check_gradients(
      [](const std::vector<Tensor>& in) {
        std::vector<Tensor> p = split(in[0], {1, 2, 1}, 0);
        return concat({p[2] * 2, p[0] * p[0]}, 0) + p[1].sum(0, true);
      },
      {randn({4, 3})});
  // Only one piece used: the others get zeros.
  Tensor x = randn({5}).requires_grad_();
  split(x, {2, 3})[1].sum().backward();
  expect_close(x.grad(), {0, 0, 1, 1, 1});
}

TEST_P(ShapeOps, SplitRejectsBadSizes) {
  Tensor x = zeros({2, 5});
  EXPECT_CRISP_ERROR(split(x, {2, 2}, 1),
                     "sizes [2, 2] sum to 4 but axis 1 of shape [2, 5] has size 5");
  EXPECT_CRISP_ERROR(split(x, {6, -1}, 1), "negative size -1");
  EXPECT_CRISP_ERROR(split(x, {2}, -3), "axis -3 is out of range");
  EXPECT_CRISP_ERROR(split(scalar(1), {1}), "cannot split a 0-d tensor");
}

TEST_P(ShapeOps, ChunkFollowsTorchChunk) {
  auto sizes = [](const std::vector<Tensor>& parts, int64_t axis) {
    std::vector<int64_t> s;
    for (const Tensor& p : parts) s.push_back(p.shape()[static_cast<size_t>(axis)]);
    return s;
  };
  // Reference sizes from torch.chunk.
  EXPECT_EQ(sizes(chunk(zeros({5}), 4), 0), (std::vector<int64_t>{2, 2, 1}));
  EXPECT_EQ(sizes(chunk(zeros({6}), 4), 0), (std::vector<int64_t>{2, 2, 2}));
  EXPECT_EQ(sizes(chunk(zeros({2}), 4), 0), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(sizes(chunk(zeros({7}), 3), 0), (std::vector<int64_t>{3, 3, 1}));
  EXPECT_EQ(sizes(chunk(zeros({0}), 3), 0), (std::vector<int64_t>{0, 0, 0}));
  EXPECT_EQ(sizes(chunk(zeros({3, 0}), 2, 1), 1), (std::vector<int64_t>{0, 0}));
  Tensor x = iota({3, 4});
  std::vector<Tensor> parts = chunk(x, 2, -1);
  ASSERT_EQ(parts.size(), 2u);
  expect_close(parts[1], {2, 3, 6, 7, 10, 11});
  EXPECT_TRUE(shares_storage(parts[1], x));
  check_gradients(
      [](const std::vector<Tensor>& in) {
        std::vector<Tensor> p = chunk(in[0], 3, 1);
        return p[0] * p[1] + p[2].exp();
      },
      {randn({2, 3})});
  EXPECT_CRISP_ERROR(chunk(x, 0), "number of chunks must be positive, got 0");
  EXPECT_CRISP_ERROR(chunk(x, 2, 2), "axis 2 is out of range");
}

TEST_P(ShapeOps, ConstantPadMatchesReference) {
  std::vector<double> xv = iota_values(6, 1);
  Tensor x(xv, {2, 3}, f32);
  Tensor y = pad(x, {1, 2, 0, 1}, "constant", -1);  // last axis (1, 2), first axis (0, 1)
  EXPECT_EQ(y.shape(), (Shape{3, 6}));
  expect_close(y, pad2d_reference(xv, 2, 3, 1, 2, 0, 1, false, -1));
  // Only the last axis.
  expect_close(pad(x, {2, 0}), pad2d_reference(xv, 2, 3, 2, 0, 0, 0, false, 0));
  // Negative pads crop, as in torch.
  Tensor c = pad(x, {-1, 0, 0, -1});
  EXPECT_EQ(c.shape(), (Shape{1, 2}));
  expect_close(c, {2, 3});
  // Every dtype, with a strided input.
  for (DType dt : {bool_, u8, i32, i64, f16, bf16, f32, f64}) {
    Tensor xt = x.cast(dt).transpose();  // [3, 2]
    Tensor yt = pad(xt, {0, 1}, "constant", 7);
    EXPECT_EQ(yt.dtype(), dt);
    std::vector<double> expected = {1, 4, 7, 2, 5, 7, 3, 6, 7};
    if (dt == bool_) expected.assign(9, 1);
    expect_close(yt, expected, 1e-6, dtype_name(dt).data());
  }
}

TEST_P(ShapeOps, ReflectPadMatchesReference) {
  std::vector<double> xv = iota_values(12, 1);
  Tensor x(xv, {3, 4}, f64);
  Tensor y = pad(x, {3, 2, 2, 1}, "reflect");
  EXPECT_EQ(y.shape(), (Shape{6, 9}));
  expect_close(y, pad2d_reference(xv, 3, 4, 3, 2, 2, 1, true, 0));
  // torch.nn.functional.pad(torch.arange(1., 5.), (2, 1), mode="reflect")
  expect_close(pad(Tensor({1.f, 2.f, 3.f, 4.f}), {2, 1}, "reflect"), {3, 2, 1, 2, 3, 4, 3});
  // Batched: the leading axis is not padded.
  Tensor b = pad(iota({2, 1, 3}), {1, 1}, "reflect");
  EXPECT_EQ(b.shape(), (Shape{2, 1, 5}));
  expect_close(b, {1, 0, 1, 2, 1, 4, 3, 4, 5, 4});
}

TEST_P(ShapeOps, PadGradientMatchesFiniteDifferences) {
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return pad(in[0], {1, 2, 2, 0}, "constant", 3);
      },
      {randn({2, 3})});
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return pad(in[0], {-1, 1});
      },
      {randn({2, 3})});
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return pad(in[0], {3, 2, 1, 2}, "reflect");
      },
      {randn({3, 4})});
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return pad(in[0], {1, 1, 1, 1}, "reflect");
      },
      {randn({2, 2, 3})});
}

TEST_P(ShapeOps, PadRejectsBadArguments) {
  Tensor x = zeros({2, 3});
  EXPECT_CRISP_ERROR(pad(x, {1, 1, 1}), "3 pad values for a tensor with 2 dimensions");
  EXPECT_CRISP_ERROR(pad(x, {1, 1, 1, 1, 1, 1}), "6 pad values for a tensor with 2 dimensions");
  EXPECT_CRISP_ERROR(pad(x, {3, 0}, "reflect"),
                     "reflect padding (3, 0) of axis 1 must be non-negative and less than its "
                     "size 3");
  EXPECT_CRISP_ERROR(pad(x, {0, 0, 0, 2}, "reflect"), "of axis 0 must be");
  EXPECT_CRISP_ERROR(pad(x, {-1, 0}, "reflect"), "must be non-negative");
  EXPECT_CRISP_ERROR(pad(x, {-2, -2}), "negative size -1");
  EXPECT_CRISP_ERROR(pad(x, {1, 1}, "circular"), "mode must be \"constant\" or \"reflect\"");
}

TEST_P(ShapeOps, FlipIsAViewWithReversedOrder) {
  Tensor x = iota({2, 3});
  Tensor y = flip(x, {1});
  EXPECT_TRUE(shares_storage(x, y));
  expect_close(y, {2, 1, 0, 5, 4, 3});
  expect_close(flip(x, {0, -1}), {5, 4, 3, 2, 1, 0});
  expect_close(flip(x, {}), {5, 4, 3, 2, 1, 0});  // all axes
  expect_close(flip(flip(x, {0}), {0}), iota_values(6));
  // Flipped views feed other ops correctly.
  expect_close(flip(x, {1}) + x, {2, 2, 2, 8, 8, 8});
  expect_close(flip(x, {1}).reshape({6}), {2, 1, 0, 5, 4, 3});
  expect_close(concat({flip(x, {0}), x}, 1), {3, 4, 5, 0, 1, 2, 0, 1, 2, 3, 4, 5});
  expect_close(flip(x, {0, 1}).sum(1), {12, 3});
  expect_close(matmul(flip(x, {1}), iota({3, 1})), {1, 10});  // [2,1,0].[0,1,2], [5,4,3].[0,1,2]
  EXPECT_EQ(flip(zeros({0, 2}), {0}).shape(), (Shape{0, 2}));
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return flip(in[0], {0, 2}) * in[0];
      },
      {randn({2, 3, 2})});
  EXPECT_CRISP_ERROR(flip(x, {2}), "axis 2 is out of range");
  EXPECT_CRISP_ERROR(flip(x, {1, -1}), "axis -1 is repeated");
}

TEST_P(ShapeOps, RepeatTilesLikeTorch) {
  Tensor x({1, 2, 3});
  Tensor y = repeat(x, {2, 2});
  EXPECT_EQ(y.shape(), (Shape{2, 6}));
  // torch.tensor([1, 2, 3]).repeat(2, 2)
  EXPECT_EQ(y.to_vector<int64_t>(), (std::vector<int64_t>{1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3}));
  Tensor m = iota({2, 2});
  expect_close(repeat(m, {1, 3}), {0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3});
  expect_close(repeat(m, {2, 1}), {0, 1, 2, 3, 0, 1, 2, 3});
  EXPECT_EQ(repeat(m, {0, 1}).shape(), (Shape{0, 2}));
  EXPECT_EQ(repeat(scalar(5), {3}).shape(), (Shape{3}));
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return repeat(in[0], {2, 1, 3});
      },
      {randn({2, 2})});
  EXPECT_CRISP_ERROR(repeat(m, {2}), "1 repeats for a tensor with 2 dimensions");
  EXPECT_CRISP_ERROR(repeat(m, {2, -1}), "negative repeat count -1");
}

TEST_P(ShapeOps, TrilTriuKeepTheirTriangles) {
  Tensor x = iota({3, 4}, f32, 1);
  expect_close(tril(x), {1, 0, 0, 0, 5, 6, 0, 0, 9, 10, 11, 0});
  expect_close(triu(x), {1, 2, 3, 4, 0, 6, 7, 8, 0, 0, 11, 12});
  expect_close(tril(x, 1), {1, 2, 0, 0, 5, 6, 7, 0, 9, 10, 11, 12});
  expect_close(tril(x, -1), {0, 0, 0, 0, 5, 0, 0, 0, 9, 10, 0, 0});
  expect_close(triu(x, 2), {0, 0, 3, 4, 0, 0, 0, 8, 0, 0, 0, 0});
  expect_close(triu(x, -5), iota_values(12, 1));
  // Batched and strided: every matrix of the batch, of any dtype.
  Tensor b = iota({2, 2, 2}, f32, 1).transpose(0, 2);  // b[i, j, k] = 1 + 4k + 2j + i
  expect_close(triu(b), {1, 5, 0, 7, 2, 6, 0, 8});
  for (DType dt : {bool_, u8, i32, i64, f16, bf16, f64}) {
    Tensor t = tril(ones({2, 3, 3}, dt));
    EXPECT_EQ(t.dtype(), dt);
    expect_close(t, {1, 0, 0, 1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1}, 1e-6,
                 dtype_name(dt).data());
  }
  check_gradients([](const std::vector<Tensor>& in) { return tril(in[0], 1) + triu(in[0]); },
                  {randn({2, 3, 3})});
  EXPECT_CRISP_ERROR(tril(zeros({3})), "needs a tensor of at least 2 dimensions, got shape [3]");
  EXPECT_CRISP_ERROR(triu(scalar(1)), "needs a tensor of at least 2 dimensions");
}

TEST_P(ShapeOps, ZeroSizeTensorsFlowThroughLayoutOps) {
  Tensor e = zeros({0, 3});
  EXPECT_EQ(pad(e, {1, 1}).shape(), (Shape{0, 5}));
  EXPECT_EQ(pad(e, {0, 0, 1, 1}).shape(), (Shape{2, 3}));
  expect_close(pad(e, {0, 0, 1, 0}, "constant", 2), {2, 2, 2});
  EXPECT_EQ(tril(e).shape(), (Shape{0, 3}));
  EXPECT_EQ(concat({e, e}).shape(), (Shape{0, 3}));
  EXPECT_EQ(stack({e, e}).shape(), (Shape{2, 0, 3}));
  EXPECT_EQ(repeat(e, {2, 2}).shape(), (Shape{0, 6}));
}

}  // namespace crisp::testing
