// CPU kernels: the nn family's router to its files (conv, pool, norm, loss).
#include "cpu/nn_util.h"

namespace crisp::cpu {

void nn(const Op& op, In in, Out out) {
  switch (op.kind) {
    case OpKind::conv:
    case OpKind::conv_backward_input:
    case OpKind::conv_backward_weight:
    case OpKind::channel_sum:
      return conv_family(op, in, out);
    case OpKind::max_pool:
    case OpKind::max_pool_backward:
    case OpKind::avg_pool:
    case OpKind::avg_pool_backward:
      return pool_family(op, in, out);
    case OpKind::layer_norm:
    case OpKind::layer_norm_backward:
    case OpKind::rms_norm:
    case OpKind::rms_norm_backward:
    case OpKind::group_norm:
    case OpKind::group_norm_backward:
    case OpKind::batch_norm_stats:
    case OpKind::batch_norm:
    case OpKind::batch_norm_backward:
      return norm_family(op, in, out);
    case OpKind::dropout:
      return dropout(op, in, out);
    case OpKind::embedding:
    case OpKind::embedding_backward:
    case OpKind::nll_loss:
    case OpKind::nll_loss_backward:
      return loss_family(op, in, out);
    default:
      unsupported(op, in.empty() ? DType::f32 : in[0].dtype);
  }
}

}  // namespace crisp::cpu
