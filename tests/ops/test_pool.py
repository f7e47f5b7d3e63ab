"""max_pool2d and avg_pool2d parity with torch: values, indices (exactly torch's), gradients
(autograd and the public backward functions), ceil_mode incl. the dropped last window,
count_include_pad, divisor_override, dilation, NaN propagation, ties, layouts."""
import random
import zlib

import pytest
import torch
import torch.nn.functional as F

import convkit
import convkit.flops
import convkit.functional as CF

from conftest import (BACKENDS, DTYPES, assert_bitwise, assert_close, device_of, dtype_id,
                      is_channels_last, pair, rand, ref_avg_pool2d, ref_max_pool2d, small_ints)

SIZES = [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13]
KERNELS = [1, 2, 3, 4, 5, (1, 3), (3, 2), (2, 4), (5, 3)]
STRIDES = [None, None, 1, 2, 3, (1, 2), (2, 3)]
DILATIONS = [1, 1, 2, (1, 2), 3]


def _torch_ok(fn):
    try:
        fn()
        return True
    except RuntimeError:
        return False


def _pool_case_id(c):
    def f(v):
        return "x".join(map(str, v)) if isinstance(v, tuple) else str(v)
    extra = "".join(f"_{k}{f(v)}" for k, v in c.items() if k not in ("N", "C", "H", "W"))
    return f"N{c['N']}C{c['C']}_{c['H']}x{c['W']}{extra}"


def _random_padding(rng, kernel):
    kh, kw = pair(kernel)
    ph, pw = rng.randint(0, kh // 2), rng.randint(0, kw // 2)
    return ph if ph == pw and rng.random() < 0.5 else (ph, pw)


def _has_empty_window(x, c):
    """With dilation a window can hold padding only (e.g. H = 1, k = 2, d = 2, pad = 1): torch then
    returns -inf with an index outside the plane, and its own backward writes out of bounds (heap
    corruption in the reference), so such shapes are left out of the sweep."""
    y = F.max_pool2d(x, c["kernel_size"], c["stride"], c["padding"], c["dilation"], c["ceil_mode"])
    return bool(torch.isinf(y).any())


def _max_cases(n, seed):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        k = rng.choice(KERNELS)
        c = dict(N=rng.choice([1, 2, 5]), C=rng.choice([1, 3, 5]), H=rng.choice(SIZES), W=rng.choice(SIZES),
                 kernel_size=k, stride=rng.choice(STRIDES), padding=_random_padding(rng, k),
                 dilation=rng.choice(DILATIONS), ceil_mode=rng.random() < 0.5)
        x = torch.zeros(max(c["N"], 1), c["C"], c["H"], c["W"])
        if _torch_ok(lambda: F.max_pool2d(x, c["kernel_size"], c["stride"], c["padding"], c["dilation"], c["ceil_mode"])) \
                and not _has_empty_window(x, c):
            out.append(c)
    return out


def _avg_cases(n, seed):
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        k = rng.choice(KERNELS)
        c = dict(N=rng.choice([1, 2, 5]), C=rng.choice([1, 3, 5]), H=rng.choice(SIZES), W=rng.choice(SIZES),
                 kernel_size=k, stride=rng.choice(STRIDES), padding=_random_padding(rng, k),
                 ceil_mode=rng.random() < 0.5, count_include_pad=rng.random() < 0.5,
                 divisor_override=rng.choice([None, None, 3]))
        x = torch.zeros(c["N"], c["C"], c["H"], c["W"])
        if _torch_ok(lambda: F.avg_pool2d(x, c["kernel_size"], c["stride"], c["padding"], c["ceil_mode"],
                                          c["count_include_pad"], c["divisor_override"])):
            out.append(c)
    return out


# The dropped last window: H = 5, k = 2, s = 3, pad = 1, ceil: floor gives 2 windows, ceil would
# give 3 but the third starts at 6 - 1 = 5 >= H + pad - ... i.e. inside the right padding.
CEIL_DROP = dict(N=1, C=2, H=5, W=5, kernel_size=2, stride=3, padding=1, ceil_mode=True)
MAX_MUST = [
    dict(CEIL_DROP, dilation=1),
    dict(N=2, C=3, H=7, W=7, kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True),
    dict(N=1, C=3, H=13, W=13, kernel_size=3, stride=2, padding=0, dilation=1, ceil_mode=True),  # GoogLeNet pools
    dict(N=1, C=2, H=9, W=8, kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1), ceil_mode=False),
    dict(N=5, C=1, H=4, W=4, kernel_size=1, stride=None, padding=0, dilation=1, ceil_mode=False),
]
AVG_MUST = [
    dict(CEIL_DROP, count_include_pad=True, divisor_override=None),
    dict(CEIL_DROP, count_include_pad=False, divisor_override=None),
    dict(N=2, C=3, H=7, W=7, kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False,
         divisor_override=None),
    dict(N=2, C=3, H=7, W=6, kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=True,
         divisor_override=None),
    dict(N=1, C=2, H=7, W=7, kernel_size=(5, 3), stride=1, padding=(2, 1), ceil_mode=False,
         count_include_pad=True, divisor_override=3),
    dict(N=1, C=2, H=7, W=7, kernel_size=7, stride=1, padding=0, ceil_mode=False, count_include_pad=True,
         divisor_override=None),  # GoogLeNet's global average pool
]


