// Python bindings of the emulator self-tests (csrc/sim/selftest/sim_selftest.h) as the submodule
// `selftest` of convkit._cuda / convkit._cudasim, and, in _cudasim only, the emulator's controls
// (sim_set_seed, sim_set_num_workers, sim_counters, ...) on the module itself.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "bindings/bind_util.h"
#include "sim/selftest/sim_selftest.h"
#include "sim/selftest/sim_selftest_bugs.h"
#if defined(CONVKIT_SIM)
#include "sim/control.h"
#endif

namespace py = pybind11;

namespace convkit::bind {

namespace {

namespace st = convkit::cuda::selftest;
using Ptr = std::uintptr_t;

st::WarpType parse_warp_type(const std::string& name) {
  if (name == "int32") return st::WarpType::I32;
  if (name == "uint32") return st::WarpType::U32;
  if (name == "int64") return st::WarpType::I64;
  if (name == "uint64") return st::WarpType::U64;
  if (name == "float32") return st::WarpType::F32;
  if (name == "float64") return st::WarpType::F64;
  if (name == "float16") return st::WarpType::F16;
  if (name == "bfloat16") return st::WarpType::BF16;
  throw Error("warp_shuffle: unknown dtype '" + name + "'");
}

st::WarpShfl parse_shfl(const std::string& name) {
  if (name == "idx") return st::WarpShfl::Idx;
  if (name == "up") return st::WarpShfl::Up;
  if (name == "down") return st::WarpShfl::Down;
  if (name == "xor") return st::WarpShfl::Xor;
  throw Error("warp_shuffle: unknown op '" + name + "' (idx, up, down, xor)");
}

st::WarpVote parse_vote(const std::string& name) {
  if (name == "ballot") return st::WarpVote::Ballot;
  if (name == "any") return st::WarpVote::Any;
  if (name == "all") return st::WarpVote::All;
  if (name == "syncwarp") return st::WarpVote::SyncWarp;
  if (name == "match_any") return st::WarpVote::MatchAny;
  if (name == "reduce_add") return st::WarpVote::ReduceAdd;
  if (name == "reduce_min") return st::WarpVote::ReduceMin;
  if (name == "reduce_max") return st::WarpVote::ReduceMax;
  throw Error("warp_vote: unknown op '" + name + "'");
}

}  // namespace

void register_cuda_selftest(py::module_& m) {
  py::module_ s = m.def_submodule("selftest", "Self-test kernels of the CUDA emulator (tests/kernels/test_sim.py)");
  const auto dev = py::arg("device") = 0;
  const auto stream = py::arg("stream") = 0;

  s.def("has_half", &st::has_half);
  s.def(
      "block_sum",
      [](Ptr x, Ptr sums, int n, int threads, int device, Ptr stream) {
        st::block_sum(ptr<const float>(x), ptr<float>(sums), n, threads, device, stream);
      },
      py::arg("x"), py::arg("block_sums"), py::arg("n"), py::arg("threads"), dev, stream);
  s.def(
      "tiled_matmul",
      [](Ptr a, Ptr b, Ptr c, int M, int N, int K, int device, Ptr stream) {
        st::tiled_matmul(ptr<const float>(a), ptr<const float>(b), ptr<float>(c), M, N, K, device, stream);
      },
      py::arg("a"), py::arg("b"), py::arg("c"), py::arg("M"), py::arg("N"), py::arg("K"), dev, stream);
  s.def(
      "neighbor_exchange",
      [](Ptr out, int threads, bool with_barrier, int device, Ptr stream) {
        st::neighbor_exchange(ptr<int>(out), threads, with_barrier, device, stream);
      },
      py::arg("out"), py::arg("threads"), py::arg("with_barrier"), dev, stream);
  s.def(
      "wmma_gemm",
      [](const std::string& type, bool a_col, bool b_col, int mode, Ptr a, Ptr at, Ptr b, Ptr bt, Ptr c, Ptr d, int K,
         int device, Ptr stream) {
        st::wmma_gemm(type.c_str(), a_col, b_col, mode, ptr<const void>(a), ptr<const void>(at), ptr<const void>(b),
                      ptr<const void>(bt), ptr<const float>(c), ptr<float>(d), K, device, stream);
      },
      py::arg("type"), py::arg("a_col"), py::arg("b_col"), py::arg("mode"), py::arg("a"), py::arg("at"), py::arg("b"),
      py::arg("bt"), py::arg("c"), py::arg("d"), py::arg("K"), dev, stream);
  s.def(
      "async_copy",
      [](Ptr x, Ptr out, int mode, int device, Ptr stream) {
        st::async_copy(ptr<const float>(x), ptr<float>(out), mode, device, stream);
      },
      py::arg("x"), py::arg("out"), py::arg("mode"), dev, stream);
  s.def(
      "shared_per_block",
      [](Ptr out, Ptr ui, Ptr uf, int blocks, int threads, int device, Ptr stream) {
        st::shared_per_block(ptr<int>(out), ptr<int>(ui), ptr<float>(uf), blocks, threads, device, stream);
      },
      py::arg("out"), py::arg("unwritten_i"), py::arg("unwritten_f"), py::arg("blocks"), py::arg("threads"), dev,
      stream);
  s.def(
      "thread_ids",
      [](Ptr out, py::tuple grid, py::tuple block, int device, Ptr stream) {
        CK_CHECK(grid.size() == 3 && block.size() == 3, "thread_ids: grid and block are (x, y, z)");
        st::thread_ids(ptr<int>(out), grid[0].cast<unsigned>(), grid[1].cast<unsigned>(), grid[2].cast<unsigned>(),
                       block[0].cast<unsigned>(), block[1].cast<unsigned>(), block[2].cast<unsigned>(), device, stream);
      },
      py::arg("out"), py::arg("grid"), py::arg("block"), dev, stream);
  s.def(
      "warp_shuffle",
      [](const std::string& dtype, const std::string& op, Ptr in, Ptr out, int threads, std::uint32_t mask, int arg,
         int width, int device, Ptr stream) {
        st::warp_shuffle(parse_warp_type(dtype), parse_shfl(op), ptr<const void>(in), ptr<void>(out), threads, mask,
                         arg, width, device, stream);
      },
      py::arg("dtype"), py::arg("op"), py::arg("x"), py::arg("out"), py::arg("threads"), py::arg("mask"),
      py::arg("arg"), py::arg("width") = 32, dev, stream);
  s.def(
      "warp_vote",
      [](const std::string& op, Ptr in, Ptr out, int threads, std::uint32_t mask, int device, Ptr stream) {
        st::warp_vote(parse_vote(op), ptr<const int>(in), ptr<int>(out), threads, mask, device, stream);
      },
      py::arg("op"), py::arg("x"), py::arg("out"), py::arg("threads"), py::arg("mask"), dev, stream);
  s.def(
      "barrier_reductions",
      [](Ptr pred, Ptr out, int threads, int device, Ptr stream) {
        st::barrier_reductions(ptr<const int>(pred), ptr<int>(out), threads, device, stream);
      },
      py::arg("pred"), py::arg("out"), py::arg("threads"), dev, stream);
  s.def(
      "atomics",
      [](Ptr slots, int blocks, int threads, int device, Ptr stream) {
        st::atomics(ptr<void>(slots), blocks, threads, device, stream);
      },
      py::arg("slots"), py::arg("blocks"), py::arg("threads"), dev, stream);
  s.def(
      "launch_config",
      [](Ptr out, py::tuple grid, py::tuple block, std::size_t smem, bool optin, int device, Ptr stream) {
        CK_CHECK(grid.size() == 3 && block.size() == 3, "launch_config: grid and block are (x, y, z)");
        st::launch_config(ptr<int>(out), grid[0].cast<unsigned>(), grid[1].cast<unsigned>(), grid[2].cast<unsigned>(),
                          block[0].cast<unsigned>(), block[1].cast<unsigned>(), block[2].cast<unsigned>(), smem, optin,
                          device, stream);
      },
      py::arg("out"), py::arg("grid"), py::arg("block"), py::arg("dynamic_smem") = 0, py::arg("optin") = false, dev,
      stream);
  s.def(
      "static_plus_dynamic_shared",
      [](Ptr out, std::size_t smem, int optin, int device, Ptr stream) {
        st::static_plus_dynamic_shared(ptr<int>(out), smem, optin, device, stream);
      },
      py::arg("out"), py::arg("dynamic_smem"), py::arg("optin"), dev, stream);
  s.def(
      "barrier_divergence",
      [](Ptr out, int blocks, int threads, int mode, int device, Ptr stream) {
        st::barrier_divergence(ptr<int>(out), blocks, threads, mode, device, stream);
      },
      py::arg("out"), py::arg("blocks"), py::arg("threads"), py::arg("mode"), dev, stream);
  s.def(
      "warp_deadlock",
      [](Ptr out, int mode, int device, Ptr stream) { st::warp_deadlock(ptr<int>(out), mode, device, stream); },
      py::arg("out"), py::arg("mode"), dev, stream);
  s.def(
      "misaligned_load16",
      [](Ptr x, Ptr y, int offset, int device, Ptr stream) {
        st::misaligned_load16(ptr<const float>(x), ptr<float>(y), offset, device, stream);
      },
      py::arg("x"), py::arg("y"), py::arg("offset_floats"), dev, stream);
  s.def(
      "shared_out_of_bounds",
      [](Ptr out, int past, int device, Ptr stream) { st::shared_out_of_bounds(ptr<int>(out), past, device, stream); },
      py::arg("out"), py::arg("past"), dev, stream);

  // Seeded bugs (sim_selftest_bugs.cu, tests/kernels/test_racecheck.py): never on a GPU unless clean.
  s.def("seeded_bugs", []() {
    py::list names;
    for (int i = 0; const char* n = st::seeded_bug_name(static_cast<st::SeededBug>(i)); ++i) names.append(n);
    return names;
  }, "The seeded bug classes, each marked `// BUG(<name>)` at its offending line of sim_selftest_bugs.cu");
  s.attr("SEEDED_BUG_IN") = st::kSeededBugIn;
  s.attr("SEEDED_BUG_OUT") = st::kSeededBugOut;
  s.def(
      "seeded_bug",
      [](const std::string& name, bool clean, Ptr x, Ptr out, int device, Ptr stream) {
        st::seeded_bug(st::parse_seeded_bug(name.c_str()), clean, ptr<const float>(x), ptr<float>(out), device, stream);
      },
      py::arg("name"), py::arg("clean"), py::arg("x"), py::arg("out"), dev, stream,
      "Launches a seeded-bug kernel (clean: its correct counterpart); x: SEEDED_BUG_IN floats, out: SEEDED_BUG_OUT");

#if defined(CONVKIT_SIM)
  m.def("sim_set_seed", &simt::set_seed, py::arg("seed"),
        "Seed of the emulator's per-block schedule shuffle (env CONVKIT_SIM_SEED)");
  m.def("sim_seed", &simt::seed);
  m.def("sim_set_num_workers", &simt::set_num_workers, py::arg("n"),
        "OS threads that run blocks (env CONVKIT_SIM_THREADS)");
  m.def("sim_num_workers", &simt::num_workers);
  m.def("sim_counters", []() {
    const simt::Counters c = simt::counters();
    py::dict d;
    d["launches"] = c.launches;
    d["blocks"] = c.blocks;
    d["threads"] = c.threads;
    d["switches"] = c.switches;
    d["barriers"] = c.barriers;
    d["warp_ops"] = c.warp_ops;
    return d;
  });
  m.def("sim_reset_counters", &simt::reset_counters);
  m.def("sim_set_sm_count", &simt::set_sm_count, py::arg("n"),
        "SMs the emulated device reports (default 132): grids sized by it change, results must not");
  m.def("sim_sm_count", &simt::sm_count);
  m.def("sim_racecheck_built", &simt::racecheck_built,
        "Whether this module's kernels are instrumented for the race detector (make test-racecheck)");
  m.def("sim_set_racecheck", &simt::set_racecheck, py::arg("on"),
        "Turns the race detector on or off (env CONVKIT_SIM_RACECHECK; only in the racecheck build)");
  m.def("sim_racecheck", &simt::racecheck);
#endif
}

}  // namespace convkit::bind
