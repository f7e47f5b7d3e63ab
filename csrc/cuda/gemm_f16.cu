// convkit's tiled GEMM (gemm.cuh) instantiated for __half, one element type a file so that the
// GEMM variants compile in parallel.
#include "cuda/gemm.cuh"

namespace convkit::cuda {
#if CK_HAVE_HALF
CONVKIT_INSTANTIATE_GEMM(__half)
CONVKIT_INSTANTIATE_GEMM_ACC(__half)
#endif
}  // namespace convkit::cuda
