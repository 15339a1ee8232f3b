// The operations on tensors, as free functions; each is differentiable where that makes sense.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "crisp/random.h"
#include "crisp/tensor.h"

namespace crisp {

// ---- creation ----
Tensor scalar(double value, DType dtype = f32, Loc loc = Loc::current());
Tensor zeros(Shape shape, DType dtype = f32, Loc loc = Loc::current());
Tensor ones(Shape shape, DType dtype = f32, Loc loc = Loc::current());
Tensor full(Shape shape, double value, DType dtype = f32, Loc loc = Loc::current());
Tensor zeros_like(const Tensor& x, Loc loc = Loc::current());
Tensor ones_like(const Tensor& x, Loc loc = Loc::current());
Tensor full_like(const Tensor& x, double value, Loc loc = Loc::current());
// [start, stop) in steps of step; int64 unless dtype is given.
Tensor arange(double stop, Loc loc = Loc::current());
Tensor arange(double start, double stop, double step = 1, std::optional<DType> dtype = {},
              Loc loc = Loc::current());
Tensor linspace(double start, double stop, int64_t count, DType dtype = f32,
                Loc loc = Loc::current());
Tensor eye(int64_t n, std::optional<int64_t> m = {}, DType dtype = f32, Loc loc = Loc::current());
// Random tensors draw from gen, or from the global generator (see manual_seed).
Tensor rand(Shape shape, DType dtype = f32, Generator* gen = nullptr, Loc loc = Loc::current());
Tensor randn(Shape shape, DType dtype = f32, Generator* gen = nullptr, Loc loc = Loc::current());
Tensor uniform(Shape shape, double low, double high, DType dtype = f32, Generator* gen = nullptr,
               Loc loc = Loc::current());
Tensor normal(Shape shape, double mean, double std, DType dtype = f32, Generator* gen = nullptr,
              Loc loc = Loc::current());
// Integers in [low, high).
Tensor randint(int64_t low, int64_t high, Shape shape, DType dtype = i64, Generator* gen = nullptr,
               Loc loc = Loc::current());
Tensor randperm(int64_t n, Generator* gen = nullptr, Loc loc = Loc::current());

// ---- unary elementwise ----
Tensor neg(const Tensor& x, Loc loc = Loc::current());
Tensor abs(const Tensor& x, Loc loc = Loc::current());
Tensor sign(const Tensor& x, Loc loc = Loc::current());
Tensor exp(const Tensor& x, Loc loc = Loc::current());
Tensor log(const Tensor& x, Loc loc = Loc::current());
Tensor log1p(const Tensor& x, Loc loc = Loc::current());
Tensor expm1(const Tensor& x, Loc loc = Loc::current());
Tensor sqrt(const Tensor& x, Loc loc = Loc::current());
Tensor rsqrt(const Tensor& x, Loc loc = Loc::current());
Tensor sin(const Tensor& x, Loc loc = Loc::current());
Tensor cos(const Tensor& x, Loc loc = Loc::current());
Tensor tanh(const Tensor& x, Loc loc = Loc::current());
Tensor sigmoid(const Tensor& x, Loc loc = Loc::current());
Tensor relu(const Tensor& x, Loc loc = Loc::current());
Tensor leaky_relu(const Tensor& x, double negative_slope = 0.01, Loc loc = Loc::current());
// approximate: "none" (erf form) or "tanh".
Tensor gelu(const Tensor& x, const std::string& approximate = "none", Loc loc = Loc::current());
Tensor silu(const Tensor& x, Loc loc = Loc::current());
Tensor softplus(const Tensor& x, double beta = 1, double threshold = 20, Loc loc = Loc::current());
Tensor mish(const Tensor& x, Loc loc = Loc::current());
Tensor erf(const Tensor& x, Loc loc = Loc::current());
Tensor floor(const Tensor& x, Loc loc = Loc::current());
Tensor ceil(const Tensor& x, Loc loc = Loc::current());
Tensor round(const Tensor& x, Loc loc = Loc::current());  // halves to even
Tensor clamp(const Tensor& x, std::optional<double> low, std::optional<double> high,
             Loc loc = Loc::current());
Tensor pow(const Tensor& x, double exponent, Loc loc = Loc::current());
Tensor logical_not(const Tensor& x, Loc loc = Loc::current());
Tensor isnan(const Tensor& x, Loc loc = Loc::current());

// ---- binary elementwise (broadcasting; both tensors must share a dtype) ----
Tensor operator+(const Operand& a, const Operand& b);
Tensor operator-(const Operand& a, const Operand& b);
Tensor operator*(const Operand& a, const Operand& b);
Tensor operator/(const Operand& a, const Operand& b);
Tensor operator-(const Operand& a);
Tensor operator==(const Operand& a, const Operand& b);
Tensor operator!=(const Operand& a, const Operand& b);
Tensor operator<(const Operand& a, const Operand& b);
Tensor operator<=(const Operand& a, const Operand& b);
Tensor operator>(const Operand& a, const Operand& b);
Tensor operator>=(const Operand& a, const Operand& b);
Tensor operator&&(const Operand& a, const Operand& b);
Tensor operator||(const Operand& a, const Operand& b);
Tensor operator!(const Operand& a);
Tensor add(const Operand& a, const Operand& b);
// relu(a + b) in one pass: a residual connection's sum and its ReLU.
Tensor add_relu(const Operand& a, const Operand& b);
Tensor sub(const Operand& a, const Operand& b);
Tensor mul(const Operand& a, const Operand& b);
Tensor div(const Operand& a, const Operand& b);
Tensor pow(const Operand& a, const Operand& b);
Tensor maximum(const Operand& a, const Operand& b);
Tensor minimum(const Operand& a, const Operand& b);
Tensor eq(const Operand& a, const Operand& b);
Tensor ne(const Operand& a, const Operand& b);
Tensor lt(const Operand& a, const Operand& b);
Tensor le(const Operand& a, const Operand& b);
Tensor gt(const Operand& a, const Operand& b);
Tensor ge(const Operand& a, const Operand& b);
Tensor logical_and(const Operand& a, const Operand& b);
Tensor logical_or(const Operand& a, const Operand& b);
Tensor logical_xor(const Operand& a, const Operand& b);
// Elements of a where cond is true, else of b; cond is bool.
Tensor where(const Tensor& cond, const Operand& a, const Operand& b, Loc loc = Loc::current());

// ---- reductions ----
Tensor sum(const Tensor& x, Axes axes = {}, bool keepdims = false, Loc loc = Loc::current());
Tensor mean(const Tensor& x, Axes axes = {}, bool keepdims = false, Loc loc = Loc::current());
Tensor prod(const Tensor& x, Axes axes = {}, bool keepdims = false, Loc loc = Loc::current());
Tensor max(const Tensor& x, Axes axes = {}, bool keepdims = false, Loc loc = Loc::current());
Tensor min(const Tensor& x, Axes axes = {}, bool keepdims = false, Loc loc = Loc::current());
// Over the flattened tensor when axis is empty.
Tensor argmax(const Tensor& x, std::optional<int64_t> axis = {}, bool keepdims = false,
              Loc loc = Loc::current());
Tensor argmin(const Tensor& x, std::optional<int64_t> axis = {}, bool keepdims = false,
              Loc loc = Loc::current());
Tensor var(const Tensor& x, Axes axes = {}, int64_t correction = 1, bool keepdims = false,
           Loc loc = Loc::current());
Tensor std(const Tensor& x, Axes axes = {}, int64_t correction = 1, bool keepdims = false,
           Loc loc = Loc::current());
Tensor logsumexp(const Tensor& x, Axes axes = {}, bool keepdims = false, Loc loc = Loc::current());
Tensor all(const Tensor& x, Axes axes = {}, bool keepdims = false, Loc loc = Loc::current());
Tensor any(const Tensor& x, Axes axes = {}, bool keepdims = false, Loc loc = Loc::current());
Tensor softmax(const Tensor& x, int64_t axis = -1, Loc loc = Loc::current());
Tensor log_softmax(const Tensor& x, int64_t axis = -1, Loc loc = Loc::current());
Tensor cumsum(const Tensor& x, int64_t axis, Loc loc = Loc::current());
Tensor cumprod(const Tensor& x, int64_t axis, Loc loc = Loc::current());

// ---- sorting ----
struct SortResult {
  Tensor values, indices;
};
SortResult sort(const Tensor& x, int64_t axis = -1, bool descending = false,
                Loc loc = Loc::current());
Tensor argsort(const Tensor& x, int64_t axis = -1, bool descending = false,
               Loc loc = Loc::current());
SortResult topk(const Tensor& x, int64_t k, int64_t axis = -1, bool largest = true,
                Loc loc = Loc::current());

// ---- linear algebra ----
// Batched over leading axes with broadcasting; 1-d operands as in numpy.
Tensor matmul(const Tensor& a, const Tensor& b, Loc loc = Loc::current());
Tensor outer(const Tensor& a, const Tensor& b, Loc loc = Loc::current());
Tensor dot(const Tensor& a, const Tensor& b, Loc loc = Loc::current());
// x @ weight^T + bias, as torch.nn.functional.linear: x [..., in], weight [out, in], bias [out].
// With a bias, one op: the backends add it as the product is written.
Tensor linear(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias = {},
              Loc loc = Loc::current());

// ---- shape ----
Tensor reshape(const Tensor& x, Shape shape, Loc loc = Loc::current());
Tensor flatten(const Tensor& x, int64_t start = 0, int64_t end = -1, Loc loc = Loc::current());
Tensor permute(const Tensor& x, std::vector<int64_t> axes, Loc loc = Loc::current());
Tensor transpose(const Tensor& x, int64_t a = -2, int64_t b = -1, Loc loc = Loc::current());
// The channels-last layout (PyTorch's channels_last memory format): x [N, C, *spatial] keeps its
// shape but is stored as [N, *spatial, C]. For [N, C, H, W], 2-d convolutions, batch norm,
// pooling and elementwise ops keep it, and cuDNN's tensor-core convolutions run in it without
// transposing. contiguous() returns the usual layout.
Tensor to_channels_last(const Tensor& x, Loc loc = Loc::current());
bool is_channels_last(const Tensor& x);  // stored so, and not also contiguous
Tensor squeeze(const Tensor& x, Axes axes = {}, Loc loc = Loc::current());
Tensor unsqueeze(const Tensor& x, int64_t axis, Loc loc = Loc::current());
Tensor expand(const Tensor& x, Shape shape, Loc loc = Loc::current());
Tensor broadcast_to(const Tensor& x, Shape shape, Loc loc = Loc::current());
Shape broadcast_shapes(const Shape& a, const Shape& b, Loc loc = Loc::current());
Tensor concat(const std::vector<Tensor>& xs, int64_t axis = 0, Loc loc = Loc::current());
Tensor stack(const std::vector<Tensor>& xs, int64_t axis = 0, Loc loc = Loc::current());
// Pieces of the given sizes along axis.
std::vector<Tensor> split(const Tensor& x, std::vector<int64_t> sizes, int64_t axis = 0,
                          Loc loc = Loc::current());
// n pieces of equal size (the last may be smaller), as torch.chunk.
std::vector<Tensor> chunk(const Tensor& x, int64_t n, int64_t axis = 0, Loc loc = Loc::current());
// pads holds (before, after) for the last axes, innermost first, as torch.nn.functional.pad.
Tensor pad(const Tensor& x, std::vector<int64_t> pads, const std::string& mode = "constant",
           double value = 0, Loc loc = Loc::current());
Tensor flip(const Tensor& x, Axes axes, Loc loc = Loc::current());
// Tiles x repeats[i] times along axis i, as torch.Tensor.repeat.
Tensor repeat(const Tensor& x, std::vector<int64_t> repeats, Loc loc = Loc::current());
Tensor tril(const Tensor& x, int64_t k = 0, Loc loc = Loc::current());
Tensor triu(const Tensor& x, int64_t k = 0, Loc loc = Loc::current());

// ---- gather and scatter (indices are int64) ----
Tensor index_select(const Tensor& x, int64_t axis, const Tensor& index, Loc loc = Loc::current());
Tensor gather(const Tensor& x, int64_t axis, const Tensor& index, Loc loc = Loc::current());
Tensor take_along_axis(const Tensor& x, const Tensor& index, int64_t axis,
                       Loc loc = Loc::current());
Tensor scatter(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src,
               Loc loc = Loc::current());
Tensor scatter_add(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src,
                   Loc loc = Loc::current());
Tensor index_add(const Tensor& x, int64_t axis, const Tensor& index, const Tensor& src,
                 Loc loc = Loc::current());
// Positions of the true elements of a bool tensor, shape [count, ndim]; waits for the data.
Tensor nonzero(const Tensor& mask, Loc loc = Loc::current());
Tensor masked_select(const Tensor& x, const Tensor& mask, Loc loc = Loc::current());
Tensor one_hot(const Tensor& labels, int64_t classes, DType dtype = f32, Loc loc = Loc::current());

// ---- neural-network primitives ----
// Convolution over nd = 1, 2 or 3 spatial dims; x is [N, C, *spatial], w is [O, C/groups, *k].
struct ConvOptions {
  std::vector<int64_t> stride = {1};
  std::vector<int64_t> padding = {0};
  std::vector<int64_t> dilation = {1};
  int64_t groups = 1;
  std::vector<int64_t> output_padding = {0};  // transposed convolutions only
};
Tensor conv1d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias = {},
              ConvOptions opt = {}, Loc loc = Loc::current());
