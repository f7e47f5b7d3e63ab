// conv2d with a 1x1 kernel and no padding as convkit's tiled GEMM (gemm.h) straight on NCHW,
// no column buffer: the pixel index of a GEMM runs across images (n -> (image, p, q)), and a
// stride > 1 becomes the loader's map from output pixel (p, q) to input pixel (p*sh, q*sw).
//   forward      Y_g[:, pixels] = W_g x X_g[:, strided pixels] (+ bias), one GEMM per group;
//   grad input   dX_g[:, strided pixels] = W_g^T x dY_g, with dX zeroed first when the stride
//                leaves input pixels that no output reads;
//   (both split-K when the layer's tiles would leave the GPU idle, e.g. 7x7 maps at batch 1:
//   the splits' float partials in the workspace, summed in split order into the output);
//   grad weight  dW_g = dY_g x X_g^T over K = N*P*Q, split-K into float partials in the
//                workspace, summed in order.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "cuda/conv_algos.h"
#include "cuda/dtype.cuh"
#include "cuda/fill.cuh"
#include "cuda/gemm.h"
#include "cuda/grid.cuh"
#include "cuda/runtime.h"

namespace convkit::cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// kernel launcher

bool unit_stride(const ConvParams& p) { return p.stride_h == 1 && p.stride_w == 1; }

// Input pixel map of output pixel index i (across images): dense when the stride is 1.
IndexMap input_map(const ConvParams& p) {
  const int64_t HW = p.H * p.W;
  if (unit_stride(p)) return IndexMap::images(HW, p.C * HW);
  return IndexMap::strided(p.P, p.Q, p.stride_h * p.W, p.stride_w, p.C * HW);
}

void check_sizes(const ConvParams& p) {
  if (p.C > INT32_MAX || p.K > INT32_MAX || p.H * p.W > INT32_MAX || p.P * p.Q > kGemmMaxDim)
    throw Error("1x1: C, K and H*W must each be below 2^31, P*Q at most " + std::to_string(kGemmMaxDim) +
                "; got C = " + std::to_string(p.C) + ", K = " + std::to_string(p.K) + ", H*W = " +
                std::to_string(p.H * p.W));
}

// Images per GEMM: the pixel index over them (the GEMM's N, or K in grad weight) must stay
// within the GEMM's 32-bit indexing (kGemmMaxDim).
int64_t images_per_gemm(const ConvParams& p) {
  return std::max<int64_t>(1, std::min<int64_t>(p.N, kGemmMaxDim / (p.P * p.Q)));
}

// Split-K of forward and grad input (gemm.h's mapped split): the split count, images a GEMM and
// the workspace of their partial sums under cap_bytes. A function of the shape and the cap only.
struct OutPlan {
  int splits;
  int64_t chunk;
  int64_t bytes;
};

OutPlan out_plan(ConvPass pass, DType dt, const ConvParams& p, int64_t cap_bytes) {
  const bool fwd = pass == ConvPass::Fwd;
  const int64_t per_image = (fwd ? p.K : p.C) * p.P * p.Q * acc_bytes(dt);  // one image's outputs
  const int64_t step = images_per_gemm(p);
  const int splits = gemm_output_splits(dt, fwd ? p.Kg() : p.Cg(), p.N * p.P * p.Q, fwd ? p.Cg() : p.Kg(), p.groups,
                                        cap_bytes, per_image);
  if (splits == 1) return OutPlan{1, step, 0};
  const int64_t chunk = std::max<int64_t>(1, std::min(step, cap_bytes / (splits * per_image)));
  return OutPlan{splits, chunk, splits * chunk * per_image};
}

int bwd_weight_splits(DType dt, const ConvParams& p) {
  int splits = 1;
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    splits = gemm_splits<T>(static_cast<int>(p.Kg()), static_cast<int>(p.Cg()), p.N * p.P * p.Q,
                            static_cast<int>(p.groups));
  });
  return splits;
}

template <typename T>
void fwd_typed(const ConvParams& p, const T* x, const T* w, const T* b, T* y, const OutPlan& plan, void* ws,
               StreamHandle stream) {
  const int64_t HW = p.H * p.W, PQ = p.P * p.Q, step = plan.chunk;
  for (int64_t n0 = 0; n0 < p.N; n0 += step) {
    const int64_t nb = std::min(step, p.N - n0);
    GemmDesc<T, T> d{};
    d.M = static_cast<int>(p.Kg()), d.N = static_cast<int>(nb * PQ), d.K = static_cast<int>(p.Cg());
    d.batches = static_cast<int>(p.groups), d.splits = 1;
    d.trans_a = false, d.trans_b = false;
    d.A = GemmIn<T>{w, p.Cg(), p.Kg() * p.Cg(), IndexMap::plain()};
    d.B = GemmIn<T>{x + n0 * p.C * HW, HW, p.Cg() * HW, input_map(p)};  // slow k = channel, fast n = pixel
    d.C = GemmOut<T>{y + n0 * p.K * PQ, PQ, p.Kg() * PQ, 0, IndexMap::images(PQ, p.K * PQ)};
    d.bias = b, d.bias_batch_stride = p.Kg();
    d.accumulate = false;
    d.splits = plan.splits, d.partials = static_cast<acc_t<T>*>(ws);
    gemm_run(d, stream);
  }
}

