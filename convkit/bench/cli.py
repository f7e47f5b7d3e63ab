"""`convkit bench` and `convkit layers`: the arguments, run_bench (the CPU or the GPU run by
--device), bench_main (the run, its outputs, the exit status) and the layer listing.

`convkit bench` times convkit's kernels against torch on GoogLeNet's layers in one run; the
modules beside this one, in the order they import each other:

    layer, layers, cupy_ref     one layer and its passes; the layer table; CuPy's im2col + cuBLAS
    config                      BenchConfig, defaults, config_from_args
    env, tf32, timing, tables   machine description; TF32 switches; timers; text helpers
    checks, ceilings            results against float64; the machine's ceilings
    plan, summary               the rows a run has, its estimate; geometric means, totals
    report_gpu, report          Markdown, README form, JSON
    cpu_run, gpu_rows, gpu_run  the CPU run; one GPU (layer, pass, batch); the GPU run
    cli                         this module
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Dict, List

from convkit.bench.config import HALF_DTYPES, BenchConfig, config_from_args, device_kind
from convkit.bench.cpu_run import run_bench_cpu
from convkit.bench.gpu_run import run_bench_cuda
from convkit.bench.layers import CONV_BENCH_ALGOS, select_layers
from convkit.bench.plan import plan_run, plan_text
from convkit.bench.report import write_outputs
from convkit.bench.tables import n_failed, pipe_table, plural

__all__ = ["add_bench_arguments", "run_bench", "bench_main", "list_layers_main"]


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
                   help="float32 [default] or float64; float16 and bfloat16 on cuda only")
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


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def run_bench(cfg: BenchConfig, log=sys.stderr) -> Dict[str, object]:
    """Run the benchmark; returns the report (DESIGN.md "Benchmark rows") with a summary:
    cpu_run.run_bench_cpu, or gpu_run.run_bench_cuda for --device cuda[:N]."""
    if device_kind(cfg.device) == "cuda":
        return run_bench_cuda(cfg, log)
    return run_bench_cpu(cfg, log)


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
    budget_stop = bool(report.get("interrupted")) and "budget" in str(report.get("interrupted"))
    print(f"convkit bench: {plural(len(report['rows']), 'row')} in {report['wall_s']} s"
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
    lines = pipe_table(["layer", "op", "input CxHxW", "params", "output", f"fwd at N={args.batch}",
                         "algos"], body, [False, False, True, False, True, True, False])
    print("\n".join(lines))
    return 0
