"""conv2d parity with torch.nn.functional.conv2d: forward, grad input, grad weight, grad bias,
through autograd and through the public backward functions, on every backend and algorithm.

The sweep is a deterministic random sample of (shape, kernel, stride, padding, dilation, groups,
batch, bias) combinations: what breaks kernels (odd sizes, kernel 1..11, rectangular kernels,
asymmetric 'same', depthwise, channel multipliers, channels not a multiple of 4) at tiny sizes.
"""
import os
import random
import zlib

import pytest
import torch
import torch.nn.functional as F

import convkit
import convkit.functional as CF
from convkit._algos import check_conv

from conftest import (BACKENDS, DTYPES, dtypes_of, assert_bitwise, assert_close, conv_out_hw, device_of, one_image_workspace,
                      dtype_id, is_channels_last, pair, rand, ref_conv2d, small_ints)


# (C, K, groups): plain, channels not a multiple of 4, grouped, depthwise, depthwise x2.
GROUPINGS = [(1, 1, 1), (3, 5, 1), (5, 2, 1), (2, 3, 1), (4, 6, 2), (6, 3, 3), (6, 9, 3),
             (5, 5, 5), (3, 3, 3), (3, 6, 3), (2, 4, 2)]
SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13]
KERNELS = [(1, 1), (3, 3), (5, 5), (7, 7), (11, 11), (1, 3), (3, 1), (2, 2), (4, 4), (2, 3), (3, 5)]
STRIDES = [1, 1, 2, 3, (1, 2), (2, 1)]
PADDINGS = [0, 1, 2, (1, 2), (0, 1), 3, "same", "valid"]
DILATIONS = [1, 1, 2, 3, (1, 2)]


def _valid(H, W, kernel, stride, padding, dilation):
    if padding == "same" and pair(stride) != (1, 1):
        return False
    out = conv_out_hw(H, W, kernel[0], kernel[1], stride, padding, dilation)
    return out is not None and out[0] > 0 and out[1] > 0


def _case(N, C, K, g, H, W, kernel, stride, padding, dilation, bias):
    return dict(N=N, C=C, K=K, groups=g, H=H, W=W, kernel=kernel, stride=stride, padding=padding,
                dilation=dilation, bias=bias)


def _case_id(c):
    def f(v):
        return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)
    return (f"N{c['N']}C{c['C']}K{c['K']}g{c['groups']}_{c['H']}x{c['W']}_k{f(c['kernel'])}"
            f"_s{f(c['stride'])}_p{f(c['padding'])}_d{f(c['dilation'])}{'_b' if c['bias'] else ''}")


def _algo_applies(algo, c):
    """Whether algo computes case c: the argument check's rule (tests/integration/test_backends.py checks it
    against the modules' registry rule, conv_algo_refusal)."""
    if algo == "auto":
        return True
    x = (max(c["N"], 1), c["C"], c["H"], c["W"])
    w = (c["K"], c["C"] // c["groups"]) + tuple(c["kernel"])
    try:
        check_conv("t", x, w, "float64", "float64", stride=c["stride"], padding=c["padding"],
                   dilation=c["dilation"], groups=c["groups"], algo=algo)
    except ValueError:
        return False
    return True


def _algos(backend):
    """The sweep's algorithms: every one the backend's module builds (the registry,
    csrc/common/conv_algo.h), and auto. A new algorithm is swept with no edit here."""
    return list(convkit._backend.module(backend).conv_algos()) + ["auto"]


# Cases that must be there whatever the random draw gives.
MUST = [
    _case(1, 3, 2, 1, 3, 3, (3, 3), 1, 1, 1, True),
    _case(5, 3, 5, 1, 13, 13, (11, 11), 1, "same", 1, True),
    _case(1, 2, 3, 1, 7, 9, (2, 2), 1, "same", 1, False),          # torch's asymmetric same
    _case(2, 3, 2, 1, 8, 7, (4, 4), 1, "same", 1, True),
    _case(1, 2, 2, 1, 7, 6, (2, 3), 1, "same", 2, True),
    _case(2, 5, 5, 5, 7, 7, (3, 3), 1, 1, 1, True),                 # depthwise
    _case(5, 3, 6, 3, 9, 7, (3, 3), 2, 1, 1, True),                 # depthwise x2
    _case(1, 3, 4, 1, 13, 11, (3, 3), (1, 2), (1, 2), 1, False),    # stride (1, 2)
    _case(2, 4, 4, 2, 13, 13, (3, 3), 1, 3, 3, True),               # dilation 3
    _case(1, 2, 3, 1, 7, 7, (1, 3), 1, (0, 1), 1, True),
    _case(1, 2, 3, 1, 7, 7, (3, 1), 2, (1, 0), 1, True),
    _case(1, 3, 3, 1, 1, 1, (1, 1), 1, 0, 1, True),                 # 1x1 image
    _case(5, 7, 3, 1, 5, 5, (5, 5), 3, "valid", 1, True),
    _case(1, 6, 9, 3, 11, 13, (7, 7), 1, 3, 1, True),
]

ONE_BY_ONE = [
    _case(1, 3, 5, 1, 7, 7, (1, 1), 1, 0, 1, True),
    _case(5, 5, 2, 1, 13, 11, (1, 1), 2, 0, 1, True),
    _case(2, 6, 4, 2, 7, 9, (1, 1), 3, "valid", 1, False),
    _case(1, 9, 7, 1, 5, 13, (1, 1), (1, 2), 0, 1, True),
    _case(2, 4, 4, 4, 6, 5, (1, 1), 1, 0, 1, True),
    _case(3, 3, 6, 3, 9, 9, (1, 1), (2, 1), 0, 2, False),
    _case(1, 17, 3, 1, 3, 4, (1, 1), 1, "same", 1, True),
]


def _sample(n, seed):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        C, K, g = rng.choice(GROUPINGS)
        H, W = rng.choice(SIZES), rng.choice(SIZES)
        kernel = rng.choice(KERNELS)
        stride, padding, dilation = rng.choice(STRIDES), rng.choice(PADDINGS), rng.choice(DILATIONS)
        if not _valid(H, W, kernel, stride, padding, dilation):
            continue
        out.append(_case(rng.choice([1, 1, 2, 5]), C, K, g, H, W, kernel, stride, padding, dilation,
                         rng.random() < 0.6))
    return out


def _n_random(backend):
    # The emulator runs every CUDA thread as a fiber: a share of the sweep (on these tiny shapes
    # its calls cost ~0.05 s each, so 40 cases are ~15 s of the suite on two cores).
    return 100 if backend == "cpu" else 40


def _params():
    ps = []
    for b in BACKENDS:
        cases = MUST + ONE_BY_ONE + _sample(_n_random(b), seed=20261125)
        for c in cases:
            for algo in _algos(b):
                if not _algo_applies(algo, c):
                    continue
                for dt in dtypes_of(b):  # (the half types: tests/ops/test_conv_half.py's sweep)
                    ps.append(pytest.param(b, algo, dt, c, id=f"{b}-{algo}-{dtype_id(dt)}-{_case_id(c)}"))
    return ps


def _make(c, dtype, device, gen=None):
    N, C, K, g, H, W = c["N"], c["C"], c["K"], c["groups"], c["H"], c["W"]
    R, S = c["kernel"]
    x = rand((N, C, H, W), dtype, device, gen)
    w = rand((K, C // g, R, S), dtype, device, gen)
    b = rand((K,), dtype, device, gen) if c["bias"] else None
    return x, w, b


def _kw(c):
    return dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])


def _lengths(c, out_hw):
    R, S = c["kernel"]
    Cg, Kg = c["C"] // c["groups"], c["K"] // c["groups"]
    npq = max(c["N"] * out_hw[0] * out_hw[1], 1)
    return Cg * R * S, Kg * R * S, npq


@pytest.mark.parametrize("backend,algo,dtype,case", _params())
def test_conv2d_autograd_parity(backend, algo, dtype, case):
    """Forward and all three gradients through autograd (loss = <y, g> for a random g)."""
    dev = device_of(backend)
    gen = torch.Generator().manual_seed(zlib.crc32(_case_id(case).encode()))
    x, w, b = _make(case, dtype, dev, gen)
    for t in (x, w, b):
        if t is not None:
            t.requires_grad_(True)
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, b, algo=algo, **_kw(case))
        g = rand(y.shape, dtype, dev, gen)
        y.backward(g)
    ref = ref_conv2d(x, w, b, grad_out=g, **_kw(case))
    Lf, Li, Lw = _lengths(case, ref["y"].shape[-2:])
    assert_close(y, ref["y"], dtype, L=Lf, what="forward")
    assert_close(x.grad, ref["gx"], dtype, L=Li, what="grad input")
    assert_close(w.grad, ref["gw"], dtype, L=Lw, what="grad weight")
    if b is not None:
        assert_close(b.grad, ref["gb"], dtype, L=Lw, what="grad bias")


