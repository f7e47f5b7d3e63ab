"""Arrays of every framework convkit takes (torch tensors, NumPy arrays, CuPy arrays): what
framework and device an array belongs to, its data pointer, allocation of outputs and workspaces
by the array's own framework (torch's allocator on the tensor's device, NumPy, CuPy's pool on the
array's device) poisoned with NaN when CONVKIT_POISON=1 so that an element a kernel forgets to
write cannot pass a test, allocation failures as ConvkitMemoryError, the workspace cap, the
stream a kernel launches on, and synchronization for timing. CuPy is imported by nobody here: an
array is a CuPy array only if the caller imported CuPy.
"""
from __future__ import annotations

import math
import re
import sys
from typing import Optional

import numpy as np

from . import _backend, _env
from ._errors import ConvkitError, ConvkitMemoryError, ConvkitValueError
from ._params import _int

try:
    import torch
except ImportError:  # NumPy-only use
    torch = None

_env.check_all()  # every CONVKIT_* variable, once, when convkit is imported (this module reads two)

#: the most bytes a convolution's workspace may take (CONVKIT_WORKSPACE_CAP, set_workspace_cap):
#: im2col's column buffer takes the batch in chunks of whole images to stay under it, and a
#: request that cannot fit (one image's columns are larger) is refused with ConvkitMemoryError
WORKSPACE_CAP_BYTES = _env.get("CONVKIT_WORKSPACE_CAP")


def setting(op: str, name: str, v, lo: int, hi: int) -> int:
    """An int setting in [lo, hi], or ConvkitValueError naming `op` and `name`."""
    v = _int(v, op, name)
    if not lo <= v <= hi:
        raise ConvkitValueError(f"{op}: {name} must be between {lo} and {hi}, got {v}")
    return v


def workspace_cap() -> int:
    """The workspace cap in bytes (CONVKIT_WORKSPACE_CAP, default 64 MiB)."""
    return WORKSPACE_CAP_BYTES


def set_workspace_cap(nbytes) -> None:
    """Sets the workspace cap: an int of bytes (1 to 2^62) or a size string such as '256M'."""
    global WORKSPACE_CAP_BYTES
    if isinstance(nbytes, str):
        try:
            WORKSPACE_CAP_BYTES = _env.parse_size(nbytes)
        except ValueError:
            raise ConvkitValueError(f"set_workspace_cap: {nbytes!r} is not a size from 1 byte to 2^62 "
                                    f"(e.g. 4096, 512K, 64M, 1G)") from None
        return
    WORKSPACE_CAP_BYTES = setting("set_workspace_cap", "the workspace cap in bytes", nbytes, 1, 1 << 62)


POISON = _env.get("CONVKIT_POISON")  # read once, when convkit is imported


def poison() -> bool:
    return POISON


def is_torch(a) -> bool:
    return torch is not None and isinstance(a, torch.Tensor)


def cupy_module():
    """The CuPy module if the caller has imported it, else None (convkit never imports it)."""
    return sys.modules.get("cupy")


def is_cupy(a) -> bool:
    cp = cupy_module()
    return cp is not None and isinstance(a, cp.ndarray)


def device_type(a) -> str:
    if is_torch(a):
        return a.device.type
    return "cuda" if is_cupy(a) else "cpu"


def ptr(a) -> int:
    if a is None:
        return 0
    if is_torch(a):
        return a.data_ptr()
    return a.data.ptr if is_cupy(a) else a.ctypes.data


def on_device(a):
    """A context manager making `a`'s GPU current for CuPy (its allocations and current stream)."""
    return a.device


_ALLOC_FAILURE = ("can't allocate memory", "out of memory", "overflow", "Storage size", "invalid argument to empty",
                  "numel", "OutOfMemory", "Maximum allowed dimension")


def itemsize(like, dtype=None) -> int:
    dt = dtype or like.dtype
    return dt.itemsize if is_torch(like) else np.dtype(dt).itemsize


def memory_error(e: BaseException, what: str, nbytes: Optional[int] = None):
    """The ConvkitMemoryError for an allocation (or a contiguous copy) that failed with `e`, or
    None when `e` is not an allocation failure (torch's allocator message, CUDA out of memory,
    NumPy's MemoryError, a size past what an allocator can express)."""
    if isinstance(e, ConvkitError):  # ours already: a MemoryError stays one, nothing else becomes one
        return e if isinstance(e, MemoryError) else None
    msg = str(e)
    if nbytes is None:
        m = re.search(r"allocate (\d+) bytes", msg)
        nbytes = int(m.group(1)) if m else None
    if not (isinstance(e, MemoryError) or (torch is not None and isinstance(e, torch.OutOfMemoryError))
            or (isinstance(e, (RuntimeError, ValueError)) and any(k in msg for k in _ALLOC_FAILURE))):
        return None
    size = f"{nbytes:,} bytes" if nbytes is not None else "bytes"
    first = msg.strip().splitlines()[0][:300] if msg.strip() else type(e).__name__
    return ConvkitMemoryError(f"{what}: cannot allocate {size} ({first})")


