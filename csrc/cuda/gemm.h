// convkit's own GEMM for the CUDA convolutions (kernels in gemm.cuh, instantiated per element
// type in gemm_<dtype>.cu): C = A x B (+ bias per row) (+ C), batched over blockIdx.z, with
// split-K into float partials summed by a second, deterministic kernel.
//
// Operands are described, not copied: each has a slow dimension with a plain stride `ld` and a
// fast (contiguous) dimension whose index goes through an IndexMap. The map is what lets the
// same kernel read NCHW tensors as matrices: a pixel index that runs across several images
// (n -> (image, pixel)), or over a strided subset of the pixels (1x1 convolution with stride).
// Transposes are the choice of which logical dimension is the fast one (no copies).
#pragma once
#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "cuda/dtype.cuh"
#include "cuda/fast_divmod.cuh"
#include "cuda/runtime.h"
#include "cuda/tile_model.h"

namespace convkit::cuda {

// The largest M, N or K gemm_run takes. The kernel indexes in int, and a block of the last tile
// forms indices up to a tile (plus a 4-wide group) past the end: they must not overflow, and
// the map's divisions (FastDivmod) need them below 2^31.
constexpr int64_t kGemmMaxDim = INT32_MAX - 1024;

// Fast-dimension index i (0 <= i < kGemmMaxDim) -> memory offset:
//   (i / L) * img_stride + ((i % L) / Q) * row_stride + ((i % L) % Q) * col_stride
// `dense` maps (images()) have Q == 1, row_stride == 1 and col_stride == 0, so the offset is
// (i / L) * img_stride + i % L, and 4 consecutive indices inside one image are contiguous.
struct IndexMap {
  FastDivmod by_L, by_Q;
  int64_t img_stride, row_stride, col_stride;
  bool dense;

  // offset == i (one image as large as the index range: L = 2^31 - 1).
  static IndexMap plain() { return images(INT32_MAX, 0); }
  // Images of L contiguous elements, img_stride apart.
  static IndexMap images(int64_t L, int64_t img_stride) {
    IndexMap m;
    m.by_L = FastDivmod(static_cast<uint32_t>(L));
    m.by_Q = FastDivmod(1);
    m.img_stride = img_stride, m.row_stride = 1, m.col_stride = 0, m.dense = true;
    return m;
  }
  // Images of P x Q pixels, pixel (p, q) at p * row_stride + q * col_stride of its image.
  static IndexMap strided(int64_t P, int64_t Q, int64_t row_stride, int64_t col_stride, int64_t img_stride) {
    IndexMap m;
    m.by_L = FastDivmod(static_cast<uint32_t>(P * Q));
    m.by_Q = FastDivmod(static_cast<uint32_t>(Q));
    m.img_stride = img_stride, m.row_stride = row_stride, m.col_stride = col_stride, m.dense = false;
    return m;
  }

  __device__ __forceinline__ int64_t offset(uint32_t i) const {
    uint32_t img, j;
    by_L.divmod(i, img, j);
    if (dense) return static_cast<int64_t>(img) * img_stride + j;
    uint32_t p, q;
    by_Q.divmod(j, p, q);
    return static_cast<int64_t>(img) * img_stride + static_cast<int64_t>(p) * row_stride +
           static_cast<int64_t>(q) * col_stride;
  }
  // Whether indices i .. i + 3 lie in one image of a dense map (so they are contiguous).
  __device__ __forceinline__ bool run4(uint32_t i) const {
    if (!dense) return false;
    uint32_t img, j;
    by_L.divmod(i, img, j);
    return j + 3 < by_L.d;
  }
};

// An input matrix: element (slow s, fast f) at ptr + z_batch * batch_stride + s * ld + map(f).
template <typename T>
struct GemmIn {
  const T* ptr;
  int64_t ld, batch_stride;
  IndexMap map;
};

// The output: element (m, n) of batch b, split s at ptr + b * batch_stride + s * split_stride +
// m * ld + map(n).
template <typename Out>
struct GemmOut {
  Out* ptr;
  int64_t ld, batch_stride, split_stride;
  IndexMap map;
};

// C[b, s] (=|+=) A[b] (M x K, the split's share of K) x B[b] (K x N) + bias[b][m].
//   trans_a = false: A's fast dimension is k (A stored M x K); true: m (stored K x M).
//   trans_b = false: B's fast dimension is n (B stored K x N); true: k (stored N x K).
// Supported layouts: (trans_a, trans_b) = (false, false), (true, false), (false, true); a
// non-dense map only on B (not with trans_a) and on C (only with trans_a).
template <typename T, typename Out>
struct GemmDesc {
  int M, N, K;
  int batches, splits;  // blockIdx.z = b * splits + s
  bool trans_a, trans_b;
  GemmIn<T> A, B;
  GemmOut<Out> C;
  const T* bias;  // nullptr: none; else bias[b * bias_batch_stride + m]
  int64_t bias_batch_stride;
  bool accumulate;  // C += A x B instead of C = A x B
  // Split-K into a workspace: with splits > 1 and partials given, the splits write float
  // partial sums to partials ([split][batch][M][N], splits * batches * M * N accumulator
  // elements) and a second kernel adds them in split order and stores C through its map (bias,
  // accumulate and all). nullptr: the splits write C's own slabs (split_stride apart), which the
  // caller reduces (grad weight).
  acc_t<T>* partials;
};

// Tile configurations (gemm.cuh): large problems get the big tile, small ones the small tile
// (variant.h's forced variant overrides the choice). Exposed so the workspace queries can size
// split-K partials with the launch's own choice.
struct GemmTile {
  int BM, BN, BK;
};
template <typename T>
GemmTile gemm_tile(int M, int N, int batches);

// Split-K partitions for an M x N x K problem over `batches`: enough blocks for a few waves on
// a large GPU (a fixed target, not this device's SM count, so results are the same everywhere),
// each split at least 32 deep in K, at most 32 splits (variant.h's forced variant: one split, or
// at least kForcedSplits).
template <typename T>
int gemm_splits(int M, int N, int64_t K, int batches);

template <typename T, typename Out>
void gemm_run(const GemmDesc<T, Out>& d, StreamHandle stream);

// Split-K for a GEMM whose output is a convolution's forward or grad input (a map into NCHW):
// the split count tile_model.h's model picks for an M x N x K problem over `batches` (the tile
// gemm_run will use), at most max_fit (the most splits whose partials fit the workspace);
// variant.h's forced split-K overrides it (on: at least kForcedSplits, or one a k-step).
template <typename T>
int gemm_output_splits(int64_t M, int64_t N, int64_t K, int64_t batches, int max_fit);

// The same for dtype dt, with the workspace given in bytes: `room` bytes for the partials, of
// which one split needs split_bytes (so at most room / split_bytes splits).
inline int gemm_output_splits(DType dt, int64_t M, int64_t N, int64_t K, int64_t batches, int64_t room,
                              int64_t split_bytes) {
  const int max_fit = static_cast<int>(std::min<int64_t>(INT_MAX, std::max<int64_t>(room, 0) / split_bytes));
  int splits = 1;
  dispatch_dtype(dt, [&](auto tag) { splits = gemm_output_splits<decltype(tag)>(M, N, K, batches, max_fit); });
  return splits;
}

// out[i] = sum over s < splits of part[s * count + i], in order of s (deterministic).
template <typename T>
void splitk_reduce(const acc_t<T>* part, int splits, int64_t count, T* out, StreamHandle stream);

}  // namespace convkit::cuda
