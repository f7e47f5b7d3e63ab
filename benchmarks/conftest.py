"""pytest-benchmark suites over convkit.bench.layers (the same table as `convkit bench`).

  pytest benchmarks/ --benchmark-json=benchmarks/results/<name>.json
  pytest benchmarks/ --benchmark-compare            # against the last saved run (--benchmark-autosave)
  pytest benchmarks/ -k "3a and fwd"                # a subset
  CONVKIT_BENCH_DEVICE=cuda pytest benchmarks/      # on the GPU

Environment: CONVKIT_BENCH_DEVICE (cpu or cuda[:N], default cpu), CONVKIT_BENCH_BATCH (batch
size, default 2 on the CPU, 32 on the GPU), CONVKIT_BENCH_ROUNDS (timed rounds per case, default
5; on the GPU also the CUDA-event samples, at least 10), CONVKIT_BENCH_THREADS (threads for torch
and convkit alike, default torch's). Not part of `make test` (tests/ is the test suite).
"""
import os

import pytest

DEVICE = os.environ.get("CONVKIT_BENCH_DEVICE", "") or "cpu"


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


def pytest_configure(config):
    """CONVKIT_BENCH_DEVICE=cuda without a GPU stops the session before any test runs."""
    if DEVICE == "cpu":
        return
    try:
        import torch
    except ImportError:
        raise pytest.UsageError(f"CONVKIT_BENCH_DEVICE={DEVICE!r} needs torch")
    if not DEVICE.startswith("cuda") or not torch.cuda.is_available():
        raise pytest.UsageError(f"CONVKIT_BENCH_DEVICE={DEVICE!r}: expected cpu or cuda[:N] with a "
                                f"visible GPU (torch.cuda.is_available() is {torch.cuda.is_available()})")


def _default_batch() -> int:
    return 32 if DEVICE.startswith("cuda") else 2


@pytest.fixture(scope="session")
def bench_device() -> str:
    """The device the suite runs on, "cpu" or "cuda:N"."""
    if DEVICE == "cpu":
        return DEVICE
    torch = pytest.importorskip("torch")
    d = torch.device(DEVICE)   # pytest_configure checked that it is there
    index = torch.cuda.current_device() if d.index is None else d.index
    torch.cuda.set_device(index)
    return f"cuda:{index}"


@pytest.fixture(scope="session")
def cuda_timer(bench_device):
    """The CUDA-event timer `convkit bench --device cuda` uses (convkit/bench/timing.py), with
    cudnn.benchmark on for the session, as there."""
    torch = pytest.importorskip("torch")
    from convkit.bench.timing import CudaTimer
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    yield CudaTimer(bench_device)
    torch.backends.cudnn.benchmark = before


@pytest.fixture(scope="session")
def bench_batch() -> int:
    return _env_int("CONVKIT_BENCH_BATCH", _default_batch())


@pytest.fixture(scope="session")
def bench_rounds() -> int:
    return _env_int("CONVKIT_BENCH_ROUNDS", 5)


@pytest.fixture(scope="session", autouse=True)
def bench_threads():
    """torch and convkit run at the same thread count for the whole session."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("convkit.functional", reason="convkit's compiled kernels are not built")
    from convkit.bench.env import set_threads
    before = torch.get_num_threads()
    n = set_threads(_env_int("CONVKIT_BENCH_THREADS", before))
    yield n
    torch.set_num_threads(before)


@pytest.hookimpl(optionalhook=True)   # pytest-benchmark may be absent
def pytest_benchmark_update_machine_info(config, machine_info):
    """Record what the numbers depend on beside the CPU pytest-benchmark already names."""
    import torch
    from convkit.bench.env import cpu_model_name
    machine_info["cpu_model"] = cpu_model_name()
    machine_info["torch"] = torch.__version__
    machine_info["convkit_bench_device"] = DEVICE
    machine_info["convkit_bench_batch"] = _env_int("CONVKIT_BENCH_BATCH", _default_batch())
    if DEVICE.startswith("cuda") and torch.cuda.is_available():
        from convkit.bench.env import gpu_info
        machine_info.update({f"gpu_{k}" if k != "gpu" else k: v
                             for k, v in gpu_info(torch.device(DEVICE)).items()})
    machine_info["threads"] = _env_int("CONVKIT_BENCH_THREADS", torch.get_num_threads())
    try:
        from convkit import _cpu
        machine_info["convkit_simd"] = _cpu.simd_isa()
    except Exception:
        pass
