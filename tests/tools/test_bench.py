"""The benchmark's CPU-testable logic: the layer table (ReLUs, MobileNet's depthwise layers, the
passes and their op counts), the command line (batches, passes, --budget, --plan and its
counts), the GPU code paths driven by a stand-in for torch.cuda on CPU tensors (the CUDA-event
timer and its time limit, rows for every pass and reference, error rows, summary,
Markdown, the README form, strict JSON), also with convkit's side on the emulated CUDA kernels,
the CuPy im2col + cuBLAS reference (its kernels built for the host against torch in float64,
its CuPy glue on a NumPy stand-in for cupy, its kernels compiled by nvcc), the TF32 switch's
choice of API, the GPU check's summary and shell script (dry run, no-GPU exit, a flow with a
faked GPU), the sanitizer script's cases, and the ptxas report parser. What only a GPU can tell
(real event times, cuDNN, CuPy on the device, compute-sanitizer) runs in benchmarks/gpu_check.sh."""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import types

import pytest
import torch

import convkit
from convkit import _backend
from convkit.bench import (ceilings, checks, cli, config, cpu_run, env, gpu_rows, gpu_run, layers as L, plan,
                           report, summary, tables, tf32, timing)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import gpu_check_summary  # noqa: E402
import ptxas_report  # noqa: E402


# ---- a stand-in for torch.cuda ------------------------------------------------------------------
class FakeEvent:
    def __init__(self, cuda, enable_timing=False):
        self.cuda, self.t = cuda, None

    def record(self):
        self.t = time.perf_counter()

    def query(self):
        return self.cuda.behind.pop(0) if self.cuda.behind else False

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return (end.t - self.t) * 1e3


class FakeCuda:
    """Events read the host clock; `behind` lists what successive start-event queries answer
    (True: the GPU had already reached the start event, i.e. the sample was host-bound)."""

    def __init__(self, behind=()):
        self.behind = list(behind)
        self.sleeps = []
        self.syncs = 0

    def get_device_properties(self, device):
        return types.SimpleNamespace(name="Fake H100", major=9, minor=0, multi_processor_count=132,
                                     total_memory=80 << 30, L2_cache_size=1 << 20)

    def Event(self, enable_timing=False):
        return FakeEvent(self, enable_timing)

    def synchronize(self):
        self.syncs += 1

    def _sleep(self, cycles):
        self.sleeps.append(cycles)


_CudaTimer = timing.CudaTimer   # the class, whatever a test has patched gpu_run.CudaTimer to
_REAL = {"measure_ceilings_cuda": ceilings.measure_ceilings_cuda, "call_overhead": ceilings.call_overhead}


def fake_timer(**kw):
    return _CudaTimer("cpu", flush_bytes=1 << 16, cuda=FakeCuda(**kw))


CEILINGS = {"copy_gbps": 20.0, "matmul_gflops": 100.0, "matmul_tf32_gflops": 400.0}


@pytest.fixture(autouse=True)
def one_thread():
    """One thread for torch and convkit: torch's CPU grouped convolutions in float64 (the
    depthwise layers' reference) run a parallel region per group, slow on a busy machine."""
    before = torch.get_num_threads()
    env.set_threads(1)
    yield
    env.set_threads(before)


# ---- the package's shape: one job a module, imports one way ---------------------------------------
BENCH_DIR = os.path.join(ROOT, "convkit", "bench")


def _bench_imports(name):
    """(bench modules `name` imports at module level, bench modules it imports inside a function
    or class) as its source says: `from convkit.bench.x import ...`, `from convkit.bench import
    x`, `import convkit.bench.x`, and the relative forms."""
    with open(os.path.join(BENCH_DIR, name + ".py")) as f:
        tree = ast.parse(f.read())
    modules = {m[:-3] for m in os.listdir(BENCH_DIR) if m.endswith(".py")} - {"__init__"}
    top, nested = set(), set()
    nested_nodes = {id(n) for d in ast.walk(tree) if isinstance(d, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                    ast.ClassDef))
                    for n in ast.walk(d) if n is not d}
    for node in ast.walk(tree):
        found = set()
        if isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[:2] == ["convkit", "bench"] and len(parts) > 2:
                    found.add(parts[2])
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = "convkit.bench" + ("." + base if base else "")
            parts = base.split(".")
            if parts[:2] == ["convkit", "bench"]:
                found |= {parts[2]} if len(parts) > 2 else {a.name for a in node.names}
        found &= modules
        (nested if id(node) in nested_nodes else top).update(found)
    return top, nested


def test_bench_modules_import_one_way():
    """Every module of convkit/bench imports, has one job (400 lines at most), imports its
    siblings at module level only (no import inside a function to get around a cycle), and the
    siblings form a DAG."""
    import importlib
    names = sorted(m[:-3] for m in os.listdir(BENCH_DIR) if m.endswith(".py") and m != "__init__.py")
    assert {"cli", "config", "cpu_run", "gpu_run", "report", "timing"} <= set(names)
    graph = {}
    for name in names:
        importlib.import_module(f"convkit.bench.{name}")
        with open(os.path.join(BENCH_DIR, name + ".py")) as f:
            assert len(f.readlines()) <= 400, f"convkit/bench/{name}.py is over 400 lines"
        top, nested = _bench_imports(name)
        assert not nested, f"convkit/bench/{name}.py imports {sorted(nested)} inside a function"
        graph[name] = top - {name}
    done, order = set(), []

    def visit(name, path):
        assert name not in path, f"import cycle in convkit/bench: {' -> '.join(path + [name])}"
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, path + [name])
        done.add(name)
        order.append(name)
    for name in names:
        visit(name, [])
    assert order.index("cli") > order.index("cpu_run") > order.index("config")


# ---- the layer table ------------------------------------------------------------------------------
def test_relu_layers_follow_their_convolutions_and_come_last():
    by = L.layers_by_name()
    for name in L.RELU_AFTER:
        relu = by[f"{name}.relu"]
        assert relu.is_relu and relu.output_shape(3) == by[name].output_shape(3)
        assert relu.bytes(3, "fwd", 4) == 2 * 4 * 3 * relu.input_shape[0] * relu.input_shape[1] * relu.input_shape[2]
        assert relu.bytes(3, "fwd+bwd", 2) == 5 * 2 * 3 * relu.input_shape[0] * relu.input_shape[1] * relu.input_shape[2]
    big = by["relu.large"]
    assert big.batch_for(32) == 1 and big.bytes(32, "fwd", 4) == 2 * 256 * 2 ** 20
    # new layers after the old ones: the old layers keep their seeds (LAYERS.index): the ReLUs
    # after GoogLeNet's and the lecture's layers, MobileNet's after the ReLUs
    order = [2 if lay.family == "mobilenet" else 1 if lay.is_relu else 0 for lay in L.LAYERS]
    assert order == sorted(order) and L.LAYERS.index(by["relu.large"]) == order.index(2) - 1
    L.check_table()


def test_default_layers_depend_on_the_device():
    cpu = [lay.name for lay in L.select_layers(None, device="cpu")]
    cuda = [lay.name for lay in L.select_layers(None, device="cuda:1")]
    assert "relu.large" not in cpu and "relu.large" in cuda and "3a.3x3.relu" in cpu
    assert [lay.name for lay in L.select_layers("relu.large")] == ["relu.large"]
    assert [lay.name for lay in L.select_layers("3a.3x3")] == ["3a.3x3"]
    assert "3a.3x3.relu" in [lay.name for lay in L.select_layers("3a.*")]


def test_relu_layer_runs_both_implementations():
    lay = L.layers_by_name()["5b.3x3.relu"]
    inputs = lay.make_inputs(2, torch.float32, requires_grad=True)
    check = checks.check_layer(lay, inputs, "fwd+bwd", "direct", "float32")
    assert check["ok"], check


def test_mobilenet_depthwise_layers():
    by = L.layers_by_name()
    names = [lay.name for lay in L.LAYERS if lay.family == "mobilenet"]
    assert names == ["mobilenet.dw32_112", "mobilenet.dw128_56", "mobilenet.dw256_28",
                     "mobilenet.dw512_14", "mobilenet.dw1024_7"]
    for c, hw in L.MOBILENET_DW:
        lay = by[f"mobilenet.dw{c}_{hw}"]
        assert lay.input_shape == (c, hw, hw) and lay.conv == L.ConvSpec(c, 3, 1, 1, groups=c)
        assert lay.is_depthwise and not lay.is_1x1 and lay.weight_shape() == (c, 1, 3, 3)
        assert lay.output_shape(4) == (4, c, hw, hw)
        assert lay.macs(4) == 4 * c * hw * hw * 9 == lay.macs(4, "bwd_weight") == lay.macs(4, "fwd+bwd") // 3
        assert lay.algos() == ["direct", "im2col"]
        inputs = lay.make_inputs(2)
        assert tuple(inputs.weight.shape) == (c, 1, 3, 3)
    assert by["mobilenet.dw32_112"].macs(1) == 3_612_672      # 32 * 112 * 112 * 9
    # the GPU's default set and quick set; the CPU's only when named (torch's float64 reference)
    assert not set(names) & {lay.name for lay in L.select_layers(None, device="cpu")}
    assert set(names) <= {lay.name for lay in L.select_layers(None, device="cuda")}
    assert "mobilenet.dw128_56" in L.QUICK_LAYERS_CUDA and "mobilenet.dw128_56" not in L.QUICK_LAYERS
    assert [lay.name for lay in L.select_layers("mobilenet.*")] == names
    assert config.config_from_args(_args("--device", "cuda", "--quick")).layers.endswith("mobilenet.dw128_56")
    assert "mobilenet" not in config.config_from_args(_args("--quick")).layers
    assert not by["3a.3x3"].is_depthwise and by["3a.3x3"].family == "googlenet"
    assert by["lecture.3x3"].family == "lecture"


