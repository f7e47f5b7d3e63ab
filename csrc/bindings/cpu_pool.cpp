// Bindings of the CPU pooling and ReLU kernels (csrc/cpu/pool_*.cpp, relu.cpp).
#include <cstdint>

#include "bindings/bind_util.h"
#include "bindings/cpu_call.h"
#include "common/params.h"
#include "cpu/pool.h"
#include "cpu/relu.h"

namespace py = pybind11;

namespace convkit::bind {
namespace {

void check_ptr(std::uintptr_t address, const char* op, const char* name) {
  if (address == 0) throw Error(std::string(op) + ": null pointer for '" + name + "'");
}

}  // namespace

void register_cpu_pool(pybind11::module_& m) {
  m.def(
      "max_pool2d_fwd",
      [](const std::string& dtype, const PoolParams& pp, std::uintptr_t x, std::uintptr_t y,
         std::uintptr_t idx) {
        constexpr const char* op = "max_pool2d_fwd";
        parse_dtype(dtype, op);
        if (pp.N == 0) return;
        check_ptr(x, op, "x");
        check_ptr(y, op, "y");
        cpu_call([&] {
          dispatch_float(dtype, op, [&](auto tag) {
            using T = decltype(tag);
            cpu::max_pool2d_fwd<T>(pp, ptr<const T>(x), ptr<T>(y), ptr<int64_t>(idx));
          });
        });
      },
      py::arg("dtype"), py::arg("pp"), py::arg("x"), py::arg("y"), py::arg("idx"),
      "y[N,C,P,Q] = max pool of x[N,C,H,W]; idx (int64 [N,C,P,Q], h*W+w per plane) or 0 for none");

  m.def(
      "max_pool2d_bwd",
      [](const std::string& dtype, const PoolParams& pp, std::uintptr_t dy, std::uintptr_t idx,
         std::uintptr_t dx) {
        constexpr const char* op = "max_pool2d_bwd";
        parse_dtype(dtype, op);
        if (pp.N == 0) return;
        check_ptr(dy, op, "dy");
        check_ptr(idx, op, "idx");
        check_ptr(dx, op, "dx");
        cpu_call([&] {
          dispatch_float(dtype, op, [&](auto tag) {
            using T = decltype(tag);
            cpu::max_pool2d_bwd<T>(pp, ptr<const T>(dy), ptr<const int64_t>(idx), ptr<T>(dx));
          });
        });
      },
      py::arg("dtype"), py::arg("pp"), py::arg("dy"), py::arg("idx"), py::arg("dx"),
      "dx[N,C,H,W] = scatter of dy[N,C,P,Q] at idx; dx fully overwritten");

  m.def(
      "avg_pool2d_fwd",
      [](const std::string& dtype, const PoolParams& pp, bool count_include_pad, int64_t divisor_override,
         std::uintptr_t x, std::uintptr_t y) {
        constexpr const char* op = "avg_pool2d_fwd";
        parse_dtype(dtype, op);
        CK_CHECK(pp.dh == 1 && pp.dw == 1, "avg_pool2d_fwd: dilation must be 1");
        if (pp.N == 0) return;
        check_ptr(x, op, "x");
        check_ptr(y, op, "y");
        cpu_call([&] {
          dispatch_float(dtype, op, [&](auto tag) {
            using T = decltype(tag);
            cpu::avg_pool2d_fwd<T>(pp, count_include_pad, divisor_override, ptr<const T>(x), ptr<T>(y));
          });
        });
      },
      py::arg("dtype"), py::arg("pp"), py::arg("count_include_pad"), py::arg("divisor_override"),
      py::arg("x"), py::arg("y"), "y[N,C,P,Q] = average pool of x[N,C,H,W]; divisor_override 0: none");

  m.def(
      "avg_pool2d_bwd",
      [](const std::string& dtype, const PoolParams& pp, bool count_include_pad, int64_t divisor_override,
         std::uintptr_t dy, std::uintptr_t dx) {
        constexpr const char* op = "avg_pool2d_bwd";
        parse_dtype(dtype, op);
        CK_CHECK(pp.dh == 1 && pp.dw == 1, "avg_pool2d_bwd: dilation must be 1");
        if (pp.N == 0) return;
        check_ptr(dy, op, "dy");
        check_ptr(dx, op, "dx");
        cpu_call([&] {
          dispatch_float(dtype, op, [&](auto tag) {
            using T = decltype(tag);
            cpu::avg_pool2d_bwd<T>(pp, count_include_pad, divisor_override, ptr<const T>(dy), ptr<T>(dx));
          });
        });
      },
      py::arg("dtype"), py::arg("pp"), py::arg("count_include_pad"), py::arg("divisor_override"),
      py::arg("dy"), py::arg("dx"), "dx[N,C,H,W] = gradient of avg_pool2d_fwd; dx fully overwritten");

  m.def(
      "relu_fwd",
      [](const std::string& dtype, int64_t n, std::uintptr_t x, std::uintptr_t y) {
        constexpr const char* op = "relu_fwd";
        parse_dtype(dtype, op);
        CK_CHECK(n >= 0, "relu_fwd: n must be >= 0, got " + std::to_string(n));
        if (n == 0) return;
        check_ptr(x, op, "x");
        check_ptr(y, op, "y");
        cpu_call([&] {
          dispatch_float(dtype, op, [&](auto tag) {
            using T = decltype(tag);
            cpu::relu_fwd<T>(n, ptr<const T>(x), ptr<T>(y));
          });
        });
      },
      py::arg("dtype"), py::arg("n"), py::arg("x"), py::arg("y"), "y = relu(x) over n elements; y may equal x");

  m.def(
      "relu_bwd",
      [](const std::string& dtype, int64_t n, std::uintptr_t dy, std::uintptr_t y, std::uintptr_t dx) {
        constexpr const char* op = "relu_bwd";
        parse_dtype(dtype, op);
        CK_CHECK(n >= 0, "relu_bwd: n must be >= 0, got " + std::to_string(n));
        if (n == 0) return;
        check_ptr(dy, op, "dy");
        check_ptr(y, op, "y");
        check_ptr(dx, op, "dx");
        cpu_call([&] {
          dispatch_float(dtype, op, [&](auto tag) {
            using T = decltype(tag);
            cpu::relu_bwd<T>(n, ptr<const T>(dy), ptr<const T>(y), ptr<T>(dx));
          });
        });
      },
      py::arg("dtype"), py::arg("n"), py::arg("dy"), py::arg("y"), py::arg("dx"),
      "dx = dy where y > 0, else 0, over n elements");
}

}  // namespace convkit::bind
