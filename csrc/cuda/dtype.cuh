// Element-type plumbing of the pooling and ReLU kernels: each element type's accumulator
// (float for the half types, double for double), conversions to and from it, read-only loads
// through __ldg, 16-byte packs for vector access, and the launchers' DType -> C++ type dispatch.
#pragma once
#include <limits>
#include <string>

#include "cuda/ops.h"
#include "cuda/runtime.h"

namespace convkit::cuda {

template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccOf<T>::type;

// ---- conversions to the accumulator and back (round to nearest) ------------------------------
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }

template <typename T>
__device__ __forceinline__ T from_acc(acc_t<T> v) {
  return v;
}

// ---- read-only loads: the non-coherent (texture) path under nvcc ------------------------------
__device__ __forceinline__ float load_ro(const float* p) { return __ldg(p); }
__device__ __forceinline__ double load_ro(const double* p) { return __ldg(p); }
__device__ __forceinline__ long load_ro(const long* p) { return __ldg(p); }
__device__ __forceinline__ long long load_ro(const long long* p) { return __ldg(p); }

#if CK_HAVE_HALF
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <>
__device__ __forceinline__ __half from_acc<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// The half types go through the unsigned short overload of __ldg, which every CUDA target
// (and the emulator) has, and are rebuilt from their bits.
__device__ __forceinline__ __half load_ro(const __half* p) {
  return __ushort_as_half(__ldg(reinterpret_cast<const unsigned short*>(p)));
}
__device__ __forceinline__ __nv_bfloat16 load_ro(const __nv_bfloat16* p) {
  return __ushort_as_bfloat16(__ldg(reinterpret_cast<const unsigned short*>(p)));
}
#endif

// -inf in the accumulator type: the starting value of a max.
template <typename A>
__device__ __forceinline__ A neg_inf() {
  return -std::numeric_limits<A>::infinity();
}

// 16 bytes of T (float4, double2, 8 halves), moved with load16 / store16.
template <typename T>
struct alignas(16) Pack16 {
  static constexpr int kSize = 16 / static_cast<int>(sizeof(T));
  T v[kSize];
};

// ---- host side ------------------------------------------------------------------------------

// Runs fn(T{}) for the C++ type of dt: dispatch_dtype(dt, [&](auto tag) { using T = decltype(tag); ... }).
template <typename Fn>
void dispatch_dtype(DType dt, Fn&& fn) {
  switch (dt) {
    case DType::F32:
      fn(float{});
      return;
    case DType::F64:
      fn(double{});
      return;
#if CK_HAVE_HALF
    case DType::F16:
      fn(__half{});
      return;
    case DType::BF16:
      fn(__nv_bfloat16{});
      return;
#endif
    default:
      throw Error(std::string("dtype ") + dtype_name(dt) + " is not supported by this build (no half types)");
  }
}

}  // namespace convkit::cuda
