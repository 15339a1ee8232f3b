// The gradient scaler: loss scaling, gradient unscaling with one overflow check for all of an
// optimizer's gradients, skipped steps and the scale's growth and backoff.
#include <cmath>

#include "core/tensor_impl.h"
#include "crisp/amp.h"
#include "crisp/grad_scaler.h"

namespace crisp::amp {

GradScaler::GradScaler(GradScalerOptions o, Loc loc)
    : enabled_(o.enabled),
      scale_(o.init_scale),
      growth_factor_(o.growth_factor),
      backoff_factor_(o.backoff_factor),
      growth_interval_(o.growth_interval) {
  CallScope scope("GradScaler", loc);
  if (!(o.init_scale > 0) || !std::isfinite(o.init_scale))
    fail("init_scale must be positive and finite, got ", o.init_scale);
  if (!(o.growth_factor > 1)) fail("growth_factor must be > 1, got ", o.growth_factor);
  if (!(o.backoff_factor > 0 && o.backoff_factor < 1))
    fail("backoff_factor must be in (0, 1), got ", o.backoff_factor);
  if (o.growth_interval < 1) fail("growth_interval must be >= 1, got ", o.growth_interval);
}

Tensor GradScaler::scale(const Tensor& loss, Loc loc) const {
  CallScope scope("GradScaler.scale", loc);
  check_defined(loss, "loss");
  check_floating(loss);
  if (!enabled_) return loss;
  return loss * scale_;
}

void GradScaler::unscale(optim::Optimizer& opt, Loc loc) {
  CallScope scope("GradScaler.unscale", loc);
  if (!enabled_) return;
  PerOptimizer& st = per_opt_[&opt];
  if (st.unscaled) fail("unscale was already called for this optimizer since the last update()");
  if (st.stepped) fail("unscale after step: call update() first");
  NoGrad no_grad;
  Autocast off(DType::f32, false);
  const double inv = 1.0 / scale_;
  // Each gradient is divided on its own backend; x * 0 is 0 for finite x and NaN for infinite or
  // NaN x, so one sum per gradient tells whether it holds any, and one read answers for all.
  std::vector<Tensor> checks;
  std::shared_ptr<Backend> where;
  for (size_t g = 0; g < opt.num_groups(); ++g)
    for (const nn::NamedParam& p : opt.params(g)) {
      if (!p.tensor || !p.tensor->defined()) continue;
      const Tensor grad = p.tensor->grad();
      if (!grad.defined()) continue;
      BackendScope on(grad.backend());
      Tensor u = grad * inv;
      checks.push_back(sum(u * 0).cast(DType::f32).reshape({1}));
      GradNode& node = *p.tensor->impl()->node;
      std::lock_guard lock(node.mutex);
      node.grad = u;
      if (!where) where = grad.backend();
    }
  st.unscaled = true;
  st.found_inf = false;
  if (checks.empty()) return;
  BackendScope on(where);
  const float total = (checks.size() == 1 ? checks[0] : concat(checks)).sum().item<float>();
  st.found_inf = !std::isfinite(total);
}

bool GradScaler::step(optim::Optimizer& opt, Loc loc) {
  CallScope scope("GradScaler.step", loc);
  if (!enabled_) {
    opt.step(loc);
    return true;
  }
  PerOptimizer& st = per_opt_[&opt];
  if (st.stepped) fail("step was already called for this optimizer since the last update()");
  if (!st.unscaled) unscale(opt, loc);
  st.stepped = true;
  if (st.found_inf) return false;
  opt.step(loc);
  return true;
}

void GradScaler::update(Loc loc) {
  CallScope scope("GradScaler.update", loc);
  if (!enabled_) return;
  if (per_opt_.empty())
    fail("no gradients were checked since the last update(): call step() or unscale() first");
  bool inf = false;
  for (const auto& [o, st] : per_opt_) inf = inf || st.found_inf;
  per_opt_.clear();
  if (inf) {
    scale_ *= backoff_factor_;
    growth_tracker_ = 0;
  } else if (++growth_tracker_ == growth_interval_) {
    scale_ *= growth_factor_;
    growth_tracker_ = 0;
  }
}

void GradScaler::update(double new_scale, Loc loc) {
  CallScope scope("GradScaler.update", loc);
  if (!enabled_) return;
  if (!(new_scale > 0) || !std::isfinite(new_scale))
    fail("the new scale must be positive and finite, got ", new_scale);
  per_opt_.clear();
  scale_ = new_scale;
  growth_tracker_ = 0;
}

bool GradScaler::found_inf(const optim::Optimizer& opt) const {
  auto it = per_opt_.find(&opt);
  return it != per_opt_.end() && it->second.found_inf;
}

State GradScaler::state() const {
  if (!enabled_) return {};
  BackendScope on(Backend::cpu());
  return State{{"scale", scalar(scale_, DType::f32)},
               {"growth_factor", scalar(growth_factor_, DType::f64)},
               {"backoff_factor", scalar(backoff_factor_, DType::f64)},
               {"growth_interval", scalar(static_cast<double>(growth_interval_), DType::i64)},
               {"growth_tracker", scalar(static_cast<double>(growth_tracker_), DType::i64)}};
}

void GradScaler::load_state(const State& s, Loc loc) {
  CallScope scope("GradScaler.load_state", loc);
  if (!enabled_) {
    if (!s.empty()) fail("the scaler is disabled but the state is not empty");
    return;
  }
  auto value = [&](const char* name) {
    const Tensor& t = s.at(name);
    if (t.numel() != 1) fail("entry '", name, "' must hold one value, got ", shape_str(t.shape()));
    return t.cast(DType::f64).reshape({}).item<double>();
  };
  const double sc = value("scale"), gf = value("growth_factor"), bf = value("backoff_factor");
  const double gi = value("growth_interval"), gt = value("growth_tracker");
  if (!(sc > 0) || !std::isfinite(sc)) fail("entry 'scale' must be positive and finite, got ", sc);
  if (!(gf > 1)) fail("entry 'growth_factor' must be > 1, got ", gf);
  if (!(bf > 0 && bf < 1)) fail("entry 'backoff_factor' must be in (0, 1), got ", bf);
  if (!(gi >= 1)) fail("entry 'growth_interval' must be >= 1, got ", gi);
  if (!(gt >= 0 && gt < gi))
    fail("entry 'growth_tracker' must be in [0, growth_interval), got ", gt);
  scale_ = sc;
  growth_factor_ = gf;
  backoff_factor_ = bf;
  growth_interval_ = static_cast<int64_t>(gi);
  growth_tracker_ = static_cast<int64_t>(gt);
  per_opt_.clear();
}

}  // namespace crisp::amp
