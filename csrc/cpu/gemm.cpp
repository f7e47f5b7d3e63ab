// Blocked, register-tiled GEMM of our own (Goto/BLIS structure): per C tile, K is cut into
// balanced KC slices; A [mc x kc] is packed into MR-row micro-panels (once per call and shared
// by all tiles when several N tiles read it) and B a few NR-column micro-panels at a time right
// before use (transposes and strided views resolved in the packing, with 16 x 16 register
// transposes on AVX-512), and an MR x NR micro-kernel accumulates in registers: AVX-512
// intrinsics (8 x 32 floats, 8 x 16 doubles, a 16-wide variant for narrow last panels; tiles
// whose C columns are contiguous go from the accumulators straight into C, masked at the
// edges), else GCC vector extensions (ymm on AVX2, xmm otherwise). Few tiles and a long K (grad
// weight) split K into chunks added in a fixed order. kc, mc and nc are cut from the caches at
// run time. See gemm_batched for the structure.
#include "cpu/gemm.h"

#include <omp.h>
#include <unistd.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <new>
#include <type_traits>
#include <vector>

#include "cpu/simd.h"
#include "cpu/threads.h"

namespace convkit::cpu {

namespace {

// Bytes of one cache from /sys/devices/system/cpu/cpu0/cache/index<i> ("48K", "1024K", "32M"),
// with the number of CPUs sharing it; 0 when absent.
int64_t sysfs_cache(int level, int64_t* sharing) {
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream lv(dir + "level"), ty(dir + "type"), sz(dir + "size"), sh(dir + "shared_cpu_list");
    int l = 0;
    std::string type, size, list;
    if (!(lv >> l) || !(ty >> type) || !(sz >> size)) return 0;
    if (l != level || type == "Instruction") continue;
    int64_t v = std::atoll(size.c_str());
    if (size.find('K') != std::string::npos) v <<= 10;
    if (size.find('M') != std::string::npos) v <<= 20;
    if (sharing && (sh >> list)) {  // "0-31" or "0,1" or "0-3,8-11": count CPUs
      int64_t n = 0;
      std::stringstream ss(list);
      std::string part;
      while (std::getline(ss, part, ',')) {
        const auto dash = part.find('-');
        n += dash == std::string::npos ? 1 : std::atoll(part.c_str() + dash + 1) - std::atoll(part.c_str()) + 1;
      }
      *sharing = std::max<int64_t>(1, n);
    }
    return v;
  }
  return 0;
}

}  // namespace

CacheSizes cache_sizes() {
  static const CacheSizes sizes = [] {
    CacheSizes c;
    int64_t sharing = 0;
    // sysfs first (a VM's CPUID, which sysconf reads, may report the host's L3), then sysconf,
    // then typical sizes.
    c.l1d = sysfs_cache(1, nullptr);
    c.l2 = sysfs_cache(2, nullptr);
    c.l3 = sysfs_cache(3, &sharing);
#if defined(_SC_LEVEL1_DCACHE_SIZE)
    auto conf = [](int name) -> int64_t {
      const long v = sysconf(name);
      return v > 0 ? v : 0;
    };
    if (c.l1d <= 0) c.l1d = conf(_SC_LEVEL1_DCACHE_SIZE);
    if (c.l2 <= 0) c.l2 = conf(_SC_LEVEL2_CACHE_SIZE);
    if (c.l3 <= 0) c.l3 = conf(_SC_LEVEL3_CACHE_SIZE);
#endif
    if (c.l1d <= 0) c.l1d = 32 << 10;
    if (c.l2 <= 0) c.l2 = 512 << 10;
    if (c.l3 <= 0) c.l3 = 8 << 20;
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    c.l3_sharing = int(sharing > 0 ? sharing : std::max(1L, std::min(cpus, 8L)));
    return c;
  }();
  return sizes;
}

