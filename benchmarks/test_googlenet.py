"""GoogLeNet's layers and the lecture's inception example, one benchmark per (layer, pass, algo).

Each case first checks convkit's result against torch in float64 (a wrong result fails the test
and is not timed), then times torch's op on the same inputs (median of a few calls, stored in
extra_info as ref_ms), then times convkit with pytest-benchmark. Groups are "<layer> <pass>",
so the algorithms of one layer sit side by side; extra_info carries the MACs (or bytes), the
reference's time, the ratio and GFLOP/s, so saved runs compare between commits.
"""
import math
import statistics

import pytest

pytest.importorskip("pytest_benchmark", reason="the benchmark suites need pytest-benchmark")

from convkit.bench.layers import LAYERS, PASSES  # noqa: E402
from convkit.bench.runner import check_layer, time_interleaved  # noqa: E402

CASES = [
    pytest.param(layer, pass_, algo, seed, id=f"{layer.name}-{pass_}-{algo}")
    for seed, layer in enumerate(LAYERS)
    for pass_ in PASSES
    for algo in layer.algos()
]


@pytest.mark.parametrize("layer,pass_,algo,seed", CASES)
def test_googlenet_layer(benchmark, bench_batch, bench_rounds, layer, pass_, algo, seed):
    import torch

    inputs = layer.make_inputs(bench_batch, torch.float32, seed=seed,
                               requires_grad=(pass_ != "fwd"))
    check = check_layer(layer, inputs, pass_, algo, "float32")
    if not check["ok"]:
        pytest.fail(f"{layer.name} {pass_} algo={algo}: {check['worst']} relative error "
                    f"{check['max_rel_err']:.3g} > {check['tol']:.3g} (not timed)")

    ref_s = time_interleaved([layer.step(inputs, pass_, "torch")], warmup=1, repeat=5)[0]
    ref_ms = statistics.median(ref_s) * 1e3
    work_key = "macs" if layer.is_conv else "bytes"
    work = layer.work(bench_batch, pass_)
    benchmark.group = f"{layer.name} {pass_}"
    benchmark.extra_info.update({
        "op": layer.op, "layer": layer.name, "pass": pass_, "algo": algo, "dtype": "float32",
        "batch": bench_batch, work_key: work, "ref": "torch-cpu", "ref_ms": ref_ms,
        "max_rel_err": check["max_rel_err"],
    })

    # Short ops (pools, small 1x1s) loop inside a round so that a round lasts >= 2 ms.
    ours = layer.step(inputs, pass_, "convkit", algo)
    once = min(time_interleaved([ours], warmup=1, repeat=1)[0])
    iterations = max(1, min(200, math.ceil(0.002 / max(once, 1e-9))))
    benchmark.pedantic(ours, rounds=bench_rounds, warmup_rounds=1, iterations=iterations)

    stats = getattr(benchmark, "stats", None)      # None under --benchmark-disable
    if stats is not None:
        ours_ms = stats.stats.median * 1e3
        benchmark.extra_info["ours_ms"] = ours_ms
        benchmark.extra_info["ratio"] = ours_ms / ref_ms
        if layer.is_conv:
            benchmark.extra_info["gflops"] = 2 * work / (ours_ms / 1e3) / 1e9
        else:
            benchmark.extra_info["gbps"] = work / (ours_ms / 1e3) / 1e9
