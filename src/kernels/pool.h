// Pooling ops' attributes (max_pool, avg_pool and their gradients) and the window geometry both
// backends run them on.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "crisp/backend.h"
#include "crisp/error.h"
#include "kernels/attrs.h"

namespace crisp {

// Windows over nd = 1, 2 or 3 spatial dims; per-dim values past nd are unused. Encoded as
// op_kinds.inc describes: nd, kernel..., stride..., padding..., then dilation...[, channels_last]
// for max pooling or count_include_pad for average pooling.
struct PoolAttrs {
  int64_t nd = 0;
  std::array<int64_t, 3> kernel{1, 1, 1}, stride{1, 1, 1}, padding{0, 0, 0};
  std::array<int64_t, 3> dilation{1, 1, 1};  // max pooling only
  bool channels_last = false;                // max pooling only: outputs stored [N, *spatial, C]
  bool count_include_pad = true;             // average pooling only

  static bool is_max(OpKind kind) {
    return kind == OpKind::max_pool || kind == OpKind::max_pool_backward;
  }

  Op to_op(OpKind kind) const {
    const size_t n = static_cast<size_t>(nd);
    std::vector<int64_t> ints{nd};
    for (const auto* v : {&kernel, &stride, &padding})
      ints.insert(ints.end(), v->begin(), v->begin() + n);
    if (is_max(kind)) {
      ints.insert(ints.end(), dilation.begin(), dilation.begin() + n);
      ints.push_back(channels_last ? 1 : 0);
    } else {
      ints.push_back(count_include_pad ? 1 : 0);
    }
    return Op{kind, std::move(ints)};
  }

  static PoolAttrs from_op(const Op& op) {
    PoolAttrs a;
    const bool max = is_max(op.kind);
    if (op.ints.empty() || op.ints[0] < 1 || op.ints[0] > 3)
      fail("malformed ", op_name(op.kind), " op: expected 1 to 3 spatial dims first");
    a.nd = op.ints[0];
    const size_t n = static_cast<size_t>(a.nd), count = op.ints.size();
    // Max pooling's channels_last is optional; average pooling's count_include_pad is not.
    if (max)
      check_counts(op, 1 + 4 * n, 2 + 4 * n, 0);
    else
      check_counts(op, 2 + 3 * n, 2 + 3 * n, 0);
    auto at = [&](size_t group, size_t i) { return op.ints[1 + group * n + i]; };
    for (size_t i = 0; i < n; ++i) {
      a.kernel[i] = at(0, i);
      a.stride[i] = at(1, i);
      a.padding[i] = at(2, i);
      if (max) a.dilation[i] = at(3, i);
    }
    if (max)
      a.channels_last = count == 2 + 4 * n && op.ints.back() != 0;
    else
      a.count_include_pad = op.ints.back() != 0;
    return a;
  }
};

// A pooling op's windows seen as 3-d: 1- and 2-d windows take the last axes, the leading ones of
// size 1. Plain arrays: the CUDA kernels take it as a parameter.
struct PoolGeom {
  int64_t planes = 0;  // N * C
  int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, k[3] = {1, 1, 1}, s[3] = {1, 1, 1},
          p[3] = {0, 0, 0}, d[3] = {1, 1, 1};
  int64_t S = 1, P = 1;  // the input's and the output's plane sizes
  bool count_include_pad = true;
};

// x_shape and y_shape are [N, C, *spatial].
inline PoolGeom pool_geometry(const Op& op, const Shape& x_shape, const Shape& y_shape) {
  const PoolAttrs a = PoolAttrs::from_op(op);
  PoolGeom g;
  g.planes = x_shape[0] * x_shape[1];
  for (size_t i = 0; i < static_cast<size_t>(a.nd); ++i) {
    const size_t j = 3 - static_cast<size_t>(a.nd) + i;
    g.in[j] = x_shape[2 + i];
    g.out[j] = y_shape[2 + i];
    g.k[j] = a.kernel[i];
    g.s[j] = a.stride[i];
    g.p[j] = a.padding[i];
    g.d[j] = a.dilation[i];
  }
  g.count_include_pad = a.count_include_pad;
  g.S = g.in[0] * g.in[1] * g.in[2];
  g.P = g.out[0] * g.out[1] * g.out[2];
  return g;
}

}  // namespace crisp
