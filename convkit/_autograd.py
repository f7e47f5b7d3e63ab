"""Derivatives of convkit's custom ops: reverse mode, forward mode and batching, for eager
autograd, forward-mode AD (dual tensors), torch.func transforms and torch.compile / export.

Each differentiable op of convkit._ops gets one torch.autograd.Function here, with
`setup_context`, `backward` (reverse mode), `jvp` (forward mode) and `vmap` (a batching rule),
used two ways:
  * as the op's Autograd kernel: torch.ops.convkit.X applies the Function when a gradient or a
    tangent can flow (an input requires grad, or a forward-AD dual level is open), and otherwise
    runs the kernel below autograd with no bookkeeping. torch.compile and torch.export trace the
    ops through it; dual tensors get tangents; double backward works.
  * from Python (`call`), while a torch.func transform (grad, vjp, jacrev, jacfwd, jvp, hessian,
    vmap) is active: torch.func can run an autograd.Function's own rules, but not a Function
    applied inside an op's dispatcher kernel, so convkit.functional calls the Function itself.
The batching rules are also the ops' vmap kernels (torch.library.register_vmap): vmap over the
raw ops works too.

Every formula is written with the ops (through `call`), so each derivative is differentiable
again, in either mode: hessian (forward over reverse) and double backward are the ops' own.

Reverse and forward formulas run on the backend the forward ran on (recorded in setup_context):
a backward called from the autograd engine's thread, or after the forward's use_backend block
ended, still runs there.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from . import _backend
from . import _compat as C
from ._errors import ConvkitNotImplementedError
from ._ops import shape_carrier

ops = torch.ops.convkit


def forward_ad_active() -> bool:
    """True inside a forward-mode AD dual level (torch.autograd.forward_ad.dual_level), where a
    dual tensor's tangent must be carried through."""
    return C.forward_ad_level_open() and C.fwd_grad_enabled()


def transforms_active() -> bool:
    """True while a torch.func transform or a forward-AD dual level is active (outside
    torch.compile's tracing): the plain-kernel fast paths (convkit._eager) and in-place writes
    through pointers must not be used."""
    if torch.compiler.is_compiling():
        return False
    return C.functorch_active() or forward_ad_active()


def _derivative_can_flow(args) -> bool:
    """Whether an op's Autograd kernel must record a Function: an input requires grad (with
    grad mode on), or a forward-AD dual level is open."""
    return (torch.is_grad_enabled() and C.any_requires_grad(*args)) or forward_ad_active()


def _below_autograd(op, keyset, args):
    """op on args, redispatched below the Autograd key (no bookkeeping), as an Autograd kernel
    does when nothing needs differentiating."""
    with C.BelowAutograd():
        return op.redispatch(keyset & C.AFTER_AUTOGRAD, *args)


def _device(*tensors) -> str:
    for t in tensors:
        if isinstance(t, Tensor):
            return t.device.type
    return "cpu"


# ---- one Function per op ---------------------------------------------------------------------

_FUNCTIONS = {}


