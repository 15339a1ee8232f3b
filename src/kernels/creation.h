// Attributes of the random ops that take their words from a Philox stream: dropout.
#pragma once

#include <cstdint>

#include "crisp/backend.h"
#include "kernels/attrs.h"

namespace crisp {

// Where an op's random words come from: the Philox stream keyed by seed, from counter offset on.
struct RandomStream {
  uint64_t seed = 0;
  uint64_t offset = 0;
};

// dropout: x times 1 / (1 - p) where the element's uniform draw is at least p, else 0. Encoded
// as op_kinds.inc describes: ints seed, offset; reals p.
struct DropoutAttrs {
  RandomStream stream;
  double p = 0;

  Op to_op(OpKind kind) const {
    return Op{kind, {static_cast<int64_t>(stream.seed), static_cast<int64_t>(stream.offset)}, {p}};
  }

  static DropoutAttrs from_op(const Op& op) {
    check_counts(op, 2, 2, 1);
    return DropoutAttrs{{static_cast<uint64_t>(op.ints[0]), static_cast<uint64_t>(op.ints[1])},
                        op.reals[0]};
  }
};

}  // namespace crisp
