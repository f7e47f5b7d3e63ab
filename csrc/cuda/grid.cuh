// Grid sizing of convkit's grid-stride kernels: how many blocks a launch over a number of work
// items gets on this device.
#pragma once
#include <algorithm>
#include <cstdint>

#include "cuda/runtime.h"

namespace convkit::cuda {

// Blocks of a grid-stride launch over `items` work items, `per_block` items a block. The cap,
// kBlocksPerSm blocks on each SM, is several waves at full occupancy (8 blocks of 256 threads
// fill an SM's 2048 threads): past it threads loop instead, and with a few waves the last one's
// imbalance costs little even when registers allow fewer resident blocks. The emulator runs
// every thread as a fiber, so there one block per SM: fewer threads that loop more run faster,
// and tests reach the grid-stride loops with small tensors (the kernel code is the same).
#if defined(__CUDACC__)
constexpr int64_t kBlocksPerSm = 32;
#else
constexpr int64_t kBlocksPerSm = 1;
#endif

inline unsigned grid_blocks(int64_t items, int64_t per_block) {
  const int64_t cap = static_cast<int64_t>(device_limits().sm_count) * kBlocksPerSm;
  const int64_t want = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(want, cap)));
}

}  // namespace convkit::cuda
