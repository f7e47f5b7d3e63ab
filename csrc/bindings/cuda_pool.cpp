// Bindings of the CUDA pooling and ReLU launchers (csrc/cuda/ops.h) for _cuda and _cudasim:
// the CPU module's signatures plus device and stream. Every call runs with the GIL released
// inside one wrapper that turns any failure into a RuntimeError naming op, shapes and cause.
#include <cstdint>
#include <string>

#include "bindings/bind_util.h"
#include "bindings/cuda_bind_util.h"
#include "common/params.h"
#include "cuda/ops.h"

namespace py = pybind11;

namespace convkit::bind {
namespace {

using cuda::StreamHandle;

std::string pool_shapes(const std::string& dtype, const PoolParams& p) {
  auto s = [](int64_t v) { return std::to_string(v); };
  return "N=" + s(p.N) + ", C=" + s(p.C) + ", H=" + s(p.H) + ", W=" + s(p.W) + ", k=" + s(p.kh) + "x" +
         s(p.kw) + ", s=" + s(p.sh) + "x" + s(p.sw) + ", pad=" + s(p.ph) + "x" + s(p.pw) + ", d=" + s(p.dh) + "x" +
         s(p.dw) + ", ceil_mode=" + (p.ceil_mode ? "True" : "False") + ", out=" + s(p.P) + "x" + s(p.Q) +
         ", dtype=" + dtype;
}

}  // namespace

void register_cuda_pool(pybind11::module_& m, const char* backend) {
  m.def(
      "max_pool2d_fwd",
      [backend](const std::string& dtype, const PoolParams& pp, std::uintptr_t x, std::uintptr_t y,
                std::uintptr_t idx, int device, StreamHandle stream) {
        constexpr const char* op = "max_pool2d_fwd";
        run_op(op, [&] { return pool_shapes(dtype, pp); }, [&] {
          const cuda::DType dt = cuda_dtype(dtype, op, backend);
          if (pp.N == 0) return;
          check_ptr(x, op, "x");
          check_ptr(y, op, "y");
          cuda::max_pool2d_fwd(dt, pp, ptr<const void>(x), ptr<void>(y), ptr<int64_t>(idx), device, stream);
        });
      },
      py::arg("dtype"), py::arg("pp"), py::arg("x"), py::arg("y"), py::arg("idx"), py::arg("device"),
      py::arg("stream"),
      "y[N,C,P,Q] = max pool of x[N,C,H,W]; idx (int64 [N,C,P,Q], h*W+w per plane) or 0 for none");

  m.def(
      "max_pool2d_bwd",
      [backend](const std::string& dtype, const PoolParams& pp, std::uintptr_t dy, std::uintptr_t idx,
                std::uintptr_t dx, int device, StreamHandle stream) {
        constexpr const char* op = "max_pool2d_bwd";
        run_op(op, [&] { return pool_shapes(dtype, pp); }, [&] {
          const cuda::DType dt = cuda_dtype(dtype, op, backend);
          if (pp.N == 0) return;
          check_ptr(dy, op, "dy");
          check_ptr(idx, op, "idx");
          check_ptr(dx, op, "dx");
          cuda::max_pool2d_bwd(dt, pp, ptr<const void>(dy), ptr<const int64_t>(idx), ptr<void>(dx), device, stream);
        });
      },
      py::arg("dtype"), py::arg("pp"), py::arg("dy"), py::arg("idx"), py::arg("dx"), py::arg("device"),
      py::arg("stream"), "dx[N,C,H,W] = gradient of max_pool2d_fwd given its idx; dx fully overwritten");

  m.def(
      "avg_pool2d_fwd",
      [backend](const std::string& dtype, const PoolParams& pp, bool count_include_pad, int64_t divisor_override,
                std::uintptr_t x, std::uintptr_t y, int device, StreamHandle stream) {
        constexpr const char* op = "avg_pool2d_fwd";
        run_op(op, [&] { return pool_shapes(dtype, pp); }, [&] {
          const cuda::DType dt = cuda_dtype(dtype, op, backend);
          if (pp.N == 0) return;
          check_ptr(x, op, "x");
          check_ptr(y, op, "y");
          cuda::avg_pool2d_fwd(dt, pp, count_include_pad, divisor_override, ptr<const void>(x), ptr<void>(y), device,
                               stream);
        });
      },
      py::arg("dtype"), py::arg("pp"), py::arg("count_include_pad"), py::arg("divisor_override"), py::arg("x"),
      py::arg("y"), py::arg("device"), py::arg("stream"),
      "y[N,C,P,Q] = average pool of x[N,C,H,W]; divisor_override 0: none");

  m.def(
      "avg_pool2d_bwd",
      [backend](const std::string& dtype, const PoolParams& pp, bool count_include_pad, int64_t divisor_override,
                std::uintptr_t dy, std::uintptr_t dx, int device, StreamHandle stream) {
        constexpr const char* op = "avg_pool2d_bwd";
        run_op(op, [&] { return pool_shapes(dtype, pp); }, [&] {
          const cuda::DType dt = cuda_dtype(dtype, op, backend);
          if (pp.N == 0) return;
          check_ptr(dy, op, "dy");
          check_ptr(dx, op, "dx");
          cuda::avg_pool2d_bwd(dt, pp, count_include_pad, divisor_override, ptr<const void>(dy), ptr<void>(dx), device,
                               stream);
        });
      },
      py::arg("dtype"), py::arg("pp"), py::arg("count_include_pad"), py::arg("divisor_override"), py::arg("dy"),
      py::arg("dx"), py::arg("device"), py::arg("stream"),
      "dx[N,C,H,W] = gradient of avg_pool2d_fwd; dx fully overwritten");

  m.def(
      "relu_fwd",
      [backend](const std::string& dtype, int64_t n, std::uintptr_t x, std::uintptr_t y, int device,
                StreamHandle stream) {
        constexpr const char* op = "relu_fwd";
        run_op(op, [&] { return "n=" + std::to_string(n) + ", dtype=" + dtype; }, [&] {
          const cuda::DType dt = cuda_dtype(dtype, op, backend);
          if (n < 0) throw Error("relu_fwd: n must be >= 0, got " + std::to_string(n));
          if (n == 0) return;
          check_ptr(x, op, "x");
          check_ptr(y, op, "y");
          cuda::relu_fwd(dt, n, ptr<const void>(x), ptr<void>(y), device, stream);
        });
      },
      py::arg("dtype"), py::arg("n"), py::arg("x"), py::arg("y"), py::arg("device"), py::arg("stream"),
      "y = relu(x) over n elements; y may equal x; any alignment");

  m.def(
      "relu_bwd",
      [backend](const std::string& dtype, int64_t n, std::uintptr_t dy, std::uintptr_t y, std::uintptr_t dx,
                int device, StreamHandle stream) {
        constexpr const char* op = "relu_bwd";
        run_op(op, [&] { return "n=" + std::to_string(n) + ", dtype=" + dtype; }, [&] {
          const cuda::DType dt = cuda_dtype(dtype, op, backend);
          if (n < 0) throw Error("relu_bwd: n must be >= 0, got " + std::to_string(n));
          if (n == 0) return;
          check_ptr(dy, op, "dy");
          check_ptr(y, op, "y");
          check_ptr(dx, op, "dx");
          cuda::relu_bwd(dt, n, ptr<const void>(dy), ptr<const void>(y), ptr<void>(dx), device, stream);
        });
      },
      py::arg("dtype"), py::arg("n"), py::arg("dy"), py::arg("y"), py::arg("dx"), py::arg("device"),
      py::arg("stream"), "dx = dy where y > 0 (or y is NaN), else 0, over n elements");
}

}  // namespace convkit::bind
