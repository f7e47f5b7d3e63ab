// simt.h: the CUDA emulator's device-side API. csrc/cuda/*.cu compiled by the host compiler
// against this header run on the CPU with CUDA's meaning: every CUDA thread of a block is a
// fiber (fiber.cpp; the CUDA semantics in simt.cpp), so __syncthreads() is a real barrier and
// warp operations meet their lanes.
//
// What it models: blocks run on a pool of OS threads (simt::set_num_workers), the threads of one
// block as fibers on one OS thread, in an order shuffled by a seeded PRNG between blocking points:
// a kernel that relies on one schedule fails, deterministically for a given seed
// (CONVKIT_SIM_SEED picks another). Lanes of a warp don't run in lock-step (CUDA's independent
// thread scheduling, taken strictly); the lanes named in a warp operation's mask meet there.
// Errors a GPU would fault on or hang at, or whose result it leaves undefined (barrier
// divergence: threads at different __syncthreads() calls or some exited; a warp op whose mask
// names a lane that doesn't exist, has exited or waits elsewhere; a shuffle whose source lane is
// outside its mask, PTX's undefined value, while a source outside the lane's segment of `width`
// lanes reads the lane's own value as PTX says; a misaligned 16-byte access through load16 /
// store16 or the shared-memory helpers built on them, global or shared, named with the call's
// file:line; shared memory over the limit; refused launch configurations) become
// simt::LaunchError naming the kernel, block and thread, never a hang. Shared memory (CK_SHARED /
// CK_DYNAMIC_SHARED in cuda/runtime.h) is a separate heap allocation per array per block, filled
// with 0xFF bytes (NaN / -1) when the block starts, so an unwritten read shows up and
// AddressSanitizer sees overflows between arrays. A static array is aligned no better than a GPU
// guarantees: exactly its type's alignment when that is under 16 bytes (placed at an address
// aligned to `alignof` but not to twice it), so a float array read as float4 faults here as it
// may on a GPU; an array whose type says alignas(16) or more, and the dynamic array (declared
// __align__(16)), get that.
//
// Known gaps: fibers are never preempted, so a non-atomic read-modify-write race between threads
// gives the same answer every time here (the race detector's build, racecheck.cpp and `make
// test-racecheck`, reports it and the other races), and a thread spinning on a flag that another
// thread of its block, or another block, sets may spin forever. Alignment is checked only where a kernel
// says it moves 16 bytes (load16 / store16 and the helpers on them): a plain dereference of a
// float4* or an 8-byte vector access goes unchecked, and AddressSanitizer misses an underrun of a
// static array into the few bytes that skew it from 16-byte alignment. __activemask() returns the
// warp's lanes that have not exited. g++ accepts what nvcc rejects in a few places (variable-length
// arrays such as `int a[warpSize]`), which the nvcc build catches. No inline PTX, textures,
// cooperative groups or __constant__ uploads (__constant__ is a plain global); assert() in a kernel
// ends the process. A kernel that overflows its fiber stack (64 KiB, 512 KiB under ASan;
// CONVKIT_SIM_STACK_KB) crashes on the stack's guard page.
#pragma once

// Standard headers first: libstdc++ spells __attribute__((__noinline__)) in some of them, which
// the __noinline__ keyword macro below would break if they were parsed after it.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>
#include <math.h>  // after <cmath>: libstdc++'s math.h puts std::isnan & co. in the global namespace

#include "sim/control.h"  // seed, workers, counters (also used by the bindings, without CUDA types)

