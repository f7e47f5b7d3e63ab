// simt.cpp: the CUDA emulator's runtime. A launch runs its blocks on OpenMP threads; the CUDA
// threads of one block are fibers (a small context switch of our own on x86-64, ucontext
// elsewhere) scheduled by a per-block scheduler that shuffles their order with a seeded PRNG,
// meets warp lanes at warp operations and releases __syncthreads() barriers, and turns what a
// GPU would fault on or hang at into a LaunchError instead.
//
// Scheduling: a fiber runs until it blocks (barrier, warp meeting) or finishes, then switches
// straight to the next runnable fiber of its block; only when none is left does control go back
// to the block's scheduler, which releases the barrier (all live threads wait at the same one),
// finishes the block, or reports divergence / deadlock. The lane that completes a warp meeting
// computes every lane's result and keeps running, so a meeting costs one switch per waiting lane.
// Errors inside a fiber are recorded and the fiber jumps to the scheduler, never to be resumed:
// no C++ exception crosses a fiber switch.
#include "sim/simt.h"

#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <mutex>
#include <unordered_map>

#if defined(__x86_64__) && !defined(SIMT_USE_UCONTEXT)
#define SIMT_ASM_SWITCH 1
#else
#define SIMT_ASM_SWITCH 0
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define SIMT_ASAN 1
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#else
#define SIMT_ASAN 0
#endif

namespace simt {
namespace detail {
__thread ThreadCtx* tls_thread = nullptr;
}  // namespace detail

namespace {

using detail::BarrierOp;
using detail::BlockDims;
using detail::ThreadCtx;
using detail::WarpOp;

// ---- configuration and counters ----------------------------------------------------------------

constexpr std::size_t kSmemDefault = 48 * 1024;
constexpr std::size_t kSmemOptin = 227 * 1024;
constexpr std::uint64_t kPoison = ~std::uint64_t{0};

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* s = std::getenv(name);
  if (!s || !*s) return fallback;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 0);
  return (end && *end == '\0') ? v : fallback;
}

int default_workers() {
  std::uint64_t env = env_u64("CONVKIT_SIM_THREADS", 0);
  if (env > 0) return static_cast<int>(std::min<std::uint64_t>(env, 256));
  // The CPUs this process may run on (taskset, container cpusets), not all the machine's.
  long hw = sysconf(_SC_NPROCESSORS_ONLN);
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) hw = CPU_COUNT(&set);
  return static_cast<int>(std::max(1L, std::min(hw, 16L)));
}

std::atomic<std::uint64_t> g_seed{env_u64("CONVKIT_SIM_SEED", 0)};
std::atomic<int> g_workers{default_workers()};
// libgomp's thread pool does not survive fork(): a child entering a parallel region would wait
// for pool threads that exist only in the parent. A forked child runs its blocks on the calling
// thread (see num_workers).
std::atomic<bool> g_forked{false};
[[maybe_unused]] const int g_atfork = pthread_atfork(nullptr, nullptr, [] { g_forked.store(true); });

struct AtomicCounters {
  std::atomic<std::uint64_t> launches{0}, blocks{0}, threads{0}, switches{0}, barriers{0}, warp_ops{0};
};
AtomicCounters g_counters;

std::mutex g_optin_mutex;
std::unordered_map<const void*, std::size_t>& optin_table() {
  static std::unordered_map<const void*, std::size_t> table;
  return table;
}

std::size_t stack_bytes() {
#if SIMT_ASAN
  std::uint64_t kb = env_u64("CONVKIT_SIM_STACK_KB", 512);  // ASan's redzones grow frames a lot
#else
  std::uint64_t kb = env_u64("CONVKIT_SIM_STACK_KB", 64);
#endif
  long page = sysconf(_SC_PAGESIZE);
  std::size_t bytes = std::max<std::uint64_t>(kb, 16) * 1024;
  return (bytes + page - 1) / page * page;
}

// splitmix64: small, fast, and good enough to shuffle a run queue.
struct Rng {
  std::uint64_t s;
  std::uint64_t next() {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  std::uint32_t below(std::uint32_t n) {  // uniform in [0, n)
    return static_cast<std::uint32_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
  }
};

std::uint64_t hash_str(const char* s) {  // FNV-1a
  std::uint64_t h = 1469598103934665603ull;
  for (; s && *s; ++s) h = (h ^ static_cast<unsigned char>(*s)) * 1099511628211ull;
  return h;
}

// ---- contexts ----------------------------------------------------------------------------------

struct Context {
#if SIMT_ASM_SWITCH
  void* sp = nullptr;  // saved stack pointer; the callee-saved registers sit on that stack
#else
  ucontext_t uc;
#endif
  // The stack this context runs on, for ASan's fiber annotations.
  const void* stack_lo = nullptr;
  std::size_t stack_size = 0;
  void* asan_fake = nullptr;
};

}  // namespace
}  // namespace simt

#if SIMT_ASM_SWITCH
extern "C" {
// simt_ctx_switch(save, to): pushes the callee-saved registers (and MXCSR / x87 control word,
// which the ABI also makes callee-saved), stores the stack pointer in *save, loads `to`, pops.
void simt_ctx_switch(void** save, void* to) __attribute__((visibility("hidden")));
// First code of a new fiber: r12 holds its Fiber*; calls simt_fiber_main, which never returns.
void simt_fiber_start() __attribute__((visibility("hidden")));
void simt_fiber_main(void* fiber) __attribute__((visibility("hidden"), used, noreturn));
}
asm(R"(
  .text
  .p2align 4
  .globl simt_ctx_switch
  .hidden simt_ctx_switch
  .type simt_ctx_switch,@function
simt_ctx_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size simt_ctx_switch, .-simt_ctx_switch

  .p2align 4
  .globl simt_fiber_start
  .hidden simt_fiber_start
  .type simt_fiber_start,@function
simt_fiber_start:
  .cfi_startproc
  .cfi_undefined rip
  movq %r12, %rdi
  call simt_fiber_main
  ud2
  .cfi_endproc
  .size simt_fiber_start, .-simt_fiber_start
)");
#endif

