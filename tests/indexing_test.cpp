// Indexing: x[...] views, indexed assignment, gather/scatter by index tensors, masks, one_hot.
#include "core/tensor_impl.h"
#include "testing.h"

namespace crisp::testing {

namespace {

// 0, 1, ..., n - 1 as float32 in shape.
Tensor iota(Shape shape) {
  return arange(0, static_cast<double>(numel_of(shape)), 1, f32).reshape(shape);
}

bool shares_storage(const Tensor& a, const Tensor& b) {
  return a.impl()->array.storage == b.impl()->array.storage;
}

// Reading t raises an error containing text whose trace starts at `line` of this file (where
// the failing op was written, not where it is read).
void expect_read_error(const Tensor& t, const std::string& text, int line) {
  try {
    t.to_vector<double>();
    ADD_FAILURE() << "expected an error on read";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find(text), std::string::npos) << e.what();
    ASSERT_FALSE(e.trace().empty());
    EXPECT_NE(std::string(e.trace().front().file).find(__FILE__), std::string::npos) << e.what();
    EXPECT_EQ(e.trace().front().line, static_cast<uint32_t>(line)) << e.what();
  }
}

}  // namespace

// ---- basic indexing ----

TEST_P(BackendTest, IndexingIntegersAndEllipsisPicksElementsRowsAndColumns) {
  Tensor m({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ((m[1, 2]).item<int64_t>(), 6);
  EXPECT_EQ((m[0, -1]).item<int64_t>(), 3);
  EXPECT_EQ((m[-1, 0]).item<int64_t>(), 4);
  EXPECT_EQ((m[1, 2]).shape(), Shape{});
  EXPECT_EQ(m[0].to_vector<int64_t>(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ((m[Ellipsis, 0]).to_vector<int64_t>(), (std::vector<int64_t>{1, 4}));
  EXPECT_EQ((m[Ellipsis, -1]).to_vector<int64_t>(), (std::vector<int64_t>{3, 6}));
  EXPECT_EQ((m[Ellipsis]).shape(), (Shape{2, 3}));
  EXPECT_EQ((m[1, Ellipsis, 2]).item<int64_t>(), 6);
}

TEST_P(BackendTest, BasicIndexingIsANoCopyView) {
  Tensor x = iota({3, 4});
  Tensor v = x[Slice(1, _), Slice(_, _, 2)];
  EXPECT_TRUE(shares_storage(v, x));
  EXPECT_EQ(v.shape(), (Shape{2, 2}));
  expect_close(v, {4, 6, 8, 10});
  EXPECT_TRUE(shares_storage(x[0, Permute(0)], x));
  EXPECT_TRUE(shares_storage(x[NewAxis, -1], x));
  EXPECT_TRUE(shares_storage(x[Permute(1, 0)][1], x));
  expect_close(x[Permute(1, 0)][1], {1, 5, 9});
}

TEST_P(BackendTest, SlicesClampLikePyTorch) {
  Tensor x = iota({5});
  expect_close(x[Slice(-10, 100)], {0, 1, 2, 3, 4});
  expect_close(x[Slice(-2, _)], {3, 4});
  expect_close(x[Slice(_, -3)], {0, 1});
  expect_close(x[Slice(1, _, 3)], {1, 4});
  expect_close(x[Slice(_, _, 2)], {0, 2, 4});
  EXPECT_EQ(x[Slice(3, 1)].shape(), (Shape{0}));
  EXPECT_EQ(x[Slice(7, _)].shape(), (Shape{0}));
  expect_close(x[Slice(1, 3)][Slice(1, _)], {2});
}

TEST_P(BackendTest, NewAxisAndPermuteReshapeTheView) {
  Tensor x = iota({2, 3, 4});
  Tensor p = x[Permute(0, 2, 1)];
  EXPECT_EQ(p.shape(), (Shape{2, 4, 3}));
  expect_tensors_close(p, x.permute({0, 2, 1}).contiguous());
  // Slice axis 0, then swap the remaining two.
  Tensor q = x[Slice(1, _), Permute(1, 0)];
  EXPECT_EQ(q.shape(), (Shape{1, 4, 3}));
  expect_close(q[0, 1], {13, 17, 21});
  // Permute covers only the axes it names; the rest stay in order.
  Tensor r = x[Permute(1, 0)];
  EXPECT_EQ(r.shape(), (Shape{3, 2, 4}));
  expect_close(r[2, 1], {20, 21, 22, 23});
  EXPECT_EQ((x[NewAxis, 0]).shape(), (Shape{1, 3, 4}));
  EXPECT_EQ((x[Ellipsis, NewAxis]).shape(), (Shape{2, 3, 4, 1}));
  EXPECT_EQ((x[0, NewAxis, Slice(_, _, 2), 1]).shape(), (Shape{1, 2}));
  expect_close(x[0, NewAxis, Slice(_, _, 2), 1], {1, 9});
  // Indexing a 0-d tensor with NewAxis.
  EXPECT_EQ(scalar(3.0)[NewAxis].shape(), (Shape{1}));
}

TEST_P(BackendTest, IndexingErrorsNameAxisIndexAndSize) {
  Tensor x = iota({2, 3});
  EXPECT_CRISP_ERROR((x[0, 3]), "index 3 is out of range for axis 1 of size 3");
  EXPECT_CRISP_ERROR(x[-3], "index -3 is out of range for axis 0 of size 2");
  EXPECT_CRISP_ERROR((x[0, 0, 0]),
                     "too many indices: 3 axes indexed on a tensor with 2 dimensions");
  EXPECT_CRISP_ERROR((x[Permute(0, 1, 2)]), "too many indices");
  EXPECT_CRISP_ERROR((x[Slice(_, _, 0)]), "slice step must be positive, got 0");
  EXPECT_CRISP_ERROR((x[Slice(_, _, -1)]), "slice step must be positive, got -1");
  EXPECT_CRISP_ERROR((x[Ellipsis, 0, Ellipsis]), "only one Ellipsis");
  EXPECT_CRISP_ERROR((x[Permute(1, 1)]), "Permute(1, 1) is not a permutation of 2 axes");
  Tensor i({0, 1});
  EXPECT_CRISP_ERROR((x[i, i]), "only one tensor index is supported, got 2");
  EXPECT_CRISP_ERROR((x[Tensor({0.f, 1.f})]), "index tensors must be int64 or bool, got float32");
  EXPECT_CRISP_ERROR((x[Tensor({true, false, true})]),
                     "mask of shape [3] does not match the indexed axes [2]");
}

// ---- tensor indices ----

TEST_P(BackendTest, IntegerTensorIndexGathersAlongItsAxis) {
  Tensor x = iota({3, 3});
  expect_close(x[Tensor({2, 0})], {6, 7, 8, 0, 1, 2});
  Tensor cols = x[Ellipsis, Tensor({-1, 0})];
  EXPECT_EQ(cols.shape(), (Shape{3, 2}));
  expect_close(cols, {2, 0, 5, 3, 8, 6});
  Tensor grid = x[Tensor({0, 1, 1, 2}, {2, 2})];
  EXPECT_EQ(grid.shape(), (Shape{2, 2, 3}));
  expect_close(grid, {0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7, 8});
  Tensor picked = x[1, Tensor({2, 2, 0})];
  expect_close(picked, {5, 5, 3});
  EXPECT_EQ((x[Tensor(std::vector<int64_t>{1}, Shape{})]).shape(), (Shape{3}));
}

TEST_P(BackendTest, BoolMaskSelectsWhereTrue) {
  Tensor x = iota({3, 3});
  Tensor all = x[x > 4.f];
  EXPECT_EQ(all.shape(), (Shape{4}));
  expect_close(all, {5, 6, 7, 8});
  Tensor rows = x[Tensor({true, false, true})];
  EXPECT_EQ(rows.shape(), (Shape{2, 3}));
  expect_close(rows, {0, 1, 2, 6, 7, 8});
  Tensor cols = x[Ellipsis, Tensor({false, true, true})];
  expect_close(cols, {1, 2, 4, 5, 7, 8});
  EXPECT_EQ(x[x > 100.f].shape(), (Shape{0}));
}

TEST_P(BackendTest, TensorIndexOutOfRangeIsRaisedOnReadAtTheIndexingLine) {
  Tensor x = iota({5});
  const int line = __LINE__ + 1;
  Tensor y = x[Tensor({1, 7})];
  expect_read_error(y, "index 7 is out of range for axis 0 of size 5", line);
  const int line2 = __LINE__ + 1;
  Tensor z = x[Tensor({-6})];
  expect_read_error(z, "index -6 is out of range for axis 0 of size 5", line2);
  expect_close(x[Tensor({-1})], {4});
}

TEST_P(BackendTest, IndexingGradientMatchesFiniteDifferences) {
  Tensor x = randn({3, 4});
  check_gradients([](const std::vector<Tensor>& in) { return in[0][1, Slice(_, 2)]; }, {x});
  check_gradients(
      [](const std::vector<Tensor>& in) { return in[0][Permute(1, 0)][Slice(1, _, 2)] * 2; }, {x});
  check_gradients([](const std::vector<Tensor>& in) { return in[0][NewAxis, Ellipsis, -1]; }, {x});
  check_gradients([](const std::vector<Tensor>& in) { return in[0].t()[Slice(1, 3), 2]; }, {x});
  Tensor idx({2, 0, 2, -1});
  check_gradients([&](const std::vector<Tensor>& in) { return in[0][idx]; }, {x});
  check_gradients([&](const std::vector<Tensor>& in) { return in[0][Ellipsis, idx]; }, {x});
  Tensor mask = randn({3, 4}) > 0.f;
  check_gradients([&](const std::vector<Tensor>& in) { return in[0][mask] * 3; }, {x});
}

// ---- indexed assignment ----

TEST_P(BackendTest, IndexedAssignmentCopiesOnWrite) {
  Tensor x({1.f, 2.f, 3.f, 4.f}, {2, 2});
  Tensor y = x;
  y[0] = 5;
  expect_close(x, {1, 2, 3, 4});
  expect_close(y, {5, 5, 3, 4});
  Tensor z = y;
  z[1, 0] = Tensor({9.f}, Shape{});
  expect_close(y, {5, 5, 3, 4});
  expect_close(z, {5, 5, 9, 4});
  // A view taken before the assignment keeps the old values.
  Tensor row = z[1];
  z[1] = 0;
  expect_close(row, {9, 4});
  expect_close(z, {5, 5, 0, 0});
}

TEST_P(BackendTest, IndexedAssignmentChainsAndUpdatesInPlace) {
  Tensor x = iota({2, 3});
  Tensor y = x;
  y[0][1] = 50;
  expect_close(y, {0, 50, 2, 3, 4, 5});
  y[1][Slice(1, _)][0] = -1;
  expect_close(y, {0, 50, 2, 3, -1, 5});
  y[0] += 1;
  expect_close(y, {1, 51, 3, 3, -1, 5});
  y[Ellipsis, 2] *= 10;
  expect_close(y, {1, 51, 30, 3, -1, 50});
  expect_close(x, {0, 1, 2, 3, 4, 5});
}

TEST_P(BackendTest, IndexedAssignmentBroadcastsSlicesMasksAndTensors) {
  Tensor y = zeros({2, 3});
  y[1, Slice(_, 2)] = Tensor({7.f, 8.f});
  expect_close(y, {0, 0, 0, 7, 8, 0});
  y[Ellipsis, 2] = Tensor({1.f, 2.f});
  expect_close(y, {0, 0, 1, 7, 8, 2});
  y[Permute(1, 0)][0] = Tensor({-1.f, -2.f});  // column 0
  expect_close(y, {-1, 0, 1, -2, 8, 2});
  y[y > 1.f] = 0;
  expect_close(y, {-1, 0, 1, -2, 0, 0});
  y[Tensor({1, -2})] = Tensor({3.f, 4.f, 5.f});  // rows 1 and 0
  expect_close(y, {3, 4, 5, 3, 4, 5});
  y[Ellipsis, Tensor({2, 0})] = Tensor({10.f, 20.f, 30.f, 40.f}, {2, 2});
  expect_close(y, {20, 4, 10, 40, 4, 30});
  Tensor m = zeros({3}, i64);
  m[Tensor({true, false, true})] = Tensor({1, 2});
  EXPECT_EQ(m.to_vector<int64_t>(), (std::vector<int64_t>{1, 0, 2}));
}

TEST_P(BackendTest, IndexedAssignmentValidatesValue) {
  Tensor y = zeros({2, 3});
  EXPECT_CRISP_ERROR((y[0] = Tensor({1.0, 2.0, 3.0})),
                     "value dtype float64 does not match the tensor's dtype float32");
  EXPECT_CRISP_ERROR((y[0] = Tensor({1.f, 2.f})),
                     "value of shape [2] cannot be broadcast to the indexed shape [3]");
  EXPECT_CRISP_ERROR((y[0, 5] = 1), "index 5 is out of range for axis 1 of size 3");
  EXPECT_CRISP_ERROR((y[Tensor({0, 1})] = Tensor({1.f, 2.f})),
                     "value of shape [2] cannot be broadcast to the indexed shape [2, 3]");
  EXPECT_CRISP_ERROR(((y + 1)[0] = 1), "cannot assign to a temporary tensor");
  expect_close(y, {0, 0, 0, 0, 0, 0});
  const int line = __LINE__ + 1;
  y[Tensor({3})] = 1;
  expect_read_error(y, "index 3 is out of range for axis 0 of size 2", line);
}

TEST_P(BackendTest, IndexPutGradientMatchesFiniteDifferences) {
  Tensor x = randn({3, 4}), row = randn({2}), col = randn({3, 1});
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return in[0].index_put({1, Slice(_, 2)}, in[1]);
      },
      {x, row});
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return in[0].index_put({Ellipsis, Slice(1, _, 2)}, in[1]) * 2;  // broadcast value
      },
      {x, col});
  check_gradients(
      [](const std::vector<Tensor>& in) { return in[0].index_put({Permute(1, 0)}, in[1]); },
      {x, randn({3})});
  Tensor idx({2, 0});
  check_gradients(
      [&](const std::vector<Tensor>& in) {
        return in[0].index_put({Ellipsis, idx}, in[1]);
      },
      {x, col});
  Tensor mask = Tensor({true, false, true, true}, {4});
  check_gradients(
      [&](const std::vector<Tensor>& in) {
        return in[0].index_put({Ellipsis, mask}, in[1]);
      },
      {x, col});
  // Through the operator form: y[0] += v.
  check_gradients(
      [](const std::vector<Tensor>& in) {
        Tensor y = in[0];
        y[0] += in[1][0];
        y[2][1] = in[1][1] * 3;
        return y;
      },
      {x, row});
}

