// Bindings of the CUDA convolution launchers (csrc/cuda/ops.h) for _cuda and _cudasim: the CPU
// module's conv2d signatures plus device and stream (the workspace query takes neither: it is a
// pure size query). Every call runs through run_op (GIL released, failures as RuntimeError
// naming the op, the shapes and the cause).
#include <cstdint>
#include <string>

#include "bindings/bind_util.h"
#include "bindings/cuda_bind_util.h"
#include "common/conv_algo.h"
#include "common/params.h"
#include "cuda/conv_algos.h"
#include "cuda/ops.h"

namespace py = pybind11;

namespace convkit::bind {
namespace {

using cuda::StreamHandle;

ConvAlgo cuda_algo(const std::string& algo, const char* op, const char* backend) {
  return parse_conv_algo(algo, cuda::kCudaConvAlgos, op, backend);
}

std::string conv_shapes(const std::string& algo, const std::string& dtype, const ConvParams& p) {
  auto s = [](int64_t v) { return std::to_string(v); };
  return "algo=" + algo + ", x=[" + s(p.N) + ", " + s(p.C) + ", " + s(p.H) + ", " + s(p.W) + "], w=[" + s(p.K) +
         ", " + s(p.Cg()) + ", " + s(p.R) + ", " + s(p.S) + "], y=[" + s(p.N) + ", " + s(p.K) + ", " + s(p.P) + ", " +
         s(p.Q) + "], stride=" + s(p.stride_h) + "x" + s(p.stride_w) + ", pad=(" + s(p.pad_t) + ", " + s(p.pad_b) +
         ", " + s(p.pad_l) + ", " + s(p.pad_r) + "), dilation=" + s(p.dil_h) + "x" + s(p.dil_w) +
         ", groups=" + s(p.groups) + ", dtype=" + dtype;
}

}  // namespace

void register_cuda_conv(pybind11::module_& m, const char* backend) {
  register_conv_algos(m, cuda::kCudaConvAlgos);
  m.def(
      "conv2d_workspace_bytes",
      [backend](const std::string& algo, const std::string& pass_, const std::string& dtype, const ConvParams& p,
                int64_t cap_bytes) -> int64_t {
        constexpr const char* op = "conv2d_workspace_bytes";
        int64_t bytes = 0;
        run_op(op, [&] { return conv_shapes(algo, dtype, p); }, [&] {
          bytes = cuda::conv2d_workspace_bytes(cuda_algo(algo, op, backend), parse_conv_pass(pass_, op),
                                               cuda_dtype(dtype, op, backend), p, cap_bytes);
        });
        return bytes;
      },
      py::arg("algo"), py::arg("pass_"), py::arg("dtype"), py::arg("p"), py::arg("cap_bytes"),
      "Workspace bytes for (algo, pass_); 0 when none is needed. im2col: whole images of columns, at most "
      "cap_bytes but at least one image, plus split-K partials for bwd_weight");

  m.def(
      "implicit_gemm_plan",
      [backend](const std::string& pass_, const std::string& dtype, const ConvParams& p, int64_t cap_bytes) {
        constexpr const char* op = "implicit_gemm_plan";
        cuda::ConvPlanInfo info{};
        run_op(op, [&] { return conv_shapes("implicit_gemm", dtype, p); }, [&] {
          (void)cuda::conv2d_workspace_bytes(ConvAlgo::ImplicitGemm, parse_conv_pass(pass_, op),
                                             cuda_dtype(dtype, op, backend), p, cap_bytes);  // the argument checks
          info = cuda::implicit_gemm_plan(parse_conv_pass(pass_, op), cuda_dtype(dtype, op, backend), p, cap_bytes);
        });
        py::dict d;
        d["tile"] = info.tile;
        d["BM"] = info.BM;
        d["BN"] = info.BN;
        d["threads"] = info.threads;
        d["blocks_per_sm"] = info.blocks_per_sm;
        d["splits"] = info.splits;
        d["pipeline"] = info.async ? "cp.async" : "registers";
        d["chunk"] = info.chunk;
        d["workspace_bytes"] = info.bytes;
        d["blocks"] = info.blocks;
        d["model_seconds"] = info.model_seconds;
        return d;
      },
      py::arg("pass_"), py::arg("dtype"), py::arg("p"), py::arg("cap_bytes"),
      "algo='implicit_gemm''s plan for pass_ (tile, split-K, pipeline, images a launch, workspace, blocks, the "
      "model's seconds on a 132-SM H100); conv_implicit_gemm.cu");

  m.def(
      "conv2d_fwd",
      [backend](const std::string& algo, const std::string& dtype, const ConvParams& p, std::uintptr_t x,
                std::uintptr_t w, std::uintptr_t b, std::uintptr_t y, std::uintptr_t ws, int64_t ws_bytes, int device,
                StreamHandle stream) {
        constexpr const char* op = "conv2d_fwd";
        run_op(op, [&] { return conv_shapes(algo, dtype, p); }, [&] {
          const cuda::ConvAlgo a = cuda_algo(algo, op, backend);
          const cuda::DType dt = cuda_dtype(dtype, op, backend);
          if (p.N == 0) return;
          check_ptr(x, op, "x");
          check_ptr(w, op, "w");
          check_ptr(y, op, "y");
          cuda::conv2d_fwd(a, dt, p, ptr<const void>(x), ptr<const void>(w), ptr<const void>(b), ptr<void>(y),
                           ptr<void>(ws), ws_bytes, device, stream);
        });
      },
      py::arg("algo"), py::arg("dtype"), py::arg("p"), py::arg("x"), py::arg("w"), py::arg("b"), py::arg("y"),
      py::arg("ws"), py::arg("ws_bytes"), py::arg("device"), py::arg("stream"),
      "y = conv2d(x, w) + b (b == 0: no bias)");

  m.def(
      "conv2d_bwd_input",
      [backend](const std::string& algo, const std::string& dtype, const ConvParams& p, std::uintptr_t dy,
                std::uintptr_t w, std::uintptr_t dx, std::uintptr_t ws, int64_t ws_bytes, int device,
                StreamHandle stream) {
        constexpr const char* op = "conv2d_bwd_input";
        run_op(op, [&] { return conv_shapes(algo, dtype, p); }, [&] {
          const cuda::ConvAlgo a = cuda_algo(algo, op, backend);
          const cuda::DType dt = cuda_dtype(dtype, op, backend);
          if (p.N == 0) return;
          check_ptr(dy, op, "dy");
          check_ptr(w, op, "w");
          check_ptr(dx, op, "dx");
          cuda::conv2d_bwd_input(a, dt, p, ptr<const void>(dy), ptr<const void>(w), ptr<void>(dx), ptr<void>(ws),
                                 ws_bytes, device, stream);
        });
      },
      py::arg("algo"), py::arg("dtype"), py::arg("p"), py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("ws"),
      py::arg("ws_bytes"), py::arg("device"), py::arg("stream"),
      "dx = grad of conv2d w.r.t. its input (overwritten)");

  m.def(
      "conv2d_bwd_weight",
      [backend](const std::string& algo, const std::string& dtype, const ConvParams& p, std::uintptr_t dy,
                std::uintptr_t x, std::uintptr_t dw, std::uintptr_t ws, int64_t ws_bytes, int device,
                StreamHandle stream) {
        constexpr const char* op = "conv2d_bwd_weight";
        run_op(op, [&] { return conv_shapes(algo, dtype, p); }, [&] {
          const cuda::ConvAlgo a = cuda_algo(algo, op, backend);
          const cuda::DType dt = cuda_dtype(dtype, op, backend);
          check_ptr(dw, op, "dw");
          if (p.N > 0) {
            check_ptr(dy, op, "dy");
            check_ptr(x, op, "x");
          }
          cuda::conv2d_bwd_weight(a, dt, p, ptr<const void>(dy), ptr<const void>(x), ptr<void>(dw), ptr<void>(ws),
                                  ws_bytes, device, stream);
        });
      },
      py::arg("algo"), py::arg("dtype"), py::arg("p"), py::arg("dy"), py::arg("x"), py::arg("dw"), py::arg("ws"),
      py::arg("ws_bytes"), py::arg("device"), py::arg("stream"),
      "dw = grad of conv2d w.r.t. its weight (overwritten; zeros for an empty batch)");

  m.def(
      "conv2d_bwd_bias_workspace_bytes",
      [backend](const std::string& dtype, const ConvParams& p) -> int64_t {
        return cuda::conv2d_bwd_bias_workspace_bytes(cuda_dtype(dtype, "conv2d_bwd_bias_workspace_bytes", backend), p);
      },
      py::arg("dtype"), py::arg("p"), "Workspace bytes of conv2d_bwd_bias (the per-chunk sums; 0 when none)");
  m.def(
      "conv2d_bwd_bias",
      [backend](const std::string& dtype, const ConvParams& p, std::uintptr_t dy, std::uintptr_t db, std::uintptr_t ws,
                int64_t ws_bytes, int device, StreamHandle stream) {
        constexpr const char* op = "conv2d_bwd_bias";
        run_op(op, [&] { return conv_shapes("-", dtype, p); }, [&] {
          const cuda::DType dt = cuda_dtype(dtype, op, backend);
          check_ptr(db, op, "db");
          if (p.N > 0) check_ptr(dy, op, "dy");
          cuda::conv2d_bwd_bias(dt, p, ptr<const void>(dy), ptr<void>(db), ptr<void>(ws), ws_bytes, device, stream);
        });
      },
      py::arg("dtype"), py::arg("p"), py::arg("dy"), py::arg("db"), py::arg("ws"), py::arg("ws_bytes"),
      py::arg("device"), py::arg("stream"), "db[k] = sum of dy[:, k] (overwritten; zeros for an empty batch)");
}

}  // namespace convkit::bind
