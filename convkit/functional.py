"""convkit.functional: torch.nn.functional's conv2d, max_pool2d, avg_pool2d and relu on convkit's
kernels, plus the backward functions as public API.

torch tensors in, torch tensors out, with autograd (through the convkit:: custom ops); CUDA
tensors run on the "cuda" backend, on torch's current stream.
NumPy arrays in, NumPy arrays out, and CuPy arrays in, CuPy arrays out (on CuPy's current
stream), straight to the kernels (no autograd: call the public backward functions yourself).
Semantics are torch's, including unbatched (C, H, W) input, empty batches, non-contiguous and
channels_last input. Every argument is checked before any kernel runs.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np

from . import _arrays as A
from . import _kernels as K
from ._algos import check_conv
from ._backend import available_backends
from ._errors import ConvkitTypeError, ConvkitValueError
from ._params import (CONV_WHERE, KERNEL_DTYPES, check_divisor, check_float_dtype, check_pool, check_rank,
                      check_shape, conv_output_hw)

try:
    import torch
    from . import _ops  # noqa: F401  (registers torch.ops.convkit.*)
    from . import _autograd, _compat, _eager, _run
except ImportError:  # NumPy-only use
    torch = None

__all__ = [
    "conv2d", "max_pool2d", "avg_pool2d", "relu", "relu_",
    "conv2d_backward_input", "conv2d_backward_weight", "conv2d_backward_bias",
    "max_pool2d_backward", "avg_pool2d_backward", "relu_backward",
]

IntOrPair = Union[int, Sequence[int]]
_RELU_FAST_DTYPES = (torch.float32, torch.float64) if torch is not None else ()


# ---- array kinds, devices, ranks ---------------------------------------------------------------

def _kind(op: str, *arrays) -> str:
    """'torch', 'numpy' or 'cupy'; mixing kinds, or anything else, is a TypeError. CuPy arrays
    also have to be on one device, with the "cuda" backend able to run."""
    kinds = set()
    for a in arrays:
        if a is None:
            continue
        if torch is not None and isinstance(a, torch.Tensor):
            kinds.add("torch")
        elif isinstance(a, np.ndarray):
            kinds.add("numpy")
        elif A.is_cupy(a):
            kinds.add("cupy")
        else:
            raise ConvkitTypeError(f"{op}: expected torch.Tensor, numpy.ndarray or cupy.ndarray arguments, "
                                   f"got {type(a).__name__}")
    if len(kinds) != 1:
        raise ConvkitTypeError(f"{op}: all array arguments must be of one kind (torch, NumPy or CuPy), "
                               f"got {sorted(kinds)}")
    kind = kinds.pop()
    if kind == "cupy":
        devices = {a.device.id for a in arrays if a is not None}
        if len(devices) > 1:
            raise ConvkitValueError(f"{op}: expected all CuPy arrays on one device, got devices {sorted(devices)}")
        _need_cuda_backend(op, f"cuda:{devices.pop()} (CuPy arrays)")
    return kind


def _need_cuda_backend(op: str, where: str) -> None:
    if "cuda" not in available_backends():
        raise ConvkitTypeError(f"{op}: the arrays are on {where} but this install has no runnable CUDA backend "
                               f"(available: {', '.join(available_backends())})")


def _check_devices(op: str, *tensors) -> None:
    if len(tensors) == 1 and tensors[0].device.type == "cpu":  # the common case, checked cheaply
        return
    ts = [t for t in tensors if t is not None]
    devices = {t.device for t in ts}
    if len(devices) > 1:
        raise ConvkitValueError(f"{op}: expected all tensors on one device, got {sorted(str(d) for d in devices)}")
    dev = ts[0].device
    # (while torch.compile traces, the op itself checks its backend when it runs)
    if dev.type == "cuda" and not torch.compiler.is_compiling():
        _need_cuda_backend(op, str(dev))
    if dev.type not in ("cpu", "cuda", "meta"):
        raise ConvkitTypeError(f"{op}: unsupported device {dev}")


def _batched(op: str, name: str, shape) -> bool:
    check_rank(op, name, tuple(shape))
    return len(shape) == 4


def _np(a):
    """A C-contiguous NumPy or CuPy array (the kernels' layout) of the same kind and device."""
    return A.contiguous(a)


def _shape4(shape) -> tuple:
    """shape as 4 dims (N, C, H, W). Its entries stay as they are: ints, or torch.SymInts while
    torch.compile / torch.export trace with dynamic shapes (int() would specialize them)."""
    shape = tuple(shape)
    return shape if len(shape) == 4 else (1,) + shape


def _check_grad_shape(op: str, grad_output, expected) -> None:
    if tuple(grad_output.shape) != tuple(expected):
        raise ConvkitValueError(f"{op}: grad_output has shape {tuple(grad_output.shape)}, expected {tuple(expected)}")


# ---- convolution -------------------------------------------------------------------------------

def conv2d(input, weight, bias=None, stride: IntOrPair = 1, padding: Union[str, IntOrPair] = 0,
           dilation: IntOrPair = 1, groups: int = 1, *, algo: str = "auto"):
    """2-D cross-correlation, as torch.nn.functional.conv2d.

    input: [N, C, H, W] or [C, H, W]; weight: [K, C/groups, R, S]; bias: [K] or None.
    padding: int, pair, 'same' (torch's: the extra pad of an even kernel goes bottom/right) or 'valid'.
    algo (convkit.CONV_ALGOS): 'auto' (a heuristic by shape, or the fastest timed once per shape
    with convkit.benchmark = True), 'direct', 'im2col' or '1x1' (1x1 kernels with zero padding, any
    stride/groups); on the 'cpu' backend also 'blocked' (any shape) and 'winograd' (3x3, stride
    1, dilation 1), which the CUDA backends refuse with ConvkitValueError.
    dtypes: float32, float64; float16 and bfloat16 on the CUDA backends. Under torch.autocast the
    operands are cast as for torch's conv2d (see convkit._ops, "conv2d under torch.autocast").
    Returns [N, K, P, Q] (or [K, P, Q]).
    """
    kind = _kind("conv2d", input, weight, bias)
    batched = _batched("conv2d", "input", input.shape)
    xd, wd, bd = (None if t is None else t.dtype for t in (input, weight, bias))
    if kind == "torch":
        xd, wd, bd = _autocast_dtypes(input, weight, bias)
    args = check_conv("conv2d", _shape4(input.shape), weight.shape, xd, wd, None if bias is None else bias.shape, bd,
                      stride, padding, dilation, groups, algo)
    if kind != "torch":
        y = K.conv2d_fwd(_np(input.reshape(_shape4(input.shape))), _np(weight), _np(bias), args)
    else:
        _check_devices("conv2d", input, weight, bias)
        x = input if batched else input.unsqueeze(0)
        if _eager.eager(x, weight, bias):
            y = _eager.conv2d(x, weight, bias, args)
            return y if batched else y[0]
        y = _autograd.call("conv2d", x, weight, bias, list(args.stride), list(args.pads),
                                     list(args.dilation), args.groups, args.algo)
    return y if batched else y[0]


def _autocast_dtypes(*tensors):
    """The dtypes torch.ops.convkit.conv2d computes these tensors in: under torch.autocast, the
    ones on an autocast-enabled device type become what its autocast rule casts them to (so
    float32 weights meet a bfloat16 activation, as with torch's conv2d); else their own."""
    if not _compat.any_autocast_enabled():
        return [None if t is None else t.dtype for t in tensors]
    out = []
    for t in tensors:
        if t is not None and t.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(t.device.type):
            out.append(_ops.autocast_compute_dtype(t.device.type, t.dtype))
        else:
            out.append(None if t is None else t.dtype)
    return out


def conv2d_backward_input(grad_output, weight, input_shape, stride: IntOrPair = 1,
                          padding: Union[str, IntOrPair] = 0, dilation: IntOrPair = 1, groups: int = 1,
                          *, algo: str = "auto"):
    """Gradient of conv2d with respect to its input.

    grad_output: [N, K, P, Q] (or [K, P, Q]); weight: [K, C/groups, R, S];
    input_shape: [N, C, H, W] (or [C, H, W]). algo: as conv2d's. Returns grad_input of input_shape.
    """
    op = "conv2d_backward_input"
    kind = _kind(op, grad_output, weight)
    batched = _batched(op, "input_shape", input_shape)
    x4 = _shape4(check_shape(op, "input_shape", input_shape))
    args = check_conv(op, x4, weight.shape, grad_output.dtype, weight.dtype, stride=stride, padding=padding,
                      dilation=dilation, groups=groups, algo=algo)
    expected = (x4[0], weight.shape[0]) + conv_output_hw(x4[2], x4[3], weight.shape[2], weight.shape[3], args)
    _check_grad_shape(op, grad_output, expected if batched else expected[1:])
    if kind != "torch":
        dx = K.conv2d_bwd_input(_np(grad_output.reshape(expected)), _np(weight), x4, args)
    else:
        _check_devices(op, grad_output, weight)
        dy = grad_output if batched else grad_output.unsqueeze(0)
        if _eager.eager(dy, weight) and not _eager.needs_grad(dy, weight):
            dx = _run.run_conv2d_bwd_input(dy, weight, x4, args)
            return dx if batched else dx[0]
        dx = _autograd.call("conv2d_backward_input", dy, weight, list(x4), list(args.stride), list(args.pads),
                                                     list(args.dilation), args.groups, args.algo)
    return dx if batched else dx[0]


def conv2d_backward_weight(grad_output, input, weight_shape, stride: IntOrPair = 1,
                           padding: Union[str, IntOrPair] = 0, dilation: IntOrPair = 1, groups: int = 1,
                           *, algo: str = "auto"):
    """Gradient of conv2d with respect to its weight.

    grad_output: [N, K, P, Q] (or [K, P, Q]); input: [N, C, H, W] (or [C, H, W]);
    weight_shape: [K, C/groups, R, S]. algo: as conv2d's. Returns grad_weight of weight_shape.
    """
    op = "conv2d_backward_weight"
    kind = _kind(op, grad_output, input)
    batched = _batched(op, "input", input.shape)
    x4, w_shape = _shape4(input.shape), check_shape(op, "weight_shape", weight_shape)
    args = check_conv(op, x4, w_shape, input.dtype, grad_output.dtype, stride=stride, padding=padding,
                      dilation=dilation, groups=groups, algo=algo)
    expected = (x4[0], w_shape[0]) + conv_output_hw(x4[2], x4[3], w_shape[2], w_shape[3], args)
    _check_grad_shape(op, grad_output, expected if batched else expected[1:])
    if kind != "torch":
        return K.conv2d_bwd_weight(_np(grad_output.reshape(expected)), _np(input.reshape(x4)), w_shape, args)
    _check_devices(op, grad_output, input)
    dy = grad_output if batched else grad_output.unsqueeze(0)
    x = input if batched else input.unsqueeze(0)
    if _eager.eager(dy, x) and not _eager.needs_grad(dy, x):
        return _run.run_conv2d_bwd_weight(dy, x, w_shape, args)
    return _autograd.call("conv2d_backward_weight", dy, x, list(w_shape), list(args.stride), list(args.pads),
                                                    list(args.dilation), args.groups, args.algo)


def conv2d_backward_bias(grad_output):
    """Gradient of conv2d with respect to its bias: grad_output [N, K, P, Q] summed to [K]."""
    op = "conv2d_backward_bias"
    kind = _kind(op, grad_output)
    batched = _batched(op, "grad_output", grad_output.shape)
    check_float_dtype(op, "grad_output", grad_output.dtype, KERNEL_DTYPES, where=CONV_WHERE)
    if kind != "torch":
        return K.conv2d_bwd_bias(_np(grad_output.reshape(_shape4(grad_output.shape))))
    _check_devices(op, grad_output)
    dy = grad_output if batched else grad_output.unsqueeze(0)
    if _eager.eager(dy) and not _eager.needs_grad(dy):
        return K.conv2d_bwd_bias(dy.contiguous())
    return _autograd.call("conv2d_backward_bias", dy)


# ---- pooling -----------------------------------------------------------------------------------

def max_pool2d(input, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
               dilation: IntOrPair = 1, ceil_mode: bool = False, return_indices: bool = False):
    """Max pooling, as torch.nn.functional.max_pool2d (NaN propagates; indices are int64 offsets
    h * W + w into each input plane). input: [N, C, H, W] or [C, H, W]."""
    op = "max_pool2d"
    kind = _kind(op, input)
    batched = _batched(op, "input", input.shape)
    a = check_pool(op, _shape4(input.shape), input.dtype, kernel_size, stride, padding, dilation, ceil_mode)
    if kind != "torch":
        y, idx = K.max_pool2d_fwd(_np(input.reshape(_shape4(input.shape))), a, bool(return_indices))
    else:
        _check_devices(op, input)
        x = input if batched else input.unsqueeze(0)
        conf = (list(a.kernel), list(a.stride), list(a.padding), list(a.dilation), a.ceil_mode)
        if _eager.eager(x):
            y, idx = _eager.max_pool2d(x, a, bool(return_indices))
        elif return_indices:
            y, idx = _autograd.call("max_pool2d", x, *conf)
        else:  # the values alone (the op computes indices only when a derivative can flow)
            y, idx = _autograd.call("max_pool2d_inference", x, *conf), None
    if not batched:
        y, idx = y[0], (None if idx is None else idx[0])
    return (y, idx) if return_indices else y


def max_pool2d_backward(grad_output, input_shape, indices, kernel_size: IntOrPair,
                        stride: Optional[IntOrPair] = None, padding: IntOrPair = 0, dilation: IntOrPair = 1,
                        ceil_mode: bool = False):
    """Gradient of max_pool2d: grad_output [N, C, P, Q] and the forward's indices -> [input_shape]."""
    op = "max_pool2d_backward"
    kind = _kind(op, grad_output, indices)
    batched = _batched(op, "input_shape", input_shape)
    x4 = _shape4(check_shape(op, "input_shape", input_shape))
    a = check_pool(op, x4, grad_output.dtype, kernel_size, stride, padding, dilation, ceil_mode)
    out_shape = x4[:2] + a.out_hw
    _check_grad_shape(op, grad_output, out_shape if batched else out_shape[1:])
    if tuple(indices.shape) != tuple(grad_output.shape) or "int64" not in str(indices.dtype):
        raise ConvkitValueError(f"{op}: indices must be int64 of grad_output's shape {tuple(grad_output.shape)}, "
                                f"got {indices.dtype} {tuple(indices.shape)}")
    if kind != "torch":
        dx = K.max_pool2d_bwd(_np(grad_output.reshape(out_shape)), x4, _np(indices.reshape(out_shape)), a)
    else:
        _check_devices(op, grad_output, indices)
        dy = grad_output if batched else grad_output.unsqueeze(0)
        idx = indices if batched else indices.unsqueeze(0)
        if _eager.eager(dy, idx) and not _eager.needs_grad(dy):
            dx = _run.run_max_pool2d_bwd(dy, x4, idx, a)
            return dx if batched else dx[0]
        dx = _autograd.call("max_pool2d_backward", dy, _ops.shape_carrier(dy, x4), idx, list(a.kernel),
                                                   list(a.stride), list(a.padding), list(a.dilation), a.ceil_mode)
    return dx if batched else dx[0]


def avg_pool2d(input, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None, padding: IntOrPair = 0,
               ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: Optional[int] = None):
    """Average pooling, as torch.nn.functional.avg_pool2d. input: [N, C, H, W] or [C, H, W]."""
    op = "avg_pool2d"
    kind = _kind(op, input)
    batched = _batched(op, "input", input.shape)
    a = check_pool(op, _shape4(input.shape), input.dtype, kernel_size, stride, padding, 1, ceil_mode)
    div = check_divisor(op, divisor_override)
    if kind != "torch":
        y = K.avg_pool2d_fwd(_np(input.reshape(_shape4(input.shape))), a, bool(count_include_pad), div)
    else:
        _check_devices(op, input)
        x = input if batched else input.unsqueeze(0)
        if _eager.eager(x):
            y = _eager.avg_pool2d(x, a, bool(count_include_pad), div)
            return y if batched else y[0]
        y = _autograd.call("avg_pool2d", x, list(a.kernel), list(a.stride), list(a.padding), a.ceil_mode,
                                         bool(count_include_pad), div)
    return y if batched else y[0]


def avg_pool2d_backward(grad_output, input_shape, kernel_size: IntOrPair, stride: Optional[IntOrPair] = None,
                        padding: IntOrPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                        divisor_override: Optional[int] = None):
    """Gradient of avg_pool2d: grad_output [N, C, P, Q] -> [input_shape]."""
    op = "avg_pool2d_backward"
    kind = _kind(op, grad_output)
    batched = _batched(op, "input_shape", input_shape)
    x4 = _shape4(check_shape(op, "input_shape", input_shape))
    a = check_pool(op, x4, grad_output.dtype, kernel_size, stride, padding, 1, ceil_mode)
    div = check_divisor(op, divisor_override)
    out_shape = x4[:2] + a.out_hw
    _check_grad_shape(op, grad_output, out_shape if batched else out_shape[1:])
    if kind != "torch":
        dx = K.avg_pool2d_bwd(_np(grad_output.reshape(out_shape)), x4, a, bool(count_include_pad), div)
    else:
        _check_devices(op, grad_output)
        dy = grad_output if batched else grad_output.unsqueeze(0)
        if _eager.eager(dy) and not _eager.needs_grad(dy):
            dx = _run.run_avg_pool2d_bwd(dy, x4, a, bool(count_include_pad), div)
            return dx if batched else dx[0]
        dx = _autograd.call("avg_pool2d_backward", dy, _ops.shape_carrier(dy, x4), list(a.kernel), list(a.stride),
                                                   list(a.padding), a.ceil_mode, bool(count_include_pad), div)
    return dx if batched else dx[0]


# ---- ReLU --------------------------------------------------------------------------------------

def relu(input, inplace: bool = False):
    """max(input, 0), as torch.nn.functional.relu (NaN stays NaN). inplace=True writes into input
    and returns it; under autograd it runs the functional op and copies back, so gradients are
    torch's."""
    if (not inplace and type(input) is torch.Tensor and input.device.type == "cpu"
            and input.dtype in _RELU_FAST_DTYPES and _eager.eager(input)):  # checked: go
        return _eager.relu(input)
    op = "relu_" if inplace else "relu"
    kind = _kind(op, input)
    check_float_dtype(op, "input", input.dtype, KERNEL_DTYPES)
    if inplace and (kind != "torch" or not input.is_contiguous()):  # (a contiguous tensor can't overlap)
        _check_writable(op, input, kind)
    if kind != "torch":
        if not inplace:
            return K.relu_fwd(_np(input))
        if input.flags.c_contiguous and input.dtype.isnative:
            return K.relu_fwd(input, out=input)
        input[...] = K.relu_fwd(_np(input))
        return input
    _check_devices(op, input)
    fast = _eager.eager(input)
    if not inplace:
        return _eager.relu(input) if fast else _autograd.call("relu", input)
    if torch.is_grad_enabled() and input.requires_grad:
        base = input if input._base is None else input._base
        if base.is_leaf:
            raise ConvkitValueError(
                f"{op}: in-place ReLU on {'a view of ' if base is not input else ''}a leaf tensor that requires "
                "grad (torch forbids it too); use inplace=False")
        return input.copy_(_eager.relu(input) if fast else _autograd.call("relu", input))
    if not fast and _autograd.transforms_active():  # a tangent or a vmapped dimension: torch's copy_ carries it
        return input.copy_(_autograd.call("relu", input))
    if fast:
        _eager.relu_inplace(input)
    else:
        torch.ops.convkit.relu_(input)
    return input


def _check_writable(op: str, a, kind: str) -> None:
    """An in-place destination must be writable memory whose elements are distinct: a read-only
    NumPy array (a read-only memmap, np.frombuffer over bytes, a broadcast view) or a view with a
    stride-0 dimension (expand(), broadcast_to: many elements, one address; torch refuses these
    too) is refused before anything is written."""
    if kind == "numpy" and not a.flags.writeable:
        raise ConvkitValueError(f"{op}: input is a read-only array (e.g. a read-only memmap, np.frombuffer over "
                                f"bytes, or a broadcast view); nothing was written. Use relu(input) for a new array")
    strides = a.stride() if kind == "torch" else a.strides
    if 0 not in a.shape and any(st == 0 and n > 1 for n, st in zip(a.shape, strides)):
        raise ConvkitValueError(
            f"{op}: input has overlapping elements (a stride-0 dimension, shape {tuple(a.shape)}, strides "
            f"{tuple(strides)}): more than one element refers to one memory location, so it cannot be written in "
            f"place; nothing was written. Use relu(input), or clone / copy the input first")


def relu_(input):
    """In-place ReLU: relu(input, inplace=True)."""
    return relu(input, inplace=True)


def relu_backward(grad_output, output):
    """Gradient of relu: 0 where output <= 0, else grad_output (NaN output passes it, as torch)."""
    op = "relu_backward"
    kind = _kind(op, grad_output, output)
    check_float_dtype(op, "grad_output", grad_output.dtype, KERNEL_DTYPES)
    if tuple(grad_output.shape) != tuple(output.shape) or str(grad_output.dtype) != str(output.dtype):
        raise ConvkitValueError(f"{op}: grad_output {tuple(grad_output.shape)} {grad_output.dtype} and output "
                                f"{tuple(output.shape)} {output.dtype} must match")
    if kind != "torch":
        return K.relu_bwd(_np(grad_output), _np(output))
    _check_devices(op, grad_output, output)
    if _eager.eager(grad_output, output) and not _eager.needs_grad(grad_output, output):
        return _run.run_relu_bwd(grad_output, output)
    return _autograd.call("relu_backward", grad_output, output)
