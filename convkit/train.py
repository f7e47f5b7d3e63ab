"""convkit.train: LeNet-5 trained on scikit-learn's bundled 8x8 digits with convkit's CPU kernels.

The 1797 digit images (no download) are upsampled to 32x32, the input size LeNet-5 was built for,
split 80/20 by a fixed stratified split, and trained with Adam; `convkit train-digits` runs it.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

import convkit
from convkit import _kernels

__all__ = ["TrainResult", "load_digits_32", "train_digits", "plot_history", "save_digit_views", "train_digits_main"]

# The held-out split is fixed (not tied to the training seed), so every run is scored on the
# same 360 images.
SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass
class TrainResult:
    """What train_digits() did: final test accuracy (0..1), wall time in seconds (data, training
    and evaluation), per-epoch history (epoch, train_loss, train_acc, test_loss, test_acc,
    seconds), where the plot went (None when not saved), and the trained model (eval mode)."""
    test_accuracy: float
    seconds: float
    history: List[Dict[str, float]] = field(default_factory=list)
    plot_path: Optional[str] = None
    model: Optional[torch.nn.Module] = field(default=None, repr=False)
    n_train: int = 0
    n_test: int = 0


def load_digits_32(split_seed: int = SPLIT_SEED):
    """The digits as (x_train, y_train, x_test, y_test): x Tensor[N, 1, 32, 32] float32,
    bilinearly upsampled from 8x8 and standardized with the training set's mean and std;
    y Tensor[N] int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0      # [1797, 1, 8, 8] in [0, 1]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    y = torch.from_numpy(digits.target).long()
    idx_train, idx_test = train_test_split(torch.arange(len(y)).numpy(), test_size=TEST_FRACTION,
                                           random_state=split_seed, stratify=digits.target)
    idx_train, idx_test = torch.from_numpy(idx_train), torch.from_numpy(idx_test)
    mean, std = x[idx_train].mean(), x[idx_train].std()
    x = (x - mean) / std
    return x[idx_train].contiguous(), y[idx_train], x[idx_test].contiguous(), y[idx_test]


def _make_lenet5(num_classes: int = 10) -> torch.nn.Module:
    """convkit.models.LeNet5 for 1-channel input (imported here, so convkit.train loads on its own)."""
    from convkit.models import LeNet5
    return LeNet5(num_classes=num_classes, in_channels=1)


