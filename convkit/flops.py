"""Operation counts from shapes: MACs of a convolution, bytes moved by pooling and ReLU.

FLOPs are 2 x MACs (CUTLASS's 2*N*P*Q*K*C*R*S/groups). The lecture's inception example
(input 28x28x256) comes out exactly:

- naive module (1x1 128, 3x3 192, 5x5 96): 854,196,224 MACs, the slide's "854M ops";
- with 1x1 bottlenecks (reduce to 64 before the 3x3 and the 5x5, 64 after the pool):
  271,351,808 MACs. The slide's "358M ops" adds the 3x3 term (28x28x192x3x3x64 = 86,704,128)
  twice: 271,351,808 + 86,704,128 = 358,055,936.

Whole models: `count(model, input_shape)` runs one forward on a meta input (no arithmetic, no
memory) with hooks on every leaf module and returns per-layer rows (name, type, output shape,
MACs, params) and totals. `receptive_field(layers)` walks a chain of convolutions and pools and
gives each one's receptive field size, jump (stride in input pixels) and start (centre of the
first output's field). The lecture's VGG argument comes out of both: three stacked 3x3
convolutions see 7x7, like one 7x7, with 3 x (3^2 x C) = 81 weights per filter against
7^2 x C = 147 (C = 3), i.e. 27 C^2 against 49 C^2 weights for C -> C channels.
"""
from __future__ import annotations

from typing import Any, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

from ._params import conv_padding, int_pair, pool_output_size

IntPair = Union[int, Sequence[int]]

