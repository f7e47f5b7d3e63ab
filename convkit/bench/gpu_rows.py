"""The GPU bench's rows: one (layer, pass, batch) checked and timed (run_layer_pass) against its
references (cuDNN with TF32 off and on, CuPy's im2col + cuBLAS from convkit/bench/cupy_ref.py,
torch's own pooling and ReLU kernels), and how a row gets its identity, times, rates and
fractions of the ceiling. Runs without CUDA given a timer with a stand-in for torch.cuda (tests)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from convkit.bench.checks import TOLERANCE, tensor_errors
from convkit.bench.config import ITEMSIZE
from convkit.bench.cupy_ref import DTYPES as CUPY_DTYPES, ConvCase
from convkit.bench.tf32 import cudnn_benchmark, tf32
from convkit.bench.timing import Timing

__all__ = ["REF_CUPY", "ref_name", "base_row", "ceiling_for", "fill_ref", "fill_ours", "run_layer_pass"]


REF_CUPY = "cupy-im2col-cublas"   # convkit/bench/cupy_ref.py's NAME


def ref_name(layer) -> str:
    """cuDNN serves torch's convolutions; torch's pooling and ReLU on CUDA are its own kernels."""
    return "cudnn" if layer.is_conv else "torch-cuda"


def base_row(layer, pass_: str, algo: str, dtype: str, batch: int,
             ref_tf32: Optional[bool], ref: Optional[str] = None) -> Dict[str, object]:
    """A row's identity and work (DESIGN.md "Benchmark rows"), no times yet. ref: the reference
    (cudnn, torch-cuda, cupy-im2col-cublas) [the layer's framework reference]."""
    work = layer.work(batch, pass_, ITEMSIZE[dtype])
    return {
        "op": layer.op, "layer": layer.name, "pass": pass_, "algo": algo, "dtype": dtype,
        "batch": layer.batch_for(batch), ("macs" if layer.is_conv else "bytes"): work,
        "ours_ms": None, "ref": ref or ref_name(layer), "ref_tf32": ref_tf32, "ref_ms": None,
        "ratio": None,
    }


def _rate(row: Dict[str, object], ms: Optional[float]) -> Optional[float]:
    """GFLOP/s (2 flops per MAC) of a convolution row, GB/s of a pooling or ReLU row."""
    if not ms:
        return None
    if "macs" in row:
        return 2 * row["macs"] / (ms / 1e3) / 1e9
    return row["bytes"] / (ms / 1e3) / 1e9


def ceiling_for(row: Dict[str, object], ceilings: Dict[str, object], side: str) -> Optional[float]:
    """The ceiling a row's rate is a fraction of: copy bandwidth for pooling and ReLU; for a
    convolution the torch.mm rate with TF32 off (ours, and the reference with ref_tf32 false or
    null) or on (the reference with ref_tf32 true)."""
    if "bytes" in row:
        return ceilings.get("copy_gbps")
    if side == "ref" and row.get("ref_tf32"):
        return ceilings.get("matmul_tf32_gflops")
    return ceilings.get("matmul_gflops")


def fill_ref(row: Dict[str, object], t: Timing, ceilings: Dict[str, object]) -> None:
    row.update(ref_ms=t.median_ms, ref_min_ms=t.min_ms, ref_spread=t.spread,
               ref_enqueue_us=t.enqueue_us, samples=len(t.samples_ms))
    rate = _rate(row, t.median_ms)
    row["ref_gflops" if "macs" in row else "ref_gbps"] = rate
    c = ceiling_for(row, ceilings, "ref")
    row["ref_pct_of_ceiling"] = 100 * rate / c if c else None
    if "macs" in row:
        row["ref_tflops"] = rate / 1e3
        if row.get("ref_tf32") and ceilings.get("matmul_gflops"):
            # the same rate against the FP32 ceiling (TF32 off) that ours is measured against
            row["ref_pct_of_fp32_ceiling"] = 100 * rate / ceilings["matmul_gflops"]
    if t.host_bound:
        row["ref_host_bound"] = t.host_bound


def fill_ours(row: Dict[str, object], t: Timing, ref: Optional[Timing],
              ceilings: Dict[str, object]) -> None:
    """Ours' time and rate; the ratio to `ref` (None: the reference has no time, no ratio)."""
    row.update(ours_ms=t.median_ms, ours_min_ms=t.min_ms, ours_enqueue_us=t.enqueue_us,
               ratio=t.median_ms / ref.median_ms if ref is not None else None,
               spread=max(t.spread, ref.spread) if ref is not None else t.spread)
    row.setdefault("samples", len(t.samples_ms))
    rate = _rate(row, t.median_ms)
    row["gflops" if "macs" in row else "gbps"] = rate
    if "macs" in row:
        row["tflops"] = rate / 1e3
    c = ceiling_for(row, ceilings, "ours")
    row["pct_of_ceiling"] = 100 * rate / c if c else None
    if t.host_bound:
        row["ours_host_bound"] = t.host_bound


@dataclass
class _Ref:
    """One reference of a (layer, pass): name, TF32 setting (None: does not apply), the timed
    callable (None when it could not run), its error against float64."""
    name: str
    tf32: Optional[bool]
    fn: Optional[Callable[[], object]] = None
    status: str = "ok"
    error: Optional[str] = None
    rel_err: Optional[float] = None


# ---- one (layer, pass, batch) on the GPU ------------------------------------------------------
def run_layer_pass(layer, pass_: str, algos: Sequence[str], inputs, dtype: str, batch: int,
                   timer, ceilings: Dict[str, object], warmup: int, repeat: int,
                   torch_mod=None, cupy_backend=None,
                   max_sampling_s: Optional[float] = None) -> List[Dict[str, object]]:
    """Check, then time convkit's algorithms and the references on one (layer, pass, batch);
    returns its rows, one per (algo, reference). The references of a convolution: cuDNN with
    TF32 off and on in float32 (one setting, ref_tf32 null, in other dtypes), and, given
    cupy_backend (convkit/bench/cupy_ref.py) and a dtype it takes, our im2col + cuBLAS through
    CuPy (ref "cupy-im2col-cublas", checked against float64 like ours: a wrong result is not
    timed, ref_status FAIL). Pooling and ReLU: torch's CUDA kernels. Ours is timed once per
    algorithm, interleaved with every reference. An algorithm that raises (a dtype or shape it
    refuses, a kernel error) is an ERROR row per reference, the references still timed.
    max_sampling_s: the time the samples may take (CudaTimer.time's max_s)."""
    torch = torch_mod
    if torch is None:
        import torch
    settings: List[Optional[bool]] = [False, True] if (layer.is_conv and dtype == "float32") else [None]

    # float64 reference once (heuristic algorithms: no cuDNN search in float64), then torch's
    # own error in `dtype` under each setting, the scale the tolerance is set by.
    with cudnn_benchmark(False, torch):
        ref64 = layer.results(inputs.to(torch.float64), pass_, "torch")
        ref_err = {}
        for s in settings:
            with tf32(s, "conv", torch):
                ref_err[s] = tensor_errors(layer.results(inputs, pass_, "torch"), ref64)[1]
    tol = max(TOLERANCE[dtype], 10 * ref_err[settings[0]])

    ours: Dict[str, Callable[[], object]] = {}
    outcome: Dict[str, Dict[str, object]] = {}
    for algo in algos:
        try:
            with tf32(settings[0], "conv", torch):
                got = layer.results(inputs, pass_, "convkit", algo)
        except Exception as e:  # an algo that refuses a shape or dtype, a kernel error: report, go on
            outcome[algo] = {"status": "ERROR", "error": f"{type(e).__name__}: {e}"}
            continue
        abs_err, rel_err, worst = tensor_errors(got, ref64)
        o = {"max_abs_err": abs_err, "max_rel_err": rel_err}
        if rel_err <= tol:
            o["status"] = "ok"
            ours[algo] = layer.step(inputs, pass_, "convkit", algo)
        else:
            o.update(status="FAIL", error=f"{worst}: relative error {rel_err:.3g} > tolerance {tol:.3g}")
        outcome[algo] = o

    def ref_fn(s):
        step = layer.step(inputs, pass_, "torch")

        def run():
            with tf32(s, "conv", torch):
                return step()
        return run

    refs = [_Ref(ref_name(layer), s, ref_fn(s), rel_err=ref_err[s]) for s in settings]
    if cupy_backend is not None and layer.is_conv:
        if dtype in CUPY_DTYPES:
            cup = _Ref(REF_CUPY, bool(getattr(cupy_backend, "tf32", False)) if dtype == "float32" else None)
            try:
                case = ConvCase(cupy_backend, layer, inputs, torch)
                _, cup.rel_err, worst = tensor_errors(case.results(pass_), ref64)
                if cup.rel_err <= tol:
                    cup.fn = case.fn(pass_)
                else:
                    cup.status = "FAIL"
                    cup.error = f"{worst}: relative error {cup.rel_err:.3g} > tolerance {tol:.3g}"
            except Exception as e:  # noqa: BLE001 - the reference broke: its rows say so
                cup.status, cup.error = "ERROR", f"{type(e).__name__}: {e}"
            refs.append(cup)

    timed_refs = [r for r in refs if r.fn is not None]
    fns = list(ours.values()) + [r.fn for r in timed_refs]
    timings = timer.time(fns, warmup=warmup, repeat=repeat, max_s=max_sampling_s) if fns else []
    ours_t = dict(zip(ours, timings[:len(ours)]))
    ref_t = {id(r): t for r, t in zip(timed_refs, timings[len(ours):])}

    rows: List[Dict[str, object]] = []
    for algo, o in outcome.items():
        for r in refs:
            row = base_row(layer, pass_, algo, dtype, batch, r.tf32, r.name)
            row.update(o)
            row["ref_status"] = r.status
            row["ref_rel_err"] = r.rel_err
            if r.error:
                row["ref_error"] = r.error
            t = ref_t.get(id(r))
            if t is not None:
                fill_ref(row, t, ceilings)
            if o["status"] == "ok":
                fill_ours(row, ours_t[algo], t, ceilings)
            rows.append(row)
    return rows
