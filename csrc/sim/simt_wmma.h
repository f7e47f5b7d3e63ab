// simt_wmma.h: the emulator's nvcuda::wmma (CUDA's warp matrix API, <mma.h>), included by
// simt.h where CUDA's half types are. Kernels write tensor-core code once, against the C++ WMMA
// API (no inline PTX), and it runs here with CUDA's contract taken strictly:
//
// - Fragments have nvcc's num_elements per lane and element types (16x16x16 __half and
//   __nv_bfloat16 A/B, row- or column-major; 16x16x8 precision::tf32 A/B stored as float; float
//   accumulators), and a lane's elements hold matrix elements in an order CUDA leaves unspecified:
//   here a permutation drawn from the emulator's seed (CONVKIT_SIM_SEED), different per fragment
//   kind, so code that assumes which element is which gets wrong results under some seed. Where
//   nvcc's fragment holds more slots than the tile has elements (a __half A or B: 16 a lane, 512
//   slots for 256 elements), each element is held by several slots, and mma_sync raises if they
//   disagree (a fragment edited element by element as if its layout were known).
// - load_matrix_sync / store_matrix_sync / fill_fragment act per lane; mma_sync meets the 32 lanes
//   of the warp (a warp operation: every lane must call it; it orders no memory) and computes
//   D = A x B + C in float: products of the 16-bit and tf32 inputs are exact in float, sums go in
//   k order (a GPU's order differs: no claim of bitwise equality with one).
// - tf32: __float_to_tf32 rounds to nearest with ties away from zero (cvt.rna), as the GPU does;
//   mma_sync reads only a tf32 element's top 19 bits, as the tensor cores do, so an input not
//   converted first is truncated.
#pragma once

#include <cstdint>
#include <cstring>


