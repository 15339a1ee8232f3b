// SGD, Adam, AdamW and RMSprop: hyper-parameters, their checks, and one fused op per update.
#include "optim/steps.h"

namespace crisp::optim {

namespace {

void check_lr(double lr) {
  if (!(lr >= 0)) fail("invalid learning rate ", lr, ": must be >= 0");
}
void check_non_negative(const char* what, double v) {
  if (!(v >= 0)) fail("invalid ", what, " ", v, ": must be >= 0");
}
void check_beta(const char* what, double v) {
  if (!(v >= 0 && v < 1)) fail("invalid ", what, " ", v, ": must be in [0, 1)");
}

template <class Options>
std::vector<ParamGroup<Options>> one_group(std::vector<nn::NamedParam> params, Options o) {
  std::vector<ParamGroup<Options>> groups;
  groups.push_back({std::move(params), o});
  return groups;
}

AdamOptions as_adam(const AdamWOptions& o) {
  return {o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.amsgrad, o.maximize};
}

void check_adam(const AdamOptions& o) {
  check_lr(o.lr);
  check_non_negative("eps", o.eps);
  check_beta("beta1", o.beta1);
  check_beta("beta2", o.beta2);
  check_non_negative("weight_decay", o.weight_decay);
}

// Adam and AdamW share the op; AdamW decays the parameter instead of the gradient.
void adam_update(Tensor& p, int64_t step, std::vector<Tensor>& b, const AdamOptions& o,
                 bool decoupled, const Tensor& grad) {
  auto out = adam_step(p, grad, b[0], b[1], b[2], o, decoupled, step);
  replace_value(p, out[0]);
  b[0] = out[1];
  b[1] = out[2];
  if (o.amsgrad) b[2] = out[3];
}

}  // namespace

// ---- SGD ----

SGD::SGD(std::vector<nn::NamedParam> params, SGDOptions options, Loc loc)
    : SGD(one_group(std::move(params), options), loc) {}

SGD::SGD(std::vector<ParamGroup<SGDOptions>> groups, Loc loc) : OptimizerWith({"momentum_buffer"}) {
  CallScope scope("SGD", loc);
  init(std::move(groups));
}

std::vector<Optimizer::Hyper> SGD::hyper(size_t group) {
  SGDOptions& o = options_[group];
  return {{"lr", &o.lr},
          {"momentum", &o.momentum},
          {"dampening", &o.dampening},
          {"weight_decay", &o.weight_decay},
          {"nesterov", nullptr, &o.nesterov},
          {"maximize", nullptr, &o.maximize}};
}

void SGD::check_options(size_t group) const {
  const SGDOptions& o = options_[group];
  check_lr(o.lr);
  check_non_negative("momentum", o.momentum);
  check_non_negative("weight_decay", o.weight_decay);
  if (o.nesterov && (o.momentum <= 0 || o.dampening != 0))
    fail("Nesterov momentum requires a momentum > 0 and zero dampening (group ", group, ")");
}

std::vector<bool> SGD::required_buffers(size_t group) const {
  return {options_[group].momentum != 0};
}

void SGD::update(Slot& slot, size_t group, const Tensor& grad) {
  auto out = sgd_step(*slot.param.tensor, grad, slot.buffers[0], options_[group]);
  replace_value(*slot.param.tensor, out[0]);
  if (out.size() > 1) slot.buffers[0] = out[1];
}

// ---- Adam ----

Adam::Adam(std::vector<nn::NamedParam> params, AdamOptions options, Loc loc)
    : Adam(one_group(std::move(params), options), loc) {}

Adam::Adam(std::vector<ParamGroup<AdamOptions>> groups, Loc loc)
    : OptimizerWith({"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}) {
  CallScope scope("Adam", loc);
  init(std::move(groups));
}

std::vector<Optimizer::Hyper> Adam::hyper(size_t group) {
  AdamOptions& o = options_[group];
  return {{"lr", &o.lr},
          {"beta1", &o.beta1},
          {"beta2", &o.beta2},
          {"eps", &o.eps},
          {"weight_decay", &o.weight_decay},
          {"amsgrad", nullptr, &o.amsgrad},
          {"maximize", nullptr, &o.maximize}};
}

void Adam::check_options(size_t group) const { check_adam(options_[group]); }

std::vector<bool> Adam::required_buffers(size_t group) const {
  return {true, true, options_[group].amsgrad};
}

void Adam::update(Slot& slot, size_t group, const Tensor& grad) {
  adam_update(*slot.param.tensor, slot.step, slot.buffers, options_[group], false, grad);
}

// ---- AdamW ----

AdamW::AdamW(std::vector<nn::NamedParam> params, AdamWOptions options, Loc loc)
    : AdamW(one_group(std::move(params), options), loc) {}

AdamW::AdamW(std::vector<ParamGroup<AdamWOptions>> groups, Loc loc)
    : OptimizerWith({"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}) {
  CallScope scope("AdamW", loc);
  init(std::move(groups));
}

std::vector<Optimizer::Hyper> AdamW::hyper(size_t group) {
  AdamWOptions& o = options_[group];
  return {{"lr", &o.lr},
          {"beta1", &o.beta1},
          {"beta2", &o.beta2},
          {"eps", &o.eps},
          {"weight_decay", &o.weight_decay},
          {"amsgrad", nullptr, &o.amsgrad},
          {"maximize", nullptr, &o.maximize}};
}

void AdamW::check_options(size_t group) const { check_adam(as_adam(options_[group])); }

std::vector<bool> AdamW::required_buffers(size_t group) const {
  return {true, true, options_[group].amsgrad};
}

void AdamW::update(Slot& slot, size_t group, const Tensor& grad) {
  adam_update(*slot.param.tensor, slot.step, slot.buffers, as_adam(options_[group]), true, grad);
}

// ---- RMSprop ----

RMSprop::RMSprop(std::vector<nn::NamedParam> params, RMSpropOptions options, Loc loc)
    : RMSprop(one_group(std::move(params), options), loc) {}

RMSprop::RMSprop(std::vector<ParamGroup<RMSpropOptions>> groups, Loc loc)
    : OptimizerWith({"square_avg", "grad_avg", "momentum_buffer"}) {
  CallScope scope("RMSprop", loc);
  init(std::move(groups));
}

std::vector<Optimizer::Hyper> RMSprop::hyper(size_t group) {
  RMSpropOptions& o = options_[group];
  return {{"lr", &o.lr},
          {"alpha", &o.alpha},
          {"eps", &o.eps},
          {"weight_decay", &o.weight_decay},
          {"momentum", &o.momentum},
          {"centered", nullptr, &o.centered},
          {"maximize", nullptr, &o.maximize}};
}

void RMSprop::check_options(size_t group) const {
  const RMSpropOptions& o = options_[group];
  check_lr(o.lr);
  check_non_negative("eps", o.eps);
  check_non_negative("momentum", o.momentum);
  check_non_negative("weight_decay", o.weight_decay);
  check_non_negative("alpha", o.alpha);
}

std::vector<bool> RMSprop::required_buffers(size_t group) const {
  const RMSpropOptions& o = options_[group];
  return {true, o.centered, o.momentum > 0};
}

void RMSprop::update(Slot& slot, size_t group, const Tensor& grad) {
  std::vector<Tensor>& b = slot.buffers;
  const RMSpropOptions& o = options_[group];
  auto out = rmsprop_step(*slot.param.tensor, grad, b[0], b[1], b[2], o);
  replace_value(*slot.param.tensor, out[0]);
  size_t k = 1;
  b[0] = out[k++];
  if (o.centered) b[1] = out[k++];
  if (o.momentum > 0) b[2] = out[k++];
}

}  // namespace crisp::optim
