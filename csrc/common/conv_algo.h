// The convolution algorithms, each named once: its enum value, its name (what Python passes as
// algo=...), the backends whose modules build it, and the one applicability rule. The CPU
// launcher (csrc/cpu/conv.cpp), the CUDA launcher (csrc/cuda/conv.cu) and the bindings all
// read this table; each compiled module reports the names it has (conv_algos()), and Python's
// "not on this backend" check, auto's candidates, the bench and the test sweeps derive from it.
// Adding an algorithm: one line in kConvAlgos (and the enum), one kernel file, one dispatch case
// per launcher (docs/ADDING.md).
#pragma once
#include <cstdint>
#include <string>

#include "common/params.h"

namespace convkit {

enum class ConvAlgo { Direct, Im2col, OneByOne, Blocked, Winograd };
enum class ConvPass { Fwd, BwdInput, BwdWeight };

// The kinds of module: the CPU kernels (_cpu) and the CUDA kernels (_cuda, and _cudasim, the
// same sources on the emulator).
enum ConvBackend : unsigned { kConvCpu = 1u, kConvCuda = 2u };

struct ConvAlgoEntry {
  ConvAlgo algo;
  const char* name;
  unsigned backends;  // ConvBackend bits
};

// In the order auto's candidates, the bench and the test sweeps list them.
inline constexpr ConvAlgoEntry kConvAlgos[] = {
    {ConvAlgo::Direct, "direct", kConvCpu | kConvCuda},
    {ConvAlgo::Im2col, "im2col", kConvCpu | kConvCuda},
    {ConvAlgo::OneByOne, "1x1", kConvCpu | kConvCuda},
    {ConvAlgo::Blocked, "blocked", kConvCpu},
    {ConvAlgo::Winograd, "winograd", kConvCpu},
};

inline const char* conv_algo_name(ConvAlgo a) {
  for (const ConvAlgoEntry& e : kConvAlgos)
    if (e.algo == a) return e.name;
  return "?";
}

inline bool conv_algo_on(ConvAlgo a, ConvBackend backend) {
  for (const ConvAlgoEntry& e : kConvAlgos)
    if (e.algo == a) return (e.backends & backend) != 0;
  return false;
}

// The names a module of `backend` has, comma-separated (for messages).
inline std::string conv_algo_names(ConvBackend backend) {
  std::string s;
  for (const ConvAlgoEntry& e : kConvAlgos)
    if (e.backends & backend) s += (s.empty() ? "" : ", ") + std::string(e.name);
  return s;
}

// The algorithm named `name` on a module of `backend` (called "cpu", "cuda" or "cudasim" in
// messages); an unknown name, or one the module does not build, raises naming what it has.
inline ConvAlgo parse_conv_algo(const std::string& name, ConvBackend backend, const char* op,
                                const char* backend_name) {
  for (const ConvAlgoEntry& e : kConvAlgos)
    if (name == e.name && (e.backends & backend)) return e.algo;
  throw Error(std::string(op) + ": unknown algo '" + name + "' on the " + backend_name + " backend (" +
              conv_algo_names(backend) + ")");
}

inline ConvPass parse_conv_pass(const std::string& name, const char* op) {
  if (name == "fwd") return ConvPass::Fwd;
  if (name == "bwd_input") return ConvPass::BwdInput;
  if (name == "bwd_weight") return ConvPass::BwdWeight;
  throw Error(std::string(op) + ": unknown pass_ '" + name + "' (fwd, bwd_input, bwd_weight)");
}

// The applicability rule: "" when algorithm `a` computes the convolution `p` (every pass and
// dtype its module has), else why not. Python checks the same rule first (convkit._params,
// with the user's argument names); the launchers check it again before any kernel runs.
inline std::string conv_algo_refusal(ConvAlgo a, const ConvParams& p) {
  const auto s = [](int64_t v) { return std::to_string(v); };
  switch (a) {
    case ConvAlgo::OneByOne:
      if (!p.is_1x1())
        return "algo '1x1' needs a 1x1 kernel with zero padding, got kernel " + s(p.R) + "x" + s(p.S) +
               " padding (" + s(p.pad_t) + ", " + s(p.pad_b) + ", " + s(p.pad_l) + ", " + s(p.pad_r) + ")";
      break;
    case ConvAlgo::Winograd:
      if (!(p.R == 3 && p.S == 3 && p.stride_h == 1 && p.stride_w == 1 && p.dil_h == 1 && p.dil_w == 1))
        return "algo 'winograd' needs a 3x3 kernel with stride 1 and dilation 1, got kernel " + s(p.R) + "x" +
               s(p.S) + " stride (" + s(p.stride_h) + ", " + s(p.stride_w) + ") dilation (" + s(p.dil_h) + ", " +
               s(p.dil_w) + ")";
      break;
    case ConvAlgo::Direct:
    case ConvAlgo::Im2col:
    case ConvAlgo::Blocked:
      break;
  }
  return "";
}

// Raises `op`'s error when the rule refuses.
inline void check_conv_algo(ConvAlgo a, const ConvParams& p, const char* op) {
  const std::string why = conv_algo_refusal(a, p);
  if (!why.empty()) throw Error(std::string(op) + ": " + why);
}

}  // namespace convkit
