// The CPU backend's kernels, one entry per op family; each routes on op.kind.
#pragma once

#include <span>

#include "crisp/backend.h"
#include "crisp/error.h"

namespace crisp::cpu {

using In = std::span<const Array>;
using Out = std::span<Array>;

void creation(const Op& op, In in, Out out);     // elementwise.cpp
void elementwise(const Op& op, In in, Out out);  // elementwise.cpp: unary, binary, where
void reduce(const Op& op, In in, Out out);       // reduce.cpp
void along_axis(const Op& op, In in, Out out);   // axis.cpp: softmax, cumsum, sort
void linalg(const Op& op, In in, Out out);       // matmul.cpp
void indexing(const Op& op, In in, Out out);     // indexing.cpp: routes to the two below
void layout_ops(const Op& op, In in, Out out);   // layout.cpp: concat, pad, flip, tril, triu
void gather_ops(const Op& op, In in, Out out);   // gather.cpp: gather, scatter, assign_strided
void nn(const Op& op, In in, Out out);           // conv.cpp, pool.cpp, norm.cpp
void optim(const Op& op, In in, Out out);        // optim.cpp: fused optimizer updates

[[noreturn]] inline void unsupported(const Op& op, DType dtype) {
  fail(op_name(op.kind), " is not supported for ", dtype_name(dtype), " on the CPU");
}

}  // namespace crisp::cpu
