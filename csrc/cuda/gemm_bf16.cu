// convkit's tiled GEMM (gemm.cuh) instantiated for __nv_bfloat16, one element type a file so that the
// GEMM variants compile in parallel.
#include "cuda/gemm.cuh"

namespace convkit::cuda {
#if CK_HAVE_HALF
CONVKIT_INSTANTIATE_GEMM(__nv_bfloat16)
CONVKIT_INSTANTIATE_GEMM_ACC(__nv_bfloat16)
#endif
}  // namespace convkit::cuda