def _public_params():
    ps = []
    for b in BACKENDS:
        cases = MUST + ONE_BY_ONE + _sample(40 if b == "cpu" else 15, seed=7)
        for c in cases:
            for algo in _algos(b):
                if _algo_applies(algo, c):
                    ps.append(pytest.param(b, algo, c, id=f"{b}-{algo}-{_case_id(c)}"))
    return ps


@pytest.mark.parametrize("backend,algo,case", _public_params())
def test_conv2d_public_backward_functions(backend, algo, case):
    """conv2d_backward_input / _weight / _bias called directly (float64)."""
    dtype = torch.float64
    dev = device_of(backend)
    gen = torch.Generator().manual_seed(11)
    x, w, b = _make(case, dtype, dev, gen)
    ref_y = ref_conv2d(x, w, None, **_kw(case))["y"]
    g = rand(ref_y.shape, dtype, dev, gen)
    ref = ref_conv2d(x, w, b if b is not None else torch.zeros(case["K"], dtype=dtype), grad_out=g, **_kw(case))
    Lf, Li, Lw = _lengths(case, ref_y.shape[-2:])
    with convkit.use_backend(backend):
        gx = CF.conv2d_backward_input(g, w, tuple(x.shape), algo=algo, **_kw(case))
        gw = CF.conv2d_backward_weight(g, x, tuple(w.shape), algo=algo, **_kw(case))
        gb = CF.conv2d_backward_bias(g)
    assert_close(gx, ref["gx"], dtype, L=Li, what="conv2d_backward_input")
    assert_close(gw, ref["gw"], dtype, L=Lw, what="conv2d_backward_weight")
    assert_close(gb, ref["gb"], dtype, L=Lw, what="conv2d_backward_bias")


EXACT = MUST[:8] + ONE_BY_ONE[:3] + [
    _case(5, 6, 9, 3, 13, 13, (5, 5), 1, 2, 1, True),
    _case(2, 8, 8, 1, 31, 33, (3, 3), 1, 1, 1, True),
]


def _exact_params():
    return [pytest.param(b, a, c, id=f"{b}-{a}-{_case_id(c)}") for b in BACKENDS for a in _algos(b)
            for c in EXACT if _algo_applies(a, c)]


