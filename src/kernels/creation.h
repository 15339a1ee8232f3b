// Attributes of the creation family: fill, arange, eye, and the random ops that take their words
// from a Philox stream (rand_uniform, rand_normal, rand_int, dropout).
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

// fill: every element value (converted to the output's dtype).
struct FillAttrs {
  double value = 0;

  Op to_op() const { return Op{OpKind::fill, {}, {value}}; }
  static FillAttrs from_op(const Op& op) {
    check_counts(op, 0, 0, 1);
    return {op.reals[0]};
  }
};

// arange: element i is start + step * i, computed in double.
struct ArangeAttrs {
  double start = 0, step = 1;

  Op to_op() const { return Op{OpKind::arange, {}, {start, step}}; }
  static ArangeAttrs from_op(const Op& op) {
    check_counts(op, 0, 0, 2);
    return {op.reals[0], op.reals[1]};
  }
};

// eye: ones on diagonal k of a matrix (k > 0 above the main one).
struct EyeAttrs {
  int64_t k = 0;

  Op to_op() const { return Op{OpKind::eye, {k}}; }
  static EyeAttrs from_op(const Op& op) {
    check_counts(op, 1, 1, 0);
    return {op.ints[0]};
  }
};

// rand_uniform (reals low, high: draws in [low, high)), rand_normal (reals mean, std) and
// rand_int (ints low, high: draws in [low, high)), each from its stream: ints seed, offset first.
struct RandomAttrs {
  RandomStream stream;
  double a = 0, b = 1;        // rand_uniform: low, high; rand_normal: mean, std
  int64_t low = 0, high = 1;  // rand_int

  Op to_op(OpKind kind) const {
    Op op{kind, {static_cast<int64_t>(stream.seed), static_cast<int64_t>(stream.offset)}};
    if (kind == OpKind::rand_int) {
      op.ints.push_back(low);
      op.ints.push_back(high);
    } else {
      op.reals = {a, b};
    }
    return op;
  }
  static RandomAttrs from_op(const Op& op) {
    const bool ints = op.kind == OpKind::rand_int;
    check_counts(op, ints ? 4 : 2, ints ? 4 : 2, ints ? 0 : 2);
    RandomAttrs r;
    r.stream = {static_cast<uint64_t>(op.ints[0]), static_cast<uint64_t>(op.ints[1])};
    if (ints) {
      r.low = op.ints[2];
      r.high = op.ints[3];
    } else {
      r.a = op.reals[0];
      r.b = op.reals[1];
    }
    return r;
  }
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
