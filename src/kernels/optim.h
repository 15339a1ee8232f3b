// Attributes of the optimizer update ops (sgd_step, adam_step, rmsprop_step; op_kinds.inc has
// their formulas). Their ints end with the number of parameters one op updates.
#pragma once

#include <cstddef>
#include <cstdint>

#include "crisp/backend.h"
#include "kernels/attrs.h"

namespace crisp {

struct SgdStepAttrs {
  bool has_momentum = false, nesterov = false, maximize = false;
  double lr = 0, momentum = 0, dampening = 0, weight_decay = 0;
  int64_t params = 1;

  Op to_op(OpKind kind) const {
    return Op{
        kind, {has_momentum, nesterov, maximize, params}, {lr, momentum, dampening, weight_decay}};
  }

  static SgdStepAttrs from_op(const Op& op) {
    check_counts(op, 4, 4, 4);
    return {.has_momentum = op.ints[0] != 0,
            .nesterov = op.ints[1] != 0,
            .maximize = op.ints[2] != 0,
            .lr = op.reals[0],
            .momentum = op.reals[1],
            .dampening = op.reals[2],
            .weight_decay = op.reals[3],
            .params = op.ints[3]};
  }
};

// step_size and bc2_sqrt are the bias corrections of the step, lr / (1 - beta1^t) and
// sqrt(1 - beta2^t), computed once on the host.
struct AdamStepAttrs {
  bool amsgrad = false, maximize = false, decoupled = false;
  double lr = 0, beta1 = 0, beta2 = 0, eps = 0, weight_decay = 0, step_size = 0, bc2_sqrt = 1;
  int64_t params = 1;

  Op to_op(OpKind kind) const {
    return Op{kind,
              {amsgrad, maximize, decoupled, params},
              {lr, beta1, beta2, eps, weight_decay, step_size, bc2_sqrt}};
  }

  static AdamStepAttrs from_op(const Op& op) {
    check_counts(op, 4, 4, 7);
    return {.amsgrad = op.ints[0] != 0,
            .maximize = op.ints[1] != 0,
            .decoupled = op.ints[2] != 0,
            .lr = op.reals[0],
            .beta1 = op.reals[1],
            .beta2 = op.reals[2],
            .eps = op.reals[3],
            .weight_decay = op.reals[4],
            .step_size = op.reals[5],
            .bc2_sqrt = op.reals[6],
            .params = op.ints[3]};
  }
};

struct RmspropStepAttrs {
  bool centered = false, has_momentum = false, maximize = false;
  double lr = 0, alpha = 0, eps = 0, weight_decay = 0, momentum = 0;
  int64_t params = 1;

  Op to_op(OpKind kind) const {
    return Op{
        kind, {centered, has_momentum, maximize, params}, {lr, alpha, eps, weight_decay, momentum}};
  }

  static RmspropStepAttrs from_op(const Op& op) {
    check_counts(op, 4, 4, 5);
    return {.centered = op.ints[0] != 0,
            .has_momentum = op.ints[1] != 0,
            .maximize = op.ints[2] != 0,
            .lr = op.reals[0],
            .alpha = op.reals[1],
            .eps = op.reals[2],
            .weight_decay = op.reals[3],
            .momentum = op.reals[4],
            .params = op.ints[3]};
  }
};

}  // namespace crisp
