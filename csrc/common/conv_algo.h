// The convolution algorithms, each named once (CONVKIT_CONV_ALGOS: its enum value, its name,
// what Python passes as algo=..., whether auto may time it, and what it needs of the shape)
// with the one applicability rule over those needs (conv_algo_refusal). Each backend lists the algorithms it builds (CONVKIT_CPU_CONV_ALGOS in
// cpu/conv.h, CONVKIT_CUDA_CONV_ALGOS in cuda/conv_algos.h); its launcher dispatches over that
// list and its module reports it (conv_algos()). Python reads the names from the modules
// (convkit._algos): the argument check, the "not on this backend" error, auto's candidates, the
// bench and the test sweeps. Adding an algorithm: one line here, one line in the backend's list,
// one kernel file (docs/ADDING.md).
#pragma once
#include <cstdint>
#include <string>

#include "common/params.h"

namespace convkit {

// What an algorithm needs of the convolution, as data, so that the C++ launchers and Python's
// argument check (convkit/_algos.py, through conv_algo_registry()) apply the same rule: a kernel
// of R x S (0: any), a stride and a dilation of this value on both axes (0: any), zero padding.
struct ConvNeeds {
  int64_t R, S, stride, dilation;
  bool no_padding;
};
inline constexpr ConvNeeds kAnyShape{0, 0, 0, 0, false};
inline constexpr ConvNeeds kNeeds1x1{1, 1, 0, 0, true};        // a GEMM straight on NCHW
inline constexpr ConvNeeds kNeedsWinograd{3, 3, 1, 1, false};  // F(2x2, 3x3)

// The registry: X(Enum, "name", timed, needs) per algorithm, in the order auto's candidates, the
// bench and the test sweeps list them. `timed`: auto and convkit.benchmark may time and pick it
// (false for an oracle such as 'reference', which only runs when asked for by name). Which
// modules build an algorithm is each backend's list (cpu/conv.h, cuda/conv_algos.h).
#define CONVKIT_CONV_ALGOS(X)                       \
  X(Direct, "direct", true, kAnyShape)              \
  X(Im2col, "im2col", true, kAnyShape)              \
  X(OneByOne, "1x1", true, kNeeds1x1)               \
  X(Blocked, "blocked", true, kAnyShape)            \
  X(Winograd, "winograd", true, kNeedsWinograd)     \
  X(ImplicitGemm, "implicit_gemm", true, kAnyShape) \
  X(Reference, "reference", false, kAnyShape)

enum class ConvAlgo {
#define CONVKIT_ALGO_ENUM(e, name, timed, needs) e,
  CONVKIT_CONV_ALGOS(CONVKIT_ALGO_ENUM)
#undef CONVKIT_ALGO_ENUM
};
enum class ConvPass { Fwd, BwdInput, BwdWeight };

struct ConvAlgoEntry {
  ConvAlgo algo;
  const char* name;
  bool timed;  // a candidate of auto and convkit.benchmark
  ConvNeeds needs;
};

inline constexpr ConvAlgoEntry kConvAlgos[] = {
#define CONVKIT_ALGO_ENTRY(e, name, timed, needs) {ConvAlgo::e, name, timed, needs},
    CONVKIT_CONV_ALGOS(CONVKIT_ALGO_ENTRY)
#undef CONVKIT_ALGO_ENTRY
};

inline const ConvAlgoEntry& conv_algo_entry(ConvAlgo a) {
  for (const ConvAlgoEntry& e : kConvAlgos)
    if (e.algo == a) return e;
  return kConvAlgos[0];  // (unreachable: every enum value has its line)
}

inline const char* conv_algo_name(ConvAlgo a) { return conv_algo_entry(a).name; }

// The algorithms one kind of module builds: a bit per ConvAlgo, from the backend's list
// (CONVKIT_CONV_ALGO_SET over CONVKIT_CPU_CONV_ALGOS or CONVKIT_CUDA_CONV_ALGOS), and the
// backend's name for messages.
struct ConvAlgoSet {
  unsigned bits;
  const char* backend;

