// Process-wide switches of the CUDA modules that tests and GPU debugging set (the Python layer
// reads CONVKIT_CUDA_VARIANT and CONVKIT_CUDA_SYNC, validates them and passes them down through
// convkit/_cuda_settings.py; nothing here reads the environment):
//
// - Forced variants. The launchers pick some kernel variants by problem size: the GEMM's tile
//   (gemm.cuh: 128x128 where tile_model.h prefers it, past about a wave of its blocks), split-K
//   on or off (gemm.cuh, conv_direct.cu's grad weight), the direct kernels' tile plans
//   (conv_direct.cu: how far a tile shrinks, dense or one-tap-a-chunk axes, depthwise kernel or
//   the general one), the implicit-GEMM tile and operand pipeline (conv_implicit_gemm.cu).
//   Forcing one makes every variant reachable with the small shapes the
//   emulator, ASan and compute-sanitizer can afford. A forced variant changes the summation
//   order, never the result beyond rounding; Auto everywhere is the size-selected default.
// - Sync after launch. After every launch the stream is synchronized and checked, so a kernel
//   fault is raised by the launch that caused it (with its op's name, by the bindings' run_op)
//   instead of by the next CUDA call of whoever comes next (usually a torch op).
//
// Plain C++ (no CUDA headers): the bindings include it. Set them between ops, not during one: a
// workspace query and its launch must see the same variant.
#pragma once
#include <cstdint>

namespace convkit::cuda {

enum class GemmTileMode : int { Auto = 0, Big = 1, Small = 2 };
// Split-K (GEMM, implicit GEMM's three passes and direct grad weight): Off = one split; On = at least kForcedSplits splits
// (as many as the reduction's k-steps or pixel stages allow, if fewer).
enum class SplitMode : int { Auto = 0, Off = 1, On = 2 };
// The direct kernel's tile: Full = no shrinking for small problems (up to 256 threads);
// Small = shrunk to the smallest plan (64 threads) whatever the problem's size.
enum class DirectTileMode : int { Auto = 0, Full = 1, Small = 2 };
// The direct kernel's patch axes. Auto: every tap of an axis in one stage where that fits in
// shared memory (columns, then rows, go one tap a stage for wider windows); Cols / Rows: that
// axis one tap a stage from the start; Compact: both axes.
enum class DirectAxesMode : int { Auto = 0, Cols = 1, Rows = 2, Compact = 3 };
// Depthwise shapes: Off = the general direct kernels take them (as when a depthwise patch would
// not fit in shared memory).
enum class DepthwiseMode : int { Auto = 0, Off = 1 };
// The implicit-GEMM block tile (conv_implicit_gemm.cuh's TileSet): Auto = the plan's choice.
enum class IgemmTileMode : int { Auto = 0, Big = 1, Small = 2, Narrow = 3, Short = 4 };
// The implicit-GEMM operand pipeline: Registers = register-staged double buffering for every
// dtype (Auto: the cp.async pipeline for float and double, registers for the half types).
enum class IgemmPipelineMode : int { Auto = 0, Registers = 1 };
// The implicit-GEMM multiply-adds of float16 / bfloat16: Auto = the tensor cores (WMMA);
// Simt = the SIMT kernel (converted to float), as float32 runs.
enum class IgemmMathMode : int { Auto = 0, Simt = 1 };

constexpr int kForcedSplits = 3;

struct Variant {
  GemmTileMode gemm_tile = GemmTileMode::Auto;
  SplitMode splitk = SplitMode::Auto;
  DirectTileMode direct_tile = DirectTileMode::Auto;
  DirectAxesMode direct_axes = DirectAxesMode::Auto;
  DepthwiseMode depthwise = DepthwiseMode::Auto;
  IgemmTileMode igemm_tile = IgemmTileMode::Auto;
  IgemmPipelineMode igemm_pipeline = IgemmPipelineMode::Auto;
  IgemmMathMode igemm_math = IgemmMathMode::Auto;
};

// The variant now in force (all Auto unless set). Cheap: a copy of a few ints.
Variant variant();
// Throws convkit::Error for a value outside its enum.
void set_variant(const Variant& v);

// Whether every launch is followed by a stream synchronize and an error check.
bool launch_sync();
void set_launch_sync(bool on);
// Synchronizations done after launches since the module was loaded (the switch's test).
std::uint64_t launch_sync_count();
void count_launch_sync();

}  // namespace convkit::cuda
