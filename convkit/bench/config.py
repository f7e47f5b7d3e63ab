"""`convkit bench`'s configuration: BenchConfig, the defaults by device, and the checks that turn
parsed command-line arguments into a BenchConfig (config_from_args)."""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence

from convkit import CONV_ALGOS, _backend
from convkit.bench.layers import (ALL_PASSES, CONV_BENCH_ALGOS, GPU_PASSES, PASSES, QUICK_LAYERS, QUICK_LAYERS_CUDA,
                                  select_layers)

__all__ = ["ITEMSIZE", "HALF_DTYPES", "DEFAULTS", "BenchConfig", "config_batches", "device_kind",
           "config_from_args"]


ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
HALF_DTYPES = ("float16", "bfloat16")
# Defaults by device: (batches, quick batches, repeat, quick repeat, warmup, quick warmup,
# passes). A CPU sample loops the op for >= 2 ms; a GPU sample is one call between CUDA events.
# GPU: about 2,500 timed callables (70 convolutions x 3 passes x 2 batches x ~2.6 algorithms and
# 3 references, plus the pools and ReLUs) at 2 + 15 samples of ~0.6 ms overhead plus the kernels:
# `convkit bench --device cuda --plan` prints the count and an estimate; --budget caps it.
DEFAULTS = {"cpu": ((8,), (2,), 7, 3, 2, 1, PASSES),
            "cuda": ((1, 32), (32,), 15, 7, 2, 1, GPU_PASSES)}


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


def device_kind(device: str) -> str:
    """"cpu" or "cuda" for a --device value; anything else raises SystemExit."""
    if device == "cpu":
        return "cpu"
    if re.fullmatch(r"cuda(:\d+)?", device):
        return "cuda"
    raise SystemExit(f"convkit bench: --device must be 'cpu' or 'cuda[:N]', got {device!r}")


def algos_built_for(kind: str) -> List[str]:
    """The convolution algorithms the module of device kind `kind` builds (the registry,
    csrc/common/conv_algo.h); without that module here (planning a GPU run on a machine
    without one), the registry's names the CUDA modules build: those the emulator has."""
    for name in (("cpu",) if kind == "cpu" else ("cuda", "cudasim")):
        mod = _backend._load(name)
        if mod is not None:
            return list(mod.conv_algos())
    return [a for a in CONV_ALGOS if a in CONV_BENCH_ALGOS]


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
    known = ("auto",) + tuple(algos_built_for(kind))
    # the default list names every device's algorithms (implicit_gemm: CUDA only); plan_cases
    # keeps the device's
    bad = [] if list(args.algos) == list(CONV_BENCH_ALGOS) else [a for a in args.algos if a not in known]
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
