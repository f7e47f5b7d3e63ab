// conv2d by im2col + convkit's tiled GEMM (gemm.h) on the GPU. The caller's workspace holds
// the column buffer col[C*R*S][chunk*P*Q] for a chunk of the batch (group g owns rows
// g*Cg*R*S..), so one batched GEMM per chunk (batch = groups) covers its images:
//   forward      Y_g = W_g x col_g (+ bias), written straight into NCHW by the output map;
//                split-K when the layer's tiles would leave the GPU idle (gemm.h's mapped split,
//                the partials behind the columns), as is the grad-input GEMM;
//   grad input   dcol_g = W_g^T x dY_g (kept in the accumulator type: float for the half types,
//                so they round once), then col2im in gather form (each dx element sums its
//                column entries in a fixed order: no atomics, deterministic);
//   grad weight  dW_g = sum over chunks of dY_g x col_g^T, split over K = chunk*P*Q into
//                float partials (in front of the columns in the workspace), summed in order.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "cuda/conv_algos.h"
#include "cuda/dtype.cuh"
#include "cuda/gemm.h"
#include "cuda/grid.cuh"
#include "cuda/fast_divmod.cuh"
#include "cuda/runtime.h"

namespace convkit::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kAlign = 256;  // workspace regions start 256-byte aligned

// The convolution's geometry in 32 bits, with the divisions the im2col kernels need.
struct ColGeom {
  int C, H, W, R, S, P, Q, sh, sw, pt, pl, dh, dw;
  int L;                     // columns of the chunk: images * P * Q
  FastDivmod by_PQ, by_Q;    // column j -> (image, p, q)
  FastDivmod by_RS, by_S;    // row -> (c, r, s)
  FastDivmod by_W;           // dx plane index -> (h, w)
};

// ---------------------------------------------------------------------------------------------
// GPU kernels

// col[(c*R + r)*S + s][i*P*Q + p*Q + q] = x[i][c][p*sh - pt + r*dh][q*sw - pl + s*dw] (0 outside).
// Threads run along the columns (coalesced writes), each thread's column fixed while it walks
// rows blockIdx.y, blockIdx.y + gridDim.y, ... The grid-stride counters are unsigned: they stay
// below 2^31 inside the loop, but the last one plus the stride may not (still below 2^32).
template <typename T>
__global__ void __launch_bounds__(kThreads) im2col_kernel(ColGeom g, const T* __restrict__ x, T* __restrict__ col) {
  const unsigned rows = static_cast<unsigned>(g.C * g.R * g.S), L = static_cast<unsigned>(g.L);
  const int64_t HW = static_cast<int64_t>(g.H) * g.W;
  for (unsigned j = blockIdx.x * blockDim.x + threadIdx.x; j < L; j += gridDim.x * blockDim.x) {
    uint32_t img, pq, p, q;  // column j is pixel (p, q) of image img of the chunk
    g.by_PQ.divmod(j, img, pq);
    g.by_Q.divmod(pq, p, q);
    const int h0 = static_cast<int>(p) * g.sh - g.pt, w0 = static_cast<int>(q) * g.sw - g.pl;
    const T* xi = x + static_cast<int64_t>(img) * g.C * HW;
    for (unsigned row = blockIdx.y; row < rows; row += gridDim.y) {
      uint32_t c, rs, r, s;
      g.by_RS.divmod(row, c, rs);  // row = (c*R + r)*S + s
      g.by_S.divmod(rs, r, s);
      const int h = h0 + static_cast<int>(r) * g.dh, w = w0 + static_cast<int>(s) * g.dw;
      const bool in = static_cast<unsigned>(h) < static_cast<unsigned>(g.H) &&
                      static_cast<unsigned>(w) < static_cast<unsigned>(g.W);
      col[static_cast<int64_t>(row) * g.L + j] = in ? load_ro(xi + c * HW + h * g.W + w) : from_acc<T>(acc_t<T>(0));
    }
  }
}

