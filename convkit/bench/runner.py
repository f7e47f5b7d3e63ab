"""`convkit bench`: time convkit's kernels against torch on GoogLeNet's layers, in one run.

For each (layer, pass, algo): check convkit's result once against torch in float64, then time
convkit and torch.nn.functional on the same inputs, interleaved (ours, ref, ours, ref, ...),
median of --repeat samples after --warmup, both at the same thread count. The hardware
ceilings (matrix-product rate of a large torch.mm, copy bandwidth) are measured in the same
run. Rows follow DESIGN.md "Benchmark rows".

This file runs the CPU benchmark and holds what both devices share (configuration, summary,
tables, command line); --device cuda runs through convkit/bench/gpu.py (CUDA events, cold L2,
cuDNN with TF32 off and on).
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

from convkit.bench.layers import (CONV_BENCH_ALGOS, LAYERS, PASSES, QUICK_LAYERS, Layer,
                                  LayerInputs, select_layers)

__all__ = ["BenchConfig", "run_bench", "time_interleaved", "check_layer", "measure_ceilings",
           "markdown_report", "summarize", "totals", "add_bench_arguments", "bench_main",
           "device_kind", "write_outputs"]

# A layer's result passes when its error relative to the largest reference magnitude is within
# this, or within 10x torch's own error in the same dtype (both against a float64 reference).
TOLERANCE = {"float32": 1e-4, "float64": 1e-10, "float16": 2e-3, "bfloat16": 1.6e-2}
ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
HALF_DTYPES = ("float16", "bfloat16")
# Defaults by device: (batch, quick batch, repeat, quick repeat, warmup, quick warmup). A CPU
# sample loops the op for >= 2 ms; a GPU sample is one call between CUDA events.
DEFAULTS = {"cpu": (8, 2, 7, 3, 2, 1), "cuda": (32, 32, 25, 10, 3, 2)}
# Each timing sample runs the op enough times to last at least this long (short pools).
MIN_SAMPLE_S = 0.002
MAX_INNER = 200


@dataclass
class BenchConfig:
    device: str = "cpu"
    batch: int = 8
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
    return {"matmul_gflops": 2 * n ** 3 / mm_s / 1e9, "matmul_n": n,
            "copy_gbps": moved / cp_s / 1e9, "copy_bytes": moved}


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
                applicable = layer.algos() + ["auto"]
                run = [a for a in algos if a in applicable]
            else:
                run = layer.algos()   # pools and ReLU: their one kernel
            cases += [_Case(layer, pass_, a) for a in run]
    return cases


def _rate(layer: Layer, work: int, ms: Optional[float]) -> Optional[float]:
    """GFLOP/s (2 flops per MAC) for a convolution, GB/s for a pool or a ReLU."""
    if not ms:
        return None
    per_s = work / (ms / 1e3) / 1e9
    return 2 * per_s if layer.is_conv else per_s


def run_case(case: _Case, inputs: LayerInputs, cfg: BenchConfig, ceilings: Dict[str, float],
             ref_name: str = "torch-cpu") -> Dict[str, object]:
    """Check, then time one (layer, pass, algo) against torch. Returns one benchmark row."""
    layer, pass_, algo = case.layer, case.pass_, case.algo
    work = layer.work(cfg.batch, pass_, ITEMSIZE[cfg.dtype])
    row: Dict[str, object] = {
        "op": layer.op, "layer": layer.name, "pass": pass_, "algo": algo, "dtype": cfg.dtype,
        "batch": layer.batch_for(cfg.batch), ("macs" if layer.is_conv else "bytes"): work,
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

    layers = select_layers(cfg.layers, device=cfg.device)
    cases = plan_cases(layers, cfg.algos, cfg.passes)
    if not cases:
        raise SystemExit("convkit bench: nothing to run (check --layers, --algos, --passes)")
    threads = set_threads(cfg.threads or torch.get_num_threads())
    dtype = getattr(torch, cfg.dtype)
    commit, dirty = git_commit()
    report: Dict[str, object] = {
        "device": cfg.device, "cpu": cpu_model_name(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit, "dirty": dirty, "torch": torch.__version__, "threads": threads,
        "batch": cfg.batch, "dtype": cfg.dtype, "warmup": cfg.warmup, "repeat": cfg.repeat,
    }
    try:
        from convkit import _cpu
        report["convkit_simd"] = _cpu.simd_isa()
    except Exception:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    report["loadavg_start"] = load
    print(f"convkit bench: {len(cases)} cases on {report['cpu']}, {_plural(threads, 'thread')}, "
          f"batch {cfg.batch}, {cfg.dtype}; measuring ceilings...", file=log, flush=True)
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        print(f"convkit bench: warning: load average {load:.1f} on {os.cpu_count()} CPUs before "
              f"the run: other processes compete for the cores, times will be noisy",
              file=log, flush=True)
    report["ceilings"] = ceilings = measure_ceilings(cfg.dtype, cfg.quick)
    from convkit.bench.gpu import call_overhead
    try:
        report["call_overhead_us"] = call_overhead("cpu", calls=100 if cfg.quick else 300)
    except Exception as e:  # noqa: BLE001 - a broken kernel costs this figure only
        report["call_overhead_us"] = {"errors": {"all": f"{type(e).__name__}: {e}"}}
    rows: List[Dict[str, object]] = []
    use_backend = getattr(convkit, "use_backend", None)
    bar = tqdm(total=len(cases), disable=not cfg.progress, file=log, unit="case",
               dynamic_ncols=True)
    try:
        for layer in layers:
            for pass_ in cfg.passes:
                todo = [c for c in cases if c.layer is layer and c.pass_ == pass_]
                if not todo:
                    continue
                # Seeded by the layer's place in the full table: the same inputs whatever
                # --layers selects, and the same as the pytest-benchmark suites use.
                inputs = layer.make_inputs(cfg.batch, dtype, seed=cfg.seed + LAYERS.index(layer),
                                           requires_grad=(pass_ != "fwd"))
                for case in todo:
                    bar.set_description(f"{layer.name} {pass_} {case.algo}")
                    if use_backend is not None:
                        with use_backend(cfg.device):
                            row = run_case(case, inputs, cfg, ceilings)
                    else:
                        row = run_case(case, inputs, cfg, ceilings)
                    rows.append(row)
                    if row["status"] != "ok":
                        tqdm.write(f"!!! {row['status']} {layer.name} {pass_} algo={case.algo}: "
                                   f"{row['error']}", file=log)
                    bar.update(1)
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


def _best_per_layer(rows: Sequence[Dict[str, object]]) -> Dict[Tuple, Dict[str, object]]:
    """Per (layer, pass, reference setting): convkit's fastest algorithm against the reference's
    fastest time on that layer. The reference was timed beside each algorithm, so both sides are
    a minimum over as many medians: picking our best of three noisy numbers against one of the
    reference's would flatter us."""
    groups: Dict[Tuple, List[Dict[str, object]]] = {}
    for r in _timed(rows):
        groups.setdefault((r["layer"], r["pass"], r.get("ref_tf32")), []).append(r)
    best = {}
    for k, rs in groups.items():
        fastest = min(rs, key=lambda r: r["ours_ms"])
        ref_ms = min(r["ref_ms"] for r in rs)
        best[k] = dict(fastest, ref_ms=ref_ms, ratio=fastest["ours_ms"] / ref_ms)
    return best


