"""convkit.cuda_settings' switches on a real GPU (every test here skips without one): with
sync-after-launch on, every launch is followed by a checked sync (counted) and results stay
right; while a stream is captured into a CUDA graph no sync happens and the replay matches eager;
every forced kernel variant matches torch in float64 on the GPU. The emulator's side of the same
switches is tests/kernels/test_cuda_variants.py."""
import pytest
import torch
import torch.nn.functional as F

import convkit
import convkit.cuda_settings as cs
import convkit.functional as CF
from convkit import _backend

from conftest import BACKENDS, assert_close, rand

pytestmark = pytest.mark.skipif("cuda" not in BACKENDS, reason="needs the cuda backend and a GPU")

# x shape, weight shape, stride, padding, dilation, groups
SHAPES = [((2, 5, 11, 13), (7, 5, 3, 3), 1, 1, 1, 1), ((1, 4, 13, 11), (8, 1, 5, 5), 2, 2, 1, 4),
          ((2, 9, 7, 9), (6, 9, 1, 1), 2, 0, 1, 1), ((1, 3, 17, 15), (5, 3, 7, 7), 2, 3, 1, 1)]


def _check(xs, ws, s, p, d, g, algo, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    x, w, b = rand(xs, dtype, gen=gen).cuda(), rand(ws, dtype, gen=gen).cuda(), rand((ws[0],), dtype, gen=gen).cuda()
    y = CF.conv2d(x, w, b, s, p, d, g, algo=algo)
    dy = rand(tuple(y.shape), dtype, gen=gen).cuda()
    dx = CF.conv2d_backward_input(dy, w, xs, s, p, d, g, algo=algo)
    dw = CF.conv2d_backward_weight(dy, x, ws, s, p, d, g, algo=algo)
    x64, w64, b64 = (t.cpu().double().requires_grad_(True) for t in (x, w, b))
    ref = F.conv2d(x64, w64, b64, s, p, d, g)
    gx, gw, _ = torch.autograd.grad(ref, (x64, w64, b64), dy.cpu().double())
    npq = xs[0] * ref.shape[2] * ref.shape[3]
    assert_close(y, ref.detach(), dtype, L=ws[1] * ws[2] * ws[3], what=f"{algo} forward")
    assert_close(dx, gx, dtype, L=ws[0] // g * ws[2] * ws[3], what=f"{algo} grad input")
    assert_close(dw, gw, dtype, L=npq, what=f"{algo} grad weight")


def test_sync_after_launch_on_the_gpu():
    mod = _backend.module("cuda")
    with cs.sync(True):
        before = mod.launch_sync_count()
        for xs, ws, s, p, d, g in SHAPES:
            for algo in ("direct", "im2col"):
                _check(xs, ws, s, p, d, g, algo)
        assert mod.launch_sync_count() - before >= 3 * 2 * len(SHAPES)
    before = mod.launch_sync_count()
    _check(*SHAPES[0], "im2col")
    assert mod.launch_sync_count() == before


def test_no_sync_while_capturing():
    mod = _backend.module("cuda")
    gen = torch.Generator().manual_seed(2)
    x, w = rand((2, 5, 11, 13), torch.float32, gen=gen).cuda(), rand((7, 5, 3, 3), torch.float32, gen=gen).cuda()
    eager = CF.conv2d(x, w, None, 1, 1, algo="im2col")
    with cs.sync(True):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            CF.conv2d(x, w, None, 1, 1, algo="im2col")   # warm-up outside the capture
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        before = mod.launch_sync_count()
        with torch.cuda.graph(g):
            y = CF.conv2d(x, w, None, 1, 1, algo="im2col")
        assert mod.launch_sync_count() == before
        g.replay()
        torch.cuda.synchronize()
    assert torch.equal(y, eager)


@pytest.mark.parametrize("spec", cs.VARIANT_SWEEP)
def test_forced_variants_on_the_gpu(spec):
    with cs.variant(spec):
        for xs, ws, s, p, d, g in SHAPES:
            for algo in ("direct", "im2col") + (("1x1",) if ws[2:] == (1, 1) else ()):
                _check(xs, ws, s, p, d, g, algo)
                _check(xs, ws, s, p, d, g, algo, torch.float16)
