// conv2d by implicit GEMM (kernels in conv_implicit_gemm.cuh): the launchers, and the plan each
// pass runs with, a block tile and a split-K factor chosen per layer.
//
// The plan is the fastest tile and split count by tile_model.h's model of the reference device
// (an H100's 132 SMs whatever this device has, so the summation order and the result are the same
// on every GPU and on the emulator), over the four tiles of conv_implicit_gemm.cuh's TileSet.
// Forced variants (variant.h) override the tile, the split and the pipeline.
//
// Workspace: none, but for split-K's partial sums (fwd, grad input: splits x a chunk's outputs;
// grad weight: splits x the weight, also when the batch comes in more than one chunk).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "cuda/conv_algos.h"
#include "cuda/conv_implicit_gemm.cuh"
#include "cuda/dtype.cuh"
#include "cuda/gemm.h"
#include "cuda/runtime.h"
#include "cuda/tile_model.h"
#include "cuda/variant.h"

namespace convkit::cuda {
namespace {

using igemm::Geom;
using igemm::Plan;
using igemm::TileId;

constexpr int64_t kAlign = 256;

void check_int32(int64_t v, const char* what, int64_t limit = INT32_MAX) {
  if (v > limit)
    throw Error(std::string("implicit_gemm: ") + what + " = " + std::to_string(v) + " exceeds " + std::to_string(limit));
}

// Every product the kernels form in 32 bits stays there (one image of a chunk included). Window
// coordinates need nothing more than conv.cu's check: the padded input is below 2^31 and no
// stride passes it, so p * sh, h = p * sh - pt + r * dh and grad input's (h + pt - r * dh) / sh
// all lie within (-2^31, 2^31).
void check_fits(const ConvParams& p) {
  check_int32(p.C, "C");
  check_int32(p.K, "K");
  check_int32(p.H * p.W, "H*W", kGemmMaxDim);
  check_int32(p.P * p.Q, "P*Q", kGemmMaxDim);
  check_int32(p.Cg() * p.R * p.S, "C/groups*R*S");
  check_int32(p.Kg() * p.R * p.S, "K/groups*R*S");
}

Geom make_geom(const ConvParams& p) {
  Geom g{};
  g.C = static_cast<int>(p.C), g.H = static_cast<int>(p.H), g.W = static_cast<int>(p.W), g.K = static_cast<int>(p.K);
  g.P = static_cast<int>(p.P), g.Q = static_cast<int>(p.Q), g.R = static_cast<int>(p.R), g.S = static_cast<int>(p.S);
  g.sh = static_cast<int>(p.stride_h), g.sw = static_cast<int>(p.stride_w);
  g.pt = static_cast<int>(p.pad_t), g.pl = static_cast<int>(p.pad_l);
  g.dh = static_cast<int>(p.dil_h), g.dw = static_cast<int>(p.dil_w), g.groups = static_cast<int>(p.groups);
  g.Cg = static_cast<int>(p.Cg()), g.Kg = static_cast<int>(p.Kg()), g.RS = g.R * g.S, g.CgRS = g.Cg * g.RS;
  g.HW = g.H * g.W, g.PQ = g.P * g.Q, g.nb = 0;
  g.CHW = p.C * p.H * p.W, g.KPQ = p.K * p.P * p.Q;
  g.by_RS = FastDivmod(static_cast<uint32_t>(g.RS));
  g.by_S = FastDivmod(static_cast<uint32_t>(g.S));
  g.by_PQ = FastDivmod(static_cast<uint32_t>(g.PQ));
  g.by_Q = FastDivmod(static_cast<uint32_t>(g.Q));
  return g;
}

// grad input's stride phases: min(sh, H) x min(sw, W); pixels of the largest (the first) a image.
int64_t phases(const ConvParams& p) { return std::min(p.stride_h, p.H) * std::min(p.stride_w, p.W); }
int64_t phase_pixels(const ConvParams& p) {
  return ((p.H + p.stride_h - 1) / p.stride_h) * ((p.W + p.stride_w - 1) / p.stride_w);
}

// The GEMM a pass runs, for the plan: `units` GEMMs of M x N x K (grad input: its first stride
// phase's) and the outputs a split's partials hold (the model's), the GEMM columns of one image,
// and the partials' elements a split needs for one image (fwd, grad input) or for the whole pass
// (grad weight, whose partials are the weight's).
struct Shape : GemmShape {
  int64_t columns_per_image, partials_per_image;
};

Shape shape_of(ConvPass pass, const ConvParams& p) {
  const int64_t PQ = p.P * p.Q, CgRS = p.Cg() * p.R * p.S;
  switch (pass) {
    case ConvPass::Fwd:
      return Shape{{p.groups, p.Kg(), p.N * PQ, CgRS, p.N * p.K * PQ}, PQ, p.K * PQ};
    case ConvPass::BwdInput: {
      int r0, rstep, Rp, s0, sstep, Sp;
      igemm::BwdInput<float>::phase_taps(0, static_cast<int>(p.pad_t), static_cast<int>(p.stride_h),
                                         static_cast<int>(p.dil_h), static_cast<int>(p.R), r0, rstep, Rp);
      igemm::BwdInput<float>::phase_taps(0, static_cast<int>(p.pad_l), static_cast<int>(p.stride_w),
                                         static_cast<int>(p.dil_w), static_cast<int>(p.S), s0, sstep, Sp);
      return Shape{{phases(p) * p.groups, p.Cg(), p.N * phase_pixels(p), p.Kg() * Rp * Sp, p.N * p.C * p.H * p.W},
                   phase_pixels(p), p.C * p.H * p.W};
    }
    case ConvPass::BwdWeight:
      break;
  }
  return Shape{{p.groups, p.Kg(), CgRS, p.N * PQ, p.K * CgRS}, 0, p.K * CgRS};
}

template <typename T>
TileModel tile_model(TileId id) {
  TileModel m{};
  igemm::with_tile<T>(id, [&](auto cfg) { m = gemm_detail::tile_model_of<T, decltype(cfg)>(); });
  return m;
}

// The tensor-core kernel (igemm_tc_kernel, 64x64, 4 warps) in the model's units: WMMA on an
// H100 without wgmma and with register-staged operands, taken as 4x the SIMT FMA rate (the
// 16-bit tensor cores' peak is about 15x), 4 blocks an SM.
TileModel tc_tile_model() {
  return TileModel{igemm::TcTileDefault::BM, igemm::TcTileDefault::BN, 4.0, 4};
}

// Bytes of split partials for `splits` over `images` images (grad weight: the whole weight).
int64_t partial_bytes(ConvPass pass, const Shape& s, int splits, int64_t images, int64_t acc) {
  const int64_t per = pass == ConvPass::BwdWeight ? s.partials_per_image : s.partials_per_image * images;
  return (splits * per * acc + kAlign - 1) / kAlign * kAlign;
}

struct Choice {
  Plan plan;
  int64_t chunk;  // images a launch
  int64_t bytes;  // workspace
};

// The plan of `pass` for T with at most cap_bytes of workspace (see the file comment).
template <typename T>
Choice choose(ConvPass pass, const ConvParams& p, int64_t cap_bytes) {
  const Variant v = variant();
  const Shape s = shape_of(pass, p);
  const int64_t acc = sizeof(acc_t<T>);
  const bool f64 = sizeof(T) == 8;
  const int64_t by_index = pass == ConvPass::BwdWeight ? kGemmMaxDim / (p.P * p.Q) : kGemmMaxDim / s.columns_per_image;
  const int64_t max_chunk = std::max<int64_t>(1, std::min(p.N, by_index));
  const bool chunked_weight = pass == ConvPass::BwdWeight && max_chunk < p.N;
  const int64_t ktiles = std::max<int64_t>(1, plan_ceil_div(s.K, 8));
  const int max_splits = plan_max_splits(s.K);
  // Whether `splits` fits the cap with one image a chunk (or needs no partials).
  const auto fits = [&](int splits) {
    if (splits == 1 && !chunked_weight) return true;
    return partial_bytes(pass, s, splits, 1, acc) <= std::max<int64_t>(cap_bytes, 0);
  };
  const bool tc = igemm::kTensorCoreType<T> && v.igemm_math == IgemmMathMode::Auto;
  Plan best{TileId::Big, 1, igemm::kAsyncCopyable<T> && v.igemm_pipeline == IgemmPipelineMode::Auto, tc};
  double best_sec = -1;
  for (int t = 0; t < igemm::kTileCount; ++t) {
    const TileId id = static_cast<TileId>(t);
    if (tc && t > 0) break;  // one tensor-core tile
    if (!tc && v.igemm_tile != IgemmTileMode::Auto && static_cast<int>(v.igemm_tile) != t + 1) continue;
    const TileModel m = tc ? tc_tile_model() : tile_model<T>(id);
    for (int splits = 1; splits <= (v.splitk == SplitMode::Off ? 1 : max_splits); ++splits) {
      if (!fits(splits)) break;  // more splits need more bytes
      const double sec = model_seconds(m, s, splits, acc, f64);
      if (best_sec < 0 || sec < best_sec) best_sec = sec, best.tile = id, best.splits = splits;
    }
  }
  if (v.splitk == SplitMode::On) {
    int forced = static_cast<int>(std::max<int64_t>(best.splits, std::min<int64_t>(kForcedSplits, ktiles)));
    while (forced > best.splits && !fits(forced)) --forced;
    best.splits = forced;
  }
  Choice c{best, max_chunk, 0};
  if (pass == ConvPass::BwdWeight) {
    if (best.splits > 1 || chunked_weight) c.bytes = partial_bytes(pass, s, best.splits, 1, acc);
  } else if (best.splits > 1) {
    const int64_t per_image = partial_bytes(pass, s, best.splits, 1, acc);
    c.chunk = std::max<int64_t>(1, std::min(max_chunk, cap_bytes / std::max<int64_t>(per_image, 1)));
    c.bytes = partial_bytes(pass, s, best.splits, c.chunk, acc);
  }
  return c;
}

// The plan of (pass, dt, p) under cap_bytes. The search evaluates the model for every tile and
// split count (a few microseconds), and each op asks twice (its workspace query, then its launch
// with the bytes the query gave), every step of a training loop: so the last few answers are kept
// per thread, keyed by everything the plan reads (the forced variant included).
Choice choice_for(ConvPass pass, DType dt, const ConvParams& p, int64_t cap_bytes) {
  check_fits(p);
  struct Key {
    int pass, dt;
    int64_t cap;
    ConvParams p;
    Variant v;
    bool operator==(const Key& o) const {  // (ConvParams and Variant: plain fields, no padding)
      return pass == o.pass && dt == o.dt && cap == o.cap && std::memcmp(&p, &o.p, sizeof p) == 0 &&
             std::memcmp(&v, &o.v, sizeof v) == 0;
    }
  };
  const Key key{static_cast<int>(pass), static_cast<int>(dt), cap_bytes, p, variant()};
  constexpr int kCached = 8;
  thread_local Key keys[kCached];
  thread_local Choice choices[kCached];
  thread_local int used = 0, next = 0;
  for (int i = 0; i < used; ++i)
    if (keys[i] == key) return choices[i];
  Choice c{};
  dispatch_dtype(dt, [&](auto tag) { c = choose<decltype(tag)>(pass, p, cap_bytes); });
  keys[next] = key, choices[next] = c;
  next = (next + 1) % kCached, used = std::min(used + 1, kCached);
  return c;
}

template <typename T>
acc_t<T>* workspace(const Choice& c, void* ws, int64_t ws_bytes) {
  if (c.bytes > 0 && (ws == nullptr || ws_bytes < c.bytes))
    throw Error("implicit_gemm: workspace of " + std::to_string(ws_bytes) + " bytes is smaller than the " +
                std::to_string(c.bytes) + " its split-K partials need");
  return c.bytes > 0 ? static_cast<acc_t<T>*>(ws) : nullptr;
}

const char* tile_name(TileId id) {
  switch (id) {
    case TileId::Big:
      return "big";
    case TileId::Small:
      return "small";
    case TileId::Narrow:
      return "narrow";
    case TileId::Short:
      return "short";
  }
  return "?";
}

}  // namespace

ConvPlanInfo implicit_gemm_plan(ConvPass pass, DType dt, const ConvParams& p, int64_t cap_bytes) {
  const Choice c = choice_for(pass, dt, p, cap_bytes);
  ConvPlanInfo info{};
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    const Shape s = shape_of(pass, p);
    const TileModel m = c.plan.tensor_cores ? tc_tile_model() : tile_model<T>(c.plan.tile);
    igemm::with_tile<T>(c.plan.tile, [&](auto cfg) { info.threads = decltype(cfg)::kThreads; });
    if (c.plan.tensor_cores) info.threads = igemm::TcTileDefault::kThreads;
    info.model_seconds = model_seconds(m, s, c.plan.splits, sizeof(acc_t<T>), sizeof(T) == 8);
    info.BM = m.BM, info.BN = m.BN, info.blocks_per_sm = m.per_sm;
    const int64_t cols = pass == ConvPass::BwdWeight ? s.N : std::min(c.chunk, p.N) * s.columns_per_image;
    info.blocks = plan_ceil_div(s.M, m.BM) * plan_ceil_div(cols, m.BN) * s.units * c.plan.splits;
  });
  info.tile = c.plan.tensor_cores ? "tensor_cores" : tile_name(c.plan.tile);
  info.splits = c.plan.splits, info.async = c.plan.async;
  info.chunk = c.chunk, info.bytes = c.bytes;
  return info;
}

