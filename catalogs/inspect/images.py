"""Pictures of a stamp for people: colour composites, single-band views, saliency overlays.

Pure functions from float arrays to ``uint8`` images, plus :func:`png_bytes` to encode
them. Nothing here reads or writes files.

Colour composites (:func:`lupton_rgb`) use the asinh scheme of Lupton et al. (2004) as
implemented by :func:`astropy.visualization.make_lupton_rgb`. Bands are mapped to the
red, green and blue channels by :func:`rgb_channels`:

* bands ``g``, ``r`` and ``i`` present (any others ignored): i -> R, r -> G, g -> B, the
  convention of HSC/SuGOHI and KiDS composites;
* otherwise bands are ordered blue to red (by the wavelengths in
  :data:`BAND_WAVELENGTH_NM` when every band is known there, else in the order given)
  and split into three contiguous groups with ``numpy.array_split``; each channel is
  the mean of its group, bluest group -> B, reddest -> R. So ``g,r,z`` gives
  R, G, B = z, r, g and ``r,i,z,y`` gives R = y, G = z, B = (r + i) / 2;
* two bands: R = the redder, B = the bluer, G = their mean;
* one band: the same image in all three channels (grey).

Single-band views (:func:`band_image`) offer two stretches from
:mod:`astropy.visualization`: ``asinh`` (AsinhStretch over the 0.5-99.8 percentile
interval: faint arcs and the bright deflector both visible) and ``zscale``
(ZScaleInterval with a linear stretch, IRAF's display default: noise-level detail).
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import numpy.typing as npt
from astropy.visualization import (
    AsinhStretch,
    AsymmetricPercentileInterval,
    LinearStretch,
    ZScaleInterval,
    make_lupton_rgb,
)
from PIL import Image

from lensnet.preprocess import robust_sigma

__all__ = [
    "BAND_WAVELENGTH_NM",
    "STRETCHES",
    "band_image",
    "band_order",
    "heatmap_overlay",
    "lupton_rgb",
    "png_bytes",
    "rgb_channels",
]

#: Approximate effective wavelengths (nm) used only to order bands blue to red.
BAND_WAVELENGTH_NM: dict[str, float] = {
    "u": 355, "g": 475, "r": 620, "i": 765, "z": 900, "y": 1000,
    "vis": 715, "Y": 1030, "J": 1250, "H": 1650, "K": 2200, "Ks": 2150,
}

#: Single-band stretches offered to graders.
STRETCHES: tuple[str, ...] = ("asinh", "zscale")
Stretch = Literal["asinh", "zscale"]


def _wavelength(band: str) -> float | None:
    """Wavelength of a band name such as ``r``, ``HSC-R`` or ``DES_i`` (None if unknown)."""
    for key in (band, band.lower(), band[-1:].lower(), band.split("-")[-1].split("_")[-1]):
        if key in BAND_WAVELENGTH_NM:
            return BAND_WAVELENGTH_NM[key]
    return None


def band_order(bands: list[str]) -> list[int]:
    """Indices of ``bands`` from blue to red (the given order if any band is unknown)."""
    wavelengths = [_wavelength(band) for band in bands]
    if any(w is None for w in wavelengths):
        return list(range(len(bands)))
    return sorted(range(len(bands)), key=lambda k: (wavelengths[k], k))


def rgb_channels(bands: list[str]) -> tuple[list[int], list[int], list[int]]:
    """Band indices averaged into the R, G and B channels (see the module docstring)."""
    if not bands:
        raise ValueError("a colour composite needs at least one band")
    canonical = {}
    for index, band in enumerate(bands):
        wavelength = _wavelength(band)
        for name in ("g", "r", "i"):
            if wavelength == BAND_WAVELENGTH_NM[name] and name not in canonical:
                canonical[name] = index
    if len(canonical) == 3:
        return [canonical["i"]], [canonical["r"]], [canonical["g"]]
    order = band_order(bands)
    if len(order) == 1:
        return order, order, order
    if len(order) == 2:
        return [order[1]], order, [order[0]]
    blue, green, red = (list(map(int, group)) for group in np.array_split(order, 3))
    return red, green, blue


def _clean(image: np.ndarray) -> np.ndarray:
    """float64 copy with non-finite pixels replaced by the finite median (0 if none)."""
    x = np.array(image, dtype=np.float64)
    good = np.isfinite(x)
    x[~good] = np.median(x[good]) if good.any() else 0.0
    return x


def lupton_rgb(
    stamp: npt.ArrayLike, bands: list[str], q: float = 3.0, softening_sigma: float = 15.0
) -> np.ndarray:
    """Lupton et al. (2004) asinh colour composite of one ``(bands, H, W)`` stamp.

    Each band is sky-subtracted with its median; the asinh softening (``stretch`` of
    ``make_lupton_rgb``) is ``softening_sigma`` times the median noise of the three
    channels: the display is linear up to about that level and logarithmic above, so
    the noise stays dark, arcs a few sigma above it show and the deflector's core is
    not burnt out (defaults tuned by eye on the mock survey).
    Colours are preserved because all channels share one stretch.

    Returns:
        ``uint8`` array of shape ``(H, W, 3)``.
    """
    x = np.stack([_clean(band) for band in np.asarray(stamp)])
    if x.ndim != 3 or x.shape[0] != len(bands):
        raise ValueError(f"stamp must have shape ({len(bands)}, H, W); got {x.shape}")
    median, sigma = robust_sigma(x)
    x = x - np.nan_to_num(median)
    channels = [x[indices].mean(axis=0) for indices in rgb_channels(bands)]
    noise = float(np.nanmedian(sigma)) if np.isfinite(sigma).any() else 0.0
    peak = max(float(np.max(np.abs(channels))), 1e-30)
    softening = softening_sigma * noise if noise > 0 else peak / 10.0
    with np.errstate(invalid="ignore", divide="ignore"):  # astropy divides 0 by 0 on empty sky
        return make_lupton_rgb(*channels, minimum=0.0, stretch=softening, Q=q)


def band_image(image: npt.ArrayLike, stretch: Stretch = "asinh") -> np.ndarray:
    """One band as a ``uint8`` ``(H, W)`` grey image with the named stretch."""
    x = _clean(np.asarray(image))
    if x.ndim != 2:
        raise ValueError(f"a band image must be 2-d; got shape {x.shape}")
    if stretch == "asinh":
        vmin, vmax = AsymmetricPercentileInterval(0.5, 99.8).get_limits(x)
        transform = AsinhStretch(a=0.1)
    elif stretch == "zscale":
        vmin, vmax = ZScaleInterval().get_limits(x)
        transform = LinearStretch()
    else:
        raise ValueError(f"unknown stretch {stretch!r}; known: {', '.join(STRETCHES)}")
    if not vmax > vmin:
        return np.zeros(x.shape, dtype=np.uint8)
    unit = np.clip((x - vmin) / (vmax - vmin), 0.0, 1.0)
    return np.round(transform(unit, clip=True) * 255).astype(np.uint8)


# Colour ramps as (position, (r, g, b)) anchors, interpolated linearly.
_HOT = ((0.0, (0, 0, 0)), (0.35, (190, 30, 20)), (0.7, (255, 170, 0)), (1.0, (255, 255, 210)))
_DIVERGING = ((0.0, (40, 90, 255)), (0.5, (255, 255, 255)), (1.0, (255, 40, 30)))


def _ramp(values: np.ndarray, anchors: tuple[tuple[float, tuple[int, int, int]], ...]) -> np.ndarray:
    positions = [a[0] for a in anchors]
    return np.stack(
        [np.interp(values, positions, [a[1][c] for a in anchors]) for c in range(3)], axis=-1
    )


def heatmap_overlay(base_rgb: npt.ArrayLike, values: npt.ArrayLike, signed: bool = False) -> np.ndarray:
    """Colour a saliency map over a greyed copy of ``base_rgb`` (``uint8`` (H, W, 3)).

    ``signed=True`` (occlusion maps): red where hiding the pixels lowers the lens
    logit, blue where it raises it, scaled by the largest absolute value.
    ``signed=False`` (Grad-CAM): a black-red-yellow ramp scaled by the maximum. The
    colour's opacity grows with the magnitude, so weak regions show the image.
    """
    base = np.asarray(base_rgb, dtype=np.float64)
    v = np.nan_to_num(np.asarray(values, dtype=np.float64))
    if base.shape[:2] != v.shape:
        raise ValueError(f"map shape {v.shape} differs from image shape {base.shape[:2]}")
    grey = base.mean(axis=-1, keepdims=True) * 0.6
    scale = float(np.max(np.abs(v))) if signed else float(np.max(v))
    if not scale > 0:
        return np.repeat(grey, 3, axis=-1).astype(np.uint8)
    if signed:
        strength = np.abs(v) / scale
        colour = _ramp(0.5 + 0.5 * v / scale, _DIVERGING)
    else:
        strength = np.clip(v / scale, 0.0, 1.0)
        colour = _ramp(strength, _HOT)
    alpha = (0.75 * strength**0.75)[..., None]
    return np.clip(grey * (1 - alpha) + colour * alpha, 0, 255).round().astype(np.uint8)


def png_bytes(image: npt.ArrayLike, min_size_px: int = 0) -> bytes:
    """PNG encoding of a ``uint8`` (H, W) or (H, W, 3) image, enlarged by an integer
    factor with nearest-neighbour sampling until it is at least ``min_size_px`` wide."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"png_bytes needs uint8 pixels; got {array.dtype}")
    picture = Image.fromarray(array)
    factor = max(1, -(-min_size_px // max(1, array.shape[1])))
    if factor > 1:
        picture = picture.resize((array.shape[1] * factor, array.shape[0] * factor), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
