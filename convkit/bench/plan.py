"""Which rows a run has: the (layer, pass, algo) cases in table order, and --plan's count of
groups, timed callables and samples with an estimate of the run's length."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from convkit.bench.config import ITEMSIZE, BenchConfig, algos_built_for, config_batches
from convkit.bench.layer import Layer
from convkit.bench.layers import select_layers
from convkit.bench.tables import pipe_table
from convkit.bench.timing import MIN_SAMPLE_S

__all__ = ["Case", "plan_cases", "PLAN_ASSUMPTIONS", "plan_run", "plan_text"]


@dataclass
class Case:
    layer: Layer
    pass_: str
    algo: str


def plan_cases(layers: Sequence[Layer], algos: Sequence[str], passes: Sequence[str],
               built: Optional[Sequence[str]] = None) -> List[Case]:
    """(layer, pass, algo) in table order. Convolutions run each requested algo that applies
    ("auto" applies everywhere) and that the device's module builds (`built`, None: any; the
    default list names implicit_gemm, which only the CUDA modules build); pools run their one
    implementation whatever --algos says."""
    cases = []
    for layer in layers:
        for pass_ in passes:
            if pass_ not in layer.passes():
                continue
            if layer.is_conv:
                applicable = layer.algos() + ["auto", "blocked", "implicit_gemm"] + (
                    ["winograd"] if layer.takes_winograd else [])
                run = [a for a in algos if a in applicable and (built is None or a == "auto" or a in built)]
            else:
                run = layer.algos()   # pools and ReLU: their one kernel
            cases += [Case(layer, pass_, a) for a in run]
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
    cases = plan_cases(layers, cfg.algos, cfg.passes, algos_built_for(device_kind))
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
    lines += pipe_table(["op", "groups (layer x pass x batch)", "timed callables"],
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
