"""Backends and the compiled modules behind them.

A backend is a compiled kernel module: "cpu" (convkit._cpu, the C++ kernels), and with the CUDA
issues "cudasim" (the CUDA sources on the CPU emulator) and "cuda". By default the array's device
picks the backend; `use_backend(name)` (a context manager) or the CONVKIT_BACKEND environment
variable forces one. CONVKIT_<NAME>_SO=/path/to/module.so loads a backend's module from
another build (`make test-sanitize` points CONVKIT_CUDASIM_SO at the AddressSanitizer build).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import threading
from typing import Dict, Iterator, List, Optional

from ._errors import ConvkitTypeError, ConvkitValueError

# backend name -> (module name, the kind of memory it runs on)
_KNOWN = {"cpu": ("convkit._cpu", "cpu"), "cudasim": ("convkit._cudasim", "cpu"), "cuda": ("convkit._cuda", "cuda")}
_modules: Dict[str, object] = {}
_load_errors: Dict[str, str] = {}
_local = threading.local()


def _load(name: str):
    if name in _modules:
        return _modules[name]
    if name in _load_errors:
        return None
    try:
        override = os.environ.get(f"CONVKIT_{name.upper()}_SO")  # e.g. the ASan build of _cudasim
        if override:
            spec = importlib.util.spec_from_file_location(_KNOWN[name][0], override)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _modules[name] = module
        else:
            _modules[name] = importlib.import_module(_KNOWN[name][0])
        return _modules[name]
    except ImportError as e:
        _load_errors[name] = str(e)
        return None


def available_backends() -> List[str]:
    """The backends built into this install, e.g. ["cpu"]."""
    return [name for name in _KNOWN if _load(name) is not None]


def _check_name(name: str) -> str:
    if name not in _KNOWN:
        raise ConvkitValueError(f"backend: unknown backend {name!r}; known: {', '.join(_KNOWN)}")
    if _load(name) is None:
        raise ConvkitValueError(
            f"backend: {name!r} is not built in this install ({_load_errors.get(name, 'not found')}); "
            f"available: {', '.join(available_backends())}")
    return name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Force a backend inside a with-block: `with convkit.use_backend("cpu"): ...`."""
    _check_name(name)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(name)
    try:
        yield name
    finally:
        stack.pop()


def forced_backend() -> Optional[str]:
    """The backend forced by use_backend() or CONVKIT_BACKEND, or None."""
    stack = getattr(_local, "stack", None)
    if stack:
        return stack[-1]
    env = os.environ.get("CONVKIT_BACKEND")
    return _check_name(env) if env else None


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
