"""convkit.nn: drop-in layers on convkit's kernels, and `convert` for existing models.

Conv2d, MaxPool2d, AvgPool2d and ReLU subclass their torch.nn counterparts: same constructor
arguments (padding_mode included), same parameters and state_dict; only forward differs.

TorchScript: torch.jit.script compiles each forward's `torch.jit.is_scripting()` branch, which
calls the torch.ops.convkit ops directly (TorchScript cannot compile convkit.functional: NumPy,
keyword-only arguments, ...); eager code runs `_eager_forward`, the convkit.functional path,
which TorchScript leaves out (@torch.jit.unused). The ops check their own arguments, and
autograd goes through them, so a scripted model trains; a saved one loads where convkit is
imported (that registers the ops).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _pair

from . import functional as CF
from ._algos import check_name

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "ReLU", "convert", "ConvertReport"]


def _check_algo(algo: str) -> str:
    return check_name("Conv2d", algo)


class Conv2d(torch.nn.Conv2d):
    """torch.nn.Conv2d on convkit's kernels; `algo` picks the algorithm (convkit.CONV_ALGOS):
    'auto', 'direct', 'im2col', '1x1' (a 1x1 kernel without padding), and on the 'cpu' backend
    also 'winograd' (3x3, stride 1, dilation 1), 'blocked' (any shape) and 'reference' (naive
    loops, a test oracle). As in convkit.functional.conv2d."""

    def __init__(self, *args, algo: str = "auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.algo = _check_algo(algo)

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self._script_forward(input)
        return self._eager_forward(input)

    @torch.jit.unused
    def _eager_forward(self, input: Tensor) -> Tensor:
        if self.padding_mode != "zeros":
            padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return CF.conv2d(padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups,
                             algo=self.algo)
        return CF.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                         algo=self.algo)

    def _script_forward(self, input: Tensor) -> Tensor:
        """forward under TorchScript: torch.ops.convkit.conv2d with the padding resolved to four
        pads (top, bottom, left, right), as convkit.functional resolves it."""
        x = input.unsqueeze(0) if input.dim() == 3 else input
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            pads = [0, 0, 0, 0]
        elif isinstance(self.padding, str):  # (a constant: TorchScript compiles one branch)
            if self.padding == "same":
                if self.stride[0] != 1 or self.stride[1] != 1:
                    raise ValueError("convkit::conv2d: padding='same' is not supported for strided convolutions")
                th = self.dilation[0] * (self.kernel_size[0] - 1)
                tw = self.dilation[1] * (self.kernel_size[1] - 1)
                pads = [th // 2, th - th // 2, tw // 2, tw - tw // 2]  # (torch's: the extra pad bottom/right)
            else:  # 'valid' (torch.nn.Conv2d refuses any other string)
                pads = [0, 0, 0, 0]
        else:
            pads = [self.padding[0], self.padding[0], self.padding[1], self.padding[1]]
        y = torch.ops.convkit.conv2d(x, self.weight, self.bias, _pair(self.stride), pads, _pair(self.dilation),
                                     self.groups, self.algo)
        return y.squeeze(0) if input.dim() == 3 else y

    def extra_repr(self):
        return super().extra_repr() + f", algo={self.algo!r}"


class MaxPool2d(torch.nn.MaxPool2d):
    """torch.nn.MaxPool2d on convkit's kernels."""

    # No return annotation, as torch.nn.MaxPool2d: TorchScript infers Tensor, or (Tensor, Tensor)
    # with return_indices (a constant, so only its branch is compiled).
    def forward(self, input: Tensor):
        if torch.jit.is_scripting():
            x = input.unsqueeze(0) if input.dim() == 3 else input
            conf = (_pair(self.kernel_size), _pair(self.stride), _pair(self.padding), _pair(self.dilation))
            if self.return_indices:
                y, idx = torch.ops.convkit.max_pool2d(x, conf[0], conf[1], conf[2], conf[3], self.ceil_mode)
                return (y.squeeze(0), idx.squeeze(0)) if input.dim() == 3 else (y, idx)
            # the values alone (the op computes indices only when a gradient can flow)
            y = torch.ops.convkit.max_pool2d_inference(x, conf[0], conf[1], conf[2], conf[3], self.ceil_mode)
            return y.squeeze(0) if input.dim() == 3 else y
        return self._eager_forward(input)

    @torch.jit.unused
    def _eager_forward(self, input):
        return CF.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                             ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(torch.nn.AvgPool2d):
    """torch.nn.AvgPool2d on convkit's kernels."""

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            x = input.unsqueeze(0) if input.dim() == 3 else input
            y = torch.ops.convkit.avg_pool2d(x, _pair(self.kernel_size), _pair(self.stride), _pair(self.padding),
                                             self.ceil_mode, self.count_include_pad, self.divisor_override)
            return y.squeeze(0) if input.dim() == 3 else y
        return self._eager_forward(input)

    @torch.jit.unused
    def _eager_forward(self, input: Tensor) -> Tensor:
        return CF.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                             self.count_include_pad, self.divisor_override)


