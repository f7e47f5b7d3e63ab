// conv2d, direct algorithm: each OpenMP task (image, group, block of output channels) copies its
// input into a zero-padded per-thread patch, then sweeps the output a row tile at a time with a
// KB-channel x QT-pixel register tile, reading the padded patch without bounds tests. The patch
// is stored column-phase-split (column w at phase w % sw, slot w / sw) so a strided output row
// reads contiguous input. Grad input is the same kernel on the zero-padded dy, once per output
// phase (h % sh, w % sw) with the taps whose (h + pad - r*dil) divides by the stride: gather
// form, deterministic. Grad weight: a thread owns a block of output channels, sums over N, P, Q.
// When the padded copy would be mostly padding or gaps (huge stride, padding or dilation: see
// dense_copy_fits) the bounds-checked kernels at the end of this file run instead.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/conv.h"
#include "cpu/gemm.h"
#include "cpu/threads.h"

namespace convkit::cpu {
namespace {

constexpr int kKB = 4;  // output channels per register tile

// A kernel tap along one axis: offset of its input row/column in the padded buffer, and its
// index r (or s) in the weight.
struct Tap {
  int64_t off;
  int64_t widx;
};

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Runs f(std::integral_constant<int, QT>) with the pixel tile width fitting `cols`.
template <typename F>
void with_qt(int64_t cols, F&& f) {
  if (cols >= 24)
    f(std::integral_constant<int, 32>{});
  else if (cols >= 12)
    f(std::integral_constant<int, 16>{});
  else
    f(std::integral_constant<int, 8>{});
}

// Rows of the register tile: KB channels x TR rows x QT pixels, about 16 vector registers.
template <typename T, int KB, int QT>
constexpr int tile_rows() {
  return std::clamp<int>(1024 / (KB * QT * int(sizeof(T))), 1, 4);
}

// out[o][t*out_rs + u*out_cs] = bias[o] + sum_i sum_taps w[o*w_out + i*w_in + r*S + s] *
//   buf[i*in_plane + (t*row_step + rt.off)*rowlen + u + ct.off]
// for o < KB, t in [t0, rows), u < cols; TR output rows share each weight load.
template <typename T, int KB, int TR, int QT>
void direct_rows(const T* __restrict buf, int64_t in_plane, int64_t rowlen, int64_t row_step,
                 int64_t n_in, const Tap* rt, int64_t nrt, const Tap* ct, int64_t nct,
                 const T* __restrict w, int64_t w_out, int64_t w_in, int64_t S, T* __restrict out,
                 int64_t out_plane, int64_t out_rs, int64_t out_cs, int64_t t0, int64_t rows,
                 int64_t cols, const T* bias) {
  const int64_t tstep = row_step * rowlen;
  int64_t t = t0;
  for (; t + TR <= rows; t += TR)
    for (int64_t u0 = 0; u0 < cols; u0 += QT) {
      T acc[KB][TR][QT];
#pragma GCC unroll 8
      for (int kb = 0; kb < KB; ++kb) {
        const T init = bias ? bias[kb] : T(0);
#pragma GCC unroll 4
        for (int tr = 0; tr < TR; ++tr)
#pragma omp simd
          for (int q = 0; q < QT; ++q) acc[kb][tr][q] = init;
      }
      for (int64_t i = 0; i < n_in; ++i) {
        const T* bi = buf + i * in_plane + t * tstep + u0;
        const T* wi = w + i * w_in;
        for (int64_t a = 0; a < nrt; ++a) {
          const T* br = bi + rt[a].off * rowlen;
          const T* wr = wi + rt[a].widx * S;
          for (int64_t b = 0; b < nct; ++b) {
            const T* src = br + ct[b].off;
            const T* wt = wr + ct[b].widx;
            T wv[KB];
#pragma GCC unroll 8
            for (int kb = 0; kb < KB; ++kb) wv[kb] = wt[kb * w_out];
#pragma GCC unroll 4
            for (int tr = 0; tr < TR; ++tr)
#pragma GCC unroll 8
              for (int kb = 0; kb < KB; ++kb)
#pragma omp simd
                for (int q = 0; q < QT; ++q) acc[kb][tr][q] += wv[kb] * src[tr * tstep + q];
          }
        }
      }
      const int64_t nu = std::min<int64_t>(QT, cols - u0);
      for (int kb = 0; kb < KB; ++kb)
        for (int tr = 0; tr < TR; ++tr) {
          T* o = out + kb * out_plane + (t + tr) * out_rs + u0 * out_cs;
          if (out_cs == 1) {
            for (int64_t q = 0; q < nu; ++q) o[q] = acc[kb][tr][q];
          } else {
            for (int64_t q = 0; q < nu; ++q) o[q * out_cs] = acc[kb][tr][q];
          }
        }
    }
  if constexpr (TR > 1) {
    if (t < rows)
      direct_rows<T, KB, 1, QT>(buf, in_plane, rowlen, row_step, n_in, rt, nrt, ct, nct, w, w_out,
                                w_in, S, out, out_plane, out_rs, out_cs, t, rows, cols, bias);
  }
}

// n_out output channels starting at `out`: register tiles of kKB channels, then singles.
template <typename T, int QT>
void direct_channels(int64_t n_out, const T* buf, int64_t in_plane, int64_t rowlen,
                     int64_t row_step, int64_t n_in, const Tap* rt, int64_t nrt, const Tap* ct,
                     int64_t nct, const T* w, int64_t w_out, int64_t w_in, int64_t S, T* out,
                     int64_t out_plane, int64_t out_rs, int64_t out_cs, int64_t rows, int64_t cols,
                     const T* bias) {
  constexpr int TR4 = tile_rows<T, kKB, QT>(), TR1 = tile_rows<T, 1, QT>();
  int64_t o = 0;
  for (; o + kKB <= n_out; o += kKB)
    direct_rows<T, kKB, TR4, QT>(buf, in_plane, rowlen, row_step, n_in, rt, nrt, ct, nct,
                                 w + o * w_out, w_out, w_in, S, out + o * out_plane, out_plane,
                                 out_rs, out_cs, 0, rows, cols, bias ? bias + o : nullptr);
  for (; o < n_out; ++o)
    direct_rows<T, 1, TR1, QT>(buf, in_plane, rowlen, row_step, n_in, rt, nrt, ct, nct,
                               w + o * w_out, w_out, w_in, S, out + o * out_plane, out_plane,
                               out_rs, out_cs, 0, rows, cols, bias ? bias + o : nullptr);
}

// The zero-padded, column-phase-split copy of n_planes input planes [H][W]: plane c, padded row
// h + pad_t, column w + pad_l = v lands at (v % sw) * L + v / sw of a row of sw * L elements.
struct PaddedInput {
  int64_t Hp, L, rowlen, plane;
};

inline PaddedInput padded_input_shape(const ConvParams& p, int64_t qt) {
  PaddedInput s;
  const int64_t sw = p.stride_w;
  // (saturating: a hostile shape gives a huge plane, which dense_copy_fits refuses)
  s.Hp = sat_add(p.H, sat_add(p.pad_t, p.pad_b));
  // Wide enough for every input column, and for reads of a whole last pixel tile at any tap.
  const int64_t Wpad = sat_add(p.W, sat_add(p.pad_l, p.pad_r));
  s.L = std::max(Wpad / sw + (Wpad % sw != 0),
                 sat_add(round_up(p.Q, qt), sat_mul(p.S - 1, p.dil_w) / sw + 1));
  s.rowlen = sat_mul(sw, s.L);
  s.plane = sat_mul(s.Hp, s.rowlen);
  return s;
}

template <typename T>
void pad_input(const ConvParams& p, const PaddedInput& s, const T* x, int64_t n_planes, T* dst) {
  std::fill(dst, dst + n_planes * s.plane, T(0));
  const int64_t H = p.H, W = p.W, sw = p.stride_w;
  for (int64_t c = 0; c < n_planes; ++c)
    for (int64_t h = 0; h < H; ++h) {
      const T* src = x + (c * H + h) * W;
      T* drow = dst + c * s.plane + (h + p.pad_t) * s.rowlen;
      if (sw == 1) {
        std::memcpy(drow + p.pad_l, src, W * sizeof(T));
      } else {
        for (int64_t ph = 0; ph < sw; ++ph) {
          // padded columns v = t*sw + ph inside [pad_l, pad_l + W)
          const int64_t tlo = ceil_div(p.pad_l - ph, sw), thi = ceil_div(p.pad_l + W - ph, sw);
          T* d = drow + ph * s.L;
          for (int64_t t = tlo; t < thi; ++t) d[t] = src[t * sw + ph - p.pad_l];
        }
      }
    }
}

inline void forward_taps(const ConvParams& p, const PaddedInput& s, std::vector<Tap>& rt,
                         std::vector<Tap>& ct) {
  rt.clear();
  ct.clear();
  for (int64_t r = 0; r < p.R; ++r) rt.push_back({r * p.dil_h, r});
  for (int64_t c = 0; c < p.S; ++c) {
    const int64_t v = c * p.dil_w;
    ct.push_back({(v % p.stride_w) * s.L + v / p.stride_w, c});
  }
}

// dw[kb][(i*R + r)*S + c] (+)= sum over P, Q of dy[kb] * x window of tap (r, c), for kb < KB
// and every (i, r, c) of the group; one x load feeds KB channels. Overwrites when `first`.
template <typename T, int KB, int QT>
void dw_block(const T* __restrict xbuf, const PaddedInput& s, const T* __restrict dybuf,
              int64_t Qp, const ConvParams& p, const Tap* rt, const Tap* ct, T* dw, int64_t dw_out,
              bool first) {
  const int64_t Cg = p.Cg(), R = p.R, S = p.S, P = p.P, sh = p.stride_h;
  for (int64_t i = 0; i < Cg; ++i)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < S; ++c) {
        T acc[KB][QT];
        for (int kb = 0; kb < KB; ++kb)
#pragma omp simd
          for (int q = 0; q < QT; ++q) acc[kb][q] = T(0);
        for (int64_t pp = 0; pp < P; ++pp) {
          const T* src = xbuf + i * s.plane + (pp * sh + rt[r].off) * s.rowlen + ct[c].off;
          const T* d = dybuf + pp * Qp;
          for (int64_t u0 = 0; u0 < Qp; u0 += QT) {
#pragma GCC unroll 8
            for (int kb = 0; kb < KB; ++kb) {
              const T* dk = d + kb * P * Qp + u0;
#pragma omp simd
              for (int q = 0; q < QT; ++q) acc[kb][q] += dk[q] * src[u0 + q];
            }
          }
        }
        for (int kb = 0; kb < KB; ++kb) {
          // pairwise tree over the QT lanes: vectorises, fixed order
#pragma GCC unroll 8
          for (int half = QT / 2; half >= 1; half /= 2)
#pragma omp simd
            for (int q = 0; q < half; ++q) acc[kb][q] += acc[kb][q + half];
          T& out = dw[kb * dw_out + (i * R + r) * S + c];
          out = first ? acc[kb][0] : out + acc[kb][0];
        }
      }
}

}  // namespace

