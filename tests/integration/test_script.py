"""TorchScript: torch.jit.script of every convkit.nn layer and option (the scripted branch calls
torch.ops.convkit.* directly), against torch.nn's own layers with the same weights in float64,
forward and backward, batched and unbatched; convert()-ed models, a save / load round trip (in
this process and in a fresh one that imports convkit), scripted training, and bad input."""
import io
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as tnn

import convkit
import convkit._kernels
import convkit.nn as cnn

from conftest import BACKENDS, device_of, rand

# torch 2.13 deprecates TorchScript (a DeprecationWarning per script / save / load call)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)


def _pair_of(make_ours, make_ref, dev):
    """(the convkit layer scripted, the torch.nn layer) with the same parameters."""
    torch.manual_seed(0)
    ours = make_ours().to(F64).to(dev)
    ref = make_ref().to(F64).to(dev)
    ref.load_state_dict(ours.state_dict())
    return torch.jit.script(ours), ref


def _outputs(y):
    return y if isinstance(y, tuple) else (y,)


def _compare(scripted, ref, shape, dev):
    """Values (indices too), and the gradients of input and parameters, of a scripted convkit
    layer and torch's. The values are pushed through a random linear functional for backward."""
    g = torch.Generator().manual_seed(1)
    x = rand(shape, F64, dev, g).requires_grad_(True)
    xr = x.detach().clone().requires_grad_(True)
    ys, yrs = _outputs(scripted(x)), _outputs(ref(xr))
    assert len(ys) == len(yrs)
    for y, yr in zip(ys, yrs):
        torch.testing.assert_close(y, yr, **TOL)
    gy = rand(tuple(yrs[0].shape), F64, dev, g)
    ys[0].backward(gy)
    yrs[0].backward(gy)
    torch.testing.assert_close(x.grad, xr.grad, **TOL)
    for (name, p), pr in zip(scripted.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, pr.grad, **TOL, msg=lambda m: f"grad of {name}: {m}")


CONV_CASES = [
    dict(padding=1),
    dict(padding=(1, 2), stride=(2, 1)),
    dict(padding="same", dilation=(2, 1)),  # (3, 2) kernel: an even width, torch's asymmetric pads
    dict(padding="valid", stride=2, bias=False),
    dict(padding=2, dilation=2, groups=3, out=6),
    dict(padding=1, padding_mode="reflect"),
    dict(padding=(2, 1), padding_mode="replicate", stride=2),
    dict(padding="same", padding_mode="circular"),
    dict(padding=0, algo="im2col"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", CONV_CASES, ids=[str(i) for i in range(len(CONV_CASES))])
@pytest.mark.parametrize("batched", [True, False])
def test_script_conv2d(backend, kw, batched):
    kw = dict(kw)
    out, algo = kw.pop("out", 4), kw.pop("algo", "auto")
    dev = device_of(backend)
    with convkit.use_backend(backend):
        scripted, ref = _pair_of(lambda: cnn.Conv2d(3, out, (3, 2), algo=algo, **kw),
                                 lambda: tnn.Conv2d(3, out, (3, 2), **kw), dev)
        assert "convkit.conv2d" in scripted.code + scripted._script_forward.code
        _compare(scripted, ref, (2, 3, 7, 6) if batched else (3, 7, 6), dev)


MAX_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=1, dilation=(1, 2)),
    dict(kernel_size=3, stride=2, padding=1, return_indices=True),
    dict(kernel_size=(2, 3), stride=2, ceil_mode=True, dilation=2, return_indices=True),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", MAX_CASES, ids=[str(i) for i in range(len(MAX_CASES))])
@pytest.mark.parametrize("batched", [True, False])
def test_script_max_pool2d(backend, kw, batched):
    dev = device_of(backend)
    with convkit.use_backend(backend):
        scripted, ref = _pair_of(lambda: cnn.MaxPool2d(**kw), lambda: tnn.MaxPool2d(**kw), dev)
        _compare(scripted, ref, (2, 3, 9, 8) if batched else (3, 9, 8), dev)
        x = rand((2, 3, 9, 8) if batched else (3, 9, 8), F64, dev)
        with torch.no_grad():  # (values only: the inference op, unless indices are wanted)
            for a, b in zip(_outputs(scripted(x)), _outputs(ref(x))):
                torch.testing.assert_close(a, b, **TOL)
    if not kw.get("return_indices"):
        assert "max_pool2d_inference" in scripted.code


AVG_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), divisor_override=5),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kw", AVG_CASES, ids=[str(i) for i in range(len(AVG_CASES))])
@pytest.mark.parametrize("batched", [True, False])
def test_script_avg_pool2d(backend, kw, batched):
    dev = device_of(backend)
    with convkit.use_backend(backend):
        scripted, ref = _pair_of(lambda: cnn.AvgPool2d(**kw), lambda: tnn.AvgPool2d(**kw), dev)
        _compare(scripted, ref, (2, 3, 9, 8) if batched else (3, 9, 8), dev)


@pytest.mark.parametrize("backend", BACKENDS)
def test_script_relu(backend):
    dev = device_of(backend)
    with convkit.use_backend(backend):
        scripted, ref = _pair_of(cnn.ReLU, tnn.ReLU, dev)
        _compare(scripted, ref, (2, 3, 5, 4), dev)