namespace nvcuda {
namespace wmma {

struct row_major;
struct col_major;
struct matrix_a;
struct matrix_b;
struct accumulator;
namespace precision {
struct tf32;
}
enum layout_t { mem_row_major, mem_col_major };

template <typename T>
struct helper_traits {
  typedef T element_type;
  typedef T storage_element_type;
  typedef T fill_argument_type;
};
template <>
struct helper_traits<precision::tf32> {
  typedef precision::tf32 element_type;
  typedef float storage_element_type;
  typedef float fill_argument_type;
};

template <typename T, int size>
struct __attribute__((aligned(8))) __frag_base {
  enum { num_elements = size };
  enum { num_storage_elements = size };
  typedef T element_type;
  typedef typename helper_traits<T>::storage_element_type storage_element_type;
  storage_element_type x[num_storage_elements];
};

template <typename Use, int m, int n, int k, typename T, typename Layout = void>
class fragment;

template <> class fragment<matrix_a, 16, 16, 16, __half, row_major> : public __frag_base<__half, 16> {};
template <> class fragment<matrix_a, 16, 16, 16, __half, col_major> : public __frag_base<__half, 16> {};
template <> class fragment<matrix_b, 16, 16, 16, __half, row_major> : public __frag_base<__half, 16> {};
template <> class fragment<matrix_b, 16, 16, 16, __half, col_major> : public __frag_base<__half, 16> {};
template <> class fragment<accumulator, 16, 16, 16, float> : public __frag_base<float, 8> {};
template <> class fragment<matrix_a, 16, 16, 16, __nv_bfloat16, row_major> : public __frag_base<__nv_bfloat16, 8> {};
template <> class fragment<matrix_a, 16, 16, 16, __nv_bfloat16, col_major> : public __frag_base<__nv_bfloat16, 8> {};
template <> class fragment<matrix_b, 16, 16, 16, __nv_bfloat16, row_major> : public __frag_base<__nv_bfloat16, 8> {};
template <> class fragment<matrix_b, 16, 16, 16, __nv_bfloat16, col_major> : public __frag_base<__nv_bfloat16, 8> {};
template <> class fragment<matrix_a, 16, 16, 8, precision::tf32, row_major> : public __frag_base<precision::tf32, 4> {};
template <> class fragment<matrix_a, 16, 16, 8, precision::tf32, col_major> : public __frag_base<precision::tf32, 4> {};
template <> class fragment<matrix_b, 16, 16, 8, precision::tf32, row_major> : public __frag_base<precision::tf32, 4> {};
template <> class fragment<matrix_b, 16, 16, 8, precision::tf32, col_major> : public __frag_base<precision::tf32, 4> {};
template <> class fragment<accumulator, 16, 16, 8, float> : public __frag_base<float, 8> {};

// Round to tf32 (10 mantissa bits), nearest with ties away from zero; NaN and infinity kept.
inline float __float_to_tf32(float in) {
  std::uint32_t u;
  std::memcpy(&u, &in, 4);
  if ((u & 0x7F800000u) != 0x7F800000u) u = (u + 0x1000u) & 0xFFFFE000u;
  float out;
  std::memcpy(&out, &u, 4);
  return out;
}

namespace detail {

template <class Frag>
struct traits;
// (use, rows, cols of the stored tile, kind, whether the layout is column-major)
#define SIMT_WMMA_TRAITS(USE, M, N, K, T, L, ROWS, COLS, KIND, COL)                   \
  template <>                                                                          \
  struct traits<fragment<USE, M, N, K, T, L>> {                                        \
    static constexpr int rows = ROWS, cols = COLS;                                     \
    static constexpr ::simt::detail::WmmaKind kind = ::simt::detail::WmmaKind::KIND;  \
    static constexpr bool col = COL;                                                   \
  };
SIMT_WMMA_TRAITS(matrix_a, 16, 16, 16, __half, row_major, 16, 16, AHalf, false)
SIMT_WMMA_TRAITS(matrix_a, 16, 16, 16, __half, col_major, 16, 16, AHalf, true)
SIMT_WMMA_TRAITS(matrix_b, 16, 16, 16, __half, row_major, 16, 16, BHalf, false)
SIMT_WMMA_TRAITS(matrix_b, 16, 16, 16, __half, col_major, 16, 16, BHalf, true)
SIMT_WMMA_TRAITS(matrix_a, 16, 16, 16, __nv_bfloat16, row_major, 16, 16, ABf16, false)
SIMT_WMMA_TRAITS(matrix_a, 16, 16, 16, __nv_bfloat16, col_major, 16, 16, ABf16, true)
SIMT_WMMA_TRAITS(matrix_b, 16, 16, 16, __nv_bfloat16, row_major, 16, 16, BBf16, false)
SIMT_WMMA_TRAITS(matrix_b, 16, 16, 16, __nv_bfloat16, col_major, 16, 16, BBf16, true)
SIMT_WMMA_TRAITS(matrix_a, 16, 16, 8, precision::tf32, row_major, 16, 8, ATf32, false)
SIMT_WMMA_TRAITS(matrix_a, 16, 16, 8, precision::tf32, col_major, 16, 8, ATf32, true)
SIMT_WMMA_TRAITS(matrix_b, 16, 16, 8, precision::tf32, row_major, 8, 16, BTf32, false)
SIMT_WMMA_TRAITS(matrix_b, 16, 16, 8, precision::tf32, col_major, 8, 16, BTf32, true)
SIMT_WMMA_TRAITS(accumulator, 16, 16, 16, float, void, 16, 16, Acc16, false)
SIMT_WMMA_TRAITS(accumulator, 16, 16, 8, float, void, 16, 16, Acc8, false)
#undef SIMT_WMMA_TRAITS

inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename S>
inline S from_float(float v);
template <>
inline float from_float<float>(float v) { return v; }

// The matrix element slot i of this lane holds: (row, col) of the stored tile.
template <class Frag>
inline void slot(int i, int& r, int& c) {
  using Tr = traits<Frag>;
  const int total = Tr::rows * Tr::cols;
  const std::uint16_t* map = ::simt::detail::wmma_layout(Tr::kind, Frag::num_elements, total);
  const int lane = static_cast<int>(::simt::detail::tls_thread->thread_idx.x +
                                    ::simt::detail::tls_thread->thread_idx.y *
                                        ::simt::detail::tls_thread->dims->block_dim.x +
                                    ::simt::detail::tls_thread->thread_idx.z *
                                        ::simt::detail::tls_thread->dims->block_dim.x *
                                        ::simt::detail::tls_thread->dims->block_dim.y) &
                   31;
  const int e = map[lane * Frag::num_elements + i];
  r = e / Tr::cols, c = e % Tr::cols;
}

template <class Frag, typename P>
inline void load(Frag& f, const P* p, unsigned ldm, bool col) {
  for (int i = 0; i < Frag::num_elements; ++i) {
    int r, c;
    slot<Frag>(i, r, c);
    f.x[i] = col ? p[static_cast<std::size_t>(c) * ldm + r] : p[static_cast<std::size_t>(r) * ldm + c];
  }
}

template <class Frag>
inline void as_floats(const Frag& f, float* out, bool tf32) {
  for (int i = 0; i < Frag::num_elements; ++i) {
    const float v = to_float(f.x[i]);
    out[i] = tf32 ? ::simt::detail::tf32_truncate(v) : v;
  }
}

}  // namespace detail

template <class Frag, typename T>
inline void fill_fragment(Frag& f, const T& v) {
  for (int i = 0; i < Frag::num_storage_elements; ++i) f.x[i] = v;
}

#define SIMT_WMMA_LOAD(USE, M, N, K, T, L, P)                                                       \
  inline void load_matrix_sync(fragment<USE, M, N, K, T, L>& f, const P* p, unsigned ldm) {         \
    detail::load(f, p, ldm, detail::traits<fragment<USE, M, N, K, T, L>>::col);                    \
  }
SIMT_WMMA_LOAD(matrix_a, 16, 16, 16, __half, row_major, __half)
SIMT_WMMA_LOAD(matrix_a, 16, 16, 16, __half, col_major, __half)
SIMT_WMMA_LOAD(matrix_b, 16, 16, 16, __half, row_major, __half)
SIMT_WMMA_LOAD(matrix_b, 16, 16, 16, __half, col_major, __half)
SIMT_WMMA_LOAD(matrix_a, 16, 16, 16, __nv_bfloat16, row_major, __nv_bfloat16)
SIMT_WMMA_LOAD(matrix_a, 16, 16, 16, __nv_bfloat16, col_major, __nv_bfloat16)
SIMT_WMMA_LOAD(matrix_b, 16, 16, 16, __nv_bfloat16, row_major, __nv_bfloat16)
SIMT_WMMA_LOAD(matrix_b, 16, 16, 16, __nv_bfloat16, col_major, __nv_bfloat16)
SIMT_WMMA_LOAD(matrix_a, 16, 16, 8, precision::tf32, row_major, float)
SIMT_WMMA_LOAD(matrix_a, 16, 16, 8, precision::tf32, col_major, float)
SIMT_WMMA_LOAD(matrix_b, 16, 16, 8, precision::tf32, row_major, float)
SIMT_WMMA_LOAD(matrix_b, 16, 16, 8, precision::tf32, col_major, float)
#undef SIMT_WMMA_LOAD

template <int M, int N, int K>
inline void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm, layout_t layout) {
  detail::load(f, p, ldm, layout == mem_col_major);
}

template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                              layout_t layout) {
  using Frag = fragment<accumulator, M, N, K, float>;
  for (int i = 0; i < Frag::num_elements; ++i) {
    int r, c;
    detail::slot<Frag>(i, r, c);
    p[layout == mem_col_major ? static_cast<std::size_t>(c) * ldm + r : static_cast<std::size_t>(r) * ldm + c] =
        f.x[i];
  }
}

// D = A x B + C over the warp (see the file comment); errors name the call's file:line.
template <int M, int N, int K, typename T, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
                     const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c,
                     const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  using FA = fragment<matrix_a, M, N, K, T, LA>;
  using FB = fragment<matrix_b, M, N, K, T, LB>;
  using FC = fragment<accumulator, M, N, K, float>;
  constexpr bool tf32 = std::is_same<T, precision::tf32>::value;
  float av[FA::num_elements], bv[FB::num_elements], cv[FC::num_elements], dv[FC::num_elements];
  detail::as_floats(a, av, tf32);
  detail::as_floats(b, bv, tf32);
  detail::as_floats(c, cv, false);
  ::simt::detail::WmmaArgs args{av, bv, cv, dv, M, N, K, FA::num_elements, FB::num_elements, FC::num_elements,
                                detail::traits<FA>::kind, detail::traits<FB>::kind, detail::traits<FC>::kind};
  ::simt::detail::wmma_mma(file, line, args);
  for (int i = 0; i < FC::num_elements; ++i) d.x[i] = dv[i];
}

}  // namespace wmma
}  // namespace nvcuda
