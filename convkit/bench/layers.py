"""The benchmark's layer table: every convolution and pooling layer of GoogLeNet plus the
lecture's inception example, a few ReLUs and MobileNet's depthwise 3x3 layers, with op counts,
input set-up and the calls to convkit and torch for each pass.

One source for `convkit bench` (convkit/bench/cli.py and the modules it imports) and the
pytest-benchmark suites (benchmarks/). Layer names are fixed by DESIGN.md "Benchmark rows"; the
layers DESIGN.md does not name are
- `<conv layer>.relu`: a ReLU on that convolution's output, as GoogLeNet has after every
  convolution; `relu.large`: one [1, 64, 1024, 1024] tensor, 256 MiB in float32, whatever --batch
  says (the bandwidth figure);
- `mobilenet.dw<C>_<H>`: a depthwise 3x3 convolution, stride 1, pad 1, groups = C, on C x H x H,
  the stride-1 depthwise layers of MobileNet v1 (Howard et al. 2017, Table 1: 32 channels at
  112x112, 128 at 56x56, 256 at 28x28, 512 at 14x14, 1024 at 7x7). They are the shapes where a
  GEMM formulation has nothing to reuse (one input channel per output channel: 9 MACs per output)
  and memory traffic decides, the opposite end from GoogLeNet's 3x3s. They cost a few MMACs per
  image. In the GPU bench's default set; on the CPU only when named (--layers 'mobilenet.*'):
  torch's CPU path for grouped convolutions in float64 (the reference every result is checked
  against) runs one small parallel region per group, which a busy machine turns into seconds per
  call (9 s for dw512_14 at batch 2 with 2 threads on a loaded 2-core machine, 4 ms with 1).

What a layer is and how each pass runs: layer.py.
"""
from __future__ import annotations

import fnmatch
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from convkit import flops
from convkit.bench.layer import (ALL_PASSES, GPU_PASSES, PASSES, ConvSpec, Layer,
                                 LayerInputs, PoolSpec)

__all__ = [
    "ConvSpec", "PoolSpec", "Layer", "LayerInputs", "GOOGLENET_TABLE1", "LAYERS", "QUICK_LAYERS",
    "QUICK_LAYERS_CUDA", "CONV_BENCH_ALGOS", "PASSES", "GPU_PASSES", "ALL_PASSES", "RELU_AFTER",
    "MOBILENET_DW",
    "layers_by_name", "select_layers", "check_table",
]

# GoogLeNet channel numbers: Szegedy et al. 2015, "Going Deeper with Convolutions", Table 1
# (the same numbers as ../shared/googlenet-table1.csv).
# module: (input_hw, input_c, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj, output_c,
#          the table's "ops" column in millions of MACs, used as a cross-check below)
GOOGLENET_TABLE1: Dict[str, Tuple[int, ...]] = {
    "3a": (28, 192, 64, 96, 128, 16, 32, 32, 256, 128),
    "3b": (28, 256, 128, 128, 192, 32, 96, 64, 480, 304),
    "4a": (14, 480, 192, 96, 208, 16, 48, 64, 512, 73),
    "4b": (14, 512, 160, 112, 224, 24, 64, 64, 512, 88),
    "4c": (14, 512, 128, 128, 256, 24, 64, 64, 512, 100),
    "4d": (14, 512, 112, 144, 288, 32, 64, 64, 528, 119),
    "4e": (14, 528, 256, 160, 320, 32, 128, 128, 832, 170),
    "5a": (7, 832, 256, 160, 320, 32, 128, 128, 832, 54),
    "5b": (7, 832, 384, 192, 384, 48, 128, 128, 1024, 71),
}

# Conv algorithms the benchmark times by default, where the device's module builds them
# (implicit_gemm: the CUDA modules; "auto" can be asked for with --algos).
CONV_BENCH_ALGOS = ("direct", "im2col", "1x1", "implicit_gemm")
# A few layers that cover each kind of op (1x1, 3x3, 5x5, strided stem, max and avg pool), for
# `convkit bench --quick`; on the GPU also a depthwise one (QUICK_LAYERS_CUDA).
QUICK_LAYERS = ("stem.7x7", "3a.1x1", "3a.3x3", "4a.5x5", "lecture.3x3", "pool2", "3a.pool",
                "avgpool", "3a.3x3.relu")
QUICK_LAYERS_CUDA = QUICK_LAYERS + ("mobilenet.dw128_56",)
# The convolutions whose output the table also runs a ReLU on (`<name>.relu`): the stem's
# large maps, then one 3x3 per stage, down to 7x7.
RELU_AFTER = ("stem.7x7", "stem.3x3", "3a.3x3", "4e.3x3", "5b.3x3")
# MobileNet v1's stride-1 depthwise 3x3 layers (Howard et al. 2017, Table 1): (channels, H = W).
MOBILENET_DW = ((32, 112), (128, 56), (256, 28), (512, 14), (1024, 7))


