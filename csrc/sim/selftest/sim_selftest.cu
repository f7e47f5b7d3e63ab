// Self-test kernels of the CUDA emulator: barriers, per-block shared memory, every warp operation
// (widths < 32, partial masks), atomics across blocks, launch limits, and deliberately broken
// kernels (barrier divergence, warp deadlock, misaligned load16, missing barrier, shared-memory
// overrun) the emulator must catch. They compile under nvcc too, so tests/kernels/test_sim.py can show
// the emulator agrees with a GPU on the well-defined ones.
#include "sim/selftest/sim_selftest.h"

#include <string>
#include <type_traits>

#include "cuda/async_copy.cuh"
#include "cuda/runtime.h"
#if defined(__CUDACC__) && CK_HAVE_HALF
#include <mma.h>
#endif

namespace convkit::cuda::selftest {

// ---------------------------------------------------------------------------------------------
// GPU kernels
// ---------------------------------------------------------------------------------------------

// Tree reduction of one block's slice of x in shared memory: a barrier after every level.
__global__ void block_sum_kernel(const float* __restrict__ x, float* __restrict__ block_sums, int n) {
  CK_SHARED(float, partial, [1024]);
  const int t = threadIdx.x;
  const long long i = static_cast<long long>(blockIdx.x) * blockDim.x + t;
  partial[t] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (t < half) partial[t] += partial[t + half];
    __syncthreads();
  }
  if (t == 0) block_sums[blockIdx.x] = partial[0];
}

// C[M, N] = A[M, K] B[K, N], row-major: a kTile x kTile output tile per block, one element per
// thread, A and B staged through shared memory a tile at a time (two barriers per tile).
template <int kTile>
__global__ void tiled_matmul_kernel(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ C,
                                    int M, int N, int K) {
  CK_SHARED(float, a_tile, [kTile][kTile]);
  CK_SHARED(float, b_tile, [kTile][kTile + 1]);  // +1: no bank conflicts on the column reads
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row = blockIdx.y * kTile + ty, col = blockIdx.x * kTile + tx;  // (row, col) of C
  float acc = 0.0f;
  for (int k0 = 0; k0 < K; k0 += kTile) {
    a_tile[ty][tx] = (row < M && k0 + tx < K) ? A[static_cast<long long>(row) * K + k0 + tx] : 0.0f;
    b_tile[ty][tx] = (col < N && k0 + ty < K) ? B[static_cast<long long>(k0 + ty) * N + col] : 0.0f;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTile; ++k) acc = fmaf(a_tile[ty][k], b_tile[k][tx], acc);
    __syncthreads();
  }
  if (row < M && col < N) C[static_cast<long long>(row) * N + col] = acc;
}

// Each thread reads the element its right neighbour wrote: needs the barrier in between.
template <bool kBarrier>
__global__ void neighbor_exchange_kernel(int* __restrict__ out) {
  CK_SHARED(int, vals, [1024]);
  const int t = threadIdx.x;
  vals[t] = 3 * t + 1;
  if (kBarrier) __syncthreads();
  out[t] = vals[(t + 1) % blockDim.x];
}

// cp.async (cuda/async_copy.cuh), one block of 64 threads, two commit groups: thread t copies
// x[t] into a[t] (group 0) and x[64 + t] into b[t] (group 1), every 4th thread's second copy a
// zero fill. out[4 t + 0..3] by mode:
//   0 (clean)  wait for all, barrier: a[t], b[t], a[t + 1], b[t + 1] (neighbours' copies)
//   1 (early)  a[t] and b[t] read before any wait, then waited for: a[t], b[t], 0, 0
//   2 (prior)  wait until one group is pending: a[t] (landed), b[t] (not yet), then all: 0, b[t]
template <int kMode>
__global__ void async_copy_kernel(const float* __restrict__ x, float* __restrict__ out) {
  CK_SHARED(float, a, [64]);
  CK_SHARED(float, b, [64]);
  const int t = threadIdx.x;
  cp_async<4>(&a[t], x + t, true);
  cp_async_commit();
  cp_async<4>(&b[t], x + 64 + t, t % 4 != 0);
  cp_async_commit();
  float* o = out + 4 * t;
  if (kMode == 0) {
    cp_async_wait<0>();
    __syncthreads();
    o[0] = a[t], o[1] = b[t], o[2] = a[(t + 1) % 64], o[3] = b[(t + 1) % 64];
  } else if (kMode == 1) {
    o[0] = a[t], o[1] = b[t];
    cp_async_wait<0>();
    o[2] = 0.0f, o[3] = 0.0f;
  } else {
    cp_async_wait<1>();
    o[0] = a[t], o[1] = b[t];
    cp_async_wait<0>();
    o[2] = 0.0f, o[3] = b[t];
  }
}


