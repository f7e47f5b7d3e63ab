"""Backends and the compiled modules behind them.

A backend is a compiled kernel module:
  "cpu"      convkit._cpu, the C++ kernels; host memory (CPU tensors, NumPy arrays).
  "cudasim"  convkit._cudasim, the CUDA sources on the CPU emulator; host memory. Never picked by
             default: `use_backend("cudasim")` or CONVKIT_BACKEND=cudasim asks for it.
  "cuda"     convkit._cuda, the CUDA kernels; device memory (torch CUDA tensors, CuPy arrays).
By default the array's device picks the backend ("cpu" for host memory, "cuda" for device
memory); `use_backend(name)` (a context manager) or the CONVKIT_BACKEND environment variable
forces one. CONVKIT_<NAME>_SO=/path/to/module.so loads a backend's module from another build
(`make test-sanitize` points CONVKIT_CUDASIM_SO at the AddressSanitizer build).

A backend is available when its module is built and can run here: for "cuda" that also needs a
visible CUDA device (a `_cuda` built by nvcc on a machine without a GPU imports fine but reports
device_count() == 0).
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import os
from typing import Dict, Iterator, List, Optional, Tuple

from . import cuda_settings
from ._errors import ConvkitTypeError, ConvkitValueError
from ._params import FLOAT_DTYPES, HALF_DTYPES

# backend name -> (module name, the kind of memory it runs on, whether its kernels take the
# CUDA launch arguments (device, stream) after their own)
_KNOWN = {
    "cpu": ("convkit._cpu", "cpu", False),
    "cudasim": ("convkit._cudasim", "cpu", True),
    "cuda": ("convkit._cuda", "cuda", True),
}

_modules: Dict[str, object] = {}
_load_errors: Dict[str, str] = {}
_device_counts: Dict[str, int] = {}
# The backend use_backend() forces, per context: each thread and each asyncio task sees its own
# (a task copies its creator's context when it is created, and what it sets stays its own). The
# value is a plain string (immutable) and every block restores what it found by its token, so
# interleaved blocks of different tasks cannot mis-nest.
_forced: "contextvars.ContextVar[Optional[str]]" = contextvars.ContextVar("convkit_backend", default=None)


def _load(name: str):
    if name in _modules:
        return _modules[name]
    if name in _load_errors:
        return None
    try:
        override = os.environ.get(f"CONVKIT_{name.upper()}_SO")  # e.g. the ASan build of _cudasim
        if override:
            spec = importlib.util.spec_from_file_location(_KNOWN[name][0], override)
            if spec is None or spec.loader is None:
                raise ImportError(f"CONVKIT_{name.upper()}_SO={override} is not a loadable module")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(_KNOWN[name][0])
        if _KNOWN[name][2]:  # a CUDA module: CONVKIT_CUDA_VARIANT / CONVKIT_CUDA_SYNC, checked
            cuda_settings.apply(module)
        _modules[name] = module
        return module
    except ImportError as e:
        _load_errors[name] = str(e)
        return None


def device_count(name: str = "cuda") -> int:
    """The CUDA devices backend `name`'s module sees (0 when it is not built or has none)."""
    if name not in _device_counts:
        mod = _load(name)
        try:
            _device_counts[name] = int(mod.device_count()) if mod is not None else 0
        except Exception:  # noqa: BLE001 - no driver, driver too old: the module cannot run here
            _device_counts[name] = 0
    return _device_counts[name]


def _unavailable_reason(name: str) -> Optional[str]:
    """None when backend `name` can run here, else why it cannot."""
    if _load(name) is None:
        return f"not built in this install ({_load_errors.get(name, 'not found')})"
    if _KNOWN[name][1] == "cuda" and device_count(name) == 0:
        return "built, but no CUDA device is visible (device_count() is 0)"
    return None


def available_backends() -> List[str]:
    """The backends that can run here, e.g. ["cpu", "cudasim"], or ["cpu", "cudasim", "cuda"] on
    a machine with a GPU."""
    return [name for name in _KNOWN if _unavailable_reason(name) is None]


def _check_name(name: str) -> str:
    if name not in _KNOWN:
        raise ConvkitValueError(f"backend: unknown backend {name!r}; known: {', '.join(_KNOWN)}")
    why = _unavailable_reason(name)
    if why is not None:
        raise ConvkitValueError(
            f"backend: {name!r} is {why}; available: {', '.join(available_backends())}")
    return name


def module(name: str):
    """The compiled module of an available backend (raises ConvkitValueError otherwise)."""
    return _modules[_check_name(name)]


def takes_launch_args(name: str) -> bool:
    """True for the CUDA modules, whose kernels take (device, stream) after their own arguments."""
    return _KNOWN[name][2]


def dtypes(name: str) -> Tuple[str, ...]:
    """The dtype names backend `name`'s kernels take (convolutions, pooling and ReLU alike):
    float32 and float64 everywhere, plus float16 and bfloat16 where the module was built with
    half types (the CUDA modules; float32 accumulation inside)."""
    return FLOAT_DTYPES + (HALF_DTYPES if getattr(module(name), "has_half", False) else ())


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Force a backend inside a with-block: `with convkit.use_backend("cudasim"): ...`.

    The choice belongs to the current context (contextvars): other threads and other asyncio
    tasks keep their own, and leaving the block restores exactly what was there when it began.
    The backward of an op runs on the backend its forward ran on, wherever backward() is called."""
    _check_name(name)
    token = _forced.set(name)
    try:
        yield name
    finally:
        _forced.reset(token)


class running_on:
    """`with running_on(name):` runs a block on backend `name` (already checked): how a backward
    formula runs on the backend its forward ran on (the autograd engine may call it from another
    thread, or after the forward's use_backend block has ended). A class, not a generator: it
    wraps every backward call."""
    __slots__ = ("name", "token")

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> None:
        self.token = _forced.set(self.name)

    def __exit__(self, *exc) -> None:
        _forced.reset(self.token)


def forced_backend() -> Optional[str]:
    """The backend forced by use_backend() or CONVKIT_BACKEND, or None."""
    name = _forced.get()
    if name is not None:
        return name
    env = os.environ.get("CONVKIT_BACKEND")
    return _check_name(env) if env else None


def backend_for(device_type: str) -> str:
    """The backend an op on `device_type` tensors runs on now: the forced one, else the device's."""
    return forced_backend() or ("cuda" if device_type == "cuda" else "cpu")


def is_cuda_backend(name: str) -> bool:
    """True for the backends that run the CUDA kernels ("cuda", and "cudasim" on the emulator)."""
    return _KNOWN[name][2]


def module_for(device_type: str, op: str):
    """(backend name, compiled module) for arrays on `device_type` ("cpu" or "cuda")."""
    name = forced_backend()
    if name is None:
        name = "cuda" if device_type == "cuda" else "cpu"
        _check_name(name)
    elif _KNOWN[name][1] != device_type:
        raise ConvkitTypeError(
            f"{op}: backend {name!r} runs on {_KNOWN[name][1]} memory, but the arrays are on {device_type}")
    return name, _modules[name]