// Gather form of col2im: dx[i][c][h][w] = sum over (r, s) of dcol[(c*R + r)*S + s][i*PQ + p*Q + q]
// for the (p, q) with p*sh - pt + r*dh == h and q*sw - pl + s*dw == w. A thread owns one dx
// element at a time: every element written once, terms summed in (r, s) order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    col2im_kernel(ColGeom g, int planes, const acc_t<T>* __restrict__ dcol, T* __restrict__ dx) {
  using A = acc_t<T>;
  const int HW = g.H * g.W;
  const int PQ = g.P * g.Q;
  // Unsigned grid-stride counters, as in im2col_kernel.
  const unsigned HWu = static_cast<unsigned>(HW), planes_u = static_cast<unsigned>(planes);
  for (unsigned e = blockIdx.x * blockDim.x + threadIdx.x; e < HWu; e += gridDim.x * blockDim.x) {
    uint32_t h, w;  // e = h * W + w, the element of its plane
    g.by_W.divmod(e, h, w);
    for (unsigned pu = blockIdx.y; pu < planes_u; pu += gridDim.y) {
      const int plane = static_cast<int>(pu);
      const int img = plane / g.C, c = plane - img * g.C;  // plane = img * C + c
      A sum = A(0);
      for (int r = 0; r < g.R; ++r) {
        const int hp = static_cast<int>(h) + g.pt - r * g.dh;  // = p * sh
        if (hp < 0 || hp % g.sh != 0 || hp / g.sh >= g.P) continue;
        const int p = hp / g.sh;
        for (int s = 0; s < g.S; ++s) {
          const int wp = static_cast<int>(w) + g.pl - s * g.dw;  // = q * sw
          if (wp < 0 || wp % g.sw != 0 || wp / g.sw >= g.Q) continue;
          const int q = wp / g.sw;
          const int64_t row = (static_cast<int64_t>(c) * g.R + r) * g.S + s;
          sum += load_ro(dcol + row * g.L + static_cast<int64_t>(img) * PQ + p * g.Q + q);
        }
      }
      dx[static_cast<int64_t>(plane) * HW + e] = from_acc<T>(sum);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// kernel launcher

int64_t align_up(int64_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

void check_int32(int64_t v, const char* what, int64_t limit = INT32_MAX) {
  if (v > limit)
    throw Error(std::string("im2col: ") + what + " = " + std::to_string(v) + " exceeds " + std::to_string(limit));
}

// The split-K partitions of grad weight (chosen on the whole reduction N * P * Q, so every chunk
// uses the same partial buffers) and their bytes.
int bwd_weight_splits(DType dt, const ConvParams& p) {
  int splits = 1;
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    splits = gemm_splits<T>(static_cast<int>(p.Kg()), static_cast<int>(p.Cg() * p.R * p.S), p.N * p.P * p.Q,
                            static_cast<int>(p.groups));
  });
  return splits;
}

int64_t partial_bytes(ConvPass pass, DType dt, const ConvParams& p) {
  if (pass != ConvPass::BwdWeight) return 0;
  return align_up(bwd_weight_splits(dt, p) * p.K * p.Cg() * p.R * p.S * acc_bytes(dt));
}

// Column bytes of one image: columns of x in its dtype (forward, grad weight), or grad-input
// columns in the accumulator type (float for the half types).
int64_t image_bytes(ConvPass pass, DType dt, const ConvParams& p) {
  const int64_t elem = pass == ConvPass::BwdInput && dt != DType::F64 ? 4 : dtype_bytes(dt);
  return p.C * p.R * p.S * p.P * p.Q * elem;
}

// Images per chunk: as many as the bytes allow, and few enough that a chunk's columns (the
// GEMM's N, or K in grad weight) stay within the GEMM's 32-bit indexing (kGemmMaxDim).
int64_t chunk_for(const ConvParams& p, int64_t bytes, int64_t per_image) {
  const int64_t by_index = std::max<int64_t>(1, kGemmMaxDim / (p.P * p.Q));
  return std::max<int64_t>(1, std::min({p.N, bytes / per_image, by_index}));
}

// Split-K of forward and grad input (gemm.h's mapped split: the splits' partial sums of a
// chunk's GEMM output behind its columns, summed in order into the output: y, or the grad-input
// columns): the split count and each image's bytes of partials. The count depends on the shape
// and on whether the cap leaves room for one image's columns and partials.
struct OutSplit {
  int splits;
  int64_t per_image;  // partial bytes of one image, all splits
};

OutSplit out_split(ConvPass pass, DType dt, const ConvParams& p, int64_t cap_bytes) {
  if (pass == ConvPass::BwdWeight) return OutSplit{1, 0};
  const bool fwd = pass == ConvPass::Fwd;
  const int64_t out_image = (fwd ? p.K : p.C * p.R * p.S) * p.P * p.Q * acc_bytes(dt);
  const int64_t CgRS = p.Cg() * p.R * p.S;
  const int splits = gemm_output_splits(dt, fwd ? p.Kg() : CgRS, p.N * p.P * p.Q, fwd ? CgRS : p.Kg(), p.groups,
                                        cap_bytes - kAlign - image_bytes(pass, dt, p), out_image);
  return OutSplit{splits, splits > 1 ? splits * out_image : 0};
}

ColGeom make_geom(const ConvParams& p, int64_t images) {
  check_int32(p.C * p.R * p.S, "C*R*S");
  check_int32(images * p.P * p.Q, "chunk*P*Q", kGemmMaxDim);
  check_int32(images * p.C, "chunk*C");  // col2im's planes
  check_int32(p.H * p.W, "H*W");
  ColGeom g;
  g.C = static_cast<int>(p.C), g.H = static_cast<int>(p.H), g.W = static_cast<int>(p.W);
  g.R = static_cast<int>(p.R), g.S = static_cast<int>(p.S), g.P = static_cast<int>(p.P), g.Q = static_cast<int>(p.Q);
  g.sh = static_cast<int>(p.stride_h), g.sw = static_cast<int>(p.stride_w);
  g.pt = static_cast<int>(p.pad_t), g.pl = static_cast<int>(p.pad_l);
  g.dh = static_cast<int>(p.dil_h), g.dw = static_cast<int>(p.dil_w);
  g.L = static_cast<int>(images * p.P * p.Q);
  g.by_PQ = FastDivmod(static_cast<uint32_t>(p.P * p.Q));
  g.by_Q = FastDivmod(static_cast<uint32_t>(p.Q));
  g.by_RS = FastDivmod(static_cast<uint32_t>(p.R * p.S));
  g.by_S = FastDivmod(static_cast<uint32_t>(p.S));
  g.by_W = FastDivmod(static_cast<uint32_t>(p.W));
  return g;
}

// A 2-D grid: x over `items` (threads along it), y over `rows` (walked by the threads), sized
// for a few waves of the device (grid.cuh's cap; one block an SM under the emulator).
dim3 grid_2d(int64_t items, int64_t rows) {
  const unsigned gx = grid_blocks(items, kThreads);
  const int64_t cap = static_cast<int64_t>(device_limits().sm_count) * kBlocksPerSm;
  const int64_t gy = std::max<int64_t>(1, std::min<int64_t>({rows, 65535, std::max<int64_t>(1, cap / gx)}));
  return dim3(gx, static_cast<unsigned>(gy));
}

template <typename T>
void im2col_launch(const ColGeom& g, const T* x, T* col, StreamHandle stream) {
  launch("im2col_kernel", im2col_kernel<T>, grid_2d(g.L, static_cast<int64_t>(g.C) * g.R * g.S), dim3(kThreads), 0,
         stream, g, x, col);
}

// The workspace: [grad weight's split-K partials][a chunk's columns][pad to 256 bytes][forward's
// or grad input's split-K partials of the chunk]. The pad is there only with output partials.
struct Workspace {
  void* partials;      // bwd_weight's split-K partials (nullptr otherwise)
  void* col;
  int64_t chunk;
  int splits;          // forward's / grad input's split-K
  void* out_partials;  // their partial sums (nullptr with one split)
};

// Bytes the parts take for `chunk` images, and the chunk ws_bytes holds.
struct Layout {
  int64_t part, per_image, pad;
  OutSplit out;
};

Layout layout(ConvPass pass, DType dt, const ConvParams& p, int64_t cap_bytes) {
  const OutSplit out = out_split(pass, dt, p, cap_bytes);
  return Layout{partial_bytes(pass, dt, p), image_bytes(pass, dt, p) + out.per_image, out.splits > 1 ? kAlign : 0,
                out};
}

Workspace carve(ConvPass pass, DType dt, const ConvParams& p, void* ws, int64_t ws_bytes) {
  const Layout l = layout(pass, dt, p, ws_bytes);
  const int64_t need = l.part + l.per_image + l.pad;
  if (ws == nullptr || ws_bytes < need)
    throw Error("im2col: workspace of " + std::to_string(ws_bytes) + " bytes is smaller than the " +
                std::to_string(need) + " one image needs");
  unsigned char* base = static_cast<unsigned char*>(ws);
  const int64_t chunk = chunk_for(p, ws_bytes - l.part - l.pad, l.per_image);
  void* out_part = nullptr;
  if (l.out.splits > 1) out_part = base + l.part + align_up(chunk * image_bytes(pass, dt, p));
  return Workspace{l.part ? base : nullptr, base + l.part, chunk, l.out.splits, out_part};
}

template <typename T>
void fwd_typed(const ConvParams& p, const T* x, const T* w, const T* b, T* y, const Workspace& ws,
               StreamHandle stream) {
  T* col = static_cast<T*>(ws.col);
  const int64_t CgRS = p.Cg() * p.R * p.S, PQ = p.P * p.Q;
  for (int64_t n0 = 0; n0 < p.N; n0 += ws.chunk) {
    const int64_t nb = std::min(ws.chunk, p.N - n0);
    const ColGeom g = make_geom(p, nb);
    im2col_launch(g, x + n0 * p.C * p.H * p.W, col, stream);
    GemmDesc<T, T> d{};
    d.M = static_cast<int>(p.Kg()), d.N = g.L, d.K = static_cast<int>(CgRS);
    d.batches = static_cast<int>(p.groups), d.splits = 1;
    d.trans_a = false, d.trans_b = false;
    d.A = GemmIn<T>{w, CgRS, p.Kg() * CgRS, IndexMap::plain()};
    d.B = GemmIn<T>{col, g.L, CgRS * g.L, IndexMap::plain()};
    d.C = GemmOut<T>{y + n0 * p.K * PQ, PQ, p.Kg() * PQ, 0, IndexMap::images(PQ, p.K * PQ)};
    d.bias = b, d.bias_batch_stride = p.Kg();
    d.accumulate = false;
    d.splits = ws.splits, d.partials = static_cast<acc_t<T>*>(ws.out_partials);
    gemm_run(d, stream);
  }
}

template <typename T>
void bwd_input_typed(const ConvParams& p, const T* dy, const T* w, T* dx, const Workspace& ws, StreamHandle stream) {
  using A = acc_t<T>;
  A* dcol = static_cast<A*>(ws.col);
  const int64_t CgRS = p.Cg() * p.R * p.S, PQ = p.P * p.Q;
  for (int64_t n0 = 0; n0 < p.N; n0 += ws.chunk) {
    const int64_t nb = std::min(ws.chunk, p.N - n0);
    const ColGeom g = make_geom(p, nb);
    GemmDesc<T, A> d{};
    d.M = static_cast<int>(CgRS), d.N = g.L, d.K = static_cast<int>(p.Kg());
    d.batches = static_cast<int>(p.groups), d.splits = 1;
    d.trans_a = true, d.trans_b = false;
    d.A = GemmIn<T>{w, CgRS, p.Kg() * CgRS, IndexMap::plain()};  // W_g^T: slow k (output channel), fast m
    d.B = GemmIn<T>{dy + n0 * p.K * PQ, PQ, p.Kg() * PQ, IndexMap::images(PQ, p.K * PQ)};
    d.C = GemmOut<A>{dcol, g.L, CgRS * g.L, 0, IndexMap::plain()};
    d.bias = nullptr, d.bias_batch_stride = 0;
    d.accumulate = false;
    d.splits = ws.splits, d.partials = static_cast<A*>(ws.out_partials);
    gemm_run(d, stream);
    const int planes = static_cast<int>(nb * p.C);
    launch("col2im_kernel", col2im_kernel<T>, grid_2d(p.H * p.W, planes), dim3(kThreads), 0, stream, g, planes,
           static_cast<const A*>(dcol), dx + n0 * p.C * p.H * p.W);
  }
}

template <typename T>
void bwd_weight_typed(const ConvParams& p, const T* dy, const T* x, T* dw, const Workspace& ws, int splits,
                      StreamHandle stream) {
  using A = acc_t<T>;
  T* col = static_cast<T*>(ws.col);
  A* part = static_cast<A*>(ws.partials);
  const int64_t CgRS = p.Cg() * p.R * p.S, PQ = p.P * p.Q;
  for (int64_t n0 = 0; n0 < p.N; n0 += ws.chunk) {
    const int64_t nb = std::min(ws.chunk, p.N - n0);
    const ColGeom g = make_geom(p, nb);
    im2col_launch(g, x + n0 * p.C * p.H * p.W, col, stream);
    GemmDesc<T, A> d{};
    d.M = static_cast<int>(p.Kg()), d.N = static_cast<int>(CgRS), d.K = g.L;
    d.batches = static_cast<int>(p.groups), d.splits = splits;
    d.trans_a = false, d.trans_b = true;
    d.A = GemmIn<T>{dy + n0 * p.K * PQ, PQ, p.Kg() * PQ, IndexMap::images(PQ, p.K * PQ)};  // slow m, fast k
    d.B = GemmIn<T>{col, g.L, CgRS * g.L, IndexMap::plain()};  // col_g^T: slow n (column row), fast k
    d.C = GemmOut<A>{part, CgRS, p.Kg() * CgRS, p.K * CgRS, IndexMap::plain()};
    d.bias = nullptr, d.bias_batch_stride = 0;
    d.accumulate = n0 > 0;  // later chunks add to the partials, in stream order
    gemm_run(d, stream);
  }
  splitk_reduce<T>(part, splits, p.K * CgRS, dw, stream);
}

}  // namespace

