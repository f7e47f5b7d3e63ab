"""The CUDA kernels' size-selected variants, forced (convkit.cuda_settings, CONVKIT_CUDA_VARIANT),
on the emulator: every variant matches torch in float64 on small shapes; each forced setting
really changes what runs (the emulator's launch counters differ); the sync-after-launch switch
reaches the launcher; bad settings raise a clear error; and results are bitwise the same whatever
SM count the emulated device reports (the tile plans aim at a fixed reference device; only grid
sizes follow the device, and no result depends on them).

A GPU runs the same sweep under compute-sanitizer (benchmarks/gpu_sanitize.py --variants).
"""
import os
import subprocess
import sys

import pytest
import torch

import convkit
import convkit.cuda_settings as cs
import convkit.functional as CF
from convkit import _backend

from conftest import BACKENDS, assert_bitwise, assert_close, rand

pytestmark = pytest.mark.skipif("cudasim" not in BACKENDS, reason="needs the cudasim backend")

SIM = "cudasim"

# name -> (x shape, weight shape, stride, padding, dilation, groups): the paths the variants
# switch between, at sizes the emulator runs in milliseconds.
SHAPES = {
    "3x3": ((2, 5, 11, 13), (7, 5, 3, 3), 1, 1, 1, 1),             # direct's fixed 3x3 path
    "3x3_k32": ((1, 4, 16, 16), (32, 4, 3, 3), 1, 1, 1, 1),        # a tile that shrinks (channels)
    "7x7s2": ((1, 3, 17, 15), (5, 3, 7, 7), 2, 3, 1, 1),           # the stem
    "dw3x3": ((2, 6, 9, 10), (6, 1, 3, 3), 1, 1, 1, 6),             # depthwise, fixed 3x3
    "dw5x5s2x2": ((1, 4, 13, 11), (8, 1, 5, 5), 2, 2, 1, 4),       # depthwise x2, 25 taps, stride 2
    "grouped_dil": ((1, 4, 12, 12), (6, 2, 3, 3), 1, 2, 2, 2),     # groups, dilation
    "1x1s2": ((2, 9, 7, 9), (6, 9, 1, 1), 2, 0, 1, 1),             # strided 1x1
    "same2x4": ((1, 3, 10, 9), (5, 3, 2, 4), 1, "same", 1, 1),     # asymmetric 'same'
    "11x11": ((1, 3, 19, 21), (4, 3, 11, 11), 1, 5, 1, 1),         # a wide window
    "long": ((3, 4, 20, 22), (5, 4, 3, 3), 1, 1, 1, 1),            # N*P*Q = 1320: split-K by size
    "c1_3x5": ((2, 1, 12, 13), (16, 1, 3, 5), 1, (1, 2), 1, 1),    # one input channel: one stage
    "13x13_k128": ((1, 12, 4, 4), (128, 12, 13, 13), 1, 6, 1, 1),   # direct: columns one tap a stage
    "k200": ((1, 2, 10, 14), (200, 2, 3, 3), 1, 1, 1, 1),           # implicit GEMM: every tile's grid differs
}

# The algorithms each forced key changes (split-K: every grad weight).
_KEY_ALGOS = {"gemm_tile": ("im2col", "1x1"), "splitk": ("direct", "im2col", "1x1", "implicit_gemm"),
              "direct_tile": ("direct",), "direct_axes": ("direct",), "depthwise": ("direct",),
              "igemm_tile": ("implicit_gemm",), "igemm_pipeline": ("implicit_gemm",),
              "igemm_math": ("implicit_gemm",)}


def _algos(spec, ws, pad):
    algos = ("direct", "im2col", "1x1", "implicit_gemm") if spec == "auto" else _KEY_ALGOS[spec.split("=")[0]]
    pointwise = tuple(ws[2:]) == (1, 1) and pad == 0
    return [a for a in algos if a != "1x1" or pointwise]


def _dtypes(spec):
    # float64 has tiles of its own (64x64 / 32x32): the GEMM tile variants in it too
    wide = spec.startswith(("gemm_tile", "igemm")) or spec == "auto"
    return ["float32", "float16"] + (["float64"] if wide else [])


def _variant_params():
    ps = []
    for spec in ("auto",) + cs.VARIANT_SWEEP:
        for name, (xs, ws, s, p, d, g) in SHAPES.items():
            for algo in _algos(spec, ws, p):
                for dt in _dtypes(spec):
                    ps.append(pytest.param(spec, name, algo, dt, id=f"{spec}-{name}-{algo}-{dt}"))
    return ps