namespace simt {
namespace {

// ---- fibers, blocks, workers -------------------------------------------------------------------

enum class State : std::uint8_t { Runnable, Running, AtBarrier, AtWarp, Done };

struct Worker;

struct Fiber : ThreadCtx {
  Context ctx;
  Worker* worker = nullptr;
  State state = State::Done;
  int linear = 0;  // x + y * bx + z * bx * by
  int lane = 0;
  int warp = 0;
  // barrier
  const char* bar_file = nullptr;
  int bar_line = 0;
  // warp meeting
  WarpOp wop = WarpOp::SyncWarp;
  unsigned wmask = 0;
  int warg = 0;
  int wwidth = 32;
  std::uint64_t wval = 0;
  std::uint64_t wres = 0;
  int wpred = 0;
  const char* wfile = nullptr;
  int wline = 0;
};

// Lanes of one warp that meet at a warp operation with one mask.
struct Meeting {
  bool active = false;
  WarpOp op = WarpOp::SyncWarp;
  unsigned mask = 0;
  unsigned arrived = 0;
  const char* file = nullptr;
  int line = 0;
};

struct Warp {
  unsigned exists = 0;  // lanes this block has in the warp
  unsigned exited = 0;
  std::vector<Meeting> meetings;  // at most 32 active at once (each lane waits in at most one)
};

struct SharedArray {
  const void* tag;
  void* ptr;
  std::size_t bytes;
};

struct Launch {
  const char* name;
  dim3 grid, block;
  std::size_t dyn_smem;
  std::size_t optin;       // the kernel's opted-in dynamic shared memory maximum, 0 without
  const std::function<void()>* body;
  std::uint64_t seed_base;
  int nthreads;
  std::atomic<bool> stop{false};
  std::mutex error_mutex;
  std::uint64_t error_block = ~std::uint64_t{0};
  std::string error;
};

struct Block {
  Launch* launch = nullptr;
  BlockDims dims;
  std::uint64_t linear_id = 0;
  int nthreads = 0;
  Rng rng{0};
  // Run queue: a ring of runnable fibers (each at most once).
  std::vector<Fiber*> ring;
  std::size_t head = 0, count = 0;
  int n_done = 0;
  int n_at_barrier = 0;
  int n_at_warp = 0;
  int barrier_count = 0;      // predicates set, for __syncthreads_count/and/or
  int barrier_result = 0;     // count of the last released barrier
  const Fiber* barrier_first = nullptr;  // first thread to wait at the current barrier
  std::vector<Warp> warps;
  bool failed = false;
  std::string error;
  std::vector<SharedArray> statics;
  std::size_t static_bytes = 0;
  void* dynamic = nullptr;
  std::uint64_t switches = 0, barriers = 0, warp_ops = 0;
};

struct StackRegion {
  void* base;
  std::size_t bytes;
};

// Per OS thread: fiber stacks (allocated once, reused by every block and launch), the fibers and
// the block being run.
struct Worker {
  Context main;
  std::size_t stack_size = stack_bytes();
  std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  std::vector<StackRegion> regions;
  std::vector<char*> stacks;  // low end (above the guard page) of each fiber stack
  std::vector<Fiber> fibers;
  Block block;

  Worker() {
#if SIMT_ASAN
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      void* lo = nullptr;
      std::size_t size = 0;
      pthread_attr_getstack(&attr, &lo, &size);
      main.stack_lo = lo;
      main.stack_size = size;
      pthread_attr_destroy(&attr);
    }
#endif
  }
  ~Worker() {
    for (const StackRegion& r : regions) munmap(r.base, r.bytes);
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Makes sure there are n fiber stacks, each with a PROT_NONE guard page below it.
  bool ensure_stacks(int n) {
    if (static_cast<int>(stacks.size()) >= n) return true;
    std::size_t more = static_cast<std::size_t>(n) - stacks.size();
    std::size_t each = stack_size + page;
    std::size_t bytes = more * each;
    void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
                      -1, 0);
    if (base == MAP_FAILED) return false;
    regions.push_back({base, bytes});
    for (std::size_t i = 0; i < more; ++i) {
      char* guard = static_cast<char*>(base) + i * each;
      mprotect(guard, page, PROT_NONE);
      stacks.push_back(guard + page);
    }
    if (fibers.size() < stacks.size()) fibers.resize(stacks.size());  // only between blocks
    return true;
  }
};

Worker& this_worker() {
  thread_local std::unique_ptr<Worker> w(new Worker());
  return *w;
}

inline Fiber* current_fiber() { return static_cast<Fiber*>(detail::tls_thread); }

std::string fmt_dim(const uint3& d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}
std::string fmt_dim(const dim3& d) { return fmt_dim(static_cast<uint3>(d)); }

std::string fmt_hex(std::uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

const char* base_name(const char* path) {
  const char* s = std::strrchr(path, '/');
  return s ? s + 1 : path;
}

std::string fmt_site(const char* file, int line) {
  return std::string(base_name(file)) + ":" + std::to_string(line);
}

std::string thread_name(const Fiber* f) { return "thread " + fmt_dim(f->thread_idx); }

std::string where(const Block& b) {
  return std::string(b.launch->name) + " block " + fmt_dim(b.dims.block_idx);
}

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::ShflIdx: return "__shfl_sync";
    case WarpOp::ShflUp: return "__shfl_up_sync";
    case WarpOp::ShflDown: return "__shfl_down_sync";
    case WarpOp::ShflXor: return "__shfl_xor_sync";
    case WarpOp::Ballot: return "__ballot_sync";
    case WarpOp::Any: return "__any_sync";
    case WarpOp::All: return "__all_sync";
    case WarpOp::SyncWarp: return "__syncwarp";
    case WarpOp::MatchAny: return "__match_any_sync";
    case WarpOp::MatchAll: return "__match_all_sync";
    case WarpOp::ReduceAddI: case WarpOp::ReduceAddU: return "__reduce_add_sync";
    case WarpOp::ReduceMinI: case WarpOp::ReduceMinU: return "__reduce_min_sync";
    case WarpOp::ReduceMaxI: case WarpOp::ReduceMaxU: return "__reduce_max_sync";
    case WarpOp::ReduceAnd: return "__reduce_and_sync";
    case WarpOp::ReduceOr: return "__reduce_or_sync";
    case WarpOp::ReduceXor: return "__reduce_xor_sync";
  }
  return "warp op";
}

