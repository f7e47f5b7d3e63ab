// CPU conv2d kernels (cross-correlation, torch.nn.functional.conv2d semantics) on NCHW / KCRS
// contiguous buffers: direct, channel-blocked direct, im2col + GEMM, 1x1 GEMM,
// Winograd F(2x2, 3x3); forward, grad input,
// grad weight, and grad bias. Every kernel overwrites all of its output; none reads output memory first.
#pragma once
#include <cstdint>

#include "common/params.h"

namespace convkit::cpu {

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

// Floor / ceil division for possibly negative numerators (positive divisor).
inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
inline int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

}  // namespace convkit::cpu
