"""The six CNNs re-implemented in LEXACTUM (Magro et al. 2021, appendix A).

Reference: D. Magro et al., "A comparative study of convolutional neural networks for the
detection of strong gravitational lensing" (LEXACTUM), section 1.2.2 and appendix A1-A6.
Each network follows its appendix paragraph; every entry point is registered at the
101 x 101 stamps of the Gravitational Lens Finding Challenge 1.0 (section 2.1: one band
for the Space set, four for the Ground set).

Appendix A lists layers, kernel sizes and feature counts but leaves padding, pooling
strides and a few widths open. Those are filled in from the authors' public Keras
implementation (github.com/DanielMagro97/LEXACTUM, ``neural_networks/``), whose
conventions carry over unchanged: a pooling layer's stride equals its window (the Keras
and PyTorch default) and windows that do not fit are dropped (floor). Every such choice is
marked "(impl.)" below. Where the appendix and that implementation disagree, the appendix
wins (noted per network).

The papers' final sigmoid neuron becomes a logit (probability = sigmoid(logit)). Networks
that flatten a feature map before their dense layers depend on the stamp size, so their
entry points take ``input_size_px`` (default 101) and size the first dense layer from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lensnet.models.deeplens import PreActBottleneck, deeplens_levels
from lensnet.models.registry import register_model

CHALLENGE_SIZE_PX = 101


def lexactum_reference(appendix: str, original: str) -> str:
    """The registry reference of a LEXACTUM network: its appendix section and original paper."""
    return f"Magro et al. 2021 (LEXACTUM), appendix {appendix}; {original}"


def flattened_size(features: nn.Module, bands: int, input_size_px: int) -> int:
    """Length of the flattened output of ``features`` for one ``bands`` x N x N stamp.

    Runs a zero stamp through the extractor in eval mode, so batch-norm statistics are left
    untouched, and raises a clear error when the stamp is too small for the layer stack.
    """
    was_training = features.training
    features.eval()
    try:
        with torch.no_grad():
            out = features(torch.zeros(1, bands, input_size_px, input_size_px))
    except RuntimeError as error:
        raise ValueError(f"input_size_px={input_size_px} is too small for this network") from error
    finally:
        features.train(was_training)
    return out.flatten(1).shape[1]


class FlattenClassifier(nn.Module):
    """Base of the LEXACTUM networks: ``features`` -> flatten -> ``classifier`` -> one logit.

    Subclasses set ``features`` (convolutional extractor) and ``classifier`` (dense layers
    ending in one output).
    """

    features: nn.Module
    classifier: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1)).squeeze(1)


class CASSwinburne(FlattenClassifier):
    """CAS Swinburne (appendix A1; Jacobs et al. 2017), an AlexNet-like CNN.

    Convolutions 11x11/96, 5x5/128 and 3x3/256, each followed by ReLU and a 3x3 max pool;
    two 1024-neuron dense layers, each followed by dropout 0.5; one output. Padding 'same'
    and pool stride 3 (impl.): a 101 px stamp leaves a 256 x 3 x 3 map.
    """

    def __init__(
        self,
        bands: int = 1,
        input_size_px: int = CHALLENGE_SIZE_PX,
        dense_width: int = 1024,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(bands, 96, 11, padding="same"),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3),
            nn.Conv2d(96, 128, 5, padding="same"),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3),
            nn.Conv2d(128, 256, 3, padding="same"),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3),
        )
        flat = flattened_size(self.features, bands, input_size_px)
        self.classifier = nn.Sequential(
            nn.Linear(flat, dense_width),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(dense_width, dense_width),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(dense_width, 1),
        )


class LastroEPFL(FlattenClassifier):
    """LASTRO EPFL (appendix A2; Schaefer et al. 2018).

    Three blocks of two convolutions (4x4 then 3x3 with 16 features; 3x3 with 32; 3x3 with
    64), each block closed by a max pool and batch norm; dropout; two 3x3/128 convolutions
    with dropout after each and batch norm before the last dropout; three dense layers with
    dropout between them and batch norm after the last; one output. All activations ReLU.
    Valid padding, 2x2 pools, 1024-neuron dense layers and dropout 0.1 (impl.): a 101 px
    stamp leaves a 128 x 5 x 5 map.
    """

    def __init__(
        self,
        bands: int = 1,
        input_size_px: int = CHALLENGE_SIZE_PX,
        dense_width: int = 1024,
        dropout: float = 0.1,
    ):
        super().__init__()

        def conv(in_channels: int, out_channels: int, kernel: int) -> list[nn.Module]:
            return [nn.Conv2d(in_channels, out_channels, kernel), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(bands, 16, 4),
            *conv(16, 16, 3),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(16),
            *conv(16, 32, 3),
            *conv(32, 32, 3),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(32),
            *conv(32, 64, 3),
            *conv(64, 64, 3),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(64),
            nn.Dropout(dropout),
            *conv(64, 128, 3),
            nn.Dropout(dropout),
            *conv(128, 128, 3),
            nn.BatchNorm2d(128),
            nn.Dropout(dropout),
        )
        flat = flattened_size(self.features, bands, input_size_px)
        self.classifier = nn.Sequential(
            nn.Linear(flat, dense_width),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(dense_width, dense_width),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(dense_width, dense_width),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(dense_width),
            nn.Linear(dense_width, 1),
        )


class LexactumDeepLens(FlattenClassifier):
    """CMU DeepLens as described in appendix A3 (Lanusse et al. 2018 via LEXACTUM).

    The residual trunk is :mod:`lensnet.models.deeplens`'s (5 levels of 3 pre-activated
    bottleneck units, 32 to 512 features). Two details differ from the published model,
    both as written in appendix A3: the stem is a 7x7/32 convolution *with ELU, followed
    by* batch norm (so the first unit pre-activates again), and the head is an average
    pool followed by flatten and the one-neuron dense layer. The pool is 2x2 (impl.): a
    101 px stamp leaves 512 x 7 x 7, pooled to 512 x 3 x 3.

    The public Keras code also puts an ELU on every convolution inside the units and on the
    shortcut projection; appendix A3 (and fig. 3 of Lanusse et al.) does not, so neither
    does this module.
    """

    def __init__(
        self,
        bands: int = 1,
        input_size_px: int = CHALLENGE_SIZE_PX,
        widths: Sequence[int] = (32, 64, 128, 256, 512),
        units_per_level: int = 3,
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(bands, widths[0], 7, padding=3),
            nn.ELU(inplace=True),
            nn.BatchNorm2d(widths[0]),
            deeplens_levels(widths[0], widths, units_per_level, preactivate_first=True),
            nn.AvgPool2d(2),
        )
        self.classifier = nn.Linear(flattened_size(self.features, bands, input_size_px), 1)


class WSINet(FlattenClassifier):
    """WSI-Net's classification path (appendix A4; Ni et al. 2019).

    A 7x7/32 convolution with ELU; two DeepLens residual units of 32 and 64 features (the
    second changes the width, so it is the down-sampling unit of appendix A3); a 1x1/32
    convolution with ELU, batch norm and ReLU; a 5x5/32 convolution with ELU, batch norm and
    ReLU; a max pool; a 256-neuron dense layer; one output. The appendix names ELU *and*
    ReLU around each batch norm and no activation on the 256-neuron layer: kept as written.
    'Same' padding and a 2x2 pool (impl.; the implementation's dense layer has 128 neurons,
    appendix A4 says 256). A 101 px stamp leaves a 32 x 25 x 25 map.
    """

    def __init__(
        self, bands: int = 1, input_size_px: int = CHALLENGE_SIZE_PX, dense_width: int = 256
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(bands, 32, 7, padding=3),
            nn.ELU(inplace=True),
            PreActBottleneck(32, 16, 32),
            PreActBottleneck(32, 32, 64, stride=2),
            nn.Conv2d(64, 32, 1),
            nn.ELU(inplace=True),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 5, padding=2),
            nn.ELU(inplace=True),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        flat = flattened_size(self.features, bands, input_size_px)
        self.classifier = nn.Sequential(nn.Linear(flat, dense_width), nn.Linear(dense_width, 1))


class LensFlow(FlattenClassifier):
    """LensFlow (appendix A5; Pourrahmani et al. 2018).

    A 3x3 average pool with stride 3; convolutions 5x5/16, 5x5/25 and 4x4/36, each followed
    by a 2x2 max pool with stride 2; a 128-neuron ReLU dense layer with dropout 0.5; one
    output. ReLU after the convolutions and 'same' padding (impl.): a 101 px stamp becomes
    33 px after the average pool and leaves a 36 x 4 x 4 map.
    """

    def __init__(
        self,
        bands: int = 1,
        input_size_px: int = CHALLENGE_SIZE_PX,
        dense_width: int = 128,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.AvgPool2d(3, stride=3),
            nn.Conv2d(bands, 16, 5, padding="same"),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, stride=2),
            nn.Conv2d(16, 25, 5, padding="same"),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, stride=2),
            # 'Same' padding for an even kernel: one pixel left/top, two right/bottom, as
            # Keras pads; spelled out so no padded copy of the input is made.
            nn.ZeroPad2d((1, 2, 1, 2)),
            nn.Conv2d(25, 36, 4),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, stride=2),
        )
        flat = flattened_size(self.features, bands, input_size_px)
        self.classifier = nn.Sequential(
            nn.Linear(flat, dense_width),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(dense_width, 1),
        )


class LensFinder(FlattenClassifier):
    """LensFinder (appendix A6; Pearson et al. 2018).

    Convolutions 5x5/64 and 3x3/128, each with ReLU and a max pool; a 128-neuron ReLU dense
    layer; one output (the original two-way softmax replaced by one neuron, as in the
    appendix). 'Same' padding and 2x2 pools (impl.): a 101 px stamp leaves 128 x 25 x 25,
    so the first dense layer holds 10.2M of the network's weights.
    """

    def __init__(
        self, bands: int = 1, input_size_px: int = CHALLENGE_SIZE_PX, dense_width: int = 128
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(bands, 64, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        flat = flattened_size(self.features, bands, input_size_px)
        self.classifier = nn.Sequential(
            nn.Linear(flat, dense_width), nn.ReLU(inplace=True), nn.Linear(dense_width, 1)
        )


@register_model(CHALLENGE_SIZE_PX, reference=lexactum_reference("A1", "Jacobs et al. 2017"))
def cas_swinburne(bands: int = 1, input_size_px: int = CHALLENGE_SIZE_PX, **kwargs) -> nn.Module:
    """CAS Swinburne, an AlexNet-like three-convolution CNN (appendix A1)."""
    return CASSwinburne(bands=bands, input_size_px=input_size_px, **kwargs)


@register_model(CHALLENGE_SIZE_PX, reference=lexactum_reference("A2", "Schaefer et al. 2018"))
def lastro_epfl(bands: int = 1, input_size_px: int = CHALLENGE_SIZE_PX, **kwargs) -> nn.Module:
    """LASTRO EPFL, eight convolutions and four dense layers (appendix A2)."""
    return LastroEPFL(bands=bands, input_size_px=input_size_px, **kwargs)


@register_model(CHALLENGE_SIZE_PX, reference=lexactum_reference("A3", "Lanusse et al. 2018"))
def lexactum_deeplens(
    bands: int = 1, input_size_px: int = CHALLENGE_SIZE_PX, **kwargs
) -> nn.Module:
    """CMU DeepLens as re-implemented in LEXACTUM (appendix A3); ``deeplens`` is the original."""
    return LexactumDeepLens(bands=bands, input_size_px=input_size_px, **kwargs)


@register_model(CHALLENGE_SIZE_PX, reference=lexactum_reference("A4", "Ni et al. 2019"))
def wsi_net(bands: int = 1, input_size_px: int = CHALLENGE_SIZE_PX, **kwargs) -> nn.Module:
    """WSI-Net's classification branch on two DeepLens units (appendix A4)."""
    return WSINet(bands=bands, input_size_px=input_size_px, **kwargs)


@register_model(CHALLENGE_SIZE_PX, reference=lexactum_reference("A5", "Pourrahmani et al. 2018"))
def lensflow(bands: int = 1, input_size_px: int = CHALLENGE_SIZE_PX, **kwargs) -> nn.Module:
    """LensFlow, a small three-convolution CNN on 3x average-pooled stamps (appendix A5)."""
    return LensFlow(bands=bands, input_size_px=input_size_px, **kwargs)


@register_model(CHALLENGE_SIZE_PX, reference=lexactum_reference("A6", "Pearson et al. 2018"))
def lensfinder(bands: int = 1, input_size_px: int = CHALLENGE_SIZE_PX, **kwargs) -> nn.Module:
    """LensFinder, two convolutions and two dense layers (appendix A6)."""
    return LensFinder(bands=bands, input_size_px=input_size_px, **kwargs)
