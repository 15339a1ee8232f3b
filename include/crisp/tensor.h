// Tensor: a value-semantic handle to an n-dimensional array computed by a backend.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <source_location>
#include <type_traits>
#include <variant>
#include <vector>

#include "crisp/backend.h"
#include "crisp/dtype.h"
#include "crisp/error.h"

namespace crisp {

struct TensorImpl;
class Tensor;

// A set of axes; the default means all of them.
struct Axes {
  std::vector<int64_t> axes;
  bool all = true;
  Axes() = default;
  Axes(int axis) : axes{axis}, all(false) {}
  Axes(int64_t axis) : axes{axis}, all(false) {}
  Axes(std::initializer_list<int64_t> a) : axes(a), all(false) {}
  Axes(std::vector<int64_t> a) : axes(std::move(a)), all(false) {}
};

// Index pieces: x[1, Slice(_, 3)], x[Ellipsis, -1], x[NewAxis], x[Permute(1, 0)], x[mask].
struct Unbounded {};
inline constexpr Unbounded _{};
struct EllipsisIndex {};
inline constexpr EllipsisIndex Ellipsis{};
struct NewAxisIndex {};
inline constexpr NewAxisIndex NewAxis{};

struct Bound {
  std::optional<int64_t> value;
  Bound(Unbounded) {}
  Bound(int v) : value(v) {}
  Bound(int64_t v) : value(v) {}
};

struct Slice {
  std::optional<int64_t> start, stop;
  int64_t step = 1;
  Slice(Bound start = _, Bound stop = _, int64_t step = 1)
      : start(start.value), stop(stop.value), step(step) {}
};

// Reorders the axes it covers: the next sizeof...(axes) axes of the result.
struct Permute {
  std::vector<int64_t> axes;
  template <class... I>
  explicit Permute(I... i) : axes{static_cast<int64_t>(i)...} {}
};

// One of the pieces above, or an integer, or an integer/boolean tensor.
struct Index {
  std::variant<int64_t, Slice, EllipsisIndex, NewAxisIndex, Permute, std::shared_ptr<Tensor>> item;
  Loc loc;
  Index(int i, Loc loc = Loc::current()) : item(int64_t{i}), loc(loc) {}
  Index(int64_t i, Loc loc = Loc::current()) : item(i), loc(loc) {}
  Index(Slice s, Loc loc = Loc::current()) : item(s), loc(loc) {}
  Index(EllipsisIndex e, Loc loc = Loc::current()) : item(e), loc(loc) {}
  Index(NewAxisIndex n, Loc loc = Loc::current()) : item(n), loc(loc) {}
  Index(Permute p, Loc loc = Loc::current()) : item(std::move(p)), loc(loc) {}
  Index(const Tensor& t, Loc loc = Loc::current());
};

// An operand of an arithmetic operator: a tensor or a scalar, plus where the operator was
// written, so that `a + b` is traced to the user's line.
struct Operand {
  const Tensor* tensor = nullptr;
  double scalar = 0;
  Loc loc;
  Operand(const Tensor& t, Loc loc = Loc::current()) : tensor(&t), loc(loc) {}
  Operand(int v, Loc loc = Loc::current()) : scalar(v), loc(loc) {}
  Operand(int64_t v, Loc loc = Loc::current()) : scalar(static_cast<double>(v)), loc(loc) {}
  Operand(float v, Loc loc = Loc::current()) : scalar(v), loc(loc) {}
  Operand(double v, Loc loc = Loc::current()) : scalar(v), loc(loc) {}
  Operand(bool v, Loc loc = Loc::current()) : scalar(v), loc(loc) {}
};

using GradCallback = std::function<void(const Tensor&)>;

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor; defined() is false

  // Values with a shape (default {-1}: 1-d; {} gives a 0-d tensor of one value) and a dtype
  // (default: from the C++ type; int -> int64).
  template <class T>
  Tensor(std::initializer_list<T> values, Shape shape = {-1}, std::optional<DType> dtype = {},
         Loc loc = Loc::current())
      : Tensor(values.begin(), values.size(), std::move(shape), dtype, loc) {}
  template <class T>
  Tensor(const std::vector<T>& values, Shape shape = {-1}, std::optional<DType> dtype = {},
         Loc loc = Loc::current())
      : Tensor(values.data(), values.size(), std::move(shape), dtype, loc) {}

