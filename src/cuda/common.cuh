// All of the CUDA backend's internal headers at once.
#pragma once

#include "cuda/buffer.cuh"
#include "cuda/context.cuh"
#include "cuda/dtype.cuh"
#include "cuda/errors.cuh"
#include "cuda/families.cuh"
#include "cuda/launch.cuh"
#include "cuda/strided.cuh"
