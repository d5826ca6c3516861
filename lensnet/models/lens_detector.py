"""Lens Detector: CNN features, then a transformer encoder (Thuruthipilly & Grespan).

Reference: H. Thuruthipilly & M. Grespan (NCBJ), "Finding strong gravitational lenses with
self-attention" (poster). The model works in three
phases: a CNN extracts features, a transformer encoder with multi-head self-attention over
the feature-map positions filters them, and a feed-forward network classifies. Trained on
the Bologna Lens Challenge ground set: 101 x 101 px stamps in four bands (u, g, r, i).

Configuration: the poster's results table gives each Lens Detector as "CNN + heads
H_dim + encoder layers". Its best challenge accuracy (92.99 %) is Lens Detector 15,
"8 CNN layers + 8 H_128 + 4 (E)", and the same structure (Lens Detector 21) reaches the
challenge's best AUROC, 0.98. So the defaults are 8 convolutional layers, 8 attention
heads over a 128-dimensional embedding, and 4 encoder layers. The poster gives neither
the convolutions' widths nor the feed-forward sizes; the choices below are documented
where they are made:

* CNN: four stages of two 3x3 convolutions (batch norm, ReLU) with 16, 32, 64 and 128
  features, each stage closed by a 2x2 max pool. A 101 px stamp becomes a 6 x 6 map of
  128-dimensional tokens (36 tokens), so the last stage already has the embedding width.
* Tokens get a fixed 2-D sine-cosine position encoding (a learned table would tie the
  model to one stamp size) before the encoder.
* Encoder: ``torch.nn.TransformerEncoder`` with post-norm layers as in Vaswani et al.
  (2017): feed-forward width 4 x 128 = 512, dropout 0.1.
* Head: the encoder's tokens are averaged (any number of tokens, any stamp size) and a
  two-layer feed-forward network (128 -> 128 -> 1, ReLU, dropout) gives one logit.

Batch norm uses running statistics at inference and attention runs within each stamp's
own tokens, so a stamp's score never depends on the rest of its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lensnet.models.registry import register_model

THURUTHIPILLY = (
    "Thuruthipilly & Grespan, poster (Lens Detector 15: 8 CNN layers + 8 H_128 + 4 encoders)"
)


def sincos_position_encoding(
    height: int, width: int, dim: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """A (height * width, dim) 2-D sine-cosine encoding: a quarter of ``dim`` per sin/cos per axis.

    Each axis uses the frequencies of Vaswani et al. (2017), 1 / 10000^(k / (dim / 4)).
    """
    if dim % 4:
        raise ValueError(f"the embedding width must be a multiple of 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    y, x = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    y = y.reshape(-1, 1) * omega
    x = x.reshape(-1, 1) * omega
    return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1).to(dtype)


def conv_stages(bands: int, widths: Sequence[int], convs_per_stage: int) -> nn.Sequential:
    """Stages of ``convs_per_stage`` 3x3 convolutions (batch norm, ReLU) closed by 2x2 max pools."""
    layers: list[nn.Module] = []
    in_channels = bands
    for width in widths:
        for _ in range(convs_per_stage):
            layers += [
                nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            in_channels = width
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class LensDetector(nn.Module):
    """CNN features -> transformer encoder over the feature-map tokens -> feed-forward head.

    Args:
        bands: input channels.
        stage_widths: features of the CNN stages.
        convs_per_stage: convolutions per stage (2 x 4 stages = the paper's 8 CNN layers).
        embed_dim: token width of the encoder ("H_128").
        num_heads: attention heads (8).
        num_layers: encoder layers ("4 (E)").
        ffn_dim: hidden width of each encoder layer's feed-forward block.
        head_dim: hidden width of the classification feed-forward network.
        dropout: dropout in the encoder and the head.
    """

    def __init__(
        self,
        bands: int = 4,
        stage_widths: Sequence[int] = (16, 32, 64, 128),
        convs_per_stage: int = 2,
        embed_dim: int = 128,
        num_heads: int = 8,
        num_layers: int = 4,
        ffn_dim: int = 512,
        head_dim: int = 128,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.cnn = conv_stages(bands, stage_widths, convs_per_stage)
        # A 1x1 projection only when the CNN's width differs from the token width.
        self.project = (
            nn.Conv2d(stage_widths[-1], embed_dim, 1)
            if stage_widths[-1] != embed_dim
            else nn.Identity()
        )
        layer = nn.TransformerEncoderLayer(
            embed_dim, num_heads, ffn_dim, dropout, activation="relu", batch_first=True
        )
        # Nested tensors only pay off with padding masks, which fixed-size stamps never need.
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(
            nn.Linear(embed_dim, head_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(head_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.project(self.cnn(x))
        _, dim, height, width = features.shape
        tokens = features.flatten(2).transpose(1, 2)  # (batch, height * width, dim)
        tokens = tokens + sincos_position_encoding(height, width, dim, x.device, tokens.dtype)
        encoded = self.encoder(tokens)
        return self.head(encoded.mean(dim=1)).squeeze(1)


@register_model(input_size_px=101, reference=THURUTHIPILLY)
def lens_detector(bands: int = 4, **kwargs) -> nn.Module:
    """Lens Detector 15: 8 convolutions, 4 encoder layers of 8-head attention on 128-d tokens."""
    return LensDetector(bands=bands, **kwargs)
