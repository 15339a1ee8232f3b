// Typed attributes of the normalization ops (layer, RMS, group and batch norm) and their encoding
// as an Op (op_kinds.inc), shared by the front end and both backends.
#pragma once

#include <cstdint>

#include "crisp/backend.h"
#include "crisp/error.h"
#include "kernels/attrs.h"

namespace crisp {

namespace norm_detail {

[[noreturn]] inline void wrong_kind(const char* attrs, OpKind kind) {
  fail(attrs, " attributes do not describe ", op_name(kind));
}

}  // namespace norm_detail

// layer_norm and rms_norm (rows of x [M, D]) and group_norm (x [N, C, S], one row per sample and
// group of channels), each row normalized and then scaled by w and shifted by b where given.
struct RowNormAttrs {
  int64_t groups = 1;  // group_norm's; the others normalize rows whole
  bool has_w = false;
  bool has_b = false;  // never for rms_norm
  double eps = 0;

  Op to_op(OpKind kind) const {
    switch (kind) {
      case OpKind::layer_norm:
        return Op{kind, {has_w ? 1 : 0, has_b ? 1 : 0}, {eps}};
      case OpKind::rms_norm:
        return Op{kind, {has_w ? 1 : 0}, {eps}};
      case OpKind::group_norm:
        return Op{kind, {groups, has_w ? 1 : 0, has_b ? 1 : 0}, {eps}};
      default:
        norm_detail::wrong_kind("row norm", kind);
    }
  }

  static RowNormAttrs from_op(const Op& op) {
    switch (op.kind) {
      case OpKind::layer_norm:
        check_counts(op, 2, 2, 1);
        return {1, op.ints[0] != 0, op.ints[1] != 0, op.reals[0]};
      case OpKind::rms_norm:
        check_counts(op, 1, 1, 1);
        return {1, op.ints[0] != 0, false, op.reals[0]};
      case OpKind::group_norm:
        check_counts(op, 3, 3, 1);
        return {op.ints[0], op.ints[1] != 0, op.ints[2] != 0, op.reals[0]};
      default:
        norm_detail::wrong_kind("row norm", op.kind);
    }
  }
};

// layer_norm_backward, rms_norm_backward and group_norm_backward.
struct RowNormBackwardAttrs {
  int64_t groups = 1;  // group_norm_backward's
  bool has_w = false;

  Op to_op(OpKind kind) const {
    switch (kind) {
      case OpKind::layer_norm_backward:
      case OpKind::rms_norm_backward:
        return Op{kind, {has_w ? 1 : 0}};
      case OpKind::group_norm_backward:
        return Op{kind, {groups, has_w ? 1 : 0}};
      default:
        norm_detail::wrong_kind("row norm gradient", kind);
    }
  }

  static RowNormBackwardAttrs from_op(const Op& op) {
    switch (op.kind) {
      case OpKind::layer_norm_backward:
      case OpKind::rms_norm_backward:
        check_counts(op, 1, 1, 0);
        return {1, op.ints[0] != 0};
      case OpKind::group_norm_backward:
        check_counts(op, 2, 2, 0);
        return {op.ints[0], op.ints[1] != 0};
      default:
        norm_detail::wrong_kind("row norm gradient", op.kind);
    }
  }
};

// batch_norm_stats: given running statistics, they move towards the batch's by momentum.
struct BatchNormStatsAttrs {
  double momentum = 0;

  Op to_op(OpKind kind) const {
    if (kind != OpKind::batch_norm_stats) norm_detail::wrong_kind("batch_norm_stats", kind);
    return Op{kind, {}, {momentum}};
  }

  static BatchNormStatsAttrs from_op(const Op& op) {
    if (op.kind != OpKind::batch_norm_stats) norm_detail::wrong_kind("batch_norm_stats", op.kind);
    check_counts(op, 0, 0, 1);
    return {op.reals[0]};
  }
};

// batch_norm; relu: the output is max(0, y) (batch_norm_relu).
struct BatchNormAttrs {
  bool has_w = false;
  bool has_b = false;
  bool relu = false;
  double eps = 0;

  Op to_op(OpKind kind) const {
    if (kind != OpKind::batch_norm) norm_detail::wrong_kind("batch_norm", kind);
    return Op{kind, {has_w ? 1 : 0, has_b ? 1 : 0, relu ? 1 : 0}, {eps}};
  }

  static BatchNormAttrs from_op(const Op& op) {
    if (op.kind != OpKind::batch_norm) norm_detail::wrong_kind("batch_norm", op.kind);
    check_counts(op, 2, 3, 1);
    return {op.ints[0] != 0, op.ints[1] != 0, op.ints.size() > 2 && op.ints[2] != 0, op.reals[0]};
  }
};

// batch_norm_backward. training: the gradient also flows through the batch statistics. relu
// (batch_norm_relu): the gradient is zero where batch_norm's output was not positive, which the
// kernels recompute from x and the parameters, so with relu b is among the inputs where given.
struct BatchNormBackwardAttrs {
  bool training = false;
  bool has_w = false;
  bool relu = false;
  bool has_b = false;  // b among the inputs: only with relu
  double eps = 0;

  Op to_op(OpKind kind) const {
    if (kind != OpKind::batch_norm_backward) norm_detail::wrong_kind("batch_norm_backward", kind);
    return Op{kind, {training ? 1 : 0, has_w ? 1 : 0, relu ? 1 : 0, has_b ? 1 : 0}, {eps}};
  }

  static BatchNormBackwardAttrs from_op(const Op& op) {
    if (op.kind != OpKind::batch_norm_backward)
      norm_detail::wrong_kind("batch_norm_backward", op.kind);
    check_counts(op, 2, 4, 1);
    return {op.ints[0] != 0, op.ints[1] != 0, op.ints.size() > 2 && op.ints[2] != 0,
            op.ints.size() > 3 && op.ints[3] != 0, op.reals[0]};
  }
};

}  // namespace crisp
