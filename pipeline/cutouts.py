"""Assigning catalogue objects to tiles and cutting stamps: pure functions on arrays.

Assignment makes one vectorised WCS call per tile for the objects near it; cutting
takes windows of a (memory-mapped) image with one fancy-indexing gather per band rather
than one ``Cutout2D`` per object. A stamp of side ``S`` has the object's nearest pixel at
index ``S // 2`` on both axes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from scipy.spatial import cKDTree

from catalogs.flags import Flag
from pipeline.tiles import Tile


def unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """(n, 3) Cartesian unit vectors of sky positions."""
    ra, dec = np.radians(ra_deg), np.radians(dec_deg)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def tile_cap(tile: Tile) -> tuple[np.ndarray, float]:
    """Unit vector of a tile's centre and the cosine of a cap radius that covers the tile."""
    rows, columns = tile.shape
    x = np.array([(columns - 1) / 2, -0.5, columns - 0.5, -0.5, columns - 0.5])
    y = np.array([(rows - 1) / 2, -0.5, -0.5, rows - 0.5, rows - 0.5])
    ra, dec = tile.wcs.all_pix2world(x, y, 0)
    vectors = unit_vectors(ra, dec)
    centre = vectors[0]
    # A 1% margin on the angle keeps objects on the border inside the cap.
    radius = np.arccos(np.clip(vectors[1:] @ centre, -1, 1)).max() * 1.01
    return centre, float(np.cos(radius))


def assign_to_tiles(ra_deg: np.ndarray, dec_deg: np.ndarray, tiles: list[Tile]) -> pd.DataFrame:
    """Give each object the one tile where it lies farthest from the border.

    Returns a frame indexed like the inputs with columns ``tile`` (None where no tile
    holds the object), ``x_px``, ``y_px`` (0-based pixel position in that tile) and
    ``edge_distance_px`` (distance to the nearest border). Objects in overlapping tiles
    are therefore cut exactly once; ties go to the first tile in name order.
    """
    n = len(ra_deg)
    best_tile = np.full(n, -1)
    best_distance = np.full(n, -np.inf)
    best_x = np.full(n, np.nan)
    best_y = np.full(n, np.nan)
    valid = np.isfinite(ra_deg) & np.isfinite(dec_deg) & (np.abs(dec_deg) <= 90)
    vectors = unit_vectors(np.where(valid, ra_deg, 0.0), np.where(valid, dec_deg, 0.0))
    for index, tile in enumerate(tiles):
        if tile.error is not None:
            continue
        centre, cos_radius = tile_cap(tile)
        near = np.flatnonzero(valid & (vectors @ centre >= cos_radius))
        if near.size == 0:
            continue
        x, y = tile.wcs.all_world2pix(ra_deg[near], dec_deg[near], 0)
        rows, columns = tile.shape
        distance = np.minimum.reduce([x + 0.5, columns - 0.5 - x, y + 0.5, rows - 0.5 - y])
        better = (distance > 0) & (distance > best_distance[near])
        chosen = near[better]
        best_tile[chosen] = index
        best_distance[chosen] = distance[better]
        best_x[chosen], best_y[chosen] = x[better], y[better]
    names = np.array([tile.name for tile in tiles] + [None], dtype=object)
    return pd.DataFrame(
        {
            "tile": names[best_tile],
            "x_px": best_x,
            "y_px": best_y,
            "edge_distance_px": np.where(best_tile >= 0, best_distance, np.nan),
        }
    )


def crowded(ra_deg: np.ndarray, dec_deg: np.ndarray, radius_arcsec: float) -> np.ndarray:
    """True for objects with another object closer than ``radius_arcsec``."""
    vectors = unit_vectors(ra_deg, dec_deg)
    chord = 2 * np.sin(np.radians(radius_arcsec / 3600) / 2)
    pairs = cKDTree(vectors).query_pairs(chord, output_type="ndarray")
    result = np.zeros(len(ra_deg), dtype=bool)
    result[pairs.ravel()] = True
    return result


