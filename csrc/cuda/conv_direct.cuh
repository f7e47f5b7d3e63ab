// The direct convolution's internal vocabulary, shared by its sources: conv_direct.cu (the
// direct:: entry points of conv_algos.h: a pass's geometry, the choice of kernel, grad weight's
// plan), conv_direct_general.cu (the general forward / grad-input kernel),
// conv_direct_depthwise.cu (the depthwise forward / grad-input and grad-weight kernels) and
// conv_direct_grad_weight.cu (the general grad-weight kernel). It holds the block-shape
// constants, the geometry and tiling structs a launch hands its kernel, the helpers several of
// them use, and the launchers each kernel file offers the entry points.
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/dtype.h"
#include "cuda/fast_divmod.cuh"
#include "cuda/runtime.h"

namespace convkit::cuda::direct {

constexpr int kThreads = 256;        // threads of a block at most (every kernel here)
constexpr int kWarp = 32;
constexpr int kPpt = 4;              // output rows per thread (one column), direct and depthwise
// Dynamic shared memory a launch plans for: under the 48 KiB that needs no opt-in, and small
// enough that several blocks share an SM.
constexpr int64_t kSmemBytes = 32 * 1024;
// Grad weight (general): a block tile of kWBk output channels x kWBj (c, r, s) columns, the
// reduction taken kWPix pixels a stage. The split of N*P*Q aims at kWTargetBlocks blocks (a
// constant, so the workspace size is the same on every device), each split at least
// kWMinSplit pixels (depthwise: one plane tile) long.
constexpr int kWBk = 64;
constexpr int kWBj = 128;
constexpr int kWPix = 16;
constexpr int64_t kWTargetBlocks = 1024;
constexpr int64_t kWMinSplit = 256;
// Grad weight (depthwise): taps a thread accumulates in registers, for windows up to 3x3 / 5x5.
constexpr int kDwTapsSmall = 9;
constexpr int kDwTapsLarge = 25;

// One pass of the direct kernels as a correlation: output element (o, t, u) of a group is the
// sum over its n_red reduction channels i and taps (a, b) of
//   in[i][t * str_h + a * dil_h + base_h][u * str_w + b * dil_w + base_w] * weight(o, i, a, b),
// weight(o, i, a, b) = w[o * w_out + i * w_red + (wr0 + a * wr_step) * w_cols + ws0 + b * ws_step],
// zero outside the input. Forward: in = x, out = y, the taps are the kernel's. Grad input: one
// stride phase (rows ph + sh * t, columns pw + sw * u of dx), in = dy, the taps are the kernel
// rows / columns of that residue class in reverse (see bwd_phase_geom).
struct DirectGeom {
  int groups, n_red, n_out;            // groups; reduction and output channels per group
  int64_t in_img, in_plane;            // input: elements per image, per channel plane
  int in_h, in_w;                      // input plane (its row pitch is in_w)
  int64_t out_img, out_plane, out_off; // output: per image, per plane; element (0, 0) of the grid
  int out_rs, out_cs;                  // output: row and column strides of the grid
  int out_h, out_w;                    // output grid
  int str_h, str_w, dil_h, dil_w, base_h, base_w;
  int taps_h, taps_w;
  int wr0, wr_step, ws0, ws_step, w_cols;
  int64_t w_out, w_red, w_group;
};

// A depthwise launch: threads (nch plane slots) x (rg row groups) x (bq columns); a slot's
// tile is bp = rg * kPpt rows x bq columns of one output plane, its input patch xs[slot][ih][iw]
// always dense. Grad weight: a block owns nch output channels and the split's run of the
// items (n, tile) of every channel, per_split items a split.
struct DwTiling {
  int bq, rg, nch, ih, iw;
  int tiles_q, tiles_p;
  int64_t planes, tiles;
  int64_t items, per_split, kgroups;
  int splits;
  FastDivmod by_plane, by_iw;  // patch element -> (slot, row, column)
  FastDivmod by_tile, by_bq;   // dy tile element -> (slot, row, column)
};

// Grad weight (general): dw[g][k][j], j = (c * R + r) * S + s < J = Cg * R * S, as a product of
// dy [Kg][N*P*Q] and the gathered windows of x [J][N*P*Q], split over N*P*Q.
struct WGeom {
  int groups, Cg, Kg, K, R, S, H, W, P, Q;
  int str_h, str_w, dil_h, dil_w, pad_t, pad_l;
  int J;
  int64_t HW, PQ, CHW, KPQ, L;
  int tiles_k, tiles_j, splits;
  int64_t split_len, blocks;
};

// ---- device helpers of the kernels -----------------------------------------------------------

// 8 consecutive accumulator values from a 16-byte aligned shared-memory address (checked
// under the emulator).
__device__ __forceinline__ void lds8(const float* p, float (&v)[8]) {
  const float4 a = load16(reinterpret_cast<const float4*>(p));
  const float4 b = load16(reinterpret_cast<const float4*>(p) + 1);
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}

__device__ __forceinline__ void lds8(const double* p, double (&v)[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const double2 a = load16(reinterpret_cast<const double2*>(p) + i);
    v[2 * i] = a.x, v[2 * i + 1] = a.y;
  }
}

__device__ __forceinline__ bool in_range(int v, int n) { return static_cast<unsigned>(v) < static_cast<unsigned>(n); }

// ---- host helpers of the plans ---------------------------------------------------------------

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int pow2_ceil(int64_t v) {
  int r = 1;
  while (r < v && r < (1 << 30)) r *= 2;
  return r;
}

// Tile columns by output width: whole warps along a row where it is wide, narrower tiles (and
// more rows, channels or planes per block) where it is not.
inline int tile_cols(int64_t out_w) { return out_w > 16 ? 32 : out_w > 8 ? 16 : 8; }

// Extent of the input a tile of `n` outputs reads along one axis.
inline int64_t span(int64_t n, int64_t stride, int64_t taps, int64_t dil) {
  return (n - 1) * stride + (taps > 0 ? (taps - 1) * dil : 0) + 1;
}

// ---- the kernel files' launchers ------------------------------------------------------------

// conv_direct_general.cu: plans the general kernel's tiles for one forward pass or grad-input
// phase (see DirectGeom) and launches it; b may be nullptr.
void run_general(DType dt, const DirectGeom& g, int64_t N, const void* in, const void* w, const void* b, void* out,
                 StreamHandle stream);

// conv_direct_depthwise.cu. plan_depthwise: the depthwise tiling over `planes` output planes
// (wgrad: K weight channels, whole warps), false when even the smallest tile's dense patch would
// not fit (the general kernels take the pass then). run_depthwise: forward / grad input over the
// tiling's planes (b may be nullptr). run_depthwise_grad_weight: grad weight (Cg == 1) with
// `maxt` tap accumulators a thread (kDwTapsSmall or kDwTapsLarge), partials in `part` when
// t.splits > 1, else straight into dw.
bool plan_depthwise(const DirectGeom& g, int64_t planes, int acc_bytes, bool wgrad, DwTiling& t);
void run_depthwise(DType dt, const DirectGeom& g, const DwTiling& t, const void* in, const void* w, const void* b,
                   void* out, StreamHandle stream);
void run_depthwise_grad_weight(DType dt, int maxt, const DirectGeom& g, const DwTiling& t, const void* x,
                               const void* dy, void* part, void* dw, StreamHandle stream);

// conv_direct_grad_weight.cu: grad weight (general, see WGeom); partials in `part` when
// g.splits > 1, else straight into dw.
void run_grad_weight(DType dt, const WGeom& g, const void* dy, const void* x, void* part, void* dw,
                     StreamHandle stream);

}  // namespace convkit::cuda::direct
