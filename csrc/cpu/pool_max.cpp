// Max pooling on the CPU, NCHW contiguous. Planes up to detail::kPlaneMaxElems padded elements
// (every GoogLeNet pool) take the plane kernel: the plane is copied into a -inf padded
// polyphase buffer (detail::PhaseGrid) and all its outputs go through one unit-stride vector loop
// over the taps, values and int32 indices in registers, then are packed into y and idx. Larger
// planes take the row kernels: tap-major along an output row: for each valid kernel tap (i, j)
// one branch-free loop over q updates the whole row from a shifted (strided) input row. Either
// way taps go in row-major window order, so ties keep the first maximum and NaNs win exactly as
// in torch (take v when v > max or v is NaN: the last NaN of a window gives its index). Parallel
// over (n, c) planes (rows for the row kernels). Backward scatters dy into dx one (n, c) plane per
// thread, serially within the plane: deterministic, no atomics.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/pool.h"
#include "cpu/threads.h"

namespace convkit::cpu {
namespace {

using detail::TapRange;

// Below this many tap visits a call stays on one thread: OpenMP's fork costs more.
constexpr int64_t kParallelWork = 1 << 15;

// First position >= 0 of a window that starts at `start` and steps by `dil` (torch's
// `while (start < 0) start += dil`).
inline int64_t first_nonneg(int64_t start, int64_t dil) {
  return start >= 0 ? start : start + detail::ceil_div_nonneg(-start, dil) * dil;
}

// One kernel tap over outputs q in [lo, hi) of a row: window column w = q * stride + off of
// input row xr. With indices, yi gets row_base + w (h * W + w) where the tap wins.
template <typename T, int SW, bool kIdx>
inline void max_pool2d_tap(T* __restrict ym, int64_t* __restrict yi, const T* __restrict xr, int64_t lo,
                           int64_t hi, int64_t off, int64_t sw_rt, int64_t row_base) {
  const int64_t s = SW > 0 ? SW : sw_rt;
  for (int64_t q = lo; q < hi; ++q) {
    const int64_t w = q * s + off;
    const T v = xr[w];
    const T m = ym[q];
    const bool take = (v > m) | (v != v);
    ym[q] = take ? v : m;
    if constexpr (kIdx) yi[q] = take ? row_base + w : yi[q];
  }
}

// Forward: (n, c, oh) is one output row; cols[j] is the valid q range of kernel column j and
// iw_first[q] the first in-range window column of output q (torch's initial index).
template <typename T, int SW, bool kIdx>
void max_pool2d_fwd_kernel(const PoolParams& p, const T* x, T* y, int64_t* idx, const TapRange* cols,
                           const int64_t* iw_first) {
  const int64_t rows = p.N * p.C * p.P;
  const int64_t H = p.H, W = p.W, P = p.P, Q = p.Q;
  const bool parallel = rows * Q * detail::window_taps(p) > kParallelWork;
#pragma omp parallel for num_threads(convkit::cpu::num_threads()) schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t nc = r / P, oh = r % P;
    const T* xp = x + nc * H * W;
    T* ym = y + r * Q;
    int64_t* yi = kIdx ? idx + r * Q : nullptr;
    const int64_t hstart = oh * p.sh - p.ph;

    for (int64_t q = 0; q < Q; ++q) ym[q] = -std::numeric_limits<T>::infinity();
    if constexpr (kIdx) {
      const int64_t h_first = first_nonneg(hstart, p.dh) * W;
      for (int64_t q = 0; q < Q; ++q) yi[q] = h_first + iw_first[q];
    }
    for (int64_t i = 0; i < p.kh; ++i) {
      const int64_t ih = hstart + i * p.dh;
      if (ih < 0 || ih >= H) continue;
      const T* xr = xp + ih * W;
      for (int64_t j = 0; j < p.kw; ++j)
        max_pool2d_tap<T, SW, kIdx>(ym, yi, xr, cols[j].lo, cols[j].hi, j * p.dw - p.pw, p.sw, ih * W);
    }
  }
}

// Outputs q in [q0, q1) of one output row, one window at a time (scalar), over its valid taps
// in row-major order: for narrow rows and for the edge columns of the fused kernel.
template <typename T, bool kIdx>
inline void max_pool2d_row_windows(const PoolParams& p, const T* xp, int64_t hstart, int64_t q0, int64_t q1,
                                   T* ym, int64_t* yi) {
  const int64_t W = p.W;
  const TapRange ri = detail::window_range(hstart, p.kh, p.dh, p.H);
  const int64_t h_first = first_nonneg(hstart, p.dh);
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t wstart = q * p.sw - p.pw;
    const TapRange rj = detail::window_range(wstart, p.kw, p.dw, W);
    T m = -std::numeric_limits<T>::infinity();
    if constexpr (kIdx) {
      int64_t at = h_first * W + first_nonneg(wstart, p.dw);  // torch's initial index
      for (int64_t i = ri.lo; i < ri.hi; ++i) {
        const int64_t ih = hstart + i * p.dh;
        const T* xr = xp + ih * W;
        for (int64_t j = rj.lo; j < rj.hi; ++j) {
          const int64_t iw = wstart + j * p.dw;
          const T v = xr[iw];
          const bool take = (v > m) | (v != v);
          m = take ? v : m;
          at = take ? ih * W + iw : at;
        }
      }
      yi[q] = at;
    } else {
      // Without indices only the value matters: a max and a NaN flag, both branch-free
      // (a compare-and-branch mispredicts on random data).
      bool saw_nan = false;
      for (int64_t i = ri.lo; i < ri.hi; ++i) {
        const T* xr = xp + (hstart + i * p.dh) * W;
        for (int64_t j = rj.lo; j < rj.hi; ++j) {
          const T v = xr[wstart + j * p.dw];
          m = v > m ? v : m;
          saw_nan |= v != v;
        }
      }
      if (saw_nan) m = std::numeric_limits<T>::quiet_NaN();
    }
    ym[q] = m;
  }
}