@pytest.mark.parametrize("backend,algo,case", _exact_params())
def test_conv2d_exact_small_integers(backend, algo, case):
    """Integers in [-8, 7] in float32: every sum is exact, so all algorithms must agree with
    torch's float64 result bit for bit (forward, grad input, grad weight, grad bias)."""
    dev = device_of(backend)
    gen = torch.Generator().manual_seed(3)
    N, C, K, g, H, W = (case[k] for k in ("N", "C", "K", "groups", "H", "W"))
    R, S = case["kernel"]
    x = small_ints((N, C, H, W), torch.float32, dev, gen)
    w = small_ints((K, C // g, R, S), torch.float32, dev, gen)
    b = small_ints((K,), torch.float32, dev, gen) if case["bias"] else None
    ref_y = ref_conv2d(x, w, None, **_kw(case))["y"]
    go = small_ints(ref_y.shape, torch.float32, dev, gen)
    ref = ref_conv2d(x, w, b, grad_out=go, **_kw(case))
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, b, algo=algo, **_kw(case))
        gx = CF.conv2d_backward_input(go, w, tuple(x.shape), algo=algo, **_kw(case))
        gw = CF.conv2d_backward_weight(go, x, tuple(w.shape), algo=algo, **_kw(case))
        gb = CF.conv2d_backward_bias(go)
    assert y.dtype == torch.float32
    assert_bitwise(y, ref["y"], "forward")
    assert_bitwise(gx, ref["gx"], "grad input")
    assert_bitwise(gw, ref["gw"], "grad weight")
    assert_bitwise(gb, ref["gb"] if b is not None else go.double().sum((0, 2, 3)), "grad bias")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ["direct", "im2col", "auto"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_conv2d_odd_large_image(backend, algo, dtype):
    """One larger odd image (31x33), batch 5, channels not a multiple of 4."""
    dev = device_of(backend)
    case = _case(5, 5, 7, 1, 31, 33, (3, 3), 2, 1, 1, True)
    x, w, b = _make(case, dtype, dev)
    x.requires_grad_(True)
    w.requires_grad_(True)
    b.requires_grad_(True)
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, b, algo=algo, **_kw(case))
        g = rand(y.shape, dtype, dev)
        y.backward(g)
    ref = ref_conv2d(x, w, b, grad_out=g, **_kw(case))
    Lf, Li, Lw = _lengths(case, ref["y"].shape[-2:])
    assert_close(y, ref["y"], dtype, L=Lf, what="forward")
    assert_close(x.grad, ref["gx"], dtype, L=Li, what="grad input")
    assert_close(w.grad, ref["gw"], dtype, L=Lw, what="grad weight")
    assert_close(b.grad, ref["gb"], dtype, L=Lw, what="grad bias")


# --------------------------------------------------------------------------------------------
# layouts: non-contiguous, channels_last, unbatched, empty batch
# --------------------------------------------------------------------------------------------

def _noncontig(kind, dtype, dev, gen):
    """A [2, 3, 7, 5] input that is not contiguous, made in one of several ways."""
    if kind == "slice":
        big = rand((4, 3, 14, 15), dtype, dev, gen)
        x = big[::2, :, ::2, ::3]
    elif kind == "channel_slice":
        big = rand((2, 7, 7, 5), dtype, dev, gen)
        x = big[:, 1:7:2]
    elif kind == "permuted":
        base = rand((5, 2, 7, 3), dtype, dev, gen)
        x = base.permute(1, 3, 2, 0)
    elif kind == "expanded":
        base = rand((1, 3, 7, 5), dtype, dev, gen)
        x = base.expand(2, 3, 7, 5)
    else:
        raise ValueError(kind)
    assert tuple(x.shape) == (2, 3, 7, 5) and not x.is_contiguous()
    return x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ["direct", "im2col", "auto"])