namespace im2col {

int64_t workspace_bytes(ConvPass pass, DType dt, const ConvParams& p, int64_t cap_bytes) {
  const Layout l = layout(pass, dt, p, cap_bytes);
  const int64_t chunk = chunk_for(p, std::max<int64_t>(cap_bytes - l.part - l.pad, 0), l.per_image);
  return l.part + chunk * l.per_image + l.pad;
}

void fwd(DType dt, const ConvParams& p, const void* x, const void* w, const void* b, void* y, void* ws,
         int64_t ws_bytes, StreamHandle stream) {
  const Workspace space = carve(ConvPass::Fwd, dt, p, ws, ws_bytes);
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    fwd_typed<T>(p, static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b), static_cast<T*>(y),
                 space, stream);
  });
}

void bwd_input(DType dt, const ConvParams& p, const void* dy, const void* w, void* dx, void* ws, int64_t ws_bytes,
               StreamHandle stream) {
  const Workspace space = carve(ConvPass::BwdInput, dt, p, ws, ws_bytes);
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    bwd_input_typed<T>(p, static_cast<const T*>(dy), static_cast<const T*>(w), static_cast<T*>(dx), space, stream);
  });
}

void bwd_weight(DType dt, const ConvParams& p, const void* dy, const void* x, void* dw, void* ws, int64_t ws_bytes,
                StreamHandle stream) {
  const Workspace space = carve(ConvPass::BwdWeight, dt, p, ws, ws_bytes);
  const int splits = bwd_weight_splits(dt, p);
  dispatch_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    bwd_weight_typed<T>(p, static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<T*>(dw), space, splits,
                        stream);
  });
}

}  // namespace im2col
}  // namespace convkit::cuda
