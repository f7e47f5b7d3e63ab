"""The benchmark's CPU-testable logic: the layer table's ReLU layers, the GPU code paths driven
by a stand-in for torch.cuda on CPU tensors (the CUDA-event timer, row building, reference-only
rows, summary, Markdown, strict JSON), the TF32 switch's choice of API, the GPU check's summary
and shell script (dry run, no-GPU exit, a flow with a faked GPU), and the ptxas report parser.
What only a GPU can tell (real event times, cuDNN, compute-sanitizer) runs in
benchmarks/gpu_check.sh."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import types

import pytest
import torch

from convkit.bench import gpu, layers as L, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def fake_timer(**kw):
    return gpu.CudaTimer("cpu", flush_bytes=1 << 16, cuda=FakeCuda(**kw))


CEILINGS = {"copy_gbps": 20.0, "matmul_gflops": 100.0, "matmul_tf32_gflops": 400.0}


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
    # new layers after the old ones: the old layers keep their seeds (LAYERS.index)
    kinds = [lay.is_relu for lay in L.LAYERS]
    assert kinds == sorted(kinds)
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
    check = runner.check_layer(lay, inputs, "fwd+bwd", "direct", "float32")
    assert check["ok"], check


# ---- configuration ---------------------------------------------------------------------------------
def _args(*argv):
    import argparse
    p = argparse.ArgumentParser()
    runner.add_bench_arguments(p)
    return p.parse_args(list(argv))


def test_cuda_defaults_and_dtype_rules():
    cfg = runner.config_from_args(_args("--device", "cuda"))
    assert (cfg.batch, cfg.repeat, cfg.warmup) == (32, 25, 3)
    cfg = runner.config_from_args(_args("--device", "cuda:1", "--quick", "--dtype", "float16"))
    assert (cfg.batch, cfg.repeat, cfg.warmup, cfg.dtype) == (32, 10, 2, "float16")
    cfg = runner.config_from_args(_args())
    assert (cfg.batch, cfg.repeat, cfg.warmup) == (8, 7, 2)
    with pytest.raises(SystemExit, match="cuda only"):
        runner.config_from_args(_args("--dtype", "bfloat16"))
    with pytest.raises(SystemExit, match="cuda"):
        runner.config_from_args(_args("--device", "gpu"))


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
    new = gpu.torch_version(version) >= (2, 9)
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
    if gpu.torch_version(version) >= (2, 9):
        assert gpu.tf32_api(fake) == "fp32_precision"
        with gpu.tf32(False, "conv", fake):
            assert conv.fp32_precision == "ieee"
            with gpu.tf32(True, "conv", fake):
                assert conv.fp32_precision == "tf32"
            assert conv.fp32_precision == "ieee"
        assert conv.fp32_precision == "none"
        with gpu.tf32(True, "matmul", fake):
            assert matmul.fp32_precision == "tf32"
        assert matmul.fp32_precision == "none"
    else:
        assert gpu.tf32_api(fake) == "allow_tf32"
        with gpu.tf32(False, "conv", fake):
            assert cudnn.allow_tf32 is False
        assert cudnn.allow_tf32 is True
        with gpu.tf32(True, "matmul", fake):
            assert matmul.allow_tf32 is True
        assert matmul.allow_tf32 is False
    with gpu.tf32(None, "conv", fake):   # None: nothing touched
        pass
    with pytest.raises(ValueError):
        with gpu.tf32(True, "rnn", fake):
            pass


def test_tf32_switch_on_this_torch():
    before = torch.backends.cudnn.conv.fp32_precision
    with gpu.tf32(False, "conv"):
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
    timer = gpu.CudaTimer("cpu", flush_bytes=1 << 16, cuda=FakeCuda())
    timer.flush()
    assert timer.flush_bytes == 1 << 16
    assert float(timer._flush_sink) == pytest.approx(float(timer._flush_buf.sum()))


def test_ceilings_on_the_stand_in():
    c = gpu.measure_ceilings_cuda(fake_timer(), "float32", quick=True, copy_mib=1, mm_n=32)
    for key in ("copy_gbps", "copy_gbps_median", "matmul_gflops", "matmul_tf32_gflops",
                "matmul_fp16_gflops", "matmul_bf16_gflops"):
        assert c[key] > 0, key
    assert c["copy_bytes"] == 2 << 20 and c["matmul_dtype"] == "float32"


def test_call_overhead_on_the_cpu():
    o = gpu.call_overhead("cpu", calls=5, reps=2)
    assert set(o["relu"]) == {"convkit", "torch"} and o["max_pool2d"]["torch"] > 0


# ---- rows --------------------------------------------------------------------------------------------
def _rows(name, pass_, algos, has_conv=True, batch=1):
    lay = L.layers_by_name()[name]
    inputs = lay.make_inputs(batch, torch.float32, seed=L.LAYERS.index(lay),
                             requires_grad=(pass_ != "fwd"))
    return gpu.run_layer_pass(lay, pass_, algos, inputs, "float32", batch, fake_timer(), CEILINGS,
                              warmup=1, repeat=3, has_conv=has_conv)


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


def test_conv_rows_without_convkit_convolutions_are_reference_only():
    rows = _rows("5a.5x5_reduce", "fwd", ["direct", "1x1"], has_conv=False)
    assert [(r["algo"], r["ref_tf32"], r["status"]) for r in rows] == [
        ("none", False, "ref-only"), ("none", True, "ref-only")]
    assert all(r["ours_ms"] is None and r["ratio"] is None and r["ref_ms"] > 0 for r in rows)
    assert "no conv2d_fwd" in rows[0]["note"]


def test_not_implemented_makes_reference_only_rows(monkeypatch):
    real = L.Layer.results

    def results(self, inputs, pass_, impl="torch", algo=None):
        if impl == "convkit":
            raise NotImplementedError("conv2d on cuda: next issue")
        return real(self, inputs, pass_, impl, algo)
    monkeypatch.setattr(L.Layer, "results", results)
    rows = _rows("5a.5x5_reduce", "fwd", ["direct", "1x1"])
    assert [(r["algo"], r["status"]) for r in rows] == [("none", "ref-only")] * 2
    assert "next issue" in rows[0]["note"]


def test_pool_and_relu_rows():
    for name in ("pool4", "5b.3x3.relu"):
        (row,) = _rows(name, "fwd", ["direct"], has_conv=False)
        assert row["status"] == "ok" and row["ref_tf32"] is None and row["ref"] == "torch-cuda"
        assert row["pct_of_ceiling"] == pytest.approx(100 * row["gbps"] / CEILINGS["copy_gbps"])


def _gpu_report():
    rows = (_rows("5a.5x5_reduce", "fwd", ["direct", "1x1"]) + _rows("5a.3x3", "fwd", ["direct"], has_conv=False)
            + _rows("pool4", "fwd", ["direct"]) + _rows("5b.3x3.relu", "fwd", ["direct"])
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
    rep["summary"] = runner.summarize(rows, gpu=True)
    rep["totals"] = runner.totals(rows)
    rep["ref_totals"] = gpu.ref_totals(rows)
    return rep


def test_gpu_summary_markdown_and_strict_json(tmp_path):
    rep = _gpu_report()
    groups = {s["group"]: s for s in rep["summary"]}
    assert "conv fwd, algo=direct vs cudnn fp32" in groups and "conv fwd, algo=1x1 vs cudnn tf32" in groups
    assert groups["cudnn conv fwd (no convkit kernel)"]["geomean_ratio"] is None
    assert groups["cudnn conv fwd tf32 (no convkit kernel)"]["ref_pct_of_ceiling"] > 0
    assert groups["pools fwd"]["n"] == 2 and groups["relu fwd"]["n"] == 1   # the failed avgpool left out
    assert groups["pools fwd"]["ours_pct_of_ceiling"] > 0
    (tot,) = rep["totals"]
    assert tot["layers"] == 2 and tot["skipped_layers"] == ["5a.3x3", "avgpool"]   # 5a.5x5_reduce, pool4
    assert {(t["ref_tf32"], t["layers"]) for t in rep["ref_totals"]} == {(False, 4), (True, 4)}
    md = runner.markdown_report(rep)
    for text in ("cudnn tf32", "torch-cuda", "Fake H100", "(no convkit kernel)", "relu convkit 9.0 µs",
                 "**FAIL**", "1 case(s) failed", "cudnn fp32"):
        assert text in md, text
    path = tmp_path / "r.json"
    rep["rows"][0]["max_rel_err"] = float("inf")
    runner.write_outputs(rep, str(path), str(tmp_path / "r.md"))
    back = json.loads(path.read_text())
    assert back["rows"][0]["max_rel_err"] is None and back["rows"][4]["ours_ms"] is None
    text = gpu_check_summary.bench_lines(str(path))
    assert any("copy 20 GB/s" in t for t in text) and any("FAILED avgpool" in t for t in text)


def _cuda_run_on_the_stand_in(monkeypatch, **cfg_kw):
    """run_bench_cuda's orchestration on CPU tensors: torch.cuda replaced where it is touched."""
    monkeypatch.setattr(gpu, "_normalize_device", lambda device: "cpu")
    monkeypatch.setattr(gpu, "_check_convkit_cuda", lambda: None)
    monkeypatch.setattr(gpu, "gpu_info", lambda device, cuda=None: {"gpu": "Fake H100", "cuda": "13.0",
                                                                     "cudnn": 91000, "sm_count": 132})
    monkeypatch.setattr(gpu, "convkit_cuda_has_conv", lambda: False)
    timer = fake_timer()
    monkeypatch.setattr(gpu, "CudaTimer", lambda device: timer)
    real_ceilings = gpu.measure_ceilings_cuda
    monkeypatch.setattr(gpu, "measure_ceilings_cuda",
                        lambda timer, dtype, quick: real_ceilings(timer, dtype, quick, copy_mib=1, mm_n=32))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    real_overhead = gpu.call_overhead
    monkeypatch.setattr(gpu, "call_overhead", lambda device, calls: real_overhead(device, calls=3, reps=1))
    cfg = runner.BenchConfig(device="cuda", batch=1, repeat=2, warmup=1, progress=False,
                             passes=("fwd",), **cfg_kw)
    return runner.run_bench(cfg, log=open(os.devnull, "w"))


