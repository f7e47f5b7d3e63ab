// Average pooling on the CPU, NCHW contiguous, torch's divisor rule: the window counts padded
// positions up to min(start + k, size + pad) with count_include_pad, only in-input positions
// without it, or divisor_override. Forward: planes of at most a few outputs (a global average)
// go kB planes side by side; other small planes through the zero padded polyphase plane kernel
// (detail::PhaseGrid); large planes tap-major along an output row. All sum in row-major window
// order from 0 like torch, so results match torch bit for bit. Backward scatters dy / divisor per
// (n, c) plane, serially within a plane, in the order torch adds (a single window per plane:
// dx = 0 + dy / divisor inside it): deterministic and bitwise equal too.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/pool.h"
#include "cpu/threads.h"

namespace convkit::cpu {
namespace {

using detail::TapRange;

constexpr int64_t kParallelWork = 1 << 15;

// Window extents along one axis for output o: padded size (for count_include_pad) and the
// size clipped to the input (0 when the window holds no input position).
struct AvgExtent {
  int64_t padded, clipped;
};

inline AvgExtent avg_extent(int64_t o, int64_t k, int64_t stride, int64_t pad, int64_t in) {
  const int64_t start = o * stride - pad;
  const int64_t end = std::min(start + k, in + pad);
  const int64_t lo = std::max<int64_t>(start, 0), hi = std::min(end, in);
  return {end - start, hi > lo ? hi - lo : 0};
}

// The per-call tables shared by forward and backward: kernel-column q ranges (none for a wide
// window, which goes window at a time) and each output column's factor of the divisor.
struct AvgPlan {
  std::vector<TapRange> cols;  // [kw]
  std::vector<int64_t> wdiv;   // [Q]: width factor of the divisor (1 under divisor_override)

