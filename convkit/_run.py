"""Each pass of each op on checked torch tensors, in one place: the custom ops
(convkit._ops) and the eager autograd path (convkit._eager) both call these, as does
convkit.functional for a backward asked for by name. A pass makes its operands contiguous, calls
the kernel binding (convkit._kernels), gives the output the memory format torch would
(channels_last in, channels_last out) and turns an allocation failure into ConvkitMemoryError.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import _arrays as A
from . import _kernels as K
from ._compat import suggest_memory_format
from ._params import ConvArgs, PoolArgs

_CL = torch.channels_last
_cl_cache = {}  # (shape, strides) -> suggest_memory_format(t) == channels_last (a per-call cost)


def _suggests_cl(t: Tensor) -> bool:
    if t.is_meta or type(t) is not Tensor:  # fake/symbolic shapes: no cache
        return suggest_memory_format(t) == _CL
    key = (tuple(t.shape), t.stride())
    hit = _cl_cache.get(key)
    if hit is None:
        if len(_cl_cache) > 4096:
            _cl_cache.clear()
        hit = _cl_cache[key] = suggest_memory_format(t) == _CL
    return hit


def _is_cl(*tensors: Tensor) -> bool:
    """torch's rule for a convolution or pooling output: channels_last if an operand suggests it."""
    return any(t is not None and t.dim() == 4 and _suggests_cl(t) for t in tensors)


def _finish(out: Tensor, channels_last: bool) -> Tensor:
    """The kernels write NCHW; give the output the memory format torch would."""
    return out.contiguous(memory_format=_CL) if channels_last else out


def _contig(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.contiguous()


def _raise_if_oom(e: RuntimeError, op: str) -> None:
    """Raises torch's allocation failure `e` (a contiguous copy of a stride-0 view of a huge
    shape, say) as a ConvkitMemoryError with the bytes; returns for anything else. The passes
    below call it from an except clause (a try block costs nothing until something raises)."""
    err = A.memory_error(e, f"convkit {op}: a contiguous copy or an output")
    if err is not None and err is not e:
        raise err from None


def run_conv2d(x: Tensor, w: Tensor, b: Optional[Tensor], args: ConvArgs) -> Tensor:
    try:
        return _finish(K.conv2d_fwd(x.contiguous(), w.contiguous(), _contig(b), args), _is_cl(x, w))
    except RuntimeError as e:
        _raise_if_oom(e, "conv2d")
        raise


def run_conv2d_bwd_input(dy: Tensor, w: Tensor, x_shape, args: ConvArgs) -> Tensor:
    try:
        return _finish(K.conv2d_bwd_input(dy.contiguous(), w.contiguous(), tuple(x_shape), args), _is_cl(dy, w))
    except RuntimeError as e:
        _raise_if_oom(e, "conv2d_backward_input")
        raise


def run_conv2d_bwd_weight(dy: Tensor, x: Tensor, w_shape, args: ConvArgs) -> Tensor:
    try:
        return K.conv2d_bwd_weight(dy.contiguous(), x.contiguous(), tuple(w_shape), args)
    except RuntimeError as e:
        _raise_if_oom(e, "conv2d_backward_weight")
        raise


def run_max_pool2d(x: Tensor, a: PoolArgs, want_indices: bool):
    """(y, int64 indices or None), in the memory format torch gives them."""
    try:
        y, idx = K.max_pool2d_fwd(x.contiguous(), a, want_indices)
        cl = _is_cl(x)
        return _finish(y, cl), (None if idx is None else _finish(idx, cl))
    except RuntimeError as e:
        _raise_if_oom(e, "max_pool2d")
        raise


def run_max_pool2d_bwd(dy: Tensor, x_shape, idx: Tensor, a: PoolArgs) -> Tensor:
    try:
        return _finish(K.max_pool2d_bwd(dy.contiguous(), tuple(x_shape), idx.contiguous(), a), _is_cl(dy))
    except RuntimeError as e:
        _raise_if_oom(e, "max_pool2d_backward")
        raise


def run_avg_pool2d(x: Tensor, a: PoolArgs, count_include_pad: bool, div: Optional[int]) -> Tensor:
    try:
        return _finish(K.avg_pool2d_fwd(x.contiguous(), a, count_include_pad, div), _is_cl(x))
    except RuntimeError as e:
        _raise_if_oom(e, "avg_pool2d")
        raise


def run_avg_pool2d_bwd(dy: Tensor, x_shape, a: PoolArgs, count_include_pad: bool, div: Optional[int]) -> Tensor:
    try:
        return _finish(K.avg_pool2d_bwd(dy.contiguous(), tuple(x_shape), a, count_include_pad, div), _is_cl(dy))
    except RuntimeError as e:
        _raise_if_oom(e, "avg_pool2d_backward")
        raise


def run_relu(x: Tensor) -> Tensor:
    """max(x, 0), NaN kept; the output has torch.empty_like's layout."""
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


def run_relu_bwd(dy: Tensor, y: Tensor) -> Tensor:
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


def run_relu_inplace(x: Tensor) -> bool:
    """x = max(x, 0) in place; True when the kernel wrote x's memory itself (through a pointer,
    which autograd's version counter does not see), False when x took a copy_."""
    if x.is_contiguous() or torch.empty_like(x).stride() == x.stride():
        K.relu_fwd(x, out=x)
        return True
    x.copy_(K.relu_fwd(x.contiguous()))
    return False


def _elementwise_pair(a: Tensor, b: Optional[Tensor] = None):
    """Operands an elementwise kernel can run over as flat memory: both dense with the same
    strides as `torch.empty_like(a)`, else contiguous copies (and a flag saying so). The output
    is `torch.empty_like(a)` (NaN-filled under CONVKIT_POISON, as every output of ours)."""
    out = torch.empty_like(a)
    if A.poison():
        out.fill_(float("nan"))
    same = out.stride() == a.stride() and (b is None or b.stride() == a.stride())
    if same:
        return a, b, out, False
    return a.contiguous(), None if b is None else b.contiguous(), out, True
