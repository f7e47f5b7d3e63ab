// conv2d grad bias: db[k] = sum over n, p, q of dy[n, k, p, q]. One thread owns each db[k] and
// sums in a fixed order (deterministic): each block of kBlock elements of a plane is a vectorised
// reduction in T, and the blocks are added in double, so a float32 sum over millions of pixels
// keeps its accuracy (each vector lane adds at most kBlock / lanes terms in float).
#include <omp.h>

#include "cpu/conv.h"
#include "cpu/threads.h"

namespace convkit::cpu {

constexpr int64_t kBlock = 4096;

template <typename T>
void conv2d_bwd_bias(const ConvParams& p, const T* dy, T* db) {
  const int64_t K = p.K, PQ = p.P * p.Q, N = p.N;
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (N * K * PQ > 32768)
  for (int64_t k = 0; k < K; ++k) {
    double total = 0.0;
    for (int64_t n = 0; n < N; ++n) {
      const T* plane = dy + (n * K + k) * PQ;
      for (int64_t i0 = 0; i0 < PQ; i0 += kBlock) {
        const int64_t i1 = i0 + kBlock < PQ ? i0 + kBlock : PQ;
        T sum = T(0);
#pragma omp simd reduction(+ : sum)
        for (int64_t i = i0; i < i1; ++i) sum += plane[i];
        total += static_cast<double>(sum);
      }
    }
    db[k] = static_cast<T>(total);
  }
}

template void conv2d_bwd_bias<float>(const ConvParams&, const float*, float*);
template void conv2d_bwd_bias<double>(const ConvParams&, const double*, double*);

}  // namespace convkit::cpu