def _ref_label(setting) -> str:
    return {None: "", False: " vs cudnn fp32", True: " vs cudnn tf32"}[setting]


def summarize(rows: Sequence[Dict[str, object]], gpu: bool = False) -> List[Dict[str, object]]:
    """Geometric means of ours/reference over groups of rows (< 1: convkit is faster): per pass,
    each conv algorithm, the best algorithm per layer, the 1x1 layers, the pools, the ReLUs.
    gpu=True also gives each group the geometric mean of the fraction of the ceiling that ours
    and the reference reach (ours_pct_of_ceiling, ref_pct_of_ceiling: of the copy bandwidth for
    pools and ReLU, of the torch.mm rate for convolutions), splits convolutions by TF32 setting
    of the reference, and adds groups for reference-only convolution rows (no convkit kernel
    yet: only the reference's fraction of the ceiling)."""
    import convkit.bench.layers as L
    by_name = L.layers_by_name()
    ok = _timed(rows)
    out: List[Dict[str, object]] = []

    def add(label, rs):
        if not rs:
            return
        entry = {"group": label, "geomean_ratio": _geomean([r["ratio"] for r in rs]), "n": len(rs)}
        if gpu:
            entry["ours_pct_of_ceiling"] = _geomean([r.get("pct_of_ceiling") for r in rs])
            entry["ref_pct_of_ceiling"] = _geomean([r.get("ref_pct_of_ceiling") for r in rs])
        if entry["geomean_ratio"] is not None:
            out.append(entry)

    def best_per_layer(rs):
        return list(_best_per_layer(rs).values())

    passes = list(dict.fromkeys(r["pass"] for r in rows))
    settings = list(dict.fromkeys(r.get("ref_tf32") for r in rows if r["op"] == "conv2d")) or [None]
    for p in passes:
        for s in settings:
            cp = [r for r in ok if r["op"] == "conv2d" and r["pass"] == p and r.get("ref_tf32") == s]
            suffix = _ref_label(s)
            for a in dict.fromkeys(r["algo"] for r in cp):
                add(f"conv {p}, algo={a}{suffix}", [r for r in cp if r["algo"] == a])
            add(f"conv {p}, best algo per layer{suffix}", best_per_layer(cp))
            add(f"1x1 convs {p}, best algo per layer{suffix}",
                best_per_layer([r for r in cp if r["layer"] in by_name and by_name[r["layer"]].is_1x1]))
            if gpu:
                only = [r for r in rows if r["op"] == "conv2d" and r["pass"] == p
                        and r.get("ref_tf32") == s and r.get("status") == "ref-only" and r.get("ref_ms")]
                if only:
                    out.append({"group": f"cudnn conv {p}{' tf32' if s else ''} (no convkit kernel)",
                                "geomean_ratio": None, "n": len(only), "ours_pct_of_ceiling": None,
                                "ref_pct_of_ceiling": _geomean([r.get("ref_pct_of_ceiling") for r in only])})
        add(f"pools {p}", [r for r in ok if r["op"] in ("max_pool2d", "avg_pool2d") and r["pass"] == p])
        add(f"relu {p}", [r for r in ok if r["op"] == "relu" and r["pass"] == p])
    return out


