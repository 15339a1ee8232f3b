// CPU kernels for ops along one axis: softmax/log_softmax and their backward passes, cumsum,
// cumprod (and its zero-safe backward), stable sort.
#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/loops.h"
#include "kernels/axis.h"

namespace crisp::cpu {

namespace {

// The lines of an array along axis: for line l, the element offset of its first element.
struct Lines {
  Shape shape, strides;  // every axis but `axis`
  int64_t n = 0, stride = 0, count = 0;

  Lines(const Array& a, int64_t axis) {
    for (int64_t d = 0; d < a.ndim(); ++d) {
      if (d == axis) continue;
      shape.push_back(a.shape[static_cast<size_t>(d)]);
      strides.push_back(a.strides[static_cast<size_t>(d)]);
    }
    n = a.ndim() == 0 ? 1 : a.shape[static_cast<size_t>(axis)];
    stride = a.ndim() == 0 ? 1 : a.strides[static_cast<size_t>(axis)];
    count = numel_of(shape);
  }
  int64_t offset(int64_t l) const {
    int64_t off = 0;
    for (size_t d = shape.size(); d-- > 0;) {
      off += (l % shape[d]) * strides[d];
      l /= shape[d];
    }
    return off;
  }
};

// Calls f(line_in..., line_out, n) with each line copied into contiguous buffers of type W;
// f fills the output buffer, which is then stored (converted) into out.
template <class T, class W, class F>
void per_line(const Array& out, int64_t axis, std::initializer_list<const Array*> ins, F&& f) {
  const Lines lo(out, axis);
  std::vector<Lines> li;
  for (const Array* a : ins) li.emplace_back(*a, axis);
  const int64_t n = lo.n;
  if (n == 0) return;
  parallel_for(lo.count, lo.count * n * 4, [&](int64_t b, int64_t e) {
    std::vector<std::vector<W>> buf(ins.size(), std::vector<W>(static_cast<size_t>(n)));
    std::vector<W> res(static_cast<size_t>(n));
    for (int64_t l = b; l < e; ++l) {
      size_t k = 0;
      for (const Array* a : ins) {
        const T* p = a->data<T>() + li[k].offset(l);
        const int64_t st = li[k].stride;
        W* q = buf[k].data();
        for (int64_t i = 0; i < n; ++i) q[i] = static_cast<W>(static_cast<compute_t<T>>(p[i * st]));
        ++k;
      }
      f(buf, res.data(), n);
      T* o = out.data<T>() + lo.offset(l);
      for (int64_t i = 0; i < n; ++i)
        o[i * lo.stride] = static_cast<T>(static_cast<compute_t<T>>(res[static_cast<size_t>(i)]));
    }
  });
}

template <class T>
void float_ops(const Op& op, In in, const Array& out, int64_t axis) {
  using W = std::conditional_t<std::is_same_v<T, double>, double, float>;
  using Bufs = std::vector<std::vector<W>>;
  switch (op.kind) {
    case OpKind::softmax:
    case OpKind::log_softmax: {
      const bool log = op.kind == OpKind::log_softmax;
      return per_line<T, W>(out, axis, {&in[0]}, [log](const Bufs& b, W* y, int64_t n) {
        const W* x = b[0].data();
        W m = -INFINITY;
        for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
        double s = 0;
        for (int64_t i = 0; i < n; ++i) {
          y[i] = std::exp(x[i] - m);
          s += y[i];
        }
        if (log) {
          const W shift = m + static_cast<W>(std::log(s));
          for (int64_t i = 0; i < n; ++i) y[i] = x[i] - shift;
        } else {
          const W inv = static_cast<W>(1 / s);
          for (int64_t i = 0; i < n; ++i) y[i] *= inv;
        }
      });
    }
    case OpKind::softmax_backward:
    case OpKind::log_softmax_backward: {
      const bool log = op.kind == OpKind::log_softmax_backward;
      return per_line<T, W>(out, axis, {&in[0], &in[1]}, [log](const Bufs& b, W* dx, int64_t n) {
        const W* y = b[0].data();
        const W* g = b[1].data();
        double s = 0;
        if (log) {
          for (int64_t i = 0; i < n; ++i) s += g[i];
          for (int64_t i = 0; i < n; ++i) dx[i] = g[i] - std::exp(y[i]) * static_cast<W>(s);
        } else {
          for (int64_t i = 0; i < n; ++i) s += static_cast<double>(g[i]) * y[i];
          for (int64_t i = 0; i < n; ++i) dx[i] = y[i] * (g[i] - static_cast<W>(s));
        }
      });
    }
    case OpKind::cumprod_backward:
      // dx_i = sum_{j>=i} g_j y_j / x_i before the first zero z; at z, the products skipping
      // x_z; after z, 0 (every product still holds x_z).
      return per_line<T, double>(
          out, axis, {&in[0], &in[1]},
          [](const std::vector<std::vector<double>>& b, double* dx, int64_t n) {
            const double* x = b[0].data();
            const double* g = b[1].data();
            int64_t z = 0;
            while (z < n && x[z] != 0) ++z;
            std::vector<double> y(static_cast<size_t>(n));
            double run = 1;
            for (int64_t i = 0; i < n; ++i) y[static_cast<size_t>(i)] = run *= x[i];
            double acc = 0;
            for (int64_t i = n; i-- > 0;) {
              acc += g[i] * y[static_cast<size_t>(i)];
              dx[i] = i < z ? acc / x[i] : 0;
            }
            if (z < n) {
              double p = z > 0 ? y[static_cast<size_t>(z - 1)] : 1, s = 0;
              for (int64_t j = z; j < n; ++j) {
                if (j > z) p *= x[j];
                s += g[j] * p;
              }
              dx[z] = s;
            }
          });
    default:
      break;
  }
  unsupported(op, in[0].dtype);
}

// NaN sorts after every number, as in PyTorch.
template <class C>
bool sort_less(C a, C b) {
  if constexpr (std::is_floating_point_v<C>) {
    if (std::isnan(b)) return !std::isnan(a);
    if (std::isnan(a)) return false;
  }
  return a < b;
}

template <class T>
void sort_kernel(const Array& x, const Array& values, const Array& indices, int64_t axis,
                 bool descending) {
  using C = compute_t<T>;
  const Lines lx(x, axis), lv(values, axis);
  const int64_t n = lx.n;
  if (n == 0) return;
  parallel_for(lx.count, lx.count * n * 8, [&](int64_t b, int64_t e) {
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::unique_ptr<C[]> key(new C[static_cast<size_t>(n)]);  // not vector: vector<bool>
    for (int64_t l = b; l < e; ++l) {
      const T* p = x.data<T>() + lx.offset(l);
      for (int64_t i = 0; i < n; ++i)
        key[static_cast<size_t>(i)] = static_cast<C>(p[i * lx.stride]);
      std::iota(order.begin(), order.end(), int64_t{0});
      const C* k = key.get();
      if (descending) {
        std::stable_sort(order.begin(), order.end(),
                         [k](int64_t i, int64_t j) { return sort_less(k[j], k[i]); });
      } else {
        std::stable_sort(order.begin(), order.end(),
                         [k](int64_t i, int64_t j) { return sort_less(k[i], k[j]); });
      }
      T* v = values.data<T>() + lv.offset(l);
      int64_t* ix = indices.data<int64_t>() + lv.offset(l);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t s = order[static_cast<size_t>(i)];
        v[i * lv.stride] = p[s * lx.stride];
        ix[i * lv.stride] = s;
      }
    }
  });
}

template <class T, class O>
void scan(const Array& x, const Array& out, int64_t axis, bool product) {
  using C = compute_t<T>;
  using A = std::conditional_t<std::is_floating_point_v<C>, double, int64_t>;
  const Lines lx(x, axis), lo(out, axis);
  const int64_t n = lx.n;
  parallel_for(lx.count, lx.count * n, [&](int64_t b, int64_t e) {
    for (int64_t l = b; l < e; ++l) {
      const T* p = x.data<T>() + lx.offset(l);
      O* o = out.data<O>() + lo.offset(l);
      A acc = product ? 1 : 0;
      for (int64_t i = 0; i < n; ++i) {
        const A v = static_cast<A>(static_cast<C>(p[i * lx.stride]));
        acc = product ? acc * v : acc + v;
        o[i * lo.stride] = static_cast<O>(static_cast<compute_t<O>>(acc));
      }
    }
  });
}

}  // namespace

void run_axis(const Op& op, In in, Out out) {
  const AxisAttrs attrs = AxisAttrs::from_op(op);
  const int64_t axis = attrs.axis;
  const Array& x = in[0];
  if (out[0].numel() == 0) return;
  visit_dtype(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    using C = compute_t<T>;
    switch (op.kind) {
      case OpKind::cumsum:
      case OpKind::cumprod:
        if constexpr (std::is_same_v<T, bool>) {
          return scan<T, int64_t>(x, out[0], axis, op.kind == OpKind::cumprod);
        } else {
          return scan<T, T>(x, out[0], axis, op.kind == OpKind::cumprod);
        }
      case OpKind::sort:
        return sort_kernel<T>(x, out[0], out[1], axis, attrs.descending);
      default:
        if constexpr (std::is_floating_point_v<C>) {
          return float_ops<T>(op, in, out[0], axis);
        } else {
          unsupported(op, x.dtype);
        }
    }
  });
}

}  // namespace crisp::cpu