def _n(backend, cpu, other):
    return cpu if backend == "cpu" else other


def _max_params():
    return [pytest.param(b, dt, c, id=f"{b}-{dtype_id(dt)}-{_pool_case_id(c)}")
            for b in BACKENDS for c in MAX_MUST + _max_cases(_n(b, 100, 15), 1) for dt in DTYPES]


def _avg_params():
    return [pytest.param(b, dt, c, id=f"{b}-{dtype_id(dt)}-{_pool_case_id(c)}")
            for b in BACKENDS for c in AVG_MUST + _avg_cases(_n(b, 100, 15), 2) for dt in DTYPES]


def _mp_kw(c):
    return dict(kernel_size=c["kernel_size"], stride=c["stride"], padding=c["padding"],
                dilation=c["dilation"], ceil_mode=c["ceil_mode"])


def _ap_kw(c):
    return dict(kernel_size=c["kernel_size"], stride=c["stride"], padding=c["padding"], ceil_mode=c["ceil_mode"],
                count_include_pad=c["count_include_pad"], divisor_override=c["divisor_override"])


def _window(c):
    kh, kw = pair(c["kernel_size"])
    return kh * kw


def test_ceil_drop_case_is_exercised():
    """The CEIL_DROP shape really is one where torch drops the last ceil_mode window."""
    x = torch.zeros(1, 1, 5, 5)
    with_ceil = F.max_pool2d(x, 2, 3, 1, ceil_mode=True).shape[-1]
    span = 5 + 2 - 2
    naive_ceil = -(-span // 3) + 1
    assert naive_ceil == 3 and with_ceil == 2
    assert convkit.flops.pool2d_output_shape((1, 1, 5, 5), 2, 3, 1, ceil_mode=True) == (1, 1, 2, 2)


@pytest.mark.parametrize("backend,dtype,case", _max_params())
def test_max_pool2d_parity(backend, dtype, case):
    dev = device_of(backend)
    gen = torch.Generator().manual_seed(zlib.crc32(_pool_case_id(case).encode()))
    x = rand((case["N"], case["C"], case["H"], case["W"]), dtype, dev, gen).requires_grad_(True)
    with convkit.use_backend(backend):
        y, idx = CF.max_pool2d(x, **_mp_kw(case), return_indices=True)
        y2 = CF.max_pool2d(x.detach(), **_mp_kw(case))
        g = rand(y.shape, dtype, dev, gen)
        y.backward(g)
        gx = CF.max_pool2d_backward(g, tuple(x.shape), idx, **_mp_kw(case))
    ref = ref_max_pool2d(x, **_mp_kw(case), grad_out=g)
    assert_bitwise(y, ref["y"], "forward")          # a max is exact
    assert_bitwise(y2, ref["y"], "forward without indices")
    assert idx.dtype == torch.int64
    assert torch.equal(idx.cpu(), ref["idx"]), "indices differ from torch's"
    assert_close(x.grad, ref["gx"], dtype, L=_window(case), what="grad input (autograd)")
    assert_close(gx, ref["gx"], dtype, L=_window(case), what="max_pool2d_backward")


@pytest.mark.parametrize("backend,dtype,case", _avg_params())
def test_avg_pool2d_parity(backend, dtype, case):
    dev = device_of(backend)
    gen = torch.Generator().manual_seed(zlib.crc32(_pool_case_id(case).encode()))
    x = rand((case["N"], case["C"], case["H"], case["W"]), dtype, dev, gen).requires_grad_(True)
    with convkit.use_backend(backend):
        y = CF.avg_pool2d(x, **_ap_kw(case))
        g = rand(y.shape, dtype, dev, gen)
        y.backward(g)
        gx = CF.avg_pool2d_backward(g, tuple(x.shape), **_ap_kw(case))
    ref = ref_avg_pool2d(x, **_ap_kw(case), grad_out=g)
    assert_close(y, ref["y"], dtype, L=_window(case), what="forward")
    assert_close(x.grad, ref["gx"], dtype, L=_window(case), what="grad input (autograd)")
    assert_close(gx, ref["gx"], dtype, L=_window(case), what="avg_pool2d_backward")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", MAX_MUST[:4], ids=_pool_case_id)
def test_max_pool2d_ties_small_integers(backend, case):
    """Values in [-2, 2]: many ties; the index is torch's (first maximum in scan order) and the
    gradient goes to that one element only."""
    dev = device_of(backend)
    gen = torch.Generator().manual_seed(9)
    for dtype in DTYPES:
        x = small_ints((case["N"], case["C"], case["H"], case["W"]), dtype, dev, gen, lo=-2, hi=2)
        with convkit.use_backend(backend):
            y, idx = CF.max_pool2d(x, **_mp_kw(case), return_indices=True)
            go = small_ints(y.shape, dtype, dev, gen)
            gx = CF.max_pool2d_backward(go, tuple(x.shape), idx, **_mp_kw(case))
        ref = ref_max_pool2d(x, **_mp_kw(case), grad_out=go)
        assert_bitwise(y, ref["y"], "forward")
        assert torch.equal(idx.cpu(), ref["idx"]), "tie broken differently from torch"
        assert_bitwise(gx, ref["gx"], "backward")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", MAX_MUST[:4], ids=_pool_case_id)
def test_max_pool2d_nan_propagates(backend, dtype, case):
    """A NaN in a window makes that output NaN (torch's rule), and its index points at a NaN
    exactly as torch's does; the gradient follows the index."""
    dev = device_of(backend)
    gen = torch.Generator().manual_seed(4)
    x = rand((case["N"], case["C"], case["H"], case["W"]), dtype, dev, gen)
    mask = torch.rand(x.shape, generator=gen) < 0.2
    mask.view(-1)[0] = True
    x = x.masked_fill(mask.to(dev), float("nan")).requires_grad_(True)
    with convkit.use_backend(backend):
        y, idx = CF.max_pool2d(x, **_mp_kw(case), return_indices=True)
        y_values = CF.max_pool2d(x.detach(), **_mp_kw(case))  # the no-indices kernel path
        g = rand(y.shape, dtype, dev, gen)
        y.backward(g)
    ref = ref_max_pool2d(x, **_mp_kw(case), grad_out=g)
    assert torch.isnan(ref["y"]).any()
    assert_close(y, ref["y"], dtype, equal_nan=True, what="forward")
    assert_close(y_values, ref["y"], dtype, equal_nan=True, what="forward without indices")
    assert torch.equal(idx.cpu(), ref["idx"]), "indices differ from torch's with NaN input"
    assert_close(x.grad, ref["gx"], dtype, L=_window(case), what="grad input")


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_pool2d_all_nan_window_and_inf(backend):
    dev = device_of(backend)
    x = torch.tensor([[[[float("nan"), float("nan"), 1.0, float("-inf")],
                        [float("nan"), float("nan"), float("-inf"), float("-inf")],
                        [float("inf"), 0.0, -1.0, 2.0],
                        [3.0, float("inf"), 2.0, -1.0]]]], dtype=torch.float64, device=dev)
    with convkit.use_backend(backend):
        y, idx = CF.max_pool2d(x, 2, return_indices=True)
    ry, ridx = F.max_pool2d(x.cpu(), 2, return_indices=True)
    assert torch.equal(torch.isnan(y.cpu()), torch.isnan(ry))
    assert torch.equal(torch.nan_to_num(y.cpu()), torch.nan_to_num(ry))
    assert torch.equal(idx.cpu(), ridx)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_pool_unbatched(backend, op, dtype):
    dev = device_of(backend)
    x = rand((3, 7, 6), dtype, dev).requires_grad_(True)
    with convkit.use_backend(backend):
        if op == "max":
            y, idx = CF.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
            ry, ridx = F.max_pool2d(x.detach(), 3, 2, 1, ceil_mode=True, return_indices=True)
            assert torch.equal(idx.cpu(), ridx)
        else:
            y = CF.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
            ry = F.avg_pool2d(x.detach(), 3, 2, 1, ceil_mode=True, count_include_pad=False)
        assert y.dim() == 3
        g = rand(y.shape, dtype, dev)
        y.backward(g)
    xr = x.detach().double().requires_grad_(True)
    yr = (F.max_pool2d(xr, 3, 2, 1, ceil_mode=True) if op == "max"
          else F.avg_pool2d(xr, 3, 2, 1, ceil_mode=True, count_include_pad=False))
    yr.backward(g.double())
    assert_close(y, yr.detach(), dtype, L=9, what="forward")
    assert_close(x.grad, xr.grad, dtype, L=9, what="grad input")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["max", "avg"])