// What a thread is doing, for error messages.
std::string describe(const Fiber& f) {
  switch (f.state) {
    case State::Done: return "has exited";
    case State::AtBarrier: return "waits at __syncthreads() at " + fmt_site(f.bar_file, f.bar_line);
    case State::AtWarp:
      return std::string("waits at ") + op_name(f.wop) + "(mask " + fmt_hex(f.wmask) + ") at " +
             fmt_site(f.wfile, f.wline);
    default: return "is running";
  }
}

// ---- switching ---------------------------------------------------------------------------------

inline void jump(Block& b, Context& from, Context& to, bool from_exits) {
  ++b.switches;
#if SIMT_ASAN
  if (from_exits && from.stack_lo) {
    // The frames alive now never return, so their redzones would stay poisoned on a stack the
    // next block reuses: unpoison from a little below this frame to the top.
    char* lo = static_cast<char*>(__builtin_frame_address(0)) - 4096;
    char* stack_lo = static_cast<char*>(const_cast<void*>(from.stack_lo));
    if (lo < stack_lo) lo = stack_lo;
    __asan_unpoison_memory_region(lo, static_cast<std::size_t>(stack_lo + from.stack_size - lo));
  }
  __sanitizer_start_switch_fiber(from_exits ? nullptr : &from.asan_fake, to.stack_lo, to.stack_size);
#endif
#if SIMT_ASM_SWITCH
  simt_ctx_switch(&from.sp, to.sp);
#else
  swapcontext(&from.uc, &to.uc);
#endif
#if SIMT_ASAN
  __sanitizer_finish_switch_fiber(from.asan_fake, nullptr, nullptr);
#endif
  (void)from_exits;
}

Block& block_of(Fiber* f) { return f->worker->block; }

// Leaves fiber f (blocked, finished or failed) for the next runnable fiber of its block, or for
// the scheduler when there is none. Returns when f is resumed (never if f exits or failed).
void leave(Fiber* f, bool exits) {
  Worker& w = *f->worker;
  Block& b = w.block;
  if (b.count > 0 && !b.failed) {
    Fiber* next = b.ring[b.head];
    b.head = (b.head + 1 == b.ring.size()) ? 0 : b.head + 1;
    --b.count;
    next->state = State::Running;
    detail::tls_thread = next;
    jump(b, f->ctx, next->ctx, exits);
  } else {
    detail::tls_thread = nullptr;
    jump(b, f->ctx, w.main, exits);
  }
}

// Records an error of the running fiber's block (b.error already set) and abandons the fiber.
[[noreturn]] void abandon(Fiber* f) {
  Block& b = block_of(f);
  b.failed = true;
  leave(f, true);
  __builtin_unreachable();
}

// Makes f runnable at a random place in the run queue.
void make_runnable(Block& b, Fiber* f) {
  f->state = State::Runnable;
  std::size_t cap = b.ring.size();
  std::size_t tail = b.head + b.count;
  if (tail >= cap) tail -= cap;
  b.ring[tail] = f;
  ++b.count;
  std::size_t k = b.head + b.rng.below(static_cast<std::uint32_t>(b.count));
  if (k >= cap) k -= cap;
  std::swap(b.ring[k], b.ring[tail]);
}

// Fills the run queue with every fiber, shuffled (block start and barrier release).
void queue_all_shuffled(Block& b, Fiber* fibers) {
  b.head = 0;
  b.count = static_cast<std::size_t>(b.nthreads);
  for (int i = 0; i < b.nthreads; ++i) {
    std::uint32_t j = b.rng.below(static_cast<std::uint32_t>(i + 1));
    b.ring[i] = b.ring[j];
    b.ring[j] = &fibers[i];
    fibers[i].state = State::Runnable;
  }
}

bool same_site(const char* f1, int l1, const char* f2, int l2) {
  return l1 == l2 && (f1 == f2 || std::strcmp(f1, f2) == 0);
}

void init_context(Worker& w, Fiber& f, char* stack_lo);

}  // namespace
}  // namespace simt

// ---- the fiber's first frame ---------------------------------------------------------------------

namespace simt {
namespace {
[[noreturn]] void run_fiber_body(simt::Fiber* f);
}
}  // namespace simt

#if SIMT_ASM_SWITCH
extern "C" void simt_fiber_main(void* p) { simt::run_fiber_body(static_cast<simt::Fiber*>(p)); }
#else
static void simt_fiber_entry_uc(unsigned lo, unsigned hi) {
  std::uintptr_t p = (static_cast<std::uintptr_t>(hi) << 32) | lo;
  simt::run_fiber_body(reinterpret_cast<simt::Fiber*>(p));
}
#endif

