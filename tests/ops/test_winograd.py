"""algo='winograd' (CPU only): Winograd F(2x2, 3x3) for 3x3 / stride 1 / dilation 1 layers.

Forward and grad input run the Winograd transforms (grad input on the rotated, K/C-swapped
filter); grad weight runs im2col + GEMM. Checked against torch in float64 on odd sizes, every
padding form (including pads > 2, where grad input crops), groups and depthwise, edge tiles and
tile blocks that span images, with outputs NaN-poisoned (CONVKIT_POISON=1, set by conftest).
The accuracy bounds below are the ones documented in csrc/cpu/conv_winograd.cpp.
"""
import numpy as np
import pytest
import torch

import convkit
import convkit._backend
import convkit._kernels
import convkit.functional as CF
import convkit.nn as cnn
from convkit import ConvkitValueError

from conftest import BACKENDS, assert_bitwise, assert_close, dtype_id, rand, ref_conv2d, small_ints

# (N, C, K, groups, H, W, padding, bias)
CASES = [
    (1, 1, 1, 1, 1, 1, 1, False),        # one pixel, one (edge) tile
    (1, 3, 5, 1, 7, 7, 1, True),
    (2, 5, 7, 1, 13, 11, 1, True),       # odd sizes: edge tiles in both directions
    (3, 4, 6, 2, 9, 31, 0, False),       # groups, no padding
    (1, 6, 9, 3, 33, 5, 2, True),        # groups with a channel multiplier, pad 2
    (2, 5, 5, 5, 8, 9, 1, True),         # depthwise
    (2, 5, 3, 1, 8, 9, (3, 0), False),   # pad 3 > 2: grad input crops dy
    (1, 4, 4, 1, 6, 6, "same", True),
    (1, 2, 3, 1, 5, 4, "valid", False),
    (2, 3, 2, 1, 6, 7, (0, 2, 1, 0), True),  # asymmetric explicit pads (top, bottom, left, right)
    (1, 3, 2, 1, 3, 3, 0, False),        # a single 1x1 output
    (3, 3, 4, 1, 40, 39, 1, True),       # 1200 tiles: several tile blocks, spanning images
    (2, 64, 32, 1, 15, 15, 1, True),     # a longer reduction
]

# max |convkit - float64 reference| / max |reference|: the bound the file header documents.
REL_BOUND = {torch.float32: 5e-6, torch.float64: 1e-13}


def _case_id(c):
    N, C, K, g, H, W, pad, bias = c
    p = "x".join(map(str, pad)) if isinstance(pad, tuple) else str(pad)
    return f"N{N}C{C}K{K}g{g}_{H}x{W}_p{p}{'_b' if bias else ''}"


def _ref(x, w, b, pad, g, go):
    """ref_conv2d, with four explicit pads (top, bottom, left, right) applied by F.pad first."""
    if not (isinstance(pad, tuple) and len(pad) == 4):
        return ref_conv2d(x, w, b, padding=pad, groups=g, grad_out=go)
    xr = x.double().requires_grad_()
    xp = torch.nn.functional.pad(xr, (pad[2], pad[3], pad[0], pad[1]))
    out = ref_conv2d(xp.detach(), w, b, groups=g, grad_out=go)
    xp.backward(out["gx"])
    out["gx"] = xr.grad
    return out


