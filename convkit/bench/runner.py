"""`convkit bench`: time convkit's kernels against torch on GoogLeNet's layers, in one run.

For each (layer, pass, algo): check convkit's result once against torch in float64, then time
convkit and torch.nn.functional on the same inputs, interleaved (ours, ref, ours, ref, ...),
median of --repeat samples after --warmup, both at the same thread count. The hardware
ceilings (matrix-product rate of a large torch.mm, copy bandwidth) are measured in the same
run. Rows follow DESIGN.md "Benchmark rows".

This file runs the CPU benchmark and holds what both devices share (configuration, the plan
and its estimate, summary, tables, the README's short form, command line); --device cuda runs
through convkit/bench/gpu.py (CUDA events, cold L2, cuDNN with TF32 off and on, CuPy's im2col +
cuBLAS from convkit/bench/cupy_ref.py, batches 1 and 32, passes fwd / bwd_input / bwd_weight).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from convkit.bench.layers import (ALL_PASSES, CONV_BENCH_ALGOS, CPU_ONLY_ALGOS, GPU_PASSES, LAYERS, PASSES,
                                  QUICK_LAYERS, QUICK_LAYERS_CUDA, Layer, LayerInputs,
                                  select_layers)

__all__ = ["BenchConfig", "run_bench", "time_interleaved", "check_layer", "measure_ceilings",
           "measure_gemm_ceiling", "markdown_report", "readme_report", "summarize", "totals",
           "add_bench_arguments", "bench_main", "device_kind", "write_outputs", "plan_run",
           "config_batches"]

# A layer's result passes when its error relative to the largest reference magnitude is within
# this, or within 10x torch's own error in the same dtype (both against a float64 reference).
TOLERANCE = {"float32": 1e-4, "float64": 1e-10, "float16": 2e-3, "bfloat16": 1.6e-2}
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
HALF_DTYPES = ("float16", "bfloat16")
# Defaults by device: (batches, quick batches, repeat, quick repeat, warmup, quick warmup,
# passes). A CPU sample loops the op for >= 2 ms; a GPU sample is one call between CUDA events.
# GPU: about 2,500 timed callables (70 convolutions x 3 passes x 2 batches x ~2.6 algorithms and
# 3 references, plus the pools and ReLUs) at 2 + 15 samples of ~0.6 ms overhead plus the kernels:
# `convkit bench --device cuda --plan` prints the count and an estimate; --budget caps it.
DEFAULTS = {"cpu": ((8,), (2,), 7, 3, 2, 1, PASSES),
            "cuda": ((1, 32), (32,), 15, 7, 2, 1, GPU_PASSES)}
# Each timing sample runs the op enough times to last at least this long (short pools).
MIN_SAMPLE_S = 0.002
MAX_INNER = 200


@dataclass
class BenchConfig:
    device: str = "cpu"
    batch: int = 8
    batches: Optional[Sequence[int]] = None   # several batch sizes; None: (batch,)
    layers: Optional[str] = None        # comma-separated globs/substrings; None: all
    algos: Sequence[str] = CONV_BENCH_ALGOS
    passes: Sequence[str] = PASSES
    dtype: str = "float32"
    warmup: int = 2
    repeat: int = 7
    threads: Optional[int] = None       # None: torch's current count
    seed: int = 0
    progress: bool = True
    quick: bool = False
    budget_s: Optional[float] = None    # wall seconds the run may take (GPU: samples shrink to fit)


def config_batches(cfg: BenchConfig) -> List[int]:
    """The batch sizes a run covers, in order."""
    return list(cfg.batches) if cfg.batches else [cfg.batch]


# ---- environment --------------------------------------------------------------------------
def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> Tuple[Optional[str], Optional[bool]]:
    """(HEAD's sha, whether the tree has uncommitted changes) of the checkout convkit runs from;
    outside git (a copy of the tree on a GPU machine), CONVKIT_COMMIT's value and None, or
    (None, None)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    fallback = (os.environ.get("CONVKIT_COMMIT") or None, None)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        if sha.returncode != 0:
            return fallback
        st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                            capture_output=True, text=True, timeout=10)
        return sha.stdout.strip(), bool(st.stdout.strip()) if st.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return fallback


def set_threads(n: int) -> int:
    """Give torch and convkit the same thread count; returns it."""
    import torch
    import convkit
    torch.set_num_threads(n)
    convkit.set_num_threads(n)
    got = (torch.get_num_threads(), convkit.get_num_threads())
    if got != (n, n):
        raise RuntimeError(f"asked both torch and convkit for {n} threads, got {got}")
    return n


