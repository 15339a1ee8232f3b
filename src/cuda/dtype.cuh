// Dtypes in the CUDA backend: the device type stored for each, the type arithmetic happens in,
// dispatch on a dtype, value conversions, and cuBLAS's names for them.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "crisp/backend.h"
#include "crisp/error.h"
#include "kernels/compute_type.h"

namespace crisp::cuda {

template <class T>
inline constexpr bool is_half_v = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;
using crisp::compute_t;
template <class T>
inline constexpr bool is_float_v = std::is_floating_point_v<compute_t<T>>;

// The device type stored for each dtype.
template <DType D>
struct device_type;
template <>
struct device_type<DType::b8> {
  using type = bool;
};
template <>
struct device_type<DType::u8> {
  using type = uint8_t;
};
template <>
struct device_type<DType::i32> {
  using type = int32_t;
};
template <>
struct device_type<DType::i64> {
  using type = int64_t;
};
template <>
struct device_type<DType::f16> {
  using type = __half;
};
template <>
struct device_type<DType::bf16> {
  using type = __nv_bfloat16;
};
template <>
struct device_type<DType::f32> {
  using type = float;
};
template <>
struct device_type<DType::f64> {
  using type = double;
};

// Calls f with a value of the device type stored for d, e.g. f(__half{}) for f16.
template <class F>
decltype(auto) visit(DType d, F&& f) {
  switch (d) {
    case DType::b8:
      return f(bool{});
    case DType::u8:
      return f(uint8_t{});
    case DType::i32:
      return f(int32_t{});
    case DType::i64:
      return f(int64_t{});
    case DType::f16:
      return f(__half{});
    case DType::bf16:
      return f(__nv_bfloat16{});
    case DType::f32:
      return f(float{});
    case DType::f64:
      return f(double{});
  }
  return f(float{});
}
// The same, over the floating types only (anything else fails naming op).
template <class F>
decltype(auto) visit_float(DType d, const char* op, F&& f) {
  switch (d) {
    case DType::f16:
      return f(__half{});
    case DType::bf16:
      return f(__nv_bfloat16{});
    case DType::f32:
      return f(float{});
    case DType::f64:
      return f(double{});
    default:
      break;
  }
  fail(op, " is not supported for ", dtype_name(d), " on CUDA");
}

[[noreturn]] inline void unsupported(const Op& op, DType dtype) {
  fail(op_name(op.kind), " is not supported for ", dtype_name(dtype), " on CUDA");
}

// Value conversions with the CPU backend's semantics (16-bit floats through float, bool as != 0).
template <class To, class From>
__host__ __device__ inline To convert(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (is_half_v<From>) {
    return convert<To>(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, bool>) {
    return v != From(0);
  } else if constexpr (std::is_same_v<To, __half>) {
    return __float2half_rn(static_cast<float>(v));
  } else if constexpr (std::is_same_v<To, __nv_bfloat16>) {
    return __float2bfloat16_rn(static_cast<float>(v));
  } else {
    return static_cast<To>(v);
  }
}
// The value of v in its compute type.
template <class T>
__host__ __device__ inline compute_t<T> load(T v) {
  return convert<compute_t<T>>(v);
}

// Whether float32 matmul/conv may use TF32 (crisp::allow_tf32()).
bool tf32_enabled();

// cuBLAS's names for T and the math it accumulates in: float32 stays float32-accurate unless
// TF32 is allowed; the 16-bit types accumulate in float32.
struct BlasTypes {
  cudaDataType_t data;
  cublasComputeType_t compute;
};
template <class T>
BlasTypes blas_types() {
  if constexpr (std::is_same_v<T, double>) {
    return {CUDA_R_64F, CUBLAS_COMPUTE_64F};
  } else if constexpr (std::is_same_v<T, float>) {
    return {CUDA_R_32F, tf32_enabled() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F};
  } else if constexpr (std::is_same_v<T, __half>) {
    return {CUDA_R_16F, CUBLAS_COMPUTE_32F};
  } else {
    return {CUDA_R_16BF, CUBLAS_COMPUTE_32F};
  }
}

}  // namespace crisp::cuda
