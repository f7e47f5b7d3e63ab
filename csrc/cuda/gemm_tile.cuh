// The register-tiled inner product shared by convkit's GEMM (gemm.cuh) and the implicit-GEMM
// convolutions (conv_implicit_gemm.cuh): a BM x BN block tile, TM x TN outputs a thread in
// registers, both operands' k-steps in shared memory k-major ([BK][BM + 4] and [BK][BN + 4],
// rows 16-byte aligned), read 4 values at a time. Which rows and columns a thread owns
// (tile_row / tile_col) is the same for both, so their epilogues agree with the loop.
#pragma once
#include "cuda/runtime.h"
#include "cuda/tile_model.h"

namespace convkit::cuda {
namespace gemm_detail {

// Block tile BM x BN, k-step BK, TM x TN outputs per thread (TM, TN in {4, 8}: rows and columns
// in groups of 4, group g of a thread at g * BM / (TM / 4) + ty * 4, spreading a warp's reads).
template <int BM_, int BN_, int BK_, int TM_, int TN_>
struct Tile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, TM = TM_, TN = TN_;
  static constexpr int kThreadsM = BM / TM, kThreadsN = BN / TN;
  static constexpr int kThreads = kThreadsM * kThreadsN;
  static constexpr int kPad = 4;  // keeps rows 16-byte aligned and the transposing stores conflict-free
  // Blocks an SM should hold at once (__launch_bounds__' second argument): 2 for the 8 x 8
  // thread tiles caps them at 128 registers, so two blocks (16 warps) hide each other's loads.
  static constexpr int kMinBlocksPerSm = TM * TN >= 64 ? 2 : 1;
  static_assert(TM % 4 == 0 && TN % 4 == 0, "thread tiles are groups of 4");
  static_assert(BM % TM == 0 && BN % TN == 0 && BK % 4 == 0, "tile shape");
};

// What tile_model.h's plan model assumes of a block of Cfg with elements T, from ptxas for sm_90
// (make cuda-report): 8 x 8 thread tiles and double's 256-thread 4 x 4 tile take about 128
// registers a thread, so an SM holds 2 blocks of 256; float's 4 x 4 tiles 80 to 99 (2 blocks);
// double's 64-thread tiles 126 to 160 (6). A 4 x 4 thread tile reads shared memory twice as
// often a FMA as an 8 x 8 one: about 0.6 of the rate.
template <typename T, class Cfg>
TileModel tile_model_of() {
  const bool full = Cfg::TM * Cfg::TN >= 64 || (sizeof(T) == 8 && Cfg::kThreads == 256);
  return TileModel{Cfg::BM, Cfg::BN, full ? 1.0 : 0.6, Cfg::kThreads == 256 ? 2 : 6};
}

// Row (column) of the block tile that a thread's accumulator row i (column j) holds: groups of
// 4, group g at g * BM / (TM / 4) + ty * 4.
template <class Cfg>
__device__ __forceinline__ int tile_row(int i, int ty) {
  return (i / 4) * (Cfg::BM / (Cfg::TM / 4)) + ty * 4 + (i % 4);
}
template <class Cfg>
__device__ __forceinline__ int tile_col(int j, int tx) {
  return (j / 4) * (Cfg::BN / (Cfg::TN / 4)) + tx * 4 + (j % 4);
}

// Four consecutive shared-memory values (16-byte aligned; checked under the emulator) into
// registers, and back.
__device__ __forceinline__ void lds4(const float* p, float (&v)[4]) {
  const float4 f = load16(reinterpret_cast<const float4*>(p));
  v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
}
__device__ __forceinline__ void lds4(const double* p, double (&v)[4]) {
  const double2 a = load16(reinterpret_cast<const double2*>(p));
  const double2 b = load16(reinterpret_cast<const double2*>(p + 2));
  v[0] = a.x, v[1] = a.y, v[2] = b.x, v[3] = b.y;
}
__device__ __forceinline__ void sts4(float* p, const float (&v)[4]) {
  store16(reinterpret_cast<float4*>(p), make_float4(v[0], v[1], v[2], v[3]));
}
__device__ __forceinline__ void sts4(double* p, const double (&v)[4]) {
  store16(reinterpret_cast<double2*>(p), make_double2(v[0], v[1]));
  store16(reinterpret_cast<double2*>(p + 2), make_double2(v[2], v[3]));
}

// acc += As x Bs over one k-step held in shared memory: As[kk][m], Bs[kk][n] (rows LDA, LDB
// apart), this thread's TM x TN outputs at tile_row(i, ty), tile_col(j, tx).
template <class Cfg, int LDA, int LDB, typename A>
__device__ __forceinline__ void tile_fma(const A (*As)[LDA], const A (*Bs)[LDB], int ty, int tx,
                                         A (&acc)[Cfg::TM][Cfg::TN]) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, TM = Cfg::TM, TN = Cfg::TN;
#pragma unroll
  for (int kk = 0; kk < Cfg::BK; ++kk) {
    A av[TM], bv[TN];
#pragma unroll
    for (int g = 0; g < TM / 4; ++g) {
      A t[4];
      lds4(&As[kk][g * (BM / (TM / 4)) + ty * 4], t);
#pragma unroll
      for (int j = 0; j < 4; ++j) av[g * 4 + j] = t[j];
    }
#pragma unroll
    for (int g = 0; g < TN / 4; ++g) {
      A t[4];
      lds4(&Bs[kk][g * (BN / (TN / 4)) + tx * 4], t);
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[g * 4 + j] = t[j];
    }
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = av[i] * bv[j] + acc[i][j];
  }
}

}  // namespace gemm_detail
}  // namespace convkit::cuda