# ---- timing -------------------------------------------------------------------------------
def _sample(fn: Callable[[], object], inner: int) -> float:
    """Seconds per call of fn, over `inner` back-to-back calls (CPU: calls return when done)."""
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def time_interleaved(fns: Sequence[Callable[[], object]], warmup: int = 2, repeat: int = 7,
                     min_sample_s: float = MIN_SAMPLE_S) -> List[List[float]]:
    """Time several callables interleaved (a, b, a, b, ...) so drifts in clock speed or machine
    load hit them alike. Warm-up calls also size each callable's inner loop so that one sample
    lasts at least min_sample_s. Returns each callable's per-call seconds, `repeat` samples."""
    inner = [1] * len(fns)
    for _ in range(max(1, warmup)):
        for i, fn in enumerate(fns):
            t = _sample(fn, inner[i])
            inner[i] = max(1, min(MAX_INNER, math.ceil(min_sample_s / max(t, 1e-9))))
    samples: List[List[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            samples[i].append(_sample(fn, inner[i]))
    return samples


def measure_ceilings(dtype: str = "float32", quick: bool = False) -> Dict[str, float]:
    """The machine's ceilings at the current thread count: the matrix-product rate of a large
    torch.mm (GFLOP/s, 2*n^3 flops) and copy bandwidth (GB/s, bytes read + bytes written, of a
    tensor far larger than the caches)."""
    import torch
    dt = getattr(torch, dtype)
    n = 2048
    a = torch.randn(n, n, dtype=dt)
    b = torch.randn(n, n, dtype=dt)
    c = torch.empty(n, n, dtype=dt)
    # A ceiling is what the machine can do: the best sample, not the median.
    mm_s = min(time_interleaved([lambda: torch.mm(a, b, out=c)], 1, 3 if quick else 5)[0])
    numel = 32 * 2 ** 20
    src = torch.ones(numel, dtype=dt)
    dst = torch.empty_like(src)
    cp_s = min(time_interleaved([lambda: dst.copy_(src)], 1, 5 if quick else 9)[0])
    moved = 2 * numel * src.element_size()
    out = {"matmul_gflops": 2 * n ** 3 / mm_s / 1e9, "matmul_n": n,
           "copy_gbps": moved / cp_s / 1e9, "copy_bytes": moved}
    out.update(measure_gemm_ceiling(quick=quick))
    return out


# convkit's own GEMM against the core's FMA peak: a large square product and an im2col-shaped
# one (GoogLeNet 2.3x3: M = 192 filters, N = 56 * 56 pixels, K = 64 * 3 * 3), (M, N, K).
GEMM_SHAPES = {"square": (2048, 2048, 2048), "conv": (192, 3136, 576)}
# The figures measure_gemm_ceiling adds to the ceilings and run_bench copies to the report's top.
GEMM_KEYS = ("fma_peak_gflops", "fma_peak_gflops_per_core", "gemm_gflops", "gemm_pct_of_peak",
             "gemm_conv_gflops", "gemm_conv_pct_of_peak")


def measure_gemm_ceiling(dtype: str = "float32", quick: bool = False,
                         shapes: Optional[Dict[str, Tuple[int, int, int]]] = None) -> Dict[str, object]:
    """The vector unit's FMA peak at the current thread count (convkit._cpu.fma_peak_gflops:
    independent FMA chains in registers, best ~2 ms round per thread, summed), and convkit's
    GEMM (convkit._cpu.gemm, float32 row-major C = A x B) on GEMM_SHAPES: GFLOP/s (2*M*N*K
    flops, best sample like the other ceilings, median beside it) and the percentage of that
    peak. {} when the CPU module is not built, {"gemm_error": ...} when it predates these."""
    from convkit import _backend
    try:
        _cpu = _backend.module("cpu")   # honours CONVKIT_CPU_SO, like the kernels
    except Exception:  # noqa: BLE001 - no CPU module: no GEMM figures
        return {}
    if not hasattr(_cpu, "fma_peak_gflops"):   # a build older than the GEMM bindings
        return {"gemm_error": f"{getattr(_cpu, '__file__', '_cpu')} has no fma_peak_gflops / gemm "
                              f"(rebuild convkit._cpu)"}
    import torch
    threads = _cpu.get_num_threads()
    seconds = 0.1 if quick else 0.3
    out: Dict[str, object] = {
        "fma_peak_gflops": _cpu.fma_peak_gflops(dtype, threads, seconds),
        "fma_peak_gflops_per_core": _cpu.fma_peak_gflops(dtype, 1, seconds),
        "fma_peak_threads": threads, "gemm_dtype": dtype, "gemm_isa": _cpu.simd_isa(),
        "gemm_config": dict(_cpu.gemm_config(dtype))}
    for name, (m, n, k) in (shapes or GEMM_SHAPES).items():
        dt = getattr(torch, dtype)
        a, b = torch.rand(m, k, dtype=dt), torch.rand(k, n, dtype=dt)
        c = torch.empty(m, n, dtype=dt)
        call = lambda: _cpu.gemm(dtype, False, False, m, n, k, 1.0, a.data_ptr(), k,  # noqa: E731
                                 b.data_ptr(), n, 0.0, c.data_ptr(), n)
        ts = time_interleaved([call], 1, 3 if quick else 7)[0]
        key = "gemm" if name == "square" else f"gemm_{name}"
        out[f"{key}_gflops"] = 2 * m * n * k / min(ts) / 1e9
        out[f"{key}_gflops_median"] = 2 * m * n * k / statistics.median(ts) / 1e9
        out[f"{key}_shape"] = [m, n, k]
        out[f"{key}_pct_of_peak"] = 100 * out[f"{key}_gflops"] / out["fma_peak_gflops"]
    return out


def _gemm_ceiling_text(c: Dict[str, object]) -> str:
    """The FMA peak and our GEMM's share of it, for the table header ("" when not measured)."""
    if not c.get("fma_peak_gflops") or not c.get("gemm_gflops"):
        return ""
    text = (f" FMA peak (our kernel, {c.get('gemm_isa', '?')}) {c['fma_peak_gflops']:.1f} GFLOP/s "
            f"({c.get('fma_peak_gflops_per_core', 0):.1f} on one core); convkit GEMM "
            f"{'x'.join(map(str, c.get('gemm_shape', [])))} {c['gemm_gflops']:.1f} GFLOP/s "
            f"= {c['gemm_pct_of_peak']:.0f}% of peak")
    if c.get("gemm_conv_gflops"):
        text += (f", {'x'.join(map(str, c.get('gemm_conv_shape', [])))} "
                 f"{c['gemm_conv_gflops']:.1f} GFLOP/s = {c['gemm_conv_pct_of_peak']:.0f}%")
    return text + f" (M x N x K, {c.get('gemm_dtype', 'float32')}, best sample)."


# ---- correctness --------------------------------------------------------------------------
def _errors(got: Dict[str, object], ref: Dict[str, object]) -> Tuple[float, float, str]:
    """(max abs error, max error relative to the largest |ref|, worst tensor's name) over the
    tensors of a pass; inf when a tensor is missing, has the wrong shape, or is not finite."""
    import torch
    worst_abs, worst_rel, worst = 0.0, 0.0, ""
    for key, r in ref.items():
        g = got.get(key)
        if g is None or tuple(g.shape) != tuple(r.shape):
            return math.inf, math.inf, key
        g64, r64 = g.to(torch.float64), r.to(torch.float64)
        if not bool(torch.isfinite(g64).all()):
            return math.inf, math.inf, key
        err = (g64 - r64).abs().max().item() if r64.numel() else 0.0
        scale = r64.abs().max().item() if r64.numel() else 0.0
        rel = err / scale if scale > 0 else err
        if rel > worst_rel or not worst:
            worst_rel, worst = rel, key
        worst_abs = max(worst_abs, err)
    return worst_abs, worst_rel, worst


def check_layer(layer: Layer, inputs: LayerInputs, pass_: str, algo: str,
                dtype: str) -> Dict[str, object]:
    """Run convkit's pass once and compare everything it computes (output; for fwd+bwd also
    grad input, grad weight, grad bias) with torch's in float64 on the same values. torch's own
    error in `dtype` is reported beside ours for scale."""
    import torch
    ref64 = layer.results(inputs.to(torch.float64), pass_, "torch")
    ours = layer.results(inputs, pass_, "convkit", algo)
    ref_same = layer.results(inputs, pass_, "torch")
    abs_err, rel_err, worst = _errors(ours, ref64)
    _, ref_rel, _ = _errors(ref_same, ref64)
    tol = max(TOLERANCE[dtype], 10 * ref_rel)
    return {"ok": bool(rel_err <= tol), "max_abs_err": abs_err, "max_rel_err": rel_err,
            "worst": worst, "ref_rel_err": ref_rel, "tol": tol}


# ---- the run ------------------------------------------------------------------------------
@dataclass
class _Case:
    layer: Layer
    pass_: str
    algo: str


def plan_cases(layers: Sequence[Layer], algos: Sequence[str], passes: Sequence[str]) -> List[_Case]:
    """(layer, pass, algo) in table order. Convolutions run each requested algo that applies
    ("auto" applies everywhere); pools run their one implementation whatever --algos says."""
    cases = []
    for layer in layers:
        for pass_ in passes:
            if pass_ not in layer.passes():
                continue
            if layer.is_conv:
                applicable = layer.algos() + ["auto", "blocked"] + (["winograd"] if layer.takes_winograd else [])
                run = [a for a in algos if a in applicable]
            else:
                run = layer.algos()   # pools and ReLU: their one kernel
            cases += [_Case(layer, pass_, a) for a in run]
    return cases


# What --plan assumes to estimate a run's length (guesses, printed with it): what a sample costs
# beside the op, the rate of convkit's kernels and of the references, the memory bandwidth of
# pools and ReLUs, what a (layer, pass, batch) group costs outside its samples (the float64
# reference, the checks, cuDNN's algorithm search), and the start (imports, CUDA context,
# ceilings, call overhead, CuPy's kernel compile).
PLAN_ASSUMPTIONS = {
    "cuda": {"sample_overhead_ms": 0.6, "ours_tflops": 5.0, "ref_tflops": 25.0,
             "bandwidth_gbps": 2000.0, "group_setup_s": 0.08, "startup_s": 30.0},
    "cpu": {"sample_overhead_ms": 0.05, "ours_tflops": 0.1, "ref_tflops": 0.15,
            "bandwidth_gbps": 20.0, "group_setup_s": 0.05, "startup_s": 5.0},
}


def _n_refs(layer: Layer, kind: str, dtype: str) -> int:
    """Timed references per (layer, pass, batch): on the GPU a float32 convolution has cuDNN with
    TF32 off and on and the CuPy im2col + cuBLAS (float32 and float64 only); pools and ReLU and
    everything on the CPU have one."""
    if kind != "cuda" or not layer.is_conv:
        return 1
    return (2 if dtype == "float32" else 1) + (1 if dtype in ("float32", "float64") else 0)


def plan_run(cfg: BenchConfig, device_kind: str = "cpu") -> Dict[str, object]:
    """What a run will time, without running it: groups (layer, pass, batch), convkit cases,
    timed callables (ours per algorithm + the references), samples, and an estimate of its
    length from PLAN_ASSUMPTIONS (it assumes convkit has every kernel and CuPy is there)."""
    a = PLAN_ASSUMPTIONS[device_kind]
    layers = select_layers(cfg.layers, device="cuda" if device_kind == "cuda" else "cpu")
    cases = plan_cases(layers, cfg.algos, cfg.passes)
    batches = config_batches(cfg)
    per_call = cfg.warmup + cfg.repeat if device_kind == "cuda" else max(1, cfg.warmup) + cfg.repeat
    groups = callables = 0
    kernel_s = overhead_s = 0.0
    by_op: Dict[str, Dict[str, int]] = {}
    for layer in layers:
        for p in cfg.passes:
            n_ours = sum(1 for c in cases if c.layer is layer and c.pass_ == p)
            if not n_ours:
                continue
            for b in batches:
                n_ref = _n_refs(layer, device_kind, cfg.dtype)
                groups += 1
                callables += n_ours + n_ref
                e = by_op.setdefault(layer.op, {"groups": 0, "callables": 0})
                e["groups"] += 1
                e["callables"] += n_ours + n_ref
                work = layer.work(b, p, ITEMSIZE[cfg.dtype])
                if layer.is_conv:
                    ours = 2 * work / (a["ours_tflops"] * 1e12)
                    ref = 2 * work / (a["ref_tflops"] * 1e12)
                else:
                    ours = ref = work / (a["bandwidth_gbps"] * 1e9)
                if device_kind == "cpu":   # a CPU sample loops the op for >= MIN_SAMPLE_S
                    ours, ref = max(ours, MIN_SAMPLE_S), max(ref, MIN_SAMPLE_S)
                kernel_s += per_call * (n_ours * ours + n_ref * ref)
                overhead_s += per_call * (n_ours + n_ref) * a["sample_overhead_ms"] / 1e3
    setup_s = a["startup_s"] + groups * a["group_setup_s"]
    est = setup_s + kernel_s + overhead_s
    out: Dict[str, object] = {
        "groups": groups, "cases": len(cases) * len(batches), "callables": callables,
        "samples_per_callable": per_call, "samples": callables * per_call,
        "batches": batches, "passes": list(cfg.passes), "by_op": by_op,
        "estimate_s": est, "estimate_parts_s": {"setup": setup_s, "kernels": kernel_s,
                                                "sample_overhead": overhead_s},
        "assumptions": dict(a),
    }
    if cfg.budget_s:
        # samples per callable that would fit: setup + (warmup + r) * per-sample cost <= budget
        per_sample = (kernel_s + overhead_s) / per_call if per_call else 0.0
        fit = int((cfg.budget_s - setup_s) / per_sample) - cfg.warmup if per_sample > 0 else cfg.repeat
        out["repeat_within_budget"] = max(min(5, cfg.repeat), min(cfg.repeat, fit))
    return out


def plan_text(plan: Dict[str, object], cfg: BenchConfig) -> str:
    """--plan's printout."""
    a = plan["assumptions"]
    lines = [f"convkit bench --device {cfg.device} plan: batches {','.join(map(str, plan['batches']))}, "
             f"passes {','.join(plan['passes'])}, {cfg.dtype}, algos {','.join(cfg.algos)}", ""]
    lines += _pipe_table(["op", "groups (layer x pass x batch)", "timed callables"],
                         [[op, str(e["groups"]), str(e["callables"])] for op, e in plan["by_op"].items()]
                         + [["all", str(plan["groups"]), str(plan["callables"])]], [False, True, True])
    parts = plan["estimate_parts_s"]
    lines += ["", f"{plan['callables']} callables x {plan['samples_per_callable']} samples "
              f"({cfg.warmup} warm-up + {cfg.repeat}) = {plan['samples']:,} samples; estimate "
              f"{plan['estimate_s']:.0f} s = set-up {parts['setup']:.0f} s + kernels "
              f"{parts['kernels']:.0f} s + per-sample overhead {parts['sample_overhead']:.0f} s",
              f"(assumed: {a['sample_overhead_ms']} ms a sample beside the op, convkit at "
              f"{a['ours_tflops']:g} TFLOP/s, references at {a['ref_tflops']:g} TFLOP/s, pools and "
              f"ReLU at {a['bandwidth_gbps']:g} GB/s, {a['group_setup_s']} s a group for checks, "
              f"{a['startup_s']:g} s to start; convkit has every kernel, CuPy is there)."]
    if "repeat_within_budget" in plan:
        lines.append(f"--budget {cfg.budget_s:g} s: about {plan['repeat_within_budget']} samples per "
                     f"callable would fit (the run adapts as it measures; never below 5 on the GPU).")
    return "\n".join(lines) + "\n"


def _rate(layer: Layer, work: int, ms: Optional[float]) -> Optional[float]:
    """GFLOP/s (2 flops per MAC) for a convolution, GB/s for a pool or a ReLU."""
    if not ms:
        return None
    per_s = work / (ms / 1e3) / 1e9
    return 2 * per_s if layer.is_conv else per_s


def run_case(case: _Case, inputs: LayerInputs, cfg: BenchConfig, ceilings: Dict[str, float],
             ref_name: str = "torch-cpu", batch: Optional[int] = None) -> Dict[str, object]:
    """Check, then time one (layer, pass, algo) against torch at `batch` [cfg.batch]. Returns
    one benchmark row."""
    layer, pass_, algo = case.layer, case.pass_, case.algo
    batch = cfg.batch if batch is None else batch
    work = layer.work(batch, pass_, ITEMSIZE[cfg.dtype])
    row: Dict[str, object] = {
        "op": layer.op, "layer": layer.name, "pass": pass_, "algo": algo, "dtype": cfg.dtype,
        "batch": layer.batch_for(batch), ("macs" if layer.is_conv else "bytes"): work,
        "ours_ms": None, "ref": ref_name, "ref_ms": None, "ratio": None,
    }
    try:
        check = check_layer(layer, inputs, pass_, algo, cfg.dtype)
    except Exception as e:  # an algo that refuses a shape, a kernel error: report, go on
        row.update(status="ERROR", error=f"{type(e).__name__}: {e}")
        return row
    row["max_abs_err"] = check["max_abs_err"]
    row["max_rel_err"] = check["max_rel_err"]
    row["ref_rel_err"] = check["ref_rel_err"]
    if not check["ok"]:
        # No time for a wrong result.
        row.update(status="FAIL", error=f"{check['worst']}: relative error "
                   f"{check['max_rel_err']:.3g} > tolerance {check['tol']:.3g}")
        return row
    ours = layer.step(inputs, pass_, "convkit", algo)
    ref = layer.step(inputs, pass_, "torch")
    try:
        s_ours, s_ref = time_interleaved([ours, ref], cfg.warmup, cfg.repeat)
    except Exception as e:
        row.update(status="ERROR", error=f"while timing: {type(e).__name__}: {e}")
        return row
    ours_ms = statistics.median(s_ours) * 1e3
    ref_ms = statistics.median(s_ref) * 1e3
    rate, ref_rate = _rate(layer, work, ours_ms), _rate(layer, work, ref_ms)
    ceiling = ceilings["matmul_gflops"] if layer.is_conv else ceilings["copy_gbps"]
    # spread: (slowest - fastest sample) / median, the larger of the two sides; a high value
    # says the machine was busy and the ratio is not to be trusted.
    spread = max((max(x) - min(x)) / statistics.median(x) for x in (s_ours, s_ref))
    row.update(
        status="ok", ours_ms=ours_ms, ref_ms=ref_ms, ratio=ours_ms / ref_ms,
        ours_min_ms=min(s_ours) * 1e3, ref_min_ms=min(s_ref) * 1e3, spread=spread,
    )
    if layer.is_conv:
        row.update(gflops=rate, ref_gflops=ref_rate)
    else:
        row.update(gbps=rate, ref_gbps=ref_rate)
    row["pct_of_ceiling"] = 100 * rate / ceiling
    return row


class _BudgetSpent(Exception):
    """--budget's time is up: the run ends as if interrupted, with what it has."""


def device_kind(device: str) -> str:
    """"cpu" or "cuda" for a --device value; anything else raises SystemExit."""
    if device == "cpu":
        return "cpu"
    if re.fullmatch(r"cuda(:\d+)?", device):
        return "cuda"
    raise SystemExit(f"convkit bench: --device must be 'cpu' or 'cuda[:N]', got {device!r}")


def run_bench(cfg: BenchConfig, log=sys.stderr) -> Dict[str, object]:
    """Run the benchmark; returns the report (DESIGN.md "Benchmark rows") with a summary.
    --device cuda runs convkit/bench/gpu.py's run_bench_cuda."""
    if device_kind(cfg.device) == "cuda":
        from convkit.bench.gpu import run_bench_cuda
        return run_bench_cuda(cfg, log)
    import torch
    import convkit
    import convkit.functional  # noqa: F401  (fail here, before any timing, if it is missing)
    from tqdm import tqdm

    t_start = time.perf_counter()
    layers = select_layers(cfg.layers, device=cfg.device)
    cases = plan_cases(layers, cfg.algos, cfg.passes)
    if not cases:
        raise SystemExit("convkit bench: nothing to run (check --layers, --algos, --passes)")
    batches = config_batches(cfg)
    threads = set_threads(cfg.threads or torch.get_num_threads())
    dtype = getattr(torch, cfg.dtype)
    commit, dirty = git_commit()
    report: Dict[str, object] = {
        "device": cfg.device, "cpu": cpu_model_name(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit, "dirty": dirty, "torch": torch.__version__, "threads": threads,
        "batch": batches[0] if len(batches) == 1 else batches, "batches": batches,
        "passes": list(cfg.passes), "dtype": cfg.dtype, "warmup": cfg.warmup,
        "repeat": cfg.repeat, "budget_s": cfg.budget_s,
    }
    try:
        from convkit import _backend
        report["convkit_simd"] = _backend.module("cpu").simd_isa()  # honours CONVKIT_CPU_SO
    except Exception:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    report["loadavg_start"] = load
    print(f"convkit bench: {len(cases) * len(batches)} cases on {report['cpu']}, "
          f"{_plural(threads, 'thread')}, batch {','.join(map(str, batches))}, {cfg.dtype}; "
          f"measuring ceilings...", file=log, flush=True)
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        print(f"convkit bench: warning: load average {load:.1f} on {os.cpu_count()} CPUs before "
              f"the run: other processes compete for the cores, times will be noisy",
              file=log, flush=True)
    report["ceilings"] = ceilings = measure_ceilings(cfg.dtype, cfg.quick)
    report.update({k: ceilings[k] for k in GEMM_KEYS if k in ceilings})
    from convkit.bench.gpu import call_overhead
    try:
        report["call_overhead_us"] = call_overhead("cpu", calls=100 if cfg.quick else 300)
    except Exception as e:  # noqa: BLE001 - a broken kernel costs this figure only
        report["call_overhead_us"] = {"errors": {"all": f"{type(e).__name__}: {e}"}}
    rows: List[Dict[str, object]] = []
    use_backend = getattr(convkit, "use_backend", None)
    bar = tqdm(total=len(cases) * len(batches), disable=not cfg.progress, file=log, unit="case",
               dynamic_ncols=True)
    deadline = t_start + cfg.budget_s if cfg.budget_s else None
    try:
        for layer in layers:
            for pass_ in cfg.passes:
                todo = [c for c in cases if c.layer is layer and c.pass_ == pass_]
                for batch in (batches if todo else []):
                    if deadline is not None and time.perf_counter() > deadline:
                        raise _BudgetSpent(f"time budget of {cfg.budget_s:.0f} s spent after "
                                           f"{len(rows)} rows")
                    # Seeded by the layer's place in the full table: the same inputs whatever
                    # --layers selects, and the same as the pytest-benchmark suites use.
                    inputs = layer.make_inputs(batch, dtype, seed=cfg.seed + LAYERS.index(layer),
                                               requires_grad=(pass_ == "fwd+bwd"))
                    for case in todo:
                        bar.set_description(f"{layer.name} {pass_} {case.algo}"
                                            + (f" b{batch}" if len(batches) > 1 else ""))
                        if use_backend is not None:
                            with use_backend(cfg.device):
                                row = run_case(case, inputs, cfg, ceilings, batch=batch)
                        else:
                            row = run_case(case, inputs, cfg, ceilings, batch=batch)
                        rows.append(row)
                        if row["status"] != "ok":
                            tqdm.write(f"!!! {row['status']} {layer.name} {pass_} algo={case.algo}: "
                                       f"{row['error']}", file=log)
                        bar.update(1)
    except _BudgetSpent as e:
        report["interrupted"] = str(e)
    except KeyboardInterrupt:
        report["interrupted"] = f"stopped after {len(rows)} rows (SIGTERM or Ctrl-C)"
    finally:
        bar.close()
    report["rows"] = rows
    report["summary"] = summarize(rows)
    report["totals"] = totals(rows)
    if hasattr(os, "getloadavg"):
        report["loadavg_end"] = os.getloadavg()[0]
    return report


# ---- summary and tables -------------------------------------------------------------------
def _geomean(xs: Sequence[Optional[float]]) -> Optional[float]:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def _timed(rows: Sequence[Dict[str, object]]) -> List[Dict[str, object]]:
    """Rows where both sides were timed."""
    return [r for r in rows if r.get("status") == "ok" and r.get("ours_ms") and r.get("ref_ms")]


def _ref_key(r: Dict[str, object]) -> Tuple[Optional[str], Optional[bool]]:
    return (r.get("ref"), r.get("ref_tf32"))


def _best_per_layer(rows: Sequence[Dict[str, object]]) -> Dict[Tuple, Dict[str, object]]:
    """Per (layer, pass, batch, reference and its setting): convkit's fastest algorithm against
    the reference's fastest time on that layer. The reference was timed beside each algorithm,
    so both sides are a minimum over as many medians: picking our best of three noisy numbers
    against one of the reference's would flatter us."""
    groups: Dict[Tuple, List[Dict[str, object]]] = {}
    for r in _timed(rows):
        groups.setdefault((r["layer"], r["pass"], r.get("batch")) + _ref_key(r), []).append(r)
    best = {}
    for k, rs in groups.items():
        fastest = min(rs, key=lambda r: r["ours_ms"])
        ref_ms = min(r["ref_ms"] for r in rs)
        best[k] = dict(fastest, ref_ms=ref_ms, ratio=fastest["ours_ms"] / ref_ms)
    return best


# How the tables and the summary name a reference (ref, ref_tf32).
REF_LABELS = {("cudnn", False): "cudnn fp32", ("cudnn", True): "cudnn tf32", ("cudnn", None): "cudnn",
              ("cupy-im2col-cublas", False): "cupy im2col+cublas",
              ("cupy-im2col-cublas", True): "cupy im2col+cublas tf32",
              ("cupy-im2col-cublas", None): "cupy im2col+cublas"}


def ref_label(ref: Optional[str], tf32: Optional[bool] = None) -> str:
    return REF_LABELS.get((ref, tf32), ref or "")


def _ref_suffix(ref: Optional[str], tf32: Optional[bool]) -> str:
    """" vs cudnn fp32" and the like in a summary group's name; nothing for the CPU's and the
    pools' one reference."""
    return "" if ref in (None, "torch-cpu", "torch-cuda") else f" vs {ref_label(ref, tf32)}"


def summarize(rows: Sequence[Dict[str, object]], gpu: bool = False) -> List[Dict[str, object]]:
    """Geometric means of ours/reference over groups of rows (< 1: convkit is faster): per pass
    (and batch, when the run has several), each conv algorithm, the best algorithm per layer,
    the 1x1 layers, the depthwise layers, the pools, the ReLUs; convolutions once per reference
    (cuDNN with TF32 off, on, CuPy's im2col + cuBLAS). gpu=True also gives each group the
    geometric mean of the fraction of the ceiling that ours and the reference reach
    (ours_pct_of_ceiling, ref_pct_of_ceiling: of the copy bandwidth for pools and ReLU, of the
    torch.mm rate for convolutions), adds groups for reference-only convolution rows (no
    convkit kernel yet: only the reference's fraction of the ceiling) and, per pass and batch,
    how CuPy's im2col + cuBLAS compares with cuDNN (kind "ref-vs-ref": cupy time / cudnn time).
    Each entry has the group's name and its fields: op, pass, batch, algo, kind ("algo",
    "best", "1x1", "depthwise", "ref-only", "ref-vs-ref", "all"), ref, ref_tf32."""
    import convkit.bench.layers as L
    by_name = L.layers_by_name()
    ok = _timed(rows)
    out: List[Dict[str, object]] = []
    batches = list(dict.fromkeys(r.get("batch") for r in rows))
    several = len(batches) > 1

    def add(label, rs, **fields):
        if not rs:
            return
        entry = {"group": label, "geomean_ratio": _geomean([r["ratio"] for r in rs]), "n": len(rs)}
        if gpu:
            entry["ours_pct_of_ceiling"] = _geomean([r.get("pct_of_ceiling") for r in rs])
            entry["ref_pct_of_ceiling"] = _geomean([r.get("ref_pct_of_ceiling") for r in rs])
        entry.update(fields)
        if entry["geomean_ratio"] is not None:
            out.append(entry)

    def best_per_layer(rs):
        return list(_best_per_layer(rs).values())

    def is_kind(name, attr):
        return name in by_name and getattr(by_name[name], attr)

    passes = list(dict.fromkeys(r["pass"] for r in rows))
    refs = list(dict.fromkeys(_ref_key(r) for r in rows if r["op"] == "conv2d")) or [(None, None)]
    for p in passes:
        for b in batches:
            at = f", batch {b}" if several else ""
            base = {"pass": p, "batch": b}
            for ref, s in refs:
                cp = [r for r in ok if r["op"] == "conv2d" and r["pass"] == p and r.get("batch") == b
                      and _ref_key(r) == (ref, s)]
                suffix = _ref_suffix(ref, s)
                fields = dict(base, op="conv2d", ref=ref, ref_tf32=s)
                for a in dict.fromkeys(r["algo"] for r in cp):
                    add(f"conv {p}{at}, algo={a}{suffix}", [r for r in cp if r["algo"] == a],
                        kind="algo", algo=a, **fields)
                add(f"conv {p}{at}, best algo per layer{suffix}", best_per_layer(cp),
                    kind="best", algo="best", **fields)
                add(f"1x1 convs {p}{at}, best algo per layer{suffix}",
                    best_per_layer([r for r in cp if is_kind(r["layer"], "is_1x1")]),
                    kind="1x1", algo="best", **fields)
                add(f"depthwise convs {p}{at}, best algo per layer{suffix}",
                    best_per_layer([r for r in cp if is_kind(r["layer"], "is_depthwise")]),
                    kind="depthwise", algo="best", **fields)
                if gpu:
                    only = [r for r in rows if r["op"] == "conv2d" and r["pass"] == p
                            and r.get("batch") == b and _ref_key(r) == (ref, s)
                            and r.get("status") == "ref-only" and r.get("ref_ms")]
                    if only:
                        out.append(dict(fields, group=f"{ref_label(ref, s)} conv {p}{at} (no convkit kernel)",
                                        geomean_ratio=None, n=len(only), ours_pct_of_ceiling=None,
                                        ref_pct_of_ceiling=_geomean([r.get("ref_pct_of_ceiling") for r in only]),
                                        kind="ref-only", algo="none"))
            if gpu:
                # the classic alternative against cuDNN, layer by layer (one time per layer each)
                per: Dict[Tuple, Dict[str, float]] = {}
                for r in rows:
                    if r["op"] == "conv2d" and r["pass"] == p and r.get("batch") == b and r.get("ref_ms"):
                        d = per.setdefault(_ref_key(r), {})
                        d[r["layer"]] = min(d.get(r["layer"], math.inf), r["ref_ms"])
                cupy = per.get(("cupy-im2col-cublas", False)) or per.get(("cupy-im2col-cublas", None))
                for key in (("cudnn", False), ("cudnn", True), ("cudnn", None)):
                    if cupy and key in per:
                        common = [l for l in cupy if l in per[key]]
                        if common:
                            out.append({"group": f"cupy im2col+cublas / {ref_label(*key)} conv {p}{at}",
                                        "geomean_ratio": _geomean([cupy[l] / per[key][l] for l in common]),
                                        "n": len(common), "op": "conv2d", "pass": p, "batch": b,
                                        "kind": "ref-vs-ref", "algo": None, "ref": key[0],
                                        "ref_tf32": key[1], "numerator": "cupy-im2col-cublas"})
            fields = dict(base, kind="all", algo="direct", ref=None, ref_tf32=None)
            add(f"pools {p}{at}", [r for r in ok if r["op"] in ("max_pool2d", "avg_pool2d")
                                   and r["pass"] == p and r.get("batch") == b], op="pool", **fields)
            add(f"relu {p}{at}", [r for r in ok if r["op"] == "relu" and r["pass"] == p
                                  and r.get("batch") == b], op="relu", **fields)
    return out


def totals(rows: Sequence[Dict[str, object]]) -> List[Dict[str, object]]:
    """Per pass and batch, the time of GoogLeNet's convolution and pooling layers (the lecture's,
    MobileNet's and the ReLUs excluded) added up, each layer at its fastest convkit algorithm,
    against the reference's fastest time for the same layers (on the GPU: cuDNN with TF32 off):
    how a whole network's convolutions and pools would fare. Only layers whose every case passed
    count (on the GPU, convolutions without a convkit kernel are skipped layers)."""
    import convkit.bench.layers as L
    fam = {lay.name: lay.family for lay in L.LAYERS}
    out = []
    for p in dict.fromkeys(r["pass"] for r in rows):
        for b in dict.fromkeys(r.get("batch") for r in rows if r["pass"] == p):
            rs = [r for r in rows if r["pass"] == p and r.get("batch") == b
                  and fam.get(r["layer"], "googlenet") == "googlenet" and r["op"] != "relu"
                  and not r.get("ref_tf32") and r.get("ref") in (None, "torch-cpu", "torch-cuda", "cudnn")]
            bad = {r["layer"] for r in rs if r.get("status") != "ok"}
            best = _best_per_layer([r for r in rs if r["layer"] not in bad])
            if best:
                ours = sum(r["ours_ms"] for r in best.values())
                ref = sum(r["ref_ms"] for r in best.values())
                out.append({"pass": p, "batch": b, "layers": len(best), "ours_ms": ours,
                            "ref_ms": ref, "ratio": ours / ref, "skipped_layers": sorted(bad)})
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _fmt_work(row) -> str:
    if "macs" in row:
        return f"{row['macs'] / 1e6:,.1f} M MACs"
    return f"{row['bytes'] / 1e6:,.2f} MB"


def _fmt(x, spec) -> str:
    return "—" if x is None else format(x, spec)


def _pipe_table(header: Sequence[str], body: Sequence[Sequence[str]],
                right: Sequence[bool]) -> List[str]:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h)
              for i, h in enumerate(header)]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if rj else c.ljust(w)
                                 for c, w, rj in zip(cells, widths, right)) + " |"
    rule = "|" + "|".join(("-" * (w + 1) + ":") if rj else ("-" * (w + 2))
                          for w, rj in zip(widths, right)) + "|"
    return [line(header), rule] + [line(r) for r in body]