template <typename T>
void bwd_input_typed(const ConvParams& p, const T* dy, const T* w, T* dx, const OutPlan& plan, void* ws,
                     StreamHandle stream) {
  const int64_t HW = p.H * p.W, PQ = p.P * p.Q, step = plan.chunk;
  if (!unit_stride(p)) {  // input pixels between the strided ones get no gradient
    zero_fill(p.N * p.C * HW, dx, stream);
  }
  for (int64_t n0 = 0; n0 < p.N; n0 += step) {
    const int64_t nb = std::min(step, p.N - n0);
    GemmDesc<T, T> d{};
    d.M = static_cast<int>(p.Cg()), d.N = static_cast<int>(nb * PQ), d.K = static_cast<int>(p.Kg());
    d.batches = static_cast<int>(p.groups), d.splits = 1;
    d.trans_a = true, d.trans_b = false;
    d.A = GemmIn<T>{w, p.Cg(), p.Kg() * p.Cg(), IndexMap::plain()};  // W_g^T: slow k = out channel, fast m
    d.B = GemmIn<T>{dy + n0 * p.K * PQ, PQ, p.Kg() * PQ, IndexMap::images(PQ, p.K * PQ)};
    d.C = GemmOut<T>{dx + n0 * p.C * HW, HW, p.Cg() * HW, 0, input_map(p)};
    d.bias = nullptr, d.bias_batch_stride = 0;
    d.accumulate = false;
    d.splits = plan.splits, d.partials = static_cast<acc_t<T>*>(ws);
    gemm_run(d, stream);
  }
}

template <typename T>
void bwd_weight_typed(const ConvParams& p, const T* dy, const T* x, T* dw, void* ws, int splits,
                      StreamHandle stream) {
  using A = acc_t<T>;
  A* part = static_cast<A*>(ws);
  const int64_t HW = p.H * p.W, PQ = p.P * p.Q, step = images_per_gemm(p);
  for (int64_t n0 = 0; n0 < p.N; n0 += step) {
    const int64_t nb = std::min(step, p.N - n0);
    GemmDesc<T, A> d{};
    d.M = static_cast<int>(p.Kg()), d.N = static_cast<int>(p.Cg()), d.K = static_cast<int>(nb * PQ);
    d.batches = static_cast<int>(p.groups), d.splits = splits;
    d.trans_a = false, d.trans_b = true;
    d.A = GemmIn<T>{dy + n0 * p.K * PQ, PQ, p.Kg() * PQ, IndexMap::images(PQ, p.K * PQ)};  // slow m, fast k
    d.B = GemmIn<T>{x + n0 * p.C * HW, HW, p.Cg() * HW, input_map(p)};  // X_g^T: slow n = channel, fast k
    d.C = GemmOut<A>{part, p.Cg(), p.Kg() * p.Cg(), p.K * p.Cg(), IndexMap::plain()};
    d.bias = nullptr, d.bias_batch_stride = 0;
    d.accumulate = n0 > 0;
    gemm_run(d, stream);
  }
  splitk_reduce<T>(part, splits, p.K * p.Cg(), dw, stream);
}

}  // namespace

namespace onebyone {

int64_t workspace_bytes(ConvPass pass, DType dt, const ConvParams& p, int64_t cap_bytes) {
  if (pass != ConvPass::BwdWeight) {
    check_sizes(p);
    return out_plan(pass, dt, p, cap_bytes).bytes;
  }
  return bwd_weight_splits(dt, p) * p.K * p.Cg() * acc_bytes(dt);
}

void fwd(DType dt, const ConvParams& p, const void* x, const void* w, const void* b, void* y, void* ws,
         int64_t ws_bytes, StreamHandle stream) {
  check_sizes(p);
  const OutPlan plan = out_plan(ConvPass::Fwd, dt, p, ws_bytes);  // conv.cu has checked ws against the query
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    fwd_typed<T>(p, static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), static_cast<T*>(y),
                 plan, ws, stream);
  });
}

void bwd_input(DType dt, const ConvParams& p, const void* dy, const void* w, void* dx, void* ws, int64_t ws_bytes,
               StreamHandle stream) {
  check_sizes(p);
  const OutPlan plan = out_plan(ConvPass::BwdInput, dt, p, ws_bytes);
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    bwd_input_typed<T>(p, static_cast<const T*>(dy), static_cast<const T*>(w), static_cast<T*>(dx), plan, ws,
                       stream);
  });
}

void bwd_weight(DType dt, const ConvParams& p, const void* dy, const void* x, void* dw, void* ws, int64_t ws_bytes,
                StreamHandle stream) {
  check_sizes(p);
  const int splits = bwd_weight_splits(dt, p);  // conv.cu's check_workspace has checked ws against this
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    bwd_weight_typed<T>(p, static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<T*>(dw), ws, splits,
                        stream);
  });
}

}  // namespace onebyone
}  // namespace convkit::cuda
