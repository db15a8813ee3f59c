"""The d2l course's classic CNNs (d2l.ai, "Modern Convolutional Neural Networks" and LeNet).

LeNet, AlexNet, VGG, NiN and GoogLeNet as the chapters write them, with Xavier-uniform weights
(the chapters' `init_cnn`), and no BatchNorm (none of these chapters uses it). What changes, so
that any input size and class count work and the pipeline can drive them:
- 3 input channels (`in_chans`), and explicit `in_channels` instead of the chapters' Lazy layers,
  so the weights exist before the first batch (the optimiser and the EMA copy need them);
- an adaptive pool before the dense layers, to the map the chapter gets at its own input size
  (LeNet 5x5 at 28 px, AlexNet 5x5 and VGG 7x7 at 224 px), so the flattened size, and the
  weights, are the chapter's at every input size;
- `drop_rate` sets every dropout (the course's 0.5 when called without it; the pipeline passes
  `train.defaults.drop_rate`); LeNet and GoogLeNet, which have none, get one before the
  classifier, a no-op at the default 0.
Each net is `features` (the conv body) then `head` (everything after it, as torchvision's
`classifier`), which `pipeline.models.registry.head_parameters` finds. Per-net deviations are in
their docstrings.
"""

from __future__ import annotations

import torch
from torch import nn

