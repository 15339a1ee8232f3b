// The type arithmetic on a stored type happens in, the same on both backends.
#pragma once

#include <type_traits>

namespace crisp {

// float for the 16-bit floats (class types in storage on both backends), the stored type
// otherwise (bool, the integers, float, double).
template <class T>
using compute_t = std::conditional_t<std::is_arithmetic_v<T>, T, float>;

}  // namespace crisp
