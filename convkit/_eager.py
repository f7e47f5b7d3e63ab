"""The eager fast path of convkit.functional for torch tensors.

A call through a torch.library custom op costs tens of microseconds of Python dispatch before
the kernel starts (the op's autograd wrapper, its torch.compile guard, a second argument check),
which is most of the time of a small layer: a 7x7 GoogLeNet convolution at batch 8 takes ~0.2 ms.
So in plain eager mode convkit.functional calls the kernels itself, with torch.autograd.Function
for the gradients; the arguments were already checked, once, by convkit.functional.

The custom ops (convkit._ops) stay the path for everything else, so nothing a user can see
changes: torch.compile / torch.export and jit tracing, tensor subclasses and fake or meta
tensors, torch function and dispatch modes, functorch transforms (vmap, grad) and autocast
(convkit::conv2d's autocast kernels) all go through the ops. A backward run with
create_graph=True calls the differentiable backward ops, so double backward is the ops' own.
Both paths call the same kernels with the same arguments: results are bit-identical.
"""
from __future__ import annotations

import torch

from . import _kernels as K
from ._ops import _elementwise_pair, _finish, _is_cl
from ._params import ConvArgs, PoolArgs

_C = torch._C


def eager(*tensors) -> bool:
    """Whether convkit.functional may run an op on these tensors straight through the kernels."""
    if torch.compiler.is_compiling():  # first: dynamo folds it, and never traces the rest
        return False
    if (_C._len_torch_dispatch_stack() or _C._len_torch_function_stack() or _C._are_functorch_transforms_active()
            or _C._get_tracing_state() is not None or _C._is_any_autocast_enabled()):
        return False
    for t in tensors:
        if t is not None and (type(t) is not torch.Tensor or t.is_meta):
            return False
    return True


def needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _contig(t):
    return None if t is None else t.contiguous()


# ---- conv2d ----------------------------------------------------------------------------------

def _conf(args: ConvArgs):
    """The custom ops' trailing arguments for args."""
    return list(args.stride), list(args.pads), list(args.dilation), args.groups, args.algo


def conv2d_fwd(x, w, b, args: ConvArgs):
    return _finish(K.conv2d_fwd(x.contiguous(), w.contiguous(), _contig(b), args), _is_cl(x, w))


def conv2d_bwd_input(dy, w, x_shape, args: ConvArgs):
    return _finish(K.conv2d_bwd_input(dy.contiguous(), w.contiguous(), tuple(x_shape), args), _is_cl(dy, w))


def conv2d_bwd_weight(dy, x, w_shape, args: ConvArgs):
    return K.conv2d_bwd_weight(dy.contiguous(), x.contiguous(), tuple(w_shape), args)


class Conv2d(torch.autograd.Function):
    """conv2d with the gradients of convkit::conv2d's autograd formula (convkit._ops)."""

    @staticmethod
    def forward(ctx, x, w, b, args: ConvArgs):
        ctx.save_for_backward(x, w)
        ctx.args, ctx.has_bias = args, b is not None
        return conv2d_fwd(x, w, b, args)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        need, args = ctx.needs_input_grad, ctx.args
        if torch.is_grad_enabled():  # create_graph=True: the differentiable ops
            ops, conf = torch.ops.convkit, _conf(args)
            gx = ops.conv2d_backward_input(dy, w, list(x.shape), *conf) if need[0] else None
            gw = ops.conv2d_backward_weight(dy, x, list(w.shape), *conf) if need[1] else None
            gb = ops.conv2d_backward_bias(dy) if ctx.has_bias and need[2] else None
            return gx, gw, gb, None
        dy = dy.contiguous()
        gx = conv2d_bwd_input(dy, w, x.shape, args) if need[0] else None
        gw = conv2d_bwd_weight(dy, x, w.shape, args) if need[1] else None
        gb = K.conv2d_bwd_bias(dy) if ctx.has_bias and need[2] else None
        return gx, gw, gb, None


def conv2d(x, w, b, args: ConvArgs):
    if needs_grad(x, w, b):
        return Conv2d.apply(x, w, b, args)
    return conv2d_fwd(x, w, b, args)


# ---- pooling ---------------------------------------------------------------------------------

def _pool_conf(a: PoolArgs):
    return list(a.kernel), list(a.stride), list(a.padding)


def _carrier(like, shape):
    return like.new_zeros(()).expand(tuple(shape))


def max_pool2d_bwd(dy, x_shape, idx, a: PoolArgs):
    return _finish(K.max_pool2d_bwd(dy.contiguous(), tuple(x_shape), idx.contiguous(), a), _is_cl(dy))