namespace simt {
namespace {

[[noreturn]] void thread_exits(Fiber* f);

void run_fiber_body(Fiber* f) {
#if SIMT_ASAN
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
  Block& b = block_of(f);
  bool threw = false;
  std::string what;
  try {
    (*b.launch->body)();
  } catch (const std::exception& e) {
    threw = true;
    what = e.what();
  } catch (...) {
    threw = true;
    what = "unknown exception";
  }
  if (threw) {  // outside the handler: the fiber is abandoned, the handler would never end
    b.error = "exception in " + where(b) + " " + thread_name(f) + ": " + what;
    std::string().swap(what);
    abandon(f);
  }
  thread_exits(f);
}

void init_context(Worker& w, Fiber& f, char* stack_lo) {
  f.ctx.stack_lo = stack_lo;
  f.ctx.stack_size = w.stack_size;
#if SIMT_ASM_SWITCH
  // Initial frame, popped by simt_ctx_switch: mxcsr/fpucw, r15, r14, r13, r12 (= the Fiber*),
  // rbx, rbp (= 0, ends frame-pointer walks), return address simt_fiber_start; 16 bytes spare
  // above so the call in simt_fiber_start sees a 16-byte aligned stack.
  auto top = reinterpret_cast<std::uintptr_t>(stack_lo + w.stack_size) & ~std::uintptr_t{15};
  auto* sp = reinterpret_cast<std::uint64_t*>(top - 16 - 64);
  std::uint32_t mxcsr = 0;
  std::uint16_t fpucw = 0;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpucw));
  sp[0] = static_cast<std::uint64_t>(mxcsr) | (static_cast<std::uint64_t>(fpucw) << 32);
  sp[1] = 0;  // r15
  sp[2] = 0;  // r14
  sp[3] = 0;  // r13
  sp[4] = reinterpret_cast<std::uint64_t>(&f);  // r12
  sp[5] = 0;  // rbx
  sp[6] = 0;  // rbp
  sp[7] = reinterpret_cast<std::uint64_t>(&simt_fiber_start);
  f.ctx.sp = sp;
#else
  getcontext(&f.ctx.uc);
  f.ctx.uc.uc_stack.ss_sp = stack_lo;
  f.ctx.uc.uc_stack.ss_size = w.stack_size;
  f.ctx.uc.uc_link = nullptr;
  auto p = reinterpret_cast<std::uintptr_t>(&f);
  makecontext(&f.ctx.uc, reinterpret_cast<void (*)()>(&simt_fiber_entry_uc), 2,
              static_cast<unsigned>(p & 0xffffffffu), static_cast<unsigned>(p >> 32));
#endif
}

// ---- barriers ----------------------------------------------------------------------------------

[[noreturn]] void thread_exits(Fiber* f) {
  Block& b = block_of(f);
  f->state = State::Done;
  ++b.n_done;
  Warp& w = b.warps[f->warp];
  w.exited |= 1u << f->lane;
  if (b.n_at_barrier > 0) {
    b.error = "barrier divergence in " + where(b) + ": " + thread_name(f) + " has exited while " +
              thread_name(b.barrier_first) + " waits at __syncthreads() at " +
              fmt_site(b.barrier_first->bar_file, b.barrier_first->bar_line);
    abandon(f);
  }
  for (const Meeting& m : w.meetings) {
    if (m.active && (m.mask >> f->lane & 1u)) {
      b.error = "deadlock in " + where(b) + ": " + thread_name(f) + " (warp " + std::to_string(f->warp) +
                " lane " + std::to_string(f->lane) + ") has exited while lanes " + fmt_hex(m.arrived) +
                " wait for it at " + op_name(m.op) + "(mask " + fmt_hex(m.mask) + ") at " +
                fmt_site(m.file, m.line);
      abandon(f);
    }
  }
  leave(f, true);
  __builtin_unreachable();
}

}  // namespace