  constexpr bool has(ConvAlgo a) const { return (bits >> static_cast<unsigned>(a)) & 1u; }
  // The names it has, in the registry's order, comma-separated (for messages).
  std::string names() const {
    std::string s;
    for (const ConvAlgoEntry& e : kConvAlgos)
      if (has(e.algo)) s += (s.empty() ? "" : ", ") + std::string(e.name);
    return s;
  }
};
#define CONVKIT_CONV_ALGO_BIT(e, ns) | (1u << static_cast<unsigned>(ConvAlgo::e))
#define CONVKIT_CONV_ALGO_SET(list, backend) ConvAlgoSet{0u list(CONVKIT_CONV_ALGO_BIT), backend}

// The algorithm named `name` in `set`; an unknown name, or one the module does not build,
// raises naming what it has (`where` names the backend the caller asked for: "cuda", "cudasim").
inline ConvAlgo parse_conv_algo(const std::string& name, const ConvAlgoSet& set, const char* op,
                                const char* where) {
  for (const ConvAlgoEntry& e : kConvAlgos)
    if (name == e.name && set.has(e.algo)) return e.algo;
  throw Error(std::string(op) + ": unknown algo '" + name + "' on the " + where + " backend (" + set.names() + ")");
}

inline ConvPass parse_conv_pass(const std::string& name, const char* op) {
  if (name == "fwd") return ConvPass::Fwd;
  if (name == "bwd_input") return ConvPass::BwdInput;
  if (name == "bwd_weight") return ConvPass::BwdWeight;
  throw Error(std::string(op) + ": unknown pass_ '" + name + "' (fwd, bwd_input, bwd_weight)");
}

// The applicability rule: "" when algorithm `a` computes the convolution `p` (every pass and
// dtype its module has), else why not, e.g. "algo '1x1' needs a 1x1 kernel and zero padding, got
// kernel 3x3, stride (1, 1), dilation (1, 1), padding (1, 1, 1, 1)". convkit/_algos.py reads the
// same ConvNeeds and words its message the same way; the launchers check it again before any
// kernel runs.
inline std::string conv_algo_refusal(ConvAlgo a, const ConvParams& p) {
  const ConvAlgoEntry& e = conv_algo_entry(a);
  const ConvNeeds& n = e.needs;
  const bool ok = (n.R == 0 || p.R == n.R) && (n.S == 0 || p.S == n.S) &&
                  (n.stride == 0 || (p.stride_h == n.stride && p.stride_w == n.stride)) &&
                  (n.dilation == 0 || (p.dil_h == n.dilation && p.dil_w == n.dilation)) &&
                  (!n.no_padding || (p.pad_t == 0 && p.pad_b == 0 && p.pad_l == 0 && p.pad_r == 0));
  if (ok) return "";
  const auto s = [](int64_t v) { return std::to_string(v); };
  std::string need;
  const auto add = [&need](const std::string& part) { need += (need.empty() ? "" : " and ") + part; };
  if (n.R || n.S) add("a " + (n.R ? s(n.R) : std::string("R")) + "x" + (n.S ? s(n.S) : std::string("S")) + " kernel");
  if (n.stride) add("stride " + s(n.stride));
  if (n.dilation) add("dilation " + s(n.dilation));
  if (n.no_padding) add("zero padding");
  return std::string("algo '") + e.name + "' needs " + need + ", got kernel " + s(p.R) + "x" + s(p.S) + ", stride (" +
         s(p.stride_h) + ", " + s(p.stride_w) + "), dilation (" + s(p.dil_h) + ", " + s(p.dil_w) + "), padding (" +
         s(p.pad_t) + ", " + s(p.pad_b) + ", " + s(p.pad_l) + ", " + s(p.pad_r) + ")";
}

// Raises `op`'s error when `set` does not build the algorithm or the rule refuses.
inline void check_conv_algo(ConvAlgo a, const ConvAlgoSet& set, const ConvParams& p, const char* op) {
  if (!set.has(a))
    throw Error(std::string(op) + ": algo '" + conv_algo_name(a) + "' is not built for " + set.backend + " (" +
                set.names() + ")");
  const std::string why = conv_algo_refusal(a, p);
  if (!why.empty()) throw Error(std::string(op) + ": " + why);
}

}  // namespace convkit