def _run(name, algo, dtype, gen, bias=True):
    """Forward (with bias), grad input and grad weight of SHAPES[name] on the emulator, and the
    float64 references: (outputs, references, reduction lengths)."""
    xs, ws, s, p, d, g = SHAPES[name]
    dt = getattr(torch, dtype)
    x, w, b = rand(xs, dt, gen=gen), rand(ws, dt, gen=gen), rand((ws[0],), dt, gen=gen)
    with convkit.use_backend(SIM):
        y = CF.conv2d(x, w, b if bias else None, s, p, d, g, algo=algo)
        dy = rand(tuple(y.shape), dt, gen=gen)
        dx = CF.conv2d_backward_input(dy, w, xs, s, p, d, g, algo=algo)
        dw = CF.conv2d_backward_weight(dy, x, ws, s, p, d, g, algo=algo)
        db = CF.conv2d_backward_bias(dy)
    return (y, dx, dw, db), (x, w, b, dy)


@pytest.mark.parametrize("spec,name,algo,dtype", _variant_params())
def test_forced_variant_parity(spec, name, algo, dtype):
    """Every forced variant computes the convolution: forward, grad input, grad weight against
    torch in float64 (outputs NaN-poisoned first: CONVKIT_POISON)."""
    import torch.nn.functional as F
    xs, ws, s, p, d, g = SHAPES[name]
    gen = torch.Generator().manual_seed(hash((name, algo, dtype)) & 0xFFFF)
    with cs.variant(spec):
        (y, dx, dw, db), (x, w, b, dy) = _run(name, algo, dtype, gen)
    x64, w64, b64 = (t.double().requires_grad_(True) for t in (x, w, b))
    ref = F.conv2d(x64, w64, b64, s, p, d, g)
    gx, gw, gb = torch.autograd.grad(ref, (x64, w64, b64), dy.double())
    Cg, R, S = ws[1], ws[2], ws[3]
    Kg = ws[0] // g
    npq = xs[0] * ref.shape[2] * ref.shape[3]
    dt = getattr(torch, dtype)
    what = f"{spec} {name} {algo} {dtype}"
    assert_close(y, ref.detach(), dt, L=Cg * R * S, what=f"{what} forward")
    assert_close(dx, gx, dt, L=Kg * R * S, what=f"{what} grad input")
    assert_close(dw, gw, dt, L=npq, what=f"{what} grad weight")
    assert_close(db, gb, dt, L=npq, what=f"{what} grad bias")


# ---- each forced setting changes what runs ---------------------------------------------------

def _signature(fn):
    """What the emulator ran for fn(): launches, blocks, threads a block, barriers, warp ops."""
    mod = _backend.module(SIM)
    before = mod.sim_counters()
    fn()
    after = mod.sim_counters()
    c = {k: after[k] - before[k] for k in after}
    return (c["launches"], c["blocks"], c["threads"] / max(c["blocks"], 1), c["barriers"], c["warp_ops"])


def _op(name, algo, which, dtype="float32"):
    xs, ws, s, p, d, g = SHAPES[name]
    gen = torch.Generator().manual_seed(3)
    dt = getattr(torch, dtype)
    x, w = rand(xs, dt, gen=gen), rand(ws, dt, gen=gen)
    with convkit.use_backend(SIM):
        y = CF.conv2d(x, w, None, s, p, d, g, algo=algo)
    dy = rand(tuple(y.shape), dt, gen=gen)

    def run():
        with convkit.use_backend(SIM):
            if which == "fwd":
                CF.conv2d(x, w, None, s, p, d, g, algo=algo)
            elif which == "bwd_input":
                CF.conv2d_backward_input(dy, w, xs, s, p, d, g, algo=algo)
            else:
                CF.conv2d_backward_weight(dy, x, ws, s, p, d, g, algo=algo)
    return run