  AvgPlan(const PoolParams& p, bool count_include_pad, int64_t divisor_override)
      : cols(detail::wide_window(p) ? 0 : p.kw), wdiv(p.Q) {
    for (int64_t j = 0; j < int64_t(cols.size()); ++j) cols[j] = detail::tap_range(j - p.pw, p.sw, p.W, p.Q);
    for (int64_t q = 0; q < p.Q; ++q) {
      const AvgExtent e = avg_extent(q, p.kw, p.sw, p.pw, p.W);
      wdiv[q] = divisor_override ? 1 : (count_include_pad ? e.padded : e.clipped);
    }
  }
};

// Height factor of the divisor for output row oh, or 0 when the row's windows are empty.
inline int64_t avg_row_factor(const PoolParams& p, int64_t oh, bool count_include_pad,
                              int64_t divisor_override) {
  const AvgExtent e = avg_extent(oh, p.kh, p.sh, p.ph, p.H);
  if (e.clipped == 0) return 0;
  if (divisor_override) return divisor_override;
  return count_include_pad ? e.padded : e.clipped;
}

// Divisor as torch forms it (int64 product converted to T); an empty window sums to 0 and is
// divided by 1 so it stays 0, as torch writes.
template <typename T>
inline T avg_divisor(int64_t hdiv, int64_t wdiv) {
  const int64_t d = int64_t(uint64_t(hdiv) * uint64_t(wdiv));  // (wraps like torch's int64 product)
  return static_cast<T>(d != 0 ? d : 1);
}

template <typename T, int SW>
inline void avg_pool2d_fwd_tap(T* __restrict ym, const T* __restrict xr, int64_t lo, int64_t hi, int64_t off,
                               int64_t sw_rt) {
  const int64_t s = SW > 0 ? SW : sw_rt;
  for (int64_t q = lo; q < hi; ++q) ym[q] += xr[q * s + off];
}

template <typename T, int SW>
inline void avg_pool2d_bwd_tap(T* __restrict dxr, const T* __restrict g, int64_t lo, int64_t hi, int64_t off,
                               int64_t sw_rt) {
  const int64_t s = SW > 0 ? SW : sw_rt;
  for (int64_t q = lo; q < hi; ++q) dxr[q * s + off] += g[q];
}

// Forward: (n, c, oh) is one output row, summed tap by tap then divided.
template <typename T, int SW>
void avg_pool2d_fwd_kernel(const PoolParams& p, bool count_include_pad, int64_t divisor_override,
                           const AvgPlan& plan, const T* x, T* y) {
  const int64_t rows = p.N * p.C * p.P;
  const int64_t H = p.H, W = p.W, P = p.P, Q = p.Q;
  const TapRange* cols = plan.cols.data();
  const int64_t* wdiv = plan.wdiv.data();
  const bool parallel = rows * Q * detail::window_taps(p) > kParallelWork;
#pragma omp parallel for num_threads(convkit::cpu::num_threads()) schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t nc = r / P, oh = r % P;
    const T* xp = x + nc * H * W;
    T* ym = y + r * Q;
    for (int64_t q = 0; q < Q; ++q) ym[q] = T(0);
    const int64_t hdiv = avg_row_factor(p, oh, count_include_pad, divisor_override);
    if (hdiv == 0) continue;
    const int64_t hstart = oh * p.sh - p.ph;
    for (int64_t i = 0; i < p.kh; ++i) {
      const int64_t ih = hstart + i;
      if (ih < 0 || ih >= H) continue;
      const T* xr = xp + ih * W;
      for (int64_t j = 0; j < p.kw; ++j)
        avg_pool2d_fwd_tap<T, SW>(ym, xr, cols[j].lo, cols[j].hi, j - p.pw, p.sw);
    }
    for (int64_t q = 0; q < Q; ++q) ym[q] = ym[q] / avg_divisor<T>(hdiv, wdiv[q]);
  }
}

// Forward for narrow rows (Q < kNarrowRow, e.g. GoogLeNet's 7x7 average over a 7x7 map): one
// window at a time, summed in row-major order.
template <typename T>
void avg_pool2d_fwd_narrow_kernel(const PoolParams& p, bool count_include_pad, int64_t divisor_override,
                                  const AvgPlan& plan, const T* x, T* y) {
  const int64_t rows = p.N * p.C * p.P;
  const int64_t H = p.H, W = p.W, P = p.P, Q = p.Q;
  const int64_t* wdiv = plan.wdiv.data();
  const bool parallel = rows * Q * detail::window_taps(p) > kParallelWork;
#pragma omp parallel for num_threads(convkit::cpu::num_threads()) schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t nc = r / P, oh = r % P;
    const T* xp = x + nc * H * W;
    const int64_t hstart = oh * p.sh - p.ph;
    const TapRange ri = detail::window_range(hstart, p.kh, 1, H);
    const int64_t hdiv = avg_row_factor(p, oh, count_include_pad, divisor_override);
    for (int64_t q = 0; q < Q; ++q) {
      const int64_t wstart = q * p.sw - p.pw;
      const TapRange rj = detail::window_range(wstart, p.kw, 1, W);
      T sum = T(0);
      for (int64_t i = ri.lo; i < ri.hi; ++i) {
        const T* xr = xp + (hstart + i) * W + wstart;
        for (int64_t j = rj.lo; j < rj.hi; ++j) sum += xr[j];
      }
      y[r * Q + q] = hdiv == 0 ? T(0) : sum / avg_divisor<T>(hdiv, wdiv[q]);
    }
  }
}

// Sum of outputs q in [q0, q1) of one row, one window at a time in row-major order.
template <typename T>
inline void avg_pool2d_row_windows(const PoolParams& p, const T* xp, int64_t hstart, int64_t q0, int64_t q1,
                                   T* ym) {
  const int64_t W = p.W;
  const TapRange ri = detail::window_range(hstart, p.kh, 1, p.H);
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t wstart = q * p.sw - p.pw;
    const TapRange rj = detail::window_range(wstart, p.kw, 1, W);
    T sum = T(0);
    for (int64_t i = ri.lo; i < ri.hi; ++i) {
      const T* xr = xp + (hstart + i) * W + wstart;
      for (int64_t j = rj.lo; j < rj.hi; ++j) sum += xr[j];
    }
    ym[q] = sum;
  }
}