// Forward for narrow rows (Q < kNarrowRow, e.g. a 7x7 window over a 7x7 map).
template <typename T, bool kIdx>
void max_pool2d_fwd_narrow_kernel(const PoolParams& p, const T* x, T* y, int64_t* idx) {
  const int64_t rows = p.N * p.C * p.P;
  const int64_t H = p.H, W = p.W, P = p.P, Q = p.Q;
  const bool parallel = rows * Q * detail::window_taps(p) > kParallelWork;
#pragma omp parallel for num_threads(convkit::cpu::num_threads()) schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t nc = r / P, oh = r % P;
    max_pool2d_row_windows<T, kIdx>(p, x + nc * H * W, oh * p.sh - p.ph, 0, Q, y + r * Q,
                                    kIdx ? idx + r * Q : nullptr);
  }
}

// Interior columns [qa, qb) of one output row for a compile-time KH x KW window: each output
// keeps its max (and index) in registers over all KH * KW taps, one vectorized loop over q.
// Rows outside the input point at a row of -inf, which never wins (strict >, not NaN).
template <typename T, int KH, int KW, int SW, bool kIdx>
inline void max_pool2d_row_fused(const T* const* xr, const int64_t* row_base, int64_t qa, int64_t qb,
                                 int64_t dw, int64_t pw, int64_t first_base, T* __restrict ym,
                                 int64_t* __restrict yi) {
  for (int64_t q = qa; q < qb; ++q) {
    T m = -std::numeric_limits<T>::infinity();
    int64_t at = first_base + q * SW;
#pragma GCC unroll 8
    for (int i = 0; i < KH; ++i) {
#pragma GCC unroll 8
      for (int j = 0; j < KW; ++j) {
        const int64_t w = q * SW + j * dw - pw;
        const T v = xr[i][w];
        const bool take = (v > m) | (v != v);
        m = take ? v : m;
        if constexpr (kIdx) at = take ? row_base[i] + w : at;
      }
    }
    ym[q] = m;
    if constexpr (kIdx) yi[q] = at;
  }
}

