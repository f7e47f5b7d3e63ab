"""The lecture's worked examples (seed/lecture-26-cnn.txt), exactly: the padded 3x3 Sobel-like
example, the 7x7x3 two-filter stride-2 example, and the inception module's op counts."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import convkit
import convkit.flops as flops
import convkit.functional as CF

from conftest import BACKENDS, DTYPES, assert_bitwise, device_of, dtype_id

ALGOS3 = ["direct", "im2col", "auto"]

# (1) Input [[1,2,3],[4,5,6],[7,8,9]], padding 1. The slide convolves with h (rows n = -1, 0, 1:
# [-1,-2,-1], [0,0,0], [1,2,1]); conv2d is cross-correlation, so the weight that reproduces the
# slide is h flipped in both axes.
SOBEL_X = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
SOBEL_H = [[-1, -2, -1], [0, 0, 0], [1, 2, 1]]
SOBEL_Y = [[-13, -20, -17], [-18, -24, -18], [13, 20, 17]]

# (2) Input volume 5x5x3 (shown with its padding of 1 as 7x7x3), two 3x3x3 filters, stride 2.
# x[c] is channel c's 5x5 interior; w0[c], w1[c] the filters' channel c.
LECTURE_X = [
    [[0, 0, 1, 0, 2], [1, 0, 2, 0, 1], [1, 0, 2, 2, 0], [2, 0, 0, 2, 0], [2, 1, 2, 2, 0]],
    [[2, 1, 2, 1, 1], [2, 1, 2, 0, 1], [0, 2, 1, 0, 1], [1, 2, 2, 2, 2], [0, 1, 2, 0, 1]],
    [[2, 1, 1, 2, 0], [1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [1, 0, 2, 1, 0], [2, 2, 1, 1, 1]],
]
LECTURE_W0 = [[[-1, 0, 1], [0, 0, 1], [1, -1, 1]],
              [[-1, 0, 1], [1, -1, 1], [0, 1, 0]],
              [[-1, 1, 1], [1, 1, 0], [0, -1, 0]]]
LECTURE_W1 = [[[0, 1, -1], [0, -1, 0], [0, -1, 1]],
              [[-1, 0, 0], [1, -1, 0], [1, -1, 0]],
              [[-1, 1, -1], [0, -1, -1], [1, 0, 0]]]
LECTURE_B = [1, 0]
LECTURE_O = [[[2, 3, 3], [3, 7, 3], [8, 10, -3]],
             [[-8, -8, -3], [-3, 1, 0], [-3, -8, -5]]]


def _sobel(dtype, dev):
    x = torch.tensor(SOBEL_X, dtype=dtype, device=dev)[None, None]
    w = torch.tensor(SOBEL_H, dtype=dtype, device=dev).flip(0, 1)[None, None].contiguous()
    return x, w


def _volume(dtype, dev):
    x = torch.tensor(LECTURE_X, dtype=dtype, device=dev)[None]
    w = torch.tensor([LECTURE_W0, LECTURE_W1], dtype=dtype, device=dev)
    b = torch.tensor(LECTURE_B, dtype=dtype, device=dev)
    return x, w, b


def test_lecture_examples_with_torch():
    """The transcription is right: torch itself gives the slides' numbers."""
    x, w = _sobel(torch.float64, "cpu")
    assert torch.equal(F.conv2d(x, w, padding=1)[0, 0], torch.tensor(SOBEL_Y, dtype=torch.float64))
    x, w, b = _volume(torch.float64, "cpu")
    assert torch.equal(F.conv2d(x, w, b, stride=2, padding=1)[0], torch.tensor(LECTURE_O, dtype=torch.float64))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ALGOS3)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_lecture_sobel(backend, algo, dtype):
    x, w = _sobel(dtype, device_of(backend))
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, padding=1, algo=algo)
        y3 = CF.conv2d(x[0], w, padding=1, algo=algo)   # unbatched
    assert_bitwise(y[0, 0], torch.tensor(SOBEL_Y, dtype=dtype))
    assert_bitwise(y3[0], torch.tensor(SOBEL_Y, dtype=dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algo", ALGOS3)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_lecture_two_filter_stride2(backend, algo, dtype):
    x, w, b = _volume(dtype, device_of(backend))
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, b, stride=2, padding=1, algo=algo)
        # the same with the padding made explicit, as drawn on the slide (7x7x3)
        yp = CF.conv2d(F.pad(x, (1, 1, 1, 1)), w, b, stride=2, algo=algo)
    assert tuple(y.shape) == (1, 2, 3, 3)
    assert_bitwise(y[0], torch.tensor(LECTURE_O, dtype=dtype))
    assert_bitwise(yp[0], torch.tensor(LECTURE_O, dtype=dtype))


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "cuda"])
def test_lecture_examples_numpy(backend):
    x = np.array(LECTURE_X, dtype=np.float32)[None]
    w = np.array([LECTURE_W0, LECTURE_W1], dtype=np.float32)
    b = np.array(LECTURE_B, dtype=np.float32)
    with convkit.use_backend(backend):
        y = CF.conv2d(x, w, b, stride=2, padding=1)
        s = CF.conv2d(np.array(SOBEL_X, np.float64)[None, None],
                      np.ascontiguousarray(np.array(SOBEL_H, np.float64)[::-1, ::-1])[None, None], padding=1)
    np.testing.assert_array_equal(y[0], np.array(LECTURE_O, np.float32))
    np.testing.assert_array_equal(s[0, 0], np.array(SOBEL_Y, np.float64))


