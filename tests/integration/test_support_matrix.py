"""README's "What works with what" table, one test per cell.

Rows are the ways into convkit, columns what they are used with. A "yes" cell checks the
numbers against torch's own ops (float64); a "no" cell checks that the use fails with a clear
error naming convkit or torch's reason, never a wrong answer. TABLE below is the table; the
README's copy is checked against it, so the README cannot drift from what the tests prove.
The thorough tests per feature (every op, every backend, odd shapes) are in test_autograd.py,
test_transforms.py, test_dynamic_shapes.py, test_script.py, test_numpy.py and test_cuda*.py;
these run each cell on one small case, on the backend the tensors' device picks.
"""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.export import Dim

import convkit
import convkit.functional as CF
import convkit.nn as cnn

F64 = torch.float64
ROWS = ["functional", "backward functions", "nn layers", "torch.ops.convkit"]
COLS = ["eager", "autograd", "double backward", "forward AD", "torch.func", "compile", "compile dynamic",
        "export", "export dynamic", "jit.script", "NumPy", "CuPy"]
TABLE = {
    "functional":         ["yes", "yes", "yes", "yes", "yes", "yes", "yes", "yes", "yes", "no", "yes", "yes"],
    "backward functions": ["yes", "yes", "yes", "yes", "yes", "yes", "yes", "yes", "yes", "no", "yes", "yes"],
    "nn layers":          ["yes", "yes", "yes", "yes", "yes", "yes", "yes", "yes", "yes", "yes", "no", "no"],
    "torch.ops.convkit":  ["yes", "yes", "yes", "yes", "vmap", "yes", "yes", "yes", "yes", "yes", "no", "no"],
}


# ---- the rows: (convkit function, torch function, example arguments, argument maker) ---------------

def _functional():
    def ours(x, w, b):
        y = CF.relu(CF.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2)))
        return CF.avg_pool2d(CF.max_pool2d(y, 3, 2, 1, ceil_mode=True), 2, ceil_mode=True, count_include_pad=False)

    def ref(x, w, b):
        y = torch.relu(F.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2)))
        return F.avg_pool2d(F.max_pool2d(y, 3, 2, 1, ceil_mode=True), 2, ceil_mode=True, count_include_pad=False)

    return ours, ref, lambda n, h, w: (torch.randn(n, 3, h, w, dtype=F64), torch.randn(4, 3, 3, 3, dtype=F64),
                                      torch.randn(4, dtype=F64))


def _backward_functions():
    """The public backward functions, composed the way a hand-written backward would: grad of
    the input and weight of a conv, through the pooling and ReLU backward functions."""
    def ours(dy, x, w):
        y = CF.conv2d(x, w, None, padding=1)
        r = CF.relu(y)
        g = CF.relu_backward(CF.avg_pool2d_backward(dy, r.shape, 2), r)
        _, idx = CF.max_pool2d(g, 3, 1, 1, return_indices=True)
        g = CF.max_pool2d_backward(g, g.shape, idx, 3, 1, 1)
        return (CF.conv2d_backward_input(g, w, x.shape, padding=1), CF.conv2d_backward_weight(g, x, w.shape, padding=1),
                CF.conv2d_backward_bias(g))

    def ref(dy, x, w):
        y = F.conv2d(x, w, None, padding=1)
        r = torch.relu(y)
        g = torch.ops.aten.threshold_backward(torch.ops.aten.avg_pool2d_backward(dy, r, [2, 2], [2, 2], [0, 0], False,
                                                                               True, None), r, 0)
        _, idx = F.max_pool2d(g, 3, 1, 1, return_indices=True)
        g = torch.ops.aten.max_pool2d_with_indices_backward(g, g, [3, 3], [1, 1], [1, 1], [1, 1], False, idx)
        gx, gw, gb = torch.ops.aten.convolution_backward(g, x, w, [4], [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                         [True, True, True])
        return gx, gw, gb

    return ours, ref, lambda n, h, w: (torch.randn(n, 4, h // 2, w // 2, dtype=F64), torch.randn(n, 3, h, w, dtype=F64),
                                      torch.randn(4, 3, 3, 3, dtype=F64))


def _nn_pair():
    def build(mod):
        torch.manual_seed(5)
        return torch.nn.Sequential(mod.Conv2d(3, 4, 3, padding="same"), mod.ReLU(), mod.MaxPool2d(3, 2, 1),
                                   mod.Conv2d(4, 4, 3, stride=2, groups=2), mod.ReLU(inplace=True),
                                   mod.AvgPool2d(2, ceil_mode=True)).to(F64)
    return build(cnn), build(torch.nn)


def _nn_layers():
    ours_m, ref_m = _nn_pair()
    return ours_m, ref_m, lambda n, h, w: (torch.randn(n, 3, h, w, dtype=F64),)


CONF = ([2, 1], [1, 1, 1, 1], [1, 2], 1, "auto")


def _raw_ops():
    def ours(x, w, b):
        return torch.ops.convkit.relu(torch.ops.convkit.conv2d(x, w, b, *CONF))

    def ref(x, w, b):
        return torch.relu(F.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2)))

    return ours, ref, _functional()[2]


