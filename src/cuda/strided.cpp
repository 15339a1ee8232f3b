// The layouts of strided arrays as CUDA kernels see them (see strided.cuh).
#include "cuda/strided.cuh"

#include "crisp/error.h"

namespace crisp::cuda {

namespace {

void push_axis(Strided& s, int64_t n, int64_t st) {
  if (n == 1) return;
  if (s.nd > 0 && s.strides[s.nd - 1] == st * n) {
    s.shape[s.nd - 1] *= n;
    s.strides[s.nd - 1] = st;
    return;
  }
  if (s.nd == kMaxDims)
    fail("arrays of more than ", kMaxDims, " dimensions are not supported on CUDA");
  s.shape[s.nd] = n;
  s.strides[s.nd] = st;
  ++s.nd;
}

}  // namespace

Strided strided(const Array& a) { return strided(a, a.shape); }

Strided strided(const Array& a, const Shape& shape) {
  Strided s{};
  s.offset = a.offset;
  const size_t lead = shape.size() - a.shape.size();
  for (size_t d = 0; d < shape.size(); ++d) {
    const bool own = d >= lead && a.shape[d - lead] == shape[d];
    push_axis(s, shape[d], own ? a.strides[d - lead] : 0);
  }
  return s;
}

void strided_together(const Shape& shape, std::span<const Array* const> arrays, Strided* out) {
  const size_t n = arrays.size();
  for (size_t k = 0; k < n; ++k) {
    out[k] = Strided{};
    out[k].offset = arrays[k]->offset;
  }
  int nd = 0;
  auto stride_of = [&](size_t k, size_t d) -> int64_t {
    const Array& a = *arrays[k];
    const size_t lead = shape.size() - a.shape.size();
    return d >= lead && a.shape[d - lead] == shape[d] ? a.strides[d - lead] : 0;
  };
  for (size_t d = 0; d < shape.size(); ++d) {
    const int64_t len = shape[d];
    if (len == 1) continue;
    bool merge = nd > 0;
    for (size_t k = 0; k < n && merge; ++k) merge = out[k].strides[nd - 1] == stride_of(k, d) * len;
    if (merge) {
      for (size_t k = 0; k < n; ++k) {
        out[k].shape[nd - 1] *= len;
        out[k].strides[nd - 1] = stride_of(k, d);
      }
      continue;
    }
    if (nd == kMaxDims)
      fail("arrays of more than ", kMaxDims, " dimensions are not supported on CUDA");
    for (size_t k = 0; k < n; ++k) {
      out[k].shape[nd] = len;
      out[k].strides[nd] = stride_of(k, d);
    }
    ++nd;
  }
  for (size_t k = 0; k < n; ++k) out[k].nd = nd;
}

}  // namespace crisp::cuda
