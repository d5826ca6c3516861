"""The GalSim engine's instrument: PSFs, noise, background residuals and detector artefacts.

PSFs are GalSim Moffat or Kolmogorov profiles with a little ellipticity. Noise is GalSim
Gaussian noise, white or correlated (white noise convolved with a Gaussian kernel, as
resampling into a coadd correlates it) and scaled so that the *per-pixel* sigma is the
``sky_sigma`` the truth reports, plus the objects' own photon noise for a given gain.
Artefacts: a smooth background residual (a gradient and the wing of an off-stamp bright
object), cosmic-ray tracks in single bands, bad or hot columns, and saturated stars with
bleed trails along the columns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import galsim
import numpy as np

from lensnet.simulate.galsim_engine.shapes import GSPARAMS


def psf_object(psf: Mapping[str, Any]) -> galsim.GSObject:
    """The GalSim PSF of one band: ``{"type": "moffat"|"kolmogorov", "fwhm", "beta", "g1", "g2"}``."""
    if psf["type"] == "moffat":
        obj = galsim.Moffat(beta=float(psf["beta"]), fwhm=float(psf["fwhm"]), gsparams=GSPARAMS)
    elif psf["type"] == "kolmogorov":
        obj = galsim.Kolmogorov(fwhm=float(psf["fwhm"]), gsparams=GSPARAMS)
    else:
        raise ValueError(f"unknown PSF type {psf['type']!r}")
    g1, g2 = float(psf.get("g1", 0.0)), float(psf.get("g2", 0.0))
    return obj.shear(g1=g1, g2=g2) if (g1 or g2) else obj


def psf_kernel(psf: Mapping[str, Any], scale_arcsec: float, size_px: int) -> np.ndarray:
    """The PSF sampled (without pixel response) on an odd ``size_px`` grid of step ``scale_arcsec``."""
    image = psf_object(psf).drawImage(nx=size_px, ny=size_px, scale=scale_arcsec, method="no_pixel")
    kernel = image.array.astype(np.float64)
    return kernel / kernel.sum()


def add_noise(image: np.ndarray, sky_sigma: float, noise: Mapping[str, Any], pixel_scale_arcsec: float,
              seed: int) -> np.ndarray:
    """``image`` (one band, counts) plus photon noise and sky noise of per-pixel sigma ``sky_sigma``."""
    out = galsim.Image(np.ascontiguousarray(image, dtype=np.float64), scale=pixel_scale_arcsec)
    deviate = galsim.BaseDeviate(seed)
    gain = float(noise.get("gain", 0.0))
    if gain > 0:  # the objects' own photon noise, in counts
        variance = galsim.Image(np.clip(image, 0.0, None) / gain, scale=pixel_scale_arcsec)
        out.addNoise(galsim.VariableGaussianNoise(deviate, variance))
    correlation = float(noise.get("correlation_px", 0.0))
    if correlation > 0:
        kernel = galsim.Gaussian(sigma=correlation * pixel_scale_arcsec)
        correlated = galsim.UncorrelatedNoise(1.0, deviate, scale=pixel_scale_arcsec).convolvedWith(kernel)
        out.addNoise(correlated.withVariance(sky_sigma**2))
    else:
        out.addNoise(galsim.GaussianNoise(deviate, sigma=sky_sigma))
    return out.array.astype(np.float32)


def background(size_px: int, sky_sigma: float, spec: Mapping[str, Any] | None) -> np.ndarray:
    """A smooth residual of the sky subtraction, in counts: ``{"gradient": (gx, gy), "bump": ...}``.

    ``gradient`` is the change across the stamp in units of ``sky_sigma``; ``bump`` is
    ``(amplitude in sigma, x, y, radius)`` in pixels from the stamp centre (a bright
    neighbour's halo or a scattered-light patch).
    """
    if not spec:
        return np.zeros((size_px, size_px), np.float32)
    axis = (np.arange(size_px) - (size_px - 1) / 2) / size_px
    x, y = np.meshgrid(axis, axis)
    gx, gy = spec.get("gradient", (0.0, 0.0))
    out = gx * x + gy * y
    if spec.get("bump"):
        amplitude, bx, by, radius = spec["bump"]
        out = out + amplitude * np.exp(-0.5 * ((x * size_px - bx) ** 2 + (y * size_px - by) ** 2) / radius**2)
    return (out * sky_sigma).astype(np.float32)


def saturate(image: np.ndarray, level: float) -> np.ndarray:
    """Clip at ``level`` and spill each column's excess charge up and down the column."""
    out = image.copy()
    rows, cols = np.nonzero(out > level)
    for col in np.unique(cols):
        column = out[:, col]
        over = column > level
        excess = float((column[over] - level).sum())
        top, bottom = int(np.flatnonzero(over).min()), int(np.flatnonzero(over).max())
        spill = int(math.ceil(excess / level / 2))
        column[over] = level
        column[max(top - spill, 0) : top] = level
        column[bottom + 1 : bottom + 1 + spill] = level
    return out


def cosmic_ray(image: np.ndarray, track: Mapping[str, Any]) -> None:
    """Add a sharp straight track (not PSF-convolved) in place: ``x, y, length, angle, amplitude``."""
    n = max(int(track["length"]) * 3, 2)
    t = np.linspace(0.0, float(track["length"]), n)
    cols = np.round(float(track["x"]) + t * math.cos(float(track["angle"]))).astype(int)
    rows = np.round(float(track["y"]) + t * math.sin(float(track["angle"]))).astype(int)
    keep = (rows >= 0) & (rows < image.shape[0]) & (cols >= 0) & (cols < image.shape[1])
    pixels = np.unique(np.column_stack([rows[keep], cols[keep]]), axis=0)
    if len(pixels):
        image[pixels[:, 0], pixels[:, 1]] += float(track["amplitude"])


def bad_column(image: np.ndarray, column: Mapping[str, Any]) -> None:
    """Spoil one column in place: ``{"x", "value"}`` with ``value`` None for NaN or an offset in counts."""
    x = int(column["x"])
    if 0 <= x < image.shape[1]:
        if column["value"] is None:
            image[:, x] = np.nan
        else:
            image[:, x] += float(column["value"])
