#!/usr/bin/env python3
"""What algo="implicit_gemm" plans for each GoogLeNet convolution of the benchmark table (no GPU
needed: the plan is a pure function of the shape, chosen on a reference H100 of 132 SMs): the
block tile, split-K, blocks of the launch, waves on 132 SMs at the tile's blocks an SM, and the
plan model's time against the layer's multiply-adds at the SM's float32 FMA peak (so "model eff"
is what the model itself expects: waves' fill times the tile's efficiency, less split-K's cost).
A model, not a measurement: benchmarks/gpu_check.sh's bench is the measurement.

    python tools/igemm_plans.py [--batch 1,32] [--dtype float32] [--pass fwd,bwd_input,bwd_weight] [--layers '5b.*']
"""
import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--pass", dest="passes", default="fwd,bwd_input,bwd_weight")
    ap.add_argument("--layers", default=None, help="layer patterns as convkit bench takes them")
    args = ap.parse_args(argv)

    import convkit
    from convkit import _backend
    from convkit.bench.layers import select_layers
    mod = _backend.module("cudasim")
    cap = convkit.workspace_cap()
    peak_sm = 67e12 / 2 / 132  # FMA/s of one SM (float32 SIMT; float64 half)
    print(f"{'layer':<16} {'batch':>5} {'pass':<10} {'tile':<7} {'splits':>6} {'blocks':>6} {'waves':>6} "
          f"{'model us':>9} {'model eff':>9}")
    for batch in [int(b) for b in args.batch.split(",")]:
        for layer in select_layers(args.layers, device="cuda"):
            if not layer.is_conv:
                continue
            c, (C, H, W) = layer.conv, layer.input_shape
            n = layer.batch_for(batch)
            _, K, P, Q = layer.output_shape(n)
            p = mod.ConvParams(n, C, H, W, c.out_channels, c.kernel, c.kernel, c.stride, c.stride, c.padding,
                               c.padding, c.padding, c.padding, 1, 1, c.groups)
            macs = n * K * P * Q * (C // c.groups) * c.kernel * c.kernel
            for pass_ in args.passes.split(","):
                plan = mod.implicit_gemm_plan(pass_, args.dtype, p, cap)
                waves = plan["blocks"] / (132 * plan["blocks_per_sm"])
                rate = peak_sm * 132 * (0.5 if args.dtype == "float64" else 1.0)
                eff = macs / rate / plan["model_seconds"]
                print(f"{layer.name:<16} {n:>5} {pass_:<10} {plan['tile']:<7} {plan['splits']:>6} {plan['blocks']:>6} "
                      f"{waves:>6.2f} {plan['model_seconds'] * 1e6:>9.1f} {eff:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
