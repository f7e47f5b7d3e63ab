"""convkit.viz: what a CNN sees, and what a benchmark measured, as PNG files (matplotlib, Agg).

First-layer filters, feature maps at chosen layers (forward hooks), occlusion saliency (a patch
slid over the image, the drop in the class score recorded), and the plot of a `convkit bench`
JSON. Figures are drawn on matplotlib.figure.Figure directly (no pyplot, no global backend
switch), so this works headless and inside other programs' matplotlib sessions.
"""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Union

import torch

__all__ = ["first_conv", "plot_filters", "feature_maps", "plot_feature_maps", "occlusion_map",
           "plot_occlusion", "load_bench", "plot_bench"]


def _figure(figsize=(8, 4), dpi: int = 100):
    """A matplotlib Figure on the Agg canvas (PNG output, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _as_image(image: torch.Tensor) -> torch.Tensor:
    """image: Tensor[C, H, W] or Tensor[1, C, H, W] -> Tensor[1, C, H, W], detached."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"image: expected Tensor[C, H, W] or Tensor[1, C, H, W], got shape {tuple(image.shape)}")
    return image.detach()


def _show(ax, img: torch.Tensor, cmap="gray", vmin=None, vmax=None):
    """img: Tensor[H, W] (cmap) or Tensor[H, W, 3] in [0, 1] (RGB)."""
    ax.imshow(img.detach().cpu().float().numpy(), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _grid(n: int, max_cols: int = 8):
    cols = max(1, min(n, max_cols))
    return math.ceil(n / cols), cols


# ---------------------------------------------------------------------------- filters

def first_conv(model: torch.nn.Module) -> torch.nn.Conv2d:
    """The first nn.Conv2d (convkit's included) in `model`'s module order."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            return m
    raise ValueError(f"{type(model).__name__} has no Conv2d layer")


def plot_filters(model_or_weight: Union[torch.nn.Module, torch.Tensor], path: str,
                 max_filters: int = 64, max_channels: int = 8) -> str:
    """The first convolution's filters as images. model_or_weight: a model (its first Conv2d) or a
    weight Tensor[K, C, R, S]. With C == 3 each filter is one RGB tile (scaled to [0, 1] per
    filter); otherwise a row of grey tiles per filter, one per input channel (up to
    max_channels), on one symmetric scale, so mid-grey is 0. Writes a PNG at `path`."""
    w = model_or_weight if isinstance(model_or_weight, torch.Tensor) else first_conv(model_or_weight).weight
    w = w.detach().cpu().float()
    if w.dim() != 4:
        raise ValueError(f"weight: expected Tensor[K, C, R, S], got shape {tuple(w.shape)}")
    w = w[:max_filters]
    k, c = w.shape[:2]
    if c == 3:
        rows, cols = _grid(k)
        fig = _figure(figsize=(1.2 * cols + 0.4, 1.2 * rows + 0.6))
        for i in range(rows * cols):
            ax = fig.add_subplot(rows, cols, i + 1)
            ax.axis("off")
            if i < k:
                f = w[i]
                f = (f - f.min()) / (f.max() - f.min()).clamp_min(1e-12)
                _show(ax, f.permute(1, 2, 0))
    else:
        lim = w.abs().max().item() or 1.0
        if c == 1:      # one tile per filter, in a grid
            tiles = [(w[i, 0], f"{i}") for i in range(k)]
            rows, cols = _grid(k)
        else:           # a row per filter, a column per input channel
            cc = min(c, max_channels)
            tiles = [(w[i, j], f"{i}.{j}") for i in range(k) for j in range(cc)]
            rows, cols = k, cc
        fig = _figure(figsize=(1.0 * cols + 0.4, 1.0 * rows + 0.6))
        for i, (tile, label) in enumerate(tiles):
            ax = fig.add_subplot(rows, cols, i + 1)
            _show(ax, tile, cmap="gray", vmin=-lim, vmax=lim)
            ax.set_title(label, fontsize=7)
    fig.suptitle(f"first-layer filters {tuple(w.shape)}", fontsize=9)
    return _save(fig, path)


# ---------------------------------------------------------------------------- feature maps

def _resolve_layers(model: torch.nn.Module, layers: Iterable[Union[str, torch.nn.Module]]):
    named = dict(model.named_modules())
    by_id = {id(m): n for n, m in named.items()}
    out = []
    for layer in layers:
        if isinstance(layer, str):
            if layer not in named:
                raise ValueError(f"layers: {layer!r} is not a module of {type(model).__name__}; "
                                 f"names: {', '.join(n for n in named if n)}")
            out.append((layer, named[layer]))
        else:
            out.append((by_id.get(id(layer), type(layer).__name__), layer))
    return out


def feature_maps(model: torch.nn.Module, image: torch.Tensor,
                 layers: Sequence[Union[str, torch.nn.Module]]) -> Dict[str, torch.Tensor]:
    """The outputs of `layers` (module names as in named_modules(), or modules) when `model` runs
    on image: Tensor[C, H, W] or Tensor[1, C, H, W], by forward hooks, in eval mode, no grad.
    Returns {name: Tensor[C_l, H_l, W_l]} (batch dimension dropped) in the order given."""
    resolved = _resolve_layers(model, layers)
    maps: Dict[str, torch.Tensor] = {}
    handles = []
    for name, module in resolved:
        def hook(_m, _inp, out, name=name):
            out = out[0] if isinstance(out, (tuple, list)) else out
            maps[name] = out.detach()[0].cpu().clone()   # clone: a later in-place ReLU would change it
        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(_as_image(image))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {name: maps[name] for name, _ in resolved if name in maps}


def plot_feature_maps(model: torch.nn.Module, image: torch.Tensor,
                      layers: Sequence[Union[str, torch.nn.Module]], path: str, max_maps: int = 16) -> str:
    """The input image (first row) and the feature maps of `image` at each of `layers` (a row
    each, up to max_maps channels, each scaled on its own). Writes a PNG at `path`."""
    maps = feature_maps(model, image, layers)
    img = _as_image(image)[0].cpu()
    rows = 1 + len(maps)
    cols = max([1] + [min(max_maps, m.shape[0]) if m.dim() == 3 else 1 for m in maps.values()])
    fig = _figure(figsize=(1.1 * cols + 1.4, 1.2 * rows + 0.4))
    ax = fig.add_subplot(rows, cols, 1)
    _show(ax, img.mean(0) if img.shape[0] != 3 else (img - img.min()).div((img.max() - img.min()).clamp_min(1e-12))
          .permute(1, 2, 0))
    ax.set_ylabel("input", fontsize=8)
    for r, (name, m) in enumerate(maps.items(), start=1):
        if m.dim() == 1:            # a vector (a linear layer's output): one strip
            m = m[None, None, :]
        elif m.dim() == 2:
            m = m[None]
        for j in range(min(max_maps, m.shape[0])):
            ax = fig.add_subplot(rows, cols, r * cols + j + 1)
            _show(ax, m[j], cmap="viridis")
            if j == 0:
                ax.set_ylabel(f"{name}\n{tuple(m.shape)}", fontsize=7)
    fig.suptitle("feature maps", fontsize=9)
    return _save(fig, path)


# ---------------------------------------------------------------------------- occlusion

def occlusion_map(model: torch.nn.Module, image: torch.Tensor, target: Optional[int] = None,
                  patch: int = 8, stride: int = 4, fill: float = 0.0, batch_size: int = 64,
                  score: str = "logit") -> torch.Tensor:
    """Occlusion saliency (Zeiler and Fergus): a patch x patch square of value `fill` slid over
    image: Tensor[C, H, W] or Tensor[1, C, H, W] with the given stride; each position records
    score(image) - score(occluded image) for class `target` (default: the model's prediction).
    score: "logit" (the raw class score) or "prob" (softmax probability).
    Returns Tensor[(H - patch) // stride + 1, (W - patch) // stride + 1] (float32): element
    (i, j) is the drop with the patch's top-left corner at (i * stride, j * stride)."""
    x = _as_image(image)
    _, _, h, w = x.shape
    if patch < 1 or patch > min(h, w) or stride < 1:
        raise ValueError(f"occlusion_map: patch={patch} and stride={stride} must be >= 1, patch <= {min(h, w)}")
    if score not in ("logit", "prob"):
        raise ValueError(f"occlusion_map: score must be 'logit' or 'prob', got {score!r}")

    def class_score(batch):
        out = model(batch)
        out = out.reshape(out.shape[0], -1)
        return out.softmax(1) if score == "prob" else out

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            base = class_score(x)
            if target is None:
                target = int(base[0].argmax())
            base = base[0, target].item()
            ys = list(range(0, h - patch + 1, stride))
            xs = list(range(0, w - patch + 1, stride))
            corners = [(i, j) for i in ys for j in xs]
            drops = []
            for k in range(0, len(corners), batch_size):
                chunk = corners[k:k + batch_size]
                occluded = x.repeat(len(chunk), 1, 1, 1)
                for n, (i, j) in enumerate(chunk):
                    occluded[n, :, i:i + patch, j:j + patch] = fill
                drops.append(base - class_score(occluded)[:, target])
    finally:
        model.train(was_training)
    return torch.cat(drops).float().reshape(len(ys), len(xs))


def _occlusion_to_pixels(m: torch.Tensor, h: int, w: int, patch: int, stride: int) -> torch.Tensor:
    """Each pixel's mean drop over the patch positions that covered it: Tensor[H, W]
    (NaN where no patch reached)."""
    total = torch.zeros(h, w)
    count = torch.zeros(h, w)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            total[i * stride:i * stride + patch, j * stride:j * stride + patch] += m[i, j]
            count[i * stride:i * stride + patch, j * stride:j * stride + patch] += 1
    return total / count


def plot_occlusion(model: torch.nn.Module, image: torch.Tensor, path: str, target: Optional[int] = None,
                   patch: int = 8, stride: int = 4, fill: float = 0.0, score: str = "logit") -> str:
    """The image, and its occlusion saliency map (occlusion_map, spread back over the pixels each
    patch covered) over it. Writes a PNG at `path`."""
    x = _as_image(image)
    if target is None:
        model_was = model.training
        model.eval()
        with torch.no_grad():
            target = int(model(x).reshape(1, -1)[0].argmax())
        model.train(model_was)
    m = occlusion_map(model, x, target, patch=patch, stride=stride, fill=fill, score=score)
    h, w = x.shape[2:]
    px = _occlusion_to_pixels(m, h, w, patch, stride)
    img = x[0].cpu().mean(0)
    fig = _figure(figsize=(6.4, 3.2))
    a0, a1 = fig.subplots(1, 2)
    _show(a0, img)
    a0.set_title("input", fontsize=9)
    _show(a1, img)
    im = a1.imshow(px.numpy(), cmap="inferno", alpha=0.6, interpolation="nearest")
    fig.colorbar(im, ax=a1, fraction=0.046, pad=0.04)
    a1.set_title(f"drop in class {target} {score} ({patch}x{patch} patch, stride {stride})", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# ---------------------------------------------------------------------------- benchmark JSON

def load_bench(src: Union[str, os.PathLike, dict]) -> dict:
    """A `convkit bench --json` result: a path or the already-loaded dict."""
    if isinstance(src, dict):
        return src
    with open(src) as f:
        return json.load(f)


def _rate(row: dict, side: str) -> Optional[float]:
    """GFLOP/s (2 flops per MAC) of a convolution row's `side` ("ours" or "ref")."""
    stored = row.get("gflops" if side == "ours" else "ref_gflops")
    if stored:
        return stored
    ms = row.get(f"{side}_ms")
    return 2 * row["macs"] / (ms / 1e3) / 1e9 if ms and row.get("macs") else None


def _select(rows: List[dict], dtype: Optional[str], batch: Optional[int], ref: Optional[str]):
    rows = [r for r in rows if r.get("ours_ms") and r.get("status", "ok") == "ok"]
    if not rows:
        return [], dtype, batch, ref
    dtype = dtype or Counter(r.get("dtype") for r in rows).most_common(1)[0][0]
    rows = [r for r in rows if r.get("dtype") == dtype]
    if batch is None:
        conv_batches = [r.get("batch") for r in rows if r.get("op") == "conv2d"] or [r.get("batch") for r in rows]
        batch = max(b for b in conv_batches if b is not None) if any(b is not None for b in conv_batches) else None
    rows = [r for r in rows if batch is None or r.get("batch") == batch]
    if ref is None:
        refs = Counter(r.get("ref") for r in rows if r.get("ref_ms") and not r.get("ref_tf32"))
        ref = next((c for c in ("cudnn", "torch-cpu") if c in refs), refs.most_common(1)[0][0] if refs else None)
    return rows, dtype, batch, ref


def plot_bench(src: Union[str, os.PathLike, dict], path: str, dtype: Optional[str] = None,
               batch: Optional[int] = None, ref: Optional[str] = None,
               rate_pass: Optional[str] = None) -> str:
    """Plot a `convkit bench` JSON (rows with layer, pass, algo, ours_ms, ref_ms, macs or bytes;
    top-level ceilings), two panels over the layers in the benchmark's order:
      top: ours / reference time per layer and pass, each at convkit's fastest algorithm for that
           layer (log scale; below 1 convkit is faster);
      bottom: achieved GFLOP/s of the convolutions (convkit's best algorithm and the reference) in
           `rate_pass` [fwd], against the measured matrix-product ceiling (FP32; TF32 dashed where
           measured).
    The reference is `ref` [cudnn, else torch-cpu, else the most common] with TF32 off; rows of
    one dtype [the most common] and batch [the largest]. Writes a PNG at `path`."""
    data = load_bench(src)
    rows, dtype, batch, ref = _select(data.get("rows", []), dtype, batch, ref)
    if not rows:
        raise ValueError("plot_bench: no rows with a time (ours_ms) in the benchmark JSON")
    layers: List[str] = []
    passes: List[str] = []
    for r in rows:
        if r["layer"] not in layers:
            layers.append(r["layer"])
        if r["pass"] not in passes:
            passes.append(r["pass"])
    # (layer, pass) -> best ours row, best ref time
    best: Dict[tuple, dict] = {}
    ref_ms: Dict[tuple, float] = {}
    for r in rows:
        key = (r["layer"], r["pass"])
        if key not in best or r["ours_ms"] < best[key]["ours_ms"]:
            best[key] = r
        if r.get("ref") == ref and r.get("ref_ms") and not r.get("ref_tf32"):
            ref_ms[key] = min(ref_ms.get(key, math.inf), r["ref_ms"])

    n = len(layers)
    fig = _figure(figsize=(max(8.0, 0.14 * n * max(1, len(passes)) ** 0.5 + 2), 7.5))
    ax_r, ax_g = fig.subplots(2, 1)
    width = 0.8 / max(1, len(passes))
    for k, p in enumerate(passes):
        xs, ys = [], []
        for i, layer in enumerate(layers):
            key = (layer, p)
            if key in best and key in ref_ms:
                xs.append(i - 0.4 + width * (k + 0.5))
                ys.append(best[key]["ours_ms"] / ref_ms[key])
        ax_r.bar(xs, ys, width=width, label=p)
    ax_r.axhline(1.0, color="k", lw=0.8)
    ax_r.set_yscale("log")
    from matplotlib.ticker import FormatStrFormatter
    ax_r.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax_r.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax_r.set_ylabel(f"time ours / {ref}")
    ax_r.set_title(f"convkit (best algo per layer) vs {ref}: {data.get('device', '?')}, "
                   f"{data.get('gpu') or data.get('cpu') or ''}, {dtype}, batch {batch}", fontsize=9)
    ax_r.legend(fontsize=7, ncol=len(passes))

    rate_pass = rate_pass or ("fwd" if "fwd" in passes else passes[0])
    conv_layers = [l for l in layers if (l, rate_pass) in best and best[(l, rate_pass)].get("macs")]
    xs = range(len(conv_layers))
    ours = [_rate(best[(l, rate_pass)], "ours") or float("nan") for l in conv_layers]
    theirs = []
    for l in conv_layers:
        ms = ref_ms.get((l, rate_pass))
        theirs.append(2 * best[(l, rate_pass)]["macs"] / (ms / 1e3) / 1e9 if ms else float("nan"))
    ax_g.plot(xs, ours, "o", ms=3, label="convkit (best algo)")
    ax_g.plot(xs, theirs, "s", ms=3, mfc="none", label=ref)
    ceilings = data.get("ceilings") or {}
    if ceilings.get("matmul_gflops"):
        ax_g.axhline(ceilings["matmul_gflops"], color="r", lw=1,
                     label=f"ceiling: matmul {ceilings['matmul_gflops']:.0f} GFLOP/s")
    if ceilings.get("matmul_tf32_gflops"):
        ax_g.axhline(ceilings["matmul_tf32_gflops"], color="r", lw=1, ls="--",
                     label=f"TF32 matmul {ceilings['matmul_tf32_gflops']:.0f} GFLOP/s")
    ax_g.set_ylabel(f"GFLOP/s ({rate_pass})")
    ax_g.set_ylim(bottom=0)
    ax_g.legend(fontsize=7)
    ax_g.set_xticks(list(xs))
    ax_g.set_xticklabels(conv_layers, rotation=90, fontsize=5)
    ax_r.set_xticks(range(n))
    ax_r.set_xticklabels(layers, rotation=90, fontsize=5)
    for ax in (ax_r, ax_g):
        ax.grid(alpha=0.3, axis="y")
        ax.margins(x=0.01)
    fig.tight_layout()
    return _save(fig, path)
