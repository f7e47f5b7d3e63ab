// Bindings of the CPU pooling and ReLU kernels (csrc/cpu/pool_*.cpp, relu.cpp).
#include "bindings/bind_util.h"

namespace convkit::bind {
void register_cpu_pool(pybind11::module_& m) {}
}  // namespace convkit::bind
