"""Planning a run: which object goes to which tile, which slot of the store, which shard."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.cutouts import assign_to_tiles, crowded
from pipeline.tiles import Tile


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


def make_plan(catalog: pd.DataFrame, tiles: list[Tile], stamp_size_px: int, shard_size: int) -> Plan:
    """Assign every catalogue object to one tile (or a failure reason) and cut the list into shards."""
    ra, dec = catalog["ra"].to_numpy(), catalog["dec"].to_numpy()
    assigned = assign_to_tiles(ra, dec, tiles)
    valid = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    on_tile = assigned["tile"].notna().to_numpy()

    unreadable = sorted(tile.name for tile in tiles if tile.error is not None)
    off_detail = "on no tile" + (f" (tiles whose headers could not be read: {', '.join(unreadable)})" if unreadable else "")
    failures = pd.DataFrame(
        {
            "row": np.flatnonzero(~on_tile),
            "reason": np.where(valid[~on_tile], "off_footprint", "invalid_coordinates"),
        }
    )
    failures["detail"] = np.where(failures["reason"] == "off_footprint", off_detail, "ra/dec missing or out of range")

    rows = np.flatnonzero(on_tile)
    objects = assigned.iloc[rows].assign(row=rows)
    pixel_scale_arcsec = np.median([tile.pixel_scale_arcsec for tile in tiles if tile.error is None])
    objects["crowded"] = crowded(ra[rows], dec[rows], stamp_size_px * pixel_scale_arcsec / 4) if len(rows) else []
    # Store order groups each tile's objects, so a shard touches as few tiles as possible.
    objects = objects.sort_values(["tile", "row"], kind="stable").reset_index(drop=True)
    for name in ("object_id", "ra", "dec"):
        source = "id" if name == "object_id" else name
        objects[name] = catalog[source].to_numpy()[objects["row"].to_numpy()]
        failures[name] = catalog[source].to_numpy()[failures["row"].to_numpy()]
    objects.index.name = "cutout_index"
    shards = [(start, min(start + shard_size, len(objects))) for start in range(0, len(objects), shard_size)]
    return Plan(objects, failures, shards, {tile.name: tile for tile in tiles})
