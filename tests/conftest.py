"""Shared fixtures and helpers for the convkit tests.

CONVKIT_POISON=1 is set before convkit is imported: every output and workspace the Python layer
allocates is NaN-filled before a kernel runs, so an element a kernel forgets to write fails the
comparison below (NaN never compares close to a finite reference).

References are torch's own ops in float64 on the CPU (inputs upcast), so a float32 result is
compared against the exact-ish answer, not against torch's own float32 rounding.
"""
import os

os.environ["CONVKIT_POISON"] = "1"

import math  # noqa: E402
import random  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import convkit  # noqa: E402
import convkit._backend  # noqa: E402
import convkit.functional  # noqa: E402,F401  (registers the torch.ops.convkit ops)

# Every backend that can run here by default: "cpu", "cudasim" (the CUDA kernels on the
# emulator) and "cuda" where torch sees a GPU (a _cuda built by nvcc on a machine without one is
# not available). CONVKIT_TEST_BACKENDS="cpu,cudasim" picks a subset (CI can run the slow emulator
# in a job of its own).
_wanted = [b for b in os.environ.get("CONVKIT_TEST_BACKENDS", "").split(",") if b]
BACKENDS = [b for b in convkit.available_backends()
            if (b != "cuda" or torch.cuda.is_available()) and (not _wanted or b in _wanted)]
DTYPES = [torch.float32, torch.float64]
HALF_DTYPES = [torch.float16, torch.bfloat16]
# The backends whose kernels (convolutions, pooling, ReLU) take float16 / bfloat16 (the CUDA modules).
HALF_BACKENDS = [b for b in BACKENDS if "float16" in convkit._backend.dtypes(b)]


def dtypes_of(backend, half=False):
    """The dtypes `backend`'s module takes, as it reports them (convkit._backend.dtypes: the
    module's has_half), full-precision ones or (half=True) the half types: what the parity
    sweeps run, so a dtype a module gains is swept with no edit to them."""
    names = convkit._backend.dtypes(backend)
    want = HALF_DTYPES if half else DTYPES
    return [getattr(torch, n) for n in names if getattr(torch, n) in want]

# Relative tolerance of one rounding in each dtype, used as the per-term error of a sum.
_UNIT = {torch.float32: 2e-6, torch.float64: 1e-14, torch.float16: 1e-3, torch.bfloat16: 8e-3}


def device_of(backend):
    """Where a backend's tensors live: the real GPU for "cuda", the host otherwise (the
    emulator "cudasim" runs the CUDA sources on host memory)."""
    return "cuda" if backend == "cuda" else "cpu"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    yield


def dtype_id(dt):
    return str(dt).replace("torch.", "")


def rand(shape, dtype=torch.float64, device="cpu", gen=None):
    """Standard-normal values (float64 draw, then cast, so both dtypes see the same numbers)."""
    t = torch.randn(shape, dtype=torch.float64, generator=gen)
    return t.to(dtype=dtype, device=device)


def small_ints(shape, dtype=torch.float32, device="cpu", gen=None, lo=-8, hi=7):
    """Integers in [lo, hi] stored as floats: every product and partial sum of a few thousand of
    them is an exact float32 integer, so results can be compared bit for bit."""
    t = torch.randint(lo, hi + 1, shape, generator=gen).to(torch.float64)
    return t.to(dtype=dtype, device=device)


def distinct_values(shape, dtype=torch.float64, device="cpu", gen=None):
    """A random permutation of 0..n-1 scaled: no ties anywhere (max-pool gradchecks)."""
    n = 1
    for d in shape:
        n *= d
    perm = torch.randperm(n, generator=gen).to(torch.float64)
    return (perm / max(n, 1) * 4 - 2).reshape(shape).to(dtype=dtype, device=device)


def tolerances(dtype, reduction_length=1, scale=1.0):
    """(rtol, atol) for a result that is a sum of `reduction_length` terms of magnitude `scale`.

    float32: ~2e-6 per term, grown with sqrt(L) (random-walk rounding), times a small factor; for
    L = 300 that is ~1e-4 relative to the term size: tight enough that one missing or extra term
    (an error of order `scale`) fails.
    float64: ~1e-10 relative."""
    L = max(int(reduction_length), 1)
    if dtype == torch.float64:
        return 1e-10, 1e-12 * math.sqrt(L) * scale
    if dtype in HALF_DTYPES:  # float32 accumulation, one final rounding to the half type
        return _UNIT[dtype], _UNIT[dtype] * scale
    return 1e-5, 4 * _UNIT[dtype] * math.sqrt(L) * scale


