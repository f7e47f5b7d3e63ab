// max_pool2d on the GPU (NCHW), torch's semantics: ceil_mode, padding, dilation, int64 indices
// h * W + w per plane, the first maximum in window order wins a tie, a NaN wins. Forward: a thread
// per output element (grid-stride, consecutive threads on consecutive columns, taps via __ldg).
// Backward in gather form: a thread per input element sums dy over the windows whose index names
// it (deterministic, no atomics, every dx element written).
#include <cstdint>
#include <string>

#include "cuda/dtype.cuh"
#include "cuda/grid.cuh"
#include "cuda/ops.h"
#include "cuda/pool_geom.cuh"
#include "cuda/runtime.h"

namespace convkit::cuda {
namespace {

// Threads per block of both kernels. One output (forward) or input (backward) element per
// thread and iteration: a warp covers 32 consecutive columns of a row (or the end of one row
// and the start of the next), so its loads of each tap hit a few adjacent cache lines and the
// taps that neighbouring windows share come from L1.
constexpr int kThreads = 256;

// First in-range position of a window that starts at `start` with step `dil` (torch's
// `while (start < 0) start += dil`): the index a window keeps when no tap beats -inf.
__device__ __forceinline__ int first_tap(int start, int dil) {
  return start >= 0 ? start : start + ((-start + dil - 1) / dil) * dil;
}

// ---------------------------------------------------------------------------------------------
// GPU kernels

// KH, KW: the window at compile time (the taps unroll into predicated loads), 0 for a runtime
// window. kIdx: whether indices are written.
template <typename T, int KH, int KW, bool kIdx>
__global__ void max_pool2d_fwd_kernel(PoolGeom g, uint32_t total, const T* __restrict__ x, T* __restrict__ y,
                                      int64_t* __restrict__ idx) {
  using A = acc_t<T>;
  const int kh = KH > 0 ? KH : g.kh;
  const int kw = KW > 0 ? KW : g.kw;
  const int64_t HW = static_cast<int64_t>(g.H) * g.W;
  const uint32_t step = gridDim.x * blockDim.x;
  for (uint32_t e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    // (nc, oh, ow): output element e of this launch is row oh, column ow of plane nc.
    uint32_t nc, r, oh, ow;
    g.plane.divmod(e, nc, r);
    g.row.divmod(r, oh, ow);
    const T* xp = x + nc * HW;
    // (hstart, wstart): the window's top-left tap in input coordinates, possibly in the padding.
    const int hstart = static_cast<int>(oh) * g.sh - g.ph;
    const int wstart = static_cast<int>(ow) * g.sw - g.pw;
    int at = 0;
    if constexpr (kIdx) at = first_tap(hstart, g.dh) * g.W + first_tap(wstart, g.dw);
    A m = neg_inf<A>();
#pragma unroll
    for (int i = 0; i < kh; ++i) {
      const int ih = hstart + i * g.dh;
      if (static_cast<unsigned>(ih) >= static_cast<unsigned>(g.H)) continue;
      const T* xr = xp + ih * g.W;
#pragma unroll
      for (int j = 0; j < kw; ++j) {
        const int iw = wstart + j * g.dw;
        if (static_cast<unsigned>(iw) >= static_cast<unsigned>(g.W)) continue;
        const A v = to_acc(load_ro(xr + iw));
        if (v > m || v != v) {  // strict: a tie keeps the earlier tap; NaN always taken
          m = v;
          if constexpr (kIdx) at = ih * g.W + iw;
        }
      }
    }
    y[e] = from_acc<T>(m);
    if constexpr (kIdx) idx[e] = at;
  }
}

// One thread per input element. The windows oh that can cover input row h are those whose span
// [oh * sh - ph, oh * sh - ph + (kh - 1) * dh] holds h: oh from ceil((h + ph - span + 1) / sh)
// to floor((h + ph) / sh); with dilation a window in that range may step over h, but then its
// index cannot name h either, so comparing indices is enough.
template <typename T>
__global__ void max_pool2d_bwd_kernel(PoolGeom g, uint32_t total, const T* __restrict__ dy,
                                      const int64_t* __restrict__ idx, T* __restrict__ dx) {
  using A = acc_t<T>;
  const int64_t PQ = static_cast<int64_t>(g.P) * g.Q;
  const int span_h = (g.kh - 1) * g.dh + 1, span_w = (g.kw - 1) * g.dw + 1;
  const uint32_t step = gridDim.x * blockDim.x;
  for (uint32_t e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    // (nc, h, w): input element e of this launch is row h, column w of plane nc.
    uint32_t nc, r, h, w;
    g.plane.divmod(e, nc, r);
    g.row.divmod(r, h, w);
    const int hp = static_cast<int>(h) + g.ph, wp = static_cast<int>(w) + g.pw;  // padded coordinates
    const int oh_lo = hp >= span_h ? static_cast<int>(g.by_sh.div(hp - span_h)) + 1 : 0;
    const int ow_lo = wp >= span_w ? static_cast<int>(g.by_sw.div(wp - span_w)) + 1 : 0;
    const int oh_hi = imin(static_cast<int>(g.by_sh.div(hp)) + 1, g.P);
    const int ow_hi = imin(static_cast<int>(g.by_sw.div(wp)) + 1, g.Q);
    const int64_t target = static_cast<int64_t>(r);  // h * W + w, as the forward recorded it
    const T* dyp = dy + nc * PQ;
    const int64_t* ip = idx + nc * PQ;
    A acc = A(0);
    // Windows in row-major output order: the order the CPU kernel (and torch) add them in.
    for (int oh = oh_lo; oh < oh_hi; ++oh) {
      for (int ow = ow_lo; ow < ow_hi; ++ow) {
        const int o = oh * g.Q + ow;
        if (load_ro(ip + o) == target) acc += to_acc(load_ro(dyp + o));
      }
    }
    dx[e] = from_acc<T>(acc);
  }
}

// ---------------------------------------------------------------------------------------------
// kernel launcher

template <typename T, int KH, int KW>
void max_pool2d_fwd_launch(const PoolParams& p, const PoolGeom& g, const T* x, T* y, int64_t* idx,
                           StreamHandle stream) {
  for_each_plane_chunk(p, [&](int64_t first, int64_t planes) {
    const uint32_t total = static_cast<uint32_t>(planes * p.P * p.Q);
    const T* xc = x + first * p.H * p.W;
    T* yc = y + first * p.P * p.Q;
    const dim3 grid(grid_blocks(total, kThreads)), block(kThreads);
    if (idx)
      launch("max_pool2d_fwd_kernel", max_pool2d_fwd_kernel<T, KH, KW, true>, grid, block, 0, stream, g, total, xc,
             yc, idx + first * p.P * p.Q);
    else
      launch("max_pool2d_fwd_kernel", max_pool2d_fwd_kernel<T, KH, KW, false>, grid, block, 0, stream, g, total,
             xc, yc, static_cast<int64_t*>(nullptr));
  });
}

}  // namespace

void max_pool2d_fwd(DType dt, const PoolParams& p, const void* x, void* y, int64_t* idx, int device,
                    std::uintptr_t stream) {
  DeviceGuard guard(device);
  if (p.N == 0 || p.C == 0) return;
  const PoolGeom g = make_pool_geom(p, /*over_input=*/false, "max_pool2d_fwd");
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* xt = static_cast<const T*>(x);
    T* yt = static_cast<T*>(y);
    // The 3x3 and 2x2 windows of common networks get unrolled taps; any other window loops.
    if (p.kh == 3 && p.kw == 3)
      max_pool2d_fwd_launch<T, 3, 3>(p, g, xt, yt, idx, stream);
    else if (p.kh == 2 && p.kw == 2)
      max_pool2d_fwd_launch<T, 2, 2>(p, g, xt, yt, idx, stream);
    else
      max_pool2d_fwd_launch<T, 0, 0>(p, g, xt, yt, idx, stream);
  });
}

void max_pool2d_bwd(DType dt, const PoolParams& p, const void* dy, const int64_t* idx, void* dx, int device,
                    std::uintptr_t stream) {
  DeviceGuard guard(device);
  if (p.N == 0 || p.C == 0) return;
  const PoolGeom g = make_pool_geom(p, /*over_input=*/true, "max_pool2d_bwd");
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    for_each_plane_chunk(p, [&](int64_t first, int64_t planes) {
      const uint32_t total = static_cast<uint32_t>(planes * p.H * p.W);
      const int64_t out_off = first * p.P * p.Q;
      launch("max_pool2d_bwd_kernel", max_pool2d_bwd_kernel<T>, dim3(grid_blocks(total, kThreads)),
             dim3(kThreads), 0, stream, g, total, static_cast<const T*>(dy) + out_off, idx + out_off,
             static_cast<T*>(dx) + first * p.H * p.W);
    });
  });
}

}  // namespace convkit::cuda
