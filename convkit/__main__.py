"""convkit's command line: `convkit <command>` or `python -m convkit <command>`.

  convkit bench [--quick] [--layers 3a.*,stem.*] [--algos direct,im2col,1x1] [--json PATH] ...
  convkit bench --device cuda [--dtype float16] [--json PATH] [--markdown PATH]
  convkit layers [--layers ...] [--batch N]
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    from convkit.bench.runner import add_bench_arguments
    p = argparse.ArgumentParser(prog="convkit", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", metavar="command")
    sub.required = True
    b = sub.add_parser(
        "bench", help="time convkit against torch on GoogLeNet's layers",
        description="Time every convkit algorithm against torch.nn.functional on GoogLeNet's "
                    "convolution and pooling layers (Table 1, real 5x5), the lecture's "
                    "inception example, MobileNet's depthwise 3x3 layers and a few ReLUs, in one "
                    "run: interleaved samples, results checked against float64 first. On the "
                    "CPU against oneDNN at the same thread count (fwd and fwd+bwd); with --device "
                    "cuda per pass (fwd, bwd_input, bwd_weight) at batches 1 and 32 against cuDNN "
                    "(TF32 off and on), our CuPy im2col + cuBLAS and torch's CUDA kernels, timed "
                    "with CUDA events on a cold L2.")
    add_bench_arguments(b)
    lay = sub.add_parser("layers", help="list the benchmark's layer table")
    lay.add_argument("--layers", default=None, help="comma-separated globs or substrings")
    lay.add_argument("--batch", type=int, default=1, help="batch size for the op counts [1]")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        from convkit.bench.runner import bench_main
        return bench_main(args)
    if args.command == "layers":
        from convkit.bench.runner import list_layers_main
        return list_layers_main(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
