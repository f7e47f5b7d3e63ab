// Launchers of the seeded-bug kernels (csrc/sim/selftest/sim_selftest_bugs.cu): one small kernel
// per class of GPU-only bug the emulator must report (issue 15), each with a clean counterpart
// (the same kernel with the barrier, __syncwarp, atomic, index or alignment it lacks), run by
// tests/kernels/test_racecheck.py. Plain C++ (no CUDA header): pointers are device pointers (host
// under the emulator). The buggy forms are for the emulator only: never run them on a GPU.
#pragma once

#include "cuda/stream.h"

namespace convkit::cuda::selftest {

// The bug classes; each kernel marks its offending source line with `// BUG(<name>)`, <name>
// the class's seeded_bug_name().
enum class SeededBug {
  GemmRaw,             // (a) tiled GEMM without the barrier between loading a tile and using it
  SharedRmw,           // (b) s[0] += x by every thread, no atomic
  WarpExchange,        // (c) lanes of a warp exchange through shared memory without __syncwarp
  GlobalWrite,         // (d) two blocks write the same global elements
  GemmWar,             // (e) tiled GEMM loading the next tile over the current one, no barrier after the reads
  UninitShared,        // (f) a thread reads a shared element no thread wrote
  MisalignedShared,    // (g) float4 load from a float shared array (4-byte aligned on a GPU)
  ShuffleOutsideMask,  // (h) __shfl_down_sync whose source lane is outside the mask
  DivergentBarrier,    // (i) half the block skips a __syncthreads()
};

// x: kSeededBugIn floats, out: kSeededBugOut floats (what each kernel reads and writes is in
// sim_selftest_bugs.cu; tests/kernels/test_racecheck.py holds the clean forms' reference).
constexpr int kSeededBugIn = 2048;
constexpr int kSeededBugOut = 1024;

// "gemm_raw", "shared_rmw", ... (nullptr for an unknown value); parse_seeded_bug is the inverse
// and throws Error on an unknown name.
const char* seeded_bug_name(SeededBug bug);
SeededBug parse_seeded_bug(const char* name);

// Launches the class's kernel: buggy, or its clean counterpart when clean.
void seeded_bug(SeededBug bug, bool clean, const float* x, float* out, int device, StreamHandle stream);

}  // namespace convkit::cuda::selftest
