// conv2d 'reference': the definition of the convolution as loops, a test oracle. Each output
// element is one sum, accumulated in double in a fixed order (channel, tap row, tap column; for
// grad weight image, output row, output column), over exactly the taps that land inside the
// input, so it needs no workspace or padded copy and its time follows the work, not the padding.
// Not a candidate of auto (common/conv_algo.h); it runs when asked for by name.
//
//   fwd:        y[n, k, p, q]  = b[k] + sum_{c, r, s} x[n, g*Cg + c, p*sh - pt + r*dh, q*sw - pl + s*dw] * w[k, c, r, s]
//   bwd_input:  dx[n, g*Cg + c, h, v] = sum_{k in g, r, s : h = p*sh - pt + r*dh, v = q*sw - pl + s*dw} dy[n, k, p, q] * w[k, c, r, s]
//   bwd_weight: dw[k, c, r, s] = sum_{n, p, q} dy[n, k, p, q] * x[n, g*Cg + c, p*sh - pt + r*dh, q*sw - pl + s*dw]
#include <omp.h>

#include <algorithm>
#include <cstdint>

#include "cpu/conv.h"
#include "cpu/threads.h"

namespace convkit::cpu {
namespace {

// Runs body(i) for i in [0, n) on the kernel threads, exceptions and interrupts kept inside.
template <typename F>
void parallel_rows(int64_t n, F&& body) {
  const int nt = num_threads();
  ParallelGuard guard;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (nt > 1 && n > 1)
  for (int64_t i = 0; i < n; ++i) guard.run([&] { body(i); });
  guard.finish();
}

}  // namespace

int64_t reference::workspace_bytes(ConvPass, int64_t, const ConvParams&, int64_t) { return 0; }

template <typename T>
void reference::fwd(const ConvParams& p, const T* x, const T* w, const T* b, T* y, T* /*ws*/, int64_t /*ws_bytes*/) {
  const int64_t Cg = p.Cg(), Kg = p.Kg(), HW = p.H * p.W;
  parallel_rows(p.N * p.K * p.P, [&](int64_t row) {  // row = (n, k, p)
    const int64_t oh = row % p.P, k = (row / p.P) % p.K, n = row / (p.P * p.K), g = k / Kg;
    const int64_t ih0 = oh * p.stride_h - p.pad_t;
    int64_t r_lo, r_hi;
    valid_outputs(ih0, p.dil_h, p.H, p.R, r_lo, r_hi);  // taps inside the input
    for (int64_t oq = 0; oq < p.Q; ++oq) {
      const int64_t iw0 = oq * p.stride_w - p.pad_l;
      int64_t s_lo, s_hi;
      valid_outputs(iw0, p.dil_w, p.W, p.S, s_lo, s_hi);
      double acc = 0;
      for (int64_t c = 0; c < Cg; ++c) {
        const T* xc = x + (n * p.C + g * Cg + c) * HW;
        const T* wc = w + (k * Cg + c) * p.R * p.S;
        for (int64_t r = r_lo; r < r_hi; ++r)
          for (int64_t s = s_lo; s < s_hi; ++s)
            acc += double(xc[(ih0 + r * p.dil_h) * p.W + iw0 + s * p.dil_w]) * double(wc[r * p.S + s]);
      }
      y[row * p.Q + oq] = T(acc + (b ? double(b[k]) : 0.0));
    }
  });
}

template <typename T>
void reference::bwd_input(const ConvParams& p, const T* dy, const T* w, T* dx, T* /*ws*/, int64_t /*ws_bytes*/) {
  const int64_t Cg = p.Cg(), Kg = p.Kg(), PQ = p.P * p.Q;
  parallel_rows(p.N * p.C * p.H, [&](int64_t row) {  // row = (n, channel, h)
    const int64_t h = row % p.H, ch = (row / p.H) % p.C, n = row / (p.H * p.C), g = ch / Cg, c = ch % Cg;
    // Tap row r reaches h from output row oh = (h + pt - r*dh) / sh when that is a whole number
    // in [0, P): the first r that can is r0 (oh <= P - 1), the last the one before oh < 0.
    const int64_t r0 = std::max<int64_t>(0, ceil_div(h + p.pad_t - (p.P - 1) * p.stride_h, p.dil_h));
    for (int64_t v = 0; v < p.W; ++v) {
      const int64_t s0 = std::max<int64_t>(0, ceil_div(v + p.pad_l - (p.Q - 1) * p.stride_w, p.dil_w));
      double acc = 0;
      for (int64_t kl = 0; kl < Kg; ++kl) {
        const int64_t k = g * Kg + kl;
        const T* dyk = dy + (n * p.K + k) * PQ;
        const T* wk = w + (k * Cg + c) * p.R * p.S;
        for (int64_t r = r0; r < p.R; ++r) {
          const int64_t th = h + p.pad_t - r * p.dil_h;  // = oh * sh
          if (th < 0) break;
          if (th % p.stride_h) continue;
          const int64_t oh = th / p.stride_h;
          for (int64_t s = s0; s < p.S; ++s) {
            const int64_t tw = v + p.pad_l - s * p.dil_w;  // = oq * sw
            if (tw < 0) break;
            if (tw % p.stride_w) continue;
            acc += double(dyk[oh * p.Q + tw / p.stride_w]) * double(wk[r * p.S + s]);
          }
        }
      }
      dx[row * p.W + v] = T(acc);
    }
  });
}

template <typename T>
void reference::bwd_weight(const ConvParams& p, const T* dy, const T* x, T* dw, T* /*ws*/, int64_t /*ws_bytes*/) {
  const int64_t Cg = p.Cg(), Kg = p.Kg(), HW = p.H * p.W, PQ = p.P * p.Q;
  parallel_rows(p.K * Cg * p.R, [&](int64_t row) {  // row = (k, c, r)
    const int64_t r = row % p.R, c = (row / p.R) % Cg, k = row / (p.R * Cg), g = k / Kg;
    int64_t oh_lo, oh_hi;
    valid_outputs(r * p.dil_h - p.pad_t, p.stride_h, p.H, p.P, oh_lo, oh_hi);
    for (int64_t s = 0; s < p.S; ++s) {
      int64_t oq_lo, oq_hi;
      valid_outputs(s * p.dil_w - p.pad_l, p.stride_w, p.W, p.Q, oq_lo, oq_hi);
      double acc = 0;
      for (int64_t n = 0; n < p.N; ++n) {
        const T* xc = x + (n * p.C + g * Cg + c) * HW;
        const T* dyk = dy + (n * p.K + k) * PQ;
        for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
          const int64_t ih = oh * p.stride_h - p.pad_t + r * p.dil_h;
          for (int64_t oq = oq_lo; oq < oq_hi; ++oq)
            acc += double(dyk[oh * p.Q + oq]) * double(xc[ih * p.W + oq * p.stride_w - p.pad_l + s * p.dil_w]);
        }
      }
      dw[row * p.S + s] = T(acc);
    }
  });
}

CONVKIT_CPU_CONV_INSTANTIATE(reference)

}  // namespace convkit::cpu
