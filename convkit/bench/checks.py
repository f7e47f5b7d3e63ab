"""The numerical check every benchmark case passes before it is timed: convkit's results against
torch's in float64 on the same values, with a tolerance set by torch's own error in the dtype."""
from __future__ import annotations

import math
from typing import Dict, Tuple

from convkit.bench.layer import Layer, LayerInputs

__all__ = ["TOLERANCE", "tensor_errors", "check_layer"]


# A layer's result passes when its error relative to the largest reference magnitude is within
# this, or within 10x torch's own error in the same dtype (both against a float64 reference).
TOLERANCE = {"float32": 1e-4, "float64": 1e-10, "float16": 2e-3, "bfloat16": 1.6e-2}


def tensor_errors(got: Dict[str, object], ref: Dict[str, object]) -> Tuple[float, float, str]:
    """(max abs error, max error relative to the largest |ref|, worst tensor's name) over the
    tensors of a pass; inf when a tensor is missing, has the wrong shape, or is not finite."""
    import torch
    worst_abs, worst_rel, worst = 0.0, 0.0, ""
    for key, r in ref.items():
        g = got.get(key)
        if g is None or tuple(g.shape) != tuple(r.shape):
            return math.inf, math.inf, key
        g64, r64 = g.to(torch.float64), r.to(torch.float64)
        if not bool(torch.isfinite(g64).all()):
            return math.inf, math.inf, key
        err = (g64 - r64).abs().max().item() if r64.numel() else 0.0
        scale = r64.abs().max().item() if r64.numel() else 0.0
        rel = err / scale if scale > 0 else err
        if rel > worst_rel or not worst:
            worst_rel, worst = rel, key
        worst_abs = max(worst_abs, err)
    return worst_abs, worst_rel, worst


def check_layer(layer: Layer, inputs: LayerInputs, pass_: str, algo: str,
                dtype: str) -> Dict[str, object]:
    """Run convkit's pass once and compare everything it computes (output; for fwd+bwd also
    grad input, grad weight, grad bias) with torch's in float64 on the same values. torch's own
    error in `dtype` is reported beside ours for scale."""
    import torch
    ref64 = layer.results(inputs.to(torch.float64), pass_, "torch")
    ours = layer.results(inputs, pass_, "convkit", algo)
    ref_same = layer.results(inputs, pass_, "torch")
    abs_err, rel_err, worst = tensor_errors(ours, ref64)
    _, ref_rel, _ = tensor_errors(ref_same, ref64)
    tol = max(TOLERANCE[dtype], 10 * ref_rel)
    return {"ok": bool(rel_err <= tol), "max_abs_err": abs_err, "max_rel_err": rel_err,
            "worst": worst, "ref_rel_err": ref_rel, "tol": tol}
