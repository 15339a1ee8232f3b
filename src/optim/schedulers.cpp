// Learning-rate schedules: closed forms of PyTorch's StepLR, CosineAnnealingLR, LinearLR and
// OneCycleLR.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "crisp/ops.h"
#include "crisp/optim.h"

namespace crisp::optim {

// ---- LRScheduler ----

LRScheduler::LRScheduler(Optimizer& optimizer) : optimizer_(optimizer) {
  for (size_t g = 0; g < optimizer.num_groups(); ++g) base_lrs_.push_back(optimizer.lr(g));
  last_lrs_ = base_lrs_;
}

void LRScheduler::start() {
  last_epoch_ = 0;
  apply(0);
}

void LRScheduler::apply(int64_t epoch) {
  for (size_t g = 0; g < base_lrs_.size(); ++g) {
    last_lrs_[g] = lr_at(epoch, g);
    *optimizer_.hyper(g)[0].real = last_lrs_[g];
  }
}

void LRScheduler::step(Loc loc) {
  CallScope scope("step", loc);
  check_epoch(last_epoch_ + 1);
  ++last_epoch_;
  apply(last_epoch_);
}

double LRScheduler::lr(size_t group, Loc loc) const {
  CallScope scope("lr", loc);
  if (group >= last_lrs_.size())
    fail("group ", group, " is out of range: the schedule drives ", last_lrs_.size(), " group",
         last_lrs_.size() == 1 ? "" : "s");
  return last_lrs_[group];
}

State LRScheduler::state() const {
  State s;
  Backend::cpu()->use([&] {
    s.set("last_epoch", scalar(static_cast<double>(last_epoch_), i64));
    for (size_t g = 0; g < base_lrs_.size(); ++g)
      s.set("group" + std::to_string(g) + ".base_lr", scalar(base_lrs_[g], f64));
  });
  return s;
}

void LRScheduler::load_state(const State& s, Loc loc) {
  CallScope scope("load_state", loc);
  std::vector<std::string> expected{"last_epoch"};
  for (size_t g = 0; g < base_lrs_.size(); ++g)
    expected.push_back("group" + std::to_string(g) + ".base_lr");
  for (const auto& [name, t] : s)
    if (std::find(expected.begin(), expected.end(), name) == expected.end())
      fail("unexpected entry '", name, "' (a schedule keeps last_epoch and group<g>.base_lr for ",
           base_lrs_.size(), " group", base_lrs_.size() == 1 ? "" : "s", ")");
  auto one = [&](const std::string& name) {
    if (!s.contains(name)) fail("missing entry '", name, "'");
    const Tensor& t = s.at(name);
    if (!t.defined() || t.numel() != 1) fail("entry '", name, "' should hold one value");
    return t;
  };
  const Tensor e = one("last_epoch");
  if (is_floating(e.dtype())) fail("entry 'last_epoch' should be an integer");
  const int64_t epoch = e.item<int64_t>();
  if (epoch < 0) fail("entry 'last_epoch' is negative: ", epoch);
  std::vector<double> base;
  for (size_t g = 0; g < base_lrs_.size(); ++g) {
    base.push_back(one(expected[g + 1]).item<double>());
    if (!(base.back() >= 0)) fail("entry '", expected[g + 1], "' is invalid: ", base.back());
  }
  check_epoch(epoch);
  base_lrs_ = std::move(base);
  last_epoch_ = epoch;
  apply(epoch);
}

// ---- StepLR ----

StepLR::StepLR(Optimizer& optimizer, int64_t step_size, double gamma, Loc loc)
    : LRScheduler(optimizer), step_size_(step_size), gamma_(gamma) {
  CallScope scope("StepLR", loc);
  if (step_size <= 0) fail("step_size must be > 0, got ", step_size);
  if (!(gamma >= 0)) fail("gamma must be >= 0, got ", gamma);
  start();
}

double StepLR::lr_at(int64_t epoch, size_t group) const {
  return base_lrs_[group] * std::pow(gamma_, static_cast<double>(epoch / step_size_));
}

// ---- CosineAnnealingLR ----

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, int64_t t_max, double eta_min, Loc loc)
    : LRScheduler(optimizer), t_max_(t_max), eta_min_(eta_min) {
  CallScope scope("CosineAnnealingLR", loc);
  if (t_max <= 0) fail("t_max must be > 0, got ", t_max);
  if (!(eta_min >= 0)) fail("eta_min must be >= 0, got ", eta_min);
  start();
}

double CosineAnnealingLR::lr_at(int64_t epoch, size_t group) const {
  const double c =
      std::cos(std::numbers::pi * static_cast<double>(epoch) / static_cast<double>(t_max_));
  return eta_min_ + (base_lrs_[group] - eta_min_) * (1 + c) / 2;
}

// ---- LinearLR ----

