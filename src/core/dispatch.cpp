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

Tensor from_host(const void* data, Shape shape, DType dtype) {
  Backend& backend = current_backend();
  auto impl = std::make_shared<TensorImpl>();
  const size_t nbytes = static_cast<size_t>(numel_of(shape)) * itemsize(dtype);
  impl->array = Array{backend.allocate(nbytes), shape, contiguous_strides(shape), 0, dtype};
  if (nbytes) backend.write(data, nbytes, *impl->array.storage);
  return Tensor(std::move(impl));
}

}  // namespace crisp
