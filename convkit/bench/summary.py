"""What a run's rows add up to: geometric means of ours/reference over groups of rows
(summarize), GoogLeNet's layers added up at convkit's fastest algorithm (totals) and as the
references run them (ref_totals)."""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import convkit.bench.layers as L
from convkit.bench.tables import ref_label

__all__ = ["ref_key", "summarize", "totals", "ref_totals"]


def _geomean(xs: Sequence[Optional[float]]) -> Optional[float]:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def _timed(rows: Sequence[Dict[str, object]]) -> List[Dict[str, object]]:
    """Rows where both sides were timed."""
    return [r for r in rows if r.get("status") == "ok" and r.get("ours_ms") and r.get("ref_ms")]


def ref_key(r: Dict[str, object]) -> Tuple[Optional[str], Optional[bool]]:
    return (r.get("ref"), r.get("ref_tf32"))


def _best_per_layer(rows: Sequence[Dict[str, object]]) -> Dict[Tuple, Dict[str, object]]:
    """Per (layer, pass, batch, reference and its setting): convkit's fastest algorithm against
    the reference's fastest time on that layer. The reference was timed beside each algorithm,
    so both sides are a minimum over as many medians: picking our best of three noisy numbers
    against one of the reference's would flatter us."""
    groups: Dict[Tuple, List[Dict[str, object]]] = {}
    for r in _timed(rows):
        groups.setdefault((r["layer"], r["pass"], r.get("batch")) + ref_key(r), []).append(r)
    best = {}
    for k, rs in groups.items():
        fastest = min(rs, key=lambda r: r["ours_ms"])
        ref_ms = min(r["ref_ms"] for r in rs)
        best[k] = dict(fastest, ref_ms=ref_ms, ratio=fastest["ours_ms"] / ref_ms)
    return best


def _ref_suffix(ref: Optional[str], tf32: Optional[bool]) -> str:
    """" vs cudnn fp32" and the like in a summary group's name; nothing for the CPU's and the
    pools' one reference."""
    return "" if ref in (None, "torch-cpu", "torch-cuda") else f" vs {ref_label(ref, tf32)}"


def summarize(rows: Sequence[Dict[str, object]], gpu: bool = False) -> List[Dict[str, object]]:
    """Geometric means of ours/reference over groups of rows (< 1: convkit is faster): per pass
    (and batch, when the run has several), each conv algorithm, the best algorithm per layer,
    the 1x1 layers, the depthwise layers, the pools, the ReLUs; convolutions once per reference
    (cuDNN with TF32 off, on, CuPy's im2col + cuBLAS). gpu=True also gives each group the
    geometric mean of the fraction of the ceiling that ours and the reference reach
    (ours_pct_of_ceiling, ref_pct_of_ceiling: of the copy bandwidth for pools and ReLU, of the
    torch.mm rate for convolutions) and adds, per pass and batch, how CuPy's im2col + cuBLAS compares with cuDNN (kind "ref-vs-ref": cupy time / cudnn time).
    Each entry has the group's name and its fields: op, pass, batch, algo, kind ("algo",
    "best", "1x1", "depthwise", "ref-vs-ref", "all"), ref, ref_tf32."""
    by_name = L.layers_by_name()
    ok = _timed(rows)
    out: List[Dict[str, object]] = []
    batches = list(dict.fromkeys(r.get("batch") for r in rows))
    several = len(batches) > 1

    def add(label, rs, **fields):
        if not rs:
            return
        entry = {"group": label, "geomean_ratio": _geomean([r["ratio"] for r in rs]), "n": len(rs)}
        if gpu:
            entry["ours_pct_of_ceiling"] = _geomean([r.get("pct_of_ceiling") for r in rs])
            entry["ref_pct_of_ceiling"] = _geomean([r.get("ref_pct_of_ceiling") for r in rs])
        entry.update(fields)
        if entry["geomean_ratio"] is not None:
            out.append(entry)

    def best_per_layer(rs):
        return list(_best_per_layer(rs).values())

    def is_kind(name, attr):
        return name in by_name and getattr(by_name[name], attr)

    passes = list(dict.fromkeys(r["pass"] for r in rows))
    refs = list(dict.fromkeys(ref_key(r) for r in rows if r["op"] == "conv2d")) or [(None, None)]
    for p in passes:
        for b in batches:
            at = f", batch {b}" if several else ""
            base = {"pass": p, "batch": b}
            for ref, s in refs:
                cp = [r for r in ok if r["op"] == "conv2d" and r["pass"] == p and r.get("batch") == b
                      and ref_key(r) == (ref, s)]
                suffix = _ref_suffix(ref, s)
                fields = dict(base, op="conv2d", ref=ref, ref_tf32=s)
                for a in dict.fromkeys(r["algo"] for r in cp):
                    add(f"conv {p}{at}, algo={a}{suffix}", [r for r in cp if r["algo"] == a],
                        kind="algo", algo=a, **fields)
                add(f"conv {p}{at}, best algo per layer{suffix}", best_per_layer(cp),
                    kind="best", algo="best", **fields)
                add(f"1x1 convs {p}{at}, best algo per layer{suffix}",
                    best_per_layer([r for r in cp if is_kind(r["layer"], "is_1x1")]),
                    kind="1x1", algo="best", **fields)
                add(f"depthwise convs {p}{at}, best algo per layer{suffix}",
                    best_per_layer([r for r in cp if is_kind(r["layer"], "is_depthwise")]),
                    kind="depthwise", algo="best", **fields)
            if gpu:
                # the classic alternative against cuDNN, layer by layer (one time per layer each)
                per: Dict[Tuple, Dict[str, float]] = {}
                for r in rows:
                    if r["op"] == "conv2d" and r["pass"] == p and r.get("batch") == b and r.get("ref_ms"):
                        d = per.setdefault(ref_key(r), {})
                        d[r["layer"]] = min(d.get(r["layer"], math.inf), r["ref_ms"])
                cupy = per.get(("cupy-im2col-cublas", False)) or per.get(("cupy-im2col-cublas", None))
                for key in (("cudnn", False), ("cudnn", True), ("cudnn", None)):
                    if cupy and key in per:
                        common = [l for l in cupy if l in per[key]]
                        if common:
                            out.append({"group": f"cupy im2col+cublas / {ref_label(*key)} conv {p}{at}",
                                        "geomean_ratio": _geomean([cupy[l] / per[key][l] for l in common]),
                                        "n": len(common), "op": "conv2d", "pass": p, "batch": b,
                                        "kind": "ref-vs-ref", "algo": None, "ref": key[0],
                                        "ref_tf32": key[1], "numerator": "cupy-im2col-cublas"})
            fields = dict(base, kind="all", algo="direct", ref=None, ref_tf32=None)
            add(f"pools {p}{at}", [r for r in ok if r["op"] in ("max_pool2d", "avg_pool2d")
                                   and r["pass"] == p and r.get("batch") == b], op="pool", **fields)
            add(f"relu {p}{at}", [r for r in ok if r["op"] == "relu" and r["pass"] == p
                                  and r.get("batch") == b], op="relu", **fields)
    return out


