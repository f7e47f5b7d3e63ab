"""The GPU side of `convkit bench`: CUDA-event timing on a cold L2, the references (cuDNN with
TF32 off and on; im2col + cuBLAS through CuPy, convkit/bench/cupy_ref.py; torch's pooling and
ReLU kernels), the device's ceilings (copy bandwidth, matrix-product rates) and per-call overhead,
at each batch size (default 1 and 32) and for each kernel direction (fwd, bwd_input, bwd_weight).

How one timed sample of a callable is taken (CudaTimer.time), all on torch's current stream:

    synchronize
    spin kernel (torch.cuda._sleep)   keeps the GPU busy while the host enqueues the rest, so the
                                      events below time the GPU's work, not Python's dispatch
    L2 flush                          a read of a buffer >= 2x the L2 size: fn's inputs come cold
                                      from memory (a read, not a write, leaves no dirty lines
                                      whose write-back would land inside the timed window)
    start event, fn(), end event      the sample is the time between the two events

After warm-up calls (cuDNN's algorithm search, module loads, allocator growth stay out), the
callables of one case are sampled interleaved (a, b, a, b, ...) and each reports its median.
If the GPU reached the start event before the host had finished enqueueing fn (the spin was too
short, or fn synchronizes inside), the sample is retaken with a spin twice as long; samples that
stay host-bound are counted in `host_bound` and the row says so.

Under a time budget (--budget, which benchmarks/gpu_check.sh sets from its slot) each group
(layer, pass, batch) gets its share of the time left, less what a group spends outside its
samples; the warm-up calls, waited for, tell what one round of samples costs, and the sample
count shrinks to fit (never below 5). The run stops cleanly when the budget is spent.

Importable without CUDA: the TF32 switch, the timer's logic (with a stand-in for torch.cuda),
the rows with both references (the CuPy one through its host build), the per-call overhead
measurement run on the CPU in tests/test_bench.py.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import math
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

__all__ = [
    "torch_version", "tf32_api", "tf32", "Timing", "CudaTimer", "measure_ceilings_cuda",
    "call_overhead", "convkit_cuda_has_conv", "gpu_info", "run_bench_cuda", "run_layer_pass",
    "cupy_reference", "ref_totals", "HALF_DTYPES", "REF_CUPY",
]

HALF_DTYPES = ("float16", "bfloat16")
# The new per-backend precision API (torch.backends.cudnn.conv.fp32_precision, ...) replaces the
# allow_tf32 flags from this version on; mixing the two raises in torch.
NEW_TF32_API_SINCE = (2, 9)


# ---- TF32 -----------------------------------------------------------------------------------
def torch_version(version: str) -> Tuple[int, int]:
    """(major, minor) of a torch version string: "2.11.0+cu130" -> (2, 11)."""
    m = re.match(r"\s*(\d+)\.(\d+)", str(version))
    if not m:
        raise ValueError(f"not a torch version: {version!r}")
    return int(m.group(1)), int(m.group(2))


def _tf32_target(torch_mod, op: str):
    """(object, attribute, value for on, value for off) of the one API this torch uses for `op`
    ("conv": cuDNN convolutions, "matmul": cuBLAS matrix products)."""
    if op not in ("conv", "matmul"):
        raise ValueError(f"tf32: op must be 'conv' or 'matmul', got {op!r}")
    if tf32_api(torch_mod) == "fp32_precision":
        obj = torch_mod.backends.cudnn.conv if op == "conv" else torch_mod.backends.cuda.matmul
        return obj, "fp32_precision", "tf32", "ieee"
    obj = torch_mod.backends.cudnn if op == "conv" else torch_mod.backends.cuda.matmul
    return obj, "allow_tf32", True, False


def tf32_api(torch_mod=None) -> str:
    """Which TF32 switch this torch has: "fp32_precision" (torch >= 2.9) or "allow_tf32"."""
    if torch_mod is None:
        import torch as torch_mod
    if torch_version(torch_mod.__version__) >= NEW_TF32_API_SINCE:
        return "fp32_precision"
    return "allow_tf32"


@contextlib.contextmanager
def tf32(enabled: Optional[bool], op: str = "conv", torch_mod=None) -> Iterator[None]:
    """TF32 on (True) or off (False) for cuDNN convolutions (op="conv") or cuBLAS matrix products
    (op="matmul") inside the block, through the one API this torch version has (never the other:
    reading or setting the legacy flag after the new one was used raises in torch >= 2.9); the
    previous setting is restored on exit. enabled=None leaves everything as it is."""
    if enabled is None:
        yield
        return
    if torch_mod is None:
        import torch as torch_mod
    obj, attr, on, off = _tf32_target(torch_mod, op)
    before = getattr(obj, attr)
    setattr(obj, attr, on if enabled else off)
    try:
        yield
    finally:
        setattr(obj, attr, before)


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool, torch_mod=None) -> Iterator[None]:
    """torch.backends.cudnn.benchmark set inside the block, restored after."""
    if torch_mod is None:
        import torch as torch_mod
    before = torch_mod.backends.cudnn.benchmark
    torch_mod.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch_mod.backends.cudnn.benchmark = before


# ---- timing ---------------------------------------------------------------------------------
@dataclass
class Timing:
    """One callable's samples (ms, GPU time between its events) and what the host spent issuing
    one call (enqueue_us, the fastest warm-up call)."""
    samples_ms: List[float] = field(default_factory=list)
    enqueue_us: Optional[float] = None
    host_bound: int = 0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median: the same measure as the CPU rows."""
        return (max(self.samples_ms) - min(self.samples_ms)) / self.median_ms


