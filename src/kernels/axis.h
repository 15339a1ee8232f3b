// Attributes of the ops along one axis (softmax, log_softmax, cumsum, cumprod, their gradients,
// and sort), shared by the front end and both backends.
#pragma once

#include <cstdint>

#include "crisp/backend.h"
#include "kernels/attrs.h"

namespace crisp {

// The axis the op runs along (normalized; 0 for a 0-d input, seen as one line of length 1) and,
// for sort, the order. Encoded as op_kinds.inc describes: ints axis[, descending].
struct AxisAttrs {
  int64_t axis = 0;
  bool descending = false;  // sort only

  Op to_op(OpKind kind) const {
    if (kind == OpKind::sort) return Op{kind, {axis, descending ? 1 : 0}};
    return Op{kind, {axis}};
  }

  static AxisAttrs from_op(const Op& op) {
    const bool sort = op.kind == OpKind::sort;
    check_counts(op, sort ? 2 : 1, sort ? 2 : 1, 0);
    return AxisAttrs{op.ints[0], sort && op.ints[1] != 0};
  }
};

}  // namespace crisp
