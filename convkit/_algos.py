"""The convolution algorithms: their names, read from the compiled registry
(csrc/common/conv_algo.h through the modules' conv_algo_registry() and conv_algos()), the
argument check that uses them, and algo="auto"'s choice: a heuristic by shape per kind of
backend, or with convkit.benchmark = True the fastest forward timed once per shape (an LRU cache
of benchmark_cache_size() shapes), and the fallback when a workspace does not fit the cap.

The name check lives here, not in convkit._params (which imports nothing of convkit): check_conv
is _params.check_conv plus the registry's name check and applicability rule, and every caller
that checks a convolution's arguments calls this one.
"""
from __future__ import annotations

import collections
import sys
import time
import warnings
from typing import Optional

from . import _arrays as A
from . import _backend
from . import _params
from ._errors import ConvkitMemoryError, ConvkitValueError
from ._params import ConvArgs, dtype_name


def _registry() -> tuple:
    """(name, timed, needs) for every algorithm of the registry, in its order, from the CPU
    module, which every build has (the table is the same in every module); needs is
    (R, S, stride, dilation, no_padding), 0 meaning any."""
    return tuple((str(row[0]), bool(row[1]), tuple(row[2:])) for row in _backend.module("cpu").conv_algo_registry())


_REGISTRY = _registry()
#: every algorithm name conv2d takes: "auto", then the registry's, in its order
CONV_ALGOS = ("auto",) + tuple(name for name, _, _ in _REGISTRY)
#: the algorithms auto and convkit.benchmark may pick (the rest, e.g. 'reference', run only by name)
TIMED = tuple(name for name, timed, _ in _REGISTRY if timed)
_NEEDS = {name: needs for name, _, needs in _REGISTRY}
#: the most shapes convkit.benchmark remembers a timed choice for (least recently used dropped)
BENCHMARK_CACHE_SIZE = 1024
_cache = collections.OrderedDict()  # convkit.benchmark's timed choices, by shape, LRU order


def check_name(op: str, algo) -> str:
    if not isinstance(algo, str) or algo not in CONV_ALGOS:
        raise ConvkitValueError(f"{op}: unknown algo {algo!r}; choose one of {', '.join(CONV_ALGOS)}")
    return algo


def applies(algo: str, args: ConvArgs, r: int, s: int) -> bool:
    """The registry's applicability rule (csrc/common/conv_algo.h's ConvNeeds, which
    conv_algo_refusal applies in C++): whether `algo` computes a convolution of an r x s kernel
    with these arguments. Plain Python over the registry's table, so torch.compile traces it."""
    if algo == "auto":
        return True
    nr, ns, nstride, ndil, no_padding = _NEEDS[algo]
    (sh, sw), (dh, dw) = args.stride, args.dilation
    return ((not nr or r == nr) and (not ns or s == ns) and (not nstride or sh == sw == nstride)
            and (not ndil or dh == dw == ndil) and (not no_padding or args.pads == (0, 0, 0, 0)))


def refusal(algo: str, args: ConvArgs, r: int, s: int) -> str:
    """'' when the rule (applies) lets `algo` compute the convolution, else why not, worded as the
    C++ rule words it."""
    if applies(algo, args, r, s):
        return ""
    nr, ns, nstride, ndil, no_padding = _NEEDS[algo]
    (sh, sw), (dh, dw) = args.stride, args.dilation
    need = []
    if nr or ns:
        need.append(f"a {nr or 'R'}x{ns or 'S'} kernel")
    if nstride:
        need.append(f"stride {nstride}")
    if ndil:
        need.append(f"dilation {ndil}")
    if no_padding:
        need.append("zero padding")
    return (f"algo '{algo}' needs {' and '.join(need)}, got kernel {r}x{s}, stride ({sh}, {sw}), "
            f"dilation ({dh}, {dw}), padding ({', '.join(str(v) for v in args.pads)})")


def check_conv(op: str, input_shape, weight_shape, input_dtype, weight_dtype, bias_shape=None, bias_dtype=None,
               stride=1, padding=0, dilation=1, groups=1, algo="auto") -> ConvArgs:
    """convkit._params.check_conv, then the algorithm's name and the registry's rule."""
    if algo != "auto":  # (the common case first: per-call cost matters for small layers)
        check_name(op, algo)
    args = _params.check_conv(op, input_shape, weight_shape, input_dtype, weight_dtype, bias_shape, bias_dtype,
                              stride, padding, dilation, groups, algo)
    if algo != "auto":
        why = refusal(algo, args, weight_shape[2], weight_shape[3])
        if why:
            raise ConvkitValueError(f"{op}: {why}")
    return args


def is_pointwise(p, args: ConvArgs) -> bool:
    """A 1x1 kernel without padding: what algo='1x1' takes (any stride, dilation, groups)."""
    return applies("1x1", args, p.R, p.S)


