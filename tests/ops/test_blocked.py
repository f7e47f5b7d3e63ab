"""algo='blocked' (CPU only): direct convolution with the output channels in the vector lanes.

Forward runs the channel-blocked kernel; grad input runs it too at stride 1 (on dy, with the
filters flipped and K, C swapped; pads larger than the kernel crop dy) and direct's kernel at
stride > 1; grad weight runs the same register tile over (channel block, filter taps), reduced over
every output pixel, the batch cut into chunks when the workspace cap is small. Checked against torch in float64 on odd sizes, channel
counts that leave partial vector blocks, every register-tile shape the cost model can pick
(output rows of 1 to 40 pixels and 1 to 9 channel blocks), strides 1, 2 and 3 (the kernel's
stride-1, stride-2 and runtime-stride forms), dilation, groups, depthwise, asymmetric padding,
with outputs NaN-poisoned (CONVKIT_POISON=1, set by conftest).
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

from conftest import (BACKENDS, assert_bitwise, assert_close, dtype_id, one_image_workspace, rand, ref_conv2d,
                      small_ints)

# (N, C, K, groups, H, W, R, S, stride, padding, dilation, bias)
CASES = [
    (1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, False),            # one pixel, one channel
    (2, 3, 5, 1, 9, 11, 3, 3, 1, 1, 1, True),            # a partial vector block of outputs
    (2, 3, 64, 1, 23, 23, 7, 7, 2, 3, 1, True),          # the stem's shape class: 7x7 / 2
    (1, 16, 48, 1, 14, 14, 5, 5, 1, 2, 1, True),         # 4a.5x5's shape class, 3 blocks
    (2, 8, 128, 1, 7, 7, 5, 5, 1, 2, 1, False),          # 7-pixel rows, 8 blocks
    (1, 5, 40, 1, 5, 40, 3, 3, 1, 1, 1, True),           # 40-pixel rows: tail tiles
    (1, 3, 16, 1, 6, 28, 3, 3, 1, 1, 1, True),           # one block, 28-pixel rows: the widest tile
    (2, 6, 9, 3, 13, 10, 3, 3, 1, (1, 2), 1, True),      # groups, unequal padding
    (2, 4, 4, 4, 11, 9, 3, 3, 1, 1, 1, False),           # depthwise
    (1, 4, 6, 2, 12, 13, 3, 2, 3, (2, 0), 1, True),      # stride 3 (runtime stride), 3x2 kernel
    (2, 3, 7, 1, 12, 14, 3, 3, (2, 1), 1, (2, 1), True), # mixed stride, dilation
    (1, 3, 5, 1, 9, 8, 3, 3, 1, (4, 3), 1, False),       # pads beyond the kernel: grad input crops
    (1, 2, 144, 1, 6, 6, 3, 3, 1, "same", 2, True),      # 9 blocks, dilated 'same'
    (2, 5, 17, 1, 8, 9, 4, 4, 1, "same", 1, True),       # even kernel: asymmetric 'same'
    (1, 24, 20, 1, 8, 8, 1, 1, 1, 0, 1, True),           # a 1x1 layer
    (2, 32, 32, 1, 15, 15, 3, 3, 1, 1, 1, True),         # a longer reduction
]


def _case_id(c):
    N, C, K, g, H, W, R, S, st, pad, dil, bias = c
    f = lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v)  # noqa: E731
    return f"N{N}C{C}K{K}g{g}_{H}x{W}_k{R}x{S}_s{f(st)}_p{f(pad)}_d{f(dil)}{'_b' if bias else ''}"


def _kw(c):
    _, _, _, g, _, _, _, _, st, pad, dil, _ = c
    return dict(stride=st, padding=pad, dilation=dil, groups=g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_blocked_matches_float64(case, dtype):
    N, C, K, g, H, W, R, S, st, pad, dil, has_bias = case
    kw = _kw(case)
    x = rand((N, C, H, W), dtype)
    w = (rand((K, C // g, R, S)) / (R * S * C / g) ** 0.5).to(dtype)
    b = rand((K,), dtype) if has_bias else None
    with convkit.use_backend("cpu"):
        y = CF.conv2d(x, w, b, algo="blocked", **kw)
        go = rand(tuple(y.shape), dtype)
        ref = ref_conv2d(x, w, b, grad_out=go, **kw)
        gx = CF.conv2d_backward_input(go, w, tuple(x.shape), algo="blocked", **kw)
        gw = CF.conv2d_backward_weight(go, x, tuple(w.shape), algo="blocked", **kw)
    assert_close(y, ref["y"], dtype, L=(C // g) * R * S, what="blocked forward")
    assert_close(gx, ref["gx"], dtype, L=(K // g) * R * S, what="blocked grad input")
    assert_close(gw, ref["gw"], dtype, L=N * y.shape[2] * y.shape[3], scale=3.0, what="blocked grad weight")


@pytest.mark.parametrize("case", [c for c in CASES if c[1] * c[2] <= 256], ids=_case_id)
def test_blocked_small_integers_exact(case):
    """Integer data in [-8, 7]: every partial sum is an exact float32 integer, so any summation
    order gives the float64 result bit for bit; an element read from the wrong place cannot."""
    N, C, K, g, H, W, R, S, st, pad, dil, has_bias = case
    kw = _kw(case)
    x, w = small_ints((N, C, H, W)), small_ints((K, C // g, R, S))
    b = small_ints((K,)) if has_bias else None
    with convkit.use_backend("cpu"):
        y = CF.conv2d(x, w, b, algo="blocked", **kw)
        go = small_ints(tuple(y.shape))
        ref = ref_conv2d(x, w, b, grad_out=go, **kw)
        gx = CF.conv2d_backward_input(go, w, tuple(x.shape), algo="blocked", **kw)
    assert_bitwise(y, ref["y"].float(), what="blocked forward")
    assert_bitwise(gx, ref["gx"].float(), what="blocked grad input")


@pytest.mark.parametrize("seed", [0, 1])
def test_blocked_gradcheck(seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(6, 2, 3, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=gen, requires_grad=True)
    with convkit.use_backend("cpu"):
        assert torch.autograd.gradcheck(
            lambda x, w, b: CF.conv2d(x, w, b, padding=(1, 2), groups=2, algo="blocked"), (x, w, b))
        assert torch.autograd.gradcheck(
            lambda x, w, b: CF.conv2d(x, w, b, stride=2, dilation=(1, 2), algo="blocked"),
            (x.detach()[:, :2].clone().requires_grad_(), w, b))


def test_blocked_nn_module_and_numpy():
    torch.manual_seed(0)
    m = torch.nn.Conv2d(6, 40, 5, padding=2, stride=2).double()
    cm = cnn.Conv2d(6, 40, 5, padding=2, stride=2, algo="blocked").double()
    cm.load_state_dict(m.state_dict())
    x = rand((3, 6, 11, 10))
    with convkit.use_backend("cpu"):
        assert_close(cm(x), m(x).detach(), torch.float64, L=150)
        xn, wn = x.float().numpy(), m.weight.detach().float().numpy()
        # a NumPy workspace may be only 16-byte aligned: the kernel aligns its own start
        yn = CF.conv2d(xn, wn, padding=2, stride=2, algo="blocked")
    assert isinstance(yn, np.ndarray)
    assert_close(torch.from_numpy(yn), ref_conv2d(x.float(), m.weight.detach().float(), None, padding=2,
                                                  stride=2)["y"], torch.float32, L=150)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if convkit._backend.is_cuda_backend(b)] or
                         [pytest.param("cudasim", marks=pytest.mark.skip(reason="no CUDA backend here"))])
def test_blocked_refused_on_cuda_backends(backend):
    dev = "cuda" if backend == "cuda" else "cpu"
    x, w = rand((1, 2, 6, 6), torch.float32, dev), rand((3, 2, 3, 3), torch.float32, dev)
    with convkit.use_backend(backend):
        before = dict(convkit._kernels.kernel_calls)
        with pytest.raises(ConvkitValueError, match=f"blocked.*{backend}"):
            CF.conv2d(x, w, padding=1, algo="blocked")
        assert dict(convkit._kernels.kernel_calls) == before


def test_blocked_is_a_benchmark_candidate_on_cpu_only():
    mod = convkit._backend.module("cpu")
    args = convkit._algos.check_conv("conv2d", (8, 32, 14, 14), (128, 32, 5, 5), "float32", "float32", padding=2)
    p = convkit._kernels._conv_params(mod, (8, 32, 14, 14), (128, 32, 5, 5), args)
    assert "blocked" in convkit._algos.candidates(p, args, "cpu")
    assert "blocked" not in convkit._algos.candidates(p, args, "cudasim")


def test_blocked_workspace_contract():
    """The kernel runs in the workspace the size query gives, at any 4-byte alignment, and refuses
    a smaller one (RuntimeError, nothing written); grad weight's holds whole images, at least one."""
    mod = convkit._backend.module("cpu")
    p = mod.ConvParams(2, 8, 10, 12, 20, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    x = np.random.default_rng(0).standard_normal((2, 8, 10, 12)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((20, 8, 3, 3)).astype(np.float32)
    ref = ref_conv2d(torch.from_numpy(x), torch.from_numpy(w), None, padding=1)["y"]
    need = mod.conv2d_workspace_bytes("blocked", "fwd", "float32", p, 1 << 30)
    assert need > 20 * 8 * 9 * 4
    raw = np.empty(need + 64, np.uint8)
    for shift in (0, 4, 16, 36):
        ws = raw[shift:shift + need]
        y = np.full((2, 20, 10, 12), np.nan, np.float32)
        mod.conv2d_fwd("blocked", "float32", p, x.ctypes.data, w.ctypes.data, 0, y.ctypes.data, ws.ctypes.data, need)
        assert_close(torch.from_numpy(y), ref, torch.float32, L=72)
    y = np.full((2, 20, 10, 12), np.nan, np.float32)
    with pytest.raises(RuntimeError, match="workspace"):
        mod.conv2d_fwd("blocked", "float32", p, x.ctypes.data, w.ctypes.data, 0, y.ctypes.data, raw.ctypes.data,
                       need - 4)
    assert np.isnan(y).all()
    one = mod.conv2d_workspace_bytes("blocked", "bwd_weight", "float32", p, 1)  # cap below one image: one
    both = mod.conv2d_workspace_bytes("blocked", "bwd_weight", "float32", p, 1 << 30)
    slack = 2 * one - both  # two images minus one: the alignment slack, two vectors
    assert both > one and 0 < slack <= 128
    p2 = mod.ConvParams(2, 8, 10, 12, 20, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1)  # stride 2: direct's grad input
    assert mod.conv2d_workspace_bytes("blocked", "bwd_input", "float32", p2, 1 << 30) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
def test_blocked_grad_weight_in_batch_chunks(monkeypatch, dtype):
    """A workspace cap of one image: grad weight runs one image at a time, each adding onto
    the last, and matches both the reference and the single-chunk result (to rounding)."""
    x = rand((3, 5, 9, 8), dtype)
    w = rand((20, 5, 3, 3), dtype)
    go = rand((3, 20, 9, 8), dtype)
    ref = ref_conv2d(x, w, None, padding=1, grad_out=go)
    with convkit.use_backend("cpu"):
        whole = CF.conv2d_backward_weight(go, x, tuple(w.shape), padding=1, algo="blocked")
        one = one_image_workspace("cpu", tuple(x.shape), tuple(w.shape), dtype, algo="blocked", padding=1)
        monkeypatch.setattr(convkit._arrays, "WORKSPACE_CAP_BYTES", one)
        before = dict(convkit._kernels.kernel_calls)
        chunked = CF.conv2d_backward_weight(go, x, tuple(w.shape), padding=1, algo="blocked")
        assert convkit._kernels.kernel_calls["conv2d_bwd_weight"] == before.get("conv2d_bwd_weight", 0) + 1
    assert_close(chunked, ref["gw"], dtype, L=3 * 72, scale=3.0, what="chunked grad weight")
    assert_close(chunked, whole, dtype, L=3 * 72, scale=3.0, what="chunked vs whole")


SHAPES_AVX512 = ["4,6", "3,9", "3,7", "2,14", "2,7", "1,28", "1,14", "1,7"]


@pytest.mark.parametrize("tile", SHAPES_AVX512)
def test_blocked_every_register_tile(monkeypatch, tile):
    """Each register tile the cost model can pick, forced with CONVKIT_BLOCKED_TILE (an unknown
    tile on a non-AVX-512 build leaves the model's choice), on a shape with partial channel blocks
    and partial pixel tiles, forward and grad input, stride 1 and 2, against float64."""
    monkeypatch.setenv("CONVKIT_BLOCKED_TILE", tile)
    for stride in (1, 2):
        x = rand((2, 5, 11, 17), torch.float32)
        w = (rand((37, 5, 3, 3)) / 45 ** 0.5).float()
        b = rand((37,), torch.float32)
        with convkit.use_backend("cpu"):
            y = CF.conv2d(x, w, b, stride=stride, padding=1, algo="blocked")
            go = rand(tuple(y.shape), torch.float32)
            ref = ref_conv2d(x, w, b, stride=stride, padding=1, grad_out=go)
            gx = CF.conv2d_backward_input(go, w, tuple(x.shape), stride=stride, padding=1, algo="blocked")
        assert_close(y, ref["y"], torch.float32, L=45, what=f"tile {tile} forward, stride {stride}")
        assert_close(gx, ref["gx"], torch.float32, L=37 * 9, what=f"tile {tile} grad input, stride {stride}")
