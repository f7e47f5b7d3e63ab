"""Seeded bugs (csrc/sim/selftest/sim_selftest_bugs.cu, issue 15): one small broken kernel per class
of bug a GPU hides or faults on, each reported by the emulator with the line marked
`// BUG(<name>)` in that file.

- misaligned shared float4, shuffle from a lane outside the mask, divergent barrier: errors of the
  ordinary emulator (every build), tested here always.
- the races (missing barrier in a tiled GEMM, either of its two; shared read-modify-write;
  intra-warp exchange without __syncwarp; two blocks writing one global element) and the
  uninitialised shared read: reported only by the racecheck build (`make test-racecheck`, where
  sim_racecheck_built() is true) as a launch error starting "racecheck:" / "initcheck:" and naming
  `sim_selftest_bugs.cu:<line>` of the marker; skipped elsewhere. Their clean counterparts must
  raise nothing there.
- every clean counterpart gives the right numbers on any build.
"""
import re
from pathlib import Path

import pytest
import torch

from convkit import _backend

ROOT = Path(__file__).resolve().parents[2]
BUGS_SRC = ROOT / "csrc" / "sim" / "selftest" / "sim_selftest_bugs.cu"
FILE = BUGS_SRC.name

RACES = ["gemm_raw", "gemm_war", "shared_rmw", "warp_exchange", "global_write"]
UNINIT = ["uninit_shared"]
EMULATOR_ERRORS = ["misaligned_shared", "shuffle_outside_mask", "divergent_barrier"]
# The kernel each class launches (its name in reports, before the "<...>" of its form).
KERNELS = {
    "gemm_raw": "bug_gemm_kernel", "gemm_war": "bug_gemm_kernel", "shared_rmw": "bug_shared_rmw_kernel",
    "warp_exchange": "bug_warp_exchange_kernel", "global_write": "bug_global_write_kernel",
    "uninit_shared": "bug_uninit_shared_kernel", "misaligned_shared": "bug_misaligned_shared_kernel",
    "shuffle_outside_mask": "bug_shuffle_outside_mask_kernel", "divergent_barrier": "bug_divergent_barrier_kernel",
}
SENTINEL = -12345.0


def bug_lines():
    """{class: line of its `// BUG(<class>)` marker}; each marker exactly once."""
    lines = {}
    for no, text in enumerate(BUGS_SRC.read_text().splitlines(), start=1):
        for name in re.findall(r"// BUG\((\w+)\)", text):
            assert name not in lines, f"two BUG({name}) markers: lines {lines[name]} and {no}"
            lines[name] = no
    return lines


def _sim():
    mod = _backend._load("cudasim")
    if mod is None:
        pytest.skip("convkit._cudasim is not built")
    return mod


@pytest.fixture
def sim():
    mod = _sim()
    seed = mod.sim_seed()
    yield mod
    mod.sim_set_seed(seed)


@pytest.fixture
def racecheck(sim):
    if not sim.sim_racecheck_built():
        pytest.skip("needs the racecheck build of convkit._cudasim (make test-racecheck); this one is not instrumented")
    was = sim.sim_racecheck()
    sim.sim_set_racecheck(True)
    yield sim
    sim.sim_set_racecheck(was)


def _inputs(st):
    x = (torch.arange(st.SEEDED_BUG_IN, dtype=torch.float32) * 5 % 7) - 3  # small integers: every sum exact
    out = torch.full((st.SEEDED_BUG_OUT,), SENTINEL)
    return x, out


def _run(mod, name, clean):
    st = mod.selftest
    x, out = _inputs(st)
    st.seeded_bug(name, clean, x.data_ptr(), out.data_ptr())
    return x, out


