// The per-algorithm convolution launchers behind csrc/cuda/conv.cu's dispatch (ops.h's
// conv2d_* functions), one namespace per kernel file conv_<algo>.cu: direct (conv_direct.cu),
// im2col + GEMM (conv_im2col.cu), 1x1 GEMM on NCHW (conv_1x1.cu), implicit GEMM
// (conv_implicit_gemm.cu). conv.cu has already checked the arguments, made the device current and
// handled N == 0; these launch on `stream` and never synchronize. Plain C++ (no CUDA headers).
#pragma once
#include <cstdint>

#include "common/conv_algo.h"
#include "common/params.h"
#include "cuda/ops.h"
#include "cuda/stream.h"

namespace convkit::cuda {

// Launchers of one algorithm: workspace query (a pure function of its arguments), forward
// (b may be nullptr), grad input, grad weight. ws may be nullptr when the query says 0.
#define CONVKIT_CUDA_CONV_ALGO(E, ns)                                                                                  \
  namespace ns {                                                                                                 \
  int64_t workspace_bytes(ConvPass pass, DType dt, const ConvParams& p, int64_t cap_bytes);                      \
  void fwd(DType dt, const ConvParams& p, const void* x, const void* w, const void* b, void* y, void* ws,        \
           int64_t ws_bytes, StreamHandle stream);                                                               \
  void bwd_input(DType dt, const ConvParams& p, const void* dy, const void* w, void* dx, void* ws,               \
                 int64_t ws_bytes, StreamHandle stream);                                                         \
  void bwd_weight(DType dt, const ConvParams& p, const void* dy, const void* x, void* dw, void* ws,              \
                  int64_t ws_bytes, StreamHandle stream);                                                        \
  }

// The algorithms the CUDA modules build: X(Enum, namespace), one line each, in
// common/conv_algo.h's order. conv.cu dispatches over this list and the modules report it.
#define CONVKIT_CUDA_CONV_ALGOS(X) \
  X(Direct, direct)                \
  X(Im2col, im2col)                \
  X(OneByOne, onebyone)            \
  X(ImplicitGemm, implicit_gemm)

CONVKIT_CUDA_CONV_ALGOS(CONVKIT_CUDA_CONV_ALGO)
#undef CONVKIT_CUDA_CONV_ALGO

inline constexpr ConvAlgoSet kCudaConvAlgos = CONVKIT_CONV_ALGO_SET(CONVKIT_CUDA_CONV_ALGOS, "cuda");

// Element size of dt in bytes (common/dtype.h's, as int64_t).
using convkit::dtype_bytes;

}  // namespace convkit::cuda