# (key, shape, algo, pass, the forced values, the one auto picks at this size; None: auto differs
# from every forced value, "": not checked)
SWITCHES = [
    ("gemm_tile", "3x3", "im2col", "fwd", ("big", "small"), "small"),
    ("gemm_tile", "long", "im2col", "bwd_input", ("big", "small"), "small"),
    ("splitk", "long", "im2col", "bwd_weight", ("on", "off"), "on"),
    ("splitk", "3x3_k32", "direct", "bwd_weight", ("on", "off"), "off"),
    ("splitk", "dw3x3", "direct", "bwd_weight", ("on", "off"), "on"),
    ("direct_tile", "3x3_k32", "direct", "fwd", ("full", "small"), "small"),
    ("direct_tile", "dw5x5s2x2", "direct", "fwd", ("full", "small"), "full"),
    ("direct_axes", "c1_3x5", "direct", "fwd", ("cols", "rows", "compact"), None),  # 5, 3, 15 chunks
    ("direct_axes", "7x7s2", "direct", "bwd_input", ("compact",), None),
    ("depthwise", "dw3x3", "direct", "fwd", ("off",), None),
    ("depthwise", "dw5x5s2x2", "direct", "bwd_weight", ("off",), None),
    ("igemm_tile", "k200", "implicit_gemm", "fwd", ("big", "small", "narrow", "short"), ""),
    ("igemm_tile", "7x7s2", "implicit_gemm", "bwd_input", ("big", "short"), ""),
    ("igemm_pipeline", "long", "implicit_gemm", "fwd", ("registers",), None),
    ("splitk", "13x13_k128", "implicit_gemm", "fwd", ("on", "off"), ""),
    ("splitk", "7x7s2", "implicit_gemm", "bwd_input", ("on", "off"), ""),
    ("splitk", "long", "implicit_gemm", "bwd_weight", ("on", "off"), ""),
    ("splitk", "1x1s2", "1x1", "fwd", ("on", "off"), ""),
    ("splitk", "13x13_k128", "im2col", "fwd", ("on", "off"), ""),
    ("splitk", "13x13_k128", "im2col", "bwd_input", ("on", "off"), ""),
]


@pytest.mark.parametrize("key,name,algo,which,values,auto_is", SWITCHES,
                         ids=[f"{s[0]}-{s[1]}-{s[2]}-{s[3]}" for s in SWITCHES])
def test_forced_variant_changes_the_launch(key, name, algo, which, values, auto_is):
    """A forced value runs something else than the other values and auto (None: auto differs
    from every forced value), and auto is the size-selected one named."""
    run = _op(name, algo, which)
    with cs.variant("auto"):
        auto = _signature(run)
    sigs = {}
    for v in values:
        with cs.variant(f"{key}={v}"):
            sigs[v] = _signature(run)
    assert len(set(sigs.values())) == len(values), f"{key}: forced values ran the same launches: {sigs}"
    if auto_is == "":
        return
    if auto_is is None:
        assert auto not in sigs.values(), f"{key}: auto ran like a forced value: auto {auto}, {sigs}"
    else:
        assert sigs[auto_is] == auto, f"{key}: auto should pick {auto_is} here: auto {auto}, {sigs}"


def test_splitk_workspace_follows_the_forced_variant():
    """The workspace query and the launch agree under a forced split-K (the query sizes the
    partials): off needs none for the direct grad weight, on needs 3 splits' partials."""
    mod = _backend.module(SIM)
    xs, ws, s, p, d, g = SHAPES["3x3_k32"]
    params = mod.ConvParams(xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3], s, s, p, p, p, p, d, d, g)
    sizes = {}
    for v in ("off", "on"):
        with cs.variant(f"splitk={v}"):
            sizes[v] = mod.conv2d_workspace_bytes("direct", "bwd_weight", "float32", params, 1 << 30)
    assert sizes["off"] == 0
    assert sizes["on"] == 3 * ws[0] * ws[1] * ws[2] * ws[3] * 4


