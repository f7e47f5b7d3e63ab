"""float16 and bfloat16 convolutions on the backends built with half types (the CUDA kernels:
"cuda", and "cudasim" on the emulator), float32 accumulation inside; every algorithm, forward,
grad input, grad weight and grad bias, through autograd, the public backward functions, NumPy
arrays and nn.Conv2d.

The criterion is flash-attention's: our error may be at most twice torch's own error at that
precision, both measured against the same reference. The reference is torch's conv2d in float64
on the CPU from the very half values we were given (inputs, weights and output gradients rounded
to the half type first), i.e. a float32-or-better answer to the question the half kernel was
asked. torch's error is that of torch's own conv2d in the half dtype on the CPU (torch 2.13 runs
float16 and bfloat16 convolutions there, forward and backward: bfloat16 through oneDNN, float16
through its native kernels), but never taken below the error of the correctly rounded reference,
the best any result in that dtype can be: where torch happens to be exact on a shape, we are
still allowed one rounding. Each error is the largest elementwise |result - reference|.
"""
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import convkit
import convkit.functional as CF
import convkit.nn as cnn
from convkit._algos import check_conv

from conftest import HALF_BACKENDS, HALF_DTYPES, device_of, dtype_id, dtypes_of, rand, ref_conv2d

pytestmark = pytest.mark.skipif(not HALF_BACKENDS, reason="no backend with float16/bfloat16 kernels is available")


# (id, x shape, w shape, bias, conv kwargs): what breaks kernels, in the half types.
CASES = [
    ("3x3_pad1", (2, 8, 9, 7), (6, 8, 3, 3), True, dict(padding=1)),
    ("1x1_stride2", (2, 12, 9, 9), (10, 12, 1, 1), True, dict(stride=2)),
    ("1x1_grouped", (1, 6, 7, 5), (9, 2, 1, 1), False, dict(groups=3)),
    ("depthwise", (1, 6, 9, 9), (6, 1, 3, 3), True, dict(padding=1, groups=6)),
    ("grouped_strided_dilated", (2, 8, 11, 9), (8, 4, 3, 3), True, dict(stride=2, padding=2, dilation=2, groups=2)),
    ("same_even_kernel", (1, 5, 8, 7), (4, 5, 2, 4), False, dict(padding="same")),
    # a reduction of 576 terms: a sum accumulated in the half type itself misses by far more
    ("long_reduction", (1, 64, 7, 7), (16, 64, 3, 3), True, dict(padding=1)),
]

# multi-tile GEMMs with edge tiles and split-K (gemm.cuh's 64 x 64 tiles) in the half types
MEDIUM = [
    ("medium_3x3", (2, 20, 15, 15), (130, 20, 3, 3), True, dict(padding=1)),
    ("medium_1x1_stride2", (2, 40, 17, 17), (70, 40, 1, 1), True, dict(stride=2)),
]


def _applies(algo, x_shape, w_shape, kw):
    """Whether `algo` computes the case: the argument check's rule (the registry's)."""
    try:
        check_conv("t", x_shape, w_shape, "float32", "float32", **kw, algo=algo)
    except ValueError:
        return False
    return True


def _params(cases):
    return [pytest.param(b, dt, algo, c, id=f"{b}-{dtype_id(dt)}-{algo}-{c[0]}")
            for b in HALF_BACKENDS for dt in dtypes_of(b, half=True) for c in cases for algo in _algos(b)
            if _applies(algo, c[1], c[2], c[4])]


def _algos(backend):
    """Every algorithm the backend's module builds (the registry), and auto."""
    return list(convkit._backend.module(backend).conv_algos()) + ["auto"]


def _max_err(t, ref):
    return (t.detach().cpu().double() - ref).abs().max().item()


def assert_half_conv_error(ours, theirs, ref, dtype, what):
    """max |ours - ref| <= 2 * max(max |theirs - ref|, max |round(ref) - ref|); no NaN (an
    unwritten output under CONVKIT_POISON)."""
    assert ours.dtype == dtype, f"{what}: dtype {ours.dtype} != {dtype}"
    assert tuple(ours.shape) == tuple(ref.shape), f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    assert not torch.isnan(ours.detach().cpu()).any(), f"{what}: NaN in the result (unwritten output?)"
    e_ours = _max_err(ours, ref)
    e_torch = _max_err(theirs, ref)
    e_round = _max_err(ref.to(dtype), ref)
    allowed = 2 * max(e_torch, e_round)
    assert e_ours <= allowed, (f"{what}: max error {e_ours:.3e}; torch's {e_torch:.3e}, correct rounding's "
                               f"{e_round:.3e} (allowed: twice the larger, {allowed:.3e}); |ref| up to "
                               f"{ref.abs().max().item():.3e}")


