"""The benchmark's second GPU reference, `cupy-im2col-cublas`: convolution the way CuPy users write
it when they don't call cuDNN, as Caffe and Chainer's non-cuDNN path do: im2col into a column
buffer by an elementwise kernel, then cuBLAS GEMMs through cupy.matmul.

    fwd         col = im2col(x)                      [N, C*R*S per group, P*Q]
                y[n, g] = W[g] @ col[n, g]           (batched GEMM, + bias)
    bwd_input   gcol[n, g] = W[g]^T @ dy[n, g]       (batched GEMM)
                dx = col2im(gcol)                    (gather form: each dx element sums its own
                                                      R*S taps; no atomics, deterministic)
    bwd_weight  rows = im2row(x)                     [G, N*P*Q, C/G*R*S]
                dW[g] = dy[g] @ rows[g]              (one GEMM per group over the whole batch;
                                                      dy moved to [G, K/G, N*P*Q] first)
                db = dy.sum over (n, p, q)

The kernels are our own (KERNEL_SOURCE, one grid-stride loop per output element, 32-bit index
arithmetic where every array fits). The array module is a parameter: CuPy on the GPU, kernels
compiled by NVRTC and launched on the caller's stream (CupyBackend); NumPy on the host with the
same kernel source compiled by the host C++ compiler (HostBackend), so the index arithmetic and
the GEMM layouts are tested without a GPU. float32 and float64 (CuPy's GEMMs keep TF32 off unless
CUPY_TF32 is set); the col2im sum is in the array's dtype, so half types are not offered.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

__all__ = ["KERNEL_SOURCE", "Geometry", "HostBackend", "CupyBackend", "ConvCase", "conv2d_fwd",
           "conv2d_bwd_input", "conv2d_bwd_weight", "DTYPES", "NAME", "cupy_status"]

# The reference's name in benchmark rows (`ref`).
NAME = "cupy-im2col-cublas"

# The dtypes this reference runs (numpy names).
DTYPES = ("float32", "float64")

# Prefixed per build with `typedef <float|double> T; typedef <int|long long> I;`. Every kernel is
# a grid-stride loop over its output elements; `total` and the sizes are of type I.
KERNEL_SOURCE = r"""
// im2col: col[n][c][r][s][p][q] = x[n][c][p*sh - pt + r*dh][q*sw - pl + s*dw], 0 in the padding.
// (n, c, r, s, p, q) is an element of the column buffer; q is fastest, so a warp writes
// consecutive addresses and reads one input row.
extern "C" __global__ void convkit_ref_im2col(const T* __restrict__ x, T* __restrict__ col, I total,
    I C, I H, I W, I R, I S, I P, I Q, I sh, I sw, I pt, I pl, I dh, I dw)
{
  for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < total; i += (I)blockDim.x * (I)gridDim.x) {
    I t = i;
    const I q = t % Q; t /= Q;
    const I p = t % P; t /= P;
    const I s = t % S; t /= S;
    const I r = t % R; t /= R;
    const I c = t % C;
    const I n = t / C;
    const I h = p * sh - pt + r * dh;
    const I w = q * sw - pl + s * dw;
    col[i] = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w] : (T)0;
  }
}

// im2row for grad weight: row[g][n][p][q][cg][r][s] = x[n][g*Cg + cg][p*sh - pt + r*dh][q*sw - pl + s*dw]:
// per group g a [N*P*Q, Cg*R*S] matrix, the right-hand side of dW[g] = dy[g] @ row[g].
extern "C" __global__ void convkit_ref_im2row(const T* __restrict__ x, T* __restrict__ row, I total,
    I C, I H, I W, I R, I S, I P, I Q, I sh, I sw, I pt, I pl, I dh, I dw, I N, I Cg)
{
  for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < total; i += (I)blockDim.x * (I)gridDim.x) {
    I t = i;
    const I s = t % S; t /= S;
    const I r = t % R; t /= R;
    const I cg = t % Cg; t /= Cg;
    const I q = t % Q; t /= Q;
    const I p = t % P; t /= P;
    const I n = t % N;
    const I g = t / N;
    const I c = g * Cg + cg;
    const I h = p * sh - pt + r * dh;
    const I w = q * sw - pl + s * dw;
    row[i] = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w] : (T)0;
  }
}