#if CK_HAVE_HALF
// WMMA (nvcuda::wmma; the emulator's simt_wmma.h): one warp computes D[16][16] = A[16][K] x
// B[K][16] + C in steps of kK. A and B come row-major (a, b) and transposed (at: K x 16, bt:
// 16 x K) for the column-major fragment layouts. kMode 0: as loaded; 1: tf32 inputs rounded by
// __float_to_tf32 after the load; 2: A's fragment written element by element as if slot i of
// lane l held A[l / 2][(l % 2) * 8 + i] (an assumed layout: wrong, layout-dependent results).
template <typename T, typename E, int kK, typename LA, typename LB, int kMode>
__global__ void wmma_gemm_kernel(const E* a, const E* at, const E* b, const E* bt, const float* c, float* d, int K) {
  using namespace nvcuda;
  wmma::fragment<wmma::matrix_a, 16, 16, kK, T, LA> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, kK, T, LB> fb;
  wmma::fragment<wmma::accumulator, 16, 16, kK, float> acc;
  constexpr bool a_col = std::is_same<LA, wmma::col_major>::value, b_col = std::is_same<LB, wmma::col_major>::value;
  wmma::load_matrix_sync(acc, c, 16, wmma::mem_row_major);
  for (int k0 = 0; k0 < K; k0 += kK) {
    wmma::load_matrix_sync(fa, a_col ? at + k0 * 16 : a + k0, a_col ? 16 : K);
    wmma::load_matrix_sync(fb, b_col ? bt + k0 : b + k0 * 16, b_col ? K : 16);
    if (kMode == 1) {
      for (int i = 0; i < fa.num_elements; ++i) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
      for (int i = 0; i < fb.num_elements; ++i) fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
    }
    if (kMode == 2) {
      const int lane = threadIdx.x % 32;
      for (int i = 0; i < fa.num_elements; ++i) fa.x[i] = a[(lane / 2) * K + k0 + (lane % 2) * 8 + i % 8];
    }
    wmma::mma_sync(acc, fa, fb, acc);
  }
  wmma::store_matrix_sync(d, acc, 16, wmma::mem_row_major);
}
#endif

__global__ void shared_per_block_kernel(int* __restrict__ out, int* __restrict__ unwritten_i,
                                        float* __restrict__ unwritten_f) {
  CK_SHARED(int, ints, [1024]);
  CK_DYNAMIC_SHARED(float, floats);
  const int t = threadIdx.x, b = blockIdx.x, T = blockDim.x;
  const int g = b * T + t;  // (block, thread) -> element of the outputs
  unwritten_i[g] = ints[t];
  unwritten_f[g] = floats[t];
  __syncthreads();
  ints[t] = b * 1000 + t;
  floats[t] = 2.0f * b;
  __syncthreads();
  out[g] = ints[(t + 1) % T] + static_cast<int>(floats[(t + 1) % T]);
}