def _inputs(case, dtype, dev):
    name, xs, ws, bias, kw = case
    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    x = rand(xs, dtype, dev, gen)
    w = rand(ws, dtype, dev, gen)
    b = rand((ws[0],), dtype, dev, gen) if bias else None
    y_shape = F.conv2d(torch.zeros(xs, dtype=torch.float64), torch.zeros(ws, dtype=torch.float64), None, **kw).shape
    g = rand(y_shape, dtype, dev, gen)
    return x, w, b, g


def _torch_half(x, w, b, g, kw):
    """torch's own forward and gradients in the half dtype, on the CPU."""
    xt = x.detach().cpu().clone().requires_grad_(True)
    wt = w.detach().cpu().clone().requires_grad_(True)
    bt = b.detach().cpu().clone().requires_grad_(True) if b is not None else None
    yt = F.conv2d(xt, wt, bt, **kw)
    yt.backward(g.cpu())
    return {"y": yt.detach(), "gx": xt.grad, "gw": wt.grad, "gb": bt.grad if bt is not None else None}


def _check_all(backend, dtype, algo, case):
    _, _, _, _, kw = case
    dev = device_of(backend)
    x, w, b, g = _inputs(case, dtype, dev)
    xa, wa = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    ba = b.clone().requires_grad_(True) if b is not None else None
    with convkit.use_backend(backend):
        y = CF.conv2d(xa, wa, ba, algo=algo, **kw)
        y.backward(g)
        gx = CF.conv2d_backward_input(g, w, tuple(x.shape), algo=algo, **kw)
        gw = CF.conv2d_backward_weight(g, x, tuple(w.shape), algo=algo, **kw)
        gb = CF.conv2d_backward_bias(g)
    ref = ref_conv2d(x, w, b, grad_out=g, **kw)
    theirs = _torch_half(x, w, b, g, kw)
    assert_half_conv_error(y, theirs["y"], ref["y"], dtype, "forward")
    assert_half_conv_error(xa.grad, theirs["gx"], ref["gx"], dtype, "grad input (autograd)")
    assert_half_conv_error(wa.grad, theirs["gw"], ref["gw"], dtype, "grad weight (autograd)")
    assert_half_conv_error(gx, theirs["gx"], ref["gx"], dtype, "conv2d_backward_input")
    assert_half_conv_error(gw, theirs["gw"], ref["gw"], dtype, "conv2d_backward_weight")
    ref_gb = g.detach().cpu().double().sum((0, 2, 3))
    theirs_gb = theirs["gb"] if theirs["gb"] is not None else g.cpu().sum((0, 2, 3))
    assert_half_conv_error(gb, theirs_gb, ref_gb, dtype, "conv2d_backward_bias")
    if b is not None:
        assert_half_conv_error(ba.grad, theirs["gb"], ref["gb"], dtype, "grad bias (autograd)")


@pytest.mark.parametrize("backend,dtype,algo,case", _params(CASES))
def test_half_conv2d(backend, dtype, algo, case):
    _check_all(backend, dtype, algo, case)


@pytest.mark.parametrize("backend,dtype,algo,case", _params(MEDIUM))
def test_half_conv2d_medium(backend, dtype, algo, case):
    """Bigger than a GEMM tile in every direction, with edge tiles and split-K grad weight."""
    _check_all(backend, dtype, algo, case)


@pytest.mark.parametrize("backend", HALF_BACKENDS)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=dtype_id)
def test_half_conv2d_channels_last_and_nn(backend, dtype):
    """nn.Conv2d converted to a half type, channels_last input: torch's output dtype and memory
    format; the parameters' gradients in the half type too."""
    dev = device_of(backend)
    torch.manual_seed(3)
    ref_layer = torch.nn.Conv2d(6, 8, 3, padding=1).to(dtype)
    layer = cnn.Conv2d(6, 8, 3, padding=1).to(dtype)
    layer.load_state_dict(ref_layer.state_dict())
    layer.to(dev)
    x = rand((2, 6, 9, 8), dtype, dev).to(memory_format=torch.channels_last).requires_grad_(True)
    with convkit.use_backend(backend):
        y = layer(x)
        g = rand(y.shape, dtype, dev)
        y.backward(g)
    xt = x.detach().cpu().clone().requires_grad_(True)
    yt = ref_layer(xt)
    yt.backward(g.cpu())
    assert y.is_contiguous(memory_format=torch.channels_last) == yt.is_contiguous(memory_format=torch.channels_last)
    ref = ref_conv2d(x, layer.weight, layer.bias, padding=1, grad_out=g)
    assert_half_conv_error(y, yt, ref["y"], dtype, "forward")
    assert_half_conv_error(x.grad, xt.grad, ref["gx"], dtype, "grad input")
    assert layer.weight.grad.dtype == dtype and layer.bias.grad.dtype == dtype
    assert_half_conv_error(layer.weight.grad, ref_layer.weight.grad, ref["gw"], dtype, "grad weight")
    assert_half_conv_error(layer.bias.grad, ref_layer.bias.grad, ref["gb"], dtype, "grad bias")