def _overhead_lines(report: Dict[str, object]) -> List[str]:
    o = report.get("call_overhead_us")
    if not o:
        return []
    parts = [f"{op} " + ", ".join(f"{impl} {o[op][impl]:.1f} µs" for impl in ("convkit", "torch")
                                  if impl in o[op])
             for op in ("relu", "max_pool2d") if op in o]
    parts += [f"{k} failed: {v}" for k, v in o.get("errors", {}).items()]
    shape = "x".join(str(d) for d in o.get("shape", []))
    return ["", f"Per-call overhead at batch 1 ({shape}, wall clock over {o.get('calls')} calls"
            f"{', synchronized at the end' if report['device'] != 'cpu' else ''}): "
            + "; ".join(parts) + "."]


def markdown_report(report: Dict[str, object]) -> str:
    """The results as Markdown: a line on the machine and ceilings, one table row per
    (layer, pass, algo[, reference setting]), then the geometric-mean summary. Aligned, so it
    reads on a terminal."""
    if report["device"] != "cpu":
        return _markdown_gpu(report)
    c = report["ceilings"]
    commit = (report.get("commit") or "no git")[:10] + (" (dirty)" if report.get("dirty") else "")
    out = [
        f"convkit bench on {report['device']} ({report['cpu']}), {_plural(report['threads'], 'thread')}, "
        f"batch {_batches_text(report)}, {report['dtype']}, torch {report['torch']}, commit {commit}, "
        f"{report['date']}.",
        "",
        f"Ceilings measured in the same run: torch.mm {c['matmul_n']}x{c['matmul_n']} "
        f"{c['matmul_gflops']:.1f} GFLOP/s; copy {c['copy_gbps']:.1f} GB/s (read + write)."
        f"{_gemm_ceiling_text(c)} "
        f"Times are medians of {report['repeat']} interleaved samples; ratio < 1: convkit faster. "
        f"Rate: GFLOP/s for convolutions (fwd+bwd = 3x the forward's MACs), GB/s for pools and "
        f"ReLU; % of ceiling: of the torch.mm rate (convolutions) or the copy bandwidth (pools, "
        f"ReLU). "
        f"Spread: (slowest - fastest sample) / median, the worse of the two sides; "
        f"rel err: convkit's largest error against torch in float64, over the largest value.",
        "",
    ]
    several = len(_batches(report)) > 1
    header = ["layer"] + (["batch"] if several else []) + [
        "pass", "algo", "work", "ours ms", "torch ms", "ours/torch", "ours rate", "% ceiling",
        "spread", "rel err"]
    right = [False] + ([True] if several else []) + [False, False] + [True] * 8
    body = []
    for r in report["rows"]:
        first = [r["layer"]] + ([str(r["batch"])] if several else []) + [r["pass"], r["algo"]]
        if r["status"] != "ok":
            body.append(first + [_fmt_work(r), f"**{r['status']}**", _fmt(r["ref_ms"], ".3f"),
                                 "—", "—", "—", "—", _fmt(r.get("max_rel_err"), ".1e")])
            continue
        rate = (f"{r['gflops']:.1f} GFLOP/s" if "gflops" in r else f"{r['gbps']:.1f} GB/s")
        body.append(first + [_fmt_work(r), f"{r['ours_ms']:.3f}", f"{r['ref_ms']:.3f}",
                             f"{r['ratio']:.2f}", rate, f"{r['pct_of_ceiling']:.0f}%",
                             f"{100 * r['spread']:.0f}%", _fmt(r.get("max_rel_err"), ".1e")])
    out += _pipe_table(header, body, right)
    if report.get("summary"):
        out += ["", "Geometric mean of ours/torch:", ""]
        out += _pipe_table(["group", "rows", "geomean ours/torch"],
                           [[s["group"], str(s["n"]), f"{s['geomean_ratio']:.2f}"]
                            for s in report["summary"]], [False, True, True])
    if report.get("totals"):
        out += ["", "GoogLeNet's layers added up (each at its fastest convkit algorithm; the "
                "lecture's and MobileNet's layers excluded):", ""]
        out += _pipe_table(["pass", "batch", "layers", "ours ms", "torch ms", "ours/torch"],
                           [[t["pass"], str(t.get("batch")), str(t["layers"]), f"{t['ours_ms']:.2f}",
                             f"{t['ref_ms']:.2f}", f"{t['ratio']:.2f}"] for t in report["totals"]],
                           [False, True, True, True, True, True])
    out += _overhead_lines(report)
    out += _failure_lines(report)
    noisy = [r for r in report["rows"] if r["status"] == "ok" and r["spread"] > 0.25]
    if noisy:
        out += ["", f"{len(noisy)} of {len(report['rows'])} cases spread over 25% between "
                f"samples (load average {report.get('loadavg_start') or 0:.1f} at the start): "
                f"rerun on a quiet machine before quoting their ratios."]
    return "\n".join(out) + "\n"


