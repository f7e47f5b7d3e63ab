"""The CUDA convolutions on a real GPU (every test here skips without one): each algorithm's
forward, grad input, grad weight and grad bias on the caller's non-default stream (the input is
written there after a long GPU sleep, so a kernel on any other stream reads NaN), CuPy arrays in
and out on CuPy's current stream, a tensor on a second GPU, and results that are bitwise the same
run to run (no atomics anywhere)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import convkit
import convkit.functional as CF

from conftest import BACKENDS, assert_close, rand

pytestmark = pytest.mark.skipif("cuda" not in BACKENDS, reason="needs the cuda backend and a GPU")

SLEEP_CYCLES = 100_000_000
# (algo, x shape, weight shape, conv kwargs): 3x3 with stride and padding, grouped, depthwise,
# a strided 1x1, a 1x1 over many channels (the big GEMM tile), a 7x7 stride-2 stem.
CASES = [
    ("im2col", (3, 13, 19, 17), (29, 13, 3, 3), dict(stride=1, padding=1)),
    ("im2col", (2, 12, 15, 16), (18, 4, 3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=3)),
    ("direct", (3, 13, 19, 17), (29, 13, 3, 3), dict(stride=1, padding=1)),
    ("direct", (2, 32, 28, 28), (32, 1, 3, 3), dict(stride=1, padding=1, groups=32)),
    ("direct", (2, 16, 29, 27), (32, 1, 3, 3), dict(stride=2, padding=1, groups=16)),
    ("direct", (2, 3, 45, 45), (16, 3, 7, 7), dict(stride=2, padding=3)),
    ("1x1", (2, 24, 17, 19), (40, 24, 1, 1), dict(stride=2)),
    ("1x1", (4, 96, 28, 28), (256, 96, 1, 1), dict()),
]


def _passes(x, w, b, gy, algo, kw):
    """Every convolution entry point (plus autograd for torch tensors): name -> result."""
    out = {"fwd": CF.conv2d(x, w, b, algo=algo, **kw),
           "bwd_input": CF.conv2d_backward_input(gy, w, tuple(x.shape), algo=algo, **kw),
           "bwd_weight": CF.conv2d_backward_weight(gy, x, tuple(w.shape), algo=algo, **kw),
           "bwd_bias": CF.conv2d_backward_bias(gy)}
    if isinstance(x, torch.Tensor):
        xg, wg, bg = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
        CF.conv2d(xg, wg, bg, algo=algo, **kw).backward(gy)
        out.update({"autograd.x": xg.grad, "autograd.w": wg.grad, "autograd.b": bg.grad})
    return out


def _reference(x, w, b, gy, kw):
    xd, wd, bd = (t.detach().cpu().double().requires_grad_(True) for t in (x, w, b))
    y = F.conv2d(xd, wd, bd, **kw)
    dx, dw, db = torch.autograd.grad(y, (xd, wd, bd), gy.cpu().double())
    return {"fwd": y.detach(), "bwd_input": dx, "bwd_weight": dw, "bwd_bias": db,
            "autograd.x": dx, "autograd.w": dw, "autograd.b": db}


def _check(out, ref, dtype, w_shape, y_shape):
    for name, got in out.items():
        got = torch.from_numpy(got.get()) if not isinstance(got, torch.Tensor) else got.cpu()
        red = {"fwd": w_shape[1] * w_shape[2] * w_shape[3], "bwd_input": w_shape[0] * w_shape[2] * w_shape[3]}
        L = red.get(name.replace("autograd.x", "bwd_input"), y_shape[0] * y_shape[2] * y_shape[3])
        assert_close(got, ref[name], dtype, L=L, scale=4.0, what=name)


def _side_stream_copy(src, stream):
    with torch.cuda.stream(stream):
        x = torch.full_like(src, float("nan"))
        torch.cuda._sleep(SLEEP_CYCLES)
        x.copy_(src)
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("algo,xs,ws,kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_conv_on_a_side_stream(algo, xs, ws, kw, dtype):
    x0, w0, b0 = rand(xs, dtype, "cuda"), rand(ws, dtype, "cuda"), rand((ws[0],), dtype, "cuda")
    gy0 = rand(F.conv2d(x0, w0, None, **kw).shape, dtype, "cuda")
    ref = _reference(x0, w0, b0, gy0, kw)
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    x, w, b, gy = (_side_stream_copy(t, s) for t in (x0, w0, b0, gy0))
    with convkit.use_backend("cuda"), torch.cuda.stream(s):
        out = _passes(x, w, b, gy, algo, kw)
    s.synchronize()
    _check(out, ref, dtype, ws, tuple(gy0.shape))


@pytest.mark.parametrize("algo,xs,ws,kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_conv_is_deterministic(algo, xs, ws, kw):
    x, w, b = rand(xs, torch.float32, "cuda"), rand(ws, torch.float32, "cuda"), rand((ws[0],), torch.float32, "cuda")
    gy = rand(F.conv2d(x, w, None, **kw).shape, torch.float32, "cuda")
    first = _passes(x, w, b, gy, algo, kw)
    for _ in range(3):
        again = _passes(x, w, b, gy, algo, kw)
        for name in first:
            assert torch.equal(first[name], again[name]), f"{name} differs between runs"


@pytest.mark.parametrize("algo,xs,ws,kw", CASES[:1] + CASES[3:4] + CASES[6:7], ids=["im2col", "depthwise", "1x1"])
def test_conv_cupy_on_its_current_stream(algo, xs, ws, kw):
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(4)
    host = [rng.standard_normal(s).astype(np.float32) for s in (xs, ws, (ws[0],))]
    x0, w0, b0 = (torch.from_numpy(h) for h in host)
    gy_host = rng.standard_normal(tuple(F.conv2d(x0, w0, None, **kw).shape)).astype(np.float32)
    ref = _reference(x0, w0, b0, torch.from_numpy(gy_host), kw)
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        big = cp.ones((2048, 2048), cp.float32)
        for _ in range(8):  # keep the stream busy before the inputs are written
            big = big @ big * 1e-3
        x, w, b, gy = (cp.asarray(h) for h in (*host, gy_host))
        out = _passes(x, w, b, gy, algo, kw)
    s.synchronize()
    for name, got in out.items():
        assert isinstance(got, cp.ndarray), f"{name}: {type(got).__name__}"
    _check(out, ref, torch.float32, ws, gy_host.shape)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("algo", ["direct", "im2col", "1x1"])
def test_conv_on_second_gpu(algo):
    ws = (12, 8, 1, 1) if algo == "1x1" else (12, 8, 3, 3)
    x, w, b = rand((2, 8, 13, 11), torch.float32, "cuda:1"), rand(ws, torch.float32, "cuda:1"), \
        rand((12,), torch.float32, "cuda:1")
    gy = rand(F.conv2d(x, w, None).shape, torch.float32, "cuda:1")
    with torch.cuda.device(0):
        out = _passes(x, w, b, gy, algo, {})
    torch.cuda.synchronize(1)
    for name, got in out.items():
        assert got.device == x.device, name
    _check(out, _reference(x, w, b, gy, {}), torch.float32, ws, tuple(gy.shape))
