"""`convkit bench --device cuda[:N]`: every selected layer at each batch size (default 1 and 32)
and for each kernel direction (fwd, bwd_input, bwd_weight) against cuDNN with TF32 off and on,
CuPy's im2col + cuBLAS and torch's CUDA kernels, timed with CUDA events on a cold L2
(convkit/bench/timing.py), with the device's ceilings and per-call overhead measured in the same
run.

Under a time budget (--budget, which benchmarks/gpu_check.sh sets from its slot) each group
(layer, pass, batch) gets its share of the time left, less what a group spends outside its
samples; the warm-up calls, waited for, tell what one round of samples costs, and the sample
count shrinks to fit (never below 5). The run stops cleanly when the budget is spent.

tests/tools/test_bench.py runs it on the CPU with the device checks, the timer and the ceilings
replaced by stand-ins (names looked up in this module)."""
from __future__ import annotations

import datetime as _dt
import sys
import time
from typing import Dict, List

from convkit.bench import cupy_ref
from convkit.bench.ceilings import call_overhead, measure_ceilings_cuda
from convkit.bench.config import algos_built_for, config_batches
from convkit.bench.env import cpu_model_name, git_commit, gpu_info
from convkit.bench.gpu_rows import REF_CUPY, base_row, run_layer_pass
from convkit.bench.layers import LAYERS, select_layers
from convkit.bench.plan import plan_cases, plan_run
from convkit.bench.summary import ref_totals, summarize, totals
from convkit.bench.tf32 import cudnn_benchmark, tf32_api
from convkit.bench.timing import CudaTimer

__all__ = ["cupy_reference", "run_bench_cuda"]


def _normalize_device(device: str) -> str:
    import torch
    if not torch.cuda.is_available():
        raise SystemExit(f"convkit bench: --device {device}: no CUDA device here "
                         f"(torch {torch.__version__}: torch.cuda.is_available() is False); "
                         f"use --device cpu")
    d = torch.device(device)
    index = torch.cuda.current_device() if d.index is None else d.index
    if index >= torch.cuda.device_count():
        raise SystemExit(f"convkit bench: --device {device}: only {torch.cuda.device_count()} "
                         f"CUDA device(s) here")
    return f"cuda:{index}"


def _check_convkit_cuda() -> None:
    import convkit
    from convkit import _backend
    if "cuda" not in convkit.available_backends():
        why = getattr(_backend, "_unavailable_reason", lambda n: None)("cuda") or \
            _backend._load_errors.get("cuda", "not built")
        raise SystemExit(f"convkit bench: convkit's CUDA backend cannot run here: {why}. Build it "
                         f"with CONVKIT_CUDA=ON (README, GPU section).")


def cupy_reference(device: str, dtype: str, any_conv: bool):
    """(backend or None, the report's entry for the reference): CuPy's im2col + cuBLAS, its
    kernels compiled here, before any timing."""
    if not any_conv:
        return None, {"status": "skipped", "reason": "no convolution selected"}
    if dtype not in cupy_ref.DTYPES:
        return None, {"status": "skipped", "reason": f"the CuPy reference runs "
                      f"{' and '.join(cupy_ref.DTYPES)}, not {dtype} (its col2im sums in the array's dtype)"}
    index = int(device.split(":")[1]) if ":" in device else 0
    mod, info = cupy_ref.cupy_status(index)
    if mod is None:
        return None, info
    try:
        be = cupy_ref.CupyBackend(mod)
        be.tf32 = bool(info.get("tf32"))
        t0 = time.perf_counter()
        be.compile(dtype)
        info["compile_s"] = round(time.perf_counter() - t0, 2)
    except Exception as e:  # noqa: BLE001 - NVRTC or the driver refused: no CuPy rows
        return None, dict(info, status="skipped", reason=f"its kernels did not compile "
                          f"({type(e).__name__}: {str(e)[:300]})")
    return be, info