def _function(name: str, n_args: int, save: Callable, backward: Callable, jvp: Callable, vmap_rule: Callable,
              non_differentiable: Optional[int] = None):
    """Builds op `name`'s autograd.Function. Its inputs are the op's n_args arguments and a last
    one: the dispatch keyset when applied by the op's Autograd kernel (the forward then runs the
    op below autograd), None when applied from Python under torch.func (the forward calls the
    op, on the plain tensors torch.func hands it). `save(ctx, inputs, output)` returns the tensors
    the formulas need; `backward(ctx, *grads)` and `jvp(ctx, *tangents)` see them as
    ctx.saved_tensors and the op's other arguments as ctx.args (tensors there set to None)."""
    op = getattr(ops, name).default

    def forward(*args):
        keyset = args[-1]
        if keyset is None:
            return op(*args[:-1])
        return _below_autograd(op, keyset, args[:-1])

    def setup_context(ctx, inputs, output):
        args = inputs[:-1]
        saved = save(ctx, args, output)
        ctx.save_for_backward(*saved)
        ctx.save_for_forward(*saved)
        ctx.args = tuple(None if isinstance(a, Tensor) else a for a in args)
        ctx.shapes = tuple(tuple(a.shape) if isinstance(a, Tensor) else None for a in args)
        ctx.out_shape = tuple((output[0] if isinstance(output, tuple) else output).shape)
        ctx.backend = _backend.backend_for(_device(*args))
        if non_differentiable is not None:
            ctx.mark_non_differentiable(output[non_differentiable])

    def run_backward(ctx, *grads):
        with _backend.running_on(ctx.backend):
            out = backward(ctx, *grads)
        return tuple(out) + (None,) * (n_args + 1 - len(out))

    def run_jvp(ctx, *tangents):
        with _backend.running_on(ctx.backend):
            return jvp(ctx, *tangents[:-1])

    def vmap(info, in_dims, *args):
        return vmap_rule(info, in_dims[:-1], *args[:-1])

    cls = type(f"convkit_{name}", (torch.autograd.Function,), {
        "forward": staticmethod(forward), "setup_context": staticmethod(setup_context),
        "backward": staticmethod(run_backward), "jvp": staticmethod(run_jvp), "vmap": staticmethod(vmap)})
    _FUNCTIONS[name] = cls
    torch.library.register_vmap(op, vmap_rule)
    _register_autograd_kernel(name, op, cls)
    return cls


_lib = torch.library.Library("convkit", "IMPL")  # kept alive: it owns the Autograd kernels


def _register_autograd_kernel(name: str, op, cls) -> None:
    def kernel(keyset, *args):
        if _derivative_can_flow(args):
            if not C.functorch_active():
                return cls.apply(*args, keyset)
            if C.only_vmap_layers():
                # Inside a vmap batching rule (the op's own, or torch's), on tensors that plain
                # autograd tracks: record the Function as plain autograd would, without
                # torch.func's custom_function_call (which has no kernel at this level).
                return super(torch.autograd.Function, cls).apply(*args, keyset)
            raise ConvkitNotImplementedError(
                f"convkit::{name}: torch.func transforms (grad, vjp, jacrev, jacfwd, jvp, hessian) cannot "
                f"differentiate through a torch.library custom op called directly; call "
                f"convkit.functional (or the convkit.nn layers), which carry convkit's own rules into them")
        return _below_autograd(op, keyset, args)

    _lib.impl(name, kernel, "Autograd", with_keyset=True)


def call(name: str, *args):
    """Runs op `name` differentiably in every mode: through its Function while a torch.func
    transform is active, else through the op (whose Autograd kernel applies the Function when
    a gradient or tangent can flow). Compiled and exported graphs see the op. Inside an op's
    registered vmap rule (torch.func's batching key excluded, its vmap level still on the
    stack) the op itself runs, as torch.func expects there."""
    if not torch.compiler.is_compiling() and C.functorch_active() and not C.batching_key_excluded():
        if name == "max_pool2d_inference":  # (the values of max_pool2d, whose rules need the indices)
            return _FUNCTIONS["max_pool2d"].apply(*args, None)[0]
        return _FUNCTIONS[name].apply(*args, None)
    return getattr(ops, name)(*args)


def _sum(*terms):
    """The sum of the terms that are not None (None when all are)."""
    out = None
    for t in terms:
        if t is not None:
            out = t if out is None else out + t
    return out


# ---- batching helpers ------------------------------------------------------------------------

def _front(t: Tensor, dim: Optional[int], size: int) -> Tensor:
    """t with its vmapped dimension first (a broadcast copy's view when it has none)."""
    return t.movedim(dim, 0) if dim is not None else t.expand(size, *t.shape)


