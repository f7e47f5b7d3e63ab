// CPU pooling kernels, NCHW contiguous: max pooling (dilation, ceil_mode, optional int64
// indices, torch's NaN rule) and average pooling (ceil_mode, count_include_pad,
// divisor_override), forward and backward. Templates instantiated for float and double.
#pragma once
#include <cstdint>

#include "common/params.h"

namespace convkit::cpu {

// x: [N, C, H, W] -> y: [N, C, P, Q]; idx: int64 [N, C, P, Q] holding h * W + w within each
// (n, c) plane, or nullptr when no indices are wanted.
template <typename T>
void max_pool2d_fwd(const PoolParams& p, const T* x, T* y, int64_t* idx);

// dy, idx: [N, C, P, Q] -> dx: [N, C, H, W], every element written (dx[idx] += dy).
template <typename T>
void max_pool2d_bwd(const PoolParams& p, const T* dy, const int64_t* idx, T* dx);

// divisor_override == 0: no override. p.dh and p.dw must be 1.
template <typename T>
void avg_pool2d_fwd(const PoolParams& p, bool count_include_pad, int64_t divisor_override, const T* x,
                    T* y);

template <typename T>
void avg_pool2d_bwd(const PoolParams& p, bool count_include_pad, int64_t divisor_override, const T* dy,
                    T* dx);

namespace detail {

// Outputs q in [lo, hi) are those whose window column w = q * stride + off lies inside
// [0, W): the valid range of one kernel column along an output row.
struct TapRange {
  int64_t lo, hi;
};

inline int64_t ceil_div_nonneg(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline TapRange tap_range(int64_t off, int64_t stride, int64_t W, int64_t Q) {
  // q * stride + off >= 0  and  q * stride + off <= W - 1
  const int64_t lo = off >= 0 ? 0 : ceil_div_nonneg(-off, stride);
  const int64_t last = W - 1 - off;
  int64_t hi = last < 0 ? 0 : last / stride + 1;
  if (hi > Q) hi = Q;
  return {lo < hi ? lo : hi, hi};
}

// Kernel taps k in [lo, hi) of a window that starts at `start` with step `dil` are those whose
// position start + k * dil lies inside [0, size): the valid part of one window.
inline TapRange window_range(int64_t start, int64_t k, int64_t dil, int64_t size) {
  const int64_t lo = start >= 0 ? 0 : ceil_div_nonneg(-start, dil);
  const int64_t last = size - 1 - start;
  int64_t hi = last < 0 ? 0 : last / dil + 1;
  if (hi > k) hi = k;
  return {lo < hi ? lo : hi, hi};
}

// Below this many outputs per row the per-tap row loops are too short to pay for themselves
// and the kernels go one output (one whole window) at a time.
constexpr int64_t kNarrowRow = 8;

}  // namespace detail
}  // namespace convkit::cpu
