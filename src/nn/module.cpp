// Module: the registry of parameters, buffers and children; Param, Buffer, the containers.
#include <algorithm>
#include <unordered_set>

#include "core/tensor_impl.h"
#include "crisp/nn.h"

namespace crisp::nn {

namespace {

// The value as a leaf that accumulates gradients; results of differentiable ops are detached.
Tensor as_leaf(Tensor v, const std::string& name) {
  if (!v.defined()) return v;
  if (!is_floating(v.dtype()))
    fail("parameter \"", name, "\" must be floating-point, got ", dtype_name(v.dtype()));
  if (v.impl()->node && !v.impl()->node->accumulates) v = v.detach();
  if (!v.requires_grad()) v.requires_grad_();
  return v;
}

std::string quoted_list(const std::vector<std::string>& names) {
  std::string s;
  const size_t shown = std::min<size_t>(names.size(), 8);
  for (size_t i = 0; i < shown; ++i) s += (i ? ", \"" : "\"") + names[i] + "\"";
  if (names.size() > shown) s += " and " + std::to_string(names.size() - shown) + " more";
  return s;
}

}  // namespace

// ---- Param and Buffer ----

Param::Param(Module* owner, std::string name, Tensor value, Loc loc) {
  CallScope scope("Param", loc);
  if (owner == nullptr) fail("owner of \"", name, "\" is null");
  Tensor::operator=(as_leaf(std::move(value), name));
  owner->add_entry({name, Module::Kind::param, this, nullptr});
}

Param& Param::operator=(const Tensor& value) {
  Tensor::operator=(as_leaf(value, "(assigned)"));
  return *this;
}

Buffer::Buffer(Module* owner, std::string name, Tensor value, Loc loc) : Tensor(std::move(value)) {
  CallScope scope("Buffer", loc);
  if (owner == nullptr) fail("owner of \"", name, "\" is null");
  owner->add_entry({name, Module::Kind::buffer, this, nullptr});
}

// ---- Module ----

void Module::add_entry(Entry e) {
  if (e.name.empty()) fail("a module member needs a non-empty name");
  if (e.name.find('.') != std::string::npos)
    fail("member name \"", e.name, "\" must not contain '.'");
  for (const Entry& x : entries_)
    if (x.name == e.name) fail("a member named \"", e.name, "\" is already registered");
  entries_.push_back(std::move(e));
}

void Module::register_parameter(const std::string& name, Tensor* t, Loc loc) {
  CallScope scope("register_parameter", loc);
  if (t == nullptr) fail("parameter \"", name, "\" is null");
  *t = as_leaf(*t, name);
  add_entry({name, Kind::param, t, nullptr});
}

void Module::register_buffer(const std::string& name, Tensor* t, Loc loc) {
  CallScope scope("register_buffer", loc);
  if (t == nullptr) fail("buffer \"", name, "\" is null");
  add_entry({name, Kind::buffer, t, nullptr});
}

void Module::register_module(const std::string& name, Module* m, Loc loc) {
  CallScope scope("register_module", loc);
  if (m == nullptr) fail("module \"", name, "\" is null");
  if (m == this) fail("a module cannot be its own child");
  add_entry({name, Kind::child, nullptr, m});
}

void Module::collect(const std::string& prefix, Kind kind, std::vector<NamedParam>& out) {
  for (const Entry& e : entries_)
    if (e.kind == kind && e.tensor->defined()) out.push_back({prefix + e.name, e.tensor});
  for (const Entry& e : entries_)
    if (e.kind == Kind::child) e.module->collect(prefix + e.name + ".", kind, out);
}

std::vector<NamedParam> Module::parameters() {
  std::vector<NamedParam> out;
  collect("", Kind::param, out);
  return out;
}

std::vector<NamedBuffer> Module::named_buffers() {
  std::vector<NamedBuffer> out;
  collect("", Kind::buffer, out);
  return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_children() {
  std::vector<std::pair<std::string, Module*>> out;
  for (const Entry& e : entries_)
    if (e.kind == Kind::child) out.emplace_back(e.name, e.module);
  return out;
}

void Module::collect_modules(const std::string& prefix,
                             std::vector<std::pair<std::string, Module*>>& out) {
  out.emplace_back(prefix, this);
  for (const Entry& e : entries_)
    if (e.kind == Kind::child)
      e.module->collect_modules(prefix.empty() ? e.name : prefix + "." + e.name, out);
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out;
  collect_modules("", out);
  return out;
}

int64_t Module::num_parameters() {
  int64_t n = 0;
  for (const NamedParam& p : parameters()) n += p.tensor->numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (const Entry& e : entries_)
    if (e.kind == Kind::child) e.module->train(on);
}

void Module::zero_grad() {
  for (const NamedParam& p : parameters()) p.tensor->zero_grad();
}

void Module::collect_state(const std::string& prefix, State& out) const {
  for (Kind kind : {Kind::param, Kind::buffer})
    for (const Entry& e : entries_)
      if (e.kind == kind && e.tensor->defined()) out.set(prefix + e.name, e.tensor->detach());
  for (const Entry& e : entries_)
    if (e.kind == Kind::child) e.module->collect_state(prefix + e.name + ".", out);
}

State Module::state() const {
  State out;
  collect_state("", out);
  return out;
}

LoadReport Module::load_state(const State& s, bool strict, Loc loc) {
  CallScope scope("load_state", loc);
  std::vector<NamedParam> params = parameters(), buffers = named_buffers();
  LoadReport report;
  std::unordered_set<std::string> known;
  struct Pending {
    Tensor* target;
    Tensor value;
    bool param;
  };
  std::vector<Pending> pending;
  for (bool is_param : {true, false}) {
    for (const NamedParam& p : is_param ? params : buffers) {
      known.insert(p.name);
      if (!s.contains(p.name)) {
        report.missing.push_back(p.name);
        continue;
      }
      const Tensor& v = s.at(p.name);
      if (!v.defined()) fail("entry \"", p.name, "\" of the state is an undefined tensor");
      if (v.shape() != p.tensor->shape())
        fail("entry \"", p.name, "\" has shape ", shape_str(v.shape()), " in the state but ",
             shape_str(p.tensor->shape()), " in the module");
      if (v.dtype() != p.tensor->dtype())
        fail("entry \"", p.name, "\" has dtype ", dtype_name(v.dtype()), " in the state but ",
             dtype_name(p.tensor->dtype()), " in the module");
      pending.push_back({p.tensor, v, is_param});
    }
  }
  for (const auto& [name, t] : s)
    if (!known.contains(name)) report.unexpected.push_back(name);
  if (strict && !report.missing.empty())
    fail("the state lacks ", report.missing.size() == 1 ? "entry " : "entries ",
         quoted_list(report.missing), " (pass strict = false to load the rest)");
  if (strict && !report.unexpected.empty())
    fail("the state has unexpected ", report.unexpected.size() == 1 ? "entry " : "entries ",
         quoted_list(report.unexpected), " (pass strict = false to ignore them)");
  NoGrad no_grad;
  for (Pending& p : pending) {
    Tensor v = p.value.detach();
    if (auto b = p.target->backend(); b && v.backend() != b) v = v.to(b);
    if (p.param) v.requires_grad_();
    *p.target = std::move(v);
  }
  return report;
}

Module& Module::to(std::shared_ptr<Backend> backend, Loc loc) {
  CallScope scope("Module::to", loc);
  if (!backend) fail("backend is null");
  NoGrad no_grad;
  for (const NamedParam& p : parameters()) {
    Tensor v = p.tensor->detach().to(backend);
    *p.tensor = v.requires_grad_();
  }
  for (const NamedBuffer& b : named_buffers()) *b.tensor = b.tensor->to(backend);
  return *this;
}

Module& Module::to(DType dtype, Loc loc) {
  CallScope scope("Module::to", loc);
  if (!is_floating(dtype))
    fail("modules cast only to floating-point dtypes, got ", dtype_name(dtype));
  NoGrad no_grad;
  for (const NamedParam& p : parameters()) {
    if (p.tensor->dtype() == dtype) continue;
    Tensor v = p.tensor->detach().cast(dtype);
    *p.tensor = v.requires_grad_();
  }
  for (const NamedBuffer& b : named_buffers())
    if (is_floating(b.tensor->dtype())) *b.tensor = b.tensor->cast(dtype);
  return *this;
}

// ---- containers ----

Tensor Sequential::forward(const Tensor& x, Loc loc) {
  CallScope scope("Sequential", loc);
  Tensor y = x;
  for (auto& call : calls_) y = call(y, loc);
  return y;
}

Module& Sequential::at(size_t i, Loc loc) {
  CallScope scope("Sequential", loc);
  if (i >= modules_.size()) fail("index ", i, " is out of range for ", modules_.size(), " modules");
  return *modules_[i];
}

Module& ModuleList::at(size_t i, Loc loc) {
  CallScope scope("ModuleList", loc);
  if (i >= modules_.size()) fail("index ", i, " is out of range for ", modules_.size(), " modules");
  return *modules_[i];
}

}  // namespace crisp::nn