  Tensor(const Tensor& other) : impl_(other.impl_) {}
  Tensor(Tensor&& other) noexcept : impl_(std::move(other.impl_)) {}
  Tensor& operator=(const Tensor& other) & {
    impl_ = other.impl_;
    return *this;
  }
  Tensor& operator=(Tensor&& other) & noexcept {
    impl_ = std::move(other.impl_);
    return *this;
  }
  // Assigning to an indexed tensor (`y[0] = v`) writes into the tensor it was taken from. A
  // tensor value converts to Operand, which records the caller's line for errors.
  void operator=(const Operand& value) && { assign_back(value); }

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  DType dtype() const;
  int64_t ndim() const;
  int64_t numel() const;
  int64_t size(int64_t axis, Loc loc = Loc::current()) const;
  std::shared_ptr<Backend> backend() const;

  // Reading waits for the data and raises any error met while computing it.
  template <class T>
  T item(Loc loc = Loc::current()) const {
    T v;
    read_into(&v, dtype_of<T>::value, 1, loc, true);
    return v;
  }
  template <class T>
  std::vector<T> to_vector(Loc loc = Loc::current()) const {
    const size_t n = static_cast<size_t>(numel_checked(loc));
    if constexpr (std::is_same_v<T, bool>) {  // vector<bool> has no contiguous data()
      std::vector<uint8_t> raw(n);
      read_into(raw.data(), DType::b8, n, loc, false);
      return std::vector<bool>(raw.begin(), raw.end());
    } else {
      std::vector<T> v(n);
      read_into(v.data(), dtype_of<T>::value, n, loc, false);
      return v;
    }
  }
  const Tensor& wait(Loc loc = Loc::current()) const;

  Tensor cast(DType dtype, Loc loc = Loc::current()) const;
  Tensor to(std::shared_ptr<Backend> backend, Loc loc = Loc::current()) const;
  Tensor contiguous(Loc loc = Loc::current()) const;
  Tensor clone(Loc loc = Loc::current()) const;
  bool is_contiguous() const;

  // Indexing (C++23 multidimensional subscript).
  Tensor operator[](Index a) const&;
  Tensor operator[](Index a, Index b) const&;
  Tensor operator[](Index a, Index b, Index c) const&;
  Tensor operator[](Index a, Index b, Index c, Index d) const&;
  Tensor operator[](Index a, Index b, Index c, Index d, Index e) const&;
  Tensor operator[](Index a) &;
  Tensor operator[](Index a, Index b) &;
  Tensor operator[](Index a, Index b, Index c) &;
  Tensor operator[](Index a, Index b, Index c, Index d) &;
  Tensor operator[](Index a, Index b, Index c, Index d, Index e) &;
  Tensor operator[](Index a) &&;
  Tensor operator[](Index a, Index b) &&;
  Tensor operator[](Index a, Index b, Index c) &&;
  Tensor operator[](Index a, Index b, Index c, Index d) &&;
  Tensor operator[](Index a, Index b, Index c, Index d, Index e) &&;
  Tensor index(const std::vector<Index>& indices, Loc loc = Loc::current()) const;
  // Returns a copy with x[indices] replaced by value (broadcast); differentiable.
  Tensor index_put(const std::vector<Index>& indices, const Operand& value,
                   Loc loc = Loc::current()) const;

  // In-place arithmetic rebinds this handle to the result (other handles keep the old value).
  Tensor& operator+=(const Operand& v) &;
  Tensor& operator-=(const Operand& v) &;
  Tensor& operator*=(const Operand& v) &;
  Tensor& operator/=(const Operand& v) &;
  void operator+=(const Operand& v) &&;
  void operator-=(const Operand& v) &&;
  void operator*=(const Operand& v) &&;
  void operator/=(const Operand& v) &&;

  // Shape.
  Tensor reshape(Shape shape, Loc loc = Loc::current()) const;
  Tensor flatten(int64_t start = 0, int64_t end = -1, Loc loc = Loc::current()) const;
  Tensor permute(std::vector<int64_t> axes, Loc loc = Loc::current()) const;
  Tensor transpose(int64_t a = -2, int64_t b = -1, Loc loc = Loc::current()) const;
  Tensor t(Loc loc = Loc::current()) const;  // transpose of the last two axes
  Tensor squeeze(Axes axes = {}, Loc loc = Loc::current()) const;
  Tensor unsqueeze(int64_t axis, Loc loc = Loc::current()) const;
  Tensor expand(Shape shape, Loc loc = Loc::current()) const;

