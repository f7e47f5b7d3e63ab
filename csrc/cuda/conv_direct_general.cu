// The direct convolution's general kernel on the GPU: forward, and grad input one stride phase
// at a time (gather form), as one correlation (conv_direct.cuh's DirectGeom). A block computes
// channels x pixels from an input patch and filters staged in shared memory, each thread 8 x 4
// outputs in registers; the plan picks the tile and which axes take every tap in one stage.
#include <algorithm>
#include <climits>
#include <cstdint>

#include "cuda/conv_direct.cuh"
#include "cuda/dtype.cuh"
#include "cuda/grid.cuh"
#include "cuda/pool_geom.cuh"
#include "cuda/runtime.h"
#include "cuda/variant.h"

namespace convkit::cuda::direct {
namespace {

constexpr int kKpt = 8;              // output channels per thread
constexpr int kMaxTk = 16;           // channel groups of threads at most
constexpr int kMaxCc = 8;            // reduction channels per shared-memory stage
// The SM count the direct plan's tile sizes aim at: an H100 SXM's, on every device and under the
// emulator, so that a shape gets the same tiles (the same summation order, the same bits)
// everywhere. Only grid sizes (grid.cuh) follow the device; no result depends on them.
constexpr int64_t kReferenceSms = 132;

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

int log2_of(int v) {
  int s = 0;
  while ((1 << s) < v) ++s;
  return s;
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
}  // namespace

void run_general(DType dt, const DirectGeom& g, int64_t N, const void* in, const void* w, const void* b, void* out,
                 StreamHandle stream) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    constexpr int accb = static_cast<int>(sizeof(acc_t<T>));
    const DirectTiling t = plan_direct(g, N, accb, kReferenceSms);
    const bool fixed = g.taps_h == 3 && g.taps_w == 3 && g.str_h == 1 && g.str_w == 1 && g.dil_h == 1 &&
                       g.dil_w == 1 && t.nrc == 1 && t.ncc == 1;
    const dim3 grid(grid_blocks(t.tiles, 1)), block(t.bq * t.rg * t.tk);
    const std::size_t smem = direct_smem(t, accb);
    const T* in_t = static_cast<const T*>(in);
    const T* w_t = static_cast<const T*>(w);
    const T* b_t = static_cast<const T*>(b);
    T* out_t = static_cast<T*>(out);
    if (fixed)
      launch("conv2d_direct_kernel<3x3>", conv2d_direct_kernel<T, 3, 3>, grid, block, smem, stream, g, t, in_t, w_t,
             b_t, out_t);
    else
      launch("conv2d_direct_kernel", conv2d_direct_kernel<T, 0, 0>, grid, block, smem, stream, g, t, in_t, w_t, b_t,
             out_t);
  });
}

}  // namespace convkit::cuda::direct
