// SGD, Adam, AdamW and RMSprop: hyper-parameters, their checks, and their fused update ops.
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

// The updates of slots (an optimizer's Slot) with their gradients; state is the slot's buffers.
template <class Slot>
std::vector<Update> updates_of(std::span<Slot* const> slots, std::span<const Tensor> grads) {
  std::vector<Update> u;
  for (size_t i = 0; i < slots.size(); ++i)
    u.push_back({*slots[i]->param.tensor, grads[i], slots[i]->buffers, slots[i]->step});
  return u;
}

// Stores each update's outputs: the new parameter, then its new state k in buffers[buffer[k]].
template <class Slot>
void store(std::span<Slot* const> slots, const std::vector<std::vector<Tensor>>& outs,
           const std::vector<size_t>& buffer) {
  for (size_t i = 0; i < slots.size(); ++i) {
    replace_value(*slots[i]->param.tensor, outs[i][0]);
    for (size_t k = 0; k < buffer.size(); ++k) slots[i]->buffers[buffer[k]] = outs[i][1 + k];
  }
}

// Adam and AdamW share the op; AdamW decays the parameter instead of the gradient.
template <class Slot>
void adam_update(std::span<Slot* const> slots, std::span<const Tensor> grads, const AdamOptions& o,
                 bool decoupled) {
  auto outs = adam_step(updates_of(slots, grads), o, decoupled);
  store(slots, outs, o.amsgrad ? std::vector<size_t>{0, 1, 2} : std::vector<size_t>{0, 1});
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

void SGD::update(std::span<Slot* const> slots, std::span<const Tensor> grads, size_t group) {
  const SGDOptions& o = options_[group];
  auto outs = sgd_step(updates_of(slots, grads), o);
  store(slots, outs, o.momentum != 0 ? std::vector<size_t>{0} : std::vector<size_t>{});
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

void Adam::update(std::span<Slot* const> slots, std::span<const Tensor> grads, size_t group) {
  adam_update(slots, grads, options_[group], false);
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

void AdamW::update(std::span<Slot* const> slots, std::span<const Tensor> grads, size_t group) {
  adam_update(slots, grads, as_adam(options_[group]), true);
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

void RMSprop::update(std::span<Slot* const> slots, std::span<const Tensor> grads, size_t group) {
  const RMSpropOptions& o = options_[group];
  auto outs = rmsprop_step(updates_of(slots, grads), o);
  std::vector<size_t> buffer{0};
  if (o.centered) buffer.push_back(1);
  if (o.momentum > 0) buffer.push_back(2);
  store(slots, outs, buffer);
}

}  // namespace crisp::optim
