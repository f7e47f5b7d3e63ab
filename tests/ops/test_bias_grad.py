"""Grad bias (conv2d_backward_bias) as the CUDA kernels compute it: a reduction over (channel, chunk
of the batch's pixels) blocks, then each channel's chunks in order (csrc/cuda/conv.cu). Shapes
below one chunk run one block a channel; larger ones split, with per-chunk sums in a workspace.
Against float64 on every backend, bitwise the same run to run and whatever SM count the emulated
device reports (the split depends on the shape alone), and the workspace the query names."""
import pytest
import torch

import convkit
import convkit.functional as CF

from conftest import BACKENDS, HALF_BACKENDS, assert_close, device_of, dtypes_of

# (shape of dy, splits the CUDA kernels make: 1 up to 32768 elements a channel, then about one a
# 32768, at most 64)
SHAPES = [((2, 3, 5, 7), 1), ((1, 1, 1, 1), 1), ((8, 16, 1, 1), 1), ((2, 5, 128, 128), 1),
          ((2, 5, 129, 128), 2), ((32, 4, 64, 64), 4), ((3, 5, 17, 1000), 2), ((1, 3, 600, 600), 11),
          ((64, 2, 112, 112), 25), ((1, 2, 2100, 2100), 64)]


def _dtypes(backend):
    return dtypes_of(backend) + (dtypes_of(backend, half=True) if backend in HALF_BACKENDS else [])


def _racecheck_on(backend):
    return backend == "cudasim" and convkit._backend.module("cudasim").sim_racecheck()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape,splits", SHAPES, ids=[str(s) for s, _ in SHAPES])
def test_grad_bias_matches_float64(backend, shape, splits):
    if _racecheck_on(backend) and shape[0] * shape[1] * shape[2] * shape[3] > 4_000_000:
        pytest.skip("the race detector's shadow takes ~25x the data: the 64-chunk case is checked without it")
    dev = device_of(backend)
    gen = torch.Generator().manual_seed(sum(shape))
    for dtype in _dtypes(backend):
        g = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).to(dev)
        with convkit.use_backend(backend):
            db = CF.conv2d_backward_bias(g)
            again = CF.conv2d_backward_bias(g)
        ref = g.double().sum((0, 2, 3))
        n_pq = shape[0] * shape[2] * shape[3]
        assert_close(db, ref, dtype, L=n_pq, what=f"grad bias {shape} {dtype}")
        assert torch.equal(db, again), "grad bias is not deterministic run to run"


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "cpu"])
def test_grad_bias_workspace_is_the_chunk_sums(backend):
    mod = convkit._backend.module(backend)
    for (n, c, h, w), splits in SHAPES:
        p = mod.ConvParams(n, c, h, w, c, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, c)
        for dtype, acc in (("float32", 4), ("float64", 8)):
            want = 0 if splits == 1 else c * splits * acc
            assert mod.conv2d_bwd_bias_workspace_bytes(dtype, p) == want, ((n, c, h, w), dtype)


def test_grad_bias_does_not_depend_on_the_sm_count():
    if "cudasim" not in BACKENDS:
        pytest.skip("needs the cudasim backend")
    mod = convkit._backend.module("cudasim")
    g = torch.randn(64, 2, 112, 112)
    before = mod.sim_sm_count()
    try:
        results = []
        for sms in (1, 7, 132):
            mod.sim_set_sm_count(sms)
            with convkit.use_backend("cudasim"):
                results.append(CF.conv2d_backward_bias(g))
    finally:
        mod.sim_set_sm_count(before)
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_grad_bias_refuses_a_short_workspace():
    if "cudasim" not in BACKENDS:
        pytest.skip("needs the cudasim backend")
    mod = convkit._backend.module("cudasim")
    g = torch.randn(32, 4, 64, 64)
    db = torch.full((4,), float("nan"))
    p = mod.ConvParams(32, 4, 64, 64, 4, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 4)
    need = mod.conv2d_bwd_bias_workspace_bytes("float32", p)
    ws = torch.empty(need - 4, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="workspace"):
        mod.conv2d_bwd_bias("float32", p, g.data_ptr(), db.data_ptr(), ws.data_ptr(), ws.numel(), -1, 0)
    assert torch.isnan(db).all(), "a refused call wrote its output"
