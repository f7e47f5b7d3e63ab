// The one header every csrc/cuda source includes: it makes the same kernel and launcher code
// compile under nvcc (the GPU) and under the host compiler against csrc/sim/simt.h (the CPU
// emulator). Kernels declare shared memory with CK_SHARED / CK_DYNAMIC_SHARED, do 16-byte
// vector accesses through load16 / store16, and launchers start kernels with launch() and query
// the device through the functions below, never with raw <<<>>> or unchecked cuda* calls.
// launch() also honours variant.h's sync-after-launch switch (CONVKIT_CUDA_SYNC).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <utility>

#include "common/error.h"
#include "cuda/stream.h"
#include "cuda/variant.h"

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define CK_HAVE_HALF 1
#else
// The emulator: CUDA's keywords, built-in variables, warp operations, atomics and vector types
// on the host. Defines CK_HAVE_HALF (1 where CUDA's host headers were found).
#include "sim/simt.h"
#endif

// ---- shared memory -----------------------------------------------------------------------
// CK_SHARED(float, tile, [32][33]);  a static __shared__ array (dims may be empty for a scalar).
// CK_DYNAMIC_SHARED(float, smem);    the launch's dynamic shared memory, 16-byte aligned.
// Under the emulator both come from a per-block heap arena filled with 0xFF bytes (NaN for
// every floating type, -1 for integers) when the block starts.
#if defined(__CUDACC__)
#define CK_SHARED(T, name, dims) __shared__ T name dims
#define CK_DYNAMIC_SHARED(T, name)                           \
  extern __shared__ __align__(16) unsigned char ck_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(ck_dynamic_smem_)
#else
#define CK_SHARED(T, name, dims)                                                      \
  typedef T ck_shared_type_##name dims;                                               \
  static const char ck_shared_tag_##name = 0;                                         \
  ck_shared_type_##name& name = *static_cast<ck_shared_type_##name*>(::simt::static_shared( \
      &ck_shared_tag_##name, sizeof(ck_shared_type_##name), alignof(ck_shared_type_##name), #name))
#define CK_DYNAMIC_SHARED(T, name) T* name = static_cast<T*>(::simt::dynamic_shared())
#endif

namespace convkit::cuda {

// ---- 16-byte vector accesses ---------------------------------------------------------------
// The GPU faults on a misaligned 16-byte access (global or shared); the emulator reports it as a
// launch error naming the caller's source line (GCC's and Clang's __builtin_FILE / __builtin_LINE
// as default arguments are evaluated where load16 / store16 is called).
#if defined(__CUDACC__)
template <typename V>
__device__ __forceinline__ V load16(const V* p) {
  static_assert(sizeof(V) == 16, "load16 moves 16 bytes");
  return *p;
}

template <typename V>
__device__ __forceinline__ void store16(V* p, const V& v) {
  static_assert(sizeof(V) == 16, "store16 moves 16 bytes");
  *p = v;
}
#else
template <typename V>
__device__ __forceinline__ V load16(const V* p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  static_assert(sizeof(V) == 16, "load16 moves 16 bytes");
  ::simt::check_aligned(p, 16, "load16", file, line);
  return *p;
}

template <typename V>
__device__ __forceinline__ void store16(V* p, const V& v, const char* file = __builtin_FILE(),
                                        int line = __builtin_LINE()) {
  static_assert(sizeof(V) == 16, "store16 moves 16 bytes");
  ::simt::check_aligned(p, 16, "store16", file, line);
  *p = v;
}
#endif

// ---- device queries and launches (host code) -----------------------------------------------

struct DeviceLimits {
  int sm_count;
  int max_threads_per_block;
  std::size_t smem_per_block;        // without opt-in (48 KiB)
  std::size_t smem_per_block_optin;  // with cudaFuncAttributeMaxDynamicSharedMemorySize
};

#if defined(__CUDACC__)

#define CK_CUDA_CHECK(expr)                                                                    \
  do {                                                                                         \
    cudaError_t ck_err_ = (expr);                                                              \
    if (ck_err_ != cudaSuccess)                                                                \
      throw ::convkit::Error(std::string(#expr) + " failed: " + cudaGetErrorName(ck_err_) + \
                             " (" + cudaGetErrorString(ck_err_) + ")");                        \
  } while (0)

// Makes `device` current for the scope of the guard and restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    CK_CUDA_CHECK(cudaGetDevice(&prev_));
    if (device >= 0 && device != prev_) {
      CK_CUDA_CHECK(cudaSetDevice(device));
      set_ = true;
    }
  }
  ~DeviceGuard() {
    if (set_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
  bool set_ = false;
};

inline DeviceLimits device_limits() {
  int dev = 0, v = 0;
  DeviceLimits d{};
  CK_CUDA_CHECK(cudaGetDevice(&dev));
  CK_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev));
  d.sm_count = v;
  CK_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxThreadsPerBlock, dev));
  d.max_threads_per_block = v;
  CK_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlock, dev));
  d.smem_per_block = static_cast<std::size_t>(v);
  CK_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  d.smem_per_block_optin = static_cast<std::size_t>(v);
  return d;
}

