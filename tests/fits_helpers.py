"""Tiny FITS tiles made in code, for tests that need exact, known pixel grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS


def tan_wcs(crval: tuple[float, float], shape: tuple[int, int], pixel_scale_arcsec: float = 0.2,
            rotation_deg: float = 0.0) -> WCS:
    """A TAN WCS centred on the grid, north rotated by ``rotation_deg``, east to the left."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(crval)
    wcs.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    scale = pixel_scale_arcsec / 3600
    angle = np.radians(rotation_deg)
    wcs.wcs.cd = scale * np.array([[-np.cos(angle), np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return wcs


def index_image(shape: tuple[int, int]) -> np.ndarray:
    """Each pixel holds its own flat index, so a stamp tells exactly where it was cut."""
    return np.arange(shape[0] * shape[1], dtype=np.float64).reshape(shape).astype(np.float32)


def write_tile(path: Path, data: np.ndarray, wcs: WCS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data=data, header=wcs.to_header()).writeto(path, overwrite=True)
    return path
