// The GEMM kernel behind every CUDA convolution but `direct` (interface in gemm.h): a BM x BN
// block tile, TM x TN outputs per thread in registers, K in steps of BK through double-buffered
// shared memory (the next tile's global loads are in flight while this tile's FMAs run; one
// barrier per step), global loads 4 elements wide (16 bytes for float) where the operand's map
// makes them contiguous and aligned, scalar otherwise. Shared tiles are k-major ([BK][BM + 4],
// 16-byte aligned): a thread reads its TM rows as float4s, the transposing stores of k-fast
// operands fall on 32 distinct banks, and m- or n-fast operands are stored 16 bytes a thread
// (a warp's stores contiguous). Included only by gemm_<dtype>.cu, which instantiate it.
#pragma once
#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "cuda/dtype.cuh"
#include "cuda/gemm.h"
#include "cuda/gemm_tile.cuh"
#include "cuda/grid.cuh"
#include "cuda/runtime.h"
#include "cuda/variant.h"

namespace convkit::cuda {
namespace gemm_detail {

// Both operands' double-buffered shared tiles in one 16-byte aligned block: lds4 / sts4 move
// 16 bytes, and a plain __shared__ float array is only guaranteed 4-byte alignment (nvcc
// declares it `.align 4`, and the placement of two such arrays is ptxas's choice).
template <typename A, int BK, int LDA, int LDB>
struct alignas(16) SharedTiles {
  static_assert((LDA * sizeof(A)) % 16 == 0 && (LDB * sizeof(A)) % 16 == 0, "rows 16-byte aligned");
  A As[2][BK][LDA];  // A's tile (k, m)
  A Bs[2][BK][LDB];  // B's tile (k, n)
};

// float and the half types: 128 x 128 (8 x 8 a thread, 256 threads) for large problems, 64 x 64
// (4 x 4, 256 threads) when the large tile would leave the GPU with too few blocks. double: the
// register file holds half as many values, so 64 x 64 (4 x 4) and 32 x 32 (4 x 4, 64 threads).
template <typename T>
struct Tiles {
  using Big = Tile<128, 128, 8, 8, 8>;
  using Small = Tile<64, 64, 8, 4, 4>;
};
template <>
struct Tiles<double> {
  using Big = Tile<64, 64, 8, 4, 4>;
  using Small = Tile<32, 32, 8, 4, 4>;
};

// Split-K aims at this many blocks (a few waves of 132 SMs), whatever this device has.
constexpr int64_t kSplitTargetBlocks = 384;
constexpr int kMaxSplits = 32;
constexpr int kMinSplitDepth = 32;  // elements of K a split covers at least

// ---- 4-element global loads ----------------------------------------------------------------
// The vector form needs the 4 elements contiguous and the address aligned to their size
// (16 bytes for float; two 16-byte loads for double; 8 bytes for the half types).
template <typename T>
__device__ __forceinline__ bool aligned4(const T* p) {
  constexpr std::uintptr_t kAlign = sizeof(T) == 8 ? 16 : 4 * sizeof(T);
  return (reinterpret_cast<std::uintptr_t>(p) & (kAlign - 1)) == 0;
}

template <typename A>
__device__ __forceinline__ void load4_vec(const float* p, A (&v)[4]) {
  const float4 f = load16(reinterpret_cast<const float4*>(p));
  v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
}
template <typename A>
__device__ __forceinline__ void load4_vec(const double* p, A (&v)[4]) {
  const double2 a = load16(reinterpret_cast<const double2*>(p));
  const double2 b = load16(reinterpret_cast<const double2*>(p + 2));
  v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
}
#if CK_HAVE_HALF
// 4 half-type elements as one 8-byte load (two 32-bit words), rebuilt from their bits.
__device__ __forceinline__ float half_bits_to_float(unsigned short u, const __half*) {
  return __half2float(__ushort_as_half(u));
}
__device__ __forceinline__ float half_bits_to_float(unsigned short u, const __nv_bfloat16*) {
  return __bfloat162float(__ushort_as_bfloat16(u));
}
template <typename H, typename A>
__device__ __forceinline__ void load4_half_bits(const H* p, A (&v)[4]) {
  const uint2 u = *reinterpret_cast<const uint2*>(p);
  v[0] = half_bits_to_float(static_cast<unsigned short>(u.x & 0xffffu), p);
  v[1] = half_bits_to_float(static_cast<unsigned short>(u.x >> 16), p);
  v[2] = half_bits_to_float(static_cast<unsigned short>(u.y & 0xffffu), p);
  v[3] = half_bits_to_float(static_cast<unsigned short>(u.y >> 16), p);
}
template <typename A>
__device__ __forceinline__ void load4_vec(const __half* p, A (&v)[4]) {
  load4_half_bits(p, v);
}
template <typename A>
__device__ __forceinline__ void load4_vec(const __nv_bfloat16* p, A (&v)[4]) {
  load4_half_bits(p, v);
}
#endif

// v[j] = element (s, f + j) of operand `in` (0 outside [0, s_lim) x [0, f_lim)), in the
// accumulator type. kMapped: the fast index goes through a general (strided) map.
template <bool kMapped, typename T, typename A>
__device__ __forceinline__ void load4(const GemmIn<T>& in, const T* base, int s, int f, int s_lim, int f_lim,
                                      A (&v)[4]) {
  if (s >= s_lim) {
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = A(0);
    return;
  }
  const T* row = base + static_cast<int64_t>(s) * in.ld;
  if (!kMapped && f + 3 < f_lim && in.map.run4(static_cast<uint32_t>(f))) {
    const T* p = row + in.map.offset(static_cast<uint32_t>(f));
    if (aligned4(p)) {
      load4_vec(p, v);
      return;
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = to_acc(load_ro(p + j));
    return;
  }
#pragma unroll
  for (int j = 0; j < 4; ++j)
    v[j] = f + j < f_lim ? to_acc(load_ro(row + in.map.offset(static_cast<uint32_t>(f + j)))) : A(0);
}

// Four consecutive output elements from the accumulator: 16-byte stores for float and double
// where aligned, element by element otherwise.
template <typename Out, typename A>
__device__ __forceinline__ void store4(Out* p, const A (&v)[4]) {
#pragma unroll
  for (int j = 0; j < 4; ++j) p[j] = from_acc<Out>(v[j]);
}
__device__ __forceinline__ void store4(float* p, const float (&v)[4]) {
  if (aligned4(p)) {
    store16(reinterpret_cast<float4*>(p), make_float4(v[0], v[1], v[2], v[3]));
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) p[j] = v[j];
  }
}
__device__ __forceinline__ void store4(double* p, const double (&v)[4]) {
  if (aligned4(p)) {
    store16(reinterpret_cast<double2*>(p), make_double2(v[0], v[1]));
    store16(reinterpret_cast<double2*>(p + 2), make_double2(v[2], v[3]));
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) p[j] = v[j];
  }
}

// One operand's tile loader: the tile is kSlow x kFast elements of the operand's own
// (slow, fast) layout, moved as kFast / 4 vectors per slow row, kVecs vectors per thread.
template <int kSlow, int kFast, int kThreads>
struct TileWalk {
  static constexpr int kVecsPerRow = kFast / 4;
  static constexpr int kTotal = kSlow * kVecsPerRow;
  static constexpr int kVecs = (kTotal + kThreads - 1) / kThreads;
  __device__ __forceinline__ static bool active(int v) { return kTotal % kThreads == 0 || v < kTotal; }
};

// ---------------------------------------------------------------------------------------------
// GPU kernels

// See the file comment. z = blockIdx.z + z0 is (batch b, split s); this block computes rows
// [m0, m0 + BM) and columns [n0, n0 + BN) of C[b, s] over its split's k-tiles.
// kMappedB: B's fast index goes through a general map; kMappedC: likewise for C's columns.
template <typename T, typename Out, class Cfg, bool kTransA, bool kTransB, bool kMappedB, bool kMappedC>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocksPerSm)
    gemm_tiled_kernel(GemmDesc<T, Out> d, int z0) {
  using A = acc_t<T>;
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, TM = Cfg::TM, TN = Cfg::TN;
  constexpr int kThreads = Cfg::kThreads;
  constexpr int LDA = BM + Cfg::kPad, LDB = BN + Cfg::kPad;
  // A's tile is BM x BK as (m, k), stored in A's own layout: k fast (kTransA false) or m fast.
  using WalkA = TileWalk<kTransA ? BK : BM, kTransA ? BM : BK, kThreads>;
  using WalkB = TileWalk<kTransB ? BN : BK, kTransB ? BK : BN, kThreads>;
  using Shared = SharedTiles<A, BK, LDA, LDB>;
  CK_SHARED(Shared, tiles, );
  auto& As = tiles.As;
  auto& Bs = tiles.Bs;

  const int tid = static_cast<int>(threadIdx.x);
  const int tx = tid % Cfg::kThreadsN, ty = tid / Cfg::kThreadsN;
  const int m0 = static_cast<int>(blockIdx.y) * BM, n0 = static_cast<int>(blockIdx.x) * BN;
  const int z = static_cast<int>(blockIdx.z) + z0;
  const int b = z / d.splits, s = z % d.splits;

  const int ktiles = (d.K + BK - 1) / BK;
  const int per_split = (ktiles + d.splits - 1) / d.splits;
  const int kt_begin = std::min(s * per_split, ktiles), kt_end = std::min(kt_begin + per_split, ktiles);

  const T* a_base = d.A.ptr + b * d.A.batch_stride;
  const T* b_base = d.B.ptr + b * d.B.batch_stride;

  A ra[WalkA::kVecs][4], rb[WalkB::kVecs][4];  // the next tile, on its way from global memory

  // Global -> registers for k-tile kt.
  auto load_tiles = [&](int kt) {
    const int k0 = kt * BK;
#pragma unroll
    for (int i = 0; i < WalkA::kVecs; ++i) {
      const int v = tid + i * kThreads;
      if (!WalkA::active(v)) continue;
      const int sl = v / WalkA::kVecsPerRow, fa = (v % WalkA::kVecsPerRow) * 4;
      if (kTransA)  // slow k, fast m
        load4<false>(d.A, a_base, k0 + sl, m0 + fa, d.K, d.M, ra[i]);
      else  // slow m, fast k
        load4<false>(d.A, a_base, m0 + sl, k0 + fa, d.M, d.K, ra[i]);
    }
#pragma unroll
    for (int i = 0; i < WalkB::kVecs; ++i) {
      const int v = tid + i * kThreads;
      if (!WalkB::active(v)) continue;
      const int sl = v / WalkB::kVecsPerRow, fb = (v % WalkB::kVecsPerRow) * 4;
      if (kTransB)  // slow n, fast k
        load4<kMappedB>(d.B, b_base, n0 + sl, k0 + fb, d.N, d.K, rb[i]);
      else  // slow k, fast n
        load4<kMappedB>(d.B, b_base, k0 + sl, n0 + fb, d.K, d.N, rb[i]);
    }
  };
  // Registers -> shared buffer `buf`, k-major: k-fast vectors transposed element by element,
  // m- or n-fast vectors stored whole (fa, fb are multiples of 4, rows 16-byte aligned).
  auto store_tiles = [&](int buf) {
#pragma unroll
    for (int i = 0; i < WalkA::kVecs; ++i) {
      const int v = tid + i * kThreads;
      if (!WalkA::active(v)) continue;
      const int sl = v / WalkA::kVecsPerRow, fa = (v % WalkA::kVecsPerRow) * 4;
      if (kTransA) {  // (k = sl, m = fa ..)
        sts4(&As[buf][sl][fa], ra[i]);
      } else {  // (m = sl, k = fa ..)
#pragma unroll
        for (int j = 0; j < 4; ++j) As[buf][fa + j][sl] = ra[i][j];
      }
    }
#pragma unroll
    for (int i = 0; i < WalkB::kVecs; ++i) {
      const int v = tid + i * kThreads;
      if (!WalkB::active(v)) continue;
      const int sl = v / WalkB::kVecsPerRow, fb = (v % WalkB::kVecsPerRow) * 4;
      if (kTransB) {  // (n = sl, k = fb ..)
#pragma unroll
        for (int j = 0; j < 4; ++j) Bs[buf][fb + j][sl] = rb[i][j];
      } else {  // (k = sl, n = fb ..)
        sts4(&Bs[buf][sl][fb], rb[i]);
      }
    }
  };

  A acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = A(0);

  if (kt_begin < kt_end) {
    load_tiles(kt_begin);
    store_tiles(0);
  }
  __syncthreads();
  int buf = 0;
  for (int kt = kt_begin; kt < kt_end; ++kt) {
    const bool more = kt + 1 < kt_end;  // uniform across the block
    if (more) load_tiles(kt + 1);
    tile_fma<Cfg, LDA, LDB>(As[buf], Bs[buf], ty, tx, acc);
    if (more) store_tiles(buf ^ 1);
    __syncthreads();
    buf ^= 1;
  }

  // Epilogue: rows m, columns in groups of 4 (stored 4 wide where contiguous and aligned).
  Out* c_base = d.C.ptr + b * d.C.batch_stride + s * d.C.split_stride;
  const T* bias = d.bias ? d.bias + b * d.bias_batch_stride : nullptr;
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const int m = m0 + tile_row<Cfg>(i, ty);
    if (m >= d.M) continue;
    const A add = bias ? to_acc(load_ro(bias + m)) : A(0);
    Out* row = c_base + static_cast<int64_t>(m) * d.C.ld;
#pragma unroll
    for (int g = 0; g < TN / 4; ++g) {
      const int n = n0 + g * (BN / (TN / 4)) + tx * 4;
      A v[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) v[j] = acc[i][g * 4 + j] + add;
      if (!kMappedC && n + 3 < d.N && d.C.map.run4(static_cast<uint32_t>(n))) {
        Out* p = row + d.C.map.offset(static_cast<uint32_t>(n));
        if (d.accumulate) {
#pragma unroll
          for (int j = 0; j < 4; ++j) v[j] += to_acc(p[j]);
        }
        store4(p, v);
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if (n + j >= d.N) continue;
          Out* p = row + d.C.map.offset(static_cast<uint32_t>(n + j));
          const A old = d.accumulate ? to_acc(*p) : A(0);
          *p = from_acc<Out>(v[j] + old);
        }
      }
    }
  }
}

