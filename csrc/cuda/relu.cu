// ReLU on the GPU over flat buffers of any length and alignment: y = max(x, 0) keeping NaN and
// -0.0; dx = dy where y > 0 or y is NaN, else 0. Grid-stride loops move 16-byte packs (float4,
// double2, 8 halves; two per thread in flight) over the aligned body, with scalar head and tail,
// or all scalar when the buffers' alignments differ. Also the build's dtype and device queries.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "cuda/dtype.cuh"
#include "cuda/grid.cuh"
#include "cuda/ops.h"
#include "cuda/runtime.h"

namespace convkit::cuda {
namespace {

constexpr int kThreads = 256;
// Packs each thread loads before it stores any: 2 x 16 bytes in flight per thread (4 x 16 for
// backward's two inputs) keep enough bytes on the way to cover DRAM latency at full occupancy.
constexpr int kUnroll = 2;

template <typename T>
__device__ __forceinline__ T relu_of(T v) {
  return to_acc(v) < acc_t<T>(0) ? from_acc<T>(acc_t<T>(0)) : v;
}

// y <= 0 (not NaN) blocks the gradient; y > 0 or NaN passes dy.
template <typename T>
__device__ __forceinline__ T relu_grad_of(T g, T y) {
  return to_acc(y) <= acc_t<T>(0) ? from_acc<T>(acc_t<T>(0)) : g;
}

// ---------------------------------------------------------------------------------------------
// GPU kernels

// Elements [0, head) and [head + nvec * kSize, n) go one at a time; the nvec 16-byte packs
// between them start 16-byte aligned in x and y alike. y may equal x (in-place): each element
// is read before the same thread writes it, and no pointer is __restrict__.
template <typename T>
__global__ void relu_fwd_kernel(int64_t n, int64_t head, int64_t nvec, const T* x, T* y) {
  using V = Pack16<T>;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const V* xv = reinterpret_cast<const V*>(x + head);
  V* yv = reinterpret_cast<V*>(y + head);
  for (int64_t i = tid; i < nvec; i += kUnroll * step) {
    V a[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (i + u * step < nvec) a[u] = load16(xv + i + u * step);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (i + u * step >= nvec) continue;
#pragma unroll
      for (int k = 0; k < V::kSize; ++k) a[u].v[k] = relu_of(a[u].v[k]);
      store16(yv + i + u * step, a[u]);
    }
  }
  // The head and tail are under 16 bytes each: no unrolling (it would only cost registers).
#pragma unroll 1
  for (int64_t k = tid; k < head; k += step) y[k] = relu_of(x[k]);
#pragma unroll 1
  for (int64_t k = head + nvec * V::kSize + tid; k < n; k += step) y[k] = relu_of(x[k]);
}

// Same layout as the forward, over dy, y and dx. dx may equal dy.
template <typename T>
__global__ void relu_bwd_kernel(int64_t n, int64_t head, int64_t nvec, const T* dy, const T* y, T* dx) {
  using V = Pack16<T>;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const V* gv = reinterpret_cast<const V*>(dy + head);
  const V* yv = reinterpret_cast<const V*>(y + head);
  V* dv = reinterpret_cast<V*>(dx + head);
  for (int64_t i = tid; i < nvec; i += kUnroll * step) {
    V a[kUnroll], b[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (i + u * step < nvec) {
        a[u] = load16(gv + i + u * step);
        b[u] = load16(yv + i + u * step);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (i + u * step >= nvec) continue;
#pragma unroll
      for (int k = 0; k < V::kSize; ++k) a[u].v[k] = relu_grad_of(a[u].v[k], b[u].v[k]);
      store16(dv + i + u * step, a[u]);
    }
  }
#pragma unroll 1
  for (int64_t k = tid; k < head; k += step) dx[k] = relu_grad_of(dy[k], y[k]);
#pragma unroll 1
  for (int64_t k = head + nvec * V::kSize + tid; k < n; k += step) dx[k] = relu_grad_of(dy[k], y[k]);
}

// ---------------------------------------------------------------------------------------------
// kernel launcher

// The split of n elements into a scalar head, 16-byte packs and a scalar tail. Packs need every
// buffer at the same offset from a 16-byte boundary; otherwise everything goes scalar.
struct PackSplit {
  int64_t head, nvec;
};

template <typename T>
PackSplit pack_split(int64_t n, const char* op, std::initializer_list<const void*> ptrs) {
  constexpr int64_t kSize = Pack16<T>::kSize;
  const std::uintptr_t mis = reinterpret_cast<std::uintptr_t>(*ptrs.begin()) % 16;
  bool same = true;
  for (const void* p : ptrs) {
    const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(p);
    if (a % sizeof(T) != 0)
      throw Error(std::string(op) + ": pointer " + std::to_string(a) + " is not aligned to its " +
                  std::to_string(sizeof(T)) + "-byte elements");
    same = same && a % 16 == mis;
  }
  if (!same) return {n, 0};
  const int64_t head = std::min<int64_t>(n, static_cast<int64_t>((16 - mis) % 16 / sizeof(T)));
  return {head, (n - head) / kSize};
}

// Blocks for a split: enough threads for every pack pair (or every element when all scalar).
inline unsigned relu_blocks(int64_t n, const PackSplit& s) {
  const int64_t items = s.nvec > 0 ? (s.nvec + kUnroll - 1) / kUnroll : n;
  return grid_blocks(items, kThreads);
}

}  // namespace

void relu_fwd(DType dt, int64_t n, const void* x, void* y, int device, StreamHandle stream) {
  if (n < 0) throw Error("relu_fwd: n must be >= 0, got " + std::to_string(n));
  DeviceGuard guard(device);
  if (n == 0) return;
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const PackSplit s = pack_split<T>(n, "relu_fwd", {x, y});
    launch("relu_fwd_kernel", relu_fwd_kernel<T>, dim3(relu_blocks(n, s)), dim3(kThreads), 0, stream, n, s.head,
           s.nvec, static_cast<const T*>(x), static_cast<T*>(y));
  });
}

void relu_bwd(DType dt, int64_t n, const void* dy, const void* y, void* dx, int device, StreamHandle stream) {
  if (n < 0) throw Error("relu_bwd: n must be >= 0, got " + std::to_string(n));
  DeviceGuard guard(device);
  if (n == 0) return;
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const PackSplit s = pack_split<T>(n, "relu_bwd", {dy, y, dx});
    launch("relu_bwd_kernel", relu_bwd_kernel<T>, dim3(relu_blocks(n, s)), dim3(kThreads), 0, stream, n, s.head,
           s.nvec, static_cast<const T*>(dy), static_cast<const T*>(y), static_cast<T*>(dx));
  });
}

// ---------------------------------------------------------------------------------------------
// build and device queries (declared in ops.h)

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::F32:
      return "float32";
    case DType::F64:
      return "float64";
    case DType::F16:
      return "float16";
    case DType::BF16:
      return "bfloat16";
  }
  return "unknown";
}

bool has_half() { return CK_HAVE_HALF != 0; }

int num_devices() { return device_count(); }

}  // namespace convkit::cuda
