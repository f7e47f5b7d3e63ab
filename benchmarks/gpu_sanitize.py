"""Calls every kernel of convkit's `cuda` backend once or twice, on small odd shapes, in every
dtype and option: the program benchmarks/gpu_check.sh runs as its smoke run and under
compute-sanitizer (memcheck over every case, racecheck over one case per kernel variant).

  compute-sanitizer --tool memcheck python benchmarks/gpu_sanitize.py --cases all
  compute-sanitizer --tool racecheck python benchmarks/gpu_sanitize.py --cases variants --dtypes float32,float16
  python benchmarks/gpu_sanitize.py --cases smoke --sync    # every algorithm x pass, a sync after each launch
  python benchmarks/gpu_sanitize.py --backend cpu      # the same calls on the CPU kernels

Case sets (--cases): `default` (below), `variants` (one small case per kernel variant: each
pool and ReLU kernel once, and each convolution path under the forced variant that reaches it,
convkit.cuda_settings / CONVKIT_CUDA_VARIANT: the 128x128 GEMM tile, split-K on and off, every
direct tile plan, the general kernels on depthwise shapes), `smoke` (every convolution algorithm
x pass on the default shapes, float32 and float16 unless --dtypes), `all` (default + variants).
Each case prints one line (ok / FAIL / skip, its time), so a run stopped by a timeout shows how
far it got.

Covered: max pooling forward with and without indices and its backward, average pooling
forward and backward (count_include_pad, divisor_override), both with padding, stride,
ceil_mode (a last window starting in the padding), dilation (max), windows of 1 and of the
whole plane; ReLU forward, in place and backward, on misaligned views that end at their
allocation's end (so a vector access past the end leaves the allocation); convolutions: every
algorithm that applies (direct, im2col, implicit_gemm, 1x1, auto) x every pass (forward with and without bias, grad
input, grad weight, grad bias) x every dtype, on small odd shapes: stride 2, depthwise (also
strided), groups, dilation, 1x1 strided and grouped, the stem's 7x7/2, an even kernel with
torch's asymmetric 'same' padding, channels not a multiple of 4, a long grad-weight reduction
(split-K), and im2col with its workspace capped to one image (the batch-chunk loop). Run it with
PYTORCH_NO_CUDA_MEMORY_CACHING=1 (gpu_check.sh does): then every tensor is its own cudaMalloc
and memcheck sees an access past a tensor's end; with the caching allocator it would land in
the same pooled segment and pass unseen.

Each result is also compared with torch on the CPU in float64 (loosely: the sanitizer is the
point here, the tests check numerics), so a kernel that silently did nothing fails too.
Exit status: 0 every case ran and matched; 1 some case failed; 2 nothing could run (no GPU, no
`cuda` backend).
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback

# dtype name -> tolerance relative to the largest |reference| value
TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "float16": 4e-3, "bfloat16": 3e-2}

# (shape, kernel, stride, padding, dilation, ceil_mode): odd sizes, a window of 1, a window
# over the whole plane, a ceil_mode window that would start in the right padding (13 = 2*6+1
# with kernel 3, stride 2, pad 1), asymmetric kernels and strides.
MAX_POOLS = [
    ((2, 3, 13, 11), 3, 2, 1, 1, True),
    ((1, 5, 7, 9), (3, 2), (2, 1), (1, 0), (2, 1), False),
    ((3, 2, 31, 33), 2, 2, 0, 1, True),
    ((1, 3, 6, 6), 3, 2, 1, 1, True),
    ((2, 4, 7, 7), 7, 1, 0, 1, False),
    ((1, 1, 5, 3), 1, 1, 0, 1, False),
]
# (shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_POOLS = [
    ((2, 3, 13, 11), 3, 2, 1, True, True, None),
    ((2, 3, 13, 11), 3, 2, 1, True, False, None),
    ((1, 5, 7, 9), (3, 2), (2, 1), (1, 0), False, True, 5),
    ((3, 2, 17, 15), 2, 2, 0, True, False, None),
    ((2, 4, 7, 7), 7, 1, 0, False, True, None),
]
# element counts for ReLU; each runs on views starting 0..3 elements into their allocation
RELU_SIZES = [1, 7, 33, 1000, 4099]
# (x shape, weight shape, stride, padding, dilation, groups): each runs every algorithm that
# applies, forward (bias on and off), grad input, grad weight and grad bias, in every dtype.
CONVS = [
    ((2, 3, 9, 11), (4, 3, 3, 3), 2, 1, 1, 1),          # 3x3/2, odd sizes
    ((1, 6, 7, 5), (6, 1, 3, 3), 1, 1, 1, 6),            # depthwise
    ((2, 8, 13, 11), (8, 1, 3, 3), 2, 1, 1, 8),          # depthwise, stride 2
    ((2, 5, 8, 8), (7, 5, 1, 1), 2, 0, 1, 1),            # 1x1, stride 2
    ((1, 6, 9, 7), (4, 3, 1, 1), 1, 0, 1, 2),            # 1x1, groups 2
    ((1, 4, 13, 13), (4, 2, 5, 5), 1, 2, 2, 2),          # 5x5, dilation 2, groups 2
    ((2, 3, 17, 15), (5, 3, 7, 7), 2, 3, 1, 1),          # the stem's 7x7/2 pad 3
    ((1, 3, 10, 9), (5, 3, 2, 4), 1, "same", 1, 1),      # even kernel: asymmetric 'same' pads
    ((2, 33, 7, 7), (17, 33, 3, 3), 1, 1, 1, 1),         # C, K not multiples of 4
    ((4, 8, 45, 47), (16, 8, 3, 3), 1, 1, 1, 1),         # N*P*Q = 8460: grad weight's long reduction
]
# (CONVS index, algorithm): again with the im2col workspace capped to one image, so the
# batch-chunk loop runs (convkit.set_workspace_cap, read at each call).
CHUNKED = [(0, "im2col"), (9, "im2col")]

def _one_image_cap(x, w, stride, pad, dil, groups, algo):
    """The workspace cap that makes `algo` take one image a chunk in every pass: the largest of
    the passes' smallest workspaces (a cap below one image is refused, not chunked further)."""
    from convkit import _kernels as kernels
    from convkit._algos import check_conv
    from convkit._params import dtype_name
    k = kernels._module(x, "conv2d")
    args = check_conv("gpu_sanitize", tuple(x.shape), tuple(w.shape), x.dtype, w.dtype, stride=stride, padding=pad,
                      dilation=dil, groups=groups, algo=algo)
    p = kernels._conv_params(k.mod, tuple(x.shape), tuple(w.shape), args)
    return max(k.mod.conv2d_workspace_bytes(algo, kind, dtype_name(x.dtype), p, 1)
               for kind in ("fwd", "bwd_input", "bwd_weight"))


