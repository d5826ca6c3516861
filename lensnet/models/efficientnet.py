"""EfficientNet-B2 lens finders, single- and two-branch (Bom et al. 2022).

Reference: C. R. Bom et al., "Developing a victorious strategy to the second strong
gravitational lensing data challenge", MNRAS (2022), section 3.2 and fig. 5a.
The backbone is EfficientNet-B2 (Tan & Le 2019), taken from ``timm`` rather than
re-implemented.

The challenge's Euclid stamps come at two resolutions (section 2.1): VIS at 200 x 200 px
(0.1 arcsec/px) and Y, J, H at 66 x 66 px (0.3 arcsec/px). Rather than resample either, the
two-branch model runs one EfficientNet-B2 feature extractor per resolution, removes each
one's classifier, concatenates the two pooled feature vectors and applies one fully
connected output layer (fig. 5a). The paper's output is a two-way softmax; a single logit
is the same model family (softmax over two logits depends only on their difference), so
this module's output layer has one neuron and sigmoid(logit) is the lens probability.

Weights: the paper starts from ImageNet weights (section 4.1). Nothing is downloaded by
default (``pretrained=False``, random initialisation). ``pretrained=True`` asks timm for
its ImageNet weights (fetched from the Hugging Face Hub, so it needs network access), and
``pretrained_file`` loads the same weights from a local file instead. Either way timm
adapts the stem convolution to the branch's channel count (for one channel it sums the
RGB filters), which plays the role of the paper's repeated-VIS input.
"""

from __future__ import annotations

import torch
from torch import nn

from lensnet.models.registry import register_model

BOM_2022 = "Bom et al. 2022, MNRAS, sec. 3.2, fig. 5a; Tan & Le 2019 (EfficientNet-B2)"

# EfficientNet-B2's regularisation (Tan & Le 2019, section 5.2): dropout 0.3 before the
# classifier and stochastic depth with survival probability 0.8.
B2_DROPOUT = 0.3
B2_DROP_PATH_RATE = 0.2


def efficientnet_b2_features(
    in_chans: int,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    drop_path_rate: float = B2_DROP_PATH_RATE,
) -> nn.Module:
    """timm's EfficientNet-B2 without classifier: (batch, in_chans, H, W) -> (batch, 1408).

    Global average pooling makes it accept any stamp size of at least one pixel after its
    32x down-sampling.
    """
    # timm is imported here, not at module level: it takes seconds to import, and every
    # `import lensnet.models` (which registers this family) would otherwise pay for it.
    import timm

    overlay = {"file": pretrained_file} if pretrained_file is not None else None
    return timm.create_model(
        "efficientnet_b2",
        pretrained=pretrained or pretrained_file is not None,
        pretrained_cfg_overlay=overlay,
        num_classes=0,
        in_chans=in_chans,
        drop_path_rate=drop_path_rate,
    )


class EfficientNetB2(nn.Module):
    """One EfficientNet-B2 feature extractor and one output neuron (table 1's one-branch models).

    Args:
        bands: input channels.
        pretrained: start from timm's ImageNet weights (downloads them).
        pretrained_file: a local file holding those weights (implies ``pretrained``).
        dropout: dropout before the output layer.
        drop_path_rate: stochastic-depth rate inside the backbone.
    """

    def __init__(
        self,
        bands: int = 3,
        pretrained: bool = False,
        pretrained_file: str | None = None,
        dropout: float = B2_DROPOUT,
        drop_path_rate: float = B2_DROP_PATH_RATE,
    ):
        super().__init__()
        self.backbone = efficientnet_b2_features(bands, pretrained, pretrained_file, drop_path_rate)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.backbone.num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.backbone(x))).squeeze(1)


class TwoBranchEfficientNetB2(nn.Module):
    """Two EfficientNet-B2 branches, concatenated features, one output neuron (fig. 5a).

    The forward pass takes ``(high_res, low_res)``: ``high_res`` has ``high_res_bands``
    channels (VIS), ``low_res`` the remaining ``bands - high_res_bands`` (Y, J, H). The two
    may have different sizes.

    Args:
        bands: total input channels over both branches (4 for VIS + Y, J, H).
        high_res_bands: channels of the high-resolution branch (1: VIS).
        pretrained, pretrained_file, dropout, drop_path_rate: as for :class:`EfficientNetB2`.
    """

    def __init__(
        self,
        bands: int = 4,
        high_res_bands: int = 1,
        pretrained: bool = False,
        pretrained_file: str | None = None,
        dropout: float = B2_DROPOUT,
        drop_path_rate: float = B2_DROP_PATH_RATE,
    ):
        super().__init__()
        low_res_bands = bands - high_res_bands
        if high_res_bands < 1 or low_res_bands < 1:
            raise ValueError(
                f"a two-branch model needs at least one band per branch; got bands={bands}, "
                f"high_res_bands={high_res_bands}"
            )
        self.high_res_bands = high_res_bands
        self.low_res_bands = low_res_bands
        self.high_res = efficientnet_b2_features(
            high_res_bands, pretrained, pretrained_file, drop_path_rate
        )
        self.low_res = efficientnet_b2_features(
            low_res_bands, pretrained, pretrained_file, drop_path_rate
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.high_res.num_features + self.low_res.num_features, 1)

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        high_res, low_res = inputs
        features = torch.cat([self.high_res(high_res), self.low_res(low_res)], dim=1)
        return self.classifier(self.dropout(features)).squeeze(1)


@register_model(input_size_px=200, reference=BOM_2022)
def efficientnet_b2(bands: int = 1, **kwargs) -> nn.Module:
    """One-branch EfficientNet-B2 for single-resolution stamps (default: VIS, 200 px)."""
    return EfficientNetB2(bands=bands, **kwargs)


@register_model(input_size_px=(200, 66), branches=2, reference=BOM_2022)
def efficientnet_b2_two_branch(bands: int = 4, **kwargs) -> nn.Module:
    """Two-branch EfficientNet-B2 (fig. 5a): VIS at 200 px and Y, J, H at 66 px.

    ``bands`` is the total over both branches; ``high_res_bands`` (default 1) of them go to
    the first, high-resolution, input of the ``(high_res, low_res)`` pair.
    """
    return TwoBranchEfficientNetB2(bands=bands, **kwargs)
