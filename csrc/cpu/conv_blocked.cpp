// conv2d, "blocked" algorithm: a direct convolution with the output channels in the vector lanes
// (the channel blocking of oneDNN's nChw16c kernels, on NCHW tensors). Per group the filters are
// repacked into blocks of VL output channels, [block group][c][r][s][OCB][VL]; a register tile
// holds OCB blocks x UR pixels of one output row (OCB * UR accumulators), and each step of the
// reduction over (c, r, s) loads OCB filter vectors and broadcasts UR input values: OCB + UR loads
// for OCB * UR FMAs, and no lane idles on a 7- or 14-pixel row (direct's lanes run along the row,
// so a 7-wide row fills 7 of 16). The input is read from a zero-padded copy of the group's planes,
// made per thread when its task moves to another image, so the reduction has no bounds tests. The
// tile shape comes from a cost model per layer (blocked_plan). Tiles go to NCHW through a small
// buffer, lane by lane.
//
// Grad input with stride 1 is the same kernel on dy: dx is the correlation of dy with the filters
// flipped in r and s and K, C swapped, with padding (R-1)*dil - pad (possibly negative: the padded
// copy crops). With stride > 1 it is direct's gather-form kernel. Grad weight uses the same
// register tile the other way round: OCB blocks of output channels x UR filter taps (c, r, s),
// reduced over every output pixel of the batch, with dy repacked so that each pixel's OCB*VL
// channels are one contiguous run and x read from zero-padded planes. A task takes a run of tap
// tiles through the pixels a block of rows at a time, so a dy block is read from memory once per
// run rather than once per tile (the 7x7 stem's dy is 25 MB at batch 8); the batch is cut into
// chunks that fit the workspace, each chunk adding onto the last (a fixed order: deterministic,
// whatever the thread count).
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "cpu/conv.h"
#include "cpu/gemm.h"
#include "cpu/simd.h"
#include "cpu/threads.h"