def totals(rows: Sequence[Dict[str, object]]) -> List[Dict[str, object]]:
    """Per pass, the time of GoogLeNet's convolution and pooling layers (the lecture's and the
    ReLUs excluded) added up, each layer at its fastest convkit algorithm, against the
    reference's fastest time for the same layers (on the GPU: cuDNN with TF32 off): how a whole
    network's convolutions and pools would fare. Only layers whose every case passed count (on
    the GPU, convolutions without a convkit kernel are skipped layers)."""
    out = []
    for p in dict.fromkeys(r["pass"] for r in rows):
        rs = [r for r in rows if r["pass"] == p and not r["layer"].startswith("lecture.")
              and r["op"] != "relu" and not r.get("ref_tf32")]
        bad = {r["layer"] for r in rs if r.get("status") != "ok"}
        best = _best_per_layer([r for r in rs if r["layer"] not in bad])
        if best:
            ours = sum(r["ours_ms"] for r in best.values())
            ref = sum(r["ref_ms"] for r in best.values())
            out.append({"pass": p, "layers": len(best), "ours_ms": ours, "ref_ms": ref,
                        "ratio": ours / ref, "skipped_layers": sorted(bad)})
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
        f"batch {report['batch']}, {report['dtype']}, torch {report['torch']}, commit {commit}, "
        f"{report['date']}.",
        "",
        f"Ceilings measured in the same run: torch.mm {c['matmul_n']}x{c['matmul_n']} "
        f"{c['matmul_gflops']:.1f} GFLOP/s; copy {c['copy_gbps']:.1f} GB/s (read + write). "
        f"Times are medians of {report['repeat']} interleaved samples; ratio < 1: convkit faster. "
        f"Rate: GFLOP/s for convolutions (fwd+bwd = 3x the forward's MACs), GB/s for pools and "
        f"ReLU; % of ceiling: of the torch.mm rate (convolutions) or the copy bandwidth (pools, "
        f"ReLU). "
        f"Spread: (slowest - fastest sample) / median, the worse of the two sides; "
        f"rel err: convkit's largest error against torch in float64, over the largest value.",
        "",
    ]
    header = ["layer", "pass", "algo", "work", "ours ms", "torch ms", "ours/torch", "ours rate",
              "% ceiling", "spread", "rel err"]
    right = [False, False, False, True, True, True, True, True, True, True, True]
    body = []
    for r in report["rows"]:
        if r["status"] != "ok":
            body.append([r["layer"], r["pass"], r["algo"], _fmt_work(r), f"**{r['status']}**",
                         _fmt(r["ref_ms"], ".3f"), "—", "—", "—", "—",
                         _fmt(r.get("max_rel_err"), ".1e")])
            continue
        rate = (f"{r['gflops']:.1f} GFLOP/s" if "gflops" in r else f"{r['gbps']:.1f} GB/s")
        body.append([r["layer"], r["pass"], r["algo"], _fmt_work(r), f"{r['ours_ms']:.3f}",
                     f"{r['ref_ms']:.3f}", f"{r['ratio']:.2f}", rate,
                     f"{r['pct_of_ceiling']:.0f}%", f"{100 * r['spread']:.0f}%",
                     _fmt(r.get("max_rel_err"), ".1e")])
    out += _pipe_table(header, body, right)
    if report.get("summary"):
        out += ["", "Geometric mean of ours/torch:", ""]
        out += _pipe_table(["group", "rows", "geomean ours/torch"],
                           [[s["group"], str(s["n"]), f"{s['geomean_ratio']:.2f}"]
                            for s in report["summary"]], [False, True, True])
    if report.get("totals"):
        out += ["", "GoogLeNet's layers added up (each at its fastest convkit algorithm; the "
                "lecture's layers excluded):", ""]
        out += _pipe_table(["pass", "layers", "ours ms", "torch ms", "ours/torch"],
                           [[t["pass"], str(t["layers"]), f"{t['ours_ms']:.2f}",
                             f"{t['ref_ms']:.2f}", f"{t['ratio']:.2f}"] for t in report["totals"]],
                           [False, True, True, True, True])
    out += _overhead_lines(report)
    out += _failure_lines(report)
    noisy = [r for r in report["rows"] if r["status"] == "ok" and r["spread"] > 0.25]
    if noisy:
        out += ["", f"{len(noisy)} of {len(report['rows'])} cases spread over 25% between "
                f"samples (load average {report.get('loadavg_start') or 0:.1f} at the start): "
                f"rerun on a quiet machine before quoting their ratios."]
    return "\n".join(out) + "\n"


