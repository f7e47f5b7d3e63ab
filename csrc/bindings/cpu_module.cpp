// convkit._cpu: the pybind11 module over csrc/cpu. Pointers travel as Python ints, shapes in
// ConvParams / PoolParams; outputs and workspaces are allocated by the caller (Python).
#include <pybind11/pybind11.h>

#include "bindings/bind_util.h"
#include "cpu/threads.h"

namespace py = pybind11;
using namespace convkit;

namespace convkit::bind {
void register_cpu_gemm(pybind11::module_& m);  // cpu_gemm.cpp: gemm, fma_peak_gflops
}

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "convkit's hand-written C++ kernels (CPU)";

  bind::register_params(m);  // ConvParams, PoolParams (common_params.cpp)

  m.def("set_num_threads", &cpu::set_num_threads, py::arg("n"),
        "Threads used by every CPU kernel (0: OpenMP's default)");
  m.def("get_num_threads", &cpu::num_threads);
  m.def("simd_isa", []() -> std::string {
#if defined(__AVX512F__)
    return "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
    return "avx2+fma";
#else
    return "portable";
#endif
  });

  bind::register_cpu_conv(m);
  bind::register_cpu_pool(m);
  bind::register_cpu_gemm(m);
}
