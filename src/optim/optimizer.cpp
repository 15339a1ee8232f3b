// The optimizer base: parameter groups, the step protocol, zero_grad, and state save/load.
#include <algorithm>
#include <cmath>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "core/tensor_impl.h"
#include "optim/steps.h"

namespace crisp::optim {

namespace {

Tensor host_scalar(double v, DType dtype) {
  return Backend::cpu()->use([&] { return scalar(v, dtype); });
}

// "group<g>.<field>" with no further dot: a group's hyper-parameter.
std::optional<std::pair<size_t, std::string>> parse_group_entry(const std::string& name) {
  constexpr std::string_view prefix = "group";
  if (name.rfind(prefix, 0) != 0) return std::nullopt;
  size_t i = prefix.size();
  size_t g = 0;
  const size_t digits_begin = i;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9' && i - digits_begin < 9)
    g = g * 10 + static_cast<size_t>(name[i++] - '0');
  if (i == digits_begin || i >= name.size() || name[i] != '.') return std::nullopt;
  std::string field = name.substr(i + 1);
  if (field.empty() || field.find('.') != std::string::npos) return std::nullopt;
  return std::pair{g, field};
}

}  // namespace

void Optimizer::check_group(size_t group) const {
  if (group >= groups_.size())
    fail("group ", group, " is out of range: the optimizer has ", groups_.size(), " group",
         groups_.size() == 1 ? "" : "s");
}

void Optimizer::add_group(const std::vector<nn::NamedParam>& params) {
  std::unordered_set<const Tensor*> seen;
  for (const auto& group : groups_)
    for (const Slot& s : group) seen.insert(s.param.tensor);
  std::vector<Slot> slots;
  for (size_t i = 0; i < params.size(); ++i) {
    const nn::NamedParam& p = params[i];
    const std::string label =
        p.name.empty() ? crisp::detail::cat("#", i) : crisp::detail::cat("'", p.name, "'");
    if (!p.tensor) fail("parameter ", label, " is a null pointer");
    if (!p.tensor->defined()) fail("parameter ", label, " is an undefined tensor");
    if (!is_floating(p.tensor->dtype()))
      fail("parameter ", label, " must be floating-point, got ", dtype_name(p.tensor->dtype()));
    if (!seen.insert(p.tensor).second)
      fail("parameter ", label, " appears more than once in the optimizer's groups");
    slots.push_back(Slot{p, "", 0, std::vector<Tensor>(buffer_names_.size())});
  }
  groups_.push_back(std::move(slots));
  try {
    assign_keys();
  } catch (...) {
    groups_.pop_back();
    assign_keys();
    throw;
  }
}

// A parameter's name in state() is its own when unique across groups, else qualified by group:
// separate submodules' parameters() give the same short names ("weight") in different groups.
void Optimizer::assign_keys() {
  std::unordered_map<std::string, int> count;
  size_t flat = 0;
  for (auto& group : groups_)
    for (Slot& s : group) {
      s.key = s.param.name.empty() ? "param" + std::to_string(flat) : s.param.name;
      ++count[s.key];
      ++flat;
    }
  std::unordered_set<std::string> keys;
  for (size_t g = 0; g < groups_.size(); ++g)
    for (Slot& s : groups_[g]) {
      if (count[s.key] > 1) s.key = "group" + std::to_string(g) + "." + s.key;
      if (!keys.insert(s.key).second)
        fail("two parameters of group ", g, " are both named '", s.param.name,
             "': names must be unique within a group (prefix them, or use separate groups)");
    }
}

std::vector<nn::NamedParam> Optimizer::params(size_t group, Loc loc) const {
  CallScope scope("params", loc);
  check_group(group);
  std::vector<nn::NamedParam> out;
  for (const Slot& s : groups_[group]) out.push_back(s.param);
  return out;
}

// The first hyper-parameter of every optimizer is its learning rate.
double Optimizer::lr(size_t group, Loc loc) const {
  CallScope scope("lr", loc);
  check_group(group);
  return *const_cast<Optimizer*>(this)->hyper(group)[0].real;
}

void Optimizer::set_lr(double lr, Loc loc) {
  CallScope scope("set_lr", loc);
  if (!(lr >= 0)) fail("invalid learning rate ", lr, ": must be >= 0");
  for (size_t g = 0; g < groups_.size(); ++g) *hyper(g)[0].real = lr;
}

void Optimizer::set_lr(size_t group, double lr, Loc loc) {
  CallScope scope("set_lr", loc);
  check_group(group);
  if (!(lr >= 0)) fail("invalid learning rate ", lr, ": must be >= 0");
  *hyper(group)[0].real = lr;
}

void Optimizer::zero_grad() {
  for (auto& group : groups_)
    for (Slot& s : group)
      if (s.param.tensor->defined()) s.param.tensor->zero_grad();
}

void Optimizer::check_step() {
  for (size_t g = 0; g < groups_.size(); ++g) {
    check_options(g);
    for (const Slot& s : groups_[g]) {
      const Tensor& p = *s.param.tensor;
      if (!p.defined()) fail("parameter '", s.key, "' became an undefined tensor");
      const Tensor grad = p.grad();
      if (!grad.defined()) continue;
      if (grad.shape() != p.shape() || grad.dtype() != p.dtype())
        fail("parameter '", s.key, "' is ", dtype_name(p.dtype()), " ", shape_str(p.shape()),
             " but its gradient is ", dtype_name(grad.dtype()), " ", shape_str(grad.shape()));
      for (size_t b = 0; b < s.buffers.size(); ++b)
        if (s.buffers[b].defined() && s.buffers[b].shape() != p.shape())
          fail("parameter '", s.key, "' has shape ", shape_str(p.shape()), " but its ",
               buffer_names_[b], " has shape ", shape_str(s.buffers[b].shape()),
               " (was the parameter replaced after the optimizer was made?)");
    }
  }
}

void Optimizer::run_step() {
  NoGrad no_grad;
  for (size_t g = 0; g < groups_.size(); ++g) {
    std::vector<Slot*> slots;
    std::vector<Tensor> grads;
    for (Slot& s : groups_[g]) {
      Tensor grad = s.param.tensor->grad();
      if (!grad.defined()) continue;
      ++s.step;
      slots.push_back(&s);
      grads.push_back(std::move(grad));
    }
    if (!slots.empty()) update(slots, grads, g);
  }
}

void Optimizer::step(Loc loc) {
  CallScope scope("step", loc);
  check_step();
  run_step();
}

void step(std::span<Optimizer* const> optimizers, Loc loc) {
  CallScope scope("step", loc);
  for (size_t i = 0; i < optimizers.size(); ++i) {
    if (!optimizers[i]) fail("optimizer ", i, " is null");
    optimizers[i]->check_step();
  }
  for (Optimizer* o : optimizers) o->step(loc);
}

State Optimizer::state() const {
  auto* self = const_cast<Optimizer*>(this);
  State s;
  for (size_t g = 0; g < groups_.size(); ++g)
    for (const Hyper& h : self->hyper(g))
      s.set("group" + std::to_string(g) + "." + h.name,
            host_scalar(h.real ? *h.real : (*h.flag ? 1.0 : 0.0), f64));
  for (const auto& group : groups_)
    for (const Slot& slot : group) {
      if (slot.step == 0) continue;
      s.set(slot.key + ".step", host_scalar(static_cast<double>(slot.step), i64));
      for (size_t b = 0; b < slot.buffers.size(); ++b)
        if (slot.buffers[b].defined())
          s.set(slot.key + "." + buffer_names_[b], slot.buffers[b].detach());
    }
  return s;
}

void Optimizer::load_state(const State& s, Loc loc) {
  CallScope scope("load_state", loc);
  struct Staged {
    std::optional<int64_t> step;
    std::vector<Tensor> buffers;
    bool any = false;
  };
  std::unordered_map<std::string, std::pair<size_t, size_t>> by_key;
  std::vector<std::vector<Staged>> staged(groups_.size());
  std::vector<std::vector<Hyper>> hypers(groups_.size());
  std::vector<std::vector<std::optional<double>>> values(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) {
    hypers[g] = hyper(g);
    values[g].resize(hypers[g].size());
    for (size_t i = 0; i < groups_[g].size(); ++i) {
      by_key[groups_[g][i].key] = {g, i};
      staged[g].push_back(Staged{std::nullopt, std::vector<Tensor>(buffer_names_.size())});
    }
  }
  auto buffer_list = [&] {
    std::string out = "step";
    for (const char* b : buffer_names_) out += std::string(", ") + b;
    return out;
  };

  for (const auto& [name, t] : s) {
    if (!t.defined()) fail("entry '", name, "' is an undefined tensor");
    if (auto entry = parse_group_entry(name)) {
      const auto& [g, field] = *entry;
      if (g >= groups_.size())
        fail("entry '", name, "' is for group ", g, " but the optimizer has ", groups_.size(),
             " group", groups_.size() == 1 ? "" : "s");
      auto& hs = hypers[g];
      auto it = std::find_if(hs.begin(), hs.end(), [&](const Hyper& h) { return field == h.name; });
      if (it == hs.end()) fail("unexpected entry '", name, "': ", kind(), " has no '", field, "'");
      if (t.numel() != 1)
        fail("entry '", name, "' should hold one value, got shape ", shape_str(t.shape()));
      const double v = t.item<double>();
      if (std::isnan(v)) fail("entry '", name, "' is NaN");
      values[g][static_cast<size_t>(it - hs.begin())] = v;
      continue;
    }
    const size_t dot = name.rfind('.');
    auto found = dot == std::string::npos ? by_key.end() : by_key.find(name.substr(0, dot));
    if (found == by_key.end())
      fail("unexpected entry '", name, "': no parameter of this optimizer is named '",
           dot == std::string::npos ? name : name.substr(0, dot), "'");
    const auto [g, i] = found->second;
    const Slot& slot = groups_[g][i];
    const std::string what = name.substr(dot + 1);
    Staged& st = staged[g][i];
    st.any = true;
    if (what == "step") {
      if (is_floating(t.dtype()) || t.dtype() == bool_ || t.numel() != 1)
        fail("entry '", name, "' should be one integer, got ", dtype_name(t.dtype()), " ",
             shape_str(t.shape()));
      const int64_t v = t.item<int64_t>();
      if (v < 0) fail("entry '", name, "' is negative: ", v);
      st.step = v;
      continue;
    }
    auto b = std::find(buffer_names_.begin(), buffer_names_.end(), what);
    if (b == buffer_names_.end())
      fail("unexpected entry '", name, "': ", kind(), " keeps ", buffer_list(), " per parameter");
    const Tensor& p = *slot.param.tensor;
    if (t.shape() != p.shape())
      fail("entry '", name, "' has shape ", shape_str(t.shape()), " but parameter '", slot.key,
           "' has shape ", shape_str(p.shape()));
    if (!is_floating(t.dtype()))
      fail("entry '", name, "' should be floating-point, got ", dtype_name(t.dtype()));
    st.buffers[static_cast<size_t>(b - buffer_names_.begin())] = t;
  }

  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t j = 0; j < values[g].size(); ++j)
      if (!values[g][j]) fail("missing entry 'group", g, ".", hypers[g][j].name, "'");

