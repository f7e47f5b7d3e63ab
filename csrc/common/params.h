// Shapes and parameters shared by every backend: ConvParams, PoolParams and the output-size
// rules (torch's, ceil_mode included). Header-only; usable from host and device code.
#pragma once
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
  const int64_t span = in + 2 * pad - dil * (k - 1) - 1;
  int64_t out = (span + (ceil_mode ? stride - 1 : 0)) / stride + 1;
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

// Fills P and Q and checks the parameters; throws convkit::Error naming the bad value.
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
  ConvParams p{N, C, H, W, K, R, S, 0, 0, stride_h, stride_w, pad_t, pad_b, pad_l, pad_r, dil_h, dil_w, groups};
  p.P = conv_out_size(H, R, stride_h, pad_t, pad_b, dil_h);
  p.Q = conv_out_size(W, S, stride_w, pad_l, pad_r, dil_w);
  CK_CHECK(p.P > 0 && p.Q > 0, "conv2d: kernel larger than the padded input");
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
  PoolParams p{N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode, 0, 0};
  p.P = pool_out_size(H, kh, sh, ph, dh, ceil_mode);
  p.Q = pool_out_size(W, kw, sw, pw, dw, ceil_mode);
  CK_CHECK(p.P > 0 && p.Q > 0, "pool2d: output would be empty");
  return p;
}

}  // namespace convkit
