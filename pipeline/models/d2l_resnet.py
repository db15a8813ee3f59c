"""The d2l course's ResNet (d2l.ai, "Residual Networks"), with a stem for small inputs.

The course's stem (a 7x7 stride-2 conv and a stride-2 max-pool) quarters the image before the
first residual stage: fine at 224 px, but a 64 px leaf reaches it as 16 x 16 and its margin
detail is gone. `small_stem=True` swaps it for one 3x3 stride-1 conv (as CIFAR ResNets do), so
the first stage sees the full resolution; it costs about 16x the first stage's compute.
Deviations from the chapter, kept from the original port: convs before BatchNorm carry no bias,
PyTorch's default init (the chapter uses Xavier), and a dropout before the classifier.
"""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """The d2l residual block: two 3x3 convs, with a 1x1 conv on the shortcut when it reshapes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + self.shortcut(x))


def resnet_stem(in_chans: int, width: int, small: bool) -> nn.Sequential:
    """The layers before the first residual stage: the course's (/4) or a small-input one (/1)."""
    if small:
        return nn.Sequential(
            nn.Conv2d(in_chans, width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
    return nn.Sequential(
        nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


class D2LResNet(nn.Module):
    """The d2l.ai ResNet: a stem, stages of Residual blocks (width doubling), global pool.

    Args:
        blocks_per_stage: Residual blocks in each stage; every stage after the first halves
            the resolution and doubles the channels.
        num_classes: outputs of the classifier (`head`, its last layer an nn.Linear).
        width: channels of the stem and the first stage (the course: 64).
        drop_rate: dropout before the classifier.
        in_chans: input channels.
        small_stem: a 3x3 stride-1 stem with no max-pool instead of the course's 7x7/2 + pool/2.
    """

    def __init__(
        self,
        blocks_per_stage: tuple[int, ...],
        num_classes: int,
        width: int = 64,
        drop_rate: float = 0.0,
        in_chans: int = 3,
        small_stem: bool = False,
    ):
        super().__init__()
        self.stem = resnet_stem(in_chans, width, small_stem)
        stages, channels = [], width
        for i, num_blocks in enumerate(blocks_per_stage):
            out_channels = width * 2**i
            for j in range(num_blocks):
                stride = 2 if i > 0 and j == 0 else 1
                stages.append(Residual(channels, out_channels, stride))
                channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(drop_rate),
            nn.Linear(channels, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))
