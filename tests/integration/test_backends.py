"""Backend selection and what each backend can run: available_backends() lists only backends that
can run here; the CUDA modules get their launch arguments; a dtype a backend does not take is
refused naming the dtype and the backend."""

import numpy as np
import pytest
import torch

import convkit
import convkit._backend as B
import convkit._arrays as AR
import convkit._kernels as K
import convkit.functional as CF

from conftest import BACKENDS, HALF_BACKENDS, device_of, rand, raises_checked


def test_available_backends_can_run():
    avail = convkit.available_backends()
    assert avail[0] == "cpu"
    for name in avail:
        mod = B.module(name)
        if B.takes_launch_args(name):
            assert mod.backend == name
            assert isinstance(mod.has_half, bool)
        if name == "cuda":
            assert B.device_count("cuda") > 0


def test_cuda_built_without_a_device_is_not_available():
    """A _cuda built by nvcc imports on a machine without a GPU; it must not be offered there."""
    if B._load("cuda") is None:
        pytest.skip("convkit._cuda is not built here")
    if B.device_count("cuda") > 0:
        pytest.skip("a CUDA device is visible")
    assert "cuda" not in convkit.available_backends()
    with pytest.raises(ValueError) as info:
        with convkit.use_backend("cuda"):
            pass
    assert isinstance(info.value, RuntimeError) and "no CUDA device" in str(info.value)


def test_conftest_backends_need_torch_cuda():
    assert ("cuda" in BACKENDS) <= torch.cuda.is_available()


@pytest.mark.parametrize("backend", BACKENDS)
def test_launch_arguments(backend):
    """(device, stream) for the CUDA modules, nothing for _cpu; the emulator gets (-1, 0)."""
    x = torch.zeros(4, device=device_of(backend))
    with convkit.use_backend(backend):
        k = K._module(x, "relu")
    if backend == "cpu":
        assert k.launch_args == ()
    elif backend == "cudasim":
        assert k.launch_args == (-1, 0)
    else:
        assert k.launch_args == (x.device.index, torch.cuda.current_stream(x.device).cuda_stream)


def test_environment_variable_picks_backend(monkeypatch):
    for name in convkit.available_backends():
        if name == "cuda":
            continue
        monkeypatch.setenv("CONVKIT_BACKEND", name)
        assert B.module_for("cpu", "relu")[0] == name
    monkeypatch.setenv("CONVKIT_BACKEND", "tpu")
    with pytest.raises(ValueError):
        B.module_for("cpu", "relu")


@pytest.mark.skipif("cudasim" not in BACKENDS, reason="the emulator backend is not built")
def test_cudasim_is_never_the_default():
    assert B.module_for("cpu", "relu")[0] == "cpu"
    with convkit.use_backend("cudasim"):
        assert B.module_for("cpu", "relu")[0] == "cudasim"
        with convkit.use_backend("cpu"):
            assert B.module_for("cpu", "relu")[0] == "cpu"
        with pytest.raises(TypeError) as info:
            B.module_for("cuda", "relu")
    assert isinstance(info.value, RuntimeError) and "cudasim" in str(info.value)


# ---- dtypes per backend --------------------------------------------------------------------------