class ReLU(torch.nn.ReLU):
    """torch.nn.ReLU on convkit's kernels (inplace supported)."""

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            if not self.inplace:
                return torch.ops.convkit.relu(input)
            if torch.is_grad_enabled() and input.requires_grad:  # (autograd through the functional op)
                return input.copy_(torch.ops.convkit.relu(input))
            torch.ops.convkit.relu_(input)
            return input
        return self._eager_forward(input)

    @torch.jit.unused
    def _eager_forward(self, input: Tensor) -> Tensor:
        return CF.relu(input, inplace=self.inplace)


_REPLACEMENTS = {torch.nn.Conv2d: Conv2d, torch.nn.MaxPool2d: MaxPool2d, torch.nn.AvgPool2d: AvgPool2d,
                 torch.nn.ReLU: ReLU}
# Layers convkit does not cover (yet), reported by convert() when a model has them.
_NOT_COVERED = (torch.nn.Conv1d, torch.nn.Conv3d, torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d,
                torch.nn.ConvTranspose3d, torch.nn.MaxPool1d, torch.nn.MaxPool3d, torch.nn.AvgPool1d,
                torch.nn.AvgPool3d, torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveMaxPool2d, torch.nn.LPPool2d,
                torch.nn.ReLU6, torch.nn.LeakyReLU, torch.nn.PReLU, torch.nn.ELU, torch.nn.GELU, torch.nn.SiLU,
                torch.nn.Hardswish)
_FUNCTIONAL = {F.conv2d: "torch.nn.functional.conv2d", F.max_pool2d: "torch.nn.functional.max_pool2d",
               F.avg_pool2d: "torch.nn.functional.avg_pool2d", F.relu: "torch.nn.functional.relu",
               torch.conv2d: "torch.conv2d", torch.relu: "torch.relu", torch.max_pool2d: "torch.max_pool2d",
               torch.relu_: "torch.relu_"}


@dataclass
class ConvertReport:
    """What convert() did: layers replaced (name, torch type, convkit type), layers left alone
    (name, type, why), and functional calls found in the forward code (which it cannot replace)."""
    replaced: List[Tuple[str, str, str]] = field(default_factory=list)
    left_alone: List[Tuple[str, str, str]] = field(default_factory=list)
    functional_calls: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def __str__(self):
        lines = [f"convkit.nn.convert: replaced {len(self.replaced)} layer(s)"]
        lines += [f"  {n or '<root>'}: {a} -> {b}" for n, a, b in self.replaced]
        if self.left_alone:
            lines.append(f"left alone {len(self.left_alone)} layer(s):")
            lines += [f"  {n}: {t} ({why})" for n, t, why in self.left_alone]
        if self.functional_calls:
            lines.append("functional calls in forward code (not converted; call convkit.functional instead):")
            lines += [f"  {c}" for c in self.functional_calls]
        lines += self.notes
        return "\n".join(lines)


def convert(model: torch.nn.Module, algo: str = "auto", report: bool = False):
    """Swap every torch.nn.Conv2d, MaxPool2d, AvgPool2d and ReLU in `model` for convkit's, in
    place, keeping parameters, buffers, hooks and training mode (the module objects stay; only
    their class changes). Returns the model, or (model, ConvertReport) with report=True.

    Subclasses of those layers with their own forward are left alone (and reported), as are
    layers convkit doesn't cover and functional calls inside forward methods."""
    _check_algo(algo)
    rep = ConvertReport()
    for name, module in model.named_modules():
        cls = type(module)
        if cls in _REPLACEMENTS:
            module.__class__ = _REPLACEMENTS[cls]
            if cls is torch.nn.Conv2d:
                module.algo = algo
            rep.replaced.append((name, f"torch.nn.{cls.__name__}", f"convkit.nn.{cls.__name__}"))
        elif cls in _REPLACEMENTS.values():
            if isinstance(module, Conv2d):
                module.algo = algo
        elif isinstance(module, tuple(_REPLACEMENTS)):
            rep.left_alone.append((name, cls.__qualname__, "a subclass with its own forward"))
        elif isinstance(module, _NOT_COVERED):
            rep.left_alone.append((name, cls.__qualname__, "not covered by convkit"))
    if report:
        _find_functional_calls(model, rep)
        return model, rep
    return model


def _find_functional_calls(model: torch.nn.Module, rep: ConvertReport) -> None:
    """Lists conv/pool/relu functional calls in the forward code, by symbolic tracing (best effort)."""
    try:
        import torch.fx
        gm = torch.fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 - tracing arbitrary models fails in many ways
        rep.notes.append(f"(functional calls not inspected: torch.fx could not trace the model: {type(e).__name__})")
        return
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in _FUNCTIONAL:
            rep.functional_calls.append(f"{_FUNCTIONAL[node.target]} at {node.name}")
        elif node.op == "call_method" and node.target in ("relu", "relu_"):
            rep.functional_calls.append(f"Tensor.{node.target} at {node.name}")