// ---- gather and scatter ----

TEST_P(BackendTest, IndexSelectPicksSlicesAlongAnAxis) {
  Tensor x = iota({3, 4});
  expect_close(index_select(x, 0, Tensor({2, 0, 2})), {8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11});
  Tensor c = index_select(x, -1, Tensor({3, 1}));
  EXPECT_EQ(c.shape(), (Shape{3, 2}));
  expect_close(c, {3, 1, 7, 5, 11, 9});
  expect_close(index_select(x.t(), 1, Tensor({1})), {4, 5, 6, 7});  // strided input
  EXPECT_EQ(index_select(x, 0, Tensor(std::vector<int64_t>{}, {0})).shape(), (Shape{0, 4}));
  Tensor xi = Tensor({1, 2, 3});
  EXPECT_EQ(index_select(xi, 0, Tensor({2, 2})).to_vector<int64_t>(), (std::vector<int64_t>{3, 3}));
  EXPECT_CRISP_ERROR(index_select(x, 0, Tensor({0.f})), "index must be int64, got float32");
  EXPECT_CRISP_ERROR(index_select(x, 0, Tensor({0, 1}, {1, 2})), "index must be 1-d");
  EXPECT_CRISP_ERROR(index_select(x, 2, Tensor({0})), "axis 2 is out of range");
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return index_select(in[0], 1, Tensor({3, 0, 3}));
      },
      {randn({2, 4})});
}

