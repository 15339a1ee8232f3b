// Convolution ops' attributes (conv, conv_backward_input, conv_backward_weight): one set for a
// convolution's forward pass and both of its gradients.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "crisp/backend.h"
#include "crisp/error.h"

namespace crisp {

// Over nd = 1, 2 or 3 spatial dims; per-dim values past nd are unused. Encoded as op_kinds.inc
// describes: nd, stride..., padding..., dilation..., groups[, channels_last].
struct ConvAttrs {
  int64_t nd = 0;
  std::array<int64_t, 3> stride{1, 1, 1}, padding{0, 0, 0}, dilation{1, 1, 1};
  int64_t groups = 1;
  // Outputs stored channels-last, [N, *spatial, C] (the weight's gradient [O, *k, C / groups]);
  // inputs come in any layout.
  bool channels_last = false;

  static bool is_conv(OpKind kind) {
    return kind == OpKind::conv || kind == OpKind::conv_backward_input ||
           kind == OpKind::conv_backward_weight;
  }

  Op to_op(OpKind kind) const {
    const size_t n = static_cast<size_t>(nd);
    std::vector<int64_t> ints{nd};
    for (const auto* v : {&stride, &padding, &dilation})
      ints.insert(ints.end(), v->begin(), v->begin() + static_cast<std::ptrdiff_t>(n));
    ints.push_back(groups);
    ints.push_back(channels_last ? 1 : 0);
    return Op{kind, std::move(ints)};
  }

  static ConvAttrs from_op(const Op& op) {
    if (!is_conv(op.kind)) fail("convolution attributes do not describe ", op_name(op.kind));
    if (op.ints.empty() || op.ints[0] < 1 || op.ints[0] > 3)
      fail(op_name(op.kind), " expects 1 to 3 spatial dims first in its ints");
    ConvAttrs a;
    a.nd = op.ints[0];
    const size_t n = static_cast<size_t>(a.nd), count = op.ints.size();
    if (count != 2 + 3 * n && count != 3 + 3 * n)  // channels_last is optional
      fail(op_name(op.kind), " with ", a.nd, " spatial dims got ", count, " ints");
    for (size_t i = 0; i < n; ++i) {
      a.stride[i] = op.ints[1 + i];
      a.padding[i] = op.ints[1 + n + i];
      a.dilation[i] = op.ints[1 + 2 * n + i];
    }
    a.groups = op.ints[1 + 3 * n];
    a.channels_last = count == 3 + 3 * n && op.ints.back() != 0;
    return a;
  }

  auto operator<=>(const ConvAttrs&) const = default;
};

}  // namespace crisp
