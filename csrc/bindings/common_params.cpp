// The ConvParams and PoolParams Python classes, registered identically by every kernel module
// (_cpu, _cuda, _cudasim). Module-local: each module owns its own class objects, so several
// modules can register the same C++ types in one interpreter; a module's functions take the
// params built by that module's classes.
#include <pybind11/pybind11.h>

#include "bindings/bind_util.h"
#include "common/params.h"

namespace py = pybind11;

namespace convkit::bind {

void register_params(pybind11::module_& m) {
  py::class_<ConvParams>(m, "ConvParams", py::module_local())
      .def(py::init(&make_conv_params), py::arg("N"), py::arg("C"), py::arg("H"), py::arg("W"),
           py::arg("K"), py::arg("R"), py::arg("S"), py::arg("stride_h"), py::arg("stride_w"),
           py::arg("pad_t"), py::arg("pad_b"), py::arg("pad_l"), py::arg("pad_r"), py::arg("dil_h"),
           py::arg("dil_w"), py::arg("groups"))
      .def_readonly("N", &ConvParams::N).def_readonly("C", &ConvParams::C)
      .def_readonly("H", &ConvParams::H).def_readonly("W", &ConvParams::W)
      .def_readonly("K", &ConvParams::K).def_readonly("R", &ConvParams::R)
      .def_readonly("S", &ConvParams::S).def_readonly("P", &ConvParams::P)
      .def_readonly("Q", &ConvParams::Q).def_readonly("groups", &ConvParams::groups);

  py::class_<PoolParams>(m, "PoolParams", py::module_local())
      .def(py::init(&make_pool_params), py::arg("N"), py::arg("C"), py::arg("H"), py::arg("W"),
           py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"),
           py::arg("dh"), py::arg("dw"), py::arg("ceil_mode"))
      .def_readonly("P", &PoolParams::P).def_readonly("Q", &PoolParams::Q);
}

void register_conv_algos(pybind11::module_& m, const ConvAlgoSet& set) {
  m.def(
      "conv_algo_registry",
      []() {
        py::list rows;
        for (const ConvAlgoEntry& e : kConvAlgos)
          rows.append(py::make_tuple(e.name, e.timed, e.needs.R, e.needs.S, e.needs.stride, e.needs.dilation,
                                     e.needs.no_padding));
        return rows;
      },
      "Every convolution algorithm of csrc/common/conv_algo.h, in its order: (name, timed, R, S, "
      "stride, dilation, no_padding): timed when auto and convkit.benchmark may pick it; what it "
      "needs of the shape (0: any; no_padding: zero padding only), the rule conv_algo_refusal applies");
  m.def(
      "conv_algos",
      [set]() {
        py::list names;
        for (const ConvAlgoEntry& e : kConvAlgos)
          if (set.has(e.algo)) names.append(e.name);
        return names;
      },
      "The convolution algorithms this module builds (csrc/common/conv_algo.h's names, in its order)");
  m.def(
      "conv_algo_refusal",
      [](const std::string& algo, const ConvParams& p) {
        for (const ConvAlgoEntry& e : kConvAlgos)
          if (algo == e.name) return conv_algo_refusal(e.algo, p);
        throw ValueError("conv_algo_refusal: unknown algo '" + algo + "'");
      },
      py::arg("algo"), py::arg("p"),
      "'' when algo computes the convolution p, else why not (common/conv_algo.h's one rule, the same "
      "for every module; whether this module builds algo is conv_algos())");
}

}  // namespace convkit::bind
