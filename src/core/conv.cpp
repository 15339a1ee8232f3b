// Front ends of the convolutions: argument checks, output shapes, gradients.
#include <algorithm>

#include "core/tensor_impl.h"
#include "crisp/amp.h"
#include "kernels/conv.h"

namespace crisp {

std::vector<int64_t> per_dim(const char* what, const std::vector<int64_t>& v, int64_t nd,
                             int64_t min) {
  std::vector<int64_t> out;
  if (v.size() == 1)
    out.assign(static_cast<size_t>(nd), v[0]);
  else if (static_cast<int64_t>(v.size()) == nd)
    out = v;
  else
    fail(what, " needs 1 or ", nd, " values, got ", v.size());
  for (int64_t x : out)
    if (x < min) fail(what, " must be >= ", min, ", got ", shape_str(v));
  return out;
}

// ---- convolution ----

namespace {

// What the three conv kernels of one convolution share: its attributes and the forward pass's
// input and weight shapes.
struct ConvSpec {
  ConvAttrs attrs;
  Shape x_shape, w_shape;
  // The output of kind, of the given shape, computed from in.
  Tensor run(OpKind kind, const std::vector<Tensor>& in, const Shape& shape, DType dtype) const {
    if (attrs.channels_last)
      return dispatch_channels_last(attrs.to_op(kind), in, {{shape, dtype}})[0];
    return dispatch(attrs.to_op(kind), in, {OutSpec{shape, dtype}})[0];
  }
};

Tensor conv_raw(const Tensor& x, const Tensor& w, const Tensor& b, const ConvSpec& a,
                const Shape& y_shape);
Tensor conv_input_raw(const Tensor& dy, const Tensor& w, const Tensor& b, const ConvSpec& a);
Tensor conv_weight_raw(const Tensor& x, const Tensor& dy, const ConvSpec& a);

// Sums x [N, C, *] over all axes but 1; its gradient broadcasts back.
Tensor channel_sum(const Tensor& x) {
  Tensor s = dispatch(Op{OpKind::channel_sum}, {x}, {x.shape()[1]}, x.dtype());
  return with_grad(s, {x}, [shape = x.shape()](const Tensor& g) {
    Shape gs(shape.size(), 1);
    gs[1] = shape[1];
    return Grads{expand(reshape(g, gs), shape)};
  });
}

// The three kernels are each other's gradients, so every order of derivative is available.
Tensor conv_raw(const Tensor& x, const Tensor& w, const Tensor& b, const ConvSpec& a,
                const Shape& y_shape) {
  std::vector<Tensor> in{x, w};
  if (b.defined()) in.push_back(b);
  Tensor y = a.run(OpKind::conv, in, y_shape, x.dtype());
  const bool nx = x.requires_grad(), nw = w.requires_grad();
  return with_grad(
      y, in, [x = x.detach(), w = w.detach(), has_b = b.defined(), a, nx, nw](const Tensor& g) {
        Grads out{nx ? conv_input_raw(g, w, Tensor(), a) : Tensor(),
                  nw ? conv_weight_raw(x, g, a) : Tensor()};
        if (has_b) out.push_back(channel_sum(g));
        return out;
      });
}

Tensor conv_input_raw(const Tensor& dy, const Tensor& w, const Tensor& b, const ConvSpec& a) {
  std::vector<Tensor> in{dy, w};
  if (b.defined()) in.push_back(b);
  Tensor dx = a.run(OpKind::conv_backward_input, in, a.x_shape, dy.dtype());
  const bool ndy = dy.requires_grad(), nw = w.requires_grad();
  return with_grad(
      dx, in, [dy = dy.detach(), w = w.detach(), has_b = b.defined(), a, ndy, nw](const Tensor& g) {
        Grads out{ndy ? conv_raw(g, w, Tensor(), a, dy.shape()) : Tensor(),
                  nw ? conv_weight_raw(g, dy, a) : Tensor()};
        if (has_b) out.push_back(channel_sum(g));
        return out;
      });
}

Tensor conv_weight_raw(const Tensor& x, const Tensor& dy, const ConvSpec& a) {
  Tensor dw = a.run(OpKind::conv_backward_weight, {x, dy}, a.w_shape, x.dtype());
  const bool nx = x.requires_grad(), ndy = dy.requires_grad();
  return with_grad(dw, {x, dy}, [x = x.detach(), dy = dy.detach(), a, nx, ndy](const Tensor& g) {
    return Grads{nx ? conv_input_raw(dy, g, Tensor(), a) : Tensor(),
                 ndy ? conv_raw(x, g, Tensor(), a, dy.shape()) : Tensor()};
  });
}

Tensor conv_nd(int64_t nd, bool transposed, const Tensor& x_in, const Tensor& w,
               const std::optional<Tensor>& bias, const ConvOptions& opt) {
  if (amp::lowers(x_in, w, bias))  // autocast
    return conv_nd(nd, transposed, amp::lower(x_in), amp::lower(w), amp::lower(bias), opt);
  check_defined(x_in, "input");
  check_defined(w, "weight");
  check_floating(x_in);
  check_same_dtype(x_in, w);
  if (x_in.ndim() != nd + 2 && x_in.ndim() != nd + 1)
    fail("expected input of ", nd + 1, " (unbatched) or ", nd + 2, " dims, got ",
         shape_str(x_in.shape()));
  if (w.ndim() != nd + 2) fail("expected weight of ", nd + 2, " dims, got ", shape_str(w.shape()));
  const bool unbatched = x_in.ndim() == nd + 1;
  Tensor x = unbatched ? unsqueeze(x_in, 0) : x_in;
  const auto stride = per_dim("stride", opt.stride, nd, 1);
  const auto padding = per_dim("padding", opt.padding, nd, 0);
  const auto dilation = per_dim("dilation", opt.dilation, nd, 1);
  const auto out_pad = per_dim("output_padding", opt.output_padding, nd, 0);
  const int64_t groups = opt.groups;
  if (groups < 1) fail("groups must be >= 1, got ", groups);
  const Shape& xs = x.shape();
  const Shape& ws = w.shape();
  const int64_t N = xs[0], C = xs[1];
  // The forward convolution's channels: transposed, x plays the part of its output.
  const int64_t conv_out = transposed ? C : ws[0];
  const int64_t conv_in = transposed ? ws[1] * groups : ws[1] * groups;
  if (transposed) {
    if (ws[0] != C)
      fail("weight ", shape_str(ws), " expects ", ws[0], " input channels, got input ",
           shape_str(x_in.shape()));
    if (C % groups != 0) fail("input channels ", C, " are not divisible by groups ", groups);
  } else {
    if (ws[1] * groups != C)
      fail("weight ", shape_str(ws), " with groups=", groups, " expects ", ws[1] * groups,
           " input channels, got input ", shape_str(x_in.shape()));
    if (ws[0] % groups != 0)
      fail("output channels ", ws[0], " are not divisible by groups ", groups);
  }
  const int64_t out_channels = transposed ? conv_in : conv_out;
  Tensor b;
  if (bias) {
    b = *bias;
    check_defined(b, "bias");
    check_same_dtype(x, b);
    if (b.ndim() != 1 || b.shape()[0] != out_channels)
      fail("bias must have shape [", out_channels, "], got ", shape_str(b.shape()));
  }
  Shape out_shape{N, out_channels};
  for (int64_t i = 0; i < nd; ++i) {
    const size_t j = static_cast<size_t>(i);
    const int64_t in = xs[2 + j], k = ws[2 + j];
    const int64_t span = dilation[j] * (k - 1) + 1;
    if (transposed) {
      if (out_pad[j] >= stride[j] && out_pad[j] >= dilation[j])
        fail("output_padding ", out_pad[j], " must be smaller than stride ", stride[j],
             " or dilation ", dilation[j]);
      const int64_t o = (in - 1) * stride[j] - 2 * padding[j] + span + out_pad[j];
      if (o < 1)
        fail("input ", shape_str(x_in.shape()), " gives an empty output along spatial dim ", i);
      out_shape.push_back(o);
    } else {
      if (in + 2 * padding[j] < span)
        fail("input ", shape_str(x_in.shape()), " padded by ", padding[j],
             " is smaller than the kernel's span ", span, " along spatial dim ", i);
      out_shape.push_back((in + 2 * padding[j] - span) / stride[j] + 1);
    }
  }
  ConvSpec a;
  a.attrs.nd = nd;
  std::copy(stride.begin(), stride.end(), a.attrs.stride.begin());
  std::copy(padding.begin(), padding.end(), a.attrs.padding.begin());
  std::copy(dilation.begin(), dilation.end(), a.attrs.dilation.begin());
  a.attrs.groups = groups;
  // A channels-last input gives a channels-last output, with the weight stored so too: cuDNN's
  // fastest kernels want all three in that layout.
  a.attrs.channels_last = nd == 2 && is_channels_last(x);
  const Tensor wk = a.attrs.channels_last ? to_channels_last(w) : w;
  Tensor y;
  if (transposed) {
    a.x_shape = out_shape;
    a.w_shape = ws;
    y = conv_input_raw(x, wk, b, a);
  } else {
    a.x_shape = xs;
    a.w_shape = ws;
    y = conv_raw(x, wk, b, a, out_shape);
  }
  return unbatched ? squeeze(y, 0) : y;
}

}  // namespace

Tensor conv1d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias, ConvOptions opt,
              Loc loc) {
  CallScope scope("conv1d", loc);
  return conv_nd(1, false, x, w, bias, opt);
}
Tensor conv2d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias, ConvOptions opt,
              Loc loc) {
  CallScope scope("conv2d", loc);
  return conv_nd(2, false, x, w, bias, opt);
}
Tensor conv3d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias, ConvOptions opt,
              Loc loc) {
  CallScope scope("conv3d", loc);
  return conv_nd(3, false, x, w, bias, opt);
}
Tensor conv_transpose1d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias,
                        ConvOptions opt, Loc loc) {
  CallScope scope("conv_transpose1d", loc);
  return conv_nd(1, true, x, w, bias, opt);
}
Tensor conv_transpose2d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias,
                        ConvOptions opt, Loc loc) {
  CallScope scope("conv_transpose2d", loc);
  return conv_nd(2, true, x, w, bias, opt);
}
Tensor conv_transpose3d(const Tensor& x, const Tensor& w, const std::optional<Tensor>& bias,
                        ConvOptions opt, Loc loc) {
  CallScope scope("conv_transpose3d", loc);
  return conv_nd(3, true, x, w, bias, opt);
}

}  // namespace crisp
