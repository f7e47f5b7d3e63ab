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

Passes: `fwd` (forward with bias, no autograd graph), `bwd_input` (grad input from grad output:
conv2d_backward_input, the pools' and ReLU's backward), `bwd_weight` (grad weight and grad bias
from grad output and input: convolutions only), `fwd+bwd` (forward then .backward() through
autograd). The CPU bench runs fwd and fwd+bwd by default, the GPU bench fwd, bwd_input and
bwd_weight (PASSES, GPU_PASSES).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from convkit import flops

__all__ = [
    "ConvSpec", "PoolSpec", "Layer", "LayerInputs", "GOOGLENET_TABLE1", "LAYERS", "QUICK_LAYERS",
    "QUICK_LAYERS_CUDA", "CONV_BENCH_ALGOS", "CPU_ONLY_ALGOS", "PASSES", "GPU_PASSES", "ALL_PASSES", "RELU_AFTER",
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

# Conv algorithms the benchmark times by default ("auto" can be asked for with --algos).
CONV_BENCH_ALGOS = ("direct", "im2col", "1x1")
# Algorithms only the CPU backend has, run where they apply when --algos names them.
CPU_ONLY_ALGOS = ("winograd", "blocked")
# Passes: fwd = forward only (no autograd graph); fwd+bwd = forward, then .backward() of the
# output with a fixed gradient, every input (x, weight, bias) requiring grad; bwd_input = the
# input gradient alone from a fixed grad output (conv2d_backward_input; the pools' and ReLU's
# backward ops, from their forward's indices / output made beforehand); bwd_weight = the weight
# and bias gradients from grad output and input (convolutions only).
# PASSES: the CPU bench's default; GPU_PASSES: the GPU bench's (one row per kernel direction).
PASSES = ("fwd", "fwd+bwd")
GPU_PASSES = ("fwd", "bwd_input", "bwd_weight")
ALL_PASSES = ("fwd", "bwd_input", "bwd_weight", "fwd+bwd")
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


@dataclass(frozen=True)
class ConvSpec:
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1


@dataclass(frozen=True)
class PoolSpec:
    kernel: int
    stride: int
    padding: int = 0
    ceil_mode: bool = False


@dataclass
class LayerInputs:
    """Tensors for one layer: x [N, C, H, W]; for a conv also weight [K, C, R, S] and bias [K];
    grad [N, K, P, Q] (or the pool's output shape), the fixed gradient of the output."""
    x: "object"
    weight: "object" = None
    bias: "object" = None
    grad: "object" = None

    def leaves(self) -> list:
        return [t for t in (self.x, self.weight, self.bias) if t is not None]

    def to(self, dtype) -> "LayerInputs":
        """A detached copy in another dtype, requires_grad as in self (for float64 references)."""
        def conv(t):
            if t is None:
                return None
            return t.detach().to(dtype).requires_grad_(t.requires_grad)
        return LayerInputs(conv(self.x), conv(self.weight), conv(self.bias),
                           None if self.grad is None else self.grad.to(dtype))


@dataclass(frozen=True)
class Layer:
    """One benchmarked layer. op: "conv2d", "max_pool2d", "avg_pool2d" or "relu"; input_shape
    (C, H, W). fixed_batch: the batch this layer always runs at, whatever --batch says (None:
    --batch). default_devices: the device types whose full run includes the layer; elsewhere it
    runs only when --layers names it."""
    name: str
    op: str
    input_shape: Tuple[int, int, int]
    conv: Optional[ConvSpec] = None
    pool: Optional[PoolSpec] = None
    fixed_batch: Optional[int] = None
    default_devices: Tuple[str, ...] = ("cpu", "cuda")

    # ---- shapes and op counts -------------------------------------------------------------
    @property
    def is_conv(self) -> bool:
        return self.op == "conv2d"

    @property
    def is_pool(self) -> bool:
        return self.op in ("max_pool2d", "avg_pool2d")

    @property
    def is_relu(self) -> bool:
        return self.op == "relu"

    def batch_for(self, batch: int) -> int:
        """The batch this layer runs at when the benchmark asks for `batch`."""
        return self.fixed_batch if self.fixed_batch is not None else batch

    @property
    def is_1x1(self) -> bool:
        return self.is_conv and self.conv.kernel == 1 and self.conv.padding == 0

    def output_shape(self, batch: int = 1) -> Tuple[int, int, int, int]:
        shape = (self.batch_for(batch),) + tuple(self.input_shape)
        if self.is_relu:
            return shape
        if self.is_conv:
            c = self.conv
            return flops.conv2d_output_shape(shape, c.out_channels, c.kernel, c.stride, c.padding)
        p = self.pool
        return tuple(flops.pool2d_output_shape(shape, p.kernel, p.stride, p.padding,
                                               ceil_mode=p.ceil_mode))

    @property
    def is_depthwise(self) -> bool:
        """One input channel per group and per output channel (groups = C = K)."""
        return (self.is_conv and self.conv.groups > 1 and self.conv.groups == self.input_shape[0]
                == self.conv.out_channels)

    @property
    def family(self) -> str:
        """Where the layer comes from: "googlenet", "lecture" or "mobilenet" (by its name)."""
        head = self.name.split(".")[0]
        return head if head in ("lecture", "mobilenet") else "googlenet"

    def weight_shape(self) -> Tuple[int, int, int, int]:
        """[K, C/groups, R, S] of a convolution."""
        c = self.conv
        return (c.out_channels, self.input_shape[0] // c.groups, c.kernel, c.kernel)

    def macs(self, batch: int = 1, pass_: str = "fwd") -> int:
        """MACs of a convolution pass: the forward's N*K*P*Q*(C/groups)*R*S; bwd_input and
        bwd_weight each cost as much as the forward, fwd+bwd three times that (the bias is
        ignored)."""
        if not self.is_conv:
            raise ValueError(f"{self.name} is a pooling layer: it has bytes, not MACs")
        c = self.conv
        fwd = flops.conv2d_macs((self.batch_for(batch),) + tuple(self.input_shape), c.out_channels,
                                c.kernel, c.stride, c.padding, groups=c.groups)
        try:
            return {"fwd": fwd, "bwd_input": fwd, "bwd_weight": fwd, "fwd+bwd": 3 * fwd}[pass_]
        except KeyError:
            raise ValueError(f"pass must be one of {ALL_PASSES}, got {pass_!r}") from None

    def bytes(self, batch: int = 1, pass_: str = "fwd", itemsize: int = 4) -> int:
        """Bytes a pooling or ReLU pass must move at least. Pooling fwd: read the input, write
        the output. bwd_input: read grad output (and a max pool's int64 indices), write grad
        input. fwd+bwd: the forward (a max pool also writes the indices, as autograd needs them),
        then that backward.
        ReLU fwd: read x, write y (2 per element); bwd_input: read dy and y, write dx (3 per
        element); fwd+bwd: both (5 per element)."""
        if self.is_conv:
            raise ValueError(f"{self.name} is a convolution: it has MACs, not bytes")
        if pass_ not in self.passes():
            raise ValueError(f"{self.op} layers have passes {', '.join(self.passes())}, not {pass_!r}")
        in_shape = (self.batch_for(batch),) + tuple(self.input_shape)
        out_shape = self.output_shape(batch)
        if self.is_relu:
            numel = 1
            for d in in_shape:
                numel *= d
            fwd = flops.relu_bytes(numel, itemsize)
            bwd = 3 * numel * itemsize
            return {"fwd": fwd, "bwd_input": bwd, "fwd+bwd": fwd + bwd}[pass_]
        if pass_ == "fwd":
            return flops.pool2d_bytes(in_shape, out_shape, itemsize)
        indices = self.op == "max_pool2d"
        # The backward moves the same elements as a forward with indices, the other way: read
        # dy (+ idx), write dx.
        bwd = flops.pool2d_bytes(in_shape, out_shape, itemsize, indices=indices)
        return bwd if pass_ == "bwd_input" else 2 * bwd

    def work(self, batch: int, pass_: str, itemsize: int = 4) -> int:
        """MACs for a convolution, bytes for a pool."""
        return self.macs(batch, pass_) if self.is_conv else self.bytes(batch, pass_, itemsize)

    def algos(self) -> List[str]:
        """The convkit algorithms that apply; pools and ReLU have one implementation, named
        "direct"."""
        if not self.is_conv:
            return ["direct"]
        return ["direct", "im2col"] + (["1x1"] if self.is_1x1 else [])

    @property
    def takes_winograd(self) -> bool:
        """Whether the CPU-only "winograd" applies: a 3x3 kernel at stride 1 (the table has no
        dilation)."""
        return self.is_conv and self.conv.kernel == 3 and self.conv.stride == 1

    def passes(self) -> List[str]:
        """The passes this layer has: bwd_weight only where there are weights."""
        return list(ALL_PASSES) if self.is_conv else [p for p in ALL_PASSES if p != "bwd_weight"]

    # ---- inputs and calls -----------------------------------------------------------------
    def make_inputs(self, batch: int, dtype=None, seed: int = 0, requires_grad: bool = False,
                    device="cpu") -> LayerInputs:
        """Deterministic random inputs: x ~ N(0, 1), weight ~ N(0, 1/fan_in) (outputs stay O(1)),
        bias ~ N(0, 0.1), grad ~ N(0, 1). On the CPU drawn in float64 (every dtype sees the same
        numbers); on a GPU drawn there in float32 by that device's generator (fast for the
        large tensors; other numbers than the CPU's, the same on every GPU run)."""
        import torch
        dtype = dtype or torch.float32
        dev = torch.device(device)
        if dev.type == "cpu":
            gen, draw_dtype = torch.Generator().manual_seed(seed), torch.float64
        else:
            gen, draw_dtype = torch.Generator(device=dev).manual_seed(seed), torch.float32
        batch = self.batch_for(batch)

        def randn(*shape, scale=1.0, grad=True):
            t = torch.randn(*shape, generator=gen, dtype=draw_dtype, device=dev) * scale
            return t.to(dtype=dtype).requires_grad_(requires_grad and grad)

        c, h, w = self.input_shape
        x = randn(batch, c, h, w)
        weight = bias = None
        if self.is_conv:
            ws = self.weight_shape()
            fan_in = ws[1] * ws[2] * ws[3]
            weight = randn(*ws, scale=fan_in ** -0.5)
            bias = randn(ws[0], scale=0.1)
        grad = randn(*self.output_shape(batch), grad=False)
        return LayerInputs(x, weight, bias, grad)

    def forward(self, inputs: LayerInputs, impl: str = "torch", algo: Optional[str] = None):
        """The layer's op on inputs, by torch.nn.functional (impl="torch") or
        convkit.functional (impl="convkit", with algo for a convolution)."""
        if impl == "torch":
            import torch.nn.functional as F
            extra = {}
        elif impl == "convkit":
            import convkit.functional as F
            extra = {"algo": algo} if (self.is_conv and algo) else {}
        else:
            raise ValueError(f"impl must be 'torch' or 'convkit', got {impl!r}")
        if self.is_conv:
            c = self.conv
            return F.conv2d(inputs.x, inputs.weight, inputs.bias, c.stride, c.padding, 1, c.groups,
                            **extra)
        if self.is_relu:
            return F.relu(inputs.x)
        p = self.pool
        if self.op == "max_pool2d":
            return F.max_pool2d(inputs.x, p.kernel, p.stride, p.padding, ceil_mode=p.ceil_mode)
        return F.avg_pool2d(inputs.x, p.kernel, p.stride, p.padding, ceil_mode=p.ceil_mode)

    def backward(self, inputs: LayerInputs, pass_: str, impl: str = "torch",
                 algo: Optional[str] = None):
        """A callable for a backward pass on its own (bwd_input, bwd_weight), by torch's backward
        ops (aten.convolution_backward, the pools' and ReLU's backward ops: what autograd runs)
        or convkit's (conv2d_backward_input / _weight / _bias, max_pool2d_backward, ...). It
        returns {"dx"} or {"dweight", "dbias"}. What the backward needs from a forward (a max
        pool's indices, the ReLU's output) is made here, once, by the same implementation."""
        import torch
        if pass_ not in ("bwd_input", "bwd_weight") or pass_ not in self.passes():
            raise ValueError(f"{self.name}: no backward pass {pass_!r} (it has {self.passes()})")
        if impl not in ("torch", "convkit"):
            raise ValueError(f"impl must be 'torch' or 'convkit', got {impl!r}")
        aten = torch.ops.aten
        if impl == "convkit":
            import convkit.functional as CF
        x, dy = inputs.x.detach(), inputs.grad
        if self.is_conv:
            c = self.conv
            w = inputs.weight.detach()
            st, pad, dil = [c.stride] * 2, [c.padding] * 2, [1, 1]
            if impl == "torch":
                mask = [True, False, False] if pass_ == "bwd_input" else [False, True, True]
                bias_sizes = [c.out_channels] if pass_ == "bwd_weight" else None

                def run_torch():
                    dx, dw, db = aten.convolution_backward(dy, x, w, bias_sizes, st, pad, dil,
                                                           False, [0, 0], c.groups, mask)
                    return {"dx": dx} if pass_ == "bwd_input" else {"dweight": dw, "dbias": db}
                return run_torch
            kw = {"algo": algo} if algo else {}
            if pass_ == "bwd_input":
                shape = tuple(x.shape)
                return lambda: {"dx": CF.conv2d_backward_input(dy, w, shape, c.stride, c.padding, 1,
                                                               c.groups, **kw)}
            wshape = tuple(w.shape)
            return lambda: {"dweight": CF.conv2d_backward_weight(dy, x, wshape, c.stride, c.padding,
                                                                 1, c.groups, **kw),
                            "dbias": CF.conv2d_backward_bias(dy)}
        if self.is_relu:
            if impl == "torch":
                y = torch.relu(x)
                return lambda: {"dx": aten.threshold_backward(dy, y, 0)}
            y = CF.relu(x)
            return lambda: {"dx": CF.relu_backward(dy, y)}
        p = self.pool
        k, s, pd = [p.kernel] * 2, [p.stride] * 2, [p.padding] * 2
        if impl == "torch":
            if self.op == "max_pool2d":
                _, idx = aten.max_pool2d_with_indices(x, k, s, pd, [1, 1], p.ceil_mode)
                return lambda: {"dx": aten.max_pool2d_with_indices_backward(
                    dy, x, k, s, pd, [1, 1], p.ceil_mode, idx)}
            return lambda: {"dx": aten.avg_pool2d_backward(dy, x, k, s, pd, p.ceil_mode, True, None)}
        shape = tuple(x.shape)
        if self.op == "max_pool2d":
            _, idx = CF.max_pool2d(x, p.kernel, p.stride, p.padding, ceil_mode=p.ceil_mode,
                                   return_indices=True)
            return lambda: {"dx": CF.max_pool2d_backward(dy, shape, idx, p.kernel, p.stride,
                                                         p.padding, 1, p.ceil_mode)}
        return lambda: {"dx": CF.avg_pool2d_backward(dy, shape, p.kernel, p.stride, p.padding,
                                                     p.ceil_mode)}

    def step(self, inputs: LayerInputs, pass_: str, impl: str = "torch",
             algo: Optional[str] = None):
        """A callable that runs one pass. fwd: the forward under no_grad. fwd+bwd: clear the
        leaves' .grad, forward, then .backward(inputs.grad) (inputs must require grad).
        bwd_input, bwd_weight: Layer.backward's callable under no_grad."""
        import torch
        if pass_ == "fwd":
            def run_fwd():
                with torch.no_grad():
                    return self.forward(inputs, impl, algo)
            return run_fwd
        if pass_ == "fwd+bwd":
            leaves = inputs.leaves()
            if not all(t.requires_grad for t in leaves):
                raise ValueError("fwd+bwd needs inputs made with requires_grad=True")

            def run_fwd_bwd():
                for t in leaves:
                    t.grad = None
                y = self.forward(inputs, impl, algo)
                y.backward(inputs.grad)
                return y
            return run_fwd_bwd
        if pass_ in ("bwd_input", "bwd_weight"):
            with torch.no_grad():
                bwd = self.backward(inputs, pass_, impl, algo)

            def run_bwd():
                with torch.no_grad():
                    return bwd()
            return run_bwd
        raise ValueError(f"pass must be one of {ALL_PASSES}, got {pass_!r}")

    def results(self, inputs: LayerInputs, pass_: str, impl: str = "torch",
                algo: Optional[str] = None) -> Dict[str, "object"]:
        """Run one pass and return what it computed, detached: fwd {"y"}; fwd+bwd {"y", "dx",
        "dweight", "dbias"}; bwd_input {"dx"}; bwd_weight {"dweight", "dbias"}."""
        out = self.step(inputs, pass_, impl, algo)()
        if pass_ in ("bwd_input", "bwd_weight"):
            return {k: v.detach() for k, v in out.items()}
        out = {"y": out.detach()}
        if pass_ == "fwd+bwd":
            for key, t in (("dx", inputs.x), ("dweight", inputs.weight), ("dbias", inputs.bias)):
                if t is not None:
                    out[key] = None if t.grad is None else t.grad.detach().clone()
                    t.grad = None
        return out


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