def assert_close(actual, expected, dtype=None, L=1, scale=1.0, equal_nan=False, what=""):
    """Compare a convkit result with a float64 reference; NaN in `actual` always fails unless
    `equal_nan` and the reference has NaN in the same place."""
    if isinstance(actual, np.ndarray):
        actual = torch.from_numpy(actual)
    if isinstance(expected, np.ndarray):
        expected = torch.from_numpy(expected)
    dtype = dtype or actual.dtype
    assert tuple(actual.shape) == tuple(expected.shape), (
        f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype} != {dtype}"
    a = actual.detach().cpu().to(torch.float64)
    e = expected.detach().cpu().to(torch.float64)
    rtol, atol = tolerances(dtype, L, scale)
    nan_a, nan_e = torch.isnan(a), torch.isnan(e)
    if equal_nan:
        assert torch.equal(nan_a, nan_e), (
            f"{what}: NaN pattern differs: {int((nan_a != nan_e).sum())} elements; "
            f"first at {_first(nan_a != nan_e)}")
    else:
        assert not nan_a.any(), (
            f"{what}: {int(nan_a.sum())} NaN elements (unwritten output under CONVKIT_POISON?) "
            f"first at {_first(nan_a)}")
    ok = (a - e).abs() <= atol + rtol * e.abs()
    ok |= nan_a & nan_e
    ok |= (a == e)  # infinities
    if not bool(ok.all()):
        bad = ~ok
        i = _first(bad)
        err = (a - e).abs()
        err[~bad] = 0
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{a.numel()} elements differ (rtol={rtol:.1e}, atol={atol:.1e}); "
            f"first at {i}: got {a[i].item()!r}, expected {e[i].item()!r}; max abs err {err.max().item():.3e}")


def assert_bitwise(actual, expected, what=""):
    """Exact comparison (small-integer tests, exact ops); NaN matches NaN in the same place."""
    if isinstance(actual, np.ndarray):
        actual = torch.from_numpy(actual)
    a = actual.detach().cpu()
    e = expected.detach().cpu().to(a.dtype)
    assert tuple(a.shape) == tuple(e.shape), f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    same = (a == e) | (torch.isnan(a) & torch.isnan(e)) if a.is_floating_point() else (a == e)
    if not bool(same.all()):
        bad = ~same
        i = _first(bad)
        raise AssertionError(
            f"{what}: {int(bad.sum())}/{a.numel()} elements differ; first at {i}: "
            f"got {a[i].item()!r}, expected {e[i].item()!r}")


def _first(mask):
    idx = torch.nonzero(mask)
    return tuple(idx[0].tolist()) if len(idx) else None


# ---------------------------------------------------------------------------------------------
# float64 torch references
# ---------------------------------------------------------------------------------------------

def _f64(t, requires_grad=False):
    r = t.detach().cpu().to(torch.float64).contiguous()
    if requires_grad:
        r.requires_grad_(True)
    return r


def ref_conv2d(x, w, b, stride=1, padding=0, dilation=1, groups=1, grad_out=None):
    """float64 forward (and grads given grad_out) of torch.nn.functional.conv2d.

    Returns dict with y and, if grad_out is given, gx, gw, gb (gb None without bias)."""
    xr, wr = _f64(x, True), _f64(w, True)
    br = _f64(b, True) if b is not None else None
    y = F.conv2d(xr, wr, br, stride=stride, padding=padding, dilation=dilation, groups=groups)
    out = {"y": y.detach()}
    if grad_out is not None:
        gx, gw, *gb = torch.autograd.grad(y, [xr, wr] + ([br] if br is not None else []),
                                          _f64(grad_out), allow_unused=True)
        out["gx"] = gx if gx is not None else torch.zeros_like(xr)
        out["gw"] = gw if gw is not None else torch.zeros_like(wr)
        out["gb"] = (gb[0] if gb[0] is not None else torch.zeros_like(br)) if gb else None
    return out


