"""The autograd machinery: gradcheck / gradgradcheck of every op, torch.library.opcheck of every
torch.ops.convkit op, torch.compile (aot_eager fullgraph, one inductor smoke test), torch.export,
and "a gradient nobody needs is not computed"."""
import pytest
import torch
import torch.nn as tnn
from torch.autograd import gradcheck, gradgradcheck

import convkit
import convkit._kernels
import convkit.functional as CF
import convkit.nn as cnn

from conftest import BACKENDS, device_of, distinct_values, rand

SEEDS = [0, 1, 2]
F64 = torch.float64

# (algo, x shape, w shape, kwargs) per algorithm, each with stride / dilation / groups.
CONV_GC = [
    ("direct", (2, 4, 5, 6), (4, 2, 3, 3), dict(stride=2, padding=1, dilation=(1, 2), groups=2)),
    ("direct", (1, 3, 5, 5), (6, 1, 3, 2), dict(stride=1, padding="same", groups=3)),
    ("direct", (1, 3, 5, 7), (6, 1, 3, 2), dict(stride=(1, 2), padding=(1, 0), groups=3)),
    ("im2col", (2, 4, 5, 6), (4, 2, 3, 3), dict(stride=2, padding=1, dilation=(1, 2), groups=2)),
    ("im2col", (1, 3, 6, 5), (2, 3, 2, 2), dict(stride=1, padding="same", dilation=2)),
    ("1x1", (2, 4, 5, 6), (6, 2, 1, 1), dict(stride=2, groups=2)),
    ("1x1", (1, 3, 4, 5), (2, 3, 1, 1), dict(stride=(1, 2))),
    ("auto", (2, 3, 6, 6), (3, 3, 3, 3), dict(stride=1, padding=2, dilation=2)),
]


def _gc(fn, inputs, **kw):
    return gradcheck(fn, inputs, fast_mode=True, eps=1e-6, atol=1e-6, rtol=1e-4, **kw)


def _ggc(fn, inputs, **kw):
    return gradgradcheck(fn, inputs, fast_mode=True, eps=1e-6, atol=1e-6, rtol=1e-4, **kw)


def _conv_inputs(xs, ws, seed, dev, bias=True):
    g = torch.Generator().manual_seed(seed)
    x = rand(xs, F64, dev, g).requires_grad_(True)
    w = rand(ws, F64, dev, g).requires_grad_(True)
    b = rand((ws[0],), F64, dev, g).requires_grad_(True) if bias else None
    return x, w, b


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("algo,xs,ws,kw", CONV_GC, ids=[f"{c[0]}-{i}" for i, c in enumerate(CONV_GC)])
def test_gradcheck_conv2d(backend, seed, algo, xs, ws, kw):
    x, w, b = _conv_inputs(xs, ws, seed, device_of(backend))
    with convkit.use_backend(backend):
        assert _gc(lambda x, w, b: CF.conv2d(x, w, b, algo=algo, **kw), (x, w, b))


def _out_shape(xs, ws, kw):
    x = torch.zeros(xs, dtype=F64)
    w = torch.zeros(ws, dtype=F64)
    return torch.nn.functional.conv2d(x, w, None, **kw).shape


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", SEEDS[:2])
@pytest.mark.parametrize("algo,xs,ws,kw", CONV_GC, ids=[f"{c[0]}-{i}" for i, c in enumerate(CONV_GC)])
def test_gradcheck_conv2d_backward_ops(backend, seed, algo, xs, ws, kw):
    """The backward ops are differentiable (double backward is built on them)."""
    dev = device_of(backend)
    x, w, _ = _conv_inputs(xs, ws, seed, dev, bias=False)
    go = rand(_out_shape(xs, ws, kw), F64, dev, torch.Generator().manual_seed(seed + 100)).requires_grad_(True)
    with convkit.use_backend(backend):
        assert _gc(lambda go, w: CF.conv2d_backward_input(go, w, xs, algo=algo, **kw), (go, w))
        assert _gc(lambda go, x: CF.conv2d_backward_weight(go, x, ws, algo=algo, **kw), (go, x))
        assert _gc(lambda go: CF.conv2d_backward_bias(go), (go,))