// C (through its map, + bias, += C when accumulating) = the sum of the splits' partials,
// [split][batch][M][N], in split order.
template <typename T, typename Out>
__global__ void splitk_reduce_mapped_kernel(GemmDesc<T, Out> d) {
  using A = acc_t<T>;
  const int64_t MN = static_cast<int64_t>(d.M) * d.N, count = MN * d.batches;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += step) {
    A sum = A(0);
    for (int s = 0; s < d.splits; ++s) sum += d.partials[s * count + i];
    const int64_t b = i / MN, mn = i - b * MN, m = mn / d.N, n = mn - m * d.N;
    if (d.bias) sum += to_acc(load_ro(d.bias + b * d.bias_batch_stride + m));
    Out* p = d.C.ptr + b * d.C.batch_stride + m * d.C.ld + d.C.map.offset(static_cast<uint32_t>(n));
    if (d.accumulate) sum += to_acc(*p);
    *p = from_acc<Out>(sum);
  }
}

template <typename T>
__global__ void splitk_reduce_kernel(const acc_t<T>* __restrict__ part, int splits, int64_t count,
                                     T* __restrict__ out) {
  using A = acc_t<T>;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += step) {
    A sum = A(0);
    for (int s = 0; s < splits; ++s) sum += part[s * count + i];
    out[i] = from_acc<T>(sum);
  }
}

