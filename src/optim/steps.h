// Front ends of the fused update ops (sgd_step, adam_step, rmsprop_step), and the two ways the
// optimizers touch a parameter's autograd record.
#pragma once

#include <vector>

#include "crisp/optim.h"

namespace crisp::optim {

// The dtype optimizer state is kept in for a parameter of dtype d: float32 for 16-bit floats.
DType state_dtype(DType d);

// Each returns the new parameter followed by the new state, in the op's output order
// (op_kinds.inc). Undefined state inputs mean "none yet" as the op defines it.
std::vector<Tensor> sgd_step(const Tensor& p, const Tensor& g, const Tensor& buf,
                             const SGDOptions& o);
std::vector<Tensor> adam_step(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v,
                              const Tensor& vmax, const AdamOptions& o, bool decoupled,
                              int64_t step);
std::vector<Tensor> rmsprop_step(const Tensor& p, const Tensor& g, const Tensor& square_avg,
                                 const Tensor& grad_avg, const Tensor& buf,
                                 const RMSpropOptions& o);

// Rebinds param to value's data, keeping param's autograd record (so it stays a leaf that
// requires grad, and keeps its accumulated gradient).
void replace_value(Tensor& param, const Tensor& value);
// Replaces the accumulated gradient of a leaf.
void set_grad(const Tensor& param, Tensor grad);

}  // namespace crisp::optim
