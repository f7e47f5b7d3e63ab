"""Calls into the compiled kernel modules for torch tensors, NumPy arrays and CuPy arrays alike.

Arrays arrive C-contiguous (NCHW) and checked (convkit._params). Outputs and workspaces are
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
import re
import sys
import time
import warnings
from typing import Optional

import numpy as np

from . import _backend, _env
from ._errors import ConvkitError, ConvkitMemoryError, ConvkitValueError
from ._params import (CUDA_INDEX_LIMIT, SIZE_LIMIT, ConvArgs, PoolArgs, _int, check_float_dtype,
                      conv_output_hw, dtype_name)

try:
    import torch
    _Tensor = torch.Tensor
except ImportError:  # NumPy-only use
    torch = None
    _Tensor = None

kernel_calls: collections.Counter = collections.Counter()

_env.check_all()  # every CONVKIT_* variable, once, when convkit is imported

#: the most bytes a convolution's workspace may take (CONVKIT_WORKSPACE_CAP, set_workspace_cap):
#: im2col's column buffer takes the batch in chunks of whole images to stay under it, and a
#: request that cannot fit (one image's columns are larger) is refused with ConvkitMemoryError
WORKSPACE_CAP_BYTES = _env.get("CONVKIT_WORKSPACE_CAP")
#: the most threads set_num_threads takes
MAX_THREADS = 1024
#: the most shapes convkit.benchmark remembers a timed choice for (least recently used dropped)
BENCHMARK_CACHE_SIZE = 1024

_threads_user = 0      # set by convkit.set_num_threads; 0: follow torch.get_num_threads()
_threads_set = {}      # backend module -> thread count last given to it
_algo_cache = collections.OrderedDict()  # convkit.benchmark's timed choices, by shape, LRU order


def _setting(op: str, name: str, v, lo: int, hi: int) -> int:
    v = _int(v, op, name)
    if not lo <= v <= hi:
        raise ConvkitValueError(f"{op}: {name} must be between {lo} and {hi}, got {v}")
    return v


def set_num_threads(n: int) -> None:
    """The threads convkit's CPU kernels (and the emulator's blocks) use: 1 to 1024. Default:
    torch.get_num_threads()."""
    global _threads_user
    _threads_user = _setting("set_num_threads", "n", n, 1, MAX_THREADS)


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
    WORKSPACE_CAP_BYTES = _setting("set_workspace_cap", "the workspace cap in bytes", nbytes, 1, 1 << 62)


def benchmark_cache_size() -> int:
    return BENCHMARK_CACHE_SIZE


def set_benchmark_cache_size(n: int) -> None:
    """How many shapes convkit.benchmark remembers its timed pick for (1 to 2^20; default 1024);
    past it the least recently used pick is dropped (and timed again if its shape comes back)."""
    global BENCHMARK_CACHE_SIZE
    BENCHMARK_CACHE_SIZE = _setting("set_benchmark_cache_size", "the benchmark cache size", n, 1, 1 << 20)
    while len(_algo_cache) > BENCHMARK_CACHE_SIZE:
        _algo_cache.popitem(last=False)


def get_num_threads() -> int:
    if _threads_user:
        return _threads_user
    return torch.get_num_threads() if torch is not None else (os.cpu_count() or 1)


_POISON = _env.get("CONVKIT_POISON")  # read once, when convkit is imported


def _poison() -> bool:
    return _POISON


def _is_torch(a) -> bool:
    return torch is not None and isinstance(a, torch.Tensor)


def _cupy():
    """The CuPy module if the caller has imported it, else None (convkit never imports it)."""
    return sys.modules.get("cupy")


def is_cupy(a) -> bool:
    cp = _cupy()
    return cp is not None and isinstance(a, cp.ndarray)


def _device_type(a) -> str:
    if _is_torch(a):
        return a.device.type
    return "cuda" if is_cupy(a) else "cpu"


def _ptr(a) -> int:
    if a is None:
        return 0
    if _is_torch(a):
        return a.data_ptr()
    return a.data.ptr if is_cupy(a) else a.ctypes.data


def _on_device(a):
    """A context manager making `a`'s GPU current for CuPy (its allocations and current stream)."""
    return a.device