// ---------------------------------------------------------------------------------------------
// kernel launcher

// The big tile where tile_model.h's model says it is the faster of the two for this grid (the
// waves each fills on the reference device, at its rate: about when the big tile has more than a
// wave's worth of blocks), unless variant.h's forced variant says which. The k-depth is the same
// for both, so it does not enter the comparison; the tile does not change the summation order.
template <typename T>
bool use_big_tile(int M, int N, int batches) {
  switch (variant().gemm_tile) {
    case GemmTileMode::Big:
      return true;
    case GemmTileMode::Small:
      return false;
    case GemmTileMode::Auto:
      break;
  }
  const GemmShape shape{batches, M, N, 8, 0};
  const bool f64 = sizeof(T) == 8;
  return model_seconds(tile_model_of<T, typename Tiles<T>::Big>(), shape, 1, 0, f64) <=
         model_seconds(tile_model_of<T, typename Tiles<T>::Small>(), shape, 1, 0, f64);
}

template <typename T, typename Out, class Cfg, bool kTransA, bool kTransB, bool kMappedB, bool kMappedC>
void launch_tiled(const GemmDesc<T, Out>& d, StreamHandle stream) {
  const int64_t gx = (static_cast<int64_t>(d.N) + Cfg::BN - 1) / Cfg::BN;
  const int64_t gy = (static_cast<int64_t>(d.M) + Cfg::BM - 1) / Cfg::BM;
  if (gy > 65535) throw Error("gemm: M = " + std::to_string(d.M) + " needs more than 65535 row tiles");
  const int64_t zs = static_cast<int64_t>(d.batches) * d.splits;  // z = blockIdx.z + z0 is an int
  if (zs > INT32_MAX)
    throw Error("gemm: " + std::to_string(d.batches) + " batches x " + std::to_string(d.splits) +
                " splits exceed 2^31 - 1 grid layers");
  for (int64_t z0 = 0; z0 < zs; z0 += 65535) {  // gridDim.z is at most 65535
    const unsigned gz = static_cast<unsigned>(std::min<int64_t>(65535, zs - z0));
    launch("gemm_tiled_kernel", gemm_tiled_kernel<T, Out, Cfg, kTransA, kTransB, kMappedB, kMappedC>,
           dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy), gz), dim3(Cfg::kThreads), 0, stream, d,
           static_cast<int>(z0));
  }
}

