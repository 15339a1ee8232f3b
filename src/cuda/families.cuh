// The CUDA backend's entry point for each op family (src/kernels/families.h), which backend.cu
// routes to; each routes on op.kind.
#pragma once

#include <span>

#include "crisp/backend.h"

namespace crisp::cuda {

using In = std::span<const Array>;
using Out = std::span<Array>;

void run_creation(const Op& op, In in, Out out);     // creation.cu: with dropout
void run_elementwise(const Op& op, In in, Out out);  // elementwise.cu: unary, binary, where, copy
void run_reduce(const Op& op, In in, Out out);       // reduce.cu
void run_axis(const Op& op, In in, Out out);         // axis.cu: softmax, cumsum, sort
void run_matmul(const Op& op, In in, Out out);       // matmul.cu
void run_indexing(const Op& op, In in, Out out);     // indexing.cu: gather, scatter, layout ops
void run_conv(const Op& op, In in, Out out);         // conv/plan.cu: picks a conv/ strategy
void run_channel_sum(const Op& op, In in, Out out);  // conv/channel_sum.cu
void run_pool(const Op& op, In in, Out out);         // pool.cu
void run_norm(const Op& op, In in, Out out);         // norm.cu
void run_embedding(const Op& op, In in, Out out);    // embedding.cu
void run_loss(const Op& op, In in, Out out);         // loss.cu: nll_loss
void run_optim(const Op& op, In in, Out out);        // optim.cu: fused optimizer steps

}  // namespace crisp::cuda
