// Blocked, register-tiled GEMM of our own (Goto/BLIS structure): per C tile, K is cut into
// KC slices; A [mc x kc] and B [kc x nc] are packed into MR-row / NR-column micro-panels
// (transposes and strided views resolved there, with 16 x 16 register transposes on AVX-512)
// and an MR x NR micro-kernel accumulates in registers: AVX-512 intrinsics (8 x 32 floats,
// 8 x 16 doubles; full tiles go from the accumulators straight into C), else GCC vector
// extensions (ymm on AVX2, xmm otherwise). kc, mc and nc are cut from the caches at run time.
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

#if defined(__AVX512F__)
constexpr bool kDirectOut = true;  // the micro-kernel writes full tiles into C itself
constexpr int kVecBytes = 64;
constexpr int kMR = 8;  // 8 x 2 zmm accumulators; 8 divides the usual channel counts (12 wasted
                        // a third of the rows at M = 16, a ninth at 64)
#elif defined(__AVX__)
constexpr bool kDirectOut = false;
constexpr int kVecBytes = 32;
constexpr int kMR = 6;  // 6 x 2 ymm accumulators of 16 registers
#else
constexpr bool kDirectOut = false;
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

// Where a full micro-tile goes straight from the accumulators: rows c + ro[i], NR contiguous
// columns each, C = alpha * acc + beta * C (+ bias[i]); beta == 0 never reads C.
template <typename T>
struct TileOut {
  T* c;
  const int64_t* ro;
  T alpha, beta;
  const T* bias;  // or null
};

// acc[MR][NV] = A panel (kc x MR, k-major) x B panel (kc x NR, k-major); the result goes to Ct
// (MR x NR) for write_back, or with out (kDirectOut kernels only) straight into C.
template <typename T>
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
// vector every k step; intrinsics keep all MR x NV accumulators and the NV B vectors live.
#define CONVKIT_MK512(T, V, LOAD, LOADU, SET1, FMA, STORE, STOREU, ZERO)                        \
  template <>                                                                                   \
  __attribute__((noinline)) void micro_kernel<T>(int64_t kc, const T* __restrict A,             \
                                                 const T* __restrict B, T* __restrict Ct,       \
                                                 const TileOut<T>* out) {                       \
    constexpr int MR = GemmTile<T>::MR, VL = GemmTile<T>::VL, NR = GemmTile<T>::NR;             \
    constexpr int NV = GemmTile<T>::NV;                                                         \
    V c[MR][NV];                                                                                \
    _Pragma("GCC unroll 16") for (int i = 0; i < MR; ++i)                                       \
      _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v) c[i][v] = ZERO();                    \
    for (int64_t k = 0; k < kc; ++k) {                                                          \
      V b[NV];                                                                                  \
      _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v) b[v] = LOAD(B + v * VL);             \
      __builtin_prefetch(B + 8 * NR);                                                           \
      _Pragma("GCC unroll 16") for (int i = 0; i < MR; ++i) {                                   \
        const V a = SET1(A[i]);                                                                 \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v) c[i][v] = FMA(a, b[v], c[i][v]);   \
      }                                                                                         \
      A += MR;                                                                                  \
      B += NR;                                                                                  \
    }                                                                                           \
    if (!out) {                                                                                 \
      _Pragma("GCC unroll 16") for (int i = 0; i < MR; ++i)                                     \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v) STORE(Ct + i * NR + v * VL, c[i][v]); \
      return;                                                                                   \
    }                                                                                           \
    /* C = alpha * acc + beta * C + bias, as write_back computes it */                          \
    const V alpha = SET1(out->alpha), beta = SET1(out->beta);                                   \
    const bool read_c = out->beta != T(0);                                                      \
    _Pragma("GCC unroll 16") for (int i = 0; i < MR; ++i) {                                     \
      T* row = out->c + out->ro[i];                                                             \
      const V bias = SET1(out->bias ? out->bias[i] : T(0));                                     \
      _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v) {                                    \
        const V cb = read_c ? FMA(beta, LOADU(row + v * VL), bias) : bias;                      \
        STOREU(row + v * VL, FMA(alpha, c[i][v], cb));                                          \
      }                                                                                         \
    }                                                                                           \
  }
CONVKIT_MK512(float, __m512, _mm512_load_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps,
              _mm512_store_ps, _mm512_storeu_ps, _mm512_setzero_ps)