template <typename T, typename Out, class Cfg>
void dispatch_layout(const GemmDesc<T, Out>& d, StreamHandle stream) {
  const bool mb = !d.B.map.dense, mc = !d.C.map.dense;
  if (!d.trans_a && !d.trans_b) {
    if (mc) throw Error("gemm: a strided output map needs trans_a");
    if (mb)
      launch_tiled<T, Out, Cfg, false, false, true, false>(d, stream);
    else
      launch_tiled<T, Out, Cfg, false, false, false, false>(d, stream);
  } else if (d.trans_a && !d.trans_b) {
    if (mb) throw Error("gemm: a strided B map is not supported with trans_a");
    if (mc)
      launch_tiled<T, Out, Cfg, true, false, false, true>(d, stream);
    else
      launch_tiled<T, Out, Cfg, true, false, false, false>(d, stream);
  } else if (!d.trans_a && d.trans_b) {
    if (mc) throw Error("gemm: a strided output map needs trans_a");
    if (mb)
      launch_tiled<T, Out, Cfg, false, true, true, false>(d, stream);
    else
      launch_tiled<T, Out, Cfg, false, true, false, false>(d, stream);
  } else {
    throw Error("gemm: trans_a with trans_b is not a layout any convolution uses");
  }
}

}  // namespace gemm_detail

