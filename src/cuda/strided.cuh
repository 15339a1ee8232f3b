// Strided arrays as CUDA kernels see them, and contiguous copies for kernels that want them.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <span>

#include "crisp/backend.h"
#include "cuda/buffer.cuh"

namespace crisp::cuda {

inline constexpr int kMaxDims = 10;

// A strided view as kernels see it (passed by value). Strides count elements.
struct Strided {
  int nd;
  int64_t shape[kMaxDims];
  int64_t strides[kMaxDims];
  int64_t offset;

  // Element offset of the element at row-major position i of shape.
  __host__ __device__ int64_t at(int64_t i) const {
    int64_t off = offset;
    for (int d = nd - 1; d > 0; --d) {
      const int64_t q = i / shape[d];
      off += (i - q * shape[d]) * strides[d];
      i = q;
    }
    return nd > 0 ? off + i * strides[0] : off;
  }
};

// a's layout; with `shape`, a's layout broadcast to it (a's axes align with shape's last ones).
// Size-1 axes are dropped and mergeable ones merged; throws crisp::Error beyond kMaxDims.
Strided strided(const Array& a);
Strided strided(const Array& a, const Shape& shape);
// Several arrays viewed over one shape, with axes merged only where every one of them allows,
// so position i means the same element in each (for n-ary elementwise kernels).
void strided_together(const Shape& shape, std::span<const Array* const> arrays, Strided* out);

// Copies src (any layout, any dtype) into contiguous dst of the same shape, converting the
// dtype: the copy op, for kernels that want contiguous inputs (elementwise.cu).
void copy_to_contiguous(const Array& src, const Array& dst);
// A contiguous version of a (a itself when already contiguous), backed by `keep` if copied.
Array contiguous(const Array& a, Buffer& keep);
// a [N, C, *spatial] as its channels-last storage, contiguous [N, *spatial, C]: a's own memory
// when it is stored so, else a copy backed by `keep`.
Array channels_last_storage(const Array& a, Buffer& keep);

}  // namespace crisp::cuda
