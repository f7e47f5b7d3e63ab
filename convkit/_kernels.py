"""Calls into the compiled kernel modules for torch tensors, NumPy arrays and CuPy arrays alike.

Arrays arrive C-A.contiguous (NCHW) and checked (convkit._params). Outputs and workspaces are
allocated here by the array's own framework (torch's allocator on the tensor's device, NumPy,
CuPy's pool on the array's device), poisoned with NaN when CONVKIT_POISON=1 so that an element a
kernel forgets to write cannot pass a test. Every kernel call is counted in `kernel_calls`, so
tests can tell that a gradient nobody needs ran no kernel.

The CUDA modules (_cuda, _cudasim) take two launch arguments after each kernel's own, the device
index and the stream: for torch tensors the tensor's device and torch's current stream on it, for
CuPy arrays the array's device and CuPy's current stream, for the emulator (-1, 0). `_module`
resolves them once per op, so every call site stays `k("kernel_name", *its own args)`.
CuPy is imported by nobody here: an array is a CuPy array only if the caller imported CuPy.
"""
from __future__ import annotations

import collections
import math
import os
from typing import Optional

import numpy as np

from . import _algos, _backend
from . import _arrays as A
from ._errors import ConvkitMemoryError, ConvkitValueError
from ._params import (CUDA_INDEX_LIMIT, SIZE_LIMIT, ConvArgs, PoolArgs, check_float_dtype,
                      conv_output_hw, dtype_name)

try:
    import torch
    _Tensor = torch.Tensor
except ImportError:  # NumPy-only use
    torch = None
    _Tensor = None

kernel_calls: collections.Counter = collections.Counter()

#: the most threads set_num_threads takes
MAX_THREADS = 1024

_threads_user = 0      # set by convkit.set_num_threads; 0: follow torch.get_num_threads()
_threads_set = {}      # backend module -> thread count last given to it


def set_num_threads(n: int) -> None:
    """The threads convkit's CPU kernels (and the emulator's blocks) use: 1 to 1024. Default:
    torch.get_num_threads()."""
    global _threads_user
    _threads_user = A.setting("set_num_threads", "n", n, 1, MAX_THREADS)


def get_num_threads() -> int:
    if _threads_user:
        return _threads_user
    return torch.get_num_threads() if torch is not None else (os.cpu_count() or 1)


class _Kernels:
    """A backend's compiled module bound to one op's arrays: `k("relu_fwd", dt, n, x, y)` counts
    the call and runs the kernel with the launch arguments the module takes appended."""
    __slots__ = ("name", "mod", "launch_args")

    def __init__(self, name: str, mod, launch_args: tuple):
        self.name, self.mod, self.launch_args = name, mod, launch_args

    def __call__(self, kernel: str, *args):
        kernel_calls[kernel] += 1
        return getattr(self.mod, kernel)(*args, *self.launch_args)


_module_cache = {}     # (device type, forced backend, dtype) -> (backend name, module), once checked


def _module(a, op: str, arg: str = "input") -> _Kernels:
    """The kernels of the backend that runs `op` on `a`, after checking that this backend takes
    a's dtype (float16 / bfloat16 only where the module has half types). A combination that
    passed the checks once is remembered (per-call cost matters for small layers); one that
    fails is checked, and raises, every time."""
    dev = a.device.type if type(a) is _Tensor else A.device_type(a)
    key = (dev, _backend.forced_backend(), a.dtype)
    hit = _module_cache.get(key)
    if hit is None or _backend._modules.get(hit[0]) is not hit[1]:  # (a test may swap a module)
        name, mod = _backend.module_for(dev, op)
        check_float_dtype(op, arg, a.dtype, _backend.dtypes(name), backend=name)
        hit = _module_cache[key] = (name, mod)
    name, mod = hit
    _sync_threads(name, mod)
    return _Kernels(name, mod, A.launch_args(name, a))