def test_passes_and_their_work():
    by = L.layers_by_name()
    conv, pool, relu = by["3a.3x3"], by["pool4"], by["5b.3x3.relu"]
    assert conv.passes() == list(L.ALL_PASSES) == ["fwd", "bwd_input", "bwd_weight", "fwd+bwd"]
    assert pool.passes() == relu.passes() == ["fwd", "bwd_input", "fwd+bwd"]
    fwd = conv.macs(2)
    assert [conv.macs(2, p) for p in L.ALL_PASSES] == [fwd, fwd, fwd, 3 * fwd]
    with pytest.raises(ValueError):
        conv.macs(2, "bwd")
    with pytest.raises(ValueError):
        pool.bytes(2, "bwd_weight")
    n = 2 * relu.input_shape[0] * relu.input_shape[1] * relu.input_shape[2]
    assert relu.bytes(2, "bwd_input", 4) == 3 * 4 * n       # read dy and y, write dx
    assert pool.bytes(2, "fwd+bwd") == 2 * pool.bytes(2, "bwd_input") > pool.bytes(2, "fwd")
    avg = by["avgpool"]
    assert avg.bytes(2, "fwd+bwd") == 2 * avg.bytes(2, "bwd_input") == 2 * avg.bytes(2, "fwd")


@pytest.mark.parametrize("name", ["mobilenet.dw1024_7", "5a.5x5_reduce", "4a.5x5", "pool3", "avgpool",
                                  "5b.3x3.relu"])
def test_backward_passes_match_torch(name):
    """bwd_input and bwd_weight, by torch's backward ops and by convkit's, agree with float64."""
    lay = L.layers_by_name()[name]
    inputs = lay.make_inputs(2, torch.float32, seed=3)
    for pass_ in ("bwd_input", "bwd_weight"):
        if pass_ not in lay.passes():
            with pytest.raises(ValueError):
                lay.step(inputs, pass_, "torch")
            continue
        ref = lay.results(inputs.to(torch.float64), pass_, "torch")
        assert set(ref) == ({"dx"} if pass_ == "bwd_input" else {"dweight", "dbias"})
        if pass_ == "bwd_weight":
            assert torch.allclose(ref["dbias"], inputs.grad.double().sum((0, 2, 3)))
        for algo in lay.algos():
            check = checks.check_layer(lay, inputs, pass_, algo, "float32")
            assert check["ok"], (pass_, algo, check)


# ---- configuration ---------------------------------------------------------------------------------
def _args(*argv):
    import argparse
    p = argparse.ArgumentParser()
    cli.add_bench_arguments(p)
    return p.parse_args(list(argv))


def test_cuda_defaults_and_dtype_rules():
    cfg = config.config_from_args(_args("--device", "cuda"))
    assert (cfg.batches, cfg.repeat, cfg.warmup, cfg.budget_s) == ([1, 32], 15, 2, None)
    assert tuple(cfg.passes) == L.GPU_PASSES == ("fwd", "bwd_input", "bwd_weight")
    cfg = config.config_from_args(_args("--device", "cuda:1", "--quick", "--dtype", "float16"))
    assert (cfg.batches, cfg.repeat, cfg.warmup, cfg.dtype) == ([32], 7, 1, "float16")
    cfg = config.config_from_args(_args())
    assert (cfg.batch, cfg.batches, cfg.repeat, cfg.warmup) == (8, [8], 7, 2)
    assert tuple(cfg.passes) == L.PASSES == ("fwd", "fwd+bwd")
    with pytest.raises(SystemExit, match="cuda only"):
        config.config_from_args(_args("--dtype", "bfloat16"))
    with pytest.raises(SystemExit, match="cuda"):
        config.config_from_args(_args("--device", "gpu"))


def test_cli_batches_passes_budget():
    cfg = config.config_from_args(_args("--device", "cuda", "--batch", "1,8,32", "--passes",
                                        "bwd_weight,fwd+bwd", "--budget", "200"))
    assert (cfg.batches, cfg.batch, list(cfg.passes), cfg.budget_s) == ([1, 8, 32], 1, ["bwd_weight", "fwd+bwd"], 200)
    assert config.config_batches(cfg) == [1, 8, 32]
    assert config.config_batches(config.BenchConfig(batch=4)) == [4]
    cfg = config.config_from_args(_args("--batch", "3", "--passes", "bwd_input"))
    assert (cfg.batches, list(cfg.passes)) == ([3], ["bwd_input"])
    for bad, msg in ((("--passes", "bwd"), "unknown --passes"), (("--batch", "0"), "--batch"),
                     (("--budget", "-1"), "--budget"), (("--algos", "fft"), "unknown --algos")):
        with pytest.raises(SystemExit, match=msg):
            config.config_from_args(_args(*bad))
    with pytest.raises(SystemExit, match="unknown --algos"):   # winograd is the CPU backend's alone
        config.config_from_args(_args("--device", "cuda", "--algos", "winograd"))
    assert config.config_from_args(_args("--algos", "im2col,winograd")).algos == ["im2col", "winograd"]
    with pytest.raises(SystemExit):   # argparse: not a list of integers
        _args("--batch", "1,x")


def _plan_by_hand(batches, dtype="float32"):
    """groups and timed callables of the default GPU run, counted from the table directly (the
    layer's algorithms and implicit_gemm, which applies to every convolution)."""
    groups = callables = 0
    for lay in L.select_layers(None, device="cuda"):
        for p in L.GPU_PASSES:
            if p not in lay.passes():
                continue
            for _ in batches:
                groups += 1
                if lay.is_conv:
                    callables += len(lay.algos()) + 1 + (2 if dtype == "float32" else 1) + \
                        (1 if dtype in ("float32", "float64") else 0)
                else:
                    callables += 2
    return groups, callables


def test_plan_counts_the_gpu_run(capsys):
    cfg = config.config_from_args(_args("--device", "cuda"))
    planned = plan.plan_run(cfg, "cuda")
    n_conv = sum(lay.is_conv for lay in L.select_layers(None, device="cuda"))
    assert n_conv == 57 + 8 + 5       # GoogLeNet, the lecture's module, MobileNet
    assert planned["by_op"]["conv2d"]["groups"] == n_conv * 3 * 2
    assert (planned["groups"], planned["callables"]) == _plan_by_hand([1, 32])
    assert planned["samples_per_callable"] == 17 and planned["samples"] == 17 * planned["callables"]
    # what the GPU check budgets for: the default run stays well inside the bench's slot
    assert 2000 < planned["callables"] < 3000 and planned["estimate_s"] < 200
    half = plan.plan_run(config.config_from_args(_args("--device", "cuda", "--dtype", "float16",
                                                       "--batch", "32")), "cuda")
    assert (half["groups"], half["callables"]) == _plan_by_hand([32], "float16")
    tight = plan.plan_run(config.config_from_args(_args("--device", "cuda", "--budget", "60")), "cuda")
    assert tight["repeat_within_budget"] == 5
    assert cli.bench_main(_args("--device", "cuda", "--plan")) == 0   # no GPU needed
    out = capsys.readouterr().out
    assert f"{planned['callables']} callables x 17 samples" in out and "| conv2d" in out


# ---- TF32: one API per torch version ------------------------------------------------------------------
class _Guarded:
    """An attribute holder whose `forbidden` attributes raise when touched, like torch >= 2.9
    does when the legacy and new TF32 APIs are mixed."""

    def __init__(self, forbidden=(), **values):
        object.__setattr__(self, "_forbidden", set(forbidden))
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "writes", [])

    def __getattr__(self, name):
        if name in self._forbidden:
            raise RuntimeError(f"mixed TF32 APIs: read {name}")
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name, value):
        if name in self._forbidden:
            raise RuntimeError(f"mixed TF32 APIs: wrote {name}")
        self._values[name] = value
        self.writes.append((name, value))


def _fake_torch(version):
    new = tf32.torch_version(version) >= (2, 9)
    if new:
        conv = _Guarded(fp32_precision="none")
        cudnn = _Guarded(forbidden=("allow_tf32",), conv=conv, benchmark=False)
        matmul = _Guarded(forbidden=("allow_tf32",), fp32_precision="none")
    else:
        conv = None
        cudnn = _Guarded(forbidden=("conv",), allow_tf32=True, benchmark=False)
        matmul = _Guarded(forbidden=("fp32_precision",), allow_tf32=False)
    backends = types.SimpleNamespace(cudnn=cudnn, cuda=types.SimpleNamespace(matmul=matmul))
    return types.SimpleNamespace(__version__=version, backends=backends), conv, cudnn, matmul


