// conv2d on the GPU: the entry points of ops.h. Checks the arguments every algorithm relies
// on, makes the caller's device current, handles the empty batch, then hands the work to the
// algorithm's launchers (conv_algos.h's list, one switch case each). Also grad bias: one block
// per output channel reducing dy over (n, p, q) with a fixed-shape tree, deterministic, no atomics.
#include <climits>
#include <cstdint>
#include <string>

#include "common/conv_algo.h"
#include "cuda/conv_algos.h"
#include "cuda/dtype.cuh"
#include "cuda/fill.cuh"
#include "cuda/ops.h"
#include "cuda/runtime.h"

namespace convkit::cuda {
namespace {

constexpr int kBiasThreads = 256;

// ---------------------------------------------------------------------------------------------
// GPU kernels

// db[k] = sum over n, pq of dy[n][k][pq]. Block k: thread t sums the elements t, t + 256, ...
// of the flattened (n, pq) range in order, then a shared-memory tree halves the partials.
template <typename T>
__global__ void __launch_bounds__(kBiasThreads)
    conv2d_bwd_bias_kernel(int64_t N, int64_t K, int64_t PQ, const T* __restrict__ dy, T* __restrict__ db) {
  using A = acc_t<T>;
  CK_SHARED(A, partial, [kBiasThreads]);
  const int64_t k = blockIdx.x;
  A sum = A(0);
  for (int64_t n = 0; n < N; ++n) {
    const T* row = dy + (n * K + k) * PQ;
    for (int64_t i = threadIdx.x; i < PQ; i += kBiasThreads) sum += to_acc(load_ro(row + i));
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
#pragma unroll
  for (int half = kBiasThreads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) db[k] = from_acc<T>(partial[0]);
}

// ---------------------------------------------------------------------------------------------
// kernel launcher

void check_params(ConvAlgo algo, const ConvParams& p, const char* op) {
  if (p.N < 0 || p.C <= 0 || p.H <= 0 || p.W <= 0 || p.K <= 0 || p.R <= 0 || p.S <= 0 || p.P <= 0 || p.Q <= 0 ||
      p.groups <= 0 || p.C % p.groups != 0 || p.K % p.groups != 0)
    throw Error(std::string(op) + ": inconsistent ConvParams");
  // The kernels index a plane in 32 bits (window offsets, dilated taps and strides are all
  // bounded by the padded input once make_conv_params has capped a one-row stride); the Python
  // layer refuses these first with a message naming the arguments.
  const int64_t hp = p.H + p.pad_t + p.pad_b, wp = p.W + p.pad_l + p.pad_r;
  if (hp > INT32_MAX || wp > INT32_MAX || p.stride_h > hp || p.stride_w > wp)
    throw Error(std::string(op) + ": the padded input (" + std::to_string(hp) + ", " + std::to_string(wp) +
                ") or a stride past it is outside the CUDA kernels' 32-bit plane indexing");
  check_conv_algo(algo, kCudaConvAlgos, p, op);
}

void check_workspace(ConvAlgo algo, ConvPass pass, DType dt, const ConvParams& p, const void* ws, int64_t ws_bytes,
                     const char* op) {
  const int64_t need = conv2d_workspace_bytes(algo, pass, dt, p, 0);  // the least any cap allows
  if (need > 0 && (ws == nullptr || ws_bytes < need))
    throw Error(std::string(op) + ": algo '" + conv_algo_name(algo) + "' needs a workspace of at least " +
                std::to_string(need) + " bytes, got " + std::to_string(ws == nullptr ? 0 : ws_bytes));
}

}  // namespace

int64_t conv2d_workspace_bytes(ConvAlgo algo, ConvPass pass, DType dt, const ConvParams& p, int64_t cap_bytes) {
  check_params(algo, p, "conv2d_workspace_bytes");
  if (p.N == 0) return 0;
  switch (algo) {
#define CONVKIT_CASE(E, ns) \
  case ConvAlgo::E:         \
    return ns::workspace_bytes(pass, dt, p, cap_bytes);
    CONVKIT_CUDA_CONV_ALGOS(CONVKIT_CASE)
#undef CONVKIT_CASE
    default:
      break;  // (an algorithm the CUDA modules don't build: check_params refused it)
  }
  return 0;
}

void conv2d_fwd(ConvAlgo algo, DType dt, const ConvParams& p, const void* x, const void* w, const void* b, void* y,
                void* ws, int64_t ws_bytes, int device, StreamHandle stream) {
  check_params(algo, p, "conv2d_fwd");
  DeviceGuard guard(device);
  if (p.N == 0) return;
  check_workspace(algo, ConvPass::Fwd, dt, p, ws, ws_bytes, "conv2d_fwd");
  switch (algo) {
#define CONVKIT_CASE(E, ns) \
  case ConvAlgo::E:         \
    return ns::fwd(dt, p, x, w, b, y, ws, ws_bytes, stream);
    CONVKIT_CUDA_CONV_ALGOS(CONVKIT_CASE)
#undef CONVKIT_CASE
    default:
      break;  // (an algorithm the CUDA modules don't build: check_params refused it)
  }
}

void conv2d_bwd_input(ConvAlgo algo, DType dt, const ConvParams& p, const void* dy, const void* w, void* dx,
                      void* ws, int64_t ws_bytes, int device, StreamHandle stream) {
  check_params(algo, p, "conv2d_bwd_input");
  DeviceGuard guard(device);
  if (p.N == 0) return;
  check_workspace(algo, ConvPass::BwdInput, dt, p, ws, ws_bytes, "conv2d_bwd_input");
  switch (algo) {
#define CONVKIT_CASE(E, ns) \
  case ConvAlgo::E:         \
    return ns::bwd_input(dt, p, dy, w, dx, ws, ws_bytes, stream);
    CONVKIT_CUDA_CONV_ALGOS(CONVKIT_CASE)
#undef CONVKIT_CASE
    default:
      break;  // (an algorithm the CUDA modules don't build: check_params refused it)
  }
}

void conv2d_bwd_weight(ConvAlgo algo, DType dt, const ConvParams& p, const void* dy, const void* x, void* dw,
                       void* ws, int64_t ws_bytes, int device, StreamHandle stream) {
  check_params(algo, p, "conv2d_bwd_weight");
  DeviceGuard guard(device);
  if (p.N == 0) {  // an empty batch has a zero gradient
    const int64_t n = p.K * p.Cg() * p.R * p.S;
    dispatch_dtype(dt, [&](auto tag) {
      using T = decltype(tag);
      zero_fill(n, static_cast<T*>(dw), stream);
    });
    return;
  }
  check_workspace(algo, ConvPass::BwdWeight, dt, p, ws, ws_bytes, "conv2d_bwd_weight");
  switch (algo) {
#define CONVKIT_CASE(E, ns) \
  case ConvAlgo::E:         \
    return ns::bwd_weight(dt, p, dy, x, dw, ws, ws_bytes, stream);
    CONVKIT_CUDA_CONV_ALGOS(CONVKIT_CASE)
#undef CONVKIT_CASE
    default:
      break;  // (an algorithm the CUDA modules don't build: check_params refused it)
  }
}

void conv2d_bwd_bias(DType dt, const ConvParams& p, const void* dy, void* db, int device, StreamHandle stream) {
  DeviceGuard guard(device);
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    if (p.N == 0) {
      zero_fill(p.K, static_cast<T*>(db), stream);
      return;
    }
    launch("conv2d_bwd_bias_kernel", conv2d_bwd_bias_kernel<T>, dim3(static_cast<unsigned>(p.K)), dim3(kBiasThreads),
           0, stream, p.N, p.K, p.P * p.Q, static_cast<const T*>(dy), static_cast<T*>(db));
  });
}

}  // namespace convkit::cuda
