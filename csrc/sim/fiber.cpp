// The CUDA emulator's fibers and scheduling. A launch runs its blocks on OpenMP threads (the
// workers); the CUDA threads of one block are fibers (a small context switch of our own on
// x86-64, ucontext elsewhere) on fiber stacks with guard pages, scheduled by a per-block
// scheduler that shuffles their order with a seeded PRNG and releases __syncthreads() barriers
// once every live thread waits at one (simt.cpp holds what the barriers and warp operations mean).
//
// Scheduling: a fiber runs until it blocks (barrier, warp meeting) or finishes, then switches
// straight to the next runnable fiber of its block; only when none is left does control go back
// to the block's scheduler, which releases the barrier (all live threads wait at the same one),
// finishes the block, or reports divergence / deadlock. Errors inside a fiber are recorded and
// the fiber jumps to the scheduler, never to be resumed: no C++ exception crosses a fiber switch.
#include <omp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sim/racecheck.h"
#include "sim/simt_internal.h"

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

namespace impl {
namespace {

// ---- configuration and counters ----------------------------------------------------------------

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

std::uint64_t hash_str(const char* s) {  // FNV-1a
  std::uint64_t h = 1469598103934665603ull;
  for (; s && *s; ++s) h = (h ^ static_cast<unsigned char>(*s)) * 1099511628211ull;
  return h;
}

}  // namespace
}  // namespace impl
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

namespace simt::impl {

// ---- fibers, workers -----------------------------------------------------------------------------

Worker::Worker() : stack_size(stack_bytes()), page(static_cast<std::size_t>(sysconf(_SC_PAGESIZE))) {
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

Worker::~Worker() {
  for (const StackRegion& r : regions) munmap(r.base, r.bytes);
}

bool Worker::ensure_stacks(int n) {
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

namespace {

Worker& this_worker() {
  thread_local std::unique_ptr<Worker> w(new Worker());
  return *w;
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

}  // namespace

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

[[noreturn]] void abandon(Fiber* f) {
  Block& b = block_of(f);
  b.failed = true;
  leave(f, true);
  __builtin_unreachable();
}

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

namespace {

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

[[noreturn]] void run_fiber_body(Fiber* f);
void init_context(Worker& w, Fiber& f, char* stack_lo);

}  // namespace
}  // namespace simt::impl

// ---- the fiber's first frame ---------------------------------------------------------------------

#if SIMT_ASM_SWITCH
extern "C" void simt_fiber_main(void* p) { simt::impl::run_fiber_body(static_cast<simt::impl::Fiber*>(p)); }
#else
static void simt_fiber_entry_uc(unsigned lo, unsigned hi) {
  std::uintptr_t p = (static_cast<std::uintptr_t>(hi) << 32) | lo;
  simt::impl::run_fiber_body(reinterpret_cast<simt::impl::Fiber*>(p));
}
#endif

namespace simt::impl {
namespace {

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

// ---- the block scheduler -------------------------------------------------------------------------

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
    f.async_copies.clear();
    f.async_done.clear();
    f.async_committed = 0;
    init_context(w, f, w.stacks[i]);
  }
  if (L.racecheck) rc::block_begin(b);
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
    if (L.racecheck) rc::barrier_released(b);
    queue_all_shuffled(b, fibers);
  }

#if SIMT_ASAN
  // Abandoned fibers leave their frames' redzones poisoned; the stacks are reused.
  if (b.failed)
    for (int i = 0; i < n; ++i)
      if (fibers[i].state != State::Done) __asan_unpoison_memory_region(w.stacks[i], w.stack_size);
#endif
  if (L.racecheck) rc::block_end(b);
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

}  // namespace

void run_blocks(Launch& L) {
  L.seed_base = Rng{g_seed.load(std::memory_order_relaxed) ^ hash_str(L.name)}.next();
  const std::uint64_t nblocks = static_cast<std::uint64_t>(L.grid.x) * L.grid.y * L.grid.z;
  const int workers = static_cast<int>(std::min<std::uint64_t>(static_cast<std::uint64_t>(num_workers()), nblocks));
  g_counters.launches.fetch_add(1, std::memory_order_relaxed);
  std::unique_lock<std::mutex> checked;
  if (rc::on()) {  // the race detector: one checked launch at a time, its blocks in order
    checked = rc::launch_lock();
    L.racecheck = true;
    rc::launch_begin(L);
  }
  if (L.racecheck || workers <= 1) {
    for (std::uint64_t i = 0; i < nblocks && !L.stop.load(std::memory_order_relaxed); ++i) run_block_checked(L, i);
  } else {
    const long long nb = static_cast<long long>(nblocks);
#pragma omp parallel for num_threads(workers) schedule(dynamic, 1)
    for (long long i = 0; i < nb; ++i) {
      if (L.stop.load(std::memory_order_relaxed)) continue;
      run_block_checked(L, static_cast<std::uint64_t>(i));
    }
  }
  const std::string races = L.racecheck ? rc::launch_end(L) : std::string();
  if (L.stop.load()) throw LaunchError(L.error);
  if (!races.empty()) throw LaunchError(races);
}

}  // namespace simt::impl

namespace simt {

using impl::g_counters;
using impl::g_forked;
using impl::g_seed;
using impl::g_workers;

// ---- host API: scheduling controls ---------------------------------------------------------------

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