// ---- vector and half types ------------------------------------------------------------------
#if __has_include(<vector_types.h>) && !defined(SIMT_NO_CUDA_HEADERS)
// CUDA's own host headers: dim3, float4, ... and __half / __nv_bfloat16 with host arithmetic.
// (cuda_fp16.h declares the cuda* runtime API too, so the emulator defines none of it.)
#include <vector_types.h>
#include <vector_functions.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#define CK_HAVE_HALF 1
#else
#define CK_HAVE_HALF 0
#define SIMT_OWN_VECTOR_TYPES 1
// Minimal stand-ins with CUDA's layout and alignment.
struct char4 { signed char x, y, z, w; };
struct uchar4 { unsigned char x, y, z, w; };
struct short2 { short x, y; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct int3 { int x, y, z; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
struct __attribute__((aligned(8))) uint2 { unsigned int x, y; };
struct uint3 { unsigned int x, y, z; };
struct __attribute__((aligned(16))) uint4 { unsigned int x, y, z, w; };
struct __attribute__((aligned(8))) float2 { float x, y; };
struct float3 { float x, y, z; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(16))) double2 { double x, y; };
struct __attribute__((aligned(16))) longlong2 { long long x, y; };
struct __attribute__((aligned(16))) ulonglong2 { unsigned long long x, y; };
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};
inline char4 make_char4(signed char x, signed char y, signed char z, signed char w) { return {x, y, z, w}; }
inline uchar4 make_uchar4(unsigned char x, unsigned char y, unsigned char z, unsigned char w) { return {x, y, z, w}; }
inline short2 make_short2(short x, short y) { return {x, y}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int3 make_int3(int x, int y, int z) { return {x, y, z}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return {x, y, z}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }
inline longlong2 make_longlong2(long long x, long long y) { return {x, y}; }
inline ulonglong2 make_ulonglong2(unsigned long long x, unsigned long long y) { return {x, y}; }
#endif

// ---- keywords ---------------------------------------------------------------------------------
// CUDA's host headers define the location keywords as empty annotations; ours are the same.
#undef __global__
#undef __device__
#undef __host__
#undef __constant__
#undef __shared__
#undef __forceinline__
#undef __noinline__
#undef __launch_bounds__
#undef __grid_constant__
#define __global__
#define __device__
#define __host__
#define __constant__
#define __grid_constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// A plain __shared__ variable would be one global shared by every block; kernels declare shared
// memory with CK_SHARED / CK_DYNAMIC_SHARED (cuda/runtime.h) so the emulator can give each block
// its own copy.
#define __shared__ static_assert(false, "use CK_SHARED / CK_DYNAMIC_SHARED (cuda/runtime.h), not __shared__");
#ifndef __align__
#define __align__(n) __attribute__((aligned(n)))
#endif

// ---- emulator state and host API ------------------------------------------------------------
namespace simt {

// Thrown by launch() (and set_max_dynamic_smem) for anything a GPU would refuse or fault on.
struct LaunchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The device the emulator pretends to be (an H100 SXM; control.h's set_sm_count changes its SM
// count, so tests can check that results do not depend on it).
struct DeviceProps {
  int sm_count;
  int max_threads_per_block;
  std::size_t smem_per_block;        // without opt-in: 48 KiB
  std::size_t smem_per_block_optin;  // with set_max_dynamic_smem: 227 KiB
};
DeviceProps device_props();

// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes).
void set_max_dynamic_smem(const void* kernel, std::size_t bytes);

// Runs `body` (the kernel with its arguments bound) as every thread of every block of the grid
// and returns when all have finished; throws LaunchError on a refused configuration or on any
// error during the run. `stream` is ignored: the launch is complete when this returns.
void launch(const char* name, const void* kernel, dim3 grid, dim3 block, std::size_t dynamic_smem,
            void* stream, const std::function<void()>& body);

// Shared memory of the running block. static_shared returns the same allocation to every thread
// of a block for one `tag` (the address of a static local at the declaration site).
void* static_shared(const void* tag, std::size_t bytes, std::size_t align, const char* name);
void* dynamic_shared();

namespace detail {
[[noreturn]] void misaligned(const void* p, std::size_t align, const char* what);
}  // namespace detail

// A GPU faults on a misaligned vector access; the emulator makes it a launch error naming the
// kernel, `what` and the address.
inline void check_aligned(const void* p, std::size_t align, const char* what) {
  if (reinterpret_cast<std::uintptr_t>(p) & (align - 1)) detail::misaligned(p, align, what);
}

namespace detail {
// `what` at file:line, formatted on the stack (the fiber is abandoned, so nothing may be left to
// free), then misaligned().
[[noreturn]] __attribute__((noinline, cold)) inline void misaligned_at(const void* p, std::size_t align,
                                                                       const char* what, const char* file, int line) {
  const char* base = std::strrchr(file, '/');
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s at %s:%d", what, base ? base + 1 : file, line);
  misaligned(p, align, buf);
}
}  // namespace detail

// The same, naming the access's source line too ("load16 at file.cu:42 of 0x...").
inline void check_aligned(const void* p, std::size_t align, const char* what, const char* file, int line) {
  if (reinterpret_cast<std::uintptr_t>(p) & (align - 1)) detail::misaligned_at(p, align, what, file, line);
}

namespace detail {

// What the built-in variables read. A fiber's ThreadCtx lives in fiber.cpp; tls_thread points at
// the running one (null outside a kernel).
struct BlockDims {
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};
// One pending asynchronous copy (memcpy_async): `bytes` bytes from src to the shared dst, the
// last `zfill` of them zeros instead, in commit group `group`.
struct AsyncCopy {
  unsigned char* dst;
  const unsigned char* src;
  unsigned bytes, zfill, group;
};
struct ThreadCtx {
  uint3 thread_idx;
  const BlockDims* dims;
  // The thread's asynchronous copies not yet waited for, those its last wait completed, and the
  // groups it has committed (cleared when a block starts).
  std::vector<AsyncCopy> async_copies, async_done;
  unsigned async_committed = 0;
};
// __thread, not thread_local: a plain TLS slot, no C++ init wrapper on every access.
extern __thread ThreadCtx* tls_thread;

inline int warp_size() { return 32; }

enum class WarpOp : int {
  ShflIdx, ShflUp, ShflDown, ShflXor, Ballot, Any, All, SyncWarp,
  MatchAny, MatchAll, ReduceAddI, ReduceAddU, ReduceMinI, ReduceMinU, ReduceMaxI, ReduceMaxU,
  ReduceAnd, ReduceOr, ReduceXor, Mma
};
enum class BarrierOp : int { Sync, Count, And, Or };

// The lanes named in `mask` meet; each contributes `value` (zero-extended bits) and `arg`; returns
// this lane's result bits. `pred_out`, when given, receives __match_all_sync's predicate.
std::uint64_t warp_meet(const char* file, int line, WarpOp op, unsigned mask, std::uint64_t value,
                        int arg, int width, int* pred_out = nullptr);
int barrier(const char* file, int line, BarrierOp op, int pred);
unsigned active_mask();

template <typename T>
inline std::uint64_t to_bits(const T& v) {
  static_assert(sizeof(T) <= 8, "warp operations move at most 8 bytes");
  std::uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
inline T from_bits(std::uint64_t b) {
  T v;
  std::memcpy(static_cast<void*>(&v), &b, sizeof(T));
  return v;
}

// Shuffles: exactly nvcc's overload set (plain overloads, so a type nvcc rejects fails here too).
#define SIMT_SHFL_OVERLOADS(T)                                                                         \
  inline T shfl_idx(const char* f, int l, unsigned mask, T var, int src, int width = 32) {            \
    return from_bits<T>(warp_meet(f, l, WarpOp::ShflIdx, mask, to_bits(var), src, width));            \
  }                                                                                                    \
  inline T shfl_up(const char* f, int l, unsigned mask, T var, unsigned delta, int width = 32) {      \
    return from_bits<T>(warp_meet(f, l, WarpOp::ShflUp, mask, to_bits(var), static_cast<int>(delta), width)); \
  }                                                                                                    \
  inline T shfl_down(const char* f, int l, unsigned mask, T var, unsigned delta, int width = 32) {    \
    return from_bits<T>(warp_meet(f, l, WarpOp::ShflDown, mask, to_bits(var), static_cast<int>(delta), width)); \
  }                                                                                                    \
  inline T shfl_xor(const char* f, int l, unsigned mask, T var, int lane_mask, int width = 32) {      \
    return from_bits<T>(warp_meet(f, l, WarpOp::ShflXor, mask, to_bits(var), lane_mask, width));      \
  }
SIMT_SHFL_OVERLOADS(int)
SIMT_SHFL_OVERLOADS(unsigned int)
SIMT_SHFL_OVERLOADS(long)
SIMT_SHFL_OVERLOADS(unsigned long)
SIMT_SHFL_OVERLOADS(long long)
SIMT_SHFL_OVERLOADS(unsigned long long)
SIMT_SHFL_OVERLOADS(float)
SIMT_SHFL_OVERLOADS(double)
#if CK_HAVE_HALF
SIMT_SHFL_OVERLOADS(__half)
SIMT_SHFL_OVERLOADS(__half2)
SIMT_SHFL_OVERLOADS(__nv_bfloat16)
SIMT_SHFL_OVERLOADS(__nv_bfloat162)
#endif
#undef SIMT_SHFL_OVERLOADS

inline unsigned ballot(const char* f, int l, unsigned mask, int pred) {
  return static_cast<unsigned>(warp_meet(f, l, WarpOp::Ballot, mask, pred != 0, 0, 32));
}
inline int any(const char* f, int l, unsigned mask, int pred) {
  return static_cast<int>(warp_meet(f, l, WarpOp::Any, mask, pred != 0, 0, 32));
}
inline int all(const char* f, int l, unsigned mask, int pred) {
  return static_cast<int>(warp_meet(f, l, WarpOp::All, mask, pred != 0, 0, 32));
}
// __syncwarp expands to SyncWarpAt{__FILE__, __LINE__}, so both __syncwarp() and __syncwarp(mask)
// work without the GNU comma-elision extension.
struct SyncWarpAt {
  const char* file;
  int line;
  void operator()(unsigned mask = 0xffffffffu) const { warp_meet(file, line, WarpOp::SyncWarp, mask, 0, 0, 32); }
};

#define SIMT_MATCH_OVERLOADS(T)                                                                  \
  inline unsigned match_any(const char* f, int l, unsigned mask, T value) {                     \
    return static_cast<unsigned>(warp_meet(f, l, WarpOp::MatchAny, mask, to_bits(value), 0, 32)); \
  }                                                                                              \
  inline unsigned match_all(const char* f, int l, unsigned mask, T value, int* pred) {          \
    int p = 0;                                                                                   \
    unsigned r = static_cast<unsigned>(warp_meet(f, l, WarpOp::MatchAll, mask, to_bits(value), 0, 32, &p)); \
    *pred = p;                                                                                   \
    return r;                                                                                    \
  }
SIMT_MATCH_OVERLOADS(int)
SIMT_MATCH_OVERLOADS(unsigned int)
SIMT_MATCH_OVERLOADS(long)
SIMT_MATCH_OVERLOADS(unsigned long)
SIMT_MATCH_OVERLOADS(long long)
SIMT_MATCH_OVERLOADS(unsigned long long)
SIMT_MATCH_OVERLOADS(float)
SIMT_MATCH_OVERLOADS(double)
#undef SIMT_MATCH_OVERLOADS

inline int reduce_add(const char* f, int l, unsigned mask, int v) {
  return static_cast<int>(warp_meet(f, l, WarpOp::ReduceAddI, mask, to_bits(v), 0, 32));
}
inline unsigned reduce_add(const char* f, int l, unsigned mask, unsigned v) {
  return static_cast<unsigned>(warp_meet(f, l, WarpOp::ReduceAddU, mask, v, 0, 32));
}
inline int reduce_min(const char* f, int l, unsigned mask, int v) {
  return static_cast<int>(warp_meet(f, l, WarpOp::ReduceMinI, mask, to_bits(v), 0, 32));
}
inline unsigned reduce_min(const char* f, int l, unsigned mask, unsigned v) {
  return static_cast<unsigned>(warp_meet(f, l, WarpOp::ReduceMinU, mask, v, 0, 32));
}
inline int reduce_max(const char* f, int l, unsigned mask, int v) {
  return static_cast<int>(warp_meet(f, l, WarpOp::ReduceMaxI, mask, to_bits(v), 0, 32));
}
inline unsigned reduce_max(const char* f, int l, unsigned mask, unsigned v) {
  return static_cast<unsigned>(warp_meet(f, l, WarpOp::ReduceMaxU, mask, v, 0, 32));
}
inline unsigned reduce_and(const char* f, int l, unsigned mask, unsigned v) {
  return static_cast<unsigned>(warp_meet(f, l, WarpOp::ReduceAnd, mask, v, 0, 32));
}
inline unsigned reduce_or(const char* f, int l, unsigned mask, unsigned v) {
  return static_cast<unsigned>(warp_meet(f, l, WarpOp::ReduceOr, mask, v, 0, 32));
}
inline unsigned reduce_xor(const char* f, int l, unsigned mask, unsigned v) {
  return static_cast<unsigned>(warp_meet(f, l, WarpOp::ReduceXor, mask, v, 0, 32));
}

// Atomic read-modify-write through a compare-and-swap on the value's bits (floating types).
template <typename T, typename Bits, typename F>
inline T atomic_update(T* addr, F f) {
  static_assert(sizeof(T) == sizeof(Bits), "atomic_update: size mismatch");
  Bits* p = reinterpret_cast<Bits*>(addr);
  Bits old_bits = __atomic_load_n(p, __ATOMIC_RELAXED);
  for (;;) {
    T old_v = from_bits<T>(old_bits);
    T new_v = f(old_v);
    Bits new_bits;
    std::memcpy(&new_bits, &new_v, sizeof(T));
    if (__atomic_compare_exchange_n(p, &old_bits, new_bits, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
      return old_v;
  }
}
template <typename T, typename F>
inline T atomic_update_int(T* addr, F f) {
  T old_v = __atomic_load_n(addr, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(addr, &old_v, f(old_v), true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old_v;
}

}  // namespace detail
}  // namespace simt

// ---- built-in variables -----------------------------------------------------------------------
#define threadIdx (static_cast<const ::uint3&>(::simt::detail::tls_thread->thread_idx))
#define blockIdx (static_cast<const ::uint3&>(::simt::detail::tls_thread->dims->block_idx))
#define blockDim (static_cast<const ::dim3&>(::simt::detail::tls_thread->dims->block_dim))
#define gridDim (static_cast<const ::dim3&>(::simt::detail::tls_thread->dims->grid_dim))
// A function call, not a constant: nvcc doesn't accept warpSize in constant expressions either.
#define warpSize (::simt::detail::warp_size())

// ---- synchronization ----------------------------------------------------------------------------
// Macros so the emulator knows which barrier / warp op each thread waits at (file:line).
#define __syncthreads() ::simt::detail::barrier(__FILE__, __LINE__, ::simt::detail::BarrierOp::Sync, 0)
#define __syncthreads_count(pred) \
  ::simt::detail::barrier(__FILE__, __LINE__, ::simt::detail::BarrierOp::Count, (pred) != 0)
#define __syncthreads_and(pred) \
  ::simt::detail::barrier(__FILE__, __LINE__, ::simt::detail::BarrierOp::And, (pred) != 0)
#define __syncthreads_or(pred) \
  ::simt::detail::barrier(__FILE__, __LINE__, ::simt::detail::BarrierOp::Or, (pred) != 0)
#define __syncwarp ::simt::detail::SyncWarpAt{__FILE__, __LINE__}
#define __shfl_sync(...) ::simt::detail::shfl_idx(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) ::simt::detail::shfl_up(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::simt::detail::shfl_down(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::simt::detail::shfl_xor(__FILE__, __LINE__, __VA_ARGS__)
#define __ballot_sync(mask, pred) ::simt::detail::ballot(__FILE__, __LINE__, (mask), (pred))
#define __any_sync(mask, pred) ::simt::detail::any(__FILE__, __LINE__, (mask), (pred))
#define __all_sync(mask, pred) ::simt::detail::all(__FILE__, __LINE__, (mask), (pred))
#define __match_any_sync(mask, value) ::simt::detail::match_any(__FILE__, __LINE__, (mask), (value))
#define __match_all_sync(mask, value, pred) \
  ::simt::detail::match_all(__FILE__, __LINE__, (mask), (value), (pred))
#define __reduce_add_sync(mask, value) ::simt::detail::reduce_add(__FILE__, __LINE__, (mask), (value))
#define __reduce_min_sync(mask, value) ::simt::detail::reduce_min(__FILE__, __LINE__, (mask), (value))
#define __reduce_max_sync(mask, value) ::simt::detail::reduce_max(__FILE__, __LINE__, (mask), (value))
#define __reduce_and_sync(mask, value) ::simt::detail::reduce_and(__FILE__, __LINE__, (mask), (value))
#define __reduce_or_sync(mask, value) ::simt::detail::reduce_or(__FILE__, __LINE__, (mask), (value))
#define __reduce_xor_sync(mask, value) ::simt::detail::reduce_xor(__FILE__, __LINE__, (mask), (value))

inline unsigned __activemask() { return ::simt::detail::active_mask(); }
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

// ---- atomics (nvcc's overloads for sm_80+; relaxed, like CUDA's) ----------------------------------
inline int atomicAdd(int* a, int v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }
inline unsigned int atomicAdd(unsigned int* a, unsigned int v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) {
  return __atomic_fetch_add(a, v, __ATOMIC_RELAXED);
}
inline float atomicAdd(float* a, float v) {
  return ::simt::detail::atomic_update<float, std::uint32_t>(a, [v](float o) { return o + v; });
}
inline double atomicAdd(double* a, double v) {
  return ::simt::detail::atomic_update<double, std::uint64_t>(a, [v](double o) { return o + v; });
}
#if CK_HAVE_HALF
// The sum is formed in float and rounded once: float has more than 2p+2 bits for both 16-bit
// types, so this equals the correctly rounded 16-bit sum the GPU computes.
inline __half atomicAdd(__half* a, __half v) {
  return ::simt::detail::atomic_update<__half, std::uint16_t>(
      a, [v](__half o) { return __float2half_rn(__half2float(o) + __half2float(v)); });
}
inline __half2 atomicAdd(__half2* a, __half2 v) {
  return ::simt::detail::atomic_update<__half2, std::uint32_t>(a, [v](__half2 o) {
    return __halves2half2(__float2half_rn(__low2float(o) + __low2float(v)),
                          __float2half_rn(__high2float(o) + __high2float(v)));
  });
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* a, __nv_bfloat16 v) {
  return ::simt::detail::atomic_update<__nv_bfloat16, std::uint16_t>(
      a, [v](__nv_bfloat16 o) { return __float2bfloat16_rn(__bfloat162float(o) + __bfloat162float(v)); });
}
inline __nv_bfloat162 atomicAdd(__nv_bfloat162* a, __nv_bfloat162 v) {
  return ::simt::detail::atomic_update<__nv_bfloat162, std::uint32_t>(a, [v](__nv_bfloat162 o) {
    return __halves2bfloat162(__float2bfloat16_rn(__low2float(o) + __low2float(v)),
                              __float2bfloat16_rn(__high2float(o) + __high2float(v)));
  });
}
#endif
inline int atomicSub(int* a, int v) { return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED); }
inline unsigned int atomicSub(unsigned int* a, unsigned int v) { return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED); }

inline int atomicExch(int* a, int v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); }
inline unsigned int atomicExch(unsigned int* a, unsigned int v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); }
inline unsigned long long atomicExch(unsigned long long* a, unsigned long long v) {
  return __atomic_exchange_n(a, v, __ATOMIC_RELAXED);
}
inline float atomicExch(float* a, float v) {
  return ::simt::detail::from_bits<float>(
      __atomic_exchange_n(reinterpret_cast<std::uint32_t*>(a), ::simt::detail::to_bits(v) & 0xffffffffu, __ATOMIC_RELAXED));
}

#define SIMT_ATOMIC_MINMAX(T)                                                                         \
  inline T atomicMin(T* a, T v) {                                                                     \
    return ::simt::detail::atomic_update_int(a, [v](T o) { return v < o ? v : o; });                \
  }                                                                                                   \
  inline T atomicMax(T* a, T v) {                                                                     \
    return ::simt::detail::atomic_update_int(a, [v](T o) { return v > o ? v : o; });                \
  }
SIMT_ATOMIC_MINMAX(int)
SIMT_ATOMIC_MINMAX(unsigned int)
SIMT_ATOMIC_MINMAX(unsigned long long)
SIMT_ATOMIC_MINMAX(long long)
#undef SIMT_ATOMIC_MINMAX

// ((old >= v) ? 0 : old + 1) and ((old == 0 || old > v) ? v : old - 1), as CUDA defines them.
inline unsigned int atomicInc(unsigned int* a, unsigned int v) {
  return ::simt::detail::atomic_update_int(a, [v](unsigned o) { return o >= v ? 0u : o + 1; });
}
inline unsigned int atomicDec(unsigned int* a, unsigned int v) {
  return ::simt::detail::atomic_update_int(a, [v](unsigned o) { return (o == 0 || o > v) ? v : o - 1; });
}

#define SIMT_ATOMIC_CAS(T)                                                                           \
  inline T atomicCAS(T* a, T compare, T v) {                                                         \
    __atomic_compare_exchange_n(a, &compare, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);          \
    return compare; /* the old value, whether or not the swap happened */                            \
  }
SIMT_ATOMIC_CAS(int)
SIMT_ATOMIC_CAS(unsigned int)
SIMT_ATOMIC_CAS(unsigned long long)
SIMT_ATOMIC_CAS(unsigned short)
#undef SIMT_ATOMIC_CAS

#define SIMT_ATOMIC_BITS(T)                                                                                   \
  inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_RELAXED); }                        \
  inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_RELAXED); }                          \
  inline T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_RELAXED); }
