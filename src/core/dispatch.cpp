// The one dispatch point: every op reaches a backend here, as an Op descriptor.
#include <new>

#include "core/tensor_impl.h"

namespace crisp {

namespace {

// Moves a to backend `to` (through host memory) when it lives elsewhere.
void move_to(Array& a, Backend& to) {
  if (!a.storage || a.storage->backend == &to) return;
  const size_t nbytes = static_cast<size_t>(a.numel()) * itemsize(a.dtype);
  std::vector<char> host(nbytes);
  a.storage->backend->read(a, host.data());
  Array out{to.allocate(nbytes), a.shape, contiguous_strides(a.shape), 0, a.dtype};
  to.write(host.data(), nbytes, *out.storage);
  a = std::move(out);
}

std::exception_ptr as_error(const char* op) {
  try {
    throw;
  } catch (const Error&) {
    return std::current_exception();
  } catch (const std::bad_alloc&) {
    return std::make_exception_ptr(Error(std::string(op) + ": out of memory", current_trace()));
  } catch (const std::exception& e) {
    return std::make_exception_ptr(Error(std::string(op) + ": " + e.what(), current_trace()));
  }
}

// A shape whose byte size does not fit in 63 bits is a mistake in the caller's shape, not a
// failure to allocate: say so at once.
void check_size(const Shape& shape, DType dtype) {
  int64_t bytes = static_cast<int64_t>(itemsize(dtype));
  for (int64_t d : shape)
    if (d > 0 && __builtin_mul_overflow(bytes, d, &bytes))
      fail("shape ", shape_str(shape), " is too large");
}

// Small ops (the common case) keep their array lists on the stack.
constexpr size_t kInlineIn = 3, kInlineOut = 1;

// Runs op and stores its outputs in result[0..nout).
void run(const Op& op, const Tensor* in, size_t nin, const OutSpec* outs, size_t nout,
         Tensor* result) {
  Backend& backend = current_backend();
  std::exception_ptr error;
  Array in_inline[kInlineIn], out_inline[kInlineOut];
  std::vector<Array> in_heap, out_heap;
  if (nin > kInlineIn) in_heap.resize(nin);
  if (nout > kInlineOut) out_heap.resize(nout);
  Array* in_arrays = nin > kInlineIn ? in_heap.data() : in_inline;
  Array* out_arrays = nout > kInlineOut ? out_heap.data() : out_inline;
  for (size_t i = 0; i < nin; ++i) {
    check_defined(in[i]);
    const TensorImpl& impl = *in[i].impl();
    if (impl.error && !error) error = impl.error;
    in_arrays[i] = impl.array;
  }
  for (size_t i = 0; i < nout; ++i) {
    check_size(outs[i].shape, outs[i].dtype);
    Array& a = out_arrays[i];
    a.shape = outs[i].shape;
    a.strides = contiguous_strides(a.shape);
    a.dtype = outs[i].dtype;
  }
  if (!error) {
    try {
      for (size_t i = 0; i < nin; ++i) move_to(in_arrays[i], backend);
      for (size_t i = 0; i < nout; ++i) {
        Array& a = out_arrays[i];
        a.storage = backend.allocate(static_cast<size_t>(a.numel()) * itemsize(a.dtype));
      }
      backend.run(op, std::span<const Array>(in_arrays, nin), std::span<Array>(out_arrays, nout));
    } catch (...) {
      error = as_error(op_name(op.kind));
    }
  }
  for (size_t i = 0; i < nout; ++i) {
    auto impl = std::make_shared<TensorImpl>();
    impl->array = std::move(out_arrays[i]);
    impl->error = error;
    result[i] = Tensor(std::move(impl));
  }
}

}  // namespace

std::vector<Tensor> dispatch(const Op& op, std::initializer_list<Tensor> inputs,
                             std::initializer_list<OutSpec> outputs) {
  std::vector<Tensor> result(outputs.size());
  run(op, inputs.begin(), inputs.size(), outputs.begin(), outputs.size(), result.data());
  return result;
}

std::vector<Tensor> dispatch(const Op& op, const std::vector<Tensor>& inputs,
                             const std::vector<OutSpec>& outputs) {
  std::vector<Tensor> result(outputs.size());
  run(op, inputs.data(), inputs.size(), outputs.data(), outputs.size(), result.data());
  return result;
}

Tensor dispatch(const Op& op, std::initializer_list<Tensor> inputs, Shape shape, DType dtype) {
  OutSpec spec{std::move(shape), dtype};
  Tensor result;
  run(op, inputs.begin(), inputs.size(), &spec, 1, &result);
  return result;
}

Tensor make_view(const Tensor& x, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->array = x.impl()->array;
  impl->array.shape = std::move(shape);
  impl->array.strides = std::move(strides);
  impl->array.offset = offset;
  impl->error = x.impl()->error;
  return Tensor(std::move(impl));
}

// A view of x broadcast to shape (no copy, no autograd record).
Tensor broadcast_view(const Tensor& x, const Shape& shape) {
  if (x.shape() == shape) return x;
  const Array& a = x.impl()->array;
  const size_t lead = shape.size() - a.shape.size();
  Shape strides(shape.size(), 0);
  for (size_t i = lead; i < shape.size(); ++i)
    if (a.shape[i - lead] == shape[i]) strides[i] = a.strides[i - lead];
  return make_view(x, shape, std::move(strides), a.offset);
}

Tensor permuted(const Tensor& x, const std::vector<int64_t>& order) {
  const Array& a = x.impl()->array;
  Shape shape, strides;
  for (int64_t i : order) {
    shape.push_back(a.shape[static_cast<size_t>(i)]);
    strides.push_back(a.strides[static_cast<size_t>(i)]);
  }
  return make_view(x, std::move(shape), std::move(strides), a.offset);
}

Tensor unpermuted(const Tensor& x, const std::vector<int64_t>& order) {
  std::vector<int64_t> inverse(order.size());
  for (size_t i = 0; i < order.size(); ++i)
    inverse[static_cast<size_t>(order[i])] = static_cast<int64_t>(i);
  return permuted(x, inverse);
}

Tensor dispatch_in_layout(const Op& op, std::initializer_list<Tensor> inputs, DType dtype) {
  const Shape& shape = inputs.begin()->shape();
  for (const Tensor& t : inputs) {
    if (t.shape() != shape || t.ndim() != 4 || !is_channels_last(t)) continue;
    const std::vector<int64_t> order = channels_last_order(t.ndim());
    std::vector<Tensor> in;
    for (const Tensor& u : inputs) in.push_back(permuted(u, order));
    return unpermuted(dispatch(op, in, {{in[0].shape(), dtype}})[0], order);
  }
  return dispatch(op, inputs, shape, dtype);
}

std::vector<Tensor> dispatch_channels_last(const Op& op, const std::vector<Tensor>& inputs,
                                           const std::vector<OutSpec>& outputs) {
  std::vector<OutSpec> stored;
  for (const OutSpec& o : outputs) {
    stored.push_back({{}, o.dtype});
    for (int64_t i : channels_last_order(static_cast<int64_t>(o.shape.size())))
      stored.back().shape.push_back(o.shape[static_cast<size_t>(i)]);
  }
  std::vector<Tensor> out = dispatch(op, inputs, stored);
  for (Tensor& t : out) t = unpermuted(t, channels_last_order(t.ndim()));
  return out;
}

Tensor from_host(const void* data, Shape shape, DType dtype) {
  Backend& backend = current_backend();
  auto impl = std::make_shared<TensorImpl>();
  const size_t nbytes = static_cast<size_t>(numel_of(shape)) * itemsize(dtype);
  impl->array = Array{backend.allocate(nbytes), shape, contiguous_strides(shape), 0, dtype};
  if (nbytes) backend.write(data, nbytes, *impl->array.storage);
  return Tensor(std::move(impl));
}

}  // namespace crisp