@pytest.mark.parametrize("algo,shape,pass_,outputs", [
    ("1x1", ((1, 832, 7, 7), (384, 832, 1, 1), 0), "fwd", 384 * 49),
    ("1x1", ((1, 832, 7, 7), (384, 832, 1, 1), 0), "bwd_input", 832 * 49),
    ("im2col", ((1, 160, 7, 7), (320, 160, 3, 3), 1), "fwd", 320 * 49),
    ("implicit_gemm", ((1, 160, 7, 7), (320, 160, 3, 3), 1), "fwd", 320 * 49),
    ("implicit_gemm", ((1, 160, 7, 7), (320, 160, 3, 3), 1), "bwd_input", 160 * 49),
])
def test_output_split_k_where_tiles_would_idle(algo, shape, pass_, outputs):
    """A batch-1 7x7 layer (inception 5b) gives the GEMM a few tiles on 132 SMs: the plan splits
    the reduction (its partials are the workspace: splits x the outputs in float) by itself; a
    forced off takes them away. Read from the workspace query, which follows the plan."""
    mod = _backend.module(SIM)
    xs, ws, pad = shape
    params = mod.ConvParams(xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3], 1, 1, pad, pad, pad, pad, 1, 1, 1)
    cols = 0 if algo != "im2col" else xs[1] * ws[2] * ws[3] * 49 * 4
    with cs.variant("auto"):
        auto = mod.conv2d_workspace_bytes(algo, pass_, "float32", params, 1 << 30)
    splits, rem = divmod(auto - cols - (256 if algo == "im2col" else 0), outputs * 4)
    assert splits > 1 and rem < 256, (auto, splits, rem)  # (implicit GEMM rounds its slabs up to 256 bytes)
    with cs.variant("splitk=off"):
        assert mod.conv2d_workspace_bytes(algo, pass_, "float32", params, 1 << 30) == cols


def test_variant_sweep_covers_every_value():
    swept = {tuple(s.split("=")) for s in cs.VARIANT_SWEEP}
    for key, values in cs.VARIANT_CHOICES.items():
        for v in values[1:]:
            assert (key, v) in swept
    assert _backend.module(SIM).get_variant() == {k: 0 for k in cs.VARIANT_CHOICES}


def test_variant_context_restores_and_reaches_the_module():
    mod = _backend.module(SIM)
    with cs.variant("gemm_tile=big,direct_axes=compact,splitk=on"):
        got = mod.get_variant()
        assert got["gemm_tile"] == 1 and got["direct_axes"] == 3 and got["splitk"] == 2
        assert cs.get_variant() == "gemm_tile=big,splitk=on,direct_axes=compact"
    assert mod.get_variant() == {k: 0 for k in cs.VARIANT_CHOICES}
    assert cs.get_variant() == "auto"


@pytest.mark.parametrize("bad,words", [
    ("gemm_tile=huge", ["gemm_tile", "auto|big|small"]),
    ("tile=big", ["unknown key", "gemm_tile=auto|big|small"]),
    ("gemm_tile", ["key=value"]),
    ("splitk=on,splitk=off", ["twice"]),
])
def test_bad_variant_raises_and_changes_nothing(bad, words):
    with cs.variant("splitk=off"):
        with pytest.raises(ValueError) as info:
            cs.set_variant(bad)
        assert isinstance(info.value, RuntimeError)
        for w in words:
            assert w in str(info.value)
        assert cs.get_variant() == "splitk=off"
        assert _backend.module(SIM).get_variant()["splitk"] == 1
    with pytest.raises(ValueError, match="0 or 1"):
        cs.set_sync("sometimes")
    with pytest.raises(RuntimeError, match="direct_axes"):
        _backend.module(SIM).set_variant(direct_axes=9)   # the C++ check behind the Python one


def _python(code, **env):
    e = dict(os.environ)
    e.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_environment_settings_are_read_and_checked():
    ok = _python("import convkit, convkit.cuda_settings as cs\n"
                 "from convkit import _backend\n"
                 "m = _backend.module('cudasim')\n"
                 "print(cs.get_variant(), m.get_variant()['gemm_tile'], m.get_variant()['depthwise'], m.launch_sync())",
                 CONVKIT_CUDA_VARIANT=" gemm_tile=big , depthwise=off", CONVKIT_CUDA_SYNC="1")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == ["gemm_tile=big,depthwise=off", "1", "1", "True"]
    for var, value, words in [("CONVKIT_CUDA_VARIANT", "gemm_tile=giant", ["CONVKIT_CUDA_VARIANT", "auto|big|small"]),
                              ("CONVKIT_CUDA_VARIANT", "fast", ["CONVKIT_CUDA_VARIANT", "key=value"]),
                              ("CONVKIT_CUDA_SYNC", "2", ["CONVKIT_CUDA_SYNC", "0 or 1"])]:
        bad = _python("import convkit; convkit.available_backends()", **{var: value})
        assert bad.returncode == 1, (var, value, bad.returncode, bad.stderr)   # an exception, not a crash
        assert "ConvkitValueError" in bad.stderr
        for w in words:
            assert w in bad.stderr, (w, bad.stderr[-500:])


