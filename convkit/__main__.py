"""convkit's command line: `convkit <command>` or `python -m convkit <command>`.

  convkit bench [--quick] [--layers 3a.*,stem.*] [--algos direct,im2col,1x1] [--json PATH] ...
  convkit bench --device cuda [--dtype float16] [--json PATH] [--markdown PATH]
  convkit layers [--layers ...] [--batch N]
  convkit train-digits [--epochs 12] [--seed 0] [--out-dir DIR] [--viz]
  convkit viz-bench BENCH.json --out plot.png
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def build_parser() -> argparse.ArgumentParser:
    from convkit.bench.cli import add_bench_arguments
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
    t = sub.add_parser(
        "train-digits", help="train LeNet-5 on scikit-learn's digits with convkit's CPU kernels",
        description="Train convkit.models.LeNet5 on scikit-learn's bundled 8x8 digits (no download), "
                    "upsampled to 32x32, with convkit's CPU kernels; print the test accuracy on a "
                    "fixed 20%% held-out split and the time, and save a loss/accuracy plot.")
    t.add_argument("--epochs", type=int, default=12, help="epochs [12]")
    t.add_argument("--seed", type=int, default=0, help="seed of the initial weights and batch order [0]")
    t.add_argument("--batch-size", type=int, default=32, help="batch size [32]")
    t.add_argument("--lr", type=float, default=3e-3, help="peak Adam learning rate [3e-3]")
    t.add_argument("--out-dir", default="train-digits-out", help="where train-digits.png goes [train-digits-out]")
    t.add_argument("--viz", action="store_true",
                   help="also save the trained model's filters, feature maps and an occlusion map there")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    v = sub.add_parser("viz-bench", help="plot a `convkit bench --json` result as a PNG",
                       description="Plot a convkit bench JSON: time ours/reference per layer and pass "
                                   "(best convkit algorithm per layer), and the convolutions' GFLOP/s "
                                   "against the measured matrix-product ceiling.")
    v.add_argument("json", metavar="BENCH.json", help="a file written by `convkit bench --json`")
    v.add_argument("--out", required=True, help="the PNG to write")
    v.add_argument("--dtype", default=None, help="rows of this dtype [the most common]")
    v.add_argument("--batch", type=int, default=None, help="rows of this batch [the largest]")
    v.add_argument("--ref", default=None, help="the reference to compare with [cudnn, else torch-cpu]")
    v.add_argument("--rate-pass", default=None, help="the pass whose GFLOP/s are plotted [fwd]")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        from convkit.bench.cli import bench_main
        return bench_main(args)
    if args.command == "layers":
        from convkit.bench.cli import list_layers_main
        return list_layers_main(args)
    if args.command == "train-digits":
        from convkit.train import train_digits_main
        return train_digits_main(args)
    if args.command == "viz-bench":
        from convkit.viz import plot_bench
        print(plot_bench(args.json, args.out, dtype=args.dtype, batch=args.batch, ref=args.ref,
                         rate_pass=args.rate_pass))
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