int64_t direct::workspace_bytes(ConvPass, int64_t, const ConvParams&, int64_t) { return 0; }  // per-thread scratch

template <typename T>
void direct::fwd(const ConvParams& p, const T* x, const T* w, const T* b, T* y, T* /*ws*/, int64_t /*ws_bytes*/) {
  if (p.N == 0) return;
  const int64_t N = p.N, G = p.groups, Cg = p.Cg(), Kg = p.Kg(), CgRS = Cg * p.R * p.S;
  const int64_t HW = p.H * p.W, PQ = p.P * p.Q;
  const int nt = num_threads();
  // Split a group's output channels into chunks (multiples of kKB) until the threads are fed.
  const int64_t kblocks = (Kg + kKB - 1) / kKB;
  const int64_t chunks = std::clamp<int64_t>((2 * nt + N * G - 1) / (N * G), 1, kblocks);
  const int64_t chunk = (kblocks + chunks - 1) / chunks * kKB;
  const int64_t tasks = N * G * chunks;
  with_qt(p.Q, [&](auto qt) {
    constexpr int QT = decltype(qt)::value;
    const PaddedInput s = padded_input_shape(p, QT);
    if (!dense_copy_fits(p, s.plane)) return conv2d_fwd_bounded(p, x, w, b, y);
    std::vector<Tap> rt, ct;
    forward_taps(p, s, rt, ct);
    ParallelGuard guard;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1 && tasks > 1)
    for (int64_t task = 0; task < tasks; ++task) {
      if (guard.should_stop()) continue;
      // (n, g, kc): image n, group g, output channels g*Kg + [k0, k1)
      const int64_t n = task / (G * chunks), g = (task / chunks) % G, kc = task % chunks;
      const int64_t k0 = kc * chunk, k1 = std::min(Kg, k0 + chunk);
      if (k0 >= k1) continue;
      T* buf = nullptr;
      try {
        buf = static_cast<T*>(thread_scratch(4, sizeof(T) * Cg * s.plane, "conv2d(direct): padded input planes"));
      } catch (...) {
        guard.fail();
        continue;
      }
      pad_input(p, s, x + (n * p.C + g * Cg) * HW, Cg, buf);
      const int64_t k = g * Kg + k0;
      direct_channels<T, QT>(k1 - k0, buf, s.plane, s.rowlen, p.stride_h, Cg, rt.data(), p.R,
                             ct.data(), p.S, w + k * CgRS, CgRS, p.R * p.S, p.S,
                             y + (n * p.K + k) * PQ, PQ, p.Q, 1, p.P, p.Q, b ? b + k : nullptr);
    }
    guard.finish();
  });
}

