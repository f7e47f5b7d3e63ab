"""convkit's torch.library custom ops: every forward and every backward is an op of its own, with
a fake (meta) implementation, so torch.compile(fullgraph=True) traces convkit layers, torch.export
exports them and opcheck passes. Their derivatives (reverse mode, forward mode and vmap batching
rules, each written with the other ops, so double backward and forward-over-reverse work) are in
convkit._autograd, which imports this module (convkit.functional imports both: importing
convkit registers the ops with their derivatives).

The ops take 4-D tensors and explicit int parameters (padding already resolved to
(top, bottom, left, right) for conv2d); convkit.functional does the checking and the
unbatched / padding-form conveniences before calling them.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from . import _backend
from . import _kernels as K
from ._algos import check_conv
from ._compat import ExcludeKeys, autocast_available, autocast_key, example_value
from ._errors import ConvkitError, ConvkitValueError
from ._params import (CONV_WHERE, KERNEL_DTYPES, ConvArgs, PoolArgs, check_divisor, check_float_dtype, check_pool,
                      check_rank, conv_output_hw, dtype_name, pool_output_size)
from ._run import (_CL, _is_cl, run_avg_pool2d, run_avg_pool2d_bwd, run_conv2d, run_conv2d_bwd_input,
                   run_conv2d_bwd_weight, run_max_pool2d, run_max_pool2d_bwd, run_relu, run_relu_bwd,
                   run_relu_inplace)

def _empty(like: Tensor, shape, channels_last: bool) -> Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device,
                       memory_format=_CL if channels_last else torch.contiguous_format)


def _conv_args(stride, padding, dilation, groups, algo) -> ConvArgs:
    return ConvArgs(tuple(stride), tuple(padding), tuple(dilation), groups, algo)


def _checked_backward(op, grad_output, input_size, weight_size, other_dtype, stride, padding, dilation,
                      groups, algo) -> ConvArgs:
    """Checks a convolution backward's arguments, grad_output's shape included."""
    args = check_conv(op, input_size, weight_size, grad_output.dtype, other_dtype, None, None, stride, padding,
                      dilation, groups, algo)
    expected = (input_size[0], weight_size[0]) + conv_output_hw(input_size[2], input_size[3], weight_size[2],
                                                               weight_size[3], args)
    if tuple(grad_output.shape) != tuple(expected):
        raise ConvkitValueError(f"{op}: grad_output has shape {tuple(grad_output.shape)}, expected {expected}")
    return args


def _checked_pool(op, input, kernel_size, stride, padding, dilation, ceil_mode, grad_output=None) -> PoolArgs:
    """Checks a pooling op's arguments (and grad_output's shape for a backward)."""
    a = check_pool(op, input.shape, input.dtype if grad_output is None else grad_output.dtype, kernel_size,
                   stride, padding, dilation, ceil_mode)
    if grad_output is not None and tuple(grad_output.shape) != tuple(input.shape[:2]) + a.out_hw:
        raise ConvkitValueError(f"{op}: grad_output has shape {tuple(grad_output.shape)}, "
                                f"expected {tuple(input.shape[:2]) + a.out_hw}")
    return a


def _pool_args(input_hw, kernel_size, stride, padding, dilation, ceil_mode) -> PoolArgs:
    """The fake implementations' PoolArgs: input_hw may hold torch.SymInts (dimensions traced as
    dynamic); the output size is then symbolic, computed without a guard (pool_output_size)."""
    out = tuple(pool_output_size(s, k, st, p, d, ceil_mode)
                for s, k, st, p, d in zip(input_hw, kernel_size, stride, padding, dilation))
    return PoolArgs(tuple(kernel_size), tuple(stride), tuple(padding), tuple(dilation), bool(ceil_mode), out)


def _example(shape) -> Optional[Tuple[int, ...]]:
    """A traced tensor's sizes as ints: a dimension traced as dynamic (a torch.SymInt) gives the
    traced example's value, read without a guard on it; None if a size has none (unbacked).
    The fake implementations check their arguments on these, as the op checks its own when it
    runs: an example the op would refuse raises the op's error while tracing, instead of torch's
    on a negative output size, and a shape traced as dynamic is neither guarded on nor
    specialized (checking the symbolic sizes themselves would do both)."""
    sizes = []
    for s in shape:
        if type(s) is not int:
            s = example_value(s)
            if s is None:
                return None
        sizes.append(s)
    return tuple(sizes)


def shape_carrier(like: Tensor, shape) -> Tensor:
    """A tensor of `shape` that costs no memory: the backward ops read only its shape."""
    return like.new_zeros(()).expand(tuple(shape))


# ---- conv2d ----------------------------------------------------------------------------------

@torch.library.custom_op("convkit::conv2d", mutates_args=())
def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
           dilation: List[int], groups: int, algo: str) -> Tensor:
    """input[N, C, H, W], weight[K, C/groups, R, S], bias[K] -> [N, K, P, Q]; padding (t, b, l, r)."""
    args = check_conv("convkit::conv2d", input.shape, weight.shape, input.dtype, weight.dtype,
                      None if bias is None else bias.shape, None if bias is None else bias.dtype,
                      stride, padding, dilation, groups, algo)
    return run_conv2d(input, weight, bias, args)


@conv2d.register_fake
def _(input, weight, bias, stride, padding, dilation, groups, algo):
    x, w, b = _example(input.shape), _example(weight.shape), None if bias is None else _example(bias.shape)
    if x is not None and w is not None:
        check_conv("convkit::conv2d", x, w, input.dtype, weight.dtype, b, None if bias is None else bias.dtype,
                   stride, padding, dilation, groups, algo)
    p, q = conv_output_hw(input.shape[2], input.shape[3], weight.shape[2], weight.shape[3],
                          _conv_args(stride, padding, dilation, groups, algo))
    return _empty(input, (input.shape[0], weight.shape[0], p, q), _is_cl(input, weight))


@torch.library.custom_op("convkit::conv2d_backward_input", mutates_args=())
def conv2d_backward_input(grad_output: Tensor, weight: Tensor, input_size: List[int], stride: List[int],
                          padding: List[int], dilation: List[int], groups: int, algo: str) -> Tensor:
    """grad_output[N, K, P, Q], weight[K, C/groups, R, S] -> grad_input[input_size]."""
    args = _checked_backward("convkit::conv2d_backward_input", grad_output, input_size, weight.shape,
                             weight.dtype, stride, padding, dilation, groups, algo)
    return run_conv2d_bwd_input(grad_output, weight, input_size, args)


@conv2d_backward_input.register_fake
def _(grad_output, weight, input_size, stride, padding, dilation, groups, algo):
    return _empty(grad_output, tuple(input_size), _is_cl(grad_output, weight))


@torch.library.custom_op("convkit::conv2d_backward_weight", mutates_args=())
def conv2d_backward_weight(grad_output: Tensor, input: Tensor, weight_size: List[int], stride: List[int],
                           padding: List[int], dilation: List[int], groups: int, algo: str) -> Tensor:
    """grad_output[N, K, P, Q], input[N, C, H, W] -> grad_weight[weight_size] (NCHW contiguous)."""
    args = _checked_backward("convkit::conv2d_backward_weight", grad_output, input.shape, weight_size,
                             input.dtype, stride, padding, dilation, groups, algo)
    return run_conv2d_bwd_weight(grad_output, input, weight_size, args)


@conv2d_backward_weight.register_fake
def _(grad_output, input, weight_size, stride, padding, dilation, groups, algo):
    return _empty(grad_output, tuple(weight_size), False)


@torch.library.custom_op("convkit::conv2d_backward_bias", mutates_args=())
def conv2d_backward_bias(grad_output: Tensor) -> Tensor:
    """grad_output[N, K, P, Q] -> grad_bias[K] (the sum over N, P, Q)."""
    check_rank("convkit::conv2d_backward_bias", "grad_output", grad_output.shape, (4,))
    check_float_dtype("convkit::conv2d_backward_bias", "grad_output", grad_output.dtype, KERNEL_DTYPES,
                      where=CONV_WHERE)
    return K.conv2d_bwd_bias(grad_output.contiguous())


@conv2d_backward_bias.register_fake
def _(grad_output):
    return grad_output.new_empty((grad_output.shape[1],))


# ---- conv2d under torch.autocast -------------------------------------------------------------
# torch's conv2d is a lower-precision op under autocast: its floating-point operands (float64
# excepted) are cast to the autocast dtype of their device (torch.get_autocast_dtype: float16 or
# bfloat16, whichever the user asked for) and it runs in that dtype. convkit::conv2d does the
# same through kernels of its own for the AutocastCUDA and AutocastCPU dispatch keys (not
# torch.library.register_autocast, which fixes one dtype at registration). Autocast sits above
# autograd in the dispatcher, so the casts are recorded: gradients reach the float32 parameters
# in float32. A backend whose kernels lack the autocast dtype (the 'cpu' backend has no half
# kernels at all) makes conv2d one of autocast's float32 ops instead: operands cast to float32,
# a float32 output, which convkit's own pooling and ReLU on that backend can take. The backward
# ops have no autocast rule (as torch's convolution_backward): they run in the saved dtypes.

def autocast_compute_dtype(device_type: str, dtype: torch.dtype) -> torch.dtype:
    """What an operand of dtype `dtype` on `device_type` becomes in convkit::conv2d while autocast
    is enabled there: the autocast dtype if the backend that runs the op takes it, else float32;
    float64 and non-floating dtypes stay as they are (as torch's autocast leaves them)."""
    if not dtype.is_floating_point or dtype == torch.float64:
        return dtype
    target = torch.get_autocast_dtype(device_type)
    if torch.compiler.is_dynamo_compiling():
        # dynamo traces convkit.functional's dtype check (which only needs both operands to get
        # one dtype), not the backend choice (a contextvar it cannot read); the op's autocast
        # kernel, run when the graph is made, decides with the backend
        return target
    try:
        backend = _backend.module_for(device_type, "conv2d")[0]
    except ConvkitError:  # a forced backend of the wrong memory kind: the op itself raises that
        return target
    return target if dtype_name(target) in _backend.dtypes(backend) else torch.float32


def _autocast_conv2d_kernel(device_type: str):
    key, exclude = autocast_key(device_type)

    def kernel(_keyset, input, weight, bias, stride, padding, dilation, groups, algo):
        def cast(t):
            if t is None or t.device.type != device_type:
                return t
            return t.to(autocast_compute_dtype(device_type, t.dtype))

        with ExcludeKeys(exclude):
            return conv2d(cast(input), cast(weight), cast(bias), stride, padding, dilation, groups, algo)

    return key, kernel


_autocast_lib = torch.library.Library("convkit", "IMPL")  # kept alive: it owns the registrations
for _device_type in ("cuda", "cpu"):
    if autocast_available(_device_type):
        _key, _kernel = _autocast_conv2d_kernel(_device_type)
        _autocast_lib.impl("conv2d", _kernel, _key, with_keyset=True)


# ---- max_pool2d ------------------------------------------------------------------------------

@torch.library.custom_op("convkit::max_pool2d", mutates_args=())
def max_pool2d(input: Tensor, kernel_size: List[int], stride: List[int], padding: List[int],
               dilation: List[int], ceil_mode: bool) -> Tuple[Tensor, Tensor]:
    """input[N, C, H, W] -> (output[N, C, P, Q], int64 indices into each H*W plane)."""
    a = _checked_pool("convkit::max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode)
    return run_max_pool2d(input, a, True)


def _check_pool_example(op, input, kernel_size, stride, padding, dilation, ceil_mode) -> None:
    x = _example(input.shape)
    if x is not None:
        check_pool(op, x, input.dtype, kernel_size, stride, padding, dilation, ceil_mode)


@max_pool2d.register_fake
def _(input, kernel_size, stride, padding, dilation, ceil_mode):
    _check_pool_example("convkit::max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode)
    a = _pool_args(input.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    shape, cl = tuple(input.shape[:2]) + a.out_hw, _is_cl(input)
    idx = torch.empty(shape, dtype=torch.int64, device=input.device,
                      memory_format=_CL if cl else torch.contiguous_format)
    return _empty(input, shape, cl), idx


@torch.library.custom_op("convkit::max_pool2d_inference", mutates_args=())
def max_pool2d_inference(input: Tensor, kernel_size: List[int], stride: List[int], padding: List[int],
                         dilation: List[int], ceil_mode: bool) -> Tensor:
    """max_pool2d's values alone, for calls no gradient flows through (no indices to compute or
    store). When a derivative can flow, its Autograd kernel (convkit._autograd) runs max_pool2d
    instead, whose formulas need the indices."""
    a = _checked_pool("convkit::max_pool2d_inference", input, kernel_size, stride, padding, dilation, ceil_mode)
    return run_max_pool2d(input, a, False)[0]


@max_pool2d_inference.register_fake
def _(input, kernel_size, stride, padding, dilation, ceil_mode):
    _check_pool_example("convkit::max_pool2d_inference", input, kernel_size, stride, padding, dilation, ceil_mode)
    a = _pool_args(input.shape[2:], kernel_size, stride, padding, dilation, ceil_mode)
    return _empty(input, tuple(input.shape[:2]) + a.out_hw, _is_cl(input))


@torch.library.custom_op("convkit::max_pool2d_backward", mutates_args=())
def max_pool2d_backward(grad_output: Tensor, input: Tensor, indices: Tensor, kernel_size: List[int],
                        stride: List[int], padding: List[int], dilation: List[int], ceil_mode: bool) -> Tensor:
    """grad_output[N, C, P, Q] and the forward's indices -> grad_input[N, C, H, W]."""
    a = _checked_pool("convkit::max_pool2d_backward", input, kernel_size, stride, padding, dilation, ceil_mode,
                      grad_output)
    if indices.dtype != torch.int64 or indices.shape != grad_output.shape:
        raise ConvkitValueError(f"convkit::max_pool2d_backward: indices must be int64 of grad_output's shape, "
                                f"got {indices.dtype} {tuple(indices.shape)}")
    return run_max_pool2d_bwd(grad_output, input.shape, indices, a)


@max_pool2d_backward.register_fake
def _(grad_output, input, indices, kernel_size, stride, padding, dilation, ceil_mode):
    return _empty(grad_output, tuple(input.shape), _is_cl(grad_output))


# ---- avg_pool2d ------------------------------------------------------------------------------

@torch.library.custom_op("convkit::avg_pool2d", mutates_args=())
def avg_pool2d(input: Tensor, kernel_size: List[int], stride: List[int], padding: List[int], ceil_mode: bool,
               count_include_pad: bool, divisor_override: Optional[int]) -> Tensor:
    """input[N, C, H, W] -> output[N, C, P, Q], torch's divisor rules."""
    a = _checked_pool("convkit::avg_pool2d", input, kernel_size, stride, padding, (1, 1), ceil_mode)
    check_divisor("convkit::avg_pool2d", divisor_override)
    return run_avg_pool2d(input, a, count_include_pad, divisor_override)


@avg_pool2d.register_fake
def _(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    _check_pool_example("convkit::avg_pool2d", input, kernel_size, stride, padding, (1, 1), ceil_mode)
    check_divisor("convkit::avg_pool2d", divisor_override)
    a = _pool_args(input.shape[2:], kernel_size, stride, padding, (1, 1), ceil_mode)
    return _empty(input, tuple(input.shape[:2]) + a.out_hw, _is_cl(input))


@torch.library.custom_op("convkit::avg_pool2d_backward", mutates_args=())
def avg_pool2d_backward(grad_output: Tensor, input: Tensor, kernel_size: List[int], stride: List[int],
                        padding: List[int], ceil_mode: bool, count_include_pad: bool,
                        divisor_override: Optional[int]) -> Tensor:
    """grad_output[N, C, P, Q] -> grad_input[N, C, H, W] (input only gives the shape)."""
    a = _checked_pool("convkit::avg_pool2d_backward", input, kernel_size, stride, padding, (1, 1), ceil_mode,
                      grad_output)
    check_divisor("convkit::avg_pool2d_backward", divisor_override)
    return run_avg_pool2d_bwd(grad_output, input.shape, a, count_include_pad, divisor_override)


@avg_pool2d_backward.register_fake
def _(grad_output, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return _empty(grad_output, tuple(input.shape), _is_cl(grad_output))


# ---- relu ------------------------------------------------------------------------------------

@torch.library.custom_op("convkit::relu", mutates_args=())
def relu(input: Tensor) -> Tensor:
    """max(input, 0), NaN kept; the output has torch.empty_like's layout."""
    return run_relu(input)


@relu.register_fake
def _(input):
    return torch.empty_like(input)


@torch.library.custom_op("convkit::relu_", mutates_args=("input",))
def relu_(input: Tensor) -> None:
    """In place: input = max(input, 0). Used where no gradient flows through it (the op's
    declared mutation bumps input's version)."""
    run_relu_inplace(input)


@relu_.register_fake
def _(input):
    return None


@torch.library.custom_op("convkit::relu_backward", mutates_args=())
def relu_backward(grad_output: Tensor, output: Tensor) -> Tensor:
    """grad_input = 0 where output <= 0, else grad_output (torch's threshold_backward)."""
    if grad_output.shape != output.shape or grad_output.dtype != output.dtype:
        raise ConvkitValueError(f"convkit::relu_backward: grad_output {tuple(grad_output.shape)} {grad_output.dtype} "
                                f"and output {tuple(output.shape)} {output.dtype} must match")
    return run_relu_bwd(grad_output, output)


@relu_backward.register_fake
def _(grad_output, output):
    return torch.empty_like(grad_output)

