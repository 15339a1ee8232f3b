// Front ends of the fused update ops (sgd_step, adam_step, rmsprop_step), and the two ways the
// optimizers touch a parameter's autograd record.
#pragma once

#include <span>
#include <vector>

#include "crisp/optim.h"

namespace crisp::optim {

// The dtype optimizer state is kept in for a parameter of dtype d: float32 for 16-bit floats.
DType state_dtype(DType d);

// One parameter's update: the parameter, its gradient, its state buffers in the op's input
// order (undefined = none yet) and its step count (from 1).
struct Update {
  Tensor p, g;
  std::vector<Tensor> state;
  int64_t step = 0;
};

// Each runs the updates in as few ops as they allow (one per backend, dtype, step and set of
// state given) and returns, for each update, the new parameter followed by the new state in
// the op's output order (op_kinds.inc). Undefined state means "none yet" as the op defines it.
std::vector<std::vector<Tensor>> sgd_step(std::span<const Update> updates, const SGDOptions& o);
std::vector<std::vector<Tensor>> adam_step(std::span<const Update> updates, const AdamOptions& o,
                                           bool decoupled);
std::vector<std::vector<Tensor>> rmsprop_step(std::span<const Update> updates,
                                              const RMSpropOptions& o);

// Rebinds param to value's data, keeping param's autograd record (so it stays a leaf that
// requires grad, and keeps its accumulated gradient).
void replace_value(Tensor& param, const Tensor& value);
// Replaces the accumulated gradient of a leaf.
void set_grad(const Tensor& param, Tensor grad);

}  // namespace crisp::optim