  // Apply the hyper-parameters to check them (and the buffers they require); undo on error.
  std::vector<std::vector<double>> old(groups_.size());
  auto assign = [&](size_t g, size_t j, double v) {
    if (hypers[g][j].real)
      *hypers[g][j].real = v;
    else
      *hypers[g][j].flag = v != 0;
  };
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t j = 0; j < hypers[g].size(); ++j) {
      const Hyper& h = hypers[g][j];
      old[g].push_back(h.real ? *h.real : (*h.flag ? 1.0 : 0.0));
      assign(g, j, *values[g][j]);
    }
  try {
    for (size_t g = 0; g < groups_.size(); ++g) {
      check_options(g);
      const std::vector<bool> required = required_buffers(g);
      for (size_t i = 0; i < groups_[g].size(); ++i) {
        Staged& st = staged[g][i];
        if (!st.any) continue;
        const Slot& slot = groups_[g][i];
        if (!st.step) fail("missing entry '", slot.key, ".step'");
        for (size_t b = 0; b < required.size(); ++b)
          if (required[b] && !st.buffers[b].defined())
            fail("missing entry '", slot.key, ".", buffer_names_[b], "'");
        // State lives where the parameter does, in the dtype updates keep it in.
        NoGrad no_grad;
        const Tensor& p = *slot.param.tensor;
        for (Tensor& t : st.buffers)
          if (t.defined()) t = t.detach().to(p.backend()).cast(state_dtype(p.dtype())).detach();
      }
    }
  } catch (...) {
    for (size_t g = 0; g < groups_.size(); ++g)
      for (size_t j = 0; j < hypers[g].size(); ++j) assign(g, j, old[g][j]);
    throw;
  }

  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t i = 0; i < groups_[g].size(); ++i) {
      Slot& slot = groups_[g][i];
      Staged& st = staged[g][i];
      slot.step = st.any ? *st.step : 0;
      slot.buffers = std::move(st.buffers);
    }
}

}  // namespace crisp::optim
