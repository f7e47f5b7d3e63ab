// CPU conv2d kernels (cross-correlation, torch.nn.functional.conv2d semantics) on NCHW / KCRS
// contiguous buffers: the algorithms the CPU builds (direct, im2col + GEMM, 1x1 GEMM,
// channel-blocked direct, Winograd F(2x2, 3x3), and the naive float64-accumulating reference),
// forward, grad input and grad weight each, and grad bias. Every kernel overwrites all of its
// output; none reads output memory first.
#pragma once
#include <algorithm>
#include <cstdint>

#include "common/conv_algo.h"
#include "common/params.h"

namespace convkit::cpu {

// ---- the algorithms the CPU module builds: X(Enum, namespace), one line each ----------------
// Each namespace is one kernel file, conv_<algo>.cpp, defining the four entry points below
// (CONVKIT_CPU_CONV_ENTRY) and instantiating them (CONVKIT_CPU_CONV_INSTANTIATE). The launcher
// (conv.cpp) dispatches over this list and the module reports it (conv_algos()).
#define CONVKIT_CPU_CONV_ALGOS(X) \
  X(Direct, direct)               \
  X(Im2col, im2col)               \
  X(OneByOne, onebyone)           \
  X(Blocked, blocked)             \
  X(Winograd, winograd)           \
  X(Reference, reference)

inline constexpr ConvAlgoSet kCpuConvAlgos = CONVKIT_CONV_ALGO_SET(CONVKIT_CPU_CONV_ALGOS, "cpu");

// ---- the launcher (conv.cpp): the entry points, one per pass ---------------------------------
// Checks that the CPU builds algo and its applicability (common/conv_algo.h), handles the empty
// batch, and runs the algorithm's entry point. ws: the caller's workspace of ws_bytes bytes, at
// least conv2d_workspace_bytes(algo, pass, sizeof(T), p, some cap). b may be nullptr (no bias).
int64_t conv2d_workspace_bytes(ConvAlgo algo, ConvPass pass, int64_t elem_size, const ConvParams& p,
                               int64_t cap_bytes);
template <typename T>
void conv2d_fwd(ConvAlgo algo, const ConvParams& p, const T* x, const T* w, const T* b, T* y, T* ws,
                int64_t ws_bytes);
template <typename T>
void conv2d_bwd_input(ConvAlgo algo, const ConvParams& p, const T* dy, const T* w, T* dx, T* ws, int64_t ws_bytes);
template <typename T>
void conv2d_bwd_weight(ConvAlgo algo, const ConvParams& p, const T* dy, const T* x, T* dw, T* ws,
                       int64_t ws_bytes);

// ---- one algorithm's entry points (the launcher has checked applicability) ----------------
// workspace_bytes: what the pass needs for elem_size-byte elements, at most cap_bytes where the
// algorithm can chunk (never below what one image needs), 0 for none; a pure function of its
// arguments. fwd / bwd_input / bwd_weight overwrite all of y / dx / dw and never read them
// first; they are called with N >= 1 (the launcher handles the empty batch) and a workspace of
// at least workspace_bytes(...) for some cap (ws may be nullptr when that is 0).
#define CONVKIT_CPU_CONV_ENTRY(E, ns)                                                                              \
  namespace ns {                                                                                                  \
  int64_t workspace_bytes(ConvPass pass, int64_t elem_size, const ConvParams& p, int64_t cap_bytes);              \
  template <typename T>                                                                                           \
  void fwd(const ConvParams& p, const T* x, const T* w, const T* b, T* y, T* ws, int64_t ws_bytes);               \
  template <typename T>                                                                                           \
  void bwd_input(const ConvParams& p, const T* dy, const T* w, T* dx, T* ws, int64_t ws_bytes);                   \
  template <typename T>                                                                                           \
  void bwd_weight(const ConvParams& p, const T* dy, const T* x, T* dw, T* ws, int64_t ws_bytes);                  \
  }
CONVKIT_CPU_CONV_ALGOS(CONVKIT_CPU_CONV_ENTRY)
#undef CONVKIT_CPU_CONV_ENTRY

// The explicit instantiations a kernel file ends with (inside namespace convkit::cpu).
#define CONVKIT_CPU_CONV_INSTANTIATE_T(ns, T)                                                                      \
  template void ns::fwd<T>(const ConvParams&, const T*, const T*, const T*, T*, T*, int64_t);                      \
  template void ns::bwd_input<T>(const ConvParams&, const T*, const T*, T*, T*, int64_t);                          \
  template void ns::bwd_weight<T>(const ConvParams&, const T*, const T*, T*, T*, int64_t);
#define CONVKIT_CPU_CONV_INSTANTIATE(ns)      \
  CONVKIT_CPU_CONV_INSTANTIATE_T(ns, float)   \
  CONVKIT_CPU_CONV_INSTANTIATE_T(ns, double)

// ---- what the kernel files share ----------------------------------------------------------
// im2col + GEMM's workspace (winograd's grad weight runs im2col): whole images of columns
// [C*R*S, P*Q], min(N, max(1, cap_bytes / per_image)) * per_image; 0 when N == 0.
int64_t conv2d_im2col_workspace_bytes(const ConvParams& p, int64_t elem_size, int64_t cap_bytes);

// ---- grad bias: db[k] = sum over n, p, q of dy[n, k, p, q] ----------------------------------
template <typename T>
void conv2d_bwd_bias(const ConvParams& p, const T* dy, T* db);

// ---- sizes from hostile parameters ------------------------------------------------------------
// (sizes from hostile parameters: sat_add / sat_mul and kSizeMax, common/params.h)
// Whether a dense padded copy of `elems` elements per plane is worth making: at most a few times
// the data a window pass reads anyway (the plane and the output's taps, P*Q*R*S) plus 64K. A
// copy beyond that is mostly padding or gaps between strided windows (huge stride, padding or
// dilation), and the bounds-checked kernels run instead, in time and memory proportional to
// input and output. Likewise when a kernel far larger than the input would mostly multiply
// padding (a 100x100 filter over a 2x2 image): the dense kernels do P*Q*R*S multiply-adds, the
// bounded ones P*Q times the taps that land in the input.
inline bool dense_copy_fits(const ConvParams& p, int64_t elems) {
  const int64_t data = sat_add(sat_mul(p.H, p.W), sat_mul(sat_mul(p.P, p.Q), sat_mul(p.R, p.S)));
  const int64_t taps_in = std::min(p.R, p.H) * std::min(p.S, p.W);  // at most, per output
  return elems <= sat_add(sat_mul(4, data), int64_t(1) << 16) && sat_mul(p.R, p.S) <= 16 * taps_in + 64;
}

// Outputs o in [lo, hi) of [0, n) whose input position o*stride + off lies in [0, size).
inline void valid_outputs(int64_t off, int64_t stride, int64_t size, int64_t n, int64_t& lo, int64_t& hi);

// ---- bounds-checked direct convolution (conv_direct.cpp) ---------------------------------------
// No padded copy, no scratch: each (output, tap) pair inside the input is visited once, so time
// is proportional to the output times the taps that land in the input, memory to nothing. The
// other kernels hand over to these when their padded copies would not fit (dense_copy_fits).
template <typename T>
void conv2d_fwd_bounded(const ConvParams& p, const T* x, const T* w, const T* b, T* y);
template <typename T>
void conv2d_bwd_input_bounded(const ConvParams& p, const T* dy, const T* w, T* dx);
template <typename T>
void conv2d_bwd_weight_bounded(const ConvParams& p, const T* dy, const T* x, T* dw);

// Floor / ceil division for possibly negative numerators (positive divisor).
inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

inline void valid_outputs(int64_t off, int64_t stride, int64_t size, int64_t n, int64_t& lo, int64_t& hi) {
  lo = std::clamp<int64_t>(ceil_div(-off, stride), 0, n);
  hi = std::clamp<int64_t>(floor_div(size - 1 - off, stride) + 1, lo, n);
}

}  // namespace convkit::cpu
