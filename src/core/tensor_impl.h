// Library-internal: what a Tensor handle points to, the dispatch point, and autograd plumbing.
#pragma once

#include <algorithm>
#include <exception>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <vector>

#include "crisp/backend.h"
#include "crisp/ops.h"
#include "crisp/tensor.h"

namespace crisp {

// Returns one gradient per input of the op (undefined where an input needs none).
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad)>;

// The autograd record of a tensor: its backward closure and handles to its inputs' records.
struct GradNode {
  BackwardFn backward;                            // empty for leaves
  std::vector<std::shared_ptr<GradNode>> inputs;  // one per op input; null where none needed
  std::vector<GradCallback> callbacks;            // on_grad
  bool accumulates = false;                       // a requires_grad_ leaf: keeps grad()
  bool released = false;                          // backward already ran and freed it
  Tensor grad;                                    // accumulated (leaves only)
  std::mutex mutex;
  Shape shape;
  DType dtype;
  ~GradNode();
};

struct TensorImpl {
  Array array;
  std::exception_ptr error;  // set when computing the data failed; raised on read
  std::shared_ptr<GradNode> node;
};

// The backend ops run on for this thread (backends live as long as the process).
Backend& current_backend();

// ---- the dispatch point ----
struct OutSpec {
  Shape shape;
  DType dtype;
};
// Runs op on the current backend. Inputs computed elsewhere are moved there; an input that
// failed makes the outputs fail the same way without running anything.
std::vector<Tensor> dispatch(const Op& op, std::initializer_list<Tensor> inputs,
                             std::initializer_list<OutSpec> outputs);
Tensor dispatch(const Op& op, std::initializer_list<Tensor> inputs, Shape shape, DType dtype);
std::vector<Tensor> dispatch(const Op& op, const std::vector<Tensor>& inputs,
                             const std::vector<OutSpec>& outputs);

// A tensor sharing x's data under a new layout (no copy).
Tensor make_view(const Tensor& x, Shape shape, Shape strides, int64_t offset);
// A view of x broadcast to shape, for handing to a kernel (no copy, no autograd record).
Tensor broadcast_view(const Tensor& x, const Shape& shape);
// A tensor of host values, on the current backend.
Tensor from_host(const void* data, Shape shape, DType dtype);

// ---- layouts ----
// A view of x with its axes in order, and its inverse (no copy, no autograd record).
Tensor permuted(const Tensor& x, const std::vector<int64_t>& order);
Tensor unpermuted(const Tensor& x, const std::vector<int64_t>& order);
// Runs an op whose one output has the shape of its inputs; when an input of that shape is a
// 4-d tensor stored channels-last, the output is too (the backend sees permuted, contiguous
// views). Only 4-d: a 3-d "channels-last" tensor is as often a batch of transposed matrices.
Tensor dispatch_in_layout(const Op& op, std::initializer_list<Tensor> inputs, DType dtype);
// Runs an op that stores its outputs channels-last (one of its ints says so): outputs gives
// their [N, C, *spatial] shapes, and the results are views in those shapes.
std::vector<Tensor> dispatch_channels_last(const Op& op, const std::vector<Tensor>& inputs,
                                           const std::vector<OutSpec>& outputs);

// ---- autograd ----
// Attaches backward to out when grad mode is on and some input needs a gradient; the closure
// must capture only detached tensors (detach()), never out or inputs with their records.
Tensor with_grad(Tensor out, std::initializer_list<Tensor> inputs, BackwardFn backward);
Tensor with_grad(Tensor out, const std::vector<Tensor>& inputs, BackwardFn backward);
bool any_requires_grad(std::initializer_list<Tensor> inputs);

// Sums a broadcast gradient back down to shape.
Tensor reduce_to(const Tensor& grad, const Shape& shape);

// ---- helpers for op front ends ----
// What a backward closure returns: one gradient per input (undefined where none is needed).
using Grads = std::vector<Tensor>;
// An optional parameter of an op (a norm's or loss's weight), checked to have dtype and shape.
std::optional<Tensor> checked_param(const std::optional<Tensor>& t, DType dtype, const Shape& shape,
                                    const char* what);
// A per-dimension parameter given once (applies to every dim) or once per dim, each at least min.
std::vector<int64_t> per_dim(const char* what, const std::vector<int64_t>& v, int64_t nd,
                             int64_t min);
int64_t normalize_axis(int64_t axis, int64_t ndim);
std::vector<int64_t> normalize_axes(const Axes& axes, int64_t ndim);
std::string shape_str(const Shape& s);
void check_same_dtype(const Tensor& a, const Tensor& b);
void check_floating(const Tensor& x);
void check_defined(const Tensor& x, const char* what = "input");
// The broadcast of two shapes; unlike the public broadcast_shapes it opens no call scope, so
// a mismatch is reported as an error of the op that broadcasts ("add: shapes ...").
inline Shape broadcast_shape(const Shape& a, const Shape& b) {
  Shape out(std::max(a.size(), b.size()));
  for (size_t i = 0; i < out.size(); ++i) {
    const int64_t da = i < out.size() - a.size() ? 1 : a[i - (out.size() - a.size())];
    const int64_t db = i < out.size() - b.size() ? 1 : b[i - (out.size() - b.size())];
    if (da != db && da != 1 && db != 1)
      fail("shapes ", shape_str(a), " and ", shape_str(b), " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}
// A scalar operand as a 0-d tensor of dtype.
Tensor operand_tensor(const Operand& o, DType dtype);

}  // namespace crisp
