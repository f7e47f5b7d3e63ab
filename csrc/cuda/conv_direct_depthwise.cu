// The direct convolution's depthwise kernels on the GPU, for layers whose group's output plane
// sums one input plane (or a few, with one output plane a group): forward / grad input, a block
// holding several planes' patches in shared memory (3x3 stride 1 with the taps in registers),
// and grad weight (Cg == 1), a block of channels reducing N*P*Q with a fixed shuffle tree.
#include <algorithm>
#include <cstdint>

#include "cuda/conv_direct.cuh"
#include "cuda/dtype.cuh"
#include "cuda/grid.cuh"
#include "cuda/runtime.h"
#include "cuda/variant.h"

namespace convkit::cuda::direct {
namespace {

constexpr int kMaxSlots = 32;        // planes per block at most

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

std::size_t depthwise_smem(const DwTiling& t, const DirectGeom& g, int acc_bytes, bool wgrad) {
  const int64_t per = static_cast<int64_t>(t.ih) * t.iw +
                      (wgrad ? static_cast<int64_t>(t.rg) * kPpt * t.bq : static_cast<int64_t>(g.taps_h) * g.taps_w);
  return static_cast<std::size_t>(t.nch * per * acc_bytes);
}
}  // namespace

// The depthwise tiling (conv_direct.cuh). Forced variants (variant.h): DepthwiseMode::Off
// answers false; DirectTileMode::Small shrinks the tile as far as it goes, as for a window that
// barely fits.
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

void run_depthwise(DType dt, const DirectGeom& g, const DwTiling& t, const void* in, const void* w, const void* b,
                   void* out, StreamHandle stream) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    constexpr int accb = static_cast<int>(sizeof(acc_t<T>));
    const bool fixed = g.taps_h == 3 && g.taps_w == 3 && g.str_h == 1 && g.str_w == 1 && g.dil_h == 1 && g.dil_w == 1;
    const dim3 grid(grid_blocks(t.tiles, 1)), block(t.bq * t.rg * t.nch);
    const std::size_t smem = depthwise_smem(t, g, accb, false);
    const T* in_t = static_cast<const T*>(in);
    const T* w_t = static_cast<const T*>(w);
    const T* b_t = static_cast<const T*>(b);
    T* out_t = static_cast<T*>(out);
    if (fixed)
      launch("conv2d_depthwise_kernel<3x3>", conv2d_depthwise_kernel<T, true>, grid, block, smem, stream, g, t, in_t,
             w_t, b_t, out_t);
    else
      launch("conv2d_depthwise_kernel", conv2d_depthwise_kernel<T, false>, grid, block, smem, stream, g, t, in_t, w_t,
             b_t, out_t);
  });
}

void run_depthwise_grad_weight(DType dt, int maxt, const DirectGeom& g, const DwTiling& t, const void* x,
                               const void* dy, void* part, void* dw, StreamHandle stream) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int accb = static_cast<int>(sizeof(A));
    const dim3 grid(grid_blocks(t.kgroups * t.splits, 1)), block(t.bq * t.rg * t.nch);
    const std::size_t smem = depthwise_smem(t, g, accb, true);
    const T* xt = static_cast<const T*>(x);
    const T* dyt = static_cast<const T*>(dy);
    A* partt = static_cast<A*>(part);
    T* dwt = static_cast<T*>(dw);
    if (maxt == kDwTapsSmall)
      launch("conv2d_bwd_weight_depthwise_kernel<9>", conv2d_bwd_weight_depthwise_kernel<T, kDwTapsSmall>, grid, block,
             smem, stream, g, t, xt, dyt, partt, dwt);
    else
      launch("conv2d_bwd_weight_depthwise_kernel<25>", conv2d_bwd_weight_depthwise_kernel<T, kDwTapsLarge>, grid,
             block, smem, stream, g, t, xt, dyt, partt, dwt);
  });
}

}  // namespace convkit::cuda::direct