template <typename T>
void direct::bwd_input(const ConvParams& p, const T* dy, const T* w, T* dx, T* /*ws*/, int64_t /*ws_bytes*/) {
  if (p.N == 0) return;
  const int64_t N = p.N, G = p.groups, Cg = p.Cg(), Kg = p.Kg(), RS = p.R * p.S, CgRS = Cg * RS;
  const int64_t H = p.H, W = p.W, P = p.P, Q = p.Q, HW = H * W;
  const int64_t sh = p.stride_h, sw = p.stride_w;
  // Output phase ph: rows h = ph + sh*t, t < Th[ph]; tap r contributes iff sh divides
  // num = ph + pad_t - r*dil_h, reading dy row t + num/sh. Only phases below H (W) hold rows
  // (columns): a stride beyond the input has no more phases than the input has rows.
  const int64_t nph = std::min(sh, H), npw = std::min(sw, W);
  std::vector<std::vector<Tap>> rtaps(nph), ctaps(npw);
  std::vector<int64_t> Th(nph), Tw(npw);
  int64_t min_ro = 0, max_row = P - 1, min_co = 0, max_tw = 0;
  for (int64_t ph = 0; ph < nph; ++ph) {
    Th[ph] = ceil_div(H - ph, sh);
    for (int64_t r = 0; r < p.R; ++r) {
      const int64_t num = ph + p.pad_t - r * p.dil_h;
      if (floor_div(num, sh) * sh != num) continue;
      rtaps[ph].push_back({num / sh, r});
      if (Th[ph] > 0) {
        min_ro = std::min(min_ro, num / sh);
        max_row = std::max(max_row, Th[ph] - 1 + num / sh);
      }
    }
  }
  for (int64_t pw = 0; pw < npw; ++pw) {
    Tw[pw] = ceil_div(W - pw, sw);
    max_tw = std::max(max_tw, Tw[pw]);
    for (int64_t c = 0; c < p.S; ++c) {
      const int64_t num = pw + p.pad_l - c * p.dil_w;
      if (floor_div(num, sw) * sw != num) continue;
      ctaps[pw].push_back({num / sw, c});
      if (Tw[pw] > 0) min_co = std::min(min_co, num / sw);
    }
  }
  const int nt = num_threads();
  const int64_t cblocks = (Cg + kKB - 1) / kKB;
  const int64_t chunks = std::clamp<int64_t>((2 * nt + N * G - 1) / (N * G), 1, cblocks);
  const int64_t chunk = (cblocks + chunks - 1) / chunks * kKB;
  const int64_t tasks = N * G * chunks;
  with_qt(max_tw, [&](auto qt) {
    constexpr int QT = decltype(qt)::value;
    // Padded dy: rows p + padT, columns q + padL, zero outside [0, P) x [0, Q).
    const int64_t padT = -min_ro, padL = -min_co;
    int64_t max_col = Q - 1;
    for (int64_t pw = 0; pw < npw; ++pw)
      for (const Tap& t : ctaps[pw]) max_col = std::max(max_col, round_up(Tw[pw], QT) - 1 + t.off);
    const int64_t Pp = sat_add(padT, max_row + 1), Lw = sat_add(padL, max_col + 1), plane = sat_mul(Pp, Lw);
    if (!dense_copy_fits(p, plane)) return conv2d_bwd_input_bounded(p, dy, w, dx);
    std::vector<std::vector<Tap>> rt(nph), ct(npw);
    for (int64_t ph = 0; ph < nph; ++ph)
      for (const Tap& t : rtaps[ph]) rt[ph].push_back({t.off + padT, t.widx});
    for (int64_t pw = 0; pw < npw; ++pw)
      for (const Tap& t : ctaps[pw]) ct[pw].push_back({t.off + padL, t.widx});
    ParallelGuard guard;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1 && tasks > 1)
    for (int64_t task = 0; task < tasks; ++task) {
      if (guard.should_stop()) continue;
      // (n, g, cc): image n, group g, input channels g*Cg + [c0, c1)
      const int64_t n = task / (G * chunks), g = (task / chunks) % G, cc = task % chunks;
      const int64_t c0 = cc * chunk, c1 = std::min(Cg, c0 + chunk);
      if (c0 >= c1) continue;
      T* buf = nullptr;
      try {
        buf = static_cast<T*>(thread_scratch(4, sizeof(T) * Kg * plane, "conv2d_bwd_input(direct): padded dy planes"));
      } catch (...) {
        guard.fail();
        continue;
      }
      std::fill(buf, buf + Kg * plane, T(0));
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t pp = 0; pp < P; ++pp)
          std::memcpy(buf + k * plane + (pp + padT) * Lw + padL, dy + ((n * p.K + g * Kg + k) * P + pp) * Q,
                      Q * sizeof(T));
      for (int64_t ph = 0; ph < nph; ++ph)
        for (int64_t pw = 0; pw < npw; ++pw)
          direct_channels<T, QT>(c1 - c0, buf, plane, Lw, 1, Kg, rt[ph].data(), rt[ph].size(),
                                 ct[pw].data(), ct[pw].size(), w + g * Kg * CgRS + c0 * RS, RS, CgRS,
                                 p.S, dx + (n * p.C + g * Cg + c0) * HW + ph * W + pw, HW, sh * W, sw,
                                 Th[ph], Tw[pw], nullptr);
    }
    guard.finish();
  });
}

