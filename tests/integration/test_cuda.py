"""The "cuda" backend on a real GPU (every test here skips without one): every pooling and ReLU op
on the caller's non-default stream (pytorch#15352), CuPy arrays in and out on CuPy's current
stream, tensors on a second GPU, and arrays on the wrong backend.

The stream tests make a kernel that ignores the caller's stream visible: the input is written on
the side stream after a long GPU sleep, so a kernel launched on any other stream reads the NaN it
held before; results are read back after synchronizing that side stream only.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import convkit
import convkit.functional as CF

from conftest import BACKENDS, HALF_DTYPES, assert_bitwise, assert_close, dtype_id, rand, raises_checked

pytestmark = pytest.mark.skipif("cuda" not in BACKENDS, reason="needs the cuda backend and a GPU")

MAXKW = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
AVGKW = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
SLEEP_CYCLES = 100_000_000   # ~50 ms of GPU time: far longer than any op below takes to launch


def _every_op(x):
    """Every pooling and ReLU entry point on x [N, C, H, W] (torch tensors or CuPy arrays):
    name -> result."""
    out = {}
    y, idx = CF.max_pool2d(x, **MAXKW, return_indices=True)
    out["max_pool2d"], out["max_pool2d.indices"] = y, idx
    out["max_pool2d (values only)"] = CF.max_pool2d(x, **MAXKW)
    out["max_pool2d_backward"] = CF.max_pool2d_backward(y, tuple(x.shape), idx, **MAXKW)
    a = CF.avg_pool2d(x, **AVGKW)
    out["avg_pool2d"] = a
    out["avg_pool2d_backward"] = CF.avg_pool2d_backward(a, tuple(x.shape), **AVGKW)
    r = CF.relu(x)
    out["relu"] = r
    out["relu_backward"] = CF.relu_backward(x, r)
    z = x.copy() if not isinstance(x, torch.Tensor) else x.clone()
    CF.relu_(z)
    out["relu_"] = z
    if isinstance(x, torch.Tensor):  # through the custom ops' autograd
        xg = x.detach().clone().requires_grad_(True)
        (CF.max_pool2d(xg, **MAXKW) * 2 + CF.avg_pool2d(xg, **AVGKW)).sum().backward()
        CF.relu(xg).backward(torch.ones_like(xg))
        out["autograd"] = xg.grad
    return out


def _reference(x_cpu):
    """The same ops by torch, float64 on the CPU (indices as torch gives them)."""
    x = x_cpu.double()
    y, idx = F.max_pool2d(x, **MAXKW, return_indices=True)
    xg = x.clone().requires_grad_(True)
    F.max_pool2d(xg, **MAXKW).backward(y)
    gmax = xg.grad
    a = F.avg_pool2d(x, **AVGKW)
    xg = x.clone().requires_grad_(True)
    F.avg_pool2d(xg, **AVGKW).backward(a)
    gavg = xg.grad
    r = torch.relu(x)
    xg = x.clone().requires_grad_(True)
    (F.max_pool2d(xg, **MAXKW) * 2 + F.avg_pool2d(xg, **AVGKW)).sum().backward()
    g_auto = xg.grad + (x > 0).to(x.dtype)
    return {"max_pool2d": y, "max_pool2d.indices": idx, "max_pool2d (values only)": y, "max_pool2d_backward": gmax,
            "avg_pool2d": a, "avg_pool2d_backward": gavg, "relu": r, "relu_backward": torch.where(r > 0, x, 0),
            "relu_": r, "autograd": g_auto}


def _check(out, ref, dtype, device):
    for name, got in out.items():
        if isinstance(got, torch.Tensor):
            assert got.device == device, f"{name}: on {got.device}, expected {device}"
            got = got.cpu()
        else:  # CuPy
            assert got.device.id == device.index, f"{name}: on device {got.device.id}, expected {device.index}"
            got = torch.from_numpy(got.get())
        exp = ref[name]
        if name.endswith("indices"):
            assert torch.equal(got, exp), f"{name} differ from torch's"
        elif name.startswith("max_pool2d") and "backward" not in name or name.startswith("relu"):
            assert_bitwise(got, exp, name)
        else:
            assert_close(got, exp, dtype, L=9, scale=2.0, what=name)


def _side_stream_input(src, stream):
    """On `stream`: a NaN-filled buffer, a long sleep, then src's values copied in."""
    with torch.cuda.stream(stream):
        x = torch.full_like(src, float("nan"))
        torch.cuda._sleep(SLEEP_CYCLES)
        x.copy_(src)
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
def test_every_op_on_a_side_stream(dtype):
    src = rand((4, 8, 33, 31), dtype, "cuda")
    ref = _reference(src.cpu())
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    x = _side_stream_input(src, s)
    with convkit.use_backend("cuda"), torch.cuda.stream(s):
        out = _every_op(x)
    s.synchronize()
    _check(out, ref, dtype, src.device)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=dtype_id)