@pytest.mark.parametrize("kind", ["slice", "channel_slice", "permuted", "expanded"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_conv2d_noncontiguous_input(backend, algo, kind, dtype):
    dev = device_of(backend)
    gen = torch.Generator().manual_seed(5)
    x = _noncontig(kind, dtype, dev, gen)
    wbase = rand((4, 3, 3, 3), dtype, dev, gen)
    w = wbase.transpose(2, 3)                      # non-contiguous weight as well
    b = rand((8,), dtype, dev, gen)[::2]           # and a strided bias
    xs = x.detach().requires_grad_(True)          # a leaf with the same strange strides
    w.requires_grad_(True)
    kw = dict(stride=(1, 2), padding=1)
    with convkit.use_backend(backend):
        y = CF.conv2d(xs, w, b, algo=algo, **kw)
        g = rand(y.shape, dtype, dev, gen)
        y.backward(g)
    ref = ref_conv2d(x, w, b, grad_out=g, **kw)
    assert_close(y, ref["y"], dtype, L=27, what="forward")
    assert_close(xs.grad, ref["gx"], dtype, L=36, what="grad input")
    assert_close(w.grad, ref["gw"], dtype, L=2 * 7 * 3, what="grad weight")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ["direct", "im2col", "1x1", "auto"])
@pytest.mark.parametrize("which", ["input", "weight", "both"])
def test_conv2d_channels_last(backend, algo, which):
    """Values match, and the output's memory format is the one torch gives."""
    dtype = torch.float64
    dev = device_of(backend)
    R = 1 if algo == "1x1" else 3
    pad = 0 if algo == "1x1" else 1
    x = rand((2, 5, 7, 6), dtype, dev)
    w = rand((4, 5, R, R), dtype, dev)
    b = rand((4,), dtype, dev)
    if which in ("input", "both"):
        x = x.to(memory_format=torch.channels_last)
    if which in ("weight", "both"):
        w = w.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    w.requires_grad_(True)
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, b, padding=pad, algo=algo)
        g = rand(y.shape, dtype, dev)
        y.backward(g)
    torch_y = F.conv2d(x.detach(), w.detach(), b, padding=pad)
    assert is_channels_last(y) == is_channels_last(torch_y), (
        f"output channels_last={is_channels_last(y)}, torch's={is_channels_last(torch_y)}")
    assert y.is_contiguous() == torch_y.is_contiguous()
    ref = ref_conv2d(x, w, b, grad_out=g, padding=pad)
    assert_close(y, ref["y"], dtype, L=45, what="forward")
    assert_close(x.grad, ref["gx"], dtype, L=36, what="grad input")
    assert_close(w.grad, ref["gw"], dtype, L=84, what="grad weight")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ["direct", "im2col", "1x1", "auto"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_conv2d_unbatched(backend, algo, dtype):
    """A (C, H, W) input gives a (K, P, Q) output, like torch; gradients too."""
    dev = device_of(backend)
    R, pad = (1, 0) if algo == "1x1" else (3, 1)
    x = rand((3, 7, 5), dtype, dev).requires_grad_(True)
    w = rand((2, 3, R, R), dtype, dev).requires_grad_(True)
    b = rand((2,), dtype, dev).requires_grad_(True)
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, b, stride=(2, 1), padding=pad, algo=algo)
        assert y.dim() == 3
        g = rand(y.shape, dtype, dev)
        y.backward(g)
    ref = ref_conv2d(x, w, b, grad_out=g, stride=(2, 1), padding=pad)
    assert_close(y, ref["y"], dtype, L=27, what="forward")
    assert_close(x.grad, ref["gx"], dtype, L=18, what="grad input")
    assert_close(w.grad, ref["gw"], dtype, L=35, what="grad weight")
    assert_close(b.grad, ref["gb"], dtype, L=35, what="grad bias")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ["direct", "im2col", "1x1", "auto"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_conv2d_empty_batch(backend, algo, dtype):
    """N = 0: an empty output of the right shape; grad weight and grad bias are zeros (written,
    not left as poison), grad input is empty."""
    dev = device_of(backend)
    R, pad = (1, 0) if algo == "1x1" else (3, 1)
    x = torch.empty((0, 3, 7, 5), dtype=dtype, device=dev).requires_grad_(True)
    w = rand((4, 3, R, R), dtype, dev).requires_grad_(True)
    b = rand((4,), dtype, dev).requires_grad_(True)
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, b, padding=pad, algo=algo)
        assert tuple(y.shape) == tuple(F.conv2d(x.detach(), w.detach(), b.detach(), padding=pad).shape)
        y.backward(torch.empty_like(y))
        gw = CF.conv2d_backward_weight(torch.empty_like(y), x.detach(), tuple(w.shape), padding=pad, algo=algo)
        gb = CF.conv2d_backward_bias(torch.empty_like(y))
        gx = CF.conv2d_backward_input(torch.empty_like(y), w.detach(), tuple(x.shape), padding=pad, algo=algo)
    assert tuple(x.grad.shape) == (0, 3, 7, 5)
    assert torch.equal(w.grad, torch.zeros_like(w)), "grad weight of an empty batch must be 0"
    assert torch.equal(b.grad, torch.zeros_like(b)), "grad bias of an empty batch must be 0"
    assert torch.equal(gw, torch.zeros_like(w))
    assert torch.equal(gb, torch.zeros_like(b))
    assert tuple(gx.shape) == (0, 3, 7, 5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("padding,kernel,dilation", [
    ("same", (2, 2), 1), ("same", (4, 4), 1), ("same", (2, 3), 1), ("same", (3, 4), (1, 2)),
    ("same", (5, 5), 2), ("same", (1, 1), 1), ("valid", (3, 3), 1), ("valid", (4, 2), 2),
    (2, (3, 3), 1), ((0, 2), (3, 3), 1), ((2, 1), (5, 3), 1), ([1, 2], (3, 3), 1),
])
@pytest.mark.parametrize("algo", ["direct", "im2col", "auto"])
def test_conv2d_padding_forms(backend, padding, kernel, dilation, algo):
    dtype = torch.float64
    dev = device_of(backend)
    x = rand((2, 3, 8, 7), dtype, dev).requires_grad_(True)
    w = rand((2, 3) + kernel, dtype, dev).requires_grad_(True)
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, padding=padding, dilation=dilation, algo=algo)
        g = rand(y.shape, dtype, dev)
        y.backward(g)
    pad_t = tuple(padding) if isinstance(padding, list) else padding
    ref = ref_conv2d(x, w, None, grad_out=g, padding=pad_t, dilation=dilation)
    assert_close(y, ref["y"], dtype, L=60, what="forward")
    assert_close(x.grad, ref["gx"], dtype, L=60, what="grad input")
    assert_close(w.grad, ref["gw"], dtype, L=120, what="grad weight")


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv2d_benchmark_mode_same_result(backend, monkeypatch):
    """convkit.benchmark = True (timed algo pick, cached) gives the same numbers."""
    dev = device_of(backend)
    x = small_ints((2, 4, 9, 9), torch.float32, dev)
    w = small_ints((3, 4, 3, 3), torch.float32, dev)
    monkeypatch.setattr(convkit, "benchmark", True)
    with convkit.use_backend(backend):
        y1 = CF.conv2d(x, w, padding=1)
        y2 = CF.conv2d(x, w, padding=1)      # cached pick
    ref = ref_conv2d(x, w, None, padding=1)["y"]
    assert_bitwise(y1, ref, "benchmark pick")
    assert_bitwise(y2, ref, "benchmark pick, cached")


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv2d_does_not_modify_inputs(backend):
    dev = device_of(backend)
    x = rand((2, 3, 7, 7), torch.float32, dev)
    w = rand((4, 3, 3, 3), torch.float32, dev)
    b = rand((4,), torch.float32, dev)
    copies = [t.clone() for t in (x, w, b)]
    with convkit.use_backend(backend):
        for algo in ("direct", "im2col", "auto"):
            y = CF.conv2d(x, w, b, padding=1, algo=algo)
            CF.conv2d_backward_input(y, w, tuple(x.shape), padding=1, algo=algo)
            CF.conv2d_backward_weight(y, x, tuple(w.shape), padding=1, algo=algo)
    for t, c in zip((x, w, b), copies):
        assert torch.equal(t, c)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv2d_thread_counts_agree(backend):
    """Results do not depend on the number of threads (bitwise on small integers)."""
    dev = device_of(backend)
    x = small_ints((5, 6, 13, 11), torch.float32, dev)
    w = small_ints((4, 6, 3, 3), torch.float32, dev)
    ref = ref_conv2d(x, w, None, padding=1)["y"]
    old = convkit.get_num_threads()
    try:
        for n in (1, 2, 3):
            convkit.set_num_threads(n)
            assert convkit.get_num_threads() == n
            with convkit.use_backend(backend):
                for algo in ("direct", "im2col"):
                    assert_bitwise(CF.conv2d(x, w, padding=1, algo=algo), ref, f"{n} threads, {algo}")
    finally:
        convkit.set_num_threads(old)