namespace {

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

// Cache blocks sized from this machine's caches (cache_sizes()), Goto/BLIS style: the B
// micro-panel kc x NR takes about half of L1 (it is reused by every A micro-panel of the block,
// while A streams through beside it); the A block mc x kc about half of L2 (reused by every B
// micro-panel); the B block kc x nc a per-core share of L3, read once per A block.
struct GemmBlocks {
  int64_t kc, mc, nc;
};
template <typename T>
GemmBlocks gemm_blocks() {
  static const GemmBlocks blocks = [] {
    using G = GemmTile<T>;
    const CacheSizes c = cache_sizes();
    auto env = [](const char* name, int64_t v) {  // CONVKIT_GEMM_KC/MC/NC: tuning overrides
      const char* s = std::getenv(name);
      return s && std::atoll(s) > 0 ? int64_t(std::atoll(s)) : v;
    };
    auto clamp_down = [](int64_t v, int64_t lo, int64_t hi, int64_t m) {
      return std::max(lo, std::min(hi, v) / m * m);
    };
    GemmBlocks b;
    b.kc = env("CONVKIT_GEMM_KC", clamp_down(c.l1d / 2 / (G::NR * int64_t(sizeof(T))), 64, 512, 16));
    b.mc = env("CONVKIT_GEMM_MC", clamp_down(c.l2 / 2 / (b.kc * int64_t(sizeof(T))), G::MR * 4, 2048, G::MR));
    const int64_t l3_share = c.l3 / std::max(1, c.l3_sharing);
    b.nc = env("CONVKIT_GEMM_NC", clamp_down(l3_share / 2 / (b.kc * int64_t(sizeof(T))), G::NR * 4, 8192, G::NR));
    return b;
  }();
  return blocks;
}

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

// Packed A shared by every tile of a call (all batch entries, K slices and MR panels) when it
// is at most this big and half the L3 (where it stays between the tiles that read it); beyond
// it each tile packs its own A block per K slice (a large GEMM, whose wide N tiles make that
// repacking cheap).
constexpr int64_t kSharedPackBytes = int64_t(32) << 20;
// B micro-panels packed together, right before their micro-kernels: rows of 8 x NR columns
// read contiguously (the hardware prefetchers keep up; one panel a row left the loads waiting
// on L3), 8 x kc x NR elements (192 KB in float at kc 192) staying in L2 beside the A block.
// (4 and 16 measured a few percent slower here, 1 up to 25% at M = 48, a whole B block
// of nc columns, which spills to L3, as much at small M.)
constexpr int kBGroup = 8;
// Split-K partial sums (grad weight: small M x N, long K) take at most this much.
constexpr int64_t kSplitKBytes = int64_t(16) << 20;

}  // namespace