// Forward for a compile-time KH x KW window: interior columns [qa, qb) sum all taps in
// registers in one vectorized loop over q; rows outside the input point at a row of zeros
// (adding +0 to a sum that starts at +0 changes no bit), edge columns go window by window.
template <typename T, int KH, int KW, int SW>
void avg_pool2d_fwd_fused_kernel(const PoolParams& p, bool count_include_pad, int64_t divisor_override,
                                 const AvgPlan& plan, const T* x, T* y, int64_t qa, int64_t qb,
                                 const T* zero_row) {
  const int64_t rows = p.N * p.C * p.P;
  const int64_t H = p.H, W = p.W, P = p.P, Q = p.Q, pw = p.pw;
  const int64_t* wdiv = plan.wdiv.data();
  const bool parallel = rows * Q * KH * KW > kParallelWork;
#pragma omp parallel for num_threads(convkit::cpu::num_threads()) schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t nc = r / P, oh = r % P;
    const T* xp = x + nc * H * W;
    T* __restrict ym = y + r * Q;
    const int64_t hstart = oh * p.sh - p.ph;
    const int64_t hdiv = avg_row_factor(p, oh, count_include_pad, divisor_override);
    if (hdiv == 0) {
      for (int64_t q = 0; q < Q; ++q) ym[q] = T(0);
      continue;
    }
    const T* xr[KH];
    for (int i = 0; i < KH; ++i) {
      const int64_t ih = hstart + i;
      xr[i] = ih >= 0 && ih < H ? xp + ih * W : zero_row;
    }
    for (int64_t q = qa; q < qb; ++q) {
      T sum = T(0);
#pragma GCC unroll 8
      for (int i = 0; i < KH; ++i) {
#pragma GCC unroll 8
        for (int j = 0; j < KW; ++j) sum += xr[i][q * SW + j - pw];
      }
      ym[q] = sum;
    }
    avg_pool2d_row_windows<T>(p, xp, hstart, 0, qa, ym);
    avg_pool2d_row_windows<T>(p, xp, hstart, qb, Q, ym);
    for (int64_t q = 0; q < Q; ++q) ym[q] = ym[q] / avg_divisor<T>(hdiv, wdiv[q]);
  }
}

template <typename T, int KH, int KW>
void avg_pool2d_fwd_fused(const PoolParams& p, bool count_include_pad, int64_t divisor_override,
                          const AvgPlan& plan, const T* x, T* y) {
  // Columns where every kernel tap lies inside the input.
  const int64_t qa = plan.cols[0].lo, qb = std::max(qa, plan.cols[KW - 1].hi);
  const std::vector<T> zero_row(p.W, T(0));
  if (p.sw == 1)
    avg_pool2d_fwd_fused_kernel<T, KH, KW, 1>(p, count_include_pad, divisor_override, plan, x, y, qa, qb,
                                              zero_row.data());
  else if (p.sw == 2)
    avg_pool2d_fwd_fused_kernel<T, KH, KW, 2>(p, count_include_pad, divisor_override, plan, x, y, qa, qb,
                                              zero_row.data());
  else
    avg_pool2d_fwd_fused_kernel<T, KH, KW, 3>(p, count_include_pad, divisor_override, plan, x, y, qa, qb,
                                              zero_row.data());
}

// Backward: one (n, c) plane per iteration. g = dy / divisor for an output row, then each tap
// adds g into its shifted dx row; kernel columns go right to left so that each dx element
// receives its contributions in torch's (oh, ow) order.
template <typename T, int SW>
void avg_pool2d_bwd_kernel(const PoolParams& p, bool count_include_pad, int64_t divisor_override,
                           const AvgPlan& plan, const T* dy, T* dx) {
  const int64_t planes = p.N * p.C;
  const int64_t H = p.H, W = p.W, P = p.P, Q = p.Q;
  const TapRange* cols = plan.cols.data();
  const int64_t* wdiv = plan.wdiv.data();
  const bool parallel = planes * (H * W + P * Q * detail::window_taps(p)) > kParallelWork;
  ParallelGuard guard;
#pragma omp parallel num_threads(convkit::cpu::num_threads()) if (parallel)
  {
    std::vector<T> g;  // this thread's dy / divisor for one output row
    guard.run_quiet([&] { g.resize(Q); });
#pragma omp for schedule(static)
    for (int64_t nc = 0; nc < planes; ++nc) {
      if (guard.stopping()) continue;  // (a thread without its buffers)
      T* dxp = dx + nc * H * W;
      std::memset(dxp, 0, sizeof(T) * H * W);
      for (int64_t oh = 0; oh < P; ++oh) {
        const int64_t hdiv = avg_row_factor(p, oh, count_include_pad, divisor_override);
        if (hdiv == 0) continue;
        const T* dyr = dy + (nc * P + oh) * Q;
        for (int64_t q = 0; q < Q; ++q) g[q] = dyr[q] / avg_divisor<T>(hdiv, wdiv[q]);
        const int64_t hstart = oh * p.sh - p.ph;
        if (Q < detail::kNarrowRow || detail::wide_window(p)) {  // window by window, torch's exact order
          const TapRange ri = detail::window_range(hstart, p.kh, 1, H);
          for (int64_t q = 0; q < Q; ++q) {
            const int64_t wstart = q * p.sw - p.pw;
            const TapRange rj = detail::window_range(wstart, p.kw, 1, W);
            for (int64_t i = ri.lo; i < ri.hi; ++i) {
              T* dxr = dxp + (hstart + i) * W + wstart;
              for (int64_t j = rj.lo; j < rj.hi; ++j) dxr[j] += g[q];
            }
          }
          continue;
        }
        for (int64_t i = 0; i < p.kh; ++i) {
          const int64_t ih = hstart + i;
          if (ih < 0 || ih >= H) continue;
          T* dxr = dxp + ih * W;
          for (int64_t j = p.kw - 1; j >= 0; --j)
            avg_pool2d_bwd_tap<T, SW>(dxr, g.data(), cols[j].lo, cols[j].hi, j - p.pw, p.sw);
        }
      }
    }
  }
  guard.finish();
}

