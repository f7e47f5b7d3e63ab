// The vector width the CPU kernels are compiled for, and GCC vector types of that width: AVX-512
// (zmm, 32 registers), AVX / AVX2 (ymm, 16), else 16 bytes (SSE, NEON or scalar code through
// GCC's vector extensions, 16 registers). Shared by the GEMM, the blocked convolution and the
// FMA peak probe, so they agree on what "a vector" is in any one build.
#pragma once

namespace convkit::cpu::simd {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
constexpr int kVecRegs = 32;
#elif defined(__AVX__)
constexpr int kVecBytes = 32;
constexpr int kVecRegs = 16;
#else
constexpr int kVecBytes = 16;
constexpr int kVecRegs = 16;
#endif

// Vec<T>::type: kVecBytes / sizeof(T) lanes of T (operators and scalar broadcast from GCC).
template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(kVecBytes)));
};

template <typename T>
constexpr int lanes() {
  return kVecBytes / int(sizeof(T));
}

}  // namespace convkit::cpu::simd
