"""GalSim light profiles of the GalSim engine, built from JSON-able shape dictionaries.

A *shape* is one unit-flux light distribution with a ``flux_frac`` (its share of its
group's flux) and a ``type``:

``sersic``     ``n``, ``r_half``, ``q``, ``beta`` (position angle, rad), ``x``, ``y`` (arcsec)
``knots``      GalSim ``RandomKnots`` (star-forming clumps): ``npoints``, ``r_half``, ``seed``,
               ``knot_sigma`` (arcsec; each knot is a small Gaussian), ``q``, ``beta``, ``x``, ``y``
``inclined``   GalSim ``InclinedExponential`` (a thick disc seen at ``inclination`` rad):
               ``r_half``, ``h_over_r``, ``inclination``, ``beta``, ``x``, ``y``
``gaussian``   ``sigma``, ``x``, ``y``
``point``      a point source (a star; a Gaussian far narrower than a pixel): ``x``, ``y``
``ring``, ``spiral``, ``tail``
               features GalSim has no profile for, drawn analytically on a fine grid (see
               :func:`ring_image`, :func:`spiral_image`, :func:`tail_image`) and wrapped in a
               GalSim ``InterpolatedImage``

Coordinates: x along image columns, y along rows, origin at the object's centre.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import galsim
import numpy as np

GSPARAMS = galsim.GSParams(folding_threshold=5e-3, maxk_threshold=2e-3, maximum_fft_size=8192)
#: Sersic profiles of index > 2 are truncated at this many half-light radii (at least 2", at most 20").
SERSIC_TRUNCATION = 8.0
#: Side, in sub-pixels, of the patch around a Sersic centre that GalSim integrates over the
#: sub-pixels in real space (elsewhere light is sampled at sub-pixel centres).
CORE_PATCH_SUBPIXELS = 12
#: Width of a point source: far below any pixel, so that it can be drawn before the PSF.
POINT_SIGMA_ARCSEC = 0.003
#: Grid step of the analytically drawn features (rings, spirals, tails), in arcsec.
FEATURE_GRID_ARCSEC = 0.04

Shape = dict[str, Any]


def _sheared(obj: galsim.GSObject, shape: Mapping[str, Any]) -> galsim.GSObject:
    q = float(shape.get("q", 1.0))
    if q < 0.999:
        obj = obj.shear(q=q, beta=float(shape.get("beta", 0.0)) * galsim.radians)
    return obj


def _shifted(obj: galsim.GSObject, shape: Mapping[str, Any]) -> galsim.GSObject:
    x, y = float(shape.get("x", 0.0)), float(shape.get("y", 0.0))
    return obj.shift(x, y) if (x or y) else obj


def _grid(half_width_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    n = int(math.ceil(half_width_arcsec / FEATURE_GRID_ARCSEC)) * 2 + 1
    axis = (np.arange(n) - (n - 1) / 2) * FEATURE_GRID_ARCSEC
    return np.meshgrid(axis, axis)


def _blobs(x: np.ndarray, y: np.ndarray, centres: np.ndarray, sigma: float, weights: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    for (cx, cy), weight in zip(centres, weights, strict=True):
        out += weight * np.exp(-0.5 * ((x - cx) ** 2 + (y - cy) ** 2) / sigma**2)
    return out


def ring_image(shape: Mapping[str, Any]) -> np.ndarray:
    """A ring of Gaussian cross-section with a lopsided brightness and knots along it.

    Keys: ``radius``, ``width`` (Gaussian sigma across the ring), ``lopsidedness`` (0-1),
    ``n_knots``, ``knot_frac`` (share of the ring's light in knots), ``seed``. Drawn round;
    ``q``/``beta`` incline it and ``x``/``y`` move it afterwards.
    """
    rng = np.random.default_rng(int(shape["seed"]))
    radius, width = float(shape["radius"]), float(shape["width"])
    x, y = _grid(radius + 4 * width + 0.2)
    r, phi = np.hypot(x, y), np.arctan2(y, x)
    smooth = np.exp(-0.5 * ((r - radius) / width) ** 2) * (1 + float(shape["lopsidedness"]) * np.cos(phi - rng.uniform(0, 2 * np.pi)))
    smooth /= smooth.sum()
    n_knots = int(shape["n_knots"])
    if n_knots == 0:
        return smooth
    angles = rng.uniform(0, 2 * np.pi, n_knots)
    radii = radius + rng.normal(0, 0.5 * width, n_knots)
    knots = _blobs(x, y, np.column_stack([radii * np.cos(angles), radii * np.sin(angles)]), max(0.6 * width, 0.04),
                   rng.lognormal(0, 0.6, n_knots))
    knot_frac = float(shape["knot_frac"])
    return (1 - knot_frac) * smooth + knot_frac * knots / knots.sum()


def spiral_image(shape: Mapping[str, Any]) -> np.ndarray:
    """An exponential disc whose light is gathered into logarithmic spiral arms with knots.

    Keys: ``scale_length``, ``n_arms``, ``pitch`` (rad), ``arm_contrast`` (>= 1: sharper arms),
    ``n_knots``, ``knot_frac``, ``seed``.
    """
    rng = np.random.default_rng(int(shape["seed"]))
    h = float(shape["scale_length"])
    x, y = _grid(5.0 * h)
    r, phi = np.hypot(x, y) + 1e-6, np.arctan2(y, x)
    m, pitch = int(shape["n_arms"]), float(shape["pitch"])
    phase = rng.uniform(0, 2 * np.pi)
    wave = 0.5 * (1 + np.cos(m * (phi - np.log(r / h) / math.tan(pitch)) - phase))
    arms = np.exp(-r / h) * wave ** float(shape["arm_contrast"]) * (1 - np.exp(-((r / (0.5 * h)) ** 2)))
    arms /= arms.sum()
    n_knots = int(shape["n_knots"])
    if n_knots == 0:
        return arms
    # knots where the arms are bright: sample pixels in proportion to the arm light
    flat = rng.choice(arms.size, size=n_knots, p=arms.ravel())
    centres = np.column_stack([x.ravel()[flat], y.ravel()[flat]])
    knots = _blobs(x, y, centres, 0.06, rng.lognormal(0, 0.5, n_knots))
    knot_frac = float(shape["knot_frac"])
    return (1 - knot_frac) * arms + knot_frac * knots / knots.sum()


def tail_image(shape: Mapping[str, Any]) -> np.ndarray:
    """A tidal stream: light along a circular arc, fading from its root to its tip.

    Keys: ``radius`` (of curvature), ``start``, ``extent`` (rad, signed), ``width``, ``seed``;
    the arc's centre of curvature is the origin.
    """
    radius, width = float(shape["radius"]), float(shape["width"])
    x, y = _grid(radius + 4 * width + 0.2)
    r, phi = np.hypot(x, y), np.arctan2(y, x)
    start, extent = float(shape["start"]), float(shape["extent"])
    along = np.mod((phi - start) * np.sign(extent), 2 * np.pi) / abs(extent)  # 0 at the root, 1 at the tip
    inside = along <= 1.0
    image = np.where(inside, np.exp(-0.5 * ((r - radius) / width) ** 2) * (1.0 - 0.8 * along), 0.0)
    total = image.sum()
    return image / total if total > 0 else image


_FEATURES = {"ring": ring_image, "spiral": spiral_image, "tail": tail_image}


def build(shape: Mapping[str, Any]) -> galsim.GSObject:
    """The unit-flux GalSim object of one shape dictionary."""
    kind = shape["type"]
    if kind == "sersic":
        n, r_half = float(np.clip(shape["n"], 0.3, 6.2)), float(shape["r_half"])
        # high-index profiles are truncated far out (the flux is that of the truncated
        # profile) so that GalSim's Fourier-space steps stay bounded for large galaxies
        truncation = {"trunc": float(np.clip(SERSIC_TRUNCATION * r_half, 2.0, 20.0)), "flux_untruncated": False}
        obj = galsim.Sersic(n=n, half_light_radius=r_half, gsparams=GSPARAMS, **(truncation if n > 2.0 else {}))
    elif kind == "knots":
        knots = galsim.RandomKnots(int(shape["npoints"]), half_light_radius=float(shape["r_half"]),
                                   rng=galsim.BaseDeviate(int(shape["seed"])), gsparams=GSPARAMS)
        obj = galsim.Convolve(knots, galsim.Gaussian(sigma=float(shape["knot_sigma"]), gsparams=GSPARAMS))
    elif kind == "inclined":
        obj = galsim.InclinedExponential(float(shape["inclination"]) * galsim.radians,
                                         half_light_radius=float(shape["r_half"]),
                                         scale_h_over_r=float(shape["h_over_r"]), gsparams=GSPARAMS)
        obj = obj.rotate(float(shape.get("beta", 0.0)) * galsim.radians)
        return _shifted(obj, shape)
    elif kind == "gaussian":
        obj = galsim.Gaussian(sigma=float(shape["sigma"]), gsparams=GSPARAMS)
    elif kind == "point":  # far narrower than any pixel, and drawable without a PSF
        obj = galsim.Gaussian(sigma=POINT_SIGMA_ARCSEC, gsparams=GSPARAMS)
    elif kind in _FEATURES:
        image = galsim.Image(np.ascontiguousarray(_FEATURES[kind](shape)), scale=FEATURE_GRID_ARCSEC)
        obj = galsim.InterpolatedImage(image, x_interpolant="lanczos3", normalization="flux", flux=1.0,
                                       gsparams=GSPARAMS)
    else:
        raise ValueError(f"unknown shape type {kind!r}")
    return _shifted(_sheared(obj, shape), shape)


def draw_subpixels(shapes: Sequence[Mapping[str, Any]], n_sub: int, step_arcsec: float,
                   offset_sub: tuple[float, float]) -> np.ndarray:
    """A group's unit-flux light integrated over each sub-pixel of an ``n_sub`` square grid.

    Profiles analytic in real space are sampled at sub-pixel centres (fast, and exact for
    smooth light) except in a patch around each Sersic centre, where GalSim integrates the
    cusp over the sub-pixels in real space; the other profiles (inclined discs, knots) are
    drawn by GalSim's FFT with the sub-pixel response. The object's origin is at
    ``(n_sub - 1) / 2 + offset_sub`` (x, y) in sub-pixel array coordinates.
    """
    total = sum(float(s["flux_frac"]) for s in shapes)
    centre = galsim.PositionD((n_sub + 1) / 2 + offset_sub[0], (n_sub + 1) / 2 + offset_sub[1])
    out = np.zeros((n_sub, n_sub))
    for shape in shapes:
        flux = float(shape["flux_frac"]) / total
        if shape["type"] == "point":  # all its light in the sub-pixels around it, bilinearly
            _deposit(out, centre.x - 1 + float(shape["x"]) / step_arcsec, centre.y - 1 + float(shape["y"]) / step_arcsec,
                     flux)
            continue
        obj = build(shape).withFlux(flux)
        # (for a new image GalSim takes `center` as where to put the image, so shift by `offset`)
        if not obj.is_analytic_x or (shape["type"] == "gaussian" and float(shape["sigma"]) < 1.5 * step_arcsec):
            out += obj.drawImage(nx=n_sub, ny=n_sub, scale=step_arcsec, offset=offset_sub).array
            continue
        out += obj.drawImage(nx=n_sub, ny=n_sub, scale=step_arcsec, offset=offset_sub, method="no_pixel").array
        if shape["type"] != "sersic":
            continue
        half = CORE_PATCH_SUBPIXELS // 2
        col = int(round(centre.x + float(shape["x"]) / step_arcsec)) - half
        row = int(round(centre.y + float(shape["y"]) / step_arcsec)) - half
        col0, row0 = max(col, 1), max(row, 1)
        col1, row1 = min(col + CORE_PATCH_SUBPIXELS - 1, n_sub), min(row + CORE_PATCH_SUBPIXELS - 1, n_sub)
        if col0 > col1 or row0 > row1:
            continue
        bounds = galsim.BoundsI(col0, col1, row0, row1)
        exact = obj.drawImage(image=galsim.ImageD(bounds, scale=step_arcsec), center=centre, method="real_space")
        sampled = obj.drawImage(image=galsim.ImageD(bounds, scale=step_arcsec), center=centre, method="no_pixel")
        out[row0 - 1 : row1, col0 - 1 : col1] += exact.array - sampled.array
    return out


def _deposit(image: np.ndarray, x: float, y: float, flux: float) -> None:
    """Add a point's flux to the four array pixels around array position (x, y), bilinearly."""
    col, row = int(math.floor(x)), int(math.floor(y))
    fx, fy = x - col, y - row
    for dr, dc, weight in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        r, c = row + dr, col + dc
        if 0 <= r < image.shape[0] and 0 <= c < image.shape[1]:
            image[r, c] += flux * weight


def group_object(shapes: Sequence[Mapping[str, Any]]) -> galsim.GSObject:
    """Unit-flux sum of a group's shapes, each weighted by its ``flux_frac``."""
    total = sum(float(s["flux_frac"]) for s in shapes)
    parts = [build(s).withFlux(float(s["flux_frac"]) / total) for s in shapes]
    return parts[0] if len(parts) == 1 else galsim.Add(parts)


def extent_arcsec(shape: Mapping[str, Any]) -> float:
    """Radius from the shape's own centre that holds essentially all of its light."""
    kind = shape["type"]
    if kind in ("sersic", "knots", "inclined"):
        return 5.0 * float(shape["r_half"]) + 0.1
    if kind == "gaussian":
        return 5.0 * float(shape["sigma"])
    if kind == "point":
        return 0.0
    if kind == "spiral":
        return 5.0 * float(shape["scale_length"])
    return float(shape["radius"]) + 4.0 * float(shape["width"]) + 0.2
