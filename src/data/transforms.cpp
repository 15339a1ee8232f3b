// Batch transforms: each works on a whole batch, drawing one random choice per example.
#include <cmath>

#include "core/tensor_impl.h"
#include "crisp/data.h"

namespace crisp::data {

namespace {
void check_images(const Tensor& x, const char* what) {
  check(x.defined(), what, ": the batch has no input");
  check(x.ndim() == 4, what, ": input must be [N, C, H, W], got ", shape_str(x.shape()));
}
}  // namespace

Batch Compose::operator()(Batch b, Generator& gen) const {
  for (const Transform& t : transforms_) b = t(std::move(b), gen);
  return b;
}

Normalize::Normalize(std::vector<double> mean, std::vector<double> std, Loc loc)
    : mean_(std::move(mean)), std_(std::move(std)) {
  CallScope scope("Normalize", loc);
  check(!mean_.empty() && mean_.size() == std_.size(), "mean and std need the same, nonzero, ",
        "number of channels; got ", mean_.size(), " and ", std_.size());
  for (double s : std_) check(s != 0 && std::isfinite(s), "std values must be nonzero, got ", s);
}

Batch Normalize::operator()(Batch b, Generator&) const {
  CallScope scope("Normalize", Loc::current());
  Tensor& x = b.input;
  check(x.defined() && x.ndim() >= 2, "input must be [N, C, ...], got ",
        x.defined() ? shape_str(x.shape()) : std::string("undefined"));
  check(is_floating(x.dtype()), "input must be floating point, got ", dtype_name(x.dtype()));
  const auto c = static_cast<int64_t>(mean_.size());
  check(c == 1 || c == x.shape()[1], "input has ", x.shape()[1], " channels but mean and std have ",
        c, " values");
  Shape s(static_cast<size_t>(x.ndim()), 1);
  s[1] = c;
  const Tensor mean = Tensor(mean_, s, x.dtype());
  const Tensor std = Tensor(std_, s, x.dtype());
  x = (x - mean) / std;
  return b;
}

RandomCrop::RandomCrop(int64_t size, int64_t padding, Loc loc)
    : RandomCrop(size, size, padding, loc) {}

RandomCrop::RandomCrop(int64_t height, int64_t width, int64_t padding, Loc loc)
    : height_(height), width_(width), padding_(padding) {
  CallScope scope("RandomCrop", loc);
  check(height > 0 && width > 0, "crop size must be positive, got ", height, "x", width);
  check(padding >= 0, "padding must be non-negative, got ", padding);
}

Batch RandomCrop::operator()(Batch b, Generator& gen) const {
  CallScope scope("RandomCrop", Loc::current());
  check_images(b.input, "RandomCrop");
  Tensor x = b.input;
  if (padding_ > 0) x = pad(x, {padding_, padding_, padding_, padding_});
  const int64_t n = x.shape()[0], h = x.shape()[2], w = x.shape()[3];
  check(h >= height_ && w >= width_, "a ", height_, "x", width_, " crop does not fit in ", h, "x",
        w, " images (after padding ", padding_, ")");
  // Row and column indices of each example's window, applied as two gathers.
  const Tensor top = randint(0, h - height_ + 1, {n, 1, 1, 1}, i64, &gen);
  const Tensor left = randint(0, w - width_ + 1, {n, 1, 1, 1}, i64, &gen);
  const Tensor rows = top + arange(height_).reshape({1, 1, height_, 1});
  const Tensor cols = left + arange(width_).reshape({1, 1, 1, width_});
  x = take_along_axis(x, rows, 2);
  b.input = take_along_axis(x, cols, 3);
  return b;
}

RandomHorizontalFlip::RandomHorizontalFlip(double p, Loc loc) : p_(p) {
  CallScope scope("RandomHorizontalFlip", loc);
  check(p >= 0 && p <= 1, "p must be in [0, 1], got ", p);
}

Batch RandomHorizontalFlip::operator()(Batch b, Generator& gen) const {
  CallScope scope("RandomHorizontalFlip", Loc::current());
  Tensor& x = b.input;
  check(x.defined() && x.ndim() >= 2, "input must be [N, ..., W], got ",
        x.defined() ? shape_str(x.shape()) : std::string("undefined"));
  Shape s(static_cast<size_t>(x.ndim()), 1);
  s[0] = x.shape()[0];
  const Tensor flip_it = rand(s, f64, &gen) < p_;
  x = where(flip_it, flip(x, {-1}), x);
  return b;
}

}  // namespace crisp::data
