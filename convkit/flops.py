"""Operation counts from shapes: MACs of a convolution, bytes moved by pooling and ReLU.

FLOPs are 2 x MACs (CUTLASS's 2*N*P*Q*K*C*R*S/groups). The lecture's inception example
(input 28x28x256) comes out exactly:

- naive module (1x1 128, 3x3 192, 5x5 96): 854,196,224 MACs, the slide's "854M ops";
- with 1x1 bottlenecks (reduce to 64 before the 3x3 and the 5x5, 64 after the pool):
  271,351,808 MACs. The slide's "358M ops" adds the 3x3 term (28x28x192x3x3x64 = 86,704,128)
  twice: 271,351,808 + 86,704,128 = 358,055,936.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

from ._params import conv_padding, int_pair, pool_output_size

IntPair = Union[int, Sequence[int]]

__all__ = [
    "pair", "conv2d_output_shape", "conv2d_macs", "pool2d_output_shape", "pool2d_bytes",
    "relu_bytes", "LECTURE_INCEPTION_NAIVE", "LECTURE_INCEPTION_BOTTLENECK",
]


def pair(v: IntPair, name: str = "value") -> Tuple[int, int]:
    """(v, v) for an int, (a, b) for a pair."""
    return int_pair(v, "flops", name)


def conv2d_output_shape(input_shape, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                        padding=0, dilation: IntPair = 1, groups: int = 1) -> Tuple[int, int, int, int]:
    """Output shape [N, K, P, Q] of a convolution of input [N, C, H, W] (or [C, H, W], N = 1)."""
    shape = tuple(input_shape)
    n, _, h, w = (1,) + shape if len(shape) == 3 else shape
    r, s = pair(kernel_size, "kernel_size")
    sh, sw = pair(stride, "stride")
    dh, dw = pair(dilation, "dilation")
    pads = (tuple(int(x) for x in padding) if isinstance(padding, (list, tuple)) and len(padding) == 4
            else conv_padding(padding, (r, s), (dh, dw), (sh, sw), "conv2d_output_shape"))
    pt, pb, pl, pr = pads
    p = (h + pt + pb - dh * (r - 1) - 1) // sh + 1
    q = (w + pl + pr - dw * (s - 1) - 1) // sw + 1
    return (n, out_channels, p, q)


def conv2d_macs(input_shape, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                padding=0, dilation: IntPair = 1, groups: int = 1) -> int:
    """Multiply-accumulates of one forward convolution: N*K*P*Q * (C/groups)*R*S.

    input_shape: [N, C, H, W] or [C, H, W]. Each backward pass (grad input, grad weight) costs
    the same number of MACs as the forward.

    >>> conv2d_macs((1, 256, 28, 28), 192, 3, padding=1)
    346816512
    """
    shape = tuple(input_shape)
    c = shape[-3]
    if c % groups:
        raise ValueError(f"groups={groups} does not divide the {c} input channels")
    n, k, p, q = conv2d_output_shape(shape, out_channels, kernel_size, stride, padding, dilation, groups)
    r, s = pair(kernel_size, "kernel_size")
    return n * k * p * q * (c // groups) * r * s


def pool2d_output_shape(input_shape, kernel_size: IntPair, stride=None, padding: IntPair = 0,
                        dilation: IntPair = 1, ceil_mode: bool = False) -> Tuple[int, ...]:
    """Output shape of a max or average pool, torch's rule (ceil_mode drops a last window that
    would start in the right padding)."""
    shape = tuple(input_shape)
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = pair(kernel_size if stride is None or stride == [] else stride, "stride")
    ph, pw = pair(padding, "padding")
    dh, dw = pair(dilation, "dilation")

    return shape[:-2] + (pool_output_size(shape[-2], kh, sh, ph, dh, ceil_mode),
                         pool_output_size(shape[-1], kw, sw, pw, dw, ceil_mode))


def pool2d_bytes(input_shape, output_shape, itemsize: int = 4, indices: bool = False) -> int:
    """Bytes a pooling forward must move: read the input once, write the output (and indices)."""
    n_in = 1
    for d in input_shape:
        n_in *= d
    n_out = 1
    for d in output_shape:
        n_out *= d
    return (n_in + n_out) * itemsize + (n_out * 8 if indices else 0)


def relu_bytes(numel: int, itemsize: int = 4) -> int:
    """Bytes a ReLU forward moves: read and write each element once."""
    return 2 * numel * itemsize


# The lecture's inception module on a 28x28x256 input, branch by branch.
_LECTURE_IN = (1, 256, 28, 28)
LECTURE_INCEPTION_NAIVE = {
    "1x1": conv2d_macs(_LECTURE_IN, 128, 1),
    "3x3": conv2d_macs(_LECTURE_IN, 192, 3, padding=1),
    "5x5": conv2d_macs(_LECTURE_IN, 96, 5, padding=2),
}
LECTURE_INCEPTION_BOTTLENECK = {
    "1x1": conv2d_macs(_LECTURE_IN, 128, 1),
    "3x3_reduce": conv2d_macs(_LECTURE_IN, 64, 1),
    "3x3": conv2d_macs((1, 64, 28, 28), 192, 3, padding=1),
    "5x5_reduce": conv2d_macs(_LECTURE_IN, 64, 1),
    "5x5": conv2d_macs((1, 64, 28, 28), 96, 5, padding=2),
    "pool_proj": conv2d_macs(_LECTURE_IN, 64, 1),
}
