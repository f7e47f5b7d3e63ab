// Blocked, register-tiled GEMM of our own (Goto/BLIS structure): per C tile, K is cut into
// KC slices; A [mc x kc] and B [kc x nc] are packed into MR-row / NR-column micro-panels
// (transposes and strided views resolved there, with 16 x 16 register transposes on AVX-512)
// and an MR x NR micro-kernel accumulates in registers: AVX-512 intrinsics (8 x 32 floats,
// 8 x 16 doubles), else GCC vector extensions (ymm on AVX2, xmm otherwise).
#include "cpu/gemm.h"

#include <omp.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>

#include "cpu/threads.h"

namespace convkit::cpu {

void* thread_scratch(int slot, std::size_t bytes) {
  struct Buffer {
    void* ptr = nullptr;
    std::size_t size = 0;
    ~Buffer() { std::free(ptr); }
  };
  thread_local Buffer buffers[8];
  Buffer& b = buffers[slot];
  if (b.size < bytes) {
    const std::size_t want = ((std::max(bytes, b.size + b.size / 2) + 63) / 64) * 64;
    std::free(b.ptr);
    b.ptr = nullptr;
    b.size = 0;
    void* p = std::aligned_alloc(64, want);
    if (!p) throw std::bad_alloc();
    b.ptr = p;
    b.size = want;
  }
  return b.ptr;
}

namespace {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
constexpr int kMR = 8;  // 8 x 2 zmm accumulators; 8 divides the usual channel counts (12 wasted
                        // a third of the rows at M = 16, a ninth at 64)
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
constexpr int kMR = 6;  // 6 x 2 ymm accumulators of 16 registers
#else
constexpr int kVecBytes = 16;
constexpr int kMR = 6;
#endif

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(kVecBytes)));
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(kVecBytes)));
};

// Tile shapes per dtype: the micro-tile MR x NR, and the cache blocks (A block mc x kc in L2,
// B micro-panel kc x NR in L1, B block kc x nc in L2).
template <typename T>
struct GemmTile {
  static constexpr int VL = kVecBytes / int(sizeof(T));
  static constexpr int NV = 2;
  static constexpr int NR = VL * NV;
  static constexpr int MR = kMR;
  static constexpr int64_t KC = sizeof(T) == 4 ? 384 : 256;
  static constexpr int64_t MC = MR * (sizeof(T) == 4 ? 36 : 24);
  static constexpr int64_t NC = NR * (sizeof(T) == 4 ? 12 : 16);
};

// acc[MR][NV] += A panel (kc x MR, k-major) x B panel (kc x NR, k-major); result to Ct (MR x NR).
template <typename T>
__attribute__((noinline)) void micro_kernel(int64_t kc, const T* __restrict A,
                                                        const T* __restrict B, T* __restrict Ct) {
  using V = typename Vec<T>::type;
  constexpr int MR = GemmTile<T>::MR, NV = GemmTile<T>::NV, VL = GemmTile<T>::VL;
  constexpr int NR = GemmTile<T>::NR;
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V{};
  A = static_cast<const T*>(__builtin_assume_aligned(A, 64));
  B = static_cast<const T*>(__builtin_assume_aligned(B, 64));
  for (int64_t k = 0; k < kc; ++k) {
    V b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = *reinterpret_cast<const V*>(B + v * VL);
    __builtin_prefetch(B + 8 * NR);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const T a = A[i];  // scalar x vector: GCC splats it (a broadcast load)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] += a * b[v];
    }
    A += MR;
    B += NR;
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) *reinterpret_cast<V*>(Ct + i * NR + v * VL) = acc[i][v];
}

#if defined(__AVX512F__)
// AVX-512 micro-kernels with intrinsics: GCC's allocation of the generic version spills a B
// vector every k step; named registers keep all 24 accumulators and both B vectors live.
#define CONVKIT_MK512(T, V, LOAD, SET1, FMA, STORE, ZERO)                                       \
  template <>                                                                                   \
  __attribute__((noinline)) void micro_kernel<T>(int64_t kc, const T* __restrict A, \
                                                             const T* __restrict B,             \
                                                             T* __restrict Ct) {                \
    constexpr int MR = GemmTile<T>::MR, VL = GemmTile<T>::VL, NR = GemmTile<T>::NR;             \
    static_assert(GemmTile<T>::NV == 2, "two vectors per B row");                               \
    V c0[MR], c1[MR];                                                                           \
    _Pragma("GCC unroll 16") for (int i = 0; i < MR; ++i) c0[i] = c1[i] = ZERO();               \
    for (int64_t k = 0; k < kc; ++k) {                                                          \
      const V b0 = LOAD(B), b1 = LOAD(B + VL);                                                  \
      __builtin_prefetch(B + 8 * NR);                                                           \
      _Pragma("GCC unroll 16") for (int i = 0; i < MR; ++i) {                                   \
        const V a = SET1(A[i]);                                                                 \
        c0[i] = FMA(a, b0, c0[i]);                                                              \
        c1[i] = FMA(a, b1, c1[i]);                                                              \
      }                                                                                         \
      A += MR;                                                                                  \
      B += NR;                                                                                  \
    }                                                                                           \
    _Pragma("GCC unroll 16") for (int i = 0; i < MR; ++i) {                                     \
      STORE(Ct + i * NR, c0[i]);                                                                \
      STORE(Ct + i * NR + VL, c1[i]);                                                           \
    }                                                                                           \
  }
