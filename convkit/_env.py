"""convkit's environment variables: each one named once here, with its accepted values, and
checked when convkit is imported, so a bad value fails at once with a message that names the
variable and what it accepts (never as a bare int() error deep inside, never silently ignored).

The runtime settings (read by convkit and its compiled modules):

  CONVKIT_WORKSPACE_CAP   the most bytes a convolution's workspace may take: an integer with an
                          optional binary suffix, 4096, 512K, 64M, 1G (= GiB; KiB/MiB/GiB/TiB and
                          KB/MB/GB/TB read the same), 1 byte to 2^62; default 64M
  CONVKIT_POISON          1/0 (true/false, yes/no, on/off): fill outputs and workspaces with NaN
                          before every kernel (the tests do); default off
  CONVKIT_BACKEND         cpu, cudasim or cuda: force a backend (as convkit.use_backend)
  CONVKIT_SIM_THREADS     OS threads the CUDA emulator runs blocks on, 1 to 256
  CONVKIT_SIM_SEED        the emulator's schedule-shuffle seed, 0 to 2^64 - 1
  CONVKIT_SIM_STACK_KB    the emulator's fiber stack in KiB, 16 to 1048576
  CONVKIT_SIM_RACECHECK   1/0: the race detector on or off, in its build (make test-racecheck; default on)
  CONVKIT_GEMM_KC/MC/NC   CPU GEMM cache-block overrides (tuning), 1 to 1048576
  CONVKIT_BLOCKED_TILE    "OCB,UR": force the CPU blocked convolution's register tile (tuning)
  CONVKIT_CUDA_VARIANT    force the CUDA kernels' size-picked variants, e.g. gemm_tile=big,splitk=on
  CONVKIT_CUDA_SYNC       1: synchronize and check after every CUDA launch (debugging)
                          (both: convkit/cuda_settings.py, which also sets them from Python)
  CONVKIT_<BACKEND>_SO    load a backend's module from another build (e.g. the ASan one)

The compiled modules read the SIM_*, GEMM_* and BLOCKED_TILE variables themselves, once, when
they first need them; changing them after `import convkit` is not supported. Names starting
with CONVKIT_ that convkit does not know (a typo, say CONVKIT_BACKNED) get a warning that
suggests the closest known name. Build variables (setup.py) and the test and benchmark ones are
known, and checked where they are read.
"""
from __future__ import annotations

import difflib
import os
import re
import warnings
from typing import Callable, Dict, Mapping, Tuple

