// What every CPU kernel shares about threads: the thread count (convkit.set_num_threads), the
// guard that keeps exceptions and Ctrl-C inside a parallel region, the per-call interrupt check
// the binding installs, the forked-child rule, and per-thread scratch (grown on demand, trimmed
// after a call that needed much). No pybind11 here: the binding plugs Python in through
// CallScope's check function.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <new>
#include <utility>

#include "common/error.h"

namespace convkit::cpu {

// The threads every kernel uses: what set_num_threads gave, else OpenMP's default; always 1 in a
// process forked from one that had loaded the module (libgomp's thread pool does not survive a
// fork: a parallel region in the child would wait for threads that no longer exist).
int num_threads();
// n in [0, kMaxThreads]; 0 restores OpenMP's default. Throws ValueError otherwise.
constexpr int kMaxThreads = 1024;
void set_num_threads(int n);
bool forked_child();

// ---- one kernel call: interrupt check -------------------------------------------------------
// The binding opens a CallScope on the calling thread around a kernel call. `check` (may be
// null) is polled by that thread between chunks of work, at most every kPollSeconds; when it
// returns true the call is cancelled: every thread of the kernel's parallel regions stops taking
// work, the regions end normally, and the kernel throws Interrupted on the calling thread.
// The destructor trims the per-thread scratch when the call left large buffers behind.
using InterruptCheck = bool (*)();
constexpr double kPollSeconds = 0.05;

struct CallState {
  InterruptCheck check = nullptr;
  std::atomic<bool> cancelled{false};
  int64_t next_poll_ns = 0;
};

class CallScope {
 public:
  explicit CallScope(InterruptCheck check);
  ~CallScope();
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;

 private:
  CallState state_;
  CallState* outer_;
};

// The call open on this thread, or null (worker threads, or a call from C++ without a scope).
CallState* current_call();
// On the calling thread: runs the call's check if kPollSeconds have passed since the last one,
// and cancels the call when it says so. Returns whether the call is cancelled.
bool poll_interrupt(CallState* call);

// ---- exceptions inside a parallel region -----------------------------------------------------
// Made on the thread that opens a parallel region; each thread runs its share of the work
// through run(), which skips the work once the region is stopping (a thread failed, or the call
// was cancelled), catches whatever the work throws (the first exception is kept), and, on the
// calling thread, polls the interrupt check. After the region, finish() rethrows the kept
// exception, or Interrupted for a cancelled call. No exception leaves the region.
//
//   ParallelGuard guard;
//   #pragma omp parallel for
//   for (...) guard.run([&] { ...; });
//   guard.finish();
//
// In the hottest loops (direct, winograd) the body is written out instead, `if
// (guard.should_stop()) continue;` first and whatever can throw inside try { } catch (...) {
// guard.fail(); }: GCC optimized direct's and winograd's kernels 5-25% worse when they were
// inlined into the lambda.
class ParallelGuard {
 public:
  ParallelGuard() : call_(current_call()) {}
  ParallelGuard(const ParallelGuard&) = delete;
  ParallelGuard& operator=(const ParallelGuard&) = delete;

  bool stopping() const {
    return failed_.load(std::memory_order_relaxed) ||
           (call_ && call_->cancelled.load(std::memory_order_relaxed));
  }

  // Inside a long piece of work, between its chunks: polls (on the calling thread) and says
  // whether to give up the rest.
  bool should_stop() { return (call_ && call_ == current_call() && poll_interrupt(call_)) || stopping(); }

  template <typename F>
  void run(F&& f) noexcept {
    if (!should_stop()) run_quiet(std::forward<F>(f));
  }

  // run() without the interrupt poll, for loops of many short iterations (pooling rows, ReLU
  // chunks): a failed thread still stops the others.
  template <typename F>
  void run_quiet(F&& f) noexcept {
    if (stopping()) return;
    try {
      f();
    } catch (...) {
      record(std::current_exception());
    }
  }

  // For a loop body written out in place: catch (...) { guard.fail(); } keeps the exception.
  void fail() noexcept { record(std::current_exception()); }

  void finish() {
    if (failed_.load(std::memory_order_acquire)) std::rethrow_exception(first_);
    if (call_ && call_->cancelled.load(std::memory_order_relaxed)) throw Interrupted();
  }

 private:
  void record(std::exception_ptr e) noexcept;

  CallState* call_;
  std::atomic<bool> failed_{false};
  std::mutex mu_;
  std::exception_ptr first_;
};

// ---- per-thread scratch ------------------------------------------------------------------------
// Per-thread reusable scratch (64-byte aligned), grown when too small. Slots 0..3 belong to the
// GEMM; the conv kernels use 4..7. Never call it inside a hot loop. Throws MemoryError naming the
// bytes and `what`. Buffers of kScratchKeepBytes or more are released when the call ends
// (CallScope), so a large call leaves no large scratch behind; smaller ones stay for the next
// call.
constexpr std::size_t kScratchKeepBytes = std::size_t(32) << 20;
void* thread_scratch(int slot, std::size_t bytes, const char* what = "per-thread scratch");
// Frees the calling thread's, and its OpenMP team's, scratch buffers of kScratchKeepBytes or
// more (all of them when `all`); a no-op unless some thread holds such a buffer.
void trim_thread_scratch(bool all = false);
// Bytes of scratch held by all threads (tests: convkit._cpu.scratch_bytes()).
int64_t scratch_bytes();

}  // namespace convkit::cpu