SIMT_ATOMIC_BITS(int)
SIMT_ATOMIC_BITS(unsigned int)
SIMT_ATOMIC_BITS(unsigned long long)
#undef SIMT_ATOMIC_BITS

// ---- asynchronous copies (cuda/async_copy.cuh on the emulator) -------------------------------
// What cp.async / __pipeline_memcpy_async promise, taken strictly: the copy lands at some time
// between the issue and the wait that covers its commit group. Here it lands at the wait, and
// from the issue until then the destination holds 0xFF bytes (NaN for every floating type), so
// a read before the wait, or before the barrier that publishes another thread's copy, sees
// poison instead of the data a fast GPU might have delivered. Both the poisoning and the copy
// are this thread's writes, compiled into the kernel's unit, so the race detector sees them.
namespace simt::detail {
[[noreturn]] void async_copy_error(const char* what);
// The bookkeeping, in simt.cpp: compiled without the race detector's instrumentation, since the
// pending list is the emulator's, not the kernel's memory. async_due moves the copies a wait
// completes to the thread's due list and returns how many; async_due_copy(i) returns one.
void async_push(const AsyncCopy& c);
void async_commit();
std::size_t async_due(unsigned newest_pending);
AsyncCopy async_due_copy(std::size_t i);

inline void memcpy_async(void* dst, const void* src, unsigned bytes, unsigned zfill, const char* file, int line) {
  if (bytes != 4 && bytes != 8 && bytes != 16) async_copy_error("memcpy_async: size must be 4, 8 or 16 bytes");
  if (zfill > bytes) async_copy_error("memcpy_async: zfill exceeds the size");
  check_aligned(dst, bytes, "memcpy_async destination", file, line);
  if (zfill < bytes) check_aligned(src, bytes, "memcpy_async source", file, line);
  unsigned char* d = static_cast<unsigned char*>(dst);
  for (unsigned i = 0; i < bytes; ++i) d[i] = 0xFF;
  async_push(AsyncCopy{d, static_cast<const unsigned char*>(src), bytes, zfill, 0});
}

// Completes every copy of the groups committed before the newest `newest_pending` ones.
inline void async_wait_prior(unsigned newest_pending) {
  const std::size_t n = async_due(newest_pending);
  for (std::size_t i = 0; i < n; ++i) {
    const AsyncCopy c = async_due_copy(i);
    for (unsigned b = 0; b < c.bytes - c.zfill; ++b) c.dst[b] = c.src[b];
    for (unsigned b = c.bytes - c.zfill; b < c.bytes; ++b) c.dst[b] = 0;
  }
}
}  // namespace simt::detail

