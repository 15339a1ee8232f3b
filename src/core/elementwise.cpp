// Elementwise ops: unary functions, broadcasting binary arithmetic and comparisons, where.
#include <cmath>
#include <numbers>

#include "core/tensor_impl.h"
#include "crisp/amp.h"
#include "kernels/elementwise.h"

namespace crisp {

namespace {

Tensor unary(Op op, const Tensor& x) { return dispatch_in_layout(std::move(op), {x}, x.dtype()); }

// A float-only unary op whose gradient is g * dydx(x, y).
template <class D>
Tensor smooth(const char* name, Op op, const Tensor& x, Loc loc, D dydx) {
  CallScope scope(name, loc);
  check_defined(x);
  check_floating(x);
  Tensor y = unary(std::move(op), x);
  if (!any_requires_grad({x})) return y;
  return with_grad(y, {x}, [x = x.detach(), y = y.detach(), dydx](const Tensor& g) {
    return Grads{g * dydx(x, y)};
  });
}

// An op whose gradient is zero almost everywhere (sign, floor, ...).
Tensor flat(const char* name, OpKind kind, const Tensor& x, Loc loc, bool float_only) {
  CallScope scope(name, loc);
  check_defined(x);
  if (float_only) check_floating(x);
  if (x.dtype() == bool_) fail("not defined for bool tensors");
  Tensor y = unary(Op{kind}, x);
  return with_grad(y, {x}, [](const Tensor& g) { return Grads{zeros_like(g)}; });
}

// g where the relu output y is positive, else 0; differentiable in g (for higher derivatives).
Tensor relu_grad(const Tensor& y, const Tensor& g) {
  if (y.dtype() != g.dtype() || y.shape() != g.shape()) return where(y > 0, g, 0);
  Tensor dx = dispatch_in_layout(Op{OpKind::relu_backward}, {y, g}, g.dtype());
  return with_grad(dx, {g}, [y](const Tensor& gg) { return Grads{relu_grad(y, gg)}; });
}

bool is_comparison(OpKind k) {
  return k == OpKind::eq || k == OpKind::ne || k == OpKind::lt || k == OpKind::le ||
         k == OpKind::gt || k == OpKind::ge;
}
bool is_logical(OpKind k) {
  return k == OpKind::logical_and || k == OpKind::logical_or || k == OpKind::logical_xor;
}

Tensor binary(const char* name, OpKind kind, const Operand& a, const Operand& b) {
  CallScope scope(name, a.tensor ? a.loc : b.loc);
  if (!a.tensor && !b.tensor) fail("needs at least one tensor operand");
  const DType dt = amp::promoted_dtype(a.tensor, b.tensor);  // autocast: the wider of floats
  Tensor x = operand_tensor(a, dt), y = operand_tensor(b, dt);
  amp::promote(x, y);
  check_same_dtype(x, y);
  const bool predicate = is_comparison(kind) || is_logical(kind);
  if (!predicate && dt == bool_) fail("arithmetic is not defined for bool tensors");
  Shape shape = broadcast_shape(x.shape(), y.shape());
  Tensor out = dispatch_in_layout(Op{kind}, {broadcast_view(x, shape), broadcast_view(y, shape)},
                                  predicate ? bool_ : dt);
  if (predicate || !any_requires_grad({x, y})) return out;
  Shape xs = x.shape(), ys = y.shape();
  auto fit = [xs, ys](Tensor gx, Tensor gy) {
    return Grads{gx.defined() ? reduce_to(gx, xs) : gx, gy.defined() ? reduce_to(gy, ys) : gy};
  };
  Tensor xd = x.detach(), yd = y.detach();
  switch (kind) {
    case OpKind::add:
      return with_grad(out, {x, y}, [fit](const Tensor& g) { return fit(g, g); });
    case OpKind::add_relu:
      return with_grad(out, {x, y}, [fit, o = out.detach()](const Tensor& g) {
        Tensor gs = relu_grad(o, g);
        return fit(gs, gs);
      });
    case OpKind::sub:
      return with_grad(out, {x, y}, [fit](const Tensor& g) { return fit(g, -g); });
    case OpKind::mul:
      return with_grad(out, {x, y}, [fit, xd, yd](const Tensor& g) { return fit(g * yd, g * xd); });
    case OpKind::div:
      return with_grad(out, {x, y}, [fit, xd, yd](const Tensor& g) {
        Tensor gx = g / yd;
        return fit(gx, -gx * xd / yd);
      });
    case OpKind::pow:
      return with_grad(out, {x, y}, [fit, xd, yd, o = out.detach()](const Tensor& g) {
        Tensor gx = g * yd * pow(xd, yd - 1);
        // d/dy x^y = x^y log x, taken as 0 where x == 0 (the limit for y > 0).
        Tensor gy = where(xd == 0, 0, g * o * log(where(xd == 0, 1, xd)));
        return fit(gx, gy);
      });
    case OpKind::maximum:
    case OpKind::minimum: {
      const bool is_max = kind == OpKind::maximum;
      return with_grad(out, {x, y}, [fit, xd, yd, is_max](const Tensor& g) {
        // Ties split the gradient evenly, as PyTorch does.
        Tensor wins = is_max ? (xd > yd) : (xd < yd);
        Tensor share = wins.cast(g.dtype()) + (xd == yd).cast(g.dtype()) * 0.5;
        return fit(g * share, g * (1 - share));
      });
    }
    default:
      fail("no gradient for ", op_name(kind));
  }
}

}  // namespace

// ---- unary ----

Tensor neg(const Tensor& x, Loc loc) {
  CallScope scope("neg", loc);
  check_defined(x);
  if (x.dtype() == bool_) fail("not defined for bool tensors");
  Tensor y = unary(Op{OpKind::neg}, x);
  return with_grad(y, {x}, [](const Tensor& g) { return Grads{-g}; });
}
Tensor abs(const Tensor& x, Loc loc) {
  CallScope scope("abs", loc);
  check_defined(x);
  if (x.dtype() == bool_) fail("not defined for bool tensors");
  Tensor y = unary(Op{OpKind::abs}, x);
  return with_grad(y, {x}, [x = x.detach()](const Tensor& g) { return Grads{g * sign(x)}; });
}
Tensor sign(const Tensor& x, Loc loc) { return flat("sign", OpKind::sign, x, loc, false); }
Tensor floor(const Tensor& x, Loc loc) { return flat("floor", OpKind::floor, x, loc, true); }
Tensor ceil(const Tensor& x, Loc loc) { return flat("ceil", OpKind::ceil, x, loc, true); }
Tensor round(const Tensor& x, Loc loc) { return flat("round", OpKind::round, x, loc, true); }

Tensor exp(const Tensor& x, Loc loc) {
  return smooth("exp", Op{OpKind::exp}, x, loc, [](const Tensor&, const Tensor& y) { return y; });
}
Tensor log(const Tensor& x, Loc loc) {
  return smooth("log", Op{OpKind::log}, x, loc,
                [](const Tensor& x, const Tensor&) { return 1 / x; });
}
Tensor log1p(const Tensor& x, Loc loc) {
  return smooth("log1p", Op{OpKind::log1p}, x, loc,
                [](const Tensor& x, const Tensor&) { return 1 / (x + 1); });
}
Tensor expm1(const Tensor& x, Loc loc) {
  return smooth("expm1", Op{OpKind::expm1}, x, loc,
                [](const Tensor&, const Tensor& y) { return y + 1; });
}
Tensor sqrt(const Tensor& x, Loc loc) {
  return smooth("sqrt", Op{OpKind::sqrt}, x, loc,
                [](const Tensor&, const Tensor& y) { return 0.5 / y; });
}
Tensor rsqrt(const Tensor& x, Loc loc) {
  return smooth("rsqrt", Op{OpKind::rsqrt}, x, loc,
                [](const Tensor&, const Tensor& y) { return -0.5 * y * y * y; });
}
Tensor sin(const Tensor& x, Loc loc) {
  return smooth("sin", Op{OpKind::sin}, x, loc,
                [](const Tensor& x, const Tensor&) { return cos(x); });
}
Tensor cos(const Tensor& x, Loc loc) {
  return smooth("cos", Op{OpKind::cos}, x, loc,
                [](const Tensor& x, const Tensor&) { return -sin(x); });
}
Tensor tanh(const Tensor& x, Loc loc) {
  return smooth("tanh", Op{OpKind::tanh}, x, loc,
                [](const Tensor&, const Tensor& y) { return 1 - y * y; });
}
Tensor sigmoid(const Tensor& x, Loc loc) {
  return smooth("sigmoid", Op{OpKind::sigmoid}, x, loc,
                [](const Tensor&, const Tensor& y) { return y * (1 - y); });
}
Tensor relu(const Tensor& x, Loc loc) {
  CallScope scope("relu", loc);
  check_defined(x);
  if (x.dtype() == bool_) fail("not defined for bool tensors");
  Tensor y = unary(Op{OpKind::relu}, x);
  return with_grad(y, {x}, [y = y.detach()](const Tensor& g) { return Grads{relu_grad(y, g)}; });
}
Tensor leaky_relu(const Tensor& x, double slope, Loc loc) {
  return smooth(
      "leaky_relu", formula::LeakyRelu{slope}.to_op(OpKind::leaky_relu), x, loc,
      [slope](const Tensor& x, const Tensor&) { return where(x > 0, ones_like(x), slope); });
}
Tensor gelu(const Tensor& x, const std::string& approximate, Loc loc) {
  if (approximate == "tanh") {
    return smooth("gelu", Op{OpKind::gelu_tanh}, x, loc, [](const Tensor& x, const Tensor&) {
      const double k = std::sqrt(2 / std::numbers::pi);
      Tensor t = tanh(k * (x + 0.044715 * x * x * x));
      return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x);
    });
  }
  if (approximate != "none") {
    CallScope scope("gelu", loc);
    fail("approximate must be \"none\" or \"tanh\", got \"", approximate, "\"");
  }
  return smooth("gelu", Op{OpKind::gelu}, x, loc, [](const Tensor& x, const Tensor&) {
    Tensor cdf = 0.5 * (1 + erf(x * std::numbers::sqrt2 / 2));
    Tensor pdf = exp(-0.5 * x * x) / std::sqrt(2 * std::numbers::pi);
    return cdf + x * pdf;
  });
}
Tensor silu(const Tensor& x, Loc loc) {
  return smooth("silu", Op{OpKind::silu}, x, loc, [](const Tensor& x, const Tensor&) {
    Tensor s = sigmoid(x);
    return s * (1 + x * (1 - s));
  });
}
Tensor softplus(const Tensor& x, double beta, double threshold, Loc loc) {
  return smooth("softplus", formula::Softplus{beta, threshold}.to_op(OpKind::softplus), x, loc,
                [beta, threshold](const Tensor& x, const Tensor&) {
                  return where(x * beta > threshold, 1, sigmoid(x * beta));
                });
}
Tensor mish(const Tensor& x, Loc loc) {
  return smooth("mish", Op{OpKind::mish}, x, loc, [](const Tensor& x, const Tensor&) {
    Tensor t = tanh(softplus(x));
    return t + x * (1 - t * t) * sigmoid(x);
  });
}
Tensor erf(const Tensor& x, Loc loc) {
  return smooth("erf", Op{OpKind::erf}, x, loc, [](const Tensor& x, const Tensor&) {
    return (2 / std::sqrt(std::numbers::pi)) * exp(-x * x);
  });
}
Tensor clamp(const Tensor& x, std::optional<double> low, std::optional<double> high, Loc loc) {
  CallScope scope("clamp", loc);
  check_defined(x);
  if (x.dtype() == bool_) fail("not defined for bool tensors");
  if (low && high && *low > *high) fail("low ", *low, " exceeds high ", *high);
  const formula::Clamp bounds{low.value_or(0), high.value_or(0), low.has_value(), high.has_value()};
  Tensor y = unary(bounds.to_op(OpKind::clamp), x);
  return with_grad(y, {x}, [x = x.detach(), low, high](const Tensor& g) {
    Tensor keep = ones_like(x) > 0;
    if (low) keep = keep && (x >= *low);
    if (high) keep = keep && (x <= *high);
    return Grads{where(keep, g, 0)};
  });
}
Tensor pow(const Tensor& x, double p, Loc loc) {
  CallScope scope("pow", loc);
  check_defined(x);
  if (x.dtype() == bool_) fail("not defined for bool tensors");
  Tensor y = unary(formula::PowScalar{p}.to_op(OpKind::pow_scalar), x);
  return with_grad(y, {x}, [x = x.detach(), p](const Tensor& g) {
    return Grads{p == 0 ? zeros_like(g) : g * p * pow(x, p - 1)};
  });
}
Tensor logical_not(const Tensor& x, Loc loc) {
  CallScope scope("logical_not", loc);
  check_defined(x);
  return dispatch(Op{OpKind::logical_not}, {x}, x.shape(), bool_);
}
Tensor isnan(const Tensor& x, Loc loc) {
  CallScope scope("isnan", loc);
  check_defined(x);
  return dispatch(Op{OpKind::isnan}, {x}, x.shape(), bool_);
}