@pytest.mark.parametrize("backend", [b for b in HALF_BACKENDS if b != "cuda"])
@pytest.mark.parametrize("algo", ["direct", "im2col", "auto"])
def test_half_conv2d_numpy_float16(backend, algo):
    """NumPy float16 arrays on a host backend with half kernels: float16 out of every pass."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 5, 9, 8)).astype(np.float16)
    w = rng.standard_normal((4, 5, 3, 3)).astype(np.float16)
    b = rng.standard_normal((4,)).astype(np.float16)
    g = rng.standard_normal((2, 4, 9, 8)).astype(np.float16)
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, b, padding=1, algo=algo)
        gx = CF.conv2d_backward_input(g, w, x.shape, padding=1, algo=algo)
        gw = CF.conv2d_backward_weight(g, x, w.shape, padding=1, algo=algo)
        gb = CF.conv2d_backward_bias(g)
    for out in (y, gx, gw, gb):
        assert isinstance(out, np.ndarray) and out.dtype == np.float16
    xt, wt, bt, gt = (torch.from_numpy(a) for a in (x, w, b, g))
    ref = ref_conv2d(xt, wt, bt, padding=1, grad_out=gt)
    theirs = _torch_half(xt, wt, bt, gt, dict(padding=1))
    for name, ours, key in (("forward", y, "y"), ("grad input", gx, "gx"), ("grad weight", gw, "gw"),
                            ("grad bias", gb, "gb")):
        assert_half_conv_error(torch.from_numpy(ours), theirs[key], ref[key], torch.float16, name)


@pytest.mark.parametrize("backend", HALF_BACKENDS)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=dtype_id)
def test_half_conv2d_opcheck(backend, dtype):
    """torch.library.opcheck on half convolutions: the fake (meta) implementations report the
    dtype, shape and strides of the real ones, and autograd is registered right."""
    dev = device_of(backend)
    x = rand((2, 4, 6, 5), dtype, dev).requires_grad_(True)
    w = rand((6, 2, 3, 3), dtype, dev).requires_grad_(True)
    b = rand((6,), dtype, dev).requires_grad_(True)
    with convkit.use_backend(backend):
        torch.library.opcheck(torch.ops.convkit.conv2d.default,
                              (x, w, b, [1, 1], [1, 1, 1, 1], [1, 1], 2, "im2col"),
                              test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
        g = rand((2, 6, 6, 5), dtype, dev)
        torch.library.opcheck(torch.ops.convkit.conv2d_backward_bias.default, (g,),
                              test_utils=("test_schema", "test_faketensor"))


@pytest.mark.skipif("cuda" not in HALF_BACKENDS, reason="needs the cuda backend and a GPU")
@pytest.mark.parametrize("algo", ["direct", "im2col", "auto"])
def test_half_conv2d_cupy_float16(algo):
    """CuPy float16 arrays: CuPy float16 out of every pass, on CuPy's current stream."""
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(12)
    host = [rng.standard_normal(s).astype(np.float16) for s in ((2, 5, 9, 8), (4, 5, 3, 3), (4,), (2, 4, 9, 8))]
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        x, w, b, g = (cp.asarray(a) for a in host)
        y = CF.conv2d(x, w, b, padding=1, algo=algo)
        gx = CF.conv2d_backward_input(g, w, x.shape, padding=1, algo=algo)
        gw = CF.conv2d_backward_weight(g, x, w.shape, padding=1, algo=algo)
        gb = CF.conv2d_backward_bias(g)
    s.synchronize()
    xt, wt, bt, gt = (torch.from_numpy(a) for a in host)
    ref = ref_conv2d(xt, wt, bt, padding=1, grad_out=gt)
    theirs = _torch_half(xt, wt, bt, gt, dict(padding=1))
    for name, ours, key in (("forward", y, "y"), ("grad input", gx, "gx"), ("grad weight", gw, "gw"),
                            ("grad bias", gb, "gb")):
        assert isinstance(ours, cp.ndarray) and ours.dtype == np.float16, name
        assert_half_conv_error(torch.from_numpy(ours.get()), theirs[key], ref[key], torch.float16, name)