# --------------------------------------------------------------------------------------------
# GEMM tiling, im2col batch chunking, threads
# --------------------------------------------------------------------------------------------

TILING = [  # shapes whose GEMM dimensions are not multiples of any tile size
    _case(3, 19, 67, 1, 17, 15, (3, 3), 1, 1, 1, True),
    _case(17, 300, 33, 1, 5, 7, (1, 1), 1, 0, 1, True),          # long 1x1 reduction, batch 17
    _case(2, 13, 129, 1, 9, 11, (1, 1), 2, 0, 1, False),
    _case(2, 24, 40, 4, 13, 13, (3, 3), 2, 1, 1, True),
    _case(1, 3, 64, 1, 33, 31, (7, 7), 2, 3, 1, True),           # a stem-like 7x7/2
    _case(2, 48, 48, 48, 15, 15, (5, 5), 1, 2, 1, True),         # wide depthwise
]


def _int_problem(case, dev, seed):
    """x, w, b, grad_output in small integers [-4, 3] (float32) and the float64 reference: every
    sum is an exact float32 integer, so convkit's results must match bit for bit."""
    gen = torch.Generator().manual_seed(seed)
    N, C, K, g, H, W = (case[k] for k in ("N", "C", "K", "groups", "H", "W"))
    R, S = case["kernel"]
    x = small_ints((N, C, H, W), torch.float32, dev, gen, -4, 3)
    w = small_ints((K, C // g, R, S), torch.float32, dev, gen, -4, 3)
    b = small_ints((K,), torch.float32, dev, gen) if case["bias"] else None
    go = small_ints(ref_conv2d(x, w, None, **_kw(case))["y"].shape, torch.float32, dev, gen, -4, 3)
    ref = ref_conv2d(x, w, b, grad_out=go, **_kw(case))
    assert ref["gw"].abs().max() < 2 ** 24 and ref["gx"].abs().max() < 2 ** 24
    return x, w, b, go, ref


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ["direct", "im2col", "1x1", "auto"])
@pytest.mark.parametrize("case", TILING, ids=_case_id)
def test_conv2d_gemm_tiling_exact(backend, algo, case):
    """Bigger-than-a-tile shapes in small integers: bit-exact forward and both gradients."""
    if not _algo_applies(algo, case):
        pytest.skip("1x1 algo needs a 1x1 kernel without padding")
    x, w, b, go, ref = _int_problem(case, device_of(backend), 21)
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, b, algo=algo, **_kw(case))
        gx = CF.conv2d_backward_input(go, w, tuple(x.shape), algo=algo, **_kw(case))
        gw = CF.conv2d_backward_weight(go, x, tuple(w.shape), algo=algo, **_kw(case))
    assert_bitwise(y, ref["y"], "forward")
    assert_bitwise(gx, ref["gx"], "grad input")
    assert_bitwise(gw, ref["gw"], "grad weight")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("images", [1, 3, None])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_conv2d_im2col_batch_chunking(backend, images, dtype, monkeypatch):
    """A workspace cap of one image's columns (or three) makes im2col take the batch an image
    (or a few) at a time: same results as with a big one, for forward and both gradients."""
    import convkit._arrays as arrays
    dev = device_of(backend)
    case = _case(7, 5, 6, 1, 9, 8, (3, 3), 1, 1, 1, True)
    x, w, b = _make(case, dtype, dev)
    one = one_image_workspace(backend, tuple(x.shape), tuple(w.shape), dtype, **_kw(case))
    monkeypatch.setattr(arrays, "WORKSPACE_CAP_BYTES", 1 << 30 if images is None else images * one)
    for t in (x, w, b):
        t.requires_grad_(True)
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, b, algo="im2col", **_kw(case))
        g = rand(y.shape, dtype, dev)
        y.backward(g)
    ref = ref_conv2d(x, w, b, grad_out=g, **_kw(case))
    assert_close(y, ref["y"], dtype, L=45, what="forward")
    assert_close(x.grad, ref["gx"], dtype, L=54, what="grad input")
    assert_close(w.grad, ref["gw"], dtype, L=7 * 72, what="grad weight")
    assert_close(b.grad, ref["gb"], dtype, L=7 * 72, what="grad bias")


@pytest.mark.skipif("cuda" not in BACKENDS, reason="needs the cuda backend and a GPU")
def test_cuda_non_default_stream():
    """Every launch goes on the caller's current stream (pytorch#15352): work queued on a side
    stream, read back after that stream only, gives the right numbers. (Pooling and ReLU on a
    side stream: tests/integration/test_cuda.py.)"""
    torch.cuda.synchronize()
    x = torch.randn(8, 32, 56, 56, device="cuda")
    w = torch.randn(64, 32, 3, 3, device="cuda")
    g = torch.randn(8, 64, 56, 56, device="cuda")
    ref = ref_conv2d(x, w, None, padding=1, grad_out=g)
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    with convkit.use_backend("cuda"), torch.cuda.stream(s):
        outs = {algo: (CF.conv2d(x, w, padding=1, algo=algo),
                       CF.conv2d_backward_input(g, w, tuple(x.shape), padding=1, algo=algo),
                       CF.conv2d_backward_weight(g, x, tuple(w.shape), padding=1, algo=algo))
                for algo in ("direct", "im2col")}
    s.synchronize()
    for algo, (y, gx, gw) in outs.items():
        assert_close(y, ref["y"], torch.float32, L=288, what=f"{algo} forward")
        assert_close(gx, ref["gx"], torch.float32, L=576, what=f"{algo} grad input")
        assert_close(gw, ref["gw"], torch.float32, L=8 * 56 * 56, what=f"{algo} grad weight")


