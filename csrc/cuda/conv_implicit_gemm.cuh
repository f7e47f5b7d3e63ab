// Implicit-GEMM convolution kernels (launchers in conv_implicit_gemm.cu, instantiated per element
// type in conv_implicit_gemm_<dtype>.cu). Each pass is a GEMM whose operand tiles are gathered
// straight from the tensors into shared memory, with no column buffer:
//
//   forward      Y_g[k][n p q]   = W_g[k][c r s]  x  X_g[c r s][n p q]            M = Kg, N = nb P Q, K = Cg R S
//   grad input   dX_g[c][n h w]  = W_g^T[c][k r s] x dY_g[k r s][n h w], one GEMM per stride phase
//                (h, w) mod (sh, sw): only the taps that land on a phase's pixels, none wasted on the
//                zeros a strided transposed convolution would insert       M = Cg, N = nb H/sh W/sw, K = Kg R' S'
//   grad weight  dW_g[k][c r s]  = dY_g[k][n p q]  x  X_g^T[n p q][c r s]          M = Kg, N = Cg R S, K = nb P Q
//
// A Problem describes a pass: for the block's unit (group, and stride phase in grad input) the
// GEMM's M, N, K; for each of a thread's tile columns a small precomputed state (pointers and
// the pixel's or tap's coordinates, made once before the main loop); for each k the element's
// address or nullptr for a zero (padding, a tap outside the input, past the end); and the store
// of an output. The kernel's block tile, thread tile and inner product are the GEMM's
// (gemm_tile.cuh). Operand tiles move through shared memory either by a kStages-deep cp.async
// pipeline (async_copy.cuh; float and double) or register-staged double buffering (the half types,
// which cp.async cannot move 2 bytes at a time, converted to float on the way; or forced).
//
// Split-K: the k-tiles of a block's reduction are cut into `splits` contiguous ranges (blockIdx.z
// = unit * splits + split); each split writes its partial sums to a workspace slab, and
// igemm_reduce_kernel (forward, with the bias) or gemm.h's splitk_reduce adds the slabs in split
// order: deterministic, no atomics.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/async_copy.cuh"
#include "cuda/dtype.cuh"
#include "cuda/fast_divmod.cuh"
#include "cuda/gemm.h"
#include "cuda/gemm_tile.cuh"
#include "cuda/grid.cuh"
#include "common/params.h"
#if defined(__CUDACC__) && CK_HAVE_HALF
#include <mma.h>
#endif
#include "cuda/runtime.h"

namespace convkit::cuda {
namespace igemm {

using gemm_detail::Tile;

// The convolution's geometry in 32 bits (the launcher checks every product it forms) with the
// divisions the problems need, for a chunk of nb images.
struct Geom {
  int C, H, W, K, P, Q, R, S, sh, sw, pt, pl, dh, dw, groups;
  int Cg, Kg, RS, CgRS, HW, PQ, nb;
  int64_t CHW, KPQ;  // one image of x and of y
  FastDivmod by_RS, by_S, by_PQ, by_Q;
};

// gcd for the stride phases (host and device).
__host__ __device__ __forceinline__ int gcd_int(int a, int b) {
  while (b) {
    const int t = a % b;
    a = b, b = t;
  }
  return a;
}

// Whether (h, w) lies in an H x W plane (one unsigned compare an axis).
__device__ __forceinline__ bool in_plane(int h, int w, int H, int W) {
  return static_cast<unsigned>(h) < static_cast<unsigned>(H) && static_cast<unsigned>(w) < static_cast<unsigned>(W);
}

// ---- operand tile walks ----------------------------------------------------------------------
// A thread moves kPer elements of a BK x BW operand tile per k-step, each at a fixed
// (row, column) of the tile, so a column's state is computed once. kKFast: a warp's lanes run
// along k first (the operand is contiguous in k: weights in forward, grad output in grad weight),
// else along the columns (contiguous pixels). Either way the k-major shared stores hit 32
// distinct banks (rows are BW + 4 apart).
template <int BK, int BW, int kThreads, bool kKFast>
struct Walk {
  static constexpr int kPer = BK * BW / kThreads;
  static constexpr int kStates = kKFast ? kPer : 1;  // distinct columns a thread touches
  static_assert(BK * BW % kThreads == 0, "a tile is a whole number of elements a thread");
  static_assert(kKFast ? kThreads % BK == 0 : kThreads % BW == 0, "whole rows or columns a pass");
  __device__ __forceinline__ static int row(int tid, int i) {
    return kKFast ? tid % BK : tid / BW + i * (kThreads / BW);
  }
  __device__ __forceinline__ static int col(int tid, int i) {
    return kKFast ? tid / BK + i * (kThreads / BK) : tid % BW;
  }
};

// ---- the problems ----------------------------------------------------------------------------

// What a block's unit works on.
struct Unit {
  int grp, M, N, K;
  // grad input's stride phase: its first pixel (hf, wf), pixels (Hp, Wp), taps r0 + i rstep
  // (Rp of them), s0 + j sstep (Sp), and the divisions of its indices.
  int hf, wf, Hp, Wp, r0, rstep, Rp, s0, sstep, Sp;
  FastDivmod by_HWp, by_Wp, by_RSp, by_Sp;
};

template <typename T>
struct Fwd {
  static constexpr bool kAKFast = true, kBKFast = false;
  Geom g;
  const T* x;
  const T* w;
  const T* bias;  // nullptr: none
  T* y;
  acc_t<T>* part;  // split-K slabs (count elements each), or nullptr
  int64_t count;