Tensor conv2d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias = {},
              ConvOptions opt = {}, Loc loc = Loc::current());
Tensor conv3d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias = {},
              ConvOptions opt = {}, Loc loc = Loc::current());
// w is [C_in, C_out/groups, *k], as PyTorch's conv_transpose.
Tensor conv_transpose1d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias = {},
                        ConvOptions opt = {}, Loc loc = Loc::current());
Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias = {},
                        ConvOptions opt = {}, Loc loc = Loc::current());
Tensor conv_transpose3d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias = {},
                        ConvOptions opt = {}, Loc loc = Loc::current());

struct PoolOptions {
  std::vector<int64_t> kernel;
  std::vector<int64_t> stride = {};  // default: the kernel size
  std::vector<int64_t> padding = {0};
  std::vector<int64_t> dilation = {1};  // max pooling only
  bool count_include_pad = true;        // average pooling only
};
Tensor max_pool1d(const Tensor& x, PoolOptions opt, Loc loc = Loc::current());
Tensor max_pool2d(const Tensor& x, PoolOptions opt, Loc loc = Loc::current());
Tensor max_pool3d(const Tensor& x, PoolOptions opt, Loc loc = Loc::current());
Tensor avg_pool1d(const Tensor& x, PoolOptions opt, Loc loc = Loc::current());
Tensor avg_pool2d(const Tensor& x, PoolOptions opt, Loc loc = Loc::current());
Tensor avg_pool3d(const Tensor& x, PoolOptions opt, Loc loc = Loc::current());