LinearLR::LinearLR(Optimizer& optimizer, double start_factor, double end_factor,
                   int64_t total_iters, Loc loc)
    : LRScheduler(optimizer), start_(start_factor), end_(end_factor), total_(total_iters) {
  CallScope scope("LinearLR", loc);
  if (!(start_factor > 0 && start_factor <= 1))
    fail("start_factor must be in (0, 1], got ", start_factor);
  if (!(end_factor >= 0 && end_factor <= 1)) fail("end_factor must be in [0, 1], got ", end_factor);
  if (total_iters <= 0) fail("total_iters must be > 0, got ", total_iters);
  start();
}

double LinearLR::lr_at(int64_t epoch, size_t group) const {
  const double t = static_cast<double>(std::min(total_, epoch)) / static_cast<double>(total_);
  return base_lrs_[group] * (start_ + (end_ - start_) * t);
}

// ---- OneCycleLR ----

OneCycleLR::OneCycleLR(Optimizer& optimizer, double max_lr, int64_t total_steps,
                       OneCycleOptions options, Loc loc)
    : LRScheduler(optimizer), total_steps_(total_steps), o_(options) {
  CallScope scope("OneCycleLR", loc);
  init(std::vector<double>(optimizer.num_groups(), max_lr));
}

OneCycleLR::OneCycleLR(Optimizer& optimizer, std::vector<double> max_lrs, int64_t total_steps,
                       OneCycleOptions options, Loc loc)
    : LRScheduler(optimizer), total_steps_(total_steps), o_(options) {
  CallScope scope("OneCycleLR", loc);
  init(std::move(max_lrs));
}

void OneCycleLR::init(std::vector<double> max_lrs) {
  if (max_lrs.size() != optimizer_.num_groups())
    fail("expected ", optimizer_.num_groups(), " values for max_lr (one per group), got ",
         max_lrs.size());
  for (double m : max_lrs)
    if (!(m >= 0)) fail("max_lr must be >= 0, got ", m);
  if (total_steps_ <= 0) fail("total_steps must be > 0, got ", total_steps_);
  if (!(o_.pct_start >= 0 && o_.pct_start <= 1))
    fail("pct_start must be in [0, 1], got ", o_.pct_start);
  if (!(o_.div_factor > 0)) fail("div_factor must be > 0, got ", o_.div_factor);
  if (!(o_.final_div_factor > 0)) fail("final_div_factor must be > 0, got ", o_.final_div_factor);
  const double total = static_cast<double>(total_steps_);
  const double warm = o_.pct_start * total - 1;
  if (o_.three_phase)
    phases_ = {{warm, 0, 1, true, false},
               {2 * o_.pct_start * total - 2, 1, 0, false, true},
               {total - 1, 0, 2, true, true}};
  else
    phases_ = {{warm, 0, 1, true, false}, {total - 1, 1, 2, false, true}};
  double begin = 0;
  for (size_t i = 0; i < phases_.size(); ++i) {
    if (phases_[i].end_step == begin)
      fail("phase ", i, " of the cycle is empty (pct_start ", o_.pct_start, ", total_steps ",
           total_steps_, "): choose a pct_start that gives each phase at least one step");
    begin = phases_[i].end_step;
  }
  max_lrs_ = std::move(max_lrs);
  for (size_t g = 0; g < max_lrs_.size(); ++g) base_lrs_[g] = max_lrs_[g] / o_.div_factor;
  start();
}

std::pair<const OneCycleLR::Phase*, double> OneCycleLR::locate(int64_t step) const {
  const double s = static_cast<double>(step);
  double begin = 0;
  for (size_t i = 0; i < phases_.size(); ++i) {
    const Phase& p = phases_[i];
    if (s <= p.end_step || i + 1 == phases_.size()) return {&p, (s - begin) / (p.end_step - begin)};
    begin = p.end_step;
  }
  return {&phases_.back(), 1.0};
}

double OneCycleLR::anneal(double start, double end, double pct) const {
  if (o_.anneal == Anneal::linear) return (end - start) * pct + start;
  return end + (start - end) / 2 * (std::cos(std::numbers::pi * pct) + 1);
}

double OneCycleLR::lr_at(int64_t epoch, size_t group) const {
  const auto [phase, pct] = locate(epoch);
  const double initial = base_lrs_[group];
  const double levels[3] = {initial, max_lrs_[group], initial / o_.final_div_factor};
  return anneal(levels[phase->start_lr], levels[phase->end_lr], pct);
}

void OneCycleLR::check_epoch(int64_t epoch) const {
  if (epoch > total_steps_) fail("stepped ", epoch, " times, but total_steps is ", total_steps_);
}

void OneCycleLR::apply(int64_t epoch) {
  LRScheduler::apply(epoch);
  if (!o_.cycle_momentum) return;
  const auto [phase, pct] = locate(epoch);
  const double start = phase->start_momentum_max ? o_.max_momentum : o_.base_momentum;
  const double end = phase->end_momentum_max ? o_.max_momentum : o_.base_momentum;
  for (size_t g = 0; g < base_lrs_.size(); ++g)
    optimizer_.cycled_momentum(g) = anneal(start, end, pct);
}

}  // namespace crisp::optim