// ---- wmma's emulator side (the nvcuda::wmma API is simt_wmma.h) -----------------------------
namespace simt::detail {

// The fragment kinds the emulator models, for the seeded layouts.
enum class WmmaKind : int { AHalf, BHalf, ABf16, BBf16, ATf32, BTf32, Acc16, Acc8 };

// Matrix element (0 .. total-1, row-major over the tile) that slot (lane, i) of a fragment of
// `kind` with `per_lane` elements holds, for the current seed (simt.cpp).
const std::uint16_t* wmma_layout(WmmaKind kind, int per_lane, int total);

// mma_sync's meeting: lane values in, D out (simt.cpp). a, b: this lane's A and B elements as
// float; c: its C elements; d: where its D elements go.
struct WmmaArgs {
  const float* a;
  const float* b;
  const float* c;
  float* d;
  int m, n, k, na, nb, nc;
  WmmaKind ka, kb, kc;
};
void wmma_mma(const char* file, int line, WmmaArgs& args);

inline float tf32_truncate(float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, 4);
  u &= 0xFFFFE000u;
  std::memcpy(&v, &u, 4);
  return v;
}

}  // namespace simt::detail

// ---- loads and math ---------------------------------------------------------------------------
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
template <typename T>
inline T __ldcg(const T* p) {
  return *p;
}
template <typename T>
inline T __ldcs(const T* p) {
  return *p;
}
template <typename T>
inline void __stcg(T* p, T v) {
  *p = v;
}
template <typename T>
inline void __stcs(T* p, T v) {
  *p = v;
}