def _sync_threads(name: str, mod) -> None:
    """Gives backend `name`'s module the current thread count when it changed since last time."""
    n = get_num_threads()
    if _threads_set.get(name) != n and hasattr(mod, "set_num_threads"):
        mod.set_num_threads(n)
        _threads_set[name] = n


_DTYPE_NAMES = {}      # torch / NumPy dtype -> "float32" | "float64" (the fast path's dtypes)
if torch is not None:
    _DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64"}


def fast_cpu(a):
    """For an elementwise kernel's hottest path: (the _cpu module, dtype name) when `a` is a
    A.contiguous float32/float64 torch CPU tensor, no backend is forced and nothing is poisoned;
    else None (the caller takes the general path through _module). The caller counts its
    kernel call."""
    dt = _DTYPE_NAMES.get(a.dtype)
    if dt is None or A.POISON or a.device.type != "cpu" or not a.is_contiguous() or _backend.forced_backend():
        return None
    mod = _backend._modules.get("cpu")
    if mod is None:
        return None
    _sync_threads("cpu", mod)
    return mod, dt


# ---- convolution --------------------------------------------------------------------------

def _conv_params(mod, x_shape, w_shape, args: ConvArgs):
    n, c, h, w = x_shape
    k, _, r, s = w_shape
    return mod.ConvParams(n, c, h, w, k, r, s, args.stride[0], args.stride[1], *args.pads,
                          args.dilation[0], args.dilation[1], args.groups)


def _run_conv(kind: str, a, b_arr, out_shape, x_shape, w_shape, args: ConvArgs, bias=None):
    """One convolution pass: kind 'fwd' (a=x, b=w), 'bwd_input' (a=dy, b=w), 'bwd_weight' (a=dy, b=x)."""
    op = {"fwd": "conv2d", "bwd_input": "conv2d_backward_input", "bwd_weight": "conv2d_backward_weight"}[kind]
    k = _module(a, op, "input" if kind == "fwd" else "grad_output")
    if args.algo != "auto":
        _algos.check_built(op, args.algo, k.name)
    if x_shape[0] == 0:
        return A.zeros(a, out_shape)  # empty batch: empty output, or a zero weight gradient
    if k.name != "cpu":
        _check_cuda_index_domain(op, k.name, x_shape, args)
    elems = math.prod(out_shape)
    if elems >= SIZE_LIMIT:  # (before ConvParams, whose own int64 check is terser)
        raise ConvkitMemoryError(f"{op}: the output of shape {tuple(out_shape)} has {elems:,} elements "
                                 f"({elems * A.itemsize(a):,} bytes): too large to allocate")
    p = _conv_params(k.mod, x_shape, w_shape, args)
    dt = dtype_name(a.dtype)
    algo, nbytes = _algos.choose(k, op, kind, a, x_shape, w_shape, p, args, dt)
    out = A.new(a, out_shape)
    ws = A.workspace(a, nbytes)
    ws_ptr, ws_bytes = A.ptr(ws), (0 if ws is None else ws.nbytes)
    if kind == "fwd":
        k("conv2d_fwd", algo, dt, p, A.ptr(a), A.ptr(b_arr), A.ptr(bias), A.ptr(out), ws_ptr, ws_bytes)
    elif kind == "bwd_input":
        k("conv2d_bwd_input", algo, dt, p, A.ptr(a), A.ptr(b_arr), A.ptr(out), ws_ptr, ws_bytes)
    else:
        k("conv2d_bwd_weight", algo, dt, p, A.ptr(a), A.ptr(b_arr), A.ptr(out), ws_ptr, ws_bytes)
    return out


