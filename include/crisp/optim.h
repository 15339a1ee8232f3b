// Optimizers (SGD, Adam, AdamW, RMSprop), gradient clipping and learning-rate schedules.
#pragma once

#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "crisp/error.h"
#include "crisp/state.h"
#include "crisp/tensor.h"

namespace crisp::optim {

// Hyper-parameters; the update formulas are PyTorch's (torch.optim, 1.13), field for field.
struct SGDOptions {
  double lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false, maximize = false;
};
struct AdamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;  // L2, in the grad
  bool amsgrad = false, maximize = false;
};
struct AdamWOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 1e-2;  // decoupled
  bool amsgrad = false, maximize = false;
};
struct RMSpropOptions {
  double lr = 1e-2, alpha = 0.99, eps = 1e-8, weight_decay = 0, momentum = 0;
  bool centered = false, maximize = false;
};

// Parameters that share hyper-parameters. Every optimizer takes a list of groups:
//   optim::Adam opt({{model.a->parameters(), {.lr = 1e-3}},
//                    {model.b->parameters(), {.lr = 1e-4}}});
template <class Options>
struct ParamGroup {
  std::vector<nn::NamedParam> params;
  Options options = {};
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Updates every parameter that has a gradient (others are skipped) without recording
  // gradients, through fused backend ops: one per group for parameters that share a backend, a
  // dtype and a step count (so a GPU updates a whole model in one or a few launches). The parameter
  // is replaced through its NamedParam pointer by a new value that is still a leaf requiring grad
  // and keeps the accumulated gradient until zero_grad().
  virtual void step(Loc loc = Loc::current());
  // Drops every parameter's gradient (PyTorch's set_to_none).
  void zero_grad();

  // Per-parameter state as "<param>.<buffer>" (e.g. "fc.weight.exp_avg"), the step count as an
  // int64 0-d "<param>.step", and every group's hyper-parameters as float64 0-d "group<g>.<name>"
  // ("group0.lr"; flags as 0/1). A parameter whose name is repeated across groups is
  // "group<g>.<param>". Tensors are shared, not copied; later steps never change them.
  State state() const;
  // Replaces all state and hyper-parameters with s (as saved by state()). Refuses unknown or
  // missing entries and shape mismatches, naming the entry; on error nothing changes.
  void load_state(const State& s, Loc loc = Loc::current());

  size_t num_groups() const { return groups_.size(); }
  std::vector<nn::NamedParam> params(size_t group = 0, Loc loc = Loc::current()) const;
  double lr(size_t group = 0, Loc loc = Loc::current()) const;
  void set_lr(double lr, Loc loc = Loc::current());  // every group
  void set_lr(size_t group, double lr, Loc loc = Loc::current());

 protected:
  // A parameter and its state; buffers are indexed like the constructor's buffer_names
  // (undefined = none yet).
  struct Slot {
    nn::NamedParam param;
    std::string key;  // its name in state()
    int64_t step = 0;
    std::vector<Tensor> buffers;
  };
  // A named hyper-parameter of a group, as a number or a flag.
  struct Hyper {
    const char* name;
    double* real = nullptr;
    bool* flag = nullptr;
  };

  explicit Optimizer(std::vector<const char*> buffer_names)
      : buffer_names_(std::move(buffer_names)) {}
  // Adds a group of parameters (called by constructors with the group's options stored).
  void add_group(const std::vector<nn::NamedParam>& params);

  virtual const char* kind() const = 0;
  // The group's hyper-parameters, as named in state(); the first is the learning rate.
  virtual std::vector<Hyper> hyper(size_t group) = 0;
  // Throws when the group's hyper-parameters are out of range.
  virtual void check_options(size_t group) const = 0;
  // The buffers a parameter of the group must have once it has taken a step.
  virtual std::vector<bool> required_buffers(size_t group) const = 0;
  // Runs the fused updates of a group's slots with their gradients (grads[i] for slots[i]).
  virtual void update(std::span<Slot* const> slots, std::span<const Tensor> grads,
                      size_t group) = 0;
  // The value OneCycleLR cycles: momentum (SGD, RMSprop) or beta1 (Adam, AdamW).
  virtual double& cycled_momentum(size_t group) = 0;

  std::vector<std::vector<Slot>>& groups() { return groups_; }
  const std::vector<std::vector<Slot>>& groups() const { return groups_; }
  void check_group(size_t group) const;

 private:
  friend class LRScheduler;
  friend class OneCycleLR;
  friend void step(std::span<Optimizer* const> optimizers, Loc loc);
  void check_step();  // validates everything a step will touch, before touching anything
  void run_step();
  void assign_keys();

  std::vector<const char*> buffer_names_;
  std::vector<std::vector<Slot>> groups_;
};

