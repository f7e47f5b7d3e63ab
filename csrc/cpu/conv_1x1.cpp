// conv2d with a 1x1 kernel and no padding: a GEMM straight on NCHW, no column buffer. The batch
// is folded into the GEMM's pixel axis and the stride into the packing (MatAxis::grid reads
// pixel (p, q) of image n at n*C*H*W + p*sh*W + q*sw), one batched GEMM over the groups.
#include <omp.h>

#include <algorithm>

#include "cpu/conv.h"
#include "cpu/gemm.h"
#include "cpu/threads.h"

namespace convkit::cpu {
namespace {

// The strided input pixels of group-local channel rows: pixel j = (n*P + p)*Q + q.
inline MatAxis input_pixels(const ConvParams& p) {
  return MatAxis::grid(p.P, p.Q, p.stride_h * p.W, p.stride_w, p.C * p.H * p.W);
}
// The output pixels: j = n*P*Q + pq -> n*K*P*Q + pq.
inline MatAxis output_pixels(const ConvParams& p) {
  return MatAxis::segmented(p.P * p.Q, 1, p.K * p.P * p.Q);
}

void check_1x1(const ConvParams& p) {
  CK_CHECK(p.is_1x1(), "conv2d(algo='1x1'): needs a 1x1 kernel with zero padding");
}

}  // namespace

int64_t onebyone::workspace_bytes(ConvPass, int64_t, const ConvParams&, int64_t) { return 0; }

template <typename T>
void onebyone::fwd(const ConvParams& p, const T* x, const T* w, const T* b, T* y, T* /*ws*/, int64_t /*ws_bytes*/) {
  check_1x1(p);
  if (p.N == 0) return;
  const int64_t G = p.groups, Kg = p.Kg(), Cg = p.Cg(), HW = p.H * p.W, PQ = p.P * p.Q;
  // Y_g [Kg, N*PQ] = W_g [Kg, Cg] x X_g [Cg, N*PQ (strided pixels)] + b_g
  MatView<const T> A{w, MatAxis::linear(Cg), MatAxis::linear(1)};
  MatView<const T> B{x, MatAxis::linear(HW), input_pixels(p)};
  MatView<T> C{y, MatAxis::linear(PQ), output_pixels(p)};
  gemm_batched<T>(G, Kg, p.N * PQ, Cg, T(1), A, Kg * Cg, B, Cg * HW, T(0), C, Kg * PQ, b, Kg);
}

template <typename T>
void onebyone::bwd_input(const ConvParams& p, const T* dy, const T* w, T* dx, T* /*ws*/, int64_t /*ws_bytes*/) {
  check_1x1(p);
  if (p.N == 0) return;
  const int64_t G = p.groups, Kg = p.Kg(), Cg = p.Cg(), HW = p.H * p.W, PQ = p.P * p.Q;
  if (p.stride_h > 1 || p.stride_w > 1) {
    // Pixels between the strided ones (and past the last window) get no gradient.
    const int64_t total = p.N * p.C * HW;
#pragma omp parallel for schedule(static) num_threads(num_threads())
    for (int64_t i = 0; i < total; i += 4096) std::fill(dx + i, dx + std::min(total, i + 4096), T(0));
  }
  // dX_g [Cg, N*PQ (strided pixels)] = W_g^T [Cg, Kg] x dY_g [Kg, N*PQ]
  MatView<const T> A{w, MatAxis::linear(1), MatAxis::linear(Cg)};
  MatView<const T> B{dy, MatAxis::linear(PQ), output_pixels(p)};
  MatView<T> C{dx, MatAxis::linear(HW), input_pixels(p)};
  gemm_batched<T>(G, Cg, p.N * PQ, Kg, T(1), A, Kg * Cg, B, Kg * PQ, T(0), C, Cg * HW);
}

template <typename T>
void onebyone::bwd_weight(const ConvParams& p, const T* dy, const T* x, T* dw, T* /*ws*/, int64_t /*ws_bytes*/) {
  check_1x1(p);
  if (p.N == 0) return;
  const int64_t G = p.groups, Kg = p.Kg(), Cg = p.Cg(), HW = p.H * p.W, PQ = p.P * p.Q;
  // dW_g [Kg, Cg] = dY_g [Kg, N*PQ] x X_g^T [N*PQ (strided pixels), Cg]
  MatView<const T> A{dy, MatAxis::linear(PQ), output_pixels(p)};
  MatView<const T> B{x, input_pixels(p), MatAxis::linear(HW)};
  MatView<T> C{dw, MatAxis::linear(Cg), MatAxis::linear(1)};
  gemm_batched<T>(G, Kg, Cg, p.N * PQ, T(1), A, Kg * PQ, B, Cg * HW, T(0), C, Kg * Cg);
}

CONVKIT_CPU_CONV_INSTANTIATE(onebyone)

}  // namespace convkit::cpu