template <typename T>
void direct::bwd_weight(const ConvParams& p, const T* dy, const T* x, T* dw, T* /*ws*/, int64_t /*ws_bytes*/) {
  const int64_t N = p.N, G = p.groups, Cg = p.Cg(), Kg = p.Kg(), CgRS = Cg * p.R * p.S;
  if (N == 0) {
    std::fill(dw, dw + p.K * CgRS, T(0));
    return;
  }
  const int64_t HW = p.H * p.W, P = p.P, Q = p.Q;
  const int nt = num_threads();
  // A task owns output channels g*Kg + [k0, k1) (a multiple of kKB) and pads each image once.
  const int64_t kblocks = (Kg + kKB - 1) / kKB;
  const int64_t chunks = std::clamp<int64_t>((2 * nt + G - 1) / G, 1, kblocks);
  const int64_t chunk = (kblocks + chunks - 1) / chunks * kKB;
  const int64_t tasks = G * chunks;
  with_qt(Q, [&](auto qt) {
    constexpr int QT = decltype(qt)::value;
    const PaddedInput s = padded_input_shape(p, QT);
    if (!dense_copy_fits(p, s.plane)) return conv2d_bwd_weight_bounded(p, dy, x, dw);
    std::vector<Tap> rt, ct;
    forward_taps(p, s, rt, ct);
    const int64_t Qp = round_up(Q, QT);
    ParallelGuard guard;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1 && tasks > 1)
    for (int64_t task = 0; task < tasks; ++task) {
      if (guard.should_stop()) continue;
      const int64_t g = task / chunks, k0 = (task % chunks) * chunk, k1 = std::min(Kg, k0 + chunk);
      if (k0 >= k1) continue;
      const int64_t nk = k1 - k0, k = g * Kg + k0;
      T *xbuf = nullptr, *dybuf = nullptr;
      try {
        xbuf = static_cast<T*>(thread_scratch(4, sizeof(T) * Cg * s.plane, "conv2d_bwd_weight(direct): padded input planes"));
        dybuf = static_cast<T*>(thread_scratch(5, sizeof(T) * nk * P * Qp, "conv2d_bwd_weight(direct): dy rows"));
      } catch (...) {
        guard.fail();
        continue;
      }
      for (int64_t n = 0; n < N; ++n) {
        if (n > 0 && guard.should_stop()) break;
        pad_input(p, s, x + (n * p.C + g * Cg) * HW, Cg, xbuf);
        // dy rows of these channels, zero past Q up to the tile width
        for (int64_t kk = 0; kk < nk; ++kk)
          for (int64_t pp = 0; pp < P; ++pp) {
            T* d = dybuf + (kk * P + pp) * Qp;
            std::memcpy(d, dy + ((n * p.K + k + kk) * P + pp) * Q, Q * sizeof(T));
            std::fill(d + Q, d + Qp, T(0));
          }
        int64_t kk = 0;
        for (; kk + kKB <= nk; kk += kKB)
          dw_block<T, kKB, QT>(xbuf, s, dybuf + kk * P * Qp, Qp, p, rt.data(), ct.data(),
                               dw + (k + kk) * CgRS, CgRS, n == 0);
        for (; kk < nk; ++kk)
          dw_block<T, 1, QT>(xbuf, s, dybuf + kk * P * Qp, Qp, p, rt.data(), ct.data(),
                             dw + (k + kk) * CgRS, CgRS, n == 0);
      }
    }
    guard.finish();
  });
}

