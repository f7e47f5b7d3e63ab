"""Switches of the CUDA modules (convkit._cuda and convkit._cudasim) for testing and GPU debugging:
forced kernel variants and sync-after-launch. Read from the environment when a CUDA module is
first loaded, validated here, and settable from Python at any time between ops.

CONVKIT_CUDA_VARIANT  forces the kernel variants the launchers otherwise pick by problem size, so
    small shapes (the emulator's tests, ASan, compute-sanitizer on a GPU) reach every one. A
    comma-separated list of key=value (unnamed keys stay `auto`; "" or "auto" is all auto):
      gemm_tile=auto|big|small     the GEMM's 128x128 tile (8x8 a thread) or 64x64 tile (4x4)
                                   (float and half types; double: 64x64 or 32x32)
      splitk=auto|off|on           split-K of grad weight (GEMM and direct) and of implicit
                                   GEMM's three passes: one split, or at least 3 (fewer where
                                   the reduction has fewer steps)
      direct_tile=auto|full|small  the direct kernel's tile: never shrunk for small problems, or
                                   shrunk as far as it goes (64 threads; depthwise: one plane
                                   slot, one row group, 8 columns where the layout allows)
      direct_axes=auto|cols|rows|compact  the direct kernel's patch axes taken one tap a stage
                                   (the path of windows too wide for shared memory)
      depthwise=auto|off           off: the general direct kernels take depthwise shapes
      igemm_tile=auto|big|small|narrow|short  implicit GEMM's block tile: 128x128 (8x8 a
                                   thread), 64x64, 32x128 (few rows), 128x32 (few columns);
                                   double: half of each
      igemm_pipeline=auto|registers  implicit GEMM's operands through registers (double
                                   buffered) instead of the cp.async pipeline (float, double)
      igemm_math=auto|simt         implicit GEMM in float16 / bfloat16 on the SIMT kernel
                                   instead of the tensor cores (WMMA)
    e.g. CONVKIT_CUDA_VARIANT=gemm_tile=big,splitk=on. A forced variant changes the summation
    order (results within rounding of auto's), never what is computed.
CONVKIT_CUDA_SYNC=1  synchronizes the stream and checks it after every kernel launch, so a fault
    (an illegal address, say) is raised by the convkit op that caused it, naming the op and the
    kernel, instead of by whatever CUDA call comes next (usually a torch op), which would also
    poison every later test in the process. Slow: for debugging. Accepted: 0, 1 (also
    false/true, off/on, no/yes; empty is 0). Skipped while a stream is captured into a graph.

    import convkit.cuda_settings as cs
    with cs.variant("gemm_tile=big"):     # or cs.set_variant("splitk=off"); cs.set_variant("auto")
        ...
    cs.set_sync(True)
"""
from __future__ import annotations

import contextlib
import os
from typing import Dict, Iterator, Optional, Union

from ._errors import ConvkitValueError
from ._params import parse_flag

VARIANT_ENV = "CONVKIT_CUDA_VARIANT"
SYNC_ENV = "CONVKIT_CUDA_SYNC"

#: key -> accepted values, in the order of the C++ enums of csrc/cuda/variant.h (index = value).
VARIANT_CHOICES: Dict[str, tuple] = {
    "gemm_tile": ("auto", "big", "small"),
    "splitk": ("auto", "off", "on"),
    "direct_tile": ("auto", "full", "small"),
    "direct_axes": ("auto", "cols", "rows", "compact"),
    "depthwise": ("auto", "off"),
    "igemm_tile": ("auto", "big", "small", "narrow", "short"),
    "igemm_pipeline": ("auto", "registers"),
    "igemm_math": ("auto", "simt"),
}

#: Every forced value once: the variants a sweep runs (tests/kernels/test_cuda_variants.py, the GPU
#: check's racecheck) besides "auto".
VARIANT_SWEEP = tuple(f"{k}={v}" for k, vals in VARIANT_CHOICES.items() for v in vals[1:])


_state: Optional[dict] = None   # {"variant": {key: value}, "sync": bool}; None: not read yet
_applied: list = []             # the CUDA modules apply() has configured (the loaded ones)


def accepted_values() -> str:
    """The accepted CONVKIT_CUDA_VARIANT items, for messages."""
    return ", ".join(f"{k}={'|'.join(v)}" for k, v in VARIANT_CHOICES.items())