def run_bench_cuda(cfg, log=sys.stderr) -> Dict[str, object]:
    """`convkit bench --device cuda[:N]`: every selected layer against torch (and CuPy) on the
    GPU, at each of cfg's batches. Returns the report (DESIGN.md "Benchmark rows"; README, GPU
    section). With cfg.budget_s the samples per case shrink (down to 5) to end in time, and the
    run stops when the budget is spent (report["interrupted"] says so)."""
    import torch
    import convkit.functional  # noqa: F401  (fail here, before any timing, if it is missing)
    from tqdm import tqdm

    t_start = time.perf_counter()
    deadline = t_start + cfg.budget_s if getattr(cfg, "budget_s", None) else None
    device = _normalize_device(cfg.device)
    _check_convkit_cuda()
    torch.cuda.set_device(torch.device(device))
    layers = select_layers(cfg.layers, device=device)
    batches = list(config_batches(cfg))
    cases = plan_cases(layers, cfg.algos, cfg.passes, algos_built_for("cuda"))
    if not cases:
        raise SystemExit("convkit bench: nothing to run (check --layers, --algos, --passes)")
    dtype = getattr(torch, cfg.dtype)
    commit, dirty = git_commit()
    info = gpu_info(torch.device(device))
    plan = plan_run(cfg, device_kind="cuda")
    report: Dict[str, object] = {
        "device": device, "gpu": info.pop("gpu"), "cpu": cpu_model_name(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit, "dirty": dirty, "torch": torch.__version__, **info,
        "tf32_api": tf32_api(torch), "batch": batches[0] if len(batches) == 1 else batches,
        "batches": batches, "passes": list(cfg.passes), "dtype": cfg.dtype,
        "warmup": cfg.warmup, "repeat": cfg.repeat,
        "budget_s": getattr(cfg, "budget_s", None), "plan": plan,
    }
    any_conv = any(c.layer.is_conv for c in cases)
    cupy_be, cupy_info = cupy_reference(device, cfg.dtype, any_conv)
    report["references"] = {
        "cudnn": {"status": "ok", "tf32": [False, True] if cfg.dtype == "float32" else None,
                  "algorithm": "cudnn.benchmark"},
        "torch-cuda": {"status": "ok", "what": "torch's own pooling and ReLU kernels"},
        REF_CUPY: cupy_info,
    }
    # (layer, pass, batch) groups in table order, the ReLUs last: if --budget runs out, what is
    # left undone is the cheapest to lose
    groups = [(layer, p, b, [c for c in cases if c.layer is layer and c.pass_ == p])
              for layer in sorted(layers, key=lambda lay: lay.is_relu) for p in cfg.passes for b in batches]
    groups = [g for g in groups if g[3]]
    print(f"convkit bench: {len(cases)} cases x {len(batches)} batch size(s) = {len(groups)} "
          f"groups on {device} ({report['gpu']}), batches {','.join(map(str, batches))}, {cfg.dtype}; "
          f"{plan['callables']} timed callables x {cfg.warmup}+{cfg.repeat} samples, planned "
          f"~{plan['estimate_s']:.0f} s" + (f", budget {cfg.budget_s:.0f} s" if deadline else "")
          + f"; CuPy reference: {cupy_info['status']}"
          + (f" ({cupy_info.get('reason')})" if cupy_info.get("reason") else "")
          + "; measuring ceilings...", file=log, flush=True)
    rows: List[Dict[str, object]] = []
    with cudnn_benchmark(True, torch):
        timer = CudaTimer(device)
        report["timing"] = {
            "method": "cuda-events", "l2_flush_bytes": timer.flush_bytes, "l2_flush": "read",
            "spin_before_sample": timer.has_sleep, "samples": cfg.repeat, "warmup": cfg.warmup,
            "statistic": "median", "interleaved": True, "cudnn_benchmark": True,
            "min_samples_under_budget": 5 if deadline else None,
        }
        report["ceilings"] = ceilings = measure_ceilings_cuda(timer, cfg.dtype, cfg.quick)
        try:
            report["call_overhead_us"] = call_overhead(device, calls=300 if cfg.quick else 1000)
        except Exception as e:  # noqa: BLE001
            report["call_overhead_us"] = {"errors": {"all": f"{type(e).__name__}: {e}"}}
        bar = tqdm(total=len(groups), disable=not cfg.progress, file=log, unit="group",
                   dynamic_ncols=True)
        setup_s = 0.0   # seconds the groups so far spent outside their samples
        try:
            for gi, (layer, pass_, batch, todo) in enumerate(groups):
                max_s = None
                if deadline is not None:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        report["interrupted"] = (f"time budget of {cfg.budget_s:.0f} s spent after "
                                                 f"{len(rows)} rows ({gi} of {len(groups)} groups)")
                        break
                    # this group's share of what is left, less what a group spends outside its
                    # samples (checks, float64 reference, cuDNN's search), as measured so far
                    max_s = max(0.0, left / (len(groups) - gi) - (setup_s / gi if gi else 0.0))
                bar.set_description(f"{layer.name} {pass_} b{batch}")
                t_group = time.perf_counter()
                timer.last_sampling_s = 0.0
                inputs = layer.make_inputs(batch, dtype, seed=cfg.seed + LAYERS.index(layer),
                                           requires_grad=(pass_ == "fwd+bwd"), device=device)
                try:
                    new = run_layer_pass(layer, pass_, [c.algo for c in todo], inputs, cfg.dtype,
                                         batch, timer, ceilings, cfg.warmup, cfg.repeat,
                                         torch, cupy_backend=cupy_be, max_sampling_s=max_s)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # noqa: BLE001 - the reference or the timing failed: record, go on
                    new = []
                    for c in todo:
                        row = base_row(layer, pass_, c.algo, cfg.dtype, batch, None)
                        row.update(status="ERROR", error=f"{type(e).__name__}: {e}")
                        new.append(row)
                del inputs
                if cupy_be is not None and layer.is_conv:
                    cupy_be.free()
                setup_s += max(0.0, time.perf_counter() - t_group - timer.last_sampling_s)
                rows += new
                for r in new:
                    if r["status"] != "ok":
                        tqdm.write(f"!!! {r['status']} {layer.name} {pass_} b{batch} algo={r['algo']}: "
                                   f"{r.get('error')}", file=log)
                    if r.get("ref_status") not in (None, "ok"):
                        tqdm.write(f"!!! reference {r['ref']} {r['ref_status']} {layer.name} {pass_} "
                                   f"b{batch}: {r.get('ref_error')}", file=log)
                bar.update(1)
        except KeyboardInterrupt:
            report["interrupted"] = f"stopped after {len(rows)} rows (SIGTERM or Ctrl-C)"
        finally:
            bar.close()
    report["timing"]["run_s"] = round(time.perf_counter() - t_start, 1)
    report["rows"] = rows
    report["summary"] = summarize(rows, gpu=True)
    report["totals"] = totals(rows)
    report["ref_totals"] = ref_totals(rows)
    return report