class MaxPool2d(torch.autograd.Function):
    """max_pool2d with its indices (not differentiable), the gradient of convkit::max_pool2d."""

    @staticmethod
    def forward(ctx, x, a: PoolArgs):
        y, idx = K.max_pool2d_fwd(x.contiguous(), a, True)
        cl = _is_cl(x)
        y, idx = _finish(y, cl), _finish(idx, cl)
        ctx.mark_non_differentiable(idx)
        ctx.save_for_backward(idx)
        ctx.a, ctx.x_shape = a, tuple(x.shape)
        return y, idx

    @staticmethod
    def backward(ctx, dy, _didx):
        (idx,) = ctx.saved_tensors
        a = ctx.a
        if torch.is_grad_enabled():
            return torch.ops.convkit.max_pool2d_backward(dy, _carrier(dy, ctx.x_shape), idx, *_pool_conf(a),
                                                         list(a.dilation), a.ceil_mode), None
        return max_pool2d_bwd(dy, ctx.x_shape, idx, a), None


def max_pool2d(x, a: PoolArgs, return_indices: bool):
    """(y, indices or None)."""
    if needs_grad(x):
        return MaxPool2d.apply(x, a)
    y, idx = K.max_pool2d_fwd(x.contiguous(), a, return_indices)
    cl = _is_cl(x)
    return _finish(y, cl), (None if idx is None else _finish(idx, cl))


def avg_pool2d_bwd(dy, x_shape, a: PoolArgs, count_include_pad, div):
    return _finish(K.avg_pool2d_bwd(dy.contiguous(), tuple(x_shape), a, count_include_pad, div), _is_cl(dy))


class AvgPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, a: PoolArgs, count_include_pad: bool, div):
        ctx.a, ctx.x_shape, ctx.cip, ctx.div = a, tuple(x.shape), count_include_pad, div
        return _finish(K.avg_pool2d_fwd(x.contiguous(), a, count_include_pad, div), _is_cl(x))

    @staticmethod
    def backward(ctx, dy):
        a = ctx.a
        if torch.is_grad_enabled():
            return torch.ops.convkit.avg_pool2d_backward(dy, _carrier(dy, ctx.x_shape), *_pool_conf(a), a.ceil_mode,
                                                         ctx.cip, ctx.div), None, None, None
        return avg_pool2d_bwd(dy, ctx.x_shape, a, ctx.cip, ctx.div), None, None, None


def avg_pool2d(x, a: PoolArgs, count_include_pad: bool, div):
    if needs_grad(x):
        return AvgPool2d.apply(x, a, count_include_pad, div)
    return _finish(K.avg_pool2d_fwd(x.contiguous(), a, count_include_pad, div), _is_cl(x))


# ---- ReLU ------------------------------------------------------------------------------------

def relu_fwd(x):
    fast = K.fast_cpu(x)
    if fast is not None:  # the common case, with the least Python between the call and the kernel
        out = torch.empty_like(x)
        n = x.numel()
        if n:
            K.kernel_calls["relu_fwd"] += 1
            fast[0].relu_fwd(fast[1], n, x.data_ptr(), out.data_ptr())
        return out
    x, _, out, copied = _elementwise_pair(x)
    if not copied:
        return K.relu_fwd(x, out=out)
    return out.copy_(K.relu_fwd(x))


def relu_bwd(dy, y):
    fast = K.fast_cpu(dy)
    if fast is not None and y.is_contiguous():
        out = torch.empty_like(dy)
        n = dy.numel()
        if n:
            K.kernel_calls["relu_bwd"] += 1
            fast[0].relu_bwd(fast[1], n, dy.data_ptr(), y.data_ptr(), out.data_ptr())
        return out
    dy, y, out, copied = _elementwise_pair(dy, y)
    if not copied:
        return K.relu_bwd(dy, y, out=out)
    return out.copy_(K.relu_bwd(dy, y))


class Relu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = relu_fwd(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        if torch.is_grad_enabled():
            return torch.ops.convkit.relu_backward(dy, y)
        return relu_bwd(dy, y)


def relu(x):
    if needs_grad(x):
        return Relu.apply(x)
    return relu_fwd(x)


def relu_inplace(x) -> None:
    """x = max(x, 0) in place (no gradient flows through it), as convkit::relu_."""
    if x.is_contiguous() or torch.empty_like(x).stride() == x.stride():
        K.relu_fwd(x, out=x)
        torch.autograd.graph.increment_version(x)  # written through a pointer: tell autograd
    else:
        x.copy_(K.relu_fwd(x.contiguous()))
