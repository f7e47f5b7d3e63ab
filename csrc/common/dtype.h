// The element types of convkit's kernels, one enum for every module and binding. F16 and BF16
// compute in float32 (the CUDA kernels; the CPU kernels take F32 and F64 only).
#pragma once
#include <cstdint>

namespace convkit {

enum class DType { F32, F64, F16, BF16 };

// Element size in bytes.
inline int64_t dtype_bytes(DType dt) { return dt == DType::F64 ? 8 : dt == DType::F32 ? 4 : 2; }
// Bytes of the type the kernels accumulate dt in (the CUDA kernels' acc_t: double for F64,
// float for the rest), for workspace and shared-memory sizes computed on the host.
inline int64_t acc_bytes(DType dt) { return dt == DType::F64 ? 8 : 4; }

}  // namespace convkit