def _conv_entry_points(x, w, b):
    """Every convolution entry point on x [1, 2, 6, 6], w [2, 2, 3, 3], b [2]."""
    y_shape = (1, 2, 4, 4)
    return [lambda: CF.conv2d(x, w, b),
            lambda: CF.conv2d_backward_input(rand(y_shape, x.dtype, x.device), w, tuple(x.shape)),
            lambda: CF.conv2d_backward_weight(rand(y_shape, x.dtype, x.device), x, tuple(w.shape)),
            lambda: CF.conv2d_backward_bias(rand(y_shape, x.dtype, x.device))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_dtype_support_matches_module(backend, dtype):
    """float16 / bfloat16 convolutions, pooling and ReLU where the module has_half; elsewhere a
    TypeError naming the dtype and the backend, before any kernel runs."""
    dev = device_of(backend)
    x = rand((1, 2, 6, 6), dtype, dev)
    w, b = rand((2, 2, 3, 3), dtype, dev), rand((2,), dtype, dev)
    name = str(dtype).replace("torch.", "")
    with convkit.use_backend(backend):
        if backend in HALF_BACKENDS:
            assert CF.max_pool2d(x, 2).dtype == dtype
            assert CF.avg_pool2d(x, 2).dtype == dtype
            assert CF.relu(x).dtype == dtype
            for fn in _conv_entry_points(x, w, b):
                assert fn().dtype == dtype
        else:
            before = sum(K.kernel_calls.values())
            for fn in [lambda: CF.max_pool2d(x, 2), lambda: CF.avg_pool2d(x, 2), lambda: CF.relu(x),
                       lambda: CF.relu_backward(x, x)] + _conv_entry_points(x, w, b):
                raises_checked(fn, (TypeError,), [name, repr(backend)], [x, w, b])
            assert sum(K.kernel_calls.values()) == before


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b not in HALF_BACKENDS])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_conv_refused_before_allocating(backend, dtype, monkeypatch):
    """On a backend without half kernels a half convolution is refused before any output or
    workspace is allocated (and through the custom ops and nn.Conv2d as well)."""
    import convkit.nn as cnn
    dev = device_of(backend)
    x, w = rand((1, 2, 6, 6), dtype, dev), rand((2, 2, 3, 3), dtype, dev)
    allocated, empty = [], AR.empty
    monkeypatch.setattr(AR, "empty", lambda *a, **k: allocated.append(a[1:]) or empty(*a, **k))
    layer = cnn.Conv2d(2, 2, 3).to(dtype=dtype, device=dev)
    name = str(dtype).replace("torch.", "")
    with convkit.use_backend(backend):
        for fn in (lambda: torch.ops.convkit.conv2d(x, w, None, [1, 1], [0, 0, 0, 0], [1, 1], 1, "auto"),
                   lambda: torch.ops.convkit.conv2d_backward_bias(x),
                   lambda: layer(x)):
            raises_checked(fn, (TypeError,), [name, repr(backend)], [x, w])
    assert not allocated, f"allocated {allocated} before refusing the dtype"


