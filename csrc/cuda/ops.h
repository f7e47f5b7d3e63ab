// Launchers of convkit's CUDA kernels: convolution (csrc/cuda/conv.cu dispatching to
// conv_direct.cu, conv_im2col.cu, conv_1x1.cu), pooling (pool_max.cu, pool_avg.cu) and ReLU
// (relu.cu). Plain C++ that includes no CUDA header, so the pybind11 bindings compile without
// CUDA: pointers are device pointers (host pointers under the emulator), streams are
// cudaStream_t handles as integers, and every failure throws convkit::Error.
#pragma once
#include <cstdint>
#include <string>

#include "common/conv_algo.h"
#include "common/dtype.h"
#include "common/params.h"
#include "cuda/stream.h"

namespace convkit::cuda {

// Element types of the kernels (common/dtype.h); F16 and BF16 compute in float32.
using convkit::DType;

// "float32", "float64", "float16", "bfloat16".
const char* dtype_name(DType dt);

// Whether this build has the half types (always under nvcc; under the emulator only where
// CUDA's host headers were found).
bool has_half();

// CUDA devices visible to this process: 0 (no exception) on a machine without GPU or driver.
// The emulator reports one device. (runtime.h's inline device_count(), callable without CUDA
// headers; the Python modules expose it as device_count().)
int num_devices();

// x: [N, C, H, W] -> y: [N, C, P, Q], NCHW contiguous. idx: int64 [N, C, P, Q] holding h * W + w
// of each window's maximum within its (n, c) plane, or nullptr. torch's rules: the first
// maximum in row-major window order wins a tie, a NaN wins (the last NaN of a window).
void max_pool2d_fwd(DType dt, const PoolParams& p, const void* x, void* y, int64_t* idx, int device,
                    StreamHandle stream);

// dy, idx: [N, C, P, Q] -> dx: [N, C, H, W], every element of dx written (no zero-fill needed):
// dx[h, w] = sum of dy over the windows covering (h, w) whose idx is h * W + w.
void max_pool2d_bwd(DType dt, const PoolParams& p, const void* dy, const int64_t* idx, void* dx, int device,
                    StreamHandle stream);

// divisor_override == 0: none. p.dh and p.dw must be 1.
void avg_pool2d_fwd(DType dt, const PoolParams& p, bool count_include_pad, int64_t divisor_override,
                    const void* x, void* y, int device, StreamHandle stream);

// dy: [N, C, P, Q] -> dx: [N, C, H, W], every element of dx written.
void avg_pool2d_bwd(DType dt, const PoolParams& p, bool count_include_pad, int64_t divisor_override,
                    const void* dy, void* dx, int device, StreamHandle stream);

// y = max(x, 0) over n elements (NaN and -0.0 kept, as torch); y may equal x; any alignment.
void relu_fwd(DType dt, int64_t n, const void* x, void* y, int device, StreamHandle stream);

// dx = dy where y > 0 or y is NaN, else 0 (csrc/cpu/relu.cpp's rule); dx may equal dy.
void relu_bwd(DType dt, int64_t n, const void* dy, const void* y, void* dx, int device,
              StreamHandle stream);

// ---- conv2d ------------------------------------------------------------------------------
// x [N, C, H, W], w [K, C/groups, R, S], y [N, K, P, Q], all NCHW / KCRS contiguous, in dtype
// dt (half types accumulate in float32). Every output element is overwritten; ws is the
// caller's workspace of ws_bytes bytes (at least conv2d_workspace_bytes(...) with some cap).
// The algorithms are common/conv_algo.h's (the CUDA modules build conv_algos.h's list).
using convkit::ConvAlgo;
using convkit::ConvPass;

// Workspace bytes (algo, pass) needs: 0 when none. im2col sizes its column buffer to whole
// images, at most cap_bytes but at least one image; split-K partials come on top. A pure size
// query: no CUDA call, the same answer on every device.
int64_t conv2d_workspace_bytes(ConvAlgo algo, ConvPass pass, DType dt, const ConvParams& p, int64_t cap_bytes);

// What algo="implicit_gemm" would run for (pass, dt, p) under cap_bytes of workspace
// (conv_implicit_gemm.cu's plan; variant.h's forced variants included): the block tile, the
// split-K factor, the operand pipeline, images a launch, workspace bytes, blocks of the largest
// launch (all splits), and tile_model.h's seconds on the reference H100. A pure query.
struct ConvPlanInfo {
  std::string tile;  // "big", "small", "narrow", "short"
  int BM, BN, threads, splits;
  int blocks_per_sm;  // what the model assumes an SM holds
  bool async;  // the cp.async pipeline (else register-staged)
  int64_t chunk, bytes, blocks;
  double model_seconds;
};
ConvPlanInfo implicit_gemm_plan(ConvPass pass, DType dt, const ConvParams& p, int64_t cap_bytes);

// y = conv2d(x, w) + b (b == nullptr: no bias).
void conv2d_fwd(ConvAlgo algo, DType dt, const ConvParams& p, const void* x, const void* w, const void* b, void* y,
                void* ws, int64_t ws_bytes, int device, StreamHandle stream);
// dx = grad of conv2d w.r.t. its input, given dy [N, K, P, Q].
void conv2d_bwd_input(ConvAlgo algo, DType dt, const ConvParams& p, const void* dy, const void* w, void* dx,
                      void* ws, int64_t ws_bytes, int device, StreamHandle stream);
// dw = grad of conv2d w.r.t. its weight (zeros when N == 0), deterministic.
void conv2d_bwd_weight(ConvAlgo algo, DType dt, const ConvParams& p, const void* dy, const void* x, void* dw,
                       void* ws, int64_t ws_bytes, int device, StreamHandle stream);
// db[k] = sum of dy[n, k, p, q] over n, p, q (zeros when N == 0), deterministic. The workspace
// holds the per-chunk sums when a channel's N*P*Q elements are split (0 bytes when they are not).
int64_t conv2d_bwd_bias_workspace_bytes(DType dt, const ConvParams& p);
void conv2d_bwd_bias(DType dt, const ConvParams& p, const void* dy, void* db, void* ws, int64_t ws_bytes, int device,
                     StreamHandle stream);

}  // namespace convkit::cuda
