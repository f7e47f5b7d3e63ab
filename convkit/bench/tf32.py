"""TF32 on or off for cuDNN convolutions and cuBLAS matrix products, through the one API the
running torch has, and cudnn.benchmark for a block: the switches the GPU bench sets around its
references and ceilings."""
from __future__ import annotations

import contextlib
import re
from typing import Iterator, Optional, Tuple

__all__ = ["NEW_TF32_API_SINCE", "torch_version", "tf32_api", "tf32", "cudnn_benchmark"]


# The new per-backend precision API (torch.backends.cudnn.conv.fp32_precision, ...) replaces the
# allow_tf32 flags from this version on; mixing the two raises in torch.
NEW_TF32_API_SINCE = (2, 9)


def torch_version(version: str) -> Tuple[int, int]:
    """(major, minor) of a torch version string: "2.11.0+cu130" -> (2, 11)."""
    m = re.match(r"\s*(\d+)\.(\d+)", str(version))
    if not m:
        raise ValueError(f"not a torch version: {version!r}")
    return int(m.group(1)), int(m.group(2))


def _tf32_target(torch_mod, op: str):
    """(object, attribute, value for on, value for off) of the one API this torch uses for `op`
    ("conv": cuDNN convolutions, "matmul": cuBLAS matrix products)."""
    if op not in ("conv", "matmul"):
        raise ValueError(f"tf32: op must be 'conv' or 'matmul', got {op!r}")
    if tf32_api(torch_mod) == "fp32_precision":
        obj = torch_mod.backends.cudnn.conv if op == "conv" else torch_mod.backends.cuda.matmul
        return obj, "fp32_precision", "tf32", "ieee"
    obj = torch_mod.backends.cudnn if op == "conv" else torch_mod.backends.cuda.matmul
    return obj, "allow_tf32", True, False


def tf32_api(torch_mod=None) -> str:
    """Which TF32 switch this torch has: "fp32_precision" (torch >= 2.9) or "allow_tf32"."""
    if torch_mod is None:
        import torch as torch_mod
    if torch_version(torch_mod.__version__) >= NEW_TF32_API_SINCE:
        return "fp32_precision"
    return "allow_tf32"


@contextlib.contextmanager
def tf32(enabled: Optional[bool], op: str = "conv", torch_mod=None) -> Iterator[None]:
    """TF32 on (True) or off (False) for cuDNN convolutions (op="conv") or cuBLAS matrix products
    (op="matmul") inside the block, through the one API this torch version has (never the other:
    reading or setting the legacy flag after the new one was used raises in torch >= 2.9); the
    previous setting is restored on exit. enabled=None leaves everything as it is."""
    if enabled is None:
        yield
        return
    if torch_mod is None:
        import torch as torch_mod
    obj, attr, on, off = _tf32_target(torch_mod, op)
    before = getattr(obj, attr)
    setattr(obj, attr, on if enabled else off)
    try:
        yield
    finally:
        setattr(obj, attr, before)


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool, torch_mod=None) -> Iterator[None]:
    """torch.backends.cudnn.benchmark set inside the block, restored after."""
    if torch_mod is None:
        import torch as torch_mod
    before = torch_mod.backends.cudnn.benchmark
    torch_mod.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch_mod.backends.cudnn.benchmark = before