def _failure_lines(report: Dict[str, object]) -> List[str]:
    out = []
    if report.get("interrupted"):
        out += ["", f"**Interrupted**: {report['interrupted']}; the tables cover what ran."]
    bad = [r for r in report["rows"] if r["status"] not in ("ok", "ref-only")]
    if bad:
        out += ["", f"**{len(bad)} case(s) failed** (no time reported for them):", ""]
        out += [f"- {r['layer']} {r['pass']} algo={r['algo']}: {r['status']}: {r.get('error')}"
                for r in bad]
    return out


def _ref_cell(r) -> str:
    return r["ref"] + (" tf32" if r.get("ref_tf32") else "")


def _markdown_gpu(report: Dict[str, object]) -> str:
    """markdown_report for a CUDA run: reference column (cudnn, cudnn tf32, torch-cuda), both
    sides' rates and fractions of the ceiling, reference-only rows."""
    c = report["ceilings"]
    t = report.get("timing", {})
    commit = (report.get("commit") or "no git")[:10] + (" (dirty)" if report.get("dirty") else "")
    mm = f"torch.mm {c['matmul_n']}^3 {c['matmul_dtype']} {c['matmul_gflops'] / 1e3:.1f} TFLOP/s"
    extra = [f"{k} {c[key] / 1e3:.1f}" for k, key in (("tf32", "matmul_tf32_gflops"),
             ("fp16", "matmul_fp16_gflops"), ("bf16", "matmul_bf16_gflops")) if c.get(key)]
    out = [
        f"convkit bench on {report['device']} ({report['gpu']}), batch {report['batch']}, "
        f"{report['dtype']}, torch {report['torch']}, CUDA {report.get('cuda')}, cuDNN "
        f"{report.get('cudnn')}, commit {commit}, {report['date']}.",
        "",
        f"Ceilings measured in the same run: copy {c['copy_gbps']:.0f} GB/s (read + write, best; "
        f"median {c.get('copy_gbps_median', 0):.0f}); {mm} with TF32 off"
        + (f" ({', '.join(extra)} TFLOP/s)" if extra else "") + ". "
        f"Times: CUDA events, median of {report['repeat']} samples per side after "
        f"{report['warmup']} warm-up calls, sides interleaved, L2 flushed before each sample "
        f"(read of {t.get('l2_flush_bytes', 0) / 2 ** 20:.0f} MiB); cuDNN's algorithm chosen by "
        f"cudnn.benchmark. ratio < 1: convkit faster. Rate: GFLOP/s for convolutions "
        f"(fwd+bwd = 3x the forward's MACs), GB/s for pools and ReLU (bytes read + written); "
        f"% ceil: of the copy bandwidth (pools, ReLU) or of torch.mm with TF32 off (the tf32 "
        f"reference: with TF32 on). Spread: (slowest - fastest sample) / median, the worse side. "
        f"err: largest error against float64 over the largest value (ref err: the reference's).",
    ]
    out += _overhead_lines(report)
    if report.get("skipped_layers"):
        sk = report["skipped_layers"]
        out += ["", f"Not run: {len(sk['layers'])} convolution layers ({sk['reason']})."]
    out.append("")
    header = ["layer", "pass", "algo", "ref", "work", "ours ms", "ref ms", "ours/ref", "ours rate",
              "ref rate", "ours % ceil", "ref % ceil", "spread", "err", "ref err"]
    right = [False, False, False, False] + [True] * 11
    body = []
    for r in report["rows"]:
        unit = "GFLOP/s" if "macs" in r else "GB/s"
        rate_key = "gflops" if "macs" in r else "gbps"
        status = r["status"]
        spread = r.get("spread") if r.get("spread") is not None else r.get("ref_spread")
        body.append([
            r["layer"], r["pass"], r["algo"], _ref_cell(r), _fmt_work(r),
            f"{r['ours_ms']:.4f}" if status == "ok" else ("—" if status == "ref-only" else f"**{status}**"),
            _fmt(r.get("ref_ms"), ".4f"), _fmt(r.get("ratio"), ".2f"),
            _fmt(r.get(rate_key), ",.0f") + (f" {unit}" if r.get(rate_key) else ""),
            _fmt(r.get("ref_" + rate_key), ",.0f") + (f" {unit}" if r.get("ref_" + rate_key) else ""),
            _fmt(r.get("pct_of_ceiling"), ".0f") + ("%" if r.get("pct_of_ceiling") is not None else ""),
            _fmt(r.get("ref_pct_of_ceiling"), ".0f") + ("%" if r.get("ref_pct_of_ceiling") is not None else ""),
            _fmt(None if spread is None else 100 * spread, ".0f") + ("%" if spread is not None else ""),
            _fmt(r.get("max_rel_err"), ".1e"), _fmt(r.get("ref_rel_err"), ".1e"),
        ])
    out += _pipe_table(header, body, right)
    if report.get("summary"):
        out += ["", "Geometric means (ours/ref < 1: convkit faster; % of ceiling as above):", ""]
        out += _pipe_table(
            ["group", "rows", "geomean ours/ref", "ours % ceil", "ref % ceil"],
            [[s["group"], str(s["n"]), _fmt(s.get("geomean_ratio"), ".2f"),
              _fmt(s.get("ours_pct_of_ceiling"), ".0f"), _fmt(s.get("ref_pct_of_ceiling"), ".0f")]
             for s in report["summary"]], [False, True, True, True, True])
    if report.get("totals"):
        out += ["", "GoogLeNet's layers that have a convkit kernel, added up (each at its fastest "
                "convkit algorithm; reference with TF32 off; lecture's layers and ReLUs excluded):", ""]
        out += _pipe_table(["pass", "layers", "ours ms", "ref ms", "ours/ref"],
                           [[t["pass"], str(t["layers"]), f"{t['ours_ms']:.3f}",
                             f"{t['ref_ms']:.3f}", f"{t['ratio']:.2f}"] for t in report["totals"]],
                           [False, True, True, True, True])
    if report.get("ref_totals"):
        out += ["", "GoogLeNet's convolutions and pools as torch runs them on this GPU, added up:", ""]
        out += _pipe_table(["pass", "reference", "layers", "ref ms"],
                           [[t["pass"], {None: "torch", False: "cudnn fp32", True: "cudnn tf32"}[t["ref_tf32"]],
                             str(t["layers"]), f"{t['ref_ms']:.3f}"] for t in report["ref_totals"]],
                           [False, False, True, True])
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


