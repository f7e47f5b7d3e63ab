"""convkit.functional.conv2d / convkit.nn.Conv2d / torch.ops.convkit.conv2d under torch.autocast,
which should behave like torch's conv2d there: floating-point operands (float64 excepted) cast to
the autocast dtype of their device (float16 or bfloat16, whichever the user asked for), the op
run in that dtype, the casts recorded by autograd so that float32 parameters get float32
gradients.

On a backend whose kernels take the autocast dtype (the CUDA modules: "cuda", and "cudasim" on
the emulator, which runs on host memory and so under torch.autocast("cpu")) the half kernels run.
The 'cpu' backend has no half kernels: there conv2d is one of autocast's float32 ops (operands
cast to float32, a float32 output that convkit's own pooling and ReLU on 'cpu' can take).
"""
import copy

import pytest
import torch
import torch.nn.functional as F

import convkit
import convkit.functional as CF
import convkit.nn as cnn

from conftest import BACKENDS, HALF_BACKENDS, HALF_DTYPES, assert_bitwise, device_of, dtype_id, rand, ref_conv2d

CPU_AUTOCAST = [torch.bfloat16, torch.float16]


def _operands(dev, seed=0, x_dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = rand((2, 6, 9, 8), x_dtype, dev, gen)
    w = rand((4, 3, 3, 3), torch.float32, dev, gen).requires_grad_(True)
    b = rand((4,), torch.float32, dev, gen).requires_grad_(True)
    g = rand((2, 4, 9, 8), torch.float32, dev, gen)
    return x, w, b, g


KW = dict(padding=1, groups=2)


def test_autocast_kernels_registered():
    for key in ("AutocastCPU", "AutocastCUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key("convkit::conv2d", key), key


@pytest.mark.parametrize("dtype", CPU_AUTOCAST, ids=dtype_id)
@pytest.mark.parametrize("algo", ["direct", "im2col", "auto"])
def test_autocast_cpu_backend_runs_float32(dtype, algo):
    """'cpu' backend (no half kernels): conv2d is an autocast float32 op; half operands are cast
    up to float32, and float32 parameters get float32 gradients."""
    x, w, b, g = _operands("cpu")
    with convkit.use_backend("cpu"):
        with torch.no_grad():
            y32 = CF.conv2d(x, w, b, algo=algo, **KW)
        with torch.autocast("cpu", dtype=dtype):
            y = CF.conv2d(x, w, b, algo=algo, **KW)
            y_from_half = CF.conv2d(x.to(dtype), w, b, algo=algo, **KW)
        assert y.dtype == torch.float32 and y_from_half.dtype == torch.float32
        assert_bitwise(y, y32, "autocast on the cpu backend: the float32 result")
        with torch.no_grad():
            assert_bitwise(y_from_half, CF.conv2d(x.to(dtype).float(), w, b, algo=algo, **KW), "half input cast up")
        y.backward(g)
    ref = ref_conv2d(x, w, b, grad_out=g, **KW)
    assert w.grad.dtype == torch.float32 and b.grad.dtype == torch.float32
    torch.testing.assert_close(w.grad, ref["gw"].float(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(b.grad, ref["gb"].float(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", HALF_BACKENDS)
@pytest.mark.parametrize("dtype", CPU_AUTOCAST, ids=dtype_id)
def test_autocast_runs_the_half_kernels(backend, dtype):
    """On a host backend with half kernels (cudasim) torch.autocast("cpu") casts the operands and
    runs the half kernels: bitwise the result of calling them on the cast operands; the
    gradients reach the float32 parameters in float32."""
    if device_of(backend) != "cpu":
        pytest.skip("host-memory backends only (autocast('cpu')); the GPU has its own test")
    x, w, b, g = _operands("cpu", seed=1)
    with convkit.use_backend(backend):
        with torch.autocast("cpu", dtype=dtype):
            y = CF.conv2d(x, w, b, algo="im2col", **KW)
        assert y.dtype == dtype
        with torch.no_grad():
            y_half = CF.conv2d(x.to(dtype), w.to(dtype), b.to(dtype), algo="im2col", **KW)
        assert_bitwise(y, y_half, "autocast vs the half kernels on the cast operands")
        y.backward(g.to(dtype))
        with torch.no_grad():
            gw_half = CF.conv2d_backward_weight(g.to(dtype), x.to(dtype), tuple(w.shape), algo="im2col", **KW)
    assert w.grad.dtype == torch.float32 and b.grad.dtype == torch.float32
    assert_bitwise(w.grad, gw_half.float(), "grad weight: the half kernel's, cast back to float32")


@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_mixed_input_dtypes(backend):
    """A bfloat16 activation meets float32 parameters (the usual case inside an autocast region):
    accepted, as by torch's conv2d, though outside autocast the dtypes must match. Computed in
    bfloat16 where the backend has half kernels, else in float32."""
    if device_of(backend) != "cpu":
        pytest.skip("host-memory backends only (autocast('cpu'))")
    x, w, b, _ = _operands("cpu", x_dtype=torch.bfloat16)
    half = backend in HALF_BACKENDS
    with convkit.use_backend(backend):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = CF.conv2d(x, w, b, **KW)
            yt = F.conv2d(x, w, b, **KW)
        assert yt.dtype == torch.bfloat16
        assert y.dtype == (torch.bfloat16 if half else torch.float32)
        with pytest.raises(TypeError):
            CF.conv2d(x, w, b, **KW)
    ref = ref_conv2d(x, w.to(torch.bfloat16) if half else w, b.to(torch.bfloat16) if half else b, **KW)["y"]
    e_ours, e_torch = (y.double() - ref).abs().max().item(), (yt.double() - ref).abs().max().item()
    e_round = (ref.to(torch.bfloat16).double() - ref).abs().max().item()
    assert e_ours <= 2 * max(e_torch, e_round)


def test_autocast_leaves_float64_and_disabled_regions_alone():
    """torch's autocast does not touch float64 tensors, nor anything with autocast disabled."""
    x, w, b, _ = _operands("cpu")
    x64, w64, b64 = (t.detach().double() for t in (x, w, b))
    with convkit.use_backend("cpu"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert CF.conv2d(x64, w64, b64, **KW).dtype == torch.float64
            assert F.conv2d(x64, w64, b64, **KW).dtype == torch.float64
            with torch.autocast("cpu", enabled=False):
                assert CF.conv2d(x, w, b, **KW).dtype == torch.float32
        with torch.autocast("cuda", dtype=torch.float16, enabled=torch.cuda.is_available()):
            assert CF.conv2d(x, w, b, **KW).dtype == torch.float32   # CPU tensors: CUDA autocast ignores them


@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_nn_model_and_ops(backend):
    """A converted model (conv, ReLU, max pool, 1x1 conv) and the raw op under autocast: the conv
    layers run in the backend's autocast dtype, the layers after them take what they give,
    and every float32 parameter gets a float32 gradient."""
    if device_of(backend) != "cpu":
        pytest.skip("host-memory backends only (autocast('cpu'))")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                torch.nn.Conv2d(8, 4, 1))
    ref = copy.deepcopy(model)  # torch's layers, the same parameters
    x = rand((2, 3, 8, 8), torch.float32, "cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        yt = ref(x)
    cnn.convert(model)
    want = torch.bfloat16 if backend in HALF_BACKENDS else torch.float32
    with convkit.use_backend(backend), torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
        yo = torch.ops.convkit.conv2d(x, model[0].weight, model[0].bias, [1, 1], [1, 1, 1, 1], [1, 1], 1, "auto")
    assert yt.dtype == torch.bfloat16
    assert y.dtype == yo.dtype == want
    torch.testing.assert_close(y.float(), yt.float(), rtol=0.05, atol=0.05)
    with convkit.use_backend(backend):
        y.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


def test_autocast_torch_compile():
    """torch.compile(fullgraph=True) of a convkit conv inside an autocast region: the same
    dtype and values as eager."""
    x, w, b, _ = _operands("cpu")

    def f(x, w, b):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return CF.conv2d(x, w, b, **KW)

    backends = [b for b in BACKENDS if device_of(b) == "cpu"]
    for backend in backends:
        torch._dynamo.reset()
        with convkit.use_backend(backend):
            eager = f(x, w, b)
            compiled = torch.compile(f, fullgraph=True, backend="aot_eager")(x, w, b)
        assert compiled.dtype == eager.dtype == (torch.bfloat16 if backend in HALF_BACKENDS else torch.float32)
        assert_bitwise(compiled, eager, f"{backend}: compiled vs eager")


@pytest.mark.skipif("cuda" not in BACKENDS, reason="needs the cuda backend and a GPU")
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=dtype_id)
@pytest.mark.parametrize("algo", ["direct", "im2col", "1x1", "auto"])
def test_autocast_cuda(dtype, algo):
    """torch.autocast("cuda", dtype): the half kernels on the cast operands, torch's output dtype,
    float32 gradients for float32 parameters, error at most twice cuDNN's under autocast."""
    R, kw = (1, dict(stride=2)) if algo == "1x1" else (3, dict(padding=1))
    gen = torch.Generator().manual_seed(4)
    x = rand((4, 16, 15, 13), torch.float32, "cuda", gen)
    w = rand((24, 16, R, R), torch.float32, "cuda", gen).requires_grad_(True)
    b = rand((24,), torch.float32, "cuda", gen).requires_grad_(True)
    wt, bt = w.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    with convkit.use_backend("cuda"):
        with torch.autocast("cuda", dtype=dtype):
            y = CF.conv2d(x, w, b, algo=algo, **kw)
            yt = F.conv2d(x, wt, bt, **kw)
        assert y.dtype == yt.dtype == dtype
        g = rand(y.shape, dtype, "cuda", gen)
        y.backward(g)
        yt.backward(g)
        with torch.no_grad():
            y_half = CF.conv2d(x.to(dtype), w.to(dtype), b.to(dtype), algo=algo, **kw)
    assert_bitwise(y, y_half, "autocast vs the half kernels on the cast operands")
    assert w.grad.dtype == b.grad.dtype == torch.float32
    ref = ref_conv2d(x.to(dtype), w.to(dtype), b.to(dtype), grad_out=g, **kw)
    for name, ours, theirs, r in (("y", y, yt, ref["y"]), ("gw", w.grad, wt.grad, ref["gw"]),
                                  ("gb", b.grad, bt.grad, ref["gb"])):
        e_ours = (ours.double().cpu() - r).abs().max().item()
        e_torch = (theirs.double().cpu() - r).abs().max().item()
        e_round = (r.to(dtype).double() - r).abs().max().item()
        assert e_ours <= 2 * max(e_torch, e_round), f"{name}: ours {e_ours:.3e}, torch {e_torch:.3e}"
