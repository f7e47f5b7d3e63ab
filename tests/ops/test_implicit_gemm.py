"""algo="implicit_gemm" on the CUDA backends (csrc/cuda/conv_implicit_gemm.cu{,h}): exact
small-integer cases of every pass over the strides, dilations and groups whose index arithmetic
differs (grad input's stride phases: taps that skip, phases with no tap at all, more phases than
rows), medium multi-tile cases under every forced tile, pipeline and split-K, the workspace
(none without split-K), chunking under a small workspace cap, and determinism. The parity sweeps
(test_conv2d, test_conv_half, test_reference, test_cuda_variants) cover it too, since the
modules list it. Outputs are NaN-poisoned before each kernel runs (CONVKIT_POISON)."""
import pytest
import torch
import torch.nn.functional as F

import convkit
import convkit.cuda_settings as cs
import convkit.functional as CF
from convkit import _backend

from conftest import BACKENDS, assert_bitwise, assert_close, rand, small_ints

CUDA_BACKENDS = [b for b in BACKENDS if b in ("cuda", "cudasim")]
pytestmark = pytest.mark.skipif(not CUDA_BACKENDS, reason="needs a CUDA backend (cuda or cudasim)")
ALGO = "implicit_gemm"


def _dev(backend):
    return "cuda" if backend == "cuda" else "cpu"


def _passes(backend, x, w, b, dy, s, p, d, g):
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, b, s, p, d, g, algo=ALGO)
        dx = CF.conv2d_backward_input(dy, w, tuple(x.shape), s, p, d, g, algo=ALGO)
        dw = CF.conv2d_backward_weight(dy, x, tuple(w.shape), s, p, d, g, algo=ALGO)
    return y, dx, dw


def _reference(x, w, b, dy, s, p, d, g):
    x64, w64 = x.double().cpu().requires_grad_(True), w.double().cpu().requires_grad_(True)
    y = F.conv2d(x64, w64, None if b is None else b.double().cpu(), s, p, d, g)
    gx, gw = torch.autograd.grad(y, (x64, w64), dy.double().cpu())
    return y.detach(), gx, gw


# (x shape, w shape, stride, padding, dilation, groups): each a different index path
EXACT = {
    "3x3": ((2, 5, 9, 11), (7, 5, 3, 3), 1, 1, 1, 1),
    "s2": ((1, 3, 13, 12), (4, 3, 3, 3), 2, 1, 1, 1),               # two phases an axis, taps 2 + 1
    "s3_2x2": ((2, 2, 10, 11), (3, 2, 2, 2), 3, 0, 1, 1),            # stride > kernel: phases with no tap
    "s2_d2": ((1, 2, 11, 9), (3, 2, 3, 3), 2, 2, 2, 1),              # dilation a multiple of the stride
    "s3_d2": ((1, 3, 14, 13), (2, 3, 3, 3), 3, 2, 2, 1),             # tap step 3 / gcd(3, 2)
    "s2x3_asym": ((1, 4, 12, 13), (5, 4, 3, 5), (2, 3), (1, 2), (1, 2), 1),
    "s5_tiny": ((2, 3, 3, 4), (2, 3, 2, 2), 5, 1, 1, 1),             # stride > H, W: fewer phases
    "groups3": ((2, 6, 8, 7), (9, 2, 3, 3), (1, 2), 1, 1, 3),
    "same2x4": ((1, 3, 10, 9), (5, 3, 2, 4), 1, "same", 1, 1),       # asymmetric padding
    "1x1s2": ((2, 8, 9, 7), (6, 8, 1, 1), 2, 0, 1, 1),
    "7x7s2": ((1, 3, 19, 17), (4, 3, 7, 7), 2, 3, 1, 1),
    "pad_gt_kernel": ((1, 2, 5, 6), (3, 2, 3, 3), 1, 4, 1, 1),       # rows of output that see only padding
}


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("name", list(EXACT))
@pytest.mark.parametrize("spec", ["auto", "splitk=on", "igemm_pipeline=registers,igemm_tile=small"])
def test_exact_small_integers(backend, name, spec):
    """Integers in [-3, 3]: every product and partial sum is an exact float32 integer, so any
    missing, extra or misplaced tap shows as an exact mismatch, whatever the summation order."""
    xs, ws, s, p, d, g = EXACT[name]
    gen = torch.Generator().manual_seed(len(name))
    dev = _dev(backend)
    x, w = small_ints(xs, gen=gen, lo=-3, hi=3, device=dev), small_ints(ws, gen=gen, lo=-3, hi=3, device=dev)
    b = small_ints((ws[0],), gen=gen, lo=-3, hi=3, device=dev)
    y_shape = F.conv2d(x.cpu(), w.cpu(), None, s, p, d, g).shape
    dy = small_ints(tuple(y_shape), gen=gen, lo=-3, hi=3, device=dev)
    with cs.variant(spec):
        y, dx, dw = _passes(backend, x, w, b, dy, s, p, d, g)
    ry, rx, rw = _reference(x, w, b, dy, s, p, d, g)
    for what, a, e in (("forward", y, ry), ("grad input", dx, rx), ("grad weight", dw, rw)):
        assert_bitwise(a.cpu(), e.float(), what=f"{name} {spec} {what}")


