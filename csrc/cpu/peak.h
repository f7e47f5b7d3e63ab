// The core's measured FMA peak: the ceiling convkit's GEMM is held against (`convkit bench`).
#pragma once

namespace convkit::cpu {

// GFLOP/s (2 flops per FMA lane) of independent FMA chains in vector registers on `threads`
// threads at once (0: num_threads()) for about `seconds`: the sum over threads of each one's
// best ~2 ms round. T is float or double.
template <typename T>
double fma_peak_gflops(int threads, double seconds);

}  // namespace convkit::cpu