// ---- bounds-checked kernels -----------------------------------------------------------------
// For every tap (c, r, s), the outputs it reaches inside the input form a rectangle
// [p0, p1) x [q0, q1) (valid_outputs), so the loops visit exactly the (output, tap) pairs that
// read the input, in the direct kernels' (c, r, s) order per output.

template <typename T>
void conv2d_fwd_bounded(const ConvParams& p, const T* x, const T* w, const T* b, T* y) {
  const int64_t N = p.N, K = p.K, Cg = p.Cg(), Kg = p.Kg(), R = p.R, S = p.S, P = p.P, Q = p.Q;
  const int64_t H = p.H, W = p.W, HW = H * W, PQ = P * Q, sh = p.stride_h, sw = p.stride_w;
  const int nt = num_threads();
  ParallelGuard guard;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1 && N * K > 1)
  for (int64_t nk = 0; nk < N * K; ++nk) guard.run([&] {
    const int64_t n = nk / K, k = nk % K, g = k / Kg;
    T* yo = y + nk * PQ;
    std::fill(yo, yo + PQ, b ? b[k] : T(0));
    for (int64_t c = 0; c < Cg; ++c) {
      const T* xc = x + (n * p.C + g * Cg + c) * HW;
      const T* wk = w + (k * Cg + c) * R * S;
      for (int64_t r = 0; r < R; ++r) {
        int64_t p0, p1;
        const int64_t hoff = r * p.dil_h - p.pad_t;  // input row of output row o: o*sh + hoff
        valid_outputs(hoff, sh, H, P, p0, p1);
        for (int64_t s = 0; s < S; ++s) {
          int64_t q0, q1;
          const int64_t woff = s * p.dil_w - p.pad_l;
          valid_outputs(woff, sw, W, Q, q0, q1);
          const T wv = wk[r * S + s];
          for (int64_t o = p0; o < p1; ++o) {
            const T* xr = xc + (o * sh + hoff) * W;
            T* yr = yo + o * Q;
            for (int64_t q = q0; q < q1; ++q) yr[q] += wv * xr[q * sw + woff];
          }
        }
      }
    }
  });
  guard.finish();
}