def _check_cuda_index_domain(op: str, backend: str, x_shape, args: ConvArgs) -> None:
    """The CUDA kernels index a plane in 32 bits: the padded input (which bounds every window
    offset, dilated tap and, once the output has more than one row, the stride) must stay below
    2^31 on each side. (A stride past the padded input leaves one output row, and the kernels
    are handed the padded extent instead.)"""
    _, _, h, w = x_shape
    pt, pb, pl, pr = args.pads
    hp, wp = h + pt + pb, w + pl + pr
    if max(hp, wp) > CUDA_INDEX_LIMIT:
        raise ConvkitValueError(
            f"{op}: the {backend!r} backend indexes a plane in 32 bits, and the padded input ({hp}, {wp}) "
            f"(input ({h}, {w}), padding {args.pads}) is 2^31 or more on a side; reduce padding or run on the "
            f"'cpu' backend")


def conv2d_fwd(x, w, bias, args: ConvArgs):
    """y[N, K, P, Q] = conv2d(x[N, C, H, W], w[K, C/g, R, S]) + bias[K]."""
    p_, q_ = conv_output_hw(x.shape[2], x.shape[3], w.shape[2], w.shape[3], args)
    return _run_conv("fwd", x, w, (x.shape[0], w.shape[0], p_, q_), tuple(x.shape), tuple(w.shape), args, bias)


def conv2d_bwd_input(dy, w, input_shape, args: ConvArgs):
    """dx[N, C, H, W] from dy[N, K, P, Q] and w[K, C/g, R, S]."""
    return _run_conv("bwd_input", dy, w, input_shape, tuple(input_shape), tuple(w.shape), args)


def conv2d_bwd_weight(dy, x, weight_shape, args: ConvArgs):
    """dw[K, C/g, R, S] from dy[N, K, P, Q] and x[N, C, H, W]."""
    return _run_conv("bwd_weight", dy, x, weight_shape, tuple(x.shape), tuple(weight_shape), args)


def conv2d_bwd_bias(dy):
    """db[K] = sum of dy[N, K, P, Q] over N, P, Q."""
    k = _module(dy, "conv2d_backward_bias", "grad_output")
    n, c, p_, q_ = dy.shape
    if n == 0 or p_ == 0 or q_ == 0:
        return A.zeros(dy, (c,))
    params = k.mod.ConvParams(n, c, p_, q_, c, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, c)  # shape carrier: P=H, Q=W
    dt = dtype_name(dy.dtype)
    db = A.new(dy, (c,))
    ws = A.workspace(dy, k.mod.conv2d_bwd_bias_workspace_bytes(dt, params))  # (the per-chunk sums on CUDA)
    k("conv2d_bwd_bias", dt, params, A.ptr(dy), A.ptr(db), A.ptr(ws), 0 if ws is None else ws.nbytes)
    return db


# ---- pooling and ReLU ---------------------------------------------------------------------

def _pool_params(mod, x_shape, a: PoolArgs):
    n, c, h, w = x_shape
    return mod.PoolParams(n, c, h, w, a.kernel[0], a.kernel[1], a.stride[0], a.stride[1],
                          a.padding[0], a.padding[1], a.dilation[0], a.dilation[1], a.ceil_mode)


def _check_cuda_pool(op: str, k: _Kernels, x_shape, a: PoolArgs) -> None:
    """The CUDA pooling kernels index a plane in 32 bits: the bound pool_geom.cuh checks, on the
    stride the kernels get (with one window along an axis, at most the padded input: see
    make_pool_params), raised here as a ConvkitValueError naming the arguments."""
    _, _, h, w = x_shape
    biggest = max(h * w, a.out_hw[0] * a.out_hw[1])
    for size, kk, st, pad, dil, out in zip((h, w), a.kernel, a.stride, a.padding, a.dilation, a.out_hw):
        span = (kk - 1) * dil + 1
        st = st if out > 1 else min(st, max(size + 2 * pad, span))  # (make_pool_params' cap)
        biggest = max(biggest, size + 2 * pad + span + st, (out + 1) * st + span)
    if biggest > CUDA_INDEX_LIMIT:
        raise ConvkitValueError(
            f"{op}: the {k.name!r} backend indexes a plane in 32 bits, and kernel_size={a.kernel}, "
            f"stride={a.stride}, padding={a.padding}, dilation={a.dilation} on input ({h}, {w}) reach 2^31; "
            f"run on the 'cpu' backend")


