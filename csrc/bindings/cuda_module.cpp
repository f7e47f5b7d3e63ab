// convkit._cuda (csrc/cuda built by nvcc) and convkit._cudasim (the same sources on the CPU
// emulator, CONVKIT_SIM defined): one pybind11 module source, named by CONVKIT_MODULE_NAME.
// Pointers travel as Python ints, streams as cudaStream_t handles; the caller allocates.
#include <pybind11/pybind11.h>

#include "bindings/bind_util.h"
#include "cuda/ops.h"

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

  bind::register_params(m);  // ConvParams, PoolParams (common_params.cpp)
  bind::register_cuda_pool(m, kBackend);
  bind::register_cuda_conv(m, kBackend);
  bind::register_cuda_selftest(m);
}