def _batches(report: Dict[str, object]) -> List[int]:
    b = report.get("batches") or report.get("batch")
    return list(b) if isinstance(b, (list, tuple)) else [b]


def _batches_text(report: Dict[str, object]) -> str:
    return ",".join(str(b) for b in _batches(report))


def _failure_lines(report: Dict[str, object]) -> List[str]:
    """Interruption, failed cases (once per layer, pass, batch, algorithm: a GPU case has a row
    per reference) and references that failed their own check."""
    out = []
    if report.get("interrupted"):
        out += ["", f"**Interrupted**: {report['interrupted']}; the tables cover what ran."]
    seen, bad = set(), []
    for r in report["rows"]:
        key = (r["layer"], r["pass"], r.get("batch"), r["algo"])
        if r["status"] not in ("ok", "ref-only") and key not in seen:
            seen.add(key)
            bad.append(r)
    if bad:
        out += ["", f"**{len(bad)} case(s) failed** (no time reported for them):", ""]
        out += [f"- {r['layer']} {r['pass']} batch {r.get('batch')} algo={r['algo']}: {r['status']}: "
                f"{r.get('error')}" for r in bad]
    seen, bad_ref = set(), []
    for r in report["rows"]:
        key = (r["layer"], r["pass"], r.get("batch"), r.get("ref"), r.get("ref_tf32"))
        if r.get("ref_status") not in (None, "ok") and key not in seen:
            seen.add(key)
            bad_ref.append(r)
    if bad_ref:
        out += ["", f"**{len(bad_ref)} reference case(s) failed** (the reference was not timed):", ""]
        out += [f"- {r['layer']} {r['pass']} batch {r.get('batch')} {ref_label(r['ref'], r.get('ref_tf32'))}: "
                f"{r['ref_status']}: {r.get('ref_error')}" for r in bad_ref]
    return out


