"""convkit._cpu's FMA peak and GEMM entry points, and the figures `convkit bench` reports from
them (fma_peak_gflops, gemm_gflops, gemm_pct_of_peak). No timing assertions: the machine is
shared, only that the figures exist and are positive."""
import numpy as np
import pytest

from convkit import _backend

pytestmark = pytest.mark.skipif("cpu" not in _backend.available_backends(),
                                reason="convkit._cpu not built")


@pytest.fixture
def cpu():
    return _backend.module("cpu")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_fma_peak_positive(cpu, dtype, threads):
    peak = cpu.fma_peak_gflops(dtype, threads, 0.01)
    assert np.isfinite(peak) and peak > 0


def test_gemm_config(cpu):
    for dtype in ("float32", "float64"):
        g = cpu.gemm_config(dtype)
        assert g["kc"] > 0 and g["mc"] % g["mr"] == 0 and g["nc"] % g["nr"] == 0
        assert g["l1d_bytes"] > 0 and g["l2_bytes"] > 0 and g["l3_bytes"] > 0


def _ref(a, b, ta, tb):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64.T if ta else a64) @ (b64.T if tb else b64)


# Odd sizes around the register tile (8 x 32 floats / 8 x 16 doubles) and a K past one KC slice.
SHAPES = [(1, 1, 1), (7, 13, 5), (8, 32, 16), (9, 33, 31), (17, 97, 600), (64, 65, 257)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("M,N,K", SHAPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_matches_numpy(cpu, dtype, M, N, K, ta, tb):
    rng = np.random.default_rng(M * 10007 + N * 101 + K)
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
    c0 = rng.standard_normal((M, N)).astype(dtype)
    for alpha, beta in ((1.0, 0.0), (0.5, -2.0)):
        c = c0.copy() if beta else np.full((M, N), np.nan, dtype)   # beta == 0 never reads C
        cpu.gemm(dtype, ta, tb, M, N, K, alpha, a.ctypes.data, a.shape[1], b.ctypes.data,
                 b.shape[1], beta, c.ctypes.data, N)
        want = alpha * _ref(a, b, ta, tb) + beta * c0.astype(np.float64)
        tol = (1e-5 if dtype == "float32" else 1e-12) * max(1.0, np.sqrt(K))
        scale = max(1.0, np.abs(want).max())
        assert np.isfinite(c).all()
        assert np.abs(c - want).max() <= tol * scale, (alpha, beta)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_gemm_exact_and_thread_independent(cpu, threads):
    """Small integers in [-8, 7]: every sum is exact in float32, so the product is bit-exact,
    and the same at every thread count (big enough for several cache blocks and tiles)."""
    rng = np.random.default_rng(5)
    M, N, K = 203, 1100, 700
    a = rng.integers(-8, 8, (M, K)).astype(np.float32)
    b = rng.integers(-8, 8, (K, N)).astype(np.float32)
    c = np.empty((M, N), np.float32)
    old = cpu.get_num_threads()
    try:
        cpu.set_num_threads(threads)
        cpu.gemm("float32", False, False, M, N, K, 1.0, a.ctypes.data, K, b.ctypes.data, N, 0.0,
                 c.ctypes.data, N)
    finally:
        cpu.set_num_threads(old)
    np.testing.assert_array_equal(c, (a.astype(np.int64) @ b.astype(np.int64)).astype(np.float32))


def test_gemm_rejects_bad_arguments(cpu):
    with pytest.raises(Exception, match="dtype"):
        cpu.gemm("int8", False, False, 1, 1, 1, 1.0, 1, 1, 1, 1, 0.0, 1, 1)
    with pytest.raises(Exception, match="null"):
        cpu.gemm("float32", False, False, 2, 2, 2, 1.0, 0, 2, 0, 2, 0.0, 0, 2)


def test_bench_reports_peak_and_gemm_fraction():
    from convkit.bench import ceilings, report
    c = ceilings.measure_gemm_ceiling(quick=True, shapes={"square": (64, 96, 80), "conv": (16, 49, 72)})
    for key in ceilings.GEMM_KEYS:
        assert key in c and c[key] > 0, key
    assert c["gemm_shape"] == [64, 96, 80] and c["gemm_conv_shape"] == [16, 49, 72]
    assert c["gemm_pct_of_peak"] == pytest.approx(100 * c["gemm_gflops"] / c["fma_peak_gflops"])
    text = report._gemm_ceiling_text(c)
    assert "FMA peak" in text and "% of peak" in text


def test_bench_json_top_level_fields(monkeypatch, tmp_path):
    """A tiny CPU run (one ReLU row, small ceilings) carries the GEMM figures at the JSON top
    level and in the table header."""
    import os
    from convkit.bench import ceilings, cli, config, report
    real = ceilings.measure_gemm_ceiling
    monkeypatch.setattr(ceilings, "measure_gemm_ceiling",
                        lambda dtype="float32", quick=False, shapes=None:
                        real(dtype, True, {"square": (64, 64, 64), "conv": (16, 49, 72)}))
    cfg = config.BenchConfig(layers="3a.3x3.relu", passes=("fwd",), batch=1, repeat=1, warmup=0,
                             progress=False, quick=True)
    rep = cli.run_bench(cfg, log=open(os.devnull, "w"))
    for key in ceilings.GEMM_KEYS:
        assert rep[key] > 0 and rep["ceilings"][key] == rep[key], key
    assert "FMA peak" in report.markdown_report(rep)


# The GEMM's paths at the thread counts that pick them: A packed once per call and shared by the
# tiles (several N tiles), the per-tile packing fallback for a packed A over 32 MB, split K
# (fewer C tiles than threads, long K: grad weight), the narrow last panel (N = 392 = 12 x 32 + 8),
# ragged M, balanced K slices (K = 400), one K slice (K = 5).
PATH_SHAPES = [(256, 392, 832), (48, 1568, 400), (203, 70, 1300), (64, 192, 6272), (13, 37, 3000),
               (9, 600, 5), (1100, 200, 8200)]


def _gemm(cpu, dtype, ta, tb, a, b, c, alpha, beta):
    M, N = c.shape
    K = a.shape[0] if ta else a.shape[1]
    cpu.gemm(dtype, ta, tb, M, N, K, alpha, a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1],
             beta, c.ctypes.data, N)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("M,N,K", PATH_SHAPES)
def test_gemm_paths_match_numpy(cpu, M, N, K, threads):
    rng = np.random.default_rng(M + 7 * N + 13 * K)
    old = cpu.get_num_threads()
    try:
        cpu.set_num_threads(threads)
        for dtype in ("float32", "float64"):
            for ta, tb in ((False, False), (True, False), (False, True)):
                if M * K > 4_000_000 and (ta or dtype == "float64"):
                    continue  # the huge-A case once, plain float32
                a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
                b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
                c0 = rng.standard_normal((M, N)).astype(dtype)
                ref = _ref(a, b, ta, tb)
                for alpha, beta in ((1.0, 0.0), (0.5, -2.0)):
                    c = c0.copy() if beta else np.full((M, N), np.nan, dtype)  # beta == 0 never reads C
                    _gemm(cpu, dtype, ta, tb, a, b, c, alpha, beta)
                    want = alpha * ref + beta * c0.astype(np.float64)
                    tol = (1e-5 if dtype == "float32" else 1e-12) * max(1.0, np.sqrt(K))
                    assert np.isfinite(c).all(), (dtype, ta, tb, alpha, beta)
                    err = np.abs(c - want).max() / max(1.0, np.abs(want).max())
                    assert err <= tol, (dtype, ta, tb, alpha, beta, err)
    finally:
        cpu.set_num_threads(old)


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("M,N,K", [(64, 192, 6272), (256, 392, 832), (48, 1568, 400)])
def test_gemm_exact_and_deterministic_per_path(cpu, M, N, K, threads):
    """Small integers: exact whatever the path (split K, shared A); random floats: the same bits
    on every call at a given thread count."""
    rng = np.random.default_rng(11)
    old = cpu.get_num_threads()
    try:
        cpu.set_num_threads(threads)
        a = rng.integers(-8, 8, (M, K)).astype(np.float32)
        b = rng.integers(-8, 8, (K, N)).astype(np.float32)
        c = np.empty((M, N), np.float32)
        _gemm(cpu, "float32", False, False, a, b, c, 1.0, 0.0)
        np.testing.assert_array_equal(c, (a.astype(np.int64) @ b.astype(np.int64)).astype(np.float32))
        a = rng.standard_normal((M, K)).astype(np.float32)
        b = rng.standard_normal((N, K)).astype(np.float32)
        first = np.empty((M, N), np.float32)
        _gemm(cpu, "float32", False, True, a, b, first, 1.0, 0.0)
        for _ in range(3):
            again = np.empty((M, N), np.float32)
            _gemm(cpu, "float32", False, True, a, b, again, 1.0, 0.0)
            np.testing.assert_array_equal(again, first)
    finally:
        cpu.set_num_threads(old)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("algo", ["im2col", "1x1"])
def test_gemm_through_grouped_conv(threads, algo):
    """The batched GEMM with batch > 1 (groups), bias, segmented C columns (14 x 14 planes: panels
    crossing images) and split K (grad weight, K = N * P * Q = 1764) against torch in float64."""
    import torch
    import torch.nn.functional as F
    import convkit._kernels as kernels
    import convkit.functional as CF
    g = torch.Generator().manual_seed(3)
    N, C, K, H, groups = 9, 64, 96, 14, 2
    k = 1 if algo == "1x1" else 3
    x = torch.randn(N, C, H, H, generator=g)
    w = torch.randn(K, C // groups, k, k, generator=g)
    bias = torch.randn(K, generator=g)
    pad = k // 2
    old = kernels._threads_user
    try:
        kernels.set_num_threads(threads)
        y = CF.conv2d(x, w, bias, padding=pad, groups=groups, algo=algo)
        dy = torch.randn(y.shape, generator=g)
        gx = CF.conv2d_backward_input(dy, w, x.shape, padding=pad, groups=groups, algo=algo)
        gw = CF.conv2d_backward_weight(dy, x, w.shape, padding=pad, groups=groups, algo=algo)
    finally:
        kernels._threads_user = old
    xd, wd, dyd = x.double().requires_grad_(), w.double().requires_grad_(), dy.double()
    yd = F.conv2d(xd, wd, bias.double(), padding=pad, groups=groups)
    yd.backward(dyd)
    for got, want in ((y, yd), (gx, xd.grad), (gw, wd.grad)):
        want = want.detach()
        err = (got.double() - want).abs().max() / max(1.0, want.abs().max())
        assert err < 2e-5, err
