"""Bad input: every case raises an exception that is a RuntimeError (like torch's) AND a ValueError
or TypeError as fits, whose message names the argument and the bad value, before any kernel runs,
leaving the caller's tensors unchanged."""
import numpy as np
import pytest
import torch

import convkit
import convkit._backend
import convkit._kernels
import convkit.functional as CF
import convkit.nn as cnn

from conftest import BACKENDS, device_of, raises_checked

V, T = ValueError, TypeError


def _t(*shape, dtype=torch.float32, dev="cpu", grad=False):
    g = torch.Generator().manual_seed(sum(shape) + 1)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype=dtype, device=dev).requires_grad_(grad)


def _cases(dev, backend="cpu"):
    """(id, callable, exception base, words the message must contain, tensors to check); None for
    a case that does not apply on `backend`."""
    no_half = "float16" not in convkit._backend.dtypes(backend)
    x, w, b = _t(2, 3, 7, 7, dev=dev), _t(4, 3, 3, 3, dev=dev), _t(4, dev=dev)
    x1 = _t(2, 3, 3, 3, dev=dev)
    x2d = _t(7, 7, dev=dev)
    x5d = _t(1, 2, 3, 7, 7, dev=dev)
    w_c = _t(4, 2, 3, 3, dev=dev)
    w_g = _t(4, 1, 3, 3, dev=dev)
    w64 = _t(4, 3, 3, 3, dtype=torch.float64, dev=dev)
    xi, wi = torch.ones(2, 3, 7, 7, dtype=torch.int32, device=dev), torch.ones(4, 3, 3, 3, dtype=torch.int32, device=dev)
    xh, wh = x.half(), w.half()
    wmeta = torch.empty(4, 3, 3, 3, device="meta")
    b5 = _t(5, dev=dev)
    w1 = _t(4, 3, 1, 1, dev=dev)
    y = torch.zeros(2, 4, 5, 5, device=dev)
    return [
        ("conv_rank2", lambda: CF.conv2d(x2d, w), V, ["input", "(7, 7)"], [x2d, w]),
        ("conv_rank5", lambda: CF.conv2d(x5d, w), V, ["input", "(1, 2, 3, 7, 7)"], [x5d, w]),
        ("conv_weight_rank", lambda: CF.conv2d(x, w[0]), V, ["weight", "(3, 3, 3)"], [x, w]),
        ("conv_channels", lambda: CF.conv2d(x, w_c), V, ["channels", "3"], [x, w_c]),
        ("conv_groups_mismatch", lambda: CF.conv2d(x, w_g, groups=1), V, ["channels", "3"], [x, w_g]),
        ("conv_groups_not_dividing", lambda: CF.conv2d(x, w_g, groups=2), V, ["groups", "2"], [x, w_g]),
        ("conv_groups_k", lambda: CF.conv2d(_t(2, 6, 7, 7, dev=dev), _t(4, 2, 3, 3, dev=dev), groups=3),
         V, ["groups", "3"], []),
        ("conv_groups_zero", lambda: CF.conv2d(x, w, groups=0), V, ["groups", "0"], [x, w]),
        ("conv_stride0", lambda: CF.conv2d(x, w, stride=0), V, ["stride", "0"], [x, w]),
        ("conv_stride_neg", lambda: CF.conv2d(x, w, stride=(1, -2)), V, ["stride", "-2"], [x, w]),
        ("conv_dilation0", lambda: CF.conv2d(x, w, dilation=0), V, ["dilation", "0"], [x, w]),
        ("conv_padding_neg", lambda: CF.conv2d(x, w, padding=-1), V, ["padding", "-1"], [x, w]),
        ("conv_padding_neg_pair", lambda: CF.conv2d(x, w, padding=(0, -3)), V, ["padding", "-3"], [x, w]),
        ("conv_kernel_too_big", lambda: CF.conv2d(x1, _t(4, 3, 5, 5, dev=dev)), V, ["kernel", "5"], [x1]),
        ("conv_dilated_too_big", lambda: CF.conv2d(x1, w, dilation=2), V, ["kernel", "dilation"], [x1, w]),
        ("conv_dtype_mismatch", lambda: CF.conv2d(x, w64), T, ["float64", "float32"], [x, w64]),
        ("conv_bias_dtype", lambda: CF.conv2d(x, w, b.double()), T, ["bias", "float64"], [x, w]),
        ("conv_int32", lambda: CF.conv2d(xi, wi), T, ["int32"], [xi, wi]),
        ("conv_float16_no_half", lambda: CF.conv2d(xh, wh), T, ["float16", repr(backend)], [xh, wh])
        if no_half else None,
        ("conv_bwd_input_bfloat16_no_half",
         lambda: CF.conv2d_backward_input(y.bfloat16(), w.bfloat16(), (2, 3, 7, 7)), T, ["bfloat16", repr(backend)],
         []) if no_half else None,
        ("conv_bwd_weight_float16_no_half",
         lambda: CF.conv2d_backward_weight(y.half(), xh, (4, 3, 3, 3)), T, ["float16", repr(backend)], [xh])
        if no_half else None,
        ("conv_half_bias_dtype", lambda: CF.conv2d(xh, wh, b), T, ["bias", "float32", "float16"], [xh, wh, b]),
        ("conv_device_meta", lambda: CF.conv2d(x, wmeta), (V, T), ["meta"], [x]),
        ("conv_bias_size", lambda: CF.conv2d(x, w, b5), V, ["bias", "5"], [x, w, b5]),
        ("conv_bias_rank", lambda: CF.conv2d(x, w, b.reshape(2, 2)), V, ["bias", "(2, 2)"], [x, w, b]),
        ("conv_same_strided", lambda: CF.conv2d(x, w, padding="same", stride=2), V, ["same", "stride"], [x, w]),
        ("conv_unknown_algo", lambda: CF.conv2d(x, w, algo="fft"), V, ["algo", "fft"], [x, w]),
        ("conv_unknown_padding", lambda: CF.conv2d(x, w, padding="full"), V, ["padding", "full"], [x, w]),
        ("conv_1x1_on_3x3", lambda: CF.conv2d(x, w, algo="1x1"), V, ["1x1", "3"], [x, w]),
        ("conv_1x1_with_padding", lambda: CF.conv2d(x, w1, padding=1, algo="1x1"), V, ["1x1", "padding"], [x, w1]),
        ("conv_numpy_torch_mix", lambda: CF.conv2d(x, w.numpy()) if dev == "cpu" else CF.conv2d(x, 3),
         T, [], [x, w]),
        ("conv_bwd_input_grad_shape", lambda: CF.conv2d_backward_input(_t(2, 4, 6, 5, dev=dev), w, (2, 3, 7, 7)),
         V, ["grad_output", "(2, 4, 6, 5)"], [w]),
        ("conv_bwd_weight_grad_shape", lambda: CF.conv2d_backward_weight(_t(2, 4, 6, 5, dev=dev), x, (4, 3, 3, 3)),
         V, ["grad_output", "(2, 4, 6, 5)"], [x]),
        ("conv_bwd_weight_groups", lambda: CF.conv2d_backward_weight(y, x, (4, 3, 3, 3), groups=2),
         V, ["groups", "2"], [x, y]),
        ("conv_bwd_input_algo", lambda: CF.conv2d_backward_input(y, w, (2, 3, 7, 7), algo="fft"),
         V, ["algo", "fft"], [y, w]),
        ("conv_bwd_bias_int", lambda: CF.conv2d_backward_bias(torch.ones(2, 4, 5, 5, dtype=torch.int64, device=dev)),
         T, ["int64"], []),
        ("maxpool_rank", lambda: CF.max_pool2d(x2d, 2), V, ["input", "(7, 7)"], [x2d]),
        ("maxpool_pad_over_half", lambda: CF.max_pool2d(x, 3, padding=2), V, ["padding", "2"], [x]),
        ("maxpool_pad_over_half_pair", lambda: CF.max_pool2d(x, (4, 2), padding=(2, 2)), V, ["padding"], [x]),
        ("maxpool_pad_neg", lambda: CF.max_pool2d(x, 3, padding=-1), V, ["padding", "-1"], [x]),
        ("maxpool_empty_output", lambda: CF.max_pool2d(x1, 4), V, ["kernel_size", "4"], [x1]),
        ("maxpool_empty_output_dilated", lambda: CF.max_pool2d(x1, 2, dilation=3), V, ["dilation", "3"], [x1]),
        ("maxpool_stride0", lambda: CF.max_pool2d(x, 2, stride=0), V, ["stride", "0"], [x]),
        ("maxpool_dilation0", lambda: CF.max_pool2d(x, 2, dilation=0), V, ["dilation", "0"], [x]),
        ("maxpool_kernel0", lambda: CF.max_pool2d(x, 0), V, ["kernel_size", "0"], [x]),
        ("maxpool_int32", lambda: CF.max_pool2d(xi, 2), T, ["int32"], [xi]),
        ("maxpool_float16_no_half", lambda: CF.max_pool2d(xh, 2), T, ["float16", repr(backend)], [xh])
        if no_half else None,
        ("avgpool_bfloat16_no_half", lambda: CF.avg_pool2d(x.bfloat16(), 2), T, ["bfloat16", repr(backend)], [])
        if no_half else None,
        ("relu_float16_no_half", lambda: CF.relu(xh), T, ["float16", repr(backend)], [xh]) if no_half else None,
        ("relu_bwd_bfloat16_no_half", lambda: CF.relu_backward(x.bfloat16(), x.bfloat16()), T,
         ["bfloat16", repr(backend)], []) if no_half else None,
        ("maxpool_bwd_indices_dtype",
         lambda: CF.max_pool2d_backward(torch.ones(2, 3, 3, 3, device=dev), (2, 3, 7, 7),
                                        torch.zeros(2, 3, 3, 3, dtype=torch.int32, device=dev), 2),
         V, ["indices", "int32"], []),
        ("avgpool_pad_over_half", lambda: CF.avg_pool2d(x, 2, padding=2), V, ["padding", "2"], [x]),
        ("avgpool_empty_output", lambda: CF.avg_pool2d(x1, (1, 5)), V, ["kernel_size", "5"], [x1]),
        ("avgpool_divisor0", lambda: CF.avg_pool2d(x, 2, divisor_override=0), V, ["divisor_override", "0"], [x]),
        ("avgpool_bwd_divisor0", lambda: CF.avg_pool2d_backward(torch.ones(2, 3, 3, 3, device=dev), (2, 3, 7, 7), 2,
                                                                divisor_override=0),
         V, ["divisor_override", "0"], []),
        ("avgpool_bwd_grad_shape", lambda: CF.avg_pool2d_backward(torch.ones(2, 3, 4, 3, device=dev), (2, 3, 7, 7), 2),
         V, ["grad_output", "(2, 3, 4, 3)"], []),
        ("relu_int32", lambda: CF.relu(xi), T, ["int32"], [xi]),
        ("relu_bwd_shape", lambda: CF.relu_backward(torch.ones(3, device=dev), torch.ones(4, device=dev)),
         V, ["grad_output"], []),
    ]