__global__ void thread_ids_kernel(int* __restrict__ out) {
  const long long b = (static_cast<long long>(blockIdx.z) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  const int t = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
  int* o = out + (b * blockDim.x * blockDim.y * blockDim.z + t) * 12;
  o[0] = threadIdx.x, o[1] = threadIdx.y, o[2] = threadIdx.z;
  o[3] = blockIdx.x, o[4] = blockIdx.y, o[5] = blockIdx.z;
  o[6] = blockDim.x, o[7] = blockDim.y, o[8] = blockDim.z;
  o[9] = gridDim.x, o[10] = gridDim.y, o[11] = gridDim.z;
}

template <typename T>
__global__ void warp_shuffle_kernel(const T* __restrict__ in, T* __restrict__ out, int op, unsigned mask, int arg,
                                    int width) {
  const int t = threadIdx.x;
  if (!((mask >> (t & 31)) & 1u)) return;  // not a member of this warp's meeting
  const T v = in[t];
  T r;
  switch (op) {
    case 0: r = __shfl_sync(mask, v, arg, width); break;
    case 1: r = __shfl_up_sync(mask, v, static_cast<unsigned>(arg), width); break;
    case 2: r = __shfl_down_sync(mask, v, static_cast<unsigned>(arg), width); break;
    default: r = __shfl_xor_sync(mask, v, arg, width); break;
  }
  out[t] = r;
}

__global__ void warp_vote_kernel(const int* __restrict__ in, int* __restrict__ out, int op, unsigned mask) {
  const int t = threadIdx.x;
  if (!((mask >> (t % warpSize)) & 1u)) return;
  const int v = in[t];
  int r = 0;
  switch (op) {
    case 0: r = static_cast<int>(__ballot_sync(mask, v)); break;
    case 1: r = __any_sync(mask, v); break;
    case 2: r = __all_sync(mask, v); break;
    case 3:
      if (mask == 0xffffffffu)
        __syncwarp();
      else
        __syncwarp(mask);
      r = v;
      break;
    case 4: r = static_cast<int>(__match_any_sync(mask, v)); break;
    case 5: r = __reduce_add_sync(mask, v); break;
    case 6: r = __reduce_min_sync(mask, v); break;
    default: r = __reduce_max_sync(mask, v); break;
  }
  out[t] = r;
}

__global__ void barrier_reductions_kernel(const int* __restrict__ pred, int* __restrict__ out) {
  const int t = threadIdx.x;
  const int p = pred[t];
  const int count = __syncthreads_count(p);
  const int all = __syncthreads_and(p);
  const int any = __syncthreads_or(p);
  out[3 * t + 0] = count;
  out[3 * t + 1] = all;
  out[3 * t + 2] = any;
}

// Slot table of atomics_kernel (8 bytes a slot; gid: the global thread index):
//  0 int  add (gid % 7) - 3       1 uint add gid            2 ull add gid << 33
//  3 float add gid % 5           4 double add gid * 0.5     5 int sub gid % 3
//  6 int max gid * 7919 % 10007   7 int min -(gid * 31 % 1009)
//  8 ull add gid + 1 through an atomicCAS loop               9 uint or 1 << (gid % 32)
// 10 uint xor gid                11 uint atomicInc(1000)    12 long long max gid << 40
// 13 ull min (gid + 5) * 3 (caller sets ~0)
// 14 __half add 1 and 15 __nv_bfloat16 add 1, by thread 0 of each block (when has_half)
__global__ void atomics_kernel(unsigned char* __restrict__ slots) {
  const unsigned gid = blockIdx.x * blockDim.x + threadIdx.x;
  auto slot = [slots](int k) { return slots + 8 * k; };
  atomicAdd(reinterpret_cast<int*>(slot(0)), static_cast<int>(gid % 7) - 3);
  atomicAdd(reinterpret_cast<unsigned*>(slot(1)), gid);
  atomicAdd(reinterpret_cast<unsigned long long*>(slot(2)), static_cast<unsigned long long>(gid) << 33);
  atomicAdd(reinterpret_cast<float*>(slot(3)), static_cast<float>(gid % 5));
  atomicAdd(reinterpret_cast<double*>(slot(4)), gid * 0.5);
  atomicSub(reinterpret_cast<int*>(slot(5)), static_cast<int>(gid % 3));
  atomicMax(reinterpret_cast<int*>(slot(6)), static_cast<int>(gid * 7919u % 10007u));
  atomicMin(reinterpret_cast<int*>(slot(7)), -static_cast<int>(gid * 31u % 1009u));
  unsigned long long* cas = reinterpret_cast<unsigned long long*>(slot(8));
  unsigned long long seen = *cas, prev;
  do {
    prev = seen;
    seen = atomicCAS(cas, prev, prev + gid + 1);
  } while (seen != prev);
  atomicOr(reinterpret_cast<unsigned*>(slot(9)), 1u << (gid % 32));
  atomicXor(reinterpret_cast<unsigned*>(slot(10)), gid);
  atomicInc(reinterpret_cast<unsigned*>(slot(11)), 1000u);
  atomicMax(reinterpret_cast<long long*>(slot(12)), static_cast<long long>(gid) << 40);
  atomicMin(reinterpret_cast<unsigned long long*>(slot(13)), (gid + 5ull) * 3ull);
#if CK_HAVE_HALF
  if (threadIdx.x == 0) {
    atomicAdd(reinterpret_cast<__half*>(slot(14)), __float2half(1.0f));
    atomicAdd(reinterpret_cast<__nv_bfloat16*>(slot(15)), __float2bfloat16(1.0f));
  }
#endif
}

// Touches the first and last byte of the dynamic shared memory, so a launch the GPU accepts
// really has that much.
template <int kVariant>
__global__ void launch_config_kernel(int* __restrict__ out, unsigned long long smem_bytes) {
  CK_DYNAMIC_SHARED(unsigned char, smem);
  const bool first = threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0;
  if (first && smem_bytes > 0) {
    smem[0] = 1;
    smem[smem_bytes - 1] = 2;
  }
  __syncthreads();
  if (first && blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0)
    out[0] = smem_bytes > 0 ? smem[0] + smem[smem_bytes - 1] - 2 : 1;
}

// 40 KiB of static shared memory plus the launch's dynamic shared memory, first and last bytes
// of both touched. kVariant: a separate kernel per opt-in setting (an opt-in sticks to a kernel).
template <int kVariant>
__global__ void static_shared_kernel(int* __restrict__ out, unsigned long long dyn_bytes) {
  CK_SHARED(float, big, [10240]);
  CK_DYNAMIC_SHARED(unsigned char, smem);
  const int t = threadIdx.x;
  if (t == 0) {
    big[0] = 1.0f;
    big[10239] = 2.0f;
    if (dyn_bytes > 0) {
      smem[0] = 3;
      smem[dyn_bytes - 1] = 4;
    }
  }
  __syncthreads();
  if (t == 0 && blockIdx.x == 0)
    out[0] = big[0] == 1.0f && big[10239] == 2.0f && (dyn_bytes == 0 || (smem[0] == 3 && smem[dyn_bytes - 1] == 4));
}

// ---- broken kernels ----------------------------------------------------------------------------

// Only the last block of the grid has the bug; the others synchronize correctly.
__global__ void barrier_divergence_kernel(int* __restrict__ out, int mode) {
  const int t = threadIdx.x;
  if (blockIdx.x + 1 < gridDim.x) {
    __syncthreads();
  } else if (mode == 0) {
    if (t >= static_cast<int>(blockDim.x) / 2) return;  // bug: these threads skip the barrier
    __syncthreads();
  } else if (t % 2 == 0) {
    __syncthreads();  // bug: even and odd threads wait at different barriers
  } else {
    __syncthreads();
  }
  out[blockIdx.x * blockDim.x + t] = t;
}

__global__ void warp_deadlock_kernel(int* __restrict__ out, int mode) {
  const int t = threadIdx.x, lane = t & 31;
  int v = t;
  if (mode == 0) {
    if (lane >= 16) return;  // bug: the full mask names lanes that have left
    v = __shfl_down_sync(0xffffffffu, v, 1);
  } else if (mode == 1) {
    if (lane < 16)
      v = __shfl_down_sync(0xffffffffu, v, 1);  // bug: lanes 16..31 are at the barrier
    __syncthreads();
  } else if (mode == 2) {
    v = __shfl_xor_sync(0xffffffffu, v, 1);  // bug with 48 threads: warp 1 has 16 lanes
  } else {
    v = __shfl_sync(lane == 3 ? 0x1u : 0xffffffffu, v, 0);  // bug: lane 3's mask lacks lane 3
  }
  out[t] = v;
}

__global__ void misaligned_load16_kernel(const float* __restrict__ x, float* __restrict__ y, int offset) {
  if (threadIdx.x != 0) return;
  const float4 v = load16(reinterpret_cast<const float4*>(x + offset));
  store16(reinterpret_cast<float4*>(y), v);
}

__global__ void shared_out_of_bounds_kernel(int* __restrict__ out, int past) {
  CK_SHARED(int, vals, [64]);
  const int t = threadIdx.x;
  vals[t] = t;
  __syncthreads();
  out[t] = vals[t + past];  // past = 1: thread 63 reads one element past the array
}

// ---------------------------------------------------------------------------------------------
// kernel launchers
// ---------------------------------------------------------------------------------------------

bool has_half() { return CK_HAVE_HALF != 0; }

void block_sum(const float* x, float* block_sums, int n, int threads, int device, StreamHandle stream) {
  CK_CHECK(threads >= 1 && threads <= 1024 && (threads & (threads - 1)) == 0,
           "block_sum: threads must be a power of two in [1, 1024], got " + std::to_string(threads));
  DeviceGuard guard(device);
  if (n <= 0) return;
  const unsigned blocks = static_cast<unsigned>((n + threads - 1) / threads);
  launch("block_sum_kernel", block_sum_kernel, dim3(blocks), dim3(threads), 0, stream, x, block_sums, n);
}

void tiled_matmul(const float* A, const float* B, float* C, int M, int N, int K, int device, StreamHandle stream) {
  constexpr int kTile = 16;
  DeviceGuard guard(device);
  if (M <= 0 || N <= 0) return;
  launch("tiled_matmul_kernel", tiled_matmul_kernel<kTile>, dim3((N + kTile - 1) / kTile, (M + kTile - 1) / kTile),
         dim3(kTile, kTile), 0, stream, A, B, C, M, N, K);
}

void neighbor_exchange(int* out, int threads, bool with_barrier, int device, StreamHandle stream) {
  DeviceGuard guard(device);
  if (with_barrier)
    launch("neighbor_exchange_kernel<barrier>", neighbor_exchange_kernel<true>, dim3(1), dim3(threads), 0, stream, out);
  else
    launch("neighbor_exchange_kernel<no barrier>", neighbor_exchange_kernel<false>, dim3(1), dim3(threads), 0, stream,
           out);
}

void async_copy(const float* x, float* out, int mode, int device, StreamHandle stream) {
  DeviceGuard guard(device);
  switch (mode) {
    case 0:
      launch("async_copy_kernel<clean>", async_copy_kernel<0>, dim3(1), dim3(64), 0, stream, x, out);
      return;
    case 1:
      launch("async_copy_kernel<early>", async_copy_kernel<1>, dim3(1), dim3(64), 0, stream, x, out);
      return;
    case 2:
      launch("async_copy_kernel<prior>", async_copy_kernel<2>, dim3(1), dim3(64), 0, stream, x, out);
      return;
  }
  throw Error("async_copy: mode must be 0, 1 or 2, got " + std::to_string(mode));
}

void wmma_gemm(const char* type, bool a_col, bool b_col, int mode, const void* a, const void* at, const void* b,
               const void* bt, const float* c, float* d, int K, int device, StreamHandle stream) {
#if CK_HAVE_HALF
  DeviceGuard guard(device);
  const std::string t(type);
  const int step = t == "tf32" ? 8 : 16;
  if (K <= 0 || K % step != 0) throw Error("wmma_gemm: K must be a positive multiple of " + std::to_string(step));
  if (mode < 0 || mode > 2 || (mode == 1 && t != "tf32")) throw Error("wmma_gemm: bad mode");
  using namespace nvcuda;
  auto go = [&](auto kernel, auto tag) {
    using E = decltype(tag);
    launch("wmma_gemm_kernel", kernel, dim3(1), dim3(32), 0, stream, static_cast<const E*>(a),
           static_cast<const E*>(at), static_cast<const E*>(b), static_cast<const E*>(bt), c, d, K);
  };
  // the layouts and modes the tests use: every (a_col, b_col) in mode 0; row-major in modes 1, 2
  const int which = (a_col ? 2 : 0) + (b_col ? 1 : 0);
#define CK_WMMA_CASES(T, E, KK)                                                                                    \
  if (mode == 0 && which == 0) return go(wmma_gemm_kernel<T, E, KK, wmma::row_major, wmma::row_major, 0>, E{}); \
  if (mode == 0 && which == 1) return go(wmma_gemm_kernel<T, E, KK, wmma::row_major, wmma::col_major, 0>, E{}); \
  if (mode == 0 && which == 2) return go(wmma_gemm_kernel<T, E, KK, wmma::col_major, wmma::row_major, 0>, E{}); \
  if (mode == 0 && which == 3) return go(wmma_gemm_kernel<T, E, KK, wmma::col_major, wmma::col_major, 0>, E{}); \
  if (mode == 2 && which == 0) return go(wmma_gemm_kernel<T, E, KK, wmma::row_major, wmma::row_major, 2>, E{});
  if (t == "float16") {
    CK_WMMA_CASES(__half, __half, 16)
  } else if (t == "bfloat16") {
    CK_WMMA_CASES(__nv_bfloat16, __nv_bfloat16, 16)
  } else if (t == "tf32") {
    CK_WMMA_CASES(wmma::precision::tf32, float, 8)
    if (mode == 1 && which == 0)
      return go(wmma_gemm_kernel<wmma::precision::tf32, float, 8, wmma::row_major, wmma::row_major, 1>, float{});
  } else {
    throw Error("wmma_gemm: type must be float16, bfloat16 or tf32");
  }
#undef CK_WMMA_CASES
  throw Error("wmma_gemm: modes 1 and 2 take row-major A and B");
#else
  (void)type, (void)a_col, (void)b_col, (void)mode, (void)a, (void)at, (void)b, (void)bt, (void)c, (void)d, (void)K,
      (void)device, (void)stream;
  throw Error("wmma_gemm: this build has no half types");
#endif
}

void shared_per_block(int* out, int* unwritten_i, float* unwritten_f, int blocks, int threads, int device,
                      StreamHandle stream) {
  DeviceGuard guard(device);
  launch("shared_per_block_kernel", shared_per_block_kernel, dim3(blocks), dim3(threads),
         static_cast<std::size_t>(threads) * sizeof(float), stream, out, unwritten_i, unwritten_f);
}

void thread_ids(int* out, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, int device,
                StreamHandle stream) {
  DeviceGuard guard(device);
  launch("thread_ids_kernel", thread_ids_kernel, dim3(gx, gy, gz), dim3(bx, by, bz), 0, stream, out);
}

namespace {
template <typename T>
void launch_shuffle(WarpShfl op, const void* in, void* out, int threads, unsigned mask, int arg, int width,
                    StreamHandle stream) {
  launch("warp_shuffle_kernel", warp_shuffle_kernel<T>, dim3(1), dim3(threads), 0, stream, static_cast<const T*>(in),
         static_cast<T*>(out), static_cast<int>(op), mask, arg, width);
}
}  // namespace

void warp_shuffle(WarpType type, WarpShfl op, const void* in, void* out, int threads, unsigned mask, int arg,
                  int width, int device, StreamHandle stream) {
  DeviceGuard guard(device);
  switch (type) {
    case WarpType::I32: return launch_shuffle<int>(op, in, out, threads, mask, arg, width, stream);
    case WarpType::U32: return launch_shuffle<unsigned>(op, in, out, threads, mask, arg, width, stream);
    case WarpType::I64: return launch_shuffle<long long>(op, in, out, threads, mask, arg, width, stream);
    case WarpType::U64: return launch_shuffle<unsigned long long>(op, in, out, threads, mask, arg, width, stream);
    case WarpType::F32: return launch_shuffle<float>(op, in, out, threads, mask, arg, width, stream);
    case WarpType::F64: return launch_shuffle<double>(op, in, out, threads, mask, arg, width, stream);
#if CK_HAVE_HALF
    case WarpType::F16: return launch_shuffle<__half>(op, in, out, threads, mask, arg, width, stream);
    case WarpType::BF16: return launch_shuffle<__nv_bfloat16>(op, in, out, threads, mask, arg, width, stream);
#endif
    default: throw Error("warp_shuffle: float16 / bfloat16 need CUDA's half types, not in this build");
  }
}

void warp_vote(WarpVote op, const int* in, int* out, int threads, unsigned mask, int device, StreamHandle stream) {
  DeviceGuard guard(device);
  launch("warp_vote_kernel", warp_vote_kernel, dim3(1), dim3(threads), 0, stream, in, out, static_cast<int>(op), mask);
}

void barrier_reductions(const int* pred, int* out, int threads, int device, StreamHandle stream) {
  DeviceGuard guard(device);
  launch("barrier_reductions_kernel", barrier_reductions_kernel, dim3(1), dim3(threads), 0, stream, pred, out);
}

void atomics(void* slots, int blocks, int threads, int device, StreamHandle stream) {
  DeviceGuard guard(device);
  launch("atomics_kernel", atomics_kernel, dim3(blocks), dim3(threads), 0, stream,
         static_cast<unsigned char*>(slots));
}

void launch_config(int* out, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   std::size_t dynamic_smem, bool optin, int device, StreamHandle stream) {
  DeviceGuard guard(device);
  const dim3 grid(gx, gy, gz), block(bx, by, bz);
  const unsigned long long bytes = dynamic_smem;
  if (optin) {
    set_max_dynamic_smem(launch_config_kernel<1>, dynamic_smem);
    launch("launch_config_kernel<opt-in>", launch_config_kernel<1>, grid, block, dynamic_smem, stream, out, bytes);
  } else {
    launch("launch_config_kernel", launch_config_kernel<0>, grid, block, dynamic_smem, stream, out, bytes);
  }
}

void static_plus_dynamic_shared(int* out, std::size_t dynamic_smem, int optin, int device, StreamHandle stream) {
  DeviceGuard guard(device);
  const unsigned long long bytes = dynamic_smem;
  switch (optin) {
    case 0:
      return launch("static_shared_kernel", static_shared_kernel<0>, dim3(2), dim3(64), dynamic_smem, stream, out,
                    bytes);
    case 1:
      set_max_dynamic_smem(static_shared_kernel<1>, 100 * 1024);
      return launch("static_shared_kernel<opt-in 100 KiB>", static_shared_kernel<1>, dim3(2), dim3(64), dynamic_smem,
                    stream, out, bytes);
    default:
      set_max_dynamic_smem(static_shared_kernel<2>, 190 * 1024);
      return launch("static_shared_kernel<opt-in 190 KiB>", static_shared_kernel<2>, dim3(2), dim3(64), dynamic_smem,
                    stream, out, bytes);
  }
}

void barrier_divergence(int* out, int blocks, int threads, int mode, int device, StreamHandle stream) {
  DeviceGuard guard(device);
  launch("barrier_divergence_kernel", barrier_divergence_kernel, dim3(blocks), dim3(threads), 0, stream, out, mode);
}

void warp_deadlock(int* out, int mode, int device, StreamHandle stream) {
  DeviceGuard guard(device);
  launch("warp_deadlock_kernel", warp_deadlock_kernel, dim3(1), dim3(mode == 2 ? 48 : 32), 0, stream, out, mode);
}

void misaligned_load16(const float* x, float* y, int offset_floats, int device, StreamHandle stream) {
  DeviceGuard guard(device);
  launch("misaligned_load16_kernel", misaligned_load16_kernel, dim3(1), dim3(32), 0, stream, x, y, offset_floats);
}

void shared_out_of_bounds(int* out, int past, int device, StreamHandle stream) {
  DeviceGuard guard(device);
  launch("shared_out_of_bounds_kernel", shared_out_of_bounds_kernel, dim3(1), dim3(64), 0, stream, out, past);
}

}  // namespace convkit::cuda::selftest
