// Attributes of the indexing family's ops (op_kinds.inc): gathers and scatters by index, strided
// assignment, and the layout ops concat, pad, flip, tril and triu.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "crisp/backend.h"
#include "crisp/error.h"
#include "kernels/attrs.h"

namespace crisp {

// index_select, gather, scatter, scatter_add and index_add: the axis the index runs along, and
// whether negative index values count from the end.
struct IndexAttrs {
  int64_t axis = 0;
  bool wrap = false;

  Op to_op(OpKind kind) const { return Op{kind, {axis, wrap ? 1 : 0}}; }

  static IndexAttrs from_op(const Op& op) {
    check_counts(op, 2, 2, 0);
    return {op.ints[0], op.ints[1] != 0};
  }
};

// assign_strided: the elements at offset + sum(i[d] * strides[d]) of the (contiguous) output are
// replaced by value[i].
struct AssignStridedAttrs {
  int64_t offset = 0;
  Shape strides;  // one per axis of the value, none negative

  Op to_op(OpKind kind) const {
    std::vector<int64_t> ints{offset};
    ints.insert(ints.end(), strides.begin(), strides.end());
    return Op{kind, std::move(ints)};
  }

  static AssignStridedAttrs from_op(const Op& op) {
    check_counts(op, 1, op.ints.size(), 0);
    return {op.ints[0], Shape(op.ints.begin() + 1, op.ints.end())};
  }

  // Fails unless the view of a value of value_shape lies inside the output's `size` elements
  // (kernels then write without checks).
  void check_view(const Shape& value_shape, int64_t size) const {
    if (strides.size() != value_shape.size())
      fail("assign_strided: ", strides.size(), " strides for a value of ", value_shape.size(),
           " dimensions");
    if (numel_of(value_shape) == 0) return;
    // With strides >= 0 the view's first and last elements bound it.
    int64_t last = offset;
    for (size_t d = 0; d < strides.size(); ++d) {
      if (strides[d] < 0) fail("assign_strided: negative stride ", strides[d]);
      last += (value_shape[d] - 1) * strides[d];
    }
    if (offset < 0 || last >= size)
      fail("assign_strided: view [", offset, ", ", last, "] lies outside ", size, " elements");
  }
};

// concat: the inputs joined along axis.
struct ConcatAttrs {
  int64_t axis = 0;

  Op to_op(OpKind kind) const { return Op{kind, {axis}}; }

  static ConcatAttrs from_op(const Op& op) {
    check_counts(op, 1, 1, 0);
    return {op.ints[0]};
  }
};

// pad: before[d] and after[d] elements added on either side of axis d (negative ones crop),
// filled with value (constant) or mirrored from the input (reflect).
struct PadAttrs {
  bool reflect = false;
  std::vector<int64_t> before, after;  // one per axis, outermost first
  double value = 0;

  Op to_op(OpKind kind) const {
    std::vector<int64_t> ints{reflect ? 1 : 0};
    for (size_t d = 0; d < before.size(); ++d) {
      ints.push_back(before[d]);
      ints.push_back(after[d]);
    }
    return Op{kind, std::move(ints), {value}};
  }

  static PadAttrs from_op(const Op& op) {
    check_counts(op, 1, op.ints.size(), 1);
    if (op.ints.size() % 2 != 1)
      fail("malformed pad op: ", op.ints.size() - 1, " pad values, not (before, after) pairs");
    PadAttrs a;
    a.reflect = op.ints[0] == 1;
    for (size_t i = 1; i < op.ints.size(); i += 2) {
      a.before.push_back(op.ints[i]);
      a.after.push_back(op.ints[i + 1]);
    }
    a.value = op.reals[0];
    return a;
  }
};

// flip: the axes reversed.
struct FlipAttrs {
  std::vector<int64_t> axes;

  Op to_op(OpKind kind) const { return Op{kind, axes}; }

  static FlipAttrs from_op(const Op& op) {
    check_counts(op, 0, op.ints.size(), 0);
    return {op.ints};
  }
};

// tril and triu: the elements on and below (tril) or above (triu) diagonal k of the last two
// axes are kept, the others zeroed.
struct TriangleAttrs {
  int64_t k = 0;

  Op to_op(OpKind kind) const { return Op{kind, {k}}; }

  static TriangleAttrs from_op(const Op& op) {
    check_counts(op, 1, 1, 0);
    return {op.ints[0]};
  }
};

}  // namespace crisp