def test_pool_empty_batch(backend, op):
    dev = device_of(backend)
    x = torch.empty((0, 3, 7, 6), dtype=torch.float32, device=dev).requires_grad_(True)
    with convkit.use_backend(backend):
        if op == "max":
            y, idx = CF.max_pool2d(x, 3, 2, return_indices=True)
            assert tuple(idx.shape) == tuple(y.shape)
            gx = CF.max_pool2d_backward(torch.empty_like(y), tuple(x.shape), idx, 3, 2)
            ry = F.max_pool2d(x.detach(), 3, 2)
        else:
            y = CF.avg_pool2d(x, 3, 2)
            gx = CF.avg_pool2d_backward(torch.empty_like(y), tuple(x.shape), 3, 2)
            ry = F.avg_pool2d(x.detach(), 3, 2)
        assert tuple(y.shape) == tuple(ry.shape)
        y.sum().backward()
    assert tuple(x.grad.shape) == tuple(x.shape)
    assert tuple(gx.shape) == tuple(x.shape)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize("layout", ["channels_last", "slice", "permuted"])
def test_pool_layouts(backend, op, layout):
    """channels_last input gives the output format torch gives; strided inputs work."""
    dtype = torch.float64
    dev = device_of(backend)
    if layout == "channels_last":
        x = rand((2, 5, 9, 7), dtype, dev).to(memory_format=torch.channels_last)
    elif layout == "slice":
        x = rand((4, 5, 18, 21), dtype, dev)[::2, :, ::2, ::3]
    else:
        x = rand((7, 2, 9, 5), dtype, dev).permute(1, 3, 2, 0)
    x.requires_grad_(True)
    with convkit.use_backend(backend):
        if op == "max":
            y, idx = CF.max_pool2d(x, 3, 2, 1, return_indices=True)
        else:
            y = CF.avg_pool2d(x, 3, 2, 1)
        g = rand(y.shape, dtype, dev)
        y.backward(g)
    xt = x.detach().clone().requires_grad_(True)
    if op == "max":
        ry, ridx = F.max_pool2d(xt, 3, 2, 1, return_indices=True)
        assert torch.equal(idx.cpu(), ridx.cpu())
    else:
        ry = F.avg_pool2d(xt, 3, 2, 1)
    ry.backward(g)
    if layout == "channels_last":
        assert is_channels_last(y) == is_channels_last(ry), (
            f"output channels_last={is_channels_last(y)}, torch's={is_channels_last(ry)}")
        assert y.is_contiguous() == ry.is_contiguous()
    assert_close(y, ry.detach().double(), dtype, L=9, what="forward")
    assert_close(x.grad, xt.grad.double(), dtype, L=9, what="grad input")


