"""The eager fast path of convkit.functional for torch tensors.

A call through a torch.library custom op costs tens of microseconds of Python dispatch before
the kernel starts (the op's autograd wrapper, its torch.compile guard, a second argument check),
which is most of the time of a small layer: a 7x7 GoogLeNet convolution at batch 8 takes ~0.2 ms.
So in plain eager mode convkit.functional calls the kernels itself, with torch.autograd.Function
for the gradients; the arguments were already checked, once, by convkit.functional.

The custom ops (convkit._ops) stay the path for everything else, so nothing a user can see
changes: torch.compile / torch.export and jit tracing, tensor subclasses and fake or meta
tensors, torch function and dispatch modes, torch.func transforms (vmap, grad, jvp, ...),
forward-mode AD dual levels and autocast (convkit::conv2d's autocast kernels) all go through
the ops (convkit._autograd.call). A backward run with create_graph=True calls the differentiable
backward ops, so double backward is the ops' own.
Both paths call the same kernels with the same arguments: results are bit-identical.
"""
from __future__ import annotations

import torch

from . import _compat as C
from . import _kernels as K
from ._autograd import call, conv2d_grads
from ._backend import backend_for, running_on
from ._ops import shape_carrier
from ._run import (run_avg_pool2d, run_avg_pool2d_bwd, run_conv2d, run_conv2d_bwd_input, run_conv2d_bwd_weight,
                   run_max_pool2d, run_max_pool2d_bwd, run_relu, run_relu_bwd, run_relu_inplace)
from ._params import ConvArgs, PoolArgs


def eager(*tensors) -> bool:
    """Whether convkit.functional may run an op on these tensors straight through the kernels."""
    if torch.compiler.is_compiling():  # first: dynamo folds it, and never traces the rest
        return False
    if (C.torch_dispatch_modes() or C.torch_function_modes() or C.functorch_active()
            or C.jit_tracing_state() is not None or C.any_autocast_enabled()
            or C.forward_ad_level_open()):  # (a forward-AD dual level: tangents need the ops' jvp rules)
        return False
    for t in tensors:
        if t is not None and (type(t) is not torch.Tensor or t.is_meta):
            return False
    return True


def needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# ---- the gradients ---------------------------------------------------------------------------
# Each Function below records the backend its forward ran on, and its backward runs there. The
# backward calls the kernels on dy itself only in plain reverse mode; when it has to be
# differentiable again (create_graph=True), runs under a torch.func transform, or gets a batched
# dy (gradcheck's check_batched_grad vmaps the backward), it runs the differentiable ops of
# convkit._autograd instead.

def _kernels_may_take(dy) -> bool:
    return not (torch.is_grad_enabled() or C.functorch_active() or C.is_legacy_batched(dy))


def _conf(args: ConvArgs):
    """The custom ops' trailing arguments for args."""
    return list(args.stride), list(args.pads), list(args.dilation), args.groups, args.algo


# ---- conv2d ----------------------------------------------------------------------------------

class Conv2d(torch.autograd.Function):
    """conv2d with the gradients of convkit::conv2d's autograd formula (convkit._autograd)."""

    @staticmethod
    def forward(ctx, x, w, b, args: ConvArgs):
        ctx.save_for_backward(x, w)
        ctx.args, ctx.has_bias = args, b is not None
        ctx.backend = backend_for(x.device.type)
        return run_conv2d(x, w, b, args)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        need, args = ctx.needs_input_grad, ctx.args
        with running_on(ctx.backend):
            if not _kernels_may_take(dy):
                return conv2d_grads(dy, x, w, ctx.has_bias, need, _conf(args)) + (None,)
            dy = dy.contiguous()  # (run_conv2d_bwd_* raise an allocation failure as ConvkitMemoryError)
            gx = run_conv2d_bwd_input(dy, w, x.shape, args) if need[0] else None
            gw = run_conv2d_bwd_weight(dy, x, w.shape, args) if need[1] else None
            gb = K.conv2d_bwd_bias(dy) if ctx.has_bias and need[2] else None
        return gx, gw, gb, None


def conv2d(x, w, b, args: ConvArgs):
    if needs_grad(x, w, b):
        return Conv2d.apply(x, w, b, args)
    return run_conv2d(x, w, b, args)


# ---- pooling ---------------------------------------------------------------------------------

def _pool_conf(a: PoolArgs):
    return list(a.kernel), list(a.stride), list(a.padding)


class MaxPool2d(torch.autograd.Function):
    """max_pool2d with its indices (not differentiable), the gradient of convkit::max_pool2d."""

    @staticmethod
    def forward(ctx, x, a: PoolArgs):
        y, idx = run_max_pool2d(x, a, True)
        ctx.mark_non_differentiable(idx)
        ctx.save_for_backward(idx)
        ctx.a, ctx.x_shape = a, tuple(x.shape)
        ctx.backend = backend_for(x.device.type)
        return y, idx

    @staticmethod
    def backward(ctx, dy, _didx):
        (idx,) = ctx.saved_tensors
        a = ctx.a
        with running_on(ctx.backend):
            if not _kernels_may_take(dy):
                return call("max_pool2d_backward", dy, shape_carrier(dy, ctx.x_shape), idx, *_pool_conf(a),
                            list(a.dilation), a.ceil_mode), None
            return run_max_pool2d_bwd(dy, ctx.x_shape, idx, a), None


def max_pool2d(x, a: PoolArgs, return_indices: bool):
    """(y, indices or None)."""
    if needs_grad(x):
        return MaxPool2d.apply(x, a)
    return run_max_pool2d(x, a, return_indices)


class AvgPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a: PoolArgs, count_include_pad: bool, div):
        ctx.a, ctx.x_shape, ctx.cip, ctx.div = a, tuple(x.shape), count_include_pad, div
        ctx.backend = backend_for(x.device.type)
        return run_avg_pool2d(x, a, count_include_pad, div)

    @staticmethod
    def backward(ctx, dy):
        a = ctx.a
        with running_on(ctx.backend):
            if not _kernels_may_take(dy):
                return call("avg_pool2d_backward", dy, shape_carrier(dy, ctx.x_shape), *_pool_conf(a), a.ceil_mode,
                            ctx.cip, ctx.div), None, None, None
            return run_avg_pool2d_bwd(dy, ctx.x_shape, a, ctx.cip, ctx.div), None, None, None


def avg_pool2d(x, a: PoolArgs, count_include_pad: bool, div):
    if needs_grad(x):
        return AvgPool2d.apply(x, a, count_include_pad, div)
    return run_avg_pool2d(x, a, count_include_pad, div)


# ---- ReLU ------------------------------------------------------------------------------------

class Relu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = run_relu(x)
        ctx.save_for_backward(y)
        ctx.backend = backend_for(x.device.type)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        with running_on(ctx.backend):
            if not _kernels_may_take(dy):
                return call("relu_backward", dy, y)
            return run_relu_bwd(dy, y)


def relu(x):
    if needs_grad(x):
        return Relu.apply(x)
    return run_relu(x)


def relu_inplace(x) -> None:
    """x = max(x, 0) in place (no gradient flows through it), as convkit::relu_."""
    if run_relu_inplace(x):
        torch.autograd.graph.increment_version(x)  # written through a pointer: tell autograd
