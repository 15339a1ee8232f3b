// Attributes of the fused negative log-likelihood (nll_loss and its gradient), behind
// cross_entropy and nll_loss.
#pragma once

#include <cstdint>

#include "crisp/backend.h"
#include "crisp/error.h"
#include "kernels/attrs.h"

namespace crisp {

// How per-element losses become the result; the values are the wire format.
enum class Reduction : int64_t { none = 0, mean = 1, sum = 2 };

// Encoded as op_kinds.inc describes: ints prob_target, ignore_index, reduction, has_weight;
// reals label_smoothing.
struct NllAttrs {
  bool prob_target = false;  // the target holds probabilities [N, C, S], not class indices
  int64_t ignore_index = -100;
  Reduction reduction = Reduction::mean;
  bool has_weight = false;  // class weights follow the target among the inputs
  double label_smoothing = 0;

  Op to_op(OpKind kind) const {
    return Op{
        kind,
        {prob_target ? 1 : 0, ignore_index, static_cast<int64_t>(reduction), has_weight ? 1 : 0},
        {label_smoothing}};
  }

  static NllAttrs from_op(const Op& op) {
    check_counts(op, 4, 4, 1);
    if (op.ints[2] < 0 || op.ints[2] > 2)
      fail("malformed ", op_name(op.kind), " op: reduction ", op.ints[2]);
    return NllAttrs{op.ints[0] != 0, op.ints[1], static_cast<Reduction>(op.ints[2]),
                    op.ints[3] != 0, op.reals[0]};
  }
};

}  // namespace crisp