ASYM = [((0, 1, 1, 0), (2, 2), (1, 1)), ((2, 0, 0, 3), (1, 3), (2, 1)), ((1, 2, 3, 0), (3, 2), (1, 2)),
        ((0, 0, 2, 1), (2, 1), (1, 1))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ["direct", "im2col", "auto"])
@pytest.mark.parametrize("pads,stride,dilation", ASYM, ids=str)
def test_conv2d_op_asymmetric_pads_strided(backend, algo, pads, stride, dilation):
    """torch.ops.convkit takes four explicit pads: asymmetric pads with stride and dilation
    (which the public API only makes for 'same') must equal F.pad + conv2d, all three passes."""
    dtype = torch.float64
    dev = device_of(backend)
    x = rand((2, 4, 9, 8), dtype, dev).requires_grad_(True)
    w = rand((6, 2, 3, 3), dtype, dev).requires_grad_(True)
    b = rand((6,), dtype, dev).requires_grad_(True)
    t, bt, l, r = pads
    xr = x.detach().clone().requires_grad_(True)
    wr = w.detach().clone().requires_grad_(True)
    br = b.detach().clone().requires_grad_(True)
    yr = F.conv2d(F.pad(xr, (l, r, t, bt)), wr, br, stride=stride, dilation=dilation, groups=2)
    g = rand(yr.shape, dtype, dev)
    yr.backward(g)
    with convkit.use_backend(backend):
        y = torch.ops.convkit.conv2d(x, w, b, list(stride), list(pads), list(dilation), 2, algo)
        y.backward(g)
        gx = torch.ops.convkit.conv2d_backward_input(g, w.detach(), list(x.shape), list(stride), list(pads),
                                                     list(dilation), 2, algo)
        gw = torch.ops.convkit.conv2d_backward_weight(g, x.detach(), list(w.shape), list(stride), list(pads),
                                                      list(dilation), 2, algo)
    assert_close(y, yr.detach(), dtype, L=18, what="forward")
    assert_close(x.grad, xr.grad, dtype, L=54, what="grad input (autograd)")
    assert_close(w.grad, wr.grad, dtype, L=144, what="grad weight (autograd)")
    assert_close(b.grad, br.grad, dtype, L=144, what="grad bias (autograd)")
    assert_close(gx, xr.grad, dtype, L=54, what="conv2d_backward_input op")
    assert_close(gw, wr.grad, dtype, L=144, what="conv2d_backward_weight op")


def test_poison_is_on():
    """The suite runs with CONVKIT_POISON=1: outputs start as NaN, so unwritten elements fail."""
    import convkit._arrays as arrays
    assert os.environ.get("CONVKIT_POISON") == "1" and arrays.poison()
    out = arrays.new(torch.zeros(1), (3,))
    assert torch.isnan(out).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ["direct", "im2col", "1x1"])
def test_conv2d_concurrent_python_threads(backend, algo):
    """The bindings release the GIL: several Python threads running convolutions at once (as a
    DataLoader worker thread or a serving thread pool would) must not share scratch buffers."""
    import threading
    dev = device_of(backend)
    R = 1 if algo == "1x1" else 3
    pad = 0 if algo == "1x1" else 1
    jobs = []
    for i in range(4):
        gen = torch.Generator().manual_seed(100 + i)
        C, K = 24 + 5 * i, 40 - 3 * i
        x = small_ints((3, C, 15, 13), torch.float32, dev, gen, -4, 3)
        w = small_ints((K, C, R, R), torch.float32, dev, gen, -4, 3)
        go = small_ints((3, K, 15, 13), torch.float32, dev, gen, -4, 3)
        ref = ref_conv2d(x, w, None, padding=pad, grad_out=go)
        jobs.append((x, w, go, ref))
    errors = []

    def work(job):
        x, w, go, ref = job
        try:
            with convkit.use_backend(backend):
                for _ in range(6):
                    assert_bitwise(CF.conv2d(x, w, padding=pad, algo=algo), ref["y"], "forward")
                    assert_bitwise(CF.conv2d_backward_input(go, w, tuple(x.shape), padding=pad, algo=algo),
                                   ref["gx"], "grad input")
                    assert_bitwise(CF.conv2d_backward_weight(go, x, tuple(w.shape), padding=pad, algo=algo),
                                   ref["gw"], "grad weight")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, f"{len(errors)} thread(s) got wrong results; first: {errors[0]}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv2d_benchmark_mode_autograd(backend, monkeypatch):
    """convkit.benchmark = True also gives correct gradients (the timed pick is per shape)."""
    monkeypatch.setattr(convkit, "benchmark", True)
    dev = device_of(backend)
    for case in (MUST[0], ONE_BY_ONE[1], MUST[6]):
        x, w, b = _make(case, torch.float64, dev)
        for t in (x, w, b):
            if t is not None:
                t.requires_grad_(True)
        with convkit.use_backend(backend):
            y = CF.conv2d(x, w, b, **_kw(case))
            g = rand(y.shape, torch.float64, dev)
            y.backward(g)
        ref = ref_conv2d(x, w, b, grad_out=g, **_kw(case))
        assert_close(y, ref["y"], torch.float64, L=100, what="forward")
        assert_close(x.grad, ref["gx"], torch.float64, L=100, what="grad input")
        assert_close(w.grad, ref["gw"], torch.float64, L=500, what="grad weight")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ["direct", "im2col"])
