// racecheck.cpp: the emulator's race detector, initcheck and shared-alignment check. This file
// is never instrumented itself. In the racecheck build (CMake CONVKIT_SIM_RACECHECK) the kernel
// translation units are compiled with -fsanitize=thread, which makes the compiler call the
// __tsan_* functions below on every load, store and atomic; there is no libtsan: these hooks are
// the whole runtime. An access by an emulated CUDA thread outside its own fiber stack (its
// registers and local memory) goes to shadow memory: the block's shared arrays byte by byte, the
// rest (global memory) in 2-byte granules, reset per launch.
//
// Happens-before is exactly what CUDA guarantees (racecheck.h): program order in a thread; a
// __syncthreads() orders everything of a block before it against everything after it (a
// per-block barrier count); a completed __syncwarp(mask) orders its lanes (a vector clock per
// lane over the 32 lanes of its warp); atomics do not race with atomics on the same address;
// blocks of one launch are unordered; launches are ordered. A plain read and an atomic write of
// one address are not reported either way: that is the programming guide's compare-and-swap loop
// (read the old value, then atomicCAS until it holds), whose read may see any value. Each shadow cell keeps the last write
// and the last two reads by different threads (a write after several unordered reads is caught
// when the writer, or the last other reader, is unordered with it: the usual case; a write
// ordered after both kept reads but not after an older one goes unseen). A read of a shared
// byte no thread of the block wrote is initcheck's report; a shared access not aligned to its
// size, a misaligned report.
//
// Reports name the kernel, the memory space, both accesses' source lines (the instrumented
// instruction's address, symbolized with addr2line at the end of the launch; -g builds), and the
// block and thread indices, and fail the launch with a LaunchError.
#include "sim/racecheck.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "sim/control.h"

#if defined(CONVKIT_SIM_RACECHECK) && CONVKIT_SIM_RACECHECK
#define SIMT_RC_BUILT 1
#else
#define SIMT_RC_BUILT 0
#endif

