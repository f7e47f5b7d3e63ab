// avg_pool2d on the GPU (NCHW), torch's divisor rule (count_include_pad counts padding up to
// size + pad, divisor_override). Forward: a thread per output element summing its window in
// row-major order from 0 like torch (float32 accumulation, float64 for double); a warp per output
// for big windows over narrow rows (global pooling). Backward in gather form: a thread per input
// element adds dy / divisor of the windows covering it (deterministic, no atomics, dx all written).
#include <cstdint>
#include <string>

#include "cuda/dtype.cuh"
#include "cuda/grid.cuh"
#include "cuda/ops.h"
#include "cuda/pool_geom.cuh"
#include "cuda/runtime.h"

namespace convkit::cuda {
namespace {

// Threads per block; one output (forward) or input (backward) element per thread and
// iteration, consecutive threads on consecutive columns (coalesced, shared taps from L1).
constexpr int kThreads = 256;
constexpr int kWarp = 32;

// The warp-per-output forward takes windows of at least kWarpTaps taps over output rows
// narrower than kWarpMaxQ: there a thread per output is latency-bound (see its kernel). On wide
// rows a thread per output is better: neighbouring outputs share taps and a warp's loads are
// contiguous.
constexpr int64_t kWarpTaps = 32;
constexpr int64_t kWarpMaxQ = 8;

// The divisor of the window at output (oh, ow), torch's rule, as an int64 (torch's divide
// factor); 0 when the window holds no input position (its output is 0, as in torch).
__device__ __forceinline__ int64_t avg_divisor(const PoolGeom& g, int oh, int ow, bool count_include_pad,
                                               int64_t divisor_override) {
  const int hstart = oh * g.sh - g.ph, wstart = ow * g.sw - g.pw;
  const int hend = imin(hstart + g.kh, g.H + g.ph), wend = imin(wstart + g.kw, g.W + g.pw);
  const int hin = imin(hend, g.H) - imax(hstart, 0), win = imin(wend, g.W) - imax(wstart, 0);
  if (hin <= 0 || win <= 0) return 0;
  if (divisor_override) return divisor_override;
  if (count_include_pad) return static_cast<int64_t>(hend - hstart) * (wend - wstart);
  return static_cast<int64_t>(hin) * win;
}

// ---------------------------------------------------------------------------------------------
// GPU kernels

// KH, KW: the window at compile time (taps unroll into predicated loads), 0 for a runtime one.
template <typename T, int KH, int KW>
__global__ void avg_pool2d_fwd_kernel(PoolGeom g, bool count_include_pad, int64_t divisor_override,
                                      uint32_t total, const T* __restrict__ x, T* __restrict__ y) {
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
    const int hstart = static_cast<int>(oh) * g.sh - g.ph;
    const int wstart = static_cast<int>(ow) * g.sw - g.pw;
    A sum = A(0);
#pragma unroll
    for (int i = 0; i < kh; ++i) {
      const int ih = hstart + i;
      if (static_cast<unsigned>(ih) >= static_cast<unsigned>(g.H)) continue;
      const T* xr = xp + ih * g.W;
#pragma unroll
      for (int j = 0; j < kw; ++j) {
        const int iw = wstart + j;
        if (static_cast<unsigned>(iw) >= static_cast<unsigned>(g.W)) continue;
        sum += to_acc(load_ro(xr + iw));
      }
    }
    const int64_t d = avg_divisor(g, static_cast<int>(oh), static_cast<int>(ow), count_include_pad,
                                  divisor_override);
    y[e] = d == 0 ? from_acc<T>(A(0)) : from_acc<T>(sum / static_cast<A>(d));
  }
}

// One warp per output element, for windows of many taps over narrow output rows (GoogLeNet's
// 7x7 average over a 7x7 map): there one thread per output would make 49 serial loads, each
// warp load touching 32 planes 196 bytes apart, with only N * C threads in all. Here a warp's
// lanes take the window's in-range taps in row-major order (consecutive lanes on consecutive
// columns, so a load covers whole rows) and combine their partial sums with a shuffle tree:
// deterministic, though not the sequential order of the CPU kernel.
template <typename T>
__global__ void avg_pool2d_fwd_warp_kernel(PoolGeom g, bool count_include_pad, int64_t divisor_override,
                                           uint32_t total, const T* __restrict__ x, T* __restrict__ y) {
  using A = acc_t<T>;
  const int64_t HW = static_cast<int64_t>(g.H) * g.W;
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  const uint32_t warps = gridDim.x * (blockDim.x / kWarp);
  // The loop is warp-uniform: every lane of a warp takes the same e, so the shuffles meet.
  for (uint32_t e = (blockIdx.x * blockDim.x + threadIdx.x) / kWarp; e < total; e += warps) {
    uint32_t nc, r, oh, ow;
    g.plane.divmod(e, nc, r);
    g.row.divmod(r, oh, ow);
    // [h0, h1) x [w0, w1): the window clipped to the input.
    const int hstart = static_cast<int>(oh) * g.sh - g.ph, wstart = static_cast<int>(ow) * g.sw - g.pw;
    const int h0 = imax(hstart, 0), h1 = imin(hstart + g.kh, g.H);
    const int w0 = imax(wstart, 0), w1 = imin(wstart + g.kw, g.W);
    const int cols = w1 - w0, taps = h1 > h0 && cols > 0 ? (h1 - h0) * cols : 0;
    const T* xw = x + nc * HW + h0 * g.W + w0;
    A sum = A(0);
    for (int t = lane; t < taps; t += kWarp) {
      const int i = t / cols;  // tap t of the clipped window is row i, column t - i * cols
      sum += to_acc(load_ro(xw + i * g.W + (t - i * cols)));
    }
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
    if (lane == 0) {
      const int64_t d = avg_divisor(g, static_cast<int>(oh), static_cast<int>(ow), count_include_pad,
                                    divisor_override);
      y[e] = d == 0 ? from_acc<T>(A(0)) : from_acc<T>(sum / static_cast<A>(d));
    }
  }
}

// One thread per input element. The windows covering input row h are oh from
// ceil((h + ph - kh + 1) / sh) to floor((h + ph) / sh), clipped to [0, P); likewise columns.
template <typename T>
__global__ void avg_pool2d_bwd_kernel(PoolGeom g, bool count_include_pad, int64_t divisor_override,
                                      uint32_t total, const T* __restrict__ dy, T* __restrict__ dx) {
  using A = acc_t<T>;
  const int64_t PQ = static_cast<int64_t>(g.P) * g.Q;
  const uint32_t step = gridDim.x * blockDim.x;
  for (uint32_t e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
    // (nc, h, w): input element e of this launch is row h, column w of plane nc.
    uint32_t nc, r, h, w;
    g.plane.divmod(e, nc, r);
    g.row.divmod(r, h, w);
    const int hp = static_cast<int>(h) + g.ph, wp = static_cast<int>(w) + g.pw;  // padded coordinates
    const int oh_lo = hp >= g.kh ? static_cast<int>(g.by_sh.div(hp - g.kh)) + 1 : 0;
    const int ow_lo = wp >= g.kw ? static_cast<int>(g.by_sw.div(wp - g.kw)) + 1 : 0;
    const int oh_hi = imin(static_cast<int>(g.by_sh.div(hp)) + 1, g.P);
    const int ow_hi = imin(static_cast<int>(g.by_sw.div(wp)) + 1, g.Q);
    const T* dyp = dy + nc * PQ;
    A acc = A(0);
    // Row-major output order, dy / divisor in the accumulator type: the CPU kernel's (and
    // torch's) terms in its order, so float32 and float64 results match it bit for bit.
    for (int oh = oh_lo; oh < oh_hi; ++oh) {
      for (int ow = ow_lo; ow < ow_hi; ++ow) {
        const int64_t d = avg_divisor(g, oh, ow, count_include_pad, divisor_override);
        acc += to_acc(load_ro(dyp + oh * g.Q + ow)) / static_cast<A>(d);
      }
    }
    dx[e] = from_acc<T>(acc);
  }
}

// ---------------------------------------------------------------------------------------------
// kernel launcher

template <typename T, int KH, int KW>
void avg_pool2d_fwd_launch(const PoolParams& p, const PoolGeom& g, bool count_include_pad,
                           int64_t divisor_override, const T* x, T* y, StreamHandle stream) {
  for_each_plane_chunk(p, [&](int64_t first, int64_t planes) {
    const uint32_t total = static_cast<uint32_t>(planes * p.P * p.Q);
    launch("avg_pool2d_fwd_kernel", avg_pool2d_fwd_kernel<T, KH, KW>, dim3(grid_blocks(total, kThreads)),
           dim3(kThreads), 0, stream, g, count_include_pad, divisor_override, total, x + first * p.H * p.W,
           y + first * p.P * p.Q);
  });
}

template <typename T>
void avg_pool2d_fwd_warp_launch(const PoolParams& p, const PoolGeom& g, bool count_include_pad,
                                int64_t divisor_override, const T* x, T* y, StreamHandle stream) {
  for_each_plane_chunk(p, [&](int64_t first, int64_t planes) {
    const uint32_t total = static_cast<uint32_t>(planes * p.P * p.Q);
    launch("avg_pool2d_fwd_warp_kernel", avg_pool2d_fwd_warp_kernel<T>,
           dim3(grid_blocks(total, kThreads / kWarp)), dim3(kThreads), 0, stream, g, count_include_pad,
           divisor_override, total, x + first * p.H * p.W, y + first * p.P * p.Q);
  });
}

void check_avg_params(const PoolParams& p, const char* op) {
  if (p.dh != 1 || p.dw != 1)
    throw Error(std::string(op) + ": dilation must be 1, got " + std::to_string(p.dh) + "x" + std::to_string(p.dw));
}

}  // namespace