def parse_variant(spec: Union[str, dict, None], source: str = VARIANT_ENV) -> Dict[str, str]:
    """{key: value} for every key of VARIANT_CHOICES from a spec string ("gemm_tile=big,splitk=on";
    "", "auto" or None: all auto) or a dict; ConvkitValueError naming `source` and the accepted
    values for anything else."""
    out = {k: "auto" for k in VARIANT_CHOICES}
    if spec is None:
        return out
    if isinstance(spec, dict):
        items = list(spec.items())
    elif isinstance(spec, str):
        text = spec.strip()
        if text.lower() in ("", "auto"):
            return out
        items = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, value = part.partition("=")
            if not sep:
                raise ConvkitValueError(
                    f"{source}={spec!r}: {part!r} is not key=value; accepted: {accepted_values()} "
                    f"(comma-separated), or 'auto'")
            items.append((key.strip(), value.strip()))
    else:
        raise ConvkitValueError(f"{source}: expected a string like 'gemm_tile=big,splitk=on' or a dict, "
                                f"got {type(spec).__name__}")
    seen = set()
    for key, value in items:
        if key not in VARIANT_CHOICES:
            raise ConvkitValueError(f"{source}={spec!r}: unknown key {key!r}; accepted: {accepted_values()}")
        value = str(value).lower()
        if value not in VARIANT_CHOICES[key]:
            raise ConvkitValueError(f"{source}={spec!r}: {key}={value!r} is not one of "
                                    f"{'|'.join(VARIANT_CHOICES[key])}; accepted: {accepted_values()}")
        if key in seen:
            raise ConvkitValueError(f"{source}={spec!r}: {key} is given twice")
        seen.add(key)
        out[key] = value
    return out


def parse_sync(value: Union[str, bool, int, None], source: str = SYNC_ENV) -> bool:
    """True / False from 1, 0, true, false, on, off, yes, no (any case; empty or None: False)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        if value in (0, 1):
            return bool(value)
    elif isinstance(value, str):
        try:
            return parse_flag(value)
        except ValueError:
            pass
    raise ConvkitValueError(f"{source}={value!r}: accepted values are 0 or 1 (also false/true, off/on, no/yes; "
                            f"empty means 0)")


def format_variant(v: Dict[str, str]) -> str:
    """The canonical spec string: the non-auto items, or 'auto'."""
    items = [f"{k}={v[k]}" for k in VARIANT_CHOICES if v.get(k, "auto") != "auto"]
    return ",".join(items) or "auto"


def _current() -> dict:
    global _state
    if _state is None:
        _state = {"variant": parse_variant(os.environ.get(VARIANT_ENV, "")),
                  "sync": parse_sync(os.environ.get(SYNC_ENV, ""))}
    return _state


def apply(module) -> None:
    """Gives a CUDA module (just loaded) the current settings; the environment is read and checked
    the first time (a bad value raises ConvkitValueError here, so the module is not used)."""
    state = _current()
    if all(m is not module for m in _applied):
        _applied.append(module)
    module.set_variant(**{k: VARIANT_CHOICES[k].index(v) for k, v in state["variant"].items()})
    module.set_launch_sync(state["sync"])


def _push() -> None:
    """The current settings to every loaded CUDA module."""
    for mod in list(_applied):
        apply(mod)


def get_variant() -> str:
    """The forced variant now in force, as a spec string ('auto' when none)."""
    return format_variant(_current()["variant"])


def set_variant(spec: Union[str, dict, None]) -> None:
    """Forces kernel variants (a CONVKIT_CUDA_VARIANT spec or a dict; 'auto' or None resets).
    Call between ops, not during one."""
    v = parse_variant(spec, source="set_variant")
    _current()["variant"] = v
    _push()


@contextlib.contextmanager
def variant(spec: Union[str, dict, None]) -> Iterator[str]:
    """set_variant(spec) for the with block, then the previous variant again."""
    before = dict(_current()["variant"])
    set_variant(spec)
    try:
        yield get_variant()
    finally:
        _current()["variant"] = before
        _push()


def get_sync() -> bool:
    return _current()["sync"]


def set_sync(on: Union[bool, int, str]) -> None:
    """Sync-after-launch on or off (CONVKIT_CUDA_SYNC's values)."""
    _current()["sync"] = parse_sync(on, source="set_sync")
    _push()


@contextlib.contextmanager
def sync(on: Union[bool, int, str] = True) -> Iterator[bool]:
    before = get_sync()
    set_sync(on)
    try:
        yield get_sync()
    finally:
        _current()["sync"] = before
        _push()