// Forward for a compile-time KH x KW window (the 3x3 and 2x2 pools of common networks):
// fused interior columns plus window-at-a-time edge columns. neg_inf_row: W values of -inf.
template <typename T, int KH, int KW, int SW, bool kIdx>
void max_pool2d_fwd_fused_kernel(const PoolParams& p, const T* x, T* y, int64_t* idx, int64_t qa, int64_t qb,
                                 const T* neg_inf_row) {
  const int64_t rows = p.N * p.C * p.P;
  const int64_t H = p.H, W = p.W, P = p.P, Q = p.Q;
  const bool parallel = rows * Q * KH * KW > kParallelWork;
#pragma omp parallel for num_threads(convkit::cpu::num_threads()) schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t nc = r / P, oh = r % P;
    const T* xp = x + nc * H * W;
    T* ym = y + r * Q;
    int64_t* yi = kIdx ? idx + r * Q : nullptr;
    const int64_t hstart = oh * p.sh - p.ph;
    const T* xr[KH];
    int64_t row_base[KH];
    for (int i = 0; i < KH; ++i) {
      const int64_t ih = hstart + i * p.dh;
      const bool inside = ih >= 0 && ih < H;
      xr[i] = inside ? xp + ih * W : neg_inf_row;
      row_base[i] = ih * W;
    }
    // Interior windows start in the input, so torch's initial index is (h_first, wstart).
    const int64_t first_base = first_nonneg(hstart, p.dh) * W - p.pw;
    max_pool2d_row_fused<T, KH, KW, SW, kIdx>(xr, row_base, qa, qb, p.dw, p.pw, first_base, ym, yi);
    max_pool2d_row_windows<T, kIdx>(p, xp, hstart, 0, qa, ym, yi);
    max_pool2d_row_windows<T, kIdx>(p, xp, hstart, qb, Q, ym, yi);
  }
}

template <typename T, int KH, int KW, bool kIdx>
void max_pool2d_fwd_fused(const PoolParams& p, const T* x, T* y, int64_t* idx, const TapRange* cols) {
  // Columns where every kernel tap lies inside the input.
  const int64_t qa = cols[0].lo, qb = std::max(qa, cols[KW - 1].hi);
  const std::vector<T> neg_inf_row(p.W, -std::numeric_limits<T>::infinity());
  if (p.sw == 1)
    max_pool2d_fwd_fused_kernel<T, KH, KW, 1, kIdx>(p, x, y, idx, qa, qb, neg_inf_row.data());
  else if (p.sw == 2)
    max_pool2d_fwd_fused_kernel<T, KH, KW, 2, kIdx>(p, x, y, idx, qa, qb, neg_inf_row.data());
  else
    max_pool2d_fwd_fused_kernel<T, KH, KW, 3, kIdx>(p, x, y, idx, qa, qb, neg_inf_row.data());
}

template <typename T, bool kIdx>
void max_pool2d_fwd_dispatch(const PoolParams& p, const T* x, T* y, int64_t* idx, const TapRange* cols,
                             const int64_t* iw_first) {
  const bool fused_stride = p.sw >= 1 && p.sw <= 3;
  if (p.Q < detail::kNarrowRow)
    max_pool2d_fwd_narrow_kernel<T, kIdx>(p, x, y, idx);
  else if (fused_stride && p.kh == 3 && p.kw == 3)
    max_pool2d_fwd_fused<T, 3, 3, kIdx>(p, x, y, idx, cols);
  else if (fused_stride && p.kh == 2 && p.kw == 2)
    max_pool2d_fwd_fused<T, 2, 2, kIdx>(p, x, y, idx, cols);
  else if (p.sw == 1)
    max_pool2d_fwd_kernel<T, 1, kIdx>(p, x, y, idx, cols, iw_first);
  else if (p.sw == 2)
    max_pool2d_fwd_kernel<T, 2, kIdx>(p, x, y, idx, cols, iw_first);
  else
    max_pool2d_fwd_kernel<T, 0, kIdx>(p, x, y, idx, cols, iw_first);
}

