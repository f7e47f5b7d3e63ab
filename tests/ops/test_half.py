"""float16 and bfloat16 pooling and ReLU on the backends built with half types (the CUDA kernels:
"cuda", and "cudasim" on the emulator), float32 accumulation inside.

A max pool and a ReLU only select values, so they are exact: compared bit for bit (indices and
NaN included). Average pooling and the gradients that sum (overlapping max-pool windows, every
avg-pool gradient) are compared with a float64 reference computed from the same half values:
our error may be at most twice torch's own error at that precision (torch's CPU half ops against
the same reference), the flash-attention criterion; and, since the kernels accumulate in float32
and round once, every element within one unit in the last place of the correctly rounded
reference (which a sum accumulated in the half type itself misses by several).
"""
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import convkit
import convkit.functional as CF

from conftest import (HALF_BACKENDS, HALF_DTYPES, assert_bitwise, device_of, dtype_id, rand,
                      ref_avg_pool2d, ref_max_pool2d)
from test_pool import _ap_kw, _avg_cases, _max_cases, _mp_kw, _pool_case_id

pytestmark = pytest.mark.skipif(not HALF_BACKENDS, reason="no backend with float16/bfloat16 kernels is available")

PARAMS = [pytest.param(b, dt, id=f"{b}-{dtype_id(dt)}") for b in HALF_BACKENDS for dt in HALF_DTYPES]

MAX_CASES = [  # (N, C, H, W), kwargs; overlapping windows make the backward add several gradients
    ((2, 5, 13, 11), dict(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True)),
    ((1, 3, 5, 5), dict(kernel_size=2, stride=3, padding=1, dilation=1, ceil_mode=True)),    # dropped window
    ((2, 3, 9, 8), dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1), ceil_mode=False)),
    ((1, 4, 7, 7), dict(kernel_size=3, stride=1, padding=0, dilation=1, ceil_mode=False)),
]
AVG_CASES = [
    ((2, 5, 13, 11), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False,
                          divisor_override=None)),
    ((1, 3, 5, 5), dict(kernel_size=2, stride=3, padding=1, ceil_mode=True, count_include_pad=True,
                        divisor_override=None)),
    ((2, 3, 7, 7), dict(kernel_size=(5, 3), stride=1, padding=(2, 1), ceil_mode=False, count_include_pad=True,
                        divisor_override=3)),
    ((1, 4, 7, 7), dict(kernel_size=7, stride=1, padding=0, ceil_mode=False, count_include_pad=True,
                        divisor_override=None)),   # GoogLeNet's global average pool
]


# a few shapes from test_pool's random sweep (its generators, other seeds)
MAX_CASES += [((c["N"], c["C"], c["H"], c["W"]), _mp_kw(c)) for c in _max_cases(6, seed=16)]
AVG_CASES += [((c["N"], c["C"], c["H"], c["W"]), _ap_kw(c)) for c in _avg_cases(6, seed=17)]


def _case_id(c):
    shape, kw = c
    return _pool_case_id(dict(zip("NCHW", shape), **kw))


def _max_err(t, ref):
    return (t.detach().double().cpu() - ref).abs().max().item()


def assert_half_error(ours, torch_ours, ref, dtype, what):
    """|ours - ref| at most twice |torch's - ref| (elementwise maxima; torch's half result computed
    by torch on the CPU). Where torch is exact, so must we be."""
    assert ours.dtype == dtype, f"{what}: dtype {ours.dtype} != {dtype}"
    assert tuple(ours.shape) == tuple(ref.shape), f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    assert not torch.isnan(ours.detach().cpu()).any(), f"{what}: NaN in the result (unwritten output?)"
    e_ours, e_torch = _max_err(ours, ref), _max_err(torch_ours, ref)
    assert e_ours <= 2 * e_torch, f"{what}: max error {e_ours:.3e}, torch's {e_torch:.3e} (allowed: twice)"
    rounded = ref.to(dtype).double()
    fi = torch.finfo(dtype)
    ulp = torch.exp2(torch.floor(torch.log2(rounded.abs().clamp_min(fi.smallest_normal)))) * fi.eps
    # (plus float32's own accumulation error, which shows where a sum cancels to nearly 0)
    slack = 1e-5 * ref.abs().max().item()
    off = ((ours.detach().cpu().double() - rounded).abs() - slack).clamp_min(0) / ulp
    assert off.max().item() <= 1.0, (
        f"{what}: {int((off > 1).sum())} elements more than one ulp from the rounded float64 result "
        f"(worst {off.max().item():.1f} ulp): not float32 accumulation with one rounding?")


