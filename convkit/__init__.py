"""convkit: hand-written CPU (C++) and CUDA kernels for 2-D convolution (direct, im2col + GEMM,
1x1; on the CPU also blocked, Winograd and a naive reference), max and average pooling and ReLU, forward and
backward, as drop-in PyTorch ops and layers that also take NumPy and CuPy arrays. Backends:
"cpu", "cuda" (torch CUDA tensors, CuPy arrays) and "cudasim" (the CUDA kernels on a CPU
emulator, for host memory). See README.md.
"""
from ._backend import available_backends, use_backend
from ._errors import ConvkitError, ConvkitMemoryError, ConvkitNotImplementedError, ConvkitTypeError, ConvkitValueError
from ._algos import CONV_ALGOS, benchmark_cache_size, set_benchmark_cache_size
from ._arrays import set_workspace_cap, workspace_cap
from ._kernels import get_num_threads, set_num_threads
from . import cuda_settings, flops, functional

__version__ = "0.1.0"

#: When True, algo="auto" times the applicable algorithms once per shape and caches the fastest
#: (like torch.backends.cudnn.benchmark), for at most benchmark_cache_size() shapes (least
#: recently used dropped). When False, a heuristic by shape picks.
benchmark = False

try:  # the nn layers need torch; functional works on NumPy arrays without it
    from . import nn
except ImportError:  # pragma: no cover
    nn = None

__all__ = [
    "available_backends", "use_backend", "set_num_threads", "get_num_threads", "benchmark",
    "workspace_cap", "set_workspace_cap", "benchmark_cache_size", "set_benchmark_cache_size",
    "ConvkitError", "ConvkitValueError", "ConvkitTypeError", "ConvkitMemoryError", "ConvkitNotImplementedError",
    "CONV_ALGOS",
    "functional", "nn", "flops", "cuda_settings",
]