MAXPOOL_GC = [
    ((2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    ((1, 2, 7, 7), dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), dilation=(2, 1))),
]
AVGPOOL_GC = [
    ((2, 3, 7, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    ((1, 2, 7, 7), dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 1), divisor_override=3)),
    ((1, 2, 5, 5), dict(kernel_size=2, stride=3, padding=1, ceil_mode=True)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape,kw", MAXPOOL_GC)
def test_gradcheck_max_pool2d(backend, seed, shape, kw):
    """Distinct values: no ties, so the max is differentiable."""
    x = distinct_values(shape, F64, device_of(backend), torch.Generator().manual_seed(seed)).requires_grad_(True)
    with convkit.use_backend(backend):
        assert _gc(lambda x: CF.max_pool2d(x, **kw), (x,))
        assert _ggc(lambda x: CF.max_pool2d(x, **kw), (x,))
        _, idx = CF.max_pool2d(x.detach(), **kw, return_indices=True)
        go = rand(idx.shape, F64, device_of(backend)).requires_grad_(True)
        assert _gc(lambda go: CF.max_pool2d_backward(go, shape, idx, **kw), (go,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape,kw", AVGPOOL_GC)
def test_gradcheck_avg_pool2d(backend, seed, shape, kw):
    dev = device_of(backend)
    x = rand(shape, F64, dev, torch.Generator().manual_seed(seed)).requires_grad_(True)
    with convkit.use_backend(backend):
        assert _gc(lambda x: CF.avg_pool2d(x, **kw), (x,))
        assert _ggc(lambda x: CF.avg_pool2d(x, **kw), (x,))
        go = rand(CF.avg_pool2d(x.detach(), **kw).shape, F64, dev).requires_grad_(True)
        assert _gc(lambda go: CF.avg_pool2d_backward(go, shape, **kw), (go,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_gradcheck_relu(backend, seed):
    """Values kept at least 0.1 away from the kink at 0."""
    dev = device_of(backend)
    g = torch.Generator().manual_seed(seed)
    x = rand((2, 3, 4, 5), F64, dev, g)
    x = (x.sign() * (x.abs() + 0.1)).requires_grad_(True)
    with convkit.use_backend(backend):
        assert _gc(lambda x: CF.relu(x), (x,))
        assert _ggc(lambda x: CF.relu(x), (x,))
        out = CF.relu(x.detach())
        go = rand(x.shape, F64, dev, g).requires_grad_(True)
        assert _gc(lambda go: CF.relu_backward(go, out), (go,))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo,xs,ws,kw", [CONV_GC[0], CONV_GC[3], CONV_GC[4]], ids=["direct", "im2col", "1x1"])
def test_gradgradcheck_conv2d(backend, algo, xs, ws, kw):
    x, w, b = _conv_inputs(xs, ws, 5, device_of(backend))
    with convkit.use_backend(backend):
        assert _ggc(lambda x, w, b: CF.conv2d(x, w, b, algo=algo, **kw), (x, w, b))


# --------------------------------------------------------------------------------------------
# torch.library.opcheck on every torch.ops.convkit op
# --------------------------------------------------------------------------------------------

def _opcheck_samples(dev):
    g = torch.Generator().manual_seed(0)

    def r(*s, grad=True):
        return rand(s, F64, dev, g).requires_grad_(grad)

    ops = torch.ops.convkit
    x, w, b = r(2, 4, 6, 5), r(6, 2, 3, 3), r(6)
    x1, w1 = r(1, 3, 5, 5), r(2, 3, 2, 2)
    go = r(2, 6, 3, 3)           # conv(x, w, stride 2, pads (1,1,1,1), groups 2) -> [2, 6, 3, 3]
    go1 = r(1, 2, 5, 5)          # 'same' for the 2x2 kernel: pads (0, 1, 0, 1)
    xp = distinct_values((2, 3, 7, 6), F64, dev, g).requires_grad_(True)
    out, idx = ops.max_pool2d(xp.detach(), [3, 3], [2, 2], [1, 1], [1, 1], True)
    gp = r(*out.shape)
    ga = r(2, 3, 4, 4)           # avg_pool2d(xp, 3, 2, 1, ceil_mode=True) -> [2, 3, 4, 4]
    xr = r(3, 4, 5)
    yr = torch.relu(xr.detach())
    return [
        ("conv2d", ops.conv2d.default, (x, w, b, [2, 2], [1, 1, 1, 1], [1, 1], 2, "direct")),
        ("conv2d_nobias", ops.conv2d.default, (x1, w1, None, [1, 1], [0, 1, 0, 1], [1, 1], 1, "im2col")),
        ("conv2d_backward_input", ops.conv2d_backward_input.default,
         (go, w, [2, 4, 6, 5], [2, 2], [1, 1, 1, 1], [1, 1], 2, "auto")),
        ("conv2d_backward_weight", ops.conv2d_backward_weight.default,
         (go1, x1, [2, 3, 2, 2], [1, 1], [0, 1, 0, 1], [1, 1], 1, "im2col")),
        ("conv2d_backward_bias", ops.conv2d_backward_bias.default, (go,)),
        ("max_pool2d", ops.max_pool2d.default, (xp, [3, 3], [2, 2], [1, 1], [1, 1], True)),
        ("max_pool2d_inference", ops.max_pool2d_inference.default,
         (xp.detach(), [3, 3], [2, 2], [1, 1], [1, 1], True)),
        ("max_pool2d_backward", ops.max_pool2d_backward.default,
         (gp, xp, idx, [3, 3], [2, 2], [1, 1], [1, 1], True)),
        ("avg_pool2d", ops.avg_pool2d.default, (xp, [3, 3], [2, 2], [1, 1], True, False, None)),
        ("avg_pool2d_div", ops.avg_pool2d.default, (xp, [2, 3], [1, 2], [1, 1], False, True, 3)),
        ("avg_pool2d_backward", ops.avg_pool2d_backward.default,
         (ga, xp, [3, 3], [2, 2], [1, 1], True, False, None)),
        ("relu", ops.relu.default, (xr,)),
        ("relu_backward", ops.relu_backward.default, (r(3, 4, 5), yr)),
        # fakes must report the strides the real kernels give (channels_last in, channels_last out)
        ("conv2d_channels_last", ops.conv2d.default,
         (x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True), w, b, [1, 1],
          [1, 1, 1, 1], [1, 1], 2, "im2col")),
        ("max_pool2d_channels_last", ops.max_pool2d.default,
         (xp.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True), [2, 2], [2, 2], [0, 0],
          [1, 1], False)),
        ("avg_pool2d_channels_last", ops.avg_pool2d.default,
         (xp.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True), [3, 3], [1, 1], [1, 1],
          False, True, None)),
        ("relu_transposed", ops.relu.default, (r(4, 6, 5).transpose(0, 2),)),
        ("relu_", ops.relu_.default, (r(3, 4, 5, grad=False),)),
    ]


_OPCHECK_NAMES = ["conv2d", "conv2d_nobias", "conv2d_backward_input", "conv2d_backward_weight",
                  "conv2d_backward_bias", "max_pool2d", "max_pool2d_inference", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_div",
                  "avg_pool2d_backward", "relu", "relu_backward", "relu_", "conv2d_channels_last",
                  "max_pool2d_channels_last", "avg_pool2d_channels_last", "relu_transposed"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", _OPCHECK_NAMES)
def test_opcheck(backend, name):
    with convkit.use_backend(backend):
        samples = {n: (op, args) for n, op, args in _opcheck_samples(device_of(backend))}
        if name not in samples:
            pytest.skip(f"no torch.ops.convkit.{name}")
        op, args = samples[name]
        torch.library.opcheck(op, args)


CONTRACT_OPS = {"conv2d", "conv2d_backward_input", "conv2d_backward_weight", "conv2d_backward_bias",
                "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "relu",
                "relu_backward"}


def test_every_convkit_op_is_opchecked():
    registered = {n.split("::")[1].split(".")[0] for n in torch._C._dispatch_get_all_op_names()
                  if n.startswith("convkit::")}
    assert CONTRACT_OPS <= registered, f"ops of the contract not registered: {sorted(CONTRACT_OPS - registered)}"
    checked = {op.name().split("::")[1] for _, op, _ in _opcheck_samples("cpu")}
    assert registered <= checked, f"ops without an opcheck sample: {sorted(registered - checked)}"


# --------------------------------------------------------------------------------------------
# torch.compile and torch.export
# --------------------------------------------------------------------------------------------

def _small_model(algo="auto"):
    torch.manual_seed(0)
    return tnn.Sequential(
        cnn.Conv2d(3, 4, 3, padding=1, algo=algo),
        cnn.ReLU(),
        cnn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        cnn.Conv2d(4, 6, 1, algo="1x1" if algo != "auto" else "auto"),
        cnn.ReLU(inplace=True),
        cnn.Conv2d(6, 2, 2, padding="same", groups=2, algo=algo),
        cnn.AvgPool2d(2, stride=1, count_include_pad=False),
    ).to(F64)


def _pool_relu_model():
    """Every pooling and ReLU layer, no convolution."""
    return tnn.Sequential(
        cnn.ReLU(),
        cnn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        cnn.AvgPool2d(2, stride=1, count_include_pad=False),
        cnn.ReLU(inplace=True),
        cnn.MaxPool2d((3, 2), stride=1, dilation=(1, 2)),
        cnn.AvgPool2d(2, stride=1, padding=1, divisor_override=3),
    ).to(F64)


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_aot_eager_pool_relu(backend):
    """torch.compile(fullgraph=True) traces the pooling and ReLU ops on the backend's device and
    gives eager's values and input gradient."""
    torch._dynamo.reset()
    dev = device_of(backend)
    model = _pool_relu_model().to(dev)
    x = rand((2, 3, 11, 10), F64, dev).requires_grad_(True)
    with convkit.use_backend(backend):
        y = model(x)
        y.backward(torch.ones_like(y))
        gx_eager = x.grad.clone()
        x.grad = None
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        yc = compiled(x)
        yc.backward(torch.ones_like(yc))
    torch.testing.assert_close(yc, y, rtol=0, atol=0)
    torch.testing.assert_close(x.grad, gx_eager, rtol=0, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ["direct", "im2col", "auto"])
def test_compile_fullgraph_aot_eager(backend, algo):
    torch._dynamo.reset()
    dev = device_of(backend)
    model = _small_model(algo).to(dev)
    x = rand((2, 3, 9, 8), F64, dev).requires_grad_(True)
    with convkit.use_backend(backend):
        y = model(x)
        y.backward(torch.ones_like(y))
        g_eager, gx_eager = _grads(model), x.grad.clone()
        model.zero_grad()
        x.grad = None
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        yc = compiled(x)
        yc.backward(torch.ones_like(yc))
    torch.testing.assert_close(yc, y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, gx_eager, rtol=1e-12, atol=1e-12)
    for a, b in zip(_grads(model), g_eager):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_compile_inductor_smoke():
    """One inductor compile (slow: codegen + a C++ build) of a convkit model, forward + backward."""
    torch._dynamo.reset()
    model = _small_model().to(torch.float32)
    x = torch.randn(2, 3, 9, 8)
    y = model(x)
    compiled = torch.compile(model, fullgraph=True)
    yc = compiled(x)
    torch.testing.assert_close(yc, y, rtol=1e-5, atol=1e-5)
    yc.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["conv", "pool_relu"])
def test_export(backend, which):
    dev = device_of(backend)
    model = (_small_model() if which == "conv" else _pool_relu_model()).to(dev).eval()
    x = rand((2, 3, 9, 8), F64, dev)
    with convkit.use_backend(backend):
        ep = torch.export.export(model, (x,))
        names = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
        assert any("convkit" in n for n in names), f"no convkit op in the exported graph: {names}"
        y = ep.module()(x)
        x2 = rand((2, 3, 9, 8), F64, dev)
        y2 = ep.module()(x2)
        ref, ref2 = model(x), model(x2)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y2, ref2, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# a gradient nobody needs is not computed
# --------------------------------------------------------------------------------------------

def _calls():
    return convkit._kernels.kernel_calls


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ["direct", "im2col", "auto"])
@pytest.mark.parametrize("x_grad,w_grad,b_grad", [
    (True, False, True), (False, True, True), (True, True, False), (False, False, True),
    (True, False, False), (True, True, True)])
def test_unneeded_gradients_not_computed(backend, algo, x_grad, w_grad, b_grad):
    dev = device_of(backend)
    x = rand((2, 3, 6, 6), F64, dev).requires_grad_(x_grad)
    w = rand((4, 3, 3, 3), F64, dev).requires_grad_(w_grad)
    b = rand((4,), F64, dev).requires_grad_(b_grad)
    with convkit.use_backend(backend):
        _calls().clear()
        y = CF.conv2d(x, w, b, padding=1, algo=algo)
        assert _calls()["conv2d_fwd"] == 1, f"kernel_calls does not count the forward: {dict(_calls())}"
        y.backward(torch.ones_like(y))
    calls = dict(_calls())
    assert (calls.get("conv2d_bwd_input", 0) > 0) == x_grad, calls
    assert (calls.get("conv2d_bwd_weight", 0) > 0) == w_grad, calls
    assert (calls.get("conv2d_bwd_bias", 0) > 0) == b_grad, calls
    assert calls.get("conv2d_bwd_input", 0) <= 1 and calls.get("conv2d_bwd_weight", 0) <= 1
    assert (x.grad is not None) == x_grad and (w.grad is not None) == w_grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_layer_runs_no_backward(backend):
    """A frozen first conv on an input without grad runs no conv backward kernel at all; the
    second conv's weight does get its grad-weight kernel."""
    dev = device_of(backend)
    model = tnn.Sequential(cnn.Conv2d(3, 4, 3, padding=1), cnn.ReLU(), cnn.MaxPool2d(2),
                           cnn.Conv2d(4, 2, 3)).to(F64).to(dev)
    for p in model[0].parameters():
        p.requires_grad_(False)
    x = rand((2, 3, 8, 8), F64, dev)
    with convkit.use_backend(backend):
        _calls().clear()
        model(x).sum().backward()
    calls = dict(_calls())
    assert calls.get("conv2d_fwd", 0) == 2, calls
    assert calls.get("conv2d_bwd_weight", 0) == 1, calls
    assert calls.get("conv2d_bwd_bias", 0) == 1, calls
    # nothing before the second conv requires grad, so no grad input anywhere
    assert calls.get("conv2d_bwd_input", 0) == 0, calls
    assert model[0].weight.grad is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_pool_and_relu_without_grad_run_no_backward(backend):
    dev = device_of(backend)
    x = rand((2, 3, 8, 8), F64, dev)
    with convkit.use_backend(backend):
        _calls().clear()
        with torch.no_grad():
            CF.relu(CF.max_pool2d(x, 2))
            CF.avg_pool2d(x, 2)
    calls = dict(_calls())
    assert calls.get("max_pool2d_fwd", 0) == 1 and calls.get("relu_fwd", 0) == 1, calls
    assert not any("bwd" in k for k, v in calls.items() if v), calls


# --------------------------------------------------------------------------------------------
# grad_output in odd layouts: y.sum().backward() hands the backward an expanded (stride 0)
# tensor; other graphs hand it transposed or channels_last gradients
# --------------------------------------------------------------------------------------------

def _grad_layouts(shape, dev):
    g = torch.Generator().manual_seed(8)
    full = rand(shape, F64, dev, g)
    n, c, h, w = shape
    return {
        "expanded": torch.ones((), dtype=F64, device=dev).expand(shape),
        "broadcast_channel": rand((1, c, 1, 1), F64, dev, g).expand(shape),
        "channels_last": full.contiguous(memory_format=torch.channels_last),
        "transposed": rand((n, c, w, h), F64, dev, g).transpose(2, 3),
    }


_OPS_FOR_GRAD = {
    "conv_direct": lambda x, w: CF.conv2d(x, w, padding=1, algo="direct"),
    "conv_im2col": lambda x, w: CF.conv2d(x, w, padding=1, stride=(1, 2), algo="im2col"),
    "conv_1x1": lambda x, w: CF.conv2d(x, w[:, :, :1, :1], algo="1x1"),
    "max_pool": lambda x, w: CF.max_pool2d(x, 3, 2, 1, ceil_mode=True),
    "avg_pool": lambda x, w: CF.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
    "relu": lambda x, w: CF.relu(x),
}
_TORCH_FOR_GRAD = {
    "conv_direct": lambda x, w: torch.nn.functional.conv2d(x, w, padding=1),
    "conv_im2col": lambda x, w: torch.nn.functional.conv2d(x, w, padding=1, stride=(1, 2)),
    "conv_1x1": lambda x, w: torch.nn.functional.conv2d(x, w[:, :, :1, :1]),
    "max_pool": lambda x, w: torch.nn.functional.max_pool2d(x, 3, 2, 1, ceil_mode=True),
    "avg_pool": lambda x, w: torch.nn.functional.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
    "relu": lambda x, w: torch.relu(x),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", list(_OPS_FOR_GRAD))
@pytest.mark.parametrize("layout", ["expanded", "broadcast_channel", "channels_last", "transposed"])
def test_backward_with_strided_grad_output(backend, op, layout):
    dev = device_of(backend)
    x = distinct_values((2, 4, 7, 6), F64, dev).requires_grad_(True)
    w = rand((5, 4, 3, 3), F64, dev).requires_grad_(True)
    xr = x.detach().clone().requires_grad_(True)
    wr = w.detach().clone().requires_grad_(True)
    with convkit.use_backend(backend):
        y = _OPS_FOR_GRAD[op](x, w)
        g = _grad_layouts(tuple(y.shape), dev)[layout]
        y.backward(g)
    yr = _TORCH_FOR_GRAD[op](xr, wr)
    yr.backward(g)
    torch.testing.assert_close(y, yr, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-10, atol=1e-12)
    if op.startswith("conv"):
        torch.testing.assert_close(w.grad, wr.grad, rtol=1e-10, atol=1e-12)
