// convkit's tiled GEMM (gemm.cuh) instantiated for float, one element type a file so that the
// GEMM variants compile in parallel.
#include "cuda/gemm.cuh"

namespace convkit::cuda {

CONVKIT_INSTANTIATE_GEMM(float)


}  // namespace convkit::cuda
