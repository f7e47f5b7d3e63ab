// FMA peak of the vector unit: kAcc independent chains acc = acc * m + c per thread, each a
// register (AVX-512 zmm, AVX2 ymm, else GCC vector extensions), enough to cover the FMA latency
// on two pipes (Zen 4/5 and Intel: 4 cycles x 2 pipes = 8 in flight; 12 or 16 leave margin).
#include "cpu/peak.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "cpu/simd.h"
#include "cpu/threads.h"

namespace convkit::cpu {
namespace {

using simd::kVecBytes;
// 16 chains where there are 32 vector registers (AVX-512), 12 of 16 otherwise (m and c need two)
#if defined(__AVX512F__)
constexpr int kAcc = 16;
#else
constexpr int kAcc = 12;
#endif

// `iters` rounds of kAcc FMAs on vectors of T; returns a sum so nothing is dead code. The
// chains are named variables (an array of vectors stays in memory under GCC) and the empty asm
// pins each one to a register every round.
template <typename T>
__attribute__((noinline)) T fma_chains_kernel(long iters) {
  typedef T V __attribute__((vector_size(kVecBytes)));
  constexpr int VL = kVecBytes / int(sizeof(T));
  static_assert(kAcc == 12 || kAcc == 16, "twelve or sixteen named chains below");
  asm volatile("" ::: "memory");  // not a pure function: every call runs (no hoisting, no CSE)
  // m < 1 and c > 0: every chain converges to c / (1 - m), no overflow and no subnormals.
  V m, c;
  for (int l = 0; l < VL; ++l) {
    m[l] = T(0.999999);
    c[l] = T(1e-3);
  }
  V x0 = c, x1 = c * T(2), x2 = c * T(3), x3 = c * T(4), x4 = c * T(5), x5 = c * T(6),
    x6 = c * T(7), x7 = c * T(8), x8 = c * T(9), x9 = c * T(10), x10 = c * T(11),
    x11 = c * T(12), x12 = c * T(13), x13 = c * T(14), x14 = c * T(15), x15 = c * T(16);
#if defined(__x86_64__) || defined(__i386__)
#define CONVKIT_PIN4(a, b, d, e) asm("" : "+v"(a), "+v"(b), "+v"(d), "+v"(e));
#else
#define CONVKIT_PIN4(a, b, d, e)
#endif
#define CONVKIT_FMA4(a, b, d, e)                                        \
  a = a * m + c; b = b * m + c; d = d * m + c; e = e * m + c;           \
  CONVKIT_PIN4(a, b, d, e)
  for (long it = 0; it < iters; ++it) {
    CONVKIT_FMA4(x0, x1, x2, x3)
    CONVKIT_FMA4(x4, x5, x6, x7)
    CONVKIT_FMA4(x8, x9, x10, x11)
    if constexpr (kAcc == 16) {
      CONVKIT_FMA4(x12, x13, x14, x15)
    }
  }
#undef CONVKIT_FMA4
#undef CONVKIT_PIN4
  const V s = ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7)) + ((x8 + x9) + (x10 + x11)) +
              (kAcc == 16 ? (x12 + x13) + (x14 + x15) : V{});
  T r = 0;
  for (int l = 0; l < VL; ++l) r += s[l];
  return r;
}

}  // namespace

template <typename T>
double fma_peak_gflops(int threads, double seconds) {
  constexpr int VL = kVecBytes / int(sizeof(T));
  const int nt = threads > 0 ? threads : num_threads();
  const double flops_per_iter = 2.0 * kAcc * VL;
  // Calibrate one round to ~2 ms on one thread.
  long iters = 1 << 12;
  for (;;) {
    const double t0 = omp_get_wtime();
    volatile T sink = fma_chains_kernel<T>(iters);
    (void)sink;
    const double dt = omp_get_wtime() - t0;
    if (dt > 5e-4 || iters > (1L << 40)) {
      iters = std::max<long>(1, long(iters * 2e-3 / std::max(dt, 1e-9)));
      break;
    }
    iters *= 4;
  }
  // All threads run rounds side by side for `seconds`; each keeps its best round and the rates
  // add up. Per thread, not between barriers: on a shared machine another process preempting one
  // thread for a moment would otherwise spoil every round of all of them, while the cores still
  // run together (clock under full load) for nearly the whole time.
  std::vector<double> best(nt, 0.0);
  const double start = omp_get_wtime();
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
    int rounds = 0;
    double now = omp_get_wtime();
    do {
      const double t0 = now;
      volatile T sink = fma_chains_kernel<T>(iters);
      (void)sink;
      now = omp_get_wtime();
      best[t] = std::max(best[t], iters * flops_per_iter / (now - t0) / 1e9);
    } while (++rounds < 3 || now - start < seconds);
  }
  double sum = 0;
  for (double b : best) sum += b;
  return sum;
}

template double fma_peak_gflops<float>(int, double);
template double fma_peak_gflops<double>(int, double);

}  // namespace convkit::cpu
