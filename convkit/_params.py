"""Argument checking and normalization, shared by the torch and NumPy paths.

Every public op resolves its arguments here before any kernel runs: ints and pairs become tuples,
every padding form becomes explicit (top, bottom, left, right) pads, and bad input raises a
ConvkitValueError / ConvkitTypeError (both RuntimeError) naming the argument and its value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from ._errors import ConvkitTypeError, ConvkitValueError

try:
    import torch
    _compiling = torch.compiler.is_compiling
except ImportError:  # NumPy-only use
    torch = None

    def _compiling() -> bool:
        return False

FLOAT_DTYPES = ("float32", "float64")
HALF_DTYPES = ("float16", "bfloat16")
#: the dtypes some backend's kernels take (convolutions, pooling and ReLU alike); each backend
#: takes a subset of them (convkit._backend.dtypes: float16 and bfloat16 only where the module
#: has_half). The argument checks here accept any of them; the backend that runs the op checks
#: its own list (convkit._kernels._module), before any kernel runs or any output is allocated.
KERNEL_DTYPES = FLOAT_DTYPES + HALF_DTYPES
POOL_DTYPES = KERNEL_DTYPES  # (the older name)


def dtype_name(dtype) -> str:
    """'float32' for torch.float32, numpy.float32, np.dtype('float32')."""
    s = str(dtype)
    return s[len("torch."):] if s.startswith("torch.") else s


#: the largest int64: every integer argument must fit the kernels' 64-bit parameters
INT64_MAX = 2 ** 63 - 1
#: every extent the kernels derive (a padded input side, a dilated kernel, a pooling window's
#: area) must stay below this, so that a sum or difference of two of them cannot overflow int64
SIZE_LIMIT = 2 ** 62
#: the CUDA kernels' 32-bit index domain: a padded input side on the 'cuda' and 'cudasim'
#: backends must stay below it (index arithmetic in int / uint32 with fast division)
CUDA_INDEX_LIMIT = 2 ** 31 - 1


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def parse_flag(text: str) -> bool:
    """True / False from 1/0, true/false, yes/no, on/off (any case; empty: False); ValueError else
    (the CONVKIT_* flags and the CUDA settings' sync switch)."""
    t = text.strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise ValueError("not a flag")


def _int(v, op: str, name: str) -> int:
    if type(v) is int and -9223372036854775808 <= v <= 9223372036854775807:  # the common case, first
        return v
    if isinstance(v, bool) or not hasattr(v, "__index__"):
        raise ConvkitTypeError(f"{op}: {name} must be an int, got {v!r}")
    v = int(v)
    if not -INT64_MAX - 1 <= v <= INT64_MAX:
        raise ConvkitValueError(f"{op}: {name}={v} does not fit in 64 bits (|{name}| must be below 2^63)")
    return v


def static(v) -> bool:
    """Whether a size is a concrete int, not a dimension that torch.compile / torch.export trace
    as dynamic (a torch.SymInt; under torch.compile's bytecode tracer it even looks like an int,
    so torch is asked). The checks below skip what needs the value of a dynamic size: comparing
    it would guard on it (specializing the dimension, or failing an export that declared it
    dynamic). Nothing goes unchecked: the custom op checks the concrete sizes every time the
    compiled graph or exported program runs."""
    if torch is None:
        return True
    if isinstance(v, torch.SymInt) or (type(v) is int and _compiling()):
        return torch.fx.experimental.symbolic_shapes.has_static_value(v)
    return True


def _dynamic(v) -> bool:
    """Whether v is a size torch.compile / torch.export trace as dynamic (see static())."""
    return not (type(v) is int and not _compiling()) and not static(v)


def check_shape(op: str, name: str, shape) -> Tuple[int, ...]:
    """A shape argument (input_shape, weight_shape) as ints, each in [0, 2^62]. A dimension traced
    as dynamic stays symbolic, unchecked here (the op checks it when it runs; see static())."""
    if not hasattr(shape, "__len__"):
        raise ConvkitTypeError(f"{op}: {name} must be a sequence of ints, got {shape!r}")
    dims = tuple(d if _dynamic(d) else _int(d, op, name) for d in shape)
    for d in dims:
        if not _dynamic(d) and not 0 <= d <= SIZE_LIMIT:
            raise ConvkitValueError(f"{op}: {name} {dims} has a dimension outside [0, 2^62]")
    return dims


def int_pair(v, op: str, name: str) -> Tuple[int, int]:
    """(v, v) for an int, (a, b) for a pair; anything else raises."""
    if isinstance(v, (list, tuple)):
        if len(v) == 1:
            v = (v[0], v[0])
        if len(v) != 2:
            raise ConvkitValueError(f"{op}: {name} must be an int or a pair of ints, got {tuple(v)!r}")
        return (_int(v[0], op, name), _int(v[1], op, name))
    x = _int(v, op, name)
    return (x, x)


def positive_pair(v, op: str, name: str) -> Tuple[int, int]:
    """int_pair(v) whose entries must be >= 1 (kernel sizes, strides, dilations)."""
    pair = int_pair(v, op, name)
    if min(pair) < 1:
        raise ConvkitValueError(f"{op}: {name} must be >= 1, got {pair}")
    return pair


@dataclass(frozen=True)
class ConvArgs:
    """A checked convolution: stride (2), pads (top, bottom, left, right), dilation (2), groups."""
    stride: Tuple[int, int]
    pads: Tuple[int, int, int, int]
    dilation: Tuple[int, int]
    groups: int
    algo: str


def check_float_dtype(op: str, name: str, dtype, allowed: Sequence[str] = FLOAT_DTYPES,
                      backend: Optional[str] = None, where: str = "here") -> str:
    """dtype's name if it is one of `allowed`, else a ConvkitTypeError naming the dtype (and the
    backend, when `allowed` is that backend's limit)."""
    d = dtype_name(dtype)
    if d in allowed:
        return d
    if backend is None:
        raise ConvkitTypeError(f"{op}: {name} has dtype {d}; convkit supports {', '.join(allowed)} {where}")
    hint = " (float16 and bfloat16 run on the CUDA backends, 'cuda' and 'cudasim')" if d in HALF_DTYPES else ""
    raise ConvkitTypeError(f"{op}: {name} has dtype {d}; the {backend!r} backend supports "
                           f"{', '.join(allowed)}{hint}")


def check_rank(op: str, name: str, shape: Sequence[int], ranks=(3, 4)) -> None:
    if len(shape) not in ranks:
        want = " or ".join(f"{r} ({'N, ' if r == 4 else ''}C, H, W)" for r in ranks)
        raise ConvkitValueError(f"{op}: expected {name} of rank {want}, got rank {len(shape)} (shape {tuple(shape)})")


def conv_padding(padding, kernel: Tuple[int, int], dilation: Tuple[int, int],
                 stride: Tuple[int, int], op: str) -> Tuple[int, int, int, int]:
    """Four explicit pads from an int, a pair, 'valid' or 'same' (torch's rule: an even kernel's
    extra pad goes bottom/right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ConvkitValueError(f"{op}: padding='same' is not supported for strided convolutions (stride={stride})")
            pads = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            return tuple(pads)
        raise ConvkitValueError(f"{op}: padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    if isinstance(padding, (list, tuple)) and len(padding) == 4:
        pads = tuple(_int(p, op, "padding") for p in padding)
    else:
        ph, pw = int_pair(padding, op, "padding")
        pads = (ph, ph, pw, pw)
    if min(pads) < 0:
        raise ConvkitValueError(f"{op}: padding must be >= 0, got {padding!r}")
    return pads


#: where the dtype limit of check_conv holds, for check_float_dtype messages
CONV_WHERE = "(float16 and bfloat16 on the CUDA backends only: 'cuda', 'cudasim')"


def check_conv(op: str, input_shape, weight_shape, input_dtype, weight_dtype, bias_shape=None,
               bias_dtype=None, stride=1, padding=0, dilation=1, groups=1, algo="auto") -> ConvArgs:
    """Checks a 4-D convolution's arguments (input [N, C, H, W], weight [K, C/groups, R, S]).
    The dtype only has to be one some backend takes; the backend that runs the op checks its own
    list (convkit._kernels._module: half types only where the module has_half)."""
    input_shape, weight_shape = tuple(input_shape), tuple(weight_shape)
    check_rank(op, "input", input_shape, (4,))
    if len(weight_shape) != 4:
        raise ConvkitValueError(f"{op}: expected weight of rank 4 (K, C/groups, R, S), got shape {weight_shape}")
    xd = check_float_dtype(op, "input", input_dtype, KERNEL_DTYPES, where=CONV_WHERE)
    wd = check_float_dtype(op, "weight", weight_dtype, KERNEL_DTYPES, where=CONV_WHERE)
    if xd != wd:
        raise ConvkitTypeError(f"{op}: input ({xd}) and weight ({wd}) must have the same dtype")
    if not isinstance(algo, str):  # (the name and the algorithm's rule: convkit._algos.check_conv)
        raise ConvkitValueError(f"{op}: unknown algo {algo!r}")
    groups = _int(groups, op, "groups")
    stride = positive_pair(stride, op, "stride")
    dilation = positive_pair(dilation, op, "dilation")
    if groups < 1:
        raise ConvkitValueError(f"{op}: groups must be >= 1, got {groups}")
    n, c, h, w = input_shape
    k, cg, r, s = weight_shape
    if min(k, cg, r, s) < 1:
        raise ConvkitValueError(f"{op}: weight has an empty dimension, shape {weight_shape}")
    if c % groups:
        raise ConvkitValueError(f"{op}: groups={groups} does not divide the {c} input channels")
    if k % groups:
        raise ConvkitValueError(f"{op}: groups={groups} does not divide the {k} output channels (weight.shape[0])")
    if cg * groups != c:
        raise ConvkitValueError(
            f"{op}: input has {c} channels but weight {weight_shape} with groups={groups} expects "
            f"{cg * groups} (weight.shape[1] * groups)")
    if type(h) is int and type(w) is int and not _compiling():  # (the common case, eager, first)
        ch = cw = True
    else:  # an H or W traced as dynamic is checked when the op runs (see static())
        ch, cw = static(h), static(w)
    if (ch and h < 1) or (cw and w < 1):
        raise ConvkitValueError(f"{op}: input has an empty spatial dimension, shape {input_shape}")
    pads = conv_padding(padding, (r, s), dilation, stride, op)
    hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
    if (ch and hp > SIZE_LIMIT) or (cw and wp > SIZE_LIMIT):
        raise ConvkitValueError(
            f"{op}: the padded input ({hp}, {wp}) is larger than 2^62 (input ({h}, {w}), padding {pads}); "
            f"reduce padding")
    eh, ew = dilation[0] * (r - 1) + 1, dilation[1] * (s - 1) + 1
    if (ch and eh > hp) or (cw and ew > wp):
        raise ConvkitValueError(
            f"{op}: kernel size ({r}, {s}) with dilation {dilation} spans ({eh}, {ew}), larger than the "
            f"padded input ({hp}, {wp})")
    if bias_shape is not None:
        if tuple(bias_shape) != (k,):
            raise ConvkitValueError(f"{op}: bias must have shape ({k},) for {k} output channels, got {tuple(bias_shape)}")
        bd = check_float_dtype(op, "bias", bias_dtype, KERNEL_DTYPES, where=CONV_WHERE)
        if bd != xd:
            raise ConvkitTypeError(f"{op}: bias ({bd}) must have the input's dtype ({xd})")
    return ConvArgs(stride, pads, dilation, groups, algo)


def conv_output_hw(h: int, w: int, r: int, s: int, args: ConvArgs) -> Tuple[int, int]:
    pt, pb, pl, pr = args.pads
    (sh, sw), (dh, dw) = args.stride, args.dilation
    return ((h + pt + pb - dh * (r - 1) - 1) // sh + 1, (w + pl + pr - dw * (s - 1) - 1) // sw + 1)


@dataclass(frozen=True)
class PoolArgs:
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    dilation: Tuple[int, int]
    ceil_mode: bool
    out_hw: Tuple[int, int]


def pool_output_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """torch's pooling output size: with ceil_mode a last window starting in the right padding is
    dropped. `size` may be a torch.SymInt (a dynamic dimension being traced): the result is then
    a symbolic expression, computed without a branch on `size` (which would guard on it)."""
    return _pool_out(size, k, s, p, d, ceil_mode, None)


def _pool_out(size, k: int, s: int, p: int, d: int, ceil_mode: bool, known: Optional[bool]):
    """pool_output_size; `known`: whether `size` is static (None: find out, if it matters)."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode:
        if known is None:
            known = (type(size) is int and not _compiling()) or static(size)
        if known:
            if (out - 1) * s >= size + p:
                out -= 1
        else:
            # The windows kept are those that start inside the input or its left padding,
            # (out - 1) * s < size + p, i.e. out <= (size + p - 1) // s + 1; the ceil exceeds that
            # by one window at most (a padding of at most half the kernel, as check_pool requires,
            # keeps span <= size), so this min is the branch above, without a guard on `size`.
            out = torch.sym_min(out, (size + p - 1) // s + 1)
    return out


def check_pool(op: str, input_shape, dtype, kernel_size, stride=None, padding=0, dilation=1,
               ceil_mode=False) -> PoolArgs:
    """Checks a pooling's arguments on a 4-D input [N, C, H, W]. The dtype only has to be one some
    backend takes; the backend that runs the op checks its own list (convkit._kernels)."""
    input_shape = tuple(input_shape)
    check_rank(op, "input", input_shape, (4,))
    check_float_dtype(op, "input", dtype, KERNEL_DTYPES)
    kernel = positive_pair(kernel_size, op, "kernel_size")
    stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) \
        else positive_pair(stride, op, "stride")
    padding = int_pair(padding, op, "padding")
    dilation = positive_pair(dilation, op, "dilation")
    if min(padding) < 0 or padding[0] * 2 > kernel[0] or padding[1] * 2 > kernel[1]:
        raise ConvkitValueError(
            f"{op}: padding must be between 0 and half the kernel size, got padding={padding} for kernel_size={kernel}")
    n, c, h, w = input_shape
    if type(c) is int and type(h) is int and type(w) is int and not _compiling():  # (the common case first)
        cc = ch = cw = True
    else:  # a C, H or W traced as dynamic is checked when the op runs (see static())
        cc, ch, cw = static(c), static(h), static(w)
    if (cc and c < 1) or (ch and h < 1) or (cw and w < 1):
        raise ConvkitValueError(f"{op}: input has an empty non-batch dimension, shape {input_shape}")
    hp, wp = h + 2 * padding[0], w + 2 * padding[1]
    spans = (dilation[0] * (kernel[0] - 1) + 1, dilation[1] * (kernel[1] - 1) + 1)
    if max(spans) > SIZE_LIMIT:
        raise ConvkitValueError(f"{op}: kernel_size={kernel} with dilation={dilation} spans {spans}, 2^62 or more")
    if ch and cw and hp * wp > SIZE_LIMIT:  # (an average pool's divisor is a window's area, clipped to the padded input)
        raise ConvkitValueError(
            f"{op}: kernel_size={kernel} with padding={padding} on input ({h}, {w}) spans a padded area of "
            f"{hp} x {wp}, larger than 2^62")
    ceil_mode = bool(ceil_mode)
    out = (_pool_out(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode, ch),
           _pool_out(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode, cw))
    if (ch and out[0] < 1) or (cw and out[1] < 1):
        raise ConvkitValueError(
            f"{op}: output would be empty: input ({h}, {w}), kernel_size={kernel}, stride={stride}, "
            f"padding={padding}, dilation={dilation} give output size {out}")
    return PoolArgs(kernel, stride, padding, dilation, ceil_mode, out)


def check_divisor(op: str, divisor_override: Optional[int]) -> Optional[int]:
    if divisor_override is None:
        return None
    d = _int(divisor_override, op, "divisor_override")
    if d == 0:
        raise ConvkitValueError(f"{op}: divisor_override must be non-zero, got 0")
    return d
