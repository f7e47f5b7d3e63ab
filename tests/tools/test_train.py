"""convkit.train: LeNet-5 on convkit's CPU kernels learns scikit-learn's digits to >= 97% on the
fixed held-out split (seeded), and `convkit train-digits` prints the result and saves its plot."""
import os

import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from convkit import train  # noqa: E402
from convkit.__main__ import main  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    assert os.path.getsize(path) > 0
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE


def test_digits_split_is_fixed_and_32x32():
    x_train, y_train, x_test, y_test = train.load_digits_32()
    assert x_train.shape == (1437, 1, 32, 32) and x_test.shape == (360, 1, 32, 32)
    assert y_train.dtype == torch.int64 and sorted(set(y_test.tolist())) == list(range(10))
    again = train.load_digits_32()
    assert torch.equal(again[2], x_test) and torch.equal(again[3], y_test)
    assert abs(x_train.mean().item()) < 1e-4 and abs(x_train.std().item() - 1) < 1e-4


def test_lenet5_runs_on_convkit_kernels():
    from convkit import nn as cnn
    model = train._make_lenet5(10)
    kinds = {type(m) for m in model.modules()}
    assert cnn.Conv2d in kinds and (cnn.MaxPool2d in kinds or cnn.AvgPool2d in kinds)
    assert torch.nn.Conv2d not in kinds and torch.nn.MaxPool2d not in kinds
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_train_digits_reaches_97_percent(tmp_path):
    """The whole default run (12 epochs, seed 0): about 10 s on 2 cores."""
    import convkit
    threads, ck_threads = torch.get_num_threads(), convkit.get_num_threads()
    r = train.train_digits(seed=0, out_dir=str(tmp_path), progress=False)
    assert r.test_accuracy >= 0.97, r.history
    assert r.n_test == 360 and len(r.history) == 12 and r.seconds > 0
    assert r.history[-1]["test_acc"] == r.test_accuracy
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert (torch.get_num_threads(), convkit.get_num_threads()) == (threads, ck_threads)   # restored
    assert r.plot_path == str(tmp_path / "train-digits.png")
    assert_png(r.plot_path)
    assert not r.model.training


def test_train_digits_command(tmp_path, capsys):
    """The CLI end to end on a short run (accuracy is the test above's job), with the views."""
    assert main(["train-digits", "--epochs", "1", "--out-dir", str(tmp_path), "--no-progress", "--viz"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and " s (" in out
    for name in ("train-digits.png", "filters.png", "feature-maps.png", "occlusion.png"):
        assert_png(str(tmp_path / name))
