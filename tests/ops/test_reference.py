"""algo='reference' (CPU): the convolution's definition as loops, one float64 sum per output
element. It is swept with every other algorithm against torch in tests/ops/test_conv2d.py; here it
is the oracle: every algorithm of every backend agrees with it on random shapes, in float64, with
no torch convolution involved, and on the shapes where the fast kernels hand over to their
bounded paths (huge padding, stride or dilation, a kernel larger than the image)."""
import random

import pytest
import torch

import convkit
import convkit._algos as AL
import convkit.functional as CF

from conftest import BACKENDS

F64 = torch.float64


def _random_case(rng: random.Random):
    groups = rng.choice([1, 1, 2, 3])
    c, k = groups * rng.randint(1, 4), groups * rng.randint(1, 4)
    r, s = rng.randint(1, 5), rng.randint(1, 5)
    dil = (rng.randint(1, 3), rng.randint(1, 3))
    pad = (rng.randint(0, 3), rng.randint(0, 3))
    stride = (rng.randint(1, 3), rng.randint(1, 3))
    h = max(1, dil[0] * (r - 1) + 1 - 2 * pad[0]) + rng.randint(0, 9)
    w = max(1, dil[1] * (s - 1) + 1 - 2 * pad[1]) + rng.randint(0, 9)
    return (rng.randint(1, 3), c, h, w), (k, c // groups, r, s), dict(stride=stride, padding=pad, dilation=dil,
                                                                      groups=groups)


def _passes(x, w, b, algo, kw):
    """y, dx, dw of one algorithm through the public backward functions (no autograd)."""
    y = CF.conv2d(x, w, b, algo=algo, **kw)
    dy = torch.linspace(-1, 1, y.numel(), dtype=F64).reshape(y.shape)
    dx = CF.conv2d_backward_input(dy, w, tuple(x.shape), algo=algo, **kw)
    dw = CF.conv2d_backward_weight(dy, x, tuple(w.shape), algo=algo, **kw)
    return y, dx, dw


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_algorithm_agrees_with_the_reference(backend):
    """40 seeded random convolutions (groups, stride, padding, dilation, odd sizes): each algorithm
    the backend builds gives the reference's forward and both gradients to float64 rounding."""
    if backend == "cuda":
        pytest.skip("the reference runs on host memory; the cuda backend's parity is tests/ops/test_conv2d.py's")
    rng = random.Random(20261207)
    for _ in range(40):
        xs, ws, kw = _random_case(rng)
        x, w, b = torch.randn(xs, dtype=F64), torch.randn(ws, dtype=F64), torch.randn(ws[0], dtype=F64)
        with convkit.use_backend("cpu"):
            want = _passes(x, w, b, "reference", kw)
        with convkit.use_backend(backend):
            for algo in convkit._backend.module(backend).conv_algos():
                if AL.refusal(algo, AL.check_conv("t", xs, ws, F64, F64, **kw), ws[2], ws[3]):
                    continue
                got = _passes(x, w, b, algo, kw)
                for name, g, r in zip(("forward", "grad input", "grad weight"), got, want):
                    torch.testing.assert_close(g, r, rtol=1e-11, atol=1e-11,
                                               msg=f"{backend} {algo} {name} {xs} {ws} {kw}")


@pytest.mark.parametrize("xs,ws,kw", [
    ((1, 2, 2, 3), (3, 2, 7, 6), dict(padding=6)),                          # kernel far larger than the image
    ((2, 2, 5, 4), (2, 2, 3, 3), dict(padding=(40, 3), stride=(17, 2))),    # padding and stride past the input
    ((1, 3, 9, 8), (3, 1, 3, 2), dict(padding=(30, 2), dilation=(29, 3), groups=3)),  # dilation spanning the pad
    ((1, 1, 1, 1), (1, 1, 1, 1), dict(stride=1000)),
])
def test_reference_on_shapes_the_fast_kernels_bound(xs, ws, kw):
    """The reference against torch where the fast kernels take their bounds-checked paths."""
    torch.manual_seed(0)
    x, w, b = torch.randn(xs, dtype=F64), torch.randn(ws, dtype=F64), torch.randn(ws[0], dtype=F64)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    yr = torch.nn.functional.conv2d(xr, wr, b, **kw)
    dy = torch.randn_like(yr)
    yr.backward(dy)
    with convkit.use_backend("cpu"):
        y = CF.conv2d(x, w, b, algo="reference", **kw)
        dx = CF.conv2d_backward_input(dy, w, xs, algo="reference", **kw)
        dw = CF.conv2d_backward_weight(dy, x, ws, algo="reference", **kw)
    torch.testing.assert_close(y, yr.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dx, xr.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dw, wr.grad, rtol=1e-12, atol=1e-12)


def test_reference_runs_only_by_name():
    """Not timed by convkit.benchmark nor picked by the heuristic; refused by the CUDA modules."""
    assert "reference" in convkit.CONV_ALGOS and "reference" not in AL.TIMED
    args = AL.check_conv("t", (2, 8, 9, 9), (8, 8, 3, 3), F64, F64, padding=1)
    for backend in convkit.available_backends():
        mod = convkit._backend.module(backend)
        p = convkit._kernels._conv_params(mod, (2, 8, 9, 9), (8, 8, 3, 3), args)
        assert "reference" not in AL.candidates(p, args, backend)
        assert AL.heuristic(p, args, backend) != "reference"
        if backend != "cpu":
            assert "reference" not in mod.conv_algos()
            with convkit.use_backend(backend), pytest.raises(ValueError, match="not built for"):
                CF.conv2d(torch.zeros(2, 8, 9, 9, dtype=F64), torch.zeros(8, 8, 3, 3, dtype=F64), algo="reference")