// Zeroes elements with probability p and scales the rest by 1/(1-p) when training.
Tensor dropout(const Tensor& x, double p, bool training = true, Generator* gen = nullptr,
               Loc loc = Loc::current());
// Rows of weight picked by integer indices: out shape is indices.shape + [dim].
Tensor embedding(const Tensor& indices, const Tensor& weight, Loc loc = Loc::current());

Tensor layer_norm(const Tensor& x, Shape normalized_shape, const std::optional<Tensor>& weight = {},
                  const std::optional<Tensor>& bias = {}, double eps = 1e-5,
                  Loc loc = Loc::current());
Tensor rms_norm(const Tensor& x, Shape normalized_shape, const std::optional<Tensor>& weight = {},
                double eps = 1e-6, Loc loc = Loc::current());
Tensor group_norm(const Tensor& x, int64_t groups, const std::optional<Tensor>& weight = {},
                  const std::optional<Tensor>& bias = {}, double eps = 1e-5,
                  Loc loc = Loc::current());
// Training mode normalizes with batch statistics and, when running_mean/var are given, returns
// the updated running statistics through them (momentum as PyTorch's).
struct BatchNormState {
  Tensor* running_mean = nullptr;
  Tensor* running_var = nullptr;
  double momentum = 0.1;
};
Tensor batch_norm(const Tensor& x, const std::optional<Tensor>& weight,
                  const std::optional<Tensor>& bias, bool training, BatchNormState state = {},
                  double eps = 1e-5, Loc loc = Loc::current());