// Opts `kernel` in to more than 48 KiB of dynamic shared memory.
template <typename... KArgs>
void set_max_dynamic_smem(void (*kernel)(KArgs...), std::size_t bytes) {
  CK_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

inline int device_count() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
    cudaGetLastError();  // clear it: "no device" is an answer here, not a failure
    return 0;
  }
  CK_CUDA_CHECK(err);
  return n;
}

inline void synchronize(StreamHandle stream) {
  CK_CUDA_CHECK(cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream)));
}

// variant.h's sync-after-launch switch: waits for the stream and raises the kernel's fault (an
// illegal address, a trap) as this launch's error. Not while the stream is being captured into
// a CUDA graph (a synchronize would invalidate the capture; nothing runs then anyway).
template <typename Config>
void sync_after_launch(const Config& config, StreamHandle stream) {
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  cudaError_t err = cudaStreamIsCapturing(s, &capture);  // fails too once the kernel has faulted
  if (err == cudaSuccess && capture != cudaStreamCaptureStatusNone) return;
  if (err == cudaSuccess) err = cudaStreamSynchronize(s);
  if (err == cudaSuccess) err = cudaGetLastError();
  count_launch_sync();
  if (err != cudaSuccess)
    throw ::convkit::Error("kernel " + config() + " failed (the sync after its launch, CONVKIT_CUDA_SYNC): " +
                           cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

// Launches kernel<<<grid, block, smem, stream>>>(args...) and checks the launch; a failure
// throws convkit::Error naming the kernel, the configuration and the CUDA error. With
// launch_sync() on, also waits for the kernel and checks how it ended.
template <typename... KArgs, typename... Args>
void launch(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, std::size_t smem,
            StreamHandle stream, Args&&... args) {
  static_assert(sizeof...(KArgs) == sizeof...(Args), "launch: wrong number of kernel arguments");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;  // nothing to do
  cudaGetLastError();  // a stale error from elsewhere must not be blamed on this launch
  kernel<<<grid, block, smem, reinterpret_cast<cudaStream_t>(stream)>>>(std::forward<Args>(args)...);
  const auto config = [&]() {
    return std::string(name) + " <<<(" + std::to_string(grid.x) + "," + std::to_string(grid.y) + "," +
           std::to_string(grid.z) + "), (" + std::to_string(block.x) + "," + std::to_string(block.y) + "," +
           std::to_string(block.z) + "), " + std::to_string(smem) + ">>>";
  };
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw ::convkit::Error("launch of " + config() + " failed: " + cudaGetErrorName(err) + " (" +
                           cudaGetErrorString(err) + ")");
  if (launch_sync()) sync_after_launch(config, stream);
}

#else  // the emulator

class DeviceGuard {
 public:
  explicit DeviceGuard(int) {}
};

inline DeviceLimits device_limits() {
  const ::simt::DeviceProps& p = ::simt::device_props();
  return DeviceLimits{p.sm_count, p.max_threads_per_block, p.smem_per_block, p.smem_per_block_optin};
}

template <typename... KArgs>
void set_max_dynamic_smem(void (*kernel)(KArgs...), std::size_t bytes) {
  ::simt::set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), bytes);
}

inline int device_count() { return 1; }

inline void synchronize(StreamHandle) {}  // emulated launches complete before they return

template <typename... KArgs, typename... Args>
void launch(const char* name, void (*kernel)(KArgs...), dim3 grid, dim3 block, std::size_t smem,
            StreamHandle stream, Args&&... args) {
  static_assert(sizeof...(KArgs) == sizeof...(Args), "launch: wrong number of kernel arguments");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) return;
  // The arguments are converted to the kernel's parameter types once, as a real launch copies
  // them into the parameter buffer; every emulated thread then calls the kernel with them.
  std::tuple<std::decay_t<KArgs>...> params(std::forward<Args>(args)...);
  try {
    ::simt::launch(name, reinterpret_cast<const void*>(kernel), grid, block, smem,
                   reinterpret_cast<void*>(stream), [&params, kernel]() { std::apply(kernel, params); });
  } catch (const ::simt::LaunchError& e) {
    throw ::convkit::Error(e.what());
  }
  // An emulated launch has completed, faults included, when it returns: the sync-after-launch
  // switch has nothing to wait for (it is counted, so tests see the switch reach the launcher).
  if (launch_sync()) count_launch_sync();
}

#endif

}  // namespace convkit::cuda
