// conv2d on the CPU: the entry points the binding calls, mirroring csrc/cuda/conv.cu. Checks
// that the CPU builds the algorithm and its applicability (common/conv_algo.h), handles the empty
// batch, then hands the work to the algorithm's entry points (conv_<algo>.cpp, listed in
// cpu/conv.h's CONVKIT_CPU_CONV_ALGOS). Every kernel runs on the calling thread's
// OpenMP team; the binding releases the GIL around these calls (bindings/cpu_call.h).
#include <algorithm>
#include <cstdint>

#include "common/conv_algo.h"
#include "cpu/conv.h"

namespace convkit::cpu {

// Each switch has one case per entry of the CPU's list (cpu/conv.h); check_conv_algo has refused
// an algorithm the CPU does not build.
int64_t conv2d_workspace_bytes(ConvAlgo algo, ConvPass pass, int64_t elem_size, const ConvParams& p,
                               int64_t cap_bytes) {
  check_conv_algo(algo, kCpuConvAlgos, p, "conv2d_workspace_bytes");
  if (p.N == 0) return 0;
  switch (algo) {
#define CONVKIT_CASE(E, ns) \
  case ConvAlgo::E:         \
    return ns::workspace_bytes(pass, elem_size, p, cap_bytes);
    CONVKIT_CPU_CONV_ALGOS(CONVKIT_CASE)
#undef CONVKIT_CASE
    default:
      return 0;
  }
}

template <typename T>
void conv2d_fwd(ConvAlgo algo, const ConvParams& p, const T* x, const T* w, const T* b, T* y, T* ws,
                int64_t ws_bytes) {
  check_conv_algo(algo, kCpuConvAlgos, p, "conv2d_fwd");
  if (p.N == 0) return;
  switch (algo) {
#define CONVKIT_CASE(E, ns) \
  case ConvAlgo::E:         \
    return ns::fwd<T>(p, x, w, b, y, ws, ws_bytes);
    CONVKIT_CPU_CONV_ALGOS(CONVKIT_CASE)
#undef CONVKIT_CASE
    default:
      return;
  }
}

template <typename T>
void conv2d_bwd_input(ConvAlgo algo, const ConvParams& p, const T* dy, const T* w, T* dx, T* ws, int64_t ws_bytes) {
  check_conv_algo(algo, kCpuConvAlgos, p, "conv2d_bwd_input");
  if (p.N == 0) return;
  switch (algo) {
#define CONVKIT_CASE(E, ns) \
  case ConvAlgo::E:         \
    return ns::bwd_input<T>(p, dy, w, dx, ws, ws_bytes);
    CONVKIT_CPU_CONV_ALGOS(CONVKIT_CASE)
#undef CONVKIT_CASE
    default:
      return;
  }
}

template <typename T>
void conv2d_bwd_weight(ConvAlgo algo, const ConvParams& p, const T* dy, const T* x, T* dw, T* ws,
                       int64_t ws_bytes) {
  check_conv_algo(algo, kCpuConvAlgos, p, "conv2d_bwd_weight");
  if (p.N == 0) {  // an empty batch has a zero gradient
    std::fill(dw, dw + p.K * p.Cg() * p.R * p.S, T(0));
    return;
  }
  switch (algo) {
#define CONVKIT_CASE(E, ns) \
  case ConvAlgo::E:         \
    return ns::bwd_weight<T>(p, dy, x, dw, ws, ws_bytes);
    CONVKIT_CPU_CONV_ALGOS(CONVKIT_CASE)
#undef CONVKIT_CASE
    default:
      return;
  }
}

#define CONVKIT_CPU_CONV_LAUNCHERS(T)                                                                          \
  template void conv2d_fwd<T>(ConvAlgo, const ConvParams&, const T*, const T*, const T*, T*, T*, int64_t);    \
  template void conv2d_bwd_input<T>(ConvAlgo, const ConvParams&, const T*, const T*, T*, T*, int64_t);        \
  template void conv2d_bwd_weight<T>(ConvAlgo, const ConvParams&, const T*, const T*, T*, T*, int64_t);
CONVKIT_CPU_CONV_LAUNCHERS(float)
CONVKIT_CPU_CONV_LAUNCHERS(double)
#undef CONVKIT_CPU_CONV_LAUNCHERS

}  // namespace convkit::cpu