// dx[n][c] gathers, per input channel plane owned by one thread, dy[n][k] * w[k][c] over the
// taps: the same pairs as the forward, scattered into the plane (one writer, fixed order).
template <typename T>
void conv2d_bwd_input_bounded(const ConvParams& p, const T* dy, const T* w, T* dx) {
  const int64_t N = p.N, C = p.C, Cg = p.Cg(), Kg = p.Kg(), R = p.R, S = p.S, P = p.P, Q = p.Q;
  const int64_t H = p.H, W = p.W, HW = H * W, PQ = P * Q, sh = p.stride_h, sw = p.stride_w;
  const int nt = num_threads();
  ParallelGuard guard;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1 && N * C > 1)
  for (int64_t nc = 0; nc < N * C; ++nc) guard.run([&] {
    const int64_t n = nc / C, ci = nc % C, g = ci / Cg, c = ci % Cg;
    T* dxc = dx + nc * HW;
    std::fill(dxc, dxc + HW, T(0));
    for (int64_t kl = 0; kl < Kg; ++kl) {
      const int64_t k = g * Kg + kl;
      const T* dyk = dy + (n * p.K + k) * PQ;
      const T* wk = w + (k * Cg + c) * R * S;
      for (int64_t r = 0; r < R; ++r) {
        int64_t p0, p1;
        const int64_t hoff = r * p.dil_h - p.pad_t;
        valid_outputs(hoff, sh, H, P, p0, p1);
        for (int64_t s = 0; s < S; ++s) {
          int64_t q0, q1;
          const int64_t woff = s * p.dil_w - p.pad_l;
          valid_outputs(woff, sw, W, Q, q0, q1);
          const T wv = wk[r * S + s];
          for (int64_t o = p0; o < p1; ++o) {
            T* xr = dxc + (o * sh + hoff) * W;
            const T* dr = dyk + o * Q;
            for (int64_t q = q0; q < q1; ++q) xr[q * sw + woff] += wv * dr[q];
          }
        }
      }
    }
  });
  guard.finish();
}

