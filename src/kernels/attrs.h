// What the typed attribute structs of src/kernels share: the check of an op's value counts in
// from_op, so a malformed op fails with one message whatever its family.
#pragma once

#include <cstddef>

#include "crisp/backend.h"
#include "crisp/error.h"

namespace crisp {

// Fails unless op carries ints_min..ints_max ints and exactly `reals` reals.
inline void check_counts(const Op& op, size_t ints_min, size_t ints_max, size_t reals) {
  if (op.ints.size() < ints_min || op.ints.size() > ints_max || op.reals.size() != reals)
    fail("malformed ", op_name(op.kind), " op: ", op.ints.size(), " ints and ", op.reals.size(),
         " reals");
}

}  // namespace crisp