TEST_P(BackendTest, GatherMatchesTorchGather) {
  Tensor x = iota({3, 4});
  Tensor g = gather(x, 1, Tensor({3, 0, 1, 1, 2, 0}, {3, 2}));
  EXPECT_EQ(g.shape(), (Shape{3, 2}));
  expect_close(g, {3, 0, 5, 5, 10, 8});
  // The index may be smaller than x off the axis.
  expect_close(gather(x, 0, Tensor({2, 1}, {1, 2})), {8, 5});
  Tensor t = take_along_axis(x, Tensor({1, 0, 2}, {3, 1}), 1);
  expect_close(t, {1, 4, 10});
  // take_along_axis broadcasts the other axes.
  Tensor b = take_along_axis(x, Tensor({3, 0}, {1, 2}), 1);
  EXPECT_EQ(b.shape(), (Shape{3, 2}));
  expect_close(b, {3, 0, 7, 4, 11, 8});
  EXPECT_CRISP_ERROR(gather(x, 1, Tensor({0, 1})), "needs as many dimensions as x");
  EXPECT_CRISP_ERROR(gather(x, 1, Tensor({0, 0, 0, 0, 0, 0, 0, 0}, {4, 2})),
                     "is larger than x of shape [3, 4] on axis 0");
  Tensor idx({0, 3, 3, 1, 2, 2}, {3, 2});
  check_gradients([&](const std::vector<Tensor>& in) { return gather(in[0], 1, idx); },
                  {randn({3, 4})});
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return take_along_axis(in[0], Tensor({2, 0}, {1, 2}), 1);
      },
      {randn({3, 4})});
}

