// convkit._cpu: the pybind11 module over csrc/cpu. Pointers travel as Python ints, shapes in
// ConvParams / PoolParams; outputs and workspaces are allocated by the caller (Python).
#include <pybind11/pybind11.h>

#include "bindings/bind_util.h"
#include "common/params.h"
#include "cpu/threads.h"

namespace py = pybind11;
using namespace convkit;

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "convkit's hand-written C++ kernels (CPU)";

  py::class_<ConvParams>(m, "ConvParams")
      .def(py::init(&make_conv_params), py::arg("N"), py::arg("C"), py::arg("H"), py::arg("W"),
           py::arg("K"), py::arg("R"), py::arg("S"), py::arg("stride_h"), py::arg("stride_w"),
           py::arg("pad_t"), py::arg("pad_b"), py::arg("pad_l"), py::arg("pad_r"), py::arg("dil_h"),
           py::arg("dil_w"), py::arg("groups"))
      .def_readonly("N", &ConvParams::N).def_readonly("C", &ConvParams::C)
      .def_readonly("H", &ConvParams::H).def_readonly("W", &ConvParams::W)
      .def_readonly("K", &ConvParams::K).def_readonly("R", &ConvParams::R)
      .def_readonly("S", &ConvParams::S).def_readonly("P", &ConvParams::P)
      .def_readonly("Q", &ConvParams::Q).def_readonly("groups", &ConvParams::groups);

  py::class_<PoolParams>(m, "PoolParams")
      .def(py::init(&make_pool_params), py::arg("N"), py::arg("C"), py::arg("H"), py::arg("W"),
           py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"),
           py::arg("dh"), py::arg("dw"), py::arg("ceil_mode"))
      .def_readonly("P", &PoolParams::P).def_readonly("Q", &PoolParams::Q);

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
}