_ROW = {"functional": _functional, "backward functions": _backward_functions, "nn layers": _nn_layers,
        "torch.ops.convkit": _raw_ops}


def _row(name):
    torch.manual_seed(0)
    ours, ref, make = _ROW[name]()
    return ours, ref, make


def _close(a, b):
    if isinstance(a, (tuple, list)):
        for u, v in zip(a, b, strict=True):
            _close(u, v)
        return
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def _differentiable(args):
    return [a for a in args if a.dtype == F64]


def _params(fn):
    return list(fn.parameters()) if isinstance(fn, torch.nn.Module) else []


# ---- the columns -------------------------------------------------------------------------------------

def cell_eager(row):
    ours, ref, make = _row(row)
    args = make(2, 11, 10)
    _close(ours(*args), ref(*args))


def _grads(fn, args, create_graph=False):
    inputs = [a.requires_grad_() for a in args] + _params(fn)
    out = fn(*args)
    outs = out if isinstance(out, tuple) else (out,)
    loss = sum((o * torch.linspace(-1, 1, o.numel(), dtype=F64).view(o.shape)).sum() for o in outs)
    return torch.autograd.grad(loss, inputs, create_graph=create_graph)


def cell_autograd(row):
    ours, ref, make = _row(row)
    args = make(2, 11, 10)
    _close(_grads(ours, [a.clone() for a in args]), _grads(ref, [a.clone() for a in args]))


def _double(fn, args):
    inputs = [a.requires_grad_() for a in args] + _params(fn)
    grads = _grads(fn, args, create_graph=True)
    return torch.autograd.grad(sum((g ** 2).sum() for g in grads), inputs, allow_unused=True, materialize_grads=True)


def cell_double_backward(row):
    ours, ref, make = _row(row)
    args = make(2, 11, 10)
    _close(_double(ours, [a.clone() for a in args]), _double(ref, [a.clone() for a in args]))


def cell_forward_ad(row):
    ours, ref, make = _row(row)
    args = make(2, 11, 10)
    tangents = [torch.randn_like(a) for a in args]

    def run(fn):
        with fwAD.dual_level():
            out = fn(*[fwAD.make_dual(a, t) for a, t in zip(args, tangents)])
            outs = out if isinstance(out, tuple) else (out,)
            return [fwAD.unpack_dual(o).tangent.clone() for o in outs]

    _close(run(ours), run(ref))


