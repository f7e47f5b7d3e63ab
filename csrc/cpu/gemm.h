// convkit's own blocked GEMM for the CPU (no BLAS): C = alpha * A x B + beta * C (+ row bias),
// row-major, batched. Operands are strided views whose axes may fold image/row/column indices
// (MatAxis), so transposes, batch concatenation and strided 1x1 loads happen in the packing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <limits>

#include "cpu/threads.h"  // thread_scratch

namespace convkit::cpu {

// One axis of a matrix view. Index j maps to the element offset
//   (j % n0) * s0 + ((j / n0) % n1) * s1 + (j / (n0 * n1)) * s2,
// which covers a plain stride (linear), a [P, Q] pixel grid read with a stride (1x1 loader),
// and a pixel axis running across several images (a batch folded into the GEMM's N or K).
struct MatAxis {
  int64_t n0 = std::numeric_limits<int64_t>::max() / 4, n1 = 1;
  int64_t s0 = 1, s1 = 0, s2 = 0;

  static MatAxis linear(int64_t stride) {
    MatAxis a;
    a.s0 = stride;
    return a;
  }
  // j = img * len + i  ->  img * img_stride + i * stride
  static MatAxis segmented(int64_t len, int64_t stride, int64_t img_stride) {
    MatAxis a;
    a.n0 = len; a.n1 = 1; a.s0 = stride; a.s1 = 0; a.s2 = img_stride;
    return a;
  }
  // j = (img * P + p) * Q + q  ->  img * img_stride + p * row_stride + q * col_stride
  static MatAxis grid(int64_t P, int64_t Q, int64_t row_stride, int64_t col_stride, int64_t img_stride) {
    MatAxis a;
    a.n0 = Q; a.n1 = P; a.s0 = col_stride; a.s1 = row_stride; a.s2 = img_stride;
    return a;
  }
};

// Element (i, j) of a view is data[rows(i) + cols(j)].
template <typename T>
struct MatView {
  T* data;
  MatAxis rows, cols;
};

template <typename T>
inline MatView<T> plain_view(T* data, int64_t ld) {  // row-major, leading dimension ld
  return {data, MatAxis::linear(ld), MatAxis::linear(1)};
}
template <typename T>
inline MatView<T> trans_view(T* data, int64_t ld) {  // the transpose of a row-major matrix
  return {data, MatAxis::linear(1), MatAxis::linear(ld)};
}

// For b in [0, batch): C_b = alpha * A_b x B_b + beta * C_b + bias_b[i] (bias may be null),
// with X_b = X.data + b * stride_x. A_b is M x K, B_b is K x N, C_b is M x N. With beta == 0 C
// is never read. Parallel (OpenMP, num_threads()) over (batch, M block, N block) tiles, and K
// chunks when there are too few tiles for the threads and K is long (partial sums added in
// chunk order); every tile (chunk) is computed by one thread in a fixed order, so results are
// deterministic for a given thread count. Called inside a parallel region that cannot nest,
// it runs on the calling thread alone.
template <typename T>
void gemm_batched(int64_t batch, int64_t M, int64_t N, int64_t K, T alpha,
                  MatView<const T> A, int64_t stride_a, MatView<const T> B, int64_t stride_b, T beta,
                  MatView<T> C, int64_t stride_c, const T* bias = nullptr, int64_t stride_bias = 0);

// Plain row-major GEMM: C = alpha * op(A) x op(B) + beta * C.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  MatView<const T> a = trans_a ? trans_view(A, lda) : plain_view(A, lda);
  MatView<const T> b = trans_b ? trans_view(B, ldb) : plain_view(B, ldb);
  gemm_batched<T>(1, M, N, K, alpha, a, 0, b, 0, beta, plain_view(C, ldc), 0);
}

// This machine's data caches in bytes (/sys/devices/system/cpu/cpu0/cache, else sysconf, else
// typical sizes) and how many CPUs share the L3: the GEMM's cache blocks are cut from them.
struct CacheSizes {
  int64_t l1d = 0, l2 = 0, l3 = 0;
  int l3_sharing = 1;
};
CacheSizes cache_sizes();

// The GEMM's cache blocks for T (K slice kc, A block mc rows, B block nc columns) and its
// register tile MR x NR, as gemm_batched uses them before cutting blocks for the threads.
struct GemmBlocking {
  int64_t kc, mc, nc;
  int mr, nr;
};
template <typename T>
GemmBlocking gemm_blocking();

}  // namespace convkit::cpu