def test_cuda_run_orchestration_on_the_stand_in(monkeypatch, tmp_path):
    rep = _cuda_run_on_the_stand_in(monkeypatch, layers="5a.5x5_reduce,pool4,5b.3x3.relu")
    assert (rep["device"], rep["gpu"], rep["cudnn"], rep["convkit_cuda_conv"]) == ("cpu", "Fake H100", 91000, False)
    assert rep["timing"]["method"] == "cuda-events" and rep["timing"]["samples"] == 2
    assert {"copy_gbps", "matmul_gflops", "matmul_tf32_gflops"} <= set(rep["ceilings"])
    got = [(r["layer"], r["algo"], r["ref_tf32"], r["status"]) for r in rep["rows"]]
    assert got == [("pool4", "direct", None, "ok"), ("5a.5x5_reduce", "none", False, "ref-only"),
                   ("5a.5x5_reduce", "none", True, "ref-only"), ("5b.3x3.relu", "direct", None, "ok")]
    assert torch.backends.cudnn.benchmark is False   # restored
    rep["device"] = "cuda:0"   # what _normalize_device gives on a GPU; the tensors here are on the CPU
    md = runner.write_outputs(rep, str(tmp_path / "r.json"), None)
    assert "cudnn tf32" in md and json.loads((tmp_path / "r.json").read_text())["rows"][1]["ours_ms"] is None


