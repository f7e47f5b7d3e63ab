// Seeded bugs (issue 15): one small broken kernel per class of bug a GPU hides or faults on, each
// a template whose kClean form is the same kernel done right. The offending line of each carries
// `// BUG(<name>)`; tests/kernels/test_racecheck.py reads these markers to find the line the
// emulator's report must name. (g), (h) and (i) are errors of the ordinary emulator; the races
// (a)-(e) and the uninitialised read (f) are reported by its racecheck build only. Shared arrays
// the buggy forms race on are written (and a barrier passed) first wherever the bug is a race, so
// the only report can be the race, not an uninitialised read.
#include "sim/selftest/sim_selftest_bugs.h"

#include <cstring>
#include <string>

#include "cuda/runtime.h"

namespace convkit::cuda::selftest {

// ---------------------------------------------------------------------------------------------
// GPU kernels (the buggy forms: emulator only)
// ---------------------------------------------------------------------------------------------

constexpr int kTile = 16;
constexpr int kGemmN = 32;  // C[32, 32] = A[32, 32] B[32, 32]: 2 x 2 blocks, 2 k-tiles each

// (a) and (e). kMissing 0: clean; 1: no barrier between loading a tile and using it (RAW);
// 2: no barrier between using a tile and loading the next over it (WAR).
template <int kMissing>
__global__ void bug_gemm_kernel(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C) {
  CK_SHARED(float, a_tile, [kTile][kTile]);
  CK_SHARED(float, b_tile, [kTile][kTile]);
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row = blockIdx.y * kTile + ty, col = blockIdx.x * kTile + tx;
  a_tile[ty][tx] = 0.0f;
  b_tile[ty][tx] = 0.0f;
  __syncthreads();
  float acc = 0.0f;
  for (int k0 = 0; k0 < kGemmN; k0 += kTile) {
    const float a = A[row * kGemmN + k0 + tx], b = B[(k0 + ty) * kGemmN + col];
    a_tile[ty][tx] = a; b_tile[ty][tx] = b;  // BUG(gemm_war): overwrites what others still read
    if (kMissing != 1) __syncthreads();
    for (int k = 0; k < kTile; ++k) acc = fmaf(a_tile[ty][k], b_tile[k][tx], acc);  // BUG(gemm_raw)
    if (kMissing != 2) __syncthreads();
  }
  C[row * kGemmN + col] = acc;
}

// (b) One block of 256: out[0] = sum of x[0..256).
template <bool kClean>
__global__ void bug_shared_rmw_kernel(const float* __restrict__ x, float* __restrict__ out) {
  CK_SHARED(float, sum, [1]);
  const int t = threadIdx.x;
  if (t == 0) sum[0] = 0.0f;
  __syncthreads();
  if (kClean)
    atomicAdd(&sum[0], x[t]);
  else
    sum[0] += x[t];  // BUG(shared_rmw)
  __syncthreads();
  if (t == 0) out[0] = sum[0];
}

// (c) One warp: out[lane] = x[(lane + 1) % 32] through shared memory.
template <bool kClean>
__global__ void bug_warp_exchange_kernel(const float* __restrict__ x, float* __restrict__ out) {
  CK_SHARED(float, vals, [32]);
  const int lane = threadIdx.x;
  vals[lane] = 0.0f;
  __syncthreads();
  vals[lane] = x[lane];
  if (kClean) __syncwarp();
  out[lane] = vals[(lane + 1) % 32];  // BUG(warp_exchange)
}

// (d) Two blocks of 32: out[b * 32 + t] = (b + 1) x[t]; the buggy form forgets the block's offset.
template <bool kClean>
__global__ void bug_global_write_kernel(const float* __restrict__ x, float* __restrict__ out) {
  const int t = threadIdx.x, b = blockIdx.x;
  out[(kClean ? b * 32 : 0) + t] = static_cast<float>(b + 1) * x[t];  // BUG(global_write)
}

// (f) One block of 64: out[t] = x[t] + x[t + 1], x[64] taken as 0 (the clean form writes it).
template <bool kClean>
__global__ void bug_uninit_shared_kernel(const float* __restrict__ x, float* __restrict__ out) {
  CK_SHARED(float, vals, [65]);
  const int t = threadIdx.x;
  vals[t] = x[t];
  if (kClean && t == 0) vals[64] = 0.0f;
  __syncthreads();
  out[t] = vals[t] + vals[t + 1];  // BUG(uninit_shared): nothing wrote vals[64]
}

// (g) One block of 16: out[4 t + i] = 2 x[4 t + i] through a float4 load of shared memory. A plain
// float array is only 4-byte aligned on a GPU; the clean form's array is declared 16-byte aligned.
struct alignas(16) AlignedFloats {
  float v[64];
};
template <bool kClean>
__global__ void bug_misaligned_shared_kernel(const float* __restrict__ x, float* __restrict__ out) {
  CK_SHARED(float, plain, [64]);
  CK_SHARED(AlignedFloats, aligned, );
  float* vals = kClean ? aligned.v : plain;
  const int t = threadIdx.x;
  for (int i = 0; i < 4; ++i) vals[4 * t + i] = x[4 * t + i];
  __syncthreads();
  const float4 v = load16(reinterpret_cast<const float4*>(vals) + t);  // BUG(misaligned_shared)
  out[4 * t + 0] = 2.0f * v.x;
  out[4 * t + 1] = 2.0f * v.y;
  out[4 * t + 2] = 2.0f * v.z;
  out[4 * t + 3] = 2.0f * v.w;
}

// (h) One warp: lanes 0..15 shuffle down by one within mask 0xffff; with width 32 lane 15 reads
// lane 16, outside the mask; the clean form's width 16 makes lane 15 read its own value.
// Lanes 16..31 copy x.
template <bool kClean>
__global__ void bug_shuffle_outside_mask_kernel(const float* __restrict__ x, float* __restrict__ out) {
  const int lane = threadIdx.x;
  if (lane >= 16) {
    out[lane] = x[lane];
    return;
  }
  out[lane] = __shfl_down_sync(0x0000ffffu, x[lane], 1, kClean ? 16 : 32);  // BUG(shuffle_outside_mask)
}

// (i) One block of 64: out[t] = 2 x[t] after a barrier that threads 32..63 skip.
template <bool kClean>
__global__ void bug_divergent_barrier_kernel(const float* __restrict__ x, float* __restrict__ out) {
  const int t = threadIdx.x;
  if (kClean || t < 32) __syncthreads();  // BUG(divergent_barrier)
  out[t] = 2.0f * x[t];
}

// ---------------------------------------------------------------------------------------------
// kernel launchers
// ---------------------------------------------------------------------------------------------

namespace {

constexpr const char* kBugNames[] = {"gemm_raw",          "shared_rmw",           "warp_exchange",
                                     "global_write",      "gemm_war",             "uninit_shared",
                                     "misaligned_shared", "shuffle_outside_mask", "divergent_barrier"};
constexpr int kNumBugs = static_cast<int>(sizeof(kBugNames) / sizeof(kBugNames[0]));

// The clean or the buggy instantiation of a kernel, named "<name><clean>" or "<name><bug>".
void launch_form(const char* name, bool clean, void (*good)(const float*, float*), void (*bad)(const float*, float*),
                 dim3 grid, dim3 block, const float* x, float* out, StreamHandle stream) {
  const std::string full = std::string(name) + (clean ? "<clean>" : "<bug>");
  launch(full.c_str(), clean ? good : bad, grid, block, 0, stream, x, out);
}

}  // namespace

const char* seeded_bug_name(SeededBug bug) {
  const int i = static_cast<int>(bug);
  return i >= 0 && i < kNumBugs ? kBugNames[i] : nullptr;
}

SeededBug parse_seeded_bug(const char* name) {
  for (int i = 0; i < kNumBugs; ++i)
    if (std::strcmp(name, kBugNames[i]) == 0) return static_cast<SeededBug>(i);
  throw Error(std::string("seeded_bug: unknown bug class '") + name + "'");
}

void seeded_bug(SeededBug bug, bool clean, const float* x, float* out, int device, StreamHandle stream) {
  DeviceGuard guard(device);
  const dim3 one(1);
  switch (bug) {
    case SeededBug::GemmRaw:
    case SeededBug::GemmWar: {
      const dim3 grid(kGemmN / kTile, kGemmN / kTile), block(kTile, kTile);
      float* C = out;
      const float* A = x;
      const float* B = x + kGemmN * kGemmN;
      if (clean)
        return launch("bug_gemm_kernel<clean>", bug_gemm_kernel<0>, grid, block, 0, stream, A, B, C);
      if (bug == SeededBug::GemmRaw)
        return launch("bug_gemm_kernel<no barrier after the loads>", bug_gemm_kernel<1>, grid, block, 0, stream, A, B,
                      C);
      return launch("bug_gemm_kernel<no barrier after the reads>", bug_gemm_kernel<2>, grid, block, 0, stream, A, B,
                    C);
    }
    case SeededBug::SharedRmw:
      return launch_form("bug_shared_rmw_kernel", clean, bug_shared_rmw_kernel<true>, bug_shared_rmw_kernel<false>, one,
                         dim3(256), x, out, stream);
    case SeededBug::WarpExchange:
      return launch_form("bug_warp_exchange_kernel", clean, bug_warp_exchange_kernel<true>,
                         bug_warp_exchange_kernel<false>, one, dim3(32), x, out, stream);
    case SeededBug::GlobalWrite:
      return launch_form("bug_global_write_kernel", clean, bug_global_write_kernel<true>, bug_global_write_kernel<false>,
                         dim3(2), dim3(32), x, out, stream);
    case SeededBug::UninitShared:
      return launch_form("bug_uninit_shared_kernel", clean, bug_uninit_shared_kernel<true>,
                         bug_uninit_shared_kernel<false>, one, dim3(64), x, out, stream);
    case SeededBug::MisalignedShared:
      return launch_form("bug_misaligned_shared_kernel", clean, bug_misaligned_shared_kernel<true>,
                         bug_misaligned_shared_kernel<false>, one, dim3(16), x, out, stream);
    case SeededBug::ShuffleOutsideMask:
      return launch_form("bug_shuffle_outside_mask_kernel", clean, bug_shuffle_outside_mask_kernel<true>,
                         bug_shuffle_outside_mask_kernel<false>, one, dim3(32), x, out, stream);
    case SeededBug::DivergentBarrier:
      return launch_form("bug_divergent_barrier_kernel", clean, bug_divergent_barrier_kernel<true>,
                         bug_divergent_barrier_kernel<false>, one, dim3(64), x, out, stream);
  }
  throw Error("seeded_bug: unknown bug class " + std::to_string(static_cast<int>(bug)));
}

}  // namespace convkit::cuda::selftest