@pytest.mark.parametrize("backend", BACKENDS)
def test_pool_large_odd_image(backend):
    dev = device_of(backend)
    x = rand((3, 5, 97, 33), torch.float32, dev)
    with convkit.use_backend(backend):
        y, idx = CF.max_pool2d(x, 3, 2, ceil_mode=True, return_indices=True)
        a = CF.avg_pool2d(x, 5, 3, 2, ceil_mode=True, count_include_pad=False)
    ry, ridx = F.max_pool2d(x.cpu(), 3, 2, ceil_mode=True, return_indices=True)
    assert_bitwise(y, ry)
    assert torch.equal(idx.cpu(), ridx)
    assert_close(a, F.avg_pool2d(x.double().cpu(), 5, 3, 2, ceil_mode=True, count_include_pad=False),
                 torch.float32, L=25, what="avg")


def _scatter_reference(dy, idx, input_shape):
    """max-pool backward by hand: dy added at each index that lies inside its plane."""
    n, c, h, w = input_shape
    dx = torch.zeros(n * c, h * w, dtype=torch.float64)
    d, i = dy.reshape(n * c, -1).double().cpu(), idx.reshape(n * c, -1).cpu()
    ok = (i >= 0) & (i < h * w)
    for row in range(n * c):
        dx[row].index_add_(0, i[row][ok[row]], d[row][ok[row]])
    return dx.reshape(input_shape)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_pool2d_window_of_padding_only(backend):
    """H = 1, kernel 2, dilation 2, padding 1: the window's two rows are -1 and 1, both padding.
    torch gives -inf and an index past the plane (and its own backward then writes out of
    bounds); convkit must give torch's forward, and a backward that stays inside its buffer."""
    dev = device_of(backend)
    x = rand((2, 3, 1, 9), torch.float32, dev)
    kw = dict(kernel_size=(2, 1), stride=(3, 2), padding=(1, 0), dilation=(2, 3), ceil_mode=True)
    ry, ridx = F.max_pool2d(x.cpu(), **kw, return_indices=True)
    assert torch.isinf(ry).all()
    guard = torch.full((4096,), 7.0, device=dev)
    with convkit.use_backend(backend):
        y, idx = CF.max_pool2d(x, **kw, return_indices=True)
        dy = torch.ones_like(y)
        dx = CF.max_pool2d_backward(dy, tuple(x.shape), idx, **kw)
    assert_bitwise(y, ry)
    assert torch.equal(idx.cpu(), ridx)
    assert_bitwise(dx, _scatter_reference(dy, idx, tuple(x.shape)).float())
    assert bool((guard == 7.0).all())