class CudaTimer:
    """Times callables with CUDA events on a cold L2 (see the module docstring). One per device;
    `cuda` stands in for torch.cuda in tests."""

    MIN_SLEEP_MS = 0.05
    MAX_SLEEP_MS = 100.0
    RETRIES = 3
    # What a sample costs beside the callable and the spin (synchronize, L2 flush, events,
    # Python), for sizing sample counts under a time limit: a generous guess.
    SAMPLE_OVERHEAD_MS = 0.3
    last_repeat: Optional[int] = None
    last_sampling_s: float = 0.0

    def __init__(self, device="cuda", flush_bytes: Optional[int] = None, cuda=None):
        import torch
        self.torch = torch
        self.cuda = cuda if cuda is not None else torch.cuda
        self.device = torch.device(device)
        props = self.cuda.get_device_properties(self.device)
        self.l2_bytes = int(getattr(props, "L2_cache_size", 0) or 0)
        if flush_bytes is None:
            # 2x the L2 (50 MB on an H100, 60 MB on an H200), at least 128 MiB.
            flush_bytes = max(2 * (self.l2_bytes or 64 << 20), 128 << 20)
        n = max(1, int(flush_bytes) // 4)
        self._flush_buf = torch.empty(n, dtype=torch.float32, device=self.device).uniform_(-1, 1)
        self._flush_sink = torch.empty((), dtype=torch.float32, device=self.device)
        self.flush_bytes = 4 * n
        self._start = self.cuda.Event(enable_timing=True)
        self._end = self.cuda.Event(enable_timing=True)
        self.has_sleep = callable(getattr(self.cuda, "_sleep", None))
        self.cycles_per_ms = self._calibrate_sleep() if self.has_sleep else None

    def flush(self) -> None:
        """Evict the L2 by reading flush_bytes (clean lines only: nothing to write back)."""
        self.torch.sum(self._flush_buf, dim=0, out=self._flush_sink)

    def _calibrate_sleep(self) -> float:
        """Spin-kernel cycles per millisecond, the fastest of three tries: a clock that is
        slower later only makes the spin longer, which is the safe side."""
        cycles = 2_000_000
        best = 0.0
        for _ in range(3):
            self.cuda.synchronize()
            self._start.record()
            self.cuda._sleep(cycles)
            self._end.record()
            self._end.synchronize()
            ms = self._start.elapsed_time(self._end)
            if ms > 0:
                best = max(best, cycles / ms)
        return best or 1e6   # 1 GHz if the events said nothing useful

    def _sample(self, fn: Callable[[], object], sleep_ms: float, flush: bool) -> Tuple[float, bool]:
        """(GPU ms between fn's events, whether the GPU got to the start event before the host
        had enqueued all of fn)."""
        self.cuda.synchronize()
        if self.has_sleep and sleep_ms > 0:
            self.cuda._sleep(max(1, int(sleep_ms * self.cycles_per_ms)))
        if flush:
            self.flush()
        self._start.record()
        fn()
        self._end.record()
        behind = bool(self._start.query())
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end)), behind

    def time(self, fns: Sequence[Callable[[], object]], warmup: int = 3, repeat: int = 25,
             flush: bool = True, max_s: Optional[float] = None, min_repeat: int = 5) -> List[Timing]:
        """Warm each callable up `warmup` times, then take `repeat` samples of each, interleaved.
        Returns one Timing per callable.

        max_s: seconds the sampling may take. The warm-up calls are waited for, so they tell
        what one round of samples (every callable once, with its spin and flush) costs; the
        sample count becomes what fits in max_s, between min(min_repeat, repeat) and repeat.
        self.last_repeat and self.last_sampling_s say what was done."""
        timings = [Timing() for _ in fns]
        enqueue: List[List[float]] = [[] for _ in fns]
        wall: List[List[float]] = [[] for _ in fns]
        for _ in range(max(1, warmup)):
            for i, fn in enumerate(fns):
                self.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                t1 = time.perf_counter()
                self.cuda.synchronize()
                enqueue[i].append(t1 - t0)
                wall[i].append(time.perf_counter() - t0)
        self.cuda.synchronize()
        sleep_ms = []
        for i, e in enumerate(enqueue):
            # the fastest warm-up call: the first may include cuDNN's algorithm search
            host_ms = min(e) * 1e3
            timings[i].enqueue_us = host_ms * 1e3
            sleep_ms.append(min(self.MAX_SLEEP_MS, max(self.MIN_SLEEP_MS, 3 * host_ms + 0.05)))
        if max_s is not None and fns:
            round_s = sum(min(w) + (sleep_ms[i] + self.SAMPLE_OVERHEAD_MS) / 1e3
                          for i, w in enumerate(wall))
            fit = int(max_s // round_s) if round_s > 0 else repeat
            repeat = max(min(min_repeat, repeat), min(repeat, fit))
        self.last_repeat = repeat
        tries = self.RETRIES if self.has_sleep else 1
        t_sampling = time.perf_counter()
        for _ in range(repeat):
            for i, fn in enumerate(fns):
                for attempt in range(tries):
                    ms, behind = self._sample(fn, sleep_ms[i], flush)
                    if not behind:
                        break
                    if attempt + 1 < tries:
                        sleep_ms[i] = min(self.MAX_SLEEP_MS, 2 * sleep_ms[i])
                timings[i].samples_ms.append(ms)
                timings[i].host_bound += int(behind)
        self.last_sampling_s = time.perf_counter() - t_sampling
        return timings


# ---- ceilings, overhead, device -------------------------------------------------------------
def measure_ceilings_cuda(timer: CudaTimer, dtype: str = "float32", quick: bool = False,
                          copy_mib: Optional[int] = None, mm_n: Optional[int] = None
                          ) -> Dict[str, object]:
    """The device's ceilings, measured now: copy bandwidth (a device-to-device copy of a buffer
    far larger than the L2, bytes read + written; best sample and median) and torch.mm rates on
    random data: in `dtype` with TF32 off (matmul_gflops: the convolutions' ceiling, as on the
    CPU), float32 with TF32 on (the ceiling of the TF32 reference rows), float16 and bfloat16."""
    torch = timer.torch
    dev = timer.device
    copy_mib = copy_mib or (256 if quick else 1024)
    n = mm_n or (4096 if quick else 8192)
    repeat = 5 if quick else 10
    out: Dict[str, object] = {}

    def copy_time() -> Timing:
        src = torch.empty(copy_mib << 18, dtype=torch.float32, device=dev).uniform_(-1, 1)
        dst = torch.empty_like(src)
        return timer.time([lambda: dst.copy_(src)], warmup=2, repeat=repeat, flush=False)[0]

    t = copy_time()
    moved = 2 * (copy_mib << 20)
    out.update(copy_gbps=moved / (t.min_ms / 1e3) / 1e9,
               copy_gbps_median=moved / (t.median_ms / 1e3) / 1e9, copy_bytes=moved)

    def mm_rate(dt, tf32_on: Optional[bool]) -> Tuple[float, float]:
        a = torch.randn(n, n, device=dev, dtype=torch.float32).to(dt)
        b = torch.randn(n, n, device=dev, dtype=torch.float32).to(dt)
        c = torch.empty(n, n, device=dev, dtype=dt)
        with tf32(tf32_on, "matmul", torch):
            t = timer.time([lambda: torch.mm(a, b, out=c)], warmup=2, repeat=max(3, repeat // 2),
                           flush=False)[0]
        flop = 2 * n ** 3
        return flop / (t.min_ms / 1e3) / 1e9, flop / (t.median_ms / 1e3) / 1e9

    best, med = mm_rate(getattr(torch, dtype), False if dtype == "float32" else None)
    out.update(matmul_gflops=best, matmul_gflops_median=med, matmul_n=n, matmul_dtype=dtype)
    if dtype == "float32":
        out["matmul_tf32_gflops"] = mm_rate(torch.float32, True)[0]
    for name in HALF_DTYPES:
        key = "matmul_fp16_gflops" if name == "float16" else "matmul_bf16_gflops"
        out[key] = best if dtype == name else mm_rate(getattr(torch, name), None)[0]
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return out


def call_overhead(device="cpu", calls: int = 1000, reps: int = 5, shape=(1, 16, 9, 9)
                  ) -> Dict[str, object]:
    """Microseconds per call of convkit's and torch's ReLU and 3x3/2 max pool on a tiny batch-1
    tensor, where dispatch dominates: wall clock over `calls` back-to-back calls, synchronized at
    the end, median of `reps` runs (interleaved)."""
    import torch
    import torch.nn.functional as F
    import convkit.functional as CF
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    x = torch.randn(*shape, device=dev)
    fns = {
        "relu": {"convkit": lambda: CF.relu(x), "torch": lambda: F.relu(x)},
        "max_pool2d": {"convkit": lambda: CF.max_pool2d(x, 3, 2, ceil_mode=True),
                       "torch": lambda: F.max_pool2d(x, 3, 2, ceil_mode=True)},
    }
    out: Dict[str, object] = {"shape": list(shape), "calls": calls, "reps": reps}
    with torch.no_grad():
        for op, impls in list(fns.items()):
            for impl, fn in list(impls.items()):
                try:
                    for _ in range(max(10, calls // 20)):
                        fn()
                    sync()
                except Exception as e:  # noqa: BLE001 - a broken kernel costs this figure only
                    out.setdefault("errors", {})[f"{op}/{impl}"] = f"{type(e).__name__}: {e}"
                    del impls[impl]
        sync()
        runs: Dict[Tuple[str, str], List[float]] = {}
        for _ in range(reps):
            for op, impls in fns.items():
                for impl, fn in impls.items():
                    sync()
                    t0 = time.perf_counter()
                    for _ in range(calls):
                        fn()
                    sync()
                    runs.setdefault((op, impl), []).append((time.perf_counter() - t0) / calls * 1e6)
    for (op, impl), us in runs.items():
        out.setdefault(op, {})[impl] = statistics.median(us)
    return out


def convkit_cuda_has_conv() -> bool:
    """Whether convkit's CUDA module has convolutions (it has pooling and ReLU first)."""
    try:
        from convkit import _backend
        mod = _backend._load("cuda")
    except Exception:  # noqa: BLE001 - no module, no driver: no convolutions either
        return False
    return mod is not None and hasattr(mod, "conv2d_fwd")


def gpu_info(device, cuda=None) -> Dict[str, object]:
    """Name, capability, multiprocessors, memory and L2 of `device`, as torch reports them."""
    import torch
    cuda = cuda if cuda is not None else torch.cuda
    p = cuda.get_device_properties(device)
    info: Dict[str, object] = {"gpu": p.name, "capability": f"{p.major}.{p.minor}",
                               "sm_count": getattr(p, "multi_processor_count", None),
                               "memory_bytes": getattr(p, "total_memory", None),
                               "l2_bytes": getattr(p, "L2_cache_size", None)}
    info["cuda"] = getattr(torch.version, "cuda", None)
    try:
        info["cudnn"] = torch.backends.cudnn.version()
    except Exception:  # noqa: BLE001
        info["cudnn"] = None
    return info


# ---- rows -----------------------------------------------------------------------------------
REF_CUPY = "cupy-im2col-cublas"   # convkit/bench/cupy_ref.py's NAME


def _itemsize(dtype: str) -> int:
    from convkit.bench.runner import ITEMSIZE
    return ITEMSIZE[dtype]


def ref_name(layer) -> str:
    """cuDNN serves torch's convolutions; torch's pooling and ReLU on CUDA are its own kernels."""
    return "cudnn" if layer.is_conv else "torch-cuda"


def base_row(layer, pass_: str, algo: str, dtype: str, batch: int,
             ref_tf32: Optional[bool], ref: Optional[str] = None) -> Dict[str, object]:
    """A row's identity and work (DESIGN.md "Benchmark rows"), no times yet. ref: the reference
    (cudnn, torch-cuda, cupy-im2col-cublas) [the layer's framework reference]."""
    work = layer.work(batch, pass_, _itemsize(dtype))
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


def _half_refusal(e: Exception, layer, dtype: str) -> bool:
    """A convolution that convkit does not take in a half dtype yet (the kernels come later):
    a TypeError that names the dtype. Reported as reference-only, not as a failure."""
    return layer.is_conv and dtype in HALF_DTYPES and isinstance(e, TypeError) and dtype in str(e)


# ---- one (layer, pass, batch) on the GPU ------------------------------------------------------
def run_layer_pass(layer, pass_: str, algos: Sequence[str], inputs, dtype: str, batch: int,
                   timer, ceilings: Dict[str, object], warmup: int, repeat: int,
                   has_conv: bool, torch_mod=None, cupy_backend=None,
                   max_sampling_s: Optional[float] = None) -> List[Dict[str, object]]:
    """Check, then time convkit's algorithms and the references on one (layer, pass, batch);
    returns its rows, one per (algo, reference). The references of a convolution: cuDNN with
    TF32 off and on in float32 (one setting, ref_tf32 null, in other dtypes), and, given
    cupy_backend (convkit/bench/cupy_ref.py) and a dtype it takes, our im2col + cuBLAS through
    CuPy (ref "cupy-im2col-cublas", checked against float64 like ours: a wrong result is not
    timed, ref_status FAIL). Pooling and ReLU: torch's CUDA kernels. Ours is timed once per
    algorithm, interleaved with every reference. Without convkit convolutions on CUDA, a
    convolution still gets its reference rows: algo "none", ours_ms null, status "ref-only".
    max_sampling_s: the time the samples may take (CudaTimer.time's max_s)."""
    from convkit.bench.runner import TOLERANCE, _errors
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
                ref_err[s] = _errors(layer.results(inputs, pass_, "torch"), ref64)[1]
    tol = max(TOLERANCE[dtype], 10 * ref_err[settings[0]])

    ours: Dict[str, Callable[[], object]] = {}
    outcome: Dict[str, Dict[str, object]] = {}
    run_algos = list(algos) if (has_conv or not layer.is_conv) else []
    for algo in run_algos:
        try:
            with tf32(settings[0], "conv", torch):
                got = layer.results(inputs, pass_, "convkit", algo)
        except NotImplementedError as e:
            outcome[algo] = {"status": "ref-only", "note": f"{type(e).__name__}: {e}"}
            continue
        except Exception as e:  # an algo that refuses a shape, a kernel error: report, go on
            if _half_refusal(e, layer, dtype):
                outcome[algo] = {"status": "ref-only", "note": f"{type(e).__name__}: {e}"}
            else:
                outcome[algo] = {"status": "ERROR", "error": f"{type(e).__name__}: {e}"}
            continue
        abs_err, rel_err, worst = _errors(got, ref64)
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
        from convkit.bench.cupy_ref import DTYPES as CUPY_DTYPES, ConvCase
        if dtype in CUPY_DTYPES:
            cup = _Ref(REF_CUPY, bool(getattr(cupy_backend, "tf32", False)) if dtype == "float32" else None)
            try:
                case = ConvCase(cupy_backend, layer, inputs, torch)
                _, cup.rel_err, worst = _errors(case.results(pass_), ref64)
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

    if not outcome or all(o["status"] == "ref-only" for o in outcome.values()):
        note = (next(iter(outcome.values()))["note"] if outcome else
                "convkit's CUDA module has no convolutions yet (no conv2d_fwd)")
        outcome = {"none": {"status": "ref-only", "note": note}}
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


# ---- the run --------------------------------------------------------------------------------
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
    from convkit.bench import cupy_ref
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
    from convkit.bench import runner
    from convkit.bench.layers import LAYERS, select_layers

    t_start = time.perf_counter()
    deadline = t_start + cfg.budget_s if getattr(cfg, "budget_s", None) else None
    device = _normalize_device(cfg.device)
    _check_convkit_cuda()
    torch.cuda.set_device(torch.device(device))
    layers = select_layers(cfg.layers, device=device)
    batches = list(runner.config_batches(cfg))
    cases = runner.plan_cases(layers, cfg.algos, cfg.passes)
    if not cases:
        raise SystemExit("convkit bench: nothing to run (check --layers, --algos, --passes)")
    dtype = getattr(torch, cfg.dtype)
    commit, dirty = runner.git_commit()
    info = gpu_info(torch.device(device))
    has_conv = convkit_cuda_has_conv()
    plan = runner.plan_run(cfg, device_kind="cuda")
    report: Dict[str, object] = {
        "device": device, "gpu": info.pop("gpu"), "cpu": runner.cpu_model_name(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit, "dirty": dirty, "torch": torch.__version__, **info,
        "tf32_api": tf32_api(torch), "batch": batches[0] if len(batches) == 1 else batches,
        "batches": batches, "passes": list(cfg.passes), "dtype": cfg.dtype,
        "warmup": cfg.warmup, "repeat": cfg.repeat, "convkit_cuda_conv": has_conv,
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
                                         has_conv, torch, cupy_backend=cupy_be, max_sampling_s=max_s)
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
                    if r["status"] not in ("ok", "ref-only"):
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
    report["summary"] = runner.summarize(rows, gpu=True)
    report["totals"] = runner.totals(rows)
    report["ref_totals"] = ref_totals(rows)
    return report


def _ref_key(r: Dict[str, object]) -> Tuple[str, Optional[bool]]:
    return (r.get("ref"), r.get("ref_tf32"))


def ref_totals(rows: Sequence[Dict[str, object]]) -> List[Dict[str, object]]:
    """The references' time over GoogLeNet's convolutions and pools added up (the lecture's and
    MobileNet's layers and the ReLUs excluded), per pass, batch and reference (cuDNN with TF32
    off, on, CuPy; the pools, ref torch-cuda, count in each): the network's layers as torch (or
    CuPy) runs them on this GPU. A reference that has no time for some convolution layer of the
    pass has no total."""
    import convkit.bench.layers as L
    fam = {lay.name: lay.family for lay in L.LAYERS}
    out = []
    for p in dict.fromkeys(r["pass"] for r in rows):
        for b in dict.fromkeys(r.get("batch") for r in rows if r["pass"] == p):
            rs = [r for r in rows if r["pass"] == p and r.get("batch") == b and r["op"] != "relu"
                  and fam.get(r["layer"], "googlenet") == "googlenet"]
            conv_layers = {r["layer"] for r in rs if r["op"] == "conv2d"}
            conv_refs = list(dict.fromkeys(_ref_key(r) for r in rs if r["op"] == "conv2d"))
            pool_rows = [r for r in rs if r["op"] != "conv2d" and r.get("ref_ms") is not None]
            for ref, s in conv_refs or [(None, None)]:
                per_layer: Dict[str, float] = {}
                for r in rs:
                    if r["op"] == "conv2d" and _ref_key(r) == (ref, s) and r.get("ref_ms") is not None:
                        per_layer[r["layer"]] = min(per_layer.get(r["layer"], math.inf), r["ref_ms"])
                if ref is not None and len(per_layer) < len(conv_layers):
                    continue
                for r in pool_rows:
                    per_layer[r["layer"]] = min(per_layer.get(r["layer"], math.inf), r["ref_ms"])
                if per_layer:
                    out.append({"pass": p, "batch": b, "ref": ref or "torch-cuda", "ref_tf32": s,
                                "layers": len(per_layer), "ref_ms": sum(per_layer.values())})
    return out