namespace simt {
namespace rc {
namespace {

bool env_on() {
  const char* v = std::getenv("CONVKIT_SIM_RACECHECK");
  if (!v || !*v) return true;
  return !(std::strcmp(v, "0") == 0 || std::strcmp(v, "false") == 0 || std::strcmp(v, "no") == 0 ||
           std::strcmp(v, "off") == 0);
}

std::atomic<bool> g_on{SIMT_RC_BUILT && env_on()};

// One access: who (block, thread), where (site: an index into the instruction addresses), and
// when (the block's barrier count and the thread's warp clock).
struct Acc {
  std::uint32_t block;
  std::uint16_t thread;
  std::uint16_t site;
  std::uint32_t bar;
  std::uint32_t clock;
};

enum : std::uint8_t {
  kW = 1, kWAtomic = 2, kR1 = 4, kR1Atomic = 8, kR2 = 16, kR2Atomic = 32, kWritten = 64,
};

struct Cell {
  Acc w, r1, r2;
  std::uint8_t flags;
};

struct ThreadClock {
  std::uint32_t clock;
  std::uint32_t vc[32];  // what this lane knows of each lane of its warp
};

struct SharedShadow {
  std::uintptr_t lo, hi;
  std::vector<Cell> cells;  // one per byte
};

enum class Kind { Raw, War, Waw, Uninit, Misaligned };

struct Report {
  Kind kind;
  bool shared;
  std::uintptr_t addr;
  std::size_t size;
  Acc prev, cur;
};

constexpr int kGlobalShift = 1;  // 2-byte granules (the smallest element convkit's kernels store)
constexpr std::uintptr_t kPageBytes = 4096;
constexpr std::size_t kPageCells = kPageBytes >> kGlobalShift;
constexpr std::size_t kMaxReports = 16;
constexpr std::uint16_t kUnknownSite = 0xFFFF;

struct State {
  impl::Block* block = nullptr;  // the running block (null outside a checked launch)
  std::uint32_t bar = 0;
  std::vector<ThreadClock> threads;
  std::vector<SharedShadow> shared;
  std::unordered_map<std::uintptr_t, std::unique_ptr<Cell[]>> global;
  std::uintptr_t last_page = ~std::uintptr_t{0};
  Cell* last_cells = nullptr;
  std::vector<std::uintptr_t> sites{0};  // site 0: none
  std::unordered_map<std::uintptr_t, std::uint16_t> site_of;
  std::vector<Report> reports;
  std::size_t n_reports = 0;
  std::map<std::tuple<int, std::uint16_t, std::uint16_t>, bool> seen;
};

State g;
std::mutex g_launch_mutex;  // one checked launch at a time (the shadow is this file's)

std::uint16_t site_id(std::uintptr_t pc) {
  auto it = g.site_of.find(pc);
  if (it != g.site_of.end()) return it->second;
  if (g.sites.size() >= kUnknownSite) return kUnknownSite;
  const auto id = static_cast<std::uint16_t>(g.sites.size());
  g.sites.push_back(pc);
  g.site_of.emplace(pc, id);
  return id;
}

inline bool same_warp(const Acc& a, const Acc& b) { return (a.thread >> 5) == (b.thread >> 5); }

// Whether access a (earlier in the shadow) happens before access b (now, by the running thread).
inline bool happens_before(const Acc& a, const Acc& b) {
  if (a.block != b.block) return false;  // blocks of one launch are unordered
  if (a.thread == b.thread) return true;
  if (a.bar < b.bar) return true;        // a __syncthreads() between them
  return same_warp(a, b) && g.threads[b.thread].vc[a.thread & 31] >= a.clock;
}

void report(Kind kind, bool shared, std::uintptr_t addr, std::size_t size, const Acc& prev, const Acc& cur) {
  ++g.n_reports;
  const auto key = std::make_tuple(static_cast<int>(kind), prev.site, cur.site);
  if (g.seen.count(key)) return;
  g.seen[key] = true;
  if (g.reports.size() < kMaxReports) g.reports.push_back({kind, shared, addr, size, prev, cur});
}

// Checks and records one access of the granule `c` (the running thread's access `cur`).
inline bool cell_access(Cell& c, const Acc& cur, bool write, bool atomic, bool shared, std::uintptr_t addr,
                        std::size_t size) {
  bool found = false;
  const std::uint8_t f = c.flags;
  if (write) {
    if ((f & kW) && !(atomic && (f & kWAtomic)) && !happens_before(c.w, cur)) {
      report(Kind::Waw, shared, addr, size, c.w, cur);
      found = true;
    } else if (!atomic && (f & kR1) && !happens_before(c.r1, cur)) {
      report(Kind::War, shared, addr, size, c.r1, cur);
      found = true;
    } else if (!atomic && (f & kR2) && !happens_before(c.r2, cur)) {
      report(Kind::War, shared, addr, size, c.r2, cur);
      found = true;
    }
    c.w = cur;
    c.flags = static_cast<std::uint8_t>(kW | kWritten | (atomic ? kWAtomic : 0));
    return found;
  }
  if (shared && !(f & kWritten)) {
    report(Kind::Uninit, shared, addr, size, cur, cur);
    found = true;
  } else if ((f & kW) && !(f & kWAtomic) && !happens_before(c.w, cur)) {
    report(Kind::Raw, shared, addr, size, c.w, cur);
    found = true;
  }
  // Keep the last read and the last one by another thread.
  if ((f & kR1) && c.r1.thread == cur.thread && c.r1.block == cur.block) {
    c.r1 = cur;
    c.flags = static_cast<std::uint8_t>((c.flags & ~kR1Atomic) | (atomic ? kR1Atomic : 0));
  } else {
    if (f & kR1) {
      c.r2 = c.r1;
      c.flags = static_cast<std::uint8_t>((c.flags & ~kR2Atomic) | kR2 | ((f & kR1Atomic) ? kR2Atomic : 0));
    }
    c.r1 = cur;
    c.flags = static_cast<std::uint8_t>((c.flags & ~kR1Atomic) | kR1 | (atomic ? kR1Atomic : 0));
  }
  return found;
}

SharedShadow* shared_shadow(std::uintptr_t a) {
  for (SharedShadow& s : g.shared)
    if (a - s.lo < s.hi - s.lo) return &s;
  const impl::Block& b = *g.block;
  auto add = [&](const void* p, std::size_t bytes) -> SharedShadow* {
    const auto lo = reinterpret_cast<std::uintptr_t>(p);
    if (!p || a - lo >= bytes) return nullptr;
    g.shared.push_back({lo, lo + bytes, std::vector<Cell>(bytes, Cell{})});
    return &g.shared.back();
  };
  for (const impl::SharedArray& s : b.statics)
    if (SharedShadow* r = add(s.data, s.bytes)) return r;
  return add(b.dynamic, b.launch->dyn_smem);
}

Cell* global_cells(std::uintptr_t page) {
  if (page == g.last_page) return g.last_cells;
  auto& slot = g.global[page];
  if (!slot) {
    slot.reset(new Cell[kPageCells]);
    std::memset(static_cast<void*>(slot.get()), 0, sizeof(Cell) * kPageCells);
  }
  g.last_page = page;
  g.last_cells = slot.get();
  return slot.get();
}

void access(const volatile void* addr, std::size_t size, bool write, bool atomic, bool check_align, void* pc) {
  if (!g.block) return;  // no checked launch running
  impl::Fiber* f = impl::current_fiber();
  if (!f) return;        // host code (a launcher) in an instrumented file
  const auto a = reinterpret_cast<std::uintptr_t>(addr);
  if (a - reinterpret_cast<std::uintptr_t>(f->ctx.stack_lo) < f->ctx.stack_size) return;  // its own frame
  const Acc cur{static_cast<std::uint32_t>(g.block->linear_id), static_cast<std::uint16_t>(f->linear),
                site_id(reinterpret_cast<std::uintptr_t>(pc)), g.bar, g.threads[f->linear].clock};
  if (SharedShadow* s = shared_shadow(a)) {
    if (check_align && size > 1 && (a & (size - 1))) {
      report(Kind::Misaligned, true, a, size, cur, cur);
      return;
    }
    const std::size_t n = std::min<std::size_t>(size, s->hi - a);
    for (std::size_t i = 0; i < n; ++i)
      if (cell_access(s->cells[a - s->lo + i], cur, write, atomic, true, a, size)) break;
    return;
  }
  const std::uintptr_t first = a >> kGlobalShift, last = (a + size - 1) >> kGlobalShift;
  for (std::uintptr_t gi = first; gi <= last; ++gi) {
    Cell* cells = global_cells(gi / kPageCells);
    if (cell_access(cells[gi % kPageCells], cur, write, atomic, false, a, size)) break;
  }
}

// ---- reports ------------------------------------------------------------------------------------

std::string symbolize(std::uintptr_t pc) {
  static std::unordered_map<std::uintptr_t, std::string> cache;
  auto it = cache.find(pc);
  if (it != cache.end()) return it->second;
  std::string out = "?";
  Dl_info info{};
  if (pc && dladdr(reinterpret_cast<void*>(pc), &info) && info.dli_fname) {
    char cmd[4096];
    // pc is a return address: the call's own line is at pc - 1.
    std::snprintf(cmd, sizeof cmd, "addr2line -i -e '%s' 0x%lx 2>/dev/null", info.dli_fname,
                  static_cast<unsigned long>(pc - 1 - reinterpret_cast<std::uintptr_t>(info.dli_fbase)));
    if (FILE* p = popen(cmd, "r")) {
      std::string chain;
      char line[4096];
      while (std::fgets(line, sizeof line, p)) {
        std::string s(line);
        while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
        const std::size_t disc = s.find(" (discriminator");
        if (disc != std::string::npos) s.resize(disc);
        const std::size_t slash = s.rfind('/');
        if (slash != std::string::npos) s = s.substr(slash + 1);
        if (s.empty() || s[0] == '?') continue;
        chain += (chain.empty() ? "" : " inlined in ") + s;
      }
      pclose(p);
      if (!chain.empty()) out = chain;
    }
  }
  cache.emplace(pc, out);
  return out;
}

std::string who(const impl::Launch& L, const Acc& a) {
  const std::uint64_t bl = a.block;
  const unsigned gx = L.grid.x, gy = L.grid.y, bx = L.block.x, by = L.block.y;
  const unsigned t = a.thread;
  return "block (" + std::to_string(bl % gx) + "," + std::to_string(bl / gx % gy) + "," +
         std::to_string(bl / (static_cast<std::uint64_t>(gx) * gy)) + ") thread (" + std::to_string(t % bx) + "," +
         std::to_string(t / bx % by) + "," + std::to_string(t / (bx * by)) + ")";
}

std::string site(const Acc& a) { return a.site < g.sites.size() ? symbolize(g.sites[a.site]) : "?"; }

std::string hex(std::uintptr_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(v));
  return buf;
}

std::string format(const impl::Launch& L, const Report& r) {
  const std::string space = r.shared ? "shared" : "global";
  const std::string kernel = std::string("kernel ") + L.name + ": ";
  switch (r.kind) {
    case Kind::Uninit:
      return "initcheck: " + kernel + who(L, r.cur) + " reads " + std::to_string(r.size) + " bytes of shared memory at " +
             hex(r.addr) + " that no thread of its block wrote, at " + site(r.cur);
    case Kind::Misaligned:
      return "racecheck: " + kernel + "misaligned " + std::to_string(r.size) + "-byte shared memory access at " +
             hex(r.addr) + " by " + who(L, r.cur) + " at " + site(r.cur);
    default:
      break;
  }
  const char* kind = r.kind == Kind::Raw ? "read-after-write" : r.kind == Kind::War ? "write-after-read" : "write-after-write";
  const char* now = r.kind == Kind::Raw ? " reads at " : " writes at ";
  const char* before = r.kind == Kind::War ? " read at " : " wrote at ";
  const std::string why = r.prev.block != r.cur.block ? " (blocks of one launch are unordered)"
                          : " with no __syncthreads() or __syncwarp() ordering them";
  return "racecheck: " + std::string(kind) + " race on " + space + " memory at " + hex(r.addr) + ": " + kernel +
         who(L, r.cur) + now + site(r.cur) + ", unordered with " + who(L, r.prev) + before + site(r.prev) + why;
}

}  // namespace

bool on() { return SIMT_RC_BUILT && g_on.load(std::memory_order_relaxed); }

void access_hook(const volatile void* addr, std::size_t size, bool write, bool atomic, bool check_align, void* pc) {
  access(addr, size, write, atomic, check_align, pc);
}

void rmw_hook(const volatile void* addr, std::size_t size, void* pc) {
  access(addr, size, false, true, true, pc);
  access(addr, size, true, true, true, pc);
}

std::unique_lock<std::mutex> launch_lock() { return std::unique_lock<std::mutex>(g_launch_mutex); }

// The global shadow is empty between launches (launch_end frees it).
void launch_begin(impl::Launch&) {
  g.reports.clear();
  g.n_reports = 0;
  g.seen.clear();
}

std::string launch_end(impl::Launch& L) {
  std::string msg;
  if (!g.reports.empty()) {
    // A race first: a read before any write is often the first thing a missing barrier shows
    // (initcheck), but the race is the bug.
    const Report* first = &g.reports.front();
    for (const Report& r : g.reports)
      if (r.kind == Kind::Raw || r.kind == Kind::War || r.kind == Kind::Waw) {
        first = &r;
        break;
      }
    msg = format(L, *first);
    if (g.n_reports > 1) msg += " (and " + std::to_string(g.n_reports - 1) + " more reports in this launch)";
  }
  g.block = nullptr;
  g.global.clear();
  g.last_page = ~std::uintptr_t{0};
  g.last_cells = nullptr;
  return msg;
}

void block_begin(impl::Block& b) {
  g.block = &b;
  g.bar = 0;
  g.threads.assign(static_cast<std::size_t>(b.nthreads), ThreadClock{1, {}});
  g.shared.clear();
}

void block_end(impl::Block&) {
  g.block = nullptr;
  g.shared.clear();
}

void barrier_released(impl::Block&) { ++g.bar; }

void warp_synced(impl::Fiber* lanes, unsigned mask) {
  if (!g.block) return;
  std::uint32_t join[32] = {};
  for (unsigned r = mask; r; r &= r - 1) {
    const ThreadClock& t = g.threads[lanes[__builtin_ctz(r)].linear];
    for (int i = 0; i < 32; ++i) join[i] = std::max(join[i], t.vc[i]);
    join[__builtin_ctz(r)] = std::max(join[__builtin_ctz(r)], t.clock);
  }
  for (unsigned r = mask; r; r &= r - 1) {
    ThreadClock& t = g.threads[lanes[__builtin_ctz(r)].linear];
    std::memcpy(t.vc, join, sizeof join);
    ++t.clock;
  }
}

}  // namespace rc

