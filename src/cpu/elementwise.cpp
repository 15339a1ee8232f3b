// CPU kernels for the elementwise family: unary and binary ops (arithmetic, comparisons, logic)
// over broadcast inputs, copy/cast and where, each computing the formula of src/kernels.
#include <atomic>
#include <cstring>
#include <type_traits>

#include "cpu/kernels.h"
#include "cpu/loops.h"
#include "kernels/elementwise.h"
#include "kernels/visit_size.h"

namespace crisp::cpu {

namespace {

template <class T>
void unary(const Op& op, const Array& x, const Array& o) {
  using C = compute_t<T>;
  const bool found = formula::visit_unary<T>(op, [&](auto f) {
    using O = formula::stored_t<T, decltype(f(C{}))>;
    map<O, T>(o, [f](T v) { return static_cast<O>(f(static_cast<C>(v))); }, {&x});
  });
  if (!found) unsupported(op, x.dtype);
}

// Integer division: floor division, a zero divisor found while computing and raised on read.
template <class T>
void divide_integers(const Array& a, const Array& b, const Array& o) {
  std::atomic<bool> zero = false;  // set from several threads
  map<T, T, T>(o,
               [&zero](T x, T y) {
                 if (y == 0) {
                   zero.store(true, std::memory_order_relaxed);
                   return T(0);
                 }
                 return formula::FloorDivide{}(x, y);
               },
               {&a, &b});
  if (zero) fail("integer division by zero");
}

template <class T>
void binary(const Op& op, const Array& a, const Array& b, const Array& o) {
  using C = compute_t<T>;
  if constexpr (std::is_integral_v<C> && !std::is_same_v<C, bool>) {
    if (op.kind == OpKind::div) return divide_integers<T>(a, b, o);
  }
  const bool found = formula::visit_binary<T>(op, [&](auto f) {
    using O = formula::stored_t<T, decltype(f(C{}, C{}))>;
    map<O, T, T>(o,
                 [f](T x, T y) { return static_cast<O>(f(static_cast<C>(x), static_cast<C>(y))); },
                 {&a, &b});
  });
  if (!found) unsupported(op, a.dtype);
}

template <class T>
void copy_kernel(const Array& x, const Array& o) {
  visit_dtype(o.dtype, [&](auto otag) {
    using O = decltype(otag);
    using CO = compute_t<O>;
    if (x.dtype == o.dtype && x.is_contiguous()) {
      const char* src = static_cast<const char*>(x.raw());
      char* dst = static_cast<char*>(o.raw());
      const int64_t n = x.numel() * static_cast<int64_t>(sizeof(T));
      parallel_for(n, n / 4, [&](int64_t b, int64_t e) {
        std::memcpy(dst + b, src + b, static_cast<size_t>(e - b));
      });
      return;
    }
    map<O, T>(o,
              [](T v) {
                if constexpr (std::is_same_v<O, bool>)
                  return static_cast<compute_t<T>>(v) != compute_t<T>(0);
                else
                  return static_cast<O>(static_cast<CO>(static_cast<compute_t<T>>(v)));
              },
              {&x});
  });
}

}  // namespace

void run_elementwise(const Op& op, In in, Out out) {
  const Array& o = out[0];
  if (o.numel() == 0) return;
  if (op.kind == OpKind::where) {
    // The condition is read as bytes, the values as unsigned bits of their size (WhereBits).
    return visit_size(o.dtype, [&](auto tag) {
      using U = decltype(tag);
      map<U, uint8_t, U, U>(o, formula::WhereBits{}, {&in[0], &in[1], &in[2]});
    });
  }
  visit_dtype(in[0].dtype, [&](auto tag) {
    using T = decltype(tag);
    if (op.kind == OpKind::copy) return copy_kernel<T>(in[0], o);
    if (op.kind < OpKind::unary_end) return unary<T>(op, in[0], o);
    binary<T>(op, in[0], in[1], o);
  });
}

}  // namespace crisp::cpu