// min / max as CUDA's math headers declare them for device code (the mixed signed/unsigned forms
// return the unsigned type; float with double gives double).
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned int min(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int min(int a, unsigned int b) { return min(static_cast<unsigned>(a), b); }
inline unsigned int min(unsigned int a, int b) { return min(a, static_cast<unsigned>(b)); }
inline long min(long a, long b) { return a < b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long min(long a, unsigned long b) { return min(static_cast<unsigned long>(a), b); }
inline unsigned long min(unsigned long a, long b) { return min(a, static_cast<unsigned long>(b)); }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long min(long long a, unsigned long long b) { return min(static_cast<unsigned long long>(a), b); }
inline unsigned long long min(unsigned long long a, long long b) { return min(a, static_cast<unsigned long long>(b)); }
inline float min(float a, float b) { return fminf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double min(float a, double b) { return fmin(static_cast<double>(a), b); }
inline double min(double a, float b) { return fmin(a, static_cast<double>(b)); }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned int max(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline unsigned int max(int a, unsigned int b) { return max(static_cast<unsigned>(a), b); }
inline unsigned int max(unsigned int a, int b) { return max(a, static_cast<unsigned>(b)); }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline unsigned long max(long a, unsigned long b) { return max(static_cast<unsigned long>(a), b); }
inline unsigned long max(unsigned long a, long b) { return max(a, static_cast<unsigned long>(b)); }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline unsigned long long max(long long a, unsigned long long b) { return max(static_cast<unsigned long long>(a), b); }
inline unsigned long long max(unsigned long long a, long long b) { return max(a, static_cast<unsigned long long>(b)); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double max(float a, double b) { return fmax(static_cast<double>(a), b); }
inline double max(double a, float b) { return fmax(a, static_cast<double>(b)); }
inline unsigned int umin(unsigned int a, unsigned int b) { return a < b ? a : b; }
inline unsigned int umax(unsigned int a, unsigned int b) { return a > b ? a : b; }
inline long long llmin(long long a, long long b) { return a < b ? a : b; }
inline long long llmax(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long ullmin(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long ullmax(unsigned long long a, unsigned long long b) { return a > b ? a : b; }

// Intrinsics: the fast-math ones are computed exactly here (the GPU's are within a few ulp).
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.0f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }  // NaN -> 0
inline int __float_as_int(float x) { return ::simt::detail::from_bits<int>(::simt::detail::to_bits(x)); }
inline unsigned int __float_as_uint(float x) { return ::simt::detail::from_bits<unsigned>(::simt::detail::to_bits(x)); }
inline float __int_as_float(int x) { return ::simt::detail::from_bits<float>(::simt::detail::to_bits(x)); }
inline float __uint_as_float(unsigned int x) { return ::simt::detail::from_bits<float>(x); }
inline long long __double_as_longlong(double x) { return ::simt::detail::from_bits<long long>(::simt::detail::to_bits(x)); }
inline double __longlong_as_double(long long x) { return ::simt::detail::from_bits<double>(::simt::detail::to_bits(x)); }
inline int __float2int_rn(float x) { return static_cast<int>(nearbyintf(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_rd(float x) { return static_cast<int>(floorf(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(ceilf(x)); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned int __brev(unsigned int x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  return __builtin_bswap32(x);
}
inline int __mul24(int a, int b) {
  return static_cast<int>((static_cast<long long>(a) << 40 >> 40) * (static_cast<long long>(b) << 40 >> 40));
}
inline unsigned int __umul24(unsigned int a, unsigned int b) { return (a & 0xffffffu) * (b & 0xffffffu); }
inline int __mulhi(int a, int b) { return static_cast<int>((static_cast<long long>(a) * b) >> 32); }
inline unsigned int __umulhi(unsigned int a, unsigned int b) {
  return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline long long __mul64hi(long long a, long long b) { return static_cast<long long>((static_cast<__int128>(a) * b) >> 64); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}

#if CK_HAVE_HALF
#include "sim/simt_wmma.h"  // nvcuda::wmma on the emulator
#endif