def _inputs(shape, dtype, dev, seed_text):
    gen = torch.Generator().manual_seed(zlib.crc32(seed_text.encode()))
    return rand(shape, dtype, dev, gen), gen


@pytest.mark.parametrize("backend,dtype", PARAMS)
@pytest.mark.parametrize("case", MAX_CASES, ids=_case_id)
def test_half_max_pool2d(backend, dtype, case):
    shape, kw = case
    dev = device_of(backend)
    x, gen = _inputs(shape, dtype, dev, _case_id(case))
    x.requires_grad_(True)
    with convkit.use_backend(backend):
        y, idx = CF.max_pool2d(x, **kw, return_indices=True)
        y_values = CF.max_pool2d(x.detach(), **kw)
        g = rand(y.shape, dtype, dev, gen)
        y.backward(g)
        gx = CF.max_pool2d_backward(g, tuple(x.shape), idx, **kw)
    ref = ref_max_pool2d(x, **kw, grad_out=g)
    assert y.dtype == dtype and idx.dtype == torch.int64
    assert_bitwise(y, ref["y"].to(dtype), "forward (a max of half values is exact)")
    assert_bitwise(y_values, ref["y"].to(dtype), "forward without indices")
    assert torch.equal(idx.cpu(), ref["idx"]), "indices differ from torch's"
    xt = x.detach().cpu().clone().requires_grad_(True)
    F.max_pool2d(xt, **kw).backward(g.cpu())
    assert_half_error(x.grad, xt.grad, ref["gx"], dtype, "grad input (autograd)")
    assert_half_error(gx, xt.grad, ref["gx"], dtype, "max_pool2d_backward")


@pytest.mark.parametrize("backend,dtype", PARAMS)
def test_half_max_pool2d_nan_and_ties(backend, dtype):
    """NaN propagates with torch's index; ties (half values in [-2, 2]) pick torch's index."""
    dev = device_of(backend)
    gen = torch.Generator().manual_seed(5)
    x = torch.randint(-2, 3, (2, 3, 9, 8), generator=gen).to(dtype)
    mask = torch.rand(x.shape, generator=gen) < 0.1
    x = x.masked_fill(mask, float("nan")).to(dev)
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    with convkit.use_backend(backend):
        y, idx = CF.max_pool2d(x, **kw, return_indices=True)
    ref = ref_max_pool2d(x, **kw)
    assert torch.isnan(ref["y"]).any()
    assert_bitwise(y, ref["y"].to(dtype), "forward with NaN and ties")
    assert torch.equal(idx.cpu(), ref["idx"]), "indices differ from torch's with NaN and ties"


@pytest.mark.parametrize("backend,dtype", PARAMS)
@pytest.mark.parametrize("case", AVG_CASES, ids=_case_id)
def test_half_avg_pool2d(backend, dtype, case):
    shape, kw = case
    dev = device_of(backend)
    x, gen = _inputs(shape, dtype, dev, _case_id(case))
    x.requires_grad_(True)
    with convkit.use_backend(backend):
        y = CF.avg_pool2d(x, **kw)
        g = rand(y.shape, dtype, dev, gen)
        y.backward(g)
        gx = CF.avg_pool2d_backward(g, tuple(x.shape), **kw)
    ref = ref_avg_pool2d(x, **kw, grad_out=g)
    xt = x.detach().cpu().clone().requires_grad_(True)
    yt = F.avg_pool2d(xt, **kw)
    yt.backward(g.cpu())
    assert_half_error(y, yt, ref["y"], dtype, "forward")
    assert_half_error(x.grad, xt.grad, ref["gx"], dtype, "grad input (autograd)")
    assert_half_error(gx, xt.grad, ref["gx"], dtype, "avg_pool2d_backward")


