// conv2d by the "direct" algorithm on the GPU (NCHW / KCRS, any window, stride, padding, dilation
// and groups). Forward, and grad input one stride phase at a time (gather form), are one kernel:
// a block computes channels x pixels from an input patch and filters staged in shared memory,
// each thread 8 x 4 outputs in registers; depthwise layers have kernels of their own. Grad
// weight reduces N*P*Q per block, split partials summed in a fixed order by
// gemm.h's splitk_reduce (no atomics).
#include <algorithm>
#include <cstdint>
#include <string>

#include "common/params.h"
#include "cuda/conv_algos.h"
#include "cuda/dtype.cuh"
#include "cuda/fill.cuh"
#include "cuda/gemm.h"
#include "cuda/grid.cuh"
#include "cuda/pool_geom.cuh"
#include "cuda/runtime.h"
#include "cuda/variant.h"

namespace convkit::cuda {
namespace {

constexpr int kThreads = 256;        // threads of a block at most (every kernel here)
constexpr int kWarp = 32;
constexpr int kKpt = 8;              // direct kernel: output channels per thread
constexpr int kPpt = 4;              // output rows per thread (one column), direct and depthwise
constexpr int kMaxTk = 16;           // direct kernel: channel groups of threads at most
constexpr int kMaxCc = 8;            // direct kernel: reduction channels per shared-memory stage
constexpr int kMaxSlots = 32;        // depthwise kernels: planes per block at most
// Dynamic shared memory a launch plans for: under the 48 KiB that needs no opt-in, and small
// enough that several blocks share an SM.
constexpr int64_t kSmemBytes = 32 * 1024;
// The SM count the direct plan's tile sizes aim at: an H100 SXM's, on every device and under the
// emulator, so that a shape gets the same tiles (the same summation order, the same bits)
// everywhere. Only grid sizes (grid.cuh) follow the device; no result depends on them.
constexpr int64_t kReferenceSms = 132;
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

// A direct-kernel launch: threads (tk channel groups) x (rg row groups) x (bq columns); an
// output tile of bk = tk * kKpt channels x bp = rg * kPpt rows x bq columns. Each stage holds cc
// reduction channels of filters ws[c][a][b][k] and input patch xs[c][ih][iw] for a chunk of
// th x tw taps. A dense axis holds every tap in one chunk (patch row of output row t, tap a:
// t * pa + a * pb with pa = stride, pb = dilation); a compact axis, for windows too wide for
// shared memory, takes one tap a chunk (pa = 1, pb = 0; patch rows rmul = stride apart in the
// input).
struct DirectTiling {
  int bq, rg, tk, bk_shift;
  int cc, th, tw, nrc, ncc, ih, iw;
  int pa_h, pb_h, pa_w, pb_w, rmul, cmul;
  int tiles_q, tiles_p, tiles_k;
  int64_t tiles;
  FastDivmod by_plane, by_iw;  // patch element -> (channel, row, column)
  FastDivmod by_tw, by_th;     // filter element -> (channel, a, b)
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

// 8 consecutive accumulator values from a 16-byte aligned shared-memory address.
__device__ __forceinline__ void lds8(const float* p, float (&v)[8]) {
  const float4 a = reinterpret_cast<const float4*>(p)[0];
  const float4 b = reinterpret_cast<const float4*>(p)[1];
  v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
}
__device__ __forceinline__ void lds8(const double* p, double (&v)[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const double2 a = reinterpret_cast<const double2*>(p)[i];
    v[2 * i] = a.x, v[2 * i + 1] = a.y;
  }
}

__device__ __forceinline__ bool in_range(int v, int n) { return static_cast<unsigned>(v) < static_cast<unsigned>(n); }

// The depthwise kernels' patch staging: element e < count of the block's patches is slot s,
// patch row rho, column kap (tl's divisions); it reads input row row0 + rho, column col0 + kap
// of the slot's plane (in + tab[s]; tab[s] < 0: an idle slot), 0 outside the input.
template <typename T, typename A>
__device__ __forceinline__ void stage_dw_patch(const DirectGeom& g, const DwTiling& tl, const T* in, const int64_t* tab,
                                               int row0, int col0, int count, int tid, int threads, A* xs) {
  for (int e = tid; e < count; e += threads) {
    uint32_t s, r, rho, kap;
    tl.by_plane.divmod(static_cast<uint32_t>(e), s, r);
    tl.by_iw.divmod(r, rho, kap);
    const int h = row0 + static_cast<int>(rho), w = col0 + static_cast<int>(kap);
    const int64_t off = tab[s];
    A v = A(0);
    if (off >= 0 && in_range(h, g.in_h) && in_range(w, g.in_w)) v = to_acc(load_ro(in + off + h * g.in_w + w));
    xs[e] = v;
  }
}

// Grad weight (general), static shared memory: gathered windows xs[j][pixel] (odd pitch: the
// compute's column reads are conflict-free), dy tile dys[pixel][k] (rows 16-byte aligned for
// the broadcast vector reads), and the (c, r, s) table of the block's columns.
template <typename A>
struct alignas(16) WgradSmem {
  A xs[kWBj][kWPix + 1];
  A dys[kWPix][kWBk + 4];
  int64_t jc[kWBj];  // plane offset of column j's input channel, -1 past J
  int jh[kWBj], jw[kWBj];  // r * dil_h - pad_t, s * dil_w - pad_l
};

// ---------------------------------------------------------------------------------------------
// GPU kernels

// Forward / grad input (see DirectGeom). Tile (n, group, channel tile, row tile, column tile);
// thread (tk, trow, u) owns channels k0 + tk*8 + [0, 8) at output rows t0 + trow*4 + [0, 4) of
// column u0 + u. Threads of a warp share tk (filter reads are broadcasts) and run along
// columns (patch reads hit consecutive banks). KH, KW > 0: a 3x3-style window at compile time,
// stride and dilation 1, both axes dense: each patch column of a thread is read once into
// registers and reused by the KH taps that touch it.
template <typename T, int KH, int KW>
__global__ void __launch_bounds__(kThreads)
    conv2d_direct_kernel(DirectGeom g, DirectTiling tl, const T* __restrict__ in, const T* __restrict__ w,
                         const T* __restrict__ bias, T* __restrict__ out) {
  using A = acc_t<T>;
  static constexpr int KPT = kKpt, PPT = kPpt;
  static constexpr bool kFixed = KH > 0 && KW > 0;
  CK_DYNAMIC_SHARED(A, smem);
  const int th = kFixed ? KH : tl.th, tw = kFixed ? KW : tl.tw, taps = th * tw;
  const int npt = tl.bq * tl.rg, threads = npt * tl.tk;
  const int tid = static_cast<int>(threadIdx.x);
  const int tk = tid / npt, pt = tid - tk * npt;
  const int trow = pt / tl.bq, u = pt - trow * tl.bq;
  const int bk = tl.tk * KPT, bp = tl.rg * PPT;
  const int plane_e = tl.ih * tl.iw;
  const int rstep = (kFixed ? 1 : tl.pa_h) * tl.iw;  // patch offset of the next output row
  const int cstep = kFixed ? 1 : tl.pa_w;
  A* ws = smem;                      // [cc][taps][bk]: bk a multiple of 8, so xs stays aligned
  A* xs = smem + tl.cc * taps * bk;  // [cc][ih][iw]

  for (int64_t tile = blockIdx.x; tile < tl.tiles; tile += gridDim.x) {
    int64_t rest = tile;
    const int qt = static_cast<int>(rest % tl.tiles_q);
    rest /= tl.tiles_q;
    const int ptile = static_cast<int>(rest % tl.tiles_p);
    rest /= tl.tiles_p;
    const int kt = static_cast<int>(rest % tl.tiles_k);
    rest /= tl.tiles_k;
    const int grp = static_cast<int>(rest % g.groups);
    const int64_t n = rest / g.groups;
    const int t0 = ptile * bp, u0 = qt * tl.bq, k0 = kt * bk;

    A acc[KPT][PPT];
#pragma unroll
    for (int k = 0; k < KPT; ++k) {
      const int kk = k0 + tk * KPT + k;
      const A b0 = bias != nullptr && kk < g.n_out ? to_acc(load_ro(bias + grp * g.n_out + kk)) : A(0);
#pragma unroll
      for (int m = 0; m < PPT; ++m) acc[k][m] = b0;
    }
    const T* in_g = in + n * g.in_img + static_cast<int64_t>(grp) * g.n_red * g.in_plane;
    const T* w_g = w + grp * g.w_group;

    for (int c0 = 0; c0 < g.n_red; c0 += tl.cc) {
      const int ccn = imin(tl.cc, g.n_red - c0);
      for (int ic = 0; ic < tl.nrc; ++ic) {
        for (int jc = 0; jc < tl.ncc; ++jc) {
          __syncthreads();  // the previous stage's reads are done
          // Filters of channels c0 + [0, ccn), taps of chunk (ic, jc), channels k0 + [0, bk)
          // (zero past n_out); k runs fastest, so the shared stores are conflict-free.
          const int nw = ccn * taps * bk;
          for (int e = tid; e < nw; e += threads) {
            const int k = e & (bk - 1);
            uint32_t cab, c, ab, a, b;
            cab = static_cast<uint32_t>(e >> tl.bk_shift);
            if constexpr (kFixed) {
              c = cab / (KH * KW), ab = cab - c * (KH * KW), a = ab / KW, b = ab - a * KW;
            } else {
              tl.by_tw.divmod(cab, ab, b);
              tl.by_th.divmod(ab, c, a);
            }
            const int kk = k0 + k;
            A v = A(0);
            if (kk < g.n_out) {
              const int wa = g.wr0 + (ic * th + static_cast<int>(a)) * g.wr_step;
              const int wb = g.ws0 + (jc * tw + static_cast<int>(b)) * g.ws_step;
              v = to_acc(load_ro(w_g + kk * g.w_out + (c0 + static_cast<int64_t>(c)) * g.w_red + wa * g.w_cols + wb));
            }
            ws[e] = v;
          }
          // Input patch: patch row rho, column kap of channel c is input row
          // row0 + rho * rmul, column col0 + kap * cmul (zero outside the input).
          const int row0 = g.base_h + t0 * g.str_h + ic * th * g.dil_h;
          const int col0 = g.base_w + u0 * g.str_w + jc * tw * g.dil_w;
          const T* in_c = in_g + static_cast<int64_t>(c0) * g.in_plane;
          const int nx = ccn * plane_e;
          for (int e = tid; e < nx; e += threads) {
            uint32_t c, r, rho, kap;
            tl.by_plane.divmod(static_cast<uint32_t>(e), c, r);
            tl.by_iw.divmod(r, rho, kap);
            const int h = row0 + static_cast<int>(rho) * tl.rmul;
            const int x = col0 + static_cast<int>(kap) * tl.cmul;
            A v = A(0);
            if (in_range(h, g.in_h) && in_range(x, g.in_w)) v = to_acc(load_ro(in_c + c * g.in_plane + h * g.in_w + x));
            xs[e] = v;
          }
          __syncthreads();

          for (int c = 0; c < ccn; ++c) {
            const A* xc = xs + c * plane_e + trow * PPT * rstep + u * cstep;
            const A* wc = ws + c * taps * bk + tk * KPT;
            if constexpr (kFixed) {
#pragma unroll
              for (int b = 0; b < KW; ++b) {
                A xv[PPT + KH - 1];  // patch column b of this thread's rows and the KH - 1 below
#pragma unroll
                for (int q = 0; q < PPT + KH - 1; ++q) xv[q] = xc[q * tl.iw + b];
#pragma unroll
                for (int a = 0; a < KH; ++a) {
                  A wv[KPT];
                  lds8(wc + (a * KW + b) * bk, wv);
#pragma unroll
                  for (int k = 0; k < KPT; ++k)
#pragma unroll
                    for (int m = 0; m < PPT; ++m) acc[k][m] += wv[k] * xv[m + a];
                }
              }
            } else {
              for (int a = 0; a < th; ++a) {
                for (int b = 0; b < tw; ++b) {
                  A wv[KPT];
                  lds8(wc + (a * tw + b) * bk, wv);
                  const A* xp = xc + a * tl.pb_h * tl.iw + b * tl.pb_w;
                  A xv[PPT];
#pragma unroll
                  for (int m = 0; m < PPT; ++m) xv[m] = xp[m * rstep];
#pragma unroll
                  for (int k = 0; k < KPT; ++k)
#pragma unroll
                    for (int m = 0; m < PPT; ++m) acc[k][m] += wv[k] * xv[m];
                }
              }
            }
          }
        }
      }
    }

    const int uu = u0 + u;
#pragma unroll
    for (int k = 0; k < KPT; ++k) {
      const int kk = k0 + tk * KPT + k;
      if (kk >= g.n_out || uu >= g.out_w) continue;
      T* ob = out + n * g.out_img + static_cast<int64_t>(grp * g.n_out + kk) * g.out_plane + g.out_off +
              uu * g.out_cs;
#pragma unroll
      for (int m = 0; m < PPT; ++m) {
        const int t = t0 + trow * PPT + m;
        if (t < g.out_h) ob[t * g.out_rs] = from_acc<T>(acc[k][m]);
      }
    }
  }
}

// Depthwise forward / grad input (a group's output plane sums n_red input planes, n_red or
// n_out being 1): thread (slot, trow, u) owns output rows t0 + trow*4 + [0, 4) of column u0 + u
// of plane pg * nch + slot, a flat (n, group, o) index. Each reduction channel stages the
// slots' patches and filters. kFixed: 3x3 taps, stride and dilation 1, the taps in registers
// and each patch row read once for the three output rows it feeds.
template <typename T, bool kFixed>
__global__ void __launch_bounds__(kThreads)
    conv2d_depthwise_kernel(DirectGeom g, DwTiling tl, const T* __restrict__ in, const T* __restrict__ w,
                            const T* __restrict__ bias, T* __restrict__ out) {
  using A = acc_t<T>;
  static constexpr int PPT = kPpt;
  CK_DYNAMIC_SHARED(A, smem);
  CK_SHARED(int64_t, in_tab, [kMaxSlots]);  // slot -> input plane offset of its group, -1: none
  CK_SHARED(int64_t, w_tab, [kMaxSlots]);   // slot -> offset of its filter
  const int taps_h = kFixed ? 3 : g.taps_h, taps_w = kFixed ? 3 : g.taps_w, taps = taps_h * taps_w;
  const int spt = tl.bq * tl.rg, threads = spt * tl.nch;
  const int tid = static_cast<int>(threadIdx.x);
  const int slot = tid / spt, pt = tid - slot * spt;
  const int trow = pt / tl.bq, u = pt - trow * tl.bq;
  const int bp = tl.rg * PPT, plane_e = tl.ih * tl.iw;
  A* xs = smem;                         // [nch][ih][iw]
  A* ws = smem + tl.nch * plane_e;      // [nch][taps]

  for (int64_t tile = blockIdx.x; tile < tl.tiles; tile += gridDim.x) {
    int64_t rest = tile;
    const int qt = static_cast<int>(rest % tl.tiles_q);
    rest /= tl.tiles_q;
    const int ptile = static_cast<int>(rest % tl.tiles_p);
    const int64_t pg = rest / tl.tiles_p;
    const int t0 = ptile * bp, u0 = qt * tl.bq;
    // The slots' tables: written here, read only by the staging below (behind its barrier), and
    // every staging read of the previous tile was behind the barrier that ended its staging.
    if (tid < tl.nch) {
      const int64_t e = pg * tl.nch + tid;
      int64_t in_off = -1, w_off = 0;
      if (e < tl.planes) {
        const int o = static_cast<int>(e % g.n_out);
        const int64_t ng = e / g.n_out;
        const int grp = static_cast<int>(ng % g.groups);
        in_off = (ng / g.groups) * g.in_img + static_cast<int64_t>(grp) * g.n_red * g.in_plane;
        w_off = grp * g.w_group + o * g.w_out;
      }
      in_tab[tid] = in_off;
      w_tab[tid] = w_off;
    }
    // This thread's plane.
    const int64_t plane = pg * tl.nch + slot;
    const bool live = plane < tl.planes;
    const int o = live ? static_cast<int>(plane % g.n_out) : 0;
    const int64_t ng = live ? plane / g.n_out : 0;
    const int grp = static_cast<int>(ng % g.groups);
    const int64_t n = ng / g.groups;

    A acc[PPT];
    const A b0 = live && bias != nullptr ? to_acc(load_ro(bias + grp * g.n_out + o)) : A(0);
#pragma unroll
    for (int m = 0; m < PPT; ++m) acc[m] = b0;

    const int row0 = g.base_h + t0 * g.str_h, col0 = g.base_w + u0 * g.str_w;
    for (int ir = 0; ir < g.n_red; ++ir) {
      __syncthreads();
      stage_dw_patch(g, tl, in + ir * g.in_plane, in_tab, row0, col0, tl.nch * plane_e, tid, threads, xs);
      const int nw = tl.nch * taps;
      for (int e = tid; e < nw; e += threads) {
        const int s = e / taps, ab = e - s * taps;
        const int a = ab / taps_w, b = ab - a * taps_w;
        A v = A(0);
        if (in_tab[s] >= 0)
          v = to_acc(load_ro(w + w_tab[s] + ir * g.w_red + (g.wr0 + a * g.wr_step) * g.w_cols + g.ws0 + b * g.ws_step));
        ws[e] = v;
      }
      __syncthreads();

      const A* wp = ws + slot * taps;
      if constexpr (kFixed) {
        const A* xp = xs + slot * plane_e + trow * PPT * tl.iw + u;
        A wr[9];
#pragma unroll
        for (int q = 0; q < 9; ++q) wr[q] = wp[q];
#pragma unroll
        for (int q = 0; q < PPT + 2; ++q) {  // patch row q feeds output rows q - 2 .. q
          const A x0 = xp[q * tl.iw], x1 = xp[q * tl.iw + 1], x2 = xp[q * tl.iw + 2];
#pragma unroll
          for (int a = 0; a < 3; ++a) {
            const int m = q - a;
            if (m < 0 || m >= PPT) continue;
            acc[m] += wr[a * 3] * x0;
            acc[m] += wr[a * 3 + 1] * x1;
            acc[m] += wr[a * 3 + 2] * x2;
          }
        }
      } else {
        const int rstep = g.str_h * tl.iw;
        const A* xp = xs + slot * plane_e + trow * PPT * rstep + u * g.str_w;
        for (int a = 0; a < taps_h; ++a) {
          for (int b = 0; b < taps_w; ++b) {
            const A wv = wp[a * taps_w + b];
            const A* xq = xp + a * g.dil_h * tl.iw + b * g.dil_w;
#pragma unroll
            for (int m = 0; m < PPT; ++m) acc[m] += wv * xq[m * rstep];
          }
        }
      }
    }

    const int uu = u0 + u;
    if (live && uu < g.out_w) {
      T* ob = out + n * g.out_img + static_cast<int64_t>(grp * g.n_out + o) * g.out_plane + g.out_off + uu * g.out_cs;
#pragma unroll
      for (int m = 0; m < PPT; ++m) {
        const int t = t0 + trow * PPT + m;
        if (t < g.out_h) ob[t * g.out_rs] = from_acc<T>(acc[m]);
      }
    }
  }
}

// Grad weight (general, see WGeom). Block (split, group, channel tile, column tile); thread
// (warp tk, lane) owns channels k0 + tk*8 + [0, 8) x columns j0 + lane + 32*[0, 4). Each stage
// gathers kWPix consecutive reduction pixels (n, p, q) of the split's range: x windows into
// xs[j][pixel], dy into dys[pixel][k], every staging thread on one pixel (tid % kWPix), so
// consecutive lanes read consecutive columns of x and dy. Partials go to part[split] (splits
// > 1) or straight to dw.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    conv2d_bwd_weight_direct_kernel(WGeom g, const T* __restrict__ dy, const T* __restrict__ x,
                                    acc_t<T>* __restrict__ part, T* __restrict__ dw) {
  using A = acc_t<T>;
  static constexpr int BK = kWBk, BJ = kWBj, NPIX = kWPix;
  static constexpr int KPT = BK / (kThreads / kWarp), JPT = BJ / kWarp;
  static constexpr int ROWS = kThreads / NPIX;  // staging rows a pass covers
  static_assert(KPT == 8 && BJ % ROWS == 0 && BK % ROWS == 0, "grad weight tile");
  CK_SHARED(WgradSmem<A>, sm, );
  const int tid = static_cast<int>(threadIdx.x), lane = tid % kWarp, tk = tid / kWarp;
  const int pix = tid % NPIX, row = tid / NPIX;
  const int RS = g.R * g.S;

  for (int64_t vb = blockIdx.x; vb < g.blocks; vb += gridDim.x) {
    int64_t rest = vb;
    const int jt = static_cast<int>(rest % g.tiles_j);
    rest /= g.tiles_j;
    const int kt = static_cast<int>(rest % g.tiles_k);
    rest /= g.tiles_k;
    const int grp = static_cast<int>(rest % g.groups);
    const int split = static_cast<int>(rest / g.groups);
    const int j0 = jt * BJ, k0 = kt * BK;
    // The column table: read only by the staging (behind its barrier); the previous block's
    // staging reads all came before the barrier that ended them.
    if (tid < BJ) {
      const int j = j0 + tid;
      int64_t off = -1;
      int hh = 0, ww = 0;
      if (j < g.J) {
        const int c = j / RS, rs = j - c * RS, r = rs / g.S, s = rs - r * g.S;
        off = static_cast<int64_t>(grp * g.Cg + c) * g.HW;
        hh = r * g.dil_h - g.pad_t;
        ww = s * g.dil_w - g.pad_l;
      }
      sm.jc[tid] = off;
      sm.jh[tid] = hh;
      sm.jw[tid] = ww;
    }
    const int64_t rb = split * g.split_len, re = rb + g.split_len < g.L ? rb + g.split_len : g.L;
    // (n, pp, qq): this thread's staging pixel rb + pix, advanced by NPIX a stage.
    int64_t n;
    int pp, qq;
    {
      const int64_t rho = rb + pix;
      n = rho / g.PQ;
      const int pq = static_cast<int>(rho - n * g.PQ);
      pp = pq / g.Q;
      qq = pq - pp * g.Q;
    }
    A acc[KPT][JPT];
#pragma unroll
    for (int k = 0; k < KPT; ++k)
#pragma unroll
      for (int m = 0; m < JPT; ++m) acc[k][m] = A(0);

    for (int64_t r0 = rb; r0 < re; r0 += NPIX) {
      __syncthreads();
      const bool valid = r0 + pix < re;
      const int hb = pp * g.str_h, wb = qq * g.str_w;
      const T* xn = x + (valid ? n * g.CHW : 0);
#pragma unroll
      for (int it = 0; it < BJ / ROWS; ++it) {
        const int jl = row + it * ROWS;
        const int64_t off = sm.jc[jl];
        const int h = hb + sm.jh[jl], ww = wb + sm.jw[jl];
        A v = A(0);
        if (valid && off >= 0 && in_range(h, g.H) && in_range(ww, g.W)) v = to_acc(load_ro(xn + off + h * g.W + ww));
        sm.xs[jl][pix] = v;
      }
      const T* dyn = dy + (valid ? n * g.KPQ + static_cast<int64_t>(grp * g.Kg + k0) * g.PQ + pp * g.Q + qq : 0);
#pragma unroll
      for (int it = 0; it < BK / ROWS; ++it) {
        const int kl = row + it * ROWS;
        A v = A(0);
        if (valid && k0 + kl < g.Kg) v = to_acc(load_ro(dyn + kl * g.PQ));
        sm.dys[pix][kl] = v;
      }
      __syncthreads();

#pragma unroll 4
      for (int q = 0; q < NPIX; ++q) {
        A dv[KPT], xv[JPT];
        lds8(&sm.dys[q][tk * KPT], dv);
#pragma unroll
        for (int m = 0; m < JPT; ++m) xv[m] = sm.xs[lane + kWarp * m][q];
#pragma unroll
        for (int k = 0; k < KPT; ++k)
#pragma unroll
          for (int m = 0; m < JPT; ++m) acc[k][m] += dv[k] * xv[m];
      }
      qq += NPIX;
      while (qq >= g.Q) {
        qq -= g.Q;
        if (++pp == g.P) pp = 0, ++n;
      }
    }

    const int64_t KJ = static_cast<int64_t>(g.K) * g.J;
#pragma unroll
    for (int k = 0; k < KPT; ++k) {
      const int kk = k0 + tk * KPT + k;
      if (kk >= g.Kg) continue;
      const int64_t row_off = static_cast<int64_t>(grp * g.Kg + kk) * g.J;
#pragma unroll
      for (int m = 0; m < JPT; ++m) {
        const int jj = j0 + lane + kWarp * m;
        if (jj >= g.J) continue;
        if (g.splits == 1)
          dw[row_off + jj] = from_acc<T>(acc[k][m]);
        else
          part[split * KJ + row_off + jj] = acc[k][m];
      }
    }
  }
}

// Grad weight, depthwise (Cg == 1): dw[k][tap] = sum over n, p, q of dy[n][k][p][q] times x at
// tap (a, b) of output (p, q) in channel k / M. Block (split, channel group): slot s owns
// channel kg * nch + s; for each item (n, row tile, column tile) of the split it stages the
// slots' x patches and dy tiles, and thread (slot, trow, u) adds its 4 pixels' products into
// MAXT tap accumulators. Then a fixed shuffle tree per slot (and its warps in order) sums them.
template <typename T, int MAXT>
__global__ void __launch_bounds__(kThreads)
    conv2d_bwd_weight_depthwise_kernel(DirectGeom g, DwTiling tl, const T* __restrict__ x, const T* __restrict__ dy,
                                       acc_t<T>* __restrict__ part, T* __restrict__ dw) {
  using A = acc_t<T>;
  static constexpr int PPT = kPpt;
  CK_DYNAMIC_SHARED(A, smem);
  CK_SHARED(int64_t, x_tab, [kMaxSlots]);   // slot -> x plane offset (no image), -1: no channel
  CK_SHARED(int64_t, dy_tab, [kMaxSlots]);  // slot -> dy plane offset (no image)
  CK_SHARED(A, red, [kThreads / kWarp][MAXT]);
  const int taps = g.taps_h * g.taps_w;
  const int spt = tl.bq * tl.rg, threads = spt * tl.nch;
  const int tid = static_cast<int>(threadIdx.x), lane = tid % kWarp, warp = tid / kWarp;
  const int slot = tid / spt, pt = tid - slot * spt;
  const int trow = pt / tl.bq, u = pt - trow * tl.bq;
  const int bp = tl.rg * PPT, plane_e = tl.ih * tl.iw, tile_e = bp * tl.bq;
  A* xs = smem;                       // [nch][ih][iw]
  A* dys = smem + tl.nch * plane_e;   // [nch][bp][bq]
  int toff[MAXT];                     // patch offset of each tap
#pragma unroll
  for (int t = 0; t < MAXT; ++t) {
    const int a = t < taps ? t / g.taps_w : 0, b = t < taps ? t - a * g.taps_w : 0;
    toff[t] = a * g.dil_h * tl.iw + b * g.dil_w;
  }

  for (int64_t vb = blockIdx.x; vb < tl.kgroups * tl.splits; vb += gridDim.x) {
    const int64_t kg = vb % tl.kgroups;
    const int split = static_cast<int>(vb / tl.kgroups);
    if (tid < tl.nch) {  // read only by the staging, behind its barrier
      const int64_t k = kg * tl.nch + tid;
      x_tab[tid] = k < tl.planes ? (k / g.n_out) * g.in_plane : -1;
      dy_tab[tid] = k * g.out_plane;
    }
    const int64_t k = kg * tl.nch + slot;
    A acc[MAXT];
#pragma unroll
    for (int t = 0; t < MAXT; ++t) acc[t] = A(0);

    const int64_t i0 = split * tl.per_split;
    const int64_t i1 = i0 + tl.per_split < tl.items ? i0 + tl.per_split : tl.items;
    for (int64_t item = i0; item < i1; ++item) {
      int64_t rest = item;
      const int qt = static_cast<int>(rest % tl.tiles_q);
      rest /= tl.tiles_q;
      const int ptile = static_cast<int>(rest % tl.tiles_p);
      const int64_t n = rest / tl.tiles_p;
      const int t0 = ptile * bp, u0 = qt * tl.bq;
      const int row0 = g.base_h + t0 * g.str_h, col0 = g.base_w + u0 * g.str_w;
      __syncthreads();
      stage_dw_patch(g, tl, x + n * g.in_img, x_tab, row0, col0, tl.nch * plane_e, tid, threads, xs);
      const int nd = tl.nch * tile_e;
      for (int e = tid; e < nd; e += threads) {
        uint32_t s, r, tr, tc;
        tl.by_tile.divmod(static_cast<uint32_t>(e), s, r);
        tl.by_bq.divmod(r, tr, tc);
        const int t = t0 + static_cast<int>(tr), uu = u0 + static_cast<int>(tc);
        A v = A(0);
        if (x_tab[s] >= 0 && t < g.out_h && uu < g.out_w)
          v = to_acc(load_ro(dy + n * g.out_img + dy_tab[s] + t * g.out_rs + uu));
        dys[e] = v;
      }
      __syncthreads();

      const A* xp = xs + slot * plane_e + trow * PPT * g.str_h * tl.iw + u * g.str_w;
      const A* dp = dys + slot * tile_e + trow * PPT * tl.bq + u;
      // Not unrolled: unrolled, nvcc keeps all PPT * MAXT tap addresses live across items.
#pragma unroll 1
      for (int m = 0; m < PPT; ++m) {
        const A d = dp[m * tl.bq];
        const A* xm = xp + m * g.str_h * tl.iw;
#pragma unroll
        for (int t = 0; t < MAXT; ++t)
          if (t < taps) acc[t] += d * xm[toff[t]];
      }
    }

    // Sum over the slot's threads: a butterfly within each warp (lanes of one slot only when a
    // slot is narrower than a warp), then the slot's warps in order. The same tree every run.
#pragma unroll
    for (int t = 0; t < MAXT; ++t) {
      if (t >= taps) continue;
      A v = acc[t];
#pragma unroll
      for (int off = kWarp / 2; off > 0; off /= 2)
        if (off < spt) v += __shfl_xor_sync(0xffffffffu, v, off);
      if (spt >= kWarp) {
        if (lane == 0) red[warp][t] = v;
      } else {
        acc[t] = v;
      }
    }
    if (spt >= kWarp) __syncthreads();
    if (pt == 0 && k < tl.planes) {
      const int wps = spt / kWarp;  // warps of a slot (spt >= 32)
#pragma unroll
      for (int t = 0; t < MAXT; ++t) {
        if (t >= taps) continue;
        A s = acc[t];  // a slot narrower than a warp: its sum, from the butterfly
        if (spt >= kWarp) {
          s = A(0);
          for (int i = 0; i < wps; ++i) s += red[slot * wps + i][t];
        }
        if (tl.splits == 1)
          dw[k * taps + t] = from_acc<T>(s);
        else
          part[(split * tl.planes + k) * taps + t] = s;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// kernel launcher

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

int pow2_ceil(int64_t v) {
  int r = 1;
  while (r < v && r < (1 << 30)) r *= 2;
  return r;
}

int log2_of(int v) {
  int s = 0;
  while ((1 << s) < v) ++s;
  return s;
}

// Tile columns by output width: whole warps along a row where it is wide, narrower tiles (and
// more rows, channels or planes per block) where it is not.
int tile_cols(int64_t out_w) { return out_w > 16 ? 32 : out_w > 8 ? 16 : 8; }

// Extent of the input a tile of `n` outputs reads along one axis.
int64_t span(int64_t n, int64_t stride, int64_t taps, int64_t dil) {
  return (n - 1) * stride + (taps > 0 ? (taps - 1) * dil : 0) + 1;
}

// The kernels index within a plane and along an axis in 32 bits.
void check_32bit(const ConvParams& p, const char* op) {
  const int64_t lim = int64_t{1} << 30;
  const int64_t biggest = std::max({p.H * p.W, p.P * p.Q, p.H + p.pad_t + p.pad_b + (p.P + 64) * p.stride_h,
                                    p.W + p.pad_l + p.pad_r + (p.Q + 64) * p.stride_w, p.R * p.dil_h + p.P + 64,
                                    p.S * p.dil_w + p.Q + 64, p.C / p.groups * p.R * p.S, p.K, p.C});
  if (biggest >= lim)
    throw Error(std::string(op) + ": shape too large for the direct kernels' 32-bit in-plane indexing (" +
                std::to_string(p.H) + "x" + std::to_string(p.W) + " input, " + std::to_string(p.R) + "x" +
                std::to_string(p.S) + " kernel)");
}

DirectGeom fwd_geom(const ConvParams& p) {
  DirectGeom g{};
  const int64_t Cg = p.Cg(), Kg = p.Kg(), RS = p.R * p.S;
  g.groups = static_cast<int>(p.groups);
  g.n_red = static_cast<int>(Cg);
  g.n_out = static_cast<int>(Kg);
  g.in_img = p.C * p.H * p.W, g.in_plane = p.H * p.W;
  g.in_h = static_cast<int>(p.H), g.in_w = static_cast<int>(p.W);
  g.out_img = p.K * p.P * p.Q, g.out_plane = p.P * p.Q, g.out_off = 0;
  g.out_rs = static_cast<int>(p.Q), g.out_cs = 1;
  g.out_h = static_cast<int>(p.P), g.out_w = static_cast<int>(p.Q);
  g.str_h = static_cast<int>(p.stride_h), g.str_w = static_cast<int>(p.stride_w);
  g.dil_h = static_cast<int>(p.dil_h), g.dil_w = static_cast<int>(p.dil_w);
  g.base_h = static_cast<int>(-p.pad_t), g.base_w = static_cast<int>(-p.pad_l);
  g.taps_h = static_cast<int>(p.R), g.taps_w = static_cast<int>(p.S);
  g.wr0 = 0, g.wr_step = 1, g.ws0 = 0, g.ws_step = 1, g.w_cols = static_cast<int>(p.S);
  g.w_out = Cg * RS, g.w_red = RS, g.w_group = Kg * Cg * RS;
  return g;
}

// Taps of one stride phase of grad input along one axis. dx position ph + stride * t receives
// dy position (ph + pad - r * dil) / stride + t from kernel index r when stride divides the
// numerator: r runs over an arithmetic progression of step m = stride / gcd(stride, dil), and
// the dy offset falls by dil / gcd a step. Listed in increasing dy offset (decreasing r).
struct PhaseTaps {
  int taps, base, dil, w0, w_step;
};

PhaseTaps phase_taps(int64_t ph, int64_t pad, int64_t k, int64_t stride, int64_t dil) {
  int64_t a = stride, b = dil;
  while (b != 0) {
    const int64_t t = a % b;
    a = b;
    b = t;
  }
  const int64_t gcd = a, m = stride / gcd;
  int64_t first = -1;
  for (int64_t r = 0; r < k && r < stride; ++r)
    if (((ph + pad - r * dil) % stride + stride) % stride == 0) {
      first = r;
      break;
    }
  PhaseTaps t{0, 0, 1, 0, 1};
  if (first < 0 || first >= k) return t;
  const int64_t count = (k - 1 - first) / m + 1, last = first + (count - 1) * m;
  t.taps = static_cast<int>(count);
  t.base = static_cast<int>((ph + pad - last * dil) / stride);  // exact
  t.dil = static_cast<int>(dil / gcd);
  t.w0 = static_cast<int>(last);
  t.w_step = static_cast<int>(-m);
  return t;
}

// Grad input, the phase of dx rows ph + sh * t and columns pw + sw * u, as a correlation of dy.
DirectGeom bwd_phase_geom(const ConvParams& p, int64_t ph, int64_t pw) {
  DirectGeom g{};
  const int64_t Cg = p.Cg(), Kg = p.Kg(), RS = p.R * p.S;
  const PhaseTaps rt = phase_taps(ph, p.pad_t, p.R, p.stride_h, p.dil_h);
  const PhaseTaps ct = phase_taps(pw, p.pad_l, p.S, p.stride_w, p.dil_w);
  g.groups = static_cast<int>(p.groups);
  g.n_red = static_cast<int>(Kg);
  g.n_out = static_cast<int>(Cg);
  g.in_img = p.K * p.P * p.Q, g.in_plane = p.P * p.Q;
  g.in_h = static_cast<int>(p.P), g.in_w = static_cast<int>(p.Q);
  g.out_img = p.C * p.H * p.W, g.out_plane = p.H * p.W, g.out_off = ph * p.W + pw;
  g.out_rs = static_cast<int>(p.stride_h * p.W), g.out_cs = static_cast<int>(p.stride_w);
  g.out_h = static_cast<int>(ph < p.H ? ceil_div(p.H - ph, p.stride_h) : 0);
  g.out_w = static_cast<int>(pw < p.W ? ceil_div(p.W - pw, p.stride_w) : 0);
  g.str_h = 1, g.str_w = 1;
  g.dil_h = rt.dil, g.dil_w = ct.dil;
  g.base_h = rt.base, g.base_w = ct.base;
  g.taps_h = rt.taps, g.taps_w = ct.taps;
  g.wr0 = rt.w0, g.wr_step = rt.w_step, g.ws0 = ct.w0, g.ws_step = ct.w_step, g.w_cols = static_cast<int>(p.S);
  g.w_out = RS, g.w_red = Cg * RS, g.w_group = Kg * Cg * RS;
  return g;
}

// The tile: bq by the output width; then rows bp = 64 / bq * 4 (for a 3x3 window the patch plus
// filter elements staged per FMA are fewest near 32x8, 16x16, 8x32 pixels by 32 channels) and
// channels to fill 256 threads, more rows where the channels run out. Fewer tiles than
// `want_tiles` (one per SM of the reference device): halve the larger of channels and rows,
// down to 64 threads. variant.h's forced variants: DirectTileMode (never halve, or always down
// to 64 threads) and DirectAxesMode (which axes start one tap a stage).
DirectTiling plan_direct(const DirectGeom& g, int64_t N, int acc_bytes, int64_t want_tiles) {
  const Variant forced = variant();
  if (forced.direct_tile == DirectTileMode::Full) want_tiles = 0;
  if (forced.direct_tile == DirectTileMode::Small) want_tiles = INT64_MAX;
  DirectTiling t{};
  t.bq = tile_cols(g.out_w);
  const int rg_need = std::min(pow2_ceil(ceil_div(g.out_h, kPpt)), kThreads / t.bq);
  const int tk_need = std::min(pow2_ceil(ceil_div(g.n_out, kKpt)), kMaxTk);
  t.rg = std::min(rg_need, 64 / t.bq);
  t.tk = std::min(tk_need, kThreads / (t.bq * t.rg));
  t.rg = std::min(rg_need, kThreads / (t.bq * t.tk));
  const auto tiles_of = [&](int rg, int tk) {
    return N * g.groups * ceil_div(g.n_out, tk * kKpt) * ceil_div(g.out_h, rg * kPpt) * ceil_div(g.out_w, t.bq);
  };
  while (tiles_of(t.rg, t.tk) < want_tiles && t.bq * t.rg * t.tk > 64) {
    if (t.tk >= t.rg && t.tk > 1)
      t.tk /= 2;
    else if (t.rg > 1)
      t.rg /= 2;
    else
      break;
  }
  const int bp = t.rg * kPpt, bk = t.tk * kKpt;
  t.bk_shift = log2_of(bk);
  const int64_t budget = kSmemBytes / acc_bytes;
  const bool empty = g.taps_h == 0 || g.taps_w == 0;  // a grad-input phase no tap reaches: zeros
  bool rows_dense = forced.direct_axes != DirectAxesMode::Rows && forced.direct_axes != DirectAxesMode::Compact;
  bool cols_dense = forced.direct_axes != DirectAxesMode::Cols && forced.direct_axes != DirectAxesMode::Compact;
  int64_t th = 1, tw = 1, ih = 1, iw = 1, per_ch = 1;
  while (!empty) {
    th = rows_dense ? g.taps_h : 1;
    tw = cols_dense ? g.taps_w : 1;
    ih = rows_dense ? span(bp, g.str_h, g.taps_h, g.dil_h) : bp;
    iw = cols_dense ? span(t.bq, g.str_w, g.taps_w, g.dil_w) : t.bq;
    per_ch = th * tw * bk + ih * iw;
    if (per_ch <= budget || (!rows_dense && !cols_dense)) break;
    if (cols_dense && (iw >= ih || !rows_dense))
      cols_dense = false;
    else
      rows_dense = false;
  }
  t.cc = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({budget / per_ch, kMaxCc, g.n_red})));
  t.th = static_cast<int>(th), t.tw = static_cast<int>(tw);
  t.nrc = empty ? 0 : rows_dense ? 1 : g.taps_h;
  t.ncc = empty ? 0 : cols_dense ? 1 : g.taps_w;
  t.ih = static_cast<int>(ih), t.iw = static_cast<int>(iw);
  t.pa_h = rows_dense ? g.str_h : 1, t.pb_h = rows_dense ? g.dil_h : 0, t.rmul = rows_dense ? 1 : g.str_h;
  t.pa_w = cols_dense ? g.str_w : 1, t.pb_w = cols_dense ? g.dil_w : 0, t.cmul = cols_dense ? 1 : g.str_w;
  t.tiles_q = static_cast<int>(ceil_div(g.out_w, t.bq));
  t.tiles_p = static_cast<int>(ceil_div(g.out_h, bp));
  t.tiles_k = static_cast<int>(ceil_div(g.n_out, bk));
  t.tiles = N * g.groups * t.tiles_k * t.tiles_p * t.tiles_q;
  t.by_plane = FastDivmod(static_cast<uint32_t>(ih * iw));
  t.by_iw = FastDivmod(static_cast<uint32_t>(iw));
  t.by_tw = FastDivmod(static_cast<uint32_t>(tw));
  t.by_th = FastDivmod(static_cast<uint32_t>(th));
  return t;
}

std::size_t direct_smem(const DirectTiling& t, int acc_bytes) {
  return static_cast<std::size_t>(t.cc) * (t.th * t.tw * t.tk * kKpt + t.ih * t.iw) * acc_bytes;
}

// Depthwise tiling over `planes` output planes (wgrad: K weight channels, whole warps); false
// when even the smallest tile's dense patch would not fit (the general kernels take it then).
// Forced variants (variant.h): DepthwiseMode::Off answers false; DirectTileMode::Small shrinks
// the tile as far as it goes, as for a window that barely fits.
bool plan_depthwise(const DirectGeom& g, int64_t planes, int acc_bytes, bool wgrad, DwTiling& t) {
  if (g.taps_h == 0 || g.taps_w == 0 || g.out_h == 0 || g.out_w == 0) return false;
  const Variant forced = variant();
  if (forced.depthwise == DepthwiseMode::Off) return false;
  const bool shrink = forced.direct_tile == DirectTileMode::Small;
  int bq = tile_cols(g.out_w);
  int rg = std::min(pow2_ceil(ceil_div(g.out_h, kPpt)), kThreads / bq);
  int nch = std::min({kThreads / (bq * rg), pow2_ceil(planes), kMaxSlots});
  if (wgrad) nch = std::max(nch, kWarp / (bq * rg));
  const int64_t budget = kSmemBytes / acc_bytes, taps = static_cast<int64_t>(g.taps_h) * g.taps_w;
  int64_t ih, iw;
  for (;;) {
    const int bp = rg * kPpt;
    ih = span(bp, g.str_h, g.taps_h, g.dil_h);
    iw = span(bq, g.str_w, g.taps_w, g.dil_w);
    const bool fits = nch * (ih * iw + (wgrad ? bp * bq : taps)) <= budget;
    if (fits && !shrink) break;
    const auto ok = [&](int c, int r, int q) { return !wgrad || c * r * q >= kWarp; };
    if (nch > 1 && ok(nch / 2, rg, bq))
      nch /= 2;
    else if (rg > 1 && ok(nch, rg / 2, bq))
      rg /= 2;
    else if (bq > 8 && ok(nch, rg, bq / 2))
      bq /= 2;
    else if (fits)
      break;
    else
      return false;
  }
  t = DwTiling{};
  t.bq = bq, t.rg = rg, t.nch = nch;
  t.ih = static_cast<int>(ih), t.iw = static_cast<int>(iw);
  t.tiles_q = static_cast<int>(ceil_div(g.out_w, bq));
  t.tiles_p = static_cast<int>(ceil_div(g.out_h, rg * kPpt));
  t.planes = planes;
  t.tiles = ceil_div(planes, nch) * t.tiles_p * t.tiles_q;
  t.by_plane = FastDivmod(static_cast<uint32_t>(ih * iw));
  t.by_iw = FastDivmod(static_cast<uint32_t>(iw));
  t.by_tile = FastDivmod(static_cast<uint32_t>(rg * kPpt * bq));
  t.by_bq = FastDivmod(static_cast<uint32_t>(bq));
  return true;
}

std::size_t depthwise_smem(const DwTiling& t, const DirectGeom& g, int acc_bytes, bool wgrad) {
  const int64_t per = static_cast<int64_t>(t.ih) * t.iw +
                      (wgrad ? static_cast<int64_t>(t.rg) * kPpt * t.bq : static_cast<int64_t>(g.taps_h) * g.taps_w);
  return static_cast<std::size_t>(t.nch * per * acc_bytes);
}

// One forward pass or grad-input phase: the depthwise kernel where a group's output plane sums
// one input plane (or a few, with one output plane a group), else the general kernel.
template <typename T>
void run_direct(const DirectGeom& g, int64_t N, const T* in, const T* w, const T* b, T* out, StreamHandle stream) {
  constexpr int accb = static_cast<int>(sizeof(acc_t<T>));
  const bool depthwise = (g.n_red == 1 && g.n_out <= 8) || (g.n_out == 1 && g.n_red <= 16);
  DwTiling dt{};
  if (depthwise && plan_depthwise(g, N * g.groups * g.n_out, accb, false, dt)) {
    const bool fixed = g.taps_h == 3 && g.taps_w == 3 && g.str_h == 1 && g.str_w == 1 && g.dil_h == 1 && g.dil_w == 1;
    const dim3 grid(grid_blocks(dt.tiles, 1)), block(dt.bq * dt.rg * dt.nch);
    const std::size_t smem = depthwise_smem(dt, g, accb, false);
    if (fixed)
      launch("conv2d_depthwise_kernel<3x3>", conv2d_depthwise_kernel<T, true>, grid, block, smem, stream, g, dt, in, w,
             b, out);
    else
      launch("conv2d_depthwise_kernel", conv2d_depthwise_kernel<T, false>, grid, block, smem, stream, g, dt, in, w, b,
             out);
    return;
  }
  const DirectTiling t = plan_direct(g, N, accb, kReferenceSms);
  const bool fixed = g.taps_h == 3 && g.taps_w == 3 && g.str_h == 1 && g.str_w == 1 && g.dil_h == 1 &&
                     g.dil_w == 1 && t.nrc == 1 && t.ncc == 1;
  const dim3 grid(grid_blocks(t.tiles, 1)), block(t.bq * t.rg * t.tk);
  const std::size_t smem = direct_smem(t, accb);
  if (fixed)
    launch("conv2d_direct_kernel<3x3>", conv2d_direct_kernel<T, 3, 3>, grid, block, smem, stream, g, t, in, w, b, out);
  else
    launch("conv2d_direct_kernel", conv2d_direct_kernel<T, 0, 0>, grid, block, smem, stream, g, t, in, w, b, out);
}

// Grad weight's plan: a pure function of the shape, the accumulator size and the workspace cap
// (the bytes a caller offers; the partials of every split must fit in it, else fewer splits).
struct WgradPlan {
  bool depthwise;
  int maxt;
  DirectGeom g;
  DwTiling dt;
  WGeom wg;
  int splits;
  int64_t ws_bytes;
};

// Splits of grad weight's reduction: `want` (for the block target), at most `most` (splits of
// the preferred least length) or, with split-K forced on, kForcedSplits where `most_forced`
// (splits of the least length a stage allows) has room; never more than the workspace cap's
// partials. Forced off: one.
int choose_splits(int64_t want, int64_t most, int64_t most_forced, int64_t out_elems, int acc_bytes,
                  int64_t cap_bytes) {
  const SplitMode mode = variant().splitk;
  if (mode == SplitMode::Off) return 1;
  int64_t s = std::max<int64_t>(1, std::min(want, most));
  if (mode == SplitMode::On) s = std::max(s, std::min<int64_t>(kForcedSplits, most_forced));
  const int64_t per = out_elems * acc_bytes;
  if (s > 1) s = std::min(s, std::max<int64_t>(cap_bytes, 0) / per);
  return static_cast<int>(std::max<int64_t>(s, 1));
}

WgradPlan plan_bwd_weight(const ConvParams& p, int acc_bytes, int64_t cap_bytes) {
  WgradPlan w{};
  const int64_t Cg = p.Cg(), Kg = p.Kg(), J = Cg * p.R * p.S, out_elems = p.K * J;
  w.g = fwd_geom(p);
  if (p.N == 0) return w;
  if (Cg == 1 && p.R * p.S <= kDwTapsLarge && plan_depthwise(w.g, p.K, acc_bytes, true, w.dt)) {
    DwTiling& t = w.dt;
    w.depthwise = true;
    w.maxt = p.R * p.S <= kDwTapsSmall ? kDwTapsSmall : kDwTapsLarge;
    t.items = p.N * t.tiles_p * t.tiles_q;
    t.kgroups = ceil_div(p.K, t.nch);
    w.splits = choose_splits(ceil_div(kWTargetBlocks, t.kgroups), t.items, t.items, out_elems, acc_bytes, cap_bytes);
    t.per_split = ceil_div(t.items, w.splits);
    w.splits = static_cast<int>(ceil_div(t.items, t.per_split));  // every split non-empty
    t.splits = w.splits;
  } else {
    WGeom& g = w.wg;
    g.groups = static_cast<int>(p.groups), g.Cg = static_cast<int>(Cg), g.Kg = static_cast<int>(Kg);
    g.K = static_cast<int>(p.K), g.R = static_cast<int>(p.R), g.S = static_cast<int>(p.S);
    g.H = static_cast<int>(p.H), g.W = static_cast<int>(p.W), g.P = static_cast<int>(p.P), g.Q = static_cast<int>(p.Q);
    g.str_h = static_cast<int>(p.stride_h), g.str_w = static_cast<int>(p.stride_w);
    g.dil_h = static_cast<int>(p.dil_h), g.dil_w = static_cast<int>(p.dil_w);
    g.pad_t = static_cast<int>(p.pad_t), g.pad_l = static_cast<int>(p.pad_l);
    g.J = static_cast<int>(J);
    g.HW = p.H * p.W, g.PQ = p.P * p.Q, g.CHW = p.C * g.HW, g.KPQ = p.K * g.PQ, g.L = p.N * g.PQ;
    g.tiles_k = static_cast<int>(ceil_div(Kg, kWBk));
    g.tiles_j = static_cast<int>(ceil_div(J, kWBj));
    const int64_t tiles = p.groups * g.tiles_k * g.tiles_j;
    w.splits = choose_splits(ceil_div(kWTargetBlocks, tiles), ceil_div(g.L, kWMinSplit), ceil_div(g.L, kWPix),
                             out_elems, acc_bytes, cap_bytes);
    g.split_len = ceil_div(ceil_div(g.L, w.splits), kWPix) * kWPix;
    w.splits = static_cast<int>(ceil_div(g.L, g.split_len));  // every split non-empty
    g.splits = w.splits;
    g.blocks = tiles * w.splits;
  }
  w.ws_bytes = w.splits > 1 ? w.splits * out_elems * acc_bytes : 0;
  return w;
}

int acc_bytes_of(DType dt) { return dt == DType::F64 ? 8 : 4; }

}  // namespace

namespace direct {

int64_t workspace_bytes(ConvPass pass, DType dt, const ConvParams& p, int64_t cap_bytes) {
  if (pass != ConvPass::BwdWeight || p.N == 0) return 0;
  return plan_bwd_weight(p, acc_bytes_of(dt), cap_bytes).ws_bytes;
}

// Forward and grad input need no workspace.
void fwd(DType dt, const ConvParams& p, const void* x, const void* w, const void* b, void* y, void* /*ws*/,
         int64_t /*ws_bytes*/, StreamHandle stream) {
  check_32bit(p, "conv2d_fwd (direct)");
  const DirectGeom g = fwd_geom(p);
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    run_direct<T>(g, p.N, static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b),
                  static_cast<T*>(y), stream);
  });
}

void bwd_input(DType dt, const ConvParams& p, const void* dy, const void* w, void* dx, void* /*ws*/,
               int64_t /*ws_bytes*/, StreamHandle stream) {
  check_32bit(p, "conv2d_bwd_input (direct)");
  // One launch per stride phase that some tap reaches. The phases no tap reaches (a stride
  // wider than the window: a strided 1x1, say) get zeros from one fill of dx beforehand.
  const int64_t nph = std::min(p.stride_h, p.H), npw = std::min(p.stride_w, p.W);
  bool any_empty = false;
  for (int64_t ph = 0; ph < nph; ++ph) any_empty |= phase_taps(ph, p.pad_t, p.R, p.stride_h, p.dil_h).taps == 0;
  for (int64_t pw = 0; pw < npw; ++pw) any_empty |= phase_taps(pw, p.pad_l, p.S, p.stride_w, p.dil_w).taps == 0;
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    if (any_empty) zero_fill(p.N * p.C * p.H * p.W, static_cast<T*>(dx), stream);
    for (int64_t ph = 0; ph < nph; ++ph)
      for (int64_t pw = 0; pw < npw; ++pw) {
        const DirectGeom g = bwd_phase_geom(p, ph, pw);
        if (g.taps_h == 0 || g.taps_w == 0) continue;
        run_direct<T>(g, p.N, static_cast<const T*>(dy), static_cast<const T*>(w), static_cast<const T*>(nullptr),
                      static_cast<T*>(dx), stream);
      }
  });
}