CONVKIT_MK512(double, __m512d, _mm512_load_pd, _mm512_loadu_pd, _mm512_set1_pd, _mm512_fmadd_pd,
              _mm512_store_pd, _mm512_storeu_pd, _mm512_setzero_pd)
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
  const GemmBlocks blk = gemm_blocks<T>();
  const int nt = num_threads();

  // Tile sizes: the cache blocks, cut down until there are enough tiles for the threads.
  auto round_up = [](int64_t v, int64_t m) { return (v + m - 1) / m * m; };
  auto balanced = [&](int64_t n, int64_t block, int64_t unit) {  // equal blocks of at most `block`
    const int64_t count = (n + block - 1) / block;
    return round_up((n + count - 1) / count, unit);
  };
  int64_t mc = balanced(M, blk.mc, MR);
  int64_t nc = balanced(N, blk.nc, NR);
  auto tiles = [&] { return batch * ((M + mc - 1) / mc) * ((N + nc - 1) / nc); };
  // With several threads, four tiles a thread where N allows (the dynamic schedule then evens
  // out a thread that another process preempts, or a ragged last tile), at least one before
  // cutting M; one thread keeps whole blocks (each extra tile packs its A block again).
  const int64_t want_tiles = nt > 1 ? 4 * int64_t(nt) : 1;
  while (tiles() < want_tiles && nc > 2 * NR) nc = round_up(nc / 2, NR);
  while (tiles() < nt && mc > MR) mc = round_up(mc / 2, MR);
  const int64_t m_tiles = (M + mc - 1) / mc, n_tiles = (N + nc - 1) / nc;
  const int64_t n_total = batch * m_tiles * n_tiles;
  const int64_t kc_max = std::max<int64_t>(1, std::min<int64_t>(blk.kc, K));

#pragma omp parallel num_threads(nt) if (nt > 1 && n_total > 1)
  {
    T* a_pack = static_cast<T*>(thread_scratch(0, sizeof(T) * round_up(mc, MR) * kc_max));
    T* b_pack = static_cast<T*>(thread_scratch(1, sizeof(T) * round_up(nc, NR) * kc_max));
    int64_t* offs = static_cast<int64_t*>(thread_scratch(2, sizeof(int64_t) * 2 * (mc + nc + kc_max)));
    // c_tile: one MR x NR micro-tile, then a flag per NR panel of the C block (columns unit-stride)
    T* c_tile = static_cast<T*>(thread_scratch(3, sizeof(T) * MR * NR + (nc + NR - 1) / NR));
    bool* c_unit = reinterpret_cast<bool*>(c_tile + MR * NR);
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
      for (int64_t jr = 0; jr < ncur; jr += NR)  // C's columns of panel jr contiguous
        c_unit[jr / NR] = unit_run(c_co + jr, std::min<int64_t>(NR, ncur - jr));

      if (K <= 0) {  // C = beta * C + bias
        for (int64_t t = 0; t < mcur; ++t)
          for (int64_t u = 0; u < ncur; ++u) {
            T& c = c_base[c_ro[t] + c_co[u]];
            c = (beta == T(0) ? T(0) : beta * c) + (bias_b ? bias_b[t] : T(0));
          }
        continue;
      }
      for (int64_t p0 = 0; p0 < K; p0 += blk.kc) {
        const int64_t kc = std::min<int64_t>(blk.kc, K - p0);
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
            // C's rows of this micro-tile, first and last element: fetched for writing while the
            // micro-kernel runs (C blocks outgrow L2, and write_back would wait on L3 each slice)
            for (int64_t t = 0; t < mv; ++t) {
              T* row = c_base + c_ro[ir + t];
              __builtin_prefetch(row + c_co[jr], 1);
              __builtin_prefetch(row + c_co[jr + nv - 1], 1);
            }
            const T* bias_t = first && bias_b ? bias_b + ir : nullptr;
            if (kDirectOut && mv == MR && nv == NR && c_unit[jr / NR]) {
              const TileOut<T> out{c_base + c_co[jr], c_ro + ir, alpha, beta_eff, bias_t};
              micro_kernel<T>(kc, a_pack + ir * kc, b_pack + jr * kc, c_tile, &out);
            } else {
              micro_kernel<T>(kc, a_pack + ir * kc, b_pack + jr * kc, c_tile, nullptr);
              write_back<T>(c_tile, c_base, c_ro + ir, c_co + jr, mv, nv, alpha, beta_eff, bias_t);
            }
          }
        }
      }
    }
  }
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
