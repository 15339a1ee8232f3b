// State: an ordered list of named tensors with a name index.
#include "crisp/state.h"

namespace crisp {

State::State(std::initializer_list<Entry> entries) {
  for (const Entry& e : entries) set(e.first, e.second);
}

void State::set(const std::string& name, Tensor t) {
  auto it = index_.find(name);
  if (it != index_.end()) {
    entries_[it->second].second = std::move(t);
    return;
  }
  index_.emplace(name, entries_.size());
  entries_.emplace_back(name, std::move(t));
}

bool State::contains(const std::string& name) const { return index_.contains(name); }

const Tensor& State::at(const std::string& name, Loc loc) const {
  CallScope scope("State::at", loc);
  auto it = index_.find(name);
  if (it == index_.end()) fail("no entry named \"", name, "\" (", entries_.size(), " entries)");
  return entries_[it->second].second;
}

Tensor& State::operator[](const std::string& name) {
  auto it = index_.find(name);
  if (it != index_.end()) return entries_[it->second].second;
  index_.emplace(name, entries_.size());
  return entries_.emplace_back(name, Tensor()).second;
}

bool State::erase(const std::string& name) {
  auto it = index_.find(name);
  if (it == index_.end()) return false;
  const size_t i = it->second;
  entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(i));
  index_.erase(it);
  for (auto& [n, k] : index_)
    if (k > i) --k;
  return true;
}

bool State::rename(const std::string& from, const std::string& to, Loc loc) {
  CallScope scope("State::rename", loc);
  auto it = index_.find(from);
  if (it == index_.end()) return false;
  if (from == to) return true;
  if (index_.contains(to)) fail("an entry named \"", to, "\" already exists");
  const size_t i = it->second;
  index_.erase(it);
  index_.emplace(to, i);
  entries_[i].first = to;
  return true;
}

std::vector<std::string> State::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const Entry& e : entries_) out.push_back(e.first);
  return out;
}

State State::with_prefix(const std::string& prefix) const {
  if (prefix.empty()) return *this;
  State out;
  for (const Entry& e : entries_) out.set(prefix + "." + e.first, e.second);
  return out;
}

State State::under(const std::string& prefix) const {
  if (prefix.empty()) return *this;
  State out;
  const std::string p = prefix + ".";
  for (const Entry& e : entries_)
    if (e.first.size() > p.size() && e.first.starts_with(p))
      out.set(e.first.substr(p.size()), e.second);
  return out;
}

void State::merge(const State& other) {
  for (const Entry& e : other.entries_) set(e.first, e.second);
}

}  // namespace crisp