namespace detail {
// Groups of parameters with one Options type per optimizer.
template <class Options>
class OptimizerWith : public Optimizer {
 public:
  Options& options(size_t group = 0, Loc loc = Loc::current()) {
    CallScope scope("options", loc);
    check_group(group);
    return options_[group];
  }
  const Options& options(size_t group = 0, Loc loc = Loc::current()) const {
    CallScope scope("options", loc);
    check_group(group);
    return options_[group];
  }
  void add_param_group(ParamGroup<Options> group, Loc loc = Loc::current()) {
    CallScope scope("add_param_group", loc);
    options_.push_back(group.options);
    try {
      check_options(options_.size() - 1);
      add_group(group.params);
    } catch (...) {
      options_.pop_back();
      throw;
    }
  }

 protected:
  using Optimizer::Optimizer;
  void init(std::vector<ParamGroup<Options>> groups) {
    for (auto& g : groups) {
      options_.push_back(g.options);
      check_options(options_.size() - 1);
      add_group(g.params);
    }
  }
  std::vector<Options> options_;
};
}  // namespace detail

class SGD : public detail::OptimizerWith<SGDOptions> {
 public:
  SGD(std::vector<nn::NamedParam> params, SGDOptions options = {}, Loc loc = Loc::current());
  SGD(std::vector<ParamGroup<SGDOptions>> groups, Loc loc = Loc::current());

 protected:
  const char* kind() const override { return "SGD"; }
  std::vector<Hyper> hyper(size_t group) override;
  void check_options(size_t group) const override;
  std::vector<bool> required_buffers(size_t group) const override;
  void update(std::span<Slot* const> slots, std::span<const Tensor> grads, size_t group) override;
  double& cycled_momentum(size_t group) override { return options_[group].momentum; }
};

class Adam : public detail::OptimizerWith<AdamOptions> {
 public:
  Adam(std::vector<nn::NamedParam> params, AdamOptions options = {}, Loc loc = Loc::current());
  Adam(std::vector<ParamGroup<AdamOptions>> groups, Loc loc = Loc::current());

 protected:
  const char* kind() const override { return "Adam"; }
  std::vector<Hyper> hyper(size_t group) override;
  void check_options(size_t group) const override;
  std::vector<bool> required_buffers(size_t group) const override;
  void update(std::span<Slot* const> slots, std::span<const Tensor> grads, size_t group) override;
  double& cycled_momentum(size_t group) override { return options_[group].beta1; }
};

class AdamW : public detail::OptimizerWith<AdamWOptions> {
 public:
  AdamW(std::vector<nn::NamedParam> params, AdamWOptions options = {}, Loc loc = Loc::current());
  AdamW(std::vector<ParamGroup<AdamWOptions>> groups, Loc loc = Loc::current());

 protected:
  const char* kind() const override { return "AdamW"; }
  std::vector<Hyper> hyper(size_t group) override;
  void check_options(size_t group) const override;
  std::vector<bool> required_buffers(size_t group) const override;
  void update(std::span<Slot* const> slots, std::span<const Tensor> grads, size_t group) override;
  double& cycled_momentum(size_t group) override { return options_[group].beta1; }
};

class RMSprop : public detail::OptimizerWith<RMSpropOptions> {
 public:
  RMSprop(std::vector<nn::NamedParam> params, RMSpropOptions options = {},
          Loc loc = Loc::current());
  RMSprop(std::vector<ParamGroup<RMSpropOptions>> groups, Loc loc = Loc::current());

 protected:
  const char* kind() const override { return "RMSprop"; }
  std::vector<Hyper> hyper(size_t group) override;
  void check_options(size_t group) const override;
  std::vector<bool> required_buffers(size_t group) const override;
  void update(std::span<Slot* const> slots, std::span<const Tensor> grads, size_t group) override;
  double& cycled_momentum(size_t group) override { return options_[group].momentum; }
};

// Steps several optimizers in one call: optim::step({&adam, &sgd}) or optim::step(adam, sgd).
// Every optimizer is checked before any parameter changes.
void step(std::span<Optimizer* const> optimizers, Loc loc = Loc::current());
inline void step(std::initializer_list<Optimizer*> optimizers, Loc loc = Loc::current()) {
  step(std::span<Optimizer* const>(optimizers.begin(), optimizers.size()), loc);
}
// The first argument records the caller's line for errors.
struct OptimizerRef {
  Optimizer* optimizer;
  Loc loc;
  OptimizerRef(Optimizer& o, Loc loc = Loc::current()) : optimizer(&o), loc(loc) {}
};
template <std::derived_from<Optimizer>... Rest>
void step(OptimizerRef first, Rest&... rest) {
  step({first.optimizer, static_cast<Optimizer*>(&rest)...}, first.loc);
}

