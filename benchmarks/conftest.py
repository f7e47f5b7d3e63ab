"""pytest-benchmark suites over convkit.bench.layers (the same table as `convkit bench`).

  pytest benchmarks/ --benchmark-json=benchmarks/results/<name>.json
  pytest benchmarks/ --benchmark-compare            # against the last saved run (--benchmark-autosave)
  pytest benchmarks/ -k "3a and fwd"                # a subset

Environment: CONVKIT_BENCH_BATCH (batch size, default 2), CONVKIT_BENCH_ROUNDS (timed rounds per
case, default 5), CONVKIT_BENCH_THREADS (threads for torch and convkit alike, default torch's).
Not part of `make test` (tests/ is the test suite).
"""
import os

import pytest


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise pytest.UsageError(f"{name} must be a positive integer, got {raw!r}")
    if value < 1:
        raise pytest.UsageError(f"{name} must be a positive integer, got {raw!r}")
    return value


@pytest.fixture(scope="session")
def bench_batch() -> int:
    return _env_int("CONVKIT_BENCH_BATCH", 2)


@pytest.fixture(scope="session")
def bench_rounds() -> int:
    return _env_int("CONVKIT_BENCH_ROUNDS", 5)


@pytest.fixture(scope="session", autouse=True)
def bench_threads():
    """torch and convkit run at the same thread count for the whole session."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("convkit.functional", reason="convkit's compiled kernels are not built")
    from convkit.bench.runner import set_threads
    before = torch.get_num_threads()
    n = set_threads(_env_int("CONVKIT_BENCH_THREADS", before))
    yield n
    torch.set_num_threads(before)


@pytest.hookimpl(optionalhook=True)   # pytest-benchmark may be absent
def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what the numbers depend on beside the CPU pytest-benchmark already names."""
    import torch
    from convkit.bench.runner import cpu_model_name
    machine_info["cpu_model"] = cpu_model_name()
    machine_info["torch"] = torch.__version__
    machine_info["convkit_bench_batch"] = _env_int("CONVKIT_BENCH_BATCH", 2)
    machine_info["threads"] = _env_int("CONVKIT_BENCH_THREADS", torch.get_num_threads())
    try:
        from convkit import _cpu
        machine_info["convkit_simd"] = _cpu.simd_isa()
    except Exception:
        pass
