// Shapes and parameters shared by every backend: ConvParams, PoolParams and the output-size
// rules (torch's, ceil_mode included). Header-only; usable from host and device code.
#pragma once
#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "common/error.h"

#if defined(__CUDACC__)
#define CK_HOST_DEVICE __host__ __device__
#else
#define CK_HOST_DEVICE
#endif

namespace convkit {

// Output length of a convolution along one axis with explicit low/high padding.
CK_HOST_DEVICE inline int64_t conv_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad_lo,
                                            int64_t pad_hi, int64_t dil) {
  return (in + pad_lo + pad_hi - dil * (k - 1) - 1) / stride + 1;
}

// Output length of a pooling window along one axis, torch's rule: with ceil_mode a last window
// that would start inside the right padding (or past the input) is dropped.
CK_HOST_DEVICE inline int64_t pool_out_size(int64_t in, int64_t k, int64_t stride, int64_t pad,
                                            int64_t dil, bool ceil_mode) {
  const int64_t span = in + 2 * pad - dil * (k - 1) - 1;  // negative when the window outgrows the input
  const int64_t num = span + (ceil_mode ? stride - 1 : 0);
  int64_t out = (num >= 0 ? num / stride : -((-num + stride - 1) / stride)) + 1;  // floor division, as torch
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

// conv2d: input [N, C, H, W], weight [K, C/groups, R, S], output [N, K, P, Q], all NCHW
// contiguous. Pads are explicit per side so torch's asymmetric 'same' is native.
struct ConvParams {
  int64_t N, C, H, W;
  int64_t K, R, S;
  int64_t P, Q;
  int64_t stride_h, stride_w;
  int64_t pad_t, pad_b, pad_l, pad_r;
  int64_t dil_h, dil_w;
  int64_t groups;

  CK_HOST_DEVICE int64_t Cg() const { return C / groups; }  // input channels per group
  CK_HOST_DEVICE int64_t Kg() const { return K / groups; }  // output channels per group
  CK_HOST_DEVICE bool is_1x1() const {
    return R == 1 && S == 1 && pad_t == 0 && pad_b == 0 && pad_l == 0 && pad_r == 0;
  }
};

// Saturating int64 arithmetic for sizes derived from caller-supplied parameters (padded extents,
// dilated kernels, planes, scratch): a sum or product that would overflow is kSizeMax, which
// every bound and budget refuses.
constexpr int64_t kSizeMax = INT64_MAX;
inline int64_t sat_add(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_add_overflow(a, b, &r) ? kSizeMax : r;
}
inline int64_t sat_mul(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_mul_overflow(a, b, &r) ? kSizeMax : r;
}

// The most any derived extent may be (a padded side, a dilated kernel): below 2^62, so that a
// sum or difference of two of them, as the kernels' index arithmetic forms, stays in int64. The
// Python layer checks the same bound first (convkit._params.SIZE_LIMIT) with a friendlier message.
constexpr int64_t kSizeLimit = int64_t{1} << 62;

// Fills P and Q and checks the parameters; throws convkit::Error naming the bad value.
// With one output row (column), the stride never moves a window, so a stride past the padded
// input is replaced by the padded extent: P (Q) stays 1, and no kernel sees a stride larger than
// the input it pads (which would otherwise drive phase loops, scratch sizes and 32-bit casts).
inline ConvParams make_conv_params(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R,
                                   int64_t S, int64_t stride_h, int64_t stride_w, int64_t pad_t,
                                   int64_t pad_b, int64_t pad_l, int64_t pad_r, int64_t dil_h,
                                   int64_t dil_w, int64_t groups) {
  CK_CHECK(N >= 0 && C > 0 && H > 0 && W > 0, "conv2d: bad input shape");
  CK_CHECK(K > 0 && R > 0 && S > 0, "conv2d: bad weight shape");
  CK_CHECK(stride_h > 0 && stride_w > 0, "conv2d: stride must be >= 1");
  CK_CHECK(dil_h > 0 && dil_w > 0, "conv2d: dilation must be >= 1");
  CK_CHECK(pad_t >= 0 && pad_b >= 0 && pad_l >= 0 && pad_r >= 0, "conv2d: padding must be >= 0");
  CK_CHECK(groups > 0 && C % groups == 0 && K % groups == 0, "conv2d: groups must divide C and K");
  // (every operand below is non-negative, checked above)
  const int64_t hp = sat_add(sat_add(H, pad_t), pad_b), wp = sat_add(sat_add(W, pad_l), pad_r);
  CK_CHECK(hp <= kSizeLimit && wp <= kSizeLimit,
           "conv2d: the padded input is 2^62 or more on a side (padding too large)");
  const int64_t eh = sat_add(sat_mul(dil_h, R - 1), 1), ew = sat_add(sat_mul(dil_w, S - 1), 1);
  CK_CHECK(eh <= hp && ew <= wp, "conv2d: the dilated kernel is larger than the padded input");
  CK_CHECK(sat_mul(sat_mul(N, C), sat_mul(H, W)) < kSizeMax &&
               sat_mul(sat_mul(K, C / groups), sat_mul(R, S)) < kSizeMax,
           "conv2d: the input or weight has 2^63 elements or more");
  ConvParams p{N, C, H, W, K, R, S, 0, 0, stride_h, stride_w, pad_t, pad_b, pad_l, pad_r, dil_h, dil_w, groups};
  p.P = (hp - eh) / stride_h + 1;
  p.Q = (wp - ew) / stride_w + 1;
  if (p.P == 1) p.stride_h = std::min(stride_h, hp);
  if (p.Q == 1) p.stride_w = std::min(stride_w, wp);
  CK_CHECK(sat_mul(sat_mul(N, K), sat_mul(p.P, p.Q)) < kSizeMax, "conv2d: the output has 2^63 elements or more");
  return p;
}

// Pooling over [N, C, H, W] to [N, C, P, Q] (NCHW contiguous); symmetric padding, as torch.
struct PoolParams {
  int64_t N, C, H, W;
  int64_t kh, kw;
  int64_t sh, sw;
  int64_t ph, pw;
  int64_t dh, dw;
  bool ceil_mode;
  int64_t P, Q;
};

inline PoolParams make_pool_params(int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                                   int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                                   int64_t dw, bool ceil_mode) {
  CK_CHECK(N >= 0 && C > 0 && H > 0 && W > 0, "pool2d: bad input shape");
  CK_CHECK(kh > 0 && kw > 0 && sh > 0 && sw > 0 && dh > 0 && dw > 0,
           "pool2d: kernel, stride and dilation must be >= 1");
  CK_CHECK(ph >= 0 && pw >= 0 && 2 * ph <= kh && 2 * pw <= kw,
           "pool2d: padding must be between 0 and half the kernel");
  const int64_t hp = sat_add(H, sat_mul(2, ph)), wp = sat_add(W, sat_mul(2, pw));
  CK_CHECK(hp <= kSizeLimit && wp <= kSizeLimit,
           "pool2d: the padded input is 2^62 or more on a side (padding too large)");
  const int64_t eh = sat_add(sat_mul(dh, kh - 1), 1), ew = sat_add(sat_mul(dw, kw - 1), 1);
  // (a dilated window may be larger than the padded input, as torch allows, if a window remains)
  CK_CHECK(eh <= kSizeLimit && ew <= kSizeLimit, "pool2d: the dilated window is 2^62 or more");
  // A stride of max(padded extent, dilated window) or more leaves at most one window along its
  // axis (ceil_mode's extra window would start past the input and is dropped), so it is capped
  // there: the same output, and pool_out_size's sums stay inside int64.
  PoolParams p{N,  C,  H,  W,  kh, kw, std::min(sh, std::max(hp, eh)), std::min(sw, std::max(wp, ew)),
               ph, pw, dh, dw, ceil_mode, 0, 0};
  p.P = pool_out_size(H, kh, p.sh, ph, dh, ceil_mode);
  p.Q = pool_out_size(W, kw, p.sw, pw, dw, ceil_mode);
  CK_CHECK(p.P > 0 && p.Q > 0, "pool2d: output would be empty");
  return p;
}

}  // namespace convkit
