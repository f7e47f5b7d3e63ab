// The one stream handle of the CUDA modules: a cudaStream_t as the Python layer passes it, an
// integer (0 is the legacy default stream; the emulator's one in-order queue is 0 too). Plain
// C++, so ops.h and the bindings use it without a CUDA header.
#pragma once
#include <cstdint>

namespace convkit::cuda {

using StreamHandle = std::uintptr_t;

}  // namespace convkit::cuda
