// Bindings of the CPU convolution kernels (csrc/cpu/conv_*.cpp): conv2d forward, grad input,
// grad weight (algo "direct" | "blocked" | "im2col" | "1x1" | "winograd") and grad bias, plus the workspace query.
// Pointers arrive as Python ints; the GIL is released while a kernel runs.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "bindings/bind_util.h"
#include "bindings/cpu_call.h"
#include "common/params.h"
#include "cpu/conv.h"

namespace py = pybind11;

namespace convkit::bind {
namespace {

enum class Algo { Direct, Blocked, Im2col, OneByOne, Winograd };

Algo parse_algo(const std::string& algo, const char* op) {
  if (algo == "direct") return Algo::Direct;
  if (algo == "im2col") return Algo::Im2col;
  if (algo == "1x1") return Algo::OneByOne;
  if (algo == "winograd") return Algo::Winograd;
  if (algo == "blocked") return Algo::Blocked;
  throw Error(std::string(op) + ": unknown algo '" + algo +
              "' on the cpu backend (direct, blocked, im2col, 1x1, winograd)");
}

void check_pass(const std::string& pass) {
  if (pass != "fwd" && pass != "bwd_input" && pass != "bwd_weight")
    throw Error("conv2d_workspace_bytes: unknown pass_ '" + pass + "' (fwd, bwd_input, bwd_weight)");
}

void check_1x1(Algo a, const ConvParams& p, const char* op) {
  if (a == Algo::OneByOne && !p.is_1x1())
    throw Error(std::string(op) + ": algo '1x1' needs a 1x1 kernel with zero padding, got kernel " +
                std::to_string(p.R) + "x" + std::to_string(p.S) + " padding (" + std::to_string(p.pad_t) +
                ", " + std::to_string(p.pad_b) + ", " + std::to_string(p.pad_l) + ", " +
                std::to_string(p.pad_r) + ")");
  if (a == Algo::Winograd && !cpu::conv2d_winograd_applies(p))
    throw Error(std::string(op) + ": algo 'winograd' needs a 3x3 kernel with stride 1 and dilation 1, got kernel " +
                std::to_string(p.R) + "x" + std::to_string(p.S) + " stride (" + std::to_string(p.stride_h) + ", " +
                std::to_string(p.stride_w) + ") dilation (" + std::to_string(p.dil_h) + ", " +
                std::to_string(p.dil_w) + ")");
}

}  // namespace

void register_cpu_conv(py::module_& m) {
  m.def(
      "conv2d_workspace_bytes",
      [](const std::string& algo, const std::string& pass_, const std::string& dtype, const ConvParams& p,
         int64_t cap_bytes) -> int64_t {
        const Algo a = parse_algo(algo, "conv2d_workspace_bytes");
        check_pass(pass_);
        const int64_t elem = parse_dtype(dtype, "conv2d_workspace_bytes") == DType::F32 ? 4 : 8;
        check_1x1(a, p, "conv2d_workspace_bytes");
        const int pass = pass_ == "fwd" ? 0 : pass_ == "bwd_input" ? 1 : 2;
        if (a == Algo::Winograd) return cpu::conv2d_winograd_workspace_bytes(p, pass, elem, cap_bytes);
        if (a == Algo::Blocked) return cpu::conv2d_blocked_workspace_bytes(p, pass, elem, cap_bytes);
        if (a != Algo::Im2col) return 0;
        return cpu::conv2d_im2col_workspace_bytes(p, elem, cap_bytes);
      },
      py::arg("algo"), py::arg("pass_"), py::arg("dtype"), py::arg("p"), py::arg("cap_bytes"),
      "Workspace bytes for (algo, pass_); 0 when none is needed. im2col: whole images of columns, "
      "at most cap_bytes but at least one image; winograd: transformed filters plus whole images of "
      "transformed tiles (bwd_weight: im2col's); blocked: the repacked filters (bwd_weight: whole images of padded input and repacked dy)");

  m.def(
      "conv2d_fwd",
      [](const std::string& algo, const std::string& dtype, const ConvParams& p, std::uintptr_t x,
         std::uintptr_t w, std::uintptr_t b, std::uintptr_t y, std::uintptr_t ws, int64_t ws_bytes) {
        const Algo a = parse_algo(algo, "conv2d_fwd");
        check_1x1(a, p, "conv2d_fwd");
        dispatch_float(dtype, "conv2d_fwd", [&](auto tag) {
          using T = decltype(tag);
          if (p.N == 0) return;
          cpu_call([&] {
            switch (a) {
              case Algo::Direct:
                cpu::conv2d_fwd_direct<T>(p, ptr<const T>(x), ptr<const T>(w), ptr<const T>(b), ptr<T>(y));
                break;
              case Algo::Im2col:
                cpu::conv2d_fwd_im2col<T>(p, ptr<const T>(x), ptr<const T>(w), ptr<const T>(b), ptr<T>(y),
                                          ptr<T>(ws), ws_bytes);
                break;
              case Algo::OneByOne:
                cpu::conv2d_fwd_1x1<T>(p, ptr<const T>(x), ptr<const T>(w), ptr<const T>(b), ptr<T>(y));
                break;
              case Algo::Winograd:
                cpu::conv2d_fwd_winograd<T>(p, ptr<const T>(x), ptr<const T>(w), ptr<const T>(b), ptr<T>(y),
                                            ptr<T>(ws), ws_bytes);
                break;
              case Algo::Blocked:
                cpu::conv2d_fwd_blocked<T>(p, ptr<const T>(x), ptr<const T>(w), ptr<const T>(b), ptr<T>(y),
                                           ptr<T>(ws), ws_bytes);
                break;
            }
          });
        });
      },
      py::arg("algo"), py::arg("dtype"), py::arg("p"), py::arg("x"), py::arg("w"), py::arg("b"),
      py::arg("y"), py::arg("ws"), py::arg("ws_bytes"), "y = conv2d(x, w) + b (b == 0: no bias)");

  m.def(
      "conv2d_bwd_input",
      [](const std::string& algo, const std::string& dtype, const ConvParams& p, std::uintptr_t dy,
         std::uintptr_t w, std::uintptr_t dx, std::uintptr_t ws, int64_t ws_bytes) {
        const Algo a = parse_algo(algo, "conv2d_bwd_input");
        check_1x1(a, p, "conv2d_bwd_input");
        dispatch_float(dtype, "conv2d_bwd_input", [&](auto tag) {
          using T = decltype(tag);
          if (p.N == 0) return;
          cpu_call([&] {
            switch (a) {
              case Algo::Direct:
                cpu::conv2d_bwd_input_direct<T>(p, ptr<const T>(dy), ptr<const T>(w), ptr<T>(dx));
                break;
              case Algo::Im2col:
                cpu::conv2d_bwd_input_im2col<T>(p, ptr<const T>(dy), ptr<const T>(w), ptr<T>(dx), ptr<T>(ws),
                                                ws_bytes);
                break;
              case Algo::OneByOne:
                cpu::conv2d_bwd_input_1x1<T>(p, ptr<const T>(dy), ptr<const T>(w), ptr<T>(dx));
                break;
              case Algo::Winograd:
                cpu::conv2d_bwd_input_winograd<T>(p, ptr<const T>(dy), ptr<const T>(w), ptr<T>(dx), ptr<T>(ws),
                                                  ws_bytes);
                break;
              case Algo::Blocked:
                cpu::conv2d_bwd_input_blocked<T>(p, ptr<const T>(dy), ptr<const T>(w), ptr<T>(dx), ptr<T>(ws),
                                                 ws_bytes);
                break;
            }
          });
        });
      },
      py::arg("algo"), py::arg("dtype"), py::arg("p"), py::arg("dy"), py::arg("w"), py::arg("dx"),
      py::arg("ws"), py::arg("ws_bytes"), "dx = grad of conv2d w.r.t. its input (overwritten)");

  m.def(
      "conv2d_bwd_weight",
      [](const std::string& algo, const std::string& dtype, const ConvParams& p, std::uintptr_t dy,
         std::uintptr_t x, std::uintptr_t dw, std::uintptr_t ws, int64_t ws_bytes) {
        const Algo a = parse_algo(algo, "conv2d_bwd_weight");
        check_1x1(a, p, "conv2d_bwd_weight");
        dispatch_float(dtype, "conv2d_bwd_weight", [&](auto tag) {
          using T = decltype(tag);
          if (p.N == 0) {  // an empty batch has a zero gradient
            T* out = ptr<T>(dw);
            py::gil_scoped_release release;
            std::fill(out, out + p.K * p.Cg() * p.R * p.S, T(0));
            return;
          }
          cpu_call([&] {
            switch (a) {
              case Algo::Direct:
                cpu::conv2d_bwd_weight_direct<T>(p, ptr<const T>(dy), ptr<const T>(x), ptr<T>(dw));
                break;
              case Algo::Im2col:
                cpu::conv2d_bwd_weight_im2col<T>(p, ptr<const T>(dy), ptr<const T>(x), ptr<T>(dw), ptr<T>(ws),
                                                 ws_bytes);
                break;
              case Algo::OneByOne:
                cpu::conv2d_bwd_weight_1x1<T>(p, ptr<const T>(dy), ptr<const T>(x), ptr<T>(dw));
                break;
              case Algo::Winograd:
                cpu::conv2d_bwd_weight_winograd<T>(p, ptr<const T>(dy), ptr<const T>(x), ptr<T>(dw), ptr<T>(ws),
                                                   ws_bytes);
                break;
              case Algo::Blocked:
                cpu::conv2d_bwd_weight_blocked<T>(p, ptr<const T>(dy), ptr<const T>(x), ptr<T>(dw), ptr<T>(ws),
                                                  ws_bytes);
                break;
            }
          });
        });
      },
      py::arg("algo"), py::arg("dtype"), py::arg("p"), py::arg("dy"), py::arg("x"), py::arg("dw"),
      py::arg("ws"), py::arg("ws_bytes"), "dw = grad of conv2d w.r.t. its weight (overwritten)");

  m.def(
      "conv2d_bwd_bias",
      [](const std::string& dtype, const ConvParams& p, std::uintptr_t dy, std::uintptr_t db) {
        dispatch_float(dtype, "conv2d_bwd_bias", [&](auto tag) {
          using T = decltype(tag);
          cpu_call([&] { cpu::conv2d_bwd_bias<T>(p, ptr<const T>(dy), ptr<T>(db)); });  // N == 0 writes zeros
        });
      },
      py::arg("dtype"), py::arg("p"), py::arg("dy"), py::arg("db"),
      "db[k] = sum of dy[:, k] (overwritten)");
}

}  // namespace convkit::bind
