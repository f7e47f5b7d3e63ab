"""The machine's ceilings, measured in the same run as the layers: on the CPU the matrix-product
rate of a large torch.mm, copy bandwidth, and the FMA peak with convkit's own GEMM against it; on
the GPU copy bandwidth and torch.mm rates (TF32 off and on, float16, bfloat16); on both the
per-call overhead of a tiny ReLU and max pool."""
from __future__ import annotations

import statistics
import time
from typing import Dict, List, Optional, Tuple

from convkit.bench.config import HALF_DTYPES
from convkit.bench.tf32 import tf32
from convkit.bench.timing import CudaTimer, Timing, time_interleaved

__all__ = ["measure_ceilings", "GEMM_SHAPES", "GEMM_KEYS", "measure_gemm_ceiling",
           "measure_ceilings_cuda", "call_overhead"]


# ---- CPU ----------------------------------------------------------------------------------
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


# ---- GPU -------------------------------------------------------------------------------------
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


# ---- per-call overhead (both devices) -----------------------------------------------------
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