bool racecheck_built() { return SIMT_RC_BUILT; }
void set_racecheck(bool on) { rc::g_on.store(SIMT_RC_BUILT && on); }
bool racecheck() { return rc::on(); }

}  // namespace simt

// ---- the hooks -fsanitize=thread calls (the racecheck build only) --------------------------------
#if SIMT_RC_BUILT
extern "C" {
using simt::rc::access_hook;
using simt::rc::rmw_hook;

void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}
void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }

#define SIMT_RC_RW(n)                                                                                        \
  void __tsan_read##n(void* a) { access_hook(a, n, false, false, true, __builtin_return_address(0)); }        \
  void __tsan_write##n(void* a) { access_hook(a, n, true, false, true, __builtin_return_address(0)); }        \
  void __tsan_unaligned_read##n(void* a) { access_hook(a, n, false, false, false, __builtin_return_address(0)); } \
  void __tsan_unaligned_write##n(void* a) { access_hook(a, n, true, false, false, __builtin_return_address(0)); } \
  void __tsan_volatile_read##n(void* a) { access_hook(a, n, false, false, true, __builtin_return_address(0)); } \
  void __tsan_volatile_write##n(void* a) { access_hook(a, n, true, false, true, __builtin_return_address(0)); }
SIMT_RC_RW(1)
SIMT_RC_RW(2)
SIMT_RC_RW(4)
SIMT_RC_RW(8)
SIMT_RC_RW(16)
#undef SIMT_RC_RW