// col2im, gather form: dx[n][c][h][w] = sum of col[n][c][r][s][p][q] over the taps (r, s) whose
// output (p, q) reads (h, w): h = p*sh - pt + r*dh, i.e. p = (h + pt - r*dh) / sh when that
// divides and lands in [0, P). One thread per dx element: no atomics, deterministic.
extern "C" __global__ void convkit_ref_col2im(const T* __restrict__ col, T* __restrict__ dx, I total,
    I C, I H, I W, I R, I S, I P, I Q, I sh, I sw, I pt, I pl, I dh, I dw)
{
  for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < total; i += (I)blockDim.x * (I)gridDim.x) {
    I t = i;
    const I w = t % W; t /= W;
    const I h = t % H; t /= H;
    const I nc = t;                       // n * C + c
    T acc = (T)0;
    for (I r = 0; r < R; ++r) {
      const I hp = h + pt - r * dh;       // p * sh
      if (hp < 0 || hp % sh != 0) continue;
      const I p = hp / sh;
      if (p >= P) continue;
      for (I s = 0; s < S; ++s) {
        const I wq = w + pl - s * dw;     // q * sw
        if (wq < 0 || wq % sw != 0) continue;
        const I q = wq / sw;
        if (q >= Q) continue;
        acc += col[(((nc * R + r) * S + s) * P + p) * Q + q];
      }
    }
    dx[i] = acc;
  }
}
"""

# What the host build puts before KERNEL_SOURCE: one "thread" whose grid-stride loop walks every
# element in order.
_HOST_SHIM = """
struct convkit_dim3 { unsigned int x, y, z; };
static const convkit_dim3 blockIdx = {0, 0, 0}, threadIdx = {0, 0, 0};
static const convkit_dim3 blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
#define __global__
"""

_CTYPE = {"float32": "float", "float64": "double"}
_INDEX = {32: "int", 64: "long long"}
_I32_LIMIT = 2 ** 31 - 2 ** 26   # room for the grid stride past the last element
THREADS = 256
MAX_BLOCKS = 65535


def kernel_prefix(dtype: str, index_bits: int) -> str:
    return f"typedef {_CTYPE[dtype]} T;\ntypedef {_INDEX[index_bits]} I;\n"


@dataclass(frozen=True)
class Geometry:
    """A convolution's parameters: stride (sh, sw), pads (top, bottom, left, right), dilation
    (dh, dw), groups."""
    stride: Tuple[int, int] = (1, 1)
    pads: Tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1

    @classmethod
    def of(cls, stride=1, padding=0, dilation=1, groups=1) -> "Geometry":
        """From torch-style ints or pairs (symmetric padding) or four explicit pads."""
        def pair(v):
            return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))
        if isinstance(padding, int) or len(padding) == 2:
            ph, pw = pair(padding)
            pads = (ph, ph, pw, pw)
        else:
            pads = tuple(int(v) for v in padding)
        return cls(pair(stride), pads, pair(dilation), int(groups))

    def output_hw(self, h: int, w: int, r: int, s: int) -> Tuple[int, int]:
        (sh, sw), (pt, pb, pl, pr), (dh, dw) = self.stride, self.pads, self.dilation
        return ((h + pt + pb - dh * (r - 1) - 1) // sh + 1, (w + pl + pr - dw * (s - 1) - 1) // sw + 1)

    def kernel_args(self, x_shape, r: int, s: int):
        """(C, H, W, R, S, P, Q, sh, sw, pt, pl, dh, dw): the sizes every kernel takes."""
        _, c, h, w = x_shape
        p, q = self.output_hw(h, w, r, s)
        (sh, sw), (pt, _, pl, _), (dh, dw) = self.stride, self.pads, self.dilation
        return (c, h, w, r, s, p, q, sh, sw, pt, pl, dh, dw)


def _index_bits(*numels: int) -> int:
    return 32 if max(numels) < _I32_LIMIT else 64


# ---- the three passes, on any backend ---------------------------------------------------------
def conv2d_fwd(be, x, w, b, geom: Geometry):
    """y = conv2d(x, w) + b. x: [N, C, H, W]; w: [K, C/G, R, S]; b: [K] or None -> [N, K, P, Q]."""
    xp = be.xp
    n, c, _, _ = x.shape
    k, cg, r, s = w.shape
    g = geom.groups
    args = geom.kernel_args(x.shape, r, s)
    p, q = args[5], args[6]
    col = xp.empty((n, c, r, s, p, q), dtype=x.dtype)
    be.launch("convkit_ref_im2col", x.dtype, col.size, [x, col], args, numels=(x.size, col.size))
    y = xp.matmul(w.reshape(g, k // g, cg * r * s), col.reshape(n, g, cg * r * s, p * q))
    y = y.reshape(n, k, p, q)
    if b is not None:
        y += b.reshape(1, k, 1, 1)
    return y


def conv2d_bwd_input(be, dy, w, x_shape: Sequence[int], geom: Geometry):
    """dx = grad of conv2d w.r.t. its input. dy: [N, K, P, Q]; w: [K, C/G, R, S] -> [N, C, H, W]."""
    xp = be.xp
    n, c, h, wd = (int(v) for v in x_shape)
    k, cg, r, s = w.shape
    g = geom.groups
    args = geom.kernel_args((n, c, h, wd), r, s)
    p, q = args[5], args[6]
    wt = xp.ascontiguousarray(w.reshape(g, k // g, cg * r * s).transpose(0, 2, 1))
    gcol = xp.matmul(wt, dy.reshape(n, g, k // g, p * q))          # [N, G, Cg*R*S, P*Q]
    dx = xp.empty((n, c, h, wd), dtype=dy.dtype)
    be.launch("convkit_ref_col2im", dy.dtype, dx.size, [gcol, dx], args, numels=(gcol.size, dx.size))
    return dx


def conv2d_bwd_weight(be, dy, x, w_shape: Sequence[int], geom: Geometry, bias: bool = True):
    """(dw, db): grads of conv2d w.r.t. its weight and bias. dy: [N, K, P, Q]; x: [N, C, H, W];
    w_shape: [K, C/G, R, S] -> dw [K, C/G, R, S], db [K] (None with bias=False)."""
    xp = be.xp
    n, c, _, _ = x.shape
    k, cg, r, s = (int(v) for v in w_shape)
    g = geom.groups
    args = geom.kernel_args(x.shape, r, s)
    p, q = args[5], args[6]
    rows = xp.empty((g, n * p * q, cg * r * s), dtype=x.dtype)
    be.launch("convkit_ref_im2row", x.dtype, rows.size, [x, rows], args + (n, cg),
              numels=(x.size, rows.size))
    dyg = xp.ascontiguousarray(dy.reshape(n, g, k // g, p * q).transpose(1, 2, 0, 3))
    dw = xp.matmul(dyg.reshape(g, k // g, n * p * q), rows).reshape(k, cg, r, s)
    db = dy.sum(axis=(0, 2, 3)) if bias else None
    return dw, db


# ---- backends ---------------------------------------------------------------------------------
class HostBackend:
    """NumPy arrays, KERNEL_SOURCE compiled for the host (one thread walks every element): the
    reference's arithmetic checked without a GPU. `cxx`: the C++ compiler [$CXX or c++]."""

    def __init__(self, cxx: Optional[str] = None, workdir: Optional[str] = None):
        import numpy
        self.xp = numpy
        self.cxx = cxx or os.environ.get("CXX") or "c++"
        self._dir = workdir or tempfile.mkdtemp(prefix="convkit-cupy-ref-")
        self._libs: Dict[Tuple[str, int], ctypes.CDLL] = {}

    def _lib(self, dtype: str, bits: int) -> ctypes.CDLL:
        key = (dtype, bits)
        if key not in self._libs:
            src = os.path.join(self._dir, f"ref_{dtype}_{bits}.cpp")
            so = os.path.join(self._dir, f"ref_{dtype}_{bits}.so")
            with open(src, "w") as f:
                f.write(_HOST_SHIM + kernel_prefix(dtype, bits) + KERNEL_SOURCE)
            subprocess.run([self.cxx, "-O1", "-std=c++11", "-Wall", "-Werror", "-fPIC", "-shared",
                            src, "-o", so], check=True, capture_output=True, text=True)
            self._libs[key] = ctypes.CDLL(so)
        return self._libs[key]

    # How the benchmark hands torch tensors over (CPU tensors here: NumPy views, no copy).
    def from_torch(self, t):
        return t.detach().cpu().numpy()

    def to_torch(self, a):
        import torch
        return torch.from_numpy(self.xp.ascontiguousarray(a))

    def stream_for_torch(self, torch_mod):
        return contextlib.nullcontext()

    def free(self) -> None:
        pass

    def launch(self, name: str, dtype, total: int, arrays, sizes, numels=()):
        dt = self.xp.dtype(dtype).name
        bits = _index_bits(total, *numels)
        fn = getattr(self._lib(dt, bits), name)
        ctype = ctypes.c_int if bits == 32 else ctypes.c_longlong
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p] * len(arrays) + [ctype] * (1 + len(sizes))
        for a in arrays:
            assert a.flags.c_contiguous and a.dtype == self.xp.dtype(dt), (name, a.dtype, a.flags)
        fn(*[a.ctypes.data for a in arrays], total, *[int(v) for v in sizes])


