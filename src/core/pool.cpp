// Front ends of pooling: argument checks, output shapes, gradients.
#include <algorithm>

#include "core/tensor_impl.h"
#include "crisp/amp.h"
#include "kernels/pool.h"

namespace crisp {

// ---- pooling ----

namespace {

Tensor pool_nd(int64_t nd, bool is_max, const Tensor& x_in, const PoolOptions& opt) {
  check_defined(x_in);
  check_floating(x_in);
  if (x_in.ndim() != nd + 2 && x_in.ndim() != nd + 1)
    fail("expected input of ", nd + 1, " (unbatched) or ", nd + 2, " dims, got ",
         shape_str(x_in.shape()));
  if (opt.kernel.empty()) fail("kernel size must be given");
  const auto kernel = per_dim("kernel", opt.kernel, nd, 1);
  const auto stride = opt.stride.empty() ? kernel : per_dim("stride", opt.stride, nd, 1);
  const auto padding = per_dim("padding", opt.padding, nd, 0);
  const auto dilation = per_dim("dilation", opt.dilation, nd, 1);
  if (!is_max)
    for (int64_t d : dilation)
      if (d != 1) fail("dilation is not supported by average pooling");
  // Channels-last input: 2-d max pooling runs in that layout; the others in the usual one, the
  // output given back in the input's.
  const bool channels_last = is_channels_last(x_in) && x_in.ndim() == nd + 2;
  if (channels_last && !(is_max && nd == 2))
    return to_channels_last(pool_nd(nd, is_max, x_in.contiguous(), opt));
  const bool unbatched = x_in.ndim() == nd + 1;
  Tensor x = unbatched ? unsqueeze(x_in, 0) : x_in;
  Shape out_shape{x.shape()[0], x.shape()[1]};
  for (size_t j = 0; j < static_cast<size_t>(nd); ++j) {
    if (padding[j] * 2 > kernel[j])
      fail("padding ", padding[j], " must be at most half of kernel size ", kernel[j]);
    const int64_t in = x.shape()[2 + j], span = dilation[j] * (kernel[j] - 1) + 1;
    const int64_t o = (in + 2 * padding[j] - span) / stride[j] + 1;
    if (in + 2 * padding[j] < span || o < 1)
      fail("input ", shape_str(x_in.shape()), " is too small for kernel ", shape_str(kernel),
           " (padding ", shape_str(padding), ", dilation ", shape_str(dilation), ")");
    out_shape.push_back(o);
  }
  PoolAttrs attrs{
      .nd = nd, .channels_last = channels_last, .count_include_pad = opt.count_include_pad};
  std::ranges::copy(kernel, attrs.kernel.begin());
  std::ranges::copy(stride, attrs.stride.begin());
  std::ranges::copy(padding, attrs.padding.begin());
  std::ranges::copy(dilation, attrs.dilation.begin());
  Tensor y;
  if (is_max) {
    auto run = [channels_last](const Op& op, const std::vector<Tensor>& in,
                               const std::vector<OutSpec>& outs) {
      return channels_last ? dispatch_channels_last(op, in, outs) : dispatch(op, in, outs);
    };
    auto outs = run(attrs.to_op(OpKind::max_pool), {x}, {{out_shape, x.dtype()}, {out_shape, i64}});
    y = with_grad(outs[0], {x}, [=, idx = outs[1], xs = x.shape()](const Tensor& g) {
      return Grads{run(attrs.to_op(OpKind::max_pool_backward), {g, idx}, {{xs, g.dtype()}})[0]};
    });
  } else {
    y = dispatch(attrs.to_op(OpKind::avg_pool), {x}, out_shape, x.dtype());
    y = with_grad(y, {x}, [attrs, xs = x.shape()](const Tensor& g) {
      return Grads{dispatch(attrs.to_op(OpKind::avg_pool_backward), {g}, xs, g.dtype())};
    });
  }
  return unbatched ? squeeze(y, 0) : y;
}

}  // namespace

Tensor max_pool1d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("max_pool1d", loc);
  return pool_nd(1, true, x, opt);
}
Tensor max_pool2d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("max_pool2d", loc);
  return pool_nd(2, true, x, opt);
}
Tensor max_pool3d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("max_pool3d", loc);
  return pool_nd(3, true, x, opt);
}
Tensor avg_pool1d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("avg_pool1d", loc);
  return pool_nd(1, false, x, opt);
}
Tensor avg_pool2d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("avg_pool2d", loc);
  return pool_nd(2, false, x, opt);
}
Tensor avg_pool3d(const Tensor& x, PoolOptions opt, Loc loc) {
  CallScope scope("avg_pool3d", loc);
  return pool_nd(3, false, x, opt);
}

}  // namespace crisp