def n_failed(report: Dict[str, object]) -> Tuple[int, int]:
    """(failed convkit cases, failed reference cases), each counted once (see _failure_lines)."""
    cases = {(r["layer"], r["pass"], r.get("batch"), r["algo"]) for r in report["rows"]
             if r["status"] not in ("ok", "ref-only")}
    refs = {(r["layer"], r["pass"], r.get("batch"), r.get("ref"), r.get("ref_tf32")) for r in report["rows"]
            if r.get("ref_status") not in (None, "ok")}
    return len(cases), len(refs)


def _ref_cell(r) -> str:
    return ref_label(r["ref"], r.get("ref_tf32")) if r["ref"] != "torch-cuda" else "torch-cuda"


def _tflops(gflops: Optional[float]) -> str:
    """A rate in TFLOP/s, three significant digits (0.123, 12.3, 123)."""
    if gflops is None:
        return "—"
    t = gflops / 1e3
    return f"{t:.0f}" if t >= 100 else f"{t:.3g}"


def _rate_cell(r, side: str) -> str:
    """TFLOP/s for a convolution, GB/s for a pool or ReLU; side "" (ours) or "ref_"."""
    if "macs" in r:
        v = r.get(side + "gflops")
        return "—" if v is None else f"{_tflops(v)} TFLOP/s"
    v = r.get(side + "gbps")
    return "—" if v is None else f"{v:,.0f} GB/s"


