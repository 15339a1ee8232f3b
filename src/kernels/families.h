// The op families of op_kinds.inc: each backend runs the ops of a family through one entry point,
// run_<family>, and family_of tells which family an op kind belongs to.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "crisp/backend.h"

namespace crisp {

enum class Family : uint8_t {
#define CRISP_FAMILY(name) name,
#define CRISP_OP(name)
#include "crisp/op_kinds.inc"
#undef CRISP_OP
#undef CRISP_FAMILY
};

namespace detail {

inline constexpr size_t kOpKinds = 0
#define CRISP_OP(name) +1
#include "crisp/op_kinds.inc"
#undef CRISP_OP
    ;

// Each op kind's family: the CRISP_FAMILY line above it in op_kinds.inc.
inline constexpr std::array<Family, kOpKinds> kFamilyOf = [] {
  std::array<Family, kOpKinds> family_of{};
  size_t kind = 0;
  Family family{};
#define CRISP_FAMILY(name) family = Family::name;
#define CRISP_OP(name) family_of[kind++] = family;
#include "crisp/op_kinds.inc"
#undef CRISP_OP
#undef CRISP_FAMILY
  return family_of;
}();

}  // namespace detail

constexpr Family family_of(OpKind kind) { return detail::kFamilyOf[static_cast<size_t>(kind)]; }

}  // namespace crisp
