"""convkit.models: the lecture's CNNs (LeNet-5, AlexNet, VGG16, GoogLeNet, ResNet-18/50) built
from convkit layers: every convolution, pooling and ReLU runs on convkit's kernels; batch norm,
local response norm, dropout and the fully connected layers are torch's.

Every model takes `num_classes`, `in_channels` and `algo` (passed to every convkit Conv2d).
Module names follow torchvision's where torchvision has the model (VGG16, GoogLeNet, ResNet), so
state_dict keys line up; parameter counts (tests/tools/test_models.py):

    LeNet5 (1 channel, 10 classes)      61,706
    AlexNet (the lecture's table)       62,378,344   (the lecture: "62.3 million")
    VGG16                              138,357,544   (torchvision vgg16; the lecture: "138M")
    GoogLeNet (paper: real 5x5, bias)    6,998,552   (13,378,280 with aux_logits)
    GoogLeNet(variant="torchvision")     6,624,904   (13,004,888 with aux_logits)
    ResNet18                            11,689,512   (torchvision resnet18)
    ResNet50                            25,557,032   (torchvision resnet50)
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Type, Union

import torch
from torch import nn

from . import functional as CF
from . import nn as cnn

__all__ = [
    "LeNet5", "AlexNet", "VGG16", "GoogLeNet", "GoogLeNetOutputs", "Inception", "InceptionAux",
    "ConvBlock", "ResNet", "BasicBlock", "Bottleneck", "ResNet18", "ResNet50", "GlobalAvgPool2d",
]


class GlobalAvgPool2d(nn.Module):
    """Average over the whole map on convkit's avg_pool2d (the window is the input's H x W):
    input Tensor[N, C, H, W] -> Tensor[N, C, 1, 1]. What torchvision's AdaptiveAvgPool2d(1) does,
    for any input size."""

    def forward(self, input):
        return CF.avg_pool2d(input, tuple(input.shape[-2:]))


def _init_weights(model: nn.Module) -> None:
    """He init for convolutions (fan_out, as torchvision's VGG and ResNet), N(0, 0.01) for the
    fully connected layers, zero biases, batch norm at identity."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# ---------------------------------------------------------------------------------------------
# LeNet-5
# ---------------------------------------------------------------------------------------------

class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) as the lecture draws it: CONV-POOL-CONV-POOL-FC-FC-FC, 5x5
    convolutions at stride 1, 2x2 pooling at stride 2, for a 32x32 input (MNIST's 28x28 padded
    by 2, or CIFAR-10 with in_channels=3). Modern details: ReLU, max pooling (pool="avg" for
    the original's subsampling), C3 connected to all of S2's maps.

    input: Tensor[N, in_channels, 32, 32] -> Tensor[N, num_classes]

        C1 6@28x28 -> S2 6@14x14 -> C3 16@10x10 -> S4 16@5x5 -> F5 120 -> F6 84 -> num_classes
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, pool: str = "max", algo: str = "auto"):
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"LeNet5: pool must be 'max' or 'avg', got {pool!r}")
        Pool = cnn.MaxPool2d if pool == "max" else cnn.AvgPool2d
        self.features = nn.Sequential(
            cnn.Conv2d(in_channels, 6, 5, algo=algo), cnn.ReLU(inplace=True), Pool(2, 2),
            cnn.Conv2d(6, 16, 5, algo=algo), cnn.ReLU(inplace=True), Pool(2, 2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), cnn.ReLU(inplace=True),
            nn.Linear(120, 84), cnn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


# ---------------------------------------------------------------------------------------------
# AlexNet
# ---------------------------------------------------------------------------------------------

class AlexNet(nn.Module):
    """AlexNet (Krizhevsky et al. 2012) as the lecture's layer table has it: one tower (no
    two-GPU grouping), the normalization layers after the first two pools, ReLU after every
    convolution and hidden FC layer, dropout 0.5 before FC6 and FC7. 62,378,344 parameters
    (the lecture's "62.3 million"; the paper's grouped convolutions would give 60,965,224).

    input: Tensor[N, in_channels, 227, 227] -> Tensor[N, num_classes]

        [55x55x96] CONV1 96 11x11/4 pad 0  [27x27x96] POOL1 3x3/2  NORM1
        [27x27x256] CONV2 256 5x5/1 pad 2  [13x13x256] POOL2 3x3/2  NORM2
        [13x13x384] CONV3, [13x13x384] CONV4, [13x13x256] CONV5: 3x3/1 pad 1  [6x6x256] POOL3 3x3/2
        FC6 4096, FC7 4096, FC8 num_classes

    NORM: the paper's local response normalization, k=2, n=5, alpha=1e-4, beta=0.75, which is
    torch's LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2) (torch divides alpha by n)."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5, algo: str = "auto"):
        super().__init__()
        self.features = nn.Sequential(
            cnn.Conv2d(in_channels, 96, 11, stride=4, padding=0, algo=algo), cnn.ReLU(inplace=True),
            cnn.MaxPool2d(3, 2),
            nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0),
            cnn.Conv2d(96, 256, 5, padding=2, algo=algo), cnn.ReLU(inplace=True),
            cnn.MaxPool2d(3, 2),
            nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0),
            cnn.Conv2d(256, 384, 3, padding=1, algo=algo), cnn.ReLU(inplace=True),
            cnn.Conv2d(384, 384, 3, padding=1, algo=algo), cnn.ReLU(inplace=True),
            cnn.Conv2d(384, 256, 3, padding=1, algo=algo), cnn.ReLU(inplace=True),
            cnn.MaxPool2d(3, 2),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), cnn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(4096, 4096), cnn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        _init_weights(self)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


# ---------------------------------------------------------------------------------------------
# VGG16
# ---------------------------------------------------------------------------------------------

_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """VGG16 (Simonyan & Zisserman 2014, configuration D): thirteen 3x3/1 pad-1 convolutions in
    five stages, each closed by a 2x2/2 max pool, then FC 4096, FC 4096, FC num_classes with
    dropout 0.5. 138,357,544 parameters (torchvision's vgg16; the lecture's "138M");
    batch_norm=True adds BatchNorm2d after each convolution (torchvision's vgg16_bn, 138,365,992).

    input: Tensor[N, in_channels, 224, 224] -> Tensor[N, num_classes] (any H, W in 224..255
    leaves the 7x7 map the classifier takes; torchvision's adaptive pool is left out).
    Same module names as torchvision's (features.N, classifier.N)."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False,
                 dropout: float = 0.5, algo: str = "auto"):
        super().__init__()
        layers: List[nn.Module] = []
        c = in_channels
        for v in _VGG16_CFG:
            if v == "M":
                layers.append(cnn.MaxPool2d(2, 2))
                continue
            layers.append(cnn.Conv2d(c, v, 3, padding=1, algo=algo))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(cnn.ReLU(inplace=True))
            c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), cnn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), cnn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        _init_weights(self)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


