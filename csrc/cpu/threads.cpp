// The thread count, the call scope with its interrupt check, the parallel-region guard and the
// per-thread scratch shared by the CPU kernels (see threads.h).
#include "cpu/threads.h"

#include <omp.h>
#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>

namespace convkit::cpu {
namespace {

std::atomic<int> g_num_threads{0};
std::atomic<bool> g_forked{false};
thread_local CallState* t_call = nullptr;

// Per-thread scratch: buffers of 1 MiB or more are mapped pages of their own (munmap gives them
// back to the system at once; malloc would keep them in its arenas), smaller ones come from
// aligned_alloc. g_held counts every thread's bytes, g_large those in buffers that the end of a
// call releases.
constexpr std::size_t kMapBytes = std::size_t(1) << 20;
std::atomic<int64_t> g_held{0}, g_large{0};

struct Buffer {
  void* ptr = nullptr;
  std::size_t size = 0;

  void release() noexcept {
    if (!ptr) return;
    if (size >= kMapBytes)
      munmap(ptr, size);
    else
      std::free(ptr);
    g_held.fetch_sub(int64_t(size), std::memory_order_relaxed);
    if (size >= kScratchKeepBytes) g_large.fetch_sub(int64_t(size), std::memory_order_relaxed);
    ptr = nullptr;
    size = 0;
  }
};

struct ThreadBuffers {
  Buffer slots[8];
  ~ThreadBuffers() {
    for (Buffer& b : slots) b.release();
  }
};
thread_local ThreadBuffers t_buffers;

void trim_own(bool all) noexcept {
  for (Buffer& b : t_buffers.slots)
    if (all || b.size >= kScratchKeepBytes) b.release();
}

// In a forked child only the forking thread exists: the others' buffers are no longer anyone's
// (their pages are the child's copy; they go when it exits), and OpenMP runs one thread.
void after_fork_in_child() {
  g_forked.store(true, std::memory_order_relaxed);
  int64_t held = 0, large = 0;
  for (const Buffer& b : t_buffers.slots) {
    held += int64_t(b.size);
    if (b.size >= kScratchKeepBytes) large += int64_t(b.size);
  }
  g_held.store(held, std::memory_order_relaxed);
  g_large.store(large, std::memory_order_relaxed);
}

const bool g_atfork_registered = pthread_atfork(nullptr, nullptr, &after_fork_in_child) == 0;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int num_threads() {
  if (g_forked.load(std::memory_order_relaxed)) return 1;
  const int n = g_num_threads.load(std::memory_order_relaxed);
  return n > 0 ? n : omp_get_max_threads();
}

void set_num_threads(int n) {
  if (n < 0 || n > kMaxThreads)
    throw ValueError("set_num_threads: n must be between 1 and " + std::to_string(kMaxThreads) +
                     " (0: OpenMP's default), got " + std::to_string(n));
  g_num_threads.store(n, std::memory_order_relaxed);
}

bool forked_child() { return g_forked.load(std::memory_order_relaxed) && g_atfork_registered; }

CallScope::CallScope(InterruptCheck check) : outer_(t_call) {
  state_.check = check;
  state_.next_poll_ns = check ? now_ns() + int64_t(kPollSeconds * 1e9) : 0;
  t_call = &state_;
}

CallScope::~CallScope() {
  t_call = outer_;
  if (!outer_) trim_thread_scratch();
}

CallState* current_call() { return t_call; }

bool poll_interrupt(CallState* call) {
  if (call->cancelled.load(std::memory_order_relaxed)) return true;
  if (!call->check) return false;
  const int64_t t = now_ns();
  if (t < call->next_poll_ns) return false;
  call->next_poll_ns = t + int64_t(kPollSeconds * 1e9);
  if (!call->check()) return false;
  call->cancelled.store(true, std::memory_order_relaxed);
  return true;
}

void ParallelGuard::record(std::exception_ptr e) noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  if (!failed_.load(std::memory_order_relaxed)) {
    first_ = e;
    failed_.store(true, std::memory_order_release);
  }
}

void* thread_scratch(int slot, std::size_t bytes, const char* what) {
  Buffer& b = t_buffers.slots[slot];
  if (b.size < bytes) {
    std::size_t want = ((std::max(bytes, b.size + b.size / 2) + 63) / 64) * 64;
    b.release();
    void* p = nullptr;
    if (want >= kMapBytes) {
      want = (want + 4095) / 4096 * 4096;
      p = mmap(nullptr, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) p = nullptr;
    } else {
      p = std::aligned_alloc(64, want);
    }
    if (!p) throw MemoryError(std::string(what) + " (one thread's buffer)", int64_t(want));
    b.ptr = p;
    b.size = want;
    g_held.fetch_add(int64_t(want), std::memory_order_relaxed);
    if (want >= kScratchKeepBytes) g_large.fetch_add(int64_t(want), std::memory_order_relaxed);
  }
  return b.ptr;
}

void trim_thread_scratch(bool all) {
  if (!all && g_large.load(std::memory_order_relaxed) == 0) return;
  // The kernels' teams are made of this thread and the first num_threads() - 1 threads of its
  // OpenMP pool (libgomp reuses them in order), so a team of that size reaches every buffer.
  const int nt = num_threads();
#pragma omp parallel num_threads(nt) if (nt > 1)
  trim_own(all);
}

int64_t scratch_bytes() { return g_held.load(std::memory_order_relaxed); }

}  // namespace convkit::cpu