@pytest.mark.parametrize("backend,dtype", PARAMS)
@pytest.mark.parametrize("op", ["max", "avg"])
def test_half_pool_channels_last(backend, dtype, op):
    """channels_last half input: torch's output format, torch's values."""
    dev = device_of(backend)
    x = rand((2, 5, 9, 7), dtype, dev).to(memory_format=torch.channels_last)
    with convkit.use_backend(backend):
        y = CF.max_pool2d(x, 3, 2, 1) if op == "max" else CF.avg_pool2d(x, 3, 2, 1)
    yt = F.max_pool2d(x.cpu(), 3, 2, 1) if op == "max" else F.avg_pool2d(x.cpu(), 3, 2, 1)
    assert y.is_contiguous(memory_format=torch.channels_last) == yt.is_contiguous(memory_format=torch.channels_last)
    if op == "max":
        assert_bitwise(y, yt)
    else:
        assert_half_error(y, yt, F.avg_pool2d(x.cpu().double(), 3, 2, 1), dtype, "forward")


@pytest.mark.parametrize("backend,dtype", PARAMS)
@pytest.mark.parametrize("n", [1, 7, 8, 9, 63, 4099])
def test_half_relu(backend, dtype, n):
    """ReLU selects: bit-exact forward and backward (NaN, 0 and -0.0 included), on sizes around
    the vector width (8 half values in 16 bytes)."""
    dev = device_of(backend)
    x = rand((n,), dtype, dev)
    x[0] = 0.0
    if n > 2:
        x[1] = float("nan")
        x[-1] = -0.0
    x.requires_grad_(True)
    with convkit.use_backend(backend):
        y = CF.relu(x)
        g = rand((n,), dtype, dev)
        y.backward(g)
        gx = CF.relu_backward(g, y.detach())
    xt = x.detach().cpu().clone().requires_grad_(True)
    yt = torch.relu(xt)
    yt.backward(g.cpu())
    assert y.dtype == dtype
    assert_bitwise(y, yt, "forward")
    assert_bitwise(x.grad, xt.grad, "grad (autograd)")
    assert_bitwise(gx, xt.grad, "relu_backward")


@pytest.mark.parametrize("backend,dtype", PARAMS)
def test_half_relu_inplace(backend, dtype):
    dev = device_of(backend)
    x = rand((3, 5, 7), dtype, dev)
    expected = torch.relu(x.cpu())
    with convkit.use_backend(backend):
        assert CF.relu_(x) is x
    assert_bitwise(x, expected)


@pytest.mark.parametrize("backend", [b for b in HALF_BACKENDS if b != "cuda"])
def test_half_numpy_float16(backend):
    """NumPy float16 arrays on a host backend with half kernels: float16 out, torch's values."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float16)
    with convkit.use_backend(backend):
        y, idx = CF.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
        a = CF.avg_pool2d(x, 3, 2, 1, ceil_mode=True)
        r = CF.relu(x)
        ga = CF.avg_pool2d_backward(np.full(a.shape, 0.3, np.float16), x.shape, 3, 2, 1, ceil_mode=True)
    for out in (y, a, r, ga):
        assert isinstance(out, np.ndarray) and out.dtype == np.float16
    xt = torch.from_numpy(x)
    ry, ridx = F.max_pool2d(xt, 3, 2, 1, ceil_mode=True, return_indices=True)
    assert_bitwise(y, ry)
    np.testing.assert_array_equal(idx, ridx.numpy())
    assert_bitwise(r, torch.relu(xt))
    assert_half_error(torch.from_numpy(a), F.avg_pool2d(xt, 3, 2, 1, ceil_mode=True),
                      F.avg_pool2d(xt.double(), 3, 2, 1, ceil_mode=True), torch.float16, "avg forward")
    g = torch.full(a.shape, 0.3, dtype=torch.float16)
    x64, xh = xt.double().requires_grad_(True), xt.clone().requires_grad_(True)
    F.avg_pool2d(x64, 3, 2, 1, ceil_mode=True).backward(g.double())
    F.avg_pool2d(xh, 3, 2, 1, ceil_mode=True).backward(g)
    assert_half_error(torch.from_numpy(ga), xh.grad, x64.grad, torch.float16, "avg_pool2d_backward")
