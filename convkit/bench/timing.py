"""How `convkit bench` times a callable.

CPU (time_interleaved): each sample loops the callable for at least MIN_SAMPLE_S with the host
clock; the callables of a case are sampled interleaved (a, b, a, b, ...) so that drifts in clock
speed or machine load hit them alike.

GPU (CudaTimer.time): one call between CUDA events per sample, all on torch's current stream:

    synchronize
    spin kernel (torch.cuda._sleep)   keeps the GPU busy while the host enqueues the rest, so the
                                      events below time the GPU's work, not Python's dispatch
    L2 flush                          a read of a buffer >= 2x the L2 size: fn's inputs come cold
                                      from memory (a read, not a write, leaves no dirty lines
                                      whose write-back would land inside the timed window)
    start event, fn(), end event      the sample is the time between the two events

After warm-up calls (cuDNN's algorithm search, module loads, allocator growth stay out), the
callables of one case are sampled interleaved and each reports its median. If the GPU reached the
start event before the host had finished enqueueing fn (the spin was too short, or fn
synchronizes inside), the sample is retaken with a spin twice as long; samples that stay
host-bound are counted in `host_bound` and the row says so. Under a time limit (max_s) the sample
count shrinks to fit (never below min_repeat). CudaTimer takes a stand-in for torch.cuda, which
is how tests/tools/test_bench.py runs it on the CPU.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

__all__ = ["MIN_SAMPLE_S", "MAX_INNER", "time_interleaved", "Timing", "CudaTimer"]


# ---- CPU: loops timed with the host clock ------------------------------------------------
# Each timing sample runs the op enough times to last at least this long (short pools).
MIN_SAMPLE_S = 0.002
MAX_INNER = 200


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


# ---- GPU: CUDA events on a cold L2 ------------------------------------------------------------
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