def test_numpy_float16_on_cpu_names_backend():
    x = np.ones((1, 2, 4, 4), np.float16)
    with convkit.use_backend("cpu"):
        for fn in (lambda: CF.max_pool2d(x, 2), lambda: CF.conv2d(x, np.ones((2, 2, 3, 3), np.float16)),
                   lambda: CF.conv2d_backward_bias(x)):
            with pytest.raises(TypeError) as info:
                fn()
            assert isinstance(info.value, RuntimeError)
            assert "float16" in str(info.value) and "'cpu'" in str(info.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_conv_fakes_on_every_backend(dtype):
    """The fake (meta) implementations take half types whatever the backend (tracing a model for
    a GPU on a machine without one); the backend that runs the op checks its dtypes."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        x = torch.empty(2, 4, 9, 8, dtype=dtype)
        w = torch.empty(6, 2, 3, 3, dtype=dtype)
        b = torch.empty(6, dtype=dtype)
        y = torch.ops.convkit.conv2d(x, w, b, [1, 1], [1, 1, 1, 1], [1, 1], 2, "auto")
        gx = torch.ops.convkit.conv2d_backward_input(y, w, [2, 4, 9, 8], [1, 1], [1, 1, 1, 1], [1, 1], 2, "auto")
        gw = torch.ops.convkit.conv2d_backward_weight(y, x, [6, 2, 3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 2, "auto")
        gb = torch.ops.convkit.conv2d_backward_bias(y)
    assert (y.shape, gx.shape, gw.shape, gb.shape) == ((2, 6, 9, 8), (2, 4, 9, 8), (6, 2, 3, 3), (6,))
    assert {t.dtype for t in (y, gx, gw, gb)} == {dtype}
    with torch.device("meta"):
        ym = CF.conv2d(torch.empty(2, 4, 9, 8, dtype=dtype), torch.empty(6, 2, 3, 3, dtype=dtype), padding=1, groups=2)
    assert ym.dtype == dtype and ym.shape == (2, 6, 9, 8)


# ---- the convolution-algorithm registry (csrc/common/conv_algo.h) ----------------------------------

def test_conv_algo_names_are_the_registry():
    """convkit.CONV_ALGOS (the name check, convkit._algos) is "auto" plus the registry's names in
    its order, as every compiled module reports them; each module builds a subset, in that order,
    and every algorithm some module builds is a name; auto times only the registry's timed ones."""
    import convkit._algos as AL
    seen = []
    for name in convkit.available_backends():
        for a in B.module(name).conv_algos():
            if a not in seen:
                seen.append(a)
    assert "cpu" in convkit.available_backends()
    for name in convkit.available_backends():
        mod = B.module(name)
        assert [row[0] for row in mod.conv_algo_registry()] == list(convkit.CONV_ALGOS[1:])
        assert mod.conv_algos() == [a for a in convkit.CONV_ALGOS[1:] if a in mod.conv_algos()]
    assert set(seen) <= set(convkit.CONV_ALGOS[1:])
    assert AL.TIMED == tuple(row[0] for row in B.module("cpu").conv_algo_registry() if row[1])
    assert "reference" in convkit.CONV_ALGOS and "reference" not in AL.TIMED


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_algo_refusal_is_the_python_check(backend):
    """The registry's applicability rule (conv_algo_refusal) and the Python argument check
    (convkit._algos.check_conv, which asks the same rule with the user's arguments) agree on which
    algorithm takes which convolution."""
    import convkit._algos as P
    mod = B.module(backend)
    cases = [((2, 4, 9, 9), (8, 4, 1, 1), 1, 0, 1), ((2, 4, 9, 9), (8, 4, 1, 1), 2, 0, 1),
             ((2, 4, 9, 9), (8, 4, 1, 1), 1, 1, 1), ((2, 4, 9, 9), (8, 4, 3, 3), 1, 1, 1),
             ((2, 4, 9, 9), (8, 4, 3, 3), 2, 1, 1), ((2, 4, 9, 9), (8, 4, 3, 3), 1, 2, 2),
             ((2, 4, 9, 9), (8, 2, 3, 3), 1, 0, 1), ((2, 4, 9, 9), (8, 4, 5, 5), 1, 2, 1)]
    for xs, ws, stride, pad, dil in cases:
        groups = xs[1] // ws[1]
        base = P.check_conv("t", xs, ws, "float32", "float32", stride=stride, padding=pad, dilation=dil,
                            groups=groups)
        p = mod.ConvParams(*xs, ws[0], ws[2], ws[3], stride, stride, pad, pad, pad, pad, dil, dil, groups)
        for algo in mod.conv_algos():
            try:
                P.check_conv("t", xs, ws, "float32", "float32", stride=base.stride, padding=pad, dilation=dil,
                             groups=groups, algo=algo)
                python_takes = True
            except ValueError:
                python_takes = False
            assert (mod.conv_algo_refusal(algo, p) == "") == python_takes, (backend, algo, xs, ws, stride, pad, dil)
            # ... and word the refusal the same way (the user sees the Python one)
            assert P.refusal(algo, base, ws[2], ws[3]) == mod.conv_algo_refusal(algo, p), (backend, algo, xs, ws)


@pytest.mark.parametrize("backend", BACKENDS)
def test_algo_not_built_for_a_backend_names_the_ones_it_has(backend):
    mod = B.module(backend)
    missing = [a for a in convkit.CONV_ALGOS[1:] if a not in mod.conv_algos()]
    if not missing:
        pytest.skip(f"{backend!r} builds every algorithm")
    x, w = torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3)
    with convkit.use_backend(backend), pytest.raises(ValueError, match="not built for the"):
        convkit.functional.conv2d(x.to(device_of(backend)), w.to(device_of(backend)), algo=missing[0])
