"""OU-66 and OU-200: the Open University lens-finding CNNs (Wilde et al. 2022).

Reference: J. Wilde et al., "Detecting gravitational lenses using machine learning:
exploring interpretability and sensitivity to rare lensing configurations", MNRAS (2022),
section 3.1, table 3 (OU-66, 66 x 66 px) and table 4 (OU-200, 200 x 200 px). Both take
the four Euclid bands (VIS, Y, J, H) resampled to a common grid.

Every convolution is valid-padded with stride 1 and followed by ReLU, an optional 2x2 max
pool and dropout 0.2; then one ReLU dense layer and a two-neuron softmax output. The
tables have three quirks, each resolved by the parameter column (which sums to the
published totals, 203,192 and 331,632 for four bands) and the output-shape column:

* the max-pool rows list a stride of (1, 1) but halve the map (64 -> 32): the pools here
  use stride 2, matching the shapes;
* in table 4 the "kernel count" column of layers 4 and 8 (50 and 40) is the *input*
  width: the parameter counts (50,040 = 50*25*40 + 40 and 10,830 = 40*9*30 + 30) and the
  output shapes say those layers output 40 and 30 channels, as built here;
* the output layer is a two-way softmax. This project's contract is one logit, so the
  default ``num_outputs=2`` keeps the published layer (and parameter count) and returns the
  log-odds of its lens class, ``z[:, 1] - z[:, 0]``; sigmoid of that equals the softmax
  probability of "lens" (class 1: lens, 0: non-lens, as labelled in fig. 11), so a
  checkpoint trained with the paper's two-way cross-entropy keeps its meaning.
  ``num_outputs=1`` builds a plain one-neuron output instead (501 or 351 fewer weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from lensnet.models.registry import register_model

WILDE_2022 = "Wilde et al. 2022, MNRAS (OU-66/OU-200), sec. 3.1"


class ConvLayer(NamedTuple):
    """One table row group: a valid convolution, ReLU, an optional 2x2 max pool, dropout."""

    kernel: int
    out_channels: int
    pool: bool


# Table 3, layers 0-29: nine 3x3 convolutions, pools after layers 0, 13 and 26.
OU66_CONVS = (
    ConvLayer(3, 50, True),
    ConvLayer(3, 50, False),
    ConvLayer(3, 50, False),
    ConvLayer(3, 50, False),
    ConvLayer(3, 40, True),
    ConvLayer(3, 40, False),
    ConvLayer(3, 40, False),
    ConvLayer(3, 40, False),
    ConvLayer(3, 30, True),
)

# Table 4, layers 0-21: two 5x5 and four 3x3 convolutions, pools after the first four.
OU200_CONVS = (
    ConvLayer(5, 50, True),
    ConvLayer(5, 40, True),
    ConvLayer(3, 30, True),
    ConvLayer(3, 20, True),
    ConvLayer(3, 20, False),
    ConvLayer(3, 20, False),
)


class OUNet(nn.Module):
    """The OU architecture: valid convolutions with dropout, one dense layer, an output layer.

    Args:
        bands: input channels (4 in the paper: VIS, Y, J, H).
        convs: the convolution stack, one :class:`ConvLayer` per table row group.
        dense_width: neurons of the hidden dense layer (500 for OU-66, 350 for OU-200).
        input_size_px: stamp side; sizes the dense layer (the paper flattens the last map).
        num_outputs: 2 for the paper's softmax pair (returned as its log-odds), 1 for a
            single logit.
        dropout: dropout probability after every convolution block (0.2 in the tables).
    """

    def __init__(
        self,
        bands: int,
        convs: Sequence[ConvLayer],
        dense_width: int,
        input_size_px: int,
        num_outputs: int = 2,
        dropout: float = 0.2,
    ):
        super().__init__()
        if num_outputs not in (1, 2):
            raise ValueError(f"num_outputs must be 1 or 2, got {num_outputs}")
        layers: list[nn.Module] = []
        channels, size = bands, input_size_px
        for conv in convs:
            layers += [nn.Conv2d(channels, conv.out_channels, conv.kernel), nn.ReLU(inplace=True)]
            channels, size = conv.out_channels, size - conv.kernel + 1
            if conv.pool:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            layers.append(nn.Dropout(dropout))
            if size < 1:
                raise ValueError(f"input_size_px={input_size_px} is too small for this network")
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(channels * size * size, dense_width),
            nn.ReLU(inplace=True),
            nn.Linear(dense_width, num_outputs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.classifier(self.features(x).flatten(1))
        if z.shape[1] == 2:
            # log(softmax(z)_1 / softmax(z)_0): the lens log-odds of the two-way output.
            return z[:, 1] - z[:, 0]
        return z.squeeze(1)


@register_model(input_size_px=66, reference=f"{WILDE_2022}, table 3")
def ou_66(bands: int = 4, input_size_px: int = 66, **kwargs) -> nn.Module:
    """OU-66 (table 3): nine 3x3 convolutions on 66 px stamps; 203,192 parameters for 4 bands."""
    return OUNet(bands, OU66_CONVS, 500, input_size_px, **kwargs)


@register_model(input_size_px=200, reference=f"{WILDE_2022}, table 4")
def ou_200(bands: int = 4, input_size_px: int = 200, **kwargs) -> nn.Module:
    """OU-200 (table 4): six convolutions on 200 px stamps; 331,632 parameters for 4 bands."""
    return OUNet(bands, OU200_CONVS, 350, input_size_px, **kwargs)
