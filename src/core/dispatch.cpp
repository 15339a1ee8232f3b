// The one dispatch point: every op reaches a backend here, as an Op descriptor.
#include <new>

#include "core/tensor_impl.h"

namespace crisp {

namespace {

// Moves a to backend `to` (through host memory) when it lives elsewhere.
Array on_backend(const Array& a, Backend& to) {
  if (!a.storage || a.storage->backend == &to) return a;
  const size_t nbytes = static_cast<size_t>(a.numel()) * itemsize(a.dtype);
  std::vector<char> host(nbytes);
  a.storage->backend->read(a, host.data());
  Array out{to.allocate(nbytes), a.shape, contiguous_strides(a.shape), 0, a.dtype};
  to.write(host.data(), nbytes, *out.storage);
  return out;
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

std::vector<Tensor> run(const Op& op, const Tensor* in, size_t nin, const OutSpec* outs,
                        size_t nout) {
  Backend& backend = current_backend();
  std::exception_ptr error;
  std::vector<Array> in_arrays;
  in_arrays.reserve(nin);
  for (size_t i = 0; i < nin; ++i) {
    check_defined(in[i]);
    const TensorImpl& impl = *in[i].impl();
    if (impl.error && !error) error = impl.error;
    in_arrays.push_back(impl.array);
  }
  std::vector<Array> out_arrays(nout);
  std::vector<Tensor> result;
  result.reserve(nout);
  for (size_t i = 0; i < nout; ++i) {
    Array& a = out_arrays[i];
    a.shape = outs[i].shape;
    a.strides = contiguous_strides(a.shape);
    a.dtype = outs[i].dtype;
  }
  if (!error) {
    try {
      for (Array& a : in_arrays) a = on_backend(a, backend);
      for (Array& a : out_arrays)
        a.storage = backend.allocate(static_cast<size_t>(a.numel()) * itemsize(a.dtype));
      backend.run(op, in_arrays, out_arrays);
    } catch (...) {
      error = as_error(op_name(op.kind));
    }
  }
  for (Array& a : out_arrays) {
    auto impl = std::make_shared<TensorImpl>();
    impl->array = std::move(a);
    impl->error = error;
    result.emplace_back(std::move(impl));
  }
  return result;
}

}  // namespace

std::vector<Tensor> dispatch(const Op& op, std::initializer_list<Tensor> inputs,
                             std::initializer_list<OutSpec> outputs) {
  return run(op, inputs.begin(), inputs.size(), outputs.begin(), outputs.size());
}

std::vector<Tensor> dispatch(const Op& op, const std::vector<Tensor>& inputs,
                             const std::vector<OutSpec>& outputs) {
  return run(op, inputs.data(), inputs.size(), outputs.data(), outputs.size());
}

Tensor dispatch(const Op& op, std::initializer_list<Tensor> inputs, Shape shape, DType dtype) {
  OutSpec spec{std::move(shape), dtype};
  return std::move(run(op, inputs.begin(), inputs.size(), &spec, 1)[0]);
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
