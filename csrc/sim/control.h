// Controls and counters of the CUDA emulator (csrc/sim/fiber.cpp, simt.cpp) in plain C++: no CUDA
// types, no emulator macros, so the pybind11 bindings can include it. simt.h includes it for
// kernels' TUs.
#pragma once
#include <cstdint>

namespace simt {

// The seed of the per-block schedule shuffle (env CONVKIT_SIM_SEED, default 0). A block's order
// depends on (seed, kernel name, block index) only, so a failure reproduces when run alone.
void set_seed(std::uint64_t seed);
std::uint64_t seed();

// OS threads that run blocks (env CONVKIT_SIM_THREADS, default the cores, at most 16; 1 in a
// child process made by fork(), where the OpenMP pool of the parent does not exist).
void set_num_workers(int n);
int num_workers();

// The SM count the emulated device reports (default 132, an H100 SXM; 1..65536, else
// std::runtime_error). Grid sizes that read it change; results must not (tests/kernels/test_cuda_variants.py).
void set_sm_count(int n);
int sm_count();

// Totals since the process started (or reset_counters()).
struct Counters {
  std::uint64_t launches;   // launches that ran (refused ones excluded)
  std::uint64_t blocks;     // blocks run, to completion or to an error
  std::uint64_t threads;    // fibers started
  std::uint64_t switches;   // fiber context switches
  std::uint64_t barriers;   // __syncthreads() releases
  std::uint64_t warp_ops;   // completed warp meetings (shuffles, votes, __syncwarp, ...)
};
Counters counters();
void reset_counters();

// The race detector (racecheck.cpp; `make test-racecheck`). racecheck_built(): this module's
// kernels were compiled with -fsanitize=thread's instrumentation and report into the emulator's
// own shadow memory (CMake option CONVKIT_SIM_RACECHECK); false in the ordinary build, where
// set_racecheck does nothing. When on (env CONVKIT_SIM_RACECHECK, default 1 in that build), a
// launch whose kernel races (shared or global memory, within a warp, between warps of a block or
// between blocks), reads shared memory its block never wrote, or makes a misaligned shared access
// fails with a LaunchError whose message starts "racecheck:" or "initcheck:" and names the kernel,
// both accesses' source lines, the memory space and the block and thread indices.
bool racecheck_built();
void set_racecheck(bool on);
bool racecheck();

}  // namespace simt
