"""Noise and detector effects of the lenstronomy engine's stamps.

* Noise: white Gaussian, or correlated (white noise smoothed by a Gaussian of
  ``correlation_sigma_px`` and rescaled, as resampling into a coadd correlates it); in
  both cases the per-pixel sigma is the ``sky_sigma`` the truth reports.
* A residual of the sky subtraction: a low-order polynomial across the stamp, in units of
  the noise.
* Saturation: pixels above the profile's ``saturation_counts`` are clipped and the excess
  charge bleeds along the column.
* Cosmic rays: thin tracks with a Gaussian cross-section in one band only.
* Bad columns: a column of NaN (masked) or with a constant offset (hot).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage

from lensnet.simulate.profiles import SurveyProfile


def draw_noise(rng: np.random.Generator) -> dict[str, Any]:
    """Noise correlation (35% of stamps) and sky-subtraction residual (45%) of one stamp."""
    correlation = float(rng.uniform(0.4, 0.9)) if rng.random() < 0.35 else 0.0
    background = None
    if rng.random() < 0.45:  # coefficients of 1, x, y, x^2, xy, y^2 over [-1, 1]^2, in sigma
        background = [float(v) for v in rng.normal(0.0, [0.3, 0.4, 0.4, 0.2, 0.2, 0.2])]
    return {"correlation_sigma_px": correlation, "background": background}


def draw_artefacts(rng: np.random.Generator, profile: SurveyProfile, sky_sigma: list[float]) -> dict[str, Any]:
    """Cosmic rays (each band with probability 0.07) and a bad column (5% of stamps)."""
    size = profile.stamp_size_px
    rays = []
    for band, sigma in enumerate(sky_sigma):
        if rng.random() < 0.07:
            rays.append({"band": band, "x0": float(rng.uniform(0, size)), "y0": float(rng.uniform(0, size)),
                         "length_px": float(rng.uniform(3.0, 15.0)), "angle": float(rng.uniform(0, math.pi)),
                         "peak": float(sigma * math.exp(rng.uniform(math.log(8.0), math.log(300.0))))})
    columns = []
    if rng.random() < 0.05:
        band = int(rng.integers(0, len(sky_sigma)))
        columns.append({"band": band, "column": int(rng.integers(0, size)),
                        "offset": None if rng.random() < 0.5 else float(sky_sigma[band] * rng.uniform(3.0, 30.0))})
    return {"cosmic_rays": rays, "bad_columns": columns}


def noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float, correlation_sigma_px: float) -> np.ndarray:
    """Gaussian noise of per-pixel sigma ``sigma``, white or smoothed and rescaled."""
    if correlation_sigma_px <= 0:
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
    pad = int(math.ceil(4 * correlation_sigma_px))
    white = rng.standard_normal((shape[0] + 2 * pad, shape[1] + 2 * pad))
    smooth = ndimage.gaussian_filter(white, correlation_sigma_px, mode="wrap")[pad:-pad, pad:-pad]
    # the variance of white noise smoothed by a normalised Gaussian kernel of sigma s is
    # sum(kernel^2) ~ 1 / (4 pi s^2); divide it out exactly with the kernel's own weights
    kernel = np.zeros((2 * pad + 1, 2 * pad + 1))
    kernel[pad, pad] = 1.0
    kernel = ndimage.gaussian_filter(kernel, correlation_sigma_px, mode="constant")
    return (smooth / np.sqrt((kernel**2).sum()) * sigma).astype(np.float32)


def background(shape: tuple[int, int], sigma: float, coefficients: list[float] | None) -> np.ndarray:
    """The sky-subtraction residual ``c . (1, x, y, x^2, xy, y^2)`` times ``sigma``."""
    if not coefficients:
        return np.zeros(shape, np.float32)
    y, x = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    terms = (np.ones_like(x), x, y, x * x, x * y, y * y)
    return (sigma * sum(c * t for c, t in zip(coefficients, terms, strict=True))).astype(np.float32)


def saturate(image: np.ndarray, level: float) -> None:
    """Clip at ``level`` in place; each column's excess charge bleeds up and down from its peak."""
    for col in np.unique(np.nonzero(image > level)[1]):
        column = image[:, col]
        excess = float(np.clip(column - level, 0, None).sum())
        peak = int(np.argmax(column))
        reach = int(math.ceil(excess / level / 2.0))
        np.minimum(column, level, out=column)
        column[max(peak - reach, 0) : peak + reach + 1] = level


def cosmic_ray(image: np.ndarray, ray: Mapping[str, Any]) -> None:
    """Add a thin track (Gaussian cross-section of 0.4 px) to one band in place."""
    rows, cols = np.indices(image.shape)
    direction = np.array([math.cos(ray["angle"]), math.sin(ray["angle"])])
    dx, dy = cols - ray["x0"], rows - ray["y0"]
    along = np.clip(dx * direction[0] + dy * direction[1], 0.0, ray["length_px"])
    distance = np.hypot(dx - along * direction[0], dy - along * direction[1])
    image += (ray["peak"] * np.exp(-0.5 * (distance / 0.4) ** 2)).astype(image.dtype)


def bad_column(image: np.ndarray, spec: Mapping[str, Any]) -> None:
    """A masked (NaN) or hot column, in place."""
    column = int(spec["column"])
    if 0 <= column < image.shape[1]:
        if spec["offset"] is None:
            image[:, column] = np.nan
        else:
            image[:, column] += np.float32(spec["offset"])


def observe(params: Mapping[str, Any], image: np.ndarray, profile: SurveyProfile, rng: np.random.Generator) -> np.ndarray:
    """A stamp as the detector records it: noiseless ``image`` (bands, H, W) plus background,
    noise, saturation, cosmic rays and bad columns."""
    settings = params.get("noise") or {}
    out = np.empty(image.shape, dtype=np.float32)
    for band, sigma in enumerate(params["sky_sigma"]):
        out[band] = image[band] + background(image.shape[-2:], sigma, settings.get("background"))
        out[band] += noise(rng, image.shape[-2:], sigma, float(settings.get("correlation_sigma_px", 0.0)))
        saturate(out[band], profile.saturation_counts)
    detector = params.get("artefacts") or {}
    for ray in detector.get("cosmic_rays", []):
        cosmic_ray(out[int(ray["band"])], ray)
    for spec in detector.get("bad_columns", []):
        bad_column(out[int(spec["band"])], spec)
    return out
