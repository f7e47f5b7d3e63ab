// The process-wide switches of variant.h: forced kernel variants and sync-after-launch, one set
// per compiled module (convkit._cuda and convkit._cudasim each have their own).
#include <atomic>
#include <string>

#include "common/error.h"
#include "cuda/variant.h"

namespace convkit::cuda {
namespace {

std::atomic<int> g_gemm_tile{0}, g_splitk{0}, g_direct_tile{0}, g_direct_axes{0}, g_depthwise{0}, g_igemm_tile{0},
    g_igemm_pipeline{0}, g_igemm_math{0};
std::atomic<bool> g_sync{false};
std::atomic<std::uint64_t> g_sync_count{0};

int checked(int v, int most, const char* what) {
  if (v < 0 || v > most)
    throw Error(std::string("set_variant: ") + what + " = " + std::to_string(v) + " is not in 0.." +
                std::to_string(most));
  return v;
}

}  // namespace

Variant variant() {
  Variant v;
  v.gemm_tile = static_cast<GemmTileMode>(g_gemm_tile.load(std::memory_order_relaxed));
  v.splitk = static_cast<SplitMode>(g_splitk.load(std::memory_order_relaxed));
  v.direct_tile = static_cast<DirectTileMode>(g_direct_tile.load(std::memory_order_relaxed));
  v.direct_axes = static_cast<DirectAxesMode>(g_direct_axes.load(std::memory_order_relaxed));
  v.depthwise = static_cast<DepthwiseMode>(g_depthwise.load(std::memory_order_relaxed));
  v.igemm_tile = static_cast<IgemmTileMode>(g_igemm_tile.load(std::memory_order_relaxed));
  v.igemm_pipeline = static_cast<IgemmPipelineMode>(g_igemm_pipeline.load(std::memory_order_relaxed));
  v.igemm_math = static_cast<IgemmMathMode>(g_igemm_math.load(std::memory_order_relaxed));
  return v;
}

void set_variant(const Variant& v) {
  // all checked before any is stored
  const int gt = checked(static_cast<int>(v.gemm_tile), 2, "gemm_tile");
  const int sk = checked(static_cast<int>(v.splitk), 2, "splitk");
  const int dt = checked(static_cast<int>(v.direct_tile), 2, "direct_tile");
  const int da = checked(static_cast<int>(v.direct_axes), 3, "direct_axes");
  const int dw = checked(static_cast<int>(v.depthwise), 1, "depthwise");
  const int it = checked(static_cast<int>(v.igemm_tile), 4, "igemm_tile");
  const int ip = checked(static_cast<int>(v.igemm_pipeline), 1, "igemm_pipeline");
  const int im = checked(static_cast<int>(v.igemm_math), 1, "igemm_math");
  g_gemm_tile = gt, g_splitk = sk, g_direct_tile = dt, g_direct_axes = da, g_depthwise = dw;
  g_igemm_tile = it, g_igemm_pipeline = ip, g_igemm_math = im;
}

bool launch_sync() { return g_sync.load(std::memory_order_relaxed); }
void set_launch_sync(bool on) { g_sync = on; }
std::uint64_t launch_sync_count() { return g_sync_count.load(); }
void count_launch_sync() { g_sync_count.fetch_add(1, std::memory_order_relaxed); }

}  // namespace convkit::cuda