def _func_transforms(ours, ref, args):
    if isinstance(ours, torch.nn.Module):  # functional_call: the parameters are what is transformed
        p = {k: v.detach() for k, v in ours.named_parameters()}
        ref.load_state_dict(ours.state_dict())

        def wrap(m):
            return lambda p, x: torch.func.functional_call(m, p, (x,))

        x = args[0]
        _close(torch.func.jacrev(wrap(ours))(p, x), torch.func.jacrev(wrap(ref))(p, x))
        _close(torch.func.jacfwd(wrap(ours), argnums=1)(p, x[:1]), torch.func.jacfwd(wrap(ref), argnums=1)(p, x[:1]))
        per = torch.func.vmap(torch.func.grad(lambda p, xi: (wrap(ours)(p, xi[None]) ** 2).sum()), in_dims=(None, 0))
        per_ref = torch.func.vmap(torch.func.grad(lambda p, xi: (wrap(ref)(p, xi[None]) ** 2).sum()), in_dims=(None, 0))
        _close(per(p, x), per_ref(p, x))
        return
    nums = tuple(range(len(args)))

    def scalar(fn):
        def s(*a):
            out = fn(*a)
            outs = out if isinstance(out, tuple) else (out,)
            return sum((o ** 3).sum() for o in outs)
        return s

    _close(torch.func.grad(scalar(ours), argnums=nums)(*args), torch.func.grad(scalar(ref), argnums=nums)(*args))
    _close(torch.func.jvp(ours, args, args)[1], torch.func.jvp(ref, args, args)[1])
    _close(torch.func.jacrev(ours, argnums=nums)(*args), torch.func.jacrev(ref, argnums=nums)(*args))
    _close(torch.func.jacfwd(ours, argnums=nums)(*args), torch.func.jacfwd(ref, argnums=nums)(*args))
    _close(torch.func.hessian(scalar(ours), argnums=0)(*args), torch.func.hessian(scalar(ref), argnums=0)(*args))
    batched = [torch.stack([a, a.flip(-1)]) for a in args]
    _close(torch.func.vmap(ours)(*batched), torch.func.vmap(ref)(*batched))


def cell_torch_func(row):
    ours, ref, make = _row(row)
    args = make(1, 7, 6)
    if row == "torch.ops.convkit":  # vmap works (the ops' batching rules); differentiating transforms don't
        batched = [torch.stack([a, a.flip(-1)]) for a in args]
        _close(torch.func.vmap(ours)(*batched), torch.func.vmap(ref)(*batched))
        with pytest.raises(convkit.ConvkitNotImplementedError, match="convkit.functional"):
            torch.func.grad(lambda *a: ours(*a).sum())(*args)
        with pytest.raises(convkit.ConvkitNotImplementedError, match="convkit.functional"):
            torch.func.jvp(ours, args, args)
        return
    _func_transforms(ours, ref, args)


