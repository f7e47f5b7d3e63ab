"""convkit's exceptions. torch raises RuntimeError for bad convolution arguments, so every convkit
error is a RuntimeError (drop-in code that catches it keeps working) and also a ValueError,
TypeError or NotImplementedError as fits."""


class ConvkitError(RuntimeError):
    """Base of convkit's errors (a RuntimeError, as torch's)."""


class ConvkitValueError(ConvkitError, ValueError):
    """A bad value: shape, size, stride, padding, groups, algorithm name."""


class ConvkitTypeError(ConvkitError, TypeError):
    """A bad type: dtype, array kind, mixed devices or frameworks."""


class ConvkitNotImplementedError(ConvkitError, NotImplementedError):
    """An op the selected backend's compiled module does not provide (yet), e.g. conv2d on a
    CUDA module built before its convolution kernels."""


class ConvkitMemoryError(ConvkitError, MemoryError):
    """An allocation a kernel needed failed (per-thread scratch, a padded copy): the message says
    how many bytes and for what."""
