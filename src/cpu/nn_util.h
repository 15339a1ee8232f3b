// What the CPU kernels of the nn families (conv, pool, norm, embedding, loss) share: dense
// compute-type copies of strided inputs, typed output buffers, the channels-last fallback.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <type_traits>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/loops.h"
#include "kernels/channels_last.h"

namespace crisp::cpu {

// An Array over borrowed host memory (never freed through a backend).
inline Array borrowed(void* data, const Shape& shape, DType dtype) {
  Array a;
  a.storage = std::make_shared<Storage>(data, 0, nullptr);
  a.shape = shape;
  a.strides = contiguous_strides(shape);
  a.dtype = dtype;
  return a;
}

// An op whose outputs are stored channels-last (stores_channels_last), run by family in the
// usual layout, the outputs then permuted into place.
template <class F>
void run_in_usual_layout(const Op& op, In in, Out out, F&& family) {
  const Op plain = in_usual_layout(op);
  std::vector<std::vector<std::byte>> bufs;
  std::vector<Array> logical;
  for (const Array& o : out) {
    bufs.emplace_back(static_cast<size_t>(o.numel()) * itemsize(o.dtype));
    logical.push_back(
        borrowed(bufs.back().data(), permuted(o, channels_first_order(o.ndim())).shape, o.dtype));
  }
  family(plain, in, std::span<Array>(logical));
  for (size_t i = 0; i < out.size(); ++i) {
    const Array src = permuted(logical[i], channels_last_order(logical[i].ndim()));
    copy_to_contiguous(src, out[i]);
  }
}

template <class C>
constexpr DType compute_dtype = std::is_same_v<C, double>    ? DType::f64
                                : std::is_same_v<C, int64_t> ? DType::i64
                                                             : DType::f32;

// The elements of `a` as a contiguous array of C (float, double, or int64_t for indices): a
// pointer into `a` itself when it already is one, else a converted copy.
template <class C>
class ContiguousAs {
 public:
  explicit ContiguousAs(const Array& a) {
    if (a.dtype == compute_dtype<C> && a.is_contiguous()) {
      ptr_ = a.data<C>();
      return;
    }
    copy_.resize(static_cast<size_t>(a.numel()));
    Array dst = borrowed(copy_.data(), a.shape, compute_dtype<C>);
    copy_to_contiguous(a, dst);
    ptr_ = copy_.data();
  }
  const C* data() const { return ptr_; }
  const C& operator[](int64_t i) const { return ptr_[i]; }

 private:
  const C* ptr_ = nullptr;
  std::vector<C> copy_;
};

// The first out-of-range index a parallel loop met (exceptions must not leave the loop).
struct BadIndex {
  std::atomic<bool> seen{false};
  std::atomic<int64_t> value{0};
  void note(int64_t v) {
    if (!seen.exchange(true)) value = v;
  }
};

// Where a kernel writes an output of compute type C: the output itself when its dtype is C,
// else a buffer converted into it by finish().
template <class C>
class Result {
 public:
  explicit Result(Array& a) : out_(&a) {
    if (a.dtype == compute_dtype<C>) {
      ptr_ = a.data<C>();
    } else {
      buf_.resize(static_cast<size_t>(a.numel()));
      ptr_ = buf_.data();
    }
  }
  C* data() const { return ptr_; }
  C& operator[](int64_t i) const { return ptr_[i]; }
  void finish() {
    if (buf_.empty()) return;
    Array src = borrowed(buf_.data(), out_->shape, compute_dtype<C>);
    copy_to_contiguous(src, *out_);
  }

 private:
  Array* out_;
  C* ptr_ = nullptr;
  std::vector<C> buf_;
};

// Runs f.template operator()<C>() with C = double for f64 data, float for the other floats.
template <class F>
void with_compute_type(const Op& op, DType dtype, F&& f) {
  if (dtype == DType::f64) return f.template operator()<double>();
  if (dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16)
    return f.template operator()<float>();
  unsupported(op, dtype);
}

}  // namespace crisp::cpu