def heuristic_cpu(p, args: ConvArgs) -> str:
    """algo='auto' without timing on the 'cpu' backend. A pointwise layer is a GEMM ("1x1").
    Any other layer with 16 or more output channels per group runs "blocked": on a 2-core
    AVX-512 EPYC it matched or beat im2col, direct and Winograd on every GoogLeNet shape class
    tried, forward, grad input and grad weight (batch 8, one thread, thread CPU time, median of
    15 interleaved runs; ratios to torch 2.13's oneDNN: 5x5 layers fwd 0.81-1.10 where im2col
    gave 1.53-2.76 and direct 1.13-3.33; 3x3 layers 0.86-1.28 where Winograd gave 1.03-1.89 and
    im2col 1.26-2.13; the 7x7 stem 1.23 against direct's 1.41). With fewer output channels per
    group its vector lanes would idle (depthwise: 15 of 16), so the older rules decide: direct
    for depthwise and tiny reductions, and for large planes, else im2col."""
    if is_pointwise(p, args):
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


def heuristic_cuda(p, args: ConvArgs, dtype: Optional[str] = None) -> str:
    """algo='auto' without timing on the CUDA backends ("cuda", and "cudasim", which runs the same
    kernels), by shape alone:
    - a pointwise layer (1x1 kernel, no padding) is a GEMM straight on NCHW with 16-byte operand
      loads and no index arithmetic: "1x1";
    - a depthwise layer (C/groups == 1, any channel multiplier) has no reduction over channels for
      a GEMM tile to fill: "direct", whose depthwise kernels keep a plane's window in shared memory;
    - anything else: "implicit_gemm", which computes the same GEMM as "im2col" without writing and
      re-reading its column buffer (R*S times the input: 87 MB for inception 3a's 3x3 at batch 32),
      fits its tile and split-K to the layer, and gives grad input no zero taps at stride 2.
    In float16 and bfloat16 (`dtype`) every layer but depthwise is "implicit_gemm": its multiply-adds
    run on the tensor cores, several times the SIMT kernels' rate, pointwise layers included.
    Read from the kernels' design, not from GPU timings (no GPU has run them yet):
    convkit.benchmark = True times the candidates per shape."""
    depthwise = p.C // p.groups == 1
    if dtype in ("float16", "bfloat16") and not depthwise:
        return "implicit_gemm"
    if is_pointwise(p, args):
        return "1x1"
    if depthwise:
        return "direct"
    return "implicit_gemm"


def heuristic(p, args: ConvArgs, backend: str = "cpu", dtype: Optional[str] = None) -> str:
    """algo='auto' without timing: the heuristic of `backend`'s kind (CPU or CUDA kernels); the
    CUDA one also looks at the dtype (`dtype`'s name: tensor cores for the half types)."""
    if _backend.is_cuda_backend(backend):
        return heuristic_cuda(p, args, dtype)
    return heuristic_cpu(p, args)


_built = {}  # backend name -> its module's conv_algos() (the registry's names it builds)


def built(backend: str) -> tuple:
    """The algorithms `backend`'s module builds, in the registry's order."""
    algos = _built.get(backend)
    if algos is None:
        algos = _built[backend] = tuple(_backend.module(backend).conv_algos())
    return algos


def check_built(op: str, algo: str, backend: str) -> None:
    """Raises when `backend`'s module does not build `algo` (auto: always there)."""
    if algo != "auto" and algo not in built(backend):
        raise ConvkitValueError(f"{op}: algo={algo!r} is not built for the {backend!r} backend; "
                                f"choose one of {', '.join(built(backend))}, auto there")


def candidates(p, args: ConvArgs, backend: str = "cpu"):
    """What auto and convkit.benchmark choose from: the timed algorithms `backend`'s module builds
    that compute p, in the registry's order (csrc/common/conv_algo.h: the module's conv_algos()
    and the one applicability rule)."""
    return [a for a in built(backend) if a in TIMED and applies(a, args, p.R, p.S)]


def resolve(k, like, x_shape, w_shape, p, args: ConvArgs) -> str:
    """algo='auto': a heuristic by shape (heuristic, the CPU's or the CUDA backends'); with
    convkit.benchmark = True, the fastest forward, timed once per shape and cached.

    Timing synchronizes the stream, which a CUDA-graph capture forbids: during a capture a shape
    the cache lacks gets the heuristic's pick (not cached, with a warning), so a graph captured
    without a warm-up run still works; run the model once before capturing to capture the timed
    pick."""
    if args.algo != "auto":
        return args.algo
    dt = dtype_name(like.dtype)
    if not sys.modules["convkit"].benchmark:  # (the package's public switch, read at call time)
        return heuristic(p, args, k.name, dt)
    key = (k.name, dt, tuple(x_shape), tuple(w_shape), args.stride, args.pads, args.dilation, args.groups)
    algo = _cache.get(key)
    if algo is not None:
        _cache.move_to_end(key)
        return algo
    if A.capturing(like):
        algo = heuristic(p, args, k.name, dt)
        warnings.warn(
            f"convkit.benchmark: conv2d with input {tuple(x_shape)}, weight {tuple(w_shape)} ({dt}) was first "
            f"seen during a CUDA-graph capture, where timing (which synchronizes) cannot run; the graph uses "
            f"the heuristic's algo={algo!r}. Run the model once before capturing to capture the timed pick.",
            RuntimeWarning, stacklevel=2)
        return algo
    algo = _cache[key] = time_algos(k, like, x_shape, w_shape, p, args, dt)
    while len(_cache) > BENCHMARK_CACHE_SIZE:
        _cache.popitem(last=False)
    return algo