def test_inception_op_counts():
    inp = (1, 256, 28, 28)
    naive = (flops.conv2d_macs(inp, 128, 1) + flops.conv2d_macs(inp, 192, 3, padding=1)
             + flops.conv2d_macs(inp, 96, 5, padding=2))
    assert naive == 854_196_224
    assert flops.conv2d_macs(inp, 192, 3, padding="same") == 28 * 28 * 192 * 3 * 3 * 256
    red = (1, 64, 28, 28)
    bottleneck = (3 * flops.conv2d_macs(inp, 64, 1) + flops.conv2d_macs(inp, 128, 1)
                  + flops.conv2d_macs(red, 192, 3, padding=1) + flops.conv2d_macs(red, 96, 5, padding=2))
    assert bottleneck == 271_351_808
    three = flops.conv2d_macs(red, 192, 3, padding=1)
    assert three == 86_704_128
    assert bottleneck + three == 358_055_936       # the slide's "358M" counts the 3x3 term twice
    assert sum(flops.LECTURE_INCEPTION_NAIVE.values()) == 854_196_224
    assert sum(flops.LECTURE_INCEPTION_BOTTLENECK.values()) == 271_351_808


def test_flops_shapes_and_groups():
    assert flops.conv2d_output_shape((2, 3, 7, 9), 4, (2, 3), padding="same") == (2, 4, 7, 9)
    assert flops.conv2d_output_shape((2, 3, 7, 9), 4, 3, stride=2, padding=1) == (2, 4, 4, 5)
    assert flops.conv2d_macs((1, 6, 8, 8), 12, 3, padding=1, groups=3) == 8 * 8 * 12 * 2 * 9
    assert flops.conv2d_macs((6, 8, 8), 6, 3, padding=1, groups=6) == 8 * 8 * 6 * 9
    for (H, k, s, p, d, c) in [(5, 2, 3, 1, 1, True), (7, 3, 2, 1, 1, True), (13, 3, 2, 0, 1, True),
                               (9, 3, 1, 1, 2, False), (8, 4, 3, 2, 1, True)]:
        t = F.max_pool2d(torch.zeros(1, 1, H, H), k, s, p, d, ceil_mode=c)
        assert flops.pool2d_output_shape((1, 1, H, H), k, s, p, d, c) == tuple(t.shape)
