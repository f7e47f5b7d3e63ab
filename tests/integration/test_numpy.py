"""The NumPy path: NumPy arrays in, NumPy arrays out (same dtype), for every forward op and the
public backward functions; values match torch."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import convkit
import convkit.functional as CF

from conftest import BACKENDS, assert_bitwise, assert_close, ref_avg_pool2d, ref_conv2d, ref_max_pool2d

NP_DTYPES = [np.float32, np.float64]
CPU_BACKENDS = [b for b in BACKENDS if b != "cuda"]   # NumPy arrays live in host memory


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def _check_np(out, dtype, shape):
    assert isinstance(out, np.ndarray), f"expected a NumPy array, got {type(out).__name__}"
    assert out.dtype == dtype, f"dtype {out.dtype} != {np.dtype(dtype)}"
    assert out.shape == tuple(shape)


CONV_CASES = [
    ("direct", (2, 4, 7, 6), (6, 2, 3, 3), None, dict(stride=2, padding=1, groups=2)),
    ("im2col", (1, 3, 9, 8), (4, 3, 2, 2), True, dict(padding="same")),
    ("im2col", (3, 5, 8, 7), (4, 5, 3, 3), True, dict(stride=(1, 2), padding=(2, 1), dilation=2)),
    ("1x1", (2, 5, 6, 5), (3, 5, 1, 1), True, dict(stride=2)),
    ("auto", (3, 7, 5), (2, 3, 3, 3), True, dict(padding=1)),    # unbatched
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", NP_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("algo,xs,ws,bias,kw", CONV_CASES, ids=lambda v: v if isinstance(v, str) else None)
def test_numpy_conv2d(backend, dtype, algo, xs, ws, bias, kw):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype) if bias else None
    xin, win = x.copy(), w.copy()
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, b, algo=algo, **kw)
        _check_np(y, dtype, F.conv2d(_t(x), _t(w), None if b is None else _t(b), **kw).shape)
        g = rng.standard_normal(y.shape).astype(dtype)
        gx = CF.conv2d_backward_input(g, w, x.shape, algo=algo, **kw)
        gw = CF.conv2d_backward_weight(g, x, w.shape, algo=algo, **kw)
        gb = CF.conv2d_backward_bias(g)
    np.testing.assert_array_equal(x, xin)
    np.testing.assert_array_equal(w, win)
    _check_np(gx, dtype, x.shape)
    _check_np(gw, dtype, w.shape)
    _check_np(gb, dtype, (ws[0],))
    ref = ref_conv2d(_t(x), _t(w), None if b is None else _t(b), grad_out=_t(g), **kw)
    L = ws[1] * ws[2] * ws[3]
    td = torch.float32 if dtype == np.float32 else torch.float64
    assert_close(y, ref["y"], td, L=L, what="forward")
    assert_close(gx, ref["gx"], td, L=L * 2, what="grad input")
    assert_close(gw, ref["gw"], td, L=200, what="grad weight")
    gb_ref = _t(g).double().sum(tuple(i for i in range(g.ndim) if i != g.ndim - 3))
    assert_close(gb, gb_ref, td, L=200, what="grad bias")


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", NP_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(2, 3, 7, 6), (3, 9, 8)])
def test_numpy_pooling(backend, dtype, shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    td = torch.float32 if dtype == np.float32 else torch.float64
    mkw = dict(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True)
    akw = dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), ceil_mode=True, count_include_pad=False)
    with convkit.use_backend(backend):
        y = CF.max_pool2d(x, **mkw)
        y2, idx = CF.max_pool2d(x, **mkw, return_indices=True)
        a = CF.avg_pool2d(x, **akw)
        gy = rng.standard_normal(y.shape).astype(dtype)
        ga = rng.standard_normal(a.shape).astype(dtype)
        gxm = CF.max_pool2d_backward(gy, x.shape, idx, **mkw)
        gxa = CF.avg_pool2d_backward(ga, x.shape, **akw)
    rm = ref_max_pool2d(_t(x), **mkw, grad_out=_t(gy))
    ra = ref_avg_pool2d(_t(x), **akw, grad_out=_t(ga))
    _check_np(y, dtype, rm["y"].shape)
    _check_np(a, dtype, ra["y"].shape)
    assert isinstance(idx, np.ndarray) and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, rm["idx"].numpy())
    assert_bitwise(y, rm["y"])
    assert_bitwise(y2, rm["y"])
    assert_close(a, ra["y"], td, L=6)
    _check_np(gxm, dtype, shape)
    _check_np(gxa, dtype, shape)
    assert_close(gxm, rm["gx"], td, L=9)
    assert_close(gxa, ra["gx"], td, L=6)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", NP_DTYPES, ids=lambda d: np.dtype(d).name)
def test_numpy_relu(backend, dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 7)).astype(dtype)
    x.flat[0] = np.nan
    x.flat[1] = 0.0
    x0 = x.copy()
    with convkit.use_backend(backend):
        y = CF.relu(x)
        g = rng.standard_normal(x.shape).astype(dtype)
        gx = CF.relu_backward(g, y)
        z = x.copy()
        out = CF.relu(z, inplace=True)
        strided = x.copy()[:, :, :, ::2]
        out2 = CF.relu(strided, inplace=True)
    np.testing.assert_array_equal(x, x0)
    _check_np(y, dtype, x.shape)
    _check_np(gx, dtype, x.shape)
    ref = torch.relu(_t(x))
    assert_bitwise(y, ref)
    assert out is z
    assert_bitwise(z, ref)
    assert out2 is strided
    assert_bitwise(np.ascontiguousarray(strided), torch.relu(_t(x0[:, :, :, ::2])))
    xt = _t(x).clone().requires_grad_(True)
    torch.relu(xt).backward(_t(g))
    expected = xt.grad.clone()
    # NaN position aside (see test_relu_nan_backward_like_torch), the gradient is torch's
    assert_bitwise(gx.reshape(-1)[1:], expected.reshape(-1)[1:])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_numpy_noncontiguous_and_no_torch_types(backend):
    rng = np.random.default_rng(3)
    big = rng.standard_normal((4, 3, 14, 15))
    x = big[::2, :, ::2, ::3]
    w = np.asfortranarray(rng.standard_normal((2, 3, 3, 3)))
    with convkit.use_backend(backend):
        m, idx = CF.max_pool2d(x, 3, 2, 1, return_indices=True)
        a = CF.avg_pool2d(x, 2, 1, 1, count_include_pad=False)
        r = CF.relu(x)
        y = CF.conv2d(x, w, padding=1)
    for out in (m, idx, a, r):
        assert type(out) is np.ndarray
    ref = ref_max_pool2d(_t(x), 3, 2, 1)
    assert_bitwise(m, ref["y"])
    np.testing.assert_array_equal(idx, ref["idx"].numpy())
    assert_close(a, F.avg_pool2d(_t(x), 2, 1, 1, count_include_pad=False), torch.float64, L=4)
    assert_bitwise(r, torch.relu(_t(x)))
    assert type(y) is np.ndarray
    assert_close(y, F.conv2d(_t(x), _t(w), padding=1), torch.float64, L=27)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_numpy_empty_batch(backend):
    x = np.zeros((0, 3, 7, 6), np.float32)
    w = np.ones((2, 3, 3, 3), np.float32)
    with convkit.use_backend(backend):
        p = CF.max_pool2d(x, 2)
        a = CF.avg_pool2d(x, 2)
        assert p.shape == (0, 3, 3, 3) and a.shape == (0, 3, 3, 3)
        y = CF.conv2d(x, w, padding=1)
        gw = CF.conv2d_backward_weight(y, x, w.shape, padding=1)
        assert y.shape == (0, 2, 7, 6)
        np.testing.assert_array_equal(gw, np.zeros_like(w))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", NP_DTYPES, ids=lambda d: np.dtype(d).name)
def test_numpy_relu_misaligned(backend, dtype):
    """A contiguous NumPy view one element into its buffer (not 16-byte aligned), odd sizes, in and
    out of place."""
    rng = np.random.default_rng(4)
    for n in (3, 17, 1029):
        base = rng.standard_normal(n + 1).astype(dtype)
        x = base[1:]
        g = rng.standard_normal(n + 3).astype(dtype)[3:]
        with convkit.use_backend(backend):
            y = CF.relu(x)
            gx = CF.relu_backward(g, y)
            z = base.copy()
            CF.relu_(z[1:])
        _check_np(y, dtype, (n,))
        np.testing.assert_array_equal(y, np.maximum(x, 0))
        np.testing.assert_array_equal(gx, np.where(y > 0, g, 0).astype(dtype))
        np.testing.assert_array_equal(z[1:], np.maximum(x, 0))
        assert z[0] == base[0]
