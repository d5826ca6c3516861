"""LensResNet: a compact pre-activation residual network, the project's default family.

It follows the design of CMU DeepLens (Lanusse et al. 2018: pre-activated residual
units, ELU) at a width and depth that run at thousands of stamps per second on a CPU
core pair. Batch normalisation uses running statistics at inference, so a stamp's score
never depends on which other stamps share its batch.
"""

from __future__ import annotations

import torch
from torch import nn

from lensnet.models.registry import register_model


class PreActBlock(nn.Module):
    """BN-ELU-conv3x3-BN-ELU-conv3x3 with an identity or 1x1-projection shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.act = nn.ELU(inplace=True)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.norm1(x))
        # The projection sees the pre-activated input, as in He et al. (2016b).
        shortcut = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.act(self.norm2(out)))
        return out + shortcut


class DeflectorSubtraction(nn.Module):
    """The other bands minus the reddest band scaled to the deflector's colour, per stamp.

    Input is ``asinh_stretch`` output, ``arcsinh(flux / (scale * sigma))`` per band, so
    ``sinh`` recovers each band's flux in units of its own softening. In those units the
    deflector's colour is the least-squares ratio ``alpha_b`` of band ``b`` to the reference
    band over the central pixels (``2 r + 1`` across for an odd stamp size, ``2 r + 2`` for an
    even one, centred where stamps put the object), where the deflector dominates; the output is
    ``arcsinh(flux_b - alpha_b * flux_ref)`` for every band but the reference. A red deflector
    then cancels and blue arcs stay, which the network cannot compute from the stretched bands
    themselves: a difference of fluxes is not a linear function of their arcsinh.
    Computed in float32 whatever the autocast precision.
    """

    #: sinh(20) ~ 2.4e8: beyond it float32 loses the pixel; no real stamp reaches it after the stretch.
    MAX_STRETCHED = 20.0

    def __init__(self, bands: int, core_radius_px: int = 2, reference_band: int = -1):
        super().__init__()
        if bands < 2:
            raise ValueError(f"deflector subtraction needs at least 2 bands, got {bands}")
        if core_radius_px < 0:
            raise ValueError(f"core_radius_px must be >= 0, got {core_radius_px}")
        self.core_radius_px = core_radius_px
        self.reference_band = reference_band % bands
        self.others = [band for band in range(bands) if band != self.reference_band]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            flux = torch.sinh(x.float().clamp(-self.MAX_STRETCHED, self.MAX_STRETCHED))
            height, width = flux.shape[-2:]
            r = min(self.core_radius_px, (height - 1) // 2, (width - 1) // 2)
            # centred on ((n - 1) / 2), where stamps put the object: 2r + 1 pixels across for odd
            # sizes, 2r + 2 for even ones, so that the view commutes with flips and quarter turns
            core = flux[..., (height - 1) // 2 - r:height // 2 + r + 1, (width - 1) // 2 - r:width // 2 + r + 1]
            reference = flux[:, self.reference_band:self.reference_band + 1]
            core_reference = core[:, self.reference_band:self.reference_band + 1]
            others = flux[:, self.others]
            alpha = (core[:, self.others] * core_reference).sum((-2, -1)) / (
                core_reference.square().sum((-2, -1)).clamp_min(1e-12))
            residual = others - alpha.clamp(0.0, 100.0)[..., None, None] * reference
            return torch.asinh(residual).to(x.dtype)


class LensResNet(nn.Module):
    """Stem, residual stages that halve the resolution, global pooling, one logit.

    With ``deflector_subtracted``, a :class:`DeflectorSubtraction` view of the input (for
    ``asinh_stretch`` normalisations only) goes through a second stem of the same geometry,
    added to the first. That stem starts at zero, so a trained network extended with it
    (``init_from`` plus ``arch_kwargs: {deflector_subtracted: true}``) scores exactly as
    before its first fine-tuning step.
    """

    def __init__(
        self,
        bands: int = 3,
        widths: tuple[int, ...] = (32, 64, 96, 128),
        blocks_per_stage: int = 1,
        dropout: float = 0.1,
        stem_kernel: int = 3,
        stem_stride: int = 1,
        deflector_subtracted: bool = False,
    ):
        super().__init__()
        self.stem = nn.Conv2d(bands, widths[0], stem_kernel, stem_stride, stem_kernel // 2, bias=False)
        stages: list[nn.Module] = []
        in_channels = widths[0]
        for index, width in enumerate(widths):
            for block in range(blocks_per_stage):
                stride = 2 if (index > 0 and block == 0) else 1
                stages.append(PreActBlock(in_channels, width, stride))
                in_channels = width
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ELU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(in_channels, 1),
        )
        # Built last, so every other layer draws the same initial weights with or without it.
        self.deflector = DeflectorSubtraction(bands) if deflector_subtracted else None
        self.deflector_stem = (
            nn.Conv2d(bands - 1, widths[0], stem_kernel, stem_stride, stem_kernel // 2, bias=False)
            if deflector_subtracted else None
        )
        if self.deflector_stem is not None:
            nn.init.zeros_(self.deflector_stem.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.stem(x)
        if self.deflector is not None:
            features = features + self.deflector_stem(self.deflector(x))
        return self.head(self.stages(features)).squeeze(1)


@register_model(input_size_px=64, reference="after Lanusse et al. 2018 (CMU DeepLens)")
def lensresnet_small(bands: int = 3, **kwargs) -> nn.Module:
    """Four stages (32, 64, 96, 128 channels), one residual unit each: ~0.5M parameters."""
    return LensResNet(bands=bands, **kwargs)


@register_model(input_size_px=64, reference="after Lanusse et al. 2018 (CMU DeepLens)")
def lensresnet_fast(bands: int = 3, **kwargs) -> nn.Module:
    """lensresnet-small's stages behind a 5x5 stride-2 stem: ~0.5M parameters at a quarter of
    the FLOPs (0.099 vs 0.384 GFLOP per 64x64x3 stamp, `make bench`), since no residual unit runs
    at full resolution (arcs are several pixels wide once seen through a ground-based PSF, so
    the first convolution can halve the grid)."""
    kwargs.setdefault("stem_kernel", 5)
    kwargs.setdefault("stem_stride", 2)
    return LensResNet(bands=bands, **kwargs)


@register_model(input_size_px=64, reference="after Lanusse et al. 2018 (CMU DeepLens)")
def lensresnet_wide(bands: int = 3, **kwargs) -> nn.Module:
    """lensresnet-fast at twice the width (64, 128, 192, 256 channels): ~2M parameters and 0.387
    GFLOP per 64x64x3 stamp (lensresnet-fast 0.099; benchmarks/models.py's count, as `make bench`),
    for training on a GPU, where lensresnet-fast leaves the device mostly idle."""
    kwargs.setdefault("widths", (64, 128, 192, 256))
    kwargs.setdefault("stem_kernel", 5)
    kwargs.setdefault("stem_stride", 2)
    return LensResNet(bands=bands, **kwargs)


@register_model(input_size_px=64, reference="after Lanusse et al. 2018 (CMU DeepLens)")
def lensresnet_tiny(bands: int = 3, **kwargs) -> nn.Module:
    """Three narrow stages (8, 16, 32 channels): for tests and quick experiments."""
    kwargs.setdefault("widths", (8, 16, 32))
    return LensResNet(bands=bands, **kwargs)
