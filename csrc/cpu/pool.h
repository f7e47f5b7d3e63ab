// CPU pooling kernels, NCHW contiguous: max pooling (dilation, ceil_mode, optional int64
// indices, torch's NaN rule) and average pooling (ceil_mode, count_include_pad,
// divisor_override), forward and backward. Templates instantiated for float and double.
// Also the pieces the plane kernels of pool_max.cpp and pool_avg.cpp share (namespace detail): a
// small SIMD layer (AVX-512, or one scalar lane) and the padded polyphase plane layout.
#pragma once
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512VL__)
#include <immintrin.h>
#define CONVKIT_POOL_AVX512 1
#endif

#include "common/params.h"

namespace convkit::cpu {

// x: [N, C, H, W] -> y: [N, C, P, Q]; idx: int64 [N, C, P, Q] holding h * W + w within each
// (n, c) plane, or nullptr when no indices are wanted.
template <typename T>
void max_pool2d_fwd(const PoolParams& p, const T* x, T* y, int64_t* idx);

// dy, idx: [N, C, P, Q] -> dx: [N, C, H, W], every element written (dx[idx] += dy).
template <typename T>
void max_pool2d_bwd(const PoolParams& p, const T* dy, const int64_t* idx, T* dx);

// divisor_override == 0: no override. p.dh and p.dw must be 1.
template <typename T>
void avg_pool2d_fwd(const PoolParams& p, bool count_include_pad, int64_t divisor_override, const T* x,
                    T* y);

template <typename T>
void avg_pool2d_bwd(const PoolParams& p, bool count_include_pad, int64_t divisor_override, const T* dy,
                    T* dx);

namespace detail {

// Outputs q in [lo, hi) are those whose window column w = q * stride + off lies inside
// [0, W): the valid range of one kernel column along an output row.
struct TapRange {
  int64_t lo, hi;
};

inline int64_t ceil_div_nonneg(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline TapRange tap_range(int64_t off, int64_t stride, int64_t W, int64_t Q) {
  // q * stride + off >= 0  and  q * stride + off <= W - 1
  const int64_t lo = off >= 0 ? 0 : ceil_div_nonneg(-off, stride);
  const int64_t last = W - 1 - off;
  int64_t hi = last < 0 ? 0 : last / stride + 1;
  if (hi > Q) hi = Q;
  return {lo < hi ? lo : hi, hi};
}

// Kernel taps k in [lo, hi) of a window that starts at `start` with step `dil` are those whose
// position start + k * dil lies inside [0, size): the valid part of one window.
inline TapRange window_range(int64_t start, int64_t k, int64_t dil, int64_t size) {
  const int64_t lo = start >= 0 ? 0 : ceil_div_nonneg(-start, dil);
  const int64_t last = size - 1 - start;
  int64_t hi = last < 0 ? 0 : last / dil + 1;
  if (hi > k) hi = k;
  return {lo < hi ? lo : hi, hi};
}

// A window much larger than the input (a kernel of 2**30 with padding half of it, torch allows
// that): the row kernels' per-tap loops and tables would grow with the kernel, so such pools go
// window at a time over each window's in-input taps (window_range), in time proportional to the
// output times the taps that land in the input.
inline bool wide_window(const PoolParams& p) { return p.kh > p.H + 64 || p.kw > p.W + 64; }

// Taps of a window that can land in the input (the work per output, for parallel-or-not tests).
inline int64_t window_taps(const PoolParams& p) {
  return (p.kh < p.H ? p.kh : p.H) * (p.kw < p.W ? p.kw : p.W);
}

// Below this many outputs per row the per-tap row loops are too short to pay for themselves
// and the kernels go one output (one whole window) at a time.
constexpr int64_t kNarrowRow = 8;

// ---- SIMD layer of the plane kernels ---------------------------------------------------------
// Vec<T>: L lanes of T, a mask per lane and L int32 lanes (window indices). AVX-512 where the
// build has it, otherwise one lane (plain scalar code, same algorithm).
template <typename T>
struct Vec;

#ifdef CONVKIT_POOL_AVX512
template <>
struct Vec<float> {
  static constexpr int L = 16;
  using R = __m512;
  using I = __m512i;
  using M = __mmask16;
  static M tail(int64_t n) { return n >= 16 ? M(0xFFFF) : n <= 0 ? M(0) : M((1u << n) - 1); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static R loadz(M k, const float* p) { return _mm512_maskz_loadu_ps(k, p); }
  static void store(float* p, R v) { _mm512_storeu_ps(p, v); }
  static void store(M k, float* p, R v) { _mm512_mask_storeu_ps(p, k, v); }
  static R set1(float v) { return _mm512_set1_ps(v); }
  // v > m or v is NaN: torch's max-pool update rule
  static M take(R v, R m) { return _mm512_cmp_ps_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q); }
  static R blend(M k, R a, R b) { return _mm512_mask_mov_ps(a, k, b); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R div(R a, R b) { return _mm512_div_ps(a, b); }
  static I iload(const int32_t* p) { return _mm512_loadu_si512(p); }
  static void istore(int32_t* p, I v) { _mm512_storeu_si512(p, v); }
  static I iadd(I a, int32_t c) { return _mm512_add_epi32(a, _mm512_set1_epi32(c)); }
  static I iblend(M k, I a, I b) { return _mm512_mask_mov_epi32(a, k, b); }
  // int32 lanes widened to int64 at dst, lanes in k
  static void store_idx(M k, int64_t* dst, I v) {
    _mm512_mask_storeu_epi64(dst, static_cast<__mmask8>(k), _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v)));
    _mm512_mask_storeu_epi64(dst + 8, static_cast<__mmask8>(k >> 8),
                             _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1)));
  }
  // lanes 0, 2, 4, ... of the 2L values a (low) and b (high)
  static R even(R a, R b) {
    const __m512i sel = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    return _mm512_permutex2var_ps(a, sel, b);
  }
  static R odd(R a, R b) {
    const __m512i sel = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    return _mm512_permutex2var_ps(a, sel, b);
  }
};

