"""torch's transforms through every convkit op, float64, against torch's own ops on the same
arguments: torch.func.jvp, jacrev, jacfwd, hessian (forward over reverse), vmap (batched
arguments in several positions, and vmap over grad), forward-mode AD dual tensors, and
torch.autograd.gradcheck / gradgradcheck with forward AD and batched gradients.

Each op is a function of its differentiable tensor arguments (the others fixed), written twice:
with convkit.functional and with torch (the forward ops for the forward ones; torch.func.vjp of
F.conv2d, aten's pooling backward ops and threshold_backward for the backward ones), so the
derivatives of every convkit formula, of any order and mode, are compared with torch's.
"""
import asyncio
import threading

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.func import hessian, jacfwd, jacrev, jvp, vmap

import convkit
import convkit._backend as B
import convkit._kernels as K
import convkit.functional as CF
from conftest import BACKENDS, device_of, rand

F64 = torch.float64
aten = torch.ops.aten

# conv: grouped, strided, dilated, asymmetric padding; pooling: padding, dilation, ceil_mode
CONV = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
X, W = (1, 4, 5, 6), (4, 2, 3, 2)
POOL = dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), ceil_mode=True)
AVG = dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), ceil_mode=True, count_include_pad=False)
AVG_ARGS = ([3, 2], [2, 1], [1, 0], True, False, None)


def _conv_out_shape():
    return tuple(F.conv2d(torch.zeros(X, dtype=F64), torch.zeros(W, dtype=F64), None, **CONV).shape)


def _ref_bwd_input(dy, w):
    return torch.func.vjp(lambda x: F.conv2d(x, w, None, **CONV), torch.zeros(X, dtype=dy.dtype, device=dy.device))[1](dy)[0]


def _ref_bwd_weight(dy, x):
    return torch.func.vjp(lambda w: F.conv2d(x, w, None, **CONV), torch.zeros(W, dtype=dy.dtype, device=dy.device))[1](dy)[0]


def _pool_fixed(dev):
    """An input for the pooling backward ops and its max-pool indices (fixed arguments)."""
    x = rand(X, F64, dev)
    _, idx = F.max_pool2d(x, **POOL, return_indices=True)
    return x, idx


def _case(name, dev):
    """(convkit function, torch function, differentiable arguments) for op `name`."""
    if name == "conv2d":
        return (lambda x, w, b: CF.conv2d(x, w, b, **CONV), lambda x, w, b: F.conv2d(x, w, b, **CONV),
                (rand(X, F64, dev), rand(W, F64, dev), rand((W[0],), F64, dev)))
    if name == "conv2d_backward_input":
        return (lambda dy, w: CF.conv2d_backward_input(dy, w, X, **CONV), _ref_bwd_input,
                (rand(_conv_out_shape(), F64, dev), rand(W, F64, dev)))
    if name == "conv2d_backward_weight":
        return (lambda dy, x: CF.conv2d_backward_weight(dy, x, W, **CONV), _ref_bwd_weight,
                (rand(_conv_out_shape(), F64, dev), rand(X, F64, dev)))
    if name == "conv2d_backward_bias":
        return (CF.conv2d_backward_bias, lambda dy: dy.sum((0, 2, 3)), (rand(_conv_out_shape(), F64, dev),))
    if name == "max_pool2d":
        return (lambda x: CF.max_pool2d(x, **POOL), lambda x: F.max_pool2d(x, **POOL), (rand(X, F64, dev),))
    if name == "max_pool2d_backward":
        x, idx = _pool_fixed(dev)
        return (lambda dy: CF.max_pool2d_backward(dy, X, idx, **POOL),
                lambda dy: aten.max_pool2d_with_indices_backward(dy, x, [3, 2], [2, 1], [1, 1], [1, 2], True, idx),
                (rand(idx.shape, F64, dev),))
    if name == "avg_pool2d":
        return (lambda x: CF.avg_pool2d(x, **AVG), lambda x: F.avg_pool2d(x, **AVG), (rand(X, F64, dev),))
    if name == "avg_pool2d_backward":
        x = rand(X, F64, dev)
        out = F.avg_pool2d(x, **AVG).shape
        return (lambda dy: CF.avg_pool2d_backward(dy, X, **AVG), lambda dy: aten.avg_pool2d_backward(dy, x, *AVG_ARGS),
                (rand(out, F64, dev),))
    if name == "relu":
        return CF.relu, torch.relu, (rand(X, F64, dev),)
    if name == "relu_backward":
        y = torch.relu(rand(X, F64, dev))
        return (lambda dy: CF.relu_backward(dy, y), lambda dy: aten.threshold_backward(dy, y, 0), (rand(X, F64, dev),))
    raise AssertionError(name)