__all__ = [
    "pair", "conv2d_output_shape", "conv2d_macs", "pool2d_output_shape", "pool2d_bytes",
    "relu_bytes", "LECTURE_INCEPTION_NAIVE", "LECTURE_INCEPTION_BOTTLENECK",
    "count", "LayerCount", "ModelCount", "receptive_field", "ReceptiveField",
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


# ---------------------------------------------------------------------------------------------
# Whole models: per-layer counts from one forward pass with hooks
# ---------------------------------------------------------------------------------------------

class LayerCount(NamedTuple):
    """One call of a leaf module: its qualified name, class name, output shape, MACs of that
    call, and the parameters it owns (counted at its first call only, so a module called twice
    is not counted twice)."""
    name: str
    type: str
    output_shape: Tuple
    macs: int
    params: int


class ModelCount(NamedTuple):
    """count()'s result: rows in call order, and totals. `params` counts every parameter of the
    model once (also those no forward call touched); `macs` is the rows' sum."""
    rows: List[LayerCount]
    input_shape: Tuple[int, ...]
    macs: int
    params: int

    @property
    def flops(self) -> int:
        """2 x MACs."""
        return 2 * self.macs

    def table(self) -> str:
        """The rows as a text table, with a totals line."""
        head = ("layer", "type", "output", "MACs", "params")
        body = [(r.name or "<root>", r.type, "x".join(map(str, r.output_shape[1:])) if _is_shape(r.output_shape)
                 else str(r.output_shape), f"{r.macs:,}", f"{r.params:,}") for r in self.rows]
        body.append(("total", "", "", f"{self.macs:,}", f"{self.params:,}"))
        widths = [max(len(row[i]) for row in [head] + body) for i in range(5)]
        def fmt(row):  # text columns left-aligned, numbers right-aligned
            return "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        return "\n".join([fmt(head), "  ".join("-" * w for w in widths)] + [fmt(r) for r in body])

    def __str__(self):
        return self.table()


def _is_shape(v) -> bool:
    return isinstance(v, tuple) and all(isinstance(d, int) for d in v)


def _out_shape(out) -> Tuple:
    """A tensor's shape; a tuple of shapes for a tuple/list of outputs (dicts: their values)."""
    import torch
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return tuple(_out_shape(o) for o in out)
    return ()


def _layer_macs(module, inputs, output) -> int:
    """MACs of one call: convolutions (any rank, transposed too, groups included) and Linear.
    Everything else (pooling, ReLU, normalization) does no multiply-accumulates that count."""
    import torch
    from torch import nn
    if isinstance(module, nn.modules.conv._ConvNd):
        per_out = module.weight[0].numel()           # (C / groups) x kernel taps
        if module.transposed:                        # every input element scatters into per_out outputs
            return inputs[0].numel() * per_out
        return output.numel() * per_out
    if isinstance(module, nn.Linear) and isinstance(output, torch.Tensor):
        return output.numel() * module.in_features
    if isinstance(module, nn.Bilinear):
        return output.numel() * module.in1_features * module.in2_features
    return 0


def count(model, input_shape: Sequence[int], *, dtype=None, device=None, train: bool = False) -> ModelCount:
    """Per-layer MACs, output shapes and parameters of `model` (any torch.nn.Module: torch or
    convkit layers) for an input of `input_shape` ([N, C, H, W], or [C, H, W] for N = 1).

    One forward pass runs with a hook on every leaf module (a module without children). By
    default it runs on the meta device: the parameters and buffers are swapped for meta
    tensors for the call (torch.func.functional_call; the model is not changed), so nothing is
    computed and even VGG16 at 224x224 takes milliseconds. A model that can't run on meta
    tensors (data-dependent code) is run instead on zeros on its own device, under no_grad;
    `device` forces that device. `train`: count in training mode (GoogLeNet's auxiliary
    classifiers); the model's modes, and its buffers, are restored after.

    >>> import torch
    >>> count(torch.nn.Conv2d(3, 64, 7, stride=2, padding=3), (1, 3, 224, 224)).macs
    118013952
    """
    import torch
    from torch.func import functional_call

    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    params = list(model.parameters())
    if dtype is None:
        dtype = next((p.dtype for p in params if p.is_floating_point()), torch.float32)
    total_params = sum(p.numel() for p in params)
    names = {m: n for n, m in model.named_modules()}
    leaves = [m for m in names if next(m.children(), None) is None]
    rows: List[LayerCount] = []
    seen = set()

    def hook(module, inputs, output):
        own = 0
        if module not in seen:
            seen.add(module)
            own = sum(p.numel() for p in module.parameters(recurse=False))
        rows.append(LayerCount(names[module], type(module).__name__, _out_shape(output),
                               int(_layer_macs(module, inputs, output)), own))

    modes = {m: m.training for m in names}
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        model.train(train)
        with torch.no_grad():
            ran = False
            if device is None or torch.device(device).type == "meta":
                try:
                    _forward_on_meta(model, shape, dtype, functional_call)
                    ran = True
                except Exception:  # noqa: BLE001 - any failure on meta: run for real below
                    if device is not None:
                        raise
                    rows.clear()
                    seen.clear()
            if not ran:
                dev = torch.device(device) if device is not None else (
                    params[0].device if params else torch.device("cpu"))
                saved = {k: b.clone() for k, b in model.named_buffers()}
                try:
                    model(torch.zeros(shape, dtype=dtype, device=dev))
                finally:
                    with torch.no_grad():
                        for k, b in model.named_buffers():
                            b.copy_(saved[k])
    finally:
        for h in handles:
            h.remove()
        for m, t in modes.items():
            m.training = t
    return ModelCount(rows, shape, sum(r.macs for r in rows), total_params)


def _forward_on_meta(model, shape, dtype, functional_call) -> None:
    import torch
    x = torch.zeros(shape, dtype=dtype, device="meta")
    tensors = dict(model.named_parameters())
    tensors.update(model.named_buffers())
    if all(t.device.type == "meta" for t in tensors.values()):
        model(x)
        return
    meta = {k: torch.empty_like(t, device="meta") for k, t in tensors.items()}
    functional_call(model, meta, (x,))


# ---------------------------------------------------------------------------------------------
# Receptive fields of a chain of convolutions and pools
# ---------------------------------------------------------------------------------------------

class ReceptiveField(NamedTuple):
    """One layer of a chain, (height, width) pairs throughout.

    size: receptive field of one output unit, in input pixels; jump: the distance in input
    pixels between neighbouring output units (the product of the strides so far); start:
    centre of the first (top-left) output unit's field, in input pixel coordinates (pixel i's
    centre at i; negative: the field reaches into the padding); output_size: the map size
    after this layer when receptive_field() was given an input size, else None."""
    name: str
    type: str
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int]
    dilation: Tuple[int, int]
    size: Tuple[int, int]
    jump: Tuple[int, int]
    start: Tuple[float, float]
    output_size: Optional[Tuple[int, int]]


_LayerSpec = Union[Any, dict, Sequence[int]]


