// Helpers of the CUDA modules' bindings (cuda_pool.cpp, cuda_conv.cpp): dtype names to
// cuda::DType, null-pointer checks, and run_op, which releases the GIL around a launcher and
// turns any failure into a RuntimeError naming the op, its shapes and the cause.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <exception>
#include <string>

#include "bindings/bind_util.h"
#include "cuda/ops.h"

namespace convkit::bind {

inline cuda::DType cuda_dtype(const std::string& name, const char* op, const char* backend) {
  switch (parse_dtype(name, op, backend, cuda::has_half())) {
    case DType::F32:
      return cuda::DType::F32;
    case DType::F64:
      return cuda::DType::F64;
    case DType::F16:
      return cuda::DType::F16;
    case DType::BF16:
      return cuda::DType::BF16;
  }
  throw Error(std::string(op) + ": unknown dtype '" + name + "'");
}

inline void check_ptr(std::uintptr_t address, const char* op, const char* name) {
  if (address == 0) throw Error(std::string(op) + ": null pointer for '" + name + "'");
}

// Runs body() with the GIL released. Any failure in it (a bad argument, a launch the device
// refuses, an emulator error) is raised as convkit::Error, i.e. RuntimeError:
// "op (N=.., C=.., ..., dtype=..): cause"; a cause that already starts with "op: " loses that prefix.
template <typename Describe, typename Body>
inline void run_op(const char* op, Describe&& describe, Body&& body) {
  try {
    pybind11::gil_scoped_release release;
    body();
  } catch (const std::exception& e) {
    std::string cause = e.what();
    const std::string prefix = std::string(op) + ": ";
    if (cause.compare(0, prefix.size(), prefix) == 0) cause.erase(0, prefix.size());
    throw Error(std::string(op) + " (" + describe() + "): " + cause);
  }
}

}  // namespace convkit::bind