_ALLOC_FAILURE = ("can't allocate memory", "out of memory", "overflow", "Storage size", "invalid argument to empty",
                  "numel", "OutOfMemory", "Maximum allowed dimension")


def _itemsize(like, dtype=None) -> int:
    dt = dtype or like.dtype
    return dt.itemsize if _is_torch(like) else np.dtype(dt).itemsize


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


def _empty(like, shape, dtype=None):
    """An uninitialized array of `like`'s framework on `like`'s device (CuPy: on its current
    stream). An allocation that fails is a ConvkitMemoryError saying how many bytes."""
    try:
        if _is_torch(like):
            return torch.empty(tuple(shape), dtype=dtype or like.dtype, device=like.device)
        if is_cupy(like):
            with _on_device(like):
                return _cupy().empty(tuple(shape), dtype=dtype or like.dtype)
        return np.empty(tuple(shape), dtype=dtype or like.dtype)
    except Exception as e:  # noqa: BLE001 - re-raised when it is not an allocation failure
        err = memory_error(e, f"convkit: an array of shape {tuple(shape)}", math.prod(shape) * _itemsize(like, dtype))
        if err is None:
            raise
        raise err from None


def _fill(a, value) -> None:
    if _is_torch(a):
        a.fill_(value)
    elif is_cupy(a):
        with _on_device(a):
            a.fill(value)
    else:
        a.fill(value)


def _new(like, shape, dtype=None):
    """An uninitialized output of `like`'s framework and device (NaN/-2^62 filled when poisoning)."""
    out = _empty(like, shape, dtype)
    if _poison():
        floating = out.is_floating_point() if _is_torch(out) else out.dtype.kind == "f"
        _fill(out, float("nan") if floating else -(2 ** 62))
    return out


def _zeros(like, shape):
    out = _empty(like, shape)
    _fill(out, 0)
    return out


def _workspace(like, nbytes: int):
    if nbytes == 0:
        return None
    ws = _empty(like, (nbytes,), torch.uint8 if _is_torch(like) else np.uint8)
    if _poison():
        _fill(ws, 255)  # every floating-point read of it is NaN
    return ws


def contiguous(a):
    """A C-contiguous NumPy or CuPy array with a's values (a itself when it already is one), in
    native byte order. An allocation that fails is a ConvkitMemoryError."""
    if a is None:
        return None
    try:
        if is_cupy(a):
            with _on_device(a):
                return _cupy().ascontiguousarray(a)
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


def _launch_args(name: str, a) -> tuple:
    """What the backend's kernels take after their own arguments: (device, stream) for the CUDA
    modules, nothing for _cpu. The stream is the caller's current one, never the legacy default
    stream (unless the caller made that one current)."""
    if not _backend.takes_launch_args(name):
        return ()
    if _device_type(a) != "cuda":
        return (-1, 0)  # the emulator: host memory, one in-order queue
    if _is_torch(a):
        return (a.device.index, torch.cuda.current_stream(a.device).cuda_stream)
    with _on_device(a):
        return (a.device.id, _cupy().cuda.get_current_stream().ptr)