def test_conv2d_float32_realistic_reduction(backend, algo):
    """A GoogLeNet-sized reduction (C*R*S = 1728) in float32: the tolerance grows only with
    sqrt(L), so an accumulation that loses precision (or drops a term) shows."""
    dev = device_of(backend)
    gen = torch.Generator().manual_seed(31)
    x = rand((2, 192, 14, 14), torch.float32, dev, gen)
    w = rand((32, 192, 3, 3), torch.float32, dev, gen)
    g = rand((2, 32, 14, 14), torch.float32, dev, gen)
    ref = ref_conv2d(x, w, None, padding=1, grad_out=g)
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, padding=1, algo=algo)
        gx = CF.conv2d_backward_input(g, w, tuple(x.shape), padding=1, algo=algo)
        gw = CF.conv2d_backward_weight(g, x, tuple(w.shape), padding=1, algo=algo)
    assert_close(y, ref["y"], torch.float32, L=1728, what="forward")
    assert_close(gx, ref["gx"], torch.float32, L=288, what="grad input")
    assert_close(gw, ref["gw"], torch.float32, L=392, what="grad weight")


@pytest.mark.skipif("cuda" not in BACKENDS, reason="half precision is a CUDA-backend feature")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("algo", ["direct", "im2col", "auto"])
def test_cuda_half_precision(dtype, algo):
    """float16 / bfloat16 with float32 accumulation: our error against a float64 reference is at
    most twice torch's own (cuDNN's) error at that precision, plus a tiny floor."""
    gen = torch.Generator().manual_seed(12)
    x = rand((4, 32, 17, 15), torch.float64, "cpu", gen)
    w = rand((48, 32, 3, 3), torch.float64, "cpu", gen)
    g = rand((4, 48, 17, 15), torch.float64, "cpu", gen)
    ref = ref_conv2d(x.to(dtype).double(), w.to(dtype).double(), None, padding=1, grad_out=g.to(dtype).double())
    xc, wc, gc = (t.to(dtype).cuda() for t in (x, w, g))
    xt = xc.clone().requires_grad_(True)
    wt = wc.clone().requires_grad_(True)
    yt = F.conv2d(xt, wt, padding=1)
    yt.backward(gc)
    with convkit.use_backend("cuda"):
        y = CF.conv2d(xc, wc, padding=1, algo=algo)
        gx = CF.conv2d_backward_input(gc, wc, tuple(x.shape), padding=1, algo=algo)
        gw = CF.conv2d_backward_weight(gc, xc, tuple(w.shape), padding=1, algo=algo)
    for name, ours, theirs, r in [("y", y, yt, ref["y"]), ("gx", gx, xt.grad, ref["gx"]), ("gw", gw, wt.grad, ref["gw"])]:
        assert ours.dtype == dtype
        e_ours = (ours.double().cpu() - r).abs().max().item()
        e_torch = (theirs.double().cpu() - r).abs().max().item()
        assert e_ours <= 2 * e_torch + 1e-3 * r.abs().max().item(), f"{name}: ours {e_ours:.3e}, torch {e_torch:.3e}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ["direct", "im2col", "1x1"])
def test_conv2d_deterministic(backend, algo):
    """Same inputs, same thread count: bitwise the same results, every pass (col2im in gather
    form, no atomics; weight-gradient reductions in a fixed order)."""
    dev = device_of(backend)
    gen = torch.Generator().manual_seed(77)
    R, pad = (1, 0) if algo == "1x1" else (3, 1)
    x = rand((5, 12, 11, 13), torch.float32, dev, gen)
    w = rand((10, 12, R, R), torch.float32, dev, gen)
    g = rand((5, 10, 11, 13), torch.float32, dev, gen)
    with convkit.use_backend(backend):
        runs = [(CF.conv2d(x, w, padding=pad, algo=algo),
                 CF.conv2d_backward_input(g, w, tuple(x.shape), padding=pad, algo=algo),
                 CF.conv2d_backward_weight(g, x, tuple(w.shape), padding=pad, algo=algo),
                 CF.conv2d_backward_bias(g)) for _ in range(3)]
    for later in runs[1:]:
        for name, a, b in zip(("forward", "grad input", "grad weight", "grad bias"), runs[0], later):
            assert_bitwise(b, a, f"{name} differs between two identical calls")


# --------------------------------------------------------------------------------------------
# medium shapes: multi-tile GEMMs, edge tiles, split-K grad weight, on every backend
# --------------------------------------------------------------------------------------------

MEDIUM = [  # bigger than gemm.cuh's 64 x 64 tiles in M and N, not multiples of them
    _case(2, 20, 130, 1, 15, 15, (3, 3), 1, 1, 1, True),         # K=130: three M tiles, the last of 2 rows
    _case(2, 40, 70, 1, 17, 17, (1, 1), 2, 0, 1, True),          # 1x1 stride 2 on 17x17 (P=Q=9)
    _case(2, 32, 32, 32, 15, 15, (3, 3), 1, 1, 1, True),         # depthwise, 32 channels
    _case(2, 24, 48, 4, 13, 13, (3, 3), 2, 1, 1, True),          # grouped (4 groups), strided
    _case(1, 12, 36, 3, 19, 17, (5, 5), 1, 2, 1, False),         # grouped 5x5
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ["direct", "im2col", "1x1", "auto"])
@pytest.mark.parametrize("case", MEDIUM, ids=_case_id)
def test_conv2d_medium_exact(backend, algo, case):
    """Medium shapes in small integers (exact float32 sums): forward (with bias), grad input and
    grad weight bit for bit, through the public functions and through autograd."""
    if not _algo_applies(algo, case):
        pytest.skip("1x1 algo needs a 1x1 kernel without padding")
    x, w, b, go, ref = _int_problem(case, device_of(backend), zlib.crc32(_case_id(case).encode()))
    xa, wa = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    with convkit.use_backend(backend):
        y = CF.conv2d(xa, wa, b, algo=algo, **_kw(case))
        y.backward(go)
        gx = CF.conv2d_backward_input(go, w, tuple(x.shape), algo=algo, **_kw(case))
        gw = CF.conv2d_backward_weight(go, x, tuple(w.shape), algo=algo, **_kw(case))
    assert_bitwise(y, ref["y"], "forward")
    assert_bitwise(gx, ref["gx"], "grad input")
    assert_bitwise(gw, ref["gw"], "grad weight")
    assert_bitwise(xa.grad, ref["gx"], "grad input (autograd)")
    assert_bitwise(wa.grad, ref["gw"], "grad weight (autograd)")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ["direct", "im2col", "1x1", "auto"])
