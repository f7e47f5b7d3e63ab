"""relu: forward, backward, in place (with and without autograd), NaN, sizes that exercise the
vector tails and the threading."""
import pytest
import torch

import convkit
import convkit.functional as CF

from conftest import BACKENDS, DTYPES, HALF_BACKENDS, HALF_DTYPES, assert_bitwise, device_of, dtype_id, rand

SIZES = [(1,), (7,), (2, 3, 5, 7), (1, 17, 13, 11), (3, 1, 1, 1), (0, 3, 4, 4), (1 << 20) + 3]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("shape", SIZES, ids=str)
def test_relu_forward_backward(backend, dtype, shape):
    if backend == "cudasim" and isinstance(shape, int):
        shape = (4099,)
    dev = device_of(backend)
    x = rand(shape, dtype, dev)
    if x.numel():
        x.view(-1)[0] = 0.0           # relu'(0) = 0 in torch
        x.view(-1)[-1] = -0.0
    x.requires_grad_(True)
    with convkit.use_backend(backend):
        y = CF.relu(x)
        g = rand(y.shape, dtype, dev)
        y.backward(g)
        gx = CF.relu_backward(g, y.detach())
    xt = x.detach().clone().requires_grad_(True)
    yt = torch.relu(xt)
    yt.backward(g)
    assert y.dtype == dtype and tuple(y.shape) == tuple(yt.shape)
    assert_bitwise(y, yt.detach(), "forward")
    assert_bitwise(x.grad, xt.grad, "grad (autograd)")
    assert_bitwise(gx, xt.grad, "relu_backward")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_relu_nan_forward(backend, dtype):
    dev = device_of(backend)
    x = torch.tensor([float("nan"), -1.0, 2.0, float("inf"), float("-inf"), 0.0] * 7, dtype=dtype, device=dev)
    with convkit.use_backend(backend):
        y = CF.relu(x)
    yt = torch.relu(x)
    assert torch.equal(torch.isnan(y), torch.isnan(yt)), "relu must propagate NaN like torch"
    assert torch.equal(torch.nan_to_num(y), torch.nan_to_num(yt))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_relu_nan_backward_like_torch(backend, dtype):
    """torch's relu gradient at a NaN output passes the incoming gradient (threshold_backward:
    grad where not (y <= 0)); convkit must give torch's gradient."""
    dev = device_of(backend)
    x = torch.tensor([float("nan"), -1.0, 2.0, 0.0] * 5, dtype=dtype, device=dev, requires_grad=True)
    g = torch.arange(1.0, 21.0, dtype=dtype, device=dev)
    with convkit.use_backend(backend):
        CF.relu(x).backward(g)
    xt = x.detach().clone().requires_grad_(True)
    torch.relu(xt).backward(g)
    assert_bitwise(x.grad, xt.grad, "grad at NaN")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("how", ["inplace=True", "relu_"])
def test_relu_inplace_no_grad(backend, dtype, how):
    dev = device_of(backend)
    x = rand((2, 3, 5, 7), dtype, dev)
    expected = torch.relu(x)
    ptr = x.data_ptr()
    with convkit.use_backend(backend):
        out = CF.relu(x, inplace=True) if how == "inplace=True" else CF.relu_(x)
    assert out is x, "in-place relu must return its input"
    assert x.data_ptr() == ptr
    assert_bitwise(x, expected, "in-place result")


@pytest.mark.parametrize("backend", BACKENDS)
def test_relu_inplace_noncontiguous(backend):
    dev = device_of(backend)
    big = rand((4, 6, 8, 9), torch.float64, dev)
    before = big.clone()
    view = big[::2, 1:5, :, ::3]
    with convkit.use_backend(backend):
        out = CF.relu(view, inplace=True)
    assert out is view
    expected = before.clone()
    expected[::2, 1:5, :, ::3] = torch.relu(before[::2, 1:5, :, ::3])
    assert_bitwise(big, expected, "only the view is changed, to relu of itself")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_relu_inplace_autograd_non_leaf(backend, dtype):
    """In place on a non-leaf under autograd: the tensor is modified and the gradient is torch's."""
    dev = device_of(backend)
    leaf = rand((3, 4, 5), dtype, dev).requires_grad_(True)
    g = rand((3, 4, 5), dtype, dev)
    with convkit.use_backend(backend):
        a = leaf * 2.0
        out = CF.relu(a, inplace=True)
        assert out is a
        (out * 3.0).backward(g)
    lt = leaf.detach().clone().requires_grad_(True)
    at = lt * 2.0
    torch.relu_(at)
    (at * 3.0).backward(g)
    assert_bitwise(a.detach(), at.detach(), "in-place value")
    assert_bitwise(leaf.grad, lt.grad, "gradient through in-place relu")


