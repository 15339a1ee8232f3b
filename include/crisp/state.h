// State: an ordered list of named tensors (module state, optimizer state, checkpoint contents).
#pragma once

#include <initializer_list>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "crisp/error.h"
#include "crisp/tensor.h"

namespace crisp {

class State {
 public:
  using Entry = std::pair<std::string, Tensor>;

  State() = default;
  State(std::initializer_list<Entry> entries);

  // Inserts at the end, or replaces in place when the name exists.
  void set(const std::string& name, Tensor t);
  bool contains(const std::string& name) const;
  // Throws crisp::Error naming the missing entry.
  const Tensor& at(const std::string& name, Loc loc = Loc::current()) const;
  // Inserts an undefined tensor when missing.
  Tensor& operator[](const std::string& name);
  bool erase(const std::string& name);
  // False when `from` is missing; throws when `to` already exists.
  bool rename(const std::string& from, const std::string& to, Loc loc = Loc::current());

  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  std::vector<Entry>::const_iterator begin() const { return entries_.begin(); }
  std::vector<Entry>::const_iterator end() const { return entries_.end(); }
  std::vector<std::string> names() const;

  // Every name prefixed: "w" -> "prefix.w".
  State with_prefix(const std::string& prefix) const;
  // The entries named "prefix.x", as "x".
  State under(const std::string& prefix) const;
  // Appends other's entries (replacing same-named ones).
  void merge(const State& other);

 private:
  std::vector<Entry> entries_;
  std::unordered_map<std::string, size_t> index_;
};

namespace nn {
// A trainable tensor and its dotted name; optimizers update it by assigning through the pointer.
struct NamedParam {
  std::string name;
  Tensor* tensor;
};
}  // namespace nn

}  // namespace crisp
