"""Kernel-level tests of the CUDA pooling and ReLU kernels through the compiled modules
(convkit._cudasim: the CUDA sources on the CPU emulator; convkit._cuda: the GPU), called
directly with raw pointers: every option against torch's float64 reference, all four dtypes,
outputs NaN-poisoned before each call, bitwise agreement with the CPU kernels in float32 and
float64 where the summation order is the same, misaligned ReLU buffers, errors.
Skipped for a backend that is not built."""
import os
import random
import zlib

import pytest
import torch
import torch.nn.functional as F

from convkit import _backend

# CONVKIT_TEST_BACKENDS="cpu,cudasim" picks a subset, as in conftest.py.
_wanted = [b for b in os.environ.get("CONVKIT_TEST_BACKENDS", "").split(",") if b]
CUDA_BACKENDS = [b for b in ("cudasim", "cuda") if not _wanted or b in _wanted]
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
# Relative error of one rounding to the dtype (results are float32-accumulated then rounded once).
ROUND = {"float32": 1e-6, "float64": 1e-15, "float16": 2 ** -10, "bfloat16": 2 ** -7}


def _module(backend):
    mod = _backend._load(backend)
    if mod is None:
        pytest.skip(f"convkit._{backend} is not built")
    if backend == "cuda" and (mod.device_count() == 0 or not torch.cuda.is_available()):
        pytest.skip("no CUDA device")
    return mod


def _dtypes(mod):
    return [d for d in DTYPES if mod.has_half or d in ("float32", "float64")]


def _dev(backend):
    return "cuda" if backend == "cuda" else "cpu"


class Launch:
    """The device/stream tail of every call: the tensor's device and the current stream (a
    non-default one on the GPU, which exposes kernels that ignore the caller's stream)."""

    def __init__(self, backend):
        self.backend = backend
        self.stream = torch.cuda.Stream() if backend == "cuda" else None

    def __enter__(self):
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream())  # inputs and poison were made there
            self.ctx = torch.cuda.stream(self.stream)
            self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self.stream is not None:
            self.stream.synchronize()
            self.ctx.__exit__(*exc)

    def args(self, t):
        if self.backend == "cuda":
            return (t.device.index, torch.cuda.current_stream().cuda_stream)
        return (-1, 0)


def _poison(shape, dtype, dev):
    t = torch.empty(shape, dtype=dtype, device=dev)
    t.fill_(float("nan") if dtype.is_floating_point else -(2 ** 62))
    return t


def _pp(mod, shape, k, s, p, d, ceil):
    n, c, h, w = shape
    return mod.PoolParams(n, c, h, w, k[0], k[1], s[0], s[1], p[0], p[1], d[0], d[1], ceil)


def _close(actual, expected, dtype_name, L, what):
    a = actual.detach().cpu().double()
    e = expected.detach().cpu().double()
    assert not torch.isnan(a).any(), f"{what}: NaN in the result (unwritten element?)"
    tol = ROUND[dtype_name] * 2 + (1e-6 if dtype_name in ("float16", "bfloat16") else 1e-12) * L
    err = (a - e).abs() - tol * torch.maximum(e.abs(), torch.ones_like(e))
    assert (err <= 0).all(), f"{what}: max abs err {(a - e).abs().max().item():.3e} (tol {tol:.1e})"


def _bitwise(actual, expected, what):
    a, e = actual.detach().cpu(), expected.detach().cpu()
    same = (a == e) | (torch.isnan(a) & torch.isnan(e))
    assert bool(same.all()), f"{what}: {int((~same).sum())}/{a.numel()} elements differ; first at " \
                             f"{torch.nonzero(~same)[0].tolist()}: {a[~same][0].item()} vs {e[~same][0].item()}"


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# ---- pooling cases ----------------------------------------------------------------------------

