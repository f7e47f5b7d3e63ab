"""convkit.viz: every plot writes a PNG; the occlusion map has the documented shape and is
largest where the object the model responds to is; `convkit viz-bench` plots a bench JSON."""
import json
import os

import pytest
import torch

pytest.importorskip("matplotlib")

import convkit.nn as cnn  # noqa: E402
from convkit import viz  # noqa: E402
from convkit.__main__ import main  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def assert_png(path):
    assert os.path.getsize(path) > 0
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE


def tiny_cnn(in_channels=1, classes=3):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        cnn.Conv2d(in_channels, 4, 3, padding=1), cnn.ReLU(inplace=True), cnn.MaxPool2d(2),
        cnn.Conv2d(4, 5, 3, padding=1), cnn.ReLU(), cnn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(5 * 3 * 3, classes))


@pytest.mark.parametrize("in_channels", [1, 3, 4])
def test_plot_filters_writes_png(tmp_path, in_channels):
    model = tiny_cnn(in_channels)
    path = viz.plot_filters(model, str(tmp_path / "filters.png"))
    assert_png(path)
    assert_png(viz.plot_filters(model[0].weight, str(tmp_path / "w.png")))


def test_plot_filters_without_conv_raises(tmp_path):
    with pytest.raises(ValueError, match="no Conv2d"):
        viz.plot_filters(torch.nn.Linear(2, 2), str(tmp_path / "x.png"))


def test_feature_maps_match_the_layers_and_survive_inplace_relu():
    model = tiny_cnn().eval()
    x = torch.randn(1, 12, 12)
    maps = viz.feature_maps(model, x, ["0", "2", model[5]])
    assert list(maps) == ["0", "2", "5"]
    assert maps["0"].shape == (4, 12, 12) and maps["2"].shape == (4, 6, 6) and maps["5"].shape == (5, 3, 3)
    # the conv's own output, recorded before the in-place ReLU after it overwrote the tensor
    with torch.no_grad():
        ref = torch.nn.functional.conv2d(x[None], model[0].weight, model[0].bias, padding=1)[0]
    torch.testing.assert_close(maps["0"], ref, rtol=1e-5, atol=1e-5)
    assert (maps["0"] < 0).any()
    assert not any(m._forward_hooks for m in model.modules())   # hooks removed


def test_feature_maps_unknown_layer_raises():
    with pytest.raises(ValueError, match="not a module"):
        viz.feature_maps(tiny_cnn(), torch.randn(1, 12, 12), ["nope"])


def test_plot_feature_maps_writes_png(tmp_path):
    model = tiny_cnn()
    path = viz.plot_feature_maps(model, torch.randn(1, 1, 12, 12), ["0", "1", "5", "7"],
                                 str(tmp_path / "maps.png"))
    assert_png(path)


class BrightnessScore(torch.nn.Module):
    """Class 0's score: the total of relu(conv(x)) with a positive 3x3 kernel (convkit layers),
    so it counts the bright pixels, times `scale`; class 1 is its negative."""

    def __init__(self, scale=1.0):
        super().__init__()
        self.scale = scale
        self.conv = cnn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.relu = cnn.ReLU()
        with torch.no_grad():
            self.conv.weight.fill_(1.0 / 9)

    def forward(self, x):
        s = self.relu(self.conv(x)).sum(dim=(1, 2, 3))
        return self.scale * torch.stack([s, -s], dim=1)


