"""convkit.models and the model-level counters of convkit.flops (count, receptive_field).

Parameter counts are checked against the published ones (the lecture's AlexNet and VGG16,
torchvision's for VGG16, GoogLeNet, ResNet-18/50), MACs against torchvision's documented
GFLOPS (which are MACs) and GoogLeNet's Table 1, shapes against the lecture's AlexNet table, and
forwards against the same model on torch's layers with the same weights. The big models are
built on the meta device (no memory, no init time); only the small ones run a forward.
"""
import copy

import pytest
import torch
from torch import nn

import convkit
import convkit.flops as flops
import convkit.nn as cnn
from convkit import models as M
from convkit.bench.layers import GOOGLENET_TABLE1

from conftest import assert_close

_CONVKIT = {cnn.Conv2d: nn.Conv2d, cnn.MaxPool2d: nn.MaxPool2d, cnn.AvgPool2d: nn.AvgPool2d, cnn.ReLU: nn.ReLU}


@pytest.fixture(autouse=True, scope="module")
def _one_kernel_thread():
    """One OpenMP thread per test process: under pytest -n 2 on two cores (or a loaded machine)
    more threads only wait for each other (a GoogLeNet forward ran 4-6x slower with two)."""
    before = convkit.get_num_threads()
    convkit.set_num_threads(1)
    yield
    convkit.set_num_threads(before)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def on_meta(cls, **kw):
    with torch.device("meta"):
        return cls(**kw)


def torch_twin(model):
    """A copy of `model` whose convkit layers are torch's own again (same weights and buffers)."""
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if type(m) in _CONVKIT:
            m.__class__ = _CONVKIT[type(m)]
    return twin


# ---------------------------------------------------------------------------------------------
# parameter counts
# ---------------------------------------------------------------------------------------------

# (model, constructor args, parameters): torchvision's counts where the architecture is
# torchvision's (vgg16 138,357,544, vgg16_bn 138,365,992, googlenet 6,624,904 and with aux
# 13,004,888, resnet18 11,689,512, resnet50 25,557,032); LeNet-5's classic 61,706 (C3 fully
# connected); AlexNet's and the paper GoogLeNet's as this architecture has them (checked below).
PARAMS = [
    (M.LeNet5, {}, 61_706),
    (M.LeNet5, {"in_channels": 3}, 62_006),
    (M.AlexNet, {}, 62_378_344),
    (M.VGG16, {}, 138_357_544),
    (M.VGG16, {"batch_norm": True}, 138_365_992),
    (M.GoogLeNet, {"variant": "torchvision"}, 6_624_904),
    (M.GoogLeNet, {"variant": "torchvision", "aux_logits": True}, 13_004_888),
    (M.GoogLeNet, {}, 6_998_552),
    (M.GoogLeNet, {"aux_logits": True}, 13_378_280),
    (M.ResNet18, {}, 11_689_512),
    (M.ResNet50, {}, 25_557_032),
]


@pytest.mark.parametrize("cls,kw,expected", PARAMS,
                         ids=[f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for c, kw, _ in PARAMS])
def test_param_count(cls, kw, expected):
    assert n_params(on_meta(cls, **kw)) == expected