def test_cuda_run_in_half_skips_convolutions(monkeypatch):
    rep = _cuda_run_on_the_stand_in(monkeypatch, layers="5a.5x5_reduce,pool4", dtype="float16")
    assert rep["skipped_layers"]["layers"] == ["5a.5x5_reduce"]
    (row,) = rep["rows"]
    # the CPU kernels take no float16: an ERROR row, the reference still timed
    assert row["layer"] == "pool4" and row["status"] == "ERROR" and "float16" in row["error"]
    assert row["ref_ms"] > 0 and row["bytes"] == L.layers_by_name()["pool4"].bytes(1, "fwd", 2)


# ---- the CPU run: unchanged, and interruptible ---------------------------------------------------------
def test_cpu_run_stops_cleanly_on_interrupt(monkeypatch):
    real = runner.run_case
    seen = []

    def run_case(case, *a, **k):
        if seen:
            raise KeyboardInterrupt
        seen.append(case)
        return real(case, *a, **k)
    monkeypatch.setattr(runner, "run_case", run_case)
    monkeypatch.setattr(runner, "measure_ceilings", lambda dtype, quick: dict(CEILINGS, matmul_n=1, copy_bytes=1))
    cfg = runner.BenchConfig(layers="5b.3x3.relu,pool4", passes=("fwd",), batch=1, repeat=1,
                             warmup=0, progress=False, quick=True)
    rep = runner.run_bench(cfg, log=open(os.devnull, "w"))
    assert len(rep["rows"]) == 1 and "stopped after 1 rows" in rep["interrupted"]
    assert "call_overhead_us" in rep and "**Interrupted**" in runner.markdown_report(rep)


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


