// The CUDA backend's nn family: routes each op to its family's file.
#include "cuda/common.cuh"

namespace crisp::cuda {

void conv_family(const Op& op, In in, Out out);         // conv.cu
void channel_sum(const Op& op, In in, const Array& o);  // conv/channel_sum.cu
void pool(const Op& op, In in, Out out);                // pool.cu
void norm(const Op& op, In in, Out out);                // norm.cu
void dropout(const Op& op, In in, Out out);             // creation.cu (with the random streams)
void embedding(const Op& op, In in, Out out);           // embedding.cu
void nll_loss(const Op& op, In in, Out out);            // loss.cu

void nn(const Op& op, In in, Out out) {
  switch (op.kind) {
    case OpKind::conv:
    case OpKind::conv_backward_input:
    case OpKind::conv_backward_weight:
      return conv_family(op, in, out);
    case OpKind::channel_sum:
      return channel_sum(op, in, out[0]);
    case OpKind::max_pool:
    case OpKind::max_pool_backward:
    case OpKind::avg_pool:
    case OpKind::avg_pool_backward:
      return pool(op, in, out);
    case OpKind::layer_norm:
    case OpKind::layer_norm_backward:
    case OpKind::rms_norm:
    case OpKind::rms_norm_backward:
    case OpKind::group_norm:
    case OpKind::group_norm_backward:
    case OpKind::batch_norm_stats:
    case OpKind::batch_norm:
    case OpKind::batch_norm_backward:
      return norm(op, in, out);
    case OpKind::dropout:
      return dropout(op, in, out);
    case OpKind::embedding:
    case OpKind::embedding_backward:
      return embedding(op, in, out);
    case OpKind::nll_loss:
    case OpKind::nll_loss_backward:
      return nll_loss(op, in, out);
    default:
      unsupported(op, in.empty() ? DType::f32 : in[0].dtype);
  }
}

}  // namespace crisp::cuda
