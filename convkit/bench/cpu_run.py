"""`convkit bench` on the CPU: for each (layer, pass, algo), check convkit's result once against
torch in float64, then time convkit and torch.nn.functional on the same inputs, interleaved
(ours, ref, ours, ref, ...), median of --repeat samples after --warmup, both at the same thread
count. The hardware ceilings are measured in the same run. Rows follow DESIGN.md "Benchmark
rows"."""
from __future__ import annotations

import datetime as _dt
import os
import statistics
import sys
import time
from typing import Dict, List, Optional

from convkit.bench.ceilings import GEMM_KEYS, call_overhead, measure_ceilings
from convkit.bench.checks import check_layer
from convkit.bench.config import ITEMSIZE, BenchConfig, algos_built_for, config_batches
from convkit.bench.env import cpu_model_name, git_commit, set_threads
from convkit.bench.layer import Layer, LayerInputs
from convkit.bench.layers import LAYERS, select_layers
from convkit.bench.plan import Case, plan_cases
from convkit.bench.summary import summarize, totals
from convkit.bench.tables import plural
from convkit.bench.timing import time_interleaved

__all__ = ["run_case", "run_bench_cpu"]


def _rate(layer: Layer, work: int, ms: Optional[float]) -> Optional[float]:
    """GFLOP/s (2 flops per MAC) for a convolution, GB/s for a pool or a ReLU."""
    if not ms:
        return None
    per_s = work / (ms / 1e3) / 1e9
    return 2 * per_s if layer.is_conv else per_s


def run_case(case: Case, inputs: LayerInputs, cfg: BenchConfig, ceilings: Dict[str, float],
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


def run_bench_cpu(cfg: BenchConfig, log=sys.stderr) -> Dict[str, object]:
    """Run the benchmark on the CPU; returns the report (DESIGN.md "Benchmark rows") with a
    summary."""
    import torch
    import convkit
    import convkit.functional  # noqa: F401  (fail here, before any timing, if it is missing)
    from tqdm import tqdm

    t_start = time.perf_counter()
    layers = select_layers(cfg.layers, device=cfg.device)
    cases = plan_cases(layers, cfg.algos, cfg.passes, algos_built_for("cpu"))
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
          f"{plural(threads, 'thread')}, batch {','.join(map(str, batches))}, {cfg.dtype}; "
          f"measuring ceilings...", file=log, flush=True)
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        print(f"convkit bench: warning: load average {load:.1f} on {os.cpu_count()} CPUs before "
              f"the run: other processes compete for the cores, times will be noisy",
              file=log, flush=True)
    report["ceilings"] = ceilings = measure_ceilings(cfg.dtype, cfg.quick)
    report.update({k: ceilings[k] for k in GEMM_KEYS if k in ceilings})
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