TEST_P(BackendTest, ScatterAndScatterAddMatchTorch) {
  Tensor x = iota({3, 4});
  Tensor idx({0, 1, 2, 0, 2, 0, 1, 1}, {2, 4});
  Tensor src = arange(100, 110, 1, f32).reshape({2, 5});  // larger than the index: only [2, 4] used
  expect_close(scatter(x, 0, idx, src), {100, 106, 2, 103, 4, 101, 107, 108, 105, 9, 102, 11});
  expect_close(scatter_add(x, 0, idx, src), {100, 107, 2, 106, 4, 106, 113, 115, 113, 9, 112, 11});
  // Repeated indices accumulate in scatter_add.
  expect_close(scatter_add(zeros({2}), 0, Tensor({1, 1, 1}), ones({3})), {0, 3});
  EXPECT_CRISP_ERROR(scatter(x, 0, idx, src.cast(f64)), "src dtype float64 does not match");
  EXPECT_CRISP_ERROR(scatter(x, 0, idx, ones({1, 4})), "does not fit x of shape [3, 4]");
  EXPECT_CRISP_ERROR(scatter(x, 0, idx.cast(i32), src), "index must be int64, got int32");
  check_gradients([&](const std::vector<Tensor>& in) { return scatter(in[0], 0, idx, in[1]); },
                  {randn({3, 4}), randn({2, 5})});
  check_gradients([&](const std::vector<Tensor>& in) { return scatter_add(in[0], 0, idx, in[1]); },
                  {randn({3, 4}), randn({2, 5})});
  // Repeated indices in scatter_add still have exact gradients.
  Tensor rep({0, 0, 1, 1, 0, 0, 1, 1}, {2, 4});
  check_gradients([&](const std::vector<Tensor>& in) { return scatter_add(in[0], 0, rep, in[1]); },
                  {randn({3, 4}), randn({2, 4})});
}

