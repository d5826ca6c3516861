"""Strong lensing of the GalSim engine: caustics deflections, GalSim-drawn sources.

The deflector is an elliptical power-law (EPL) mass with external shear, from caustics'
functional API (Tessore & Metcalf 2015 for the EPL; an isothermal slope ``slope == 1`` uses
caustics' closed-form SIE). A source (a GalSim object of unit flux) is drawn on a fine
source-plane grid; every sub-pixel of the image plane is ray-traced to the source plane and
takes the bilinearly interpolated surface brightness there (surface brightness is conserved
by lensing); the caller convolves with the PSF and bins the sub-pixels into pixels.

Einstein radius convention (the same physics as the lenstronomy engine's SIE ``theta_E``):
the convergence of the isothermal case is ``theta_e / (2 sqrt(q x'^2 + y'^2 / q))`` in the
frame of the mass's major axis, so a round lens has its tangential critical curve at
``theta_e``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import galsim
import numpy as np
import torch
from caustics.lenses.func import (
    reduced_deflection_angle_epl,
    reduced_deflection_angle_external_shear,
    reduced_deflection_angle_sie,
)
from scipy import ndimage

#: Iterations of caustics' EPL series (its documented default precision).
EPL_ITERATIONS = 12
#: Finest and coarsest source-plane grid step, in arcsec, and the grid's largest side.
SOURCE_GRID_ARCSEC = (0.004, 0.03)
SOURCE_GRID_MAX_PX = 512


def deflect(x_arcsec: np.ndarray, y_arcsec: np.ndarray, lens: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Source-plane positions ``beta = theta - alpha(theta)`` of image-plane positions.

    ``lens`` keys: ``theta_e``, ``slope`` (1 = isothermal), ``q``, ``phi`` (rad, major axis
    from +x), ``gamma1``, ``gamma2``, ``x``, ``y`` (centre, arcsec).
    """
    x = torch.as_tensor(np.asarray(x_arcsec, dtype=np.float64))
    y = torch.as_tensor(np.asarray(y_arcsec, dtype=np.float64))

    def scalar(key: str) -> torch.Tensor:
        return torch.tensor(float(lens[key]), dtype=torch.float64)

    x0, y0 = scalar("x"), scalar("y")
    q = torch.tensor(min(float(lens["q"]), 0.9999), dtype=torch.float64)
    with torch.no_grad():
        if abs(float(lens["slope"]) - 1.0) < 1e-9:
            ax, ay = reduced_deflection_angle_sie(x0, y0, q, scalar("phi"), scalar("theta_e"), x, y)
        else:
            ax, ay = reduced_deflection_angle_epl(x0, y0, q, scalar("phi"), scalar("theta_e"), scalar("slope"), x, y,
                                                  EPL_ITERATIONS)
        sx, sy = reduced_deflection_angle_external_shear(x0, y0, scalar("gamma1"), scalar("gamma2"), x, y)
    return (x - ax - sx).numpy(), (y - ay - sy).numpy()


def source_grid(source: galsim.GSObject, centre: tuple[float, float], extent_arcsec: float,
                smallest_scale_arcsec: float) -> tuple[np.ndarray, float]:
    """The source's light per grid pixel (no pixel response) on a grid centred on ``centre``.

    Returns ``(image, step_arcsec)``; the grid's pixel ``(i, j)`` is centred at
    ``centre + ((j, i) - (n - 1) / 2) * step``.
    """
    step = float(np.clip(smallest_scale_arcsec / 5.0, *SOURCE_GRID_ARCSEC))
    n = int(min(2 * math.ceil(extent_arcsec / step) + 1, SOURCE_GRID_MAX_PX + 1))
    step = max(step, 2 * extent_arcsec / (n - 1))
    image = source.shift(-centre[0], -centre[1]).drawImage(nx=n, ny=n, scale=step, method="no_pixel")
    return image.array.astype(np.float64), step


def lensed_subpixels(
    source: galsim.GSObject,
    source_centre: tuple[float, float],
    source_extent_arcsec: float,
    source_smallest_arcsec: float,
    lens: Mapping[str, Any],
    size_px: int,
    pixel_scale_arcsec: float,
    supersample: int,
    origin_arcsec: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Flux of a lensed unit-flux source in every sub-pixel of a ``size_px`` square image.

    Args:
        source: the source's light (unit flux), centred on the origin of the source plane
            (the lens axis), i.e. already shifted to its position.
        source_centre: where its light is, for the source-plane grid (arcsec).
        source_extent_arcsec: radius around ``source_centre`` that holds its light.
        source_smallest_arcsec: its smallest structure (sets the grid step).
        lens: the deflector (see :func:`deflect`), relative to the object's origin.
        size_px: side of the image in pixels.
        pixel_scale_arcsec: pixel scale.
        supersample: sub-pixels per pixel and axis.
        origin_arcsec: (x, y) of the object's origin relative to the image centre.

    Returns:
        (size_px * supersample, size_px * supersample) array; its sum is the magnification
        of the part of the source plane the image sees.
    """
    grid, step = source_grid(source, source_centre, source_extent_arcsec, source_smallest_arcsec)
    sub = pixel_scale_arcsec / supersample
    n_sub = size_px * supersample
    axis = (np.arange(n_sub) + 0.5) / supersample - 0.5 - (size_px - 1) / 2
    theta_x, theta_y = np.meshgrid(axis * pixel_scale_arcsec - origin_arcsec[0],
                                   axis * pixel_scale_arcsec - origin_arcsec[1])
    beta_x, beta_y = deflect(theta_x, theta_y, lens)
    n = grid.shape[0]
    cols = (beta_x - source_centre[0]) / step + (n - 1) / 2
    rows = (beta_y - source_centre[1]) / step + (n - 1) / 2
    values = ndimage.map_coordinates(grid, [rows.ravel(), cols.ravel()], order=1, mode="constant", cval=0.0)
    # grid values are surface brightness times step^2; a sub-pixel holds SB times sub^2
    return values.reshape(n_sub, n_sub) * (sub / step) ** 2
