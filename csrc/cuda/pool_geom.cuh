// Index arithmetic of the pooling kernels: the 32-bit geometry a pooling launch hands its kernel
// (its divisions by launch-time constants through fast_divmod.cuh), and the split of a launch
// into chunks of (n, c) planes that keeps each launch's flat element index below 2^31 while
// plane offsets stay int64.
#pragma once
#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "common/params.h"
#include "cuda/fast_divmod.cuh"
#include "cuda/runtime.h"

namespace convkit::cuda {

// PoolParams in 32 bits plus the divisions a kernel needs. A kernel walks a flat index over one
// tensor of the launch (the output in forward, the input in backward): `plane` divides by that
// tensor's plane size and `row` by its row length; `by_sh` / `by_sw` divide by the strides.
struct PoolGeom {
  int H, W, P, Q;
  int kh, kw, sh, sw, ph, pw, dh, dw;
  FastDivmod plane, row, by_sh, by_sw;
};

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

// The largest flat index a launch may use: per-launch indices are 32-bit.
constexpr int64_t kMaxLaunchIndex = INT32_MAX;

// Checks that every coordinate of p fits the kernels' 32-bit arithmetic (one plane, not the
// whole tensor, must have fewer than 2^31 elements) and builds the geometry for walking the
// input (over_input) or the output.
inline PoolGeom make_pool_geom(const PoolParams& p, bool over_input, const char* op) {
  const int64_t span_h = (p.kh - 1) * p.dh + 1, span_w = (p.kw - 1) * p.dw + 1;
  const int64_t biggest = std::max({p.H * p.W, p.P * p.Q, p.H + 2 * p.ph + span_h + p.sh,
                                    p.W + 2 * p.pw + span_w + p.sw, (p.P + 1) * p.sh + span_h,
                                    (p.Q + 1) * p.sw + span_w});
  if (biggest > kMaxLaunchIndex)
    throw Error(std::string(op) + ": a plane of " + std::to_string(p.H) + "x" + std::to_string(p.W) +
                " (window " + std::to_string(p.kh) + "x" + std::to_string(p.kw) +
                ") is too large for 32-bit in-plane indexing (2^31 elements)");
  PoolGeom g;
  g.H = static_cast<int>(p.H), g.W = static_cast<int>(p.W), g.P = static_cast<int>(p.P), g.Q = static_cast<int>(p.Q);
  g.kh = static_cast<int>(p.kh), g.kw = static_cast<int>(p.kw), g.sh = static_cast<int>(p.sh);
  g.sw = static_cast<int>(p.sw), g.ph = static_cast<int>(p.ph), g.pw = static_cast<int>(p.pw);
  g.dh = static_cast<int>(p.dh), g.dw = static_cast<int>(p.dw);
  g.plane = FastDivmod(static_cast<uint32_t>(over_input ? p.H * p.W : p.P * p.Q));
  g.row = FastDivmod(static_cast<uint32_t>(over_input ? p.W : p.Q));
  g.by_sh = FastDivmod(static_cast<uint32_t>(p.sh));
  g.by_sw = FastDivmod(static_cast<uint32_t>(p.sw));
  return g;
}

// Calls launch_chunk(first_plane, planes) over the N * C planes in chunks small enough that
// planes * max(H * W, P * Q) < 2^31: one chunk unless the tensor has 2^31 elements or more.
template <typename Fn>
void for_each_plane_chunk(const PoolParams& p, Fn&& launch_chunk) {
  const int64_t planes = p.N * p.C;
  const int64_t per_plane = std::max<int64_t>(std::max(p.H * p.W, p.P * p.Q), 1);
  const int64_t chunk = std::max<int64_t>(kMaxLaunchIndex / per_plane, 1);
  for (int64_t first = 0; first < planes; first += chunk) launch_chunk(first, std::min(chunk, planes - first));
}

}  // namespace convkit::cuda
