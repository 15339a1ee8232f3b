// Front ends of the nn ops (placeholder bodies until implemented).
#include "core/tensor_impl.h"
#pragma GCC diagnostic ignored "-Wunused-parameter"

namespace crisp {

Tensor conv1d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias, ConvOptions opt,
              Loc loc) {
  CallScope scope("conv1d", loc);
  fail("not implemented yet");
}
Tensor conv2d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias, ConvOptions opt,
              Loc loc) {
  CallScope scope("conv2d", loc);
  fail("not implemented yet");
}
Tensor conv3d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias, ConvOptions opt,
              Loc loc) {
  CallScope scope("conv3d", loc);
  fail("not implemented yet");
}
Tensor conv_transpose1d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias,
                        ConvOptions opt, Loc loc) {
  CallScope scope("conv_transpose1d", loc);
  fail("not implemented yet");
}
Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias,
                        ConvOptions opt, Loc loc) {
  CallScope scope("conv_transpose2d", loc);
  fail("not implemented yet");
}
Tensor conv_transpose3d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias,
                        ConvOptions opt, Loc loc) {
  CallScope scope("conv_transpose3d", loc);
  fail("not implemented yet");
}
Tensor max_pool1d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("max_pool1d", loc);
  fail("not implemented yet");
}
Tensor max_pool2d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("max_pool2d", loc);
  fail("not implemented yet");
}
Tensor max_pool3d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("max_pool3d", loc);
  fail("not implemented yet");
}
Tensor avg_pool1d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("avg_pool1d", loc);
  fail("not implemented yet");
}
Tensor avg_pool2d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("avg_pool2d", loc);
  fail("not implemented yet");
}
Tensor avg_pool3d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("avg_pool3d", loc);
  fail("not implemented yet");
}
Tensor dropout(const Tensor& x, double p, bool training, Generator* gen, Loc loc) {
  CallScope scope("dropout", loc);
  fail("not implemented yet");
}
Tensor embedding(const Tensor& indices, const Tensor& weight, Loc loc) {
  CallScope scope("embedding", loc);
  fail("not implemented yet");
}
Tensor layer_norm(const Tensor& x, Shape normalized_shape, const std::optional<Tensor>& weight,
                  const std::optional<Tensor>& bias, double eps, Loc loc) {
  CallScope scope("layer_norm", loc);
  fail("not implemented yet");
}
Tensor rms_norm(const Tensor& x, Shape normalized_shape, const std::optional<Tensor>& weight,
                double eps, Loc loc) {
  CallScope scope("rms_norm", loc);
  fail("not implemented yet");
}
Tensor group_norm(const Tensor& x, int64_t groups, const std::optional<Tensor>& weight,
                  const std::optional<Tensor>& bias, double eps, Loc loc) {
  CallScope scope("group_norm", loc);
  fail("not implemented yet");
}
Tensor batch_norm(const Tensor& x, const std::optional<Tensor>& weight,
                  const std::optional<Tensor>& bias, bool training, BatchNormState state,
                  double eps, Loc loc) {
  CallScope scope("batch_norm", loc);
  fail("not implemented yet");
}
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const std::optional<Tensor>& mask, bool causal,
                                    std::optional<double> scale, Loc loc) {
  CallScope scope("scaled_dot_product_attention", loc);
  fail("not implemented yet");
}
Tensor cross_entropy(const Tensor& logits, const Tensor& target, CrossEntropyOptions opt, Loc loc) {
  CallScope scope("cross_entropy", loc);
  fail("not implemented yet");
}
Tensor nll_loss(const Tensor& log_probs, const Tensor& target, CrossEntropyOptions opt, Loc loc) {
  CallScope scope("nll_loss", loc);
  fail("not implemented yet");
}
}  // namespace crisp