def time_algos(k, like, x_shape, w_shape, p, args: ConvArgs, dt: str) -> str:
    """Times each applicable algorithm's forward on zero-filled arrays (on the caller's stream,
    synchronized around each run); returns the fastest. Not counted in kernel_calls."""
    x, w, y = A.zeros(like, x_shape), A.zeros(like, w_shape), A.zeros(like, (p.N, p.K, p.P, p.Q))
    best, best_t = None, float("inf")
    for algo in candidates(p, args, k.name):
        nbytes = k.mod.conv2d_workspace_bytes(algo, "fwd", dt, p, A.WORKSPACE_CAP_BYTES)
        if not fits(k, algo, "fwd", dt, p, nbytes):
            continue
        ws = A.workspace(like, nbytes)
        times = []
        for _ in range(3):
            A.synchronize(like)
            t0 = time.perf_counter()
            k.mod.conv2d_fwd(algo, dt, p, A.ptr(x), A.ptr(w), 0, A.ptr(y), A.ptr(ws), 0 if ws is None else ws.nbytes,
                             *k.launch_args)
            A.synchronize(like)
            times.append(time.perf_counter() - t0)
        if min(times) < best_t:
            best, best_t = algo, min(times)
    return best


def min_workspace(k, algo: str, kind: str, dt: str, p) -> int:
    """The smallest workspace `algo` can run `kind` in: one image a chunk where it chunks."""
    return k.mod.conv2d_workspace_bytes(algo, kind, dt, p, 1)


def fits(k, algo: str, kind: str, dt: str, p, nbytes: int) -> bool:
    """Whether `algo`'s workspace for `kind`, sized `nbytes` by the query under the cap, fits the
    cap: the query chunks im2col's batch to it, so only a smallest form (one image a chunk) still
    over the cap does not (a split-K buffer may take the chunked request a little past it)."""
    return nbytes <= A.WORKSPACE_CAP_BYTES or min_workspace(k, algo, kind, dt, p) <= A.WORKSPACE_CAP_BYTES


def fitting_workspace(k, op: str, kind: str, algo: str, nbytes: int, dt: str, p, args: ConvArgs):
    """(algo, workspace bytes) under the workspace cap, for `algo` whose query asked `nbytes`: a
    request that does not fit is refused, or, for algo='auto', handed to the next applicable
    algorithm that fits."""
    if fits(k, algo, kind, dt, p, nbytes):
        return algo, nbytes
    cap = A.WORKSPACE_CAP_BYTES
    if args.algo == "auto":
        usable = candidates(p, args, k.name)
        for other in [a for a in ("blocked", "im2col", "direct") if a in usable and a != algo]:
            other_bytes = k.mod.conv2d_workspace_bytes(other, kind, dt, p, cap)
            if fits(k, other, kind, dt, p, other_bytes):
                return other, other_bytes
    need = min_workspace(k, algo, kind, dt, p)
    raise ConvkitMemoryError(
        f"{op}: algo={algo!r} ({kind}) needs at least {need:,} bytes of workspace for input "
        f"({p.N}, {p.C}, {p.H}, {p.W}) and weight ({p.K}, {p.C // p.groups}, {p.R}, {p.S}), more than the workspace "
        f"cap of {cap:,} bytes; raise the cap (CONVKIT_WORKSPACE_CAP=1G, or convkit.set_workspace_cap('1G')) or "
        f"choose another algo")


def benchmark_cache_size() -> int:
    return BENCHMARK_CACHE_SIZE


def set_benchmark_cache_size(n: int) -> None:
    """How many shapes convkit.benchmark remembers its timed pick for (1 to 2^20; default 1024);
    past it the least recently used pick is dropped (and timed again if its shape comes back)."""
    global BENCHMARK_CACHE_SIZE
    BENCHMARK_CACHE_SIZE = A.setting("set_benchmark_cache_size", "the benchmark cache size", n, 1, 1 << 20)
    while len(_cache) > BENCHMARK_CACHE_SIZE:
        _cache.popitem(last=False)


def choose(k, op: str, kind: str, like, x_shape, w_shape, p, args: ConvArgs, dt: str):
    """(algo, workspace bytes) for one pass: the requested or resolved algorithm and its
    workspace under the cap (fitting_workspace when the query asks more)."""
    algo = resolve(k, like, x_shape, w_shape, p, args)
    nbytes = k.mod.conv2d_workspace_bytes(algo, kind, dt, p, A.WORKSPACE_CAP_BYTES)
    if nbytes > A.WORKSPACE_CAP_BYTES:
        algo, nbytes = fitting_workspace(k, op, kind, algo, nbytes, dt, p, args)
    return algo, nbytes
