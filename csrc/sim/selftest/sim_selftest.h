// Launchers of the emulator self-test kernels (csrc/sim/selftest/sim_selftest.cu): small
// kernels that exercise barriers, shared memory, warp operations, atomics and launch limits, run
// by tests/kernels/test_sim.py on the emulator (convkit._cudasim) and on a GPU (convkit._cuda) to show
// the two agree. Plain C++ (no CUDA header): pointers are device pointers (host under the emulator).
#pragma once
#include <cstddef>
#include <cstdint>

#include "cuda/stream.h"

namespace convkit::cuda::selftest {

// Element types of warp_shuffle; F16 / BF16 only where has_half().
enum class WarpType { I32, U32, I64, U64, F32, F64, F16, BF16 };
enum class WarpShfl { Idx, Up, Down, Xor };
enum class WarpVote { Ballot, Any, All, SyncWarp, MatchAny, ReduceAdd, ReduceMin, ReduceMax };

bool has_half();

// block_sums[b] = sum of x[b * threads .. (b + 1) * threads) (zero past n): a shared-memory tree
// reduction with a __syncthreads() per level. threads: a power of two <= 1024.
void block_sum(const float* x, float* block_sums, int n, int threads, int device, StreamHandle stream);

// C[M, N] = A[M, K] B[K, N] (row-major float32) with 16 x 16 shared-memory tiles: a realistic
// barrier-heavy kernel (tests and the emulator's speed measurement).
void tiled_matmul(const float* A, const float* B, float* C, int M, int N, int K, int device, StreamHandle stream);

// One block of `threads` threads: smem[t] = 3 t + 1, then out[t] = smem[(t + 1) % threads], with
// a __syncthreads() between the two when with_barrier; without it the result depends on the
// schedule (and comes out wrong under the emulator, whose unwritten shared memory reads as -1).
void neighbor_exchange(int* out, int threads, bool with_barrier, int device, StreamHandle stream);
// WMMA (sim_selftest.cu's wmma_gemm_kernel): one warp, d[16][16] = a[16][K] x b[K][16] + c; at
// and bt the transposes (for column-major fragments); type "float16" / "bfloat16" (a, b in it)
// or "tf32" (float); mode 0 as loaded, 1 tf32 rounded by __float_to_tf32, 2 A's fragment filled
// by an assumed layout.
void wmma_gemm(const char* type, bool a_col, bool b_col, int mode, const void* a, const void* at, const void* b,
               const void* bt, const float* c, float* d, int K, int device, StreamHandle stream);
// cp.async's semantics (sim_selftest.cu's async_copy_kernel): x 128 floats, out 256; mode 0, 1, 2.
void async_copy(const float* x, float* out, int mode, int device, StreamHandle stream);

// blocks x threads threads, each block with a static int[threads] and `threads` floats of dynamic
// shared memory: unwritten_i / unwritten_f get what each thread reads before anything is
// written (-1 / NaN under the emulator, anything on a GPU), out[b, t] = b * 1000 + (t + 1) % threads
// + 2 * b read back from the two arrays after a barrier (each block sees only its own writes).
void shared_per_block(int* out, int* unwritten_i, float* unwritten_f, int blocks, int threads, int device,
                      StreamHandle stream);

// out[b, t, 0..11] = threadIdx.xyz, blockIdx.xyz, blockDim.xyz, gridDim.xyz, for every thread of
// a grid x block launch (b: linear block index, x fastest; t: linear thread index).
void thread_ids(int* out, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, int device,
                StreamHandle stream);

// One block of `threads` threads: out[t] = shuffle(in[t]) with mask, arg (srcLane / delta /
// laneMask) and width; lanes outside mask return early and leave out[t] as it was.
void warp_shuffle(WarpType type, WarpShfl op, const void* in, void* out, int threads, unsigned mask, int arg,
                  int width, int device, StreamHandle stream);

// One block: out[t] = vote / match / reduce over in[] (int32) of the lanes in mask; SyncWarp
// writes in[t] after __syncwarp(mask). Lanes outside mask leave out[t] as it was.
void warp_vote(WarpVote op, const int* in, int* out, int threads, unsigned mask, int device, StreamHandle stream);

// __syncthreads_count / _and / _or of pred[t] != 0 over one block: out[t, 0..2].
void barrier_reductions(const int* pred, int* out, int threads, int device, StreamHandle stream);

// Every thread of blocks x threads does one of each atomic on slots (8 bytes each) of `slots`
// (16 slots, see sim_selftest.cu for the table; the caller zero-fills, except slot 13 = ~0).
void atomics(void* slots, int blocks, int threads, int device, StreamHandle stream);

// Launches a kernel that writes 1 to out[0] (and touches the first and last byte of its dynamic
// shared memory) with the given configuration; `optin` first raises the kernel's dynamic shared
// memory limit to dynamic_smem (a separate kernel, so the opt-in never leaks into other cases).
void launch_config(int* out, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   std::size_t dynamic_smem, bool optin, int device, StreamHandle stream);

// A kernel with 40 KiB of static shared memory launched with dynamic_smem more (2 blocks of 64
// threads; out[0] = 1 when both arrays hold what was written). optin 0: no opt-in (static +
// dynamic must fit 48 KiB); 1: the kernel opted in to 100 KiB of dynamic shared memory; 2: to
// 190 KiB, which with the static 40 KiB exceeds the device's 227 KiB (a GPU refuses the opt-in,
// the emulator the launch).
void static_plus_dynamic_shared(int* out, std::size_t dynamic_smem, int optin, int device, StreamHandle stream);

// ---- kernels with a bug: errors under the emulator (never run these on a GPU) ----------------

// In the last of `blocks` blocks (out: blocks x threads): mode 0: threads >= threads / 2 return,
// the rest __syncthreads(); mode 1: even and odd threads wait at two different __syncthreads().
void barrier_divergence(int* out, int blocks, int threads, int mode, int device, StreamHandle stream);

// mode 0: lanes 16..31 exit while 0..15 __shfl_sync with the full mask; mode 1: lanes 16..31 wait
// at __syncthreads() instead; mode 2: 48 threads, warp 1 shuffles with the full mask (it has 16
// lanes); mode 3: a lane calls with a mask that doesn't include it.
void warp_deadlock(int* out, int mode, int device, StreamHandle stream);

// load16 of (float4*)(x + offset_floats): misaligned (a GPU faults) unless offset_floats % 4 == 0.
void misaligned_load16(const float* x, float* y, int offset_floats, int device, StreamHandle stream);

// One block of 64 threads: a shared int[64], out[t] = a[t + past]; past = 1 reads one element
// past the array (AddressSanitizer reports it in the ASan build of the emulator).
void shared_out_of_bounds(int* out, int past, int device, StreamHandle stream);

}  // namespace convkit::cuda::selftest