class CupyBackend:
    """CuPy arrays, KERNEL_SOURCE compiled by NVRTC (cupy.RawModule, one module per dtype and
    index width), launched on CuPy's current stream: `stream(ptr)` makes torch's current
    stream CuPy's for a block, so the reference runs where the CUDA events are recorded."""

    def __init__(self, cupy_mod=None):
        if cupy_mod is None:
            import cupy as cupy_mod
        self.xp = self.cupy = cupy_mod
        self._modules: Dict[Tuple[str, int], object] = {}
        self._functions: Dict[Tuple[str, int, str], object] = {}

    def _module(self, dtype: str, bits: int):
        key = (dtype, bits)
        if key not in self._modules:
            self._modules[key] = self.cupy.RawModule(code=kernel_prefix(dtype, bits) + KERNEL_SOURCE,
                                                     options=("--std=c++11",))
        return self._modules[key]

    def _function(self, dtype: str, bits: int, name: str):
        key = (dtype, bits, name)
        if key not in self._functions:
            self._functions[key] = self._module(dtype, bits).get_function(name)
        return self._functions[key]

    def compile(self, dtype: str) -> None:
        """Build the kernels of `dtype` now (NVRTC: a second or so), not inside a timed call."""
        for bits in (32, 64):
            for name in ("convkit_ref_im2col", "convkit_ref_im2row", "convkit_ref_col2im"):
                self._function(dtype, bits, name)

    def launch(self, name: str, dtype, total: int, arrays, sizes, numels=()):
        import numpy
        dt = numpy.dtype(dtype).name
        bits = _index_bits(total, *numels)
        fn = self._function(dt, bits, name)
        itype = numpy.int32 if bits == 32 else numpy.int64
        blocks = max(1, min(-(-int(total) // THREADS), MAX_BLOCKS))
        fn((blocks,), (THREADS,), tuple(arrays) + (itype(total),) + tuple(itype(v) for v in sizes))

    def stream(self, ptr: int):
        """A context manager making the CUDA stream `ptr` (torch's current stream) CuPy's current
        one; the legacy default stream (0) is CuPy's null stream."""
        cuda = self.cupy.cuda
        return cuda.Stream.null if int(ptr) == 0 else cuda.ExternalStream(int(ptr))

    # torch tensors <-> CuPy arrays through DLPack: the same device memory, no copy.
    def from_torch(self, t):
        return self.cupy.from_dlpack(t.detach())

    def to_torch(self, a):
        import torch
        return torch.from_dlpack(a)

    def stream_for_torch(self, torch_mod):
        return self.stream(torch_mod.cuda.current_stream().cuda_stream)

    def free(self) -> None:
        """Give CuPy's cached blocks back (between layers: torch's allocator wants the memory)."""
        self.cupy.get_default_memory_pool().free_all_blocks()


def cupy_status(device_index: int = 0) -> Tuple[Optional[object], Dict[str, object]]:
    """(cupy module or None, {"status": "ok"|"skipped", "reason", "version"}): whether the CuPy
    reference can run here."""
    try:
        import cupy
    except Exception as e:  # noqa: BLE001 - ImportError, or a CUDA library that fails to load
        return None, {"status": "skipped", "reason": f"CuPy is not importable ({type(e).__name__}: {e})"}
    info: Dict[str, object] = {"version": getattr(cupy, "__version__", None)}
    try:
        if not cupy.cuda.is_available():
            return None, dict(info, status="skipped", reason="CuPy sees no CUDA device")
        cupy.cuda.Device(device_index).use()
    except Exception as e:  # noqa: BLE001
        return None, dict(info, status="skipped", reason=f"CuPy cannot use the GPU ({type(e).__name__}: {e})")
    tf32 = os.environ.get("CUPY_TF32", "0").strip() not in ("", "0")
    return cupy, dict(info, status="ok", tf32=tf32)


class ConvCase:
    """The reference on one benchmark layer's inputs (convkit.bench.layers.LayerInputs of a
    convolution): the tensors handed to the backend once (DLPack for CuPy: no copy), a callable
    per pass that runs on torch's current stream, results back as torch tensors."""

    def __init__(self, backend, layer, inputs, torch_mod):
        self.be = backend
        c = layer.conv
        self.geom = Geometry.of(c.stride, c.padding, 1, c.groups)
        conv = backend.from_torch
        self.x, self.w = conv(inputs.x), conv(inputs.weight)
        self.b = None if inputs.bias is None else conv(inputs.bias)
        self.dy = None if inputs.grad is None else conv(inputs.grad)
        self.x_shape, self.w_shape = tuple(inputs.x.shape), tuple(inputs.weight.shape)
        self.stream = backend.stream_for_torch(torch_mod)

    def _body(self, pass_: str) -> Dict[str, object]:
        be, g = self.be, self.geom
        out: Dict[str, object] = {}
        if pass_ in ("fwd", "fwd+bwd"):
            out["y"] = conv2d_fwd(be, self.x, self.w, self.b, g)
        if pass_ in ("bwd_input", "fwd+bwd"):
            out["dx"] = conv2d_bwd_input(be, self.dy, self.w, self.x_shape, g)
        if pass_ in ("bwd_weight", "fwd+bwd"):
            out["dweight"], db = conv2d_bwd_weight(be, self.dy, self.x, self.w_shape, g,
                                                   bias=self.b is not None)
            if db is not None:
                out["dbias"] = db
        if not out:
            raise ValueError(f"no pass {pass_!r}")
        return out

    def fn(self, pass_: str):
        """The timed callable of one pass."""
        def run():
            with self.stream:
                return self._body(pass_)
        return run

    def results(self, pass_: str) -> Dict[str, object]:
        """One run of the pass, as torch tensors keyed like Layer.results."""
        return {k: self.be.to_torch(v) for k, v in self.fn(pass_)().items()}