def test_alexnet_params_match_lecture():
    """The lecture: "62.3 million parameters". The single-tower table gives 62,378,344, 0.13%
    above; layer by layer it is conv 3,747,200 + FC 58,631,144."""
    model = on_meta(M.AlexNet)
    n = n_params(model)
    assert abs(n - 62.3e6) / 62.3e6 < 0.005
    convs = sum(n_params(m) for m in model.modules() if isinstance(m, nn.Conv2d))
    fcs = sum(n_params(m) for m in model.modules() if isinstance(m, nn.Linear))
    assert (convs, fcs) == (3_747_200, 58_631_144)
    # the paper's two-tower net (conv2, conv4, conv5 in two groups) is the "60 million" one
    grouped = n - sum(m.weight.numel() // 2 for m in (model.features[4], model.features[10], model.features[12]))
    assert grouped == 60_965_224


def test_vgg16_params_match_lecture():
    """The lecture: "Still, 138M parameters for VGG16!"."""
    assert round(n_params(on_meta(M.VGG16)) / 1e6) == 138


def test_googlenet_paper_count_from_torchvision_count():
    """The paper variant differs from torchvision's in three ways that change parameters: a bias
    (1 per channel) instead of BatchNorm (2 per channel) on every convolution, and 5x5 instead
    of 3x3 kernels in the third branch. Derive the paper's count from torchvision's 6,624,904."""
    paper, tv = on_meta(M.GoogLeNet), on_meta(M.GoogLeNet, variant="torchvision")
    conv_channels = sum(m.out_channels for m in tv.modules() if isinstance(m, nn.Conv2d))
    five = sum(m.in_channels * m.out_channels * (25 - 9)
               for m in tv.modules() if isinstance(m, M.Inception) for m in [m.branch3[1].conv])
    assert n_params(paper) == 6_624_904 - conv_channels + five == 6_998_552


# ---------------------------------------------------------------------------------------------
# every conv, pool and ReLU is convkit's
# ---------------------------------------------------------------------------------------------

ALL_MODELS = [
    (M.LeNet5, {}), (M.LeNet5, {"pool": "avg"}), (M.AlexNet, {}), (M.VGG16, {}), (M.VGG16, {"batch_norm": True}),
    (M.GoogLeNet, {"aux_logits": True}), (M.GoogLeNet, {"variant": "torchvision", "aux_logits": True}),
    (M.ResNet18, {}), (M.ResNet50, {}),
]
_MODEL_IDS = [f"{c.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for c, kw in ALL_MODELS]


@pytest.mark.parametrize("cls,kw", ALL_MODELS, ids=_MODEL_IDS)
def test_only_convkit_layers(cls, kw):
    model = on_meta(cls, algo="im2col", **kw)
    torch_kinds = tuple(_CONVKIT.values())
    layers = [m for m in model.modules() if isinstance(m, torch_kinds)]
    assert layers
    for m in layers:
        assert type(m) in _CONVKIT, f"{type(m).__qualname__} is not a convkit layer"
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert convs and all(m.algo == "im2col" for m in convs)
    # nothing convert() would replace or report as not covered (e.g. an adaptive pool)
    _, report = cnn.convert(model, algo="im2col", report=True)
    assert report.replaced == [] and report.left_alone == []


@pytest.mark.parametrize("cls", [M.LeNet5, M.AlexNet, M.VGG16, M.GoogLeNet, M.ResNet18, M.ResNet50])
def test_num_classes_and_in_channels(cls):
    size = {M.LeNet5: 32, M.AlexNet: 227}.get(cls, 224)
    model = on_meta(cls, num_classes=7, in_channels=5)
    c = flops.count(model, (2, 5, size, size))
    assert c.rows[-1].output_shape == (2, 7)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 5


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        M.GoogLeNet(variant="v3")
    with pytest.raises(ValueError, match="pool"):
        M.LeNet5(pool="lp")
    with pytest.raises(ValueError, match="algo"):
        M.LeNet5(algo="no-such-algo")


# ---------------------------------------------------------------------------------------------
# forwards: convkit layers against torch's, same weights
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pool", ["max", "avg"])
def test_lenet5_matches_torch(pool):
    model = M.LeNet5(in_channels=3, pool=pool).double()
    twin = torch_twin(model)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, ref = model(x), twin(x2)
    assert y.shape == (2, 10)
    assert_close(y, ref, L=400, what="LeNet5 forward")
    y.square().sum().backward()
    ref.square().sum().backward()
    assert_close(x.grad, x2.grad, L=400, what="LeNet5 grad input")
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert_close(p.grad, q.grad, L=400, what=f"LeNet5 grad {name}")


@pytest.mark.parametrize("block,cin,channels,stride", [
    (M.BasicBlock, 16, 16, 1), (M.BasicBlock, 16, 32, 2), (M.Bottleneck, 64, 16, 1), (M.Bottleneck, 32, 16, 2)])
@pytest.mark.parametrize("training", [False, True])
def test_resnet_block_matches_torch(block, cin, channels, stride, training):
    b = block(cin, channels, stride).double().train(training)
    assert (b.downsample is None) == (stride == 1 and cin == channels * block.expansion)
    for m in b.modules():  # non-trivial batch norm in eval mode
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    twin = torch_twin(b)
    x = torch.randn(2, cin, 9, 9, dtype=torch.float64)
    y, ref = b(x), twin(x)
    assert y.shape == (2, channels * block.expansion, (9 - 1) // stride + 1, (9 - 1) // stride + 1)
    assert_close(y, ref, L=9 * max(cin, channels), what=f"{block.__name__} forward")
    if training:  # the same batch statistics were taken
        for m, t in zip(b.modules(), twin.modules()):
            if isinstance(m, nn.BatchNorm2d):
                assert_close(m.running_mean, t.running_mean, what="running_mean")


def test_resnet18_matches_torch():
    model = M.ResNet18(num_classes=10).eval()
    twin = torch_twin(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y, ref = model(x), twin(x)
    assert y.shape == (1, 10)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)


def test_googlenet_paper_forward_with_aux():
    """The paper variant at its minimum input (224: the 7x7 average pool and the auxiliary
    classifiers' 5x5/3 pools on 14x14 maps): training mode returns (main, aux1, aux2), eval
    mode the logits; same numbers as on torch's layers."""
    model = M.GoogLeNet(num_classes=10, aux_logits=True)
    twin = torch_twin(model)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.manual_seed(1)
        out = model(x)
        torch.manual_seed(1)  # the same dropout masks
        ref = twin(x)
        assert isinstance(out, M.GoogLeNetOutputs)
        assert [tuple(o.shape) for o in out] == [(1, 10)] * 3
        for o, r in zip(out, ref):
            torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-5)
        model.eval()
        twin.eval()
        y = model(x)
        assert isinstance(y, torch.Tensor) and y.shape == (1, 10)
        torch.testing.assert_close(y, twin(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError):  # one pixel short of the 7x7 average pool
        model(torch.randn(1, 3, 222, 222))


def test_googlenet_torchvision_variant_small_input():
    """torchvision's variant ends in a global average pool: a 32x32 input runs (1x1 at 5b)."""
    model = M.GoogLeNet(num_classes=10, variant="torchvision").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), torch_twin(model)(x), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# flops.count
# ---------------------------------------------------------------------------------------------

def test_count_alexnet_reproduces_lecture_table():
    """The lecture's AlexNet table, [55x55x96] CONV1 ... [1000] FC8, from the counter's shapes."""
    c = flops.count(on_meta(M.AlexNet), (1, 3, 227, 227))
    shapes = [(r.type, r.output_shape[1:]) for r in c.rows if r.type not in ("ReLU", "Dropout")]
    assert shapes == [
        ("Conv2d", (96, 55, 55)), ("MaxPool2d", (96, 27, 27)), ("LocalResponseNorm", (96, 27, 27)),
        ("Conv2d", (256, 27, 27)), ("MaxPool2d", (256, 13, 13)), ("LocalResponseNorm", (256, 13, 13)),
        ("Conv2d", (384, 13, 13)), ("Conv2d", (384, 13, 13)), ("Conv2d", (256, 13, 13)),
        ("MaxPool2d", (256, 6, 6)), ("Linear", (4096,)), ("Linear", (4096,)), ("Linear", (1000,)),
    ]
    assert c.params == 62_378_344 == sum(r.params for r in c.rows)
    assert c.rows[0].macs == 55 * 55 * 96 * 11 * 11 * 3
    assert c.flops == 2 * c.macs
    assert "features.0" in str(c) and "62,378,344" in str(c)


# torchvision's documented GFLOPS (which are multiply-accumulates) at 224x224
@pytest.mark.parametrize("cls,kw,gmacs", [
    (M.ResNet18, {}, 1.81), (M.ResNet50, {}, 4.09), (M.VGG16, {}, 15.47),
    (M.GoogLeNet, {"variant": "torchvision"}, 1.50)])
def test_count_matches_torchvision_gflops(cls, kw, gmacs):
    assert round(flops.count(on_meta(cls, **kw), (1, 3, 224, 224)).macs / 1e9, 2) == gmacs


def test_count_googlenet_matches_table1():
    """Each inception module's branch shapes and MACs against Table 1 of the paper (its "ops"
    column, in millions; convkit.bench.layers has the table), with the paper's real 5x5
    convolutions; the pools' output sizes
    (ceil_mode: 112 -> 56 -> 28 -> 14 -> 7)."""
    c = flops.count(on_meta(M.GoogLeNet), (1, 3, 224, 224))
    shapes = {r.name: r.output_shape for r in c.rows}
    for name, row in GOOGLENET_TABLE1.items():
        hw, n1, n3, n5, proj, out_c, ops = row[0], row[2], row[4], row[6], row[7], row[8], row[9]
        p = f"inception{name}."
        branches = [shapes[p + b] for b in ("branch1.relu", "branch2.1.relu", "branch3.1.relu", "branch4.1.relu")]
        assert branches == [(1, ch, hw, hw) for ch in (n1, n3, n5, proj)]
        assert n1 + n3 + n5 + proj == out_c
        macs = sum(r.macs for r in c.rows if r.name.startswith(p))
        # Table 1 rounds loosely (4a: 73.6M printed as 73M); its 5a entry, 54M, does not follow
        # from its own channel numbers (51.1M; as convkit.bench.layers.check_table notes)
        if name != "5a":
            assert abs(macs / 1e6 - ops) < 1, f"{name}: {macs:,} MACs, Table 1 says {ops}M"
    stem = sum(r.macs for r in c.rows if r.name in ("conv2.conv", "conv3.conv"))
    assert round(stem / 1e6) == 360  # Table 1's "convolution 3x3/1, depth 2" row
    pools = {r.name: r.output_shape[1:] for r in c.rows if r.type in ("MaxPool2d", "AvgPool2d") and "." not in r.name}
    assert pools == {"maxpool1": (64, 56, 56), "maxpool2": (192, 28, 28), "maxpool3": (480, 14, 14),
                     "maxpool4": (832, 7, 7), "avgpool": (1024, 1, 1)}


def test_count_torch_and_convkit_layers_agree():
    model = M.ResNet18(num_classes=10)
    a, b = flops.count(model, (1, 3, 64, 64)), flops.count(torch_twin(model), (1, 3, 64, 64))
    assert [(r.name, r.output_shape, r.macs, r.params) for r in a.rows] == \
           [(r.name, r.output_shape, r.macs, r.params) for r in b.rows]
    assert a.params == 11_181_642  # 10 classes
    # shared modules (each block's relu is called twice) own their parameters once
    assert sum(r.params for r in a.rows) == a.params


def test_count_leaves_model_untouched():
    model = M.ResNet18(num_classes=10).train()
    model.layer1.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flops.count(model, (2, 3, 32, 32), train=True)
    flops.count(model, (2, 3, 32, 32), device="cpu", train=True)
    assert model.training and not model.layer1.training and model.layer2.training
    for k, v in model.state_dict().items():
        assert v.device.type == "cpu"
        assert torch.equal(v, before[k]), k


def test_count_googlenet_aux_in_training_mode():
    model = on_meta(M.GoogLeNet, aux_logits=True)
    train, infer = flops.count(model, (1, 3, 224, 224), train=True), flops.count(model, (1, 3, 224, 224))
    assert any(r.name.startswith("aux1.") for r in train.rows)
    assert not any(r.name.startswith("aux") for r in infer.rows)
    assert train.params == infer.params == 13_378_280


def test_count_falls_back_to_zeros_off_meta():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = cnn.Conv2d(3, 4, 3)

        def forward(self, x):
            y = self.conv(x)
            return y * float(y.abs().sum().item() >= 0)  # can't run on meta tensors

    c = flops.count(DataDependent(), (3, 8, 8))
    assert [(r.name, r.output_shape, r.macs) for r in c.rows] == [("conv", (1, 4, 6, 6), 4 * 36 * 27)]


def test_count_other_layer_kinds():
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ConvTranspose2d(8, 2, 2, stride=2), nn.Flatten(),
                          nn.Linear(2 * 12 * 12, 5))
    c = flops.count(model, (1, 4, 8, 8))
    assert [r.macs for r in c.rows] == [8 * 6 * 6 * 2 * 9, 8 * 6 * 6 * 2 * 4, 0, 288 * 5]


# ---------------------------------------------------------------------------------------------
# flops.receptive_field, and the lecture's VGG argument
# ---------------------------------------------------------------------------------------------

def test_lecture_vgg_three_3x3_vs_one_7x7():
    """The lecture: "Consider a stack of three 3x3 conv layers. Which is the receptive field of
    this hidden unit? Same as one layer with 7x7 conv filters. ... and fewer parameters!
    C channels (e.g. C=3 for RGB images): 7x7 conv has 7^2 x C = 147 parameters; 3 layers of
    3x3 conv have 3 x (3^2 x C) = 81": weights per filter (one output channel), C = 3."""
    C = 3
    stack = nn.Sequential(*[m for _ in range(3) for m in (cnn.Conv2d(C, C, 3, padding=1, bias=False), cnn.ReLU())])
    one = nn.Sequential(cnn.Conv2d(C, C, 7, padding=3, bias=False), cnn.ReLU())
    rf3, rf7 = flops.receptive_field(stack), flops.receptive_field(one)
    assert [r.size for r in rf3] == [(3, 3), (5, 5), (7, 7)]
    assert rf7[-1].size == (7, 7) and rf3[-1].jump == rf7[-1].jump == (1, 1)
    c3, c7 = flops.count(stack, (1, C, 32, 32)), flops.count(one, (1, C, 32, 32))
    per_filter3 = sum(r.params // r.output_shape[1] for r in c3.rows if r.type == "Conv2d")
    per_filter7 = sum(r.params // r.output_shape[1] for r in c7.rows if r.type == "Conv2d")
    assert (per_filter3, per_filter7) == (81, 147)
    assert (c3.params, c7.params) == (27 * C * C, 49 * C * C) == (243, 441)
    assert c3.macs * 49 == c7.macs * 27  # and the same ratio of work on a same-size output


@pytest.mark.parametrize("C", [64, 512])
def test_lecture_vgg_weights_for_c_channels(C):
    """For C -> C channels: 27 C^2 weights against 49 C^2 (a 45% saving)."""
    with torch.device("meta"):
        stack = [cnn.Conv2d(C, C, 3, padding=1, bias=False) for _ in range(3)]
        one = cnn.Conv2d(C, C, 7, padding=3, bias=False)
    c3, c7 = flops.count(nn.Sequential(*stack), (1, C, 7, 7)), flops.count(one, (1, C, 7, 7))
    assert (c3.params, c7.params) == (27 * C * C, 49 * C * C)
    assert flops.receptive_field(stack)[-1].size == (7, 7)


def test_receptive_field_vgg16_and_alexnet():
    """VGG16: 196 at conv5_3, 212 after pool5, jump 32, 7x7 map at 224; the lecture's AlexNet:
    195 after pool3, jump 32, 6x6 map at 227 (the values Araujo et al., Distill 2019, list)."""
    vgg = flops.receptive_field(on_meta(M.VGG16).features, input_size=224)
    assert [r.size[0] for r in vgg if r.type == "Conv2d"][-1] == 196
    assert (vgg[-1].size, vgg[-1].jump, vgg[-1].output_size) == ((212, 212), (32, 32), (7, 7))
    assert len(vgg) == 18  # 13 convs, 5 pools; ReLUs skipped
    alex = flops.receptive_field(on_meta(M.AlexNet), input_size=227)
    assert [r.output_size[0] for r in alex] == [55, 27, 27, 13, 13, 13, 13, 6]
    assert (alex[-1].size, alex[-1].jump) == ((195, 195), (32, 32))
    lenet = flops.receptive_field(M.LeNet5(), input_size=32)
    assert [(r.size[0], r.output_size[0]) for r in lenet] == [(5, 28), (6, 14), (14, 10), (16, 5)]


def test_receptive_field_geometry():
    # start: centre of the first output's field; padding moves it into the border
    rows = flops.receptive_field([(3, 1, 1), (2, 2), (3, 2, 0, 2)])
    assert [r.start for r in rows] == [(0.0, 0.0), (0.5, 0.5), (4.5, 4.5)]
    assert [r.size for r in rows] == [(3, 3), (4, 4), (12, 12)]  # dilation 2: a 5-wide window, jump 2
    assert [r.jump for r in rows] == [(1, 1), (2, 2), (4, 4)]
    # dicts, tuples and modules say the same; rectangular kernels; ceil_mode in the sizes
    as_dicts = flops.receptive_field([{"kernel_size": 3, "padding": 1}, {"kernel_size": 2, "stride": 2},
                                      {"kernel_size": 3, "stride": 2, "dilation": 2}], input_size=(13, 14))
    as_modules = flops.receptive_field([cnn.Conv2d(1, 1, 3, padding=1), cnn.MaxPool2d(2),
                                        nn.Conv2d(1, 1, 3, stride=2, dilation=2)], input_size=(13, 14))
    assert [r[6:] for r in as_dicts] == [r[6:] for r in as_modules]
    assert [r.output_size for r in as_modules] == [(13, 14), (6, 7), (1, 2)]
    pool = flops.receptive_field([cnn.MaxPool2d(3, 2, ceil_mode=True), cnn.Conv2d(1, 1, (1, 5), padding="same")],
                                 input_size=112)
    assert pool[0].output_size == (56, 56) and pool[1].output_size == (56, 56)
    assert pool[1].size == (3, 11) and pool[1].start == (1.0, 1.0)  # 'same' keeps the centre
    with pytest.raises(ValueError):
        flops.receptive_field([(3, 1, 0, 1, 9)])


def test_torchvision_module_names():
    """VGG16, GoogLeNet (variant="torchvision") and ResNet use torchvision's state_dict keys."""
    keys = {
        M.VGG16: ["features.0.weight", "features.28.bias", "classifier.0.weight", "classifier.3.weight",
                  "classifier.6.bias"],
        M.ResNet18: ["conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.1.bn2.num_batches_tracked",
                     "layer2.0.downsample.0.weight", "layer4.0.downsample.1.running_var", "fc.weight"],
        M.ResNet50: ["layer1.0.conv3.weight", "layer1.0.bn3.bias", "layer1.0.downsample.0.weight",
                     "layer3.5.conv2.weight", "fc.bias"],
    }
    for cls, want in keys.items():
        have = set(on_meta(cls).state_dict())
        assert set(want) <= have, (cls.__name__, sorted(set(want) - have))
    assert len(on_meta(M.ResNet18).state_dict()) == 122  # 62 parameters, 20 batch norms x 3 buffers
    g = set(on_meta(M.GoogLeNet, variant="torchvision", aux_logits=True).state_dict())
    assert {"conv1.conv.weight", "conv1.bn.running_var", "conv3.bn.bias", "inception3a.branch1.conv.weight",
            "inception3a.branch2.1.conv.weight", "inception4e.branch3.1.bn.weight",
            "inception5b.branch4.1.conv.weight", "aux1.conv.conv.weight", "aux1.conv.bn.weight",
            "aux1.fc1.weight", "aux2.fc2.bias", "fc.weight"} <= g
    assert not any(k.endswith(".conv.bias") for k in g)