# ---- the table ------------------------------------------------------------------------------
def _conv(name, c, hw, k_out, kernel, stride=1, padding=0, groups=1) -> Layer:
    return Layer(name, "conv2d", (c, hw, hw), conv=ConvSpec(k_out, kernel, stride, padding, groups))


def _maxpool(name, c, hw, kernel, stride, padding=0, ceil_mode=False) -> Layer:
    return Layer(name, "max_pool2d", (c, hw, hw), pool=PoolSpec(kernel, stride, padding, ceil_mode))


def _relu_after(conv: Layer) -> Layer:
    """A ReLU on `conv`'s output: [N, K, P, Q]."""
    return Layer(f"{conv.name}.relu", "relu", tuple(conv.output_shape(1)[1:]))


def _inception(module: str, hw: int, c: int, n1x1: int, n3r: int, n3: int, n5r: int, n5: int,
               pool_proj: int) -> List[Layer]:
    """The branches of one inception module, in Table 1's column order; the 5x5 is a real 5x5."""
    return [
        _conv(f"{module}.1x1", c, hw, n1x1, 1),
        _conv(f"{module}.3x3_reduce", c, hw, n3r, 1),
        _conv(f"{module}.3x3", n3r, hw, n3, 3, padding=1),
        _conv(f"{module}.5x5_reduce", c, hw, n5r, 1),
        _conv(f"{module}.5x5", n5r, hw, n5, 5, padding=2),
        # 3x3/1 pad 1: the same output size with or without ceil_mode; torchvision sets it.
        _maxpool(f"{module}.pool", c, hw, 3, 1, padding=1, ceil_mode=True),
        _conv(f"{module}.pool_proj", c, hw, pool_proj, 1),
    ]


def _build_layers() -> List[Layer]:
    t = {m: row[:8] for m, row in GOOGLENET_TABLE1.items()}
    layers = [
        _conv("stem.7x7", 3, 224, 64, 7, stride=2, padding=3),          # -> 64x112x112
        _maxpool("pool1", 64, 112, 3, 2, ceil_mode=True),                 # -> 64x56x56
        _conv("stem.1x1", 64, 56, 64, 1),
        _conv("stem.3x3", 64, 56, 192, 3, padding=1),                      # -> 192x56x56
        _maxpool("pool2", 192, 56, 3, 2, ceil_mode=True),                 # -> 192x28x28
    ]
    layers += _inception("3a", *t["3a"]) + _inception("3b", *t["3b"])
    layers.append(_maxpool("pool3", 480, 28, 3, 2, ceil_mode=True))       # -> 480x14x14
    for m in ("4a", "4b", "4c", "4d", "4e"):
        layers += _inception(m, *t[m])
    layers.append(_maxpool("pool4", 832, 14, 3, 2, ceil_mode=True))       # -> 832x7x7
    layers += _inception("5a", *t["5a"]) + _inception("5b", *t["5b"])
    layers.append(Layer("avgpool", "avg_pool2d", (1024, 7, 7), pool=PoolSpec(7, 1)))  # -> 1024x1x1
    # The lecture's inception example on 28x28x256: bottleneck widths (1x1 128; reduce 64 ->
    # 3x3 192; reduce 64 -> 5x5 96; pool proj 64), plus the naive module's 3x3 and 5x5.
    layers += [lay for lay in _inception("lecture", 28, 256, 128, 64, 192, 64, 96, 64)]
    layers += [
        _conv("lecture.naive_3x3", 256, 28, 192, 3, padding=1),
        _conv("lecture.naive_5x5", 256, 28, 96, 5, padding=2),
    ]
    # ReLUs last, so the layers above keep their places (their inputs are seeded by them).
    by = {lay.name: lay for lay in layers}
    layers += [_relu_after(by[name]) for name in RELU_AFTER]
    # One large tensor for the bandwidth figure; on the CPU only when asked for by name.
    layers.append(Layer("relu.large", "relu", (64, 1024, 1024), fixed_batch=1,
                        default_devices=("cuda",)))
    # MobileNet's depthwise 3x3s last of all, so every layer above keeps its seed.
    layers += [Layer(f"mobilenet.dw{c}_{hw}", "conv2d", (c, hw, hw),
                     conv=ConvSpec(c, 3, 1, 1, groups=c), default_devices=("cuda",))
               for c, hw in MOBILENET_DW]
    return layers


LAYERS: List[Layer] = _build_layers()


def layers_by_name() -> Dict[str, Layer]:
    return {lay.name: lay for lay in LAYERS}