def _ids():
    return [c[0] for c in _cases("cpu") if c is not None]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case_id", _ids())
def test_bad_input(backend, case_id):
    dev = device_of(backend)
    cases = {c[0]: c for c in _cases(dev, backend) if c is not None}
    if case_id not in cases:
        pytest.skip(f"{case_id} does not apply on {backend}")
    _, fn, base, words, tensors = cases[case_id]
    with convkit.use_backend(backend):
        before = sum(convkit._kernels.kernel_calls.values())
        raises_checked(fn, base, words, tensors)
        after = sum(convkit._kernels.kernel_calls.values())
    assert after == before, "a kernel ran before the argument check failed"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("how", ["inplace=True", "relu_", "view"])
def test_inplace_relu_on_leaf_requiring_grad(backend, how):
    """torch forbids it; convkit raises (RuntimeError + ValueError) and leaves the leaf as it was."""
    leaf = _t(2, 3, 4, 5, dev=device_of(backend), grad=True)
    with convkit.use_backend(backend):
        if how == "inplace=True":
            raises_checked(lambda: CF.relu(leaf, inplace=True), (V, T), ["leaf"], [leaf])
        elif how == "relu_":
            raises_checked(lambda: CF.relu_(leaf), (V, T), ["leaf"], [leaf])
        else:
            raises_checked(lambda: CF.relu(leaf[:, 1:], inplace=True), (V, T), ["leaf"], [leaf])
    assert leaf.grad is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_numpy_bad_input(backend):
    if backend == "cuda":
        pytest.skip("NumPy runs on the host backends")
    x = np.ones((2, 3, 7, 7), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    with convkit.use_backend(backend):
        for fn, base, words in [
            (lambda: CF.conv2d(x.astype(np.int32), w.astype(np.int32)), T, ["int32"]),
            (lambda: CF.conv2d(x, w.astype(np.float64)), T, ["float64"]),
            (lambda: CF.conv2d(x, w, groups=2), V, ["groups", "2"]),
            (lambda: CF.conv2d(x, w, padding=-1), V, ["padding", "-1"]),
            (lambda: CF.max_pool2d(x, 3, padding=2), V, ["padding", "2"]),
            (lambda: CF.avg_pool2d(x, 2, divisor_override=0), V, ["divisor_override"]),
            (lambda: CF.conv2d(x.tolist(), w), T, ["list"]),
        ]:
            x0 = x.copy()
            with pytest.raises(Exception) as info:
                fn()
            e = info.value
            assert isinstance(e, RuntimeError) and isinstance(e, base), f"{type(e).__mro__}: {e}"
            for word in words:
                assert word in str(e).lower(), f"message does not name {word!r}: {e}"
            np.testing.assert_array_equal(x, x0)


def test_use_backend_unknown():
    with pytest.raises(ValueError) as info:
        with convkit.use_backend("tpu"):
            pass
    assert isinstance(info.value, RuntimeError) and "tpu" in str(info.value)


def test_nn_layer_bad_algo():
    with pytest.raises(ValueError) as info:
        cnn.Conv2d(3, 4, 3, algo="fft")
    assert isinstance(info.value, RuntimeError) and "fft" in str(info.value)
    with pytest.raises(ValueError):
        cnn.convert(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1)), algo="bogus")


