// Multi-head attention and the transformer encoder layer.
#include <cmath>
#include <limits>

#include "core/tensor_impl.h"
#include "crisp/nn.h"

namespace crisp::nn {

namespace {

Tensor xavier_uniform(Shape shape) {
  const double bound = std::sqrt(6.0 / static_cast<double>(shape[0] + shape[1]));
  return uniform(std::move(shape), -bound, bound);
}

int64_t heads_of(int64_t embed_dim, int64_t num_heads, double dropout, Loc loc) {
  CallScope scope("MultiheadAttention", loc);
  if (embed_dim < 1) fail("embed_dim must be >= 1, got ", embed_dim);
  if (num_heads < 1) fail("num_heads must be >= 1, got ", num_heads);
  if (embed_dim % num_heads != 0)
    fail("embed_dim ", embed_dim, " is not divisible by num_heads ", num_heads);
  if (!(dropout >= 0 && dropout < 1)) fail("dropout must be in [0, 1), got ", dropout);
  return num_heads;
}

}  // namespace

MultiheadAttention::MultiheadAttention(int64_t e, int64_t h, double p, bool has_bias, Loc loc)
    : embed_dim(e),
      num_heads(heads_of(e, h, p, loc)),
      dropout(p),
      in_proj_weight(this, "in_proj_weight", xavier_uniform({3 * e, e}), loc),
      in_proj_bias(this, "in_proj_bias", has_bias ? zeros({3 * e}) : Tensor(), loc),
      out_proj(this, "out_proj", e, e, has_bias) {
  if (has_bias) out_proj->bias = zeros({e});
}

Tensor MultiheadAttention::forward(const Tensor& query, const Tensor& key, const Tensor& value,
                                   AttentionMasks masks, Loc loc) {
  CallScope scope("MultiheadAttention", loc);
  for (const Tensor* t : {&query, &key, &value}) {
    check_defined(*t);
    if ((t->ndim() != 3 && t->ndim() != 2) || t->shape().back() != embed_dim)
      fail("expected query, key and value [N, L, ", embed_dim, "] or [L, ", embed_dim, "], got ",
           shape_str(query.shape()), ", ", shape_str(key.shape()), ", ", shape_str(value.shape()));
  }
  if (key.ndim() != query.ndim() || value.ndim() != query.ndim() || key.shape() != value.shape() ||
      (query.ndim() == 3 && key.shape()[0] != query.shape()[0]))
    fail("query ", shape_str(query.shape()), ", key ", shape_str(key.shape()), " and value ",
         shape_str(value.shape()), " do not match");
  const bool batched = query.ndim() == 3;
  const Tensor q_in = batched ? query : unsqueeze(query, 0);
  const Tensor k_in = batched ? key : unsqueeze(key, 0);
  const Tensor v_in = batched ? value : unsqueeze(value, 0);
  const int64_t N = q_in.shape()[0], L = q_in.shape()[1], S = k_in.shape()[1];
  const int64_t H = num_heads, D = embed_dim / num_heads;

  std::vector<Tensor> w = split(in_proj_weight, {embed_dim, embed_dim, embed_dim}, 0);
  std::vector<std::optional<Tensor>> b(3);
  if (in_proj_bias.defined()) {
    auto bs = split(in_proj_bias, {embed_dim, embed_dim, embed_dim}, 0);
    for (size_t i = 0; i < 3; ++i) b[i] = bs[i];
  }
  // [N, L, E] -> [N, H, L, D]
  auto heads = [&](const Tensor& x, int64_t len) {
    return transpose(reshape(x, {N, len, H, D}), 1, 2);
  };
  Tensor q = heads(linear(q_in, w[0], b[0]), L);
  Tensor k = heads(linear(k_in, w[1], b[1]), S);
  Tensor v = heads(linear(v_in, w[2], b[2]), S);

  // The masks, as one bool mask (true = attend) and one additive float mask.
  std::optional<Tensor> keep, bias;
  auto add_mask = [&](Tensor m, const char* what) {
    if (m.dtype() == bool_) {
      keep = keep ? logical_and(*keep, m) : m;
    } else if (is_floating(m.dtype())) {
      if (m.dtype() != q.dtype())
        fail(what, " has dtype ", dtype_name(m.dtype()), " but the inputs have ",
             dtype_name(q.dtype()));
      bias = bias ? *bias + m : m;
    } else {
      fail(what, " must be bool or floating-point, got ", dtype_name(m.dtype()));
    }
  };
  if (masks.attn_mask) {
    Tensor m = *masks.attn_mask;
    check_defined(m, "attn_mask");
    if (m.ndim() == 3 && m.shape()[0] == N * H && batched) m = reshape(m, {N, H, L, S});
    add_mask(m, "attn_mask");
  }
  if (masks.key_padding_mask) {
    Tensor m = *masks.key_padding_mask;
    check_defined(m, "key_padding_mask");
    const Shape want = batched ? Shape{N, S} : Shape{S};
    if (m.shape() != want)
      fail("key_padding_mask must be ", shape_str(want), ", got ", shape_str(m.shape()));
    add_mask(reshape(m, {N, 1, 1, S}), "key_padding_mask");
  }
  if (keep) broadcast_shape(keep->shape(), Shape{N, H, L, S});
  if (bias) broadcast_shape(bias->shape(), Shape{N, H, L, S});

  const bool drop = training() && dropout > 0;
  Tensor out;
  if (!bias && !drop) {
    out = scaled_dot_product_attention(q, k, v, keep, masks.is_causal);
  } else {
    Tensor scores = matmul(q, transpose(k, -2, -1)) * (1 / std::sqrt(static_cast<double>(D)));
    if (bias) scores = scores + *bias;
    const double neg_inf = -std::numeric_limits<double>::infinity();
    if (masks.is_causal)
      scores = where(reshape(arange(0, double(L), 1, i64), {L, 1}) >=
                         reshape(arange(0, double(S), 1, i64), {1, S}),
                     scores, neg_inf);
    if (keep) scores = where(*keep, scores, neg_inf);
    Tensor attn = softmax(scores, -1);
    if (drop) attn = crisp::dropout(attn, dropout, true);
    out = matmul(attn, v);
  }
  out = reshape(transpose(out, 1, 2), {N, L, embed_dim});
  out = (*out_proj)(out, loc);
  return batched ? out : squeeze(out, 0);
}

// ---- TransformerEncoderLayer ----

TransformerEncoderLayer::TransformerEncoderLayer(int64_t d_model, int64_t nhead, TransformerArgs a,
                                                 Loc loc)
    : args(std::move(a)),
      self_attn(this, "self_attn", d_model, nhead, args.dropout, true, loc),
      linear1(this, "linear1", d_model, args.dim_feedforward, true, loc),
      dropout(this, "dropout", args.dropout, loc),
      linear2(this, "linear2", args.dim_feedforward, d_model, true, loc),
      norm1(this, "norm1", d_model, args.layer_norm_eps, true, true, loc),
      norm2(this, "norm2", d_model, args.layer_norm_eps, true, true, loc),
      dropout1(this, "dropout1", args.dropout, loc),
      dropout2(this, "dropout2", args.dropout, loc) {
  CallScope scope("TransformerEncoderLayer", loc);
  if (args.activation != "relu" && args.activation != "gelu")
    fail("activation must be \"relu\" or \"gelu\", got \"", args.activation, "\"");
}

Tensor TransformerEncoderLayer::forward(const Tensor& x, AttentionMasks masks, Loc loc) {
  CallScope scope("TransformerEncoderLayer", loc);
  auto sa = [&](const Tensor& h) { return dropout1(self_attn->forward(h, h, h, masks, loc), loc); };
  auto ff = [&](const Tensor& h) {
    Tensor a = linear1(h, loc);
    a = args.activation == "gelu" ? gelu(a) : relu(a);
    return dropout2(linear2(dropout(a, loc), loc), loc);
  };
  if (args.norm_first) {
    Tensor y = x + sa(norm1(x, loc));
    return y + ff(norm2(y, loc));
  }
  Tensor y = norm1(x + sa(x), loc);
  return norm2(y + ff(y), loc);
}

}  // namespace crisp::nn
