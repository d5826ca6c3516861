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
        shape: (rows, columns) of the pixel grid.
        wcs: the celestial WCS of the grid (of the first band).
        pixel_scale_arcsec: mean pixel side.
        error: why the tile's headers could not be read; such a tile fails only its own objects.
    """

    name: str
    paths: dict[str, str]
    masks: dict[str, str] = field(default_factory=dict)
    weights: dict[str, str] = field(default_factory=dict)
    shape: tuple[int, int] = (0, 0)
    wcs: WCS | None = None
    pixel_scale_arcsec: float = float("nan")
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


def read_tile_header(tile: Tile) -> Tile:
    """Fill ``shape``, ``wcs`` and ``pixel_scale_arcsec`` from the headers; on failure set ``error``."""
    grids = []
    try:
        for band, reference in tile.paths.items():
            header = read_header(reference)
            shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
            wcs = WCS(header, naxis=2)
            if not wcs.has_celestial:
                raise InputError(f"{reference} has no celestial WCS")
            grids.append((band, shape, wcs))
    except (OSError, InputError, KeyError, ValueError) as error:
        tile.error = f"{type(error).__name__}: {error}"
        return tile
    band0, shape0, wcs0 = grids[0]
    for band, shape, wcs in grids[1:]:
        same_grid = shape == shape0 and np.allclose(wcs.wcs.crval, wcs0.wcs.crval) and np.allclose(
            wcs.pixel_scale_matrix, wcs0.pixel_scale_matrix) and np.allclose(wcs.wcs.crpix, wcs0.wcs.crpix)
        if not same_grid:
            tile.error = (
                f"band {band} of tile {tile.name} is not on the pixel grid of band {band0}; "
                "bands of one tile must share shape and WCS"
            )
            return tile
    tile.shape, tile.wcs = shape0, wcs0
    tile.pixel_scale_arcsec = float(np.mean(proj_plane_pixel_scales(wcs0.celestial)) * 3600.0)
    return tile


def read_tile_headers(tiles: list[Tile], threads: int = 8) -> list[Tile]:
    """Read every tile's headers, in parallel threads (header reads are I/O bound)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(read_tile_header, tiles))
