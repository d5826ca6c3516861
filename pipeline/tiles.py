"""Finding the survey's tiles on disk and reading what the planner needs from their headers.

Two layouts are understood: one file per tile and band (``tiles/{tile}_{band}.fits``),
and one multi-extension file per tile whose image extensions are named after the bands
(``tiles/{tile}.fits``, ``EXTNAME = g`` ...). Optional mask and weight maps follow the
same kind of pattern; a pattern without ``{band}`` gives one map for all bands.
"""

from __future__ import annotations

import glob
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from pipeline.images import InputError, read_header


@dataclass
class Tile:
    """One tile: a file per band on a common pixel grid.

    Attributes:
        name: the value of ``{tile}`` in the image pattern.
        paths: band name -> image reference (a path, or ``path[EXTNAME]`` for a multi-extension file).
        masks: band name -> mask image reference (non-zero = bad pixel), if masks were given.
        weights: band name -> weight/inverse-variance map reference (zero = bad pixel), if given.
        shape: (rows, columns) of the reference band's pixel grid.
        wcs: the celestial WCS of that grid.
        pixel_scale_arcsec: mean pixel side of that grid.
        reference_band: the band whose grid stamps are laid out on.
        resampled_bands: bands on another grid, resampled onto the reference grid when cut.
        error: why the tile's headers could not be read; such a tile fails only its own objects.
            ``shape`` and ``wcs`` are then those of a band that did have a celestial WCS (its
            footprint, for the failure list), or unset when none did.
    """

    name: str
    paths: dict[str, str]
    masks: dict[str, str] = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)
    shape: tuple[int, int] = (0, 0)
    wcs: WCS | None = None
    pixel_scale_arcsec: float = float("nan")
    reference_band: str | None = None
    resampled_bands: list[str] = field(default_factory=list)
    error: str | None = None


def discover_tiles(pattern: str, bands: list[str]) -> list[Tile]:
    """Every tile matching ``pattern``, each with every band.

    With ``{band}`` in the pattern, files for bands not in ``bands`` are ignored and a
    tile lacking a requested band is an error naming the missing files (silently
    dropping it would lose its objects). Without ``{band}``, each file is a tile whose
    extensions are named after the bands (checked when the headers are read).
    """
    if "{band}" not in pattern:
        regex = re.compile(re.escape(pattern).replace(re.escape("{tile}"), r"(?P<tile>[^/]+?)") + r"\Z")
        files = sorted(path for path in glob.glob(pattern.replace("{tile}", "*")) if regex.match(path))
        if not files:
            raise InputError(f"no file matches --images {pattern!r}")
        return [Tile(regex.match(path)["tile"], {band: f"{path}[{band}]" for band in bands}) for path in files]
    regex = re.compile(
        re.escape(pattern)
        .replace(re.escape("{tile}"), r"(?P<tile>[^/]+?)")
        .replace(re.escape("{band}"), r"(?P<band>[^/]+?)")
        + r"\Z"
    )
    found: dict[str, dict[str, str]] = {}
    for path in glob.glob(pattern.replace("{tile}", "*").replace("{band}", "*")):
        match = regex.match(path)
        if match and match["band"] in bands:
            found.setdefault(match["tile"], {})[match["band"]] = path
    if not found:
        raise InputError(f"no file matches --images {pattern!r} for bands {','.join(bands)}")
    incomplete = {tile: sorted(set(bands) - set(paths)) for tile, paths in found.items() if set(paths) != set(bands)}
    if incomplete:
        listing = "; ".join(
            f"{tile} lacks {', '.join(pattern.format(tile=tile, band=band) for band in missing)}"
            for tile, missing in sorted(incomplete.items())[:5]
        )
        raise InputError(f"{len(incomplete)} tile(s) lack bands: {listing}")
    return [Tile(name, {band: found[name][band] for band in bands}) for name in sorted(found)]


def attach_maps(tiles: list[Tile], pattern: str | None, kind: str) -> None:
    """Give each tile its ``masks`` or ``weights`` references from ``pattern``; all must exist."""
    if not pattern:
        return
    missing = []
    for tile in tiles:
        references = {band: pattern.format(tile=tile.name, band=band) for band in tile.paths}
        missing += [reference for reference in references.values() if not Path(reference).is_file()]
        setattr(tile, kind, references)
    if missing:
        raise InputError(f"{len(set(missing))} {kind} file(s) missing, e.g. {', '.join(sorted(set(missing))[:3])}")


def same_grid(shape_a, wcs_a: WCS, shape_b, wcs_b: WCS) -> bool:
    """Whether two images share one pixel grid (so stamps can be sliced at the same pixels)."""
    return (shape_a == shape_b and np.allclose(wcs_a.wcs.crval, wcs_b.wcs.crval)
            and np.allclose(wcs_a.pixel_scale_matrix, wcs_b.pixel_scale_matrix)
            and np.allclose(wcs_a.wcs.crpix, wcs_b.wcs.crpix))


def read_tile_header(tile: Tile, target_scale_arcsec: float | None = None) -> Tile:
    """Fill the tile's grid description from its headers; on failure set ``error``.

    Bands may lie on different pixel grids (e.g. VIS at 0.1"/px beside NISP at 0.3"/px).
    The reference band is the one whose pixel scale is closest to ``target_scale_arcsec``
    (the model's; the first band if None): objects are placed, and stamps laid out, on
    its grid, and the other bands are resampled onto it.
    """
    grids: dict[str, tuple[tuple[int, int], WCS, float]] = {}
    try:
        for band, reference in tile.paths.items():
            header = read_header(reference)
            shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
            wcs = WCS(header, naxis=2)
            if not wcs.has_celestial:
                raise InputError(f"{reference} has no celestial WCS")
            grids[band] = (shape, wcs, float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0))
    except (OSError, InputError, KeyError, ValueError) as error:
        tile.error = f"{type(error).__name__}: {error}"
        _footprint_of_unreadable(tile)
        return tile
    bands = list(grids)
    reference_band = bands[0] if target_scale_arcsec is None else min(
        bands, key=lambda band: abs(grids[band][2] / target_scale_arcsec - 1))
    tile.shape, tile.wcs, tile.pixel_scale_arcsec = grids[reference_band]
    tile.reference_band = reference_band
    tile.resampled_bands = [band for band in bands
                            if not same_grid(grids[band][0], grids[band][1], tile.shape, tile.wcs)]
    return tile


def _footprint_of_unreadable(tile: Tile) -> None:
    """Give an unreadable tile the grid of any band that has a celestial WCS, if one does.

    The tile still fails (``error`` stays set); its footprint only lets the planner say
    which objects it would have held (``unreadable_tile``) rather than ``off_footprint``.
    """
    for reference in tile.paths.values():
        try:
            header = read_header(reference)
            wcs = WCS(header, naxis=2)
            if wcs.has_celestial:
                tile.shape, tile.wcs = (int(header["NAXIS2"]), int(header["NAXIS1"])), wcs
                return
        except (OSError, InputError, KeyError, ValueError):
            continue


def read_tile_headers(tiles: list[Tile], target_scale_arcsec: float | None = None, threads: int = 8) -> list[Tile]:
    """Read every tile's headers, in parallel threads (header reads are I/O bound)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(lambda tile: read_tile_header(tile, target_scale_arcsec), tiles))