def stamp_origins(x_px: np.ndarray, y_px: np.ndarray, size_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower-left pixel (column, row) of each stamp: the nearest pixel lands at ``size_px // 2``."""
    # floor(x + 0.5) rounds half up, unlike np.round's half-to-even, so that the
    # choice of pixel never depends on the parity of the coordinate.
    centre_x = np.floor(np.asarray(x_px) + 0.5).astype(np.int64)
    centre_y = np.floor(np.asarray(y_px) + 0.5).astype(np.int64)
    return centre_x - size_px // 2, centre_y - size_px // 2


def cut_stamps(image: np.ndarray, x_px: np.ndarray, y_px: np.ndarray, size_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Square stamps of ``image`` around the given pixel positions.

    Returns ``(stamps, padded_px)``: a float32 array (n, size_px, size_px) and the number
    of pixels of each stamp that lie outside the image (those are NaN).
    """
    x0, y0 = stamp_origins(x_px, y_px, size_px)
    n = len(x0)
    rows, columns = image.shape
    stamps = np.full((n, size_px, size_px), np.nan, dtype=np.float32)
    inside = (x0 >= 0) & (y0 >= 0) & (x0 + size_px <= columns) & (y0 + size_px <= rows)
    if inside.any() and rows >= size_px and columns >= size_px:
        # A strided view of every window costs nothing; indexing it gathers only the
        # requested windows (and pages in only their rows of a memory map).
        windows = sliding_window_view(image, (size_px, size_px))
        stamps[inside] = windows[y0[inside], x0[inside]]
    padded_px = np.zeros(n, dtype=np.int64)
    for index in np.flatnonzero(~inside):
        ya, xa = max(y0[index], 0), max(x0[index], 0)
        yb, xb = min(y0[index] + size_px, rows), min(x0[index] + size_px, columns)
        if ya < yb and xa < xb:
            stamps[index, ya - y0[index] : yb - y0[index], xa - x0[index] : xb - x0[index]] = image[ya:yb, xa:xb]
        padded_px[index] = size_px * size_px - max(yb - ya, 0) * max(xb - xa, 0)
    return stamps, padded_px


def resample_stamps(
    image: np.ndarray, reference_wcs, band_wcs, x_px: np.ndarray, y_px: np.ndarray, size_px: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stamps of a band on another pixel grid, sampled onto the reference band's stamp grid.

    Output pixel (i, j) of an object's stamp is the reference pixel
    ``(x0 + j, y0 + i)`` of :func:`cut_stamps`; its position on ``image`` follows from a
    local affine map (reference pixels -> sky -> band pixels, derived per object from the
    two WCSs by finite differences: exact for tangent-plane projections over a stamp),
    and its value is bilinearly interpolated — surface brightness in the band's own
    units per band pixel. Bands finer than the reference are point-sampled (no
    anti-aliasing). Returns ``(stamps, padded_px)`` like :func:`cut_stamps`, NaN where
    the band has no data.
    """
    from scipy.ndimage import map_coordinates

    x0, y0 = stamp_origins(x_px, y_px, size_px)
    n = len(x0)
    centre_x, centre_y = x0 + (size_px - 1) / 2, y0 + (size_px - 1) / 2
    # One vectorised WCS round trip per probe point: the centre and one pixel along x and y.
    probes = [(centre_x, centre_y), (centre_x + 1, centre_y), (centre_x, centre_y + 1)]
    mapped = [band_wcs.world_to_pixel_values(*reference_wcs.pixel_to_world_values(px, py)) for px, py in probes]
    (bx, by), (bx_dx, by_dx), (bx_dy, by_dy) = [(np.asarray(u), np.asarray(v)) for u, v in mapped]
    offsets = np.arange(size_px) - (size_px - 1) / 2
    dx, dy = offsets[None, None, :], offsets[None, :, None]
    columns = bx[:, None, None] + (bx_dx - bx)[:, None, None] * dx + (bx_dy - bx)[:, None, None] * dy
    rows = by[:, None, None] + (by_dx - by)[:, None, None] * dx + (by_dy - by)[:, None, None] * dy
    height, width = image.shape
    inside = (columns >= -0.5) & (columns <= width - 0.5) & (rows >= -0.5) & (rows <= height - 0.5)
    values = map_coordinates(np.asarray(image, dtype=np.float32), [rows.ravel(), columns.ravel()], order=1,
                             mode="nearest").reshape(n, size_px, size_px)
    stamps = np.where(inside, values, np.nan).astype(np.float32)
    return stamps, (~inside).sum(axis=(1, 2))


def stamp_flags(stamps: np.ndarray, padded_px: np.ndarray, crowded_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quality flags per stamp, and which stamps are unusable (a band with no finite pixel).

    ``stamps`` is (n, bands, S, S) with NaN outside the image; ``padded_px`` counts the
    pixels per band plane that lie outside it (as returned by :func:`cut_stamps`).
    """
    finite = np.isfinite(stamps)
    missing_per_band = (~finite).sum(axis=(2, 3))
    flags = np.zeros(len(stamps), dtype=np.int32)
    flags[padded_px > 0] |= Flag.EDGE
    flags[crowded_mask] |= Flag.CROWDED
    # Non-finite pixels beyond the padding come from the data itself.
    flags[(missing_per_band > padded_px[:, None]).any(axis=1)] |= Flag.BAD_PIXELS
    empty = ~finite.any(axis=(2, 3)).all(axis=1)
    return flags, empty