def _pct(x) -> str:
    return "—" if x is None else f"{x:.0f}%"


def _ceiling_line(report: Dict[str, object]) -> str:
    c = report["ceilings"]
    t = report.get("timing", {})
    mm = f"torch.mm {c['matmul_n']}^3 {c['matmul_dtype']} {c['matmul_gflops'] / 1e3:.1f} TFLOP/s"
    extra = [f"{k} {c[key] / 1e3:.1f}" for k, key in (("tf32", "matmul_tf32_gflops"),
             ("fp16", "matmul_fp16_gflops"), ("bf16", "matmul_bf16_gflops")) if c.get(key)]
    return (f"Ceilings measured in the same run: {mm} with TF32 off (the FP32 ceiling)"
            + (f" ({', '.join(extra)} TFLOP/s)" if extra else "")
            + f"; copy {c['copy_gbps']:.0f} GB/s (read + write, best; median "
            f"{c.get('copy_gbps_median', 0):.0f}). L2 flushed before each sample (read of "
            f"{t.get('l2_flush_bytes', 0) / 2 ** 20:.0f} MiB).")


def _reference_lines(report: Dict[str, object]) -> List[str]:
    refs = report.get("references") or {}
    cup = refs.get("cupy-im2col-cublas")
    if not cup:
        return []
    if cup.get("status") == "ok":
        return ["", f"References: cuDNN (cudnn.benchmark picks its algorithm) with TF32 off and on; "
                f"im2col + cuBLAS through CuPy {cup.get('version')} (convkit/bench/cupy_ref.py: "
                f"our im2col/col2im kernels, cupy.matmul; TF32 {'on' if cup.get('tf32') else 'off'}); "
                f"torch's own kernels for pools and ReLU."]
    return ["", f"References: cuDNN with TF32 off and on; torch's own kernels for pools and ReLU. "
            f"The CuPy im2col + cuBLAS reference was skipped: {cup.get('reason')}."]


def _markdown_gpu(report: Dict[str, object]) -> str:
    """markdown_report for a CUDA run: one row per (layer, batch, pass, algo, reference) with
    both sides' times, rates (TFLOP/s, GB/s) and fractions of the ceiling, reference-only rows,
    then the summary, the totals, failures."""
    commit = (report.get("commit") or "no git")[:10] + (" (dirty)" if report.get("dirty") else "")
    out = [
        f"convkit bench on {report['device']} ({report['gpu']}), batch {_batches_text(report)}, "
        f"{report['dtype']}, torch {report['torch']}, CUDA {report.get('cuda')}, cuDNN "
        f"{report.get('cudnn')}, commit {commit}, {report['date']}.",
        "",
        _ceiling_line(report) + " "
        f"Times: CUDA events, median of up to {report['repeat']} samples per side after "
        f"{_plural(report['warmup'], 'warm-up call')} (`samples` in the JSON; fewer under --budget), sides "
        f"interleaved. ratio < 1: convkit faster. Rate: TFLOP/s for convolutions (2 flops a "
        f"MAC; bwd_input and bwd_weight as many MACs as fwd, fwd+bwd 3x), GB/s for pools and "
        f"ReLU (bytes read + written); % ceil: of the copy bandwidth (pools, ReLU) or of torch.mm "
        f"with TF32 off (the cudnn tf32 reference: of torch.mm with TF32 on; "
        f"`ref_pct_of_fp32_ceiling` in the JSON has it against TF32 off). Spread: (slowest - "
        f"fastest sample) / median, the worse side. err: largest error against float64 over the "
        f"largest value (ref err: the reference's).",
    ]
    out += _reference_lines(report)
    out += _overhead_lines(report)
    out.append("")
    header = ["layer", "batch", "pass", "algo", "ref", "work", "ours ms", "ref ms", "ours/ref",
              "ours rate", "ref rate", "ours % ceil", "ref % ceil", "spread", "err", "ref err"]
    right = [False, True, False, False, False] + [True] * 11
    body = []
    for r in report["rows"]:
        status = r["status"]
        spread = r.get("spread") if r.get("spread") is not None else r.get("ref_spread")
        ref_ms = (_fmt(r.get("ref_ms"), ".4f") if r.get("ref_status", "ok") == "ok"
                  else f"**{r['ref_status']}**")
        body.append([
            r["layer"], str(r.get("batch")), r["pass"], r["algo"], _ref_cell(r), _fmt_work(r),
            f"{r['ours_ms']:.4f}" if status == "ok" else ("—" if status == "ref-only" else f"**{status}**"),
            ref_ms, _fmt(r.get("ratio"), ".2f"), _rate_cell(r, ""), _rate_cell(r, "ref_"),
            _pct(r.get("pct_of_ceiling")), _pct(r.get("ref_pct_of_ceiling")),
            _pct(None if spread is None else 100 * spread),
            _fmt(r.get("max_rel_err"), ".1e"), _fmt(r.get("ref_rel_err"), ".1e"),
        ])
    out += _pipe_table(header, body, right)
    if report.get("summary"):
        out += ["", "Geometric means (ours/ref < 1: convkit faster; % of ceiling as above):", ""]
        out += _summary_table(report["summary"])
    if report.get("totals"):
        out += ["", "GoogLeNet's layers that have a convkit kernel, added up (each at its fastest "
                "convkit algorithm; reference: cuDNN with TF32 off; lecture's and MobileNet's layers "
                "and ReLUs excluded):", ""]
        out += _pipe_table(["pass", "batch", "layers", "ours ms", "ref ms", "ours/ref"],
                           [[t["pass"], str(t.get("batch")), str(t["layers"]), f"{t['ours_ms']:.3f}",
                             f"{t['ref_ms']:.3f}", f"{t['ratio']:.2f}"] for t in report["totals"]],
                           [False, True, True, True, True, True])
    if report.get("ref_totals"):
        out += ["", "GoogLeNet's convolutions and pools as the references run them on this GPU, added up:", ""]
        out += _pipe_table(["pass", "batch", "reference", "layers", "ref ms"],
                           [[t["pass"], str(t.get("batch")), ref_label(t.get("ref", "cudnn"), t["ref_tf32"])
                             if t.get("ref") != "torch-cuda" else "torch-cuda",
                             str(t["layers"]), f"{t['ref_ms']:.3f}"] for t in report["ref_totals"]],
                           [False, True, False, True, True])
    out += _failure_lines(report)
    hb = [r for r in report["rows"] if r.get("ours_host_bound") or r.get("ref_host_bound")]
    if hb:
        out += ["", f"{len(hb)} rows had samples where the GPU waited for the host inside the "
                f"timed window (ours_host_bound / ref_host_bound in the JSON): their times include "
                f"host dispatch."]
    noisy = [r for r in report["rows"] if r.get("spread") is not None and r["spread"] > 0.25]
    if noisy:
        out += ["", f"{len(noisy)} of {len(report['rows'])} rows spread over 25% between samples: "
                f"rerun before quoting their ratios."]
    return "\n".join(out) + "\n"