def _int64(like):
    return torch.int64 if A.is_torch(like) else np.int64


def max_pool2d_fwd(x, a: PoolArgs, want_indices: bool):
    """y[N, C, P, Q] (and int64 indices into each H*W plane) of a max pool of x[N, C, H, W]."""
    k = _module(x, "max_pool2d")
    if k.name != "cpu":
        _check_cuda_pool("max_pool2d", k, x.shape, a)
    out_shape = tuple(x.shape[:2]) + a.out_hw
    y = A.new(x, out_shape)
    idx = A.new(x, out_shape, _int64(x)) if want_indices else None
    if x.shape[0] == 0:
        return y, idx
    k("max_pool2d_fwd", dtype_name(x.dtype), _pool_params(k.mod, x.shape, a), A.ptr(x), A.ptr(y), A.ptr(idx))
    return y, idx


def max_pool2d_bwd(dy, input_shape, idx, a: PoolArgs):
    """dx[N, C, H, W]: each dy[N, C, P, Q] element added at its window's argmax (idx from the
    forward); gather form, every dx element written."""
    k = _module(dy, "max_pool2d_backward", "grad_output")
    if k.name != "cpu":
        _check_cuda_pool("max_pool2d_backward", k, input_shape, a)
    dx = A.new(dy, input_shape)
    if input_shape[0] == 0:
        return dx
    k("max_pool2d_bwd", dtype_name(dy.dtype), _pool_params(k.mod, input_shape, a), A.ptr(dy), A.ptr(idx), A.ptr(dx))
    return dx


def avg_pool2d_fwd(x, a: PoolArgs, count_include_pad: bool, divisor_override: Optional[int]):
    """y[N, C, P, Q]: the average of each window of x[N, C, H, W], torch's divisor rules."""
    k = _module(x, "avg_pool2d")
    if k.name != "cpu":
        _check_cuda_pool("avg_pool2d", k, x.shape, a)
    y = A.new(x, tuple(x.shape[:2]) + a.out_hw)
    if x.shape[0] == 0:
        return y
    k("avg_pool2d_fwd", dtype_name(x.dtype), _pool_params(k.mod, x.shape, a), bool(count_include_pad),
      int(divisor_override or 0), A.ptr(x), A.ptr(y))
    return y


def avg_pool2d_bwd(dy, input_shape, a: PoolArgs, count_include_pad: bool, divisor_override: Optional[int]):
    """dx[N, C, H, W] from dy[N, C, P, Q]: each window's share of its output's gradient."""
    k = _module(dy, "avg_pool2d_backward", "grad_output")
    if k.name != "cpu":
        _check_cuda_pool("avg_pool2d_backward", k, input_shape, a)
    dx = A.new(dy, input_shape)
    if input_shape[0] == 0:
        return dx
    k("avg_pool2d_bwd", dtype_name(dy.dtype), _pool_params(k.mod, input_shape, a), bool(count_include_pad),
      int(divisor_override or 0), A.ptr(dy), A.ptr(dx))
    return dx


def relu_fwd(x, out=None):
    """max(x, 0) elementwise over x's n elements (any shape, flat memory) into a new array, or
    into `out` (which may be x itself)."""
    k = _module(x, "relu")
    y = A.new(x, x.shape) if out is None else out
    n = math.prod(x.shape)
    if n:
        k("relu_fwd", dtype_name(x.dtype), n, A.ptr(x), A.ptr(y))
    return y


def relu_bwd(dy, y, out=None):
    """dx = 0 where y <= 0, else dy (a NaN y passes dy, as torch); dy, y, out laid out alike."""
    k = _module(dy, "relu_backward", "grad_output")
    dx = A.new(dy, dy.shape) if out is None else out
    n = math.prod(dy.shape)
    if n:
        k("relu_bwd", dtype_name(dy.dtype), n, A.ptr(dy), A.ptr(y), A.ptr(dx))
    return dx
