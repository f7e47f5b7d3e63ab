// conv2d by im2col + our GEMM (cpu/gemm.h). The caller's workspace holds the column buffer
// col[C*R*S][chunk*P*Q] for a chunk of the batch (group g owns rows g*Cg*R*S..), so one batched
// GEMM per chunk (batch = groups) covers every image: Y_g = W_g x col_g, colgrad_g = W_g^T x dY_g
// then col2im, dW_g += dY_g x col_g^T.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "cpu/conv.h"
#include "cpu/gemm.h"
#include "cpu/threads.h"

namespace convkit::cpu {
namespace {

// Range [lo, hi) of output columns q whose input column q*sw + off lies inside [0, W).
inline void valid_q(int64_t off, int64_t sw, int64_t W, int64_t Q, int64_t& lo, int64_t& hi) {
  valid_outputs(off, sw, W, Q, lo, hi);
}

// col[(c*R + r)*S + s][i*P*Q + p*Q + q] = x[i][c][p*sh - pt + r*dh][q*sw - pl + s*dw] (0 outside).
template <typename T>
void im2col_kernel(const ConvParams& p, const T* x, int64_t nb, T* col) {
  const int64_t C = p.C, H = p.H, W = p.W, R = p.R, S = p.S, P = p.P, Q = p.Q;
  const int64_t PQ = P * Q, L = nb * PQ;
#pragma omp parallel for collapse(2) schedule(static) num_threads(num_threads())
  for (int64_t i = 0; i < nb; ++i)
    for (int64_t c = 0; c < C; ++c) {
      const T* xc = x + (i * C + c) * H * W;
      for (int64_t r = 0; r < R; ++r)
        for (int64_t s = 0; s < S; ++s) {
          T* dst = col + ((c * R + r) * S + s) * L + i * PQ;
          const int64_t off = s * p.dil_w - p.pad_l;  // input column of output column q: q*sw + off
          int64_t qlo, qhi;
          valid_q(off, p.stride_w, W, Q, qlo, qhi);
          for (int64_t pp = 0; pp < P; ++pp) {
            T* d = dst + pp * Q;
            const int64_t ih = pp * p.stride_h - p.pad_t + r * p.dil_h;
            if (ih < 0 || ih >= H) {
              std::fill(d, d + Q, T(0));
              continue;
            }
            const T* row = xc + ih * W + off;
            std::fill(d, d + qlo, T(0));
            if (p.stride_w == 1) {
              std::memcpy(d + qlo, row + qlo, (qhi - qlo) * sizeof(T));
            } else {
              for (int64_t q = qlo; q < qhi; ++q) d[q] = row[q * p.stride_w];
            }
            std::fill(d + qhi, d + Q, T(0));
          }
        }
    }
}

// Gather form of col2im: each dx row sums, in a fixed (r, s) order, the column entries that map
// to it, so a thread owns its outputs: no atomics, deterministic.
template <typename T>
void col2im_kernel(const ConvParams& p, const T* col, int64_t nb, T* dx) {
  const int64_t C = p.C, H = p.H, W = p.W, R = p.R, S = p.S, P = p.P, Q = p.Q;
  const int64_t PQ = P * Q, L = nb * PQ;
#pragma omp parallel for collapse(2) schedule(static) num_threads(num_threads())
  for (int64_t i = 0; i < nb; ++i)
    for (int64_t c = 0; c < C; ++c) {
      T* dxc = dx + (i * C + c) * H * W;
      for (int64_t h = 0; h < H; ++h) {
        T* drow = dxc + h * W;
        std::fill(drow, drow + W, T(0));
        for (int64_t r = 0; r < R; ++r) {
          const int64_t num = h + p.pad_t - r * p.dil_h;  // = pp * sh for the output row pp
          if (num < 0 || num % p.stride_h != 0) continue;
          const int64_t pp = num / p.stride_h;
          if (pp >= P) continue;
          for (int64_t s = 0; s < S; ++s) {
            const T* src = col + ((c * R + r) * S + s) * L + i * PQ + pp * Q;
            const int64_t off = s * p.dil_w - p.pad_l;
            int64_t qlo, qhi;
            valid_q(off, p.stride_w, W, Q, qlo, qhi);
            T* d = drow + off;
            if (p.stride_w == 1) {
#pragma omp simd
              for (int64_t q = qlo; q < qhi; ++q) d[q] += src[q];
            } else {
              for (int64_t q = qlo; q < qhi; ++q) d[q * p.stride_w] += src[q];
            }
          }
        }
      }
    }
}

// Bytes of one image's columns [C*R*S, P*Q] (every pass uses the same buffer shape).
int64_t image_bytes(const ConvParams& p, int64_t elem_size) {
  const int64_t bytes = sat_mul(sat_mul(sat_mul(p.C, p.R * p.S), sat_mul(p.P, p.Q)), elem_size);
  if (bytes == kSizeMax)
    throw ValueError("conv2d(im2col): one image's columns (C*R*S x P*Q = " + std::to_string(p.C) + "*" +
                     std::to_string(p.R) + "*" + std::to_string(p.S) + " x " + std::to_string(p.P) + "*" +
                     std::to_string(p.Q) + " elements) exceed the int64 byte range");
  return bytes;
}

// Images per chunk for a workspace of ws_bytes; throws when not even one image fits.
int64_t chunk_images(const ConvParams& p, int64_t elem_size, const void* ws, int64_t ws_bytes) {
  const int64_t per_image = image_bytes(p, elem_size);
  CK_CHECK(ws != nullptr && ws_bytes >= per_image,
           "conv2d(im2col): workspace of " + std::to_string(ws_bytes) + " bytes is smaller than one image's columns (" +
               std::to_string(per_image) + " bytes)");
  return std::min(p.N, std::max<int64_t>(1, ws_bytes / per_image));
}

}  // namespace

int64_t conv2d_im2col_workspace_bytes(const ConvParams& p, int64_t elem_size, int64_t cap_bytes) {
  if (p.N == 0) return 0;
  const int64_t per_image = image_bytes(p, elem_size);
  return std::min(p.N, std::max<int64_t>(1, cap_bytes / per_image)) * per_image;
}

int64_t im2col::workspace_bytes(ConvPass, int64_t elem_size, const ConvParams& p, int64_t cap_bytes) {
  return conv2d_im2col_workspace_bytes(p, elem_size, cap_bytes);  // every pass: the same column buffer
}

template <typename T>
void im2col::fwd(const ConvParams& p, const T* x, const T* w, const T* b, T* y, T* ws, int64_t ws_bytes) {
  if (p.N == 0) return;
  const int64_t chunk = chunk_images(p, sizeof(T), ws, ws_bytes);
  const int64_t G = p.groups, Kg = p.Kg(), CgRS = p.Cg() * p.R * p.S, PQ = p.P * p.Q;
  for (int64_t n0 = 0; n0 < p.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, p.N - n0), L = nb * PQ;
    im2col_kernel(p, x + n0 * p.C * p.H * p.W, nb, ws);
    // Y_g [Kg, nb*PQ] (image-major columns) = W_g [Kg, CgRS] x col_g [CgRS, nb*PQ] + b_g
    MatView<const T> A{w, MatAxis::linear(CgRS), MatAxis::linear(1)};
    MatView<const T> B{ws, MatAxis::linear(L), MatAxis::linear(1)};
    MatView<T> C{y + n0 * p.K * PQ, MatAxis::linear(PQ), MatAxis::segmented(PQ, 1, p.K * PQ)};
    gemm_batched<T>(G, Kg, L, CgRS, T(1), A, Kg * CgRS, B, CgRS * L, T(0), C, Kg * PQ, b, Kg);
  }
}

