// A 32-bit division by a launch-time constant through a precomputed multiplier (3 instructions
// instead of a ~20-instruction divide): the divisor is set up on the host, and kernels divide a
// flat index into coordinates with it. Used by the pooling geometry (pool_geom.cuh), the GEMM's
// operand index maps (gemm.h) and the convolution kernels' tile staging.
#pragma once
#include <cstdint>

#include "cuda/runtime.h"

namespace convkit::cuda {

// n / d and n % d for 0 <= n < 2^31 and 1 <= d < 2^31 (Granlund and Montgomery's round-up
// method): with s = ceil(log2 d) and mul = floor(2^32 (2^s - d) / d) + 1,
// n / d = (mulhi(n, mul) + n) >> s, where mulhi(n, mul) <= n keeps the sum in 32 bits.
struct FastDivmod {
  uint32_t d, mul, shift;

  FastDivmod() = default;
  __host__ __device__ explicit FastDivmod(uint32_t divisor) : d(divisor), mul(0), shift(0) {
    while ((uint64_t{1} << shift) < divisor) ++shift;
    mul = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - divisor)) / divisor + 1);
  }

  __device__ __forceinline__ uint32_t div(uint32_t n) const {
    const uint32_t hi = static_cast<uint32_t>((static_cast<uint64_t>(n) * mul) >> 32);
    return (hi + n) >> shift;
  }
  __device__ __forceinline__ void divmod(uint32_t n, uint32_t& q, uint32_t& r) const {
    q = div(n);
    r = n - q * d;
  }
};

}  // namespace convkit::cuda
