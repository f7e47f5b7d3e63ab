// conv2d by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray 2015) for 3x3, stride 1,
// dilation 1 layers (any padding, groups): filters -> U = G g G^T, input tiles -> V = B^T d B,
// alpha*alpha = 16 batched GEMMs in the transform domain through our GEMM (cpu/gemm.h),
// M_xi[K_g, tiles] = U_xi[K_g, C_g] x V_xi[C_g, tiles], then Y = A^T M A per 2x2 output tile.
//
// Why F(2x2) and not F(4x4): F(4x4, 3x3) (points 0, +-1, +-2, inf) cuts the multiplies 4x
// against 2.25x, but its transforms carry 1/6, 1/24 and entries up to 8. Measured with this file
// at kTileM = 2 and = 4, max |err| / max |ref| against torch in float64 on upcast inputs, N(0,1)
// data, weights scaled 1/sqrt(9C), C = 256 -> K = 64 at 28x28 (forward / grad input):
//   float32: im2col 3.3e-7 / 2.4e-7, F(2x2) 5.3e-7 / 3.5e-7, F(4x4) 6.8e-6 / 6.3e-6
//   float64: im2col 4.5e-15 / 2.0e-16, F(2x2) 5.1e-15 / 7.3e-16, F(4x4) 1.5e-14 / 1.2e-14
// F(4x4) is ~20x im2col's error in float32 and not faster here except at 56x56 (batch 8, 2
// threads: stem.3x3 0.75x F(2x2)'s time, 3a/4a.3x3 equal or slower, 5a.3x3 at 7x7 4x slower),
// and F(2x2)'s 0, +-1, +-1/2 keep small-integer inputs exact. tests/ops/test_winograd.py checks
// F(2x2) at 5e-6 (float32) / 1e-13 (float64) relative to max |ref|, within 4x im2col's float32
// error, and bit-exact on small integers. F(4x4) is one line away (kTileM, WinogradTile<4>).
//
// Infinities and NaNs: the transforms subtract, so an Inf input turns the whole 2x2 output tile
// into NaN (Inf - Inf) where the direct sum keeps Inf. Every window that holds a non-finite input
// or filter value gives a non-finite transform-domain output (a non-finite value times any
// coefficient, or summed with anything, stays non-finite), so the output transform checks its
// tiles, and a tile with a non-finite output is recomputed by the direct sum (direct_tile_kernel,
// zero padding multiplied in as direct's padded copy does): Inf and NaN land exactly where
// direct puts them. Finite data never takes that path.
//
// Grad input is the same machinery: dx is a stride-1 3x3 conv of dy with the filter rotated by
// 180 degrees and its K / C axes swapped (per group), padded by (2 - pad) on each side (a
// negative pad is a crop, which the tile loader's bounds handle). Grad weight reuses
// im2col + GEMM (im2col::bwd_weight), so its workspace is im2col's.
//
// Workspace (caller's, sized by conv2d_workspace_bytes for num_threads() threads): U
// [G][16][Kg][Cg], then per thread a block of TB tiles, V [16][Cg][TB] and M [16][Kg][TB]
// (slices a cache line apart), sized to stay in L2. Threads take (group, tile block) items and
// run each item's GEMMs themselves, so transformed tiles never leave cache; the transforms run
// 16 tiles side by side (SIMD across tiles). Fewer threads run when the workspace is smaller.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "cpu/conv.h"
#include "cpu/gemm.h"
#include "cpu/threads.h"