// Divisor of every output (oh, q), as T: 1 for an empty window (which sums to 0), as torch.
template <typename T>
std::vector<T> avg_divisors(const PoolParams& p, bool count_include_pad, int64_t divisor_override,
                            const AvgPlan& plan) {
  std::vector<T> d(p.P * p.Q);
  for (int64_t oh = 0; oh < p.P; ++oh) {
    const int64_t hdiv = avg_row_factor(p, oh, count_include_pad, divisor_override);
    for (int64_t q = 0; q < p.Q; ++q) d[oh * p.Q + q] = hdiv == 0 ? T(1) : avg_divisor<T>(hdiv, plan.wdiv[q]);
  }
  return d;
}

// NV vectors of outputs u .. u + NV * L of the plane kernel: NV independent sums.
template <typename T, int NV>
inline void avg_plane_block(const T* __restrict b, int64_t u, int64_t taps, const int64_t* __restrict tap_off,
                            const T* __restrict divu, T* __restrict ss) {
  using V = detail::Vec<T>;
  constexpr int L = V::L;
  typename V::R s[NV];
#pragma GCC unroll 4
  for (int k = 0; k < NV; ++k) s[k] = V::set1(T(0));
  for (int64_t t = 0; t < taps; ++t) {
    const T* bt = b + tap_off[t] + u;
#pragma GCC unroll 4
    for (int k = 0; k < NV; ++k) s[k] = V::add(s[k], V::load(bt + k * L));
  }
#pragma GCC unroll 4
  for (int k = 0; k < NV; ++k) V::store(ss + u + k * L, V::div(s[k], V::load(divu + u + k * L)));
}

// Plane kernel (detail::PhaseGrid) for the forward: the plane is copied into a zero padded
// polyphase buffer and each output is one lane of a unit-stride loop over the taps in row-major
// order, summing from +0 (adding a pad's +0 to a sum that started at +0 changes no bit, so the
// sum is torch's bit for bit), then divided.
template <typename T>
void avg_pool2d_fwd_plane(const PoolParams& p, const detail::PhaseGrid& g, const T* div, const T* x, T* y) {
  using V = detail::Vec<T>;
  constexpr int L = V::L;
  const int64_t planes = p.N * p.C, HW = p.H * p.W, PQ = p.P * p.Q, P = p.P, Q = p.Q, Wh = g.Wh;
  const int64_t taps = p.kh * p.kw, Upad = g.Upad;
  // divisors laid out with the buffer's row pitch Wh
  std::vector<T> divu(Upad, T(1));
  for (int64_t oh = 0; oh < P; ++oh)
    for (int64_t q = 0; q < Q; ++q) divu[oh * Wh + q] = div[oh * Q + q];
  const bool parallel = planes * Upad * taps > kParallelWork;
  ParallelGuard guard;
#pragma omp parallel num_threads(convkit::cpu::num_threads()) if (parallel)
  {
    std::vector<T> buf, ss;
    guard.run_quiet([&] {
      buf.assign(g.elems, T(0));
      ss.resize(Upad + L);
    });
    const int64_t* tap_off = g.tap_off.data();
#pragma omp for schedule(static)
    for (int64_t nc = 0; nc < planes; ++nc) {
      if (guard.stopping()) continue;  // (a thread without its buffers)
      detail::build_phases<T>(p, g, x + nc * HW, buf.data());
      const T* b = buf.data();
      int64_t u = 0;
      for (; u + 4 * L <= Upad; u += 4 * L) avg_plane_block<T, 4>(b, u, taps, tap_off, divu.data(), ss.data());
      for (; u < Upad; u += L) avg_plane_block<T, 1>(b, u, taps, tap_off, divu.data(), ss.data());
      T* yp = y + nc * PQ;
      for (int64_t oh = 0; oh < P; ++oh) detail::copy_strided<T>(yp + oh * Q, ss.data() + oh * Wh, Q, 1);
    }
  }
  guard.finish();
}

