// Tensor handles: construction, reading, casting, layout views and the method forms of ops.
#include "crisp/tensor.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <numeric>

#include "core/tensor_impl.h"

namespace crisp {

// ---- helpers shared by op front ends ----

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t normalize_axis(int64_t axis, int64_t ndim) {
  const int64_t n = std::max<int64_t>(ndim, 1);
  if (axis < -n || axis >= n)
    fail("axis ", axis, " is out of range for a tensor with ", ndim, " dimensions");
  return axis < 0 ? axis + n : axis;
}

std::vector<int64_t> normalize_axes(const Axes& axes, int64_t ndim) {
  std::vector<int64_t> out;
  if (axes.all) {
    out.resize(static_cast<size_t>(ndim));
    std::iota(out.begin(), out.end(), 0);
    return out;
  }
  for (int64_t a : axes.axes) {
    int64_t n = normalize_axis(a, ndim);
    if (std::find(out.begin(), out.end(), n) != out.end()) fail("axis ", a, " is repeated");
    out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

void check_defined(const Tensor& x, const char* what) {
  if (!x.defined()) fail(what, " is an undefined tensor");
}

void check_same_dtype(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype())
    fail("dtype mismatch: ", dtype_name(a.dtype()), " and ", dtype_name(b.dtype()),
         " (cast one of them explicitly)");
}

void check_floating(const Tensor& x) {
  if (!is_floating(x.dtype()))
    fail("expected a floating-point tensor, got ", dtype_name(x.dtype()));
}

// Scalar operands become 0-d tensors. The same few constants (1, 0.5, an epsilon) recur in
// every step, and on a GPU making one is a kernel launch of its own, so each thread keeps the
// last few it made. An entry holds its backend, which its tensor's storage points to.
Tensor operand_tensor(const Operand& o, DType dtype) {
  if (o.tensor) {
    check_defined(*o.tensor);
    return *o.tensor;
  }
  struct Entry {
    std::shared_ptr<Backend> backend;
    DType dtype{};
    uint64_t bits = 0;
    Tensor value;
  };
  constexpr size_t kEntries = 16;
  thread_local std::array<Entry, kEntries> cache;
  thread_local size_t next = 0;
  Backend& backend = current_backend();
  const uint64_t bits = std::bit_cast<uint64_t>(o.scalar);
  for (const Entry& e : cache)
    if (e.backend.get() == &backend && e.dtype == dtype && e.bits == bits) return e.value;
  Tensor t = full({}, o.scalar, dtype, o.loc);
  if (!t.impl()->error) {
    cache[next] = Entry{backend.shared_from_this(), dtype, bits, t};
    next = (next + 1) % kEntries;
  }
  return t;
}

// ---- construction and reading ----

Tensor::Tensor(const void* values, DType src, size_t n, Shape shape, DType dtype, Loc loc) {
  CallScope scope("Tensor", loc);
  if (shape == Shape{-1}) shape = {static_cast<int64_t>(n)};
  for (int64_t d : shape)
    if (d < 0) fail("negative dimension in shape ", shape_str(shape));
  if (numel_of(shape) != static_cast<int64_t>(n))
    fail(n, " values do not fill shape ", shape_str(shape), " (", numel_of(shape), " elements)");
  Tensor t = from_host(values, shape, src);
  impl_ = (src == dtype ? t : t.cast(dtype)).impl_;
}

const Shape& Tensor::shape() const {
  static const Shape none;
  return impl_ ? impl_->array.shape : none;
}
DType Tensor::dtype() const { return impl_ ? impl_->array.dtype : DType::f32; }
int64_t Tensor::ndim() const { return static_cast<int64_t>(shape().size()); }
int64_t Tensor::numel() const { return impl_ ? impl_->array.numel() : 0; }
bool Tensor::is_contiguous() const { return impl_ && impl_->array.is_contiguous(); }

int64_t Tensor::size(int64_t axis, Loc loc) const {
  CallScope scope("size", loc);
  check_defined(*this);
  return shape()[static_cast<size_t>(normalize_axis(axis, ndim()))];
}

std::shared_ptr<Backend> Tensor::backend() const {
  if (!impl_ || !impl_->array.storage) return Backend::current();
  return impl_->array.storage->backend->shared_from_this();
}

int64_t Tensor::numel_checked(Loc loc) const {
  CallScope scope("to_vector", loc);
  check_defined(*this);
  return numel();
}

void Tensor::read_into(void* dst, DType dtype, size_t n, Loc loc, bool scalar) const {
  CallScope scope(scalar ? "item" : "to_vector", loc);
  check_defined(*this);
  if (scalar && numel() != 1)
    fail("item() needs a tensor with one element, got shape ", shape_str(shape()));
  if (impl_->error) std::rethrow_exception(impl_->error);
  const Array& a = impl_->array;
  if (dtype == a.dtype) {
    if (n) a.storage->backend->read(a, dst);
    return;
  }
  // Convert on the host: reading is where values leave the library, so no kernel is needed.
  std::vector<char> raw(n * itemsize(a.dtype));
  if (n) a.storage->backend->read(a, raw.data());
  visit_dtype(a.dtype, [&](auto s) {
    using S = decltype(s);
    const S* src = reinterpret_cast<const S*>(raw.data());
    visit_dtype(dtype, [&](auto d) {
      using D = decltype(d);
      D* out = static_cast<D*>(dst);
      for (size_t i = 0; i < n; ++i) {
        if constexpr (std::is_same_v<D, bool>)
          out[i] = static_cast<double>(src[i]) != 0;
        else
          out[i] = static_cast<D>(static_cast<double>(src[i]));
      }
    });
  });
}

const Tensor& Tensor::wait(Loc loc) const {
  CallScope scope("wait", loc);
  check_defined(*this);
  if (impl_->array.storage) impl_->array.storage->backend->synchronize();
  if (impl_->error) std::rethrow_exception(impl_->error);
  return *this;
}

Tensor Tensor::cast(DType to, Loc loc) const {
  CallScope scope("cast", loc);
  check_defined(*this);
  if (to == dtype()) return *this;
  Tensor y = dispatch_in_layout(Op{OpKind::copy}, {*this}, to);
  if (!is_floating(to) || !is_floating(dtype())) return y;
  const DType from = dtype();
  return with_grad(y, {*this}, [from](const Tensor& g) { return std::vector{g.cast(from)}; });
}

Tensor Tensor::contiguous(Loc loc) const {
  CallScope scope("contiguous", loc);
  check_defined(*this);
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone(Loc loc) const {
  CallScope scope("clone", loc);
  check_defined(*this);
  Tensor y = dispatch(Op{OpKind::copy}, {*this}, shape(), dtype());
  return with_grad(y, {*this}, [](const Tensor& g) { return std::vector{g}; });
}

Tensor Tensor::to(std::shared_ptr<Backend> backend, Loc loc) const {
  CallScope scope("to", loc);
  check_defined(*this);
  if (!backend) fail("backend is null");
  if (impl_->array.storage && impl_->array.storage->backend == backend.get()) return *this;
  Tensor y = backend->use([&] { return dispatch(Op{OpKind::copy}, {*this}, shape(), dtype()); });
  auto src = this->backend();
  return with_grad(y, {*this}, [src](const Tensor& g) { return std::vector{g.to(src)}; });
}

// ---- layout views ----

namespace {
Tensor view_with_grad(const Tensor& x, Shape shape, Shape strides, int64_t offset,
                      BackwardFn backward) {
  return with_grad(make_view(x, std::move(shape), std::move(strides), offset), {x},
                   std::move(backward));
}
}  // namespace

Tensor reshape(const Tensor& x, Shape shape, Loc loc) {
  CallScope scope("reshape", loc);
  check_defined(x);
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) fail("only one dimension can be -1, got ", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else if (shape[i] < 0) {
      fail("negative dimension in shape ", shape_str(shape));
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.numel() % known != 0)
      fail("cannot reshape ", shape_str(x.shape()), " into ", shape_str(shape));
    shape[static_cast<size_t>(infer)] = x.numel() / known;
  }
  if (numel_of(shape) != x.numel())
    fail("cannot reshape ", shape_str(x.shape()), " (", x.numel(), " elements) into ",
         shape_str(shape));
  if (shape == x.shape()) return x;
  Tensor c = x.contiguous();
  Shape in_shape = x.shape();
  Shape strides = contiguous_strides(shape);
  return view_with_grad(c, std::move(shape), std::move(strides), c.impl()->array.offset,
                        [in_shape](const Tensor& g) { return std::vector{reshape(g, in_shape)}; });
}

Tensor flatten(const Tensor& x, int64_t start, int64_t end, Loc loc) {
  CallScope scope("flatten", loc);
  check_defined(x);
  if (x.ndim() == 0) return reshape(x, {1});
  start = normalize_axis(start, x.ndim());
  end = normalize_axis(end, x.ndim());
  if (start > end) fail("start axis ", start, " is after end axis ", end);
  Shape s(x.shape().begin(), x.shape().begin() + start);
  int64_t n = 1;
  for (int64_t i = start; i <= end; ++i) n *= x.shape()[static_cast<size_t>(i)];
  s.push_back(n);
  s.insert(s.end(), x.shape().begin() + end + 1, x.shape().end());
  return reshape(x, s);
}

Tensor permute(const Tensor& x, std::vector<int64_t> axes, Loc loc) {
  CallScope scope("permute", loc);
  check_defined(x);
  if (static_cast<int64_t>(axes.size()) != x.ndim())
    fail("permutation of ", axes.size(), " axes for a tensor with ", x.ndim(), " dimensions");
  std::vector<bool> used(axes.size());
  Shape shape, strides;
  const Array& a = x.impl()->array;
  for (int64_t& ax : axes) {
    ax = normalize_axis(ax, x.ndim());
    if (used[static_cast<size_t>(ax)]) fail("axis ", ax, " appears twice in the permutation");
    used[static_cast<size_t>(ax)] = true;
    shape.push_back(a.shape[static_cast<size_t>(ax)]);
    strides.push_back(a.strides[static_cast<size_t>(ax)]);
  }
  std::vector<int64_t> inverse(axes.size());
  for (size_t i = 0; i < axes.size(); ++i)
    inverse[static_cast<size_t>(axes[i])] = static_cast<int64_t>(i);
  return view_with_grad(x, shape, strides, a.offset,
                        [inverse](const Tensor& g) { return std::vector{permute(g, inverse)}; });
}

Tensor to_channels_last(const Tensor& x, Loc loc) {
  CallScope scope("to_channels_last", loc);
  check_defined(x);
  if (x.ndim() < 3) fail("expected [N, C, *spatial], got ", shape_str(x.shape()));
  if (is_channels_last(x)) return x;
  return permute(permute(x, channels_last_order(x.ndim())).contiguous(),
                 channels_first_order(x.ndim()));
}

// Elementwise ops ask this of every 4-d operand: the strides are checked in place, in the
// stored order (C, then the spatial axes from the last, then N), with no view built.
bool is_channels_last(const Tensor& x) {
  if (!x.defined() || x.ndim() < 3 || x.is_contiguous()) return false;
  const Array& a = x.impl()->array;
  int64_t expected = 1;
  auto fits = [&](size_t i) {
    if (a.shape[i] != 1 && a.strides[i] != expected) return false;
    expected *= a.shape[i];
    return true;
  };
  if (!fits(1)) return false;
  for (size_t i = a.shape.size(); i-- > 2;)
    if (!fits(i)) return false;
  return fits(0);
}

Tensor transpose(const Tensor& x, int64_t a, int64_t b, Loc loc) {
  CallScope scope("transpose", loc);
  check_defined(x);
  if (x.ndim() < 2 && a == -2 && b == -1) return x;
  a = normalize_axis(a, x.ndim());
  b = normalize_axis(b, x.ndim());
  std::vector<int64_t> axes(static_cast<size_t>(x.ndim()));
  std::iota(axes.begin(), axes.end(), 0);
  std::swap(axes[static_cast<size_t>(a)], axes[static_cast<size_t>(b)]);
  return permute(x, axes);
}

Tensor squeeze(const Tensor& x, Axes axes, Loc loc) {
  CallScope scope("squeeze", loc);
  check_defined(x);
  std::vector<int64_t> ax = normalize_axes(axes, x.ndim());
  Shape shape;
  for (int64_t i = 0; i < x.ndim(); ++i) {
    bool listed = std::find(ax.begin(), ax.end(), i) != ax.end();
    if (listed && x.shape()[static_cast<size_t>(i)] == 1) continue;
    if (listed && !axes.all)
      fail("cannot squeeze axis ", i, " of size ", x.shape()[static_cast<size_t>(i)]);
    shape.push_back(x.shape()[static_cast<size_t>(i)]);
  }
  return reshape(x, shape);
}

Tensor unsqueeze(const Tensor& x, int64_t axis, Loc loc) {
  CallScope scope("unsqueeze", loc);
  check_defined(x);
  axis = normalize_axis(axis, x.ndim() + 1);
  Shape shape = x.shape();
  shape.insert(shape.begin() + axis, 1);
  return reshape(x, shape);
}

Shape broadcast_shapes(const Shape& a, const Shape& b, Loc loc) {
  CallScope scope("broadcast", loc);
  Shape out(std::max(a.size(), b.size()));
  for (size_t i = 0; i < out.size(); ++i) {
    int64_t da = i < out.size() - a.size() ? 1 : a[i - (out.size() - a.size())];
    int64_t db = i < out.size() - b.size() ? 1 : b[i - (out.size() - b.size())];
    if (da != db && da != 1 && db != 1)
      fail("shapes ", shape_str(a), " and ", shape_str(b), " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor expand(const Tensor& x, Shape shape, Loc loc) {
  CallScope scope("expand", loc);
  check_defined(x);
  if (shape.size() < static_cast<size_t>(x.ndim()))
    fail("cannot expand ", shape_str(x.shape()), " to fewer dimensions ", shape_str(shape));
  const Array& a = x.impl()->array;
  const size_t lead = shape.size() - a.shape.size();
  Shape strides(shape.size(), 0);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i < lead) {
      if (shape[i] < 0) fail("cannot expand to ", shape_str(shape));
      continue;
    }
    int64_t d = a.shape[i - lead];
    if (shape[i] == -1) shape[i] = d;
    if (d == shape[i]) {
      strides[i] = a.strides[i - lead];
    } else if (d != 1) {
      fail("cannot expand ", shape_str(x.shape()), " to ", shape_str(shape));
    }
  }
  if (shape == x.shape()) return x;
  Shape in_shape = x.shape();
  return view_with_grad(x, shape, strides, a.offset, [in_shape](const Tensor& g) {
    return std::vector{reduce_to(g, in_shape)};
  });
}

Tensor broadcast_to(const Tensor& x, Shape shape, Loc loc) {
  return expand(x, std::move(shape), loc);
}

// ---- indexing entry points (the index logic is in indexing.cpp) ----

struct Tensor::WriteBack {
  Tensor* base;
  std::vector<Index> indices;
};

Index::Index(const Tensor& t, Loc loc) : item(std::make_shared<Tensor>(t)), loc(loc) {}

Tensor Tensor::indexed(std::vector<Index> indices, bool write_back) {
  Tensor out = index(indices, indices.front().loc);
  if (write_back)
    out.write_back_ = std::make_shared<WriteBack>(WriteBack{this, std::move(indices)});
  return out;
}

void Tensor::assign_back(const Operand& value) {
  CallScope scope("assign", value.loc);
  if (!write_back_) fail("cannot assign to a temporary tensor; index a named tensor instead");
  Tensor& base = *write_back_->base;
  base = base.index_put(write_back_->indices, value, value.loc);
  // base may itself be indexed (`y[0][1] = v`): pass the update on to what it was taken from.
  if (base.write_back_) base.assign_back(Operand(base, value.loc));
}

#define CRISP_SUBSCRIPTS(QUAL, WB)                                                             \
  Tensor Tensor::operator[](Index a) QUAL { return indexed({a}, WB); }                         \
  Tensor Tensor::operator[](Index a, Index b) QUAL { return indexed({a, b}, WB); }             \
  Tensor Tensor::operator[](Index a, Index b, Index c) QUAL { return indexed({a, b, c}, WB); } \
  Tensor Tensor::operator[](Index a, Index b, Index c, Index d) QUAL {                         \
    return indexed({a, b, c, d}, WB);                                                          \
  }                                                                                            \
  Tensor Tensor::operator[](Index a, Index b, Index c, Index d, Index e) QUAL {                \
    return indexed({a, b, c, d, e}, WB);                                                       \
  }
CRISP_SUBSCRIPTS(&, true)
CRISP_SUBSCRIPTS(&&, write_back_ != nullptr)
#undef CRISP_SUBSCRIPTS

// A const tensor's subscript only reads.
#define CRISP_CONST_SUBSCRIPT(...) return const_cast<Tensor*>(this)->indexed({__VA_ARGS__}, false)
Tensor Tensor::operator[](Index a) const& { CRISP_CONST_SUBSCRIPT(a); }
Tensor Tensor::operator[](Index a, Index b) const& { CRISP_CONST_SUBSCRIPT(a, b); }
Tensor Tensor::operator[](Index a, Index b, Index c) const& { CRISP_CONST_SUBSCRIPT(a, b, c); }
Tensor Tensor::operator[](Index a, Index b, Index c, Index d) const& {
  CRISP_CONST_SUBSCRIPT(a, b, c, d);
}
Tensor Tensor::operator[](Index a, Index b, Index c, Index d, Index e) const& {
  CRISP_CONST_SUBSCRIPT(a, b, c, d, e);
}
#undef CRISP_CONST_SUBSCRIPT

// ---- in-place arithmetic ----

namespace {
// x op= v keeps x's shape, as PyTorch's in-place ops do: v must broadcast to x.
Tensor& update(Tensor& x, const Operand& v, Tensor (*op)(const Operand&, const Operand&)) {
  Tensor y = op(Operand(x, v.loc), v);
  if (y.shape() != x.shape()) {
    CallScope scope("in-place update", v.loc);
    fail("the result's shape ", shape_str(y.shape()), " differs from the updated tensor's ",
         shape_str(x.shape()));
  }
  return x = std::move(y);
}
}  // namespace

Tensor& Tensor::operator+=(const Operand& v) & { return update(*this, v, add); }
Tensor& Tensor::operator-=(const Operand& v) & { return update(*this, v, sub); }
Tensor& Tensor::operator*=(const Operand& v) & { return update(*this, v, mul); }
Tensor& Tensor::operator/=(const Operand& v) & { return update(*this, v, div); }
void Tensor::operator+=(const Operand& v) && {
  assign_back(Operand(Operand(*this, v.loc) + v, v.loc));
}
void Tensor::operator-=(const Operand& v) && {
  assign_back(Operand(Operand(*this, v.loc) - v, v.loc));
}
void Tensor::operator*=(const Operand& v) && {
  assign_back(Operand(Operand(*this, v.loc) * v, v.loc));
}
void Tensor::operator/=(const Operand& v) && {
  assign_back(Operand(Operand(*this, v.loc) / v, v.loc));
}

// ---- method forms ----

Tensor Tensor::reshape(Shape s, Loc loc) const { return crisp::reshape(*this, std::move(s), loc); }
Tensor Tensor::flatten(int64_t a, int64_t b, Loc loc) const {
  return crisp::flatten(*this, a, b, loc);
}
Tensor Tensor::permute(std::vector<int64_t> a, Loc loc) const {
  return crisp::permute(*this, std::move(a), loc);
}
Tensor Tensor::transpose(int64_t a, int64_t b, Loc loc) const {
  return crisp::transpose(*this, a, b, loc);
}
Tensor Tensor::t(Loc loc) const { return crisp::transpose(*this, -2, -1, loc); }
Tensor Tensor::squeeze(Axes a, Loc loc) const { return crisp::squeeze(*this, std::move(a), loc); }
Tensor Tensor::unsqueeze(int64_t a, Loc loc) const { return crisp::unsqueeze(*this, a, loc); }
Tensor Tensor::expand(Shape s, Loc loc) const { return crisp::expand(*this, std::move(s), loc); }
Tensor Tensor::sum(Axes a, bool k, Loc loc) const {
  return crisp::sum(*this, std::move(a), k, loc);
}
Tensor Tensor::mean(Axes a, bool k, Loc loc) const {
  return crisp::mean(*this, std::move(a), k, loc);
}
Tensor Tensor::prod(Axes a, bool k, Loc loc) const {
  return crisp::prod(*this, std::move(a), k, loc);
}
Tensor Tensor::max(Axes a, bool k, Loc loc) const {
  return crisp::max(*this, std::move(a), k, loc);
}
Tensor Tensor::min(Axes a, bool k, Loc loc) const {
  return crisp::min(*this, std::move(a), k, loc);
}
Tensor Tensor::argmax(std::optional<int64_t> a, bool k, Loc loc) const {
  return crisp::argmax(*this, a, k, loc);
}
Tensor Tensor::argmin(std::optional<int64_t> a, bool k, Loc loc) const {
  return crisp::argmin(*this, a, k, loc);
}
Tensor Tensor::var(Axes a, int64_t c, bool k, Loc loc) const {
  return crisp::var(*this, std::move(a), c, k, loc);
}
Tensor Tensor::std(Axes a, int64_t c, bool k, Loc loc) const {
  return crisp::std(*this, std::move(a), c, k, loc);
}
Tensor Tensor::logsumexp(Axes a, bool k, Loc loc) const {
  return crisp::logsumexp(*this, std::move(a), k, loc);
}
Tensor Tensor::all(Axes a, bool k, Loc loc) const {
  return crisp::all(*this, std::move(a), k, loc);
}
Tensor Tensor::any(Axes a, bool k, Loc loc) const {
  return crisp::any(*this, std::move(a), k, loc);
}
Tensor Tensor::softmax(int64_t a, Loc loc) const { return crisp::softmax(*this, a, loc); }
Tensor Tensor::log_softmax(int64_t a, Loc loc) const { return crisp::log_softmax(*this, a, loc); }
Tensor Tensor::pow(const Operand& e, Loc loc) const {
  if (!e.tensor) return crisp::pow(*this, e.scalar, loc);
  return crisp::pow(Operand(*this, loc), e);
}
Tensor Tensor::sqrt(Loc loc) const { return crisp::sqrt(*this, loc); }
Tensor Tensor::exp(Loc loc) const { return crisp::exp(*this, loc); }
Tensor Tensor::log(Loc loc) const { return crisp::log(*this, loc); }
Tensor Tensor::abs(Loc loc) const { return crisp::abs(*this, loc); }
Tensor Tensor::relu(Loc loc) const { return crisp::relu(*this, loc); }
Tensor Tensor::sigmoid(Loc loc) const { return crisp::sigmoid(*this, loc); }
Tensor Tensor::tanh(Loc loc) const { return crisp::tanh(*this, loc); }
Tensor Tensor::gelu(Loc loc) const { return crisp::gelu(*this, "none", loc); }
Tensor Tensor::matmul(const Tensor& o, Loc loc) const { return crisp::matmul(*this, o, loc); }

}  // namespace crisp
