"""Dynamic shapes: torch.export with Dim and torch.compile(dynamic=True) keep a convkit model's
batch, height and width symbolic (no specialization, one compile for many sizes), with the
values and gradients of the same model built from torch.nn (float64, same weights).

convkit.functional checks what it can while tracing and leaves what needs a dynamic size's value
to the op, which checks the concrete sizes every time the graph runs; the fake implementations
compute output sizes symbolically (ceil_mode pooling without a branch, where torch's own
nn.MaxPool2d(ceil_mode=True) does not export with a dynamic H/W) and refuse an example the op
would refuse, with the op's error."""
import pytest
import torch
import torch.nn as tnn
from torch.export import Dim

import convkit
import convkit.functional as CF
import convkit.nn as cnn
from convkit import ConvkitValueError

from conftest import BACKENDS, device_of, rand

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)


def _layers(M, conv=True):
    """Every layer option the dynamic-shape path has to get right, in either namespace: M is
    torch.nn or convkit.nn. The output is at least 2x2 from a 26x26 input (an output side of 1
    or 0 is a size torch's own tracing specializes, for its layers as for ours)."""
    convs = [
        M.Conv2d(3, 4, 3, padding=1), M.ReLU(),
        M.Conv2d(4, 6, 3, padding="same", dilation=2, groups=2), M.ReLU(inplace=True),
    ] if conv else [M.ReLU()]
    mid = [M.Conv2d(6, 6, 2, stride=2, padding=(1, 0)), M.ReLU()] if conv else [M.MaxPool2d(2, stride=2, padding=1)]
    tail = [M.Conv2d(6, 4, 1)] if conv else []
    return tnn.Sequential(
        *convs,
        M.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        *mid,
        M.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        *tail,
        M.AvgPool2d(2, stride=1, ceil_mode=True, divisor_override=3),
        M.MaxPool2d(2, stride=1, dilation=2),
    ).to(F64)


def _models(backend, conv=True):
    """(convkit model, the torch.nn model with its weights), on the backend's device."""
    torch.manual_seed(0)
    ours = _layers(cnn, conv).to(device_of(backend))
    ref = _layers(tnn, conv).to(device_of(backend))
    ref.load_state_dict(ours.state_dict())
    return ours, ref


# The traced example, then three other sizes (batch and both sides differ; no side equals
# another, or torch.compile's duck sizing would tie them together).
EXAMPLE = (2, 3, 28, 31)
SIZES = [(3, 3, 26, 35), (1, 3, 41, 30), (2, 3, 33, 47)]
DIMS = {0: Dim("b", max=64), 2: Dim("h", min=26, max=512), 3: Dim("w", min=30, max=512)}


def _assert_dynamic(ep, dims=(0, 2, 3), mins=None):
    """The exported input keeps a symbol for each dynamic dim, with the range asked for."""
    ph = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name == "input"] or \
         [n for n in ep.graph.nodes if n.op == "placeholder"][-1:]
    shape = ph[0].meta["val"].shape
    for d in dims:
        assert isinstance(shape[d], torch.SymInt), f"dim {d} was specialized: {tuple(shape)}"
    ranges = {str(k): (v.lower, v.upper) for k, v in ep.range_constraints.items()}
    for d, lo in (mins or {}).items():
        name = str(shape[d].node.expr)
        assert ranges[name][0] == lo, f"dim {d}'s range was narrowed: {ranges[name]}"
    return shape


def _run_and_compare(fn, ref, shapes, dev, backward=True, grads_of=(), ref_grads_of=()):
    """fn and ref at each shape: values, and input (and parameter) gradients."""
    g = torch.Generator().manual_seed(1)
    for shape in shapes:
        x = rand(shape, F64, dev, g).requires_grad_(backward)
        xr = x.detach().clone().requires_grad_(backward)
        y, yr = fn(x), ref(xr)
        torch.testing.assert_close(y, yr, **TOL, msg=lambda m: f"{shape}: {m}")
        if backward:
            gy = rand(tuple(yr.shape), F64, dev, g)
            for p in list(grads_of) + list(ref_grads_of):
                p.grad = None
            y.backward(gy)
            yr.backward(gy)
            torch.testing.assert_close(x.grad, xr.grad, **TOL, msg=lambda m: f"{shape} grad_input: {m}")
            for p, pr in zip(grads_of, ref_grads_of):
                torch.testing.assert_close(p.grad, pr.grad, **TOL, msg=lambda m: f"{shape} grad_param: {m}")


