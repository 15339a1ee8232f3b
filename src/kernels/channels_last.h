// Which ops store their outputs channels-last: the convolutions and max pooling may.
#pragma once

#include "crisp/backend.h"
#include "kernels/conv.h"
#include "kernels/pool.h"

namespace crisp {

// Whether op's outputs are stored channels-last, [N, *spatial, C] (a convolution's weight
// gradient [O, *k, C / groups]); inputs come in any layout.
inline bool stores_channels_last(const Op& op) {
  if (ConvAttrs::is_conv(op.kind)) return ConvAttrs::from_op(op).channels_last;
  if (PoolAttrs::is_max(op.kind)) return PoolAttrs::from_op(op).channels_last;
  return false;
}

// The same op with its outputs stored in the usual layout, [N, C, *spatial].
inline Op in_usual_layout(const Op& op) {
  if (ConvAttrs::is_conv(op.kind)) {
    ConvAttrs a = ConvAttrs::from_op(op);
    a.channels_last = false;
    return a.to_op(op.kind);
  }
  if (PoolAttrs::is_max(op.kind)) {
    PoolAttrs a = PoolAttrs::from_op(op);
    a.channels_last = false;
    return a.to_op(op.kind);
  }
  return op;
}

}  // namespace crisp