from . import cuda_settings
from ._errors import ConvkitValueError
from ._params import parse_flag  # noqa: F401  (also this module's: CONVKIT_POISON and others parse with it)

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str, lo: int = 1, hi: int = 1 << 62) -> int:
    """Bytes from '4096', '512K', '64M', '1G', '1GiB', '2TB' (binary multiples); ValueError if
    it is none of these or outside [lo, hi]."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise ValueError("not a size")
    v = int(m.group(1)) * _SUFFIX[m.group(2).upper()]
    if not lo <= v <= hi:
        raise ValueError("out of range")
    return v


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not re.fullmatch(r"\s*\d+\s*", text):
            raise ValueError("not a non-negative integer")
        v = int(text)
        if not lo <= v <= hi:
            raise ValueError("out of range")
        return v
    return parse


def _backend(text: str) -> str:
    if text not in ("cpu", "cudasim", "cuda"):
        raise ValueError("unknown backend")
    return text


def _cuda_variant(text: str):
    # (cuda_settings' own parser and message: the accepted keys and values)
    return cuda_settings.parse_variant(text)


def _cuda_sync(text: str) -> bool:
    # (cuda_settings' own message, the one CONVKIT_CUDA_SYNC's users see)
    return cuda_settings.parse_sync(text)


def _tile(text: str) -> Tuple[int, int]:
    m = re.fullmatch(r"\s*(\d{1,2})\s*,\s*(\d{1,2})\s*", text)
    if not m or min(int(m.group(1)), int(m.group(2))) < 1:
        raise ValueError("not OCB,UR")
    return int(m.group(1)), int(m.group(2))


# name -> (parser of a non-empty value, value when unset or empty, accepted values in words)
_RUNTIME: Dict[str, Tuple[Callable[[str], object], object, str]] = {
    "CONVKIT_WORKSPACE_CAP": (parse_size, 64 << 20,
                              "a size in bytes from 1 to 2^62, with an optional binary suffix: 4096, 512K, 64M, 1G"),
    "CONVKIT_POISON": (parse_flag, False, "1/0, true/false, yes/no, on/off (or empty)"),
    "CONVKIT_BACKEND": (_backend, None, "cpu, cudasim or cuda (or empty)"),
    "CONVKIT_SIM_THREADS": (_int_in(1, 256), None, "an integer from 1 to 256"),
    "CONVKIT_SIM_SEED": (_int_in(0, (1 << 64) - 1), 0, "an integer from 0 to 2^64 - 1"),
    "CONVKIT_SIM_STACK_KB": (_int_in(16, 1 << 20), None, "an integer from 16 to 1048576 (KiB)"),
    "CONVKIT_SIM_RACECHECK": (parse_flag, True, "1/0, true/false, yes/no, on/off (or empty)"),
    "CONVKIT_GEMM_KC": (_int_in(1, 1 << 20), None, "an integer from 1 to 1048576"),
    "CONVKIT_GEMM_MC": (_int_in(1, 1 << 20), None, "an integer from 1 to 1048576"),
    "CONVKIT_GEMM_NC": (_int_in(1, 1 << 20), None, "an integer from 1 to 1048576"),
    "CONVKIT_CUDA_VARIANT": (_cuda_variant, None, "comma-separated key=value items (convkit/cuda_settings.py)"),
    "CONVKIT_CUDA_SYNC": (_cuda_sync, False, "0/1, false/true, off/on, no/yes (or empty)"),
    "CONVKIT_BLOCKED_TILE": (_tile, None, "two integers 'OCB,UR', one of the blocked kernel's register tiles "
                                          "(docs/CPU.md lists them), e.g. 4,6"),
}
# Known, read elsewhere: module overrides, build options (setup.py), tests, benchmarks, gpu_check.
_ELSEWHERE = {
    "CONVKIT_CPU_SO", "CONVKIT_CUDASIM_SO", "CONVKIT_CUDA_SO",
    "CONVKIT_CUDA", "CONVKIT_NATIVE", "CONVKIT_CUDA_ARCHS", "CONVKIT_SIM", "CONVKIT_SIM_ASAN", "CONVKIT_BUILD_TYPE",
    "CONVKIT_BUILD_DIR",
    "CONVKIT_TEST_BACKENDS", "CONVKIT_TEST_SANITIZE", "CONVKIT_HOSTILE_TIMEOUT",
    "CONVKIT_BENCH_DEVICE", "CONVKIT_BENCH_BATCH", "CONVKIT_BENCH_THREADS", "CONVKIT_BENCH_ROUNDS", "CONVKIT_COMMIT",
}


def register(name: str, parser: Callable[[str], object], default: object, accepted: str) -> None:
    """Adds a runtime variable (for settings defined in other modules) and checks its current value."""
    _RUNTIME[name] = (parser, default, accepted)
    get(name)


def default(name: str):
    return _RUNTIME[name][1]


def parse(name: str, raw: str):
    """The value of variable `name` given as `raw`; ConvkitValueError naming it and its accepted
    values when `raw` is not one of them."""
    parser, dflt, accepted = _RUNTIME[name]
    if raw is None or (raw == "" and parser not in (parse_flag, _cuda_sync)):
        return dflt
    try:
        return parser(raw)
    except ConvkitValueError:  # a parser that names the variable itself
        raise
    except (ValueError, OverflowError):
        raise ConvkitValueError(f"{name}={raw!r} is not valid: expected {accepted}") from None


def get(name: str, environ: Mapping[str, str] = os.environ):
    return parse(name, environ.get(name))


def check_all(environ: Mapping[str, str] = os.environ) -> None:
    """Checks every runtime variable that is set (raising on the first bad one) and warns about
    CONVKIT_* names convkit does not know."""
    known = set(_RUNTIME) | _ELSEWHERE
    for name in sorted(environ):
        if not name.startswith("CONVKIT_"):
            continue
        if name in _RUNTIME:
            parse(name, environ[name])
        elif name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            warnings.warn(f"convkit: unknown environment variable {name} is ignored{hint}", RuntimeWarning,
                          stacklevel=3)