def test_half_ops_on_a_side_stream(dtype):
    src = rand((2, 8, 17, 15), dtype, "cuda")
    torch.cuda.synchronize()
    with convkit.use_backend("cuda"):   # the same ops on the default stream, fully synchronized
        expected = _every_op(src)
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    x = _side_stream_input(src, s)
    with convkit.use_backend("cuda"), torch.cuda.stream(s):
        out = _every_op(x)
    s.synchronize()
    for name, got in out.items():
        assert torch.equal(got.cpu().double().nan_to_num(7.0), expected[name].cpu().double().nan_to_num(7.0)), name


def test_outputs_stay_on_the_side_stream_allocator():
    """Outputs are allocated by torch on the current (side) stream: freeing them there and reusing
    the memory on that stream needs no synchronization with the default stream."""
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        x = rand((2, 3, 64, 64), torch.float32, "cuda")
        for _ in range(5):
            y = CF.relu(CF.max_pool2d(x, 2))
            del y
        y = CF.avg_pool2d(x, 2)
    s.synchronize()
    assert_close(y.cpu(), F.avg_pool2d(x.cpu().double(), 2), torch.float32, L=4)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
@pytest.mark.parametrize("side_stream", [False, True])
def test_tensor_on_second_gpu(side_stream):
    """A tensor on cuda:1 while cuda:0 is the current device runs on device 1 (and, with a side
    stream of device 1 made current, on that stream); outputs live on cuda:1."""
    src = rand((2, 5, 19, 17), torch.float32, "cuda:1")
    ref = _reference(src.cpu())
    torch.cuda.synchronize(0)
    torch.cuda.synchronize(1)
    if side_stream:
        s = torch.cuda.Stream(device=1)
        x = _side_stream_input(src, s)
        with torch.cuda.stream(s), torch.cuda.device(0), convkit.use_backend("cuda"):
            assert torch.cuda.current_device() == 0
            out = _every_op(x)
        s.synchronize()
    else:
        with torch.cuda.device(0):
            out = _every_op(src)
        torch.cuda.synchronize(1)
    _check(out, ref, torch.float32, src.device)


# ---- CuPy ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16], ids=lambda d: np.dtype(d).name)
def test_cupy_in_cupy_out(dtype):
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(1)
    host = rng.standard_normal((2, 6, 21, 19)).astype(dtype)
    x = cp.asarray(host)
    out = _every_op(x)
    for name, got in out.items():
        assert isinstance(got, cp.ndarray), f"{name}: {type(got).__name__}, expected cupy.ndarray"
        assert got.dtype == (np.int64 if name.endswith("indices") else dtype), name
    cp.cuda.get_current_stream().synchronize()
    if dtype == np.float16:   # exact ops only (the rounding of the sums is test_half's business)
        ref = _reference(torch.from_numpy(host))
        assert_bitwise(torch.from_numpy(out["max_pool2d"].get()), ref["max_pool2d"])
        assert torch.equal(torch.from_numpy(out["max_pool2d.indices"].get()), ref["max_pool2d.indices"])
        assert_bitwise(torch.from_numpy(out["relu"].get()), ref["relu"])
    else:
        _check(out, _reference(torch.from_numpy(host)), torch.float32 if dtype == np.float32 else torch.float64,
               torch.device("cuda", x.device.id))


