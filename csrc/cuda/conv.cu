// conv2d on the GPU: the entry points of ops.h. Checks the arguments every algorithm relies
// on, makes the caller's device current, handles the empty batch, then hands the work to the
// algorithm's launchers (conv_algos.h's list, one switch case each). Also grad bias: a reduction
// over (channel, chunk of the batch's pixels) blocks, then the chunks of each channel in order;
// deterministic, no atomics.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>

#include "common/conv_algo.h"
#include "cuda/conv_algos.h"
#include "cuda/dtype.cuh"
#include "cuda/fill.cuh"
#include "cuda/ops.h"
#include "cuda/runtime.h"

namespace convkit::cuda {
namespace {

constexpr int kBiasThreads = 256;
// Grad bias splits each channel's N*P*Q elements into chunks of about kBiasChunk, at most
// kBiasMaxSplits of them, so that a layer with few channels and large planes still fills the
// GPU. The split is a function of the shape alone (never of the device), so the summation order,
// and the result, are the same on every GPU and on the emulator.
constexpr int64_t kBiasChunk = 32768;
constexpr int64_t kBiasMaxSplits = 64;

int64_t bias_splits(const ConvParams& p) {
  const int64_t elems = p.N * p.P * p.Q;
  return elems <= kBiasChunk ? 1 : std::min(kBiasMaxSplits, (elems + kBiasChunk - 1) / kBiasChunk);
}

// ---------------------------------------------------------------------------------------------
// GPU kernels

// Grad bias, db[k] = sum over n, pq of dy[n][k][pq], as a reduction over (channel, chunk) blocks.
// Block (k, s) sums chunk s of channel k's flattened (n, pq) range: thread t the elements
// t, t + 256, ... of the chunk in order, then a shared-memory tree halves the partials. With one
// chunk the block writes db[k]; with several, out[k * splits + s] in the accumulation type, and
// conv2d_bwd_bias_sum_kernel adds a channel's chunks in order. Deterministic, no atomics.
template <typename T, typename Out>
__global__ void __launch_bounds__(kBiasThreads)
    conv2d_bwd_bias_kernel(int64_t K, int64_t PQ, int64_t elems, int64_t chunk, const T* __restrict__ dy,
                           Out* __restrict__ out) {
  using A = acc_t<T>;
  CK_SHARED(A, partial, [kBiasThreads]);
  const int64_t k = blockIdx.x, s = blockIdx.y;
  const int64_t begin = s * chunk, end = begin + chunk < elems ? begin + chunk : elems;
  A sum = A(0);
  int64_t e = begin + threadIdx.x;
  int64_t n = e / PQ, pq = e - n * PQ;  // (n, pq) of element e, advanced without dividing again
  for (; e < end; e += kBiasThreads) {
    sum += to_acc(load_ro(dy + (n * K + k) * PQ + pq));
    pq += kBiasThreads;
    while (pq >= PQ) {
      pq -= PQ;
      ++n;
    }
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
#pragma unroll
  for (int half = kBiasThreads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    if constexpr (std::is_same_v<Out, A>)
      out[k * gridDim.y + s] = partial[0];
    else
      out[k] = from_acc<T>(partial[0]);
  }
}

// db[k] = the sum of channel k's `splits` chunk sums, in chunk order (thread per channel).
template <typename T>
__global__ void __launch_bounds__(kBiasThreads)
    conv2d_bwd_bias_sum_kernel(int64_t K, int64_t splits, const acc_t<T>* __restrict__ part, T* __restrict__ db) {
  const int64_t k = static_cast<int64_t>(blockIdx.x) * kBiasThreads + threadIdx.x;
  if (k >= K) return;
  acc_t<T> sum = part[k * splits];
  for (int64_t s = 1; s < splits; ++s) sum += part[k * splits + s];
  db[k] = from_acc<T>(sum);
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

int64_t conv2d_bwd_bias_workspace_bytes(DType dt, const ConvParams& p) {
  if (p.N == 0) return 0;
  const int64_t splits = bias_splits(p);
  return splits == 1 ? 0 : p.K * splits * acc_bytes(dt);
}

void conv2d_bwd_bias(DType dt, const ConvParams& p, const void* dy, void* db, void* ws, int64_t ws_bytes, int device,
                     StreamHandle stream) {
  const int64_t need = conv2d_bwd_bias_workspace_bytes(dt, p);
  if (need > 0 && (ws == nullptr || ws_bytes < need))
    throw Error("conv2d_bwd_bias: needs a workspace of " + std::to_string(need) + " bytes, got " +
                std::to_string(ws == nullptr ? 0 : ws_bytes));
  if (p.K > INT32_MAX) throw Error("conv2d_bwd_bias: more than 2^31 - 1 channels");
  DeviceGuard guard(device);
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    if (p.N == 0) {
      zero_fill(p.K, static_cast<T*>(db), stream);
      return;
    }
    const int64_t elems = p.N * p.P * p.Q, splits = bias_splits(p), chunk = (elems + splits - 1) / splits;
    const dim3 grid(static_cast<unsigned>(p.K), static_cast<unsigned>(splits));
    if (splits == 1) {
      launch("conv2d_bwd_bias_kernel", conv2d_bwd_bias_kernel<T, T>, grid, dim3(kBiasThreads), 0, stream, p.K,
             p.P * p.Q, elems, chunk, static_cast<const T*>(dy), static_cast<T*>(db));
      return;
    }
    auto* part = static_cast<acc_t<T>*>(ws);
    launch("conv2d_bwd_bias_kernel<split>", conv2d_bwd_bias_kernel<T, acc_t<T>>, grid, dim3(kBiasThreads), 0, stream,
           p.K, p.P * p.Q, elems, chunk, static_cast<const T*>(dy), part);
    launch("conv2d_bwd_bias_sum_kernel", conv2d_bwd_bias_sum_kernel<T>,
           dim3(static_cast<unsigned>((p.K + kBiasThreads - 1) / kBiasThreads)), dim3(kBiasThreads), 0, stream, p.K,
           splits, static_cast<const acc_t<T>*>(part), static_cast<T*>(db));
  });
}

}  // namespace convkit::cuda