def ref_max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, grad_out=None):
    xr = _f64(x, True)
    y, idx = F.max_pool2d(xr, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
    out = {"y": y.detach(), "idx": idx}
    if grad_out is not None:
        (out["gx"],) = torch.autograd.grad(y, [xr], _f64(grad_out))
    return out


def ref_avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                   divisor_override=None, grad_out=None):
    xr = _f64(x, True)
    y = F.avg_pool2d(xr, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    out = {"y": y.detach()}
    if grad_out is not None:
        (out["gx"],) = torch.autograd.grad(y, [xr], _f64(grad_out))
    return out


def pair(v):
    if isinstance(v, int):
        return (v, v)
    v = tuple(v)
    return (v[0], v[0]) if len(v) == 1 else v


def conv_out_hw(H, W, R, S, stride, padding, dilation):
    """torch's output size, or None when torch would reject the shape."""
    sh, sw = pair(stride)
    dh, dw = pair(dilation)
    if padding == "valid":
        pt = pb = pl = pr = 0
    elif padding == "same":
        th, tw = dh * (R - 1), dw * (S - 1)
        pt, pb, pl, pr = th // 2, th - th // 2, tw // 2, tw - tw // 2
    else:
        ph, pw = pair(padding)
        pt = pb = ph
        pl = pr = pw
    P = (H + pt + pb - dh * (R - 1) - 1) // sh + 1
    Q = (W + pl + pr - dw * (S - 1) - 1) // sw + 1
    if H + pt + pb - dh * (R - 1) - 1 < 0 or W + pl + pr - dw * (S - 1) - 1 < 0:
        return None
    return P, Q


def is_channels_last(t):
    return t.is_contiguous(memory_format=torch.channels_last)


def raises_checked(fn, bases, match_words=(), tensors=()):
    """Calls fn, requires an exception that is a RuntimeError and one of `bases`, whose message
    contains every word of `match_words` (case-insensitive), and that every tensor in `tensors`
    is unchanged afterwards. Returns the exception."""
    snapshots = [(t, t.detach().clone()) for t in tensors]
    with pytest.raises(Exception) as info:
        fn()
    e = info.value
    assert isinstance(e, RuntimeError), f"{type(e).__mro__} is not a RuntimeError: {e}"
    assert isinstance(e, bases), f"{type(e).__mro__} is not a {bases}: {e}"
    msg = str(e).lower()
    for w in match_words:
        assert str(w).lower() in msg, f"message does not name {w!r}: {e}"
    for t, snap in snapshots:
        assert torch.equal(t.detach(), snap) or (
            torch.isnan(snap).any() and torch.equal(torch.nan_to_num(t.detach()), torch.nan_to_num(snap))), \
            "the caller's tensor was modified by a failing call"
    return e


def one_image_workspace(backend, x_shape, w_shape, dtype, algo="im2col", **kw):
    """The workspace cap that lets `algo` take one image a chunk in every pass: the largest of
    the passes' smallest workspaces (the size query with a 1-byte cap)."""
    import convkit._kernels as kernels
    from convkit._algos import check_conv
    mod = convkit._backend.module(backend)
    args = check_conv("test", x_shape, w_shape, dtype, dtype, **kw, algo=algo)
    p = kernels._conv_params(mod, x_shape, w_shape, args)
    return max(mod.conv2d_workspace_bytes(algo, kind, dtype_id(dtype), p, 1) for kind in ("fwd", "bwd_input", "bwd_weight"))


# ---- the race detector's build (make test-racecheck) ------------------------------------------

def pytest_configure(config):
    config.addinivalue_line(
        "markers", "racy: runs a kernel that races or reads unwritten shared memory on purpose (a test of the "
                   "emulator's schedule or poison); the race detector is turned off for it in its build")


@pytest.fixture(autouse=True)
def _racecheck_off_for_racy_kernels(request, monkeypatch):
    """In the race detector's build (CONVKIT_CUDASIM_SO pointing at it), a test marked `racy`
    runs with the detector off, in this process and in the subprocesses it starts."""
    if request.node.get_closest_marker("racy") is None or "cudasim" not in convkit.available_backends():
        yield
        return
    mod = convkit._backend.module("cudasim")
    if not mod.sim_racecheck_built():
        yield
        return
    was = mod.sim_racecheck()
    mod.sim_set_racecheck(False)
    monkeypatch.setenv("CONVKIT_SIM_RACECHECK", "0")
    try:
        yield
    finally:
        mod.sim_set_racecheck(was)

