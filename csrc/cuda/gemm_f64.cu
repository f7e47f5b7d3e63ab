// convkit's tiled GEMM (gemm.cuh) instantiated for double, one element type a file so that the
// GEMM variants compile in parallel.
#include "cuda/gemm.cuh"

namespace convkit::cuda {

CONVKIT_INSTANTIATE_GEMM(double)


}  // namespace convkit::cuda