template <typename T>
void conv2d_bwd_weight_bounded(const ConvParams& p, const T* dy, const T* x, T* dw) {
  const int64_t N = p.N, K = p.K, Cg = p.Cg(), Kg = p.Kg(), R = p.R, S = p.S, P = p.P, Q = p.Q;
  const int64_t H = p.H, W = p.W, HW = H * W, PQ = P * Q, sh = p.stride_h, sw = p.stride_w;
  const int nt = num_threads();
  ParallelGuard guard;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1 && K * Cg > 1)
  for (int64_t kc = 0; kc < K * Cg; ++kc) guard.run([&] {
    const int64_t k = kc / Cg, c = kc % Cg, g = k / Kg;
    T* dwk = dw + kc * R * S;
    for (int64_t r = 0; r < R; ++r) {
      int64_t p0, p1;
      const int64_t hoff = r * p.dil_h - p.pad_t;
      valid_outputs(hoff, sh, H, P, p0, p1);
      for (int64_t s = 0; s < S; ++s) {
        int64_t q0, q1;
        const int64_t woff = s * p.dil_w - p.pad_l;
        valid_outputs(woff, sw, W, Q, q0, q1);
        T acc = T(0);
        for (int64_t n = 0; n < N; ++n) {
          const T* xc = x + (n * p.C + g * Cg + c) * HW;
          const T* dyk = dy + (n * K + k) * PQ;
          for (int64_t o = p0; o < p1; ++o) {
            const T* xr = xc + (o * sh + hoff) * W;
            const T* dr = dyk + o * Q;
            for (int64_t q = q0; q < q1; ++q) acc += dr[q] * xr[q * sw + woff];
          }
        }
        dwk[r * S + s] = acc;
      }
    }
  });
  guard.finish();
}

#define CONVKIT_INSTANTIATE(T)                                                                 \
  template void conv2d_fwd_bounded<T>(const ConvParams&, const T*, const T*, const T*, T*);    \
  template void conv2d_bwd_input_bounded<T>(const ConvParams&, const T*, const T*, T*);        \
  template void conv2d_bwd_weight_bounded<T>(const ConvParams&, const T*, const T*, T*);
CONVKIT_INSTANTIATE(float)
CONVKIT_INSTANTIATE(double)
#undef CONVKIT_INSTANTIATE
CONVKIT_CPU_CONV_INSTANTIATE(direct)

}  // namespace convkit::cpu
