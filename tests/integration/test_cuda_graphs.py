"""convkit convolutions inside CUDA graphs (torch.cuda.CUDAGraph): nothing on the conv path may
synchronize or allocate outside torch's caching allocator while a stream is capturing (outputs
and workspaces come from torch, which serves a capture from the graph's private pool; a
cudaMalloc or a synchronization during a capture is an error in torch's default "global" capture
mode), so a captured forward + backward replays to eager's numbers.

convkit.benchmark's timing synchronizes, so it never runs during a capture: a shape the cache
already has uses the cached pick; one it lacks uses the heuristic's pick, uncached, with a
RuntimeWarning telling the user to run once before capturing. That logic is tested here on the
CPU by pretending to capture; the real captures need a GPU (they skip without one).
"""
import collections
import warnings

import pytest
import torch

import convkit
import convkit._algos as AL
import convkit._arrays as AR
import convkit.functional as CF
import convkit.nn as cnn

from conftest import BACKENDS, assert_bitwise, rand, small_ints


@pytest.fixture
def fresh_algo_cache(monkeypatch):
    monkeypatch.setattr(AL, "_cache", collections.OrderedDict())
    monkeypatch.setattr(convkit, "benchmark", True)
    return AL._cache


def _no_timing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("convkit.benchmark timed (and synchronized) during a capture")
    monkeypatch.setattr(AL, "time_algos", refuse)


def test_benchmark_during_capture_uses_heuristic_uncached(fresh_algo_cache, monkeypatch):
    """A shape first seen during a capture: the heuristic's pick, not cached, a RuntimeWarning
    naming the shape and saying to run once before capturing; no timing."""
    x = small_ints((2, 4, 9, 9), torch.float32)
    w = small_ints((3, 4, 3, 3), torch.float32)
    monkeypatch.setattr(AR, "capturing", lambda like: True)
    _no_timing(monkeypatch)
    picked = []
    heuristic = AL.heuristic
    monkeypatch.setattr(AL, "heuristic", lambda *a: picked.append(heuristic(*a)) or picked[-1])
    with convkit.use_backend("cpu"):
        with pytest.warns(RuntimeWarning, match=r"(?s)\(2, 4, 9, 9\).*CUDA-graph capture.*before capturing"):
            y = CF.conv2d(x, w, padding=1)
    assert picked and not fresh_algo_cache
    assert_bitwise(y, torch.nn.functional.conv2d(x.double(), w.double(), padding=1), "forward")


def test_benchmark_during_capture_uses_cached_pick(fresh_algo_cache, monkeypatch):
    """Warmed up before the capture: the timed pick from the cache, no warning, no timing."""
    x = small_ints((2, 4, 9, 9), torch.float32)
    w = small_ints((3, 4, 3, 3), torch.float32)
    with convkit.use_backend("cpu"):
        CF.conv2d(x, w, padding=1)            # warm-up: times and caches
    assert len(fresh_algo_cache) == 1
    (key, algo), = fresh_algo_cache.items()
    fresh_algo_cache[key] = "direct" if algo != "direct" else "im2col"   # make the cached pick visible
    monkeypatch.setattr(AR, "capturing", lambda like: True)
    _no_timing(monkeypatch)
    used = []
    resolve = AL.resolve
    monkeypatch.setattr(AL, "resolve", lambda *a: used.append(resolve(*a)) or used[-1])
    with convkit.use_backend("cpu"), warnings.catch_warnings():
        warnings.simplefilter("error")
        CF.conv2d(x, w, padding=1)
    assert used == [fresh_algo_cache[key]]


def test_synchronize_refused_during_capture(monkeypatch):
    monkeypatch.setattr(AR, "capturing", lambda like: True)
    with pytest.raises(RuntimeError, match="capture"):
        AR.synchronize(torch.zeros(1))


def test_capturing_is_false_for_host_memory():
    assert AR.capturing(torch.zeros(1)) is False
    import numpy as np
    assert AR.capturing(np.zeros(1)) is False


# ---- real captures (GPU) ------------------------------------------------------------------------

gpu = pytest.mark.skipif("cuda" not in BACKENDS, reason="needs the cuda backend and a GPU")


def _layer_and_data(algo, seed):
    gen = torch.Generator().manual_seed(seed)
    R, kw = (1, dict(stride=2)) if algo == "1x1" else (3, dict(padding=1))
    torch.manual_seed(seed)
    layer = cnn.Conv2d(16, 24, R, algo=algo, **kw).cuda()
    x = rand((4, 16, 15, 13), torch.float32, "cuda", gen).requires_grad_(True)
    with torch.no_grad():
        g = rand(layer(x).shape, torch.float32, "cuda", gen)
    return layer, x, g


def _step(layer, x, g):
    for p in (x, layer.weight, layer.bias):
        p.grad = None
    y = layer(x)
    y.backward(g)
    return y