def _summary_table(summary: Sequence[Dict[str, object]]) -> List[str]:
    return _pipe_table(
        ["group", "rows", "geomean ours/ref", "ours % ceil", "ref % ceil"],
        [[s["group"], str(s["n"]), _fmt(s.get("geomean_ratio"), ".2f"),
          _fmt(s.get("ours_pct_of_ceiling"), ".0f"), _fmt(s.get("ref_pct_of_ceiling"), ".0f")]
         for s in summary], [False, True, True, True, True])


def readme_report(report: Dict[str, object]) -> str:
    """The short form of a GPU run for README.md: the machine, the ceilings, per batch a matrix
    of geometric means (rows: convkit's algorithms and its best per layer; columns: pass x
    reference), how CuPy's im2col + cuBLAS compares with cuDNN, the totals; then, folded, one
    line per (layer, batch, pass): convkit's best algorithm and every side's TFLOP/s."""
    commit = (report.get("commit") or "no git")[:10] + (" (dirty)" if report.get("dirty") else "")
    c = report["ceilings"]
    out = [f"Measured {str(report['date'])[:10]} on {report['gpu']} ({report['device']}, CUDA "
           f"{report.get('cuda')}, cuDNN {report.get('cudnn')}, torch {report['torch']}), {report['dtype']}, "
           f"batch {_batches_text(report)}, convkit commit {commit}. Command: `convkit bench --device cuda "
           f"--json ...` (benchmarks/gpu_check.sh). FP32 ceiling: torch.mm {c['matmul_n']}^3 with TF32 off at "
           f"{c['matmul_gflops'] / 1e3:.1f} TFLOP/s"
           + (f" (TF32 on: {c['matmul_tf32_gflops'] / 1e3:.1f})" if c.get("matmul_tf32_gflops") else "")
           + f"; copy {c['copy_gbps']:,.0f} GB/s. Ratio = convkit time / reference time in the same "
           f"run, geometric mean over the convolution layers (< 1: convkit faster)."]
    out += _reference_lines(report)
    summ = [s for s in report.get("summary", []) if s.get("op") == "conv2d"]
    passes = list(dict.fromkeys(s["pass"] for s in summ))
    refs = list(dict.fromkeys((s["ref"], s["ref_tf32"]) for s in summ if s.get("kind") in ("algo", "best")))
    for b in dict.fromkeys(s["batch"] for s in summ):
        cols = [(p, ref) for p in passes for ref in refs]
        algos = list(dict.fromkeys(s["algo"] for s in summ if s["batch"] == b and s.get("kind") in ("algo", "best")))
        body = []
        for a in algos:
            cells = []
            for p, (ref, tf) in cols:
                hit = [s for s in summ if s["batch"] == b and s["pass"] == p and s["ref"] == ref
                       and s["ref_tf32"] == tf and s["algo"] == a and s.get("kind") in ("algo", "best")]
                cells.append(f"{hit[0]['geomean_ratio']:.2f} ({hit[0]['n']})" if hit else "—")
            body.append([a if a != "best" else "best per layer"] + cells)
        if body:
            out += ["", f"Batch {b}: geomean ours/ref (layers):", ""]
            out += _pipe_table(["algo"] + [f"{p} vs {ref_label(*ref)}" for p, ref in cols], body,
                               [False] + [True] * len(cols))
        vs = [s for s in summ if s["batch"] == b and s.get("kind") == "ref-vs-ref"]
        if vs:
            out += ["", f"Batch {b}, the classic alternative: CuPy im2col + cuBLAS time / cuDNN time: "
                    + "; ".join(f"{s['pass']} vs {ref_label(s['ref'], s['ref_tf32'])} {s['geomean_ratio']:.2f}"
                                for s in vs) + "."]
    if report.get("totals"):
        out += ["", "GoogLeNet's convolutions and pools added up, each at convkit's fastest algorithm: "
                + "; ".join(f"{t['pass']} batch {t.get('batch')}: {t['ours_ms']:.2f} ms against cuDNN's "
                            f"{t['ref_ms']:.2f} ms ({t['ratio']:.2f}, {t['layers']} layers)"
                            for t in report["totals"]) + "."]
    # per layer: the best convkit algorithm and each reference's rate
    conv = [r for r in report["rows"] if r["op"] == "conv2d"]
    keys = list(dict.fromkeys((r["layer"], r.get("batch"), r["pass"]) for r in conv))
    rcols = list(dict.fromkeys(_ref_key(r) for r in conv))
    body = []
    for layer, b, p in keys:
        rs = [r for r in conv if (r["layer"], r.get("batch"), r["pass"]) == (layer, b, p)]
        ok = [r for r in rs if r["status"] == "ok" and r.get("ours_ms")]
        best = min(ok, key=lambda r: r["ours_ms"]) if ok else None
        cells = [layer, str(b), p, best["algo"] if best else "—",
                 _tflops(best["gflops"]) if best else "—",
                 _pct(best.get("pct_of_ceiling")) if best else "—"]
        for key in rcols:
            rr = [r for r in rs if _ref_key(r) == key and r.get("ref_gflops")]
            cells.append(_tflops(rr[0]["ref_gflops"]) if rr else "—")
        cudnn = [r for r in rs if _ref_key(r) == ("cudnn", False) and r.get("ref_ms")]
        cells.append(f"{best['ours_ms'] / cudnn[0]['ref_ms']:.2f}" if best and cudnn else "—")
        body.append(cells)
    if body:
        out += ["", "<details><summary>Per layer: convkit's fastest algorithm and every side's TFLOP/s"
                "</summary>", ""]
        out += _pipe_table(["layer", "batch", "pass", "best algo", "ours TFLOP/s", "ours % fp32 ceil"]
                           + [f"{ref_label(*k)} TFLOP/s" for k in rcols] + ["ours/cudnn fp32"],
                           body, [False, True, False, False, True, True] + [True] * (len(rcols) + 1))
        out += ["", "</details>"]
    return "\n".join(out) + "\n"