@pytest.mark.parametrize("backend", BACKENDS)
def test_relu_inplace_autograd_then_used(backend):
    """The value after an in-place relu feeds later ops; gradient still equals torch's."""
    dev = device_of(backend)
    leaf = rand((2, 3, 4, 4), torch.float64, dev).requires_grad_(True)
    with convkit.use_backend(backend):
        a = leaf - 0.1
        CF.relu_(a)
        loss = (a * a).sum()
        loss.backward()
    lt = leaf.detach().clone().requires_grad_(True)
    at = lt - 0.1
    torch.relu_(at)
    (at * at).sum().backward()
    assert torch.allclose(leaf.grad, lt.grad, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_relu_inplace_autograd_on_view_of_non_leaf(backend):
    dev = device_of(backend)
    leaf = rand((2, 4, 5), torch.float64, dev).requires_grad_(True)
    g = rand((2, 4, 5), torch.float64, dev)
    with convkit.use_backend(backend):
        a = leaf * 1.5
        v = a[:, 1:3]
        out = CF.relu(v, inplace=True)
        assert out is v
        (a * a).backward(g)
    lt = leaf.detach().clone().requires_grad_(True)
    at = lt * 1.5
    torch.relu_(at[:, 1:3])
    (at * at).backward(g)
    assert_bitwise(a.detach(), at.detach(), "in-place value through a view")
    assert torch.allclose(leaf.grad, lt.grad, rtol=1e-12, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_relu_inplace_leaf_under_no_grad(backend):
    """torch allows in-place ops on a leaf that requires grad inside no_grad (e.g. init code)."""
    dev = device_of(backend)
    leaf = rand((3, 5), torch.float32, dev).requires_grad_(True)
    expected = torch.relu(leaf.detach())
    with convkit.use_backend(backend), torch.no_grad():
        out = CF.relu_(leaf)
    assert out is leaf
    assert_bitwise(leaf.detach(), expected)
    assert leaf.requires_grad and leaf.is_leaf


# ---- misaligned and odd-sized operands: what breaks vectorized loops (16-byte loads need 16-byte
# aligned addresses; a size that is not a multiple of the vector width leaves a tail) ------------

def _dtype_params():
    return [pytest.param(b, dt, id=f"{b}-{dtype_id(dt)}") for b in BACKENDS
            for dt in DTYPES + (HALF_DTYPES if b in HALF_BACKENDS else [])]


MISALIGNED_SIZES = [1, 2, 3, 5, 7, 9, 15, 17, 31, 33, 127, 129, 1031]


@pytest.mark.parametrize("backend,dtype", _dtype_params())
def test_relu_misaligned_offsets_and_tails(backend, dtype):
    """Contiguous views starting 1..3 elements into their storage (x.flatten()[k:]), so no
    operand is 16-byte aligned, with dy and y misaligned differently from each other and from the
    output; sizes around every vector width."""
    dev = device_of(backend)
    for n in MISALIGNED_SIZES:
        base_x, base_g = rand((n + 8,), dtype, dev), rand((n + 8,), dtype, dev)
        for off in (1, 2, 3):
            x = base_x[off:off + n]
            assert x.is_contiguous() and x.storage_offset() == off
            with convkit.use_backend(backend):
                y = CF.relu(x)
                g = base_g[(off + 2) % 4:(off + 2) % 4 + n]        # another misalignment than x's
                y_shifted = torch.empty(n + 4, dtype=dtype, device=dev)[3:3 + n].copy_(y)
                gx = CF.relu_backward(g, y_shifted)
            expected = torch.relu(x)
            assert_bitwise(y, expected, f"forward, n={n}, offset {off}")
            assert_bitwise(gx, torch.where(expected > 0, g, torch.zeros_like(g)), f"backward, n={n}, offset {off}")


@pytest.mark.parametrize("backend,dtype", _dtype_params())
def test_relu_misaligned_in_place(backend, dtype):
    """In place on a misaligned contiguous view: only the view changes, to relu of itself."""
    dev = device_of(backend)
    for n in (5, 33, 1031):
        base = rand((n + 4,), dtype, dev)
        before = base.clone()
        view = base[1:1 + n]
        with convkit.use_backend(backend):
            assert CF.relu_(view) is view
        expected = before.clone()
        expected[1:1 + n] = torch.relu(before[1:1 + n])
        assert_bitwise(base, expected, f"n={n}")


@pytest.mark.parametrize("backend,dtype", _dtype_params())
@pytest.mark.parametrize("view", ["flatten_offset", "last_dim_slice", "channel_offset"])
def test_relu_offset_views_autograd(backend, dtype, view):
    """x.flatten()[1:], x[..., 1:], x[:, 1:] of a 4-D tensor with odd sizes, through autograd."""
    dev = device_of(backend)
    base = rand((2, 3, 7, 9), dtype, dev)
    x = {"flatten_offset": lambda: base.flatten()[1:],
         "last_dim_slice": lambda: base[..., 1:],
         "channel_offset": lambda: base[:, 1:]}[view]()
    x = x.detach().requires_grad_(True)  # a leaf with the view's strides and offset
    g = rand(tuple(x.shape), dtype, dev)
    with convkit.use_backend(backend):
        y = CF.relu(x)
        y.backward(g)
    xt = x.detach().clone().requires_grad_(True)
    torch.relu(xt).backward(g)
    assert_bitwise(y, torch.relu(xt.detach()), "forward")
    assert_bitwise(x.grad, xt.grad, "grad")
