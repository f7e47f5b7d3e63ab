// The implicit-GEMM convolution kernels (conv_implicit_gemm.cuh) instantiated for float, one
// element type a file so that they compile in parallel.
#include "cuda/conv_implicit_gemm.cuh"

namespace convkit::cuda::igemm {
CONVKIT_INSTANTIATE_IGEMM(float)
}  // namespace convkit::cuda::igemm