def totals(rows: Sequence[Dict[str, object]]) -> List[Dict[str, object]]:
    """Per pass and batch, the time of GoogLeNet's convolution and pooling layers (the lecture's,
    MobileNet's and the ReLUs excluded) added up, each layer at its fastest convkit algorithm,
    against the reference's fastest time for the same layers (on the GPU: cuDNN with TF32 off):
    how a whole network's convolutions and pools would fare. Only layers whose every case passed
    count (on the GPU, convolutions without a convkit kernel are skipped layers)."""
    fam = {lay.name: lay.family for lay in L.LAYERS}
    out = []
    for p in dict.fromkeys(r["pass"] for r in rows):
        for b in dict.fromkeys(r.get("batch") for r in rows if r["pass"] == p):
            rs = [r for r in rows if r["pass"] == p and r.get("batch") == b
                  and fam.get(r["layer"], "googlenet") == "googlenet" and r["op"] != "relu"
                  and not r.get("ref_tf32") and r.get("ref") in (None, "torch-cpu", "torch-cuda", "cudnn")]
            bad = {r["layer"] for r in rs if r.get("status") != "ok"}
            best = _best_per_layer([r for r in rs if r["layer"] not in bad])
            if best:
                ours = sum(r["ours_ms"] for r in best.values())
                ref = sum(r["ref_ms"] for r in best.values())
                out.append({"pass": p, "batch": b, "layers": len(best), "ours_ms": ours,
                            "ref_ms": ref, "ratio": ours / ref, "skipped_layers": sorted(bad)})
    return out


def ref_totals(rows: Sequence[Dict[str, object]]) -> List[Dict[str, object]]:
    """The references' time over GoogLeNet's convolutions and pools added up (the lecture's and
    MobileNet's layers and the ReLUs excluded), per pass, batch and reference (cuDNN with TF32
    off, on, CuPy; the pools, ref torch-cuda, count in each): the network's layers as torch (or
    CuPy) runs them on this GPU. A reference that has no time for some convolution layer of the
    pass has no total."""
    fam = {lay.name: lay.family for lay in L.LAYERS}
    out = []
    for p in dict.fromkeys(r["pass"] for r in rows):
        for b in dict.fromkeys(r.get("batch") for r in rows if r["pass"] == p):
            rs = [r for r in rows if r["pass"] == p and r.get("batch") == b and r["op"] != "relu"
                  and fam.get(r["layer"], "googlenet") == "googlenet"]
            conv_layers = {r["layer"] for r in rs if r["op"] == "conv2d"}
            conv_refs = list(dict.fromkeys(ref_key(r) for r in rs if r["op"] == "conv2d"))
            pool_rows = [r for r in rs if r["op"] != "conv2d" and r.get("ref_ms") is not None]
            for ref, s in conv_refs or [(None, None)]:
                per_layer: Dict[str, float] = {}
                for r in rs:
                    if r["op"] == "conv2d" and ref_key(r) == (ref, s) and r.get("ref_ms") is not None:
                        per_layer[r["layer"]] = min(per_layer.get(r["layer"], math.inf), r["ref_ms"])
                if ref is not None and len(per_layer) < len(conv_layers):
                    continue
                for r in pool_rows:
                    per_layer[r["layer"]] = min(per_layer.get(r["layer"], math.inf), r["ref_ms"])
                if per_layer:
                    out.append({"pass": p, "batch": b, "ref": ref or "torch-cuda", "ref_tf32": s,
                                "layers": len(per_layer), "ref_ms": sum(per_layer.values())})
    return out
