// convkit._cuda (csrc/cuda built by nvcc) and convkit._cudasim (the same sources on the CPU
// emulator, CONVKIT_SIM defined): one pybind11 module source, named by CONVKIT_MODULE_NAME.
// Pointers travel as Python ints, streams as cudaStream_t handles; the caller allocates.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "bindings/bind_util.h"
#include "cuda/ops.h"
#include "cuda/variant.h"

#ifndef CONVKIT_MODULE_NAME
#error "CONVKIT_MODULE_NAME must be defined (_cuda or _cudasim)"
#endif

namespace py = pybind11;
using namespace convkit;

#if defined(CONVKIT_SIM)
static constexpr const char* kBackend = "cudasim";
#else
static constexpr const char* kBackend = "cuda";
#endif

PYBIND11_MODULE(CONVKIT_MODULE_NAME, m) {
#if defined(CONVKIT_SIM)
  m.doc() = "convkit's CUDA kernels run on the CPU by the CUDA emulator (host pointers)";
#else
  m.doc() = "convkit's hand-written CUDA kernels (device pointers, caller's stream)";
#endif
  m.attr("backend") = kBackend;
  m.attr("has_half") = cuda::has_half();
  // No CUDA call happens at import: a machine without GPU or driver imports the module and
  // gets 0 here.
  m.def("device_count", &cuda::num_devices, "CUDA devices visible (0 without GPU or driver; 1 for the emulator)");

  // cuda/variant.h's switches; convkit/_cuda_settings.py validates and sets them (from
  // CONVKIT_CUDA_VARIANT and CONVKIT_CUDA_SYNC when the module is loaded).
  m.def(
      "set_variant",
      [](int gemm_tile, int splitk, int direct_tile, int direct_axes, int depthwise, int igemm_tile,
         int igemm_pipeline, int igemm_math) {
        cuda::Variant v;
        v.gemm_tile = static_cast<cuda::GemmTileMode>(gemm_tile);
        v.splitk = static_cast<cuda::SplitMode>(splitk);
        v.direct_tile = static_cast<cuda::DirectTileMode>(direct_tile);
        v.direct_axes = static_cast<cuda::DirectAxesMode>(direct_axes);
        v.depthwise = static_cast<cuda::DepthwiseMode>(depthwise);
        v.igemm_tile = static_cast<cuda::IgemmTileMode>(igemm_tile);
        v.igemm_pipeline = static_cast<cuda::IgemmPipelineMode>(igemm_pipeline);
        v.igemm_math = static_cast<cuda::IgemmMathMode>(igemm_math);
        cuda::set_variant(v);
      },
      py::arg("gemm_tile") = 0, py::arg("splitk") = 0, py::arg("direct_tile") = 0, py::arg("direct_axes") = 0,
      py::arg("depthwise") = 0, py::arg("igemm_tile") = 0, py::arg("igemm_pipeline") = 0, py::arg("igemm_math") = 0, "Forces size-selected kernel variants (0 = auto each; cuda/variant.h)");
  m.def("get_variant", []() {
    const cuda::Variant v = cuda::variant();
    py::dict d;
    d["gemm_tile"] = static_cast<int>(v.gemm_tile);
    d["splitk"] = static_cast<int>(v.splitk);
    d["direct_tile"] = static_cast<int>(v.direct_tile);
    d["direct_axes"] = static_cast<int>(v.direct_axes);
    d["depthwise"] = static_cast<int>(v.depthwise);
    d["igemm_tile"] = static_cast<int>(v.igemm_tile);
    d["igemm_pipeline"] = static_cast<int>(v.igemm_pipeline);
    d["igemm_math"] = static_cast<int>(v.igemm_math);
    return d;
  });
  m.def("set_launch_sync", &cuda::set_launch_sync, py::arg("on"),
        "Synchronize and check the stream after every launch (a fault is raised by the op that caused it)");
  m.def("launch_sync", &cuda::launch_sync);
  m.def("launch_sync_count", &cuda::launch_sync_count, "Synchronizations done after launches so far");

  bind::register_params(m);  // ConvParams, PoolParams (common_params.cpp)
  bind::register_cuda_pool(m, kBackend);
  bind::register_cuda_conv(m, kBackend);
  bind::register_cuda_selftest(m);
}