  __device__ __forceinline__ const T* any() const { return x; }  // a valid source for a zero-fill copy
  __device__ __forceinline__ Unit unit(int u) const {
    Unit t{};
    t.grp = u, t.M = g.Kg, t.N = g.nb * g.PQ, t.K = g.CgRS;
    return t;
  }
  struct ColA {
    const T* row;  // nullptr past M
  };
  __device__ __forceinline__ ColA col_a(const Unit& u, int m) const {
    return ColA{m < u.M ? w + (static_cast<int64_t>(u.grp) * g.Kg + m) * g.CgRS : nullptr};
  }
  __device__ __forceinline__ const T* elem_a(const Unit& u, const ColA& c, int k) const {
    return c.row && k < u.K ? c.row + k : nullptr;
  }
  struct ColB {
    const T* base;  // the pixel's image and group, nullptr past N
    int h0, w0;
  };
  __device__ __forceinline__ ColB col_b(const Unit& u, int n) const {
    if (n >= u.N) return ColB{nullptr, 0, 0};
    uint32_t img, pq, p, q;
    g.by_PQ.divmod(static_cast<uint32_t>(n), img, pq);
    g.by_Q.divmod(pq, p, q);
    return ColB{x + img * g.CHW + static_cast<int64_t>(u.grp) * g.Cg * g.HW, static_cast<int>(p) * g.sh - g.pt,
                static_cast<int>(q) * g.sw - g.pl};
  }
  __device__ __forceinline__ const T* elem_b(const Unit& u, const ColB& c, int k) const {
    if (!c.base || k >= u.K) return nullptr;
    uint32_t ch, rs, r, s;
    g.by_RS.divmod(static_cast<uint32_t>(k), ch, rs);
    g.by_S.divmod(rs, r, s);
    const int h = c.h0 + static_cast<int>(r) * g.dh, wc = c.w0 + static_cast<int>(s) * g.dw;
    if (!in_plane(h, wc, g.H, g.W)) return nullptr;
    return c.base + static_cast<int64_t>(ch) * g.HW + h * g.W + wc;
  }
  // Output (m, n) of the unit: its offset in y (and in a split's slab).
  __device__ __forceinline__ int64_t out_offset(const Unit& u, int m, int n) const {
    uint32_t img, pq;
    g.by_PQ.divmod(static_cast<uint32_t>(n), img, pq);
    return img * g.KPQ + (static_cast<int64_t>(u.grp) * g.Kg + m) * g.PQ + pq;
  }
  __device__ __forceinline__ void store(const Unit& u, int split, int m, int n, acc_t<T> v) const {
    const int64_t off = out_offset(u, m, n);
    if (part) {
      part[split * count + off] = v;
    } else {
      if (bias) v += to_acc(load_ro(bias + u.grp * g.Kg + m));
      y[off] = from_acc<T>(v);
    }
  }
};

template <typename T>
struct BwdInput {
  static constexpr bool kAKFast = false, kBKFast = false;
  Geom g;
  const T* dy;
  const T* w;
  T* dx;
  acc_t<T>* part;
  int64_t count;
  int phases_w;  // phases (h, w) of the stride: min(sh, H) x min(sw, W), unit = phase * groups + grp

  __device__ __forceinline__ const T* any() const { return dy; }

  // The taps of one axis that reach pixels first + i * stride: tap t with
  // (first + pad - t * dil) a multiple of the stride, i.e. first0, first0 + step, ...
  __host__ __device__ __forceinline__ static void phase_taps(int first, int pad, int stride, int dil, int taps, int& t0,
                                                    int& step, int& count) {
    const int rho = (first + pad) % stride;
    step = stride / gcd_int(stride, dil);
    t0 = taps;
    for (int t = 0; t < taps && t < step; ++t)
      if ((static_cast<int64_t>(t) * dil) % stride == rho) {
        t0 = t;
        break;
      }
    count = t0 < taps ? (taps - 1 - t0) / step + 1 : 0;
  }

