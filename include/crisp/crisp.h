// crisp: tensors, autograd and backends. Include this one header.
#pragma once

#include "crisp/amp.h"
#include "crisp/backend.h"
#include "crisp/data.h"
#include "crisp/dtype.h"
#include "crisp/error.h"
#include "crisp/grad_scaler.h"
#include "crisp/io.h"
#include "crisp/models.h"
#include "crisp/nn.h"
#include "crisp/ops.h"
#include "crisp/optim.h"
#include "crisp/random.h"
#include "crisp/state.h"
#include "crisp/tensor.h"
#include "crisp/vision.h"
