// The CUDA emulator's internals shared by its two sources: fiber.cpp (contexts, fiber stacks,
// switching, the per-block scheduler and the worker threads that run a launch's blocks) and
// simt.cpp (CUDA's semantics on top of them: barriers, warp meetings and shuffles, shared memory,
// misaligned accesses, device limits, launch checks, and the error messages that name a
// thread). It holds the state of a fiber, a warp, a block and a launch, and the functions each
// file offers the other.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "sim/simt.h"

#if defined(__x86_64__) && !defined(SIMT_USE_UCONTEXT)
#define SIMT_ASM_SWITCH 1
#else
#define SIMT_ASM_SWITCH 0
#include <ucontext.h>
#endif

namespace simt::impl {

using detail::BarrierOp;
using detail::BlockDims;
using detail::ThreadCtx;
using detail::WarpOp;

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
  void* ptr;   // the allocation (what free_shared frees)
  void* data;  // the array: ptr plus the alignment skew (static_shared)
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
  bool racecheck = false;  // the race detector watches this launch (racecheck.h)
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
  std::size_t stack_size;
  std::size_t page;
  std::vector<StackRegion> regions;
  std::vector<char*> stacks;  // low end (above the guard page) of each fiber stack
  std::vector<Fiber> fibers;
  Block block;

  Worker();
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Makes sure there are n fiber stacks, each with a PROT_NONE guard page below it.
  bool ensure_stacks(int n);
};

inline Fiber* current_fiber() { return static_cast<Fiber*>(detail::tls_thread); }

inline Block& block_of(Fiber* f) { return f->worker->block; }

// ---- fiber.cpp: switching and running blocks --------------------------------------------------

// Leaves fiber f (blocked, finished or failed) for the next runnable fiber of its block, or for
// the scheduler when there is none. Returns when f is resumed (never if f exits or failed).
void leave(Fiber* f, bool exits);

// Records an error of the running fiber's block (b.error already set) and abandons the fiber.
[[noreturn]] void abandon(Fiber* f);

// Makes f runnable at a random place in the run queue.
void make_runnable(Block& b, Fiber* f);

// Runs every block of a checked launch on the workers; throws LaunchError with the error of the
// lowest failing block.
void run_blocks(Launch& L);

// ---- simt.cpp: what the scheduler asks of CUDA's semantics -------------------------------------

// A thread returns from the kernel: an error if its block waits at a barrier or its warp's lanes
// wait for it at a warp operation; else the fiber finishes.
[[noreturn]] void thread_exits(Fiber* f);

// Shared memory: a block's dynamic array (0xFF-filled), and freeing every array of a block.
void* alloc_poisoned(std::size_t bytes, std::size_t align);
void free_shared(Block& b);

// The error of a block whose live threads all wait and some at a warp operation.
std::string deadlock_message(Block& b, Fiber* fibers);

// Error-message pieces: "(x,y,z)", "0x..", "file.cu:line", "thread (x,y,z)", "kernel block
// (x,y,z)", a warp operation's CUDA name, and what a thread is doing.
std::string fmt_dim(const uint3& d);
std::string fmt_dim(const dim3& d);
std::string fmt_hex(std::uint64_t v);
std::string fmt_site(const char* file, int line);
std::string thread_name(const Fiber* f);
std::string where(const Block& b);
const char* op_name(WarpOp op);
std::string describe(const Fiber& f);

}  // namespace simt::impl