TEST_P(BackendTest, IndexAddAccumulatesSlices) {
  Tensor x = iota({3, 4});
  Tensor src = Tensor({1.f, 10.f, 100.f}).reshape({1, 3}).expand({3, 3});
  expect_close(index_add(x, 1, Tensor({0, 2, 0}), src),
               {101, 1, 12, 3, 105, 5, 16, 7, 109, 9, 20, 11});
  EXPECT_CRISP_ERROR(index_add(x, 1, Tensor({0, 2}), src),
                     "src of shape [3, 3] should have shape [3, 2]");
  check_gradients(
      [](const std::vector<Tensor>& in) {
        return index_add(in[0], 0, Tensor({2, 2, 0}), in[1]);
      },
      {randn({3, 2}), randn({3, 2})});
}

TEST_P(BackendTest, OutOfRangeIndexValuesFailOnReadAndTheProcessContinues) {
  Tensor x = iota({5});
  const int l1 = __LINE__ + 1;
  Tensor a = index_select(x, 0, Tensor({1, 7}));
  expect_read_error(a, "index_select: index 7 is out of range for axis 0 of size 5", l1);
  const int l2 = __LINE__ + 1;
  Tensor b = gather(x, 0, Tensor({-1}, {1}));
  expect_read_error(b, "gather: index -1 is out of range for axis 0 of size 5", l2);
  const int l3 = __LINE__ + 1;
  Tensor c = scatter(x, 0, Tensor({5}, {1}), ones({1}));
  expect_read_error(c, "index 5 is out of range", l3);
  const int l4 = __LINE__ + 1;
  Tensor d = index_add(x, 0, Tensor({9}), ones({1}));
  // A later op on a failed tensor fails the same way, still naming the first op's line. (Not
  // after reading d: a fault found on a device is raised once, at the next read.)
  expect_read_error(d + 1, "index 9 is out of range", l4);
  expect_close(index_select(x, 0, Tensor({4})), {4});  // a 0-d index keeps the axis
}