# ---- command line -------------------------------------------------------------------------
def _csv(s: str) -> List[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu",
                   help="cpu, or cuda[:N]: the GPU against cuDNN / torch's CUDA kernels [cpu]")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size N [cpu: 8, 2 with --quick; cuda: 32]")
    p.add_argument("--layers", default=None,
                   help="comma-separated globs or substrings of layer names, e.g. '3a.*,stem.*' "
                        "(`convkit layers` lists them) [all; a few with --quick]")
    p.add_argument("--algos", type=_csv, default=list(CONV_BENCH_ALGOS),
                   help="conv algorithms, each run where it applies: direct,im2col,1x1,auto "
                        "[direct,im2col,1x1]; pools and ReLU always run their one kernel")
    p.add_argument("--passes", type=_csv, default=list(PASSES),
                   help="fwd and/or fwd+bwd [fwd,fwd+bwd]")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"] + list(HALF_DTYPES),
                   help="float32 [default] or float64; float16 and bfloat16 on cuda only, where "
                        "they run the pools and ReLUs (convolutions: float32 and float64)")
    p.add_argument("--quick", action="store_true",
                   help="a few layers, few samples (batch 2 on the CPU): a smoke run of a minute or two")
    p.add_argument("--repeat", type=int, default=None,
                   help="timed samples per case [cpu: 7, 3 quick; cuda: 25, 10 quick]")
    p.add_argument("--warmup", type=int, default=None,
                   help="warm-up samples per case [cpu: 2, 1 quick; cuda: 3, 2 quick]")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for both torch and convkit on the CPU [torch's default]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the report as JSON")
    p.add_argument("--markdown", metavar="PATH", help="also write the Markdown table to PATH")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    q = args.quick
    kind = device_kind(args.device)
    for name in ("batch", "repeat", "warmup", "threads"):
        v = getattr(args, name)
        if v is not None and v < (0 if name == "warmup" else 1):
            raise SystemExit(f"convkit bench: --{name} must be positive, got {v}")
    bad = [a for a in args.algos if a not in CONV_BENCH_ALGOS + ("auto",)]
    if bad:
        raise SystemExit(f"convkit bench: unknown --algos {bad}; choose from "
                         f"{', '.join(CONV_BENCH_ALGOS + ('auto',))}")
    bad = [p for p in args.passes if p not in PASSES]
    if bad:
        raise SystemExit(f"convkit bench: unknown --passes {bad}; choose from {', '.join(PASSES)}")
    if args.dtype in HALF_DTYPES and kind != "cuda":
        raise SystemExit(f"convkit bench: --dtype {args.dtype} runs on --device cuda only "
                         f"(the CPU kernels take float32 and float64)")
    layers = args.layers if args.layers is not None else (",".join(QUICK_LAYERS) if q else None)
    try:
        select_layers(layers, device=args.device)
    except ValueError as e:
        raise SystemExit(f"convkit bench: {e}")
    batch, q_batch, repeat, q_repeat, warmup, q_warmup = DEFAULTS[kind]
    return BenchConfig(
        device=args.device, batch=args.batch or (q_batch if q else batch), layers=layers,
        algos=args.algos, passes=args.passes, dtype=args.dtype,
        warmup=args.warmup if args.warmup is not None else (q_warmup if q else warmup),
        repeat=args.repeat or (q_repeat if q else repeat), threads=args.threads, seed=args.seed,
        progress=not args.no_progress, quick=q)


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
                  markdown_path: Optional[str]) -> str:
    """The Markdown report (returned) to markdown_path and strict JSON to json_path."""
    md = markdown_report(report)
    if markdown_path:
        os.makedirs(os.path.dirname(os.path.abspath(markdown_path)), exist_ok=True)
        with open(markdown_path, "w") as f:
            f.write(md)
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
    t0 = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        report = run_bench(cfg)
    finally:
        signal.signal(signal.SIGTERM, previous)
    report["wall_s"] = round(time.perf_counter() - t0, 1)
    md = write_outputs(report, args.json, args.markdown)
    sys.stdout.write(md)
    n_bad = sum(r["status"] not in ("ok", "ref-only") for r in report["rows"])
    n_ref = sum(r["status"] == "ref-only" for r in report["rows"])
    print(f"convkit bench: {_plural(len(report['rows']), 'case')} in {report['wall_s']} s"
          + (f" ({n_ref} reference-only)" if n_ref else "")
          + (f", {n_bad} FAILED" if n_bad else "")
          + (", INTERRUPTED" if report.get("interrupted") else "")
          + (f"; JSON in {args.json}" if args.json else ""), file=sys.stderr)
    return 1 if (n_bad or report.get("interrupted")) else 0


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
            params = f"{cs.kernel}x{cs.kernel}/{cs.stride} pad {cs.padding}, K={cs.out_channels}"
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
