// Bindings of the CPU convolution kernels (csrc/cpu/conv_*.cpp).
#include "bindings/bind_util.h"

namespace convkit::bind {
void register_cpu_conv(pybind11::module_& m) {}
}  // namespace convkit::bind
