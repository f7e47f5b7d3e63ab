// Blocked, register-tiled GEMM of our own (Goto/BLIS structure), the driver: per C tile, K is
// cut into balanced KC slices; A [mc x kc] is packed into MR-row micro-panels (once per call and
// shared by all tiles when several N tiles read it) and B a few NR-column micro-panels at a time
// right before use, and gemm_microkernel.h's MR x NR micro-kernel accumulates in registers. Few
// tiles and a long K (grad weight) split K into chunks added in a fixed order. kc, mc and nc are
// cut from the caches at run time (gemm_platform.cpp). See gemm_batched for the structure.
#include "cpu/gemm.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cpu/gemm_microkernel.h"
#include "cpu/threads.h"

namespace convkit::cpu {

using namespace gemm_kernel;

namespace {

// Packed A shared by every tile of a call (all batch entries, K slices and MR panels) when it
// is at most this big and half the L3 (where it stays between the tiles that read it); beyond
// it each tile packs its own A block per K slice (a large GEMM, whose wide N tiles make that
// repacking cheap).
constexpr int64_t kSharedPackBytes = int64_t(32) << 20;
// B micro-panels packed together, right before their micro-kernels: rows of 8 x NR columns
// read contiguously (the hardware prefetchers keep up; one panel a row left the loads waiting
// on L3), 8 x kc x NR elements (192 KB in float at kc 192) staying in L2 beside the A block.
// (4 and 16 measured a few percent slower here, 1 up to 25% at M = 48, a whole B block
// of nc columns, which spills to L3, as much at small M.)
constexpr int kBGroup = 8;
// Split-K partial sums (grad weight: small M x N, long K) take at most this much.
constexpr int64_t kSplitKBytes = int64_t(16) << 20;

}  // namespace

// Structure: K is cut into balanced slices of at most kc; C into (batch, M block, N block)
// tiles (the cache blocks, cut further until there are about four tiles a thread), and, when
// even that leaves too few tiles for the threads and K is long (grad weight), K into chunks
// whose partial sums go to a buffer and are added in chunk order at the end. A is packed once
// per call into MR-row panels per K slice, shared by all tiles, when more than one tile reads
// each A block and it is not huge (else per tile, per slice). Within a tile, per K slice, B is
// packed kBGroup NR-column micro-panels at a time right before their micro-kernels run (each
// panel stays in L1 while the tile's A panels stream from L2 past it; the B block is never
// packed whole, which sent it to L3 and back). Every C element is summed by one thread in a
// fixed order for a given thread count (the tiling depends only on the shapes and the count).
template <typename T>
void gemm_batched(int64_t batch, int64_t M, int64_t N, int64_t K, T alpha, MatView<const T> A,
                  int64_t stride_a, MatView<const T> B, int64_t stride_b, T beta, MatView<T> C,
                  int64_t stride_c, const T* bias, int64_t stride_bias) {
  using G = GemmTile<T>;
  constexpr int MR = G::MR, NR = G::NR;
  if (batch <= 0 || M <= 0 || N <= 0) return;
  auto cdiv = [](int64_t a, int64_t b) { return (a + b - 1) / b; };
  auto round_up = [&](int64_t v, int64_t m) { return cdiv(v, m) * m; };

  if (K <= 0) {  // C = beta * C + bias
    std::vector<int64_t> ro(M), co(N);
    axis_offsets(C.rows, 0, M, ro.data());
    axis_offsets(C.cols, 0, N, co.data());
    for (int64_t b = 0; b < batch; ++b) {
      T* c_base = C.data + b * stride_c;
      const T* bias_b = bias ? bias + b * stride_bias : nullptr;
      for (int64_t t = 0; t < M; ++t)
        for (int64_t u = 0; u < N; ++u) {
          T& c = c_base[ro[t] + co[u]];
          c = (beta == T(0) ? T(0) : beta * c) + (bias_b ? bias_b[t] : T(0));
        }
    }
    return;
  }

  const GemmBlocking blk = gemm_blocking<T>();
  int nt = num_threads();
  // Called inside a parallel region that cannot nest (winograd's per-thread GEMMs): one thread.
  if (nt > 1 && omp_get_active_level() >= omp_get_max_active_levels()) nt = 1;

  // K slices: balanced (K = 400 is 2 x 200, not 192 + 192 + 16), a multiple of 16 where the
  // cache block allows; panels of the shared packed A are kcp (a multiple of 16) deep apart.
  const int64_t slices0 = cdiv(K, blk.kc);
  const int64_t kc_step = std::min(round_up(cdiv(K, slices0), 16), std::max<int64_t>(blk.kc, 16));
  const int64_t nslices = cdiv(K, kc_step);
  const int64_t kcp = round_up(kc_step, 16);

  // Tile sizes: the cache blocks, cut down until there are enough tiles for the threads.
  auto balanced = [&](int64_t n, int64_t block, int64_t unit) {  // equal blocks of at most `block`
    const int64_t count = cdiv(n, block);
    return round_up(cdiv(n, count), unit);
  };
  int64_t mc = balanced(M, blk.mc, MR);
  int64_t nc = balanced(N, blk.nc, NR);
  auto tiles = [&] { return batch * cdiv(M, mc) * cdiv(N, nc); };
  const int64_t want_tiles = nt > 1 ? 4 * int64_t(nt) : 1;
  // Split K when the cache blocks give fewer than two tiles a thread and K is long: chunks of
  // at least two slices, enough for about four items a thread with the tiles.
  int64_t kchunks = 1;
  if (nt > 1 && tiles() < 2 * nt && nslices >= 4) {
    kchunks = std::min(cdiv(want_tiles, tiles()), nslices / 2);
    const int64_t per_chunk = batch * M * N * int64_t(sizeof(T));
    kchunks = std::max<int64_t>(1, std::min(kchunks, kSplitKBytes / std::max<int64_t>(1, per_chunk)));
  }
  // Then cut N (down to two panels a tile), then M (down to four panels): with A packed once
  // per call, a smaller tile costs little more than its B panels packed again per M tile.
  while (tiles() * kchunks < want_tiles && nc > 2 * NR) nc = round_up(nc / 2, NR);
  while (tiles() * kchunks < want_tiles && mc > 4 * MR) mc = round_up(mc / 2, MR);
  const int64_t m_tiles = cdiv(M, mc), n_tiles = cdiv(N, nc);
  const int64_t n_c_tiles = batch * m_tiles * n_tiles;
  const int64_t n_items = n_c_tiles * kchunks;

  // Shared packed A: [batch][slice][Mpad rows in MR panels][kcp], when several N tiles read
  // each A block. A block (b, slice, M tile) is packed by the first tile that needs it (a state
  // per block: 0 free, 1 being packed, 2 ready); a tile that finds it being packed packs a
  // private copy instead of waiting, so no thread ever waits on another (on a shared machine
  // the other may be preempted for a whole time slice) and there is no barrier.
  const int64_t Mpad = round_up(M, MR);
  const int64_t shared_elems = batch * nslices * Mpad * kcp;
  const int64_t shared_cap = std::min(kSharedPackBytes, std::max<int64_t>(cache_sizes().l3 / 2, int64_t(4) << 20));
  const bool shared_a = n_tiles > 1 && shared_elems * int64_t(sizeof(T)) <= shared_cap;
  const int64_t n_blocks = shared_a ? batch * nslices * m_tiles : 0;
  const int64_t partial_elems = kchunks > 1 ? kchunks * batch * M * N : 0;
  const int64_t n_counters = kchunks > 1 ? n_c_tiles : 0;  // chunks finished per C tile
  // The calling thread's slot 3 (only this call uses it): packed A, partial sums, flags
  const int64_t a_elems = round_up(shared_a ? shared_elems : 0, 16), p_elems = round_up(partial_elems, 16);
  T* shared = nullptr;
  int* flags = nullptr;
  if (shared_a || kchunks > 1) {
    shared = static_cast<T*>(thread_scratch(3, sizeof(T) * (a_elems + p_elems) + sizeof(int) * (n_blocks + n_counters),
                                            "gemm: shared packed A and split-K partial sums"));
    flags = reinterpret_cast<int*>(shared + a_elems + p_elems);
    std::memset(flags, 0, sizeof(int) * (n_blocks + n_counters));
  }
  T* a_shared = shared;
  T* partial = shared ? shared + a_elems : nullptr;
  int* a_state = flags;
  int* done = flags ? flags + n_blocks : nullptr;

  ParallelGuard guard;
#pragma omp parallel num_threads(nt) if (nt > 1 && n_items > 1)
  {
    // c_tile (MR x NR), then the offsets, then a flag per NR panel of the C block. A thread that
    // cannot have its scratch stops the region before any item runs without it.
    const std::size_t off_count = std::size_t(2 * mc + 2 * nc + 2 * kcp);
    char* scratch = nullptr;
    T* a_pack = nullptr;
    T* b_panel = nullptr;
    guard.run_quiet([&] {
      scratch = static_cast<char*>(thread_scratch(
          2, sizeof(T) * MR * NR + sizeof(int64_t) * off_count + std::size_t(nc / NR + 1), "gemm: offsets"));
      a_pack = static_cast<T*>(thread_scratch(0, sizeof(T) * round_up(mc, MR) * kcp, "gemm: packed A"));
      b_panel = static_cast<T*>(thread_scratch(1, sizeof(T) * NR * kcp * kBGroup, "gemm: packed B"));
    });
    T* c_tile = reinterpret_cast<T*>(scratch);
    int64_t* a_ro = reinterpret_cast<int64_t*>(scratch + sizeof(T) * MR * NR);  // [mc]
    int64_t* a_co = a_ro + mc;       // [kcp]
    int64_t* b_ro = a_co + kcp;      // [kcp]
    int64_t* b_co = b_ro + kcp;      // [nc]
    int64_t* c_ro = b_co + nc;       // [mc]
    int64_t* c_co = c_ro + mc;       // [nc]
    bool* c_unit = reinterpret_cast<bool*>(c_co + nc);

#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t item = 0; item < n_items; ++item) {
      if (guard.should_stop()) continue;
      // (b, it, jt, chunk): a C tile of batch entry b, rows it*mc.., columns jt*nc.., K chunk
      // (M tiles run fastest: threads starting together want different A blocks)
      const int64_t chunk = item % kchunks, tile = item / kchunks;
      const int64_t b = tile / (m_tiles * n_tiles);
      const int64_t jt = (tile / m_tiles) % n_tiles;
      const int64_t it = tile % m_tiles;
      const int64_t i0 = it * mc, j0 = jt * nc;
      const int64_t mcur = std::min(mc, M - i0), ncur = std::min(nc, N - j0);
      const int64_t s_begin = chunk * nslices / kchunks, s_end = (chunk + 1) * nslices / kchunks;
      const T* a_base = A.data + b * stride_a;
      const T* b_base = B.data + b * stride_b;
      axis_offsets(A.rows, i0, mcur, a_ro);
      axis_offsets(B.cols, j0, ncur, b_co);
      // The output: C itself, or this chunk's dense [M, N] partial sums (alpha 1, no bias)
      T* out_base;
      T out_alpha, out_beta;
      const T* bias_b;
      if (kchunks == 1) {
        out_base = C.data + b * stride_c;
        out_alpha = alpha;
        out_beta = beta;
        bias_b = bias ? bias + b * stride_bias + i0 : nullptr;
        axis_offsets(C.rows, i0, mcur, c_ro);
        axis_offsets(C.cols, j0, ncur, c_co);
      } else {
        out_base = partial + (chunk * batch + b) * M * N;
        out_alpha = T(1);
        out_beta = T(0);
        bias_b = nullptr;
        for (int64_t t = 0; t < mcur; ++t) c_ro[t] = (i0 + t) * N;
        for (int64_t u = 0; u < ncur; ++u) c_co[u] = j0 + u;
      }
      for (int64_t jr = 0; jr < ncur; jr += NR)  // C's columns of panel jr contiguous
        c_unit[jr / NR] = unit_run(c_co + jr, std::min<int64_t>(NR, ncur - jr));

      for (int64_t s = s_begin; s < s_end; ++s) {
        const int64_t p0 = s * kc_step, kc = std::min(kc_step, K - p0);
        axis_offsets(B.rows, p0, kc, b_ro);
        const T* ap = nullptr;
        if (shared_a) {
          T* dst = a_shared + ((b * nslices + s) * Mpad + i0) * kcp;
          int* st = a_state + (b * nslices + s) * m_tiles + it;
          int expect = 0;
          if (__atomic_load_n(st, __ATOMIC_ACQUIRE) == 2) {
            ap = dst;
          } else if (__atomic_compare_exchange_n(st, &expect, 1, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            axis_offsets(A.cols, p0, kc, a_co);
            pack_a(a_base, a_ro, a_co, mcur, kc, dst, kcp * MR);
            __atomic_store_n(st, 2, __ATOMIC_RELEASE);
            ap = dst;
          } else if (expect == 2) {
            ap = dst;
          }
        }
        if (!ap) {  // no shared A, or its block is being packed by another thread right now
          axis_offsets(A.cols, p0, kc, a_co);
          pack_a(a_base, a_ro, a_co, mcur, kc, a_pack, kcp * MR);
          ap = a_pack;
        }
        const bool first = s == s_begin;
        const T beta_eff = first ? out_beta : T(1);
        for (int64_t jr = 0; jr < ncur; jr += NR) {
          const int64_t nv = std::min<int64_t>(NR, ncur - jr);
          const int64_t gi = (jr / NR) % kBGroup;
          if (gi == 0) pack_b(b_base, b_ro, b_co + jr, kc, std::min<int64_t>(kBGroup * NR, ncur - jr), b_panel);
          const T* bp = b_panel + gi * kc * NR;
          const bool direct = kDirectOut && c_unit[jr / NR];
          for (int64_t ir = 0; ir < mcur; ir += MR) {
            const int64_t mv = std::min<int64_t>(MR, mcur - ir);
            // C's rows of this micro-tile, first and last element: fetched for writing while the
            // micro-kernel runs (C blocks outgrow L2, and the output would wait on L3 each slice)
            for (int64_t t = 0; t < mv; ++t) {
              T* row = out_base + c_ro[ir + t];
              __builtin_prefetch(row + c_co[jr], 1);
              __builtin_prefetch(row + c_co[jr + nv - 1], 1);
            }
            const T* bias_t = first && bias_b ? bias_b + ir : nullptr;
            const TileOut<T> out{direct ? out_base + c_co[jr] : out_base, c_ro + ir, out_alpha,
                                 beta_eff, bias_t, int(mv), int(nv)};
            run_micro_tile<T>(kc, ap + (ir / MR) * kcp * MR, bp, c_tile, direct, out, c_co + jr);
          }
        }
      }

      // Split K: the thread finishing a C tile's last chunk adds the chunks up, in chunk order,
      // C = alpha * sum + beta * C + bias (no barrier: the others go on with their items).
      if (kchunks > 1 && __atomic_add_fetch(done + tile, 1, __ATOMIC_ACQ_REL) == kchunks) {
        T* c_base = C.data + b * stride_c;
        const T* bias_c = bias ? bias + b * stride_bias + i0 : nullptr;
        axis_offsets(C.rows, i0, mcur, c_ro);
        axis_offsets(C.cols, j0, ncur, c_co);
        const bool unit = unit_run(c_co, ncur);
        for (int64_t t = 0; t < mcur; ++t) {
          T* sum = partial + b * M * N + (i0 + t) * N + j0;
          for (int64_t ch = 1; ch < kchunks; ++ch) {
            const T* part = partial + (ch * batch + b) * M * N + (i0 + t) * N + j0;
#pragma omp simd
            for (int64_t u = 0; u < ncur; ++u) sum[u] += part[u];
          }
          const T bv = bias_c ? bias_c[t] : T(0);
          T* c = c_base + c_ro[t];
          if (unit) {
            c += c_co[0];
            if (beta == T(0)) {
#pragma omp simd
              for (int64_t u = 0; u < ncur; ++u) c[u] = alpha * sum[u] + bv;
            } else {
#pragma omp simd
              for (int64_t u = 0; u < ncur; ++u) c[u] = alpha * sum[u] + beta * c[u] + bv;
            }
          } else {
            for (int64_t u = 0; u < ncur; ++u)
              c[c_co[u]] = alpha * sum[u] + (beta == T(0) ? T(0) : beta * c[c_co[u]]) + bv;
          }
        }
      }
    }
  }
  guard.finish();
}

template void gemm_batched<float>(int64_t, int64_t, int64_t, int64_t, float, MatView<const float>,
                                  int64_t, MatView<const float>, int64_t, float, MatView<float>,
                                  int64_t, const float*, int64_t);
template void gemm_batched<double>(int64_t, int64_t, int64_t, int64_t, double, MatView<const double>,
                                   int64_t, MatView<const double>, int64_t, double, MatView<double>,
                                   int64_t, const double*, int64_t);

}  // namespace convkit::cpu
