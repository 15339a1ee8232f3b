// CPU kernels: the indexing family, routed to gather.cpp (by index) and layout.cpp (by layout).
#include "cpu/kernels.h"

namespace crisp::cpu {

void run_indexing(const Op& op, In in, Out out) {
  switch (op.kind) {
    case OpKind::index_select:
    case OpKind::gather:
    case OpKind::scatter:
    case OpKind::scatter_add:
    case OpKind::index_add:
    case OpKind::assign_strided:
      return gather_ops(op, in, out);
    default:
      return layout_ops(op, in, out);
  }
}

}  // namespace crisp::cpu
