// Helpers shared by the pybind11 binding files: dtype names and raw pointers passed as ints.
// Only csrc/bindings knows pybind11; the kernels take params structs and typed pointers.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "common/error.h"

namespace convkit::bind {

enum class DType { F32, F64 };

inline DType parse_dtype(const std::string& name, const char* op) {
  if (name == "float32") return DType::F32;
  if (name == "float64") return DType::F64;
  throw Error(std::string(op) + ": unsupported dtype '" + name + "' on the cpu backend (float32, float64)");
}

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

void register_cpu_conv(pybind11::module_& m);
void register_cpu_pool(pybind11::module_& m);

}  // namespace convkit::bind