template <>
struct Vec<double> {
  static constexpr int L = 8;
  using R = __m512d;
  using I = __m256i;
  using M = __mmask8;
  static M tail(int64_t n) { return n >= 8 ? M(0xFF) : n <= 0 ? M(0) : M((1u << n) - 1); }
  static R load(const double* p) { return _mm512_loadu_pd(p); }
  static R loadz(M k, const double* p) { return _mm512_maskz_loadu_pd(k, p); }
  static void store(double* p, R v) { _mm512_storeu_pd(p, v); }
  static void store(M k, double* p, R v) { _mm512_mask_storeu_pd(p, k, v); }
  static R set1(double v) { return _mm512_set1_pd(v); }
  static M take(R v, R m) { return _mm512_cmp_pd_mask(v, m, _CMP_GT_OQ) | _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q); }
  static R blend(M k, R a, R b) { return _mm512_mask_mov_pd(a, k, b); }
  static R add(R a, R b) { return _mm512_add_pd(a, b); }
  static R div(R a, R b) { return _mm512_div_pd(a, b); }
  static I iload(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void istore(int32_t* p, I v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static I iadd(I a, int32_t c) { return _mm256_add_epi32(a, _mm256_set1_epi32(c)); }
  static I iblend(M k, I a, I b) { return _mm256_mask_mov_epi32(a, k, b); }
  static void store_idx(M k, int64_t* dst, I v) { _mm512_mask_storeu_epi64(dst, k, _mm512_cvtepi32_epi64(v)); }
  static R even(R a, R b) {
    const __m512i sel = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    return _mm512_permutex2var_pd(a, sel, b);
  }
  static R odd(R a, R b) {
    const __m512i sel = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
    return _mm512_permutex2var_pd(a, sel, b);
  }
};
#else
template <typename T>
struct Vec {
  static constexpr int L = 1;
  using R = T;
  using I = int32_t;
  using M = bool;
  static M tail(int64_t n) { return n > 0; }
  static R load(const T* p) { return *p; }
  static R loadz(M k, const T* p) { return k ? *p : T(0); }
  static void store(T* p, R v) { *p = v; }
  static void store(M k, T* p, R v) {
    if (k) *p = v;
  }
  static R set1(T v) { return v; }
  static M take(R v, R m) { return (v > m) | (v != v); }
  static R blend(M k, R a, R b) { return k ? b : a; }
  static R add(R a, R b) { return a + b; }
  static R div(R a, R b) { return a / b; }
  static I iload(const int32_t* p) { return *p; }
  static void istore(int32_t* p, I v) { *p = v; }
  static I iadd(I a, int32_t c) { return a + c; }
  static I iblend(M k, I a, I b) { return k ? b : a; }
  static void store_idx(M k, int64_t* dst, I v) {
    if (k) *dst = v;
  }
};
#endif

// dst[i] = src[i * stride] for i in [0, n): exactly n values written, src read only at those.
template <typename T>
inline void copy_strided(T* __restrict dst, const T* __restrict src, int64_t n, int64_t stride) {
  using V = Vec<T>;
  constexpr int L = V::L;
  if (stride == 1) {
    int64_t i = 0;
    for (; i + L <= n; i += L) V::store(dst + i, V::load(src + i));
    if (i < n) {
      const typename V::M k = V::tail(n - i);
      V::store(k, dst + i, V::loadz(k, src + i));
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i * stride];
}

// Copies Q int32 lanes of src to int64 dst.
template <typename T>
inline void copy_idx_row(int64_t* __restrict dst, const int32_t* __restrict src, int64_t n) {
  using V = Vec<T>;
  constexpr int L = V::L;
  for (int64_t i = 0; i < n; i += L) V::store_idx(V::tail(n - i), dst + i, V::iload(src + i));
}

// ---- polyphase plane layout ------------------------------------------------------------------
// A small plane is copied into a padded buffer split into sh * sw phases: phase (a, b) element
// (r, c) is padded position (sh * r + a, sw * c + b), i.e. input (sh * r + a - ph, sw * c + b - pw),
// or the pad value outside the input. Every output (oh, q) then reads tap (i, j) at element
// (oh + i * dh / sh, q + j * dw / sw) of phase ((i * dh) % sh, (j * dw) % sw): with the phases laid
// out with row pitch Wh, output u = oh * Wh + q reads buffer[tap_off[t] + u] for every tap t, one
// long unit-stride loop over u for the whole plane (lanes with q >= Q are computed and dropped).
struct PhaseGrid {
  struct Span {  // r (or c) in [lo, hi) holds input row (column) first + stride * (r - lo)
    int64_t lo, hi, first;
  };
  int64_t Hh = 0, Wh = 0, U = 0, Upad = 0, phase_elems = 0, elems = 0;
  std::vector<int64_t> tap_off;  // [kh * kw], row-major taps: buffer offset for u = 0
  std::vector<int32_t> tap_idx;  // [kh * kw]: i * dh * W + j * dw, the index step from base
  std::vector<uint8_t> used;     // [sh * sw]: phase read by some tap
  std::vector<Span> rows;        // [sh]
  std::vector<Span> cols;        // [sw]
  std::vector<int32_t> base;     // [Upad]: (oh * sh - ph) * W + q * sw - pw
  std::vector<int32_t> init;     // [Upad]: torch's initial index (first in-range tap)
  // Vector row program (AVX-512, sw 1 or 2): an input row is read in chunks of L (sw = 1) or 2L
  // (sw = 2) values from column k * L * sw - pw, lanes outside [0, W) masked off (never read),
  // and stored to phase columns [k * L, k * L + L) of phase b under st[b][k] (in-range columns
  // below Wh only). Empty when the build goes column by column.
  int64_t chunks = 0;
  std::vector<uint32_t> ld0, ld1;  // [chunks]: lane masks of the low and high loads
  std::vector<uint32_t> st[2];     // [chunks]: store masks of phase columns b = 0, 1
};

// Planes whose padded buffer stays below this many elements take the plane kernels.
constexpr int64_t kPlaneMaxElems = int64_t(1) << 16;


inline PhaseGrid::Span phase_span(int64_t phase, int64_t stride, int64_t pad, int64_t in, int64_t n) {
  // r in [0, n) with stride * r + phase - pad in [0, in)
  const int64_t off = phase - pad;
  const int64_t lo = off >= 0 ? 0 : ceil_div_nonneg(-off, stride);
  const int64_t last = in - 1 - off;
  int64_t hi = last < 0 ? 0 : last / stride + 1;
  if (hi > n) hi = n;
  const int64_t l = lo < hi ? lo : hi;
  return {l, hi, stride * l + off};
}

inline int64_t first_nonneg(int64_t start, int64_t dil) {
  return start >= 0 ? start : start + ceil_div_nonneg(-start, dil) * dil;
}

// false when the plane is too large (or its indices would not fit int32): use the row kernels.
inline bool make_phase_grid(const PoolParams& p, int lanes, PhaseGrid& g) {
  // (strides above 4 leave most of the phases unread: the row kernels do better there)
  if (p.sh > 4 || p.sw > 4 || wide_window(p) || sat_mul(p.H, p.W) > (int64_t(1) << 24)) return false;
  g.Hh = p.P + sat_mul(p.kh - 1, p.dh) / p.sh;
  g.Wh = p.Q + sat_mul(p.kw - 1, p.dw) / p.sw;
  g.phase_elems = sat_mul(g.Hh, g.Wh);
  if (sat_mul(g.phase_elems, p.sh * p.sw) > kPlaneMaxElems) return false;
  g.U = (p.P - 1) * g.Wh + p.Q;
  g.Upad = (g.U + lanes - 1) / lanes * lanes;
  g.elems = g.phase_elems * p.sh * p.sw + lanes;  // slack: the last vector's dropped lanes
  g.used.assign(p.sh * p.sw, 0);
  g.tap_off.clear();
  g.tap_idx.clear();
  for (int64_t i = 0; i < p.kh; ++i)
    for (int64_t j = 0; j < p.kw; ++j) {
      const int64_t a = i * p.dh % p.sh, b = j * p.dw % p.sw;
      g.used[a * p.sw + b] = 1;
      g.tap_off.push_back((a * p.sw + b) * g.phase_elems + (i * p.dh / p.sh) * g.Wh + j * p.dw / p.sw);
      g.tap_idx.push_back(static_cast<int32_t>(i * p.dh * p.W + j * p.dw));
    }
  g.rows.resize(p.sh);
  g.cols.resize(p.sw);
  for (int64_t a = 0; a < p.sh; ++a) g.rows[a] = phase_span(a, p.sh, p.ph, p.H, g.Hh);
  for (int64_t b = 0; b < p.sw; ++b) g.cols[b] = phase_span(b, p.sw, p.pw, p.W, g.Wh);
  g.chunks = 0;
#ifdef CONVKIT_POOL_AVX512
  if (p.sw <= 2) {
    const int64_t L = lanes;
    g.chunks = (g.Wh + L - 1) / L;
    g.ld0.assign(g.chunks, 0);
    g.ld1.assign(g.chunks, 0);
    g.st[0].assign(g.chunks, 0);
    g.st[1].assign(g.chunks, 0);
    for (int64_t k = 0; k < g.chunks; ++k)
      for (int64_t l = 0; l < L; ++l) {
        const int64_t w0 = k * L * p.sw - p.pw + l, w1 = w0 + L;
        if (w0 >= 0 && w0 < p.W) g.ld0[k] |= 1u << l;
        if (p.sw == 2 && w1 >= 0 && w1 < p.W) g.ld1[k] |= 1u << l;
        const int64_t c = k * L + l;
        for (int64_t b = 0; b < p.sw; ++b) {
          const int64_t w = c * p.sw + b - p.pw;
          if (c < g.Wh && w >= 0 && w < p.W) g.st[b][k] |= 1u << l;
        }
      }
  }
#endif
  g.base.assign(g.Upad, 0);
  g.init.assign(g.Upad, 0);
  for (int64_t u = 0; u < g.U; ++u) {
    const int64_t oh = u / g.Wh, q = u % g.Wh;
    if (q >= p.Q) continue;
    const int64_t hs = oh * p.sh - p.ph, ws = q * p.sw - p.pw;
    g.base[u] = static_cast<int32_t>(hs * p.W + ws);
    g.init[u] = static_cast<int32_t>(first_nonneg(hs, p.dh) * p.W + first_nonneg(ws, p.dw));
  }
  return true;
}

// Copies plane xp into the used phases of buf; buf's padding (everything else) is left as is,
// so a buffer filled once with the pad value serves every plane.
template <typename T>
inline void build_phases(const PoolParams& p, const PhaseGrid& g, const T* __restrict xp, T* __restrict buf) {
#ifdef CONVKIT_POOL_AVX512
  if (g.chunks > 0) {
    using V = Vec<T>;
    using M = typename V::M;
    constexpr int L = V::L;
    const int64_t sh = p.sh, sw = p.sw, Wh = g.Wh, pe = g.phase_elems, W = p.W;
    for (int64_t h = 0; h < p.H; ++h) {
      const int64_t a = (h + p.ph) % sh, r = (h + p.ph) / sh;
      if (r >= g.Hh) continue;
      // x + h * W - pw + k * L * sw: lanes before the row start are masked off, never read
      const T* xr = xp + h * W - p.pw;
      T* d0 = buf + a * sw * pe + r * Wh;
      if (sw == 1) {
        for (int64_t k = 0; k < g.chunks; ++k)
          V::store(static_cast<M>(g.st[0][k]), d0 + k * L, V::loadz(static_cast<M>(g.ld0[k]), xr + k * L));
      } else {
        const bool u0 = g.used[a * 2], u1 = g.used[a * 2 + 1];
        for (int64_t k = 0; k < g.chunks; ++k) {
          const typename V::R lo = V::loadz(static_cast<M>(g.ld0[k]), xr + 2 * k * L);
          const typename V::R hi = V::loadz(static_cast<M>(g.ld1[k]), xr + 2 * k * L + L);
          if (u0) V::store(static_cast<M>(g.st[0][k]), d0 + k * L, V::even(lo, hi));
          if (u1) V::store(static_cast<M>(g.st[1][k]), d0 + pe + k * L, V::odd(lo, hi));
        }
      }
    }
    return;
  }
#endif
  for (int64_t a = 0; a < p.sh; ++a) {
    const PhaseGrid::Span ra = g.rows[a];
    for (int64_t b = 0; b < p.sw; ++b) {
      if (!g.used[a * p.sw + b]) continue;
      const PhaseGrid::Span cb = g.cols[b];
      const int64_t n = cb.hi - cb.lo;
      if (n <= 0) continue;
      T* dst = buf + (a * p.sw + b) * g.phase_elems + cb.lo;
      const T* src = xp + cb.first;
      for (int64_t r = ra.lo; r < ra.hi; ++r) {
        const int64_t h = ra.first + p.sh * (r - ra.lo);
        copy_strided<T>(dst + r * g.Wh, src + h * p.W, n, p.sw);
      }
    }
  }
}

}  // namespace detail
}  // namespace convkit::cpu