template <typename T>
GemmTile gemm_tile(int M, int N, int batches) {
  using namespace gemm_detail;
  if (use_big_tile<T>(M, N, batches)) return {Tiles<T>::Big::BM, Tiles<T>::Big::BN, Tiles<T>::Big::BK};
  return {Tiles<T>::Small::BM, Tiles<T>::Small::BN, Tiles<T>::Small::BK};
}

template <typename T>
int gemm_splits(int M, int N, int64_t K, int batches) {
  using namespace gemm_detail;
  const GemmTile t = gemm_tile<T>(M, N, batches);
  const int64_t blocks = static_cast<int64_t>((M + t.BM - 1) / t.BM) * ((N + t.BN - 1) / t.BN) * batches;
  const int64_t want = (kSplitTargetBlocks + blocks - 1) / blocks;
  const int64_t deep = std::max<int64_t>(1, K / kMinSplitDepth);
  const int64_t chosen = std::max<int64_t>(1, std::min<int64_t>({want, deep, kMaxSplits}));
  switch (variant().splitk) {
    case SplitMode::Off:
      return 1;
    case SplitMode::On:  // at least kForcedSplits, or one a k-step where K has fewer
      return static_cast<int>(std::max<int64_t>(chosen, std::min<int64_t>(kForcedSplits, (K + t.BK - 1) / t.BK)));
    case SplitMode::Auto:
      break;
  }
  return static_cast<int>(chosen);
}

