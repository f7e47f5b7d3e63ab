"""The cases of the hostile-input suite (tests/integration/test_hostile.py), run one at a time in a worker
process (tests/integration/hostile_worker.py) so that a crash or a hang takes down the worker, not pytest.

Each case is a function of the backend ("cpu" or "cudasim") that returns normally when convkit
behaved: it gave torch's answer, or it raised a ConvkitError naming the argument (allocation
failures: a ConvkitError that is also a MemoryError), and changed none of its inputs. Anything
else raises AssertionError with what went wrong. Cases are grouped by the class of attack they
stand for; the names say what they try.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import signal
import sys
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F

import convkit
import convkit._backend
import convkit.functional as CF
from convkit import ConvkitError

CASES = {}
#: cases that run in a fresh worker (a process whose memory earlier cases have not shaped)
FRESH = {"memory_released_after_large_call"}
BIG = [2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64]


def case(*names, backends=("cpu", "cudasim")):
    """Registers fn under each of `names` (or its own name) for `backends`."""
    def wrap(fn):
        for n in names or (fn.__name__,):
            CASES[n] = (fn, backends)
        return fn
    return wrap


def run(name: str, backend: str):
    fn, backends = CASES[name]
    if backend not in backends:
        return f"not for {backend}"
    if backend not in convkit.available_backends():
        return f"{backend} not available"
    with convkit.use_backend(backend):
        return fn(backend)


# ---- outcome helpers ------------------------------------------------------------------------

def expect_error(fn, *words, cls=ConvkitError):
    """fn() must raise `cls` (a ConvkitError) whose message names each of `words`."""
    try:
        fn()
    except cls as e:
        msg = str(e)
        missing = [w for w in words if w not in msg]
        assert not missing, f"{type(e).__name__} does not name {missing}: {msg}"
        return msg
    except BaseException as e:  # noqa: BLE001
        raise AssertionError(f"expected {cls.__name__} naming {words}, got {type(e).__name__}: {e}") from e
    raise AssertionError(f"expected {cls.__name__} naming {words}, got no error")


def snapshot(*arrays):
    return [None if a is None else (a.detach().clone() if isinstance(a, torch.Tensor) else np.array(a, copy=True))
            for a in arrays]


def same(a, b) -> bool:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)


@contextlib.contextmanager
def unchanged(*arrays):
    """Checks that none of `arrays` was written by what runs inside the block (even on error)."""
    before = snapshot(*arrays)
    try:
        yield
    finally:
        for a, b in zip(arrays, before):
            if a is not None:
                assert same(a, b), "an input was changed"


def close(ours, ref, rtol=1e-5, atol=1e-5):
    ours = ours.detach().double() if isinstance(ours, torch.Tensor) else torch.from_numpy(np.asarray(ours)).double()
    ref = ref.detach().double()
    assert tuple(ours.shape) == tuple(ref.shape), f"shape {tuple(ours.shape)} != torch's {tuple(ref.shape)}"
    # Inf and NaN where torch has them, finite values close
    assert torch.equal(torch.isnan(ours), torch.isnan(ref)), "NaN where torch has none (or the reverse)"
    inf = torch.isinf(ref)
    assert torch.equal(torch.isinf(ours), inf) and torch.equal(ours[inf], ref[inf]), "Inf differs from torch"
    fin = torch.isfinite(ref)
    torch.testing.assert_close(ours[fin], ref[fin], rtol=rtol, atol=atol)


def torch_or_error(ours_fn, ref_fn, *words, inputs=()):
    """ours_fn() gives ref_fn()'s answer, or raises a ConvkitError naming one of `words`; either
    way no input changes. Returns 'torch' or 'error: ...' for the report."""
    with unchanged(*inputs):
        try:
            ours = ours_fn()
        except ConvkitError as e:
            msg = str(e)
            if isinstance(e, MemoryError):  # too big to allocate: it must say how much
                assert "bytes" in msg, f"a MemoryError that does not say how much: {msg}"
            else:
                assert any(w in msg for w in words), f"{type(e).__name__} names none of {words}: {msg}"
            return "error: " + msg[:200]
        except BaseException as e:  # noqa: BLE001
            raise AssertionError(f"expected torch's answer or a ConvkitError naming {words}, got "
                                 f"{type(e).__name__}: {e}") from e
    ref = ref_fn()
    for o, r in zip(ours if isinstance(ours, (tuple, list)) else [ours], ref if isinstance(ref, (tuple, list)) else [ref]):
        close(o, r)
    return "torch"


def ref_conv(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(x.double(), w.double(), None if b is None else b.double(), stride, padding, dilation, groups)


def naive_conv(x, w, stride, padding, dilation):
    """conv2d by its definition, one output pixel and tap at a time in exact integer index
    arithmetic (for tiny outputs at huge strides, paddings and dilations, where torch's own
    int32 arithmetic overflows and it refuses or misreads the arguments)."""
    pair = (lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v))
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    pads = padding if isinstance(padding, (tuple, list)) and len(padding) == 4 else \
        (pair(padding)[0], pair(padding)[0], pair(padding)[1], pair(padding)[1])
    n, c, h, wd = x.shape
    k, _, r, s = w.shape
    p_ = (h + pads[0] + pads[1] - dh * (r - 1) - 1) // sh + 1
    q_ = (wd + pads[2] + pads[3] - dw * (s - 1) - 1) // sw + 1
    assert p_ * q_ <= 4096, "naive_conv is for tiny outputs"
    y = torch.zeros(n, k, p_, q_, dtype=torch.float64)
    xd, wdd = x.double(), w.double()
    for i in range(p_):
        for j in range(q_):
            for a in range(r):
                for b in range(s):
                    ih, iw = i * sh - pads[0] + a * dh, j * sw - pads[2] + b * dw
                    if 0 <= ih < h and 0 <= iw < wd:
                        y[:, :, i, j] += xd[:, :, ih, iw] @ wdd[:, :, a, b].T
    return y


def conv_grads(fn, x, w):
    """(y, dx, dw) of fn(x, w) with sum() as the loss."""
    x = x.detach().clone().requires_grad_()
    w = w.detach().clone().requires_grad_()
    y = fn(x, w)
    y.sum().backward()
    return y, x.grad, w.grad


# ---- sizes at and past the integer edges: convolution ---------------------------------------

@case()
def conv_stride_pad_32768(backend):
    """scratch once grew with padding x stride: ~4 GB for one input element."""
    x, w = torch.ones(1, 1, 1, 1), torch.ones(16, 1, 1, 1)
    return torch_or_error(lambda: CF.conv2d(x, w, stride=32768, padding=32768),
                          lambda: ref_conv(x, w, stride=32768, padding=32768), "padding", "stride", inputs=(x, w))


def _stride_pad_algo(algo, passes):
    def fn(backend):
        if algo == "blocked" and backend != "cpu":
            return "cpu only"
        x, w = torch.randn(1, 2, 3, 2, dtype=torch.float64), torch.randn(4, 2, 2, 2, dtype=torch.float64)
        kw = dict(stride=(4096, 8192), padding=(4096, 8191))
        if passes == "fwd":
            return torch_or_error(lambda: CF.conv2d(x, w, algo=algo, **kw), lambda: ref_conv(x, w, **kw),
                                  "padding", "stride", inputs=(x, w))
        return torch_or_error(lambda: conv_grads(lambda a, b: CF.conv2d(a, b, algo=algo, **kw), x, w),
                              lambda: conv_grads(lambda a, b: F.conv2d(a, b, **kw), x, w), "padding", "stride",
                              inputs=(x, w))
    return fn


for _a in ("direct", "im2col", "blocked"):
    for _p in ("fwd", "bwd"):
        CASES[f"conv_stride_pad_{_a}_{_p}"] = (_stride_pad_algo(_a, _p), ("cpu", "cudasim"))


@case()
def conv_padded_plane_overflow(backend):
    """int64 overflow of a padded-plane size (segfaulted through a zero-byte scratch)."""
    x, w = torch.ones(1, 1, 2, 1), torch.ones(1, 1, 1, 1)
    kw = dict(stride=(2 ** 31, 2 ** 32), padding=(2 ** 31 - 1, 2 ** 31))
    return torch_or_error(lambda: CF.conv2d(x, w, **kw), lambda: ref_conv(x, w, **kw), "padding", "stride",
                          inputs=(x, w))


@case()
def conv_bwd_input_stride_2_32(backend):
    """cudasim: a stride cast to 32 bits, then `% stride` (SIGFPE)."""
    dy, w = torch.ones(1, 4, 1, 1), torch.ones(4, 2, 3, 3)
    kw = dict(stride=2 ** 32, padding=1)
    return torch_or_error(
        lambda: CF.conv2d_backward_input(dy, w, (1, 2, 3, 3), **kw),
        lambda: torch.ops.aten.convolution_backward(dy.double(), torch.zeros(1, 2, 3, 3, dtype=torch.float64),
                                                    w.double(), None, [2 ** 32] * 2, [1, 1], [1, 1], False, [0, 0],
                                                    1, [True, False, False])[0],
        "stride", "padding", inputs=(dy, w))


def _bwd_stride(stride):
    def fn(backend):
        dy, w = torch.randn(2, 4, 2, 1, dtype=torch.float64), torch.randn(4, 2, 3, 3, dtype=torch.float64)
        # P = 2 needs the padded height past the stride: H + 2 pad >= stride + 3
        shape = (2, 2, 3, 3)
        kw = dict(stride=(stride, 1), padding=(stride // 2 + 1, 1))
        xh = 3
        p_ = (xh + 2 * kw["padding"][0] - 3) // stride + 1
        dy = torch.randn(2, 4, p_, 3, dtype=torch.float64)
        for algo in ("direct", "im2col"):
            torch_or_error(
                lambda: CF.conv2d_backward_input(dy, w, shape, algo=algo, **kw),
                lambda: torch.ops.aten.convolution_backward(dy, torch.zeros(shape, dtype=torch.float64), w, None,
                                                            list(kw["stride"]), list(kw["padding"]), [1, 1], False,
                                                            [0, 0], 1, [True, False, False])[0],
                "stride", "padding", inputs=(dy, w))
        return "ok"
    return fn


for _n, _s in (("2_32m1", 2 ** 32 - 1), ("2_31", 2 ** 31), ("2_31m1", 2 ** 31 - 1)):
    CASES[f"conv_bwd_input_stride_{_n}"] = (_bwd_stride(_s), ("cpu", "cudasim"))


@case()
def conv_direct_guard_overflow(backend):
    """stride 2^63-1 and padding 2^62: the padded extent passes 2^63 (outputs were left unwritten)."""
    x, w = torch.ones(1, 1, 2, 2), torch.ones(1, 1, 1, 1)
    for algo in ("direct", "im2col", "auto"):
        expect_error(lambda: CF.conv2d(x, w, stride=2 ** 63 - 1, padding=2 ** 62, algo=algo), "padding")
    return "ok"


@case()
def conv_values_past_int64(backend):
    """values beyond int64 once gave pybind11 signature dumps."""
    x, w = torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3)
    for v in (2 ** 63, 2 ** 64, 2 ** 100):
        expect_error(lambda: CF.conv2d(x, w, stride=v), "stride")
        expect_error(lambda: CF.conv2d(x, w, padding=v), "padding")
        expect_error(lambda: CF.conv2d(x, w, dilation=v), "dilation")
        expect_error(lambda: CF.conv2d(x, w, groups=v), "groups")
        expect_error(lambda: CF.conv2d(x, w, padding=(0, 0, 0, v)), "padding")
        expect_error(lambda: CF.conv2d_backward_input(torch.ones(1, 1, 2, 2), w, (1, 1, 4, v)), "input_shape")
        expect_error(lambda: CF.conv2d_backward_weight(torch.ones(1, 1, 2, 2), x, (1, 1, 3, v)), "weight_shape")
    for v in (-1, -2 ** 63, -2 ** 64):
        expect_error(lambda: CF.conv2d(x, w, stride=v), "stride")
        expect_error(lambda: CF.conv2d(x, w, padding=v), "padding")
    return "ok"


@case()
def conv_big_params_every_edge(backend):
    """stride, padding and dilation at each integer edge: torch's answer or an error naming them."""
    x, w = torch.randn(1, 2, 3, 4, dtype=torch.float64), torch.randn(3, 2, 2, 2, dtype=torch.float64)
    outcomes = []
    for v in BIG:
        for kw in (dict(stride=v), dict(stride=(1, v), padding=(0, 1)), dict(padding=(v, 0)),
                   dict(dilation=(1, v), padding=(0, v // 2 + 1)), dict(stride=v, padding=v // 4)):
            def ours():
                return CF.conv2d(x, w, **kw)

            def ref():
                return naive_conv(x, w, kw.get("stride", 1), kw.get("padding", 0), kw.get("dilation", 1))
            try:
                r = torch_or_error(ours, ref, "stride", "padding", "dilation", "output", "input", inputs=(x, w))
            except AssertionError as e:
                raise AssertionError(f"{kw}: {e}") from e
            outcomes.append(r[:5])
    return f"{outcomes.count('torch')} torch answers, {outcomes.count('error')} errors"


@case()
def conv_huge_output_is_memory_error(backend):
    """an output past 2^63 bytes (or any that cannot be allocated) is a ConvkitError and a MemoryError."""
    x, w = torch.ones(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    for pad in (2 ** 31, 2 ** 40):
        try:
            CF.conv2d(x, w, padding=pad)
        except ConvkitError as e:
            assert isinstance(e, MemoryError) or "padding" in str(e), f"{type(e).__name__}: {e}"
            continue
        except BaseException as e:  # noqa: BLE001
            raise AssertionError(f"padding={pad}: {type(e).__name__}: {e}") from e
        raise AssertionError(f"padding={pad}: no error for an output of {(2 * pad + 1) ** 2} elements")
    return "ok"


@case()
def conv_expanded_weight_is_memory_error(backend):
    """a stride-0 weight view of 4 TB: made contiguous, it can't be allocated."""
    x = torch.ones(1, 1, 2 ** 20, 1).expand(1, 1, 2 ** 20, 2 ** 20)
    w = torch.ones(1, 1, 1, 1)
    try:
        CF.conv2d(x, w)
    except ConvkitError as e:
        assert isinstance(e, MemoryError), f"{type(e).__name__}: {e}"
        assert "bytes" in str(e), str(e)
        return "ok"
    except BaseException as e:  # noqa: BLE001
        raise AssertionError(f"{type(e).__name__}: {e}") from e
    raise AssertionError("no error")


def grads_like_torch(x, w, kws, *names):
    """conv2d's output and both gradients for each of `kws` are torch's, or an error naming one
    of `names`."""
    for kw in kws:
        torch_or_error(lambda: conv_grads(lambda a, b: CF.conv2d(a, b, **kw), x, w),
                       lambda: conv_grads(lambda a, b: F.conv2d(a, b, **kw), x, w), *names, inputs=(x, w))
    return "ok"


@case()
def conv_huge_stride_backward_returns(backend):
    """grad input once walked stride_h x stride_w phases: a call that never returned."""
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    w = torch.randn(16, 2, 3, 3, dtype=torch.float64)
    return grads_like_torch(x, w, (dict(stride=2 ** 20, padding=1),
                                   dict(stride=(2 ** 20, 2 ** 21), padding=(2 ** 20, 2 ** 21 - 3))),
                            "stride", "padding")


@case()
def conv_huge_dilation(backend):
    x, w = torch.randn(1, 1, 3, 3, dtype=torch.float64), torch.randn(2, 1, 3, 3, dtype=torch.float64)
    return grads_like_torch(x, w, [dict(dilation=d, padding=d) for d in (2 ** 20, 2 ** 31, 2 ** 40)],
                            "dilation", "padding")


@case()
def conv_winograd_keeps_inf(backend):
    if backend != "cpu":
        return "cpu only"
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    x[0, 1, 4, 4] = math.inf
    x[1, 2, 0, 0] = -math.inf
    w = torch.rand(4, 3, 3, 3, dtype=torch.float64) + 0.1
    close(CF.conv2d(x, w, padding=1, algo="winograd"), ref_conv(x, w, padding=1))
    dy = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    dy[1, 0, 3, 3] = math.inf
    close(CF.conv2d_backward_input(dy, w, x.shape, padding=1, algo="winograd"),
          torch.ops.aten.convolution_backward(dy, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                              [True, False, False])[0])
    wi = w.clone()
    wi[2, 1, 1, 1] = math.inf
    close(CF.conv2d(x.abs(), wi, padding=1, algo="winograd"), ref_conv(x.abs(), wi, padding=1))
    return "ok"


# ---- pooling at the edges ------------------------------------------------------------------

@case()
def pool_huge_kernel(backend):
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    for k in (2 ** 20 + 1, 2 ** 31 + 1, 2 ** 40 + 1):
        p = k // 2
        torch_or_error(lambda: CF.max_pool2d(x, k, stride=1, padding=p),
                       lambda: F.max_pool2d(x, k, stride=1, padding=p), "kernel_size", "padding", inputs=(x,))
        torch_or_error(lambda: CF.avg_pool2d(x, k, stride=1, padding=p, count_include_pad=False),
                       lambda: F.avg_pool2d(x, k, stride=1, padding=p, count_include_pad=False),
                       "kernel_size", "padding", inputs=(x,))
    return "ok"


@case()
def pool_values_past_int64(backend):
    x = torch.randn(1, 1, 4, 4)
    for v in (2 ** 63, 2 ** 64, -2 ** 64):
        expect_error(lambda: CF.max_pool2d(x, v), "kernel_size")
        expect_error(lambda: CF.max_pool2d(x, 2, stride=v), "stride")
        expect_error(lambda: CF.max_pool2d(x, 2, dilation=v), "dilation")
        expect_error(lambda: CF.avg_pool2d(x, 2, divisor_override=v), "divisor_override")
    return "ok"


@case()
def pool_huge_stride(backend):
    """a stride past the padded input leaves one window (torch refuses strides past 2^31 with an
    int overflow; its answer is the one for any stride that leaves one window: 9 here)."""
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    for s in (2 ** 31, 2 ** 32, 2 ** 62, 2 ** 63 - 1):
        for ceil in (False, True):
            torch_or_error(lambda: CF.max_pool2d(x, 3, stride=s, padding=1, ceil_mode=ceil),
                           lambda: F.max_pool2d(x, 3, stride=9, padding=1, ceil_mode=ceil), "stride", inputs=(x,))
            torch_or_error(lambda: CF.avg_pool2d(x, 3, stride=s, padding=1, ceil_mode=ceil),
                           lambda: F.avg_pool2d(x, 3, stride=9, padding=1, ceil_mode=ceil), "stride", inputs=(x,))
            xg = x.clone().requires_grad_()
            xr = x.clone().requires_grad_()
            CF.max_pool2d(xg, 3, stride=s, padding=1, ceil_mode=ceil).sum().backward()
            F.max_pool2d(xr, 3, stride=9, padding=1, ceil_mode=ceil).sum().backward()
            close(xg.grad, xr.grad)
    return "ok"


@case()
def pool_divisor_edges(backend):
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    for d in (1, -1, 2 ** 31, -2 ** 31, 2 ** 62):
        torch_or_error(lambda: CF.avg_pool2d(x, 2, divisor_override=d),
                       lambda: F.avg_pool2d(x, 2, divisor_override=d), "divisor_override", inputs=(x,))
    return "ok"


def scatter_ref(dy, idx, input_shape):
    """torch's max-pool backward rule, dx[idx] += dy in output order, for indices inside their
    plane (torch's own kernel writes out of bounds for the others, which its forward gives windows
    with no tap in the input)."""
    n, c, h, w = input_shape
    dx = torch.zeros(n * c, h * w, dtype=torch.float64)
    flat_i, flat_dy = idx.reshape(n * c, -1), dy.double().reshape(n * c, -1)
    for pl in range(n * c):
        for j in range(flat_i.shape[1]):
            at = int(flat_i[pl, j])
            if 0 <= at < h * w:
                dx[pl, at] += flat_dy[pl, j]
    return dx.reshape(input_shape)


@case()
def max_pool_backward_every_forward_index(backend):
    """forward values and indices equal torch's, and the backward adds each dy where torch's rule
    puts it, for every index a forward produces: NaN, -inf, padding, dilation (windows whose taps
    all miss the input get -inf and an index past their row or plane), ceil_mode."""
    g = torch.Generator().manual_seed(1)
    for trial in range(60):
        h, w = int(torch.randint(1, 9, (1,), generator=g)), int(torch.randint(1, 9, (1,), generator=g))
        k = int(torch.randint(1, 4, (1,), generator=g))
        s = int(torch.randint(1, 4, (1,), generator=g))
        d = int(torch.randint(1, 3, (1,), generator=g))
        p = int(torch.randint(0, k // 2 + 1, (1,), generator=g))
        ceil = bool(trial % 2)
        if (k - 1) * d + 1 > h + 2 * p or (k - 1) * d + 1 > w + 2 * p:
            continue
        x = torch.randn(2, 2, h, w, dtype=torch.float64, generator=g)
        x[torch.rand(x.shape, generator=g) < 0.2] = -math.inf
        x[torch.rand(x.shape, generator=g) < 0.1] = math.nan
        try:
            ry, ri = F.max_pool2d(x, k, s, p, d, ceil_mode=ceil, return_indices=True)
        except RuntimeError:
            continue
        conf = f"(h={h}, w={w}, k={k}, s={s}, p={p}, d={d}, ceil={ceil})"
        y, i = CF.max_pool2d(x, k, s, p, d, ceil_mode=ceil, return_indices=True)
        close(y, ry)
        assert torch.equal(i, ri), f"indices differ from torch's {conf}"
        dy = torch.randn(ry.shape, dtype=torch.float64, generator=g)
        try:
            close(CF.max_pool2d_backward(dy, x.shape, ri, k, s, p, d, ceil), scatter_ref(dy, ri, x.shape))
        except AssertionError as e:
            raise AssertionError(f"{conf}: {e}") from e
    return "ok"


@case()
def max_pool_backward_stray_indices(backend):
    """indices no forward produces: out of the plane (negative, past it) never write outside dx;
    the CPU backend adds in-plane ones where torch would (outside their window: outside the
    contract for the CUDA kernels' gather form, which drops them)."""
    dy = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    for bad in (-1, 16, 2 ** 40, -2 ** 63, 2 ** 63 - 1, 5):
        idx = torch.tensor([[[[0, 1], [4, 5]]]], dtype=torch.int64)
        idx[0, 0, 1, 1] = bad
        with unchanged(dy, idx):
            dx = CF.max_pool2d_backward(dy, (1, 1, 4, 4), idx, 2)
        if backend == "cpu":
            close(dx, scatter_ref(dy, idx, (1, 1, 4, 4)))
        else:
            assert torch.isfinite(dx).all()
    return "ok"


# ---- read-only, overlapping and odd arrays ---------------------------------------------------

def _readonly_arrays():
    a = np.array([-1.0, 2.0, -3.0, 4.0], dtype=np.float32)
    a.flags.writeable = False
    b = np.frombuffer(np.array([-1.0, 2.0, -3.0], dtype=np.float32).tobytes(), dtype=np.float32)
    return [a, b, np.broadcast_to(np.float32(-1.0), (3, 4))]


@case()
def relu_inplace_readonly_numpy(backend):
    for a in _readonly_arrays():
        with unchanged(a):
            expect_error(lambda: CF.relu_(a), "read-only")
            expect_error(lambda: CF.relu(a, inplace=True), "read-only")
        assert same(CF.relu(a), np.maximum(a, 0))
    return "ok"


@case()
def relu_inplace_readonly_memmap(backend):
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.bin")
        np.array([-1.0, 2.0, -3.0, 4.0] * 4, dtype=np.float32).tofile(path)
        m = np.memmap(path, dtype=np.float32, mode="r", shape=(2, 8))
        with unchanged(m):
            expect_error(lambda: CF.relu_(m), "read-only")
        assert same(CF.relu(m), np.maximum(np.asarray(m), 0))
        m2 = np.memmap(path, dtype=np.float32, mode="r", shape=(1, 2, 2, 4))
        with unchanged(m2):
            y = CF.max_pool2d(m2, 2)
        assert same(y, F.max_pool2d(torch.from_numpy(np.array(m2)), 2).numpy())
        del m, m2
    return "ok"


@case()
def relu_inplace_overlapping(backend):
    """a destination with a stride-0 dimension (many elements, one address) is refused, as torch
    refuses it; a partly overlapping as_strided view gets torch's answer (torch writes it)."""
    e = torch.tensor([-1.0, 3.0]).expand(4, 2)
    with unchanged(e):
        expect_error(lambda: CF.relu_(e), "overlap")
    ne = np.broadcast_to(np.array([-1.0, 3.0], dtype=np.float32), (4, 2))
    ne_w = np.lib.stride_tricks.as_strided(np.array([-1.0, 3.0], dtype=np.float32), (4, 2), (0, 4))
    with unchanged(ne, ne_w):
        expect_error(lambda: CF.relu_(ne), "read-only")
        expect_error(lambda: CF.relu_(ne_w), "overlap")
    base, ref = torch.tensor([-1.0, 2.0, -3.0, 4.0]), torch.tensor([-1.0, 2.0, -3.0, 4.0])
    CF.relu_(base.as_strided((3, 2), (1, 1)))
    torch.relu_(ref.as_strided((3, 2), (1, 1)))
    assert torch.equal(base, ref), (base, ref)
    nb = np.array([-1.0, 2.0, -3.0, 4.0], dtype=np.float32)
    CF.relu_(np.lib.stride_tricks.as_strided(nb, (3, 2), (4, 4)))
    assert nb.tolist() == ref.tolist()
    ok = torch.tensor([-1.0, 2.0, -3.0, 4.0, -5.0, 6.0])
    CF.relu_(ok[::2])
    assert ok.tolist() == [0.0, 2.0, 0.0, 4.0, 0.0, 6.0]
    return "ok"


@case()
def numpy_shapes_like_torch(backend):
    """NumPy 0-d and other shapes come back as torch's would."""
    for shape in ((), (0,), (5,), (2, 0, 3), (1, 2, 3, 4, 5)):
        a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        y = CF.relu(a)
        assert isinstance(y, np.ndarray) and y.shape == a.shape and y.dtype == a.dtype, (shape, y.shape)
        assert same(y, np.maximum(a, 0))
        b = a.copy()
        r = CF.relu_(b)
        assert r is b and same(b, np.maximum(a, 0)), shape
        t = torch.from_numpy(a.copy())
        assert tuple(CF.relu(t).shape) == shape
        assert tuple(CF.relu_backward(t, t).shape) == shape
        assert CF.relu_backward(a, a).shape == shape
    return "ok"


@case()
def numpy_odd_layouts(backend):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 9, 11)).astype(np.float64)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float64)
    for xv in (x[:, :, ::-1, :], x[::2, :, :, ::3], np.asfortranarray(x), x.transpose(0, 1, 3, 2)):
        with unchanged(xv, w):
            y = CF.conv2d(xv, w, padding=1)
        close(torch.from_numpy(y), ref_conv(torch.from_numpy(np.ascontiguousarray(xv)), torch.from_numpy(w), padding=1))
    bx = x.astype(">f8")  # big-endian: refused or converted, never misread
    try:
        y = CF.conv2d(bx, w)
        close(torch.from_numpy(np.asarray(y, dtype=np.float64)), ref_conv(torch.from_numpy(x), torch.from_numpy(w)))
    except ConvkitError as e:
        assert "dtype" in str(e) or "byte order" in str(e), str(e)
    return "ok"


# ---- environment and settings ----------------------------------------------------------------

@case(backends=("cpu",))
def env_values_validated(backend):
    from convkit import _env
    good = {"CONVKIT_WORKSPACE_CAP": [("64M", 64 << 20), ("1G", 1 << 30), ("4096", 4096), ("512k", 512 << 10),
                                      ("1GiB", 1 << 30), ("", None)],
            "CONVKIT_POISON": [("1", True), ("0", False), ("", False)],
            "CONVKIT_BACKEND": [("cpu", "cpu"), ("", None)]}
    for name, pairs in good.items():
        for raw, want in pairs:
            got = _env.parse(name, raw)
            assert got == want or (want is None and got == _env.default(name)), (name, raw, got)
    bad = {"CONVKIT_WORKSPACE_CAP": ["abc", "-1", "0", "64Q", "1e9", " ", "99999999999999999999T"],
           "CONVKIT_POISON": ["yes please", "2"], "CONVKIT_SIM_THREADS": ["0", "-3", "x", "100000"],
           "CONVKIT_SIM_SEED": ["-1", "seed"], "CONVKIT_GEMM_KC": ["0", "-5", "many"],
           "CONVKIT_BLOCKED_TILE": ["4", "a,b", "1,2,3"], "CONVKIT_BACKEND": ["gpu"]}
    for name, raws in bad.items():
        for raw in raws:
            expect_error(lambda: _env.parse(name, raw), name)
    return "ok"


@case(backends=("cpu",))
def env_import_in_a_fresh_process(backend):
    import subprocess
    code = "import convkit; print(convkit.workspace_cap())"
    env = dict(os.environ, CONVKIT_WORKSPACE_CAP="64M")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == str(64 << 20), out.stderr[-2000:]
    env["CONVKIT_WORKSPACE_CAP"] = "lots"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "CONVKIT_WORKSPACE_CAP" in out.stderr and "64M" in out.stderr, out.stderr[-2000:]
    return "ok"


@case()
def set_num_threads_validated(backend):
    n0 = convkit.get_num_threads()
    try:
        for v in (0, -1, 2 ** 31, 2 ** 63, 2 ** 64, 100000):
            expect_error(lambda: convkit.set_num_threads(v), "set_num_threads")
        for v in (1.5, "2", None, True):
            expect_error(lambda: convkit.set_num_threads(v), "set_num_threads", cls=convkit.ConvkitTypeError)
        assert convkit.get_num_threads() == n0
        x, w = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
        close(CF.conv2d(x, w), ref_conv(x, w))
        convkit.set_num_threads(1)
        close(CF.conv2d(x, w), ref_conv(x, w))
    finally:
        convkit.set_num_threads(n0)
    return "ok"


@case()
def workspace_cap_refuses(backend):
    from convkit import _arrays as K
    cap0 = K.workspace_cap()
    x, w = torch.randn(2, 16, 20, 20, dtype=torch.float64), torch.randn(8, 16, 3, 3, dtype=torch.float64)
    try:
        K.set_workspace_cap(1024)
        msg = expect_error(lambda: CF.conv2d(x, w, padding=1, algo="im2col"), "CONVKIT_WORKSPACE_CAP", "bytes",
                           cls=MemoryError)
        assert isinstance(CF.conv2d, object) and msg
        close(CF.conv2d(x, w, padding=1), ref_conv(x, w, padding=1))  # auto picks one that fits
        for v in (0, -1, 2 ** 64, "64M!"):
            expect_error(lambda: K.set_workspace_cap(v), "workspace")
    finally:
        K.set_workspace_cap(cap0)
    return "ok"


@case()
def autotune_cache_bounded(backend):
    from convkit import _algos as K
    old_b, old_n = convkit.benchmark, K.benchmark_cache_size()
    try:
        convkit.benchmark = True
        K.set_benchmark_cache_size(4)
        for h in range(5, 15):
            x, w = torch.randn(1, 2, h, h), torch.randn(3, 2, 3, 3)
            close(CF.conv2d(x, w), ref_conv(x, w))
            assert len(K._cache) <= 4, len(K._cache)
        assert len(K._cache) == 4
        for v in (0, -1, 2 ** 64):
            expect_error(lambda: K.set_benchmark_cache_size(v), "cache")
    finally:
        convkit.benchmark = old_b
        K.set_benchmark_cache_size(old_n)
    return "ok"


# ---- threads, tasks, fork, Ctrl-C, memory ----------------------------------------------------

@case()
def threads_side_by_side(backend):
    errors, outs = [], {}
    xs = [torch.randn(2, 3, 9 + i, 10, dtype=torch.float64) for i in range(4)]
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64)

    def work(i):
        try:
            with convkit.use_backend(backend):
                for _ in range(3):
                    outs[i] = CF.max_pool2d(CF.relu(CF.conv2d(xs[i], w, padding=1)), 2)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors
    for i in range(4):
        close(outs[i], F.max_pool2d(F.relu(ref_conv(xs[i], w, padding=1)), 2))
    return "ok"


@case()
def asyncio_tasks(backend):
    x, w = torch.randn(2, 3, 9, 9, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)

    async def one(i):
        await asyncio.sleep(0)
        y = CF.conv2d(x + i, w)
        await asyncio.sleep(0)
        return y

    async def main():
        return await asyncio.gather(*(one(i) for i in range(6)))
    for i, y in enumerate(asyncio.run(main())):
        close(y, ref_conv(x + i, w))
    return "ok"


@case()
def fork_child_does_not_hang(backend):
    # The child calls convkit on NumPy arrays and runs no torch op: torch's own OpenMP pool,
    # which convkit's modules share, hangs a forked child in torch's parallel ops (a fill of a
    # poisoned workspace, say). Its convolution is big enough for convkit's kernels to want threads.
    x, w = torch.randn(2, 8, 16, 16), torch.randn(16, 8, 3, 3)
    ref = ref_conv(x, w, padding=1).numpy()
    xn, wn = x.numpy(), w.numpy()
    n0 = convkit.get_num_threads()
    convkit.set_num_threads(2)
    try:
        CF.conv2d(torch.randn(8, 16, 32, 32), torch.randn(32, 16, 3, 3), padding=1)  # the pool is up
        pid = os.fork()
        if pid == 0:
            try:
                ok = all(np.allclose(CF.conv2d(xn, wn, padding=1, algo=a), ref, rtol=1e-4, atol=1e-4)
                         for a in ("direct", "im2col", "auto"))
                os._exit(0 if ok else 3)
            except BaseException:  # noqa: BLE001
                os._exit(4)
        deadline = time.time() + 60
        while time.time() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child status {status}"
                return "ok"
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError("the forked child hung in convkit")
    finally:
        convkit.set_num_threads(n0)


@case(backends=("cpu",))
def ctrl_c_interrupts_a_long_conv(backend):
    """a pending Ctrl-C ends a long kernel: KeyboardInterrupt, promptly, and the next call works."""
    x, w = torch.randn(64, 64, 56, 56), torch.randn(64, 64, 3, 3)
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    t0 = time.time()
    timer.start()
    try:
        for _ in range(200):  # ~ many seconds of work if nothing stops it
            CF.conv2d(x, w, padding=1, algo="direct")
        raise AssertionError("no KeyboardInterrupt")
    except KeyboardInterrupt:
        dt = time.time() - t0
    finally:
        timer.cancel()
    assert dt < 10, f"KeyboardInterrupt after {dt:.1f} s"
    xs, ws = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64)
    close(CF.conv2d(xs, ws), ref_conv(xs, ws))
    return f"interrupted after {dt:.2f} s"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trimmed_rss() -> int:
    """RSS after gc and glibc's malloc_trim: freed heap memory that glibc's allocator keeps for
    any library's next allocation (its dynamic mmap threshold moves torch's own large tensors
    into the heap) is not convkit's to hold."""
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return _rss()


@case()
def memory_released_after_large_call(backend):
    """RSS after a large call and gc is within 10% of before: scratch and workspace released
    (the CPU module keeps per-thread buffers under 32 MiB for the next call)."""
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        return "skipped under AddressSanitizer (its quarantine holds freed memory by design)"
    small_x, small_w = torch.randn(1, 4, 8, 8), torch.randn(4, 4, 3, 3)
    for algo in ("direct", "im2col", "auto"):
        CF.conv2d(small_x, small_w, padding=1, algo=algo)
    before = _trimmed_rss()
    n = 8 if backend == "cpu" else 1
    x, w = torch.randn(n, 64, 96, 96), torch.randn(64, 64, 5, 5)
    for algo in ("direct", "im2col", "auto"):
        y = CF.conv2d(x, w, padding=2, algo=algo)
        del y
    del x, w
    for algo in ("direct", "im2col", "auto"):
        CF.conv2d(small_x, small_w, padding=1, algo=algo)
    after = _trimmed_rss()
    held = convkit._backend.module("cpu").scratch_bytes() if backend == "cpu" else 0
    assert after <= before * 1.10, f"RSS {before >> 20} MiB before, {after >> 20} MiB after"
    return f"RSS {before >> 20} -> {after >> 20} MiB (CPU scratch held: {held >> 20} MiB)"