// ---- masks and one_hot ----

TEST_P(BackendTest, NonzeroListsPositionsOfTrueElements) {
  Tensor m = Tensor({false, true, false, true, true, false}, {2, 3});
  Tensor nz = nonzero(m);
  EXPECT_EQ(nz.dtype(), i64);
  EXPECT_EQ(nz.shape(), (Shape{3, 2}));
  EXPECT_EQ(nz.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 1, 0, 1, 1}));
  EXPECT_EQ(nonzero(Tensor({0.f, 2.f, 0.f, -1.f})).to_vector<int64_t>(),
            (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(nonzero(zeros({2, 2}) > 1.f).shape(), (Shape{0, 2}));
}

TEST_P(BackendTest, MaskedSelectBroadcastsTheMask) {
  Tensor x = iota({2, 3});
  expect_close(masked_select(x, x > 2.f), {3, 4, 5});
  expect_close(masked_select(x, Tensor({true, false, true})), {0, 2, 3, 5});
  EXPECT_CRISP_ERROR(masked_select(x, Tensor({1, 0, 1})), "mask must be bool, got int64");
  EXPECT_CRISP_ERROR(masked_select(x, Tensor({true, false})), "cannot be broadcast");
  Tensor mask({true, false, true});
  check_gradients([&](const std::vector<Tensor>& in) { return masked_select(in[0], mask); },
                  {randn({2, 3})});
}

TEST_P(BackendTest, OneHotEncodesLabels) {
  Tensor h = one_hot(Tensor({2, 0, 1}), 3);
  EXPECT_EQ(h.shape(), (Shape{3, 3}));
  EXPECT_EQ(h.dtype(), f32);
  expect_close(h, {0, 0, 1, 1, 0, 0, 0, 1, 0});
  Tensor h2 = one_hot(Tensor({1, 0}, {2, 1}), 2, i64);
  EXPECT_EQ(h2.shape(), (Shape{2, 1, 2}));
  EXPECT_EQ(h2.to_vector<int64_t>(), (std::vector<int64_t>{0, 1, 1, 0}));
  EXPECT_CRISP_ERROR(one_hot(Tensor({0.f}), 3), "labels must be int64, got float32");
  EXPECT_CRISP_ERROR(one_hot(Tensor({0}), 0), "classes must be positive, got 0");
  const int line = __LINE__ + 1;
  Tensor bad = one_hot(Tensor({1, 3}), 3);
  expect_read_error(bad, "index 3 is out of range", line);
  const int line2 = __LINE__ + 1;
  Tensor neg = one_hot(Tensor({-1}), 3);
  expect_read_error(neg, "index -1 is out of range", line2);
}

TEST_P(BackendTest, GatherAndScatterSupportAllDtypes) {
  for (DType dt : {f16, bf16, f32, f64, i32, u8}) {
    Tensor x = iota({2, 3}).cast(dt);
    expect_close(index_select(x, 1, Tensor({2, 0})), {2, 0, 5, 3});
    expect_close(scatter_add(x, 1, Tensor({0, 0}, {1, 2}), ones({1, 2}, dt)), {2, 1, 2, 3, 4, 5});
    Tensor y = x;
    y[1, 1] = 9;
    expect_close(y, {0, 1, 2, 3, 9, 5});
  }
  Tensor b = Tensor({true, false, true});
  EXPECT_EQ(index_select(b, 0, Tensor({1, 0})).to_vector<bool>(), (std::vector<bool>{false, true}));
}

TEST_P(BackendTest, GatherOnLargeStridedTensorsMatchesNaiveLoop) {
  // Large enough to run the parallel path, on a transposed (strided) input.
  const int64_t r = 300, c = 200;
  Tensor x = randn({c, r}).t();
  std::vector<float> xv = x.contiguous().to_vector<float>();
  std::vector<int64_t> iv;
  for (int64_t i = 0; i < c; ++i) iv.push_back((i * 7) % c);
  Tensor s = index_select(x, 1, Tensor(iv));
  Tensor g = gather(x, 1, Tensor(iv).reshape({1, c}).expand({r, c}));
  std::vector<double> expected;
  for (int64_t i = 0; i < r; ++i)
    for (int64_t j = 0; j < c; ++j) expected.push_back(xv[static_cast<size_t>(i * c + iv[j])]);
  expect_close(s, expected);
  expect_close(g, expected);
  Tensor y = x;
  y[Slice(1, _, 2), Slice(_, _, 3)] = 0;
  std::vector<double> ye(xv.begin(), xv.end());
  for (int64_t i = 1; i < r; i += 2)
    for (int64_t j = 0; j < c; j += 3) ye[static_cast<size_t>(i * c + j)] = 0;
  expect_close(y, ye);
}

// Ops over empty tensors have nothing to do, forward and backward (they once divided by a run
// length of zero on the CPU and crashed the process).
TEST_P(BackendTest, EmptyTensorsScatterGatherAndSortWithoutCrashing) {
  for (const Shape& s : {Shape{2, 0}, Shape{0, 3}}) {
    const Tensor x = randn(s), src = randn(s), idx = zeros(s, i64);
    EXPECT_TRUE(scatter_add(x, 1, idx, src).to_vector<float>().empty());
    EXPECT_TRUE(scatter(x, 1, idx, src).to_vector<float>().empty());
    const Tensor along0 = arange(0, static_cast<double>(s[0]), 1, i64);
    EXPECT_TRUE(index_add(x, 0, along0, src).to_vector<float>().empty());
  }
  std::optional<Tensor> g;
  const Tensor w = randn({0, 4}).on_grad([&](const Tensor& gr) { g = gr; });
  (gather(w, 0, zeros({0, 4}, i64)).sum() + index_select(w, 1, Tensor({0, 2})).sum() +
   topk(w, 2).values.sum())
      .backward();
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->shape(), (Shape{0, 4}));
  std::optional<Tensor> gv;
  const Tensor v = randn({2, 0}).on_grad([&](const Tensor& gr) { gv = gr; });
  sort(v).values.sum().backward();
  ASSERT_TRUE(gv.has_value());
  EXPECT_EQ(gv->shape(), (Shape{2, 0}));
}

}  // namespace crisp::testing