// Forward for planes with very few outputs (GoogLeNet's global 7x7 average): kB planes at a
// time, one independent sum per plane over each window's in-range taps in row-major order.
template <typename T>
void avg_pool2d_fwd_few(const PoolParams& p, const T* div, const T* x, T* y) {
  constexpr int kB = 8;
  const int64_t planes = p.N * p.C, HW = p.H * p.W, PQ = p.P * p.Q;
  // in-range tap positions of each output, row-major: pos[start[o] .. start[o + 1])
  std::vector<int64_t> start(PQ + 1, 0), pos;
  for (int64_t oh = 0; oh < p.P; ++oh)
    for (int64_t q = 0; q < p.Q; ++q) {
      const int64_t hs = oh * p.sh - p.ph, ws = q * p.sw - p.pw;
      const TapRange ri = detail::window_range(hs, p.kh, 1, p.H), rj = detail::window_range(ws, p.kw, 1, p.W);
      for (int64_t i = ri.lo; i < ri.hi; ++i)
        for (int64_t j = rj.lo; j < rj.hi; ++j) pos.push_back((hs + i) * p.W + ws + j);
      start[oh * p.Q + q + 1] = static_cast<int64_t>(pos.size());
    }
  const int64_t* ps = pos.data();
  const int64_t* st = start.data();
  const int64_t blocks = (planes + kB - 1) / kB;
  const bool parallel = planes * static_cast<int64_t>(pos.size()) > kParallelWork;
#pragma omp parallel for num_threads(convkit::cpu::num_threads()) schedule(static) if (parallel)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t nc0 = blk * kB;
    const T* xp = x + nc0 * HW;
    T* yp = y + nc0 * PQ;
    if (nc0 + kB <= planes) {
      for (int64_t o = 0; o < PQ; ++o) {
        T acc[kB] = {};
        for (int64_t k = st[o]; k < st[o + 1]; ++k) {
          const T* xk = xp + ps[k];
#pragma GCC unroll 8
          for (int b = 0; b < kB; ++b) acc[b] += xk[b * HW];
        }
#pragma GCC unroll 8
        for (int b = 0; b < kB; ++b) yp[b * PQ + o] = acc[b] / div[o];
      }
    } else {
      for (int64_t b = 0; b < planes - nc0; ++b)
        for (int64_t o = 0; o < PQ; ++o) {
          T acc = T(0);
          for (int64_t k = st[o]; k < st[o + 1]; ++k) acc += xp[b * HW + ps[k]];
          yp[b * PQ + o] = acc / div[o];
        }
    }
  }
}

// Backward of a single window per plane (P = Q = 1, e.g. a global average): each dx element
// gets at most one contribution, dx = 0 + dy / divisor inside the window and 0 outside.
template <typename T>
void avg_pool2d_bwd_single(const PoolParams& p, T div, const T* dy, T* dx) {
  const int64_t planes = p.N * p.C, H = p.H, W = p.W, HW = H * W;
  const TapRange ri = detail::window_range(-p.ph, p.kh, 1, H), rj = detail::window_range(-p.pw, p.kw, 1, W);
  std::vector<uint8_t> inside(HW, 0);
  for (int64_t i = ri.lo; i < ri.hi; ++i)
    for (int64_t j = rj.lo; j < rj.hi; ++j) inside[(i - p.ph) * W + j - p.pw] = 1;
  const uint8_t* in = inside.data();
  const bool parallel = planes * HW > kParallelWork;
#pragma omp parallel for num_threads(convkit::cpu::num_threads()) schedule(static) if (parallel)
  for (int64_t nc = 0; nc < planes; ++nc) {
    const T g = T(0) + dy[nc] / div;
    T* __restrict dxp = dx + nc * HW;
    for (int64_t e = 0; e < HW; ++e) dxp[e] = in[e] ? g : T(0);
  }
}