@pytest.mark.parametrize("case", MEDIUM[:2], ids=_case_id)
def test_conv2d_medium_float64(backend, algo, case):
    """The first medium shapes in float64 random values: forward and both gradients."""
    if not _algo_applies(algo, case):
        pytest.skip("1x1 algo needs a 1x1 kernel without padding")
    dtype = torch.float64
    dev = device_of(backend)
    gen = torch.Generator().manual_seed(zlib.crc32(_case_id(case).encode()) + 1)
    x, w, b = _make(case, dtype, dev, gen)
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, b, algo=algo, **_kw(case))
        g = rand(y.shape, dtype, dev, gen)
        gx = CF.conv2d_backward_input(g, w, tuple(x.shape), algo=algo, **_kw(case))
        gw = CF.conv2d_backward_weight(g, x, tuple(w.shape), algo=algo, **_kw(case))
    ref = ref_conv2d(x, w, b, grad_out=g, **_kw(case))
    Lf, Li, Lw = _lengths(case, ref["y"].shape[-2:])
    assert_close(y, ref["y"], dtype, L=Lf, what="forward")
    assert_close(gx, ref["gx"], dtype, L=Li, what="grad input")
    assert_close(gw, ref["gw"], dtype, L=Lw, what="grad weight")


# --------------------------------------------------------------------------------------------
# algo="auto": the heuristic of the backend's kind
# --------------------------------------------------------------------------------------------

def _params_of(x_shape, w_shape, **kw):
    from convkit._algos import check_conv
    import convkit._backend as B
    import convkit._kernels as K
    args = check_conv("test", x_shape, w_shape, torch.float32, torch.float32, **kw)
    return K._conv_params(B.module("cpu"), x_shape, w_shape, args), args


HEURISTIC = [  # (x shape, w shape, kwargs, the CUDA backends' pick, the cpu's pick)
    ((8, 192, 28, 28), (64, 192, 1, 1), {}, "1x1", "1x1"),                       # pointwise
    ((8, 192, 28, 28), (64, 192, 1, 1), dict(stride=2), "1x1", "1x1"),           # strided pointwise
    ((8, 64, 28, 28), (64, 32, 1, 1), dict(groups=2), "1x1", "1x1"),             # grouped pointwise
    ((8, 192, 28, 28), (64, 192, 1, 1), dict(padding=1), "implicit_gemm", "blocked"),   # 1x1 with padding: not "1x1"
    ((8, 32, 56, 56), (32, 1, 3, 3), dict(padding=1, groups=32), "direct", "direct"),   # depthwise
    ((8, 32, 28, 28), (64, 1, 3, 3), dict(padding=1, groups=32), "direct", "direct"),   # depthwise x2
    ((8, 64, 56, 56), (192, 64, 3, 3), dict(padding=1), "implicit_gemm", "blocked"),    # 3x3 at 56x56
    ((8, 96, 28, 28), (128, 96, 3, 3), dict(padding=1), "implicit_gemm", "blocked"),
    ((8, 832, 7, 7), (384, 832, 3, 3), dict(padding=1), "implicit_gemm", "blocked"),    # 3x3 at 7x7
    ((8, 3, 224, 224), (64, 3, 7, 7), dict(stride=2, padding=3), "implicit_gemm", "blocked"),  # the 7x7 stem
    ((8, 32, 14, 14), (64, 16, 5, 5), dict(padding=2, groups=2), "implicit_gemm", "blocked"),  # grouped 5x5
    ((8, 16, 28, 28), (8, 16, 3, 3), dict(padding=1), "implicit_gemm", "im2col"),       # 8 outputs: half a vector
    ((8, 4, 64, 64), (8, 4, 3, 3), dict(padding=1), "implicit_gemm", "direct"),         # ... on a large plane
]


@pytest.mark.parametrize("x_shape,w_shape,kw,cuda_pick,cpu_pick", HEURISTIC,
                         ids=[f"{h[0]}-{h[1]}-{h[2]}" for h in HEURISTIC])
def test_auto_heuristic_by_backend(x_shape, w_shape, kw, cuda_pick, cpu_pick):
    """The CUDA backends ('cuda', 'cudasim') pick by shape alone: 1x1 without padding -> '1x1',
    depthwise (C/groups == 1) -> 'direct', otherwise 'implicit_gemm'; the cpu backend keeps the
    heuristic measured on the CPU."""
    import convkit._algos as AL
    p, args = _params_of(x_shape, w_shape, **kw)
    assert AL.heuristic(p, args, "cuda") == cuda_pick
    assert AL.heuristic(p, args, "cudasim") == cuda_pick
    assert AL.heuristic(p, args, "cpu") == cpu_pick


@pytest.mark.parametrize("backend", BACKENDS)
def test_auto_runs_the_backend_heuristic(backend, monkeypatch):
    """algo='auto' resolves with the running backend's heuristic, for every pass."""
    import convkit._algos as AL
    dev = device_of(backend)
    x = rand((1, 8, 9, 9), torch.float32, dev).requires_grad_(True)
    w = rand((8, 8, 3, 3), torch.float32, dev).requires_grad_(True)
    kinds = []
    heuristic = AL.heuristic
    monkeypatch.setattr(AL, "heuristic", lambda p, a, name, dt=None: kinds.append((name, dt)) or heuristic(p, a, name, dt))
    with convkit.use_backend(backend):
        CF.conv2d(x, w, padding=1).sum().backward()
    assert kinds == [(backend, "float32")] * 3
