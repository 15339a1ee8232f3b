// CPU kernels: indexing family (placeholder until implemented).
#include "cpu/kernels.h"

namespace crisp::cpu {

void indexing(const Op& op, In in, Out) { unsupported(op, in.empty() ? DType::f32 : in[0].dtype); }

}  // namespace crisp::cpu