# Convolutions the variant cases use beside CONVS: a 5x5 depthwise (grad weight's 25-tap kernel),
# 32 output channels on a 16x16 plane (a direct tile that shrinks), one input channel under a
# 3x5 window (each axis one tap a stage gives a different stage count); PW40.
DW5 = ((1, 4, 13, 11), (8, 1, 5, 5), 2, 2, 1, 4)
K32 = ((1, 4, 16, 16), (32, 4, 3, 3), 1, 1, 1, 1)
C1 = ((2, 1, 12, 13), (16, 1, 3, 5), 1, (1, 2), 1, 1)
# a pointwise layer with a reduction of 5 k-steps: forward and grad input split K when forced
PW40 = ((1, 40, 5, 6), (24, 40, 1, 1), 1, 0, 1, 1)
# (forced variant, convolution, algorithm): one small case per kernel variant. "auto" runs the
# size-selected kernels these small shapes get (direct's fixed 3x3 and general kernels, both
# depthwise kernels and grad weight's 9- and 25-tap ones, the GEMM's small tile, split-K);
# the others force what only large shapes would get.
VARIANT_CONVS = [
    ("auto", CONVS[8], "direct"), ("auto", CONVS[0], "direct"), ("auto", CONVS[1], "direct"),
    ("auto", CONVS[2], "direct"), ("auto", DW5, "direct"), ("auto", CONVS[0], "im2col"),
    ("auto", CONVS[3], "1x1"),
    ("gemm_tile=big", CONVS[0], "im2col"), ("gemm_tile=big", CONVS[3], "1x1"),
    ("splitk=on", CONVS[0], "im2col"), ("splitk=on", CONVS[0], "direct"), ("splitk=on", CONVS[1], "direct"),
    ("splitk=off", CONVS[0], "im2col"), ("splitk=off", CONVS[0], "direct"), ("splitk=off", DW5, "direct"),
    ("direct_tile=full", K32, "direct"), ("direct_tile=full", DW5, "direct"),
    ("direct_tile=small", K32, "direct"), ("direct_tile=small", DW5, "direct"),
    ("direct_axes=cols", C1, "direct"), ("direct_axes=rows", C1, "direct"),
    ("direct_axes=compact", CONVS[6], "direct"),
    ("depthwise=off", CONVS[1], "direct"), ("depthwise=off", DW5, "direct"),
    ("auto", CONVS[0], "implicit_gemm"), ("igemm_tile=big", CONVS[8], "implicit_gemm"),
    ("igemm_tile=short", CONVS[6], "implicit_gemm"), ("igemm_pipeline=registers", CONVS[0], "implicit_gemm"),
    ("splitk=on", CONVS[0], "implicit_gemm"), ("igemm_math=simt", CONVS[0], "implicit_gemm"), ("splitk=on", PW40, "1x1"), ("splitk=on", CONVS[8], "im2col"),
]


