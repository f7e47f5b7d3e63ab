// conv2d on the CPU: the entry points the binding calls, mirroring csrc/cuda/conv.cu. Checks the
// algorithm's applicability (common/conv_algo.h), handles the empty batch, then hands the work
// to the algorithm's kernels (conv_<algo>.cpp). Every kernel runs on the calling thread's
// OpenMP team; the binding releases the GIL around these calls (bindings/cpu_call.h).
#include <algorithm>
#include <cstdint>

#include "common/conv_algo.h"
#include "cpu/conv.h"

namespace convkit::cpu {

int64_t conv2d_workspace_bytes(ConvAlgo algo, ConvPass pass, int64_t elem_size, const ConvParams& p,
                               int64_t cap_bytes) {
  check_conv_algo(algo, p, "conv2d_workspace_bytes");
  const int pass_index = static_cast<int>(pass);  // (0 fwd, 1 bwd_input, 2 bwd_weight)
  switch (algo) {
    case ConvAlgo::Im2col:
      return conv2d_im2col_workspace_bytes(p, elem_size, cap_bytes);
    case ConvAlgo::Winograd:
      return conv2d_winograd_workspace_bytes(p, pass_index, elem_size, cap_bytes);
    case ConvAlgo::Blocked:
      return conv2d_blocked_workspace_bytes(p, pass_index, elem_size, cap_bytes);
    case ConvAlgo::Direct:
    case ConvAlgo::OneByOne:
      return 0;
  }
  return 0;
}

template <typename T>
void conv2d_fwd(ConvAlgo algo, const ConvParams& p, const T* x, const T* w, const T* b, T* y, T* ws,
                int64_t ws_bytes) {
  check_conv_algo(algo, p, "conv2d_fwd");
  if (p.N == 0) return;
  switch (algo) {
    case ConvAlgo::Direct:
      return conv2d_fwd_direct<T>(p, x, w, b, y);
    case ConvAlgo::Im2col:
      return conv2d_fwd_im2col<T>(p, x, w, b, y, ws, ws_bytes);
    case ConvAlgo::OneByOne:
      return conv2d_fwd_1x1<T>(p, x, w, b, y);
    case ConvAlgo::Blocked:
      return conv2d_fwd_blocked<T>(p, x, w, b, y, ws, ws_bytes);
    case ConvAlgo::Winograd:
      return conv2d_fwd_winograd<T>(p, x, w, b, y, ws, ws_bytes);
  }
}

template <typename T>
void conv2d_bwd_input(ConvAlgo algo, const ConvParams& p, const T* dy, const T* w, T* dx, T* ws, int64_t ws_bytes) {
  check_conv_algo(algo, p, "conv2d_bwd_input");
  if (p.N == 0) return;
  switch (algo) {
    case ConvAlgo::Direct:
      return conv2d_bwd_input_direct<T>(p, dy, w, dx);
    case ConvAlgo::Im2col:
      return conv2d_bwd_input_im2col<T>(p, dy, w, dx, ws, ws_bytes);
    case ConvAlgo::OneByOne:
      return conv2d_bwd_input_1x1<T>(p, dy, w, dx);
    case ConvAlgo::Blocked:
      return conv2d_bwd_input_blocked<T>(p, dy, w, dx, ws, ws_bytes);
    case ConvAlgo::Winograd:
      return conv2d_bwd_input_winograd<T>(p, dy, w, dx, ws, ws_bytes);
  }
}

template <typename T>
void conv2d_bwd_weight(ConvAlgo algo, const ConvParams& p, const T* dy, const T* x, T* dw, T* ws,
                       int64_t ws_bytes) {
  check_conv_algo(algo, p, "conv2d_bwd_weight");
  if (p.N == 0) {  // an empty batch has a zero gradient
    std::fill(dw, dw + p.K * p.Cg() * p.R * p.S, T(0));
    return;
  }
  switch (algo) {
    case ConvAlgo::Direct:
      return conv2d_bwd_weight_direct<T>(p, dy, x, dw);
    case ConvAlgo::Im2col:
      return conv2d_bwd_weight_im2col<T>(p, dy, x, dw, ws, ws_bytes);
    case ConvAlgo::OneByOne:
      return conv2d_bwd_weight_1x1<T>(p, dy, x, dw);
    case ConvAlgo::Blocked:
      return conv2d_bwd_weight_blocked<T>(p, dy, x, dw, ws, ws_bytes);
    case ConvAlgo::Winograd:
      return conv2d_bwd_weight_winograd<T>(p, dy, x, dw, ws, ws_bytes);
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
