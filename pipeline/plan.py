"""Planning a run: which object goes to which tile, which slot of the store, which shard."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.cutouts import assign_to_tiles, crowded
from pipeline.tiles import Tile
from pipeline.where import parse_where


@dataclass
class Plan:
    """The work of one run, fixed before anything is computed.

    Attributes:
        objects: one row per object to cut, in store order (sorted by tile), with columns
            ``row`` (position in the input catalogue), ``object_id``, ``ra``, ``dec``,
            ``tile``, ``x_px``, ``y_px``, ``crowded``; the index is the cutout index.
        failures: objects that cannot be cut: ``row``, ``object_id``, ``ra``, ``dec``, ``reason``, ``detail``.
        shards: (start, stop) cutout-index ranges; each is one Zarr chunk and one task per stage.
        tiles: tile name -> Tile.
    """

    objects: pd.DataFrame
    failures: pd.DataFrame
    shards: list[tuple[int, int]]
    tiles: dict[str, Tile]


def make_plan(
    catalog: pd.DataFrame, tiles: list[Tile], stamp_size_px: int, shard_size: int, where: str | None = None
) -> Plan:
    """Assign every catalogue object to one tile (or a failure reason) and cut the list into shards.

    ``where`` is a preselection on the catalogue's columns (:mod:`pipeline.where`, e.g.
    ``"mag_r < 22 and flag == 0"``); objects it rejects are listed with reason ``not_selected``.
    """
    ra, dec = catalog["ra"].to_numpy(), catalog["dec"].to_numpy()
    selected = select(catalog, where)
    assigned = assign_to_tiles(ra, dec, tiles)
    valid = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    on_tile = assigned["tile"].notna().to_numpy() & selected

    failures = pd.DataFrame(
        {
            "row": np.flatnonzero(~on_tile),
            "reason": np.where(~selected[~on_tile], "not_selected",
                               np.where(valid[~on_tile], "off_footprint", "invalid_coordinates")),
        }
    )
    failures["detail"] = failures["reason"].map(
        {"off_footprint": "on no tile", "invalid_coordinates": "ra/dec missing, not finite, or |dec| > 90",
         "not_selected": f"rejected by the preselection {where!r}"})
    _blame_unreadable_tiles(failures, ra, dec, tiles)

    rows = np.flatnonzero(on_tile)
    objects = assigned.iloc[rows].assign(row=rows)
    pixel_scale_arcsec = np.median([tile.pixel_scale_arcsec for tile in tiles if tile.error is None])
    # Neighbours count whether or not the preselection kept them: they blend all the same.
    neighbours = crowded(ra[valid], dec[valid], stamp_size_px * pixel_scale_arcsec / 4)
    is_crowded = np.zeros(len(catalog), dtype=bool)
    is_crowded[np.flatnonzero(valid)] = neighbours
    objects["crowded"] = is_crowded[rows]
    # Store order groups each tile's objects, so a shard touches as few tiles as possible.
    objects = objects.sort_values(["tile", "row"], kind="stable").reset_index(drop=True)
    for name in ("object_id", "ra", "dec"):
        source = "id" if name == "object_id" else name
        objects[name] = catalog[source].to_numpy()[objects["row"].to_numpy()]
        failures[name] = catalog[source].to_numpy()[failures["row"].to_numpy()]
    objects.index.name = "cutout_index"
    shards = [(start, min(start + shard_size, len(objects))) for start in range(0, len(objects), shard_size)]
    return Plan(objects, failures, shards, {tile.name: tile for tile in tiles})


def _blame_unreadable_tiles(failures: pd.DataFrame, ra: np.ndarray, dec: np.ndarray, tiles: list[Tile]) -> None:
    """Objects on no readable tile that an unreadable tile may hold fail as ``unreadable_tile``.

    Where an unreadable tile's footprint is known (a band had a celestial WCS), exactly its
    objects are blamed on it. Where it is not (no band had a WCS, or no header could be
    read), no one can tell which objects it holds: every object on no readable tile is then
    reported ``unreadable_tile``, with a detail saying it may lie on that tile.
    """
    broken = [tile for tile in tiles if tile.error is not None]
    if not broken:
        return
    off = (failures["reason"] == "off_footprint").to_numpy()
    rows = failures["row"].to_numpy()[off]
    located = [dataclasses.replace(tile, error=None) for tile in broken if tile.wcs is not None]
    detail = np.full(len(rows), None, dtype=object)
    if located:
        holder = assign_to_tiles(ra[rows], dec[rows], located)["tile"].to_numpy()
        errors = {tile.name: tile.error for tile in broken}
        for index in np.flatnonzero(pd.notna(holder)):
            detail[index] = f"tile {holder[index]} could not be read: {errors[holder[index]]}"
    unlocated = [tile for tile in broken if tile.wcs is None]
    if unlocated:
        names = ", ".join(tile.name for tile in unlocated[:5]) + (", ..." if len(unlocated) > 5 else "")
        guess = (f"on no readable tile; tile(s) {names} could not be read ({unlocated[0].error}), "
                 "so their footprint is unknown and the object may lie on one of them")
        detail[pd.isna(detail)] = guess
    blamed = pd.notna(detail)
    positions = np.flatnonzero(off)[blamed]
    failures.loc[failures.index[positions], "reason"] = "unreadable_tile"
    failures.loc[failures.index[positions], "detail"] = detail[blamed]


def select(catalog: pd.DataFrame, where: str | None) -> np.ndarray:
    """Boolean mask of the catalogue rows that pass the preselection ``where`` (all when None).

    ``where`` is parsed into an allow-listed expression and evaluated by
    :mod:`pipeline.where` (never by ``eval``): a shared configuration cannot run code.
    """
    if not where:
        return np.ones(len(catalog), dtype=bool)
    return parse_where(where).evaluate(catalog)
