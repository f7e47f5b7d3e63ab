// Zero-filling a buffer on the caller's stream (the gradient of an empty batch, the input
// pixels a strided 1x1 convolution never reads): a grid-stride kernel and its launcher.
#pragma once
#include <cstdint>

#include "cuda/dtype.cuh"
#include "cuda/grid.cuh"
#include "cuda/runtime.h"

namespace convkit::cuda {

template <typename T>
__global__ void zero_fill_kernel(int64_t n, T* __restrict__ x) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step)
    x[i] = from_acc<T>(acc_t<T>(0));
}

template <typename T>
void zero_fill(int64_t n, T* x, StreamHandle stream) {
  if (n > 0) launch("zero_fill_kernel", zero_fill_kernel<T>, dim3(grid_blocks(n, 256)), dim3(256), 0, stream, n, x);
}

}  // namespace convkit::cuda