def _fold(t: Tensor, dim: Optional[int], size: int) -> Tensor:
    """[B, N, ...] -> [B*N, ...]: the vmapped dimension folded into the batch."""
    t = _front(t, dim, size)
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


def _logical(t: Tensor, dim: Optional[int]):
    """The shape the vmapped function sees: t's without the vmapped dimension."""
    return tuple(t.shape) if dim is None else tuple(t.shape[:dim]) + tuple(t.shape[dim + 1:])


def _into_channels(t: Tensor, dim: Optional[int], size: int) -> Tensor:
    """[B, N, C, H, W] -> [N, B*C, H, W]: the vmapped dimension folded into the channels (one
    group of channels per vmapped entry)."""
    t = _front(t, dim, size).transpose(0, 1)
    return t.reshape(t.shape[0], t.shape[1] * t.shape[2], *t.shape[3:])


def _out_of_channels(t: Tensor, size: int) -> Tensor:
    """[N, B*C, H, W] -> [N, B, C, H, W] (the vmapped dimension at 1)."""
    return t.view(t.shape[0], size, t.shape[1] // size, *t.shape[2:])


def _folded_carrier(like: Tensor, x: Tensor, dim: Optional[int], size: int) -> Tensor:
    """A pooling backward's shape-only input argument with the vmapped dimension folded into
    its batch (it costs no memory: see shape_carrier)."""
    n, c, h, w = _logical(x, dim)
    return shape_carrier(like, (size * n, c, h, w))


def _out_of_batch(t: Tensor, size: int) -> Tensor:
    """[B*N, ...] -> [B, N, ...]."""
    return t.view(size, t.shape[0] // size, *t.shape[1:])


# ---- conv2d and its backward ops -------------------------------------------------------------
# conf = (stride, padding, dilation, groups, algo), the ops' trailing arguments.

def _save_two(ctx, args, output):
    """The two tensors of a conv op (x and w, dy and w, dy and x): what its formulas need."""
    return args[0], args[1]


def _bilinear_jvp(name: str):
    """The jvp of a backward op bilinear in its two tensors: op(ta, b) + op(a, tb)."""
    def jvp(ctx, ta, tb, *_):
        a, b = ctx.saved_tensors
        rest = ctx.args[2:]
        return _sum(None if ta is None else call(name, ta, b, *rest),
                    None if tb is None else call(name, a, tb, *rest))
    return jvp


def conv2d_grads(dy, x, w, has_bias: bool, need, conf):
    """conv2d's gradients (input, weight, bias; None where need says no) through the
    differentiable ops: convkit::conv2d's reverse formula, also the eager path's when its
    backward must be differentiable or batched (convkit._eager). conf: the ops' trailing
    arguments (stride, padding, dilation, groups, algo)."""
    gx = call("conv2d_backward_input", dy, w, list(x.shape), *conf) if need[0] else None
    gw = call("conv2d_backward_weight", dy, x, list(w.shape), *conf) if need[1] else None
    gb = call("conv2d_backward_bias", dy) if has_bias and need[2] else None
    return gx, gw, gb


def _conv_backward(ctx, grad):
    x, w = ctx.saved_tensors
    return conv2d_grads(grad, x, w, ctx.shapes[2] is not None, ctx.needs_input_grad, ctx.args[3:])


def _conv_jvp(ctx, tx, tw, tb, *_):
    # y = conv(x, w) + b is bilinear in (x, w) and linear in b.
    x, w = ctx.saved_tensors
    conf = ctx.args[3:]
    return _sum(None if tx is None else call("conv2d", tx, w, None, *conf),
                None if tw is None else call("conv2d", x, tw, None, *conf),
                None if tb is None else tb.view(1, -1, 1, 1).expand(ctx.out_shape))


def _conv_vmap(info, in_dims, x, w, b, stride, padding, dilation, groups, algo):
    xd, wd, bd = in_dims[:3]
    size = info.batch_size
    if wd is None and bd is None:  # one filter bank for every entry: the entries are more images
        y = call("conv2d", _fold(x, xd, size), w, b, stride, padding, dilation, groups, algo)
        return _out_of_batch(y, size), 0
    k = _logical(w, wd)[0]
    if xd is None:
        # Filters per entry, one input: the entries' filters are more output channels. Ordered
        # (group, entry, channel) so each group's output channels stay contiguous.
        w5 = _front(w, wd, size)  # [B, K, C/g, R, S]
        wg = w5.reshape(size, groups, k // groups, *w5.shape[2:]).transpose(0, 1).reshape(size * k, *w5.shape[2:])
        bg = None
        if b is not None:
            bg = _front(b, bd, size).reshape(size, groups, k // groups).transpose(0, 1).reshape(size * k)
        y = call("conv2d", x, wg, bg, stride, padding, dilation, groups, algo)  # [N, g*B*K/g, P, Q]
        y = y.view(y.shape[0], groups, size, k // groups, *y.shape[2:]).transpose(1, 2)
        return y.reshape(y.shape[0], size, k, *y.shape[4:]), 1
    # Inputs and filters per entry: a grouped convolution with one set of groups per entry.
    w5 = _front(w, wd, size)
    bg = None if b is None else _front(b, bd, size).reshape(size * k)
    y = call("conv2d", _into_channels(x, xd, size), w5.reshape(size * k, *w5.shape[2:]), bg, stride, padding,
             dilation, groups * size, algo)
    return _out_of_channels(y, size), 1


_function("conv2d", 8, _save_two, _conv_backward, _conv_jvp, _conv_vmap)


def _bwd_input_backward(ctx, gg):
    # dx = B(dy, w) is bilinear: d<gg, dx>/d(dy) = conv2d(gg, w), d<gg, dx>/dw = W(dy, gg).
    dy, w = ctx.saved_tensors
    conf = ctx.args[3:]
    need = ctx.needs_input_grad
    g_dy = call("conv2d", gg, w, None, *conf) if need[0] else None
    g_w = call("conv2d_backward_weight", dy, gg, list(w.shape), *conf) if need[1] else None
    return g_dy, g_w


def _bwd_input_vmap(info, in_dims, dy, w, input_size, stride, padding, dilation, groups, algo):
    dyd, wd = in_dims[:2]
    size = info.batch_size
    n, c, h, wi = input_size
    if wd is None:
        dx = call("conv2d_backward_input", _fold(dy, dyd, size), w, [size * n, c, h, wi], stride, padding, dilation,
                  groups, algo)
        return _out_of_batch(dx, size), 0
    w5 = _front(w, wd, size)
    dx = call("conv2d_backward_input", _into_channels(dy, dyd, size), w5.reshape(-1, *w5.shape[2:]),
              [n, size * c, h, wi], stride, padding, dilation, groups * size, algo)
    return _out_of_channels(dx, size), 1


_function("conv2d_backward_input", 8, _save_two, _bwd_input_backward, _bilinear_jvp("conv2d_backward_input"),
          _bwd_input_vmap)


def _bwd_weight_backward(ctx, gg):
    # dw = W(dy, x) is bilinear: d<gg, dw>/d(dy) = conv2d(x, gg), d<gg, dw>/dx = B(dy, gg).
    dy, x = ctx.saved_tensors
    conf = ctx.args[3:]
    need = ctx.needs_input_grad
    g_dy = call("conv2d", x, gg, None, *conf) if need[0] else None
    g_x = call("conv2d_backward_input", dy, gg, list(x.shape), *conf) if need[1] else None
    return g_dy, g_x


def _bwd_weight_vmap(info, in_dims, dy, x, weight_size, stride, padding, dilation, groups, algo):
    # The weight gradient sums over the images, so entries can't become more images: each entry
    # is a set of groups of a grouped convolution's weight gradient.
    dyd, xd = in_dims[:2]
    size = info.batch_size
    k, cg, r, s = weight_size
    dw = call("conv2d_backward_weight", _into_channels(dy, dyd, size), _into_channels(x, xd, size),
              [size * k, cg, r, s], stride, padding, dilation, groups * size, algo)
    return dw.view(size, k, cg, r, s), 0


_function("conv2d_backward_weight", 8, _save_two, _bwd_weight_backward, _bilinear_jvp("conv2d_backward_weight"),
          _bwd_weight_vmap)


def _bwd_bias_save(ctx, args, output):
    return ()


def _bwd_bias_backward(ctx, gg):
    return (gg.view(1, -1, 1, 1).expand(ctx.shapes[0]),)


def _bwd_bias_jvp(ctx, tdy, *_):
    return call("conv2d_backward_bias", tdy)


def _bwd_bias_vmap(info, in_dims, dy):
    size = info.batch_size
    return call("conv2d_backward_bias", _into_channels(dy, in_dims[0], size)).view(size, -1), 0


_function("conv2d_backward_bias", 1, _bwd_bias_save, _bwd_bias_backward, _bwd_bias_jvp, _bwd_bias_vmap)


# ---- max pooling -----------------------------------------------------------------------------
# pconf = (kernel_size, stride, padding, dilation, ceil_mode)

def _gather(t: Tensor, indices: Tensor) -> Tensor:
    """t[n, c] at each window's argmax: the linear map max pooling applies to a tangent.
    (reshape, not flatten: gradcheck's batched checks use torch's older vmap, which has no
    rule for flatten.)"""
    n, c = indices.shape[:2]
    return t.reshape(n, c, -1).gather(2, indices.reshape(n, c, -1)).view(indices.shape)


def _max_pool_save(ctx, args, output):
    return args[0], output[1]


def _max_pool_backward(ctx, grad, _grad_indices):
    x, idx = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return (None,)
    return (call("max_pool2d_backward", grad, x, idx, *ctx.args[1:]),)


def _max_pool_jvp(ctx, tx, *_):
    _, idx = ctx.saved_tensors
    return _gather(tx, idx), None


def _max_pool_vmap(info, in_dims, x, *pconf):
    size = info.batch_size
    y, idx = call("max_pool2d", _fold(x, in_dims[0], size), *pconf)
    return (_out_of_batch(y, size), _out_of_batch(idx, size)), (0, 0)


_function("max_pool2d", 6, _max_pool_save, _max_pool_backward, _max_pool_jvp, _max_pool_vmap, non_differentiable=1)


def _max_pool_inference_vmap(info, in_dims, x, *pconf):
    size = info.batch_size
    return _out_of_batch(call("max_pool2d_inference", _fold(x, in_dims[0], size), *pconf), size), 0


def _max_pool_inference_autograd(keyset, *args):
    # Values without indices, for calls no derivative flows through; when one can, it is
    # max_pool2d's values (the derivatives need the indices).
    if _derivative_can_flow(args):
        return ops.max_pool2d(*args)[0]
    return _below_autograd(ops.max_pool2d_inference.default, keyset, args)


torch.library.register_vmap(ops.max_pool2d_inference.default, _max_pool_inference_vmap)
_lib.impl("max_pool2d_inference", _max_pool_inference_autograd, "Autograd", with_keyset=True)


def _max_pool_bwd_save(ctx, args, output):
    return args[2], args[1]


def _max_pool_bwd_backward(ctx, gg):
    # dx is linear in dy: the adjoint gathers gg at each window's argmax.
    idx, _ = ctx.saved_tensors
    return ((_gather(gg, idx) if ctx.needs_input_grad[0] else None),)


def _max_pool_bwd_jvp(ctx, tdy, *_):
    idx, x = ctx.saved_tensors
    return None if tdy is None else call("max_pool2d_backward", tdy, x, idx, *ctx.args[3:])


def _max_pool_bwd_vmap(info, in_dims, dy, x, idx, *pconf):
    size = info.batch_size
    dx = call("max_pool2d_backward", _fold(dy, in_dims[0], size), _folded_carrier(dy, x, in_dims[1], size),
              _fold(idx, in_dims[2], size), *pconf)
    return _out_of_batch(dx, size), 0


_function("max_pool2d_backward", 8, _max_pool_bwd_save, _max_pool_bwd_backward, _max_pool_bwd_jvp,
          _max_pool_bwd_vmap)


# ---- average pooling -------------------------------------------------------------------------
# aconf = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)

def _avg_pool_save(ctx, args, output):
    return ()


def _avg_pool_backward(ctx, grad):
    if not ctx.needs_input_grad[0]:
        return (None,)
    return (call("avg_pool2d_backward", grad, shape_carrier(grad, ctx.shapes[0]), *ctx.args[1:]),)


def _avg_pool_jvp(ctx, tx, *_):
    return call("avg_pool2d", tx, *ctx.args[1:])  # linear


def _avg_pool_vmap(info, in_dims, x, *aconf):
    size = info.batch_size
    return _out_of_batch(call("avg_pool2d", _fold(x, in_dims[0], size), *aconf), size), 0


_function("avg_pool2d", 7, _avg_pool_save, _avg_pool_backward, _avg_pool_jvp, _avg_pool_vmap)


def _avg_pool_bwd_backward(ctx, gg):
    # dx is linear in dy; its adjoint is the forward pool itself.
    return ((call("avg_pool2d", gg, *ctx.args[2:]) if ctx.needs_input_grad[0] else None),)


def _avg_pool_bwd_jvp(ctx, tdy, *_):
    return None if tdy is None else call("avg_pool2d_backward", tdy, shape_carrier(tdy, ctx.shapes[1]),
                                         *ctx.args[2:])


def _avg_pool_bwd_vmap(info, in_dims, dy, x, *aconf):
    size = info.batch_size
    dx = call("avg_pool2d_backward", _fold(dy, in_dims[0], size), _folded_carrier(dy, x, in_dims[1], size), *aconf)
    return _out_of_batch(dx, size), 0


_function("avg_pool2d_backward", 8, _avg_pool_save, _avg_pool_bwd_backward, _avg_pool_bwd_jvp, _avg_pool_bwd_vmap)


# ---- ReLU ------------------------------------------------------------------------------------

def _relu_save(ctx, args, output):
    return (output,)


def _relu_backward(ctx, grad):
    (y,) = ctx.saved_tensors
    return ((call("relu_backward", grad, y) if ctx.needs_input_grad[0] else None),)


def _relu_jvp(ctx, tx, *_):
    (y,) = ctx.saved_tensors
    return call("relu_backward", tx, y)  # the tangent where the output is positive (NaN passes)


def _relu_vmap(info, in_dims, x):
    return call("relu", x), in_dims[0]  # elementwise: any layout


_function("relu", 1, _relu_save, _relu_backward, _relu_jvp, _relu_vmap)


def _relu_bwd_save(ctx, args, output):
    return (args[1],)


def _relu_bwd_backward(ctx, gg):
    (y,) = ctx.saved_tensors
    return (call("relu_backward", gg, y) if ctx.needs_input_grad[0] else None), None


def _relu_bwd_jvp(ctx, tdy, _ty, *_):
    (y,) = ctx.saved_tensors  # piecewise linear in dy; the output's tangent does not enter
    return None if tdy is None else call("relu_backward", tdy, y)


def _relu_bwd_vmap(info, in_dims, dy, y):
    dyd, yd = in_dims[:2]
    if dyd == yd:
        return call("relu_backward", dy, y), dyd
    size = info.batch_size
    return call("relu_backward", _front(dy, dyd, size).contiguous(), _front(y, yd, size).contiguous()), 0


_function("relu_backward", 2, _relu_bwd_save, _relu_bwd_backward, _relu_bwd_jvp, _relu_bwd_vmap)