// NV vectors of outputs u .. u + NV * L of a plane kernel: NV independent compare-and-blend
// chains, so that the taps' latency overlaps.
template <typename T, bool kIdx, int NV>
inline void max_plane_block(const T* __restrict b, int64_t u, int64_t taps, const int64_t* __restrict tap_off,
                            const int32_t* __restrict tap_idx, const int32_t* __restrict init,
                            const int32_t* __restrict base, T* __restrict ms, int32_t* __restrict ats) {
  using V = detail::Vec<T>;
  constexpr int L = V::L;
  typename V::R m[NV];
  typename V::I at[NV], bs[NV];
#pragma GCC unroll 4
  for (int k = 0; k < NV; ++k) {
    m[k] = V::set1(-std::numeric_limits<T>::infinity());
    if constexpr (kIdx) {
      at[k] = V::iload(init + u + k * L);
      bs[k] = V::iload(base + u + k * L);
    }
  }
  for (int64_t t = 0; t < taps; ++t) {
    const T* bt = b + tap_off[t] + u;
    const int32_t ti = tap_idx[t];
#pragma GCC unroll 4
    for (int k = 0; k < NV; ++k) {
      const typename V::R v = V::load(bt + k * L);
      const typename V::M take = V::take(v, m[k]);
      m[k] = V::blend(take, m[k], v);
      if constexpr (kIdx) at[k] = V::iblend(take, at[k], V::iadd(bs[k], ti));
    }
  }
#pragma GCC unroll 4
  for (int k = 0; k < NV; ++k) {
    V::store(ms + u + k * L, m[k]);
    if constexpr (kIdx) V::istore(ats + u + k * L, at[k]);
  }
}

// Plane kernel (detail::PhaseGrid): each (n, c) plane is copied into a -inf padded polyphase
// buffer, then every output of the plane is one lane of a unit-stride vector loop over the taps
// in row-major order (no edge cases: a -inf pad never wins under strict >, and is never NaN),
// values and int32 indices in registers; rows of pitch Wh are then packed into y and idx.
template <typename T, bool kIdx>
void max_pool2d_fwd_plane(const PoolParams& p, const detail::PhaseGrid& g, const T* x, T* y, int64_t* idx) {
  using V = detail::Vec<T>;
  constexpr int L = V::L;
  const int64_t planes = p.N * p.C, HW = p.H * p.W, PQ = p.P * p.Q, P = p.P, Q = p.Q, Wh = g.Wh;
  const int64_t taps = p.kh * p.kw, Upad = g.Upad;
  const bool parallel = planes * g.Upad * taps > kParallelWork;
  ParallelGuard guard;
#pragma omp parallel num_threads(convkit::cpu::num_threads()) if (parallel)
  {
    std::vector<T> buf, ms;
    std::vector<int32_t> ats;
    guard.run_quiet([&] {
      buf.assign(g.elems, -std::numeric_limits<T>::infinity());
      ms.resize(Upad + L);
      ats.resize(kIdx ? Upad + L : 0);  // + L: the packing's full-width loads
    });
    const int64_t* tap_off = g.tap_off.data();
    const int32_t* tap_idx = g.tap_idx.data();
    const int32_t* base = g.base.data();
    const int32_t* init = g.init.data();
#pragma omp for schedule(static)
    for (int64_t nc = 0; nc < planes; ++nc) {
      if (guard.stopping()) continue;  // (a thread without its buffers)
      detail::build_phases<T>(p, g, x + nc * HW, buf.data());
      const T* b = buf.data();
      int64_t u = 0;
      for (; u + 4 * L <= Upad; u += 4 * L)
        max_plane_block<T, kIdx, 4>(b, u, taps, tap_off, tap_idx, init, base, ms.data(), ats.data());
      for (; u < Upad; u += L)
        max_plane_block<T, kIdx, 1>(b, u, taps, tap_off, tap_idx, init, base, ms.data(), ats.data());
      T* yp = y + nc * PQ;
      for (int64_t oh = 0; oh < P; ++oh) detail::copy_strided<T>(yp + oh * Q, ms.data() + oh * Wh, Q, 1);
      if constexpr (kIdx) {
        int64_t* ip = idx + nc * PQ;
        for (int64_t oh = 0; oh < P; ++oh) detail::copy_idx_row<T>(ip + oh * Q, ats.data() + oh * Wh, Q);
      }
    }
  }
  guard.finish();
}

}  // namespace