// relu(batch_norm(...)) in batch norm's own passes: the ReLU applied as the output is written,
// its gradient inside batch norm's backward (one pass each way fewer than the two ops).
Tensor batch_norm_relu(const Tensor& x, const std::optional<Tensor>& weight,
                       const std::optional<Tensor>& bias, bool training, BatchNormState state = {},
                       double eps = 1e-5, Loc loc = Loc::current());

// q, k, v are [..., L, E]; mask (bool, true = keep) broadcasts to [..., Lq, Lk].
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const std::optional<Tensor>& mask = {}, bool causal = false,
                                    std::optional<double> scale = {}, Loc loc = Loc::current());

// logits [N, C, ...]; target holds class indices (int64, [N, ...]) or probabilities (logits'
// shape). reduction: "mean", "sum" or "none".
struct CrossEntropyOptions {
  std::string reduction = "mean";
  int64_t ignore_index = -100;
  double label_smoothing = 0;
  std::optional<Tensor> weight = {};
};
Tensor cross_entropy(const Tensor& logits, const Tensor& target, CrossEntropyOptions opt = {},
                     Loc loc = Loc::current());
// log_probs [N, C, ...], target int64 [N, ...].
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, CrossEntropyOptions opt = {},
                Loc loc = Loc::current());

}  // namespace crisp