def _random_pool_cases(n, seed, dilation):
    rng = random.Random(seed)
    sizes = [1, 2, 3, 5, 7, 8, 13, 31, 33]
    out = []
    while len(out) < n:
        k = (rng.choice([1, 2, 3, 4, 5, 7]), rng.choice([1, 2, 3, 5]))
        c = dict(shape=(rng.choice([1, 2, 3]), rng.choice([1, 3, 5]), rng.choice(sizes), rng.choice(sizes)),
                 k=k, s=(rng.choice([1, 2, 3]), rng.choice([1, 2, 3])),
                 p=(rng.randint(0, k[0] // 2), rng.randint(0, k[1] // 2)),
                 d=(rng.choice([1, 2, 3]), rng.choice([1, 2])) if dilation else (1, 1),
                 ceil=rng.random() < 0.5)
        x = torch.zeros(c["shape"], dtype=torch.float64)
        try:
            y = F.max_pool2d(x, c["k"], c["s"], c["p"], c["d"], c["ceil"])
        except RuntimeError:
            continue
        if y.numel() == 0 or torch.isinf(y).any():  # a window of padding only: torch's own bug
            continue
        out.append(c)
    return out


POOL_MUST = [
    # GoogLeNet's pools (batch and channels cut down) and the ceil_mode dropped window.
    dict(shape=(2, 3, 112, 112), k=(3, 3), s=(2, 2), p=(0, 0), d=(1, 1), ceil=True),
    dict(shape=(2, 5, 56, 56), k=(3, 3), s=(2, 2), p=(0, 0), d=(1, 1), ceil=True),
    dict(shape=(2, 5, 28, 28), k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1), ceil=True),
    dict(shape=(2, 7, 7, 7), k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1), ceil=False),
    dict(shape=(3, 9, 7, 7), k=(7, 7), s=(1, 1), p=(0, 0), d=(1, 1), ceil=False),
    dict(shape=(1, 2, 5, 5), k=(2, 2), s=(3, 3), p=(1, 1), d=(1, 1), ceil=True),
    dict(shape=(2, 3, 13, 13), k=(2, 2), s=(2, 2), p=(1, 0), d=(1, 1), ceil=True),
    dict(shape=(1, 2, 9, 8), k=(3, 2), s=(1, 2), p=(1, 0), d=(2, 1), ceil=False),
    dict(shape=(1, 300, 3, 3), k=(1, 1), s=(1, 1), p=(0, 0), d=(1, 1), ceil=False),  # > one block of planes
    # Big windows over narrow rows: the warp-per-output average (and many windows per warp).
    dict(shape=(2, 1000, 7, 7), k=(7, 7), s=(1, 1), p=(0, 0), d=(1, 1), ceil=False),
    dict(shape=(2, 3, 9, 6), k=(7, 5), s=(2, 3), p=(3, 2), d=(1, 1), ceil=True),
    dict(shape=(1, 2, 40, 5), k=(9, 5), s=(4, 2), p=(4, 2), d=(1, 1), ceil=False),
    # More outputs than the emulator's grid has threads: every grid-stride loop goes round.
    dict(shape=(4, 4, 112, 112), k=(3, 3), s=(2, 2), p=(0, 0), d=(1, 1), ceil=True),
]
MAX_CASES = POOL_MUST + _random_pool_cases(40, 11, dilation=True)
AVG_CASES = [c for c in POOL_MUST if c["d"] == (1, 1)] + _random_pool_cases(40, 12, dilation=False)


def _case_id(c):
    return "{}_k{}x{}_s{}x{}_p{}x{}_d{}x{}{}".format("x".join(map(str, c["shape"])), *c["k"], *c["s"], *c["p"],
                                                    *c["d"], "_ceil" if c["ceil"] else "")


