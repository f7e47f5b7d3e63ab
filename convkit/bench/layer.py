"""One benchmark layer: its shapes, op counts and bytes moved, its inputs, and the calls to
convkit and torch for each pass (Layer, with ConvSpec / PoolSpec / LayerInputs). The table of
layers is layers.py.

Passes: `fwd` (forward with bias, no autograd graph), `bwd_input` (grad input from grad output:
conv2d_backward_input, the pools' and ReLU's backward), `bwd_weight` (grad weight and grad bias
from grad output and input: convolutions only), `fwd+bwd` (forward then .backward() through
autograd). The CPU bench runs fwd and fwd+bwd by default, the GPU bench fwd, bwd_input and
bwd_weight (PASSES, GPU_PASSES).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from convkit import flops

__all__ = ["ConvSpec", "PoolSpec", "Layer", "LayerInputs", "PASSES", "GPU_PASSES", "ALL_PASSES"]

# Passes: fwd = forward only (no autograd graph); fwd+bwd = forward, then .backward() of the
# output with a fixed gradient, every input (x, weight, bias) requiring grad; bwd_input = the
# input gradient alone from a fixed grad output (conv2d_backward_input; the pools' and ReLU's
# backward ops, from their forward's indices / output made beforehand); bwd_weight = the weight
# and bias gradients from grad output and input (convolutions only).
# PASSES: the CPU bench's default; GPU_PASSES: the GPU bench's (one row per kernel direction).
PASSES = ("fwd", "fwd+bwd")
GPU_PASSES = ("fwd", "bwd_input", "bwd_weight")
ALL_PASSES = ("fwd", "bwd_input", "bwd_weight", "fwd+bwd")


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