  __device__ __forceinline__ Unit unit(int u) const {
    Unit t{};
    const int phase = u / g.groups;
    t.grp = u - phase * g.groups;
    t.hf = phase / phases_w, t.wf = phase - t.hf * phases_w;
    t.Hp = (g.H - t.hf - 1) / g.sh + 1, t.Wp = (g.W - t.wf - 1) / g.sw + 1;  // (hf < H: no overflow)
    phase_taps(t.hf, g.pt, g.sh, g.dh, g.R, t.r0, t.rstep, t.Rp);
    phase_taps(t.wf, g.pl, g.sw, g.dw, g.S, t.s0, t.sstep, t.Sp);
    t.M = g.Cg, t.N = g.nb * t.Hp * t.Wp, t.K = g.Kg * t.Rp * t.Sp;
    t.by_HWp = FastDivmod(static_cast<uint32_t>(t.Hp * t.Wp));
    t.by_Wp = FastDivmod(static_cast<uint32_t>(t.Wp));
    t.by_RSp = FastDivmod(static_cast<uint32_t>(t.Rp * t.Sp > 0 ? t.Rp * t.Sp : 1));
    t.by_Sp = FastDivmod(static_cast<uint32_t>(t.Sp > 0 ? t.Sp : 1));
    return t;
  }
  // k of the unit -> (output channel, r, s).
  __device__ __forceinline__ void tap(const Unit& u, int k, int& kc, int& r, int& s) const {
    uint32_t q, rs, ri, si;
    u.by_RSp.divmod(static_cast<uint32_t>(k), q, rs);
    u.by_Sp.divmod(rs, ri, si);
    kc = static_cast<int>(q), r = u.r0 + static_cast<int>(ri) * u.rstep, s = u.s0 + static_cast<int>(si) * u.sstep;
  }
  struct ColA {
    const T* base;  // W[grp*Kg][c][0][0], nullptr past M
  };
  __device__ __forceinline__ ColA col_a(const Unit& u, int m) const {
    return ColA{m < u.M ? w + static_cast<int64_t>(u.grp) * g.Kg * g.CgRS + static_cast<int64_t>(m) * g.RS : nullptr};
  }
  __device__ __forceinline__ const T* elem_a(const Unit& u, const ColA& c, int k) const {
    if (!c.base || k >= u.K) return nullptr;
    int kc, r, s;
    tap(u, k, kc, r, s);
    return c.base + static_cast<int64_t>(kc) * g.CgRS + r * g.S + s;
  }
  struct ColB {
    const T* base;  // dy of the pixel's image and group, nullptr past N
    int th, tw;     // the pixel is (hf + th sh, wf + tw sw)
  };
  __device__ __forceinline__ ColB col_b(const Unit& u, int n) const {
    if (n >= u.N) return ColB{nullptr, 0, 0};
    uint32_t img, t, th, tw;
    u.by_HWp.divmod(static_cast<uint32_t>(n), img, t);
    u.by_Wp.divmod(t, th, tw);
    return ColB{dy + img * g.KPQ + static_cast<int64_t>(u.grp) * g.Kg * g.PQ, static_cast<int>(th),
                static_cast<int>(tw)};
  }
  __device__ __forceinline__ const T* elem_b(const Unit& u, const ColB& c, int k) const {
    if (!c.base || k >= u.K) return nullptr;
    int kc, r, s;
    tap(u, k, kc, r, s);
    // exact divisions: the phase's taps make the numerators multiples of the strides
    const int p = c.th + (u.hf + g.pt - r * g.dh) / g.sh, q = c.tw + (u.wf + g.pl - s * g.dw) / g.sw;
    if (!in_plane(p, q, g.P, g.Q)) return nullptr;
    return c.base + static_cast<int64_t>(kc) * g.PQ + p * g.Q + q;
  }
  __device__ __forceinline__ int64_t out_offset(const Unit& u, int m, int n) const {
    uint32_t img, t, th, tw;
    u.by_HWp.divmod(static_cast<uint32_t>(n), img, t);
    u.by_Wp.divmod(t, th, tw);
    const int h = u.hf + static_cast<int>(th) * g.sh, wc = u.wf + static_cast<int>(tw) * g.sw;
    return img * g.CHW + (static_cast<int64_t>(u.grp) * g.Cg + m) * g.HW + h * g.W + wc;
  }
  __device__ __forceinline__ void store(const Unit& u, int split, int m, int n, acc_t<T> v) const {
    const int64_t off = out_offset(u, m, n);
    if (part)
      part[split * count + off] = v;
    else
      dx[off] = from_acc<T>(v);
  }
};

template <typename T>
struct BwdWeight {
  static constexpr bool kAKFast = true, kBKFast = true;
  Geom g;
  const T* dy;
  const T* x;
  T* dw;
  acc_t<T>* part;  // the slabs, or nullptr: one split, one chunk, stored straight into dw
  int64_t count;   // K * Cg * R * S
  bool accumulate;  // a later chunk: add to the slabs

  __device__ __forceinline__ const T* any() const { return x; }

