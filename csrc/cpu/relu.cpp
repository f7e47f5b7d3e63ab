// CPU ReLU: branch-free selects that the compiler vectorizes; large buffers are split into
// cache-line-aligned chunks, one per OpenMP thread, small ones stay on the calling thread.
#include "cpu/relu.h"

#include <algorithm>
#include <cstdint>

#include "cpu/threads.h"

namespace convkit::cpu {
namespace {

// Below this many elements the fork costs more than the work.
constexpr int64_t kParallelElems = 1 << 16;

// Runs body(begin, end) over [0, n) in per-thread chunks whose boundaries are multiples of
// 16 elements (whole cache lines for float), so no two threads share a line.
template <typename Body>
void for_chunks(int64_t n, Body&& body) {
  const int threads = n > kParallelElems ? convkit::cpu::num_threads() : 1;
  if (threads <= 1) {
    body(int64_t{0}, n);
    return;
  }
  const int64_t chunk = ((n + threads - 1) / threads + 15) / 16 * 16;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int t = 0; t < threads; ++t) {
    const int64_t begin = std::min<int64_t>(t * chunk, n), end = std::min<int64_t>(begin + chunk, n);
    if (begin < end) body(begin, end);
  }
}

// x < 0 ? 0 : x keeps NaN and -0.0 exactly as torch's clamp_min(x, 0) does.
template <typename T>
void relu_fwd_range(const T* x, T* y, int64_t begin, int64_t end) {
  for (int64_t k = begin; k < end; ++k) {
    const T v = x[k];
    y[k] = v < T(0) ? T(0) : v;
  }
}

template <typename T>
void relu_bwd_range(const T* dy, const T* y, T* dx, int64_t begin, int64_t end) {
  for (int64_t k = begin; k < end; ++k) dx[k] = y[k] <= T(0) ? T(0) : dy[k];
}

}  // namespace

template <typename T>
void relu_fwd(int64_t n, const T* x, T* y) {
  if (n <= 0) return;
  for_chunks(n, [&](int64_t begin, int64_t end) { relu_fwd_range(x, y, begin, end); });
}

template <typename T>
void relu_bwd(int64_t n, const T* dy, const T* y, T* dx) {
  if (n <= 0) return;
  for_chunks(n, [&](int64_t begin, int64_t end) { relu_bwd_range(dy, y, dx, begin, end); });
}

template void relu_fwd<float>(int64_t, const float*, float*);
template void relu_fwd<double>(int64_t, const double*, double*);
template void relu_bwd<float>(int64_t, const float*, const float*, float*);
template void relu_bwd<double>(int64_t, const double*, const double*, double*);

}  // namespace convkit::cpu