def empty(like, shape, dtype=None):
    """An uninitialized array of `like`'s framework on `like`'s device (CuPy: on its current
    stream). An allocation that fails is a ConvkitMemoryError saying how many bytes."""
    try:
        if is_torch(like):
            return torch.empty(tuple(shape), dtype=dtype or like.dtype, device=like.device)
        if is_cupy(like):
            with on_device(like):
                return cupy_module().empty(tuple(shape), dtype=dtype or like.dtype)
        return np.empty(tuple(shape), dtype=dtype or like.dtype)
    except Exception as e:  # noqa: BLE001 - re-raised when it is not an allocation failure
        err = memory_error(e, f"convkit: an array of shape {tuple(shape)}", math.prod(shape) * itemsize(like, dtype))
        if err is None:
            raise
        raise err from None


def fill(a, value) -> None:
    if is_torch(a):
        a.fill_(value)
    elif is_cupy(a):
        with on_device(a):
            a.fill(value)
    else:
        a.fill(value)


def new(like, shape, dtype=None):
    """An uninitialized output of `like`'s framework and device (NaN/-2^62 filled when poisoning)."""
    out = empty(like, shape, dtype)
    if poison():
        floating = out.is_floating_point() if is_torch(out) else out.dtype.kind == "f"
        fill(out, float("nan") if floating else -(2 ** 62))
    return out


def zeros(like, shape):
    out = empty(like, shape)
    fill(out, 0)
    return out


def workspace(like, nbytes: int):
    if nbytes == 0:
        return None
    ws = empty(like, (nbytes,), torch.uint8 if is_torch(like) else np.uint8)
    if poison():
        fill(ws, 255)  # every floating-point read of it is NaN
    return ws


def contiguous(a):
    """A C-contiguous NumPy or CuPy array with a's values (a itself when it already is one), in
    native byte order. An allocation that fails is a ConvkitMemoryError."""
    if a is None:
        return None
    try:
        if is_cupy(a):
            with on_device(a):
                return cupy_module().ascontiguousarray(a)
        if not a.dtype.isnative:
            a = a.astype(a.dtype.newbyteorder("="))
        out = np.ascontiguousarray(a)
        return out if out.ndim == a.ndim else out.reshape(a.shape)  # (ascontiguousarray makes 0-d 1-d)
    except Exception as e:  # noqa: BLE001
        err = memory_error(e, f"convkit: a contiguous copy of an array of shape {tuple(a.shape)}",
                           int(np.prod(a.shape, dtype=object)) * a.dtype.itemsize)
        if err is None:
            raise
        raise err from None


def launch_args(name: str, a) -> tuple:
    """What the backend's kernels take after their own arguments: (device, stream) for the CUDA
    modules, nothing for _cpu. The stream is the caller's current one, never the legacy default
    stream (unless the caller made that one current)."""
    if not _backend.takes_launch_args(name):
        return ()
    if device_type(a) != "cuda":
        return (-1, 0)  # the emulator: host memory, one in-order queue
    if is_torch(a):
        return (a.device.index, torch.cuda.current_stream(a.device).cuda_stream)
    with on_device(a):
        return (a.device.id, cupy_module().cuda.get_current_stream().ptr)


def synchronize(like) -> None:
    """Waits for the work queued on like's current stream (CUDA arrays only), for timing. Never
    during a CUDA-graph capture (convkit._algos does not time then)."""
    if capturing(like):
        raise ConvkitError("convkit: internal error: a synchronization was requested during a CUDA-graph capture")
    if is_torch(like) and like.device.type == "cuda":
        torch.cuda.current_stream(like.device).synchronize()
    elif is_cupy(like):
        with on_device(like):
            cupy_module().cuda.get_current_stream().synchronize()


def capturing(like) -> bool:
    """Whether like's current stream is capturing a CUDA graph (torch tensors and CuPy arrays on
    the GPU; never for host memory). Nothing may synchronize then."""
    if is_torch(like):
        if like.device.type != "cuda":
            return False
        with torch.cuda.device(like.device):  # the capture is per stream, the current stream per device
            return torch.cuda.is_current_stream_capturing()
    if is_cupy(like):
        with on_device(like):
            stream = cupy_module().cuda.get_current_stream()
            is_capturing = getattr(stream, "is_capturing", None)
            return bool(is_capturing()) if is_capturing is not None else False
    return False
