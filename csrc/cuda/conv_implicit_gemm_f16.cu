// The implicit-GEMM convolution kernels (conv_implicit_gemm.cuh) instantiated for __half, one
// element type a file so that they compile in parallel.
#include "cuda/conv_implicit_gemm.cuh"

namespace convkit::cuda::igemm {
#if CK_HAVE_HALF
CONVKIT_INSTANTIATE_IGEMM(__half)
#endif
}  // namespace convkit::cuda::igemm
