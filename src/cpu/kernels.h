// The CPU backend's kernels: one entry point per op family, each routing on op.kind.
#pragma once

#include <span>

#include "crisp/backend.h"
#include "crisp/error.h"

namespace crisp::cpu {

using In = std::span<const Array>;
using Out = std::span<Array>;

// The entry point of each op family (src/kernels/families.h), which cpu_backend.cpp routes to.
void run_creation(const Op& op, In in, Out out);     // creation.cpp: with dropout
void run_elementwise(const Op& op, In in, Out out);  // elementwise.cpp: unary, binary, where, copy
void run_reduce(const Op& op, In in, Out out);       // reduce.cpp
void run_axis(const Op& op, In in, Out out);         // axis.cpp: softmax, cumsum, sort
void run_matmul(const Op& op, In in, Out out);       // matmul.cpp
void run_indexing(const Op& op, In in, Out out);     // indexing.cpp: routes to the two below
void run_conv(const Op& op, In in, Out out);         // conv.cpp
void run_channel_sum(const Op& op, In in, Out out);  // conv.cpp
void run_pool(const Op& op, In in, Out out);         // pool.cpp: max and average pooling
void run_norm(const Op& op, In in, Out out);         // norm.cpp: layer, RMS, group, batch norm
void run_embedding(const Op& op, In in, Out out);    // embedding.cpp
void run_loss(const Op& op, In in, Out out);         // loss.cpp: nll_loss
void run_optim(const Op& op, In in, Out out);        // optim.cpp: fused optimizer updates

void layout_ops(const Op& op, In in, Out out);  // layout.cpp: concat, pad, flip, tril, triu
void gather_ops(const Op& op, In in, Out out);  // gather.cpp: gather, scatter, assign_strided

// Copies src (any layout, any dtype) into dst (contiguous, of src's shape), converting the dtype:
// the copy op.
inline void copy_to_contiguous(const Array& src, Array& dst) {
  run_elementwise(Op{OpKind::copy}, std::span<const Array>(&src, 1), std::span<Array>(&dst, 1));
}

[[noreturn]] inline void unsupported(const Op& op, DType dtype) {
  fail(op_name(op.kind), " is not supported for ", dtype_name(dtype), " on the CPU");
}

}  // namespace crisp::cpu
