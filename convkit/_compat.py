"""Every private torch API convkit uses, in one place: a torch upgrade that moves one touches
this file only. Each name is bound to torch's own function (no wrapper on the hot paths: the
eager fast path asks several of these per call). All exist in torch 2.11 (the GPU machine's)
and 2.13.

Dispatcher and autograd internals (convkit._autograd's Autograd kernels, which redispatch below
autograd the way torch.library's register_autograd does), the state the eager fast path must
see to stay out of the way (modes, torch.func transforms, jit tracing, autocast, forward AD),
the autocast dispatch keys of convkit::conv2d's autocast kernels, and torch's rule for an
output's memory format.
"""
from __future__ import annotations

import torch
import torch.autograd.forward_ad as _fwad
from torch._prims_common import suggest_memory_format  # noqa: F401  (torch's memory-format rule)

_C = torch._C

# ---- what is active: modes, transforms, tracing, autocast ---------------------------------------
torch_dispatch_modes = _C._len_torch_dispatch_stack           # () -> int
torch_function_modes = _C._len_torch_function_stack           # () -> int
functorch_active = _C._are_functorch_transforms_active        # () -> bool
jit_tracing_state = _C._get_tracing_state                     # () -> state or None
any_autocast_enabled = _C._is_any_autocast_enabled            # () -> bool
is_legacy_batched = _C._functorch.is_legacy_batchedtensor     # (Tensor) -> bool: torch's older vmap
fwd_grad_enabled = _C._is_fwd_grad_enabled                    # () -> bool


def forward_ad_level_open() -> bool:
    """Whether a torch.autograd.forward_ad.dual_level is entered (cheap: a module attribute)."""
    return _fwad._current_level >= 0


def only_vmap_layers() -> bool:
    """Whether every active torch.func transform is a vmap (no grad or jvp level)."""
    vmap = _C._functorch.TransformType.Vmap
    return all(i.key() == vmap for i in _C._functorch.get_interpreter_stack() or ())


def batching_key_excluded() -> bool:
    """True inside a custom op's registered vmap rule (torch.func's batching key excluded while
    its vmap level is still on the stack)."""
    return _C._dispatch_tls_is_dispatch_key_excluded(_C.DispatchKey.FuncTorchBatched)


def example_value(size):
    """The example value a symbolic size was traced from (its "hint"), read without a guard on
    it; None when it has none (an unbacked size) or torch stores it elsewhere."""
    v = getattr(getattr(size, "node", None), "hint", None)
    return v if type(v) is int else None


# ---- dispatching below autograd ---------------------------------------------------------------
any_requires_grad = _C._any_requires_grad                     # (*args) -> bool, tensors anywhere in args
BelowAutograd = _C._AutoDispatchBelowAutograd                 # context manager
AFTER_AUTOGRAD = _C._after_autograd_keyset                    # keyset & this: the keys below autograd


# ---- autocast kernels -------------------------------------------------------------------------
autocast_available = _C._is_autocast_available                # (device_type) -> bool


ExcludeKeys = _C._ExcludeDispatchKeyGuard                     # (DispatchKeySet) -> context manager


def autocast_key(device_type: str):
    """(name of device_type's Autocast dispatch key, a DispatchKeySet of it for ExcludeKeys)."""
    name = "Autocast" + _C._dispatch_key_for_device(device_type)
    return name, _C.DispatchKeySet(getattr(_C.DispatchKey, name))