void check_avg_params(const PoolParams& p) {
  CK_CHECK(p.dh == 1 && p.dw == 1, "avg_pool2d: dilation must be 1");
}

}  // namespace

template <typename T>
void avg_pool2d_fwd(const PoolParams& p, bool count_include_pad, int64_t divisor_override, const T* x,
                    T* y) {
  check_avg_params(p);
  if (p.N == 0) return;
  const AvgPlan plan(p, count_include_pad, divisor_override);
  {
    const std::vector<T> div = avg_divisors<T>(p, count_include_pad, divisor_override, plan);
    detail::PhaseGrid g;
    if (p.P * p.Q <= 8 && sat_mul(p.P * p.Q, sat_mul(p.kh, p.kw)) <= detail::kPlaneMaxElems) {
      avg_pool2d_fwd_few<T>(p, div.data(), x, y);
      return;
    }
    if (detail::make_phase_grid(p, detail::Vec<T>::L, g)) {
      avg_pool2d_fwd_plane<T>(p, g, div.data(), x, y);
      return;
    }
  }
  const bool fused_stride = p.sw >= 1 && p.sw <= 3;
  if (p.Q < detail::kNarrowRow || detail::wide_window(p))
    avg_pool2d_fwd_narrow_kernel<T>(p, count_include_pad, divisor_override, plan, x, y);
  else if (fused_stride && p.kh == 3 && p.kw == 3)
    avg_pool2d_fwd_fused<T, 3, 3>(p, count_include_pad, divisor_override, plan, x, y);
  else if (fused_stride && p.kh == 2 && p.kw == 2)
    avg_pool2d_fwd_fused<T, 2, 2>(p, count_include_pad, divisor_override, plan, x, y);
  else if (p.sw == 1)
    avg_pool2d_fwd_kernel<T, 1>(p, count_include_pad, divisor_override, plan, x, y);
  else if (p.sw == 2)
    avg_pool2d_fwd_kernel<T, 2>(p, count_include_pad, divisor_override, plan, x, y);
  else
    avg_pool2d_fwd_kernel<T, 0>(p, count_include_pad, divisor_override, plan, x, y);
}

template <typename T>
void avg_pool2d_bwd(const PoolParams& p, bool count_include_pad, int64_t divisor_override, const T* dy,
                    T* dx) {
  check_avg_params(p);
  if (p.N == 0) return;
  const AvgPlan plan(p, count_include_pad, divisor_override);
  if (p.P == 1 && p.Q == 1) {
    const int64_t hdiv = avg_row_factor(p, 0, count_include_pad, divisor_override);
    const int64_t planes = p.N * p.C;
    if (hdiv != 0) {
      avg_pool2d_bwd_single<T>(p, avg_divisor<T>(hdiv, plan.wdiv[0]), dy, dx);
      return;
    }
    std::memset(dx, 0, sizeof(T) * planes * p.H * p.W);
    return;
  }
  if (p.sw == 1)
    avg_pool2d_bwd_kernel<T, 1>(p, count_include_pad, divisor_override, plan, dy, dx);
  else if (p.sw == 2)
    avg_pool2d_bwd_kernel<T, 2>(p, count_include_pad, divisor_override, plan, dy, dx);
  else
    avg_pool2d_bwd_kernel<T, 0>(p, count_include_pad, divisor_override, plan, dy, dx);
}

template void avg_pool2d_fwd<float>(const PoolParams&, bool, int64_t, const float*, float*);
template void avg_pool2d_fwd<double>(const PoolParams&, bool, int64_t, const double*, double*);
template void avg_pool2d_bwd<float>(const PoolParams&, bool, int64_t, const float*, float*);
template void avg_pool2d_bwd<double>(const PoolParams&, bool, int64_t, const double*, double*);

}  // namespace convkit::cpu