def _in_channels(model: torch.nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            return m.in_channels
    return 1


def _random_shift(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """x: Tensor[N, C, H, W], each image moved by its own random (dy, dx) in [-shift, shift],
    the border filled with the background value (the batch minimum)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), value=x.min().item())
    off = torch.randint(0, 2 * shift + 1, (n, 2), generator=gen).tolist()
    return torch.stack([padded[k, :, dy:dy + h, dx:dx + w] for k, (dy, dx) in enumerate(off)])


def _evaluate(model, x, y, batch_size: int = 512):
    """(mean cross-entropy, accuracy) of `model` on x: Tensor[N, C, 32, 32], y: Tensor[N]."""
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            logits = model(x[i:i + batch_size])
            loss += F.cross_entropy(logits, y[i:i + batch_size], reduction="sum").item()
            correct += (logits.argmax(1) == y[i:i + batch_size]).sum().item()
    return loss / len(y), correct / len(y)


def _progress(total: int, enabled: bool):
    """A tqdm bar over `total` steps when tqdm is installed and enabled, else None."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="train-digits", unit="step", file=sys.stderr, leave=True)


def train_digits(epochs: int = 12, seed: int = 0, out_dir: Optional[str] = "train-digits-out",
                 progress: bool = True, batch_size: int = 32, lr: float = 3e-3,
                 model: Optional[torch.nn.Module] = None, plot: bool = True, shift: int = 2,
                 threads: Optional[int] = 1) -> TrainResult:
    """Train LeNet-5 (convkit.models.LeNet5 unless `model` is given: any module mapping
    Tensor[N, C, 32, 32] to logits Tensor[N, 10]) on the upsampled digits with Adam under a
    one-cycle schedule (warm-up to `lr`, cosine decay), on convkit's CPU backend; each training
    image is shifted by up to `shift` pixels each way (0: no augmentation). threads: torch's and
    convkit's thread count while training [1: LeNet-5 on a 32-image batch is too small to split
    across cores, and on a busy machine OpenMP's barriers cost more than the work; None: leave
    them as they are]. Seeded: `seed` fixes the initial weights, the batch order and the shifts.
    Saves `out_dir`/train-digits.png (loss and accuracy per epoch) when `plot`
    and `out_dir` are set. Returns a TrainResult."""
    import convkit

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = load_digits_32()
    if model is None:
        model = _make_lenet5(10)
    c = _in_channels(model)
    if c != 1:  # a model built for colour input sees the grey digit in every channel
        x_train, x_test = x_train.expand(-1, c, -1, -1).contiguous(), x_test.expand(-1, c, -1, -1).contiguous()

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(y_train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.15, anneal_strategy="cos")
    gen = torch.Generator().manual_seed(seed)
    history: List[Dict[str, float]] = []
    bar = _progress(epochs * steps_per_epoch, progress)
    # convkit's setting is restored as it was, "follow torch" included (set_num_threads can't unset it)
    saved_threads = (torch.get_num_threads(), _kernels._threads_user)
    if threads:
        torch.set_num_threads(threads)
        convkit.set_num_threads(threads)
    try:
        _fit(model, opt, sched, x_train, y_train, x_test, y_test, epochs, batch_size, shift, gen, history,
             bar, progress)
    finally:
        torch.set_num_threads(saved_threads[0])
        _kernels._threads_user = saved_threads[1]
        if bar is not None:
            bar.close()
    model.eval()
    seconds = time.perf_counter() - t0
    result = TrainResult(test_accuracy=history[-1]["test_acc"] if history else 0.0, seconds=seconds,
                         history=history, model=model, n_train=len(y_train), n_test=len(y_test))
    if plot and out_dir:
        os.makedirs(out_dir, exist_ok=True)
        result.plot_path = plot_history(history, os.path.join(out_dir, "train-digits.png"),
                                        title=f"LeNet-5 on digits (convkit CPU kernels): "
                                              f"{result.test_accuracy:.1%} test accuracy, {seconds:.0f} s")
    return result


def _fit(model, opt, sched, x_train, y_train, x_test, y_test, epochs, batch_size, shift, gen, history,
         bar, progress) -> None:
    """The training loop of train_digits(): appends one history entry per epoch."""
    with convkit.use_backend("cpu"):
        for epoch in range(1, epochs + 1):
            te = time.perf_counter()
            model.train()
            perm = torch.randperm(len(y_train), generator=gen)
            loss_sum, correct = 0.0, 0
            for i in range(0, len(y_train), batch_size):
                idx = perm[i:i + batch_size]
                xb = _random_shift(x_train[idx], shift, gen) if shift else x_train[idx]
                logits = model(xb)
                loss = F.cross_entropy(logits, y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.item() * len(idx)
                correct += (logits.argmax(1) == y_train[idx]).sum().item()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
            test_loss, test_acc = _evaluate(model, x_test, y_test)
            history.append(dict(epoch=epoch, train_loss=loss_sum / len(y_train), train_acc=correct / len(y_train),
                                test_loss=test_loss, test_acc=test_acc, seconds=time.perf_counter() - te))
            if bar is None and progress:
                h = history[-1]
                print(f"epoch {epoch}/{epochs}: loss {h['train_loss']:.4f}, test accuracy {test_acc:.2%}",
                      file=sys.stderr)


def plot_history(history: List[Dict[str, float]], path: str, title: Optional[str] = None) -> str:
    """Loss (train, test) and accuracy (train, test) per epoch, side by side, as a PNG at `path`."""
    from .viz import _figure
    ep = [h["epoch"] for h in history]
    fig = _figure(figsize=(8, 3.2))
    ax_l, ax_a = fig.subplots(1, 2)
    ax_l.plot(ep, [h["train_loss"] for h in history], "o-", ms=3, label="train")
    ax_l.plot(ep, [h["test_loss"] for h in history], "s-", ms=3, label="test")
    ax_l.set_yscale("log")
    ax_l.set_xlabel("epoch")
    ax_l.set_ylabel("cross-entropy")
    ax_l.legend()
    ax_a.plot(ep, [100 * h["train_acc"] for h in history], "o-", ms=3, label="train")
    ax_a.plot(ep, [100 * h["test_acc"] for h in history], "s-", ms=3, label="test")
    ax_a.set_xlabel("epoch")
    ax_a.set_ylabel("accuracy (%)")
    ax_a.set_ylim(max(0.0, min(100 * h["test_acc"] for h in history) - 5) if history else 0, 100.5)
    ax_a.legend(loc="lower right")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return path


def save_digit_views(model: torch.nn.Module, out_dir: str, index: int = 0) -> List[str]:
    """What the trained LeNet-5 sees, as PNGs in `out_dir`: its first-layer filters
    (filters.png), the feature maps of test digit `index` after each convolution and pooling
    (feature-maps.png), and that digit's occlusion map (occlusion.png). Returns the paths."""
    from . import viz
    _, _, x_test, _ = load_digits_32()
    image = x_test[index].expand(_in_channels(model), -1, -1)
    layers = [n for n, m in model.named_modules()
              if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.AvgPool2d))]
    fill = x_test.min().item()      # the background value: occluding with it erases ink
    with convkit.use_backend("cpu"):
        return [viz.plot_filters(model, os.path.join(out_dir, "filters.png")),
                viz.plot_feature_maps(model, image, layers, os.path.join(out_dir, "feature-maps.png")),
                viz.plot_occlusion(model, image, os.path.join(out_dir, "occlusion.png"), patch=6, stride=2,
                                   fill=fill)]


def train_digits_main(args) -> int:
    """`convkit train-digits`: train, print the accuracy and the time, save the plot(s)."""
    r = train_digits(epochs=args.epochs, seed=args.seed, out_dir=args.out_dir, progress=not args.no_progress,
                     batch_size=args.batch_size, lr=args.lr)
    correct = round(r.test_accuracy * r.n_test)
    print(f"LeNet-5 on scikit-learn digits (8x8 upsampled to 32x32), convkit CPU kernels: "
          f"test accuracy {r.test_accuracy:.2%} ({correct}/{r.n_test}) after {args.epochs} epochs; "
          f"{r.seconds:.1f} s (train {r.n_train} images, seed {args.seed})")
    if r.plot_path:
        print(f"plot: {r.plot_path}")
    if args.viz and args.out_dir:
        for p in save_digit_views(r.model, args.out_dir):
            print(f"view: {p}")
    return 0