CONVKIT_MK512(float, __m512, _mm512_load_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_store_ps,
              _mm512_setzero_ps)
CONVKIT_MK512(double, __m512d, _mm512_load_pd, _mm512_set1_pd, _mm512_fmadd_pd, _mm512_store_pd,
              _mm512_setzero_pd)
#undef CONVKIT_MK512
#endif

// out[t] = offset of index start + t along the axis (incremental, no division per element).
inline void axis_offsets(const MatAxis& a, int64_t start, int64_t n, int64_t* out) {
  int64_t j0 = start % a.n0;
  int64_t j1 = (start / a.n0) % a.n1;
  int64_t j2 = (start / a.n0) / a.n1;
  int64_t base = j1 * a.s1 + j2 * a.s2;
  for (int64_t t = 0; t < n; ++t) {
    out[t] = base + j0 * a.s0;
    if (++j0 == a.n0) {
      j0 = 0;
      if (++j1 == a.n1) {
        j1 = 0;
        ++j2;
      }
      base = j1 * a.s1 + j2 * a.s2;
    }
  }
}

inline bool unit_run(const int64_t* o, int64_t n) {
  for (int64_t t = 1; t < n; ++t)
    if (o[t] != o[0] + t) return false;
  return true;
}

#if defined(__AVX512F__)
// In-register transpose: r[i][j] -> r[j][i] for a 16 x 16 float block.
inline void transpose16x16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + j + 4], 0x88);
      t[8 * i + j + 4] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + j + 4], 0xdd);
    }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
  }
}
#endif

// A block rows [mc] x cols [kc] -> MR-row micro-panels, k-major, zero rows past mc.
template <typename T>
void pack_a(const T* base, const int64_t* ro, const int64_t* co, int64_t mc, int64_t kc, T* dst) {
  constexpr int MR = GemmTile<T>::MR;
  for (int64_t i0 = 0; i0 < mc; i0 += MR, dst += kc * MR) {
    const int64_t mv = std::min<int64_t>(MR, mc - i0);
    if (mv == MR && unit_run(ro + i0, MR)) {  // column of A contiguous: copy MR at a time
      const T* src = base + ro[i0];
      for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * MR, src + co[k], MR * sizeof(T));
      continue;
    }
    auto gather = [&](int64_t kb, int64_t ke) {
      for (int64_t k = kb; k < ke; ++k) {
        for (int64_t t = 0; t < mv; ++t) dst[k * MR + t] = base[ro[i0 + t] + co[k]];
        for (int64_t t = mv; t < MR; ++t) dst[k * MR + t] = T(0);
      }
    };
    int64_t k0 = 0;
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<T, float> && MR == 8) {
      // rows of A contiguous along k (16 at a time): 16 x 16 transposes, upper 8 rows zero
      for (; k0 + 16 <= kc; k0 += 16) {
        if (!unit_run(co + k0, 16)) {
          gather(k0, k0 + 16);
          continue;
        }
        __m512 r[16];
        for (int i = 0; i < 16; ++i)
          r[i] = i < mv ? _mm512_loadu_ps(base + ro[i0 + i] + co[k0]) : _mm512_setzero_ps();
        transpose16x16(r);
        for (int i = 0; i < 16; ++i) _mm256_store_ps(dst + (k0 + i) * MR, _mm512_castps512_ps256(r[i]));
      }
    }
#endif
    gather(k0, kc);
  }
}