void bwd_weight(DType dt, const ConvParams& p, const void* dy, const void* x, void* dw, void* ws, int64_t ws_bytes,
                StreamHandle stream) {
  check_32bit(p, "conv2d_bwd_weight (direct)");
  const int accb = acc_bytes_of(dt);
  // The workspace offered is the cap: the caller sized it with workspace_bytes at some cap, and
  // the same plan comes out of the same bytes.
  const WgradPlan plan = plan_bwd_weight(p, accb, ws == nullptr ? 0 : ws_bytes);
  if (plan.ws_bytes > 0 && (ws == nullptr || ws_bytes < plan.ws_bytes))
    throw Error("conv2d_bwd_weight (direct): workspace of " + std::to_string(ws_bytes) + " bytes, needs " +
                std::to_string(plan.ws_bytes));
  const int64_t out_elems = p.K * p.Cg() * p.R * p.S;
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    A* part = static_cast<A*>(ws);
    const T* dyt = static_cast<const T*>(dy);
    const T* xt = static_cast<const T*>(x);
    T* dwt = static_cast<T*>(dw);
    if (plan.depthwise) {
      const DwTiling& t = plan.dt;
      const dim3 grid(grid_blocks(t.kgroups * t.splits, 1)), block(t.bq * t.rg * t.nch);
      const std::size_t smem = depthwise_smem(t, plan.g, accb, true);
      if (plan.maxt == kDwTapsSmall)
        launch("conv2d_bwd_weight_depthwise_kernel<9>", conv2d_bwd_weight_depthwise_kernel<T, kDwTapsSmall>, grid,
               block, smem, stream, plan.g, t, xt, dyt, part, dwt);
      else
        launch("conv2d_bwd_weight_depthwise_kernel<25>", conv2d_bwd_weight_depthwise_kernel<T, kDwTapsLarge>, grid,
               block, smem, stream, plan.g, t, xt, dyt, part, dwt);
    } else {
      launch("conv2d_bwd_weight_direct_kernel", conv2d_bwd_weight_direct_kernel<T>,
             dim3(grid_blocks(plan.wg.blocks, 1)), dim3(kThreads), 0, stream, plan.wg, dyt, xt, part, dwt);
    }
    if (plan.splits > 1)
      splitk_reduce<T>(static_cast<const A*>(part), plan.splits, out_elems, dwt, stream);  // gemm.h: in split order
  });
}

}  // namespace direct
}  // namespace convkit::cuda
