"""The machine a `convkit bench` run describes in its report: CPU model, git commit of the tree,
the thread count given to torch and convkit and the GPU's properties."""
from __future__ import annotations

import os
import platform
import subprocess
from typing import Dict, Optional, Tuple

__all__ = ["cpu_model_name", "git_commit", "set_threads", "gpu_info"]


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> Tuple[Optional[str], Optional[bool]]:
    """(HEAD's sha, whether the tree has uncommitted changes) of the checkout convkit runs from;
    outside git (a copy of the tree on a GPU machine), CONVKIT_COMMIT's value and None, or
    (None, None)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    fallback = (os.environ.get("CONVKIT_COMMIT") or None, None)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        if sha.returncode != 0:
            return fallback
        st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                            capture_output=True, text=True, timeout=10)
        return sha.stdout.strip(), bool(st.stdout.strip()) if st.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return fallback


def set_threads(n: int) -> int:
    """Give torch and convkit the same thread count; returns it."""
    import torch
    import convkit
    torch.set_num_threads(n)
    convkit.set_num_threads(n)
    got = (torch.get_num_threads(), convkit.get_num_threads())
    if got != (n, n):
        raise RuntimeError(f"asked both torch and convkit for {n} threads, got {got}")
    return n


def gpu_info(device, cuda=None) -> Dict[str, object]:
    """Name, capability, multiprocessors, memory and L2 of `device`, as torch reports them."""
    import torch
    cuda = cuda if cuda is not None else torch.cuda
    p = cuda.get_device_properties(device)
    info: Dict[str, object] = {"gpu": p.name, "capability": f"{p.major}.{p.minor}",
                               "sm_count": getattr(p, "multi_processor_count", None),
                               "memory_bytes": getattr(p, "total_memory", None),
                               "l2_bytes": getattr(p, "L2_cache_size", None)}
    info["cuda"] = getattr(torch.version, "cuda", None)
    try:
        info["cudnn"] = torch.backends.cudnn.version()
    except Exception:  # noqa: BLE001
        info["cudnn"] = None
    return info