@needs_bash
def test_gpu_check_script_syntax_and_dry_run(tmp_path):
    assert subprocess.run(["bash", "-n", SCRIPT]).returncode == 0
    p = subprocess.run(["bash", SCRIPT, "--out", str(tmp_path), "--dry-run"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    for step in ("build", "tests", "sanitizer-memcheck", "sanitizer-racecheck", "bench,",
                 "bench-float16", "sanitizer-initcheck", "sanitizer-synccheck"):
        assert f"[{step}" in p.stdout, step
    assert "CONVKIT_TEST_BACKENDS=cuda" in p.stdout and "--device cuda" in p.stdout


@needs_bash
def test_gpu_check_script_says_no_gpu(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    p = subprocess.run(["bash", SCRIPT, "--out", str(tmp_path)], capture_output=True, text=True,
                       timeout=120, env=env)
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert p.returncode == 2 and "no GPU visible" in p.stderr


@needs_bash
def test_gpu_check_flow_with_a_faked_gpu(tmp_path):
    """A python that claims a GPU: the steps run, the bench fails (torch has no CUDA here) and
    is recorded, the check goes on, bundles its logs and prints the summary last."""
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the bench would really run: gpu_check.sh itself is the test there")
    fake = tmp_path / "python"
    fake.write_text(f"""#!/usr/bin/env bash
case "$*" in
  *cuda.is_available*) exit 0 ;;
  *get_device_name*) echo "NVIDIA H100 80GB HBM3"; exit 0 ;;
esac
exec {sys.executable} "$@"
""")
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = dict(os.environ, PATH="/usr/bin:/bin")   # no compute-sanitizer, no nvcc on PATH
    p = subprocess.run(["bash", SCRIPT, "--out", str(out), "--python", str(fake), "--skip-build",
                        "--skip-tests", "--sanitizer-tools", "memcheck", "--no-fp16", "--budget", "300",
                        "--commit", "abc123"], capture_output=True, text=True, timeout=280, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    tail = p.stdout[p.stdout.rindex("== convkit GPU check"):]
    assert "NVIDIA H100 80GB HBM3" in tail and "commit abc123" in tail
    assert "memcheck: skipped — compute-sanitizer not found" in tail
    assert "bench: FAILED" in tail
    assert sorted(os.listdir(out)) == ["logs.tar.gz", "summary.txt"]
    with tarfile.open(out / "logs.tar.gz") as tar:
        names = tar.getnames()
    assert {"steps.tsv", "bench.log", "meta.txt", "env.txt"} <= set(names)


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