namespace implicit_gemm {

int64_t workspace_bytes(ConvPass pass, DType dt, const ConvParams& p, int64_t cap_bytes) {
  return choice_for(pass, dt, p, cap_bytes).bytes;
}

void fwd(DType dt, const ConvParams& p, const void* x, const void* w, const void* b, void* y, void* ws,
         int64_t ws_bytes, StreamHandle stream) {
  const Choice c = choice_for(ConvPass::Fwd, dt, p, ws_bytes);
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    igemm::run_fwd<T>(p, make_geom(p), static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b),
                      static_cast<T*>(y), workspace<T>(c, ws, ws_bytes), c.plan, c.chunk, stream);
  });
}

void bwd_input(DType dt, const ConvParams& p, const void* dy, const void* w, void* dx, void* ws, int64_t ws_bytes,
               StreamHandle stream) {
  const Choice c = choice_for(ConvPass::BwdInput, dt, p, ws_bytes);
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    igemm::run_bwd_input<T>(p, make_geom(p), static_cast<const T*>(dy), static_cast<const T*>(w), static_cast<T*>(dx),
                            workspace<T>(c, ws, ws_bytes), c.plan, c.chunk, stream);
  });
}

void bwd_weight(DType dt, const ConvParams& p, const void* dy, const void* x, void* dw, void* ws, int64_t ws_bytes,
                StreamHandle stream) {
  const Choice c = choice_for(ConvPass::BwdWeight, dt, p, ws_bytes);
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    igemm::run_bwd_weight<T>(p, make_geom(p), static_cast<const T*>(dy), static_cast<const T*>(x),
                             static_cast<T*>(dw), workspace<T>(c, ws, ws_bytes), c.plan, c.chunk, stream);
  });
}

}  // namespace implicit_gemm
}  // namespace convkit::cuda