namespace convkit::cpu {
namespace {

using simd::kVecBytes;
using simd::kVecRegs;
using simd::lanes;
template <typename T>
using BVec = simd::Vec<T>;

// Register tiles (OCB filter blocks x UR pixels). Each needs OCB * UR accumulators, OCB filter
// vectors and one broadcast register: at most 32 with AVX-512, 16 otherwise.
struct TileShape {
  int ocb, ur;
};

// Below this many multiply-adds a convolution runs on the calling thread: waking the others
// costs more than they save.
constexpr int64_t kParallelMacs = int64_t(1) << 19;
#if defined(__AVX512F__)
constexpr TileShape kShapes[] = {{4, 6}, {3, 9}, {3, 7}, {2, 14}, {2, 7}, {1, 28}, {1, 14}, {1, 7}};
#else
constexpr TileShape kShapes[] = {{3, 4}, {2, 6}, {2, 5}, {1, 14}, {1, 7}, {1, 4}};
#endif
constexpr int kNumShapes = int(sizeof(kShapes) / sizeof(kShapes[0]));
constexpr bool shapes_fit() {
  for (const TileShape& s : kShapes)
    if (s.ocb * s.ur + s.ocb + 1 > kVecRegs) return false;
  return true;
}
static_assert(shapes_fit(), "a register tile needs more vector registers than the ISA has");

// A convolution in forward form: out[n][g*Ko + ko][p][q] = bias[g*Ko + ko] + sum over ki < Ki,
// r < R, s < S of f(g, ko, ki, r, s) * in[n][g*Ki + ki][p*sh - pad_t + r*dh][q*sw - pad_l + s*dw]
// (0 outside the input). The forward pass and grad input (stride 1) are both one of these.
struct Geometry {
  int64_t N, G, Ki, Ko, H, W, P, Q, R, S, sh, sw, dh, dw, pad_t, pad_l;
};

// The filters f(g, ko, ki, r, s) = w[g*gs + ko*so + ki*si + tap], tap = r*S + s, or
// (R-1-r)*S + (S-1-s) when flipped.
struct FilterView {
  int64_t gs, so, si;
  bool flip;
};

struct Plan {
  int shape;                 // index into kShapes
  int64_t ocb, ur, kob, nkbg;  // blocks per tile, pixels per tile, VL-blocks of Ko, tile rows of blocks
  int64_t Hp, Wp, plane;     // the padded copy of one input plane
  int64_t filt_elems;        // packed filters + biases, all groups
};

// The kShapes tile of least cost(ocb, ur), the first of equals.
template <typename Cost>
int cheapest_tile(Cost cost) {
  int best_i = 0;
  double best = std::numeric_limits<double>::max();
  for (int i = 0; i < kNumShapes; ++i) {
    const double c = cost(int64_t(kShapes[i].ocb), int64_t(kShapes[i].ur));
    if (c < best) {
      best = c;
      best_i = i;
    }
  }
  return best_i;
}

template <typename T>
Plan blocked_plan(const Geometry& g) {
  constexpr int VL = lanes<T>();
  Plan pl{};
  pl.kob = (g.Ko + VL - 1) / VL;
  // cycles of one reduction step, in units of half a cycle: OCB*UR FMAs or OCB+UR loads on two
  // ports each, plus the step's own overhead; times the tiles per output row and block group
  pl.shape = cheapest_tile([&](int64_t ocb, int64_t ur) {
    return double(((pl.kob + ocb - 1) / ocb) * ((g.Q + ur - 1) / ur)) * double(std::max(ocb * ur, ocb + ur) + 2);
  });
  pl.ocb = kShapes[pl.shape].ocb;
  pl.ur = kShapes[pl.shape].ur;
  pl.nkbg = (pl.kob + pl.ocb - 1) / pl.ocb;
  // CONVKIT_BLOCKED_TILE="ocb,ur" (one of kShapes): a tuning and testing override of the choice
  if (const char* env = std::getenv("CONVKIT_BLOCKED_TILE")) {
    int o = 0, u = 0;
    if (std::sscanf(env, "%d,%d", &o, &u) == 2)
      for (int i = 0; i < kNumShapes; ++i)
        if (kShapes[i].ocb == o && kShapes[i].ur == u) {
          pl.shape = i;
          pl.ocb = o;
          pl.ur = u;
          pl.nkbg = (pl.kob + o - 1) / o;
        }
  }
  const int64_t q_span = (g.Q + pl.ur - 1) / pl.ur * pl.ur;  // every tile reads whole UR pixels
  // (saturating: huge strides or dilations give a huge plane, which dense_copy_fits refuses)
  pl.Hp = sat_add(sat_mul(g.P - 1, g.sh), sat_mul(g.R - 1, g.dh) + 1);
  pl.Wp = sat_add(sat_mul(q_span - 1, g.sw), sat_mul(g.S - 1, g.dw) + 1);
  pl.plane = sat_mul(pl.Hp, pl.Wp);
  pl.filt_elems = g.G * pl.nkbg * pl.ocb * VL * (g.Ki * g.R * g.S + 1);
  return pl;
}

// Packs f into [g][kbg][t = (ki*R + r)*S + s][OCB][VL] and the biases into [g][kbg][OCB][VL] right
// after, zero past Ko.
template <typename T>
void pack_filters(const Geometry& g, const Plan& pl, const T* w, const FilterView& fv, const T* bias,
                  T* dst) {
  constexpr int VL = lanes<T>();
  const int64_t RS = g.R * g.S, KiRS = g.Ki * RS, tile = pl.ocb * VL;
  T* fdst = dst;
  T* bdst = dst + g.G * pl.nkbg * KiRS * tile;
  const bool par = g.G * pl.nkbg * KiRS * tile >= (int64_t(1) << 16);
  ParallelGuard guard;
#pragma omp parallel for collapse(2) schedule(static) num_threads(num_threads()) if (par)
  for (int64_t gi = 0; gi < g.G; ++gi)
    for (int64_t kbg = 0; kbg < pl.nkbg; ++kbg) guard.run_quiet([&] {
      T* d = fdst + (gi * pl.nkbg + kbg) * KiRS * tile;
      const T* wg = w + gi * fv.gs;
      const int64_t k0 = kbg * tile, nk = std::min(tile, g.Ko - k0);
      // 16 steps t = (ki*R + r)*S + s at a time: their source offsets once, then channel by
      // channel, so the reads of a channel stay in one or two cache lines and the 16 x tile
      // destination block stays in L1 (a transpose; row by row it touched a line per element)
      for (int64_t t0 = 0; t0 < KiRS; t0 += 16) {
        const int64_t nt = std::min<int64_t>(16, KiRS - t0);
        int64_t src[16];
        for (int64_t i = 0; i < nt; ++i) {
          const int64_t t = t0 + i, ki = t / RS, r = (t / g.S) % g.R, s = t % g.S;
          src[i] = ki * fv.si + (fv.flip ? (g.R - 1 - r) * g.S + (g.S - 1 - s) : r * g.S + s);
        }
        T* dt = d + t0 * tile;
        for (int64_t e = 0; e < nk; ++e) {
          const T* we = wg + (k0 + e) * fv.so;
          for (int64_t i = 0; i < nt; ++i) dt[i * tile + e] = we[src[i]];
        }
        for (int64_t i = 0; i < nt; ++i)
          for (int64_t e = nk; e < tile; ++e) dt[i * tile + e] = T(0);
      }
      T* db = bdst + (gi * pl.nkbg + kbg) * tile;
      for (int64_t e = 0; e < tile; ++e) {
        const int64_t ko = kbg * tile + e;
        db[e] = bias && ko < g.Ko ? bias[gi * g.Ko + ko] : T(0);
      }
    });
  guard.finish();
}

// out[(o*UR + j)*VL + l] = bias[o*VL + l] + sum over t < nt of wp[t][o][l] * x[offs[t] + j*sw].
template <typename T, int OCB, int UR, int SW>
__attribute__((noinline)) void tile_kernel(const T* __restrict x, int64_t sw_rt, const int64_t* __restrict offs,
                                           int64_t nt, const T* __restrict wp, const T* __restrict bias,
                                           T* __restrict out) {
  using V = typename BVec<T>::type;
  constexpr int VL = lanes<T>();
  const int64_t sw = SW > 0 ? SW : sw_rt;
  wp = static_cast<const T*>(__builtin_assume_aligned(wp, kVecBytes));
  V acc[OCB][UR];
#pragma GCC unroll 4
  for (int o = 0; o < OCB; ++o) {
    const V b0 = *reinterpret_cast<const V*>(bias + o * VL);
#pragma GCC unroll 28
    for (int j = 0; j < UR; ++j) acc[o][j] = b0;
  }
  for (int64_t t = 0; t < nt; ++t) {
    const T* xs = x + offs[t];
    V w[OCB];
#pragma GCC unroll 4
    for (int o = 0; o < OCB; ++o) w[o] = *reinterpret_cast<const V*>(wp + o * VL);
#pragma GCC unroll 28
    for (int j = 0; j < UR; ++j) {
      const T xv = xs[j * sw];
#pragma GCC unroll 4
      for (int o = 0; o < OCB; ++o) acc[o][j] += w[o] * xv;
    }
    wp += OCB * VL;
  }
#pragma GCC unroll 4
  for (int o = 0; o < OCB; ++o)
#pragma GCC unroll 28
    for (int j = 0; j < UR; ++j) *reinterpret_cast<V*>(out + (o * UR + j) * VL) = acc[o][j];
}

template <typename T>
using TileFn = void (*)(const T*, int64_t, const int64_t*, int64_t, const T*, const T*, T*);

template <typename T, int SW, std::size_t... I>
TileFn<T> tile_fn_of(int shape, std::index_sequence<I...>) {
  TileFn<T> table[] = {&tile_kernel<T, kShapes[I].ocb, kShapes[I].ur, SW>...};
  return table[shape];
}

template <typename T>
TileFn<T> tile_fn(int shape, int64_t sw) {
  const auto seq = std::make_index_sequence<kNumShapes>{};
  if (sw == 1) return tile_fn_of<T, 1>(shape, seq);
  if (sw == 2) return tile_fn_of<T, 2>(shape, seq);
  return tile_fn_of<T, 0>(shape, seq);
}

// The padded copy of image n, group gi: element (ki, hp, wp) = in[n][gi*Ki + ki][hp - pad_t][wp - pad_l],
// 0 outside (a negative pad crops).
template <typename T>
void pad_planes(const Geometry& g, const Plan& pl, const T* in, int64_t n, int64_t gi, T* dst) {
  const int64_t HW = g.H * g.W;
  const int64_t w_lo = std::clamp<int64_t>(g.pad_l, 0, pl.Wp), w_hi = std::clamp<int64_t>(g.pad_l + g.W, w_lo, pl.Wp);
  for (int64_t ki = 0; ki < g.Ki; ++ki) {
    const T* src = in + (n * g.G * g.Ki + gi * g.Ki + ki) * HW;
    T* d = dst + ki * pl.plane;
    for (int64_t hp = 0; hp < pl.Hp; ++hp) {
      T* row = d + hp * pl.Wp;
      const int64_t h = hp - g.pad_t;
      if (h < 0 || h >= g.H) {
        std::fill(row, row + pl.Wp, T(0));
        continue;
      }
      std::fill(row, row + w_lo, T(0));
      std::memcpy(row + w_lo, src + h * g.W + (w_lo - g.pad_l), (w_hi - w_lo) * sizeof(T));
      std::fill(row + w_hi, row + pl.Wp, T(0));
    }
  }
}

// Runs the forward-form convolution g with packed filters `packed` (pack_filters' layout).
template <typename T>
void blocked_run(const Geometry& g, const Plan& pl, const T* in, const T* packed, T* out) {
  constexpr int VL = lanes<T>();
  const int64_t RS = g.R * g.S, nt_red = g.Ki * RS, tile = pl.ocb * VL;
  const T* biases = packed + g.G * pl.nkbg * nt_red * tile;
  std::vector<int64_t> offs(nt_red);
  for (int64_t ki = 0; ki < g.Ki; ++ki)
    for (int64_t r = 0; r < g.R; ++r)
      for (int64_t s = 0; s < g.S; ++s)
        offs[(ki * g.R + r) * g.S + s] = ki * pl.plane + r * g.dh * pl.Wp + s * g.dw;
  const TileFn<T> fn = tile_fn<T>(pl.shape, g.sw);
  const int nt = num_threads();
  // Tasks (n, g, block group, chunk of output rows), n-major: a thread's tasks share few images,
  // so it pads few; rows are chunked until there are about 8 tasks a thread.
  const int64_t outer = g.N * g.G * pl.nkbg;
  const int64_t chunks = std::clamp<int64_t>((8 * int64_t(nt) + outer - 1) / outer, 1, g.P);
  const int64_t rows_per = (g.P + chunks - 1) / chunks;
  const int64_t tasks = outer * chunks, PQ = g.P * g.Q;
  const int64_t qtiles = (g.Q + pl.ur - 1) / pl.ur;
  const bool par = nt > 1 && tasks > 1 && g.N * g.G * g.Ko * PQ * nt_red >= kParallelMacs;
  ParallelGuard guard;
#pragma omp parallel num_threads(nt) if (par)
  guard.run([&] {
    const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
    T* buf = static_cast<T*>(thread_scratch(4, sizeof(T) * g.Ki * pl.plane, "conv2d(blocked): padded input planes"));
    T* tbuf = static_cast<T*>(thread_scratch(5, sizeof(T) * tile * pl.ur, "conv2d(blocked): tile buffer"));
    int64_t have = -1;  // the (n, g) in buf
    const int64_t t0 = tasks * tid / nth, t1 = tasks * (tid + 1) / nth;
    for (int64_t task = t0; task < t1; ++task) {
      if (task > t0 && guard.should_stop()) return;
      const int64_t ng = task / (pl.nkbg * chunks), kbg = (task / chunks) % pl.nkbg, ch = task % chunks;
      const int64_t n = ng / g.G, gi = ng % g.G;
      const int64_t p0 = ch * rows_per, p1 = std::min(g.P, p0 + rows_per);
      if (p0 >= p1) continue;
      if (have != ng) {
        pad_planes(g, pl, in, n, gi, buf);
        have = ng;
      }
      const T* wp = packed + (gi * pl.nkbg + kbg) * nt_red * tile;
      const T* bp = biases + (gi * pl.nkbg + kbg) * tile;
      const int64_t ko0 = kbg * tile, nko = std::min(tile, g.Ko - ko0);
      T* ybase = out + ((n * g.G + gi) * g.Ko + ko0) * PQ;
      for (int64_t p = p0; p < p1; ++p) {
        if (((p - p0) & 7) == 7 && guard.should_stop()) return;  // (a long task: poll every 8 rows)
        for (int64_t qt = 0; qt < qtiles; ++qt) {
          const int64_t q0 = qt * pl.ur, nq = std::min(pl.ur, g.Q - q0);
          fn(buf + p * g.sh * pl.Wp + q0 * g.sw, g.sw, offs.data(), nt_red, wp, bp, tbuf);
          // tbuf[(o*UR + j)*VL + l] -> out channel ko0 + o*VL + l, pixel (p, q0 + j)
          for (int64_t e = 0; e < nko; ++e) {
            const int64_t o = e / VL, l = e % VL;
            const T* src = tbuf + o * pl.ur * VL + l;
            T* dst = ybase + e * PQ + p * g.Q + q0;
            for (int64_t j = 0; j < nq; ++j) dst[j] = src[j * VL];
          }
        }
      }
    }
  });
  guard.finish();
}

// Grad weight tile: out[(o*UR + j)*VL + l] (+)= sum over p < P, q < Q of
// dy[p*Q + q][o*VL + l] * x[p*row_step + q*sw + offs[j]] (rows of one image).
template <typename T, int OCB, int UR>
__attribute__((noinline)) void wgrad_kernel(const T* __restrict x, int64_t P, int64_t Q, int64_t row_step,
                                            int64_t sw, const int64_t* __restrict offs, const T* __restrict dy,
                                            bool accumulate, T* __restrict out) {
  using V = typename BVec<T>::type;
  constexpr int VL = lanes<T>();
  V acc[OCB][UR];
#pragma GCC unroll 4
  for (int o = 0; o < OCB; ++o)
#pragma GCC unroll 28
    for (int j = 0; j < UR; ++j)
      acc[o][j] = accumulate ? *reinterpret_cast<const V*>(out + (o * UR + j) * VL) : V{};
  int64_t off[UR];
#pragma GCC unroll 28
  for (int j = 0; j < UR; ++j) off[j] = offs[j];
  dy = static_cast<const T*>(__builtin_assume_aligned(dy, kVecBytes));
  for (int64_t p = 0; p < P; ++p) {
    const T* xr = x + p * row_step;
    const T* dyr = dy + p * Q * OCB * VL;
    for (int64_t q = 0; q < Q; ++q) {
      const T* xs = xr + q * sw;
      V d[OCB];
#pragma GCC unroll 4
      for (int o = 0; o < OCB; ++o) d[o] = *reinterpret_cast<const V*>(dyr + (q * OCB + o) * VL);
#pragma GCC unroll 28
      for (int j = 0; j < UR; ++j) {
        const T xv = xs[off[j]];
#pragma GCC unroll 4
        for (int o = 0; o < OCB; ++o) acc[o][j] += d[o] * xv;
      }
    }
  }
#pragma GCC unroll 4
  for (int o = 0; o < OCB; ++o)
#pragma GCC unroll 28
    for (int j = 0; j < UR; ++j) *reinterpret_cast<V*>(out + (o * UR + j) * VL) = acc[o][j];
}

template <typename T>
using WgradFn = void (*)(const T*, int64_t, int64_t, int64_t, int64_t, const int64_t*, const T*, bool, T*);

template <typename T, std::size_t... I>
WgradFn<T> wgrad_fn_of(int shape, std::index_sequence<I...>) {
  WgradFn<T> table[] = {&wgrad_kernel<T, kShapes[I].ocb, kShapes[I].ur>...};
  return table[shape];
}

// Grad weight's plan: tiles of OCB blocks of output channels x UR taps, by the forward's cost
// model with the taps in place of the pixels of a row; the padded planes cover exactly the
// windows of the P x Q outputs.
struct WgradPlan {
  int shape;
  int64_t ocb, ur, kob, nkbg, ntap, ntt;  // ntap = Cg*R*S taps, ntt = tap tiles
  int64_t Hp, Wp, plane;
  int64_t img_elems;                       // workspace per image: padded x + repacked dy, all groups
};

template <typename T>
WgradPlan wgrad_plan(const ConvParams& p) {
  constexpr int VL = lanes<T>();
  WgradPlan pl{};
  pl.kob = (p.Kg() + VL - 1) / VL;
  pl.ntap = p.Cg() * p.R * p.S;
  pl.shape = cheapest_tile([&](int64_t ocb, int64_t ur) {  // the loads include the taps' offsets
    return double(((pl.kob + ocb - 1) / ocb) * ((pl.ntap + ur - 1) / ur)) * double(std::max(ocb * ur, ocb + 2 * ur) + 2);
  });
  pl.ocb = kShapes[pl.shape].ocb;
  pl.ur = kShapes[pl.shape].ur;
  pl.nkbg = (pl.kob + pl.ocb - 1) / pl.ocb;
  pl.ntt = (pl.ntap + pl.ur - 1) / pl.ur;
  pl.Hp = sat_add(sat_mul(p.P - 1, p.stride_h), sat_mul(p.R - 1, p.dil_h) + 1);
  pl.Wp = sat_add(sat_mul(p.Q - 1, p.stride_w), sat_mul(p.S - 1, p.dil_w) + 1);
  pl.plane = sat_mul(pl.Hp, pl.Wp);
  pl.img_elems = sat_mul(p.groups, sat_add(sat_mul(p.Cg(), pl.plane), sat_mul(pl.nkbg * pl.ocb * VL, sat_mul(p.P, p.Q))));
  return pl;
}

Geometry forward_geometry(const ConvParams& p) {
  return {p.N, p.groups, p.Cg(), p.Kg(), p.H, p.W, p.P, p.Q, p.R, p.S,
          p.stride_h, p.stride_w, p.dil_h, p.dil_w, p.pad_t, p.pad_l};
}

// Grad input with stride 1 as a forward-form convolution of dy (see the header comment).
Geometry bwd_input_geometry(const ConvParams& p) {
  return {p.N, p.groups, p.Kg(), p.Cg(), p.P, p.Q, p.H, p.W, p.R, p.S,
          1, 1, p.dil_h, p.dil_w, (p.R - 1) * p.dil_h - p.pad_t, (p.S - 1) * p.dil_w - p.pad_l};
}

bool bwd_input_is_blocked(const ConvParams& p) { return p.stride_h == 1 && p.stride_w == 1; }

// The packed filters start at the first vector-aligned address of the workspace (a NumPy
// caller's workspace may be only 16-byte aligned): the query adds a vector's bytes for that.
template <typename T>
T* align_up(T* p) {  // the first vector-aligned address at or after p
  const std::uintptr_t a = reinterpret_cast<std::uintptr_t>(p);
  return reinterpret_cast<T*>((a + kVecBytes - 1) / kVecBytes * kVecBytes);
}

template <typename T>
T* aligned_ws(const char* op, int64_t need_elems, T* ws, int64_t ws_bytes) {
  const int64_t need = need_elems * int64_t(sizeof(T)) + kVecBytes;
  CK_CHECK(ws != nullptr && ws_bytes >= need, std::string(op) + "(blocked): workspace of " + std::to_string(ws_bytes) +
                                                  " bytes is smaller than the packed filters (" +
                                                  std::to_string(need) + " bytes)");
  return align_up(ws);
}

}  // namespace

int64_t blocked::workspace_bytes(ConvPass pass, int64_t elem_size, const ConvParams& p, int64_t cap_bytes) {
  if (p.N == 0) return 0;
  const bool dbl = elem_size == 8;
  auto filters_bytes = [&](const Geometry& g) {  // packed filters + the alignment slack
    return (dbl ? blocked_plan<double>(g).filt_elems : blocked_plan<float>(g).filt_elems) * elem_size + kVecBytes;
  };
  if (pass == ConvPass::Fwd) return filters_bytes(forward_geometry(p));
  if (pass == ConvPass::BwdInput) return bwd_input_is_blocked(p) ? filters_bytes(bwd_input_geometry(p)) : 0;  // else direct's kernel
  // No workspace when the padded planes would be mostly padding or gaps: direct's kernels run.
  const WgradPlan pl_f = wgrad_plan<float>(p), pl_d = wgrad_plan<double>(p);
  const WgradPlan& pl = dbl ? pl_d : pl_f;
  if (!dense_copy_fits(p, pl.plane)) return 0;
  const int64_t per_image = sat_mul(pl.img_elems, elem_size);
  if (per_image >= kSizeMax / 2)
    throw ValueError("conv2d_workspace_bytes(blocked, bwd_weight): one image's padded input and repacked dy "
                     "exceed the int64 range");
  return std::min(p.N, std::max<int64_t>(1, cap_bytes / per_image)) * per_image + 2 * kVecBytes;
}

template <typename T>
void blocked::fwd(const ConvParams& p, const T* x, const T* w, const T* b, T* y, T* ws, int64_t ws_bytes) {
  if (p.N == 0) return;
  const Geometry g = forward_geometry(p);
  const Plan pl = blocked_plan<T>(g);
  if (!dense_copy_fits(p, pl.plane)) return direct::fwd<T>(p, x, w, b, y, nullptr, 0);  // mostly padding or gaps
  T* pk = aligned_ws("conv2d", pl.filt_elems, ws, ws_bytes);
  const int64_t RS = p.R * p.S;
  pack_filters(g, pl, w, FilterView{g.Ko * g.Ki * RS, g.Ki * RS, RS, false}, b, pk);
  blocked_run(g, pl, x, pk, y);
}

template <typename T>
void blocked::bwd_input(const ConvParams& p, const T* dy, const T* w, T* dx, T* ws, int64_t ws_bytes) {
  if (p.N == 0) return;
  if (!bwd_input_is_blocked(p)) {
    direct::bwd_input<T>(p, dy, w, dx, nullptr, 0);
    return;
  }
  const Geometry g = bwd_input_geometry(p);  // Ki = Kg, Ko = Cg
  const Plan pl = blocked_plan<T>(g);
  if (!dense_copy_fits(p, pl.plane)) return direct::bwd_input<T>(p, dy, w, dx, nullptr, 0);  // mostly padding (dilation)
  T* pk = aligned_ws("conv2d_bwd_input", pl.filt_elems, ws, ws_bytes);
  const int64_t RS = p.R * p.S;
  // f(g, c, k, r, s) = w[g*Kg + k][c][R-1-r][S-1-s]
  pack_filters(g, pl, w, FilterView{p.Kg() * p.Cg() * RS, RS, p.Cg() * RS, true}, static_cast<const T*>(nullptr), pk);
  blocked_run(g, pl, dy, pk, dx);
}

template <typename T>
void blocked::bwd_weight(const ConvParams& p, const T* dy, const T* x, T* dw, T* ws, int64_t ws_bytes) {
  constexpr int VL = lanes<T>();
  const int64_t G = p.groups, Cg = p.Cg(), Kg = p.Kg(), PQ = p.P * p.Q, CgRS = Cg * p.R * p.S;
  if (p.N == 0) {
    std::fill(dw, dw + p.K * CgRS, T(0));
    return;
  }
  const WgradPlan pl = wgrad_plan<T>(p);
  if (!dense_copy_fits(p, pl.plane)) return direct::bwd_weight<T>(p, dy, x, dw, nullptr, 0);  // (the query gave no workspace)
  const int64_t per_image = sat_mul(pl.img_elems, int64_t(sizeof(T)));
  // (two vectors of slack: the start is aligned, and so is the repacked dy after the padded x)
  CK_CHECK(ws != nullptr && ws_bytes >= per_image + 2 * kVecBytes,
           "conv2d_bwd_weight(blocked): workspace of " + std::to_string(ws_bytes) +
               " bytes is smaller than one image's padded input and repacked dy (" +
               std::to_string(per_image + 2 * kVecBytes) + " bytes)");
  const int64_t chunk = std::min(p.N, (ws_bytes - 2 * kVecBytes) / per_image);
  T* base = align_up(ws);
  const int64_t tile = pl.ocb * VL;
  // chunk layout: padded x [g][i][c][Hp][Wp], then dy [g][kbg][i][P*Q][tile]
  T* xpad = base;
  T* dyb = base + (G * chunk * Cg * pl.plane + VL - 1) / VL * VL;
  const int64_t x_img = Cg * pl.plane, dy_img = PQ * tile;
  const Geometry geo{p.N, G, Cg, Kg, p.H, p.W, p.P, p.Q, p.R, p.S, p.stride_h, p.stride_w, p.dil_h, p.dil_w,
                     p.pad_t, p.pad_l};
  Plan padp{};
  padp.Hp = pl.Hp;
  padp.Wp = pl.Wp;
  padp.plane = pl.plane;
  const WgradFn<T> fn = wgrad_fn_of<T>(pl.shape, std::make_index_sequence<kNumShapes>{});
  const int nt = num_threads();
  // Tasks: (group, block group, a run of tap tiles). Each task walks the chunk's pixels once, a
  // block of rows at a time (its dy block stays in L2 while every tap tile of the run takes it),
  // the run's accumulators parked in a per-thread buffer between blocks. Fewer runs per block
  // group mean fewer passes over dy; there are enough for two tasks a thread.
  // A block group's dy that fits in a few MB of cache is simply read once per tile, each tile a
  // task of its own over the whole chunk, an image (a block of P rows) at a time.
  const bool streamed = chunk * dy_img * int64_t(sizeof(T)) > (int64_t(4) << 20);
  const int64_t runs = streamed ? std::clamp<int64_t>((2 * int64_t(nt) + G * pl.nkbg - 1) / (G * pl.nkbg), 1, pl.ntt)
                                : pl.ntt;
  const int64_t run_len = (pl.ntt + runs - 1) / runs;
  const int64_t tasks = G * pl.nkbg * runs;
  const int64_t rows_blk =
      streamed ? std::clamp<int64_t>((int64_t(128) << 10) / (p.Q * tile * int64_t(sizeof(T))), 1, p.P) : p.P;
  const bool par = nt > 1 && p.N * p.K * PQ * CgRS >= kParallelMacs;
  for (int64_t n0 = 0; n0 < p.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, p.N - n0);
    ParallelGuard guard;
#pragma omp parallel num_threads(nt) if (par)
    {
#pragma omp for collapse(2) schedule(static) nowait
      for (int64_t gi = 0; gi < G; ++gi)
        for (int64_t i = 0; i < nb; ++i)
          guard.run_quiet([&] { pad_planes(geo, padp, x, n0 + i, gi, xpad + (gi * chunk + i) * x_img); });
#pragma omp for collapse(3) schedule(static)
      for (int64_t gi = 0; gi < G; ++gi)
        for (int64_t kbg = 0; kbg < pl.nkbg; ++kbg)
          for (int64_t i = 0; i < nb; ++i) guard.run_quiet([&] {
            // dyb[pq][e] = dy[n0 + i][gi*Kg + kbg*tile + e][pq], 0 past Kg; 16 pixels at a time so
            // both the reads (along pq) and the writes (along e) stay in a few cache lines
            T* d = dyb + ((gi * pl.nkbg + kbg) * chunk + i) * dy_img;
            const int64_t k0 = kbg * tile, nk = std::min(tile, Kg - k0);
            const T* src = dy + ((n0 + i) * p.K + gi * Kg + k0) * PQ;
            for (int64_t q0 = 0; q0 < PQ; q0 += 16) {
              const int64_t q1 = std::min(PQ, q0 + 16);
              for (int64_t e = 0; e < nk; ++e)
                for (int64_t pq = q0; pq < q1; ++pq) d[pq * tile + e] = src[e * PQ + pq];
              for (int64_t pq = q0; pq < q1; ++pq)
                for (int64_t e = nk; e < tile; ++e) d[pq * tile + e] = T(0);
            }
          });
      // (the implicit barrier of the second loop covers the first: its nowait ends there)
      T* tbufs = nullptr;
      int64_t* offs = nullptr;
      guard.run_quiet([&] {  // (a thread that cannot have them stops the region: no task runs without them)
        tbufs = static_cast<T*>(thread_scratch(5, sizeof(T) * run_len * tile * pl.ur, "conv2d_bwd_weight(blocked): tile buffers"));
        offs = static_cast<int64_t*>(thread_scratch(6, sizeof(int64_t) * run_len * pl.ur, "conv2d_bwd_weight(blocked): tap offsets"));
      });
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < tasks; ++task) guard.run([&] {
        const int64_t gi = task / (pl.nkbg * runs), kbg = (task / runs) % pl.nkbg, run = task % runs;
        const int64_t tt0 = run * run_len, tt1 = std::min(pl.ntt, tt0 + run_len);
        if (tt0 >= tt1) return;
        const int64_t k0 = kbg * tile, nk = std::min(tile, Kg - k0);
        for (int64_t tt = tt0; tt < tt1; ++tt) {
          const int64_t t0 = tt * pl.ur, ntaps = std::min(pl.ur, pl.ntap - t0);
          int64_t* o = offs + (tt - tt0) * pl.ur;
          for (int64_t j = 0; j < pl.ur; ++j) {
            const int64_t t = t0 + std::min(j, ntaps - 1);  // past the last tap: repeat it (discarded)
            const int64_t c = t / (p.R * p.S), r = (t / p.S) % p.R, s = t % p.S;
            o[j] = c * pl.plane + r * p.dil_h * pl.Wp + s * p.dil_w;
          }
          if (n0 > 0) {  // the chunks so far: dw -> tile layout
            T* tb = tbufs + (tt - tt0) * tile * pl.ur;
            const T* dwt = dw + (gi * Kg + k0) * CgRS + t0;
            for (int64_t e = 0; e < nk; ++e)
              for (int64_t j = 0; j < ntaps; ++j) tb[((e / VL) * pl.ur + j) * VL + e % VL] = dwt[e * CgRS + j];
          }
        }
        const T* dyk = dyb + (gi * pl.nkbg + kbg) * chunk * dy_img;
        for (int64_t i = 0; i < nb; ++i) {
          if (i > 0 && guard.should_stop()) return;
          for (int64_t p0 = 0; p0 < p.P; p0 += rows_blk) {
            const int64_t np = std::min(rows_blk, p.P - p0);
            const bool acc = n0 > 0 || i > 0 || p0 > 0;
            const T* xb = xpad + (gi * chunk + i) * x_img + p0 * p.stride_h * pl.Wp;
            const T* db = dyk + i * dy_img + p0 * p.Q * tile;
            for (int64_t tt = tt0; tt < tt1; ++tt)
              fn(xb, np, p.Q, p.stride_h * pl.Wp, p.stride_w, offs + (tt - tt0) * pl.ur, db, acc,
                 tbufs + (tt - tt0) * tile * pl.ur);
          }
        }
        for (int64_t tt = tt0; tt < tt1; ++tt) {
          const int64_t t0 = tt * pl.ur, ntaps = std::min(pl.ur, pl.ntap - t0);
          const T* tb = tbufs + (tt - tt0) * tile * pl.ur;
          T* dwt = dw + (gi * Kg + k0) * CgRS + t0;
          for (int64_t e = 0; e < nk; ++e)
            for (int64_t j = 0; j < ntaps; ++j) dwt[e * CgRS + j] = tb[((e / VL) * pl.ur + j) * VL + e % VL];
        }
      });
    }
    guard.finish();
  }
}

CONVKIT_CPU_CONV_INSTANTIATE(blocked)

}  // namespace convkit::cpu