class Skip(Exception):
    """A case this backend can't run (a dtype it doesn't take)."""


def _close(got, ref, dtype: str, what: str) -> None:
    import torch
    g = got.detach().cpu().to(torch.float64)
    r = ref.detach().cpu().to(torch.float64)
    if tuple(g.shape) != tuple(r.shape):
        raise AssertionError(f"{what}: shape {tuple(g.shape)} != {tuple(r.shape)}")
    if not bool(torch.isfinite(g).all()):
        raise AssertionError(f"{what}: {int((~torch.isfinite(g)).sum())} non-finite values")
    scale = r.abs().max().item() if r.numel() else 0.0
    err = (g - r).abs().max().item() if r.numel() else 0.0
    if err > TOLERANCE[dtype] * max(scale, 1e-30):
        raise AssertionError(f"{what}: max error {err:.3g} > {TOLERANCE[dtype]:g} x {scale:.3g}")


def _rand(shape, dtype: str, device, gen):
    """Values drawn in float64 on the CPU, then cast and copied: no GPU kernel makes them."""
    import torch
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(getattr(torch, dtype)).to(device)


def _dtype_check(exc: Exception, dtype: str) -> None:
    """Re-raise a dtype refusal for a half dtype as Skip."""
    if dtype in ("float16", "bfloat16") and isinstance(exc, TypeError) and dtype in str(exc):
        raise Skip(f"backend does not take {dtype}: {exc}") from exc
    raise exc


def case_max_pool(device, dtype, gen, shape, k, s, p, d, ceil):
    import torch
    import torch.nn.functional as F
    import convkit.functional as CF
    x = _rand(shape, dtype, device, gen)
    x64 = x.detach().cpu().double().requires_grad_(True)
    ref, ref_idx = F.max_pool2d(x64, k, s, p, d, ceil, return_indices=True)
    try:
        y_only = CF.max_pool2d(x, k, s, p, d, ceil)                      # no indices
        y, idx = CF.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    except TypeError as e:
        _dtype_check(e, dtype)
    dy = _rand(tuple(y.shape), dtype, device, gen)
    dx = CF.max_pool2d_backward(dy, tuple(x.shape), idx, k, s, p, d, ceil)
    if device.type == "cuda":
        torch.cuda.synchronize()
    _close(y_only, ref, dtype, "max_pool2d values (no indices)")
    _close(y, ref, dtype, "max_pool2d values")
    (ref_dx,) = torch.autograd.grad(ref, x64, dy.cpu().double())
    if dtype in ("float32", "float64"):   # no ties in randn draws at these precisions
        if not torch.equal(idx.cpu(), ref_idx):
            raise AssertionError("max_pool2d indices differ from torch's")
        _close(dx, ref_dx, dtype, "max_pool2d_backward")
    else:   # half dtypes round into ties: check the gradient through convkit's own indices
        flat = torch.zeros(shape[0] * shape[1], shape[2] * shape[3], dtype=torch.float64)
        flat.scatter_add_(1, idx.cpu().reshape(shape[0] * shape[1], -1),
                          dy.cpu().double().reshape(shape[0] * shape[1], -1))
        _close(dx, flat.reshape(shape), dtype, "max_pool2d_backward")


