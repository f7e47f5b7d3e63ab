// The CUDA emulator's CUDA semantics, on the fibers and per-block scheduler of fiber.cpp:
// __syncthreads() barriers (and their divergence), warp meetings (shuffles, votes, matches,
// reductions, __syncwarp) with PTX's rules for masks and widths, shared memory with the GPU's
// limits, misaligned-access reports, the device's properties and the launch checks a GPU makes
// before running a kernel. What a GPU would fault on or hang at becomes the block's error,
// reported as a LaunchError naming the kernel, block and thread. The lane that completes a warp
// meeting computes every lane's result and keeps running, so a meeting costs one switch per
// waiting lane.
#include <mutex>
#include <unordered_map>

#include "sim/racecheck.h"
#include "sim/simt_internal.h"

namespace simt {
namespace impl {
namespace {

// ---- configuration -------------------------------------------------------------------------------

constexpr std::size_t kSmemDefault = 48 * 1024;
constexpr std::size_t kSmemOptin = 227 * 1024;

std::mutex g_optin_mutex;
std::unordered_map<const void*, std::size_t>& optin_table() {
  static std::unordered_map<const void*, std::size_t> table;
  return table;
}

// The SMs the emulator reports (an H100 SXM's 132 unless set_sm_count changed it).
std::atomic<int> g_sm_count{132};

const char* base_name(const char* path) {
  const char* s = std::strrchr(path, '/');
  return s ? s + 1 : path;
}

}  // namespace

// ---- error messages ------------------------------------------------------------------------------

std::string fmt_dim(const uint3& d) {
  return "(" + std::to_string(d.x) + "," + std::to_string(d.y) + "," + std::to_string(d.z) + ")";
}
std::string fmt_dim(const dim3& d) { return fmt_dim(static_cast<uint3>(d)); }

std::string fmt_hex(std::uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
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
    case WarpOp::Mma: return "wmma::mma_sync";
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

namespace {

bool same_site(const char* f1, int l1, const char* f2, int l2) {
  return l1 == l2 && (f1 == f2 || std::strcmp(f1, f2) == 0);
}

}  // namespace

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

}  // namespace impl

using namespace impl;

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

// The lane that lane i of a shuffle reads (PTX shfl.sync's rules: the segment of `width` lanes;
// a source before the segment (up) or after it (down, xor) is the lane itself).
int shuffle_source(int i, WarpOp op, int arg, int width) {
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
  return j;
}

// Every lane of a complete meeting gets its result (lanes: the warp's fibers, index = lane).
// ---- wmma (simt_wmma.h) ---------------------------------------------------------------------------

// The seeded layouts: for each fragment kind, slot (lane, i) -> matrix element, a permutation of
// the slots taken modulo the tile's elements (so each element is held equally often), drawn from
// the emulator's seed and the kind. Cached per OS thread.
struct WmmaLayoutKey {
  int kind, per_lane, total;
  std::uint64_t seed;
  bool operator==(const WmmaLayoutKey& o) const {
    return kind == o.kind && per_lane == o.per_lane && total == o.total && seed == o.seed;
  }
};

const std::uint16_t* wmma_layout_for(WmmaKind kind, int per_lane, int total) {
  thread_local std::vector<std::pair<WmmaLayoutKey, std::vector<std::uint16_t>>> cache;
  const WmmaLayoutKey key{static_cast<int>(kind), per_lane, total, simt::seed()};
  for (auto& e : cache)
    if (e.first == key) return e.second.data();
  const int slots = 32 * per_lane;
  std::vector<std::uint16_t> map(static_cast<std::size_t>(slots));
  for (int i = 0; i < slots; ++i) map[i] = static_cast<std::uint16_t>(i);
  std::uint64_t x = key.seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(key.kind + 1) * 0xD1B54A32D192ED03ull;
  for (int i = slots - 1; i > 0; --i) {  // Fisher-Yates with xorshift64*
    x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
    const int j = static_cast<int>((x * 0x2545F4914F6CDD1Dull) % static_cast<std::uint64_t>(i + 1));
    std::swap(map[i], map[j]);
  }
  for (auto& v : map) v = static_cast<std::uint16_t>(v % total);
  cache.emplace_back(key, std::move(map));
  return cache.back().second.data();
}

// Gathers the warp's A, B and C tiles from its lanes' fragment values (checking that slots
// holding one element agree), computes D = A x B + C in float in k order, and scatters D.
void wmma_complete(Fiber* lanes, unsigned mask) {
  const WmmaArgs& a0 = *reinterpret_cast<const WmmaArgs*>(lanes[__builtin_ctz(mask)].wval);
  const int M = a0.m, N = a0.n, K = a0.k;
  std::vector<float> A(static_cast<std::size_t>(M) * K), B(static_cast<std::size_t>(K) * N), C(static_cast<std::size_t>(M) * N);
  std::vector<char> seenA(A.size()), seenB(B.size()), seenC(C.size());
  const std::uint16_t* la = wmma_layout_for(a0.ka, a0.na, M * K);
  const std::uint16_t* lb = wmma_layout_for(a0.kb, a0.nb, K * N);
  const std::uint16_t* lc = wmma_layout_for(a0.kc, a0.nc, M * N);
  const auto gather = [&](std::vector<float>& dst, std::vector<char>& seen, const std::uint16_t* map, int per,
                          const float* vals, int lane, const char* which) {
    for (int i = 0; i < per; ++i) {
      const int e = map[lane * per + i];
      const float v = vals[i];
      if (seen[e] && std::memcmp(&dst[e], &v, 4) != 0) {
        Block& b = block_of(&lanes[lane]);
        b.error = std::string("wmma::mma_sync in ") + where(b) + " " + thread_name(&lanes[lane]) + " at " +
                  fmt_site(lanes[lane].wfile, lanes[lane].wline) + ": the " + which +
                  " fragment holds one matrix element in several slots, and they differ (code that assumes "
                  "a fragment layout?)";
        abandon(current_fiber());
      }
      dst[e] = v, seen[e] = 1;
    }
  };
  for (unsigned r = mask; r; r &= r - 1) {
    const int lane = __builtin_ctz(r);
    const WmmaArgs& w = *reinterpret_cast<const WmmaArgs*>(lanes[lane].wval);
    gather(A, seenA, la, w.na, w.a, lane, "A");
    gather(B, seenB, lb, w.nb, w.b, lane, "B");
    gather(C, seenC, lc, w.nc, w.c, lane, "C");
  }
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      float acc = C[static_cast<std::size_t>(m) * N + n];
      for (int k = 0; k < K; ++k) acc = std::fmaf(A[static_cast<std::size_t>(m) * K + k], B[static_cast<std::size_t>(k) * N + n], acc);
      C[static_cast<std::size_t>(m) * N + n] = acc;
    }
  for (unsigned r = mask; r; r &= r - 1) {
    const int lane = __builtin_ctz(r);
    WmmaArgs& w = *reinterpret_cast<WmmaArgs*>(lanes[lane].wval);
    for (int i = 0; i < w.nc; ++i) w.d[i] = C[lc[lane * w.nc + i]];
  }
}

void complete_meeting(Fiber* lanes, const Meeting& m) {
  unsigned mask = m.mask;
  switch (m.op) {
    case WarpOp::ShflIdx: case WarpOp::ShflUp: case WarpOp::ShflDown: case WarpOp::ShflXor:
      for (unsigned r = mask; r; r &= r - 1) {
        const int i = __builtin_ctz(r);
        const Fiber& l = lanes[i];
        const int j = shuffle_source(i, m.op, l.warg, l.wwidth);
        if (!(mask >> j & 1u)) {  // undefined on a GPU (an inactive source): the block's error
          Block& b = block_of(&lanes[i]);
          b.error = std::string(op_name(m.op)) + " in " + where(b) + " " + thread_name(&l) + " (warp " +
                    std::to_string(l.warp) + " lane " + std::to_string(i) + ") at " + fmt_site(l.wfile, l.wline) +
                    ": source lane " + std::to_string(j) + " is not in mask " + fmt_hex(mask);
          abandon(current_fiber());
        }
        lanes[i].wres = lanes[j].wval;
      }
      return;
    case WarpOp::SyncWarp:
      if (block_of(&lanes[__builtin_ctz(mask)]).launch->racecheck) rc::warp_synced(lanes, mask);
      return;
    case WarpOp::Mma:  // orders no memory: no happens-before for the race detector
      wmma_complete(lanes, mask);
      return;
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

void async_push(const AsyncCopy& c) {
  ThreadCtx* t = tls_thread;
  t->async_copies.push_back(c);
  t->async_copies.back().group = t->async_committed;
}

void async_commit() { ++tls_thread->async_committed; }

std::size_t async_due(unsigned newest_pending) {
  ThreadCtx* t = tls_thread;
  const unsigned done_below = t->async_committed > newest_pending ? t->async_committed - newest_pending : 0;
  t->async_done.clear();
  std::size_t kept = 0;
  for (const AsyncCopy& c : t->async_copies) {
    if (c.group < done_below)
      t->async_done.push_back(c);
    else
      t->async_copies[kept++] = c;
  }
  t->async_copies.resize(kept);
  return t->async_done.size();
}

AsyncCopy async_due_copy(std::size_t i) { return tls_thread->async_done[i]; }

const std::uint16_t* wmma_layout(WmmaKind kind, int per_lane, int total) {
  return wmma_layout_for(kind, per_lane, total);
}

void wmma_mma(const char* file, int line, WmmaArgs& args) {
  warp_meet(file, line, WarpOp::Mma, 0xffffffffu, reinterpret_cast<std::uintptr_t>(&args), 0, 32);
}

void async_copy_error(const char* what) {
  Fiber* f = current_fiber();
  if (!f) throw LaunchError(what);
  Block& b = block_of(f);
  b.error = std::string(what) + " in " + where(b) + " " + thread_name(f);
  abandon(f);
}

}  // namespace detail

namespace impl {

// ---- deadlocks -----------------------------------------------------------------------------------

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

// ---- shared memory -------------------------------------------------------------------------------

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

}  // namespace impl

void* static_shared(const void* tag, std::size_t bytes, std::size_t align, const char* name) {
  Fiber* f = current_fiber();
  if (!f) throw LaunchError(std::string("shared array '") + name + "' declared outside a kernel");
  Block& b = block_of(f);
  // A GPU aligns a static array to its type's alignment and no better: the array sits `align`
  // bytes past a 16-byte boundary when align < 16, so it is aligned to `align` but not to
  // 2 * align, and a wider access than the type allows faults here as it may there. The
  // allocation's start (s.ptr) is what free_shared frees; s.data is the array.
  const std::size_t skew = align < 16 ? align : 0;
  for (const SharedArray& s : b.statics)
    if (s.tag == tag) return s.data;
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
  void* p = alloc_poisoned(bytes + skew, align);
  if (!p) {
    b.error = "out of host memory for shared array '" + std::string(name) + "' in " + where(b);
    abandon(f);
  }
  void* data = static_cast<char*>(p) + skew;
  b.statics.push_back({tag, p, data, bytes});
  b.static_bytes = total;
  return data;
}

void* dynamic_shared() {
  Fiber* f = current_fiber();
  if (!f) throw LaunchError("dynamic shared memory used outside a kernel");
  return block_of(f).dynamic;
}

// ---- host API: device and launch ----------------------------------------------------------------

namespace {

std::string config_string(const char* name, dim3 grid, dim3 block, std::size_t smem) {
  return std::string(name) + " <<<" + fmt_dim(grid) + ", " + fmt_dim(block) + ", " + std::to_string(smem) + ">>>";
}

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
  run_blocks(L);
}

}  // namespace simt