def test_set_num_threads_bad():
    with pytest.raises(ValueError) as info:
        convkit.set_num_threads(0)
    assert isinstance(info.value, RuntimeError) and "0" in str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_op_bad_args_raise_not_crash(backend):
    """Called directly (skipping the Python checks), the ops still refuse bad parameters with a
    RuntimeError from the C++ checks rather than reading out of bounds."""
    dev = device_of(backend)
    x, w = _t(1, 3, 5, 5, dev=dev), _t(2, 3, 3, 3, dev=dev)
    with convkit.use_backend(backend):
        for args in [
            (x, w, None, [1, 1], [-1, 0, 0, 0], [1, 1], 1, "direct"),
            (x, w, None, [1, 1], [0, 0, 0, 0], [1, 1], 2, "im2col"),
            (x, _t(2, 3, 7, 7, dev=dev), None, [1, 1], [0, 0, 0, 0], [1, 1], 1, "direct"),
            (x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1, "1x1"),
        ]:
            with pytest.raises(RuntimeError):
                torch.ops.convkit.conv2d(*args)
        with pytest.raises(RuntimeError):
            torch.ops.convkit.max_pool2d(x, [3, 3], [1, 1], [2, 2], [1, 1], False)


def _op_cases(dev):
    """torch.ops.convkit.* called directly with tensors that do not fit the other arguments."""
    ops = torch.ops.convkit
    f64 = torch.float64
    x = _t(2, 3, 7, 6, dtype=f64, dev=dev)
    w = _t(4, 3, 3, 3, dtype=f64, dev=dev)
    _, idx = ops.max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], True)      # [2, 3, 4, 4]
    return [
        ("conv2d_weight_dtype", lambda: ops.conv2d(x, w.float(), None, [1, 1], [1, 1, 1, 1], [1, 1], 1, "direct")),
        ("conv2d_bias_size", lambda: ops.conv2d(x, w, _t(2, dtype=f64, dev=dev), [1, 1], [1, 1, 1, 1], [1, 1], 1,
                                                "direct")),
        ("conv2d_bias_dtype", lambda: ops.conv2d(x, w, _t(4, dev=dev), [1, 1], [1, 1, 1, 1], [1, 1], 1, "direct")),
        ("conv2d_backward_input_grad_shape",
         lambda: ops.conv2d_backward_input(_t(2, 4, 3, 3, dtype=f64, dev=dev), w, [2, 3, 7, 6], [1, 1], [1, 1, 1, 1],
                                           [1, 1], 1, "direct")),
        ("conv2d_backward_input_grad_dtype",
         lambda: ops.conv2d_backward_input(_t(2, 4, 7, 6, dev=dev), w, [2, 3, 7, 6], [1, 1], [1, 1, 1, 1],
                                           [1, 1], 1, "direct")),
        ("conv2d_backward_weight_grad_shape",
         lambda: ops.conv2d_backward_weight(_t(2, 4, 3, 3, dtype=f64, dev=dev), x, [4, 3, 3, 3], [1, 1],
                                            [1, 1, 1, 1], [1, 1], 1, "im2col")),
        ("max_pool2d_backward_grad_shape",
         lambda: ops.max_pool2d_backward(_t(2, 3, 4, 3, dtype=f64, dev=dev), x, idx[..., :3].contiguous(),
                                         [3, 3], [2, 2], [1, 1], [1, 1], True)),
        ("avg_pool2d_backward_grad_shape",
         lambda: ops.avg_pool2d_backward(_t(2, 3, 4, 3, dtype=f64, dev=dev), x, [3, 3], [2, 2], [1, 1], True, False,
                                         None)),
        ("relu_backward_shape", lambda: ops.relu_backward(_t(5, dtype=f64, dev=dev), _t(7, dtype=f64, dev=dev))),
        ("conv2d_stride0", lambda: ops.conv2d(x, w, None, [0, 1], [0, 0, 0, 0], [1, 1], 1, "direct")),
        ("conv2d_half_weight_float", lambda: ops.conv2d(x.half(), w.float(), None, [1, 1], [1, 1, 1, 1], [1, 1], 1,
                                                        "direct")),
        ("conv2d_backward_bias_int", lambda: ops.conv2d_backward_bias(torch.ones(2, 4, 3, 3, dtype=torch.int32,
                                                                                 device=dev))),
        ("conv2d_backward_bias_rank", lambda: ops.conv2d_backward_bias(_t(4, 3, 3, dtype=f64, dev=dev))),
    ]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case_id", [c[0] for c in _op_cases("cpu")])
def test_custom_ops_check_their_tensors(backend, case_id):
    """The custom ops are public (torch.ops.convkit.*, and what torch.compile / export graphs
    call): a tensor whose shape or dtype does not fit must raise a RuntimeError, not make the
    kernel read or write past a buffer or reinterpret float32 memory as float64."""
    dev = device_of(backend)
    fn = dict(_op_cases(dev))[case_id]
    with convkit.use_backend(backend):
        with pytest.raises(RuntimeError):
            fn()


def test_backend_selection():
    assert "cpu" in convkit.available_backends()
    with convkit.use_backend("cpu"):
        with convkit.use_backend("cpu"):
            pass
    for name in ("cudasim", "cuda"):
        if name not in convkit.available_backends():
            with pytest.raises(ValueError) as info:
                with convkit.use_backend(name):
                    pass
            assert isinstance(info.value, RuntimeError) and name in str(info.value)
