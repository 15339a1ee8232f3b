// Element moves by size: ops that only copy elements (gathers, scatters, layout ops, selects) run
// on an unsigned type of the element's size, so one instantiation serves every dtype of a size.
#pragma once

#include <cstdint>

#include "crisp/dtype.h"

namespace crisp {

// Calls f(U{}) with U the unsigned integer type of dtype's element size.
template <class F>
void visit_size(DType dtype, F&& f) {
  switch (itemsize(dtype)) {
    case 1:
      return f(uint8_t{});
    case 2:
      return f(uint16_t{});
    case 4:
      return f(uint32_t{});
    default:
      return f(uint64_t{});
  }
}

}  // namespace crisp