void avg_pool2d_fwd(DType dt, const PoolParams& p, bool count_include_pad, int64_t divisor_override,
                    const void* x, void* y, int device, StreamHandle stream) {
  check_avg_params(p, "avg_pool2d_fwd");
  DeviceGuard guard(device);
  if (p.N == 0 || p.C == 0) return;
  const PoolGeom g = make_pool_geom(p, /*over_input=*/false, "avg_pool2d_fwd");
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* xt = static_cast<const T*>(x);
    T* yt = static_cast<T*>(y);
    if (p.kh * p.kw >= kWarpTaps && p.Q < kWarpMaxQ)
      avg_pool2d_fwd_warp_launch<T>(p, g, count_include_pad, divisor_override, xt, yt, stream);
    else if (p.kh == 3 && p.kw == 3)
      avg_pool2d_fwd_launch<T, 3, 3>(p, g, count_include_pad, divisor_override, xt, yt, stream);
    else if (p.kh == 2 && p.kw == 2)
      avg_pool2d_fwd_launch<T, 2, 2>(p, g, count_include_pad, divisor_override, xt, yt, stream);
    else
      avg_pool2d_fwd_launch<T, 0, 0>(p, g, count_include_pad, divisor_override, xt, yt, stream);
  });
}

void avg_pool2d_bwd(DType dt, const PoolParams& p, bool count_include_pad, int64_t divisor_override,
                    const void* dy, void* dx, int device, StreamHandle stream) {
  check_avg_params(p, "avg_pool2d_bwd");
  DeviceGuard guard(device);
  if (p.N == 0 || p.C == 0) return;
  const PoolGeom g = make_pool_geom(p, /*over_input=*/true, "avg_pool2d_bwd");
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    for_each_plane_chunk(p, [&](int64_t first, int64_t planes) {
      const uint32_t total = static_cast<uint32_t>(planes * p.H * p.W);
      launch("avg_pool2d_bwd_kernel", avg_pool2d_bwd_kernel<T>, dim3(grid_blocks(total, kThreads)),
             dim3(kThreads), 0, stream, g, count_include_pad, divisor_override, total,
             static_cast<const T*>(dy) + first * p.P * p.Q, static_cast<T*>(dx) + first * p.H * p.W);
    });
  });
}

}  // namespace convkit::cuda