def _synchronize(like) -> None:
    """Waits for the work queued on like's current stream (CUDA arrays only), for timing. Never
    during a CUDA-graph capture (_resolve_algo does not time then)."""
    if _capturing(like):
        raise ConvkitError("convkit: internal error: a synchronization was requested during a CUDA-graph capture")
    if _is_torch(like) and like.device.type == "cuda":
        torch.cuda.current_stream(like.device).synchronize()
    elif is_cupy(like):
        with _on_device(like):
            _cupy().cuda.get_current_stream().synchronize()


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
    dev = a.device.type if type(a) is _Tensor else _device_type(a)
    key = (dev, _backend.forced_backend(), a.dtype)
    hit = _module_cache.get(key)
    if hit is None or _backend._modules.get(hit[0]) is not hit[1]:  # (a test may swap a module)
        name, mod = _backend.module_for(dev, op)
        check_float_dtype(op, arg, a.dtype, _backend.dtypes(name), backend=name)
        hit = _module_cache[key] = (name, mod)
    name, mod = hit
    _sync_threads(name, mod)
    return _Kernels(name, mod, _launch_args(name, a))


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
    contiguous float32/float64 torch CPU tensor, no backend is forced and nothing is poisoned;
    else None (the caller takes the general path through _module). The caller counts its
    kernel call."""
    dt = _DTYPE_NAMES.get(a.dtype)
    if dt is None or _POISON or a.device.type != "cpu" or not a.is_contiguous() or _backend.forced_backend():
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


def _is_pointwise(p, args: ConvArgs) -> bool:
    """A 1x1 kernel without padding: what algo='1x1' takes (any stride, dilation, groups)."""
    return p.R == 1 and p.S == 1 and args.pads == (0, 0, 0, 0)


def _heuristic_algo_cpu(p, args: ConvArgs) -> str:
    """algo='auto' without timing on the 'cpu' backend. A pointwise layer is a GEMM ("1x1").
    Any other layer with 16 or more output channels per group runs "blocked": on a 2-core
    AVX-512 EPYC it matched or beat im2col, direct and Winograd on every GoogLeNet shape class
    tried, forward, grad input and grad weight (batch 8, one thread, thread CPU time, median of
    15 interleaved runs; ratios to torch 2.13's oneDNN: 5x5 layers fwd 0.81-1.10 where im2col
    gave 1.53-2.76 and direct 1.13-3.33; 3x3 layers 0.86-1.28 where Winograd gave 1.03-1.89 and
    im2col 1.26-2.13; the 7x7 stem 1.23 against direct's 1.41). With fewer output channels per
    group its vector lanes would idle (depthwise: 15 of 16), so the older rules decide: direct
    for depthwise and tiny reductions, and for large planes, else im2col."""
    if _is_pointwise(p, args):
        return "1x1"
    cg, pq = p.C // p.groups, p.P * p.Q
    if p.K // p.groups >= 16:
        return "blocked"
    if cg == 1 or cg * p.R * p.S < 8:
        return "direct"
    if p.R * p.S >= 25 and pq >= 196:
        return "direct"
    if pq >= 56 * 56:
        return "direct"
    return "im2col"


def _heuristic_algo_cuda(p, args: ConvArgs) -> str:
    """algo='auto' without timing on the CUDA backends ("cuda", and "cudasim", which runs the same
    kernels), by shape alone: a pointwise layer (1x1 kernel, no padding) is a GEMM straight on
    NCHW, "1x1"; a depthwise layer (C/groups == 1, any channel multiplier) has no reduction over
    channels for a GEMM tile to fill, so "direct"; anything else is "im2col" + the tiled GEMM.
    Deliberately simple and not yet tuned on GPU measurements: convkit.benchmark = True times
    the choice per shape."""
    if _is_pointwise(p, args):
        return "1x1"
    if p.C // p.groups == 1:
        return "direct"
    return "im2col"


def _heuristic_algo(p, args: ConvArgs, backend: str = "cpu") -> str:
    """algo='auto' without timing: the heuristic of `backend`'s kind (CPU or CUDA kernels)."""
    if _backend.is_cuda_backend(backend):
        return _heuristic_algo_cuda(p, args)
    return _heuristic_algo_cpu(p, args)


_algos_of = {}  # backend name -> its module's conv_algos() (the registry's names it builds)


def _conv_algos(backend: str) -> tuple:
    algos = _algos_of.get(backend)
    if algos is None:
        algos = _algos_of[backend] = tuple(_backend.module(backend).conv_algos())
    return algos


def _candidates(p, args: ConvArgs, backend: str = "cpu"):
    """The algorithms `backend`'s module builds that compute p, in the registry's order
    (csrc/common/conv_algo.h: the module's conv_algos() and its one applicability rule)."""
    mod = _backend.module(backend)
    return [a for a in _conv_algos(backend) if not mod.conv_algo_refusal(a, p)]


def _capturing(like) -> bool:
    """Whether like's current stream is capturing a CUDA graph (torch tensors and CuPy arrays on
    the GPU; never for host memory). Nothing may synchronize then."""
    if _is_torch(like):
        if like.device.type != "cuda":
            return False
        with torch.cuda.device(like.device):  # the capture is per stream, the current stream per device
            return torch.cuda.is_current_stream_capturing()
    if is_cupy(like):
        with _on_device(like):
            stream = _cupy().cuda.get_current_stream()
            is_capturing = getattr(stream, "is_capturing", None)
            return bool(is_capturing()) if is_capturing is not None else False
    return False


def _resolve_algo(k: _Kernels, like, x_shape, w_shape, p, args: ConvArgs) -> str:
    """algo='auto': a heuristic by shape (_heuristic_algo, the CPU's or the CUDA backends'); with
    convkit.benchmark = True, the fastest forward, timed once per shape and cached.

    Timing synchronizes the stream, which a CUDA-graph capture forbids: during a capture a shape
    the cache lacks gets the heuristic's pick (not cached, with a warning), so a graph captured
    without a warm-up run still works; run the model once before capturing to capture the timed
    pick."""
    if args.algo != "auto":
        return args.algo
    if not sys.modules["convkit"].benchmark:  # (the package's public switch, read at call time)
        return _heuristic_algo(p, args, k.name)
    dt = dtype_name(like.dtype)
    key = (k.name, dt, tuple(x_shape), tuple(w_shape), args.stride, args.pads, args.dilation, args.groups)
    algo = _algo_cache.get(key)
    if algo is not None:
        _algo_cache.move_to_end(key)
        return algo
    if _capturing(like):
        algo = _heuristic_algo(p, args, k.name)
        warnings.warn(
            f"convkit.benchmark: conv2d with input {tuple(x_shape)}, weight {tuple(w_shape)} ({dt}) was first "
            f"seen during a CUDA-graph capture, where timing (which synchronizes) cannot run; the graph uses "
            f"the heuristic's algo={algo!r}. Run the model once before capturing to capture the timed pick.",
            RuntimeWarning, stacklevel=2)
        return algo
    algo = _algo_cache[key] = _time_algos(k, like, x_shape, w_shape, p, args, dt)
    while len(_algo_cache) > BENCHMARK_CACHE_SIZE:
        _algo_cache.popitem(last=False)
    return algo


def _time_algos(k: _Kernels, like, x_shape, w_shape, p, args: ConvArgs, dt: str) -> str:
    """Times each applicable algorithm's forward on zero-filled arrays (on the caller's stream,
    synchronized around each run); returns the fastest. Not counted in kernel_calls."""
    x, w, y = _zeros(like, x_shape), _zeros(like, w_shape), _zeros(like, (p.N, p.K, p.P, p.Q))
    best, best_t = None, float("inf")
    for algo in _candidates(p, args, k.name):
        nbytes = k.mod.conv2d_workspace_bytes(algo, "fwd", dt, p, WORKSPACE_CAP_BYTES)
        if not _fits(k, algo, "fwd", dt, p, nbytes):
            continue
        ws = _workspace(like, nbytes)
        times = []
        for _ in range(3):
            _synchronize(like)
            t0 = time.perf_counter()
            k.mod.conv2d_fwd(algo, dt, p, _ptr(x), _ptr(w), 0, _ptr(y), _ptr(ws), 0 if ws is None else ws.nbytes,
                             *k.launch_args)
            _synchronize(like)
            times.append(time.perf_counter() - t0)
        if min(times) < best_t:
            best, best_t = algo, min(times)
    return best


def _run_conv(kind: str, a, b_arr, out_shape, x_shape, w_shape, args: ConvArgs, bias=None):
    """One convolution pass: kind 'fwd' (a=x, b=w), 'bwd_input' (a=dy, b=w), 'bwd_weight' (a=dy, b=x)."""
    op = {"fwd": "conv2d", "bwd_input": "conv2d_backward_input", "bwd_weight": "conv2d_backward_weight"}[kind]
    k = _module(a, op, "input" if kind == "fwd" else "grad_output")
    if args.algo != "auto" and args.algo not in _conv_algos(k.name):
        raise ConvkitValueError(f"{op}: algo={args.algo!r} is not built for the {k.name!r} backend; "
                                f"choose one of {', '.join(_conv_algos(k.name))}, auto there")
    if x_shape[0] == 0:
        return _zeros(a, out_shape)  # empty batch: empty output, or a zero weight gradient
    if k.name != "cpu":
        _check_cuda_index_domain(op, k.name, x_shape, args)
    elems = math.prod(out_shape)
    if elems >= SIZE_LIMIT:  # (before ConvParams, whose own int64 check is terser)
        raise ConvkitMemoryError(f"{op}: the output of shape {tuple(out_shape)} has {elems:,} elements "
                                 f"({elems * _itemsize(a):,} bytes): too large to allocate")
    p = _conv_params(k.mod, x_shape, w_shape, args)
    dt = dtype_name(a.dtype)
    algo = _resolve_algo(k, a, x_shape, w_shape, p, args)
    nbytes = k.mod.conv2d_workspace_bytes(algo, kind, dt, p, WORKSPACE_CAP_BYTES)
    if nbytes > WORKSPACE_CAP_BYTES:
        algo, nbytes = _fitting_workspace(k, op, kind, algo, nbytes, dt, p, args)
    out = _new(a, out_shape)
    ws = _workspace(a, nbytes)
    ws_ptr, ws_bytes = _ptr(ws), (0 if ws is None else ws.nbytes)
    if kind == "fwd":
        k("conv2d_fwd", algo, dt, p, _ptr(a), _ptr(b_arr), _ptr(bias), _ptr(out), ws_ptr, ws_bytes)
    elif kind == "bwd_input":
        k("conv2d_bwd_input", algo, dt, p, _ptr(a), _ptr(b_arr), _ptr(out), ws_ptr, ws_bytes)
    else:
        k("conv2d_bwd_weight", algo, dt, p, _ptr(a), _ptr(b_arr), _ptr(out), ws_ptr, ws_bytes)
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


def _min_workspace(k: _Kernels, algo: str, kind: str, dt: str, p) -> int:
    """The smallest workspace `algo` can run `kind` in: one image a chunk where it chunks."""
    return k.mod.conv2d_workspace_bytes(algo, kind, dt, p, 1)


def _fits(k: _Kernels, algo: str, kind: str, dt: str, p, nbytes: int) -> bool:
    """Whether `algo`'s workspace for `kind`, sized `nbytes` by the query under the cap, fits the
    cap: the query chunks im2col's batch to it, so only a smallest form (one image a chunk) still
    over the cap does not (a split-K buffer may take the chunked request a little past it)."""
    return nbytes <= WORKSPACE_CAP_BYTES or _min_workspace(k, algo, kind, dt, p) <= WORKSPACE_CAP_BYTES


def _fitting_workspace(k: _Kernels, op: str, kind: str, algo: str, nbytes: int, dt: str, p, args: ConvArgs):
    """(algo, workspace bytes) under the workspace cap, for `algo` whose query asked `nbytes`: a
    request that does not fit is refused, or, for algo='auto', handed to the next applicable
    algorithm that fits."""
    if _fits(k, algo, kind, dt, p, nbytes):
        return algo, nbytes
    cap = WORKSPACE_CAP_BYTES
    if args.algo == "auto":
        for other in [a for a in ("blocked", "im2col", "direct") if a in _candidates(p, args, k.name) and a != algo]:
            other_bytes = k.mod.conv2d_workspace_bytes(other, kind, dt, p, cap)
            if _fits(k, other, kind, dt, p, other_bytes):
                return other, other_bytes
    need = _min_workspace(k, algo, kind, dt, p)
    raise ConvkitMemoryError(
        f"{op}: algo={algo!r} ({kind}) needs at least {need:,} bytes of workspace for input "
        f"({p.N}, {p.C}, {p.H}, {p.W}) and weight ({p.K}, {p.C // p.groups}, {p.R}, {p.S}), more than the workspace "
        f"cap of {cap:,} bytes; raise the cap (CONVKIT_WORKSPACE_CAP=1G, or convkit.set_workspace_cap('1G')) or "
        f"choose another algo")


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
        return _zeros(dy, (c,))
    params = k.mod.ConvParams(n, c, p_, q_, c, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, c)  # shape carrier: P=H, Q=W
    db = _new(dy, (c,))
    k("conv2d_bwd_bias", dtype_name(dy.dtype), params, _ptr(dy), _ptr(db))
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
    return torch.int64 if _is_torch(like) else np.int64


def max_pool2d_fwd(x, a: PoolArgs, want_indices: bool):
    """y[N, C, P, Q] (and int64 indices into each H*W plane) of a max pool of x[N, C, H, W]."""
    k = _module(x, "max_pool2d")
    if k.name != "cpu":
        _check_cuda_pool("max_pool2d", k, x.shape, a)
    out_shape = tuple(x.shape[:2]) + a.out_hw
    y = _new(x, out_shape)
    idx = _new(x, out_shape, _int64(x)) if want_indices else None
    if x.shape[0] == 0:
        return y, idx
    k("max_pool2d_fwd", dtype_name(x.dtype), _pool_params(k.mod, x.shape, a), _ptr(x), _ptr(y), _ptr(idx))
    return y, idx


def max_pool2d_bwd(dy, input_shape, idx, a: PoolArgs):
    """dx[N, C, H, W]: each dy[N, C, P, Q] element added at its window's argmax (idx from the
    forward); gather form, every dx element written."""
    k = _module(dy, "max_pool2d_backward", "grad_output")
    if k.name != "cpu":
        _check_cuda_pool("max_pool2d_backward", k, input_shape, a)
    dx = _new(dy, input_shape)
    if input_shape[0] == 0:
        return dx
    k("max_pool2d_bwd", dtype_name(dy.dtype), _pool_params(k.mod, input_shape, a), _ptr(dy), _ptr(idx), _ptr(dx))
    return dx


def avg_pool2d_fwd(x, a: PoolArgs, count_include_pad: bool, divisor_override: Optional[int]):
    """y[N, C, P, Q]: the average of each window of x[N, C, H, W], torch's divisor rules."""
    k = _module(x, "avg_pool2d")
    if k.name != "cpu":
        _check_cuda_pool("avg_pool2d", k, x.shape, a)
    y = _new(x, tuple(x.shape[:2]) + a.out_hw)
    if x.shape[0] == 0:
        return y
    k("avg_pool2d_fwd", dtype_name(x.dtype), _pool_params(k.mod, x.shape, a), bool(count_include_pad),
      int(divisor_override or 0), _ptr(x), _ptr(y))
    return y


def avg_pool2d_bwd(dy, input_shape, a: PoolArgs, count_include_pad: bool, divisor_override: Optional[int]):
    """dx[N, C, H, W] from dy[N, C, P, Q]: each window's share of its output's gradient."""
    k = _module(dy, "avg_pool2d_backward", "grad_output")
    if k.name != "cpu":
        _check_cuda_pool("avg_pool2d_backward", k, input_shape, a)
    dx = _new(dy, input_shape)
    if input_shape[0] == 0:
        return dx
    k("avg_pool2d_bwd", dtype_name(dy.dtype), _pool_params(k.mod, input_shape, a), bool(count_include_pad),
      int(divisor_override or 0), _ptr(dy), _ptr(dx))
    return dx


def relu_fwd(x, out=None):
    """max(x, 0) elementwise over x's n elements (any shape, flat memory) into a new array, or
    into `out` (which may be x itself)."""
    k = _module(x, "relu")
    y = _new(x, x.shape) if out is None else out
    n = math.prod(x.shape)
    if n:
        k("relu_fwd", dtype_name(x.dtype), n, _ptr(x), _ptr(y))
    return y


def relu_bwd(dy, y, out=None):
    """dx = 0 where y <= 0, else dy (a NaN y passes dy, as torch); dy, y, out laid out alike."""
    k = _module(dy, "relu_backward", "grad_output")
    dx = _new(dy, dy.shape) if out is None else out
    n = math.prod(dy.shape)
    if n:
        k("relu_bwd", dtype_name(dy.dtype), n, _ptr(dy), _ptr(y), _ptr(dx))
    return dx