namespace detail {

int barrier(const char* file, int line, BarrierOp op, int pred) {
  Fiber* f = current_fiber();
  if (!f) throw LaunchError(std::string("__syncthreads() called outside a kernel at ") + fmt_site(file, line));
  Block& b = block_of(f);
  if (b.n_done > 0) {
    const Fiber* gone = nullptr;
    Fiber* fibers = f->worker->fibers.data();
    for (int i = 0; i < b.nthreads && !gone; ++i)
      if (fibers[i].state == State::Done) gone = &fibers[i];
    b.error = "barrier divergence in " + where(b) + ": " + thread_name(f) + " waits at __syncthreads() at " +
              fmt_site(file, line) + " but " + thread_name(gone) + " has exited";
    abandon(f);
  }
  if (b.n_at_barrier > 0 && !same_site(file, line, b.barrier_first->bar_file, b.barrier_first->bar_line)) {
    b.error = "barrier divergence in " + where(b) + ": " + thread_name(f) + " waits at __syncthreads() at " +
              fmt_site(file, line) + " while " + thread_name(b.barrier_first) + " waits at __syncthreads() at " +
              fmt_site(b.barrier_first->bar_file, b.barrier_first->bar_line);
    abandon(f);
  }
  f->bar_file = file;
  f->bar_line = line;
  if (b.n_at_barrier++ == 0) b.barrier_first = f;
  b.barrier_count += pred;
  f->state = State::AtBarrier;
  leave(f, false);
  // Released by the scheduler: every thread of the block arrived.
  switch (op) {
    case BarrierOp::Count: return b.barrier_result;
    case BarrierOp::And: return b.barrier_result == b.nthreads;
    case BarrierOp::Or: return b.barrier_result > 0;
    default: return 0;
  }
}

unsigned active_mask() {
  Fiber* f = current_fiber();
  if (!f) return 0;
  const Warp& w = block_of(f).warps[f->warp];
  return w.exists & ~w.exited;
}

// ---- warp meetings -------------------------------------------------------------------------------

namespace {

// Lane j's value as lane i of a shuffle reads it (PTX shfl.sync's rules: the segment of `width`
// lanes, out-of-segment sources read the lane's own value; sources outside the mask are poison).
std::uint64_t shuffle_result(const Fiber* lanes, unsigned mask, int i, WarpOp op, int arg, int width) {
  const int seg = 32 - width;  // lane bits that select the segment
  const int min_lane = i & seg;
  const int max_lane = min_lane | (31 & ~seg);
  const int b = arg & 31;
  int j = i;
  switch (op) {
    case WarpOp::ShflIdx: j = min_lane | (b & ~seg); break;
    case WarpOp::ShflUp: j = i - b; if (j < min_lane) j = i; break;
    case WarpOp::ShflDown: j = i + b; if (j > max_lane) j = i; break;
    case WarpOp::ShflXor: j = i ^ b; if (j > max_lane) j = i; break;
    default: break;
  }
  return (mask >> j & 1u) ? lanes[j].wval : kPoison;
}

// Every lane of a complete meeting gets its result (lanes: the warp's fibers, index = lane).
void complete_meeting(Fiber* lanes, const Meeting& m) {
  unsigned mask = m.mask;
  switch (m.op) {
    case WarpOp::ShflIdx: case WarpOp::ShflUp: case WarpOp::ShflDown: case WarpOp::ShflXor:
      for (unsigned r = mask; r; r &= r - 1) {
        int i = __builtin_ctz(r);
        lanes[i].wres = shuffle_result(lanes, mask, i, m.op, lanes[i].warg, lanes[i].wwidth);
      }
      return;
    case WarpOp::SyncWarp: return;
    default: break;
  }
  // Reductions over the lanes of the mask.
  std::uint64_t result = 0;
  switch (m.op) {
    case WarpOp::Ballot: case WarpOp::Any: case WarpOp::All: {
      unsigned ballot = 0;
      for (unsigned r = mask; r; r &= r - 1) {
        int i = __builtin_ctz(r);
        if (lanes[i].wval) ballot |= 1u << i;
      }
      result = m.op == WarpOp::Ballot ? ballot : m.op == WarpOp::Any ? (ballot != 0) : (ballot == mask);
      break;
    }
    case WarpOp::MatchAny:
      for (unsigned r = mask; r; r &= r - 1) {
        int i = __builtin_ctz(r);
        unsigned same = 0;
        for (unsigned q = mask; q; q &= q - 1) {
          int k = __builtin_ctz(q);
          if (lanes[k].wval == lanes[i].wval) same |= 1u << k;
        }
        lanes[i].wres = same;
      }
      return;
    case WarpOp::MatchAll: {
      bool all_same = true;
      std::uint64_t first = lanes[__builtin_ctz(mask)].wval;
      for (unsigned r = mask; r; r &= r - 1) all_same &= lanes[__builtin_ctz(r)].wval == first;
      for (unsigned r = mask; r; r &= r - 1) {
        int i = __builtin_ctz(r);
        lanes[i].wres = all_same ? mask : 0;
        lanes[i].wpred = all_same;
      }
      return;
    }
    default: {
      bool is_signed = m.op == WarpOp::ReduceAddI || m.op == WarpOp::ReduceMinI || m.op == WarpOp::ReduceMaxI;
      std::int64_t acc_s = 0;
      std::uint64_t acc_u = 0;
      bool first = true;
      for (unsigned r = mask; r; r &= r - 1) {
        std::uint32_t u = static_cast<std::uint32_t>(lanes[__builtin_ctz(r)].wval);
        std::int32_t s = static_cast<std::int32_t>(u);
        switch (m.op) {
          case WarpOp::ReduceAddI: case WarpOp::ReduceAddU: acc_u += u; break;
          case WarpOp::ReduceMinI: acc_s = first ? s : std::min<std::int64_t>(acc_s, s); break;
          case WarpOp::ReduceMaxI: acc_s = first ? s : std::max<std::int64_t>(acc_s, s); break;
          case WarpOp::ReduceMinU: acc_u = first ? u : std::min<std::uint64_t>(acc_u, u); break;
          case WarpOp::ReduceMaxU: acc_u = first ? u : std::max<std::uint64_t>(acc_u, u); break;
          case WarpOp::ReduceAnd: acc_u = first ? u : (acc_u & u); break;
          case WarpOp::ReduceOr: acc_u |= u; break;
          case WarpOp::ReduceXor: acc_u ^= u; break;
          default: break;
        }
        first = false;
      }
      std::uint32_t r32 = (is_signed && m.op != WarpOp::ReduceAddI) ? static_cast<std::uint32_t>(acc_s)
                                                                     : static_cast<std::uint32_t>(acc_u);
      result = r32;
      break;
    }
  }
  for (unsigned r = mask; r; r &= r - 1) lanes[__builtin_ctz(r)].wres = result;
}

bool is_shuffle(WarpOp op) {
  return op == WarpOp::ShflIdx || op == WarpOp::ShflUp || op == WarpOp::ShflDown || op == WarpOp::ShflXor;
}

}  // namespace

std::uint64_t warp_meet(const char* file, int line, WarpOp op, unsigned mask, std::uint64_t value, int arg,
                        int width, int* pred_out) {
  Fiber* f = current_fiber();
  if (!f) throw LaunchError(std::string(op_name(op)) + " called outside a kernel at " + fmt_site(file, line));
  Block& b = block_of(f);
  Warp& w = b.warps[f->warp];
  const unsigned me = 1u << f->lane;
  auto fail = [&](const std::string& why) {
    b.error = std::string(op_name(op)) + " in " + where(b) + " " + thread_name(f) + " (warp " +
              std::to_string(f->warp) + " lane " + std::to_string(f->lane) + ") at " + fmt_site(file, line) +
              ": " + why;
    abandon(f);
  };
  if (!(mask & me)) fail("mask " + fmt_hex(mask) + " does not include the calling lane");
  if (mask & ~w.exists)
    fail("mask " + fmt_hex(mask) + " names lanes " + fmt_hex(mask & ~w.exists) + " that this block (" +
         std::to_string(b.nthreads) + " threads) does not have");
  if (mask & w.exited) fail("mask " + fmt_hex(mask) + " names lanes " + fmt_hex(mask & w.exited) + " that have exited");
  if (is_shuffle(op) && (width < 1 || width > 32 || (width & (width - 1))))
    fail("width " + std::to_string(width) + " is not a power of two in [1, 32]");

  f->wop = op;
  f->wmask = mask;
  f->warg = arg;
  f->wwidth = width;
  f->wval = value;
  f->wfile = file;
  f->wline = line;

  Meeting* m = nullptr;
  Meeting* free_slot = nullptr;
  for (Meeting& cand : w.meetings) {
    if (cand.active && cand.mask == mask) {
      m = &cand;
      break;
    }
    if (!cand.active && !free_slot) free_slot = &cand;
  }
  if (m) {
    if (m->op != op)
      fail(std::string("lanes of mask ") + fmt_hex(mask) + " meet at different warp operations: " + op_name(m->op) +
           " at " + fmt_site(m->file, m->line) + " and " + op_name(op));
  } else {
    if (!free_slot) {
      w.meetings.emplace_back();
      free_slot = &w.meetings.back();
    }
    m = free_slot;
    m->active = true;
    m->op = op;
    m->mask = mask;
    m->arrived = 0;
    m->file = file;
    m->line = line;
  }
  m->arrived |= me;
  if (m->arrived != mask) {
    f->state = State::AtWarp;
    ++b.n_at_warp;
    leave(f, false);
  } else {
    // Last to arrive: compute every lane's result, wake the others, keep running.
    Fiber* lanes = f - f->lane;
    complete_meeting(lanes, *m);
    m->active = false;
    ++b.warp_ops;
    for (unsigned r = mask & ~me; r; r &= r - 1) {
      Fiber* other = &lanes[__builtin_ctz(r)];
      --b.n_at_warp;
      make_runnable(b, other);
    }
  }
  if (pred_out) *pred_out = f->wpred;
  return f->wres;
}

// ---- misaligned accesses -------------------------------------------------------------------------

void misaligned(const void* p, std::size_t align, const char* what) {
  Fiber* f = current_fiber();
  if (!f)
    throw LaunchError(std::string("misaligned address: ") + what + " of " + fmt_hex(reinterpret_cast<std::uintptr_t>(p)) +
                      " (needs " + std::to_string(align) + "-byte alignment)");
  Block& b = block_of(f);
  b.error = std::string("misaligned address in ") + where(b) + " " + thread_name(f) + ": " + what + " of " +
            fmt_hex(reinterpret_cast<std::uintptr_t>(p)) + " (needs " + std::to_string(align) + "-byte alignment)";
  abandon(f);
}

}  // namespace detail