def _rel_err(actual, expected):
    return ((actual.double() - expected).abs().max() / expected.abs().max().clamp_min(1e-300)).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_winograd_matches_float64(case, dtype):
    N, C, K, g, H, W, pad, has_bias = case
    x = rand((N, C, H, W), dtype)
    w = (rand((K, C // g, 3, 3)) / (9 * C / g) ** 0.5).to(dtype)
    b = rand((K,), dtype) if has_bias else None
    with convkit.use_backend("cpu"):
        y = CF.conv2d(x, w, b, padding=pad, groups=g, algo="winograd")
        go = rand(tuple(y.shape), dtype)
        ref = _ref(x, w, b, pad, g, go)
        gx = CF.conv2d_backward_input(go, w, tuple(x.shape), padding=pad, groups=g, algo="winograd")
        gw = CF.conv2d_backward_weight(go, x, tuple(w.shape), padding=pad, groups=g, algo="winograd")
    L = (C // g) * 9
    assert_close(y, ref["y"], dtype, L=L, what="winograd forward")
    assert_close(gx, ref["gx"], dtype, L=(K // g) * 9, what="winograd grad input")
    assert_close(gw, ref["gw"], dtype, L=N * y.shape[2] * y.shape[3], scale=3.0, what="winograd grad weight")
    assert _rel_err(y, ref["y"]) <= REL_BOUND[dtype]
    assert _rel_err(gx, ref["gx"]) <= REL_BOUND[dtype]


@pytest.mark.parametrize("case", [c for c in CASES if c[1] * c[2] <= 64], ids=_case_id)
def test_winograd_small_integers_exact(case):
    """F(2x2, 3x3)'s transforms hold only 0, +-1 and +-1/2: with integer data in [-8, 7] every
    value in the transform domain is an exact multiple of 1/4 in float32, so forward and grad input
    equal the float64 reference bit for bit (F(4x4)'s 1/6 would not)."""
    N, C, K, g, H, W, pad, has_bias = case
    x, w = small_ints((N, C, H, W)), small_ints((K, C // g, 3, 3))
    b = small_ints((K,)) if has_bias else None
    with convkit.use_backend("cpu"):
        y = CF.conv2d(x, w, b, padding=pad, groups=g, algo="winograd")
        go = small_ints(tuple(y.shape))
        ref = _ref(x, w, b, pad, g, go)
        gx = CF.conv2d_backward_input(go, w, tuple(x.shape), padding=pad, groups=g, algo="winograd")
        gw = CF.conv2d_backward_weight(go, x, tuple(w.shape), padding=pad, groups=g, algo="winograd")
    assert_bitwise(y, ref["y"].float(), what="winograd forward")
    assert_bitwise(gx, ref["gx"].float(), what="winograd grad input")
    assert_bitwise(gw, ref["gw"].float(), what="winograd grad weight")


def test_winograd_accuracy_not_worse_than_im2col_float32():
    """float32 error against float64 stays within a small factor of im2col's (the header's table)."""
    x = rand((2, 128, 14, 14), torch.float32)
    w = (rand((64, 128, 3, 3)) / (9 * 128) ** 0.5).float()
    ref = ref_conv2d(x, w, None, padding=1)["y"]
    with convkit.use_backend("cpu"):
        e_w = _rel_err(CF.conv2d(x, w, padding=1, algo="winograd"), ref)
        e_i = _rel_err(CF.conv2d(x, w, padding=1, algo="im2col"), ref)
    assert e_w <= max(4 * e_i, 1e-6), (e_w, e_i)


@pytest.mark.parametrize("seed", [0, 1])
def test_winograd_gradcheck(seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=gen, requires_grad=True)
    with convkit.use_backend("cpu"):
        assert torch.autograd.gradcheck(
            lambda x, w, b: CF.conv2d(x, w, b, padding=(1, 2), groups=2, algo="winograd"), (x, w, b))


def test_winograd_nn_module_and_numpy():
    torch.manual_seed(0)
    m = torch.nn.Conv2d(6, 8, 3, padding=1, groups=2).double()
    cm = cnn.Conv2d(6, 8, 3, padding=1, groups=2, algo="winograd").double()
    cm.load_state_dict(m.state_dict())
    x = rand((3, 6, 11, 10))
    with convkit.use_backend("cpu"):
        assert_close(cm(x), m(x).detach(), torch.float64, L=27)
        xn, wn = x.float().numpy(), m.weight.detach().float().numpy()
        yn = CF.conv2d(xn, wn, padding=1, groups=2, algo="winograd")
    assert isinstance(yn, np.ndarray)
    assert_close(torch.from_numpy(yn), ref_conv2d(x.float(), m.weight.detach().float(), None, padding=1,
                                                  groups=2)["y"], torch.float32, L=27)


@pytest.mark.parametrize("kw", [dict(stride=2), dict(dilation=2), dict(kernel=5), dict(kernel=(1, 3)),
                                dict(stride=(1, 2))], ids=lambda kw: "_".join(f"{k}{v}" for k, v in kw.items()))
def test_winograd_rejects_other_shapes(kw):
    k = kw.pop("kernel", 3)
    kh, kw_ = (k, k) if isinstance(k, int) else k
    x, w = rand((1, 2, 9, 9), torch.float32), rand((3, 2, kh, kw_), torch.float32)
    with convkit.use_backend("cpu"):
        for call in (lambda: CF.conv2d(x, w, algo="winograd", **kw),
                     lambda: CF.conv2d_backward_input(rand((1, 3, 3, 3), torch.float32), w, (1, 2, 9, 9),
                                                      algo="winograd", **kw),
                     lambda: CF.conv2d_backward_weight(rand((1, 3, 3, 3), torch.float32), x, tuple(w.shape),
                                                       algo="winograd", **kw)):
            before = dict(convkit._kernels.kernel_calls)
            with pytest.raises(ConvkitValueError, match="winograd.*needs a 3x3 kernel and stride 1 and dilation 1"):
                call()
            assert dict(convkit._kernels.kernel_calls) == before  # raised before any kernel ran


@pytest.mark.parametrize("backend", [b for b in BACKENDS if convkit._backend.is_cuda_backend(b)] or
                         [pytest.param("cudasim", marks=pytest.mark.skip(reason="no CUDA backend here"))])
def test_winograd_refused_on_cuda_backends(backend):
    dev = "cuda" if backend == "cuda" else "cpu"
    x, w = rand((1, 2, 6, 6), torch.float32, dev), rand((3, 2, 3, 3), torch.float32, dev)
    go = rand((1, 3, 6, 6), torch.float32, dev)
    with convkit.use_backend(backend):
        before = dict(convkit._kernels.kernel_calls)
        for call in (lambda: CF.conv2d(x, w, padding=1, algo="winograd"),
                     lambda: CF.conv2d_backward_input(go, w, (1, 2, 6, 6), padding=1, algo="winograd"),
                     lambda: CF.conv2d_backward_weight(go, x, (3, 2, 3, 3), padding=1, algo="winograd")):
            with pytest.raises(ConvkitValueError, match=f"winograd.*{backend}"):
                call()
        assert dict(convkit._kernels.kernel_calls) == before


def test_winograd_is_a_benchmark_candidate_on_cpu_only():
    mod = convkit._backend.module("cpu")
    args = convkit._algos.check_conv("conv2d", (8, 96, 28, 28), (128, 96, 3, 3), "float32", "float32",
                                      padding=1)
    p = convkit._kernels._conv_params(mod, (8, 96, 28, 28), (128, 96, 3, 3), args)
    assert "winograd" in convkit._algos.candidates(p, args, "cpu")
    assert "winograd" not in convkit._algos.candidates(p, args, "cudasim")
    args2 = convkit._algos.check_conv("conv2d", (8, 96, 28, 28), (128, 96, 3, 3), "float32", "float32",
                                       padding=1, stride=2)
    p2 = convkit._kernels._conv_params(mod, (8, 96, 28, 28), (128, 96, 3, 3), args2)
    assert "winograd" not in convkit._algos.candidates(p2, args2, "cpu")


@pytest.mark.parametrize("shape,want", [
    (((8, 96, 28, 28), (128, 96, 3, 3), 1, 1), "blocked"),    # 3a.3x3: blocked beat winograd there
    (((8, 64, 56, 56), (192, 64, 3, 3), 1, 1), "blocked"),    # stem.3x3
    (((8, 160, 7, 7), (320, 160, 3, 3), 1, 1), "blocked"),    # 5a.3x3
    (((2, 32, 28, 28), (32, 1, 3, 3), 1, 32), "direct"),      # depthwise
])
def test_auto_heuristic_prefers_blocked_to_winograd(shape, want):
    """winograd stays an algo of its own and a convkit.benchmark candidate, but the heuristic picks
    'blocked' for 3x3 layers: it matched or beat winograd on every GoogLeNet 3x3 layer measured
    (see convkit._algos.heuristic_cpu)."""
    (xs, ws, stride, groups) = shape
    mod = convkit._backend.module("cpu")
    args = convkit._algos.check_conv("conv2d", xs, ws, "float32", "float32", padding=1, stride=stride,
                                      groups=groups)
    p = convkit._kernels._conv_params(mod, xs, ws, args)
    assert convkit._algos.heuristic(p, args, "cpu") == want
    assert convkit._algos.heuristic(p, args, "cudasim") not in ("winograd", "blocked")


def test_winograd_workspace_contract():
    """The kernel takes the workspace the size query gives, runs with fewer threads when it holds
    only one thread's tile block, and refuses a smaller one (RuntimeError, nothing written)."""
    mod = convkit._backend.module("cpu")
    p = mod.ConvParams(2, 8, 10, 12, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    x = np.random.default_rng(0).standard_normal((2, 8, 10, 12)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((6, 8, 3, 3)).astype(np.float32)
    ref = ref_conv2d(torch.from_numpy(x), torch.from_numpy(w), None, padding=1)["y"]
    full = mod.conv2d_workspace_bytes("winograd", "fwd", "float32", p, 1 << 30)
    one_thread = full if mod.get_num_threads() == 1 else None
    if one_thread is None:  # filters + one block: (full - filters) / threads + filters
        filt = 16 * 6 * 8 * 4
        one_thread = filt + (full - filt) // mod.get_num_threads()
    for nbytes in (full, one_thread):
        ws = np.empty(nbytes, np.uint8)
        y = np.full((2, 6, 10, 12), np.nan, np.float32)
        mod.conv2d_fwd("winograd", "float32", p, x.ctypes.data, w.ctypes.data, 0, y.ctypes.data, ws.ctypes.data,
                       nbytes)
        assert_close(torch.from_numpy(y), ref, torch.float32, L=72)
    ws = np.empty(one_thread - 4, np.uint8)
    y = np.full((2, 6, 10, 12), np.nan, np.float32)
    with pytest.raises(RuntimeError, match="workspace"):
        mod.conv2d_fwd("winograd", "float32", p, x.ctypes.data, w.ctypes.data, 0, y.ctypes.data, ws.ctypes.data,
                       one_thread - 4)
    assert np.isnan(y).all()
    # grad weight runs im2col, with im2col's workspace
    assert (mod.conv2d_workspace_bytes("winograd", "bwd_weight", "float32", p, 1 << 30)
            == mod.conv2d_workspace_bytes("im2col", "bwd_weight", "float32", p, 1 << 30))