template <typename T>
void max_pool2d_fwd(const PoolParams& p, const T* x, T* y, int64_t* idx) {
  if (p.N == 0) return;
  detail::PhaseGrid g;
  if (detail::make_phase_grid(p, detail::Vec<T>::L, g)) {
    if (idx)
      max_pool2d_fwd_plane<T, true>(p, g, x, y, idx);
    else
      max_pool2d_fwd_plane<T, false>(p, g, x, y, nullptr);
    return;
  }
  if (detail::wide_window(p)) {  // window at a time over each window's in-input taps only
    if (idx)
      max_pool2d_fwd_narrow_kernel<T, true>(p, x, y, idx);
    else
      max_pool2d_fwd_narrow_kernel<T, false>(p, x, y, nullptr);
    return;
  }
  std::vector<TapRange> cols(p.kw);
  for (int64_t j = 0; j < p.kw; ++j) cols[j] = detail::tap_range(j * p.dw - p.pw, p.sw, p.W, p.Q);
  std::vector<int64_t> iw_first(p.Q);
  for (int64_t q = 0; q < p.Q; ++q) iw_first[q] = first_nonneg(q * p.sw - p.pw, p.dw);
  if (idx)
    max_pool2d_fwd_dispatch<T, true>(p, x, y, idx, cols.data(), iw_first.data());
  else
    max_pool2d_fwd_dispatch<T, false>(p, x, y, nullptr, cols.data(), iw_first.data());
}

// Backward: one (n, c) plane per iteration, dx = 0 then dx[idx] += dy in output order.
// An index outside the plane (only a window with no in-range tap, which torch's parameter
// rules make near impossible) is skipped rather than written out of bounds.
template <typename T>
void max_pool2d_bwd(const PoolParams& p, const T* dy, const int64_t* idx, T* dx) {
  if (p.N == 0) return;
  const int64_t planes = p.N * p.C, HW = p.H * p.W, PQ = p.P * p.Q;
  const bool parallel = planes * (HW + PQ) > kParallelWork;
#pragma omp parallel for num_threads(convkit::cpu::num_threads()) schedule(static) if (parallel)
  for (int64_t nc = 0; nc < planes; ++nc) {
    T* dxp = dx + nc * HW;
    const T* dyp = dy + nc * PQ;
    const int64_t* ip = idx + nc * PQ;
    std::memset(dxp, 0, sizeof(T) * HW);
    for (int64_t k = 0; k < PQ; ++k) {
      const int64_t at = ip[k];
      if (static_cast<uint64_t>(at) < static_cast<uint64_t>(HW)) dxp[at] += dyp[k];
    }
  }
}

template void max_pool2d_fwd<float>(const PoolParams&, const float*, float*, int64_t*);
template void max_pool2d_fwd<double>(const PoolParams&, const double*, double*, int64_t*);
template void max_pool2d_bwd<float>(const PoolParams&, const float*, const int64_t*, float*);
template void max_pool2d_bwd<double>(const PoolParams&, const double*, const int64_t*, double*);

}  // namespace convkit::cpu
