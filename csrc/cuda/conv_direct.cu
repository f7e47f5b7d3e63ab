// conv2d by the "direct" algorithm on the GPU (NCHW / KCRS, any window, stride, padding, dilation
// and groups): the direct:: entry points of conv_algos.h. Forward and each stride phase of grad
// input become one correlation (conv_direct.cuh's DirectGeom), run by the depthwise kernel
// (conv_direct_depthwise.cu) where a group's output plane sums few input planes, else by the
// general kernel (conv_direct_general.cu). Grad weight reduces N*P*Q per block (the depthwise
// or the general grad-weight kernel, conv_direct_grad_weight.cu), split partials summed in a
// fixed order by gemm.h's splitk_reduce (no atomics).
#include <algorithm>
#include <cstdint>
#include <string>

#include "common/params.h"
#include "cuda/conv_algos.h"
#include "cuda/conv_direct.cuh"
#include "cuda/dtype.cuh"
#include "cuda/fill.cuh"
#include "cuda/gemm.h"
#include "cuda/runtime.h"
#include "cuda/variant.h"

namespace convkit::cuda::direct {
namespace {

// The kernels index within a plane and along an axis in 32 bits.
void check_32bit(const ConvParams& p, const char* op) {
  const int64_t lim = int64_t{1} << 30;
  const int64_t biggest = std::max({p.H * p.W, p.P * p.Q, p.H + p.pad_t + p.pad_b + (p.P + 64) * p.stride_h,
                                    p.W + p.pad_l + p.pad_r + (p.Q + 64) * p.stride_w, p.R * p.dil_h + p.P + 64,
                                    p.S * p.dil_w + p.Q + 64, p.C / p.groups * p.R * p.S, p.K, p.C});
  if (biggest >= lim)
    throw Error(std::string(op) + ": shape too large for the direct kernels' 32-bit in-plane indexing (" +
                std::to_string(p.H) + "x" + std::to_string(p.W) + " input, " + std::to_string(p.R) + "x" +
                std::to_string(p.S) + " kernel)");
}

DirectGeom fwd_geom(const ConvParams& p) {
  DirectGeom g{};
  const int64_t Cg = p.Cg(), Kg = p.Kg(), RS = p.R * p.S;
  g.groups = static_cast<int>(p.groups);
  g.n_red = static_cast<int>(Cg);
  g.n_out = static_cast<int>(Kg);
  g.in_img = p.C * p.H * p.W, g.in_plane = p.H * p.W;
  g.in_h = static_cast<int>(p.H), g.in_w = static_cast<int>(p.W);
  g.out_img = p.K * p.P * p.Q, g.out_plane = p.P * p.Q, g.out_off = 0;
  g.out_rs = static_cast<int>(p.Q), g.out_cs = 1;
  g.out_h = static_cast<int>(p.P), g.out_w = static_cast<int>(p.Q);
  g.str_h = static_cast<int>(p.stride_h), g.str_w = static_cast<int>(p.stride_w);
  g.dil_h = static_cast<int>(p.dil_h), g.dil_w = static_cast<int>(p.dil_w);
  g.base_h = static_cast<int>(-p.pad_t), g.base_w = static_cast<int>(-p.pad_l);
  g.taps_h = static_cast<int>(p.R), g.taps_w = static_cast<int>(p.S);
  g.wr0 = 0, g.wr_step = 1, g.ws0 = 0, g.ws_step = 1, g.w_cols = static_cast<int>(p.S);
  g.w_out = Cg * RS, g.w_red = RS, g.w_group = Kg * Cg * RS;
  return g;
}

// Taps of one stride phase of grad input along one axis. dx position ph + stride * t receives
// dy position (ph + pad - r * dil) / stride + t from kernel index r when stride divides the
// numerator: r runs over an arithmetic progression of step m = stride / gcd(stride, dil), and
// the dy offset falls by dil / gcd a step. Listed in increasing dy offset (decreasing r).
struct PhaseTaps {
  int taps, base, dil, w0, w_step;
};

PhaseTaps phase_taps(int64_t ph, int64_t pad, int64_t k, int64_t stride, int64_t dil) {
  int64_t a = stride, b = dil;
  while (b != 0) {
    const int64_t t = a % b;
    a = b;
    b = t;
  }
  const int64_t gcd = a, m = stride / gcd;
  int64_t first = -1;
  for (int64_t r = 0; r < k && r < stride; ++r)
    if (((ph + pad - r * dil) % stride + stride) % stride == 0) {
      first = r;
      break;
    }
  PhaseTaps t{0, 0, 1, 0, 1};
  if (first < 0 || first >= k) return t;
  const int64_t count = (k - 1 - first) / m + 1, last = first + (count - 1) * m;
  t.taps = static_cast<int>(count);
  t.base = static_cast<int>((ph + pad - last * dil) / stride);  // exact
  t.dil = static_cast<int>(dil / gcd);
  t.w0 = static_cast<int>(last);
  t.w_step = static_cast<int>(-m);
  return t;
}

// Grad input, the phase of dx rows ph + sh * t and columns pw + sw * u, as a correlation of dy.
DirectGeom bwd_phase_geom(const ConvParams& p, int64_t ph, int64_t pw) {
  DirectGeom g{};
  const int64_t Cg = p.Cg(), Kg = p.Kg(), RS = p.R * p.S;
  const PhaseTaps rt = phase_taps(ph, p.pad_t, p.R, p.stride_h, p.dil_h);
  const PhaseTaps ct = phase_taps(pw, p.pad_l, p.S, p.stride_w, p.dil_w);
  g.groups = static_cast<int>(p.groups);
  g.n_red = static_cast<int>(Kg);
  g.n_out = static_cast<int>(Cg);
  g.in_img = p.K * p.P * p.Q, g.in_plane = p.P * p.Q;
  g.in_h = static_cast<int>(p.P), g.in_w = static_cast<int>(p.Q);
  g.out_img = p.C * p.H * p.W, g.out_plane = p.H * p.W, g.out_off = ph * p.W + pw;
  g.out_rs = static_cast<int>(p.stride_h * p.W), g.out_cs = static_cast<int>(p.stride_w);
  g.out_h = static_cast<int>(ph < p.H ? ceil_div(p.H - ph, p.stride_h) : 0);
  g.out_w = static_cast<int>(pw < p.W ? ceil_div(p.W - pw, p.stride_w) : 0);
  g.str_h = 1, g.str_w = 1;
  g.dil_h = rt.dil, g.dil_w = ct.dil;
  g.base_h = rt.base, g.base_w = ct.base;
  g.taps_h = rt.taps, g.taps_w = ct.taps;
  g.wr0 = rt.w0, g.wr_step = rt.w_step, g.ws0 = ct.w0, g.ws_step = ct.w_step, g.w_cols = static_cast<int>(p.S);
  g.w_out = RS, g.w_red = Cg * RS, g.w_group = Kg * Cg * RS;
  return g;
}

// One forward pass or grad-input phase: the depthwise kernel where a group's output plane sums
// one input plane (or a few, with one output plane a group), else the general kernel.
void run_direct(DType dt, const DirectGeom& g, int64_t N, const void* in, const void* w, const void* b, void* out,
                StreamHandle stream) {
  const bool depthwise = (g.n_red == 1 && g.n_out <= 8) || (g.n_out == 1 && g.n_red <= 16);
  DwTiling t{};
  if (depthwise && plan_depthwise(g, N * g.groups * g.n_out, static_cast<int>(acc_bytes(dt)), false, t)) {
    run_depthwise(dt, g, t, in, w, b, out, stream);
    return;
  }
  run_general(dt, g, N, in, w, b, out, stream);
}

// Grad weight's plan: a pure function of the shape, the accumulator size and the workspace cap
// (the bytes a caller offers; the partials of every split must fit in it, else fewer splits).
struct WgradPlan {
  bool depthwise;
  int maxt;
  DirectGeom g;
  DwTiling dt;
  WGeom wg;
  int splits;
  int64_t ws_bytes;
};

// Splits of grad weight's reduction: `want` (for the block target), at most `most` (splits of
// the preferred least length) or, with split-K forced on, kForcedSplits where `most_forced`
// (splits of the least length a stage allows) has room; never more than the workspace cap's
// partials. Forced off: one.
int choose_splits(int64_t want, int64_t most, int64_t most_forced, int64_t out_elems, int acc_bytes,
                  int64_t cap_bytes) {
  const SplitMode mode = variant().splitk;
  if (mode == SplitMode::Off) return 1;
  int64_t s = std::max<int64_t>(1, std::min(want, most));
  if (mode == SplitMode::On) s = std::max(s, std::min<int64_t>(kForcedSplits, most_forced));
  const int64_t per = out_elems * acc_bytes;
  if (s > 1) s = std::min(s, std::max<int64_t>(cap_bytes, 0) / per);
  return static_cast<int>(std::max<int64_t>(s, 1));
}

WgradPlan plan_bwd_weight(const ConvParams& p, int acc_bytes, int64_t cap_bytes) {
  WgradPlan w{};
  const int64_t Cg = p.Cg(), Kg = p.Kg(), J = Cg * p.R * p.S, out_elems = p.K * J;
  w.g = fwd_geom(p);
  if (p.N == 0) return w;
  if (Cg == 1 && p.R * p.S <= kDwTapsLarge && plan_depthwise(w.g, p.K, acc_bytes, true, w.dt)) {
    DwTiling& t = w.dt;
    w.depthwise = true;
    w.maxt = p.R * p.S <= kDwTapsSmall ? kDwTapsSmall : kDwTapsLarge;
    t.items = p.N * t.tiles_p * t.tiles_q;
    t.kgroups = ceil_div(p.K, t.nch);
    w.splits = choose_splits(ceil_div(kWTargetBlocks, t.kgroups), t.items, t.items, out_elems, acc_bytes, cap_bytes);
    t.per_split = ceil_div(t.items, w.splits);
    w.splits = static_cast<int>(ceil_div(t.items, t.per_split));  // every split non-empty
    t.splits = w.splits;
  } else {
    WGeom& g = w.wg;
    g.groups = static_cast<int>(p.groups), g.Cg = static_cast<int>(Cg), g.Kg = static_cast<int>(Kg);
    g.K = static_cast<int>(p.K), g.R = static_cast<int>(p.R), g.S = static_cast<int>(p.S);
    g.H = static_cast<int>(p.H), g.W = static_cast<int>(p.W), g.P = static_cast<int>(p.P), g.Q = static_cast<int>(p.Q);
    g.str_h = static_cast<int>(p.stride_h), g.str_w = static_cast<int>(p.stride_w);
    g.dil_h = static_cast<int>(p.dil_h), g.dil_w = static_cast<int>(p.dil_w);
    g.pad_t = static_cast<int>(p.pad_t), g.pad_l = static_cast<int>(p.pad_l);
    g.J = static_cast<int>(J);
    g.HW = p.H * p.W, g.PQ = p.P * p.Q, g.CHW = p.C * g.HW, g.KPQ = p.K * g.PQ, g.L = p.N * g.PQ;
    g.tiles_k = static_cast<int>(ceil_div(Kg, kWBk));
    g.tiles_j = static_cast<int>(ceil_div(J, kWBj));
    const int64_t tiles = p.groups * g.tiles_k * g.tiles_j;
    w.splits = choose_splits(ceil_div(kWTargetBlocks, tiles), ceil_div(g.L, kWMinSplit), ceil_div(g.L, kWPix),
                             out_elems, acc_bytes, cap_bytes);
    g.split_len = ceil_div(ceil_div(g.L, w.splits), kWPix) * kWPix;
    w.splits = static_cast<int>(ceil_div(g.L, g.split_len));  // every split non-empty
    g.splits = w.splits;
    g.blocks = tiles * w.splits;
  }
  w.ws_bytes = w.splits > 1 ? w.splits * out_elems * acc_bytes : 0;
  return w;
}

}  // namespace

int64_t workspace_bytes(ConvPass pass, DType dt, const ConvParams& p, int64_t cap_bytes) {
  if (pass != ConvPass::BwdWeight || p.N == 0) return 0;
  return plan_bwd_weight(p, static_cast<int>(acc_bytes(dt)), cap_bytes).ws_bytes;
}

// Forward and grad input need no workspace.
void fwd(DType dt, const ConvParams& p, const void* x, const void* w, const void* b, void* y, void* /*ws*/,
         int64_t /*ws_bytes*/, StreamHandle stream) {
  check_32bit(p, "conv2d_fwd (direct)");
  run_direct(dt, fwd_geom(p), p.N, x, w, b, y, stream);
}

void bwd_input(DType dt, const ConvParams& p, const void* dy, const void* w, void* dx, void* /*ws*/,
               int64_t /*ws_bytes*/, StreamHandle stream) {
  check_32bit(p, "conv2d_bwd_input (direct)");
  // One launch per stride phase that some tap reaches. The phases no tap reaches (a stride
  // wider than the window: a strided 1x1, say) get zeros from one fill of dx beforehand.
  const int64_t nph = std::min(p.stride_h, p.H), npw = std::min(p.stride_w, p.W);
  bool any_empty = false;
  for (int64_t ph = 0; ph < nph; ++ph) any_empty |= phase_taps(ph, p.pad_t, p.R, p.stride_h, p.dil_h).taps == 0;
  for (int64_t pw = 0; pw < npw; ++pw) any_empty |= phase_taps(pw, p.pad_l, p.S, p.stride_w, p.dil_w).taps == 0;
  dispatch_dtype(dt, [&](auto tag) {  // an element type this build lacks fails here, before any launch
    using T = decltype(tag);
    if (any_empty) zero_fill(p.N * p.C * p.H * p.W, static_cast<T*>(dx), stream);
  });
  for (int64_t ph = 0; ph < nph; ++ph)
    for (int64_t pw = 0; pw < npw; ++pw) {
      const DirectGeom g = bwd_phase_geom(p, ph, pw);
      if (g.taps_h == 0 || g.taps_w == 0) continue;
      run_direct(dt, g, p.N, dy, w, nullptr, dx, stream);
    }
}

void bwd_weight(DType dt, const ConvParams& p, const void* dy, const void* x, void* dw, void* ws, int64_t ws_bytes,
                StreamHandle stream) {
  check_32bit(p, "conv2d_bwd_weight (direct)");
  const int accb = static_cast<int>(acc_bytes(dt));
  // The workspace offered is the cap: the caller sized it with workspace_bytes at some cap, and
  // the same plan comes out of the same bytes.
  const WgradPlan plan = plan_bwd_weight(p, accb, ws == nullptr ? 0 : ws_bytes);
  if (plan.ws_bytes > 0 && (ws == nullptr || ws_bytes < plan.ws_bytes))
    throw Error("conv2d_bwd_weight (direct): workspace of " + std::to_string(ws_bytes) + " bytes, needs " +
                std::to_string(plan.ws_bytes));
  const int64_t out_elems = p.K * p.Cg() * p.R * p.S;
  if (plan.depthwise)
    run_depthwise_grad_weight(dt, plan.maxt, plan.g, plan.dt, x, dy, ws, dw, stream);
  else
    run_grad_weight(dt, plan.wg, dy, x, ws, dw, stream);
  if (plan.splits > 1)  // gemm.h's splitk_reduce sums the partials in split order
    dispatch_dtype(dt, [&](auto tag) {
      using T = decltype(tag);
      using A = acc_t<T>;
      splitk_reduce<T>(static_cast<const A*>(ws), plan.splits, out_elems, static_cast<T*>(dw), stream);
    });
}

}  // namespace convkit::cuda::direct
