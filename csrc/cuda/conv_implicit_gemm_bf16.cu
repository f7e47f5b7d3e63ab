// The implicit-GEMM convolution kernels (conv_implicit_gemm.cuh) instantiated for __nv_bfloat16, one
// element type a file so that they compile in parallel.
#include "cuda/conv_implicit_gemm.cuh"

namespace convkit::cuda::igemm {
#if CK_HAVE_HALF
CONVKIT_INSTANTIATE_IGEMM(__nv_bfloat16)
#endif
}  // namespace convkit::cuda::igemm