template <typename T>
void im2col::bwd_input(const ConvParams& p, const T* dy, const T* w, T* dx, T* ws, int64_t ws_bytes) {
  if (p.N == 0) return;
  const int64_t chunk = chunk_images(p, sizeof(T), ws, ws_bytes);
  const int64_t G = p.groups, Kg = p.Kg(), CgRS = p.Cg() * p.R * p.S, PQ = p.P * p.Q;
  for (int64_t n0 = 0; n0 < p.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, p.N - n0), L = nb * PQ;
    // colgrad_g [CgRS, nb*PQ] = W_g^T [CgRS, Kg] x dY_g [Kg, nb*PQ]
    MatView<const T> A{w, MatAxis::linear(1), MatAxis::linear(CgRS)};
    MatView<const T> B{dy + n0 * p.K * PQ, MatAxis::linear(PQ), MatAxis::segmented(PQ, 1, p.K * PQ)};
    MatView<T> C{ws, MatAxis::linear(L), MatAxis::linear(1)};
    gemm_batched<T>(G, CgRS, L, Kg, T(1), A, Kg * CgRS, B, Kg * PQ, T(0), C, CgRS * L);
    col2im_kernel(p, ws, nb, dx + n0 * p.C * p.H * p.W);
  }
}

template <typename T>
void im2col::bwd_weight(const ConvParams& p, const T* dy, const T* x, T* dw, T* ws, int64_t ws_bytes) {
  if (p.N == 0) return;
  const int64_t chunk = chunk_images(p, sizeof(T), ws, ws_bytes);
  const int64_t G = p.groups, Kg = p.Kg(), CgRS = p.Cg() * p.R * p.S, PQ = p.P * p.Q;
  for (int64_t n0 = 0; n0 < p.N; n0 += chunk) {
    const int64_t nb = std::min(chunk, p.N - n0), L = nb * PQ;
    im2col_kernel(p, x + n0 * p.C * p.H * p.W, nb, ws);
    // dW_g [Kg, CgRS] (+)= dY_g [Kg, nb*PQ] x col_g^T [nb*PQ, CgRS]; first chunk overwrites
    MatView<const T> A{dy + n0 * p.K * PQ, MatAxis::linear(PQ), MatAxis::segmented(PQ, 1, p.K * PQ)};
    MatView<const T> B{ws, MatAxis::linear(1), MatAxis::linear(L)};
    MatView<T> C{dw, MatAxis::linear(CgRS), MatAxis::linear(1)};
    gemm_batched<T>(G, Kg, CgRS, L, T(1), A, Kg * PQ, B, CgRS * L, n0 == 0 ? T(0) : T(1), C,
                    Kg * CgRS);
  }
}

CONVKIT_CPU_CONV_INSTANTIATE(im2col)

}  // namespace convkit::cpu