namespace convkit::cpu {
namespace {

// F(m x m, 3 x 3): alpha = m + 2 points; BT [alpha][alpha], G [alpha][3], AT [m][alpha].
template <int m>
struct WinogradTile;
template <>
struct WinogradTile<2> {
  static constexpr int M = 2, A = 4;
  static constexpr double BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  static constexpr double AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};
template <>
struct WinogradTile<4> {
  static constexpr int M = 4, A = 6;
  static constexpr double BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                      {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr double G[6][3] = {{1.0 / 4, 0, 0},
                                     {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                     {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                     {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                     {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                     {0, 0, 1}};
  static constexpr double AT[4][6] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

constexpr int kTileM = 2;  // the F(m x m, 3 x 3) this file runs (see the header)
using Tile = WinogradTile<kTileM>;

// A stride-1 3x3 convolution as the transform machinery sees it: Cin input planes Hin x Win,
// Kout output planes Hout x Wout, output (h, w) reads input rows h - pad_t + r, columns
// w - pad_l + s (outside [0, Hin) x [0, Win): zero). pad_t / pad_l may be negative (a crop).
struct WinoShape {
  int64_t N, Cin, Hin, Win, Kout, Hout, Wout, pad_t, pad_l, groups;
  int64_t tiles_h() const { return (Hout + Tile::M - 1) / Tile::M; }
  int64_t tiles_w() const { return (Wout + Tile::M - 1) / Tile::M; }
  int64_t tiles() const { return tiles_h() * tiles_w(); }
  int64_t Cg() const { return Cin / groups; }
  int64_t Kg() const { return Kout / groups; }
};

WinoShape fwd_shape(const ConvParams& p) {
  return {p.N, p.C, p.H, p.W, p.K, p.P, p.Q, p.pad_t, p.pad_l, p.groups};
}
// dx [N, C, H, W] = conv(dy [N, K, P, Q], rot180(w) with K <-> C): output h reads dy rows
// h + pad_t - r = h - (2 - pad_t) + r' with r' = 2 - r.
WinoShape bwd_input_shape(const ConvParams& p) {
  return {p.N, p.K, p.P, p.Q, p.C, p.H, p.W, 2 - p.pad_t, 2 - p.pad_l, p.groups};
}

void check_winograd(const ConvParams& p, const char* op) {
  const std::string why = conv_algo_refusal(ConvAlgo::Winograd, p);  // common/conv_algo.h's rule
  CK_CHECK(why.empty(), std::string(op) + ": " + why);
}

int64_t filter_elems(const WinoShape& s) { return int64_t(Tile::A) * Tile::A * s.Kout * s.Cg(); }

// U[(g*A*A + xi)*Kg + kl][cl] = (G f G^T)[xi] for the 3x3 filter f of (output kl, input cl) of
// group g; `rotated`: f[r][s] = w[ci][ko][2-r][2-s] (grad input: K and C swapped, rot180), else
// f = w[ko][ci]. Computed in double, rounded once.
template <typename T>
void filter_transform_kernel(const WinoShape& s, const T* w, bool rotated, T* U) {
  constexpr int A = Tile::A;
  const int64_t G = s.groups, Kg = s.Kg(), Cg = s.Cg();
  ParallelGuard guard;
#pragma omp parallel for collapse(2) schedule(static) num_threads(num_threads())
  for (int64_t g = 0; g < G; ++g)
    for (int64_t kl = 0; kl < Kg; ++kl) guard.run_quiet([&] {
      for (int64_t cl = 0; cl < Cg; ++cl) {
        double f[3][3];
        if (!rotated) {
          const T* src = w + ((g * Kg + kl) * Cg + cl) * 9;  // w [Kout][Cg][3][3]
          for (int r = 0; r < 3; ++r)
            for (int c = 0; c < 3; ++c) f[r][c] = double(src[r * 3 + c]);
        } else {
          // w is the forward's [K][C/g][3][3]: its output channel is our input g*Cg + cl, its
          // group-local input channel our output kl.
          const T* src = w + ((g * Cg + cl) * Kg + kl) * 9;
          for (int r = 0; r < 3; ++r)
            for (int c = 0; c < 3; ++c) f[r][c] = double(src[(2 - r) * 3 + (2 - c)]);
        }
        double gf[A][3];  // G f
        for (int i = 0; i < A; ++i)
          for (int c = 0; c < 3; ++c) gf[i][c] = Tile::G[i][0] * f[0][c] + Tile::G[i][1] * f[1][c] + Tile::G[i][2] * f[2][c];
        for (int i = 0; i < A; ++i)
          for (int j = 0; j < A; ++j) {
            const double u = gf[i][0] * Tile::G[j][0] + gf[i][1] * Tile::G[j][1] + gf[i][2] * Tile::G[j][2];
            U[((g * A * A + i * A + j) * Kg + kl) * Cg + cl] = T(u);
          }
      }
    });
  guard.finish();
}

// The direct sum for one output tile of output channel g*Kg + kl (global tile t): bias, then
// (cl, r, c) in order, positions outside the input read as 0 (direct's zero-padded copy). For
// tiles whose transform-domain result is not finite (see the header).
template <typename T>
__attribute__((noinline, cold)) void direct_tile_kernel(const WinoShape& s, const T* x, const T* w, bool rotated, const T* bias, int64_t g,
                        int64_t kl, int64_t t, T* y) {
  const int64_t Kg = s.Kg(), Cg = s.Cg(), k = g * Kg + kl;
  const int64_t n = t / s.tiles(), th = (t % s.tiles()) / s.tiles_w(), tw = t % s.tiles_w();
  for (int a = 0; a < Tile::M; ++a)
    for (int b = 0; b < Tile::M; ++b) {
      const int64_t h = th * Tile::M + a, wc = tw * Tile::M + b;
      if (h >= s.Hout || wc >= s.Wout) continue;
      T acc = bias ? bias[k] : T(0);
      for (int64_t cl = 0; cl < Cg; ++cl) {
        const T* xc = x + (n * s.Cin + g * Cg + cl) * s.Hin * s.Win;
        for (int r = 0; r < 3; ++r)
          for (int c = 0; c < 3; ++c) {
            const int64_t ih = h - s.pad_t + r, iw = wc - s.pad_l + c;
            const T v = ih >= 0 && ih < s.Hin && iw >= 0 && iw < s.Win ? xc[ih * s.Win + iw] : T(0);
            const T f = rotated ? w[((g * Cg + cl) * Kg + kl) * 9 + (2 - r) * 3 + (2 - c)]
                                : w[((g * Kg + kl) * Cg + cl) * 9 + r * 3 + c];
            acc += f * v;
          }
      }
      y[((n * s.Kout + k) * s.Hout + h) * s.Wout + wc] = acc;
    }
}

// Tiles per block: a thread's V and M blocks (A*A*(Cg + Kg)*TB elements) stay near 1 MiB (L2),
// at least 32 (the GEMM's NR for floats) and at most 512 tiles.
int64_t block_tiles(const WinoShape& s, int64_t elem_size) {
  const int64_t per_tile = int64_t(Tile::A) * Tile::A * (s.Cg() + s.Kg()) * elem_size;  // V + M
  return std::clamp<int64_t>((int64_t(1) << 20) / per_tile / 32 * 32, 32, 512);
}
// Elements between consecutive xi slices of a thread's V [A*A][Cg][TB] and M [A*A][Kg][TB]:
// padded by a cache line so the A*A slices a tile transform touches do not all map to one L1
// set (Cg*TB*4 bytes is often a multiple of 4 KiB; 16 such streams thrashed L1, 5x slower).
int64_t slice_elems(int64_t rows, int64_t TB, int64_t elem_size) { return rows * TB + 64 / elem_size; }
int64_t thread_elems(const WinoShape& s, int64_t elem_size) {
  const int64_t TB = block_tiles(s, elem_size);
  return int64_t(Tile::A) * Tile::A * (slice_elems(s.Cg(), TB, elem_size) + slice_elems(s.Kg(), TB, elem_size));
}

constexpr int kLanes = 16;        // tiles transformed side by side (SIMD across tiles)
constexpr int64_t kMaxBlock = 512; // block_tiles' upper bound

// Where each tile of a block lies: tile t = n*tiles + th*tiles_w + tw has its top-left element at
// off (n*planes*H*W + row*W + col for row = th*m - pad, col = tw*m - pad); bit a of rows / bit b
// of cols says whether row + a / col + b lies inside the H x W plane.
struct TileGeometry {
  int64_t off[kMaxBlock];
  uint32_t rows[kMaxBlock], cols[kMaxBlock];
};

void tile_geometry(int64_t t0, int64_t tb, int64_t tiles, int64_t tw_n, int64_t plane_stride, int64_t H, int64_t W,
                   int64_t pad_t, int64_t pad_l, int span, TileGeometry& geo) {
  for (int64_t tt = 0; tt < tb; ++tt) {
    const int64_t t = t0 + tt, n = t / tiles, th = (t % tiles) / tw_n, tw = t % tw_n;
    const int64_t r0 = th * Tile::M - pad_t, c0 = tw * Tile::M - pad_l;
    geo.off[tt] = n * plane_stride + r0 * W + c0;
    uint32_t rm = 0, cm = 0;
    for (int a = 0; a < span; ++a) {
      if (r0 + a >= 0 && r0 + a < H) rm |= 1u << a;
      if (c0 + a >= 0 && c0 + a < W) cm |= 1u << a;
    }
    geo.rows[tt] = rm;
    geo.cols[tt] = cm;
  }
}

// V[xi*xi_stride + cl*TB + tt] = (B^T d B)[xi] for the input tile d of global tile t0 + tt of
// channel g*Cg + cl, kLanes tiles at a time (a block's lanes past tb transform a copy of the
// last tile, into columns the GEMM never reads: TB is a multiple of kLanes).
template <typename T>
void input_transform_kernel(const WinoShape& s, const T* x, int64_t g, int64_t t0, int64_t tb, int64_t TB,
                            int64_t xi_stride, TileGeometry& geo, T* V) {
  constexpr int A = Tile::A;
  const int64_t Cg = s.Cg(), H = s.Hin, W = s.Win;
  tile_geometry(t0, tb, s.tiles(), s.tiles_w(), s.Cin * H * W, H, W, s.pad_t, s.pad_l, A, geo);
  for (int64_t cl = 0; cl < Cg; ++cl) {
    const T* xc = x + (g * Cg + cl) * H * W;
    for (int64_t tt0 = 0; tt0 < tb; tt0 += kLanes) {
      T d[A][A][kLanes];
#pragma GCC unroll 8
      for (int a = 0; a < A; ++a)
#pragma GCC unroll 8
        for (int b = 0; b < A; ++b)
#pragma omp simd
          for (int j = 0; j < kLanes; ++j) {
            const int64_t tt = std::min<int64_t>(tt0 + j, tb - 1);
            const bool in = (geo.rows[tt] >> a) & (geo.cols[tt] >> b) & 1u;
            const T v = xc[in ? geo.off[tt] + a * W + b : 0];  // index 0 is always readable
            d[a][b][j] = in ? v : T(0);
          }
      T bd[A][A][kLanes];  // B^T d
#pragma GCC unroll 8
      for (int a = 0; a < A; ++a)
#pragma GCC unroll 8
        for (int b = 0; b < A; ++b) {
#pragma omp simd
          for (int j = 0; j < kLanes; ++j) {
            T acc = T(0);
#pragma GCC unroll 8
            for (int k = 0; k < A; ++k)
              if (Tile::BT[a][k] != 0) acc += T(Tile::BT[a][k]) * d[k][b][j];
            bd[a][b][j] = acc;
          }
        }
      T* v = V + cl * TB + tt0;
#pragma GCC unroll 8
      for (int a = 0; a < A; ++a)
#pragma GCC unroll 8
        for (int b = 0; b < A; ++b) {
          T* vx = v + (a * A + b) * xi_stride;
#pragma omp simd
          for (int j = 0; j < kLanes; ++j) {
            T acc = T(0);
#pragma GCC unroll 8
            for (int k = 0; k < A; ++k)
              if (Tile::BT[b][k] != 0) acc += bd[a][k][j] * T(Tile::BT[b][k]);
            vx[j] = acc;
          }
        }
    }
  }
}

// y[n][g*Kg + kl][th*m + a][tw*m + b] = (A^T M A)[a][b] + bias, M[xi*xi_stride + kl*TB + tt] for
// global tile t0 + tt, kLanes tiles at a time; only the in-bounds part of an edge tile is stored
// (every output element lies in exactly one tile, so all of y is written).
// A tile whose outputs are not all finite is recomputed by direct_tile_kernel from x and w.
template <typename T>
void output_transform_kernel(const WinoShape& s, const T* Mt, const T* bias, int64_t g, int64_t t0, int64_t tb,
                             int64_t TB, int64_t xi_stride, TileGeometry& geo, const T* x, const T* w, bool rotated,
                             T* y) {
  constexpr int A = Tile::A, M = Tile::M;
  const int64_t Kg = s.Kg(), H = s.Hout, W = s.Wout;
  tile_geometry(t0, tb, s.tiles(), s.tiles_w(), s.Kout * H * W, H, W, 0, 0, M, geo);
  for (int64_t kl = 0; kl < Kg; ++kl) {
    const int64_t k = g * Kg + kl;
    const T b0 = bias ? bias[k] : T(0);
    T* yk = y + k * H * W;
    for (int64_t tt0 = 0; tt0 < tb; tt0 += kLanes) {
      const T* mt = Mt + kl * TB + tt0;  // lanes past tb read columns the GEMM left alone: unused
      T am[M][A][kLanes];  // A^T M
#pragma GCC unroll 8
      for (int a = 0; a < M; ++a)
#pragma GCC unroll 8
        for (int b = 0; b < A; ++b)
#pragma omp simd
          for (int j = 0; j < kLanes; ++j) {
            T acc = T(0);
#pragma GCC unroll 8
            for (int k2 = 0; k2 < A; ++k2)
              if (Tile::AT[a][k2] != 0) acc += T(Tile::AT[a][k2]) * mt[(k2 * A + b) * xi_stride + j];
            am[a][b][j] = acc;
          }
      T out[M][M][kLanes];
      T nonfinite[kLanes] = {};  // NaN in lane j when some output of tile j is Inf or NaN
#pragma GCC unroll 8
      for (int a = 0; a < M; ++a)
#pragma GCC unroll 8
        for (int b = 0; b < M; ++b)
#pragma omp simd
          for (int j = 0; j < kLanes; ++j) {
            T acc = b0;
#pragma GCC unroll 8
            for (int k2 = 0; k2 < A; ++k2)
              if (Tile::AT[b][k2] != 0) acc += am[a][k2][j] * T(Tile::AT[b][k2]);
            out[a][b][j] = acc;
          }
#pragma GCC unroll 8
      for (int a = 0; a < M; ++a)
#pragma GCC unroll 8
        for (int b = 0; b < M; ++b)
#pragma omp simd
          for (int j = 0; j < kLanes; ++j) nonfinite[j] += out[a][b][j] * T(0);
      const int nl = int(std::min<int64_t>(kLanes, tb - tt0));
      bool any_nonfinite = false;  // (lanes past nl hold columns the GEMM never wrote: not looked at)
#pragma omp simd reduction(| : any_nonfinite)
      for (int j = 0; j < kLanes; ++j) any_nonfinite |= j < nl && nonfinite[j] != nonfinite[j];
      for (int j = 0; j < nl; ++j) {
        const int64_t tt = tt0 + j;
        T* yt = yk + geo.off[tt];
        for (int a = 0; a < M; ++a)
          if ((geo.rows[tt] >> a) & 1u)
            for (int b = 0; b < M; ++b)
              if ((geo.cols[tt] >> b) & 1u) yt[a * W + b] = out[a][b][j];
      }
      if (any_nonfinite) [[unlikely]] {
        for (int j = 0; j < nl; ++j)
          if (nonfinite[j] != nonfinite[j]) direct_tile_kernel(s, x, w, rotated, bias, g, kl, t0 + tt0 + j, y);
      }
    }
  }
}

int64_t tiles_workspace_bytes(const WinoShape& s, int64_t elem_size) {
  if (s.N == 0) return 0;
  return (filter_elems(s) + num_threads() * thread_elems(s, elem_size)) * elem_size;
}

// y = conv(x, filter) (+ bias) for the shape s, the filter given as w (rotated: grad input).
// Work items are (group, block of TB consecutive tiles over the whole batch); a thread
// transforms its block's input tiles into its V, runs the A*A GEMMs M_xi = U_xi x V_xi on one
// thread (the GEMM's own parallel region is nested, hence inactive), and writes the outputs.
template <typename T>
void winograd_conv(const WinoShape& s, const T* x, const T* w, bool rotated, const T* bias, T* y, T* ws,
                   int64_t ws_bytes, const char* op) {
  constexpr int A = Tile::A;
  const int64_t G = s.groups, Kg = s.Kg(), Cg = s.Cg(), TB = block_tiles(s, sizeof(T));
  const int64_t per_thread = thread_elems(s, sizeof(T)), fixed = filter_elems(s);
  const int64_t avail = ws ? ws_bytes / int64_t(sizeof(T)) - fixed : -1;
  CK_CHECK(avail >= per_thread,
           std::string(op) + "(algo='winograd'): workspace of " + std::to_string(ws_bytes) +
               " bytes is smaller than the transformed filters plus one thread's tile block (" +
               std::to_string((fixed + per_thread) * int64_t(sizeof(T))) + " bytes)");
  const int nt = int(std::min<int64_t>(num_threads(), avail / per_thread));
  T* U = ws;
  filter_transform_kernel(s, w, rotated, U);
  const int64_t total = s.N * s.tiles(), blocks = (total + TB - 1) / TB, items = G * blocks;
  ParallelGuard guard;
#pragma omp parallel num_threads(nt)
  {
    const int64_t v_slice = slice_elems(Cg, TB, sizeof(T)), m_slice = slice_elems(Kg, TB, sizeof(T));
    T* V = U + fixed + omp_get_thread_num() * per_thread;  // [A*A][Cg][TB], slices v_slice apart
    T* Mt = V + A * A * v_slice;                           // [A*A][Kg][TB], slices m_slice apart
    TileGeometry geo;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      // (the body written out, not in a lambda: GCC optimized the transforms worse inside one)
      if (guard.should_stop()) continue;
      const int64_t g = item / blocks, t0 = (item % blocks) * TB, tb = std::min(TB, total - t0);
      input_transform_kernel(s, x, g, t0, tb, TB, v_slice, geo, V);
      try {  // (the GEMM rethrows what its own region caught)
        gemm_batched<T>(A * A, Kg, tb, Cg, T(1), plain_view<const T>(U + g * A * A * Kg * Cg, Cg), Kg * Cg,
                        plain_view<const T>(V, TB), v_slice, T(0), plain_view<T>(Mt, TB), m_slice);
      } catch (...) {
        guard.fail();
        continue;
      }
      output_transform_kernel(s, Mt, bias, g, t0, tb, TB, m_slice, geo, x, w, rotated, y);
    }
  }
  guard.finish();
}

}  // namespace

int64_t winograd::workspace_bytes(ConvPass pass, int64_t elem_size, const ConvParams& p, int64_t cap_bytes) {
  check_winograd(p, "conv2d_workspace_bytes");
  if (pass == ConvPass::BwdWeight) return conv2d_im2col_workspace_bytes(p, elem_size, cap_bytes);  // grad weight: im2col's
  return tiles_workspace_bytes(pass == ConvPass::Fwd ? fwd_shape(p) : bwd_input_shape(p), elem_size);
}

template <typename T>
void winograd::fwd(const ConvParams& p, const T* x, const T* w, const T* b, T* y, T* ws, int64_t ws_bytes) {
  check_winograd(p, "conv2d_fwd");
  if (p.N == 0) return;
  winograd_conv(fwd_shape(p), x, w, false, b, y, ws, ws_bytes, "conv2d_fwd");
}

template <typename T>
void winograd::bwd_input(const ConvParams& p, const T* dy, const T* w, T* dx, T* ws, int64_t ws_bytes) {
  check_winograd(p, "conv2d_bwd_input");
  if (p.N == 0) return;
  winograd_conv(bwd_input_shape(p), dy, w, true, static_cast<const T*>(nullptr), dx, ws, ws_bytes,
                "conv2d_bwd_input");
}

template <typename T>
void winograd::bwd_weight(const ConvParams& p, const T* dy, const T* x, T* dw, T* ws, int64_t ws_bytes) {
  check_winograd(p, "conv2d_bwd_weight");
  im2col::bwd_weight(p, dy, x, dw, ws, ws_bytes);
}

CONVKIT_CPU_CONV_INSTANTIATE(winograd)

}  // namespace convkit::cpu
