// CPU ReLU, forward and backward, over flat contiguous buffers of n elements.
#pragma once
#include <cstdint>

namespace convkit::cpu {

// y = max(x, 0) as torch computes it: NaN stays NaN, -0.0 stays -0.0. y may equal x.
template <typename T>
void relu_fwd(int64_t n, const T* x, T* y);

// dx = dy where y > 0, else 0 (a NaN y gives 0). dx may equal dy.
template <typename T>
void relu_bwd(int64_t n, const T* dy, const T* y, T* dx);

}  // namespace convkit::cpu
