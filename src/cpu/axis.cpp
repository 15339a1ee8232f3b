// CPU kernels: along_axis family (placeholder until implemented).
#include "cpu/kernels.h"

namespace crisp::cpu {

void along_axis(const Op& op, In in, Out) {
  unsupported(op, in.empty() ? DType::f32 : in[0].dtype);
}

}  // namespace crisp::cpu