VGG11_ARCH = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
VGG11_SMALL_ARCH = tuple((num_convs, channels // 4) for num_convs, channels in VGG11_ARCH)

# GoogLeNet's Inception blocks, (c1, (c2 reduce, c2), (c3 reduce, c3), c4), in the stages the
# chapter calls b3, b4 and b5; a 3x3 stride-2 max-pool follows each stage but the last.
GOOGLENET_STAGES = (
    ((64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64)),
    (
        (192, (96, 208), (16, 48), 64),
        (160, (112, 224), (24, 64), 64),
        (128, (128, 256), (24, 64), 64),
        (112, (144, 288), (32, 64), 64),
        (256, (160, 320), (32, 128), 128),
    ),
    ((256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128)),
)


def init_cnn(module: nn.Module) -> None:
    """The course's `init_cnn`: Xavier-uniform weights for every conv and dense layer."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)


class D2LNet(nn.Module):
    """A conv body then a classifier head, initialised as the course does."""

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features = features
        self.head = head
        self.apply(init_cnn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def dense(in_features: int, out_features: int, drop_rate: float) -> list[nn.Module]:
    """AlexNet's and VGG's hidden dense layer: Linear, ReLU, Dropout."""
    return [nn.Linear(in_features, out_features), nn.ReLU(inplace=True), nn.Dropout(drop_rate)]


def padded_max_pool() -> nn.MaxPool2d:
    """AlexNet's and NiN's 3x3 stride-2 max-pool, padded by 1 so that small maps survive.

    Unpadded (the chapter), AlexNet needs 65 px inputs and NiN 67 px: at 64 px a map of 2 x 2
    reaches a 3x3 pool. Padded, they take 32 px (and 9 / 11 px at the least).
    """
    return nn.MaxPool2d(3, stride=2, padding=1)


class LeNet(D2LNet):
    """LeNet-5 as in d2l: conv5(6)-sigmoid-avgpool, conv5(16)-sigmoid-avgpool, dense 120, 84.

    Inputs from 12 px; the 16-channel map is average-pooled to the chapter's 5 x 5 (at 28 px
    that is the identity). The dropout before the classifier (`drop_rate`) is not in the chapter.
    """

    def __init__(self, num_classes: int, drop_rate: float = 0.0, in_chans: int = 3):
        features = nn.Sequential(
            nn.Conv2d(in_chans, 6, 5, padding=2),
            nn.Sigmoid(),
            nn.AvgPool2d(2, stride=2),
            nn.Conv2d(6, 16, 5),
            nn.Sigmoid(),
            nn.AvgPool2d(2, stride=2),
        )
        head = nn.Sequential(
            nn.AdaptiveAvgPool2d(5),
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.Sigmoid(),
            nn.Linear(120, 84),
            nn.Sigmoid(),
            nn.Dropout(drop_rate),
            nn.Linear(84, num_classes),
        )
        super().__init__(features, head)


class AlexNet(D2LNet):
    """AlexNet as in d2l: conv11/4(96), conv5(256), 3 x conv3, dense 4096-4096 with dropout.

    Deviations: the max-pools pad by 1 (see `padded_max_pool`), and the last map is
    average-pooled to 5 x 5 (the chapter's at 224 px) before the dense layers.
    """

    def __init__(self, num_classes: int, drop_rate: float = 0.5, in_chans: int = 3):
        features = nn.Sequential(
            nn.Conv2d(in_chans, 96, 11, stride=4, padding=1),
            nn.ReLU(inplace=True),
            padded_max_pool(),
            nn.Conv2d(96, 256, 5, padding=2),
            nn.ReLU(inplace=True),
            padded_max_pool(),
            nn.Conv2d(256, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            padded_max_pool(),
        )
        head = nn.Sequential(
            nn.AdaptiveAvgPool2d(5),
            nn.Flatten(),
            *dense(256 * 5 * 5, 4096, drop_rate),
            *dense(4096, 4096, drop_rate),
            nn.Linear(4096, num_classes),
        )
        super().__init__(features, head)


def vgg_block(num_convs: int, in_channels: int, out_channels: int) -> nn.Sequential:
    """d2l's `vgg_block`: `num_convs` 3x3 convs with ReLU, then a 2x2 stride-2 max-pool."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True)]
        in_channels = out_channels
    return nn.Sequential(*layers, nn.MaxPool2d(2, stride=2))


class VGG(D2LNet):
    """VGG as in d2l: `vgg_block`s from `arch` ((convs, channels) each), dense 4096-4096.

    Five blocks halve the input five times, so inputs need 32 px; the last map is
    average-pooled to 7 x 7 (the chapter's at 224 px) before the dense layers.
    """

    def __init__(
        self,
        arch: tuple[tuple[int, int], ...],
        num_classes: int,
        drop_rate: float = 0.5,
        in_chans: int = 3,
    ):
        blocks, channels = [], in_chans
        for num_convs, out_channels in arch:
            blocks.append(vgg_block(num_convs, channels, out_channels))
            channels = out_channels
        head = nn.Sequential(
            nn.AdaptiveAvgPool2d(7),
            nn.Flatten(),
            *dense(channels * 7 * 7, 4096, drop_rate),
            *dense(4096, 4096, drop_rate),
            nn.Linear(4096, num_classes),
        )
        super().__init__(nn.Sequential(*blocks), head)


def nin_block(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int
) -> nn.Sequential:
    """d2l's `nin_block`: a conv, then two 1x1 convs, each followed by ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 1),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 1),
        nn.ReLU(inplace=True),
    )


class NiN(D2LNet):
    """Network in Network as in d2l: three NiN blocks, dropout, a NiN block per class, pool.

    No dense layer: the head is the dropout, the last NiN block (one channel per class) and the
    global average pool. As in the chapter its logits pass a ReLU, so they are never negative.
    Deviation: the max-pools pad by 1 (see `padded_max_pool`).
    """

    def __init__(self, num_classes: int, drop_rate: float = 0.5, in_chans: int = 3):
        features = nn.Sequential(
            nin_block(in_chans, 96, 11, 4, 0),
            padded_max_pool(),
            nin_block(96, 256, 5, 1, 2),
            padded_max_pool(),
            nin_block(256, 384, 3, 1, 1),
            padded_max_pool(),
        )
        head = nn.Sequential(
            nn.Dropout(drop_rate),
            nin_block(384, num_classes, 3, 1, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        super().__init__(features, head)


def conv_relu(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    """A size-keeping conv (stride 1, padding kernel_size // 2) and its ReLU."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    return [conv, nn.ReLU(inplace=True)]


class Inception(nn.Module):
    """d2l's Inception block: 1x1, 1x1-3x3, 1x1-5x5 and pool-1x1 paths, concatenated."""

    def __init__(
        self,
        in_channels: int,
        c1: int,
        c2: tuple[int, int],
        c3: tuple[int, int],
        c4: int,
    ):
        super().__init__()
        self.b1 = nn.Sequential(*conv_relu(in_channels, c1, 1))
        self.b2 = nn.Sequential(*conv_relu(in_channels, c2[0], 1), *conv_relu(c2[0], c2[1], 3))
        self.b3 = nn.Sequential(*conv_relu(in_channels, c3[0], 1), *conv_relu(c3[0], c3[1], 5))
        self.b4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), *conv_relu(in_channels, c4, 1)
        )
        self.out_channels = c1 + c2[1] + c3[1] + c4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)


class GoogLeNet(D2LNet):
    """GoogLeNet as in d2l: a 7x7 and a 1x1-3x3 stem, nine Inception blocks, global pool.

    Any input size works (the chapter's max-pools are padded). The dropout before the
    classifier (`drop_rate`) is not in the chapter (the paper has one of 0.4).
    """

    def __init__(self, num_classes: int, drop_rate: float = 0.0, in_chans: int = 3):
        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, 64, 7, stride=2, padding=3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.Conv2d(64, 64, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 192, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        ]
        channels = 192
        for i, stage in enumerate(GOOGLENET_STAGES):
            for c1, c2, c3, c4 in stage:
                layers.append(Inception(channels, c1, c2, c3, c4))
                channels = layers[-1].out_channels
            if i < len(GOOGLENET_STAGES) - 1:
                layers.append(nn.MaxPool2d(3, stride=2, padding=1))
        head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(drop_rate),
            nn.Linear(channels, num_classes),
        )
        super().__init__(nn.Sequential(*layers), head)
