// Asynchronous global -> shared copies (sm_80's cp.async) for the multistage pipelines of the
// implicit-GEMM convolutions, through CUDA's __pipeline_* primitives on the GPU and the
// emulator's model of them (csrc/sim/simt.h: the copy lands at the wait, the destination holds
// poison until then). The pattern: issue a stage's copies, commit them as one group, and before
// reading a stage wait until at most kStages - 2 younger groups are in flight, then barrier (a
// wait covers only this thread's copies; the barrier publishes the others').
#pragma once
#include "cuda/runtime.h"

#if defined(__CUDACC__)
#include <cuda_pipeline_primitives.h>
#endif

namespace convkit::cuda {

// Copies kBytes (4, 8 or 16; both addresses aligned to it) from global `src` to shared `dst`,
// or writes kBytes of zeros when `valid` is false (src is then not read, but must still be a
// pointer into the operand: the caller passes its base).
template <int kBytes>
__device__ __forceinline__ void cp_async(void* dst, const void* src, bool valid) {
  static_assert(kBytes == 4 || kBytes == 8 || kBytes == 16, "cp.async moves 4, 8 or 16 bytes");
#if defined(__CUDACC__)
  __pipeline_memcpy_async(dst, src, kBytes, valid ? 0 : kBytes);
#else
  ::simt::detail::memcpy_async(dst, src, kBytes, valid ? 0u : kBytes, __FILE__, __LINE__);
#endif
}

// Closes the group of copies issued since the last commit (an empty group is fine).
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDACC__)
  __pipeline_commit();
#else
  ::simt::detail::async_commit();
#endif
}

// Waits until at most kPending of this thread's most recently committed groups are incomplete.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDACC__)
  __pipeline_wait_prior(kPending);
#else
  ::simt::detail::async_wait_prior(kPending);
#endif
}

}  // namespace convkit::cuda
