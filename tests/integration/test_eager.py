"""The eager fast path (convkit._eager): in plain eager mode convkit.functional calls the kernels
itself, with torch.autograd.Function for gradients, instead of dispatching the custom ops. Its
results and gradients must be bit-identical to the ops', and every other mode (a torch function
mode, dispatch modes, vmap, compile, meta tensors, autocast) must take the ops."""
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import convkit.functional as CF
from convkit import _eager

from conftest import BACKENDS, device_of


class _Passthrough(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


class _DispatchPassthrough(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _run(fn, inputs, upstream):
    xs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*xs)
    out.backward(upstream)
    return out.detach(), [t.grad for t in xs], out.grad_fn


CASES = {
    "conv2d": (lambda x, w, b: CF.conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2), algo="im2col"),
               lambda: [torch.randn(3, 4, 9, 11, dtype=torch.float64), torch.randn(5, 4, 3, 3, dtype=torch.float64),
                        torch.randn(5, dtype=torch.float64)]),
    "conv2d_grouped_direct": (lambda x, w: CF.conv2d(x, w, None, padding=1, groups=2, algo="direct"),
                              lambda: [torch.randn(2, 6, 7, 5), torch.randn(4, 3, 3, 3)]),
    "max_pool2d": (lambda x: CF.max_pool2d(x, 3, 2, 1, ceil_mode=True),
                   lambda: [torch.randn(2, 3, 9, 10, dtype=torch.float64)]),
    "avg_pool2d": (lambda x: CF.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
                   lambda: [torch.randn(2, 3, 9, 10, dtype=torch.float64)]),
    "relu": (lambda x: CF.relu(x), lambda: [torch.randn(3, 5, 7)]),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_eager_path_matches_the_ops_bitwise(name, backend):
    import convkit
    fn, make = CASES[name]
    torch.manual_seed(0)
    inputs = [t.to(device_of(backend)) for t in make()]
    with convkit.use_backend(backend):
        y0 = fn(*[t.detach() for t in inputs])
        upstream = torch.randn_like(y0)
        y_fast, g_fast, fn_fast = _run(fn, inputs, upstream)
        with _Passthrough():
            y_ops, g_ops, fn_ops = _run(fn, inputs, upstream)
    # eager: our autograd.Function's node; under the function mode: the custom op's
    assert "convkit" not in type(fn_fast).__name__ and "convkit" in type(fn_ops).__name__, (fn_fast, fn_ops)
    assert torch.equal(y0, y_fast) and torch.equal(y_fast, y_ops)
    for a, b in zip(g_fast, g_ops):
        assert torch.equal(a, b)


def test_eager_predicate():
    x = torch.randn(2, 3, 5, 5)
    assert _eager.eager(x, None)
    with _Passthrough():
        assert not _eager.eager(x)
    with _DispatchPassthrough():
        assert not _eager.eager(x)
    assert not _eager.eager(x.to("meta"))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not _eager.eager(x)

    class Sub(torch.Tensor):
        pass

    assert not _eager.eager(x.as_subclass(Sub))


def test_eager_double_backward_uses_the_differentiable_ops():
    torch.manual_seed(1)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x, w: CF.conv2d(x, w, None, padding=1, algo="direct"), (x, w))
    assert torch.autograd.gradgradcheck(lambda x: CF.max_pool2d(CF.relu(x), 2), (x,))


def test_eager_inplace_relu_bumps_the_version():
    a = torch.randn(4, 5, requires_grad=True)
    b = a * 2
    c = b * b  # saves b
    with torch.no_grad():
        CF.relu_(b)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        c.sum().backward()


def test_eager_return_indices_and_no_grad_paths():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    y, idx = CF.max_pool2d(x, 2, return_indices=True)
    ref_y, ref_idx = torch.nn.functional.max_pool2d(x.detach(), 2, return_indices=True)
    assert torch.equal(y.detach(), ref_y) and torch.equal(idx, ref_idx) and not idx.requires_grad
    y.sum().backward()
    ref = torch.nn.functional.max_pool2d(x.detach().requires_grad_(), 2)
    with torch.no_grad():
        z = CF.conv2d(x, torch.randn(4, 3, 3, 3))
    assert not z.requires_grad and z.grad_fn is None
    assert x.grad is not None and ref is not None


def test_eager_channels_last_matches_torch_layout():
    x = torch.randn(2, 4, 7, 7).to(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(6, 4, 3, 3)
    y = CF.conv2d(x, w, padding=1)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.sum().backward()
    ref = x.detach().clone().requires_grad_()
    torch.nn.functional.conv2d(ref, w, padding=1).sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last) == ref.grad.is_contiguous(
        memory_format=torch.channels_last)
    torch.testing.assert_close(x.grad, ref.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(0, 3), (7,), (3, 5, 7), (2, 64, 33, 31)], ids=str)
def test_relu_unpoisoned_fast_path_matches_torch(monkeypatch, shape, dtype):
    """The ReLU fast path (_kernels.fast_cpu) is taken only when nothing is poisoned, which the
    suite otherwise always is: turn poisoning off here and check it against torch bit for bit,
    NaN and -0.0 included, forward and backward, and that it counts its kernel calls."""
    from convkit import _arrays as A
    from convkit import _kernels as K
    monkeypatch.setattr(A, "POISON", False)
    x = torch.randn(shape, dtype=dtype)
    if x.numel() > 2:
        x.view(-1)[0], x.view(-1)[1] = float("nan"), -0.0
    assert K.fast_cpu(x) is not None
    before = K.kernel_calls["relu_fwd"], K.kernel_calls["relu_bwd"]
    xr = x.clone().requires_grad_()
    y = CF.relu(xr)
    g = torch.randn_like(y)
    y.backward(g)
    ref_x = x.clone().requires_grad_()
    ref = torch.relu(ref_x)
    ref.backward(g)
    assert torch.equal(y.detach().nan_to_num(7.0), ref.detach().nan_to_num(7.0))
    assert torch.equal(torch.signbit(y.detach()), torch.signbit(ref.detach()))
    assert torch.equal(xr.grad.nan_to_num(7.0), ref_x.grad.nan_to_num(7.0))
    n = 1 if x.numel() else 0
    assert (K.kernel_calls["relu_fwd"], K.kernel_calls["relu_bwd"]) == (before[0] + n, before[1] + n)
    strided = torch.randn(4, 6, dtype=dtype)[:, ::2]
    assert K.fast_cpu(strided) is None  # a layout question: the general path
    assert torch.equal(CF.relu(strided), torch.relu(strided))
