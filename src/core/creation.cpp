// Creation ops: constants, ranges, identity matrices, random tensors and dropout.
#include <cmath>

#include "core/tensor_impl.h"
#include "kernels/creation.h"

namespace crisp {

void Generator::manual_seed(uint64_t seed) {
  std::lock_guard lock(mutex_);
  state_ = {seed, 0};
}
Generator::State Generator::state() const {
  std::lock_guard lock(mutex_);
  return state_;
}
void Generator::set_state(State s) {
  std::lock_guard lock(mutex_);
  state_ = s;
}
uint64_t Generator::advance(uint64_t n) {
  std::lock_guard lock(mutex_);
  uint64_t first = state_.offset;
  state_.offset += (n + 3) & ~uint64_t{3};  // whole Philox blocks keep streams disjoint
  return first;
}

Generator& default_generator() {
  static Generator g(0x5eed);
  return g;
}
void manual_seed(uint64_t seed) { default_generator().manual_seed(seed); }

namespace {
void check_shape(const Shape& shape) {
  for (int64_t d : shape)
    if (d < 0) fail("negative dimension in shape ", shape_str(shape));
}
}  // namespace

Tensor full(Shape shape, double value, DType dtype, Loc loc) {
  CallScope scope("full", loc);
  check_shape(shape);
  return dispatch(FillAttrs{value}.to_op(), {}, std::move(shape), dtype);
}
Tensor scalar(double value, DType dtype, Loc loc) { return full({}, value, dtype, loc); }
Tensor zeros(Shape shape, DType dtype, Loc loc) { return full(std::move(shape), 0, dtype, loc); }
Tensor ones(Shape shape, DType dtype, Loc loc) { return full(std::move(shape), 1, dtype, loc); }
Tensor zeros_like(const Tensor& x, Loc loc) { return full(x.shape(), 0, x.dtype(), loc); }
Tensor ones_like(const Tensor& x, Loc loc) { return full(x.shape(), 1, x.dtype(), loc); }
Tensor full_like(const Tensor& x, double v, Loc loc) { return full(x.shape(), v, x.dtype(), loc); }

Tensor arange(double stop, Loc loc) { return arange(0, stop, 1, std::nullopt, loc); }

Tensor arange(double start, double stop, double step, std::optional<DType> dtype, Loc loc) {
  CallScope scope("arange", loc);
  if (step == 0 || !std::isfinite(step)) fail("step must be finite and non-zero, got ", step);
  if (!std::isfinite(start) || !std::isfinite(stop)) fail("start and stop must be finite");
  const int64_t n = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((stop - start) / step)));
  DType dt = dtype.value_or(start == std::floor(start) && step == std::floor(step) ? i64 : f32);
  return dispatch(ArangeAttrs{start, step}.to_op(), {}, {n}, dt);
}

Tensor linspace(double start, double stop, int64_t count, DType dtype, Loc loc) {
  CallScope scope("linspace", loc);
  if (count < 0) fail("count must be non-negative, got ", count);
  const double step = count > 1 ? (stop - start) / static_cast<double>(count - 1) : 0;
  return dispatch(ArangeAttrs{start, step}.to_op(), {}, {count}, dtype);
}

Tensor eye(int64_t n, std::optional<int64_t> m, DType dtype, Loc loc) {
  CallScope scope("eye", loc);
  const int64_t cols = m.value_or(n);
  if (n < 0 || cols < 0) fail("sizes must be non-negative, got ", n, " x ", cols);
  return dispatch(EyeAttrs{0}.to_op(), {}, {n, cols}, dtype);
}

namespace {
// The stream of n elements' draws from gen (the default generator when null), two words per
// element: normal draws take two (Box-Muller), and every kind gets that much room.
RandomStream random_stream(Generator* gen, int64_t n) {
  Generator& g = gen ? *gen : default_generator();
  const uint64_t offset = g.advance(2 * static_cast<uint64_t>(n));
  return {g.state().seed, offset};
}

// A random tensor of shape, drawn from the next stretch of gen's stream.
Tensor random(OpKind kind, Shape shape, DType dtype, Generator* gen, RandomAttrs attrs) {
  check_shape(shape);
  attrs.stream = random_stream(gen, numel_of(shape));
  return dispatch(attrs.to_op(kind), {}, std::move(shape), dtype);
}
void check_float_dtype(DType d) {
  if (!is_floating(d)) fail("expected a floating-point dtype, got ", dtype_name(d));
}
}  // namespace

Tensor uniform(Shape shape, double low, double high, DType dtype, Generator* gen, Loc loc) {
  CallScope scope("uniform", loc);
  check_float_dtype(dtype);
  if (!(low <= high)) fail("low ", low, " must not exceed high ", high);
  return random(OpKind::rand_uniform, std::move(shape), dtype, gen,
                {.stream = {}, .a = low, .b = high});
}
Tensor rand(Shape shape, DType dtype, Generator* gen, Loc loc) {
  return uniform(std::move(shape), 0, 1, dtype, gen, loc);
}
Tensor normal(Shape shape, double mean, double std, DType dtype, Generator* gen, Loc loc) {
  CallScope scope("normal", loc);
  check_float_dtype(dtype);
  if (!(std >= 0)) fail("std must be non-negative, got ", std);
  return random(OpKind::rand_normal, std::move(shape), dtype, gen,
                {.stream = {}, .a = mean, .b = std});
}
Tensor randn(Shape shape, DType dtype, Generator* gen, Loc loc) {
  return normal(std::move(shape), 0, 1, dtype, gen, loc);
}
Tensor randint(int64_t low, int64_t high, Shape shape, DType dtype, Generator* gen, Loc loc) {
  CallScope scope("randint", loc);
  if (low >= high) fail("low ", low, " must be below high ", high);
  if (dtype == bool_) fail("randint cannot produce bool");
  return random(OpKind::rand_int, std::move(shape), dtype, gen,
                {.stream = {}, .low = low, .high = high});
}
Tensor randperm(int64_t n, Generator* gen, Loc loc) {
  CallScope scope("randperm", loc);
  if (n < 0) fail("n must be non-negative, got ", n);
  // Sorting random keys gives a uniform permutation.
  return argsort(rand({n}, f64, gen));
}

namespace {
// t times dropout op's mask; its gradient is the gradient times the same mask.
Tensor apply_dropout(const Op& op, const Tensor& t) {
  Tensor y = dispatch(op, {t.contiguous()}, t.shape(), t.dtype());
  return with_grad(y, {t}, [op](const Tensor& g) { return Grads{apply_dropout(op, g)}; });
}
}  // namespace

Tensor dropout(const Tensor& x, double p, bool training, Generator* gen, Loc loc) {
  CallScope scope("dropout", loc);
  check_defined(x);
  check_floating(x);
  if (!(p >= 0 && p < 1)) fail("p must be in [0, 1), got ", p);
  if (!training || p == 0) return x;
  // Keep with probability 1 - p; the kept elements are scaled so the expectation is unchanged.
  // The mask is drawn again from the same stream for the gradient instead of being stored.
  const DropoutAttrs attrs{random_stream(gen, x.numel()), p};
  return apply_dropout(attrs.to_op(OpKind::dropout), x);
}

}  // namespace crisp