def check_table(layers: Sequence[Layer] = LAYERS) -> None:
    """Cross-check the table: shapes chain as in the paper, each module's MACs round to Table 1's
    ops column, and the lecture layers match convkit.flops.LECTURE_INCEPTION_*. Raises
    AssertionError on a mismatch."""
    by = {lay.name: lay for lay in layers}
    # Output sizes of the stem and the stride-2 pools (Table 1's "output size" column).
    expect = {"stem.7x7": (64, 112), "pool1": (64, 56), "stem.3x3": (192, 56), "pool2": (192, 28),
              "pool3": (480, 14), "pool4": (832, 7), "avgpool": (1024, 1)}
    for name, (c, hw) in expect.items():
        got = by[name].output_shape(1)
        assert got == (1, c, hw, hw), f"{name}: output {got}, Table 1 says {c}x{hw}x{hw}"
    stem = by["stem.1x1"].macs(1) + by["stem.3x3"].macs(1)
    assert round(stem / 1e6) == 360, f"stem 1x1 + 3x3: {stem} MACs, Table 1 says 360M ops"
    for m, row in GOOGLENET_TABLE1.items():
        out_c, ops_m = row[8], row[9]
        branches = [by[f"{m}.{b}"] for b in ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5",
                                             "pool_proj")]
        total = sum(b.macs(1) for b in branches)
        # Table 1 rounds loosely (4a: 73.6M printed as 73M). Its 5a entry, 54M, does not follow
        # from its own channel numbers (51.1M, as its 1072K params vs 1042K do not): skipped.
        if m != "5a":
            assert abs(total / 1e6 - ops_m) < 1, f"{m}: {total} MACs, Table 1 says {ops_m}M ops"
        concat = sum(by[f"{m}.{b}"].output_shape(1)[1] for b in ("1x1", "3x3", "5x5", "pool_proj"))
        assert concat == out_c, f"{m}: branches concatenate to {concat} channels, not {out_c}"
    for branch, macs in flops.LECTURE_INCEPTION_BOTTLENECK.items():
        assert by[f"lecture.{branch}"].macs(1) == macs, f"lecture.{branch}"
    naive = {"1x1": "lecture.1x1", "3x3": "lecture.naive_3x3", "5x5": "lecture.naive_5x5"}
    for branch, macs in flops.LECTURE_INCEPTION_NAIVE.items():
        assert by[naive[branch]].macs(1) == macs, naive[branch]
    assert sum(flops.LECTURE_INCEPTION_NAIVE.values()) == 854_196_224   # the slide's "854M ops"
    for lay in layers:
        if lay.is_relu and lay.name != "relu.large":
            conv = by[lay.name[:-len(".relu")]]
            assert lay.output_shape(2) == conv.output_shape(2), f"{lay.name}: not {conv.name}'s output"
    if "relu.large" in by:
        assert by["relu.large"].bytes(32, "fwd", 4) == 2 * 256 * 2 ** 20, "relu.large: 256 MiB in float32"
    for c, hw in MOBILENET_DW:
        name = f"mobilenet.dw{c}_{hw}"
        if name not in by:
            continue
        lay = by[name]
        assert lay.is_depthwise and lay.weight_shape() == (c, 1, 3, 3), f"{name}: not depthwise 3x3"
        assert lay.output_shape(1) == (1, c, hw, hw), f"{name}: stride 1 pad 1 keeps {hw}x{hw}"
        assert lay.macs(1) == c * hw * hw * 9, f"{name}: 9 MACs per output element"


check_table()


def _match(pattern: str, name: str, names: Sequence[str]) -> bool:
    """A glob matches by fnmatch; a full layer name matches only itself ("3a.3x3" is not
    "3a.3x3_reduce"); anything else matches as a substring."""
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    if pattern in names:
        return pattern == name
    return pattern in name


def select_layers(patterns: Optional[Iterable[str] | str] = None,
                  layers: Sequence[Layer] = LAYERS, device: str = "cpu") -> List[Layer]:
    """Layers whose name matches any pattern (comma-separated string or list): a glob
    ("3a.*", "*.5x5"), a full layer name (just that layer), or else a substring ("pool"
    matches pool1..4, the branch pools and pool_proj). None or empty: every layer whose
    default_devices include `device`'s type ("cpu", "cuda:1" -> "cuda"). Table order is kept.
    Raises ValueError when a pattern matches nothing."""
    if isinstance(patterns, str):
        patterns = patterns.split(",")
    patterns = [p.strip() for p in patterns if p.strip()] if patterns is not None else []
    if not patterns:
        kind = str(device).split(":")[0]
        return [lay for lay in layers if kind in lay.default_devices]
    names = {lay.name for lay in layers}
    for p in patterns:
        if not any(_match(p, lay.name, names) for lay in layers):
            raise ValueError(f"--layers: {p!r} matches no layer (see `convkit layers`)")
    return [lay for lay in layers if any(_match(p, lay.name, names) for p in patterns)]