@pytest.mark.parametrize("backend", BACKENDS)
def test_script_relu_inplace(backend):
    """inplace=True: without autograd the op writes the tensor itself; with it, the gradient is
    torch's ReLU(inplace=True)'s (the functional op's result copied back)."""
    dev = device_of(backend)
    with convkit.use_backend(backend):
        scripted = torch.jit.script(cnn.ReLU(inplace=True))
        x = rand((2, 3, 5, 4), F64, dev)
        want = x.clamp(min=0)
        y = scripted(x)
        assert y.data_ptr() == x.data_ptr()
        torch.testing.assert_close(x, want, rtol=0, atol=0)
        w = rand((2, 3, 5, 4), F64, dev).requires_grad_(True)
        wr = w.detach().clone().requires_grad_(True)
        h, hr = w * 2, wr * 2  # (in place on a non-leaf, as torch allows)
        y, yr = scripted(h), tnn.ReLU(inplace=True)(hr)
        torch.testing.assert_close(y, yr, rtol=0, atol=0)
        gy = rand(tuple(y.shape), F64, dev)
        y.backward(gy)
        yr.backward(gy)
        torch.testing.assert_close(w.grad, wr.grad, rtol=0, atol=0)


def _model(M):
    torch.manual_seed(0)
    return tnn.Sequential(
        M.Conv2d(3, 4, 3, padding=1), M.ReLU(inplace=True), M.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        M.Conv2d(4, 6, 2, padding="same", groups=2, padding_mode="reflect"), M.ReLU(),
        M.AvgPool2d(2, stride=1, count_include_pad=False), M.Conv2d(6, 2, 1),
    ).to(F64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_script_converted_model(backend):
    """A torch model converted in place by convkit.nn.convert (its layers' classes swapped) scripts,
    runs convkit's ops, and gives the torch model's values and gradients."""
    dev = device_of(backend)
    ref = _model(tnn).to(dev)
    converted = cnn.convert(_model(tnn).to(dev), algo="direct")
    assert all(type(m).__module__ == "convkit.nn" for m in converted if not isinstance(m, tnn.Sequential))
    with convkit.use_backend(backend):
        scripted = torch.jit.script(converted)
        convkit._kernels.kernel_calls.clear()
        _compare(scripted, ref, (2, 3, 9, 8), dev)
        assert convkit._kernels.kernel_calls["conv2d_fwd"] == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_script_save_load(backend, tmp_path):
    dev = device_of(backend)
    model = _model(cnn).to(dev)
    x = rand((2, 3, 9, 8), F64, dev)
    with convkit.use_backend(backend):
        buf = io.BytesIO()
        torch.jit.save(torch.jit.script(model), buf)
        buf.seek(0)
        loaded = torch.jit.load(buf, map_location=dev)
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
        xg = x.clone().requires_grad_(True)
        loaded(xg).sum().backward()
        xr = x.clone().requires_grad_(True)
        model(xr).sum().backward()
        torch.testing.assert_close(xg.grad, xr.grad, rtol=0, atol=0)


def test_script_load_in_a_fresh_process(tmp_path):
    """A saved scripted convkit model loads and runs in a process that imported convkit (which
    registers the ops the saved code calls)."""
    model = _model(cnn)
    x = rand((2, 3, 9, 8), F64)
    torch.jit.save(torch.jit.script(model), str(tmp_path / "m.pt"))
    torch.save({"x": x, "y": model(x).detach()}, str(tmp_path / "io.pt"))
    code = ("import sys, warnings, torch, convkit\n"
            "warnings.simplefilter('ignore')\n"
            "m = torch.jit.load(sys.argv[1]); d = torch.load(sys.argv[2])\n"
            "assert 'convkit.conv2d' in getattr(m, '0')._script_forward.code\n"
            "torch.testing.assert_close(m(d['x']), d['y'], rtol=0, atol=0)\n"
            "print('same')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(convkit.__file__))] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.pt"), str(tmp_path / "io.pt")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0 and "same" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_script_training(backend):
    """A few SGD steps of a scripted convkit model reach the weights the same steps reach with
    torch's layers."""
    dev = device_of(backend)
    ours, ref = _model(cnn).to(dev), _model(tnn).to(dev)
    ref.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(3)
    with convkit.use_backend(backend):
        scripted = torch.jit.script(ours)
        opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (scripted, ref)]
        for _ in range(3):
            x, t = rand((2, 3, 9, 8), F64, dev, g), rand((2, 2, 4, 4), F64, dev, g)
            for m, opt in zip((scripted, ref), opts):
                opt.zero_grad()
                torch.nn.functional.mse_loss(m(x), t).backward()
                opt.step()
    for (name, p), pr in zip(scripted.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, pr, **TOL, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_script_bad_input_names_the_op(backend):
    """Bad input through a scripted layer raises (TorchScript's RuntimeError around convkit's
    error) with a message naming convkit's op and what is wrong."""
    dev = device_of(backend)
    with convkit.use_backend(backend):
        pool = torch.jit.script(cnn.MaxPool2d(4))
        with pytest.raises(RuntimeError, match=r"convkit::max_pool2d\w*: output would be empty"):
            pool(rand((2, 3, 3, 9), F64, dev))
        avg = torch.jit.script(cnn.AvgPool2d(2, divisor_override=0))
        with pytest.raises(RuntimeError, match=r"convkit::avg_pool2d: divisor_override must be non-zero"):
            avg(rand((2, 3, 4, 4), F64, dev))
        conv = torch.jit.script(cnn.Conv2d(3, 4, 3).to(F64).to(dev))
        with pytest.raises(RuntimeError, match=r"convkit::conv2d: input has 5 channels"):
            conv(rand((2, 5, 8, 8), F64, dev))
        with pytest.raises(RuntimeError, match=r"convkit::conv2d: expected input of rank 4"):
            conv(rand((8, 8), F64, dev))
