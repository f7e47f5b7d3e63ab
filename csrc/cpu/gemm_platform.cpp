// The CPU GEMM's view of the machine: its data cache sizes (sysfs, else sysconf, else typical
// sizes) and the cache blocks kc, mc, nc cut from them for the micro-kernel's register tile
// (gemm_microkernel.h), with CONVKIT_GEMM_KC/MC/NC as tuning overrides.
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "cpu/gemm.h"
#include "cpu/gemm_microkernel.h"

namespace convkit::cpu {

namespace {

// Bytes of one cache from /sys/devices/system/cpu/cpu0/cache/index<i> ("48K", "1024K", "32M"),
// with the number of CPUs sharing it; 0 when absent.
int64_t sysfs_cache(int level, int64_t* sharing) {
  for (int i = 0; i < 8; ++i) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
    std::ifstream lv(dir + "level"), ty(dir + "type"), sz(dir + "size"), sh(dir + "shared_cpu_list");
    int l = 0;
    std::string type, size, list;
    if (!(lv >> l) || !(ty >> type) || !(sz >> size)) return 0;
    if (l != level || type == "Instruction") continue;
    int64_t v = std::atoll(size.c_str());
    if (size.find('K') != std::string::npos) v <<= 10;
    if (size.find('M') != std::string::npos) v <<= 20;
    if (sharing && (sh >> list)) {  // "0-31" or "0,1" or "0-3,8-11": count CPUs
      int64_t n = 0;
      std::stringstream ss(list);
      std::string part;
      while (std::getline(ss, part, ',')) {
        const auto dash = part.find('-');
        n += dash == std::string::npos ? 1 : std::atoll(part.c_str() + dash + 1) - std::atoll(part.c_str()) + 1;
      }
      *sharing = std::max<int64_t>(1, n);
    }
    return v;
  }
  return 0;
}

}  // namespace

CacheSizes cache_sizes() {
  static const CacheSizes sizes = [] {
    CacheSizes c;
    int64_t sharing = 0;
    // sysfs first (a VM's CPUID, which sysconf reads, may report the host's L3), then sysconf,
    // then typical sizes.
    c.l1d = sysfs_cache(1, nullptr);
    c.l2 = sysfs_cache(2, nullptr);
    c.l3 = sysfs_cache(3, &sharing);
#if defined(_SC_LEVEL1_DCACHE_SIZE)
    auto conf = [](int name) -> int64_t {
      const long v = sysconf(name);
      return v > 0 ? v : 0;
    };
    if (c.l1d <= 0) c.l1d = conf(_SC_LEVEL1_DCACHE_SIZE);
    if (c.l2 <= 0) c.l2 = conf(_SC_LEVEL2_CACHE_SIZE);
    if (c.l3 <= 0) c.l3 = conf(_SC_LEVEL3_CACHE_SIZE);
#endif
    if (c.l1d <= 0) c.l1d = 32 << 10;
    if (c.l2 <= 0) c.l2 = 512 << 10;
    if (c.l3 <= 0) c.l3 = 8 << 20;
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    c.l3_sharing = int(sharing > 0 ? sharing : std::max(1L, std::min(cpus, 8L)));
    return c;
  }();
  return sizes;
}

// Cache blocks sized from this machine's caches (cache_sizes()), Goto/BLIS style: the B
// micro-panel kc x NR takes about half of L1 (it is reused by every A micro-panel of the block,
// while A streams through beside it); the A block mc x kc about half of L2 (reused by every B
// micro-panel); the B block kc x nc a per-core share of L3, read once per A block.
template <typename T>
GemmBlocking gemm_blocking() {
  static const GemmBlocking blocks = [] {
    using G = gemm_kernel::GemmTile<T>;
    const CacheSizes c = cache_sizes();
    auto env = [](const char* name, int64_t v) {  // CONVKIT_GEMM_KC/MC/NC: tuning overrides
      const char* s = std::getenv(name);
      return s && std::atoll(s) > 0 ? int64_t(std::atoll(s)) : v;
    };
    auto clamp_down = [](int64_t v, int64_t lo, int64_t hi, int64_t m) {
      return std::max(lo, std::min(hi, v) / m * m);
    };
    GemmBlocking b;
    b.kc = env("CONVKIT_GEMM_KC", clamp_down(c.l1d / 2 / (G::NR * int64_t(sizeof(T))), 64, 512, 16));
    b.mc = env("CONVKIT_GEMM_MC", clamp_down(c.l2 / 2 / (b.kc * int64_t(sizeof(T))), G::MR * 4, 2048, G::MR));
    const int64_t l3_share = c.l3 / std::max(1, c.l3_sharing);
    b.nc = env("CONVKIT_GEMM_NC", clamp_down(l3_share / 2 / (b.kc * int64_t(sizeof(T))), G::NR * 4, 8192, G::NR));
    b.mr = G::MR;
    b.nr = G::NR;
    return b;
  }();
  return blocks;
}
template GemmBlocking gemm_blocking<float>();
template GemmBlocking gemm_blocking<double>();

}  // namespace convkit::cpu