// Scales the gradients so that their combined norm (over all of them, as if concatenated) is
// at most max_norm, by max_norm / (total + 1e-6) when it is over; returns the total norm before
// clipping. norm_type: any p > 0, or infinity (the largest magnitude).
inline constexpr double inf = std::numeric_limits<double>::infinity();
double clip_grad_norm(const std::vector<nn::NamedParam>& params, double max_norm,
                      double norm_type = 2, bool error_if_nonfinite = false,
                      Loc loc = Loc::current());
// Clamps every gradient element to [-clip, clip].
void clip_grad_value(const std::vector<nn::NamedParam>& params, double clip,
                     Loc loc = Loc::current());

// Learning-rate schedules. Constructing one sets the optimizer's learning rates for epoch 0
// (PyTorch does the same); step() advances one epoch (or iteration) and sets them again. Rates
// come from closed forms of the base rates (the optimizer's at construction), equal to PyTorch's
// chained forms when one scheduler drives the optimizer. A schedule may set a rate an optimizer
// step would refuse (OneCycleLR's linear anneal past its end goes below 0), as PyTorch does.
class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  void step(Loc loc = Loc::current());
  // The rate set by the last step (PyTorch's get_last_lr()).
  double lr(size_t group = 0, Loc loc = Loc::current()) const;
  int64_t last_epoch() const { return last_epoch_; }
  // "last_epoch" (int64 0-d) and "group<g>.base_lr" (float64 0-d).
  State state() const;
  // Restores the epoch and base rates and sets the optimizer's rates for that epoch.
  void load_state(const State& s, Loc loc = Loc::current());

 protected:
  explicit LRScheduler(Optimizer& optimizer);
  // Sets epoch 0; derived constructors call it last.
  void start();
  virtual double lr_at(int64_t epoch, size_t group) const = 0;
  // Throws when epoch is past the schedule's end.
  virtual void check_epoch(int64_t /*epoch*/) const {}
  virtual void apply(int64_t epoch);

  Optimizer& optimizer_;
  std::vector<double> base_lrs_;
  std::vector<double> last_lrs_;
  int64_t last_epoch_ = -1;
};

// lr = base * gamma^(epoch / step_size)
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& optimizer, int64_t step_size, double gamma = 0.1, Loc loc = Loc::current());

 protected:
  double lr_at(int64_t epoch, size_t group) const override;
  int64_t step_size_;
  double gamma_;
};

// lr = eta_min + (base - eta_min) * (1 + cos(pi * epoch / t_max)) / 2
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& optimizer, int64_t t_max, double eta_min = 0,
                    Loc loc = Loc::current());

 protected:
  double lr_at(int64_t epoch, size_t group) const override;
  int64_t t_max_;
  double eta_min_;
};

// lr = base * factor, factor going linearly from start_factor to end_factor over total_iters
// epochs, then staying there. A linear warm-up: LinearLR(opt, 0.01, 1.0, warmup_steps).
class LinearLR : public LRScheduler {
 public:
  LinearLR(Optimizer& optimizer, double start_factor = 1.0 / 3, double end_factor = 1.0,
           int64_t total_iters = 5, Loc loc = Loc::current());

 protected:
  double lr_at(int64_t epoch, size_t group) const override;
  double start_, end_;
  int64_t total_;
};

enum class Anneal { cos, linear };
struct OneCycleOptions {
  double pct_start = 0.3;
  Anneal anneal = Anneal::cos;
  // Cycles the momentum (beta1 for Adam/AdamW) inversely to the rate, as PyTorch does by default.
  bool cycle_momentum = true;
  double base_momentum = 0.85, max_momentum = 0.95;
  double div_factor = 25, final_div_factor = 1e4;
  bool three_phase = false;
};

// One cycle (Smith): warm up from max_lr / div_factor to max_lr over pct_start of total_steps,
// then anneal to max_lr / div_factor / final_div_factor. Stepping past total_steps throws.
class OneCycleLR : public LRScheduler {
 public:
  OneCycleLR(Optimizer& optimizer, double max_lr, int64_t total_steps, OneCycleOptions options = {},
             Loc loc = Loc::current());
  // One max_lr per group.
  OneCycleLR(Optimizer& optimizer, std::vector<double> max_lrs, int64_t total_steps,
             OneCycleOptions options = {}, Loc loc = Loc::current());

 protected:
  double lr_at(int64_t epoch, size_t group) const override;
  void check_epoch(int64_t epoch) const override;
  void apply(int64_t epoch) override;

 private:
  struct Phase {
    double end_step;
    int start_lr, end_lr;  // 0 initial, 1 max, 2 min
    bool start_momentum_max, end_momentum_max;
  };
  // The phase holding step and where in it (0..1) the step lies.
  std::pair<const Phase*, double> locate(int64_t step) const;
  double anneal(double start, double end, double pct) const;
  void init(std::vector<double> max_lrs);

  std::vector<double> max_lrs_;
  int64_t total_steps_;
  OneCycleOptions o_;
  std::vector<Phase> phases_;
};

}  // namespace crisp::optim