def test_cupy_on_its_current_stream():
    """CuPy's current stream (a non-blocking one made current with `with stream:`) is the one the
    kernels run on and the outputs are allocated on."""
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(2)
    host = rng.standard_normal((4, 8, 33, 31)).astype(np.float32)
    src = cp.asarray(host)
    cp.cuda.Device().synchronize()
    s = cp.cuda.Stream(non_blocking=True)
    with s:
        x = cp.full(src.shape, cp.nan, dtype=src.dtype)
        big = cp.ones((2048, 2048), cp.float32)
        for _ in range(8):           # keep the stream busy before the input is written
            big = big @ big * 1e-3
        x[...] = src
        out = _every_op(x)
    s.synchronize()
    _check(out, _reference(torch.from_numpy(host)), torch.float32, torch.device("cuda", src.device.id))


def test_cupy_noncontiguous_and_unbatched():
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(3)
    host = rng.standard_normal((4, 3, 14, 15))
    x = cp.asarray(host)[::2, :, ::2, ::3]
    y, idx = CF.max_pool2d(x, 2, return_indices=True)
    ref_y, ref_idx = F.max_pool2d(torch.from_numpy(np.ascontiguousarray(host[::2, :, ::2, ::3])), 2,
                                  return_indices=True)
    assert_bitwise(torch.from_numpy(y.get()), ref_y)
    assert torch.equal(torch.from_numpy(idx.get()), ref_idx)
    u = CF.avg_pool2d(cp.asarray(host[0]), 3, 2, 1)
    assert u.shape == (3, 7, 8)
    assert_close(torch.from_numpy(u.get()), F.avg_pool2d(torch.from_numpy(host[0]), 3, 2, 1), torch.float64, L=9)


def test_cupy_bad_input():
    cp = pytest.importorskip("cupy")
    x = cp.ones((2, 3, 7, 7), cp.float32)
    for fn, base, words in [
        (lambda: CF.max_pool2d(x.astype(cp.int32), 2), TypeError, ["int32"]),
        (lambda: CF.max_pool2d(x, 3, padding=2), ValueError, ["padding", "2"]),
        (lambda: CF.relu_backward(x, np.ones((2, 3, 7, 7), np.float32)), TypeError, ["numpy"]),
        (lambda: CF.relu_backward(x, torch.ones(2, 3, 7, 7, device="cuda")), TypeError, ["torch"]),
    ]:
        with pytest.raises(Exception) as info:
            fn()
        e = info.value
        assert isinstance(e, RuntimeError) and isinstance(e, base), f"{type(e).__mro__}: {e}"
        for w in words:
            assert w in str(e).lower(), f"message does not name {w!r}: {e}"
    with convkit.use_backend("cpu"):
        with pytest.raises(TypeError):
            CF.relu(x)


# ---- arrays on the wrong backend ---------------------------------------------------------------

def test_cuda_tensor_on_a_host_backend():
    x = rand((2, 3, 7, 7), torch.float32, "cuda")
    for name in [b for b in BACKENDS if b != "cuda"]:
        with convkit.use_backend(name):
            raises_checked(lambda: CF.max_pool2d(x, 2), (TypeError,), [name, "cuda"], [x])
            raises_checked(lambda: CF.relu(x), (TypeError,), [name, "cuda"], [x])
    with convkit.use_backend("cuda"):
        raises_checked(lambda: CF.relu(x.cpu()), (TypeError,), ["cuda", "cpu"], [])
    raises_checked(lambda: CF.relu_backward(x, x.cpu()), (ValueError,), ["device"], [x])