  // Reductions; the default axes are all of them.
  Tensor sum(Axes axes = {}, bool keepdims = false, Loc loc = Loc::current()) const;
  Tensor mean(Axes axes = {}, bool keepdims = false, Loc loc = Loc::current()) const;
  Tensor prod(Axes axes = {}, bool keepdims = false, Loc loc = Loc::current()) const;
  Tensor max(Axes axes = {}, bool keepdims = false, Loc loc = Loc::current()) const;
  Tensor min(Axes axes = {}, bool keepdims = false, Loc loc = Loc::current()) const;
  Tensor argmax(std::optional<int64_t> axis = {}, bool keepdims = false,
                Loc loc = Loc::current()) const;
  Tensor argmin(std::optional<int64_t> axis = {}, bool keepdims = false,
                Loc loc = Loc::current()) const;
  Tensor var(Axes axes = {}, int64_t correction = 1, bool keepdims = false,
             Loc loc = Loc::current()) const;
  Tensor std(Axes axes = {}, int64_t correction = 1, bool keepdims = false,
             Loc loc = Loc::current()) const;
  Tensor logsumexp(Axes axes = {}, bool keepdims = false, Loc loc = Loc::current()) const;
  Tensor all(Axes axes = {}, bool keepdims = false, Loc loc = Loc::current()) const;
  Tensor any(Axes axes = {}, bool keepdims = false, Loc loc = Loc::current()) const;
  Tensor softmax(int64_t axis = -1, Loc loc = Loc::current()) const;
  Tensor log_softmax(int64_t axis = -1, Loc loc = Loc::current()) const;

  // Common elementwise ops as methods.
  Tensor pow(const Operand& exponent, Loc loc = Loc::current()) const;
  Tensor sqrt(Loc loc = Loc::current()) const;
  Tensor exp(Loc loc = Loc::current()) const;
  Tensor log(Loc loc = Loc::current()) const;
  Tensor abs(Loc loc = Loc::current()) const;
  Tensor relu(Loc loc = Loc::current()) const;
  Tensor sigmoid(Loc loc = Loc::current()) const;
  Tensor tanh(Loc loc = Loc::current()) const;
  Tensor gelu(Loc loc = Loc::current()) const;
  Tensor matmul(const Tensor& other, Loc loc = Loc::current()) const;

  // Autograd.
  bool requires_grad() const;
  // Makes this tensor a leaf whose gradient accumulates into grad().
  Tensor& requires_grad_(bool on = true, Loc loc = Loc::current());
  // The accumulated gradient of a leaf; undefined if none yet.
  Tensor grad() const;
  void zero_grad();
  // A tensor equal to this one whose gradient is passed to f during backward.
  Tensor on_grad(GradCallback f, Loc loc = Loc::current()) const;
  void backward(Loc loc = Loc::current()) const;
  void backward(const Tensor& grad, Loc loc = Loc::current()) const;
  Tensor detach() const;

  // Internal access for the library's own code.
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}
  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }

 private:
  template <class T>
  Tensor(const T* values, size_t n, Shape shape, std::optional<DType> dtype, Loc loc)
      : Tensor(static_cast<const void*>(values), dtype_of<T>::value, n, std::move(shape),
               dtype.value_or(std::is_same_v<T, int> ? DType::i64 : dtype_of<T>::value), loc) {}
  Tensor(const void* values, DType src, size_t n, Shape shape, DType dtype, Loc loc);
  void read_into(void* dst, DType dtype, size_t n, Loc loc, bool scalar) const;
  int64_t numel_checked(Loc loc) const;
  void assign_back(const Operand& value);
  Tensor indexed(std::vector<Index> indices, bool write_back);

  std::shared_ptr<TensorImpl> impl_;
  // Set only on the result of indexing an lvalue: where `= value` writes to.
  struct WriteBack;
  std::shared_ptr<WriteBack> write_back_;
};

// Disables gradient recording on this thread for the scope's lifetime.
class NoGrad {
 public:
  NoGrad();
  ~NoGrad();
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  bool previous_;
};
bool grad_enabled();

// Gradients of loss with respect to each of wrt, without touching any grad().
std::vector<Tensor> grad(const Tensor& loss, const std::vector<Tensor>& wrt,
                         std::optional<Tensor> loss_grad = {}, Loc loc = Loc::current());

}  // namespace crisp