// ---- shared memory -------------------------------------------------------------------------------

namespace {

void* alloc_poisoned(std::size_t bytes, std::size_t align) {
  void* p = nullptr;
  if (posix_memalign(&p, std::max<std::size_t>(align, 16), bytes) != 0) return nullptr;
  std::memset(p, 0xFF, bytes);
  return p;
}

void free_shared(Block& b) {
  for (const SharedArray& s : b.statics) std::free(s.ptr);
  b.statics.clear();
  b.static_bytes = 0;
  std::free(b.dynamic);
  b.dynamic = nullptr;
}

}  // namespace

void* static_shared(const void* tag, std::size_t bytes, std::size_t align, const char* name) {
  Fiber* f = current_fiber();
  if (!f) throw LaunchError(std::string("shared array '") + name + "' declared outside a kernel");
  Block& b = block_of(f);
  for (const SharedArray& s : b.statics)
    if (s.tag == tag) return s.ptr;
  // The GPU's rules, checked when the static size becomes known: static at most 48 KiB; without
  // opt-in, static + dynamic at most 48 KiB; with it, static + the opted-in dynamic maximum at
  // most 227 KiB (cudaFuncSetAttribute refuses more).
  const Launch& L = *b.launch;
  const std::size_t total = b.static_bytes + bytes;
  const std::string statics = "static shared memory " + std::to_string(total) + " bytes (with '" + name + "')";
  std::string over;
  if (total > kSmemDefault)
    over = statics + " exceeds " + std::to_string(kSmemDefault) + " bytes";
  else if (!L.optin && total + L.dyn_smem > kSmemDefault)
    over = statics + " + dynamic " + std::to_string(L.dyn_smem) + " bytes exceeds " + std::to_string(kSmemDefault) +
           " bytes without opt-in (set_max_dynamic_smem)";
  else if (L.optin && total + L.optin > kSmemOptin)
    over = statics + " + the kernel's opted-in dynamic maximum " + std::to_string(L.optin) + " bytes exceeds " +
           std::to_string(kSmemOptin) + " bytes (a GPU refuses that opt-in)";
  if (!over.empty()) {
    b.error = "shared memory over limit in " + where(b) + ": " + over;
    std::string().swap(over);
    abandon(f);
  }
  void* p = alloc_poisoned(bytes, align);
  if (!p) {
    b.error = "out of host memory for shared array '" + std::string(name) + "' in " + where(b);
    abandon(f);
  }
  b.statics.push_back({tag, p, bytes});
  b.static_bytes = total;
  return p;
}

void* dynamic_shared() {
  Fiber* f = current_fiber();
  if (!f) throw LaunchError("dynamic shared memory used outside a kernel");
  return block_of(f).dynamic;
}

// ---- the block scheduler -------------------------------------------------------------------------