# --------------------------------------------------------------------------------------------
# torch.export with Dim
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["conv", "pool_relu"])
def test_export_dynamic_nn(backend, which):
    ours, ref = _models(backend, conv=which == "conv")
    dev = device_of(backend)
    with convkit.use_backend(backend):
        # (an example that needs no gradient: the parameterless pool_relu model's graph then holds
        # max_pool2d_inference, whose Autograd kernel runs max_pool2d when a gradient is wanted)
        x = rand(EXAMPLE, F64, dev)
        ep = torch.export.export(ours, (x,), dynamic_shapes={"input": DIMS})
        _assert_dynamic(ep, mins={2: 26, 3: 30})
        names = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
        assert any("convkit.max_pool2d" in n for n in names) and any("convkit.avg_pool2d" in n for n in names)
        mod = ep.module()
        # the exported (training-IR) graph is differentiable: input and parameter gradients
        _run_and_compare(mod, ref, SIZES, dev, grads_of=list(mod.parameters()),
                         ref_grads_of=list(ref.parameters()))


class _Functional(tnn.Module):
    """The functional API in a forward: conv2d (stride, padding, dilation, groups, bias), relu,
    max_pool2d (ceil_mode, padding, dilation, indices) and avg_pool2d (ceil_mode,
    count_include_pad=False, divisor_override). `F` is convkit.functional or torch's."""

    def __init__(self, F, conv=True):
        super().__init__()
        torch.manual_seed(0)
        self.F, self.conv = F, conv
        self.w1 = tnn.Parameter(torch.randn(4, 3, 3, 3, dtype=F64))
        self.b1 = tnn.Parameter(torch.randn(4, dtype=F64))
        self.w2 = tnn.Parameter(torch.randn(6, 2, 3, 2, dtype=F64))

    def forward(self, x):
        F = self.F
        if self.conv:
            x = F.relu(F.conv2d(x, self.w1, self.b1, stride=2, padding=1))
            x = F.conv2d(x, self.w2, None, 1, "same", (2, 1), 2)
        x = F.relu(x)
        y, idx = F.max_pool2d(x, 3, 2, 1, 1, ceil_mode=True, return_indices=True)
        y = F.avg_pool2d(y, 3, 2, 1, ceil_mode=True, count_include_pad=False)
        z = F.avg_pool2d(x, (2, 3), 1, (1, 0), ceil_mode=True, divisor_override=5)
        return y, idx, F.max_pool2d(z, 2, dilation=(2, 1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["conv", "pool_relu"])
def test_export_dynamic_functional(backend, which):
    dev = device_of(backend)
    ours = _Functional(CF, which == "conv").to(dev)
    ref = _Functional(torch.nn.functional, which == "conv").to(dev)
    x = rand((2, 3, 17, 14), F64, dev).requires_grad_(True)  # (an example that requires grad, this time)
    dims = {0: Dim("b", max=16), 2: Dim("h", min=12, max=256), 3: Dim("w", min=12, max=256)}
    with convkit.use_backend(backend):
        ep = torch.export.export(ours, (x,), dynamic_shapes={"x": dims})
        _assert_dynamic(ep, mins={2: 12, 3: 12})
        mod = ep.module()
        for shape in [(3, 3, 12, 19), (1, 3, 23, 13), (2, 3, 16, 31)]:
            xi = rand(shape, F64, dev).requires_grad_(True)
            xr = xi.detach().clone().requires_grad_(True)
            got, want = mod(xi), ref(xr)
            for a, b, what in zip(got, want, ("y", "indices", "z")):
                torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"{shape} {what}: {m}")
            (got[0].sum() + got[2].sum()).backward()
            (want[0].sum() + want[2].sum()).backward()
            torch.testing.assert_close(xi.grad, xr.grad, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_dynamic_channels_last(backend):
    """The fake implementations' memory-format rule (suggest_memory_format on the input) does not
    specialize a dynamic size: a channels_last model exports with its batch, height and width
    symbolic over their full range, sizes 0 and 1 included, and gives torch's strides."""
    dev = device_of(backend)
    ours = tnn.Sequential(cnn.Conv2d(3, 4, 3, padding=1), cnn.ReLU(), cnn.MaxPool2d(3, 1, 1),
                          cnn.AvgPool2d(3, 1, 1)).to(F64).to(dev)
    ref = tnn.Sequential(tnn.Conv2d(3, 4, 3, padding=1), tnn.ReLU(), tnn.MaxPool2d(3, 1, 1),
                         tnn.AvgPool2d(3, 1, 1)).to(F64).to(dev)
    ref.load_state_dict(ours.state_dict())
    cl = torch.channels_last
    x = rand((2, 3, 9, 10), F64, dev).contiguous(memory_format=cl)
    with convkit.use_backend(backend):
        ep = torch.export.export(ours, (x,), dynamic_shapes={"input": {0: Dim("b"), 2: Dim("h"), 3: Dim("w")}})
        _assert_dynamic(ep)
        lows = sorted(v.lower for v in ep.range_constraints.values())
        assert max(lows) <= 2, f"a range was narrowed: {ep.range_constraints}"
        for shape in [(3, 3, 5, 7), (2, 3, 2, 6), (2, 3, 4, 2)] + ([(1, 3, 1, 6), (0, 3, 4, 4)] if max(lows) == 0 else []):
            xi = rand(shape, F64, dev).contiguous(memory_format=cl)
            y, yr = ep.module()(xi), ref(xi)
            torch.testing.assert_close(y, yr, **TOL)
            assert y.stride() == yr.stride(), f"{shape}: strides {y.stride()}, torch's {yr.stride()}"


def _unbatched_pair(dev):
    """convkit's and torch's layers, the same weights, for the unbatched (C, H, W) tests."""
    def layers(M):
        return tnn.Sequential(M.Conv2d(3, 4, 3, padding=1), M.ReLU(), M.MaxPool2d(3, 2, 1, ceil_mode=True),
                              M.AvgPool2d(3, 1, 1), M.Conv2d(4, 2, 3, stride=2)).to(F64).to(dev)
    ours, ref = layers(cnn), layers(tnn)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_dynamic_unbatched(backend):
    """An unbatched (C, H, W) input exports with H and W dynamic."""
    dev = device_of(backend)
    ours, ref = _unbatched_pair(dev)
    with convkit.use_backend(backend):
        ep = torch.export.export(ours, (rand((3, 19, 20), F64, dev),),
                                 dynamic_shapes={"input": {1: Dim("h", min=10), 2: Dim("w", min=10)}})
        _assert_dynamic(ep, dims=(1, 2), mins={1: 10, 2: 10})
        _run_and_compare(ep.module(), ref, [(3, 10, 12), (3, 33, 17)], dev)


def test_export_ceil_mode_where_torch_does_not():
    """torch's nn.MaxPool2d(ceil_mode=True) guards on the window-dropping rule and does not
    export with a dynamic H/W (checked here, so that this test notices when torch does); convkit's
    computes the rule without a branch and exports."""
    x = torch.randn(2, 3, 20, 21, dtype=F64)
    dims = {"input": {2: Dim("h", min=8, max=512), 3: Dim("w", min=8, max=512)}}
    try:
        torch.export.export(tnn.Sequential(tnn.MaxPool2d(2, ceil_mode=True)), (x,), dynamic_shapes=dims)
        torch_exports = True
    except Exception:  # noqa: BLE001 - a constraint violation, whatever torch version's class
        torch_exports = False
    ep = torch.export.export(tnn.Sequential(cnn.MaxPool2d(2, ceil_mode=True)), (x,), dynamic_shapes=dims)
    _assert_dynamic(ep, dims=(2, 3), mins={2: 8, 3: 8})
    for shape in [(2, 3, 8, 9), (2, 3, 17, 32), (2, 3, 31, 30)]:
        xi = torch.randn(shape, dtype=F64)
        torch.testing.assert_close(ep.module()(xi), torch.nn.functional.max_pool2d(xi, 2, ceil_mode=True))
    if torch_exports:
        pytest.xfail("this torch exports nn.MaxPool2d(ceil_mode=True) with a dynamic H/W too (the comparison is moot)")


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_too_small_example_raises_convkit_error(backend):
    """An example the op would refuse raises the op's own error while exporting (the fake
    implementation checks the example's sizes), not torch's on a negative output size."""
    dev = device_of(backend)
    with convkit.use_backend(backend):
        model = tnn.Sequential(cnn.Conv2d(3, 4, 5)).to(F64).to(dev)
        with pytest.raises(ConvkitValueError, match=r"convkit::conv2d: kernel size \(5, 5\)"):
            torch.export.export(model, (rand((2, 3, 3, 9), F64, dev),),
                                dynamic_shapes={"input": {2: Dim("h"), 3: Dim("w")}})
        pool = tnn.Sequential(cnn.MaxPool2d(4))
        with pytest.raises(ConvkitValueError, match=r"convkit::max_pool2d\w*: output would be empty"):
            torch.export.export(pool, (rand((2, 3, 3, 9), F64, dev),),
                                dynamic_shapes={"input": {2: Dim("h"), 3: Dim("w")}})


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layer", ["conv", "max_pool", "avg_pool"])
def test_exported_program_checks_sizes_when_it_runs(backend, layer):
    """The exported graph holds no convkit size check (it would have guarded on the dynamic
    sizes): the op checks the concrete sizes each run. An empty height is inside the range
    torch's export gives these layers (their outputs have the input's size), and raises a
    ConvkitValueError naming the op, as eagerly, not a crash."""
    dev = device_of(backend)
    m = {"conv": lambda: cnn.Conv2d(3, 4, 3, padding=1), "max_pool": lambda: cnn.MaxPool2d(3, 1, 1),
         "avg_pool": lambda: cnn.AvgPool2d(3, 1, 1)}[layer]()
    model = tnn.Sequential(m).to(F64).to(dev)
    op = {"conv": "convkit::conv2d", "max_pool": "convkit::max_pool2d", "avg_pool": "convkit::avg_pool2d"}[layer]
    with convkit.use_backend(backend):
        ep = torch.export.export(model, (rand((2, 3, 9, 8), F64, dev),),
                                 dynamic_shapes={"input": {2: Dim("h"), 3: Dim("w")}})
        shape = _assert_dynamic(ep, dims=(2, 3))
        lo = {str(k): v.lower for k, v in ep.range_constraints.items()}[str(shape[2].node.expr)]
        good = rand((2, 3, 1, 5), F64, dev)
        torch.testing.assert_close(ep.module()(good), model(good), **TOL)
        if lo > 0:
            pytest.skip(f"this torch's export keeps an empty height out of the range ({lo}..)")
        with pytest.raises(ConvkitValueError, match=rf"{op}\w*: input has an empty"):
            ep.module()(rand((2, 3, 0, 5), F64, dev))


# --------------------------------------------------------------------------------------------
# torch.compile(dynamic=True)
# --------------------------------------------------------------------------------------------

class _Counting:
    """A torch.compile backend (aot_eager) that counts the graphs it is given."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        from torch._dynamo.backends.debugging import aot_eager
        return aot_eager(gm, example_inputs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["conv", "pool_relu"])
@pytest.mark.parametrize("memory_format", ["contiguous", "channels_last"])
def test_compile_dynamic_compiles_once(backend, which, memory_format):
    """One graph for every size (batch and spatial), with eager's values and gradients, and
    torch's; channels_last input too (no specialization from the memory-format rule)."""
    ours, ref = _models(backend, conv=which == "conv")
    dev = device_of(backend)
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    torch._dynamo.reset()
    counter = _Counting()
    with convkit.use_backend(backend):
        compiled = torch.compile(ours, dynamic=True, fullgraph=True, backend=counter)
        g = torch.Generator().manual_seed(2)
        for shape in [EXAMPLE] + [(s[0] + 1,) + s[1:] for s in SIZES]:  # (no batch of 1: torch specializes it)
            x = rand(shape, F64, dev, g).contiguous(memory_format=fmt).requires_grad_(True)
            xe = x.detach().clone().requires_grad_(True)
            y, ye, yr = compiled(x), ours(xe), ref(x.detach())
            torch.testing.assert_close(y, ye, rtol=1e-13, atol=1e-13)
            torch.testing.assert_close(y, yr, **TOL)
            gy = rand(tuple(y.shape), F64, dev, g)
            y.backward(gy)
            ye.backward(gy)
            torch.testing.assert_close(x.grad, xe.grad, rtol=1e-13, atol=1e-13)
    assert counter.graphs == 1, f"compiled {counter.graphs} graphs for sizes that differ only in batch, H and W"


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_dynamic_parameter_grads(backend):
    """Training through a dynamic-shape compiled model: parameter gradients are torch's."""
    ours, ref = _models(backend)
    dev = device_of(backend)
    torch._dynamo.reset()
    counter = _Counting()
    with convkit.use_backend(backend):
        compiled = torch.compile(ours, dynamic=True, fullgraph=True, backend=counter)
        _run_and_compare(compiled, ref, [(2, 3, 26, 35), (3, 3, 41, 30)], dev,
                         grads_of=list(ours.parameters()), ref_grads_of=list(ref.parameters()))
    assert counter.graphs == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_mark_dynamic_batch(backend):
    """Default torch.compile settings with the batch marked dynamic (mark_dynamic raises if
    anything specializes it): one graph for three batch sizes."""
    ours, ref = _models(backend)
    dev = device_of(backend)
    torch._dynamo.reset()
    counter = _Counting()
    with convkit.use_backend(backend):
        compiled = torch.compile(ours, fullgraph=True, backend=counter)
        for b in (2, 5, 3):
            x = rand((b, 3, 28, 31), F64, dev)
            torch._dynamo.mark_dynamic(x, 0)
            torch.testing.assert_close(compiled(x), ref(x), **TOL)
    assert counter.graphs == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_dynamic_unbatched(backend):
    dev = device_of(backend)
    ours, ref = _unbatched_pair(dev)
    torch._dynamo.reset()
    counter = _Counting()
    with convkit.use_backend(backend):
        compiled = torch.compile(ours, dynamic=True, fullgraph=True, backend=counter)
        _run_and_compare(compiled, ref, [(3, 10, 12), (3, 33, 17), (3, 40, 41)], dev)
    assert counter.graphs == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_dynamic_too_small_input_raises_convkit_error(backend):
    """A size the compiled graph's guards exclude is traced again; an input the op refuses then
    raises the op's error (the fake implementation checks the example), as eagerly."""
    dev = device_of(backend)
    torch._dynamo.reset()
    with convkit.use_backend(backend):
        compiled = torch.compile(tnn.Sequential(cnn.Conv2d(3, 4, 5)).to(F64).to(dev), dynamic=True,
                                 fullgraph=True, backend="aot_eager")
        compiled(rand((2, 3, 9, 10), F64, dev))
        with pytest.raises(RuntimeError, match=r"convkit::conv2d: kernel size \(5, 5\)"):
            compiled(rand((2, 3, 3, 11), F64, dev))


# --------------------------------------------------------------------------------------------
# the symbolic output size
# --------------------------------------------------------------------------------------------

def test_ceil_mode_output_size_without_a_branch():
    """pool_output_size on a symbolic size (the branch-free min) is the int rule (which drops a
    last window that starts in the right padding) for every size, for every kernel, stride,
    padding (at most half the kernel, as check_pool requires) and dilation here."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from convkit._params import pool_output_size
    for k in range(1, 5):
        for s in range(1, 4):
            for p in range(0, k // 2 + 1):
                for d in (1, 2):
                    gm = make_fx(lambda x: x.new_zeros(pool_output_size(x.shape[0], k, s, p, d, True)),
                                 tracing_mode="symbolic")(torch.zeros(13))
                    assert "sym_min" in gm.code, "the symbolic path was not taken"
                    first = max(1, d * (k - 1) + 1 - 2 * p)  # (the smallest size with a window)
                    for n in range(first, 3 * k * d + 2 * s + 6):
                        want = pool_output_size(n, k, s, p, d, True)
                        got = gm(torch.zeros(n)).shape[0]
                        assert got == want, f"k={k} s={s} p={p} d={d} size {n}: {got} != {want}"
