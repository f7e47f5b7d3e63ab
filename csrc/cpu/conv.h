// CPU conv2d kernels (cross-correlation, torch.nn.functional.conv2d semantics) on NCHW / KCRS
// contiguous buffers: direct, channel-blocked direct, im2col + GEMM, 1x1 GEMM,
// Winograd F(2x2, 3x3); forward, grad input,
// grad weight, and grad bias. Every kernel overwrites all of its output; none reads output memory first.
#pragma once
#include <algorithm>
#include <cstdint>

#include "common/conv_algo.h"
#include "common/params.h"

namespace convkit::cpu {

// ---- the launcher (conv.cpp): the entry points, one per pass ---------------------------------
// Checks algo's applicability (common/conv_algo.h), handles the empty batch, and runs the
// algorithm's kernels below. ws: the caller's workspace of ws_bytes bytes, at least
// conv2d_workspace_bytes(algo, pass, sizeof(T), p, some cap). b may be nullptr (no bias).
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

// ---- the kernels, one file per algorithm (conv_<algo>.cpp) --------------------------------

// ---- direct: no workspace (per-thread scratch holds a zero-padded input patch) -------------
template <typename T>
void conv2d_fwd_direct(const ConvParams& p, const T* x, const T* w, const T* b, T* y);
template <typename T>
void conv2d_bwd_input_direct(const ConvParams& p, const T* dy, const T* w, T* dx);
template <typename T>
void conv2d_bwd_weight_direct(const ConvParams& p, const T* dy, const T* x, T* dw);

// ---- im2col + GEMM: column buffer [C*R*S, chunk*P*Q] in the caller's workspace ------------
// Bytes of one image's columns (every pass uses the same buffer shape).
int64_t conv2d_im2col_image_bytes(const ConvParams& p, int64_t elem_size);
// min(N, max(1, cap_bytes / per_image)) * per_image; 0 when N == 0.
int64_t conv2d_im2col_workspace_bytes(const ConvParams& p, int64_t elem_size, int64_t cap_bytes);
template <typename T>
void conv2d_fwd_im2col(const ConvParams& p, const T* x, const T* w, const T* b, T* y, T* ws,
                       int64_t ws_bytes);
template <typename T>
void conv2d_bwd_input_im2col(const ConvParams& p, const T* dy, const T* w, T* dx, T* ws,
                             int64_t ws_bytes);
template <typename T>
void conv2d_bwd_weight_im2col(const ConvParams& p, const T* dy, const T* x, T* dw, T* ws,
                              int64_t ws_bytes);

// ---- 1x1 (R == S == 1, no padding, any stride / groups): GEMM straight on NCHW -------------
template <typename T>
void conv2d_fwd_1x1(const ConvParams& p, const T* x, const T* w, const T* b, T* y);
template <typename T>
void conv2d_bwd_input_1x1(const ConvParams& p, const T* dy, const T* w, T* dx);
template <typename T>
void conv2d_bwd_weight_1x1(const ConvParams& p, const T* dy, const T* x, T* dw);

// ---- Winograd F(2x2, 3x3) (3x3, stride 1, dilation 1; any padding, groups) ----------------
// Workspace (fwd, bwd_input): the transformed filters plus one L2-sized block of transformed
// tiles per thread (num_threads() at the query; fewer threads run if the workspace holds fewer
// blocks); bwd_weight runs im2col + GEMM and takes im2col's workspace. pass: 0 fwd, 1 bwd_input,
// 2 bwd_weight. The kernels throw when the shape is not 3x3 / stride 1 / dilation 1.
bool conv2d_winograd_applies(const ConvParams& p);
int64_t conv2d_winograd_workspace_bytes(const ConvParams& p, int pass, int64_t elem_size, int64_t cap_bytes);
template <typename T>
void conv2d_fwd_winograd(const ConvParams& p, const T* x, const T* w, const T* b, T* y, T* ws,
                         int64_t ws_bytes);
template <typename T>
void conv2d_bwd_input_winograd(const ConvParams& p, const T* dy, const T* w, T* dx, T* ws,
                               int64_t ws_bytes);
template <typename T>
void conv2d_bwd_weight_winograd(const ConvParams& p, const T* dy, const T* x, T* dw, T* ws,
                                int64_t ws_bytes);

// ---- blocked (any shape): direct convolution with output channels in the vector lanes -----
// Workspace: fwd and bwd_input (stride 1) the repacked filters and biases; bwd_input with stride
// > 1 runs direct's kernel (none); bwd_weight: padded input planes and dy repacked by channel
// block for whole images, at most cap_bytes but at least one image (the batch is chunked).
// pass: 0 fwd, 1 bwd_input, 2 bwd_weight.
int64_t conv2d_blocked_workspace_bytes(const ConvParams& p, int pass, int64_t elem_size, int64_t cap_bytes);
template <typename T>
void conv2d_fwd_blocked(const ConvParams& p, const T* x, const T* w, const T* b, T* y, T* ws, int64_t ws_bytes);
template <typename T>
void conv2d_bwd_input_blocked(const ConvParams& p, const T* dy, const T* w, T* dx, T* ws, int64_t ws_bytes);
template <typename T>
void conv2d_bwd_weight_blocked(const ConvParams& p, const T* dy, const T* x, T* dw, T* ws, int64_t ws_bytes);

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
