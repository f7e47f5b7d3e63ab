// Bindings of the CPU convolution launcher (csrc/cpu/conv.cpp): conv2d forward, grad input,
// grad weight (the algorithms of common/conv_algo.h that the CPU builds) and grad bias, plus the
// workspace query. Names in, enums out; pointers arrive as Python ints; the GIL is released
// while a kernel runs (cpu_call).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "bindings/bind_util.h"
#include "bindings/cpu_call.h"
#include "common/conv_algo.h"
#include "common/params.h"
#include "cpu/conv.h"

namespace py = pybind11;

namespace convkit::bind {
namespace {

ConvAlgo cpu_algo(const std::string& algo, const char* op) { return parse_conv_algo(algo, cpu::kCpuConvAlgos, op, "cpu"); }

}  // namespace

void register_cpu_conv(py::module_& m) {
  register_conv_algos(m, cpu::kCpuConvAlgos);

  m.def(
      "conv2d_workspace_bytes",
      [](const std::string& algo, const std::string& pass_, const std::string& dtype, const ConvParams& p,
         int64_t cap_bytes) -> int64_t {
        const char* op = "conv2d_workspace_bytes";
        const ConvAlgo a = cpu_algo(algo, op);
        const ConvPass pass = parse_conv_pass(pass_, op);
        const int64_t elem = parse_dtype(dtype, op) == DType::F32 ? 4 : 8;
        return cpu::conv2d_workspace_bytes(a, pass, elem, p, cap_bytes);
      },
      py::arg("algo"), py::arg("pass_"), py::arg("dtype"), py::arg("p"), py::arg("cap_bytes"),
      "Workspace bytes for (algo, pass_); 0 when none is needed. im2col: whole images of columns, "
      "at most cap_bytes but at least one image; winograd: transformed filters plus whole images of "
      "transformed tiles (bwd_weight: im2col's); blocked: the repacked filters (bwd_weight: whole images of padded input and repacked dy)");

  m.def(
      "conv2d_fwd",
      [](const std::string& algo, const std::string& dtype, const ConvParams& p, std::uintptr_t x,
         std::uintptr_t w, std::uintptr_t b, std::uintptr_t y, std::uintptr_t ws, int64_t ws_bytes) {
        const ConvAlgo a = cpu_algo(algo, "conv2d_fwd");
        dispatch_float(dtype, "conv2d_fwd", [&](auto tag) {
          using T = decltype(tag);
          cpu_call([&] {
            cpu::conv2d_fwd<T>(a, p, ptr<const T>(x), ptr<const T>(w), ptr<const T>(b), ptr<T>(y), ptr<T>(ws),
                               ws_bytes);
          });
        });
      },
      py::arg("algo"), py::arg("dtype"), py::arg("p"), py::arg("x"), py::arg("w"), py::arg("b"),
      py::arg("y"), py::arg("ws"), py::arg("ws_bytes"), "y = conv2d(x, w) + b (b == 0: no bias)");

  m.def(
      "conv2d_bwd_input",
      [](const std::string& algo, const std::string& dtype, const ConvParams& p, std::uintptr_t dy,
         std::uintptr_t w, std::uintptr_t dx, std::uintptr_t ws, int64_t ws_bytes) {
        const ConvAlgo a = cpu_algo(algo, "conv2d_bwd_input");
        dispatch_float(dtype, "conv2d_bwd_input", [&](auto tag) {
          using T = decltype(tag);
          cpu_call([&] {
            cpu::conv2d_bwd_input<T>(a, p, ptr<const T>(dy), ptr<const T>(w), ptr<T>(dx), ptr<T>(ws), ws_bytes);
          });
        });
      },
      py::arg("algo"), py::arg("dtype"), py::arg("p"), py::arg("dy"), py::arg("w"), py::arg("dx"),
      py::arg("ws"), py::arg("ws_bytes"), "dx = grad of conv2d w.r.t. its input (overwritten)");

  m.def(
      "conv2d_bwd_weight",
      [](const std::string& algo, const std::string& dtype, const ConvParams& p, std::uintptr_t dy,
         std::uintptr_t x, std::uintptr_t dw, std::uintptr_t ws, int64_t ws_bytes) {
        const ConvAlgo a = cpu_algo(algo, "conv2d_bwd_weight");
        dispatch_float(dtype, "conv2d_bwd_weight", [&](auto tag) {
          using T = decltype(tag);
          cpu_call([&] {
            cpu::conv2d_bwd_weight<T>(a, p, ptr<const T>(dy), ptr<const T>(x), ptr<T>(dw), ptr<T>(ws), ws_bytes);
          });
        });
      },
      py::arg("algo"), py::arg("dtype"), py::arg("p"), py::arg("dy"), py::arg("x"), py::arg("dw"),
      py::arg("ws"), py::arg("ws_bytes"), "dw = grad of conv2d w.r.t. its weight (overwritten)");

  m.def(
      "conv2d_bwd_bias_workspace_bytes", [](const std::string&, const ConvParams&) -> int64_t { return 0; },
      py::arg("dtype"), py::arg("p"), "Workspace bytes of conv2d_bwd_bias: none on the CPU");
  m.def(
      "conv2d_bwd_bias",
      [](const std::string& dtype, const ConvParams& p, std::uintptr_t dy, std::uintptr_t db, std::uintptr_t /*ws*/,
         int64_t /*ws_bytes*/) {
        dispatch_float(dtype, "conv2d_bwd_bias", [&](auto tag) {
          using T = decltype(tag);
          cpu_call([&] { cpu::conv2d_bwd_bias<T>(p, ptr<const T>(dy), ptr<T>(db)); });  // N == 0 writes zeros
        });
      },
      py::arg("dtype"), py::arg("p"), py::arg("dy"), py::arg("db"), py::arg("ws"), py::arg("ws_bytes"),
      "db[k] = sum of dy[:, k] (overwritten); the workspace arguments are the CUDA modules' (unused here)");
}

}  // namespace convkit::bind
