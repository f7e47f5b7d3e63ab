// Helpers of the CUDA modules' bindings (cuda_pool.cpp, cuda_conv.cpp): dtype names to
// DType, null-pointer checks, and run_op, which releases the GIL around a launcher and
// turns any failure into a RuntimeError naming the op, its shapes and the cause.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <exception>
#include <string>

#include "bindings/bind_util.h"
#include "cuda/ops.h"

namespace convkit::bind {

// The dtype named `name` on a CUDA module (the half types where this build has them).
inline DType cuda_dtype(const std::string& name, const char* op, const char* backend) {
  return parse_dtype(name, op, backend, cuda::has_half());
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
