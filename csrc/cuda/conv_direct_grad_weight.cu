// The direct convolution's general grad-weight kernel on the GPU: dw as a product of dy and
// x's gathered windows, a block reducing its split of N*P*Q through shared-memory stages; the
// partials of several splits are summed in a fixed order by gemm.h's splitk_reduce (no atomics).
#include <cstdint>

#include "cuda/conv_direct.cuh"
#include "cuda/dtype.cuh"
#include "cuda/grid.cuh"
#include "cuda/runtime.h"

namespace convkit::cuda::direct {
namespace {

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
}  // namespace

void run_grad_weight(DType dt, const WGeom& g, const void* dy, const void* x, void* part, void* dw,
                     StreamHandle stream) {
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    launch("conv2d_bwd_weight_direct_kernel", conv2d_bwd_weight_direct_kernel<T>, dim3(grid_blocks(g.blocks, 1)),
           dim3(kThreads), 0, stream, g, static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<A*>(part),
           static_cast<T*>(dw));
  });
}

}  // namespace convkit::cuda::direct