# ---------------------------------------------------------------------------------------------
# GoogLeNet
# ---------------------------------------------------------------------------------------------

class ConvBlock(nn.Module):
    """Convolution then ReLU (paper GoogLeNet: with bias), or convolution (no bias), BatchNorm2d
    (eps 0.001) then ReLU (batch_norm=True: torchvision's BasicConv2d, same names)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 batch_norm: bool = False, algo: str = "auto"):
        super().__init__()
        self.conv = cnn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                               bias=not batch_norm, algo=algo)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001) if batch_norm else None
        self.relu = cnn.ReLU(inplace=True)

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.relu(x)


class Inception(nn.Module):
    """The inception module: 1x1 | 1x1 reduce -> 3x3 | 1x1 reduce -> 5x5 | 3x3/1 max pool -> 1x1
    pool proj, outputs concatenated along channels. input: Tensor[N, in_channels, H, W] ->
    Tensor[N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W]. `five_kernel` is the third branch's
    kernel: 5 as in the paper, 3 for torchvision's googlenet (which has 3x3 there)."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int,
                 ch5x5: int, pool_proj: int, batch_norm: bool = False, five_kernel: int = 5,
                 algo: str = "auto"):
        super().__init__()
        kw = dict(batch_norm=batch_norm, algo=algo)
        self.branch1 = ConvBlock(in_channels, ch1x1, 1, **kw)
        self.branch2 = nn.Sequential(ConvBlock(in_channels, ch3x3red, 1, **kw),
                                     ConvBlock(ch3x3red, ch3x3, 3, padding=1, **kw))
        self.branch3 = nn.Sequential(ConvBlock(in_channels, ch5x5red, 1, **kw),
                                     ConvBlock(ch5x5red, ch5x5, five_kernel, padding=five_kernel // 2, **kw))
        self.branch4 = nn.Sequential(cnn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     ConvBlock(in_channels, pool_proj, 1, **kw))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """The paper's auxiliary classifier on 4a's and 4d's output (14x14 at a 224 input): 5x5/3
    average pool (-> 4x4), 1x1 conv to 128 + ReLU, FC 1024 + ReLU, dropout 0.7, FC num_classes.
    input: Tensor[N, in_channels, 14, 14] -> Tensor[N, num_classes]."""

    def __init__(self, in_channels: int, num_classes: int, batch_norm: bool = False, dropout: float = 0.7,
                 algo: str = "auto"):
        super().__init__()
        self.avgpool = cnn.AvgPool2d(5, stride=3)
        self.conv = ConvBlock(in_channels, 128, 1, batch_norm=batch_norm, algo=algo)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.relu = cnn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = torch.flatten(self.conv(self.avgpool(x)), 1)
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


class GoogLeNetOutputs(NamedTuple):
    """GoogLeNet's outputs in training mode with aux_logits=True: the main classifier's, then
    the auxiliary classifiers' after 4a (aux1) and after 4d (aux2). (torchvision orders its
    tuple logits, aux2, aux1.)"""
    logits: torch.Tensor
    aux1: torch.Tensor
    aux2: torch.Tensor


# Table 1 of the paper: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) per module.
_INCEPTION_CFG = {
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64), "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64), "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


class GoogLeNet(nn.Module):
    """GoogLeNet (Szegedy et al. 2015, "Going Deeper with Convolutions", Table 1 and Figure 3).

    variant="paper" (default): convolutions with bias and ReLU, real 5x5 convolutions, local
    response normalization after pool1 and after conv3 (Caffe's bvlc_googlenet: n=5,
    alpha=1e-4, beta=0.75), 3x3/2 ceil_mode max pools (224 -> 112 -> 56 -> 28 -> 14 -> 7),
    7x7/1 average pool, dropout 0.4, FC. 6,998,552 parameters.
    variant="torchvision": torchvision's googlenet: bias-free convolutions + BatchNorm2d, 3x3
    in the "5x5" branch, no LRN, a 2x2/2 pool4, global average pool. 6,624,904 parameters
    (torchvision's count), and torchvision's module names.

    aux_logits=True adds the two auxiliary classifiers (after 4a and 4d); in training mode
    forward then returns GoogLeNetOutputs(logits, aux1, aux2), in eval mode the logits alone.

    input: Tensor[N, in_channels, 224, 224] -> Tensor[N, num_classes]; the paper variant needs
    H, W >= 223 (the 7x7 average pool; the auxiliary classifiers take 14x14 at 4a/4d, i.e. 224)."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, aux_logits: bool = False,
                 variant: str = "paper", dropout: float = 0.4, aux_dropout: float = 0.7, algo: str = "auto"):
        super().__init__()
        if variant not in ("paper", "torchvision"):
            raise ValueError(f"GoogLeNet: variant must be 'paper' or 'torchvision', got {variant!r}")
        paper = variant == "paper"
        self.variant = variant
        self.aux_logits = aux_logits
        kw = dict(batch_norm=not paper, algo=algo)
        self.conv1 = ConvBlock(in_channels, 64, 7, stride=2, padding=3, **kw)
        self.maxpool1 = cnn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.lrn1 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75) if paper else None
        self.conv2 = ConvBlock(64, 64, 1, **kw)
        self.conv3 = ConvBlock(64, 192, 3, padding=1, **kw)
        self.lrn2 = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75) if paper else None
        self.maxpool2 = cnn.MaxPool2d(3, stride=2, ceil_mode=True)

        c = 192
        for name, cfg in _INCEPTION_CFG.items():
            setattr(self, "inception" + name, Inception(c, *cfg, five_kernel=5 if paper else 3, **kw))
            c = cfg[0] + cfg[2] + cfg[4] + cfg[5]
            if name == "3b":
                self.maxpool3 = cnn.MaxPool2d(3, stride=2, ceil_mode=True)
            elif name == "4e":
                self.maxpool4 = (cnn.MaxPool2d(3, stride=2, ceil_mode=True) if paper
                                 else cnn.MaxPool2d(2, stride=2, ceil_mode=True))
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, dropout=aux_dropout, **kw)
            self.aux2 = InceptionAux(528, num_classes, dropout=aux_dropout, **kw)
        else:
            self.aux1 = self.aux2 = None
        self.avgpool = cnn.AvgPool2d(7, stride=1) if paper else GlobalAvgPool2d()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)
        _init_weights(self)

    def forward(self, x) -> Union[torch.Tensor, GoogLeNetOutputs]:
        x = self.maxpool1(self.conv1(x))
        if self.lrn1 is not None:
            x = self.lrn1(x)
        x = self.conv3(self.conv2(x))
        if self.lrn2 is not None:
            x = self.lrn2(x)
        x = self.maxpool2(x)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        with_aux = self.aux1 is not None and self.training
        aux1 = self.aux1(x) if with_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if with_aux else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if with_aux:
            return GoogLeNetOutputs(x, aux1, aux2)
        return x


# ---------------------------------------------------------------------------------------------
# ResNet
# ---------------------------------------------------------------------------------------------

def _conv3x3(cin: int, cout: int, stride: int = 1, algo: str = "auto") -> cnn.Conv2d:
    return cnn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False, algo=algo)


def _conv1x1(cin: int, cout: int, stride: int = 1, algo: str = "auto") -> cnn.Conv2d:
    return cnn.Conv2d(cin, cout, 1, stride=stride, bias=False, algo=algo)


class BasicBlock(nn.Module):
    """ResNet's basic block: 3x3 conv (stride) - BN - ReLU - 3x3 conv - BN, plus the shortcut
    (identity, or 1x1 conv (stride) - BN where the shape changes), then ReLU.
    input: Tensor[N, in_channels, H, W] -> Tensor[N, channels, H/stride, W/stride]."""
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, algo: str = "auto"):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride, algo)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = cnn.ReLU(inplace=True)
        self.conv2 = _conv3x3(channels, channels, 1, algo)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = _shortcut(in_channels, channels * self.expansion, stride, algo)
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet's bottleneck block (ResNet-50 and deeper): 1x1 reduce - BN - ReLU - 3x3 (stride) -
    BN - ReLU - 1x1 expand (x4) - BN, plus the shortcut, then ReLU. The stride sits on the 3x3
    (torchvision's "ResNet v1.5"; the paper puts it on the first 1x1: same parameters).
    input: Tensor[N, in_channels, H, W] -> Tensor[N, 4 * channels, H/stride, W/stride]."""
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, algo: str = "auto"):
        super().__init__()
        self.conv1 = _conv1x1(in_channels, channels, 1, algo)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels, stride, algo)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = _conv1x1(channels, channels * self.expansion, 1, algo)
        self.bn3 = nn.BatchNorm2d(channels * self.expansion)
        self.relu = cnn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, channels * self.expansion, stride, algo)
        self.stride = stride

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(cin: int, cout: int, stride: int, algo: str) -> Optional[nn.Sequential]:
    """The projection shortcut (1x1 conv + BN, the paper's option B) where the block changes
    shape; None (identity) where it doesn't."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(_conv1x1(cin, cout, stride, algo), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    """ResNet (He et al. 2015), batch norm after every convolution: 7x7/2 conv - BN - ReLU -
    3x3/2 max pool, four stages of `layers[i]` blocks (64, 128, 256, 512 channels; stride 2
    at the start of stages 2-4), global average pool, FC. Module names as torchvision's.

    input: Tensor[N, in_channels, H, W] (224 in the paper; any H, W >= 1) -> Tensor[N, num_classes].
    zero_init_residual: start each block's last BN at zero (each block starts as the identity)."""

    def __init__(self, block: Type[Union[BasicBlock, Bottleneck]], layers: Sequence[int], num_classes: int = 1000,
                 in_channels: int = 3, zero_init_residual: bool = False, algo: str = "auto"):
        super().__init__()
        self.conv1 = cnn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False, algo=algo)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = cnn.ReLU(inplace=True)
        self.maxpool = cnn.MaxPool2d(3, stride=2, padding=1)
        c = 64
        for i, (channels, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(c, channels, 2 if (i > 0 and j == 0) else 1, algo))
                c = channels * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = GlobalAvgPool2d()
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        _init_weights(self)
        for m in self.modules():  # torchvision's fc init: the default (uniform), not N(0, 0.01)
            if isinstance(m, nn.Linear):
                m.reset_parameters()
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ResNet18(ResNet):
    """ResNet-18: basic blocks, [2, 2, 2, 2]. 11,689,512 parameters (torchvision's resnet18)."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, zero_init_residual: bool = False,
                 algo: str = "auto"):
        super().__init__(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, zero_init_residual, algo)


class ResNet50(ResNet):
    """ResNet-50: bottleneck blocks, [3, 4, 6, 3]. 25,557,032 parameters (torchvision's resnet50)."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, zero_init_residual: bool = False,
                 algo: str = "auto"):
        super().__init__(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, zero_init_residual, algo)