def case_avg_pool(device, dtype, gen, shape, k, s, p, ceil, cip, div):
    import torch
    import torch.nn.functional as F
    import convkit.functional as CF
    x = _rand(shape, dtype, device, gen)
    x64 = x.detach().cpu().double().requires_grad_(True)
    ref = F.avg_pool2d(x64, k, s, p, ceil, cip, div)
    try:
        y = CF.avg_pool2d(x, k, s, p, ceil, cip, div)
    except TypeError as e:
        _dtype_check(e, dtype)
    dy = _rand(tuple(y.shape), dtype, device, gen)
    dx = CF.avg_pool2d_backward(dy, tuple(x.shape), k, s, p, ceil, cip, div)
    if device.type == "cuda":
        torch.cuda.synchronize()
    _close(y, ref, dtype, "avg_pool2d")
    (ref_dx,) = torch.autograd.grad(ref, x64, dy.cpu().double())
    _close(dx, ref_dx, dtype, "avg_pool2d_backward")


def case_relu(device, dtype, gen, n, offset):
    """ReLU forward, in place and backward on views [offset:] of allocations of n + offset
    elements: misaligned starts (offset 1..3), each view ending where its allocation ends."""
    import torch
    import convkit.functional as CF
    base = _rand((n + offset,), dtype, device, gen)
    x = base[offset:]
    ref = x.detach().cpu().double().clamp_min(0)
    try:
        y = CF.relu(x)
    except TypeError as e:
        _dtype_check(e, dtype)
    dy_base = _rand((n + offset,), dtype, device, gen)
    dy = dy_base[offset:]
    dx = CF.relu_backward(dy, y)
    inplace = _rand((n + offset,), dtype, device, gen)[offset:]
    ref_inplace = inplace.detach().cpu().double().clamp_min(0)
    with torch.no_grad():
        CF.relu_(inplace)
    # a strided (non-contiguous) view: the Python layer copies it; the kernel sees a fresh buffer
    strided = _rand((2 * n,), dtype, device, gen)[::2]
    y_strided = CF.relu(strided)
    if device.type == "cuda":
        torch.cuda.synchronize()
    _close(y, ref, dtype, "relu")
    _close(inplace, ref_inplace, dtype, "relu_ (in place)")
    _close(y_strided, strided.detach().cpu().double().clamp_min(0), dtype, "relu (strided view)")
    ref_dx = torch.where(ref > 0, dy.detach().cpu().double(), torch.zeros((), dtype=torch.float64))
    _close(dx, ref_dx, dtype, "relu_backward")


def _conv_algos(ws, pad) -> list:
    """The algorithms that apply to a weight shape and padding: 1x1 only for 1x1 kernels with
    zero padding."""
    return ["direct", "im2col", "implicit_gemm", "auto"] + (["1x1"] if tuple(ws[2:]) == (1, 1) and pad == 0 else [])