// B block rows [kc] x cols [nc] -> NR-column micro-panels, k-major, zero columns past nc.
template <typename T>
void pack_b(const T* base, const int64_t* ro, const int64_t* co, int64_t kc, int64_t nc, T* dst) {
  constexpr int NR = GemmTile<T>::NR;
  const int64_t full = nc / NR * NR;
  if (unit_run(co, full)) {
    // Rows of B contiguous over the full panels: walk each row once (k outer), so reads stream
    // instead of striding a whole row apart for every panel.
    for (int64_t k = 0; k < kc; ++k) {
      const T* src = base + ro[k] + co[0];
      for (int64_t j0 = 0; j0 < full; j0 += NR)
        std::memcpy(dst + j0 * kc + k * NR, src + j0, NR * sizeof(T));
    }
    if (full == nc) return;
    dst += full * kc;
    co += full;
    nc -= full;
  }
  for (int64_t j0 = 0; j0 < nc; j0 += NR, dst += kc * NR) {
    const int64_t nv = std::min<int64_t>(NR, nc - j0);
    if (nv == NR && unit_run(co + j0, NR)) {  // row of B contiguous: vector copies
      const T* src = base + co[j0];
      for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * NR, src + ro[k], NR * sizeof(T));
      continue;
    }
    auto gather = [&](int64_t kb, int64_t ke) {
      for (int64_t k = kb; k < ke; ++k) {
        const T* src = base + ro[k];
        for (int64_t t = 0; t < nv; ++t) dst[k * NR + t] = src[co[j0 + t]];
        for (int64_t t = nv; t < NR; ++t) dst[k * NR + t] = T(0);
      }
    };
    int64_t k0 = 0;
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<T, float>) {
      // columns of B contiguous along k (a transposed operand), 16 at a time: 16 x 16 transposes
      for (; k0 + 16 <= kc; k0 += 16) {
        if (!unit_run(ro + k0, 16)) {
          gather(k0, k0 + 16);
          continue;
        }
        for (int t0 = 0; t0 < NR; t0 += 16) {
          __m512 r[16];
          for (int i = 0; i < 16; ++i)
            r[i] = t0 + i < nv ? _mm512_loadu_ps(base + co[j0 + t0 + i] + ro[k0]) : _mm512_setzero_ps();
          transpose16x16(r);
          for (int i = 0; i < 16; ++i) _mm512_store_ps(dst + (k0 + i) * NR + t0, r[i]);
        }
      }
    }
#endif
    gather(k0, kc);
  }
}

// C[mv x nv] = alpha * Ct + beta * C (+ bias[i]); beta == 0 never reads C.
template <typename T>
inline void write_back(const T* Ct, T* base, const int64_t* ro, const int64_t* co, int64_t mv,
                       int64_t nv, T alpha, T beta, const T* bias) {
  constexpr int NR = GemmTile<T>::NR;
  const bool unit = unit_run(co, nv);
  for (int64_t t = 0; t < mv; ++t) {
    const T* ct = Ct + t * NR;
    const T bv = bias ? bias[t] : T(0);
    if (unit) {
      T* c = base + ro[t] + co[0];
      if (beta == T(0)) {
#pragma omp simd
        for (int64_t u = 0; u < nv; ++u) c[u] = alpha * ct[u] + bv;
      } else {
#pragma omp simd
        for (int64_t u = 0; u < nv; ++u) c[u] = alpha * ct[u] + beta * c[u] + bv;
      }
    } else {
      T* c = base + ro[t];
      if (beta == T(0)) {
        for (int64_t u = 0; u < nv; ++u) c[co[u]] = alpha * ct[u] + bv;
      } else {
        for (int64_t u = 0; u < nv; ++u) c[co[u]] = alpha * ct[u] + beta * c[co[u]] + bv;
      }
    }
  }
}

}  // namespace