// ---- binary ----

Tensor add(const Operand& a, const Operand& b) { return binary("add", OpKind::add, a, b); }
Tensor add_relu(const Operand& a, const Operand& b) {
  return binary("add_relu", OpKind::add_relu, a, b);
}
Tensor sub(const Operand& a, const Operand& b) { return binary("sub", OpKind::sub, a, b); }
Tensor mul(const Operand& a, const Operand& b) { return binary("mul", OpKind::mul, a, b); }
Tensor div(const Operand& a, const Operand& b) { return binary("div", OpKind::div, a, b); }
Tensor pow(const Operand& a, const Operand& b) { return binary("pow", OpKind::pow, a, b); }
Tensor maximum(const Operand& a, const Operand& b) {
  return binary("maximum", OpKind::maximum, a, b);
}
Tensor minimum(const Operand& a, const Operand& b) {
  return binary("minimum", OpKind::minimum, a, b);
}
Tensor eq(const Operand& a, const Operand& b) { return binary("eq", OpKind::eq, a, b); }
Tensor ne(const Operand& a, const Operand& b) { return binary("ne", OpKind::ne, a, b); }
Tensor lt(const Operand& a, const Operand& b) { return binary("lt", OpKind::lt, a, b); }
Tensor le(const Operand& a, const Operand& b) { return binary("le", OpKind::le, a, b); }
Tensor gt(const Operand& a, const Operand& b) { return binary("gt", OpKind::gt, a, b); }
Tensor ge(const Operand& a, const Operand& b) { return binary("ge", OpKind::ge, a, b); }
Tensor logical_and(const Operand& a, const Operand& b) {
  return binary("logical_and", OpKind::logical_and, a, b);
}
Tensor logical_or(const Operand& a, const Operand& b) {
  return binary("logical_or", OpKind::logical_or, a, b);
}
Tensor logical_xor(const Operand& a, const Operand& b) {
  return binary("logical_xor", OpKind::logical_xor, a, b);
}