# multi-tile in M, N and K (160 output channels, 24 x 3 x 3 = 216 reduction, 2 x 20 x 20 pixels)
MEDIUM = ((2, 24, 20, 20), (160, 24, 3, 3), 1, 1, 1, 1)
MEDIUM_STRIDED = ((1, 40, 17, 15), (24, 20, 3, 3), 2, 1, 1, 2)
SPECS = ["auto", "igemm_tile=big", "igemm_tile=small", "igemm_tile=narrow", "igemm_tile=short",
         "splitk=on", "splitk=off", "igemm_pipeline=registers", "igemm_tile=short,splitk=on"]


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("shape", ["medium", "medium_strided"])
@pytest.mark.parametrize("spec", SPECS)
def test_medium_every_variant_float64(backend, shape, spec):
    xs, ws, s, p, d, g = MEDIUM if shape == "medium" else MEDIUM_STRIDED
    gen = torch.Generator().manual_seed(7)
    dev = _dev(backend)
    x, w, b = rand(xs, gen=gen, device=dev), rand(ws, gen=gen, device=dev), rand((ws[0],), gen=gen, device=dev)
    dy = rand(tuple(F.conv2d(x.cpu(), w.cpu(), None, s, p, d, g).shape), gen=gen, device=dev)
    with cs.variant(spec):
        y, dx, dw = _passes(backend, x, w, b, dy, s, p, d, g)
    ry, rx, rw = _reference(x, w, b, dy, s, p, d, g)
    L = ws[1] * ws[2] * ws[3]
    assert_close(y.cpu(), ry, torch.float64, L=L, what=f"{spec} forward")
    assert_close(dx.cpu(), rx, torch.float64, L=ws[0] // g * 9, what=f"{spec} grad input")
    assert_close(dw.cpu(), rw, torch.float64, L=xs[0] * y.shape[2] * y.shape[3], what=f"{spec} grad weight")


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_medium_lower_precision(backend, dtype):
    """float32 through the cp.async pipeline; the half types register-staged, in float."""
    mod = _backend.module(backend)
    if dtype != "float32" and not mod.has_half:
        pytest.skip("this build has no half types")
    xs, ws, s, p, d, g = MEDIUM
    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(8)
    dev = _dev(backend)
    x, w, b = rand(xs, dt, gen=gen, device=dev), rand(ws, dt, gen=gen, device=dev), rand((ws[0],), dt, gen=gen, device=dev)
    dy = rand((2, 160, 20, 20), dt, gen=gen, device=dev)
    y, dx, dw = _passes(backend, x, w, b, dy, s, p, d, g)
    ry, rx, rw = _reference(x, w, b, dy, s, p, d, g)
    assert_close(y.cpu(), ry, dt, L=216, what="forward")
    assert_close(dx.cpu(), rx, dt, L=160 * 9, what="grad input")
    assert_close(dw.cpu(), rw, dt, L=800, what="grad weight")


def _params(mod, xs, ws, s, p, d, g):
    return mod.ConvParams(xs[0], xs[1], xs[2], xs[3], ws[0], ws[2], ws[3], s, s, p, p, p, p, d, d, g)


def test_workspace_is_split_k_partials_only():
    """Forward without a split needs no workspace at all (no column buffer); a forced split
    needs its partial sums: splits x the outputs of the images a launch covers, in float."""
    mod = _backend.module("cudasim")
    xs, ws = (2, 24, 20, 20), (160, 24, 3, 3)
    prm = _params(mod, xs, ws, 1, 1, 1, 1)
    with cs.variant("splitk=off"):
        for pass_ in ("fwd", "bwd_input", "bwd_weight"):
            assert mod.conv2d_workspace_bytes(ALGO, pass_, "float32", prm, 1 << 30) == 0, pass_
    with cs.variant("splitk=on"):
        got = mod.conv2d_workspace_bytes(ALGO, "fwd", "float32", prm, 1 << 30)
        splits, rem = divmod(got, 2 * 160 * 20 * 20 * 4)
        assert rem == 0 and splits >= 3, got
        # a cap of one image's partials: the launch takes one image at a time
        one = mod.conv2d_workspace_bytes(ALGO, "fwd", "float32", prm, got // 2)
        assert one == got // 2
    im2col = mod.conv2d_workspace_bytes("im2col", "fwd", "float32", prm, 1 << 30)
    assert im2col >= 2 * 24 * 9 * 400 * 4  # what implicit GEMM does without


def test_split_chunks_under_a_small_cap_are_bitwise_the_same():
    """Split-K under a workspace cap that holds one image's partials: the batch goes one image a
    launch, with the same plan, so the results are bitwise those of one launch."""
    xs, ws, s, p, d, g = MEDIUM
    gen = torch.Generator().manual_seed(9)
    x, w, b = rand(xs, torch.float32, gen=gen), rand(ws, torch.float32, gen=gen), rand((160,), torch.float32, gen=gen)
    dy = rand((2, 160, 20, 20), torch.float32, gen=gen)
    cap = convkit.workspace_cap()
    with cs.variant("splitk=on"):
        whole = _passes("cudasim", x, w, b, dy, s, p, d, g)
        mod = _backend.module("cudasim")
        prm = _params(mod, xs, ws, s, p, d, g)
        full = {k: mod.conv2d_workspace_bytes(ALGO, k, "float32", prm, 1 << 30) for k in ("fwd", "bwd_input")}
        one = max(v // xs[0] for v in full.values())  # one image's partials (the larger pass's)
        try:
            convkit.set_workspace_cap(one)
            assert mod.conv2d_workspace_bytes(ALGO, "fwd", "float32", prm, one) == full["fwd"] // xs[0]
            chunked = _passes("cudasim", x, w, b, dy, s, p, d, g)
        finally:
            convkit.set_workspace_cap(cap)
    # (grad weight's partials are the whole weight's: the cap changes its split, not its chunks)
    for what, a, e in zip(("forward", "grad input"), chunked, whole):
        assert_bitwise(a, e, what=what)


@pytest.mark.parametrize("spec", ["auto", "splitk=on"])
def test_deterministic(spec):
    xs, ws, s, p, d, g = MEDIUM_STRIDED
    gen = torch.Generator().manual_seed(10)
    x, w = rand(xs, torch.float32, gen=gen), rand(ws, torch.float32, gen=gen)
    dy = rand(tuple(F.conv2d(x, w, None, s, p, d, g).shape), torch.float32, gen=gen)
    with cs.variant(spec):
        first = _passes("cudasim", x, w, None, dy, s, p, d, g)
        again = _passes("cudasim", x, w, None, dy, s, p, d, g)
    for a, e in zip(again, first):
        assert_bitwise(a, e)


def test_auto_picks_implicit_gemm_where_the_heuristic_says():
    from convkit._algos import heuristic_cuda
    from convkit._params import check_conv as _check
    cases = {((8, 64, 28, 28), (96, 64, 3, 3), 1): "implicit_gemm",
             ((8, 64, 28, 28), (96, 64, 1, 1), 1): "1x1",
             ((8, 64, 28, 28), (64, 1, 3, 3), 64): "direct",
             ((8, 64, 28, 28), (64, 1, 1, 1), 64): "1x1"}  # pointwise before depthwise
    for (xs, ws, g), want in cases.items():
        args = _check("t", xs, ws, torch.float32, torch.float32, groups=g, padding=1 if ws[2] == 3 else 0)
        mod = _backend.module("cudasim")
        prm = mod.ConvParams(*xs, ws[0], ws[2], ws[3], 1, 1, *(4 * [1 if ws[2] == 3 else 0]), 1, 1, g)
        assert heuristic_cuda(prm, args) == want, (xs, ws, g)
        # in the half types the tensor cores take every layer but depthwise
        half_want = "implicit_gemm" if ws[1] > 1 else want
        for dt in ("float16", "bfloat16"):
            assert heuristic_cuda(prm, args, dt) == half_want, (xs, ws, g, dt)
        assert heuristic_cuda(prm, args, "float32") == want


@pytest.mark.parametrize("algo", ["im2col", "1x1"])
def test_gemm_output_split_chunks_are_bitwise_the_same(algo):
    """The tiled GEMM's split-K of forward and grad input (gemm.h's mapped split) under a cap of
    one image's columns and partials: one image a GEMM, the same splits, bitwise the results of
    one GEMM over the batch."""
    if algo == "1x1":
        xs, ws, s, p, d, g = (3, 64, 6, 5), (40, 64, 1, 1), 1, 0, 1, 1
    else:
        xs, ws, s, p, d, g = (3, 24, 7, 6), (40, 24, 3, 3), 1, 1, 1, 1
    gen = torch.Generator().manual_seed(11)
    x, w, b = rand(xs, torch.float32, gen=gen), rand(ws, torch.float32, gen=gen), rand((40,), torch.float32, gen=gen)
    dy = rand(tuple(F.conv2d(x, w, None, s, p, d, g).shape), torch.float32, gen=gen)
    mod = _backend.module("cudasim")
    prm = _params(mod, xs, ws, s, p, d, g)
    cap = convkit.workspace_cap()

    def run():
        with convkit.use_backend("cudasim"):
            y = CF.conv2d(x, w, b, s, p, d, g, algo=algo)
            dx = CF.conv2d_backward_input(dy, w, xs, s, p, d, g, algo=algo)
        return y, dx

    with cs.variant("splitk=on"):
        whole = run()
        full = {k: mod.conv2d_workspace_bytes(algo, k, "float32", prm, 1 << 30) for k in ("fwd", "bwd_input")}
        pad = 256 if algo == "im2col" else 0
        one = max((v - pad) // xs[0] + pad for v in full.values())
        for k, v in full.items():
            assert v > (0 if algo == "1x1" else mod.conv2d_workspace_bytes(algo, k, "float32", prm, 1)), k
        try:
            convkit.set_workspace_cap(one)
            chunked = run()
        finally:
            convkit.set_workspace_cap(cap)
    ref = F.conv2d(x.double(), w.double(), b.double(), s, p, d, g)
    assert_close(whole[0], ref, torch.float32, L=ws[1] * ws[2] * ws[3])
    for what, a, e in zip(("forward", "grad input"), chunked, whole):
        assert_bitwise(a, e, what=what)


def test_plan_query_follows_the_launch():
    """implicit_gemm_plan reports what the launch runs: the forced tile and split, the workspace
    the size query gives, and a split of its own for inception 5b's 3x3 at batch 1."""
    mod = _backend.module("cudasim")
    prm = mod.ConvParams(1, 160, 7, 7, 320, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    cap = 1 << 30
    auto = mod.implicit_gemm_plan("fwd", "float32", prm, cap)
    assert auto["splits"] > 1 and auto["pipeline"] == "cp.async"
    assert auto["workspace_bytes"] == mod.conv2d_workspace_bytes(ALGO, "fwd", "float32", prm, cap)
    assert auto["blocks"] == -(-320 // auto["BM"]) * -(-49 // auto["BN"]) * auto["splits"]
    for tile, (bm, bn) in {"big": (128, 128), "small": (64, 64), "narrow": (32, 128), "short": (128, 32)}.items():
        with cs.variant(f"igemm_tile={tile},splitk=off,igemm_pipeline=registers"):
            plan = mod.implicit_gemm_plan("bwd_weight", "float32", prm, cap)
        assert (plan["tile"], plan["BM"], plan["BN"], plan["splits"], plan["pipeline"]) == (tile, bm, bn, 1, "registers")
        assert plan["workspace_bytes"] == 0
    half = mod.implicit_gemm_plan("fwd", "float16", prm, cap) if mod.has_half else {"pipeline": "registers"}
    assert half["pipeline"] == "registers"  # cp.async moves 4 bytes or more
    assert mod.implicit_gemm_plan("fwd", "float64", prm, cap)["BM"] <= 64


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_types_run_on_tensor_cores(dtype):
    """float16 and bfloat16 run implicit GEMM's WMMA kernel (128 threads a block, warp meetings
    for mma_sync) unless igemm_math=simt forces the SIMT kernel (256 threads, no warp meetings);
    both match float64 within the half types' bound, and the plan query says which."""
    mod = _backend.module("cudasim")
    if not mod.has_half:
        pytest.skip("this build has no half types")
    xs, ws, s, p, d, g = MEDIUM_STRIDED
    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(12)
    x, w = rand(xs, dt, gen=gen), rand(ws, dt, gen=gen)
    dy = rand(tuple(F.conv2d(x.double(), w.double(), None, s, p, d, g).shape), dt, gen=gen)
    prm = _params(mod, xs, ws, s, p, d, g)
    runs = {}
    for spec in ("auto", "igemm_math=simt"):
        with cs.variant(spec):
            plan = mod.implicit_gemm_plan("fwd", dtype, prm, 1 << 30)
            before = mod.sim_counters()
            outs = _passes("cudasim", x, w, None, dy, s, p, d, g)
            after = mod.sim_counters()
        runs[spec] = (plan, {k: after[k] - before[k] for k in after}, outs)
    assert runs["auto"][0]["tile"] == "tensor_cores" and runs["auto"][0]["threads"] == 128
    assert runs["igemm_math=simt"][0]["tile"] != "tensor_cores"
    assert runs["auto"][1]["warp_ops"] > 0 and runs["igemm_math=simt"][1]["warp_ops"] == 0
    ry, rx, rw = _reference(x, w, None, dy, s, p, d, g)
    for spec, (_, _, (y, dx, dw)) in runs.items():
        assert_close(y, ry, dt, L=ws[1] * 9, what=f"{spec} forward")
        assert_close(dx, rx, dt, L=ws[0] // g * 9, what=f"{spec} grad input")
        assert_close(dw, rw, dt, L=y.shape[2] * y.shape[3], what=f"{spec} grad weight")
