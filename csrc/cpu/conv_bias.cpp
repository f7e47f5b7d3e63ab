// conv2d grad bias: db[k] = sum over n, p, q of dy[n, k, p, q]. One thread owns each db[k] and
// sums in a fixed order (deterministic); the P*Q plane sum is a vectorised reduction.
#include <omp.h>

#include "cpu/conv.h"
#include "cpu/threads.h"

namespace convkit::cpu {

template <typename T>
void conv2d_bwd_bias(const ConvParams& p, const T* dy, T* db) {
  const int64_t K = p.K, PQ = p.P * p.Q, N = p.N;
#pragma omp parallel for schedule(static) num_threads(num_threads()) if (N * K * PQ > 32768)
  for (int64_t k = 0; k < K; ++k) {
    T total = T(0);
    for (int64_t n = 0; n < N; ++n) {
      const T* plane = dy + (n * K + k) * PQ;
      T sum = T(0);
#pragma omp simd reduction(+ : sum)
      for (int64_t i = 0; i < PQ; ++i) sum += plane[i];
      total += sum;
    }
    db[k] = total;
  }
}

template void conv2d_bwd_bias<float>(const ConvParams&, const float*, float*);
template void conv2d_bwd_bias<double>(const ConvParams&, const double*, double*);

}  // namespace convkit::cpu
