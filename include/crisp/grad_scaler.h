// The gradient scaler of mixed-precision training (amp::GradScaler): float16 gradients scaled
// up so that they do not underflow, and optimizer steps skipped when they overflowed.
#pragma once

#include <cstdint>
#include <unordered_map>

#include "crisp/error.h"
#include "crisp/optim.h"
#include "crisp/state.h"
#include "crisp/tensor.h"

namespace crisp::amp {

struct GradScalerOptions {
  double init_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  bool enabled = true;
};

// Multiplies the loss by a scale so that float16 gradients do not underflow, divides the
// gradients by it before the optimizer step, and skips steps whose gradients overflowed:
//
//   amp::GradScaler scaler;
//   { amp::Autocast ac(f16); loss = loss_fn(model(x), y); }
//   scaler.scale(loss).backward();
//   scaler.step(opt);      // unscales (unless unscale(opt) was called), steps if all finite
//   scaler.update();       // backoff after an overflow; growth after growth_interval good steps
//   opt.zero_grad();
class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions options = {}, Loc loc = Loc::current());

  // loss * scale (loss itself when disabled).
  Tensor scale(const Tensor& loss, Loc loc = Loc::current()) const;
  // Divides every gradient of opt's parameters by the scale, in place, and records whether any
  // was infinite or NaN (one reduction per gradient, one read for all of them). At most once per
  // optimizer between updates.
  void unscale(optim::Optimizer& opt, Loc loc = Loc::current());
  // Unscales if not done yet, then runs opt.step() unless a gradient was infinite or NaN.
  // Returns whether the step ran.
  bool step(optim::Optimizer& opt, Loc loc = Loc::current());
  // Adjusts the scale from the steps since the last update: times backoff_factor when any
  // gradient overflowed (and the growth count restarts), else times growth_factor once
  // growth_interval finite steps in a row have been seen.
  void update(Loc loc = Loc::current());
  // Sets the scale explicitly (the growth count restarts).
  void update(double new_scale, Loc loc = Loc::current());

  double get_scale() const { return enabled_ ? scale_ : 1.0; }
  bool is_enabled() const { return enabled_; }
  int64_t growth_tracker() const { return growth_tracker_; }
  // Whether the last unscale of opt found an infinite or NaN gradient.
  bool found_inf(const optim::Optimizer& opt) const;

  // "scale" (float32 0-d), "growth_tracker" (int64), "growth_factor", "backoff_factor"
  // (float64), "growth_interval" (int64), as PyTorch's GradScaler.state_dict().
  State state() const;
  void load_state(const State& s, Loc loc = Loc::current());

 private:
  struct PerOptimizer {
    bool unscaled = false;
    bool stepped = false;
    bool found_inf = false;
  };
  bool enabled_;
  double scale_, growth_factor_, backoff_factor_;
  int64_t growth_interval_, growth_tracker_ = 0;
  std::unordered_map<const optim::Optimizer*, PerOptimizer> per_opt_;
};

}  // namespace crisp::amp