@pytest.mark.parametrize("version", ["2.11.0+cu130", "2.9.0", "2.8.1+cu128", "2.4.0"])
def test_tf32_switch_uses_one_api_and_restores(version):
    fake, conv, cudnn, matmul = _fake_torch(version)
    if tf32.torch_version(version) >= (2, 9):
        assert tf32.tf32_api(fake) == "fp32_precision"
        with tf32.tf32(False, "conv", fake):
            assert conv.fp32_precision == "ieee"
            with tf32.tf32(True, "conv", fake):
                assert conv.fp32_precision == "tf32"
            assert conv.fp32_precision == "ieee"
        assert conv.fp32_precision == "none"
        with tf32.tf32(True, "matmul", fake):
            assert matmul.fp32_precision == "tf32"
        assert matmul.fp32_precision == "none"
    else:
        assert tf32.tf32_api(fake) == "allow_tf32"
        with tf32.tf32(False, "conv", fake):
            assert cudnn.allow_tf32 is False
        assert cudnn.allow_tf32 is True
        with tf32.tf32(True, "matmul", fake):
            assert matmul.allow_tf32 is True
        assert matmul.allow_tf32 is False
    with tf32.tf32(None, "conv", fake):   # None: nothing touched
        pass
    with pytest.raises(ValueError):
        with tf32.tf32(True, "rnn", fake):
            pass


def test_tf32_switch_on_this_torch():
    before = torch.backends.cudnn.conv.fp32_precision
    with tf32.tf32(False, "conv"):
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert torch.backends.cudnn.conv.fp32_precision == before


# ---- the CUDA-event timer, on a stand-in -----------------------------------------------------------------
def test_timer_samples_interleaved_with_flush_and_spin():
    timer = fake_timer()
    calls = []
    flushes = []
    timer.flush = lambda: flushes.append(1)
    t = timer.time([lambda: calls.append("a"), lambda: calls.append("b")], warmup=2, repeat=5)
    assert calls == ["a", "b"] * 7
    assert [len(x.samples_ms) for x in t] == [5, 5] and all(x.host_bound == 0 for x in t)
    assert len(flushes) == 10 and len(timer.cuda.sleeps) == 3 + 10   # calibration + one per sample
    assert all(x.enqueue_us is not None and x.median_ms >= 0 for x in t)


def test_timer_retakes_host_bound_samples_with_longer_spin():
    timer = fake_timer(behind=[True, True, True, True, False])
    base = len(timer.cuda.sleeps)
    t = timer.time([lambda: None], warmup=1, repeat=2)[0]
    spins = timer.cuda.sleeps[base:]
    # sample 1: three tries, all host-bound (counted); sample 2: host-bound once, then fine
    assert t.host_bound == 1 and len(t.samples_ms) == 2 and len(spins) == 5
    assert spins[1] == pytest.approx(2 * spins[0], rel=1e-6) and spins[2] == pytest.approx(2 * spins[1], rel=1e-6)


def test_timer_flush_reads_the_buffer():
    timer = timing.CudaTimer("cpu", flush_bytes=1 << 16, cuda=FakeCuda())
    timer.flush()
    assert timer.flush_bytes == 1 << 16
    assert float(timer._flush_sink) == pytest.approx(float(timer._flush_buf.sum()))


def test_ceilings_on_the_stand_in():
    c = ceilings.measure_ceilings_cuda(fake_timer(), "float32", quick=True, copy_mib=1, mm_n=32)
    for key in ("copy_gbps", "copy_gbps_median", "matmul_gflops", "matmul_tf32_gflops",
                "matmul_fp16_gflops", "matmul_bf16_gflops"):
        assert c[key] > 0, key
    assert c["copy_bytes"] == 2 << 20 and c["matmul_dtype"] == "float32"


def test_call_overhead_on_the_cpu():
    o = ceilings.call_overhead("cpu", calls=5, reps=2)
    assert set(o["relu"]) == {"convkit", "torch"} and o["max_pool2d"]["torch"] > 0


def test_timer_shrinks_samples_to_a_time_limit():
    timer = fake_timer()
    t = timer.time([lambda: time.sleep(0.002), lambda: None], warmup=1, repeat=40, max_s=0.02)
    # a round costs >= 2 ms + spins + overhead: 0.02 s buys fewer than 40, never fewer than 5
    assert 5 <= timer.last_repeat < 40 and all(len(x.samples_ms) == timer.last_repeat for x in t)
    assert timer.last_sampling_s > 0
    timer.time([lambda: None], warmup=1, repeat=40, max_s=0.0)
    assert timer.last_repeat == 5
    timer.time([lambda: None], warmup=1, repeat=3, max_s=0.0)
    assert timer.last_repeat == 3          # never more than asked for
    timer.time([lambda: None], warmup=1, repeat=12, max_s=100.0)
    assert timer.last_repeat == 12


# ---- the CuPy im2col + cuBLAS reference, through its host build ------------------------------------------
needs_cxx = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="needs a C++ compiler")


@pytest.fixture(scope="module")
def host_ref(tmp_path_factory):
    from convkit.bench import cupy_ref
    return cupy_ref.HostBackend(workdir=str(tmp_path_factory.mktemp("cupyref")))


