"""GoogLeNet's layers, the lecture's inception example, a few ReLUs (and on the GPU MobileNet's
depthwise layers), one benchmark per (layer, pass, algo), on the CPU (passes fwd and fwd+bwd) or
(CONVKIT_BENCH_DEVICE=cuda) the GPU (fwd, bwd_input, bwd_weight), as `convkit bench` does.

CPU: each case first checks convkit's result against torch in float64 (a wrong result fails the
test and is not timed), then times torch's op on the same inputs (median of a few calls, stored
in extra_info as ref_ms), then times convkit with pytest-benchmark.

GPU: the check and the timing of both sides are `convkit bench --device cuda`'s own
(convkit.bench.gpu_rows.run_layer_pass: CUDA events, L2 flushed before each sample, median; cuDNN
with TF32 off and on), so extra_info's ours_ms / ref_ms / ref_tf32_ms / ratio are the numbers
the CLI would print. pytest-benchmark's own statistics, the ones --benchmark-compare tracks
between commits, time convkit's call from the host: each round is one call followed by
torch.cuda.synchronize(), after an untimed L2 flush and synchronize (pedantic's setup), so they
include the launch and dispatch overhead a caller sees, which the event times leave out.
Convolutions are skipped on the GPU until convkit's CUDA module has them.

Groups are "<layer> <pass>", so the algorithms of one layer sit side by side; extra_info
carries the MACs (or bytes), the reference's time, the ratio and GFLOP/s (GB/s), so saved runs
compare between commits.
"""
import math
import os
import statistics

import pytest

pytest.importorskip("pytest_benchmark", reason="the benchmark suites need pytest-benchmark")

from convkit.bench.layers import GPU_PASSES, LAYERS, PASSES, select_layers  # noqa: E402
from convkit.bench.checks import check_layer  # noqa: E402
from convkit.bench.timing import time_interleaved  # noqa: E402

DEVICE = os.environ.get("CONVKIT_BENCH_DEVICE", "") or "cpu"   # as conftest.py reads it
CASES = [
    pytest.param(layer, pass_, algo, LAYERS.index(layer), id=f"{layer.name}-{pass_}-{algo}")
    for layer in select_layers(None, device=DEVICE)
    for pass_ in (GPU_PASSES if DEVICE.startswith("cuda") else PASSES)
    if pass_ in layer.passes()
    for algo in layer.algos()
]


@pytest.mark.parametrize("layer,pass_,algo,seed", CASES)
def test_googlenet_layer(benchmark, bench_device, bench_batch, bench_rounds, layer, pass_, algo,
                         seed, request):
    if bench_device != "cpu":
        return _bench_cuda(benchmark, request.getfixturevalue("cuda_timer"), bench_device,
                           bench_batch, bench_rounds, layer, pass_, algo, seed)
    import torch

    inputs = layer.make_inputs(bench_batch, torch.float32, seed=seed,
                               requires_grad=(pass_ == "fwd+bwd"))
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
        "batch": layer.batch_for(bench_batch), work_key: work, "ref": "torch-cpu", "ref_ms": ref_ms,
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


def _bench_cuda(benchmark, timer, device, batch, rounds, layer, pass_, algo, seed):
    import torch
    from convkit.bench.gpu_rows import run_layer_pass

    inputs = layer.make_inputs(batch, torch.float32, seed=seed, requires_grad=(pass_ == "fwd+bwd"),
                               device=device)
    rows = run_layer_pass(layer, pass_, [algo], inputs, "float32", batch, timer, {},
                          warmup=3, repeat=max(10, rounds))
    row = rows[0]
    if row["status"] != "ok":
        pytest.fail(f"{layer.name} {pass_} algo={algo}: {row['status']}: {row.get('error')} (not timed)")
    tf32_rows = [r for r in rows if r.get("ref_tf32") and r["ref"] == "cudnn"]
    benchmark.group = f"{layer.name} {pass_}"
    benchmark.extra_info.update({k: v for k, v in row.items() if v is not None and "ceiling" not in k})
    if tf32_rows:
        benchmark.extra_info["ref_tf32_ms"] = tf32_rows[0]["ref_ms"]

    ours = layer.step(inputs, pass_, "convkit", algo)

    def flushed():
        torch.cuda.synchronize()
        timer.flush()
        torch.cuda.synchronize()

    def call_and_wait():
        ours()
        torch.cuda.synchronize()

    benchmark.pedantic(call_and_wait, setup=flushed, rounds=rounds, warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["host_ms"] = stats.stats.median * 1e3