# ---- command line -------------------------------------------------------------------------
def _csv(s: str) -> List[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _int_list(s: str) -> List[int]:
    try:
        out = [int(x) for x in _csv(s)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}")
    if not out:
        raise argparse.ArgumentTypeError("expected at least one batch size")
    return out


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu",
                   help="cpu, or cuda[:N]: the GPU against cuDNN (TF32 off and on), CuPy's "
                        "im2col + cuBLAS and torch's CUDA kernels [cpu]")
    p.add_argument("--batch", type=_int_list, default=None, metavar="N[,N...]",
                   help="batch size(s), e.g. 1,32 [cpu: 8, 2 with --quick; cuda: 1,32, 32 with --quick]")
    p.add_argument("--layers", default=None,
                   help="comma-separated globs or substrings of layer names, e.g. '3a.*,stem.*' "
                        "(`convkit layers` lists them) [all; a few with --quick]")
    p.add_argument("--algos", type=_csv, default=list(CONV_BENCH_ALGOS),
                   help="conv algorithms, each run where it applies: direct,im2col,1x1,auto "
                        "[direct,im2col,1x1]; pools and ReLU always run their one kernel")
    p.add_argument("--passes", type=_csv, default=None,
                   help="of fwd, bwd_input, bwd_weight (convolutions only), fwd+bwd "
                        "[cpu: fwd,fwd+bwd; cuda: fwd,bwd_input,bwd_weight]")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"] + list(HALF_DTYPES),
                   help="float32 [default] or float64; float16 and bfloat16 on cuda only "
                        "(convolutions in half run where convkit's CUDA module takes them: "
                        "reference-only rows until then)")
    p.add_argument("--quick", action="store_true",
                   help="a few layers, few samples (batch 2 on the CPU): a smoke run of a minute or two")
    p.add_argument("--repeat", type=int, default=None,
                   help="timed samples per case [cpu: 7, 3 quick; cuda: 15, 7 quick]")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up samples per case [cpu: 2, 1 quick; cuda: 2, 1 quick]")
    p.add_argument("--budget", type=float, default=None, metavar="S",
                   help="wall seconds the run may take: on cuda the samples per case shrink "
                        "(down to 5) to fit; the run stops cleanly, with what it has, when the time "
                        "is spent [no limit]")
    p.add_argument("--plan", action="store_true",
                   help="print what the run would time (groups, callables, samples) and an "
                        "estimate of its length, then exit; needs no GPU")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for both torch and convkit on the CPU [torch's default]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the report as JSON")
    p.add_argument("--markdown", metavar="PATH", help="also write the Markdown table to PATH")
    p.add_argument("--readme", metavar="PATH",
                   help="also write the short form for README.md (GPU runs: geomean matrices, "
                        "per-layer TFLOP/s) to PATH")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    q = args.quick
    kind = device_kind(args.device)
    for name in ("repeat", "warmup", "threads"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "warmup" else 1):
            raise SystemExit(f"convkit bench: --{name} must be positive, got {v}")
    if args.batch is not None and any(b < 1 for b in args.batch):
        raise SystemExit(f"convkit bench: --batch must be positive, got {args.batch}")
    if getattr(args, "budget", None) is not None and not args.budget > 0:
        raise SystemExit(f"convkit bench: --budget must be positive seconds, got {args.budget}")
    known = CONV_BENCH_ALGOS + ("auto",) + (CPU_ONLY_ALGOS if device_kind(args.device) == "cpu" else ())
    bad = [a for a in args.algos if a not in known]
    if bad:
        raise SystemExit(f"convkit bench: unknown --algos {bad} on {args.device}; choose from {', '.join(known)}")
    batches, q_batches, repeat, q_repeat, warmup, q_warmup, passes = DEFAULTS[kind]
    passes = args.passes if args.passes is not None else list(passes)
    bad = [p for p in passes if p not in ALL_PASSES]
    if bad or not passes:
        raise SystemExit(f"convkit bench: unknown --passes {bad}; choose from {', '.join(ALL_PASSES)}")
    if args.dtype in HALF_DTYPES and kind != "cuda":
        raise SystemExit(f"convkit bench: --dtype {args.dtype} runs on --device cuda only "
                         f"(the CPU kernels take float32 and float64)")
    quick_layers = QUICK_LAYERS_CUDA if kind == "cuda" else QUICK_LAYERS
    layers = args.layers if args.layers is not None else (",".join(quick_layers) if q else None)
    try:
        select_layers(layers, device=args.device)
    except ValueError as e:
        raise SystemExit(f"convkit bench: {e}")
    batches = list(args.batch or (q_batches if q else batches))
    return BenchConfig(
        device=args.device, batch=batches[0], batches=batches, layers=layers,
        algos=args.algos, passes=passes, dtype=args.dtype,
        warmup=args.warmup if args.warmup is not None else (q_warmup if q else warmup),
        repeat=args.repeat or (q_repeat if q else repeat), threads=args.threads, seed=args.seed,
        progress=not args.no_progress, quick=q, budget_s=getattr(args, "budget", None))


def _finite(obj):
    """The report with inf/NaN floats (an error that could not be measured) as null: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def write_outputs(report: Dict[str, object], json_path: Optional[str],
                  markdown_path: Optional[str], readme_path: Optional[str] = None) -> str:
    """The Markdown report (returned) to markdown_path, strict JSON to json_path, and for a GPU
    run readme_report's short form to readme_path."""
    md = markdown_report(report)
    for path, text in ((markdown_path, md),
                       (readme_path, readme_report(report) if readme_path and report["device"] != "cpu" else md)):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        with open(json_path, "w") as f:
            json.dump(_finite(report), f, indent=1, allow_nan=False)
            f.write("\n")
    return md


def bench_main(args: argparse.Namespace) -> int:
    """Run `convkit bench`; exit status 1 when any case failed its check or raised, or the run
    was interrupted. SIGTERM (`timeout`) stops it like Ctrl-C: what ran is still written."""
    cfg = config_from_args(args)
    if getattr(args, "plan", False):
        sys.stdout.write(plan_text(plan_run(cfg, device_kind(cfg.device)), cfg))
        return 0
    t0 = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        report = run_bench(cfg)
    finally:
        signal.signal(signal.SIGTERM, previous)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    md = write_outputs(report, args.json, args.markdown, getattr(args, "readme", None))
    sys.stdout.write(md)
    n_bad, n_bad_ref = n_failed(report)
    n_ref = sum(r["status"] == "ref-only" for r in report["rows"])
    budget_stop = bool(report.get("interrupted")) and "budget" in str(report.get("interrupted"))
    print(f"convkit bench: {_plural(len(report['rows']), 'row')} in {report['wall_s']} s"
          + (f" ({n_ref} reference-only)" if n_ref else "")
          + (f", {n_bad} case(s) FAILED" if n_bad else "")
          + (f", {n_bad_ref} reference case(s) FAILED" if n_bad_ref else "")
          + (", stopped by --budget" if budget_stop else
             ", INTERRUPTED" if report.get("interrupted") else "")
          + (f"; JSON in {args.json}" if args.json else ""), file=sys.stderr)
    # A run that --budget ended is not a failure (what ran is reported); a kill or Ctrl-C is.
    return 1 if (n_bad or n_bad_ref or (report.get("interrupted") and not budget_stop)) else 0


def list_layers_main(args: argparse.Namespace) -> int:
    """`convkit layers`: the layer table with shapes and op counts at --batch (every layer, the
    GPU-only ones included)."""
    layers = select_layers(args.layers, device="cuda")
    body = []
    for lay in layers:
        c, h, w = lay.input_shape
        out = lay.output_shape(args.batch)
        if lay.is_conv:
            cs = lay.conv
            params = (f"{cs.kernel}x{cs.kernel}/{cs.stride} pad {cs.padding}, K={cs.out_channels}"
                      + (f", groups {cs.groups}" if cs.groups > 1 else ""))
            work = f"{lay.macs(args.batch) / 1e6:,.1f} M MACs"
        elif lay.is_relu:
            params = f"elementwise, batch {lay.fixed_batch}" if lay.fixed_batch else "elementwise"
            work = f"{lay.bytes(args.batch) / 1e6:,.2f} MB"
        else:
            p = lay.pool
            params = (f"{p.kernel}x{p.kernel}/{p.stride} pad {p.padding}"
                      + (", ceil_mode" if p.ceil_mode else ""))
            work = f"{lay.bytes(args.batch) / 1e6:,.2f} MB"
        body.append([lay.name, lay.op, f"{c}x{h}x{w}", params, f"{out[1]}x{out[2]}x{out[3]}",
                     work, ",".join(lay.algos())])
    lines = _pipe_table(["layer", "op", "input CxHxW", "params", "output", f"fwd at N={args.batch}",
                         "algos"], body, [False, False, True, False, True, True, False])
    print("\n".join(lines))
    return 0
