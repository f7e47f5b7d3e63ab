// The plan model of convkit's GEMM-shaped CUDA kernels (the tiled GEMM behind im2col and 1x1,
// gemm.cuh; the implicit-GEMM convolutions, conv_implicit_gemm.cu): the time a block tile and a
// split-K factor would take on a reference device, so that launchers pick per layer. The
// reference is an H100 SXM (132 SMs, 67 TFLOP/s float32 SIMT, half that in float64, about 3 TB/s
// of HBM, a few microseconds a launch) whatever device runs the kernels: the split count changes
// the summation order, and results must be the same on every GPU and on the emulator.
//
// The model: the waves of blocks the reference device runs (a wave: its SMs times the blocks an
// SM holds at the tile's register use), times a block's multiply-adds at the tile's share of the
// SM's FMA rate, plus, with split-K, the partial sums' round trip through memory and the
// reduction's launch. Plain C++ (host only).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace convkit::cuda {

constexpr double kRefSms = 132;
constexpr double kRefSmFmaPerSec = 67e12 / 2 / 132;
constexpr double kRefBytesPerSec = 3.0e12;
constexpr double kRefLaunchSec = 3e-6;
constexpr int kPlanMaxSplits = 128;
constexpr int kPlanMinSplitSteps = 4;  // k-steps (of 8) a split covers at least

struct TileModel {
  int BM, BN;
  double efficiency;  // share of the SM's FMA rate a block of this tile reaches
  int per_sm;         // blocks an SM holds
};

// `units` GEMMs of M x N x K; `outputs`: what a split's partial sums hold (elements).
struct GemmShape {
  int64_t units, M, N, K, outputs;
};

inline int64_t plan_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Seconds on the reference device for tile t and `splits` (acc: bytes of a partial sum).
inline double model_seconds(const TileModel& t, const GemmShape& s, int splits, int64_t acc, bool f64) {
  const double blocks =
      static_cast<double>(plan_ceil_div(s.M, t.BM) * plan_ceil_div(s.N, t.BN) * s.units * splits);
  const double waves = std::ceil(blocks / (kRefSms * t.per_sm));
  const double depth = static_cast<double>(plan_ceil_div(plan_ceil_div(s.K, 8), splits) * 8);
  const double block_rate = kRefSmFmaPerSec * (f64 ? 0.5 : 1.0) * t.efficiency / t.per_sm;
  double sec = waves * t.BM * t.BN * std::max(depth, 8.0) / block_rate;
  if (splits > 1)
    sec += (2.0 * splits + 1) * static_cast<double>(s.outputs) * acc / kRefBytesPerSec + kRefLaunchSec;
  return sec;
}

// The most splits worth trying for a reduction of K: each split at least kPlanMinSplitSteps
// k-steps of 8, at most kPlanMaxSplits.
inline int plan_max_splits(int64_t K) {
  return static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(kPlanMaxSplits, plan_ceil_div(K, 8) / kPlanMinSplitSteps)));
}

}  // namespace convkit::cuda