def _expected(name, x):
    """The clean counterpart's output (sentinel where the kernel writes nothing)."""
    out = torch.full((1024,), SENTINEL)
    if name in ("gemm_raw", "gemm_war"):
        a, b = x[:1024].view(32, 32).double(), x[1024:].view(32, 32).double()
        out[:] = (a @ b).float().flatten()
    elif name == "shared_rmw":
        out[0] = x[:256].sum()
    elif name == "warp_exchange":
        out[:32] = torch.roll(x[:32], -1)
    elif name == "global_write":
        out[:32], out[32:64] = x[:32], 2 * x[:32]
    elif name == "uninit_shared":
        out[:64] = x[:64] + torch.cat([x[1:64], torch.zeros(1)])
    elif name in ("misaligned_shared", "divergent_barrier"):
        out[:64] = 2 * x[:64]
    elif name == "shuffle_outside_mask":  # width 16: lane 15's source is outside its segment
        out[:32] = x[:32]
        out[:15] = x[1:16]
    else:
        raise AssertionError(f"no reference for {name}")
    return out


def test_every_class_has_one_marker(sim):
    names = sim.selftest.seeded_bugs()
    assert sorted(names) == sorted(RACES + UNINIT + EMULATOR_ERRORS)
    assert sorted(bug_lines()) == sorted(names)


@pytest.mark.parametrize("name", RACES + UNINIT + EMULATOR_ERRORS)
def test_clean_counterparts_give_the_right_numbers(sim, name):
    for seed in (1, 2):
        sim.sim_set_seed(seed)
        x, out = _run(sim, name, clean=True)
        assert torch.equal(out, _expected(name, x)), f"{name} (seed {seed}): {out[:40].tolist()}"


# ---- errors of the ordinary emulator --------------------------------------------------------------

def _report(mod, name, seed=None):
    """The buggy form's error message and the line of its BUG marker."""
    if seed is not None:
        mod.sim_set_seed(seed)
    with pytest.raises(RuntimeError) as info:
        _run(mod, name, clean=False)
    return str(info.value), bug_lines()[name]


@pytest.mark.parametrize("seed", [1, 7])
def test_misaligned_shared_float4(sim, seed):
    """A float array is only 4-byte aligned on a GPU (and placed so by the emulator): its float4 load
    is reported at the load's line, whichever thread gets there first."""
    msg, line = _report(sim, "misaligned_shared", seed)
    assert msg.startswith("misaligned address in bug_misaligned_shared_kernel<bug> block (0,0,0) thread ("), msg
    assert re.search(rf": load16 at {FILE}:{line} of 0x[0-9a-f]+ \(needs 16-byte alignment\)$", msg), msg


@pytest.mark.parametrize("seed", [1, 7])
def test_shuffle_from_outside_the_mask(sim, seed):
    msg, line = _report(sim, "shuffle_outside_mask", seed)
    assert msg == ("__shfl_down_sync in bug_shuffle_outside_mask_kernel<bug> block (0,0,0) thread (15,0,0) "
                   f"(warp 0 lane 15) at {FILE}:{line}: source lane 16 is not in mask 0xffff")


@pytest.mark.parametrize("seed", [1, 7])
def test_divergent_barrier(sim, seed):
    msg, line = _report(sim, "divergent_barrier", seed)
    assert msg.startswith("barrier divergence in bug_divergent_barrier_kernel<bug> block (0,0,0): "), msg
    assert f"__syncthreads() at {FILE}:{line}" in msg, msg
    assert "has exited" in msg, msg


# ---- the racecheck build --------------------------------------------------------------------------

@pytest.mark.parametrize("name", RACES)
def test_race_is_reported_with_its_line(racecheck, name):
    msg, line = _report(racecheck, name)
    assert msg.startswith("racecheck:") and f"{FILE}:{line}" in msg and KERNELS[name] in msg, msg


@pytest.mark.parametrize("name", UNINIT)
def test_uninitialised_shared_read_is_reported_with_its_line(racecheck, name):
    msg, line = _report(racecheck, name)
    assert msg.startswith("initcheck:") and f"{FILE}:{line}" in msg and KERNELS[name] in msg, msg


@pytest.mark.parametrize("name", RACES + UNINIT + EMULATOR_ERRORS)
def test_clean_counterparts_are_silent_under_racecheck(racecheck, name):
    x, out = _run(racecheck, name, clean=True)
    assert torch.equal(out, _expected(name, x)), name
