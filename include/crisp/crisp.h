// crisp: tensors, autograd and backends. Include this one header.
#pragma once

#include "crisp/backend.h"
#include "crisp/dtype.h"
#include "crisp/error.h"
#include "crisp/ops.h"
#include "crisp/random.h"
#include "crisp/tensor.h"
