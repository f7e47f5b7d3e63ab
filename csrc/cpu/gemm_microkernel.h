// The CPU GEMM's inner layers (Goto/BLIS structure), used by gemm.cpp's gemm_batched: the MR x NR
// register tile, the micro-kernels that accumulate A micro-panels times B micro-panels in
// registers (AVX-512 intrinsics: 8 x 32 floats, 8 x 16 doubles, a 16-wide variant for narrow
// last panels, tiles whose C columns are contiguous written from the accumulators straight into
// C, masked at the edges; else GCC vector extensions, ymm on AVX2, xmm otherwise), the packing of
// A and B blocks into micro-panels (transposes and strided views resolved here, with 16 x 16
// register transposes on AVX-512), and the write-back of a scratch tile into C.
#pragma once
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu/gemm.h"
#include "cpu/simd.h"

namespace convkit::cpu::gemm_kernel {

using simd::kVecBytes;
using simd::Vec;

#if defined(__AVX512F__)
constexpr bool kDirectOut = true;  // the micro-kernel writes full tiles into C itself
constexpr int kMR = 8;  // 8 x 2 zmm accumulators; 8 divides the usual channel counts (12 wasted
                        // a third of the rows at M = 16, a ninth at 64)
#elif defined(__AVX__)
constexpr bool kDirectOut = false;
constexpr int kMR = 6;  // 6 x 2 ymm accumulators of 16 registers
#else
constexpr bool kDirectOut = false;
constexpr int kMR = 6;
#endif

// The register tile per dtype: MR x NR, NR = NV vectors.
template <typename T>
struct GemmTile {
  static constexpr int VL = kVecBytes / int(sizeof(T));
  static constexpr int NV = 2;
  static constexpr int NR = VL * NV;
  static constexpr int MR = kMR;
};

// Where a micro-tile goes straight from the accumulators: rows c + ro[i] for i < mv, nv <= NR
// contiguous columns each, C = alpha * acc + beta * C (+ bias[i]); beta == 0 never reads C.
template <typename T>
struct TileOut {
  T* c;
  const int64_t* ro;
  T alpha, beta;
  const T* bias;  // or null
  int mv, nv;
};

// acc[MR][NV] = A panel (kc x MR, k-major) x B panel (kc x NR, k-major); the result goes to Ct
// (MR x NR) for write_back, or with out (kDirectOut kernels only) straight into C.
template <typename T, int NVK = GemmTile<T>::NV>
__attribute__((noinline)) void micro_kernel(int64_t kc, const T* __restrict A,
                                            const T* __restrict B, T* __restrict Ct,
                                            const TileOut<T>* out) {
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
// vector every k step; intrinsics keep all MR x NVK accumulators and the NVK B vectors live.
// NVK = 1 is the narrow kernel for a last panel of at most VL columns (N = 392 = 12 x 32 + 8
// would otherwise spend a whole 32-wide tile on 8 columns). Partial tiles (mv < MR rows,
// nv < NVK * VL columns) are written with masks; the sums per element are the same FMAs in the
// same order whichever kernel and output path computes them.
template <typename T>
struct Z;
template <>
struct Z<float> {
  using V = __m512;
  using Mask = __mmask16;
  static V load(const float* p) { return _mm512_load_ps(p); }
  static V loadu(const float* p) { return _mm512_loadu_ps(p); }
  static V maskz_loadu(Mask m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  static V set1(float v) { return _mm512_set1_ps(v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* p, V v) { _mm512_store_ps(p, v); }
  static void storeu(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void mask_storeu(float* p, Mask m, V v) { _mm512_mask_storeu_ps(p, m, v); }
  static V zero() { return _mm512_setzero_ps(); }
  static Mask mask(int n) { return Mask((1u << n) - 1u); }
};
template <>
struct Z<double> {
  using V = __m512d;
  using Mask = __mmask8;
  static V load(const double* p) { return _mm512_load_pd(p); }
  static V loadu(const double* p) { return _mm512_loadu_pd(p); }
  static V maskz_loadu(Mask m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
  static V set1(double v) { return _mm512_set1_pd(v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static void store(double* p, V v) { _mm512_store_pd(p, v); }
  static void storeu(double* p, V v) { _mm512_storeu_pd(p, v); }
  static void mask_storeu(double* p, Mask m, V v) { _mm512_mask_storeu_pd(p, m, v); }
  static V zero() { return _mm512_setzero_pd(); }
  static Mask mask(int n) { return Mask((1u << n) - 1u); }
};

template <typename T, int NVK>
__attribute__((noinline)) void micro_kernel_512(int64_t kc, const T* __restrict A,
                                                const T* __restrict B, T* __restrict Ct,
                                                const TileOut<T>* out) {
  using S = Z<T>;
  using V = typename S::V;
  constexpr int MR = GemmTile<T>::MR, VL = GemmTile<T>::VL, NR = GemmTile<T>::NR;
  V c[MR][NVK];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NVK; ++v) c[i][v] = S::zero();
  for (int64_t k = 0; k < kc; ++k) {
    V b[NVK];
#pragma GCC unroll 4
    for (int v = 0; v < NVK; ++v) b[v] = S::load(B + v * VL);
    __builtin_prefetch(B + 8 * NR);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const V a = S::set1(A[i]);
#pragma GCC unroll 4
      for (int v = 0; v < NVK; ++v) c[i][v] = S::fma(a, b[v], c[i][v]);
    }
    A += MR;
    B += NR;
  }
  if (!out) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NVK; ++v) S::store(Ct + i * NR + v * VL, c[i][v]);
    return;
  }
  // C = alpha * acc + beta * C + bias, as write_back computes it
  const V alpha = S::set1(out->alpha), beta = S::set1(out->beta);
  const bool read_c = out->beta != T(0);
  if (out->mv == MR && out->nv == NVK * VL) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      T* row = out->c + out->ro[i];
      const V bias = S::set1(out->bias ? out->bias[i] : T(0));
#pragma GCC unroll 4
      for (int v = 0; v < NVK; ++v) {
        const V cb = read_c ? S::fma(beta, S::loadu(row + v * VL), bias) : bias;
        S::storeu(row + v * VL, S::fma(alpha, c[i][v], cb));
      }
    }
    return;
  }
  typename S::Mask m[NVK];
#pragma GCC unroll 4
  for (int v = 0; v < NVK; ++v) m[v] = S::mask(std::max(0, std::min(VL, out->nv - v * VL)));
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= out->mv) break;
    T* row = out->c + out->ro[i];
    const V bias = S::set1(out->bias ? out->bias[i] : T(0));
#pragma GCC unroll 4
    for (int v = 0; v < NVK; ++v) {
      const V cb = read_c ? S::fma(beta, S::maskz_loadu(m[v], row + v * VL), bias) : bias;
      S::mask_storeu(row + v * VL, m[v], S::fma(alpha, c[i][v], cb));
    }
  }
}
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