OPS = ["conv2d", "conv2d_backward_input", "conv2d_backward_weight", "conv2d_backward_bias", "max_pool2d",
       "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward", "relu", "relu_backward"]


def _setup(backend, name):
    return _case(name, device_of(backend))


def _close(a, b):
    if isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            _close(u, v)
        return
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def _argnums(args):
    return tuple(range(len(args)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", OPS)
def test_jvp(backend, name):
    ours, ref, args = _setup(backend, name)
    tangents = tuple(torch.randn_like(a) for a in args)
    with convkit.use_backend(backend):
        y, t = jvp(ours, args, tangents)
    y_ref, t_ref = jvp(ref, args, tangents)
    _close(y, y_ref)
    _close(t, t_ref)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("mode", ["jacrev", "jacfwd"])
def test_jacobian(backend, name, mode):
    ours, ref, args = _setup(backend, name)
    jac = jacrev if mode == "jacrev" else jacfwd
    with convkit.use_backend(backend):
        got = jac(ours, argnums=_argnums(args))(*args)
    _close(got, jac(ref, argnums=_argnums(args))(*args))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", OPS)
def test_hessian(backend, name):
    """hessian = jacfwd(jacrev): forward mode over convkit's reverse formulas. The cube makes the
    second derivative through each op non-zero."""
    ours, ref, args = _setup(backend, name)
    with convkit.use_backend(backend):
        got = hessian(lambda *a: (ours(*a) ** 3).sum(), argnums=_argnums(args))(*args)
    _close(got, hessian(lambda *a: (ref(*a) ** 3).sum(), argnums=_argnums(args))(*args))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", OPS)
def test_vmap(backend, name):
    """Every argument batched (at different dimensions), then each one alone."""
    ours, ref, args = _setup(backend, name)
    batched = [torch.stack([a, torch.randn_like(a), torch.randn_like(a)], dim=i % (a.dim() + 1))
               for i, a in enumerate(args)]
    dims = [i % (a.dim() + 1) for i, a in enumerate(args)]
    choices = [tuple(dims)] + ([tuple(d if j == i else None for j, d in enumerate(dims)) for i in range(len(args))]
                               if len(args) > 1 else [])
    for in_dims in choices:
        inputs = [b if d is not None else a for a, b, d in zip(args, batched, in_dims)]
        with convkit.use_backend(backend):
            got = vmap(ours, in_dims=in_dims)(*inputs)
        _close(got, vmap(ref, in_dims=in_dims)(*inputs))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["conv2d", "max_pool2d", "avg_pool2d", "relu"])
def test_vmap_of_grad_and_grad_of_vmap(backend, name):
    """Per-sample gradients (vmap over grad) and a gradient through a vmapped op."""
    ours, ref, args = _setup(backend, name)
    xs = torch.stack([args[0], torch.randn_like(args[0])])
    rest = args[1:]

    def loss(f):
        return lambda x: (f(x, *rest) ** 2).sum()

    with convkit.use_backend(backend):
        per_sample = vmap(torch.func.grad(loss(ours)))(xs)
        through = torch.func.grad(lambda xs: (vmap(lambda x: ours(x, *rest))(xs) ** 2).sum())(xs)
    _close(per_sample, vmap(torch.func.grad(loss(ref)))(xs))
    _close(through, torch.func.grad(lambda xs: (vmap(lambda x: ref(x, *rest))(xs) ** 2).sum())(xs))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", OPS)
def test_dual_tensor_tangents(backend, name):
    """torch.autograd.forward_ad: the tangent of each output, with every input dual, and with
    one input dual at a time (a None tangent elsewhere)."""
    ours, ref, args = _setup(backend, name)
    tangents = [torch.randn_like(a) for a in args]
    for which in [None] + list(range(len(args))):
        def run(f):
            with fwAD.dual_level():
                duals = [fwAD.make_dual(a, t) if which is None or i == which else a
                         for i, (a, t) in enumerate(zip(args, tangents))]
                out = fwAD.unpack_dual(f(*duals))
                return out.primal.clone(), out.tangent

        with convkit.use_backend(backend):
            y, t = run(ours)
        y_ref, t_ref = run(ref)
        _close(y, y_ref)
        assert t is not None, f"{name}: no tangent came out"
        _close(t, t_ref)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", OPS)
def test_gradcheck_forward_and_batched(backend, name):
    """gradcheck with forward AD, batched gradients and batched forward gradients, and
    gradgradcheck forward over reverse. fast_mode (random projections of the jacobians): the
    full jacobians are compared with torch's in test_jacobian."""
    ours, _, args = _setup(backend, name)
    inputs = tuple(a.detach().requires_grad_() for a in args)
    with convkit.use_backend(backend):
        assert torch.autograd.gradcheck(ours, inputs, check_forward_ad=True, check_batched_grad=True,
                                        check_batched_forward_grad=True, fast_mode=True)
        assert torch.autograd.gradgradcheck(ours, inputs, check_fwd_over_rev=True, check_batched_grad=True,
                                            fast_mode=True)


# ---- the nn layers and whole models ------------------------------------------------------------

def _model(mod):
    return torch.nn.Sequential(mod.Conv2d(2, 4, 3, padding=1, groups=2), mod.ReLU(), mod.MaxPool2d(2, ceil_mode=True),
                               mod.Conv2d(4, 3, 1), mod.AvgPool2d(2, padding=1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_functional_call_and_per_sample_grads_of_a_model(backend):
    """torch.func.functional_call over a model of convkit layers: per-sample parameter gradients
    (vmap over grad) and the jacobian with respect to the parameters, equal to torch.nn's."""
    dev = device_of(backend)
    ours = convkit.nn.convert(_model(torch.nn)).to(dev, F64)
    ref = _model(torch.nn).to(dev, F64)
    ref.load_state_dict(ours.state_dict())
    params = {k: v.detach() for k, v in ours.named_parameters()}
    x = rand((3, 2, 5, 6), F64, dev)

    def loss(model):
        return lambda p, xi: (torch.func.functional_call(model, p, (xi.unsqueeze(0),)) ** 2).sum()

    with convkit.use_backend(backend):
        got = vmap(torch.func.grad(loss(ours)), in_dims=(None, 0))(params, x)
        jac = jacrev(lambda p: torch.func.functional_call(ours, p, (x,)))(params)
    want = vmap(torch.func.grad(loss(ref)), in_dims=(None, 0))(params, x)
    for k in params:
        _close(got[k], want[k])
        _close(jac[k], jacrev(lambda p: torch.func.functional_call(ref, p, (x,)))(params)[k])


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_place_relu_under_transforms(backend):
    """ReLU(inplace=True) under jvp and vmap: the result and tangent of out-of-place ReLU."""
    x, t = rand((2, 3, 4), F64, device_of(backend)), rand((2, 3, 4), F64, device_of(backend))

    def f(v):
        v = v * 1.0  # (not the caller's tensor)
        return CF.relu(v, inplace=True)

    with convkit.use_backend(backend):
        y, ty = jvp(f, (x,), (t,))
        yv = vmap(f)(x)
    _close(y, torch.relu(x))
    _close(ty, torch.where(x > 0, t, torch.zeros_like(t)))
    _close(yv, torch.relu(x))


# ---- the raw torch.ops.convkit ops -------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_raw_ops_dual_tensors_and_vmap(backend):
    """torch.ops.convkit.* directly: dual tensors get tangents (the ops' Autograd kernels apply
    the forward-mode rules) and vmap uses the ops' batching rules."""
    dev = device_of(backend)
    x, w, t = rand(X, F64, dev), rand(W, F64, dev), rand(X, F64, dev)
    conf = ([2, 1], [1, 1, 0, 0], [1, 2], 2, "auto")
    with convkit.use_backend(backend):
        with fwAD.dual_level():
            out = fwAD.unpack_dual(torch.ops.convkit.conv2d(fwAD.make_dual(x, t), w, None, *conf))
            tangent = out.tangent.clone()
        xs = torch.stack([x, t])
        yv = vmap(lambda v: torch.ops.convkit.conv2d(v, w, None, *conf))(xs)
        mp = vmap(lambda v: torch.ops.convkit.max_pool2d_inference(v, [3, 2], [2, 1], [1, 1], [1, 2], True))(xs)
        # plain autograd through the raw ops' batching rules
        xg, wg = xs.clone().requires_grad_(), w.clone().requires_grad_()
        yg = vmap(lambda v: torch.ops.convkit.relu(torch.ops.convkit.conv2d(v, wg, None, *conf)))(xg)
        grads = torch.autograd.grad((yg ** 2).sum(), (xg, wg))
    xr, wr = xs.clone().requires_grad_(), w.clone().requires_grad_()
    ref = torch.autograd.grad((torch.relu(F.conv2d(xr.flatten(0, 1), wr, None, **CONV)) ** 2).sum(), (xr, wr))
    _close(grads, ref)
    _close(tangent, F.conv2d(t, w, None, **CONV))
    _close(yv, vmap(lambda v: F.conv2d(v, w, None, **CONV))(xs))
    _close(mp, vmap(lambda v: F.max_pool2d(v, **POOL))(xs))


def test_raw_op_under_func_grad_names_convkit():
    """torch.func.grad through torch.ops.convkit.conv2d called directly cannot work (torch.func
    does not run a Function applied inside an op's dispatcher kernel): a clear error that names
    convkit and the way that works, instead of torch's setup_context message."""
    x, w = rand(X), rand(W)
    f = lambda v: torch.ops.convkit.conv2d(v, w, None, [2, 1], [1, 1, 0, 0], [1, 2], 2, "auto").sum()  # noqa: E731
    with pytest.raises(convkit.ConvkitNotImplementedError, match=r"convkit::conv2d.*convkit\.functional"):
        torch.func.grad(f)(x)
    _close(torch.func.grad(lambda v: CF.conv2d(v, w, None, **CONV).sum())(x),
           torch.func.grad(lambda v: F.conv2d(v, w, None, **CONV).sum())(x))


# ---- backend per context -------------------------------------------------------------------------

@pytest.fixture
def ran_on(monkeypatch):
    """Records (backend, thread, asyncio task) for every kernel convkit runs through its backend
    dispatch (not the bare CPU ReLU fast path, which runs only when no backend is forced)."""
    calls = []
    real = K._Kernels.__call__

    def spy(self, kernel, *args):
        try:
            task = asyncio.current_task()
        except RuntimeError:
            task = None
        calls.append((self.name, kernel, threading.get_ident(), task))
        return real(self, kernel, *args)

    monkeypatch.setattr(K._Kernels, "__call__", spy)
    return calls


def _two_backends():
    if "cudasim" not in BACKENDS or "cpu" not in BACKENDS:
        pytest.skip("needs the 'cpu' and 'cudasim' backends")
    return "cpu", "cudasim"


def test_backend_per_asyncio_task(ran_on):
    """Two tasks on one thread, each in its own use_backend block, interleaved at every await:
    each sees and runs on its own backend, and leaving the blocks in crossed order restores each
    task's own state (a thread-local stack would hand one task's backend to the other)."""
    a, b = _two_backends()
    x = rand((1, 2, 5, 5))
    order = []

    async def task(name, first_out):
        assert B.forced_backend() is None
        with convkit.use_backend(name):
            for _ in range(3):
                await asyncio.sleep(0)
                assert B.forced_backend() == name
                CF.max_pool2d(x, 2)
            if not first_out:
                await asyncio.sleep(0.01)  # leave after the other task has left
            order.append(name)
        assert B.forced_backend() is None
        return asyncio.current_task()

    async def main():
        return await asyncio.gather(task(a, True), task(b, False))

    ta, tb = asyncio.run(main())
    assert order == [a, b]
    assert {n for n, _, _, t in ran_on if t is ta} == {a}
    assert {n for n, _, _, t in ran_on if t is tb} == {b}
    assert B.forced_backend() is None


def test_backend_per_thread(ran_on):
    a, b = _two_backends()
    x = rand((1, 2, 5, 5))
    barrier = threading.Barrier(2)
    errors = []

    def work(name):
        try:
            with convkit.use_backend(name):
                barrier.wait()
                for _ in range(3):
                    assert B.forced_backend() == name
                    CF.avg_pool2d(x, 2)
                barrier.wait()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    by_thread = {}
    for n, _, tid, _ in ran_on:
        by_thread.setdefault(tid, set()).add(n)
    assert sorted(map(sorted, by_thread.values())) == [[a], [b]]


@pytest.mark.parametrize("path", ["eager", "op", "func"])
def test_backward_runs_on_the_forward_backend(ran_on, path):
    """The forward inside use_backend(b), backward() after the block has ended (and inside a
    block of another backend): every backward kernel runs on b. "eager" is convkit.functional's
    fast path, "op" the custom op's Autograd kernel, "func" torch.func.vjp."""
    a, b = _two_backends()
    x, w = rand((1, 2, 5, 5)).requires_grad_(), rand((3, 2, 3, 3)).requires_grad_()
    conf = ([1, 1], [1, 1, 1, 1], [1, 1], 1, "auto")

    def f(x, w):
        if path == "op":
            return torch.ops.convkit.relu(torch.ops.convkit.conv2d(x, w, None, *conf))
        return CF.relu(CF.conv2d(x, w, None, padding=1))

    if path == "func":
        with convkit.use_backend(b):
            y, pullback = torch.func.vjp(f, x.detach(), w.detach())
        ran_on.clear()
        with convkit.use_backend(a):
            grads = pullback(torch.ones_like(y))
    else:
        with convkit.use_backend(b):
            y = f(x, w)
        ran_on.clear()
        with convkit.use_backend(a):
            grads = torch.autograd.grad(y.sum(), (x, w))
    assert ran_on and {n for n, *_ in ran_on} == {b}, ran_on
    y_ref = torch.relu(F.conv2d(x, w, None, padding=1))
    for g, r in zip(grads, torch.autograd.grad(y_ref.sum(), (x, w))):
        _close(g, r)