void __tsan_read_range(void* a, unsigned long n) { access_hook(a, n, false, false, false, __builtin_return_address(0)); }
void __tsan_write_range(void* a, unsigned long n) { access_hook(a, n, true, false, false, __builtin_return_address(0)); }

// Atomics: the instrumentation replaces the operation with the call, so each hook performs it
// (sequentially consistent, whatever order was asked: the strongest is always correct) and tells
// the shadow: an atomic read, and for a read-modify-write an atomic write too.
#define SIMT_RC_ATOMIC(n, T)                                                                                 \
  T __tsan_atomic##n##_load(const volatile T* a, int) {                                                       \
    access_hook(a, sizeof(T), false, true, true, __builtin_return_address(0));                                \
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                              \
  }                                                                                                           \
  void __tsan_atomic##n##_store(volatile T* a, T v, int) {                                                    \
    access_hook(a, sizeof(T), true, true, true, __builtin_return_address(0));                                 \
    __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                                 \
  }                                                                                                           \
  SIMT_RC_RMW(n, T, exchange, __atomic_exchange_n)                                                            \
  SIMT_RC_RMW(n, T, fetch_add, __atomic_fetch_add)                                                            \
  SIMT_RC_RMW(n, T, fetch_sub, __atomic_fetch_sub)                                                            \
  SIMT_RC_RMW(n, T, fetch_and, __atomic_fetch_and)                                                            \
  SIMT_RC_RMW(n, T, fetch_or, __atomic_fetch_or)                                                              \
  SIMT_RC_RMW(n, T, fetch_xor, __atomic_fetch_xor)                                                            \
  SIMT_RC_RMW(n, T, fetch_nand, __atomic_fetch_nand)                                                          \
  int __tsan_atomic##n##_compare_exchange_strong(volatile T* a, T* c, T v, int, int) {                        \
    rmw_hook(a, sizeof(T), __builtin_return_address(0));                                                      \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                   \
  }                                                                                                           \
  int __tsan_atomic##n##_compare_exchange_weak(volatile T* a, T* c, T v, int, int) {                          \
    rmw_hook(a, sizeof(T), __builtin_return_address(0));                                                      \
    return __atomic_compare_exchange_n(a, c, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                    \
  }                                                                                                           \
  T __tsan_atomic##n##_compare_exchange_val(volatile T* a, T c, T v, int, int) {                              \
    rmw_hook(a, sizeof(T), __builtin_return_address(0));                                                      \
    __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                         \
    return c;                                                                                                 \
  }
#define SIMT_RC_RMW(n, T, op, builtin)                                                                       \
  T __tsan_atomic##n##_##op(volatile T* a, T v, int) {                                                        \
    rmw_hook(a, sizeof(T), __builtin_return_address(0));                                                      \
    return builtin(a, v, __ATOMIC_SEQ_CST);                                                                   \
  }
SIMT_RC_ATOMIC(8, unsigned char)
SIMT_RC_ATOMIC(16, unsigned short)
SIMT_RC_ATOMIC(32, unsigned int)
SIMT_RC_ATOMIC(64, unsigned long long)
#undef SIMT_RC_RMW
#undef SIMT_RC_ATOMIC
}  // extern "C"
#endif
