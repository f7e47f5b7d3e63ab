// max_pool2d on the GPU (NCHW), torch's semantics: ceil_mode, padding, dilation, int64 indices
// h * W + w per plane, the first maximum in window order wins a tie, a NaN wins. Forward: a thread
// per output element (grid-stride, consecutive threads on consecutive columns, taps via __ldg).
// Backward in gather form: a thread per input element sums dy over the windows whose index names
// it (deterministic, no atomics, every dx element written); windows with no tap in the input
// (dilation only) are added after, at the index torch's forward gave them, as torch does.
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
// to floor((h + ph) / sh). With dilation a window in that range may step over h; then only a
// window none of whose taps lies in the input (an "empty" window, see
// max_pool2d_bwd_empty_windows_kernel) can name h, so with kDilated the tap test keeps those out
// of the sum (they are added by that kernel, where torch adds them).
template <typename T, bool kDilated>
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
      if (kDilated && (hp - oh * g.sh) % g.dh != 0) continue;  // the window steps over row h
      for (int ow = ow_lo; ow < ow_hi; ++ow) {
        if (kDilated && (wp - ow * g.sw) % g.dw != 0) continue;
        const int o = oh * g.Q + ow;
        if (load_ro(ip + o) == target) acc += to_acc(load_ro(dyp + o));
      }
    }
    dx[e] = from_acc<T>(acc);
  }
}

// Whether a window starting at `start` (padded coordinates already subtracted) with k taps `dil`
// apart has no tap in [0, size): possible only with dilation, when the taps step over the input.
__host__ __device__ __forceinline__ bool window_is_empty(int64_t start, int64_t k, int64_t dil, int64_t size) {
  for (int64_t j = 0; j < k; ++j)
    if (static_cast<uint64_t>(start + j * dil) < static_cast<uint64_t>(size)) return false;
  return true;
}

// Windows with no tap in the input: torch's forward gives them -inf and the index of its first
// clamped tap (first_tap), which lies past the input's row or past the plane; torch's backward
// adds their dy at that index when it is inside the plane (an element outside the window), and
// so does the CPU kernel. One thread per plane walks them in output order, after the gather
// kernel wrote dx: deterministic, no atomics. Launched only when such windows exist.
template <typename T>
__global__ void max_pool2d_bwd_empty_windows_kernel(PoolGeom g, uint32_t planes, const T* __restrict__ dy,
                                                    const int64_t* __restrict__ idx, T* __restrict__ dx) {
  const int64_t PQ = static_cast<int64_t>(g.P) * g.Q, HW = static_cast<int64_t>(g.H) * g.W;
  for (uint32_t nc = blockIdx.x * blockDim.x + threadIdx.x; nc < planes; nc += gridDim.x * blockDim.x) {
    for (int oh = 0; oh < g.P; ++oh) {
      const bool empty_row = window_is_empty(static_cast<int64_t>(oh) * g.sh - g.ph, g.kh, g.dh, g.H);
      for (int ow = 0; ow < g.Q; ++ow) {
        if (!empty_row && !window_is_empty(static_cast<int64_t>(ow) * g.sw - g.pw, g.kw, g.dw, g.W)) continue;
        const int64_t o = nc * PQ + static_cast<int64_t>(oh) * g.Q + ow;
        const int64_t at = load_ro(idx + o);
        if (static_cast<uint64_t>(at) < static_cast<uint64_t>(HW)) {
          T* d = dx + nc * HW + at;
          *d = from_acc<T>(to_acc(*d) + to_acc(load_ro(dy + o)));
        }
      }
    }
  }
}

// Whether any window of p has no tap in the input (host side; only dilation makes one).
bool has_empty_windows(const PoolParams& p) {
  if (p.dh == 1 && p.dw == 1) return false;
  for (int64_t oh = 0; oh < p.P; ++oh)
    if (window_is_empty(oh * p.sh - p.ph, p.kh, p.dh, p.H)) return true;
  for (int64_t ow = 0; ow < p.Q; ++ow)
    if (window_is_empty(ow * p.sw - p.pw, p.kw, p.dw, p.W)) return true;
  return false;
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
                    StreamHandle stream) {
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
                    StreamHandle stream) {
  DeviceGuard guard(device);
  if (p.N == 0 || p.C == 0) return;
  const PoolGeom g = make_pool_geom(p, /*over_input=*/true, "max_pool2d_bwd");
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const bool dilated = p.dh > 1 || p.dw > 1, empty_windows = has_empty_windows(p);
    for_each_plane_chunk(p, [&](int64_t first, int64_t planes) {
      const uint32_t total = static_cast<uint32_t>(planes * p.H * p.W);
      const int64_t out_off = first * p.P * p.Q;
      const T* dyc = static_cast<const T*>(dy) + out_off;
      T* dxc = static_cast<T*>(dx) + first * p.H * p.W;
      if (dilated)
        launch("max_pool2d_bwd_kernel", max_pool2d_bwd_kernel<T, true>, dim3(grid_blocks(total, kThreads)),
               dim3(kThreads), 0, stream, g, total, dyc, idx + out_off, dxc);
      else
        launch("max_pool2d_bwd_kernel", max_pool2d_bwd_kernel<T, false>, dim3(grid_blocks(total, kThreads)),
               dim3(kThreads), 0, stream, g, total, dyc, idx + out_off, dxc);
      if (empty_windows)
        launch("max_pool2d_bwd_empty_windows_kernel", max_pool2d_bwd_empty_windows_kernel<T>,
               dim3(grid_blocks(planes, kThreads)), dim3(kThreads), 0, stream, g, static_cast<uint32_t>(planes), dyc,
               idx + out_off, dxc);
    });
  });
}

}  // namespace convkit::cuda