def _input(shape, dtype_name, dev, seed, nan=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if dtype_name in ("float16", "bfloat16"):
        x = (x * 8).round() / 8  # few distinct values: exact in every dtype, many ties
    if nan:
        x.view(-1)[torch.randperm(x.numel(), generator=g)[: max(1, x.numel() // 50)]] = float("nan")
    return x.to(DTYPES[dtype_name]).to(dev)


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("case", MAX_CASES, ids=_case_id)
def test_max_pool2d(backend, case):
    mod = _module(backend)
    dev = _dev(backend)
    for dt in _dtypes(mod):
        for with_nan in (False, True):
            x = _input(case["shape"], dt, dev, zlib.crc32(_case_id(case).encode()) % 1000, nan=with_nan)
            ref_in = x.cpu().double().requires_grad_(True)
            ref_y, ref_idx = F.max_pool2d(ref_in, case["k"], case["s"], case["p"], case["d"], case["ceil"],
                                          return_indices=True)
            pp = _pp(mod, case["shape"], case["k"], case["s"], case["p"], case["d"], case["ceil"])
            assert (pp.P, pp.Q) == tuple(ref_y.shape[2:])
            y = _poison(ref_y.shape, x.dtype, dev)
            y2 = _poison(ref_y.shape, x.dtype, dev)
            idx = _poison(ref_y.shape, torch.int64, dev)
            with Launch(backend) as L:
                mod.max_pool2d_fwd(dt, pp, x.data_ptr(), y.data_ptr(), idx.data_ptr(), *L.args(x))
                mod.max_pool2d_fwd(dt, pp, x.data_ptr(), y2.data_ptr(), 0, *L.args(x))
            what = f"{dt}{' nan' if with_nan else ''}"
            _bitwise(y, ref_y.to(x.dtype), f"max forward {what}")
            _bitwise(y2, ref_y.to(x.dtype), f"max forward without indices {what}")
            assert torch.equal(idx.cpu(), ref_idx), f"max indices differ from torch's ({what})"
            if with_nan:
                continue
            g = _input(ref_y.shape, dt, dev, 7)
            (ref_gx,) = torch.autograd.grad(ref_y, [ref_in], g.cpu().double())
            gx = _poison(case["shape"], x.dtype, dev)
            with Launch(backend) as L:
                mod.max_pool2d_bwd(dt, pp, g.data_ptr(), idx.data_ptr(), gx.data_ptr(), *L.args(x))
            _close(gx, ref_gx, dt, case["k"][0] * case["k"][1], f"max backward {dt}")


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("case", AVG_CASES, ids=_case_id)
def test_avg_pool2d(backend, case):
    mod = _module(backend)
    dev = _dev(backend)
    rules = [(True, 0), (False, 0), (True, 3), (False, 5)]
    for dt in _dtypes(mod):
        x = _input(case["shape"], dt, dev, zlib.crc32(_case_id(case).encode()) % 1000)
        for cip, div in rules:
            ref_in = x.cpu().double().requires_grad_(True)
            ref_y = F.avg_pool2d(ref_in, case["k"], case["s"], case["p"], case["ceil"], cip, div or None)
            pp = _pp(mod, case["shape"], case["k"], case["s"], case["p"], case["d"], case["ceil"])
            y = _poison(ref_y.shape, x.dtype, dev)
            with Launch(backend) as L:
                mod.avg_pool2d_fwd(dt, pp, cip, div, x.data_ptr(), y.data_ptr(), *L.args(x))
            L_ = case["k"][0] * case["k"][1]
            _close(y, ref_y, dt, L_, f"avg forward {dt} cip={cip} div={div}")
            g = _input(ref_y.shape, dt, dev, 5)
            (ref_gx,) = torch.autograd.grad(ref_y, [ref_in], g.cpu().double())
            gx = _poison(case["shape"], x.dtype, dev)
            with Launch(backend) as L:
                mod.avg_pool2d_bwd(dt, pp, cip, div, g.data_ptr(), gx.data_ptr(), *L.args(x))
            _close(gx, ref_gx, dt, L_, f"avg backward {dt} cip={cip} div={div}")


def _cpu_module():
    return _backend._load("cpu")


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("case", POOL_MUST + _random_pool_cases(8, 13, dilation=True), ids=_case_id)
def test_pool_bitwise_equal_to_cpu_kernels(backend, case):
    """float32 / float64: same terms in the same order as the CPU kernels (window order forward,
    output order backward), so the results agree bit for bit."""
    mod, cpu = _module(backend), _cpu_module()
    if cpu is None:
        pytest.skip("convkit._cpu is not built")
    dev = _dev(backend)
    avg_ok = case["d"] == (1, 1)
    for dt in ("float32", "float64"):
        x = _input(case["shape"], dt, dev, 3)
        xc = x.cpu()
        pp = _pp(mod, case["shape"], case["k"], case["s"], case["p"], case["d"], case["ceil"])
        cpp = _pp(cpu, case["shape"], case["k"], case["s"], case["p"], case["d"], case["ceil"])
        out = (case["shape"][0], case["shape"][1], pp.P, pp.Q)
        g = _input(out, dt, dev, 4)
        gc = g.cpu()
        y, idx, gx = _poison(out, x.dtype, dev), _poison(out, torch.int64, dev), _poison(case["shape"], x.dtype, dev)
        yc, idxc, gxc = _poison(out, x.dtype, "cpu"), _poison(out, torch.int64, "cpu"), _poison(case["shape"], x.dtype, "cpu")
        with Launch(backend) as L:
            mod.max_pool2d_fwd(dt, pp, x.data_ptr(), y.data_ptr(), idx.data_ptr(), *L.args(x))
            mod.max_pool2d_bwd(dt, pp, g.data_ptr(), idx.data_ptr(), gx.data_ptr(), *L.args(x))
        cpu.max_pool2d_fwd(dt, cpp, xc.data_ptr(), yc.data_ptr(), idxc.data_ptr())
        cpu.max_pool2d_bwd(dt, cpp, gc.data_ptr(), idxc.data_ptr(), gxc.data_ptr())
        _bitwise(y, yc, f"max forward {dt}")
        assert torch.equal(idx.cpu(), idxc)
        _bitwise(gx, gxc, f"max backward {dt}")
        if not avg_ok or (case["k"][0] * case["k"][1] >= 32 and pp.Q < 8):
            continue  # the warp-per-output average sums in a tree, not the CPU kernel's order
        for cip, div in [(True, 0), (False, 0), (False, 3)]:
            with Launch(backend) as L:
                mod.avg_pool2d_fwd(dt, pp, cip, div, x.data_ptr(), y.data_ptr(), *L.args(x))
                mod.avg_pool2d_bwd(dt, pp, cip, div, g.data_ptr(), gx.data_ptr(), *L.args(x))
            cpu.avg_pool2d_fwd(dt, cpp, cip, div, xc.data_ptr(), yc.data_ptr())
            cpu.avg_pool2d_bwd(dt, cpp, cip, div, gc.data_ptr(), gxc.data_ptr())
            _bitwise(y, yc, f"avg forward {dt} cip={cip} div={div}")
            _bitwise(gx, gxc, f"avg backward {dt} cip={cip} div={div}")


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_max_pool2d_ties_and_infinities(backend):
    """All-equal and all -inf windows: the first in-range tap's index, as torch."""
    mod = _module(backend)
    dev = _dev(backend)
    for fill in (1.0, float("-inf")):
        for dt in _dtypes(mod):
            x = torch.full((2, 3, 9, 10), fill, dtype=DTYPES[dt], device=dev)
            for k, s, p, d, ceil in [((3, 3), (2, 2), (1, 1), (1, 1), True), ((3, 2), (1, 2), (1, 1), (2, 3), False)]:
                ref_y, ref_idx = F.max_pool2d(x.cpu().double(), k, s, p, d, ceil, return_indices=True)
                pp = _pp(mod, x.shape, k, s, p, d, ceil)
                y, idx = _poison(ref_y.shape, x.dtype, dev), _poison(ref_y.shape, torch.int64, dev)
                with Launch(backend) as L:
                    mod.max_pool2d_fwd(dt, pp, x.data_ptr(), y.data_ptr(), idx.data_ptr(), *L.args(x))
                _bitwise(y, ref_y.to(x.dtype), f"{dt} fill {fill}")
                assert torch.equal(idx.cpu(), ref_idx)


# ---- relu -------------------------------------------------------------------------------------

# The last is more than the emulator's grid has threads (its grid-stride loop goes round).
RELU_SIZES = [1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 1000, 4099, 300001]


def _relu_values(n, dtype, dev, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    special = torch.tensor([float("nan"), -0.0, 0.0, float("inf"), float("-inf"), -1e-30], dtype=torch.float64)
    pos = torch.randperm(n, generator=g)[: min(n, 6)]
    x[pos] = special[: len(pos)]
    return x.to(dtype).to(dev)


def _bits(t):
    t = t.detach().cpu()
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("n", RELU_SIZES)
def test_relu_any_length_and_alignment(backend, n):
    """x and y (and dy, y, dx) at every element offset within 16 bytes, independently:
    aligned, equally misaligned (packs after a scalar head) and differently misaligned (all
    scalar); NaN and -0.0 kept bit for bit."""
    mod = _module(backend)
    dev = _dev(backend)
    for dt in _dtypes(mod):
        dtype = DTYPES[dt]
        per16 = 16 // torch.empty(0, dtype=dtype).element_size()
        offsets = [(a, b) for a in range(per16) for b in {0, a, (a + 1) % per16}]
        for a, b in offsets:
            xbuf = _relu_values(n + per16, dtype, dev, n + a)
            ybuf = _poison(n + per16, dtype, dev)
            x, y = xbuf[a:a + n], ybuf[b:b + n]
            with Launch(backend) as L:
                mod.relu_fwd(dt, n, x.data_ptr(), y.data_ptr(), *L.args(x))
            ref = torch.where(x < 0, torch.zeros_like(x), x)  # csrc/cpu/relu.cpp's rule
            assert torch.equal(_bits(y), _bits(ref)), f"relu forward {dt} n={n} offsets {a},{b}"
            assert torch.isnan(ybuf[:b]).all() and torch.isnan(ybuf[b + n:]).all(), "wrote outside y"
            # backward: dy at offset a, y at offset b, dx at offset (a + b) % per16
            c = (a + b) % per16
            dybuf = _relu_values(n + per16, dtype, dev, 99 + n)
            dxbuf = _poison(n + per16, dtype, dev)
            dy, dx = dybuf[a:a + n], dxbuf[c:c + n]
            with Launch(backend) as L:
                mod.relu_bwd(dt, n, dy.data_ptr(), y.data_ptr(), dx.data_ptr(), *L.args(x))
            ref = torch.where(y <= 0, torch.zeros_like(dy), dy)  # a NaN y passes dy
            assert torch.equal(_bits(dx), _bits(ref)), f"relu backward {dt} n={n} offsets {a},{b},{c}"
            assert torch.isnan(dxbuf[:c]).all() and torch.isnan(dxbuf[c + n:]).all(), "wrote outside dx"


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_relu_in_place(backend):
    mod = _module(backend)
    dev = _dev(backend)
    for dt in _dtypes(mod):
        for off in (0, 1, 3):
            buf = _relu_values(5000, DTYPES[dt], dev, off)
            x = buf[off:]
            ref = torch.where(x < 0, torch.zeros_like(x), x)
            with Launch(backend) as L:
                mod.relu_fwd(dt, x.numel(), x.data_ptr(), x.data_ptr(), *L.args(x))
            assert torch.equal(_bits(x), _bits(ref))
            dy = _relu_values(x.numel(), DTYPES[dt], dev, 50 + off)
            ref = torch.where(x <= 0, torch.zeros_like(dy), dy)
            with Launch(backend) as L:
                mod.relu_bwd(dt, x.numel(), dy.data_ptr(), x.data_ptr(), dy.data_ptr(), *L.args(x))
            assert torch.equal(_bits(dy), _bits(ref))


# ---- module surface and errors ----------------------------------------------------------------

@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_module_attributes(backend):
    mod = _backend._load(backend)
    if mod is None:
        pytest.skip(f"convkit._{backend} is not built")
    assert mod.backend == backend
    assert isinstance(mod.has_half, bool)
    assert mod.device_count() >= 0  # 0 and no exception on a machine without a GPU
    if backend == "cudasim":
        assert mod.device_count() == 1
    pp = mod.PoolParams(1, 1, 5, 5, 2, 2, 3, 3, 1, 1, 1, 1, True)
    assert (pp.P, pp.Q) == (2, 2)
    assert mod.ConvParams(1, 3, 7, 7, 2, 7, 7, 2, 2, 3, 3, 3, 3, 1, 1, 1).P == 4


@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_errors_name_op_shapes_and_cause(backend):
    mod = _module(backend)
    dev = _dev(backend)
    x = torch.zeros(2, 3, 13, 13, device=dev)
    pp = _pp(mod, x.shape, (3, 3), (2, 2), (0, 0), (1, 1), False)
    with Launch(backend) as L:
        a = L.args(x)
        with pytest.raises(RuntimeError, match=r"max_pool2d_fwd \(N=2, C=3, H=13, W=13, k=3x3, s=2x2.*'int8'.*"
                                               + backend):
            mod.max_pool2d_fwd("int8", pp, x.data_ptr(), x.data_ptr(), 0, *a)
        with pytest.raises(RuntimeError, match=r"max_pool2d_fwd \(N=2.*null pointer for 'y'"):
            mod.max_pool2d_fwd("float32", pp, x.data_ptr(), 0, 0, *a)
        with pytest.raises(RuntimeError, match=r"max_pool2d_bwd \(.*null pointer for 'idx'"):
            mod.max_pool2d_bwd("float32", pp, x.data_ptr(), 0, x.data_ptr(), *a)
        ppd = _pp(mod, x.shape, (3, 3), (2, 2), (0, 0), (2, 2), False)
        with pytest.raises(RuntimeError, match=r"avg_pool2d_fwd \(.*d=2x2.*dilation must be 1"):
            mod.avg_pool2d_fwd("float32", ppd, True, 0, x.data_ptr(), x.data_ptr(), *a)
        with pytest.raises(RuntimeError, match=r"relu_fwd \(n=-1.*n must be >= 0"):
            mod.relu_fwd("float32", -1, x.data_ptr(), x.data_ptr(), *a)
        with pytest.raises(RuntimeError, match=r"relu_fwd \(n=3.*not aligned"):
            mod.relu_fwd("float32", 3, x.data_ptr() + 1, x.data_ptr(), *a)
        if not mod.has_half:
            with pytest.raises(RuntimeError, match=r"'float16' on the " + backend):
                mod.relu_fwd("float16", 3, x.data_ptr(), x.data_ptr(), *a)
        # Empty inputs are no-ops (no pointer needed).
        mod.relu_fwd("float32", 0, 0, 0, *a)
        mod.max_pool2d_fwd("float32", _pp(mod, (0, 3, 13, 13), (3, 3), (2, 2), (0, 0), (1, 1), False), 0, 0, 0, *a)


def test_cpu_module_still_rejects_half():
    cpu = _cpu_module()
    if cpu is None:
        pytest.skip("convkit._cpu is not built")
    x = torch.zeros(4)
    with pytest.raises(RuntimeError, match=r"relu_fwd: unsupported dtype 'float16' on the cpu backend \(float32, float64\)"):
        cpu.relu_fwd("float16", 4, x.data_ptr(), x.data_ptr())


@pytest.mark.parametrize("backend", [b for b in CUDA_BACKENDS if b == "cuda"])
def test_more_than_2_31_elements(backend):
    """N*C*H*W > 2^31: the launch is split into plane chunks with int64 plane offsets."""
    mod = _module(backend)
    if not mod.has_half or torch.cuda.mem_get_info()[0] < (14 << 30):
        pytest.skip("needs ~14 GiB of free GPU memory")
    n_planes, h = 8200, 512  # 8200 * 512 * 512 = 2.15e9 elements
    x = torch.randn(n_planes, 1, h, h, dtype=torch.float16, device="cuda")
    pp = _pp(mod, x.shape, (2, 2), (2, 2), (0, 0), (1, 1), False)
    y = _poison((n_planes, 1, pp.P, pp.Q), x.dtype, "cuda")
    with Launch(backend) as L:
        mod.max_pool2d_fwd("float16", pp, x.data_ptr(), y.data_ptr(), 0, *L.args(x))
    for plane in (0, n_planes // 2, n_planes - 1):
        ref = F.max_pool2d(x[plane:plane + 1].float(), 2, 2).half()
        assert torch.equal(y[plane:plane + 1], ref)
    del y
    with Launch(backend) as L:
        mod.relu_fwd("float16", x.numel(), x.data_ptr(), x.data_ptr(), *L.args(x))
    assert bool((x[-1] >= 0).all()) and bool((x[0] >= 0).all())