# The CPU kernels take a whole (n, c) plane at a time through a padded polyphase buffer when it is
# small (detail::PhaseGrid, up to 2^16 elements) and fall back to the row kernels beyond: planes
# on both sides of that limit, strides 1, 2 (the vector deinterleave) and 3 (column by column),
# dilation, rows wider than one vector, many planes (threads), float32 and float64.
CPU_PLANE_MAX = [
    dict(N=3, C=5, H=14, W=14, kernel_size=3, stride=2, padding=0, dilation=1, ceil_mode=True),  # pool4
    dict(N=2, C=7, H=7, W=7, kernel_size=3, stride=1, padding=1, dilation=1, ceil_mode=True),  # 5a.pool
    dict(N=2, C=3, H=37, W=41, kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True),
    dict(N=2, C=3, H=29, W=35, kernel_size=(3, 2), stride=(1, 2), padding=(1, 1), dilation=(2, 1), ceil_mode=False),
    dict(N=1, C=4, H=23, W=50, kernel_size=(2, 4), stride=(2, 3), padding=(1, 2), dilation=(1, 2), ceil_mode=True),
    dict(N=1, C=2, H=300, W=261, kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True),  # row kernels
    dict(N=1, C=2, H=257, W=300, kernel_size=3, stride=1, padding=1, dilation=1, ceil_mode=False),  # row kernels
]
CPU_PLANE_AVG = [
    dict(N=3, C=5, H=14, W=14, kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False,
         divisor_override=None),
    dict(N=2, C=9, H=7, W=7, kernel_size=7, stride=1, padding=0, ceil_mode=False, count_include_pad=True,
         divisor_override=None),  # few outputs per plane: planes side by side
    dict(N=1, C=11, H=5, W=6, kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=True,
         divisor_override=None),
    dict(N=2, C=3, H=31, W=45, kernel_size=(3, 5), stride=(1, 2), padding=(1, 2), ceil_mode=False,
         count_include_pad=False, divisor_override=None),
    dict(N=1, C=3, H=40, W=37, kernel_size=4, stride=3, padding=2, ceil_mode=True, count_include_pad=True,
         divisor_override=5),
    dict(N=1, C=2, H=300, W=261, kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False,
         divisor_override=None),  # row kernels
]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", CPU_PLANE_MAX, ids=_pool_case_id)
def test_max_pool2d_cpu_plane_and_row_kernels(dtype, case):
    gen = torch.Generator().manual_seed(zlib.crc32(_pool_case_id(case).encode()))
    x = rand((case["N"], case["C"], case["H"], case["W"]), dtype, "cpu", gen)
    x.view(-1)[::97] = float("nan")
    x.view(-1)[5::89] = float("-inf")
    x.requires_grad_(True)
    with convkit.use_backend("cpu"):
        y, idx = CF.max_pool2d(x, **_mp_kw(case), return_indices=True)
        y2 = CF.max_pool2d(x.detach(), **_mp_kw(case))
        g = rand(y.shape, dtype, "cpu", gen)
        gx = CF.max_pool2d_backward(g, tuple(x.shape), idx, **_mp_kw(case))
    ry, ridx = F.max_pool2d(x, **_mp_kw(case), return_indices=True)
    (rgx,) = torch.autograd.grad(ry, [x], g)  # torch adds in output order, as convkit does
    assert torch.equal(idx, ridx), "indices differ from torch's"
    ry = ry.detach()
    assert torch.equal(torch.isnan(y), torch.isnan(ry)) and torch.equal(torch.isnan(y2), torch.isnan(ry))
    assert_bitwise(torch.nan_to_num(y), torch.nan_to_num(ry), "forward")
    assert_bitwise(torch.nan_to_num(y2), torch.nan_to_num(ry), "forward without indices")
    assert_bitwise(gx, rgx, "backward")
    assert_close(gx, _scatter_reference(g, idx, tuple(x.shape)), dtype, L=_window(case), what="backward")


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("case", CPU_PLANE_AVG, ids=_pool_case_id)
def test_avg_pool2d_cpu_plane_and_row_kernels(dtype, case):
    gen = torch.Generator().manual_seed(zlib.crc32(_pool_case_id(case).encode()))
    x = rand((case["N"], case["C"], case["H"], case["W"]), dtype, "cpu", gen).requires_grad_(True)
    with convkit.use_backend("cpu"):
        y = CF.avg_pool2d(x, **_ap_kw(case))
        g = rand(y.shape, dtype, "cpu", gen)
        gx = CF.avg_pool2d_backward(g, tuple(x.shape), **_ap_kw(case))
    ref = ref_avg_pool2d(x, **_ap_kw(case), grad_out=g)
    assert_close(y, ref["y"], dtype, L=_window(case), what="forward")
    assert_close(gx, ref["gx"], dtype, L=_window(case), what="backward")
    # the same sums in the same order as torch's own kernel: equal bit for bit
    assert_bitwise(y, F.avg_pool2d(x.detach(), **_ap_kw(case)), "forward against torch")