def case_conv(device, dtype, gen, xs, ws, stride, pad, dil, groups, algo, chunked=False):
    """Forward with and without bias, grad input, grad weight and grad bias of one convolution,
    each against torch in float64 on the same (rounded) values."""
    import torch
    import torch.nn.functional as F
    import convkit.functional as CF
    from convkit import _algos, _backend
    backend = _backend.backend_for(torch.device(device).type)   # the one use_backend chose
    if algo != "auto" and algo not in _algos.built(backend):
        raise Skip(f"algo {algo} is not built for the {backend} backend")
    x = _rand(xs, dtype, device, gen)
    w = _rand(ws, dtype, device, gen)
    b = _rand((ws[0],), dtype, device, gen)
    x64, w64, b64 = (t.detach().cpu().double().requires_grad_(True) for t in (x, w, b))
    ref = F.conv2d(x64, w64, b64, stride, pad, dil, groups)
    ref_nobias = F.conv2d(x64.detach(), w64.detach(), None, stride, pad, dil, groups)
    import convkit
    cap_before = convkit.workspace_cap()
    if chunked:
        convkit.set_workspace_cap(_one_image_cap(x, w, stride, pad, dil, groups, algo))   # one image a chunk
    try:
        try:
            y = CF.conv2d(x, w, b, stride, pad, dil, groups, algo=algo)
        except TypeError as e:
            _dtype_check(e, dtype)
        y_nobias = CF.conv2d(x, w, None, stride, pad, dil, groups, algo=algo)
        dy = _rand(tuple(y.shape), dtype, device, gen)
        dx = CF.conv2d_backward_input(dy, w, tuple(x.shape), stride, pad, dil, groups, algo=algo)
        dw = CF.conv2d_backward_weight(dy, x, tuple(w.shape), stride, pad, dil, groups, algo=algo)
        db = CF.conv2d_backward_bias(dy)
        if device.type == "cuda":
            torch.cuda.synchronize()
    finally:
        convkit.set_workspace_cap(cap_before)
    gx, gw, gb = torch.autograd.grad(ref, (x64, w64, b64), dy.cpu().double())
    _close(y, ref, dtype, f"conv2d algo={algo}")
    _close(y_nobias, ref_nobias, dtype, f"conv2d algo={algo} (no bias)")
    _close(dx, gx, dtype, f"conv2d_backward_input algo={algo}")
    _close(dw, gw, dtype, f"conv2d_backward_weight algo={algo}")
    _close(db, gb, dtype, "conv2d_backward_bias")


def case_conv_variant(device, dtype, gen, spec, xs, ws, stride, pad, dil, groups, algo):
    """case_conv under a forced kernel variant (convkit.cuda_settings), restored afterwards."""
    import convkit.cuda_settings as cs
    with cs.variant(spec):
        case_conv(device, dtype, gen, xs, ws, stride, pad, dil, groups, algo)


def build_variant_cases(dtypes):
    """One case per kernel: each pool and ReLU kernel once, each convolution path under the
    forced variant that reaches it (VARIANT_CONVS); every dtype's cases together, in order."""
    cases = []
    for dt in dtypes:
        cases.append((f"max_pool2d[0] {dt}", case_max_pool, (dt,) + MAX_POOLS[0]))
        cases.append((f"avg_pool2d[0] {dt}", case_avg_pool, (dt,) + AVG_POOLS[0]))
        cases.append((f"relu n=1000 offset=1 {dt}", case_relu, (dt, 1000, 1)))
        for spec, (xs, ws, s, p, d, g), algo in VARIANT_CONVS:
            cases.append((f"conv2d {spec} x{list(xs)} w{list(ws)} {algo} {dt}", case_conv_variant,
                          (dt, spec, xs, ws, s, p, d, g, algo)))
    return cases


def build_smoke_cases(dtypes):
    """Every convolution algorithm x pass on the default shapes, plus one pool and ReLU case."""
    cases = []
    for dt in dtypes:
        cases.append((f"max_pool2d[0] {dt}", case_max_pool, (dt,) + MAX_POOLS[0]))
        cases.append((f"avg_pool2d[0] {dt}", case_avg_pool, (dt,) + AVG_POOLS[0]))
        cases.append((f"relu n=4099 offset=3 {dt}", case_relu, (dt, 4099, 3)))
        for i, (xs, ws, s, p, d, g) in enumerate(CONVS):
            for algo in _conv_algos(ws, p):
                cases.append((f"conv2d[{i}] {algo} {dt}", case_conv, (dt, xs, ws, s, p, d, g, algo)))
    return cases


