// Bindings of convkit's CPU GEMM (csrc/cpu/gemm.cpp) and the FMA peak it is measured against
// (csrc/cpu/peak.cpp): what `convkit bench` reports as the ceiling and the fraction reached.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "bindings/bind_util.h"
#include "bindings/cpu_call.h"
#include "cpu/gemm.h"
#include "cpu/peak.h"

namespace py = pybind11;

namespace convkit::bind {

void register_cpu_gemm(pybind11::module_& m) {
  m.def(
      "fma_peak_gflops",
      [](const std::string& dtype, int threads, double seconds) {
        py::gil_scoped_release release;
        return parse_dtype(dtype, "fma_peak_gflops") == DType::F32
                   ? cpu::fma_peak_gflops<float>(threads, seconds)
                   : cpu::fma_peak_gflops<double>(threads, seconds);
      },
      py::arg("dtype") = "float32", py::arg("threads") = 0, py::arg("seconds") = 0.2,
      "Best GFLOP/s of independent FMA chains in vector registers on `threads` threads "
      "(0: get_num_threads()), over about `seconds`");

  m.def(
      "gemm_config",
      [](const std::string& dtype) {
        const cpu::GemmBlocking g = parse_dtype(dtype, "gemm_config") == DType::F32
                                        ? cpu::gemm_blocking<float>()
                                        : cpu::gemm_blocking<double>();
        const cpu::CacheSizes c = cpu::cache_sizes();
        py::dict d;
        d["mr"] = g.mr;
        d["nr"] = g.nr;
        d["kc"] = g.kc;
        d["mc"] = g.mc;
        d["nc"] = g.nc;
        d["l1d_bytes"] = c.l1d;
        d["l2_bytes"] = c.l2;
        d["l3_bytes"] = c.l3;
        d["l3_sharing_cpus"] = c.l3_sharing;
        return d;
      },
      py::arg("dtype") = "float32",
      "The GEMM's register tile (mr x nr), cache blocks (kc, mc, nc) and the cache sizes they "
      "were cut from");

  m.def(
      "gemm",
      [](const std::string& dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
         double alpha, std::uintptr_t a, int64_t lda, std::uintptr_t b, int64_t ldb, double beta,
         std::uintptr_t c, int64_t ldc) {
        constexpr const char* op = "gemm";
        parse_dtype(dtype, op);
        if (M < 0 || N < 0 || K < 0) throw Error("gemm: negative size");
        if (M == 0 || N == 0) return;
        if (c == 0 || (K > 0 && (a == 0 || b == 0))) throw Error("gemm: null pointer");
        cpu_call([&] {
          dispatch_float(dtype, op, [&](auto tag) {
            using T = decltype(tag);
            cpu::gemm<T>(trans_a, trans_b, M, N, K, T(alpha), ptr<const T>(a), lda, ptr<const T>(b),
                         ldb, T(beta), ptr<T>(c), ldc);
          });
        });
      },
      py::arg("dtype"), py::arg("trans_a"), py::arg("trans_b"), py::arg("M"), py::arg("N"),
      py::arg("K"), py::arg("alpha"), py::arg("a"), py::arg("lda"), py::arg("b"), py::arg("ldb"),
      py::arg("beta"), py::arg("c"), py::arg("ldc"),
      "Row-major C[M,N] = alpha * op(A)[M,K] x op(B)[K,N] + beta * C on raw pointers (ints); "
      "op(X) = X^T when trans_x (then X is stored [K,M] / [N,K])");
}

}  // namespace convkit::bind