@pytest.mark.parametrize("h,w,patch,stride", [(16, 16, 4, 2), (13, 17, 5, 3), (8, 8, 8, 1)])
def test_occlusion_map_shape(h, w, patch, stride):
    m = viz.occlusion_map(BrightnessScore(), torch.rand(1, h, w), target=0, patch=patch, stride=stride)
    assert m.shape == ((h - patch) // stride + 1, (w - patch) // stride + 1)
    assert m.dtype == torch.float32


def test_occlusion_map_is_largest_on_the_object():
    image = torch.zeros(1, 24, 24)
    image[0, 14:20, 4:10] = 1.0                      # the "object": a bright 6x6 square
    model = BrightnessScore()
    patch, stride = 4, 2

    def assert_peak_inside_square(m):
        i, j = divmod(int(m.argmax()), m.shape[1])
        assert 14 <= i * stride and i * stride + patch <= 20 and 4 <= j * stride and j * stride + patch <= 10
        assert m.max() > 0

    m = viz.occlusion_map(model, image, patch=patch, stride=stride)   # target: the prediction, class 0
    assert_peak_inside_square(m)      # the patch with the largest drop lies inside the square
    # far from the square, occluding black with black changes nothing
    assert m[0, -1].abs() < 1e-6 and m[:3, :].abs().max() < 1e-6
    # the probability drops too (a scale at which the softmax doesn't saturate), same shape, same peak
    mp = viz.occlusion_map(BrightnessScore(scale=0.05), image, target=0, patch=patch, stride=stride, score="prob")
    assert mp.shape == m.shape
    assert_peak_inside_square(mp)


def test_occlusion_bad_arguments():
    with pytest.raises(ValueError, match="patch"):
        viz.occlusion_map(BrightnessScore(), torch.rand(1, 8, 8), patch=9)
    with pytest.raises(ValueError, match="score"):
        viz.occlusion_map(BrightnessScore(), torch.rand(1, 8, 8), score="softmax")


def test_plot_occlusion_writes_png(tmp_path):
    image = torch.zeros(1, 12, 12)
    image[0, 3:7, 3:7] = 1
    assert_png(viz.plot_occlusion(BrightnessScore(), image, str(tmp_path / "occ.png"), patch=3, stride=2))


def small_bench(gpu=False):
    rows = []
    for layer, macs in [("stem.7x7", 10_000_000), ("3a.1x1", 2_000_000)]:
        for p in ("fwd", "fwd+bwd"):
            for algo, ours in (("direct", 2.0), ("im2col", 1.0)):
                rows.append(dict(op="conv2d", layer=layer, **{"pass": p}, algo=algo, dtype="float32", batch=8,
                                 macs=macs * (3 if p != "fwd" else 1), ours_ms=ours, ref="cudnn" if gpu else "torch-cpu",
                                 ref_tf32=False if gpu else None, ref_ms=1.5, status="ok"))
                if gpu:
                    rows.append(dict(rows[-1], ref_tf32=True, ref_ms=0.5))
    rows.append(dict(op="max_pool2d", layer="pool1", **{"pass": "fwd"}, algo="direct", dtype="float32", batch=8,
                     bytes=1_000_000, ours_ms=0.1, ref="torch-cpu", ref_ms=0.3, status="ok"))
    ceilings = {"matmul_gflops": 100.0, "copy_gbps": 20.0}
    if gpu:
        ceilings["matmul_tf32_gflops"] = 300.0
    return {"device": "cuda:0" if gpu else "cpu", "cpu": "test", "ceilings": ceilings, "rows": rows}


@pytest.mark.parametrize("gpu", [False, True])
def test_plot_bench_writes_png(tmp_path, gpu):
    path = tmp_path / "b.json"
    path.write_text(json.dumps(small_bench(gpu)))
    assert_png(viz.plot_bench(str(path), str(tmp_path / "b.png")))
    assert_png(viz.plot_bench(small_bench(gpu), str(tmp_path / "b2.png"), rate_pass="fwd+bwd"))


def test_plot_bench_without_times_raises(tmp_path):
    with pytest.raises(ValueError, match="no rows"):
        viz.plot_bench({"rows": [dict(layer="x", ours_ms=None)]}, str(tmp_path / "x.png"))


def test_viz_bench_command_on_the_stored_cpu_run(tmp_path, capsys):
    src = os.path.join(ROOT, "benchmarks", "results", "cpu-googlenet-b8.json")
    out = tmp_path / "plot.png"
    assert main(["viz-bench", src, "--out", str(out)]) == 0
    assert_png(str(out))
    assert str(out) in capsys.readouterr().out