Tensor operator+(const Operand& a, const Operand& b) { return add(a, b); }
Tensor operator-(const Operand& a, const Operand& b) { return sub(a, b); }
Tensor operator*(const Operand& a, const Operand& b) { return mul(a, b); }
Tensor operator/(const Operand& a, const Operand& b) { return div(a, b); }
Tensor operator==(const Operand& a, const Operand& b) { return eq(a, b); }
Tensor operator!=(const Operand& a, const Operand& b) { return ne(a, b); }
Tensor operator<(const Operand& a, const Operand& b) { return lt(a, b); }
Tensor operator<=(const Operand& a, const Operand& b) { return le(a, b); }
Tensor operator>(const Operand& a, const Operand& b) { return gt(a, b); }
Tensor operator>=(const Operand& a, const Operand& b) { return ge(a, b); }
Tensor operator&&(const Operand& a, const Operand& b) { return logical_and(a, b); }
Tensor operator||(const Operand& a, const Operand& b) { return logical_or(a, b); }
Tensor operator-(const Operand& a) {
  if (!a.tensor) {
    CallScope scope("neg", a.loc);
    fail("needs a tensor operand");
  }
  return neg(*a.tensor, a.loc);
}
Tensor operator!(const Operand& a) {
  if (!a.tensor) {
    CallScope scope("logical_not", a.loc);
    fail("needs a tensor operand");
  }
  return logical_not(*a.tensor, a.loc);
}