class _Wrap(torch.nn.Module):
    """A function of three tensors as a module (what torch.export takes)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, a, b, c):
        return self.fn(a, b, c)


def _module(fn):
    return fn if isinstance(fn, torch.nn.Module) else _Wrap(fn)


def cell_compile(row):
    torch._dynamo.reset()
    ours, ref, make = _row(row)
    args = make(2, 11, 10)
    compiled = torch.compile(_module(ours), fullgraph=True, backend="aot_eager")
    _close(compiled(*args), ref(*args))
    _close(_grads(compiled, [a.clone() for a in args]) if not _params(ours) else
           _grads_module(compiled, ours, args), _grads(ref, [a.clone() for a in args]))


def _grads_module(compiled, module, args):
    inputs = [a.clone().requires_grad_() for a in args]
    out = compiled(*inputs)
    loss = (out * torch.linspace(-1, 1, out.numel(), dtype=F64).view(out.shape)).sum()
    return torch.autograd.grad(loss, inputs + list(module.parameters()))


def cell_compile_dynamic(row):
    torch._dynamo.reset()
    ours, ref, make = _row(row)
    frames = []

    def counting(gm, example_inputs):
        frames.append(gm)
        return gm.forward

    compiled = torch.compile(_module(ours), fullgraph=True, dynamic=True, backend=counting)
    for size in [(2, 12, 10), (3, 14, 12), (4, 18, 16)]:  # (no size 1 and no equal sides: torch specializes those)
        args = make(*size)
        _close(compiled(*args), ref(*args))
    assert len(frames) == 1, f"compiled {len(frames)} times for 3 sizes"


def cell_export(row):
    ours, ref, make = _row(row)
    args = make(2, 11, 10)
    ep = torch.export.export(_module(ours), tuple(args))
    assert any("convkit" in str(n.target) for n in ep.graph.nodes if n.op == "call_function")
    other = make(2, 11, 10)
    _close(ep.module()(*other), ref(*other))


def cell_export_dynamic(row):
    # (ranges in which no output side is 0 or 1: torch's tracing, for its own layers too,
    # specializes an output size that can be 1)
    ours, ref, make = _row(row)
    args = make(2, 24, 20)
    n, h, w = Dim("n", min=1, max=64), Dim("h", min=16, max=256), Dim("w", min=16, max=256)
    if row == "backward functions":  # (dy, x, w): dy's sides are half of x's
        h2, w2 = Dim("h2", min=8, max=128), Dim("w2", min=8, max=128)
        shapes = ({0: n, 2: h2, 3: w2}, {0: n, 2: 2 * h2, 3: 2 * w2}, None)
    else:
        shapes = ({0: n, 2: h, 3: w},) + (None,) * (len(args) - 1)
    ep = torch.export.export(_module(ours), tuple(args), dynamic_shapes=shapes)
    for size in [(1, 16, 16), (3, 32, 22), (2, 40, 18)]:
        other = make(*size)
        _close(ep.module()(*other), ref(*other))


def cell_jit_script(row):
    ours, ref, make = _row(row)
    args = make(2, 11, 10)
    if row in ("functional", "backward functions"):
        # Python functions with NumPy/CuPy paths and keyword-only arguments: TorchScript can't
        # compile them; script the nn layers (or call torch.ops.convkit) instead
        with pytest.raises(Exception):
            torch.jit.script(ours)
        return
    if row == "torch.ops.convkit":
        class M(torch.nn.Module):
            def forward(self, x, w, b):
                return torch.ops.convkit.relu(torch.ops.convkit.conv2d(x, w, b, [2, 1], [1, 1, 1, 1], [1, 2], 1, "auto"))
        scripted = torch.jit.script(M())
    else:
        scripted = torch.jit.script(ours)
    _close(scripted(*args), ref(*args))


def cell_numpy(row):
    ours, ref, make = _row(row)
    args = make(2, 11, 10)
    arrays = [a.numpy() for a in args]
    if row in ("functional", "backward functions"):
        got = ours(*arrays)
        outs = got if isinstance(got, tuple) else (got,)
        assert all(isinstance(o, np.ndarray) for o in outs)
        _close(tuple(torch.from_numpy(o) for o in outs), ref(*args) if isinstance(got, tuple) else (ref(*args),))
        return
    # layers hold torch parameters and the raw ops are torch operators: NumPy arrays are refused
    with pytest.raises((TypeError, RuntimeError)):
        ours(*arrays)


def cell_cupy(row):
    cupy = pytest.importorskip("cupy")
    if "cuda" not in convkit.available_backends():
        pytest.skip("CuPy arrays need the 'cuda' backend and a GPU")
    ours, ref, make = _row(row)
    args = make(2, 11, 10)
    arrays = [cupy.asarray(a.numpy()) for a in args]
    if row in ("functional", "backward functions"):
        got = ours(*arrays)
        outs = got if isinstance(got, tuple) else (got,)
        assert all(isinstance(o, cupy.ndarray) for o in outs)
        want = ref(*args) if isinstance(got, tuple) else (ref(*args),)
        _close(tuple(torch.from_numpy(cupy.asnumpy(o)) for o in outs), want)
        return
    with pytest.raises((TypeError, RuntimeError)):
        ours(*arrays)


_CELL = {c: globals()["cell_" + re.sub(r"[^a-z]+", "_", c.lower()).strip("_")] for c in COLS}


@pytest.mark.parametrize("col", COLS)
@pytest.mark.parametrize("row", ROWS)
def test_cell(row, col):
    want = TABLE[row][COLS.index(col)]
    assert want in ("yes", "no", "vmap")
    _CELL[col](row)


def test_readme_table_is_this_table():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("| |" if "| |" in readme else "|  |")
    lines = [ln for ln in readme[start:].splitlines()[:len(ROWS) + 2]]
    header = [c.strip() for c in lines[0].strip("|").split("|")][1:]
    assert header == COLS, header
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = cells[0].strip("`* ")
        assert name in TABLE, name
        assert cells[1:] == TABLE[name], (name, cells[1:])
