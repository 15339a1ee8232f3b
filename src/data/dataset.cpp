// Dataset's stacking fallback and TensorDataset's gather.
#include "core/tensor_impl.h"
#include "crisp/data.h"

namespace crisp::data {

Dataset::~Dataset() = default;

Batch Dataset::get_batch(const std::vector<int64_t>& indices) const {
  std::vector<Tensor> inputs, targets;
  inputs.reserve(indices.size());
  targets.reserve(indices.size());
  for (int64_t i : indices) {
    Example e = get(static_cast<size_t>(i));
    inputs.push_back(std::move(e.input));
    if (e.target.defined()) targets.push_back(std::move(e.target));
  }
  if (!targets.empty() && targets.size() != inputs.size())
    fail("get_batch: some examples have a target and others do not");
  Batch b;
  b.input = stack(inputs);
  if (!targets.empty()) b.target = stack(targets);
  return b;
}

TensorDataset::TensorDataset(Tensor inputs, Tensor targets, Loc loc)
    : inputs_(std::move(inputs)), targets_(std::move(targets)) {
  CallScope scope("TensorDataset", loc);
  check(inputs_.defined(), "inputs are undefined");
  check(inputs_.ndim() >= 1, "inputs need an axis of examples, got a 0-d tensor");
  if (targets_.defined()) {
    check(targets_.ndim() >= 1, "targets need an axis of examples, got a 0-d tensor");
    check(targets_.shape()[0] == inputs_.shape()[0], "inputs have ", inputs_.shape()[0],
          " examples but targets have ", targets_.shape()[0]);
  }
  // Gradients never flow into stored data; detaching lets workers share it freely.
  inputs_ = inputs_.detach();
  if (targets_.defined()) targets_ = targets_.detach();
}

size_t TensorDataset::size() const { return static_cast<size_t>(inputs_.shape()[0]); }

Example TensorDataset::get(size_t i) const {
  CallScope scope("TensorDataset::get", Loc::current());
  check(i < size(), "index ", i, " is out of range for ", size(), " examples");
  const auto k = static_cast<int64_t>(i);
  return {inputs_[k], targets_.defined() ? targets_[k] : Tensor()};
}

Batch TensorDataset::get_batch(const std::vector<int64_t>& indices) const {
  CallScope scope("TensorDataset::get_batch", Loc::current());
  const auto n = static_cast<int64_t>(size());
  for (int64_t i : indices)
    check(i >= 0 && i < n, "index ", i, " is out of range for ", n, " examples");
  // Gathered where the data lives, so a whole dataset is never copied to another backend.
  auto select = [&](const Tensor& t) {
    return t.backend()->use([&] {
      return index_select(t, 0, Tensor(indices, {static_cast<int64_t>(indices.size())}));
    });
  };
  Batch b;
  b.input = select(inputs_);
  if (targets_.defined()) b.target = select(targets_);
  return b;
}

}  // namespace crisp::data