  __device__ __forceinline__ Unit unit(int u) const {
    Unit t{};
    t.grp = u, t.M = g.Kg, t.N = g.CgRS, t.K = g.nb * g.PQ;
    return t;
  }
  struct ColA {
    const T* base;  // dy[0][grp*Kg + m], nullptr past M
  };
  __device__ __forceinline__ ColA col_a(const Unit& u, int m) const {
    return ColA{m < u.M ? dy + (static_cast<int64_t>(u.grp) * g.Kg + m) * g.PQ : nullptr};
  }
  __device__ __forceinline__ const T* elem_a(const Unit& u, const ColA& c, int k) const {
    if (!c.base || k >= u.K) return nullptr;
    uint32_t img, pq;
    g.by_PQ.divmod(static_cast<uint32_t>(k), img, pq);
    return c.base + img * g.KPQ + pq;
  }
  struct ColB {
    const T* base;  // x[0][grp*Cg + c], nullptr past N
    int rh, sw;     // r dh - pt, s dw - pl
  };
  __device__ __forceinline__ ColB col_b(const Unit& u, int n) const {
    if (n >= u.N) return ColB{nullptr, 0, 0};
    uint32_t c, rs, r, s;
    g.by_RS.divmod(static_cast<uint32_t>(n), c, rs);
    g.by_S.divmod(rs, r, s);
    return ColB{x + (static_cast<int64_t>(u.grp) * g.Cg + c) * g.HW, static_cast<int>(r) * g.dh - g.pt,
                static_cast<int>(s) * g.dw - g.pl};
  }
  __device__ __forceinline__ const T* elem_b(const Unit& u, const ColB& c, int k) const {
    if (!c.base || k >= u.K) return nullptr;
    uint32_t img, pq, p, q;
    g.by_PQ.divmod(static_cast<uint32_t>(k), img, pq);
    g.by_Q.divmod(pq, p, q);
    const int h = static_cast<int>(p) * g.sh + c.rh, wc = static_cast<int>(q) * g.sw + c.sw;
    if (!in_plane(h, wc, g.H, g.W)) return nullptr;
    return c.base + img * g.CHW + h * g.W + wc;
  }
  __device__ __forceinline__ void store(const Unit& u, int split, int m, int n, acc_t<T> v) const {
    const int64_t off = (static_cast<int64_t>(u.grp) * g.Kg + m) * g.CgRS + n;
    if (part) {
      acc_t<T>* p = part + split * count + off;
      *p = accumulate ? *p + v : v;
    } else {
      dw[off] = from_acc<T>(v);
    }
  }
};

// ---- the kernel --------------------------------------------------------------------------------

// Both operands' tiles, kStages deep, in one 16-byte aligned block (lds4 reads 16 bytes).
template <typename S, int kStages, int BK, int LDA, int LDB>
struct alignas(16) Shared {
  S As[kStages][BK][LDA];
  S Bs[kStages][BK][LDB];
};

// Whether T's operands move by cp.async (4- and 8-byte elements) when the pipeline is not
// forced to registers.
template <typename T>
constexpr bool kAsyncCopyable = sizeof(T) == 4 || sizeof(T) == 8;

// One block: rows [m0, m0 + BM) and columns [n0, n0 + BN) of its unit's GEMM over its split's
// k-tiles. z = blockIdx.z + z0 = unit * splits + split. kAsync: the kStages-deep cp.async
// pipeline (shared memory in T); else two register-staged buffers in the accumulator type.
template <typename T, class Cfg, class Prob, bool kAsync, int kStages>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocksPerSm)
    igemm_kernel(Prob prob, int splits, int y0, int z0) {
  using A = acc_t<T>;
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, kThreads = Cfg::kThreads;
  constexpr int LDA = BM + Cfg::kPad, LDB = BN + Cfg::kPad;
  constexpr int kBuffers = kAsync ? kStages : 2;
  using S = std::conditional_t<kAsync, T, A>;
  static_assert(!kAsync || (kAsyncCopyable<T> && kStages >= 2), "cp.async moves 4- or 8-byte elements");
  using WalkA = Walk<BK, BM, kThreads, Prob::kAKFast>;
  using WalkB = Walk<BK, BN, kThreads, Prob::kBKFast>;
  using Tiles = Shared<S, kBuffers, BK, LDA, LDB>;
  CK_SHARED(Tiles, tiles, );
  auto& As = tiles.As;
  auto& Bs = tiles.Bs;

  const int tid = static_cast<int>(threadIdx.x);
  const int tx = tid % Cfg::kThreadsN, ty = tid / Cfg::kThreadsN;
  const int z = static_cast<int>(blockIdx.z) + z0;
  const int split = z % splits;
  const Unit u = prob.unit(z / splits);
  const int m0 = (static_cast<int>(blockIdx.y) + y0) * BM, n0 = static_cast<int>(blockIdx.x) * BN;
  if (m0 >= u.M || n0 >= u.N) return;  // past this unit's GEMM (grad input's smaller phases); whole block

  const int ktiles = (u.K + BK - 1) / BK;
  const int per_split = (ktiles + splits - 1) / splits;
  const int kt_begin = min(split * per_split, ktiles), kt_end = min(kt_begin + per_split, ktiles);

  // Each thread's columns, precomputed once.
  typename Prob::ColA ca[WalkA::kStates];
  typename Prob::ColB cb[WalkB::kStates];
#pragma unroll
  for (int i = 0; i < WalkA::kStates; ++i) ca[i] = prob.col_a(u, m0 + WalkA::col(tid, i));
#pragma unroll
  for (int i = 0; i < WalkB::kStates; ++i) cb[i] = prob.col_b(u, n0 + WalkB::col(tid, i));
  const auto state_a = [&](int i) -> const typename Prob::ColA& { return ca[WalkA::kStates == 1 ? 0 : i]; };
  const auto state_b = [&](int i) -> const typename Prob::ColB& { return cb[WalkB::kStates == 1 ? 0 : i]; };

  A acc[Cfg::TM][Cfg::TN];
#pragma unroll
  for (int i = 0; i < Cfg::TM; ++i)
#pragma unroll
    for (int j = 0; j < Cfg::TN; ++j) acc[i][j] = A(0);

  if constexpr (kAsync) {
    // Stage kt's copies into buffer `buf`: zeros where the problem says so (src unread then).
    const T* any = prob.any();
    auto issue = [&](int kt, int buf) {
      const int k0 = kt * BK;
#pragma unroll
      for (int i = 0; i < WalkA::kPer; ++i) {
        const int r = WalkA::row(tid, i), c = WalkA::col(tid, i);
        const T* src = prob.elem_a(u, state_a(i), k0 + r);
        cp_async<sizeof(T)>(&As[buf][r][c], src ? src : any, src != nullptr);
      }
#pragma unroll
      for (int i = 0; i < WalkB::kPer; ++i) {
        const int r = WalkB::row(tid, i), c = WalkB::col(tid, i);
        const T* src = prob.elem_b(u, state_b(i), k0 + r);
        cp_async<sizeof(T)>(&Bs[buf][r][c], src ? src : any, src != nullptr);
      }
    };
    // Prologue: the first kStages - 1 stages in flight (a group each, empty past the end).
#pragma unroll
    for (int st = 0; st < kStages - 1; ++st) {
      if (kt_begin + st < kt_end) issue(kt_begin + st, st);
      cp_async_commit();
    }
    for (int kt = kt_begin; kt < kt_end; ++kt) {
      const int t = kt - kt_begin;
      cp_async_wait<kStages - 2>();  // this thread's copies of stage kt have landed
      __syncthreads();               // everyone's have; and everyone is done with stage kt - 1
      if (kt + kStages - 1 < kt_end) issue(kt + kStages - 1, (t + kStages - 1) % kStages);
      cp_async_commit();
      gemm_detail::tile_fma<Cfg, LDA, LDB>(As[t % kStages], Bs[t % kStages], ty, tx, acc);
    }
  } else {
    A ra[WalkA::kPer], rb[WalkB::kPer];  // the next stage, on its way from global memory
    auto load = [&](int kt) {
      const int k0 = kt * BK;
#pragma unroll
      for (int i = 0; i < WalkA::kPer; ++i) {
        const T* src = prob.elem_a(u, state_a(i), k0 + WalkA::row(tid, i));
        ra[i] = src ? to_acc(load_ro(src)) : A(0);
      }
#pragma unroll
      for (int i = 0; i < WalkB::kPer; ++i) {
        const T* src = prob.elem_b(u, state_b(i), k0 + WalkB::row(tid, i));
        rb[i] = src ? to_acc(load_ro(src)) : A(0);
      }
    };
    auto store = [&](int buf) {
#pragma unroll
      for (int i = 0; i < WalkA::kPer; ++i) As[buf][WalkA::row(tid, i)][WalkA::col(tid, i)] = ra[i];
#pragma unroll
      for (int i = 0; i < WalkB::kPer; ++i) Bs[buf][WalkB::row(tid, i)][WalkB::col(tid, i)] = rb[i];
    };
    if (kt_begin < kt_end) {
      load(kt_begin);
      store(0);
    }
    __syncthreads();
    int buf = 0;
    for (int kt = kt_begin; kt < kt_end; ++kt) {
      const bool more = kt + 1 < kt_end;  // uniform across the block
      if (more) load(kt + 1);
      gemm_detail::tile_fma<Cfg, LDA, LDB>(As[buf], Bs[buf], ty, tx, acc);
      if (more) store(buf ^ 1);
      __syncthreads();
      buf ^= 1;
    }
  }

  // Epilogue: every output of the block's tile inside the unit's GEMM.
#pragma unroll
  for (int i = 0; i < Cfg::TM; ++i) {
    const int m = m0 + gemm_detail::tile_row<Cfg>(i, ty);
    if (m >= u.M) continue;
#pragma unroll
    for (int j = 0; j < Cfg::TN; ++j) {
      const int n = n0 + gemm_detail::tile_col<Cfg>(j, tx);
      if (n < u.N) prob.store(u, split, m, n, acc[i][j]);
    }
  }
}

#if CK_HAVE_HALF
// ---- tensor cores (float16, bfloat16) --------------------------------------------------------

// The tensor-core block tile: BM x BN outputs, k-steps of 16 (one WMMA k), warps of WM x WN
// outputs each as (WM / 16) x (WN / 16) 16x16 float accumulator fragments.
template <int BM_, int BN_, int WM_, int WN_>
struct TcTile {
  static constexpr int BM = BM_, BN = BN_, BK = 16, WM = WM_, WN = WN_;
  static constexpr int kWarpsM = BM / WM, kWarpsN = BN / WN, kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int FM = WM / 16, FN = WN / 16;
  // shared rows: 16-bit operands 8 elements past the tile (WMMA wants ldm a multiple of 8 and
  // fragment bases 32-byte aligned: every base below is a multiple of 16 elements into a row);
  // the float staging of the accumulators 4 past
  static constexpr int LDA = BM + 8, LDB = BN + 8, LDC = BN + 4;
  static_assert(BM % WM == 0 && BN % WN == 0 && WM % 16 == 0 && WN % 16 == 0, "tile shape");
};
using TcTileDefault = TcTile<64, 64, 32, 32>;  // 4 warps, 2 x 2 fragments each

template <typename T, int LDA, int LDB, int BM, int LDC>
struct alignas(32) TcShared {
  T As[2][16][LDA];  // A's k-step (k, m): an A fragment reads it column-major
  T Bs[2][16][LDB];  // B's k-step (k, n): a B fragment reads it row-major
  float Cs[BM][LDC];  // the accumulators, staged for the problem's stores
};

// The block's tile as igemm_kernel's register-staged path computes it, with the inner product on
// the tensor cores (nvcuda::wmma: float accumulation of the 16-bit products, exact in float),
// then the accumulators staged in shared memory and stored through the problem (split partials
// included). Four blocks an SM (the plan model's figure; 26.6 KB of shared memory each): the
// bound caps registers at 128, where ptxas otherwise spilled the float16 forward at 96.
template <typename T, class Cfg, class Prob>
__global__ void __launch_bounds__(Cfg::kThreads, 4) igemm_tc_kernel(Prob prob, int splits, int y0, int z0) {
  using namespace nvcuda;
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, kThreads = Cfg::kThreads;
  using WalkA = Walk<BK, BM, kThreads, Prob::kAKFast>;
  using WalkB = Walk<BK, BN, kThreads, Prob::kBKFast>;
  using Tiles = TcShared<T, Cfg::LDA, Cfg::LDB, BM, Cfg::LDC>;
  CK_SHARED(Tiles, tiles, );
  auto& As = tiles.As;
  auto& Bs = tiles.Bs;
  auto& Cs = tiles.Cs;

  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / 32, wm = warp / Cfg::kWarpsN, wn = warp % Cfg::kWarpsN;
  const int z = static_cast<int>(blockIdx.z) + z0;
  const int split = z % splits;
  const Unit u = prob.unit(z / splits);
  const int m0 = (static_cast<int>(blockIdx.y) + y0) * BM, n0 = static_cast<int>(blockIdx.x) * BN;
  if (m0 >= u.M || n0 >= u.N) return;  // whole block

  const int ktiles = (u.K + BK - 1) / BK;
  const int per_split = (ktiles + splits - 1) / splits;
  const int kt_begin = min(split * per_split, ktiles), kt_end = min(kt_begin + per_split, ktiles);

  typename Prob::ColA ca[WalkA::kStates];
  typename Prob::ColB cb[WalkB::kStates];
#pragma unroll
  for (int i = 0; i < WalkA::kStates; ++i) ca[i] = prob.col_a(u, m0 + WalkA::col(tid, i));
#pragma unroll
  for (int i = 0; i < WalkB::kStates; ++i) cb[i] = prob.col_b(u, n0 + WalkB::col(tid, i));

  T ra[WalkA::kPer], rb[WalkB::kPer];
  const T zero = from_acc<T>(0.0f);
  auto load = [&](int kt) {
    const int k0 = kt * BK;
#pragma unroll
    for (int i = 0; i < WalkA::kPer; ++i) {
      const T* src = prob.elem_a(u, ca[WalkA::kStates == 1 ? 0 : i], k0 + WalkA::row(tid, i));
      ra[i] = src ? load_ro(src) : zero;
    }
#pragma unroll
    for (int i = 0; i < WalkB::kPer; ++i) {
      const T* src = prob.elem_b(u, cb[WalkB::kStates == 1 ? 0 : i], k0 + WalkB::row(tid, i));
      rb[i] = src ? load_ro(src) : zero;
    }
  };
  auto store = [&](int buf) {
#pragma unroll
    for (int i = 0; i < WalkA::kPer; ++i) As[buf][WalkA::row(tid, i)][WalkA::col(tid, i)] = ra[i];
#pragma unroll
    for (int i = 0; i < WalkB::kPer; ++i) Bs[buf][WalkB::row(tid, i)][WalkB::col(tid, i)] = rb[i];
  };

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[Cfg::FM][Cfg::FN];
#pragma unroll
  for (int i = 0; i < Cfg::FM; ++i)
#pragma unroll
    for (int j = 0; j < Cfg::FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  if (kt_begin < kt_end) {
    load(kt_begin);
    store(0);
  }
  __syncthreads();
  int buf = 0;
  for (int kt = kt_begin; kt < kt_end; ++kt) {
    const bool more = kt + 1 < kt_end;  // uniform across the block
    if (more) load(kt + 1);
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::col_major> fa[Cfg::FM];
    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb[Cfg::FN];
#pragma unroll
    for (int i = 0; i < Cfg::FM; ++i) wmma::load_matrix_sync(fa[i], &As[buf][0][wm * Cfg::WM + i * 16], Cfg::LDA);
#pragma unroll
    for (int j = 0; j < Cfg::FN; ++j) wmma::load_matrix_sync(fb[j], &Bs[buf][0][wn * Cfg::WN + j * 16], Cfg::LDB);
#pragma unroll
    for (int i = 0; i < Cfg::FM; ++i)
#pragma unroll
      for (int j = 0; j < Cfg::FN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    if (more) store(buf ^ 1);
    __syncthreads();
    buf ^= 1;
  }

  // Epilogue: the accumulators through shared memory, then every output of the tile inside the
  // unit's GEMM stored by the problem.
#pragma unroll
  for (int i = 0; i < Cfg::FM; ++i)
#pragma unroll
    for (int j = 0; j < Cfg::FN; ++j)
      wmma::store_matrix_sync(&Cs[wm * Cfg::WM + i * 16][wn * Cfg::WN + j * 16], acc[i][j], Cfg::LDC,
                              wmma::mem_row_major);
  __syncthreads();
  for (int e = tid; e < BM * BN; e += kThreads) {
    const int r = e / BN, c = e - r * BN, m = m0 + r, n = n0 + c;
    if (m < u.M && n < u.N) prob.store(u, split, m, n, Cs[r][c]);
  }
}
#endif

// Forward's split-K reduction: y[i] = sum over s < splits of part[s * count + i] in order of s
// (+ bias[(i / PQ) % K] when bias is given), rounded once to T. (Grad input and grad weight have
// no bias: gemm.h's splitk_reduce sums theirs the same way.)
template <typename T>
__global__ void igemm_reduce_kernel(const acc_t<T>* __restrict__ part, int splits, int64_t count,
                                    const T* __restrict__ bias, int64_t PQ, int64_t K, T* __restrict__ out) {
  using A = acc_t<T>;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += step) {
    A sum = A(0);
    for (int s = 0; s < splits; ++s) sum += part[s * count + i];
    if (bias) sum += to_acc(load_ro(bias + (i / PQ) % K));
    out[i] = from_acc<T>(sum);
  }
}

// ---- host side -------------------------------------------------------------------------------

// The block tiles a plan chooses from (conv_implicit_gemm.cu's plan(); variant.h's igemm_tile
// forces one): float and the half types (accumulating in float) and double, whose register file
// holds half as many values, so half the tile.
//   big     8 x 8 a thread: the most FMAs per shared-memory read, for layers with many outputs
//   small   4 x 4: four times the blocks of big, for mid-sized layers
//   narrow  few rows (output channels in forward and grad weight, input channels in grad input)
//   short   few columns (pixels: 7x7 layers at batch 1; taps in grad weight)
enum class TileId : int { Big = 0, Small = 1, Narrow = 2, Short = 3 };
constexpr int kTileCount = 4;

template <typename T>
struct TileSet {
  using Big = Tile<128, 128, 8, 8, 8>;
  using Small = Tile<64, 64, 8, 4, 4>;
  using Narrow = Tile<32, 128, 8, 4, 4>;
  using Short = Tile<128, 32, 8, 4, 4>;
};
template <>
struct TileSet<double> {
  using Big = Tile<64, 64, 8, 4, 4>;
  using Small = Tile<32, 32, 8, 4, 4>;
  using Narrow = Tile<16, 64, 8, 4, 4>;
  using Short = Tile<64, 16, 8, 4, 4>;
};

// The cp.async pipeline's depth: three k-steps in flight while one is multiplied.
constexpr int kStages = 4;

struct Plan {
  TileId tile;  // (SIMT tiles; the tensor-core kernel has one, TcTileDefault)
  int splits;
  bool async;         // cp.async pipeline (float, double) or register-staged
  bool tensor_cores;  // float16 / bfloat16 on igemm_tc_kernel
};

// Whether T's multiply-adds can run on the tensor cores (16-bit inputs, float accumulation).
template <typename T>
constexpr bool kTensorCoreType =
#if CK_HAVE_HALF
    std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value;
#else
    false;
#endif

template <typename T, class Fn>
void with_tile(TileId id, Fn&& fn) {
  switch (id) {
    case TileId::Big:
      fn(typename TileSet<T>::Big{});
      return;
    case TileId::Small:
      fn(typename TileSet<T>::Small{});
      return;
    case TileId::Narrow:
      fn(typename TileSet<T>::Narrow{});
      return;
    case TileId::Short:
      fn(typename TileSet<T>::Short{});
      return;
  }
}

// Launches prob's GEMMs: `units` of them, each at most max_m x max_n, split plan.splits ways,
// in as many launches as the grid's y and z limits need.
template <typename T, class Prob>
void launch_problem(const char* name, const Prob& prob, int units, int64_t max_m, int64_t max_n, const Plan& plan,
                    StreamHandle stream) {
  const int64_t zs = static_cast<int64_t>(units) * plan.splits;
#if CK_HAVE_HALF
  if constexpr (kTensorCoreType<T>) {
    if (plan.tensor_cores) {
      using Cfg = TcTileDefault;
      const int64_t gx = (max_n + Cfg::BN - 1) / Cfg::BN, gy = (max_m + Cfg::BM - 1) / Cfg::BM;
      for (int64_t y0 = 0; y0 < gy; y0 += 65535)
        for (int64_t z0 = 0; z0 < zs; z0 += 65535)
          launch(name, igemm_tc_kernel<T, Cfg, Prob>,
                 dim3(static_cast<unsigned>(gx), static_cast<unsigned>(std::min<int64_t>(65535, gy - y0)),
                      static_cast<unsigned>(std::min<int64_t>(65535, zs - z0))),
                 dim3(Cfg::kThreads), 0, stream, prob, plan.splits, static_cast<int>(y0), static_cast<int>(z0));
      return;
    }
  }
#endif
  with_tile<T>(plan.tile, [&](auto cfg) {
    using Cfg = decltype(cfg);
    const int64_t gx = (max_n + Cfg::BN - 1) / Cfg::BN, gy = (max_m + Cfg::BM - 1) / Cfg::BM;
    auto kernel = [&]() {
      if constexpr (kAsyncCopyable<T>)
        if (plan.async) return igemm_kernel<T, Cfg, Prob, true, kStages>;
      return igemm_kernel<T, Cfg, Prob, false, 2>;
    }();
    for (int64_t y0 = 0; y0 < gy; y0 += 65535)
      for (int64_t z0 = 0; z0 < zs; z0 += 65535)
        launch(name, kernel,
               dim3(static_cast<unsigned>(gx), static_cast<unsigned>(std::min<int64_t>(65535, gy - y0)),
                    static_cast<unsigned>(std::min<int64_t>(65535, zs - z0))),
               dim3(Cfg::kThreads), 0, stream, prob, plan.splits, static_cast<int>(y0), static_cast<int>(z0));
  });
}

template <typename T>
void reduce_forward(const acc_t<T>* part, int splits, int64_t count, const T* bias, int64_t PQ, int64_t K, T* out,
                    StreamHandle stream) {
  if (count <= 0) return;
  launch("igemm_reduce_kernel", igemm_reduce_kernel<T>, dim3(grid_blocks(count, 256)), dim3(256), 0, stream, part,
         splits, count, bias, PQ, K, out);
}

// One pass over the batch in chunks of `chunk` images (conv_implicit_gemm.cu sizes the chunk
// and the plan; ws holds plan.splits slabs of a chunk's outputs when plan.splits > 1).
// make_geom fills the chunk-independent fields; nb is set per chunk.
template <typename T>
void run_fwd(const ConvParams& p, Geom g, const T* x, const T* w, const T* b, T* y, acc_t<T>* ws,
             const Plan& plan, int64_t chunk, StreamHandle stream) {
  for (int64_t n0 = 0; n0 < p.N; n0 += chunk) {
    g.nb = static_cast<int>(std::min(chunk, p.N - n0));
    Fwd<T> prob{g, x + n0 * g.CHW, w, b, y + n0 * g.KPQ, plan.splits > 1 ? ws : nullptr, g.nb * g.KPQ};
    launch_problem<T>("igemm_fwd_kernel", prob, g.groups, g.Kg, static_cast<int64_t>(g.nb) * g.PQ, plan, stream);
    if (plan.splits > 1) reduce_forward<T>(ws, plan.splits, prob.count, b, g.PQ, g.K, prob.y, stream);
  }
}

template <typename T>
void run_bwd_input(const ConvParams& p, Geom g, const T* dy, const T* w, T* dx, acc_t<T>* ws, const Plan& plan,
                   int64_t chunk, StreamHandle stream) {
  const int ph = std::min(g.sh, g.H), pw = std::min(g.sw, g.W);
  const int64_t max_n_image = static_cast<int64_t>((g.H - 1) / g.sh + 1) * ((g.W - 1) / g.sw + 1);
  for (int64_t n0 = 0; n0 < p.N; n0 += chunk) {
    g.nb = static_cast<int>(std::min(chunk, p.N - n0));
    BwdInput<T> prob{g, dy + n0 * g.KPQ, w, dx + n0 * g.CHW, plan.splits > 1 ? ws : nullptr, g.nb * g.CHW, pw};
    launch_problem<T>("igemm_bwd_input_kernel", prob, ph * pw * g.groups, g.Cg, g.nb * max_n_image, plan, stream);
    if (plan.splits > 1) splitk_reduce<T>(ws, plan.splits, prob.count, prob.dx, stream);
  }
}

template <typename T>
void run_bwd_weight(const ConvParams& p, Geom g, const T* dy, const T* x, T* dw, acc_t<T>* ws, const Plan& plan,
                    int64_t chunk, StreamHandle stream) {
  const bool slabs = plan.splits > 1 || chunk < p.N;
  const int64_t count = static_cast<int64_t>(g.K) * g.CgRS;
  for (int64_t n0 = 0; n0 < p.N; n0 += chunk) {
    g.nb = static_cast<int>(std::min(chunk, p.N - n0));
    BwdWeight<T> prob{g, dy + n0 * g.KPQ, x + n0 * g.CHW, dw, slabs ? ws : nullptr, count, n0 > 0};
    launch_problem<T>("igemm_bwd_weight_kernel", prob, g.groups, g.Kg, g.CgRS, plan, stream);
  }
  if (slabs) splitk_reduce<T>(ws, plan.splits, count, dw, stream);
}

#define CONVKIT_INSTANTIATE_IGEMM(T)                                                                         \
  template void run_fwd<T>(const ConvParams&, Geom, const T*, const T*, const T*, T*, acc_t<T>*, const Plan&, \
                           int64_t, StreamHandle);                                                            \
  template void run_bwd_input<T>(const ConvParams&, Geom, const T*, const T*, T*, acc_t<T>*, const Plan&,     \
                                 int64_t, StreamHandle);                                                      \
  template void run_bwd_weight<T>(const ConvParams&, Geom, const T*, const T*, T*, acc_t<T>*, const Plan&,    \
                                  int64_t, StreamHandle);

}  // namespace igemm
}  // namespace convkit::cuda