template <typename T>
int gemm_output_splits(int64_t M, int64_t N, int64_t K, int64_t batches, int max_fit) {
  using namespace gemm_detail;
  const int64_t ktiles = std::max<int64_t>(1, plan_ceil_div(K, Tiles<T>::Big::BK));
  const int most = std::max(1, std::min(plan_max_splits(K), max_fit));
  int chosen = 1;
  if (variant().splitk != SplitMode::Off && M <= kGemmMaxDim && N <= kGemmMaxDim) {
    const bool big = use_big_tile<T>(static_cast<int>(M), static_cast<int>(N), static_cast<int>(batches));
    const TileModel t = big ? tile_model_of<T, typename Tiles<T>::Big>() : tile_model_of<T, typename Tiles<T>::Small>();
    const GemmShape shape{batches, M, N, K, batches * M * N};
    double best = -1;
    for (int s = 1; s <= most; ++s) {
      const double sec = model_seconds(t, shape, s, sizeof(acc_t<T>), sizeof(T) == 8);
      if (best < 0 || sec < best) best = sec, chosen = s;
    }
  }
  if (variant().splitk == SplitMode::On)
    chosen = std::max(chosen, static_cast<int>(std::min<int64_t>({kForcedSplits, ktiles, std::max(max_fit, 1)})));
  return chosen;
}

template <typename T, typename Out>
void gemm_run(const GemmDesc<T, Out>& d, StreamHandle stream) {
  using namespace gemm_detail;
  if (d.M <= 0 || d.N <= 0 || d.batches <= 0 || d.splits <= 0 || d.K < 0 || d.M > kGemmMaxDim ||
      d.N > kGemmMaxDim || d.K > kGemmMaxDim)
    throw Error("gemm: bad problem " + std::to_string(d.M) + " x " + std::to_string(d.N) + " x " +
                std::to_string(d.K) + ", batches " + std::to_string(d.batches) + ", splits " +
                std::to_string(d.splits));
  if (d.partials && d.splits > 1) {  // the splits into the partials, then one mapped reduction
    GemmDesc<T, acc_t<T>> part{};
    part.M = d.M, part.N = d.N, part.K = d.K, part.batches = d.batches, part.splits = d.splits;
    part.trans_a = d.trans_a, part.trans_b = d.trans_b, part.A = d.A, part.B = d.B;
    const int64_t MN = static_cast<int64_t>(d.M) * d.N;
    part.C = GemmOut<acc_t<T>>{d.partials, d.N, MN, MN * d.batches, IndexMap::plain()};
    part.bias = nullptr, part.bias_batch_stride = 0, part.accumulate = false, part.partials = nullptr;
    gemm_run(part, stream);
    launch("splitk_reduce_mapped_kernel", splitk_reduce_mapped_kernel<T, Out>, dim3(grid_blocks(MN * d.batches, 256)),
           dim3(256), 0, stream, d);
    return;
  }
  if (use_big_tile<T>(d.M, d.N, d.batches))
    dispatch_layout<T, Out, typename Tiles<T>::Big>(d, stream);
  else
    dispatch_layout<T, Out, typename Tiles<T>::Small>(d, stream);
}

template <typename T>
void splitk_reduce(const acc_t<T>* part, int splits, int64_t count, T* out, StreamHandle stream) {
  if (count <= 0) return;
  launch("splitk_reduce_kernel", gemm_detail::splitk_reduce_kernel<T>, dim3(grid_blocks(count, 256)), dim3(256), 0,
         stream, part, splits, count, out);
}

// Explicit instantiations for one element type (gemm_<dtype>.cu): outputs in T and, for the
// split-K partials, in its accumulator type.
#define CONVKIT_INSTANTIATE_GEMM(T)                                                        \
  template GemmTile gemm_tile<T>(int, int, int);                                           \
  template int gemm_output_splits<T>(int64_t, int64_t, int64_t, int64_t, int);             \
  template int gemm_splits<T>(int, int, int64_t, int);                                     \
  template void gemm_run<T, T>(const GemmDesc<T, T>&, StreamHandle);                       \
  template void splitk_reduce<T>(const acc_t<T>*, int, int64_t, T*, StreamHandle);
#define CONVKIT_INSTANTIATE_GEMM_ACC(T) \
  template void gemm_run<T, acc_t<T>>(const GemmDesc<T, acc_t<T>>&, StreamHandle);

}  // namespace convkit::cuda