template <typename T>
void gemm_batched(int64_t batch, int64_t M, int64_t N, int64_t K, T alpha, MatView<const T> A,
                  int64_t stride_a, MatView<const T> B, int64_t stride_b, T beta, MatView<T> C,
                  int64_t stride_c, const T* bias, int64_t stride_bias) {
  using G = GemmTile<T>;
  constexpr int MR = G::MR, NR = G::NR;
  if (batch <= 0 || M <= 0 || N <= 0) return;
  const int nt = num_threads();

  // Tile sizes: the cache blocks, cut down until there are enough tiles for the threads.
  auto round_up = [](int64_t v, int64_t m) { return (v + m - 1) / m * m; };
  auto balanced = [&](int64_t n, int64_t block, int64_t unit) {  // equal blocks of at most `block`
    const int64_t count = (n + block - 1) / block;
    return round_up((n + count - 1) / count, unit);
  };
  int64_t mc = balanced(M, G::MC, MR);
  int64_t nc = balanced(N, G::NC, NR);
  auto tiles = [&] { return batch * ((M + mc - 1) / mc) * ((N + nc - 1) / nc); };
  while (tiles() < 2 * nt && nc > 2 * NR) nc = round_up(nc / 2, NR);
  while (tiles() < nt && mc > MR) mc = round_up(mc / 2, MR);
  const int64_t m_tiles = (M + mc - 1) / mc, n_tiles = (N + nc - 1) / nc;
  const int64_t n_total = batch * m_tiles * n_tiles;
  const int64_t kc_max = std::max<int64_t>(1, std::min<int64_t>(G::KC, K));

#pragma omp parallel num_threads(nt) if (nt > 1 && n_total > 1)
  {
    T* a_pack = static_cast<T*>(thread_scratch(0, sizeof(T) * round_up(mc, MR) * kc_max));
    T* b_pack = static_cast<T*>(thread_scratch(1, sizeof(T) * round_up(nc, NR) * kc_max));
    int64_t* offs = static_cast<int64_t*>(thread_scratch(2, sizeof(int64_t) * 2 * (mc + nc + kc_max)));
    T* c_tile = static_cast<T*>(thread_scratch(3, sizeof(T) * MR * NR));
    int64_t* a_ro = offs;            // [mc]
    int64_t* a_co = a_ro + mc;       // [kc]
    int64_t* b_ro = a_co + kc_max;   // [kc]
    int64_t* b_co = b_ro + kc_max;   // [nc]
    int64_t* c_ro = b_co + nc;       // [mc]
    int64_t* c_co = c_ro + mc;       // [nc]

#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < n_total; ++tile) {
      // (b, it, jt): a C tile of batch entry b, rows it*mc.., columns jt*nc..
      const int64_t b = tile / (m_tiles * n_tiles);
      const int64_t it = (tile / n_tiles) % m_tiles;
      const int64_t jt = tile % n_tiles;
      const int64_t i0 = it * mc, j0 = jt * nc;
      const int64_t mcur = std::min(mc, M - i0), ncur = std::min(nc, N - j0);
      const T* a_base = A.data + b * stride_a;
      const T* b_base = B.data + b * stride_b;
      T* c_base = C.data + b * stride_c;
      const T* bias_b = bias ? bias + b * stride_bias + i0 : nullptr;
      axis_offsets(A.rows, i0, mcur, a_ro);
      axis_offsets(B.cols, j0, ncur, b_co);
      axis_offsets(C.rows, i0, mcur, c_ro);
      axis_offsets(C.cols, j0, ncur, c_co);

      if (K <= 0) {  // C = beta * C + bias
        for (int64_t t = 0; t < mcur; ++t)
          for (int64_t u = 0; u < ncur; ++u) {
            T& c = c_base[c_ro[t] + c_co[u]];
            c = (beta == T(0) ? T(0) : beta * c) + (bias_b ? bias_b[t] : T(0));
          }
        continue;
      }
      for (int64_t p0 = 0; p0 < K; p0 += G::KC) {
        const int64_t kc = std::min<int64_t>(G::KC, K - p0);
        axis_offsets(A.cols, p0, kc, a_co);
        axis_offsets(B.rows, p0, kc, b_ro);
        pack_b(b_base, b_ro, b_co, kc, ncur, b_pack);
        pack_a(a_base, a_ro, a_co, mcur, kc, a_pack);
        const bool first = p0 == 0;
        const T beta_eff = first ? beta : T(1);
        for (int64_t jr = 0; jr < ncur; jr += NR) {
          const int64_t nv = std::min<int64_t>(NR, ncur - jr);
          for (int64_t ir = 0; ir < mcur; ir += MR) {
            const int64_t mv = std::min<int64_t>(MR, mcur - ir);
            micro_kernel<T>(kc, a_pack + ir * kc, b_pack + jr * kc, c_tile);
            write_back<T>(c_tile, c_base, c_ro + ir, c_co + jr, mv, nv, alpha, beta_eff,
                          first && bias_b ? bias_b + ir : nullptr);
          }
        }
      }
    }
  }
}

template void gemm_batched<float>(int64_t, int64_t, int64_t, int64_t, float, MatView<const float>,
                                  int64_t, MatView<const float>, int64_t, float, MatView<float>,
                                  int64_t, const float*, int64_t);
template void gemm_batched<double>(int64_t, int64_t, int64_t, int64_t, double, MatView<const double>,
                                   int64_t, MatView<const double>, int64_t, double, MatView<double>,
                                   int64_t, const double*, int64_t);

}  // namespace convkit::cpu