// A block rows [mc] x cols [kc] -> MR-row micro-panels, k-major, zero rows past mc; panel
// p starts at dst + p * panel_stride (>= kc * MR).
template <typename T>
void pack_a(const T* base, const int64_t* ro, const int64_t* co, int64_t mc, int64_t kc, T* dst,
            int64_t panel_stride) {
  constexpr int MR = GemmTile<T>::MR;
  for (int64_t i0 = 0; i0 < mc; i0 += MR, dst += panel_stride) {
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
    if (unit_run(co + j0, nv)) {  // row of B contiguous: vector copies (zeros past nv)
      const T* src = base + co[j0];
      if (nv == NR) {
        for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * NR, src + ro[k], NR * sizeof(T));
        continue;
      }
#if defined(__AVX512F__)
      using S = Z<T>;
      constexpr int VL = GemmTile<T>::VL;
      typename S::Mask m[NR / VL];
      for (int v = 0; v < NR / VL; ++v) m[v] = S::mask(int(std::max<int64_t>(0, std::min<int64_t>(VL, nv - v * VL))));
      for (int64_t k = 0; k < kc; ++k)
        for (int v = 0; v < NR / VL; ++v) S::store(dst + k * NR + v * VL, S::maskz_loadu(m[v], src + ro[k] + v * VL));
#else
      for (int64_t k = 0; k < kc; ++k) {
        std::memcpy(dst + k * NR, src + ro[k], nv * sizeof(T));
        std::fill(dst + k * NR + nv, dst + (k + 1) * NR, T(0));
      }
#endif
      continue;
    }
    {  // a few unit-stride runs (a panel of a segmented axis crossing image boundaries, e.g.
       // 7x7 planes folded into N): a copy per run and row instead of one gather per element
      int64_t run[NR + 1];
      int nruns = 0;
      for (int64_t u = 0; u < nv && nruns <= 4;) {
        run[nruns++] = u;
        int64_t v = u + 1;
        while (v < nv && co[j0 + v] == co[j0 + v - 1] + 1) ++v;
        u = v;
      }
      if (nruns <= 4) {
        run[nruns] = nv;
        for (int64_t k = 0; k < kc; ++k) {
          const T* src = base + ro[k];
          T* d = dst + k * NR;
          for (int r = 0; r < nruns; ++r) std::memcpy(d + run[r], src + co[j0 + run[r]], (run[r + 1] - run[r]) * sizeof(T));
          std::fill(d + nv, d + NR, T(0));
        }
        continue;
      }
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

// C[mv x nv] = alpha * Ct + beta * C (+ bias[i]); beta == 0 never reads C. The columns are
// cut into unit-stride runs (a panel of a segmented axis crossing an image boundary is two
// runs), each written with vector loops; many short runs go element by element.
template <typename T>
inline void write_back(const T* Ct, T* base, const int64_t* ro, const int64_t* co, int64_t mv,
                       int64_t nv, T alpha, T beta, const T* bias) {
  constexpr int NR = GemmTile<T>::NR;
  int64_t run[NR + 1];
  int nruns = 0;
  for (int64_t u = 0; u < nv;) {
    run[nruns++] = u;
    int64_t v = u + 1;
    while (v < nv && co[v] == co[v - 1] + 1) ++v;
    u = v;
  }
  run[nruns] = nv;
  const bool runs = nruns <= 4;
  for (int64_t t = 0; t < mv; ++t) {
    const T* ct = Ct + t * NR;
    const T bv = bias ? bias[t] : T(0);
    if (runs) {
      for (int r = 0; r < nruns; ++r) {
        const int64_t u0 = run[r], len = run[r + 1] - u0;
        T* c = base + ro[t] + co[u0];
        const T* src = ct + u0;
        if (beta == T(0)) {
#pragma omp simd
          for (int64_t u = 0; u < len; ++u) c[u] = alpha * src[u] + bv;
        } else {
#pragma omp simd
          for (int64_t u = 0; u < len; ++u) c[u] = alpha * src[u] + beta * c[u] + bv;
        }
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


// Runs one micro-tile: straight into C where the panel's columns are contiguous (kDirectOut),
// else through the MR x NR scratch tile and write_back. nv <= VL takes the narrow kernel.
template <typename T>
inline void run_micro_tile(int64_t kc, const T* a, const T* b, T* c_tile, bool direct,
                           const TileOut<T>& out, const int64_t* c_co) {
#if defined(__AVX512F__)
  constexpr int VL = GemmTile<T>::VL;
  const bool narrow = out.nv <= VL;
  if (direct) {
    if (narrow) micro_kernel_512<T, 1>(kc, a, b, c_tile, &out);
    else micro_kernel_512<T, 2>(kc, a, b, c_tile, &out);
    return;
  }
  if (narrow) micro_kernel_512<T, 1>(kc, a, b, c_tile, nullptr);
  else micro_kernel_512<T, 2>(kc, a, b, c_tile, nullptr);
#else
  (void)direct;
  micro_kernel<T>(kc, a, b, c_tile, nullptr);
#endif
  write_back<T>(c_tile, out.c, out.ro, c_co, out.mv, out.nv, out.alpha, out.beta, out.bias);
}

}  // namespace convkit::cpu::gemm_kernel
