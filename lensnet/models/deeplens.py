"""CMU DeepLens: a 46-layer pre-activated bottleneck residual network (Lanusse et al. 2018).

Reference: F. Lanusse et al., "CMU DeepLens: deep learning for automatic image-based
galaxy-galaxy strong lens finding", MNRAS 473, 3895 (2018), section 3.1, figs 3 and 4.

Layout (section 3.1 and fig. 4; the level widths are those listed in appendix A3 of
Magro et al. 2021, which reproduces fig. 4):

====================  =====================================  ===============
block                 layers                                 output (45 px)
====================  =====================================  ===============
stem                  conv 7x7, 32 -> batch norm -> ELU      32 x 45 x 45
level 1               3 x ResNet-16-32                       32 x 45 x 45
level 2               ResNet-32-64,/2 + 2 x ResNet-32-64     64 x 23 x 23
level 3               ResNet-64-128,/2 + 2 x ResNet-64-128   128 x 12 x 12
level 4               ResNet-128-256,/2 + 2 x ResNet-128-256 256 x 6 x 6
level 5               ResNet-256-512,/2 + 2 x ResNet-256-512 512 x 3 x 3
head                  average pool -> fully connected, 1     1
====================  =====================================  ===============

"ResNet-a-b" is a pre-activated bottleneck unit (fig. 3): (batch norm, ELU, conv) three
times with 1x1, 3x3 and 1x1 kernels of a, a and b channels; ",/2" marks the unit that
halves the resolution with a stride-2 first convolution and a stride-2 1x1 projection on
the shortcut. The stem plus 15 units of three convolutions make the paper's 46 layers.
The paper trains on 45 x 45 single-band (LSST g) stamps (section 3.5), the default here.

The paper's sigmoid output layer becomes a logit (probability = sigmoid(logit)).
Batch normalisation uses its running statistics at inference, so a stamp's score never
depends on the other stamps of its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lensnet.models.registry import register_model

LANUSSE_2018 = "Lanusse et al. 2018, MNRAS 473, 3895 (CMU DeepLens), sec. 3.1, figs 3-4"


class PreActBottleneck(nn.Module):
    """A pre-activated bottleneck residual unit (Lanusse et al. 2018, fig. 3; He et al. 2016b).

    Args:
        in_channels: channels of the unit's input.
        bottleneck_channels: channels of the 1x1 and 3x3 convolutions ("a" in ResNet-a-b).
        out_channels: channels of the unit's output ("b").
        stride: 2 for the down-sampling unit (fig. 3b), which strides its first 1x1
            convolution and projects the shortcut with a stride-2 1x1 convolution.
        preactivate: apply batch norm and ELU to the input. False for a unit whose input
            was already normalised and activated (the first unit after the stem).
    """

    def __init__(
        self,
        in_channels: int,
        bottleneck_channels: int,
        out_channels: int,
        stride: int = 1,
        preactivate: bool = True,
    ):
        super().__init__()
        self.preact = (
            nn.Sequential(nn.BatchNorm2d(in_channels), nn.ELU(inplace=True))
            if preactivate
            else nn.Identity()
        )
        # Every convolution here feeds a batch norm or the residual sum, so biases would be
        # redundant with the following normalisation (or the classifier's bias).
        self.conv1 = nn.Conv2d(in_channels, bottleneck_channels, 1, stride, bias=False)
        self.norm2 = nn.BatchNorm2d(bottleneck_channels)
        self.conv2 = nn.Conv2d(bottleneck_channels, bottleneck_channels, 3, 1, 1, bias=False)
        self.norm3 = nn.BatchNorm2d(bottleneck_channels)
        self.conv3 = nn.Conv2d(bottleneck_channels, out_channels, 1, bias=False)
        self.act = nn.ELU(inplace=True)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.preact(x)
        # The undecimated unit adds its raw input (fig. 3a); the down-sampling unit projects
        # the pre-activated tensor instead (fig. 3b), as in He et al. (2016b).
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.act(self.norm2(out)))
        out = self.conv3(self.act(self.norm3(out)))
        return out + shortcut


def deeplens_levels(
    stem_channels: int,
    widths: Sequence[int],
    units_per_level: int,
    preactivate_first: bool,
) -> nn.Sequential:
    """The residual trunk: one level per width, each ``units_per_level`` bottleneck units.

    Every level but the first opens with a stride-2 unit; bottlenecks are half the level
    width (ResNet-16-32, ResNet-32-64, ... in fig. 3).
    """
    units: list[nn.Module] = []
    in_channels = stem_channels
    for level, width in enumerate(widths):
        for index in range(units_per_level):
            stride = 2 if (level > 0 and index == 0) else 1
            preactivate = preactivate_first or len(units) > 0
            units.append(PreActBottleneck(in_channels, width // 2, width, stride, preactivate))
            in_channels = width
    return nn.Sequential(*units)


class DeepLens(nn.Module):
    """CMU DeepLens (Lanusse et al. 2018, sec. 3.1, fig. 4): stem, 5 x 3 residual units, a logit.

    Args:
        bands: input channels (the stem accepts any number, section 3.1).
        widths: output channels of the five resolution levels.
        units_per_level: residual units per level (3 in the paper: 46 layers in total).
        stem_kernel: kernel side of the stem convolution.
    """

    def __init__(
        self,
        bands: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256, 512),
        units_per_level: int = 3,
        stem_kernel: int = 7,
    ):
        super().__init__()
        stem_channels = widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(bands, stem_channels, stem_kernel, padding=stem_kernel // 2, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ELU(inplace=True),
        )
        # The stem output is already normalised and activated, so the first unit skips its
        # own pre-activation and its identity shortcut carries the activated stem output.
        self.levels = deeplens_levels(
            stem_channels, widths, units_per_level, preactivate_first=False
        )
        # Fig. 4 averages the last level's 3 x 3 map of a 45 px stamp; a global average is
        # the same operation there and keeps the network usable at any stamp size.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(widths[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.levels(self.stem(x))).flatten(1)
        return self.classifier(features).squeeze(1)


@register_model(input_size_px=45, reference=LANUSSE_2018)
def deeplens(bands: int = 1, **kwargs) -> nn.Module:
    """CMU DeepLens as published: 46 layers, 45 x 45 stamps, 3.5M parameters (1 band)."""
    return DeepLens(bands=bands, **kwargs)