namespace {

std::string deadlock_message(Block& b, Fiber* fibers) {
  // The first waiting lane (by thread index) and the lanes its meeting still waits for.
  for (int i = 0; i < b.nthreads; ++i) {
    Fiber& f = fibers[i];
    if (f.state != State::AtWarp) continue;
    std::string msg = "deadlock in " + where(b) + ": " + thread_name(&f) + " (warp " + std::to_string(f.warp) +
                      " lane " + std::to_string(f.lane) + ") " + describe(f);
    const Warp& w = b.warps[f.warp];
    for (const Meeting& m : w.meetings) {
      if (!m.active || m.mask != f.wmask) continue;
      unsigned missing = m.mask & ~m.arrived;
      msg += "; lanes " + fmt_hex(missing) + " never arrive:";
      int shown = 0;
      for (unsigned r = missing; r && shown < 4; r &= r - 1, ++shown) {
        const Fiber& o = fibers[f.warp * 32 + __builtin_ctz(r)];
        msg += " lane " + std::to_string(o.lane) + " " + describe(o) + (shown < 3 && (r & (r - 1)) ? "," : "");
      }
      break;
    }
    return msg;
  }
  return "deadlock in " + where(b) + ": no thread can run";
}

// Runs block `linear_id` of launch L on this OS thread; false when it failed (error in L).
bool run_block(Worker& w, Launch& L, std::uint64_t linear_id) {
  Block& b = w.block;
  const int n = L.nthreads;
  b.launch = &L;
  b.linear_id = linear_id;
  b.nthreads = n;
  b.dims.grid_dim = L.grid;
  b.dims.block_dim = L.block;
  b.dims.block_idx.x = static_cast<unsigned>(linear_id % L.grid.x);
  b.dims.block_idx.y = static_cast<unsigned>(linear_id / L.grid.x % L.grid.y);
  b.dims.block_idx.z = static_cast<unsigned>(linear_id / (static_cast<std::uint64_t>(L.grid.x) * L.grid.y));
  b.rng.s = L.seed_base ^ (linear_id * 0xD1B54A32D192ED03ull);
  b.rng.next();
  b.n_done = b.n_at_barrier = b.n_at_warp = 0;
  b.barrier_count = b.barrier_result = 0;
  b.barrier_first = nullptr;
  b.failed = false;
  b.error.clear();
  b.switches = b.barriers = b.warp_ops = 0;
  if (b.ring.size() != static_cast<std::size_t>(n)) b.ring.assign(n, nullptr);
  const int nwarps = (n + 31) / 32;
  b.warps.resize(nwarps);
  for (int i = 0; i < nwarps; ++i) {
    Warp& wp = b.warps[i];
    int lanes = std::min(32, n - i * 32);
    wp.exists = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
    wp.exited = 0;
    for (Meeting& m : wp.meetings) m.active = false;
  }
  b.dynamic = alloc_poisoned(L.dyn_smem, 16);

  Fiber* fibers = w.fibers.data();
  const unsigned bx = L.block.x, by = L.block.y;
  for (int i = 0; i < n; ++i) {
    Fiber& f = fibers[i];
    f.worker = &w;
    f.dims = &b.dims;
    f.linear = i;
    f.lane = i & 31;
    f.warp = i >> 5;
    f.thread_idx.x = i % bx;
    f.thread_idx.y = (i / bx) % by;
    f.thread_idx.z = i / (bx * by);
    f.wres = 0;
    f.wpred = 0;
    init_context(w, f, w.stacks[i]);
  }
  queue_all_shuffled(b, fibers);

  for (;;) {
    if (b.count > 0) {
      Fiber* next = b.ring[b.head];
      b.head = (b.head + 1 == b.ring.size()) ? 0 : b.head + 1;
      --b.count;
      next->state = State::Running;
      detail::tls_thread = next;
      jump(b, w.main, next->ctx, false);
      detail::tls_thread = nullptr;
      if (b.failed) break;
      continue;
    }
    // Nothing runnable: the block finished, or every live thread waits somewhere.
    if (b.n_done == n) break;
    if (b.n_at_warp > 0) {
      b.error = deadlock_message(b, fibers);
      b.failed = true;
      break;
    }
    // All live threads wait at one barrier (divergence was caught on arrival): release it.
    b.barrier_result = b.barrier_count;
    b.barrier_count = 0;
    b.n_at_barrier = 0;
    b.barrier_first = nullptr;
    ++b.barriers;
    queue_all_shuffled(b, fibers);
  }

#if SIMT_ASAN
  // Abandoned fibers leave their frames' redzones poisoned; the stacks are reused.
  if (b.failed)
    for (int i = 0; i < n; ++i)
      if (fibers[i].state != State::Done) __asan_unpoison_memory_region(w.stacks[i], w.stack_size);
#endif
  free_shared(b);
  g_counters.blocks.fetch_add(1, std::memory_order_relaxed);
  g_counters.threads.fetch_add(static_cast<std::uint64_t>(n), std::memory_order_relaxed);
  g_counters.switches.fetch_add(b.switches, std::memory_order_relaxed);
  g_counters.barriers.fetch_add(b.barriers, std::memory_order_relaxed);
  g_counters.warp_ops.fetch_add(b.warp_ops, std::memory_order_relaxed);
  if (b.failed) {
    std::lock_guard<std::mutex> lock(L.error_mutex);
    if (linear_id < L.error_block) {
      L.error_block = linear_id;
      L.error = b.error;
    }
    L.stop.store(true, std::memory_order_relaxed);
  }
  b.launch = nullptr;
  return !b.failed;
}

// Runs one block, catching host-side failures (stack allocation) as the launch's error.
void run_block_checked(Launch& L, std::uint64_t linear_id) {
  std::string err;
  try {
    Worker& w = this_worker();
    if (!w.ensure_stacks(L.nthreads)) {
      err = "cannot allocate fiber stacks";
    } else {
      run_block(w, L, linear_id);
      return;
    }
  } catch (const std::exception& e) {
    err = e.what();
  }
  std::lock_guard<std::mutex> lock(L.error_mutex);
  if (linear_id < L.error_block) {
    L.error_block = linear_id;
    L.error = std::string(L.name) + ": " + err;
  }
  L.stop.store(true, std::memory_order_relaxed);
}

std::string config_string(const char* name, dim3 grid, dim3 block, std::size_t smem) {
  return std::string(name) + " <<<" + fmt_dim(grid) + ", " + fmt_dim(block) + ", " + std::to_string(smem) + ">>>";
}

}  // namespace

