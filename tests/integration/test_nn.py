"""convkit.nn: layers are drop-in subclasses of torch.nn's (constructor args, padding modes,
state_dict), and convert() swaps layers in place in nested models."""
import pytest
import torch
import torch.nn as tnn

import convkit
import convkit.nn as cnn

from conftest import BACKENDS, assert_close, device_of, rand

F64 = torch.float64


def test_layers_subclass_torch():
    assert issubclass(cnn.Conv2d, tnn.Conv2d)
    assert issubclass(cnn.MaxPool2d, tnn.MaxPool2d)
    assert issubclass(cnn.AvgPool2d, tnn.AvgPool2d)
    assert issubclass(cnn.ReLU, tnn.ReLU)


CONV_ARGS = [
    dict(in_channels=3, out_channels=4, kernel_size=3),
    dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1, bias=False),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1), groups=2),
    dict(in_channels=3, out_channels=3, kernel_size=4, padding="same", groups=3),
    dict(in_channels=3, out_channels=2, kernel_size=1),
    dict(in_channels=3, out_channels=2, kernel_size=3, padding="valid"),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
    dict(in_channels=3, out_channels=4, kernel_size=(3, 5), padding=(1, 2), padding_mode="replicate"),
    dict(in_channels=3, out_channels=4, kernel_size=3, padding=2, padding_mode="circular", stride=2),
    dict(in_channels=2, out_channels=4, kernel_size=2, padding="same", padding_mode="reflect"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kwargs", CONV_ARGS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
@pytest.mark.parametrize("algo", ["auto", "direct", "im2col"])
def test_conv2d_layer_matches_torch(backend, kwargs, algo):
    """Same constructor args; a torch state_dict loads into the convkit layer; same output and
    gradients."""
    dev = device_of(backend)
    torch.manual_seed(1)
    ref = tnn.Conv2d(**kwargs).to(F64).to(dev)
    ours = cnn.Conv2d(**kwargs, algo=algo).to(F64).to(dev)
    assert set(ours.state_dict()) == set(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    x = rand((2, kwargs["in_channels"], 9, 8), F64, dev).requires_grad_(True)
    xr = x.detach().clone().requires_grad_(True)
    with convkit.use_backend(backend):
        y = ours(x)
        g = rand(y.shape, F64, dev)
        y.backward(g)
    yr = ref(xr)
    yr.backward(g)
    assert_close(y, yr.detach(), F64, L=100, what="forward")
    assert_close(x.grad, xr.grad, F64, L=100, what="grad input")
    assert_close(ours.weight.grad, ref.weight.grad, F64, L=200, what="grad weight")
    if ref.bias is not None:
        assert_close(ours.bias.grad, ref.bias.grad, F64, L=200, what="grad bias")


def test_conv2d_layer_1x1_algo_and_repr():
    layer = cnn.Conv2d(4, 2, 1, algo="1x1")
    assert layer.algo == "1x1"
    assert "1x1" in repr(layer)
    x = torch.randn(1, 4, 5, 5)
    assert_close(layer(x), tnn.functional.conv2d(x.double(), layer.weight.double(), layer.bias.double()),
                 torch.float32, L=4)


POOLS = [
    (tnn.MaxPool2d, cnn.MaxPool2d, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (tnn.MaxPool2d, cnn.MaxPool2d, dict(kernel_size=(2, 3), dilation=(2, 1))),
    (tnn.MaxPool2d, cnn.MaxPool2d, dict(kernel_size=3, stride=1, padding=1, return_indices=True)),
    (tnn.AvgPool2d, cnn.AvgPool2d, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)),
    (tnn.AvgPool2d, cnn.AvgPool2d, dict(kernel_size=2, divisor_override=3)),
    (tnn.ReLU, cnn.ReLU, dict()),
    (tnn.ReLU, cnn.ReLU, dict(inplace=True)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tcls,ccls,kwargs", POOLS, ids=lambda v: str(v) if isinstance(v, dict) else v.__name__)
def test_pool_relu_layers_match_torch(backend, tcls, ccls, kwargs):
    dev = device_of(backend)
    ref, ours = tcls(**kwargs), ccls(**kwargs)
    assert repr(ref).split("(", 1)[1] == repr(ours).split("(", 1)[1]
    x = rand((2, 3, 9, 8), F64, dev)
    with convkit.use_backend(backend):
        y = ours(x.clone())
    yr = ref(x.clone())
    if kwargs.get("return_indices"):
        assert torch.equal(y[1], yr[1])
        y, yr = y[0], yr[0]
    assert_close(y, yr, F64, L=9)


class _Block(tnn.Module):
    def __init__(self):
        super().__init__()
        self.conv = tnn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.bn = tnn.BatchNorm2d(4)
        self.act = tnn.ReLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


def _nested_model():
    torch.manual_seed(2)
    return tnn.Sequential(
        tnn.Conv2d(3, 4, 3, padding=1),
        tnn.ReLU(inplace=True),
        tnn.ModuleList([_Block(), tnn.Sequential(tnn.MaxPool2d(2), tnn.AvgPool2d(2, ceil_mode=True))]),
        tnn.Conv2d(4, 2, 1, padding_mode="reflect"),
        tnn.GELU(),
        tnn.AdaptiveAvgPool2d(1),
    )


class _Wrapper(tnn.Module):
    def __init__(self):
        super().__init__()
        self.body = _nested_model()

    def forward(self, x):
        b = self.body
        x = b[1](b[0](x))
        x = b[2][0](x)
        x = b[2][1](x)
        return b[5](b[4](b[3](x)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ["auto", "direct", "im2col"])
def test_convert_nested_model(backend, algo):
    dev = device_of(backend)
    model = _Wrapper().to(F64).to(dev).eval()
    x = rand((2, 3, 12, 12), F64, dev)
    before = model(x).detach()
    sd_before = {k: v.clone() for k, v in model.state_dict().items()}
    out = cnn.convert(model, algo=algo)
    assert out is model, "convert must return the same model (in place)"
    body = model.body
    assert type(body[0]) is cnn.Conv2d and type(body[1]) is cnn.ReLU
    assert type(body[2][0].conv) is cnn.Conv2d and type(body[2][0].act) is cnn.ReLU
    assert type(body[2][0].bn) is tnn.BatchNorm2d
    assert type(body[2][1][0]) is cnn.MaxPool2d and type(body[2][1][1]) is cnn.AvgPool2d
    assert type(body[3]) is cnn.Conv2d and body[3].padding_mode == "reflect"
    assert type(body[4]) is tnn.GELU and type(body[5]) is tnn.AdaptiveAvgPool2d
    assert body[0].algo == algo
    assert body[1].inplace is True
    assert set(model.state_dict()) == set(sd_before)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd_before[k]), f"convert changed {k}"
    with convkit.use_backend(backend):
        convkit._kernels.kernel_calls.clear()
        after = model(x)
        assert convkit._kernels.kernel_calls["conv2d_fwd"] == 3, "converted model does not run convkit's conv"
    assert_close(after, before, F64, L=100, what="converted model output")


def test_convert_report():
    model = _nested_model()
    out, report = cnn.convert(model, report=True)
    assert out is model
    replaced = {r[0] for r in report.replaced}
    assert {"0", "1", "2.0.conv", "2.0.act", "2.1.0", "2.1.1", "3"} <= replaced, report.replaced
    left = {r[0] for r in report.left_alone}
    assert {"4", "5"} <= left, report.left_alone          # GELU and AdaptiveAvgPool2d
    text = str(report)
    for name in ("2.0.conv", "AdaptiveAvgPool2d", "GELU"):
        assert name in text, text
    # converting again is harmless and replaces nothing new
    _, report2 = cnn.convert(model, report=True)
    assert not report2.replaced


def test_convert_leaves_subclasses_alone():
    class MyConv(tnn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    model = tnn.Sequential(MyConv(2, 2, 3), tnn.ReLU())
    _, report = cnn.convert(model, report=True)
    assert type(model[0]) is MyConv and type(model[1]) is cnn.ReLU
    assert "0" in {r[0] for r in report.left_alone}


def test_convert_training_model_gradients():
    """A converted model trains like the original: same loss and same parameter gradients."""
    ref = _Wrapper().to(F64)
    ours = _Wrapper().to(F64)
    cnn.convert(ours)
    x = torch.randn(2, 3, 12, 12, dtype=F64)
    lr, lo = ref(x).square().sum(), ours(x).square().sum()
    lr.backward()
    lo.backward()
    assert_close(lo.detach(), lr.detach(), F64, L=100)
    for (n, pr), (_, po) in zip(ref.named_parameters(), ours.named_parameters()):
        assert_close(po.grad, pr.grad, F64, L=300, what=n)


def test_converted_model_deepcopy_and_save(tmp_path):
    import copy
    model = cnn.convert(_Wrapper().to(F64).eval())
    x = torch.randn(1, 3, 12, 12, dtype=F64)
    y = model(x)
    clone = copy.deepcopy(model)
    assert type(clone.body[0]) is cnn.Conv2d and clone.body[0].algo == model.body[0].algo
    torch.testing.assert_close(clone(x), y, rtol=0, atol=0)
    path = tmp_path / "model.pt"
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)
    assert type(loaded.body[2][0].conv) is cnn.Conv2d
    torch.testing.assert_close(loaded(x), y, rtol=0, atol=0)
    # and a plain state_dict round trip into a fresh torch model gives the same numbers
    fresh = _Wrapper().to(F64).eval()
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh(x), y, rtol=1e-10, atol=1e-12)