# (x shape, w shape, stride, pads (top, bottom, left, right), dilation, groups)
REF_CASES = [
    ((2, 3, 9, 11), (4, 3, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    ((1, 6, 7, 5), (6, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6),       # depthwise
    ((2, 8, 13, 11), (8, 1, 3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 8),     # depthwise, stride 2
    ((2, 5, 8, 8), (7, 5, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),       # 1x1 stride 2
    ((1, 4, 13, 13), (4, 2, 5, 5), (1, 1), (2, 2, 2, 2), (2, 2), 2),     # dilation, groups
    ((3, 5, 17, 15), (6, 5, 7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1),     # the stem's 7x7/2
    ((2, 6, 10, 9), (4, 3, 2, 4), (1, 2), (0, 1, 1, 2), (2, 1), 2),      # asymmetric everything
]


def _conv64(xs, ws, stride, pads, dil, groups, seed=0):
    """Inputs (float64 numpy) and torch's float64 y, dx, dw, db for a REF_CASES entry."""
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(seed)
    x, w, b = (torch.randn(*sh, generator=g, dtype=torch.float64, requires_grad=True)
               for sh in (xs, ws, (ws[0],)))
    pt, pb, pl, pr = pads
    y = F.conv2d(F.pad(x, (pl, pr, pt, pb)), w, b, stride, 0, dil, groups)
    dy = torch.randn(*y.shape, generator=g, dtype=torch.float64)
    dx, dw, db = torch.autograd.grad(y, (x, w, b), dy)
    return [t.detach().numpy() for t in (x, w, b, dy, y, dx, dw, db)]


@needs_cxx
@pytest.mark.parametrize("case", REF_CASES, ids=[str(i) for i in range(len(REF_CASES))])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cupy_reference_arithmetic_on_the_host(host_ref, case, dtype):
    import numpy as np
    from convkit.bench import cupy_ref
    xs, ws, stride, pads, dil, groups = case
    x, w, b, dy, y, dx, dw, db = _conv64(*case)
    x, w, b, dy = (a.astype(dtype) for a in (x, w, b, dy))
    geom = cupy_ref.Geometry(stride, pads, dil, groups)
    assert geom.output_hw(*xs[2:], *ws[2:]) == y.shape[2:]
    tol = 1e-12 if dtype == "float64" else 2e-6
    got_y = cupy_ref.conv2d_fwd(host_ref, x, w, b, geom)
    got_dx = cupy_ref.conv2d_bwd_input(host_ref, dy, w, xs, geom)
    got_dw, got_db = cupy_ref.conv2d_bwd_weight(host_ref, dy, x, ws, geom)
    for got, ref in ((got_y, y), (got_dx, dx), (got_dw, dw), (got_db, db)):
        assert got.dtype == np.dtype(dtype) and got.shape == ref.shape
        assert np.abs(got - ref).max() <= tol * np.abs(ref).max()
    assert cupy_ref.conv2d_bwd_weight(host_ref, dy, x, ws, geom, bias=False)[1] is None


@needs_cxx
def test_cupy_reference_64_bit_indexing(host_ref, monkeypatch):
    """The 64-bit-index build (arrays of 2^31 elements and more) computes the same."""
    import numpy as np
    from convkit.bench import cupy_ref
    case = REF_CASES[6]
    x, w, b, dy, y, dx, dw, db = _conv64(*case)
    geom = cupy_ref.Geometry(*case[2:])
    monkeypatch.setattr(cupy_ref, "_I32_LIMIT", 0)
    assert cupy_ref._index_bits(1) == 64
    assert np.allclose(cupy_ref.conv2d_fwd(host_ref, x, w, b, geom), y, rtol=0, atol=1e-12)
    assert np.allclose(cupy_ref.conv2d_bwd_input(host_ref, dy, w, case[0], geom), dx, rtol=0, atol=1e-12)
    assert ("float64", 64) in host_ref._libs


class FakeCupy:
    """What CupyBackend and ConvCase use of CuPy, on NumPy: RawModule compiles the code it is
    given for the host (cupy_ref's shim), its kernels check their launch arguments as CUDA would
    see them (grid and block tuples, each scalar the kernel's index type); arrays come from torch
    through DLPack; streams are context managers that record their use."""

    def __init__(self, workdir):
        import numpy as np
        self.np, self.workdir, self.launches, self.streams, self.freed = np, workdir, [], [], 0
        fake = self

        class Stream:
            def __init__(self, ptr):
                self.ptr = ptr

            def __enter__(self):
                fake.streams.append(self.ptr)
                return self

            def __exit__(self, *exc):
                return False

        class Kernel:
            def __init__(self, lib, name, itype):
                self.fn, self.name, self.itype = getattr(lib, name), name, itype

            def __call__(self, grid, block, args):
                import ctypes
                assert isinstance(grid, tuple) and isinstance(block, tuple)
                assert 1 <= grid[0] <= 65535 and block == (256,)
                arrays = [a for a in args if isinstance(a, np.ndarray) and a.ndim > 0]
                scalars = args[len(arrays):]
                assert all(type(v) is self.itype for v in scalars), (self.name, [type(v) for v in scalars])
                ct = ctypes.c_int if self.itype is np.int32 else ctypes.c_longlong
                self.fn.restype = None
                self.fn.argtypes = [ctypes.c_void_p] * len(arrays) + [ct] * len(scalars)
                fake.launches.append((self.name, self.itype, grid[0]))
                self.fn(*[a.ctypes.data for a in arrays], *[int(v) for v in scalars])

        class RawModule:
            def __init__(self, code, options=()):
                import ctypes
                from convkit.bench import cupy_ref
                assert "--std=c++11" in options
                n = len(os.listdir(fake.workdir))
                src, so = os.path.join(fake.workdir, f"m{n}.cpp"), os.path.join(fake.workdir, f"m{n}.so")
                with open(src, "w") as f:
                    f.write(cupy_ref._HOST_SHIM + code)
                subprocess.run([os.environ.get("CXX", "c++"), "-std=c++11", "-fPIC", "-shared", src, "-o", so],
                               check=True, capture_output=True)
                self.lib = ctypes.CDLL(so)
                self.itype = np.int32 if "typedef int I;" in code else np.int64

            def get_function(self, name):
                return Kernel(self.lib, name, self.itype)

        pool = types.SimpleNamespace(free_all_blocks=lambda: setattr(fake, "freed", fake.freed + 1))
        self.RawModule = RawModule
        self.cuda = types.SimpleNamespace(Stream=types.SimpleNamespace(null=Stream(0)), ExternalStream=Stream)
        self.get_default_memory_pool = lambda: pool
        self.from_dlpack = np.from_dlpack

    def __getattr__(self, name):   # empty, matmul, ascontiguousarray, ...
        return getattr(self.np, name)


@needs_cxx
def test_cupy_backend_glue_on_a_stand_in(tmp_path, monkeypatch):
    from convkit.bench import cupy_ref
    fake = FakeCupy(str(tmp_path))
    be = cupy_ref.CupyBackend(fake)
    be.compile("float32")
    assert len(os.listdir(tmp_path)) == 4      # one module per index width: .cpp + .so each
    lay = L.layers_by_name()["4a.5x5"]
    inputs = lay.make_inputs(2, torch.float32, seed=1, requires_grad=True)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: types.SimpleNamespace(cuda_stream=0))
    case = cupy_ref.ConvCase(be, lay, inputs, torch)
    for pass_ in ("fwd", "bwd_input", "bwd_weight", "fwd+bwd"):
        got = case.results(pass_)
        want = lay.results(inputs.to(torch.float64), pass_, "torch")
        assert set(got) == set(want)
        for k in want:
            assert isinstance(got[k], torch.Tensor) and got[k].dtype == torch.float32
            assert (got[k].double() - want[k]).abs().max() <= 1e-5 * want[k].abs().max(), (pass_, k)
    assert tuple(case.results("fwd")["y"].shape) == (2, 48, 14, 14)
    assert {n for n, *_ in fake.launches} == {"convkit_ref_im2col", "convkit_ref_col2im", "convkit_ref_im2row"}
    assert all(t is fake.np.int32 for _, t, _ in fake.launches) and set(fake.streams) == {0}
    # torch's stream that is not the legacy default one: an ExternalStream of its handle
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: types.SimpleNamespace(cuda_stream=1234))
    cupy_ref.ConvCase(be, lay, inputs, torch).fn("fwd")()
    assert fake.streams[-1] == 1234
    # arrays of 2^31 elements and more: the 64-bit build, int64 scalars
    monkeypatch.setattr(cupy_ref, "_I32_LIMIT", 0)
    case.fn("bwd_weight")()
    assert fake.launches[-1][:2] == ("convkit_ref_im2row", fake.np.int64)
    be.free()
    assert fake.freed == 1


def test_cupy_reference_geometry_and_status():
    from convkit.bench import cupy_ref
    g = cupy_ref.Geometry.of(2, 3, 1, 4)
    assert (g.stride, g.pads, g.dilation, g.groups) == ((2, 2), (3, 3, 3, 3), (1, 1), 4)
    assert cupy_ref.Geometry.of((1, 2), (0, 1)).pads == (0, 0, 1, 1)
    assert g.output_hw(224, 224, 7, 7) == (112, 112)
    assert cupy_ref.NAME == gpu_rows.REF_CUPY == "cupy-im2col-cublas"
    mod, info = cupy_ref.cupy_status()
    if mod is None:   # CuPy missing here, or no GPU: a clear reason, no rows
        assert info["status"] == "skipped" and info["reason"]
    be, info = gpu_run.cupy_reference("cuda:0", "bfloat16", True)
    assert be is None and "bfloat16" in info["reason"]
    assert gpu_run.cupy_reference("cuda:0", "float32", False)[1]["reason"] == "no convolution selected"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_cupy_reference_kernels_compile_for_the_gpu(tmp_path):
    """NVRTC compiles the same text on the GPU machine; nvcc here: no host header in it, every
    dtype and index width."""
    from convkit.bench import cupy_ref
    for dt in cupy_ref.DTYPES:
        for bits in (32, 64):
            cu = tmp_path / f"k_{dt}_{bits}.cu"
            cu.write_text(cupy_ref.kernel_prefix(dt, bits) + cupy_ref.KERNEL_SOURCE)
            p = subprocess.run(["nvcc", "-std=c++11", "-arch=sm_90", "-c", str(cu), "-o",
                                str(cu.with_suffix(".o"))], capture_output=True, text=True, timeout=300)
            assert p.returncode == 0, p.stderr
            assert "#include" not in cupy_ref.KERNEL_SOURCE


# ---- rows --------------------------------------------------------------------------------------------
def _rows(name, pass_, algos, batch=1, cupy=None, dtype="float32"):
    lay = L.layers_by_name()[name]
    inputs = lay.make_inputs(batch, getattr(torch, dtype), seed=L.LAYERS.index(lay),
                             requires_grad=(pass_ == "fwd+bwd"))
    return gpu_rows.run_layer_pass(lay, pass_, algos, inputs, dtype, batch, fake_timer(), CEILINGS,
                                   warmup=1, repeat=3, cupy_backend=cupy)


def test_conv_rows_one_per_algo_and_tf32_setting():
    rows = _rows("5a.5x5_reduce", "fwd+bwd", ["direct", "1x1"])
    assert [(r["algo"], r["ref_tf32"]) for r in rows] == [("direct", False), ("direct", True),
                                                          ("1x1", False), ("1x1", True)]
    for r in rows:
        assert r["status"] == "ok" and r["ref"] == "cudnn" and r["op"] == "conv2d"
        assert r["macs"] == 3 * L.layers_by_name()["5a.5x5_reduce"].macs(1)
        assert r["ratio"] == pytest.approx(r["ours_ms"] / r["ref_ms"])
        assert r["pct_of_ceiling"] == pytest.approx(100 * r["gflops"] / CEILINGS["matmul_gflops"])
        ceiling = CEILINGS["matmul_tf32_gflops" if r["ref_tf32"] else "matmul_gflops"]
        assert r["ref_pct_of_ceiling"] == pytest.approx(100 * r["ref_gflops"] / ceiling)
        assert r["samples"] == 3 and r["max_rel_err"] < 1e-5
    # ours is timed once per algo: both settings' rows carry the same time
    assert rows[0]["ours_ms"] == rows[1]["ours_ms"]


@needs_cxx
@pytest.mark.parametrize("pass_", ["fwd", "bwd_input", "bwd_weight"])
def test_conv_rows_with_every_reference(host_ref, pass_):
    """One row per (algo, reference): cuDNN with TF32 off and on, CuPy's im2col + cuBLAS (here
    its host build on CPU tensors), all checked against float64 and timed beside ours."""
    rows = _rows("mobilenet.dw256_28", pass_, ["direct", "im2col"], cupy=host_ref, batch=2)
    assert [(r["algo"], r["ref"], r["ref_tf32"]) for r in rows] == [
        (a, ref, s) for a in ("direct", "im2col")
        for ref, s in (("cudnn", False), ("cudnn", True), ("cupy-im2col-cublas", False))]
    lay = L.layers_by_name()["mobilenet.dw256_28"]
    for r in rows:
        assert r["status"] == "ok" and r["ref_status"] == "ok" and r["pass"] == pass_
        assert r["macs"] == lay.macs(2, pass_) and r["batch"] == 2
        assert r["ratio"] == pytest.approx(r["ours_ms"] / r["ref_ms"])
        assert r["tflops"] == pytest.approx(r["gflops"] / 1e3) and r["ref_tflops"] > 0
        assert r["ref_rel_err"] < 1e-5 and r["samples"] == 3
        if r["ref_tf32"]:
            assert r["ref_pct_of_fp32_ceiling"] == pytest.approx(100 * r["ref_gflops"] / CEILINGS["matmul_gflops"])
    cupy = [r for r in rows if r["ref"] == "cupy-im2col-cublas"]
    assert cupy[0]["ours_ms"] == rows[0]["ours_ms"] and cupy[0]["ref_ms"] != rows[0]["ref_ms"]


@needs_cxx
def test_a_wrong_cupy_reference_is_not_timed(host_ref, monkeypatch):
    from convkit.bench import cupy_ref
    real = cupy_ref.conv2d_fwd
    monkeypatch.setattr(cupy_ref, "conv2d_fwd", lambda be, x, w, b, g: real(be, x, w, b, g) * 1.01)
    rows = _rows("5a.5x5_reduce", "fwd", ["1x1"], cupy=host_ref)
    ok, tf, bad = rows
    assert bad["ref"] == "cupy-im2col-cublas" and bad["ref_status"] == "FAIL" and bad["ref_ms"] is None
    assert "relative error" in bad["ref_error"] and bad["ratio"] is None
    assert bad["status"] == "ok" and bad["ours_ms"] == ok["ours_ms"]     # ours still timed
    assert ok["ref_status"] == "ok" and ok["ratio"] > 0
    md = report.markdown_report(dict(_gpu_report(), rows=rows, summary=summary.summarize(rows, gpu=True)))
    assert "1 reference case(s) failed" in md and "**FAIL**" in md
    assert tables.n_failed({"rows": rows}) == (0, 1)


def test_backward_rows_on_the_gpu_path():
    for name, pass_ in (("3a.5x5", "bwd_weight"), ("3a.5x5", "bwd_input"), ("pool2", "bwd_input"),
                        ("3a.3x3.relu", "bwd_input")):
        rows = _rows(name, pass_, L.layers_by_name()[name].algos())
        assert rows and all(r["status"] == "ok" and r["pass"] == pass_ for r in rows), rows


def test_an_algorithm_that_raises_makes_error_rows(monkeypatch):
    """Its row per reference is an ERROR naming the exception; the other algorithm and the
    references are still checked and timed."""
    real = L.Layer.results

    def results(self, inputs, pass_, impl="torch", algo=None):
        if impl == "convkit" and algo == "direct":
            raise RuntimeError("kernel launch failed")
        return real(self, inputs, pass_, impl, algo)
    monkeypatch.setattr(L.Layer, "results", results)
    rows = _rows("5a.5x5_reduce", "fwd", ["direct", "1x1"])
    assert [(r["algo"], r["ref_tf32"], r["status"]) for r in rows] == [
        ("direct", False, "ERROR"), ("direct", True, "ERROR"), ("1x1", False, "ok"), ("1x1", True, "ok")]
    assert all(r["ours_ms"] is None and r["ratio"] is None and r["ref_ms"] > 0 for r in rows[:2])
    assert rows[0]["error"] == "RuntimeError: kernel launch failed" and rows[2]["ours_ms"] > 0


def test_pool_and_relu_rows():
    for name in ("pool4", "5b.3x3.relu"):
        (row,) = _rows(name, "fwd", ["direct"])
        assert row["status"] == "ok" and row["ref_tf32"] is None and row["ref"] == "torch-cuda"
        assert row["pct_of_ceiling"] == pytest.approx(100 * row["gbps"] / CEILINGS["copy_gbps"])


def _gpu_report():
    rows = _rows("5a.5x5_reduce", "fwd", ["direct", "1x1"])
    rows += [dict(r, status="ERROR", ours_ms=None, ratio=None, error="RuntimeError: kernel launch failed")
             for r in _rows("5a.3x3", "fwd", ["direct"])]
    rows += (_rows("pool4", "fwd", ["direct"]) + _rows("5b.3x3.relu", "fwd", ["direct"])
            + _rows("lecture.pool", "fwd", ["direct"]))
    rows.append(dict(rows[-1], layer="avgpool", status="FAIL", ours_ms=None, ratio=None,
                     error="y: relative error 1 > tolerance 1e-4"))
    rep = {"device": "cuda:0", "gpu": "Fake H100", "cpu": "x", "date": "2026-11-25T00:00:00+00:00",
           "commit": "abc", "dirty": False, "torch": torch.__version__, "cuda": "13.0", "cudnn": 91000,
           "batch": 1, "dtype": "float32", "warmup": 1, "repeat": 3,
           "timing": {"l2_flush_bytes": 128 << 20},
           "ceilings": dict(CEILINGS, matmul_n=64, matmul_dtype="float32", copy_gbps_median=19.0,
                            matmul_fp16_gflops=800.0, matmul_bf16_gflops=790.0),
           "call_overhead_us": {"shape": [1, 16, 9, 9], "calls": 5, "relu": {"convkit": 9.0, "torch": 4.0},
                                "max_pool2d": {"convkit": 11.0, "torch": 5.0}},
           "rows": rows, "ref_tf32_api": "fp32_precision"}
    rep["summary"] = summary.summarize(rows, gpu=True)
    rep["totals"] = summary.totals(rows)
    rep["ref_totals"] = summary.ref_totals(rows)
    return rep


def test_gpu_summary_markdown_and_strict_json(tmp_path):
    rep = _gpu_report()
    groups = {s["group"]: s for s in rep["summary"]}
    assert "conv fwd, algo=direct vs cudnn fp32" in groups and "conv fwd, algo=1x1 vs cudnn tf32" in groups
    assert groups["pools fwd"]["n"] == 2 and groups["relu fwd"]["n"] == 1   # the failed avgpool left out
    assert groups["pools fwd"]["ours_pct_of_ceiling"] > 0
    (tot,) = rep["totals"]
    assert tot["layers"] == 2 and tot["skipped_layers"] == ["5a.3x3", "avgpool"]   # 5a.5x5_reduce, pool4
    assert {(t["ref_tf32"], t["layers"]) for t in rep["ref_totals"]} == {(False, 4), (True, 4)}
    md = report.markdown_report(rep)
    for text in ("cudnn tf32", "torch-cuda", "Fake H100", "relu convkit 9.0 µs", "**FAIL**", "**ERROR**",
                 "2 case(s) failed", "5a.3x3 fwd batch 1 algo=direct: ERROR: RuntimeError", "cudnn fp32"):
        assert text in md, text
    path = tmp_path / "r.json"
    rep["rows"][0]["max_rel_err"] = float("inf")
    report.write_outputs(rep, str(path), str(tmp_path / "r.md"))
    back = json.loads(path.read_text())
    assert back["rows"][0]["max_rel_err"] is None and back["rows"][4]["ours_ms"] is None
    text = gpu_check_summary.bench_lines(str(path))
    assert any("copy 20 GB/s" in t for t in text) and any("FAILED avgpool" in t for t in text)


# The stand-in's tensors are on the CPU, so convkit runs its CPU kernels there: the default
# algorithms those build (not implicit_gemm).
_STAND_IN_ALGOS = tuple(a for a in config.CONV_BENCH_ALGOS if a in config.algos_built_for("cpu"))


def _cuda_run_on_the_stand_in(monkeypatch, cupy=None, **cfg_kw):
    """run_bench_cuda's orchestration on CPU tensors: torch.cuda replaced where it is touched.
    cupy: a backend for the CuPy reference (HostBackend), or None (CuPy missing, as here)."""
    monkeypatch.setattr(gpu_run, "_normalize_device", lambda device: "cpu")
    monkeypatch.setattr(gpu_run, "_check_convkit_cuda", lambda: None)
    monkeypatch.setattr(gpu_run, "gpu_info", lambda device, cuda=None: {"gpu": "Fake H100", "cuda": "13.0",
                                                                     "cudnn": 91000, "sm_count": 132})
    if cupy is not None:
        monkeypatch.setattr(gpu_run, "cupy_reference",
                            lambda device, dtype, any_conv: (cupy, {"status": "ok", "version": "host", "tf32": False}))
    timer = fake_timer()
    monkeypatch.setattr(gpu_run, "CudaTimer", lambda device: timer)
    real_ceilings = _REAL["measure_ceilings_cuda"]
    monkeypatch.setattr(gpu_run, "measure_ceilings_cuda",
                        lambda timer, dtype, quick: real_ceilings(timer, dtype, quick, copy_mib=1, mm_n=32))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    real_overhead = _REAL["call_overhead"]
    monkeypatch.setattr(gpu_run, "call_overhead", lambda device, calls: real_overhead(device, calls=3, reps=1))
    for k, v in (("passes", ("fwd",)), ("repeat", 2), ("warmup", 1), ("algos", _STAND_IN_ALGOS)):
        cfg_kw.setdefault(k, v)
    cfg = config.BenchConfig(device="cuda", batch=1, progress=False, **cfg_kw)
    return cli.run_bench(cfg, log=open(os.devnull, "w"))


def test_cuda_run_orchestration_on_the_stand_in(monkeypatch, tmp_path):
    rep = _cuda_run_on_the_stand_in(monkeypatch, layers="5a.5x5_reduce,pool4,5b.3x3.relu")
    assert (rep["device"], rep["gpu"], rep["cudnn"]) == ("cpu", "Fake H100", 91000)
    assert rep["timing"]["method"] == "cuda-events" and rep["timing"]["samples"] == 2
    assert {"copy_gbps", "matmul_gflops", "matmul_tf32_gflops"} <= set(rep["ceilings"])
    got = [(r["layer"], r["algo"], r["ref_tf32"], r["status"]) for r in rep["rows"]]
    assert got == [("pool4", "direct", None, "ok")] + [
        ("5a.5x5_reduce", a, s, "ok") for a in _STAND_IN_ALGOS for s in (False, True)] + [
        ("5b.3x3.relu", "direct", None, "ok")]
    assert torch.backends.cudnn.benchmark is False   # restored
    rep["device"] = "cuda:0"   # what _normalize_device gives on a GPU; the tensors here are on the CPU
    md = report.write_outputs(rep, str(tmp_path / "r.json"), None)
    assert "cudnn tf32" in md and json.loads((tmp_path / "r.json").read_text())["rows"][1]["ours_ms"] > 0


def test_cuda_run_in_half_on_kernels_that_refuse_it(monkeypatch):
    """float16 where convkit's kernels refuse it (the CPU kernels here): each case is an ERROR
    naming the dtype, its reference still timed; a convolution has one cuDNN row (ref_tf32 null)
    and no CuPy row (that reference runs float32 and float64)."""
    rep = _cuda_run_on_the_stand_in(monkeypatch, layers="5a.5x5_reduce,pool4", dtype="float16",
                                    algos=("direct",))
    got = [(r["layer"], r["algo"], r["ref"], r["ref_tf32"], r["status"]) for r in rep["rows"]]
    assert got == [("pool4", "direct", "torch-cuda", None, "ERROR"),
                   ("5a.5x5_reduce", "direct", "cudnn", None, "ERROR")]
    pool, conv = rep["rows"]
    assert all("float16" in r["error"] and r["ref_ms"] > 0 for r in rep["rows"])
    assert pool["bytes"] == L.layers_by_name()["pool4"].bytes(1, "fwd", 2)
    assert conv["macs"] == L.layers_by_name()["5a.5x5_reduce"].macs(1)
    assert rep["references"]["cupy-im2col-cublas"]["status"] == "skipped"
    assert "float16" in rep["references"]["cupy-im2col-cublas"]["reason"]


@needs_cxx
def test_cuda_run_two_batches_three_passes_and_the_cupy_reference(monkeypatch, tmp_path, host_ref):
    """The default GPU shape of a run (batches 1 and 32 -> 1 and 2 here, fwd / bwd_input /
    bwd_weight, every reference), its summary per batch, pass and reference, the CuPy
    comparison, the README form and the GPU check's summary lines."""
    rep = _cuda_run_on_the_stand_in(monkeypatch, cupy=host_ref,
                                    layers="5a.5x5_reduce,mobilenet.dw1024_7,pool4",
                                    batches=(1, 2), passes=L.GPU_PASSES, algos=("direct", "1x1"))
    assert rep["batches"] == [1, 2] and rep["batch"] == [1, 2] and rep["passes"] == list(L.GPU_PASSES)
    assert rep["references"]["cupy-im2col-cublas"]["status"] == "ok"
    assert rep["plan"]["groups"] == 2 * (3 + 3 + 2)
    rows = rep["rows"]
    assert all(r["status"] == "ok" and r.get("ref_status") == "ok" for r in rows)
    key = {(r["layer"], r["pass"], r["batch"], r["algo"], r["ref"], r["ref_tf32"]) for r in rows}
    assert len(key) == len(rows)
    conv_refs = [("cudnn", False), ("cudnn", True), ("cupy-im2col-cublas", False)]
    expect = [("5a.5x5_reduce", p, b, a) + ref for p in L.GPU_PASSES for b in (1, 2)
              for a in ("direct", "1x1") for ref in conv_refs]
    expect += [("mobilenet.dw1024_7", p, b, "direct") + ref for p in L.GPU_PASSES for b in (1, 2)
               for ref in conv_refs]
    expect += [("pool4", p, b, "direct", "torch-cuda", None) for p in ("fwd", "bwd_input") for b in (1, 2)]
    assert key == set(expect)
    groups = {s["group"]: s for s in rep["summary"]}
    g = groups["conv bwd_weight, batch 2, algo=direct vs cupy im2col+cublas"]
    assert (g["n"], g["pass"], g["batch"], g["algo"], g["ref"], g["kind"]) == (2, "bwd_weight", 2, "direct",
                                                                            "cupy-im2col-cublas", "algo")
    assert groups["conv fwd, batch 1, best algo per layer vs cudnn tf32"]["n"] == 2
    assert groups["depthwise convs bwd_input, batch 2, best algo per layer vs cudnn fp32"]["n"] == 1
    vs = groups["cupy im2col+cublas / cudnn fp32 conv fwd, batch 1"]
    assert vs["kind"] == "ref-vs-ref" and vs["n"] == 2 and vs["geomean_ratio"] > 0
    assert groups["pools bwd_input, batch 2"]["n"] == 1
    assert {(t["pass"], t["batch"]) for t in rep["totals"]} == {(p, b) for p in L.GPU_PASSES for b in (1, 2)}
    assert all(t["layers"] == (2 if t["pass"] != "bwd_weight" else 1) for t in rep["totals"])  # no MobileNet
    refs = {(t["pass"], t["batch"], t["ref"], t["ref_tf32"]) for t in rep["ref_totals"]}
    assert ("fwd", 2, "cupy-im2col-cublas", False) in refs and ("bwd_weight", 1, "cudnn", True) in refs
    rep["device"] = "cuda:0"
    md = report.write_outputs(rep, str(tmp_path / "r.json"), str(tmp_path / "r.md"), str(tmp_path / "readme.md"))
    assert "cupy im2col+cublas" in md and "TFLOP/s" in md and "| mobilenet.dw1024_7" in md
    readme = (tmp_path / "readme.md").read_text()
    for text in ("Fake H100", "FP32 ceiling", "Batch 2: geomean ours/ref", "bwd_weight vs cupy im2col+cublas",
                 "best per layer", "the classic alternative", "<details>", "| 5a.5x5_reduce"):
        assert text in readme, text
    lines = gpu_check_summary.bench_lines(str(tmp_path / "r.json"))
    text = "\n".join(lines)
    assert "CuPy im2col + cuBLAS reference: ok" in text
    assert "b2 bwd_weight vs cupy" in text and "b1 fwd        vs cudnn tf32" in text
    assert "cupy im2col+cublas time / cudnn time" in text and "pools bwd_input, batch 2" in text


@needs_cxx
@pytest.mark.skipif("cudasim" not in convkit.available_backends(), reason="needs convkit._cudasim")
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_run_on_the_emulated_cuda_kernels(monkeypatch, host_ref, dtype):
    """The GPU run's whole path with convkit's side on the CUDA kernels' own code (the
    emulator, convkit._cudasim): every algorithm and pass of a 1x1 and a depthwise layer, both
    references, float16 too (cuDNN's row only: the CuPy reference runs float32 and float64)."""
    if dtype not in _backend.dtypes("cudasim"):
        pytest.skip("this convkit._cudasim was built without half types (has_half false)")
    with convkit.use_backend("cudasim"):
        rep = _cuda_run_on_the_stand_in(monkeypatch, cupy=host_ref, dtype=dtype,
                                        layers="5a.5x5_reduce,mobilenet.dw1024_7", passes=L.GPU_PASSES)
    rows = rep["rows"]
    assert all(r["status"] == "ok" and r["ref_status"] == "ok" for r in rows), \
        [(r["layer"], r["pass"], r["algo"], r.get("error")) for r in rows if r["status"] != "ok"]
    per_case = 3 if dtype == "float32" else 1
    assert len(rows) == per_case * 3 * (3 + 2)     # passes x (1x1 layer's algos + depthwise's)
    assert {r["ref"] for r in rows} == ({"cudnn", "cupy-im2col-cublas"} if dtype == "float32" else {"cudnn"})


def test_cuda_run_stops_when_its_budget_is_spent(monkeypatch):
    rep = _cuda_run_on_the_stand_in(monkeypatch, layers="pool4,3a.pool,5b.3x3.relu", batches=(1, 2),
                                    budget_s=1e-6)
    assert "budget" in rep["interrupted"] and rep["rows"] == [] and rep["budget_s"] == 1e-6
    rep = _cuda_run_on_the_stand_in(monkeypatch, layers="pool4", budget_s=600, repeat=9)
    (row,) = rep["rows"]
    assert row["status"] == "ok" and row["samples"] == 9 and "interrupted" not in rep


def test_cuda_run_without_cupy_says_why(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_cupy(name, *a, **k):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError("No module named 'cupy'")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_cupy)
    rep = _cuda_run_on_the_stand_in(monkeypatch, layers="5a.5x5_reduce")
    cup = rep["references"]["cupy-im2col-cublas"]
    assert cup["status"] == "skipped" and "not importable" in cup["reason"]
    assert {r["ref"] for r in rep["rows"]} == {"cudnn"}
    rep["device"] = "cuda:0"
    assert "The CuPy im2col + cuBLAS reference was skipped: CuPy is not importable" in report.markdown_report(rep)


# ---- the CPU run: unchanged, and interruptible ---------------------------------------------------------
def test_cpu_run_stops_cleanly_on_interrupt(monkeypatch):
    real = cpu_run.run_case
    seen = []

    def run_case(case, *a, **k):
        if seen:
            raise KeyboardInterrupt
        seen.append(case)
        return real(case, *a, **k)
    monkeypatch.setattr(cpu_run, "run_case", run_case)
    monkeypatch.setattr(cpu_run, "measure_ceilings", lambda dtype, quick: dict(CEILINGS, matmul_n=1, copy_bytes=1))
    cfg = config.BenchConfig(layers="5b.3x3.relu,pool4", passes=("fwd",), batch=1, repeat=1,
                             warmup=0, progress=False, quick=True)
    rep = cli.run_bench(cfg, log=open(os.devnull, "w"))
    assert len(rep["rows"]) == 1 and "stopped after 1 rows" in rep["interrupted"]
    assert "call_overhead_us" in rep and "**Interrupted**" in report.markdown_report(rep)


def test_cpu_cli_writes_the_same_schema(tmp_path):
    out = tmp_path / "cpu.json"
    p = subprocess.run([sys.executable, "-m", "convkit", "bench", "--quick", "--layers", "3a.3x3.relu",
                        "--passes", "fwd", "--repeat", "1", "--warmup", "0", "--no-progress",
                        "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rep = json.loads(out.read_text())
    assert rep["device"] == "cpu" and {"cpu", "date", "commit", "torch", "ceilings"} <= set(rep)
    (row,) = rep["rows"]
    assert (row["op"], row["layer"], row["pass"], row["algo"], row["ref"]) == (
        "relu", "3a.3x3.relu", "fwd", "direct", "torch-cpu")
    assert "ref_tf32" not in row and row["bytes"] == 2 * 4 * 2 * 128 * 28 * 28


def test_cpu_cli_backward_passes_and_two_batches(tmp_path):
    out = tmp_path / "cpu.json"
    p = subprocess.run([sys.executable, "-m", "convkit", "bench", "--layers", "mobilenet.dw512_14,pool4",
                        "--passes", "bwd_input,bwd_weight", "--batch", "1,2", "--repeat", "1", "--threads", "1",
                        "--warmup", "0", "--no-progress", "--json", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rep = json.loads(out.read_text())
    assert rep["batches"] == [1, 2] and rep["passes"] == ["bwd_input", "bwd_weight"]
    got = sorted((r["layer"], r["pass"], r["batch"], r["algo"]) for r in rep["rows"])
    assert got == sorted([("mobilenet.dw512_14", p, b, a) for p in ("bwd_input", "bwd_weight")
                          for b in (1, 2) for a in ("direct", "im2col")]
                         + [("pool4", "bwd_input", b, "direct") for b in (1, 2)])
    assert all(r["status"] == "ok" and r["ref"] == "torch-cpu" for r in rep["rows"])
    assert "depthwise convs bwd_weight, batch 2, best algo per layer" in {s["group"] for s in rep["summary"]}
    assert "| batch" in p.stdout


# ---- the GPU check's summary ------------------------------------------------------------------------------
def test_slug():
    assert gpu_check_summary.slug("NVIDIA H100 80GB HBM3") == "h100"
    assert gpu_check_summary.slug("NVIDIA H200") == "h200"
    assert gpu_check_summary.slug("NVIDIA A100-SXM4-80GB") == "a100"
    assert gpu_check_summary.slug("Some Card") == "some-card"


SANITIZER_LOG = """\
========= COMPUTE-SANITIZER
gpu_sanitize: 130 cases on backend cuda (cuda), dtypes float32
========= Invalid __global__ read of size 16 bytes
=========     at void convkit::cuda::relu_fwd_kernel<float>(long, const float *, float *)+0x1a0 in relu.cu:41
=========     by thread (3,0,0) in block (0,0,0)
=========         Host Frame: [0x2f] in libcuda.so
========= Invalid __global__ write of size 4 bytes
=========     at 0x150 in /src/pool_max.cu:12:max_pool2d_fwd_kernel<float>(float const*)
gpu_sanitize: 130 cases: 128 ok, 0 skipped, 2 failed
========= ERROR SUMMARY: 2 errors
"""


def test_sanitizer_log_parsing(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text(SANITIZER_LOG)
    info = gpu_check_summary.parse_sanitizer(str(p))
    assert info["errors"] == 2 and info["script"] == "130 cases: 128 ok, 0 skipped, 2 failed"
    assert info["kernels"] == ["void convkit::cuda::relu_fwd_kernel<float>", "max_pool2d_fwd_kernel<float>"]
    assert info["first"].startswith("Invalid __global__ read")
    p.write_text("========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)\n")
    assert gpu_check_summary.parse_sanitizer(str(p))["errors"] == 0
    p.write_text("Traceback...\n")
    assert gpu_check_summary.parse_sanitizer(str(p))["errors"] is None


def test_summary_of_an_output_folder(tmp_path):
    (tmp_path / "steps.tsv").write_text("build\tok\t0\t95\tconvkit._cuda for sm_90\ntests\tFAILED\t1\t60\t\n"
                                        "sanitizer-memcheck\tok\t0\t40\t\nsanitizer-racecheck\tskipped\t\t0\tno time left\n")
    (tmp_path / "meta.txt").write_text("gpu=NVIDIA H100 80GB HBM3\ndate=2026-11-25\ncommit=abc\nbudget=540\n")
    (tmp_path / "pytest-cuda.xml").write_text(
        '<testsuites><testsuite tests="10" failures="1" errors="0" skipped="2">'
        '<testcase classname="tests.test_pool" name="test_a"><failure/></testcase></testsuite></testsuites>')
    (tmp_path / "sanitizer-memcheck.txt").write_text("========= ERROR SUMMARY: 0 errors\n")
    text = gpu_check_summary.summarize_dir(str(tmp_path))
    assert "FAIL: 7 passed, 1 failed, 0 errors, 2 skipped" in text
    assert "tests.test_pool::test_a" in text and "memcheck: 0 errors" in text
    assert "racecheck: skipped — no time left" in text and "budget 540 s" in text


# ---- the GPU check script ------------------------------------------------------------------------------------
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.sh")
needs_bash = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils timeout")


def _dry_run(*args):
    env = dict(os.environ, PYTHON=sys.executable)
    p = subprocess.run(["bash", SCRIPT, "--dry-run", *args], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


@needs_bash
def test_gpu_check_script_syntax_and_dry_run():
    """--dry-run prints both calls, each step with its estimate and cap, each call's estimate
    within its budget, the budgets within 5 + 4 minutes, and at most 8 files a call leaves."""
    assert subprocess.run(["bash", "-n", SCRIPT]).returncode == 0
    out = _dry_run()
    lines = out.splitlines()
    steps = [re.match(r"  \+ \[([\w-]+): ~(\d+)s, at most (\d+)s\] (.*)", line) for line in lines]
    steps = [m for m in steps if m]
    names = [m.group(1) for m in steps]
    assert names == ["build", "sanitizer-probe", "smoke", "sanitizer-racecheck", "sanitizer-memcheck", "tests",
                     "bench-b32", "bench-b1", "bench-float16"]
    cmd = {m.group(1): m.group(4) for m in steps}
    assert "--target _cuda" in cmd["build"] and "CONVKIT_CUDA_ARCHS=90" in cmd["build"] and "pip" not in cmd["build"]
    assert "CONVKIT_SIM=OFF" in cmd["build"]
    assert cmd["smoke"].startswith("env CONVKIT_CUDA_SYNC=1 ") and "--cases smoke" in cmd["smoke"]
    assert "--tool racecheck" in cmd["sanitizer-racecheck"]
    assert "--cases variants --dtypes float32,float16" in cmd["sanitizer-racecheck"]
    assert "--tool memcheck" in cmd["sanitizer-memcheck"] and "--cases all" in cmd["sanitizer-memcheck"]
    assert "CONVKIT_TEST_BACKENDS=cuda" in cmd["tests"]
    tests = re.findall(r"tests/\w+/(test_\w+)\.py", cmd["tests"])
    assert tests[0] == "test_cuda_conv" and "test_cuda_graphs" in tests
    assert not {"test_blocked", "test_winograd", "test_cpu_peak", "test_train", "test_models"} & set(tests)
    assert "--batch 32 --budget" in cmd["bench-b32"] and "--readme" in cmd["bench-b32"]
    assert "--dtype float32 --batch 1 " in cmd["bench-b1"] and "--dtype float16 --batch 32 " in cmd["bench-float16"]
    calls = re.findall(r"call (\d) \((\w+)\), budget (\d+)s.*?: (bash benchmarks/gpu_check.sh [^\n]*)", out)
    assert [(c[0], c[1]) for c in calls] == [("1", "check"), ("2", "bench")]
    assert "--call check" in calls[0][3] and "--call bench --skip-build" in calls[1][3]
    budgets = [int(c[2]) for c in calls]
    assert budgets[0] <= 300 and budgets[1] <= 240
    ests = [(int(a), int(b)) for a, b in re.findall(r"estimated ~(\d+)s of this call's (\d+)s budget", out)]
    assert len(ests) == 2 and all(e <= b for e, b in ests) and [b for _, b in ests] == budgets
    per_call = [sum(int(m.group(2)) for m in steps[:6]), sum(int(m.group(2)) for m in steps[6:])]
    assert [e for e, _ in ests] == per_call
    files = re.findall(r"leaves in --out \(at most 8 files\): (.*)", out)
    assert len(files) == 2 and all(len(f.split()) <= 8 for f in files)
    assert "summary.txt" in files[0] and "-b32.json" in files[1] and "-b1.json" in files[1]
    assert re.search(r"budgets together: (\d+)s", out) and int(re.search(r"budgets together: (\d+)s", out).group(1)) <= 540
    assert "plan float32 batch 32: " in out and "estimate" in out
    # one call alone
    only = _dry_run("--call", "bench")
    assert "call 1 (check)" not in only and "call 2 (bench)" in only


@needs_bash
def test_gpu_check_script_says_no_gpu(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    p = subprocess.run(["bash", SCRIPT, "--out", str(tmp_path)], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 2 and "--call check or --call bench" in p.stderr
    p = subprocess.run(["bash", SCRIPT, "--call", "check", "--out", str(tmp_path)], capture_output=True, text=True,
                       timeout=120, env=env)
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert p.returncode == 2 and "no GPU visible" in p.stderr


def _fake_python(tmp_path, import_ok):
    """A python that claims a GPU (and, with import_ok, a working convkit._cuda)."""
    fake = tmp_path / "python"
    extra = '  *available_backends*) echo "backends: [cuda] (faked)"; exit 0 ;;\n' if import_ok else ""
    fake.write_text(f"""#!/usr/bin/env bash
case "$*" in
  *cuda.is_available*) exit 0 ;;
  *get_device_name*) echo "NVIDIA H100 80GB HBM3"; exit 0 ;;
{extra}esac
exec {sys.executable} "$@"
""")
    fake.chmod(0o755)
    return str(fake)


@needs_bash
def test_gpu_check_call_check_with_a_faked_gpu(tmp_path):
    """Call 1 with a python that claims a GPU: no compute-sanitizer (the probe says so and both
    sanitizer steps are skipped for it), the smoke run fails (no cuda backend) and is recorded,
    the tests run, the logs are bundled and the summary is printed last."""
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the check would really run: gpu_check.sh itself is the test there")
    out = tmp_path / "out"
    env = dict(os.environ, PATH="/usr/bin:/bin")   # no compute-sanitizer, no nvcc on PATH
    p = subprocess.run(["bash", SCRIPT, "--call", "check", "--out", str(out), "--python", _fake_python(tmp_path, False),
                        "--skip-build", "--pytest-args", "-k test_poison_is_on", "--commit", "abc123"],
                       capture_output=True, text=True, timeout=280, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    tail = p.stdout[p.stdout.rindex("== convkit GPU check"):]
    assert "(call check)" in tail and "NVIDIA H100 80GB HBM3" in tail and "commit abc123" in tail
    assert "racecheck: skipped — compute-sanitizer not found" in tail
    assert "memcheck: skipped — compute-sanitizer not found" in tail
    assert "smoke" in tail and "FAILED" in tail.split("smoke", 1)[1].splitlines()[0]
    assert "tests      " in tail
    assert sorted(os.listdir(out)) == ["logs.tar.gz", "summary.txt"]
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"steps.tsv", "smoke.txt", "meta.txt", "env.txt", "pytest-cuda.log"} <= names


@needs_bash
def test_gpu_check_call_bench_reads_the_commit_file(tmp_path):
    """Call 2 in a copy of the tree without .git: the commit comes from .convkit-commit; the
    float32 batch-32 run goes first; failed runs are recorded; at most 8 files are left."""
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the bench would really run")
    root = tmp_path / "tree"
    (root / "benchmarks").mkdir(parents=True)
    for f in ("gpu_check.sh", "gpu_check_summary.py", "gpu_sanitize.py"):
        shutil.copy(os.path.join(ROOT, "benchmarks", f), root / "benchmarks" / f)
    (root / ".convkit-commit").write_text("0123456789abcdef0123456789abcdef01234567-dirty\n")
    out = tmp_path / "out"
    env = dict(os.environ, PATH="/usr/bin:/bin")
    env.pop("CONVKIT_COMMIT", None)
    p = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh"), "--call", "bench", "--skip-build",
                        "--out", str(out), "--python", _fake_python(tmp_path, True)],
                       capture_output=True, text=True, timeout=280, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    tail = p.stdout[p.stdout.rindex("== convkit GPU check"):]
    assert "(call bench)" in tail and "commit 0123456789abcdef0123456789abcdef01234567-dirty" in tail
    assert tail.index("bench-b32") < tail.index("bench-b1") < tail.index("bench-float16")
    assert "bench-b32: FAILED" in tail
    assert len(os.listdir(out)) <= 8 and "summary.txt" in os.listdir(out)
    with tarfile.open(out / "logs.tar.gz") as tar:
        meta = tar.extractfile("meta.txt").read().decode()
    assert "commit=0123456789abcdef0123456789abcdef01234567-dirty" in meta and "call=bench" in meta


# ---- the ptxas report ----------------------------------------------------------------------------------------
PTXAS = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_ZN7convkit4cuda15relu_fwd_kernelIfEEvlPKT_PS2_' for 'sm_90'
ptxas info    : Function properties for _ZN7convkit4cuda15relu_fwd_kernelIfEEvlPKT_PS2_
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 2048 bytes smem, 380 bytes cmem[0]
ptxas info    : Compiling entry function 'heavy' for 'sm_90'
ptxas info    : Function properties for heavy
    6152 bytes stack frame, 7148 bytes spill stores, 11864 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers, 6152 bytes cumulative stack size
ptxas info    : Function properties for _Z6helperf
    8 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
"""


def test_ptxas_parsing_and_names():
    ks = ptxas_report.parse_ptxas(PTXAS, "relu.cu")
    assert [k["mangled"] for k in ks] == ["_ZN7convkit4cuda15relu_fwd_kernelIfEEvlPKT_PS2_", "heavy"]
    assert (ks[0]["regs"], ks[0]["smem"], ks[0]["barriers"], ks[0]["cmem0"], ks[0]["stack"]) == (40, 2048, 1, 380, 0)
    assert (ks[1]["spill_stores"], ks[1]["spill_loads"], ks[1]["stack"]) == (7148, 11864, 6152)
    assert ptxas_report.flags(ks[1]) == "SPILLS,stack" and ptxas_report.flags(ks[0]) == ""
    assert ptxas_report.short_name(
        "void convkit::cuda::(anonymous namespace)::max_pool2d_fwd_kernel<float, 3>(float const*, long)") \
        == "max_pool2d_fwd_kernel<float, 3>"
    assert ptxas_report.short_name("plain") == "plain"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_ptxas_report_compiles_a_kernel(tmp_path, capsys):
    cu = tmp_path / "k.cu"
    cu.write_text("namespace convkit { template <typename T> __global__ void scale_kernel(T* y, int n) {"
                  " __shared__ T t[64]; t[threadIdx.x] = y[threadIdx.x]; __syncthreads();"
                  " if (threadIdx.x < n) y[threadIdx.x] = 2 * t[63 - threadIdx.x]; }\n"
                  "template __global__ void scale_kernel<float>(float*, int); }\n")
    assert ptxas_report.main([str(cu), "--json"]) == 0
    (k,) = json.loads(capsys.readouterr().out)["kernels"]
    assert k["name"] == "scale_kernel<float>" and k["smem"] == 256 and k["regs"] > 0


# ---- the sanitizer script's cases ---------------------------------------------------------------------------
import gpu_sanitize  # noqa: E402


def test_sanitizer_covers_every_conv_path():
    dtypes = ["float32", "float64", "float16", "bfloat16"]
    cases = gpu_sanitize.build_cases(dtypes)
    conv = [(name, args) for name, fn, args in cases if fn is gpu_sanitize.case_conv]
    seen = {(a[0], a[7]) for _, a in conv}
    assert seen == {(dt, algo) for dt in dtypes for algo in ("direct", "im2col", "implicit_gemm", "auto", "1x1")}
    specs = gpu_sanitize.CONVS
    assert any(ws[1] == 1 and g == xs[1] > 1 and st == 2 for xs, ws, st, p, d, g in specs)   # depthwise /2
    assert any(d == 2 for *_, d, g in specs) and any(1 < g < ws[0] for xs, ws, st, p, d, g in specs)
    assert any(p == "same" and ws[2] % 2 == 0 for xs, ws, st, p, d, g in specs)
    assert any(xs[1] % 4 and ws[0] % 4 for xs, ws, *_ in specs)
    chunked = [a for _, a in conv if len(a) > 8 and a[8]]
    assert {a[0] for a in chunked} == set(dtypes) and {a[7] for a in chunked} == {"im2col"}
    # 1x1 only where it applies
    assert all(a[7] != "1x1" or (tuple(a[2][2:]) == (1, 1) and a[4] == 0) for _, a in conv)


def test_sanitizer_script_runs_on_the_cpu_kernels(capsys):
    assert gpu_sanitize.main(["--backend", "cpu", "--dtypes", "float32"]) == 0
    out = capsys.readouterr().out
    assert "ok   conv2d[0] direct float32" in out and " 0 failed" in out


def test_ptxas_report_finds_tensor_core_instructions_per_kernel():
    ptx = (".visible .entry _Z3tcv(\n)\n{\n\twmma.mma.sync.aligned.row.col.m16n16k16.f32.f16 {%f1}, {%r1}, {%r2}, {%f2};\n}\n"
           ".visible .entry _Z4simtv(\n)\n{\n\tfma.rn.f32 %f1, %f2, %f3, %f4;\n}\n"
           ".entry _Z3hopv(\n)\n{\n\t@%p1 mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%f1}, {%r1}, {%r2}, {%f2};\n}\n")
    assert ptxas_report.tensor_core_entries(ptx) == {"_Z3tcv": True, "_Z4simtv": False, "_Z3hopv": True}