// ---- host API ------------------------------------------------------------------------------------

namespace {
// The SMs the emulator reports (an H100 SXM's 132 unless set_sm_count changed it).
std::atomic<int> g_sm_count{132};
}  // namespace

DeviceProps device_props() {
  return DeviceProps{g_sm_count.load(std::memory_order_relaxed), 1024, kSmemDefault, kSmemOptin};
}

void set_sm_count(int n) {
  if (n < 1 || n > 1 << 16) throw LaunchError("set_sm_count: " + std::to_string(n) + " SMs is not in 1..65536");
  g_sm_count = n;
}

int sm_count() { return g_sm_count.load(std::memory_order_relaxed); }

void set_max_dynamic_smem(const void* kernel, std::size_t bytes) {
  if (bytes > kSmemOptin)
    throw LaunchError("set_max_dynamic_smem: " + std::to_string(bytes) + " bytes exceeds the device's opt-in maximum of " +
                      std::to_string(kSmemOptin) + " bytes (cudaErrorInvalidValue)");
  std::lock_guard<std::mutex> lock(g_optin_mutex);
  optin_table()[kernel] = bytes;
}

void launch(const char* name, const void* kernel, dim3 grid, dim3 block, std::size_t dynamic_smem, void* stream,
            const std::function<void()>& body) {
  (void)stream;
  if (detail::tls_thread)
    throw LaunchError(std::string("launch of ") + name + " from inside a kernel (dynamic parallelism) is not emulated");
  auto refuse = [&](const std::string& why) {
    throw LaunchError("launch of " + config_string(name, grid, block, dynamic_smem) +
                      " refused: " + why + " (cudaErrorInvalidConfiguration)");
  };
  const std::uint64_t nthreads = static_cast<std::uint64_t>(block.x) * block.y * block.z;
  if (nthreads == 0) refuse("a block has no threads");
  if (nthreads > 1024) refuse(std::to_string(nthreads) + " threads per block exceed 1024");
  if (block.x > 1024 || block.y > 1024) refuse("blockDim.x and .y are at most 1024");
  if (block.z > 64) refuse("blockDim.z " + std::to_string(block.z) + " exceeds 64");
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) refuse("an empty grid");
  if (grid.x > 2147483647u) refuse("gridDim.x " + std::to_string(grid.x) + " exceeds 2^31-1");
  if (grid.y > 65535) refuse("gridDim.y " + std::to_string(grid.y) + " exceeds 65535");
  if (grid.z > 65535) refuse("gridDim.z " + std::to_string(grid.z) + " exceeds 65535");
  std::size_t optin = 0;
  {
    std::lock_guard<std::mutex> lock(g_optin_mutex);
    auto it = optin_table().find(kernel);
    if (it != optin_table().end()) optin = it->second;
  }
  const std::size_t dyn_limit = optin ? optin : kSmemDefault;
  if (dynamic_smem > dyn_limit)
    refuse("dynamic shared memory " + std::to_string(dynamic_smem) + " bytes exceeds " + std::to_string(dyn_limit) +
           (optin ? " (the kernel's opt-in maximum)" : " without opt-in (set_max_dynamic_smem)"));

  Launch L;
  L.name = name;
  L.grid = grid;
  L.block = block;
  L.dyn_smem = dynamic_smem;
  L.optin = optin;
  L.body = &body;
  L.nthreads = static_cast<int>(nthreads);
  L.seed_base = Rng{g_seed.load(std::memory_order_relaxed) ^ hash_str(name)}.next();

  const std::uint64_t nblocks = static_cast<std::uint64_t>(grid.x) * grid.y * grid.z;
  const int workers = static_cast<int>(std::min<std::uint64_t>(static_cast<std::uint64_t>(num_workers()), nblocks));
  g_counters.launches.fetch_add(1, std::memory_order_relaxed);
  if (workers <= 1) {
    for (std::uint64_t i = 0; i < nblocks && !L.stop.load(std::memory_order_relaxed); ++i) run_block_checked(L, i);
  } else {
    const long long nb = static_cast<long long>(nblocks);
#pragma omp parallel for num_threads(workers) schedule(dynamic, 1)
    for (long long i = 0; i < nb; ++i) {
      if (L.stop.load(std::memory_order_relaxed)) continue;
      run_block_checked(L, static_cast<std::uint64_t>(i));
    }
  }
  if (L.stop.load()) throw LaunchError(L.error);
}

void set_seed(std::uint64_t s) { g_seed.store(s); }
std::uint64_t seed() { return g_seed.load(); }

void set_num_workers(int n) {
  if (n < 1) throw LaunchError("set_num_workers: need at least 1 worker, got " + std::to_string(n));
  g_workers.store(std::min(n, 256));
}
int num_workers() { return g_forked.load() ? 1 : g_workers.load(); }

Counters counters() {
  return Counters{g_counters.launches.load(), g_counters.blocks.load(), g_counters.threads.load(),
                  g_counters.switches.load(), g_counters.barriers.load(), g_counters.warp_ops.load()};
}

void reset_counters() {
  g_counters.launches = 0;
  g_counters.blocks = 0;
  g_counters.threads = 0;
  g_counters.switches = 0;
  g_counters.barriers = 0;
  g_counters.warp_ops = 0;
}

}  // namespace simt
