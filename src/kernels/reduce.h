// The plan of a reduction over a set of axes, as both backends walk it: the kept axes and the
// reduced axes of the input, each group with mergeable neighbours merged.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "crisp/backend.h"

namespace crisp {

struct ReducePlan {
  Shape keep, keep_strides;  // the output's axes, in order: the output is contiguous over them
  Shape red, red_strides;    // in decreasing stride order, so the innermost run is the most local
  int64_t n_out = 1, n_red = 1;
};

// Appends an axis of size n and stride st, merged into the last one when it continues it; size-1
// axes are dropped.
inline void push_merged_axis(Shape& shape, Shape& strides, int64_t n, int64_t st) {
  if (n == 1) return;
  if (!shape.empty() && strides.back() == st * n && shape.back() != 0 && n != 0) {
    shape.back() *= n;
    strides.back() = st;
    return;
  }
  shape.push_back(n);
  strides.push_back(st);
}

// The plan of reducing x over `axes` (each in [0, x.ndim()), no repeats). Reduced positions count
// in the plan's order: argmax and argmin report them so on every backend.
inline ReducePlan reduce_plan(const Array& x, const std::vector<int64_t>& axes) {
  ReducePlan p;
  std::vector<bool> reduced(static_cast<size_t>(x.ndim()), false);
  for (int64_t a : axes) reduced[static_cast<size_t>(a)] = true;
  std::vector<size_t> rorder;
  for (size_t d = 0; d < reduced.size(); ++d) {
    if (reduced[d])
      rorder.push_back(d);
    else
      push_merged_axis(p.keep, p.keep_strides, x.shape[d], x.strides[d]);
  }
  std::stable_sort(rorder.begin(), rorder.end(), [&](size_t a, size_t b) {
    return std::abs(x.strides[a]) > std::abs(x.strides[b]);
  });
  for (size_t d : rorder) push_merged_axis(p.red, p.red_strides, x.shape[d], x.strides[d]);
  for (int64_t n : p.keep) p.n_out *= n;
  for (int64_t n : p.red) p.n_red *= n;
  return p;
}

}  // namespace crisp
