// CPU loop machinery: a parallel-for and an n-ary strided elementwise loop whose innermost run
// is a plain (vectorizable) loop whenever the operands are contiguous there.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "core/thread_pool.h"
#include "crisp/backend.h"
#include "kernels/compute_type.h"

namespace crisp::cpu {

// Below this much work a loop stays on the calling thread: waking threads costs more.
inline constexpr int64_t kParallelGrain = 32768;

// Calls f(begin, end) over [0, n) split across threads when cost (elements touched) is large.
template <class F>
void parallel_for(int64_t n, int64_t cost, F&& f) {
  if (n <= 0) return;
  const int64_t threads =
      std::min<int64_t>(num_threads(), std::max<int64_t>(1, cost / kParallelGrain));
  if (threads <= 1 || n == 1 || in_parallel()) {
    f(int64_t{0}, n);
    return;
  }
  const int64_t t = std::min<int64_t>(threads, n);
  run_parallel(t, [&](int64_t i) {
    const int64_t b = n * i / t, e = n * (i + 1) / t;
    if (b < e) f(b, e);
  });
}

// Shape and per-operand strides with mergeable axes merged and size-1 axes dropped.
template <size_t N>
struct Layout {
  Shape shape;
  std::array<Shape, N> strides;
};

template <size_t N>
Layout<N> simplify(const Shape& shape, const std::array<const Shape*, N>& strides) {
  Layout<N> out;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = !out.shape.empty();
    for (size_t k = 0; k < N && merge; ++k)
      merge = out.strides[k].back() == (*strides[k])[d] * shape[d];
    if (merge) {
      out.shape.back() *= shape[d];
      for (size_t k = 0; k < N; ++k) out.strides[k].back() = (*strides[k])[d];
    } else {
      out.shape.push_back(shape[d]);
      for (size_t k = 0; k < N; ++k) out.strides[k].push_back((*strides[k])[d]);
    }
  }
  if (out.shape.empty()) {
    out.shape.push_back(1);
    for (size_t k = 0; k < N; ++k) out.strides[k].push_back(1);
  }
  return out;
}

// Runs f(ptrs, inner_strides, n) over every innermost run of the arrays, which share a shape.
// ptrs are typed element pointers; strides count elements.
template <class... T, class F>
void strided_runs(const Shape& shape, const std::array<const Shape*, sizeof...(T)>& strides,
                  std::tuple<T*...> base, F&& f) {
  constexpr size_t N = sizeof...(T);
  Layout<N> L = simplify<N>(shape, strides);
  const size_t nd = L.shape.size();
  const int64_t inner = L.shape[nd - 1];
  int64_t outer = 1;
  for (size_t d = 0; d + 1 < nd; ++d) outer *= L.shape[d];
  if (outer == 0 || inner == 0) return;  // nothing to visit, and no runs to cut into pieces
  // Long runs are cut into pieces so that few runs (a contiguous tensor is one) still spread
  // over every thread.
  const int64_t piece = outer >= 64 ? inner : std::min<int64_t>(inner, 1 << 16);
  const int64_t pieces = (inner + piece - 1) / piece;
  std::array<int64_t, N> st;
  for (size_t k = 0; k < N; ++k) st[k] = L.strides[k][nd - 1];
  parallel_for(outer * pieces, outer * inner, [&](int64_t b, int64_t e) {
    for (int64_t w = b; w < e; ++w) {
      const int64_t o = w / pieces, first = (w % pieces) * piece;
      // Offsets of run o, from its multi-index over the outer axes.
      std::array<int64_t, N> off{};
      int64_t rem = o;
      for (size_t d = nd - 1; d-- > 0;) {
        const int64_t i = rem % L.shape[d];
        rem /= L.shape[d];
        for (size_t k = 0; k < N; ++k) off[k] += i * L.strides[k][d];
      }
      for (size_t k = 0; k < N; ++k) off[k] += first * st[k];
      [&]<size_t... K>(std::index_sequence<K...>) {
        f(std::tuple<T*...>{std::get<K>(base) + off[K]...}, st, std::min(piece, inner - first));
      }
      (std::make_index_sequence<N>{});
    }
  });
}

// out[i] = op(in[i]...) for arrays of one shape; `out` is contiguous.
template <class Out, class... In, class Fn>
void map(const Array& out, Fn&& op, const std::array<const Array*, sizeof...(In)>& in) {
  constexpr size_t N = sizeof...(In);
  std::array<const Shape*, N + 1> strides;
  strides[0] = &out.strides;
  for (size_t k = 0; k < N; ++k) strides[k + 1] = &in[k]->strides;
  auto base = [&]<size_t... K>(std::index_sequence<K...>) {
    return std::tuple<Out*, const In*...>{out.data<Out>(), in[K]->template data<In>()...};
  }
  (std::make_index_sequence<N>{});
  strided_runs(out.shape, strides, base, [&](auto ptrs, const auto& st, int64_t n) {
    Out* o = std::get<0>(ptrs);
    auto ins = [&]<size_t... K>(std::index_sequence<K...>) {
      return std::tuple<const In*...>{std::get<K + 1>(ptrs)...};
    }
    (std::make_index_sequence<N>{});
    bool unit = true, unit_or_scalar = st[0] == 1;
    for (size_t k = 0; k <= N; ++k) unit = unit && st[k] == 1;
    for (size_t k = 1; k <= N; ++k) unit_or_scalar = unit_or_scalar && (st[k] == 1 || st[k] == 0);
    if (unit) {
      [&]<size_t... K>(std::index_sequence<K...>) {
        for (int64_t i = 0; i < n; ++i) o[i] = op(std::get<K>(ins)[i]...);
      }
      (std::make_index_sequence<N>{});
    } else if (unit_or_scalar) {
      // Broadcast scalars (x * 2, where(c, g, 0)) are repeated into a short buffer so that the
      // loop stays the plain, vectorizable one.
      constexpr int64_t kChunk = 256;
      std::tuple<std::array<In, kChunk>...> rep;
      [&]<size_t... K>(std::index_sequence<K...>) {
        ((st[K + 1] == 0 ? std::get<K>(rep).fill(*std::get<K>(ins)) : void()), ...);
        for (int64_t c = 0; c < n; c += kChunk) {
          const int64_t m = std::min(kChunk, n - c);
          const std::tuple<const In*...> p{
              (st[K + 1] == 0 ? std::get<K>(rep).data() : std::get<K>(ins) + c)...};
          Out* oc = o + c;
          for (int64_t i = 0; i < m; ++i) oc[i] = op(std::get<K>(p)[i]...);
        }
      }
      (std::make_index_sequence<N>{});
    } else {
      [&]<size_t... K>(std::index_sequence<K...>) {
        for (int64_t i = 0; i < n; ++i) o[i * st[0]] = op(std::get<K>(ins)[i * st[K + 1]]...);
      }
      (std::make_index_sequence<N>{});
    }
  });
}

using crisp::compute_t;

}  // namespace crisp::cpu
