// The element types of convkit's kernels, one enum for every module and binding. F16 and BF16
// compute in float32 (the CUDA kernels; the CPU kernels take F32 and F64 only).
#pragma once
#include <cstdint>

namespace convkit {

enum class DType { F32, F64, F16, BF16 };

// Element size in bytes.
inline int64_t dtype_bytes(DType dt) { return dt == DType::F64 ? 8 : dt == DType::F32 ? 4 : 2; }

}  // namespace convkit
