// Helpers shared by the pybind11 binding files of every module (_cpu, _cuda, _cudasim): dtype
// names, raw pointers passed as ints, and the register_* functions each module calls. Only
// csrc/bindings knows pybind11; the kernels take params structs and typed pointers.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "common/conv_algo.h"
#include "common/dtype.h"
#include "common/error.h"

namespace convkit::bind {

using convkit::DType;  // (common/dtype.h: one enum for the bindings and the kernels)

// The dtype named `name` on a module of `backend` ("cpu", "cuda", "cudasim"), which has the
// half types float16 and bfloat16 when with_half; anything else raises naming dtype and backend.
inline DType parse_dtype(const std::string& name, const char* op, const char* backend, bool with_half) {
  if (name == "float32") return DType::F32;
  if (name == "float64") return DType::F64;
  if (with_half && name == "float16") return DType::F16;
  if (with_half && name == "bfloat16") return DType::BF16;
  throw Error(std::string(op) + ": unsupported dtype '" + name + "' on the " + backend + " backend (" +
              (with_half ? "float32, float64, float16, bfloat16" : "float32, float64") + ")");
}

// The CPU module's dtypes: float32 and float64.
inline DType parse_dtype(const std::string& name, const char* op) { return parse_dtype(name, op, "cpu", false); }

template <typename T>
inline T* ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

// Runs fn<float> or fn<double> by dtype name: dispatch_float(dtype, op, [&](auto tag) {...}).
template <typename Fn>
inline void dispatch_float(const std::string& dtype, const char* op, Fn&& fn) {
  if (parse_dtype(dtype, op) == DType::F32)
    fn(float{});
  else
    fn(double{});
}

// The ConvParams and PoolParams classes (csrc/bindings/common_params.cpp), module-local so
// that _cpu, _cuda and _cudasim can each register them in one process.
void register_params(pybind11::module_& m);
// conv_algos(): the names of the convolution algorithms a module of `backend` builds, in
// common/conv_algo.h's order (common_params.cpp).
void register_conv_algos(pybind11::module_& m, const ConvAlgoSet& set);

void register_cpu_conv(pybind11::module_& m);
void register_cpu_pool(pybind11::module_& m);

// The CUDA modules' pooling and ReLU functions (cuda_pool.cpp); backend: "cuda" or "cudasim".
void register_cuda_pool(pybind11::module_& m, const char* backend);
// The CUDA modules' convolution functions (cuda_conv.cpp).
void register_cuda_conv(pybind11::module_& m, const char* backend);
// The emulator's self-tests (cuda_selftest.cpp).
void register_cuda_selftest(pybind11::module_& m);

}  // namespace convkit::bind