def build_cases(dtypes):
    """(name, function, args) for every call of the default case set."""
    cases = []
    for dt in dtypes:
        for i, spec in enumerate(MAX_POOLS):
            cases.append((f"max_pool2d[{i}] {dt}", case_max_pool, (dt,) + spec))
        for i, spec in enumerate(AVG_POOLS):
            cases.append((f"avg_pool2d[{i}] {dt}", case_avg_pool, (dt,) + spec))
        for n in RELU_SIZES:
            for off in (0, 1, 3):
                cases.append((f"relu n={n} offset={off} {dt}", case_relu, (dt, n, off)))
    # every dtype: a backend that does not take a half dtype (the CPU kernels; a cudasim built
    # without has_half) refuses it with a TypeError naming it, and those cases are skipped
    for dt in dtypes:
        for i, (xs, ws, s, p, d, g) in enumerate(CONVS):
            for algo in _conv_algos(ws, p):
                cases.append((f"conv2d[{i}] {algo} {dt}", case_conv, (dt, xs, ws, s, p, d, g, algo)))
        for i, algo in CHUNKED:
            xs, ws, s, p, d, g = CONVS[i]
            cases.append((f"conv2d[{i}] {algo} chunked {dt}", case_conv,
                          (dt, xs, ws, s, p, d, g, algo, True)))
    return cases


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cuda", choices=["cuda", "cpu", "cudasim"],
                    help="the backend whose kernels to call [cuda]; cpu and cudasim run on host memory")
    ap.add_argument("--dtypes", default=None,
                    help="comma-separated [all four; float32,float16 for --cases smoke and variants]")
    ap.add_argument("--cases", default="default", choices=["default", "variants", "smoke", "all"],
                    help="which case set (see the module docstring) [default]")
    ap.add_argument("--sync", action="store_true",
                    help="synchronize and check after every kernel launch (CONVKIT_CUDA_SYNC=1)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.dtypes is None:
        args.dtypes = "float32,float16" if args.cases in ("smoke", "variants") else "float32,float64,float16,bfloat16"

    import warnings
    import torch
    import convkit
    # torch's float64 reference of an even kernel under padding='same' pads a copy: it says so
    warnings.filterwarnings("ignore", message="Using padding='same'")

    if args.backend not in convkit.available_backends():
        print(f"gpu_sanitize: backend {args.backend!r} cannot run here; available: "
              f"{convkit.available_backends()}", file=sys.stderr)
        return 2
    device = torch.device("cuda" if args.backend == "cuda" else "cpu")
    dtypes = [d for d in args.dtypes.split(",") if d]
    if args.cases == "variants":
        cases = build_variant_cases(dtypes)
    elif args.cases == "smoke":
        cases = build_smoke_cases(dtypes)
    else:
        cases = build_cases(dtypes)
        if args.cases == "all":
            cases += build_variant_cases([d for d in dtypes if d in ("float32", "float16")])
    if args.backend == "cpu":   # the forced variants are the CUDA modules' (a no-op on the CPU kernels)
        cases = [c for c in cases if c[1] is not case_conv_variant]
    if args.sync and args.backend != "cpu":
        import convkit.cuda_settings as cs
        cs.set_sync(True)
    if args.backend != "cpu":
        import convkit.cuda_settings as cs
        sync = cs.get_sync()
    else:
        sync = False
    print(f"gpu_sanitize: {len(cases)} cases ({args.cases}) on backend {args.backend} ({device}), dtypes "
          f"{','.join(dtypes)}, "
          f"sync after each launch {'on' if sync else 'off'}", flush=True)
    gen = torch.Generator().manual_seed(args.seed)
    n_ok = n_skip = n_fail = 0
    skip_reasons = {}
    with convkit.use_backend(args.backend):
        for name, fn, fargs in cases:
            t0 = time.perf_counter()
            try:
                fn(device, *fargs[:1], gen, *fargs[1:])
                n_ok += 1
                print(f"ok   {name} ({time.perf_counter() - t0:.2f} s)", flush=True)
            except Skip as e:
                n_skip += 1
                reason = str(e).split(":")[0]
                print(f"skip {name}: {e if reason not in skip_reasons else reason}", flush=True)
                skip_reasons[reason] = skip_reasons.get(reason, 0) + 1
            except Exception as e:  # noqa: BLE001 - report every case, go on
                n_fail += 1
                print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
                if n_fail <= 3:
                    traceback.print_exc(limit=3)
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(f"gpu_sanitize: {len(cases)} cases: {n_ok} ok, {n_skip} skipped, {n_fail} failed",
          flush=True)
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
