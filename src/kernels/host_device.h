// CRISP_HOST_DEVICE marks a function that host and device code both call: __host__ __device__
// under nvcc, nothing in a plain C++ build.
#pragma once

#if defined(__CUDACC__)
#define CRISP_HOST_DEVICE __host__ __device__
#else
#define CRISP_HOST_DEVICE
#endif
