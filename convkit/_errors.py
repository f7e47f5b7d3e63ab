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
    """A call convkit does not support: torch.func transforms over a raw torch.ops.convkit op
    (their derivatives are applied by convkit.functional)."""


class ConvkitMemoryError(ConvkitError, MemoryError):
    """Memory convkit cannot get: an output, a workspace or scratch larger than what the allocator
    gives or than the workspace cap allows. The message says how many bytes and for what."""