def test_sync_after_launch_reaches_every_launch():
    """With the switch on, each launch is followed by a (counted) sync; off, none is."""
    mod = _backend.module(SIM)
    run = _op("long", "im2col", "bwd_weight")
    for on in (False, True):
        with cs.sync(on):
            assert mod.launch_sync() is on
            before_sync, before = mod.launch_sync_count(), mod.sim_counters()["launches"]
            run()
            with convkit.use_backend(SIM):
                CF.relu(rand((1000,), torch.float32))
            syncs = mod.launch_sync_count() - before_sync
            launches = mod.sim_counters()["launches"] - before
        assert launches >= 4
        assert syncs == (launches if on else 0), (on, syncs, launches)
    assert mod.launch_sync() is False


# ---- the same bits on every device -------------------------------------------------------------

SM_COUNTS = [1, 7, 1000]


def _all_ops(name, algo, dtype):
    gen = torch.Generator().manual_seed(5)
    outs, _ = _run(name, algo, dtype, gen)
    return outs


def _bitwise_params():
    ps = []
    for n, (xs, ws, s, p, d, g) in SHAPES.items():
        for a in ("direct", "im2col", "1x1", "implicit_gemm"):
            if a == "1x1" and not (tuple(ws[2:]) == (1, 1) and p == 0):
                continue
            # direct with one-tap stages everywhere: there the stage's channel count (which
            # the tile sets) decides the summation order
            for spec in ("auto", "direct_axes=compact") if a == "direct" else ("auto",):
                for dt in ("float32", "float16", "float64"):
                    ps.append(pytest.param(n, a, spec, dt, id=f"{n}-{a}-{spec}-{dt}"))
    return ps


@pytest.mark.parametrize("name,algo,spec,dtype", _bitwise_params())
def test_conv_bitwise_on_every_sm_count(name, algo, spec, dtype):
    """Forward, grad input, grad weight and grad bias: bitwise the same with 1, 7, 132 (the
    default) and 1000 SMs on the emulated device."""
    mod = _backend.module(SIM)
    assert mod.sim_sm_count() == 132
    with cs.variant(spec):
        ref = _all_ops(name, algo, dtype)
        try:
            for sms in SM_COUNTS:
                mod.sim_set_sm_count(sms)
                got = _all_ops(name, algo, dtype)
                for what, a, e in zip(("forward", "grad input", "grad weight", "grad bias"), got, ref):
                    assert_bitwise(a, e, what=f"{name} {algo} {spec} {dtype} {what} with {sms} SMs")
        finally:
            mod.sim_set_sm_count(132)


def test_direct_plan_ignores_the_sm_count():
    """The direct tile (threads a block) is the reference device's whatever the emulated device
    reports: a 1-SM device would otherwise keep the unshrunk tile of a 1-tile problem."""
    mod = _backend.module(SIM)
    run = _op("3x3_k32", "direct", "fwd")
    ref = _signature(run)
    try:
        for sms in SM_COUNTS:
            mod.sim_set_sm_count(sms)
            assert _signature(run)[2] == ref[2], f"threads a block changed with {sms} SMs"
    finally:
        mod.sim_set_sm_count(132)
    with pytest.raises(RuntimeError, match="SMs"):
        mod.sim_set_sm_count(0)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_pool_relu_bitwise_on_every_sm_count(dtype):
    mod = _backend.module(SIM)
    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(9)
    x = rand((2, 3, 13, 11), dt, gen=gen)
    r = rand((4099,), dt, gen=gen)

    def ops():
        with convkit.use_backend(SIM):
            y, idx = CF.max_pool2d(x, 3, 2, 1, 1, True, return_indices=True)
            a = CF.avg_pool2d(x, 3, 2, 1, True, False)
            dxm = CF.max_pool2d_backward(y, tuple(x.shape), idx, 3, 2, 1, 1, True)
            dxa = CF.avg_pool2d_backward(a, tuple(x.shape), 3, 2, 1, True, False)
            return [y, idx, a, dxm, dxa, CF.relu(r), CF.relu_backward(r, CF.relu(r))]

    ref = ops()
    try:
        for sms in SM_COUNTS:
            mod.sim_set_sm_count(sms)
            for i, (a, e) in enumerate(zip(ops(), ref)):
                assert_bitwise(a, e, what=f"pool/relu output {i} with {sms} SMs")
    finally:
        mod.sim_set_sm_count(132)