def _layer_geometry(layer, default_name: str):
    """(name, type, kernel, stride, pads (top, bottom, left, right), dilation, ceil_mode) of a
    torch/convkit Conv2d, MaxPool2d or AvgPool2d, a dict (kernel_size, stride=1, padding=0,
    dilation=1, ceil_mode=False, name, type) or a tuple (kernel[, stride[, padding[, dilation]]]);
    None for other modules."""
    if isinstance(layer, dict):
        spec = dict(layer)
        k = pair(spec.pop("kernel_size", spec.pop("kernel", None)), "kernel_size")
        name, typ = spec.pop("name", default_name), spec.pop("type", "conv")
        s = pair(spec.pop("stride", 1), "stride")
        d = pair(spec.pop("dilation", 1), "dilation")
        pads = conv_padding(spec.pop("padding", 0), k, d, s, "receptive_field")
        ceil = bool(spec.pop("ceil_mode", False))
        if spec:
            raise ValueError(f"receptive_field: unknown keys {sorted(spec)} in layer {name!r}")
        return name, typ, k, s, pads, d, ceil
    if isinstance(layer, (tuple, list)):
        if not 1 <= len(layer) <= 4:
            raise ValueError("receptive_field: a layer tuple is (kernel[, stride[, padding[, dilation]]]), "
                             f"got {layer!r}")
        return _layer_geometry(dict(zip(("kernel_size", "stride", "padding", "dilation"), layer)), default_name)
    from torch import nn
    if isinstance(layer, nn.Conv2d):
        k, s, d = pair(layer.kernel_size), pair(layer.stride), pair(layer.dilation)
        pads = conv_padding(layer.padding, k, d, s, "receptive_field")
        return default_name, type(layer).__name__, k, s, pads, d, False
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        k = pair(layer.kernel_size)
        s = pair(layer.stride if layer.stride not in (None, []) else layer.kernel_size)
        ph, pw = pair(layer.padding)
        d = pair(getattr(layer, "dilation", 1))
        return default_name, type(layer).__name__, k, s, (ph, ph, pw, pw), d, bool(layer.ceil_mode)
    return None


def receptive_field(layers: Union[Any, Iterable[_LayerSpec]], input_size: Optional[IntPair] = None
                    ) -> List[ReceptiveField]:
    """Receptive field size, jump and start after each layer of a chain of convolutions and
    pools, from kernel k, stride s, dilation d and padding p (k' = d (k - 1) + 1):

        size_out = size_in + (k' - 1) jump_in,   jump_out = jump_in s,
        start_out = start_in + ((k' - 1) / 2 - p_top) jump_in

    starting from size 1, jump 1, start 0 (one input pixel). `layers` is a module (its Conv2d,
    MaxPool2d and AvgPool2d submodules in registration order; other modules are skipped, so
    this is exact for plain chains like LeNet5, AlexNet, VGG16 and their `features`, not for
    branching models), or a sequence of such modules, dicts or (kernel, stride, padding,
    dilation) tuples. With input_size (H, W) each row also has its output map size (pools
    with their ceil_mode).

    >>> [r.size for r in receptive_field([(3, 1, 1)] * 3)]
    [(3, 3), (5, 5), (7, 7)]
    """
    from torch import nn
    if isinstance(layers, nn.Module):
        items = list(layers.named_modules())
    else:
        items = []
        for i, layer in enumerate(layers):
            if isinstance(layer, nn.Module) and next(layer.children(), None) is not None:
                items += [(f"{i}.{n}" if n else str(i), m) for n, m in layer.named_modules()]
            else:
                items.append((str(i), layer))
    size, jump, start = [1, 1], [1, 1], [0.0, 0.0]
    hw = list(pair(input_size, "input_size")) if input_size is not None else None
    rows: List[ReceptiveField] = []
    for name, layer in items:
        g = _layer_geometry(layer, name)
        if g is None:
            continue
        name, typ, k, s, pads, d, ceil = g
        for a in range(2):
            keff = d[a] * (k[a] - 1) + 1
            start[a] = start[a] + ((keff - 1) / 2 - pads[2 * a]) * jump[a]
            size[a] = size[a] + (keff - 1) * jump[a]
            jump[a] = jump[a] * s[a]
            if hw is not None:
                if "pool" in typ.lower():
                    hw[a] = pool_output_size(hw[a], k[a], s[a], pads[2 * a], d[a], ceil)
                else:
                    hw[a] = (hw[a] + pads[2 * a] + pads[2 * a + 1] - keff) // s[a] + 1
        rows.append(ReceptiveField(name, typ, k, s, (pads[0], pads[2]), d, tuple(size), tuple(jump),
                                   tuple(start), tuple(hw) if hw is not None else None))
    return rows