Tensor where(const Tensor& cond, const Operand& a, const Operand& b, Loc loc) {
  CallScope scope("where", loc);
  check_defined(cond, "condition");
  if (cond.dtype() != bool_) fail("condition must be bool, got ", dtype_name(cond.dtype()));
  if (!a.tensor && !b.tensor) fail("needs at least one tensor operand besides the condition");
  const DType dt = amp::promoted_dtype(a.tensor, b.tensor);  // autocast: the wider of floats
  Tensor x = operand_tensor(a, dt), y = operand_tensor(b, dt);
  amp::promote(x, y);
  check_same_dtype(x, y);
  Shape shape = broadcast_shape(broadcast_shape(cond.shape(), x.shape()), y.shape());
  Tensor out = dispatch_in_layout(
      Op{OpKind::where},
      {broadcast_view(cond, shape), broadcast_view(x, shape), broadcast_view(y, shape)}, dt);
  if (!any_requires_grad({x, y})) return out;
  Shape xs = x.shape(), ys = y.shape();
  return with_grad(out, {cond, x, y}, [c = cond.detach(), xs, ys](const Tensor& g) {
    return Grads{Tensor(), reduce_to(where(c, g, 0), xs), reduce_to(where(c, 0, g), ys)};
  });
}

}  // namespace crisp