// Structure: K is cut into balanced slices of at most kc; C into (batch, M block, N block)
// tiles (the cache blocks, cut further until there are about four tiles a thread), and, when
// even that leaves too few tiles for the threads and K is long (grad weight), K into chunks
// whose partial sums go to a buffer and are added in chunk order at the end. A is packed once
// per call into MR-row panels per K slice, shared by all tiles, when more than one tile reads
// each A block and it is not huge (else per tile, per slice). Within a tile, per K slice, B is
// packed kBGroup NR-column micro-panels at a time right before their micro-kernels run (each
// panel stays in L1 while the tile's A panels stream from L2 past it; the B block is never
// packed whole, which sent it to L3 and back). Every C element is summed by one thread in a
// fixed order for a given thread count (the tiling depends only on the shapes and the count).
template <typename T>
void gemm_batched(int64_t batch, int64_t M, int64_t N, int64_t K, T alpha, MatView<const T> A,
                  int64_t stride_a, MatView<const T> B, int64_t stride_b, T beta, MatView<T> C,
                  int64_t stride_c, const T* bias, int64_t stride_bias) {
  using G = GemmTile<T>;
  constexpr int MR = G::MR, NR = G::NR;
  if (batch <= 0 || M <= 0 || N <= 0) return;
  auto cdiv = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  auto round_up = [&](int64_t v, int64_t m) { return cdiv(v, m) * m; };

  if (K <= 0) {  // C = beta * C + bias
    std::vector<int64_t> ro(M), co(N);
    axis_offsets(C.rows, 0, M, ro.data());
    axis_offsets(C.cols, 0, N, co.data());
    for (int64_t b = 0; b < batch; ++b) {
      T* c_base = C.data + b * stride_c;
      const T* bias_b = bias ? bias + b * stride_bias : nullptr;
      for (int64_t t = 0; t < M; ++t)
        for (int64_t u = 0; u < N; ++u) {
          T& c = c_base[ro[t] + co[u]];
          c = (beta == T(0) ? T(0) : beta * c) + (bias_b ? bias_b[t] : T(0));
        }
    }
    return;
  }

  const GemmBlocks blk = gemm_blocks<T>();
  int nt = num_threads();
  // Called inside a parallel region that cannot nest (winograd's per-thread GEMMs): one thread.
  if (nt > 1 && omp_get_active_level() >= omp_get_max_active_levels()) nt = 1;

  // K slices: balanced (K = 400 is 2 x 200, not 192 + 192 + 16), a multiple of 16 where the
  // cache block allows; panels of the shared packed A are kcp (a multiple of 16) deep apart.
  const int64_t slices0 = cdiv(K, blk.kc);
  const int64_t kc_step = std::min(round_up(cdiv(K, slices0), 16), std::max<int64_t>(blk.kc, 16));
  const int64_t nslices = cdiv(K, kc_step);
  const int64_t kcp = round_up(kc_step, 16);

  // Tile sizes: the cache blocks, cut down until there are enough tiles for the threads.
  auto balanced = [&](int64_t n, int64_t block, int64_t unit) {  // equal blocks of at most `block`
    const int64_t count = cdiv(n, block);
    return round_up(cdiv(n, count), unit);
  };
  int64_t mc = balanced(M, blk.mc, MR);
  int64_t nc = balanced(N, blk.nc, NR);
  auto tiles = [&] { return batch * cdiv(M, mc) * cdiv(N, nc); };
  const int64_t want_tiles = nt > 1 ? 4 * int64_t(nt) : 1;
  // Split K when the cache blocks give fewer than two tiles a thread and K is long: chunks of
  // at least two slices, enough for about four items a thread with the tiles.
  int64_t kchunks = 1;
  if (nt > 1 && tiles() < 2 * nt && nslices >= 4) {
    kchunks = std::min(cdiv(want_tiles, tiles()), nslices / 2);
    const int64_t per_chunk = batch * M * N * int64_t(sizeof(T));
    kchunks = std::max<int64_t>(1, std::min(kchunks, kSplitKBytes / std::max<int64_t>(1, per_chunk)));
  }
  // Then cut N (down to two panels a tile), then M (down to four panels): with A packed once
  // per call, a smaller tile costs little more than its B panels packed again per M tile.
  while (tiles() * kchunks < want_tiles && nc > 2 * NR) nc = round_up(nc / 2, NR);
  while (tiles() * kchunks < want_tiles && mc > 4 * MR) mc = round_up(mc / 2, MR);
  const int64_t m_tiles = cdiv(M, mc), n_tiles = cdiv(N, nc);
  const int64_t n_c_tiles = batch * m_tiles * n_tiles;
  const int64_t n_items = n_c_tiles * kchunks;

  // Shared packed A: [batch][slice][Mpad rows in MR panels][kcp], when several N tiles read
  // each A block. A block (b, slice, M tile) is packed by the first tile that needs it (a state
  // per block: 0 free, 1 being packed, 2 ready); a tile that finds it being packed packs a
  // private copy instead of waiting, so no thread ever waits on another (on a shared machine
  // the other may be preempted for a whole time slice) and there is no barrier.
  const int64_t Mpad = round_up(M, MR);
  const int64_t shared_elems = batch * nslices * Mpad * kcp;
  const int64_t shared_cap = std::min(kSharedPackBytes, std::max<int64_t>(cache_sizes().l3 / 2, int64_t(4) << 20));
  const bool shared_a = n_tiles > 1 && shared_elems * int64_t(sizeof(T)) <= shared_cap;
  const int64_t n_blocks = shared_a ? batch * nslices * m_tiles : 0;
  const int64_t partial_elems = kchunks > 1 ? kchunks * batch * M * N : 0;
  const int64_t n_counters = kchunks > 1 ? n_c_tiles : 0;  // chunks finished per C tile
  // The calling thread's slot 3 (only this call uses it): packed A, partial sums, flags
  const int64_t a_elems = round_up(shared_a ? shared_elems : 0, 16), p_elems = round_up(partial_elems, 16);
  T* shared = nullptr;
  int* flags = nullptr;
  if (shared_a || kchunks > 1) {
    shared = static_cast<T*>(thread_scratch(3, sizeof(T) * (a_elems + p_elems) + sizeof(int) * (n_blocks + n_counters),
                                            "gemm: shared packed A and split-K partial sums"));
    flags = reinterpret_cast<int*>(shared + a_elems + p_elems);
    std::memset(flags, 0, sizeof(int) * (n_blocks + n_counters));
  }
  T* a_shared = shared;
  T* partial = shared ? shared + a_elems : nullptr;
  int* a_state = flags;
  int* done = flags ? flags + n_blocks : nullptr;

  ParallelGuard guard;
#pragma omp parallel num_threads(nt) if (nt > 1 && n_items > 1)
  {
    // c_tile (MR x NR), then the offsets, then a flag per NR panel of the C block. A thread that
    // cannot have its scratch stops the region before any item runs without it.
    const std::size_t off_count = std::size_t(2 * mc + 2 * nc + 2 * kcp);
    char* scratch = nullptr;
    T* a_pack = nullptr;
    T* b_panel = nullptr;
    guard.run_quiet([&] {
      scratch = static_cast<char*>(thread_scratch(
          2, sizeof(T) * MR * NR + sizeof(int64_t) * off_count + std::size_t(nc / NR + 1), "gemm: offsets"));
      a_pack = static_cast<T*>(thread_scratch(0, sizeof(T) * round_up(mc, MR) * kcp, "gemm: packed A"));
      b_panel = static_cast<T*>(thread_scratch(1, sizeof(T) * NR * kcp * kBGroup, "gemm: packed B"));
    });
    T* c_tile = reinterpret_cast<T*>(scratch);
    int64_t* a_ro = reinterpret_cast<int64_t*>(scratch + sizeof(T) * MR * NR);  // [mc]
    int64_t* a_co = a_ro + mc;       // [kcp]
    int64_t* b_ro = a_co + kcp;      // [kcp]
    int64_t* b_co = b_ro + kcp;      // [nc]
    int64_t* c_ro = b_co + nc;       // [mc]
    int64_t* c_co = c_ro + mc;       // [nc]
    bool* c_unit = reinterpret_cast<bool*>(c_co + nc);

#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t item = 0; item < n_items; ++item) {
      if (guard.should_stop()) continue;
      // (b, it, jt, chunk): a C tile of batch entry b, rows it*mc.., columns jt*nc.., K chunk
      // (M tiles run fastest: threads starting together want different A blocks)
      const int64_t chunk = item % kchunks, tile = item / kchunks;
      const int64_t b = tile / (m_tiles * n_tiles);
      const int64_t jt = (tile / m_tiles) % n_tiles;
      const int64_t it = tile % m_tiles;
      const int64_t i0 = it * mc, j0 = jt * nc;
      const int64_t mcur = std::min(mc, M - i0), ncur = std::min(nc, N - j0);
      const int64_t s_begin = chunk * nslices / kchunks, s_end = (chunk + 1) * nslices / kchunks;
      const T* a_base = A.data + b * stride_a;
      const T* b_base = B.data + b * stride_b;
      axis_offsets(A.rows, i0, mcur, a_ro);
      axis_offsets(B.cols, j0, ncur, b_co);
      // The output: C itself, or this chunk's dense [M, N] partial sums (alpha 1, no bias)
      T* out_base;
      T out_alpha, out_beta;
      const T* bias_b;
      if (kchunks == 1) {
        out_base = C.data + b * stride_c;
        out_alpha = alpha;
        out_beta = beta;
        bias_b = bias ? bias + b * stride_bias + i0 : nullptr;
        axis_offsets(C.rows, i0, mcur, c_ro);
        axis_offsets(C.cols, j0, ncur, c_co);
      } else {
        out_base = partial + (chunk * batch + b) * M * N;
        out_alpha = T(1);
        out_beta = T(0);
        bias_b = nullptr;
        for (int64_t t = 0; t < mcur; ++t) c_ro[t] = (i0 + t) * N;
        for (int64_t u = 0; u < ncur; ++u) c_co[u] = j0 + u;
      }
      for (int64_t jr = 0; jr < ncur; jr += NR)  // C's columns of panel jr contiguous
        c_unit[jr / NR] = unit_run(c_co + jr, std::min<int64_t>(NR, ncur - jr));

      for (int64_t s = s_begin; s < s_end; ++s) {
        const int64_t p0 = s * kc_step, kc = std::min(kc_step, K - p0);
        axis_offsets(B.rows, p0, kc, b_ro);
        const T* ap = nullptr;
        if (shared_a) {
          T* dst = a_shared + ((b * nslices + s) * Mpad + i0) * kcp;
          int* st = a_state + (b * nslices + s) * m_tiles + it;
          int expect = 0;
          if (__atomic_load_n(st, __ATOMIC_ACQUIRE) == 2) {
            ap = dst;
          } else if (__atomic_compare_exchange_n(st, &expect, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            axis_offsets(A.cols, p0, kc, a_co);
            pack_a(a_base, a_ro, a_co, mcur, kc, dst, kcp * MR);
            __atomic_store_n(st, 2, __ATOMIC_RELEASE);
            ap = dst;
          } else if (expect == 2) {
            ap = dst;
          }
        }
        if (!ap) {  // no shared A, or its block is being packed by another thread right now
          axis_offsets(A.cols, p0, kc, a_co);
          pack_a(a_base, a_ro, a_co, mcur, kc, a_pack, kcp * MR);
          ap = a_pack;
        }
        const bool first = s == s_begin;
        const T beta_eff = first ? out_beta : T(1);
        for (int64_t jr = 0; jr < ncur; jr += NR) {
          const int64_t nv = std::min<int64_t>(NR, ncur - jr);
          const int64_t gi = (jr / NR) % kBGroup;
          if (gi == 0) pack_b(b_base, b_ro, b_co + jr, kc, std::min<int64_t>(kBGroup * NR, ncur - jr), b_panel);
          const T* bp = b_panel + gi * kc * NR;
          const bool direct = kDirectOut && c_unit[jr / NR];
          for (int64_t ir = 0; ir < mcur; ir += MR) {
            const int64_t mv = std::min<int64_t>(MR, mcur - ir);
            // C's rows of this micro-tile, first and last element: fetched for writing while the
            // micro-kernel runs (C blocks outgrow L2, and the output would wait on L3 each slice)
            for (int64_t t = 0; t < mv; ++t) {
              T* row = out_base + c_ro[ir + t];
              __builtin_prefetch(row + c_co[jr], 1);
              __builtin_prefetch(row + c_co[jr + nv - 1], 1);
            }
            const T* bias_t = first && bias_b ? bias_b + ir : nullptr;
            const TileOut<T> out{direct ? out_base + c_co[jr] : out_base, c_ro + ir, out_alpha,
                                 beta_eff, bias_t, int(mv), int(nv)};
            run_micro_tile<T>(kc, ap + (ir / MR) * kcp * MR, bp, c_tile, direct, out, c_co + jr);
          }
        }
      }

      // Split K: the thread finishing a C tile's last chunk adds the chunks up, in chunk order,
      // C = alpha * sum + beta * C + bias (no barrier: the others go on with their items).
      if (kchunks > 1 && __atomic_add_fetch(done + tile, 1, __ATOMIC_ACQ_REL) == kchunks) {
        T* c_base = C.data + b * stride_c;
        const T* bias_c = bias ? bias + b * stride_bias + i0 : nullptr;
        axis_offsets(C.rows, i0, mcur, c_ro);
        axis_offsets(C.cols, j0, ncur, c_co);
        const bool unit = unit_run(c_co, ncur);
        for (int64_t t = 0; t < mcur; ++t) {
          T* sum = partial + b * M * N + (i0 + t) * N + j0;
          for (int64_t ch = 1; ch < kchunks; ++ch) {
            const T* part = partial + (ch * batch + b) * M * N + (i0 + t) * N + j0;
#pragma omp simd
            for (int64_t u = 0; u < ncur; ++u) sum[u] += part[u];
          }
          const T bv = bias_c ? bias_c[t] : T(0);
          T* c = c_base + c_ro[t];
          if (unit) {
            c += c_co[0];
            if (beta == T(0)) {
#pragma omp simd
              for (int64_t u = 0; u < ncur; ++u) c[u] = alpha * sum[u] + bv;
            } else {
#pragma omp simd
              for (int64_t u = 0; u < ncur; ++u) c[u] = alpha * sum[u] + beta * c[u] + bv;
            }
          } else {
            for (int64_t u = 0; u < ncur; ++u)
              c[c_co[u]] = alpha * sum[u] + (beta == T(0) ? T(0) : beta * c[c_co[u]]) + bv;
          }
        }
      }
    }
  }
  guard.finish();
}

template <typename T>
GemmBlocking gemm_blocking() {
  const GemmBlocks b = gemm_blocks<T>();
  return {b.kc, b.mc, b.nc, GemmTile<T>::MR, GemmTile<T>::NR};
}
template GemmBlocking gemm_blocking<float>();
template GemmBlocking gemm_blocking<double>();

template void gemm_batched<float>(int64_t, int64_t, int64_t, int64_t, float, MatView<const float>,
                                  int64_t, MatView<const float>, int64_t, float, MatView<float>,
                                  int64_t, const float*, int64_t);
template void gemm_batched<double>(int64_t, int64_t, int64_t, int64_t, double, MatView<const double>,
                                   int64_t, MatView<const double>, int64_t, double, MatView<double>,
                                   int64_t, const double*, int64_t);

}  // namespace convkit::cpu