def _capture_and_replay(layer, x, g, new_x, new_g):
    """Warm up on a side stream (as torch's docs require), capture forward + backward, replay on
    new data; returns the graph's outputs (cloned)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), convkit.use_backend("cuda"):
        for _ in range(2):
            _step(layer, x, g)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    for p in (x, layer.weight, layer.bias):
        p.grad = None
    with torch.cuda.graph(graph), convkit.use_backend("cuda"):
        static_y = layer(x)
        static_y.backward(g)
    with torch.no_grad():
        x.copy_(new_x)
        g.copy_(new_g)
    graph.replay()
    torch.cuda.synchronize()
    return static_y.detach().clone(), x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()


@gpu
@pytest.mark.parametrize("algo", ["direct", "im2col", "1x1", "auto"])
def test_cuda_graph_forward_backward_replay(algo):
    """Capture forward + backward of a convkit conv, replay on new inputs: eager's numbers
    bit for bit (same kernels, same inputs, deterministic reductions)."""
    layer, x, g = _layer_and_data(algo, 0)
    _, new_x, new_g = _layer_and_data(algo, 1)
    y, gx, gw, gb = _capture_and_replay(layer, x, g, new_x.detach(), new_g)
    x_eager = new_x.detach().clone().requires_grad_(True)
    with convkit.use_backend("cuda"):
        y_eager = _step(layer, x_eager, new_g)
    torch.cuda.synchronize()
    assert_bitwise(y, y_eager, "forward (replayed vs eager)")
    assert_bitwise(gx, x_eager.grad, "grad input (replayed vs eager)")
    assert_bitwise(gw, layer.weight.grad, "grad weight (replayed vs eager)")
    assert_bitwise(gb, layer.bias.grad, "grad bias (replayed vs eager)")


@gpu
@pytest.mark.parametrize("warm", [True, False], ids=["warmed-up", "cold-cache"])
def test_cuda_graph_with_benchmark_mode(warm, fresh_algo_cache, monkeypatch):
    """convkit.benchmark = True: warmed up, the capture uses the cached timed pick; with the cache
    emptied just before capturing, the heuristic's pick and a warning; either way no timing (no
    synchronization) during the capture, and the replay matches eager with the same algo."""
    layer, x, g = _layer_and_data("auto", 2)
    _, new_x, new_g = _layer_and_data("auto", 3)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), convkit.use_backend("cuda"):
        _step(layer, x, g)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    if not warm:
        fresh_algo_cache.clear()
    cached = dict(fresh_algo_cache)
    time_algos, resolve = AL.time_algos, AL.resolve
    used = []

    def timing(*args, **kwargs):
        assert not torch.cuda.is_current_stream_capturing(), "timed during a capture"
        return time_algos(*args, **kwargs)
    monkeypatch.setattr(AL, "time_algos", timing)
    monkeypatch.setattr(AL, "resolve", lambda *a: used.append(resolve(*a)) or used[-1])
    graph = torch.cuda.CUDAGraph()
    for p in (x, layer.weight, layer.bias):
        p.grad = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.cuda.graph(graph), convkit.use_backend("cuda"):
            static_y = layer(x)
            static_y.backward(g)
    capture_warnings = [w for w in caught if "capture" in str(w.message)]
    assert bool(capture_warnings) == (not warm), [str(w.message) for w in caught]
    assert fresh_algo_cache == cached, "the capture changed the algo cache"
    assert len(set(used)) == 1, used   # forward and both backward passes: the same pick
    if warm:
        assert used[0] == next(iter(cached.values()))
    with torch.no_grad():
        x.copy_(new_x)
        g.copy_(new_g)
    graph.replay()
    torch.cuda.synchronize()
    with convkit.use_backend("cuda"), torch.no_grad():
        y_eager = CF.conv2d(new_x.detach(), layer.weight, layer.bias, padding=1, algo=used[0])
    assert_bitwise(static_y.detach(), y_eager, f"forward (replayed vs eager algo={used[0]})")


@gpu
def test_cuda_graph_half_and_channels_last():
    """A float16 channels_last conv (input made contiguous inside the op) captures and replays too."""
    if "float16" not in convkit._backend.dtypes("cuda"):
        pytest.skip("needs half conv kernels on the 'cuda' backend")
    x = rand((2, 8, 11, 9), torch.float16, "cuda").to(memory_format=torch.channels_last)
    w = rand((12, 8, 3, 3), torch.float16, "cuda")
    with convkit.use_backend("cuda"):
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            CF.conv2d(x, w, padding=1)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = CF.conv2d(x, w, padding=1)
        new_x = rand(x.shape, torch.float16, "cuda")
        x.copy_(new_x)
        graph.replay()
        torch.cuda.synchronize()
        assert_bitwise(static_y, CF.conv2d(x, w, padding=1), "replayed vs eager")
