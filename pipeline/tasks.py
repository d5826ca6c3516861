"""The functions that run on Dask workers, one call per shard and stage.

Each writes its outputs under a temporary name and renames them into place; the part
file it leaves is the shard's done-marker for that stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from catalogs.io import atomic_write_parquet
from pipeline import store
from astropy.wcs import WCS

from pipeline.cutouts import cut_stamps, resample_stamps, stamp_flags
from pipeline.images import InputError, read_header, read_image
from pipeline.inference import mean_probability_logit, worker_model
from pipeline.merge import MODEL_LOGIT_PREFIX

# Errors a damaged or unreadable FITS file raises while being opened or read.
FITS_ERRORS = (OSError, ValueError, TypeError, IndexError, KeyError, EOFError, InputError)


def _cut_band(reference: str, grid: WCS | None, band_wcs: WCS | None, x, y, size_px: int):
    """Slice stamps from an image on the reference grid, or resample them from another grid."""
    image = read_image(reference)
    if band_wcs is None:
        return cut_stamps(image, x, y, size_px)
    return resample_stamps(image, grid, band_wcs, x, y, size_px)


def _bad_pixels(references: dict[str, str], kind: str, band: str, grid, band_wcs, x, y,
                size_px: int) -> np.ndarray | None:
    """Where a mask (non-zero) or weight map (zero or negative) marks the stamp's pixels bad."""
    if band not in references:
        return None
    values, _ = _cut_band(references[band], grid, band_wcs, x, y, size_px)
    return values != 0 if kind == "masks" else ~(values > 0)


def cut_shard(
    store_path: str,
    part_path: str,
    start: int,
    objects: pd.DataFrame,
    tile_references: dict[str, dict[str, dict[str, str]]],
    size_px: int,
) -> str:
    """Cut the stamps of one shard, write them into the store, record each object's status.

    ``objects`` are the shard's rows of the plan (columns tile, x_px, y_px, crowded) in
    store order; ``tile_references[tile]`` maps ``images``, ``masks`` and ``weights`` to
    band -> image reference. Pixels that a mask or weight map marks bad become NaN. An
    unreadable tile fails only its own objects.
    """
    bands = list(next(iter(tile_references.values()))["images"])
    n = len(objects)
    stamps = np.full((n, len(bands), size_px, size_px), np.nan, dtype=np.float32)
    padded = np.zeros(n, dtype=np.int64)
    reason = np.full(n, None, dtype=object)
    detail = np.full(n, None, dtype=object)
    for tile, group in objects.groupby("tile", sort=False):
        positions = objects.index.get_indexer(group.index)
        references = tile_references[tile]
        x, y = group["x_px"].to_numpy(), group["y_px"].to_numpy()
        reading = ""
        try:
            resampled = references.get("resampled", [])
            grid = WCS(read_header(references["images"][references["reference_band"]]), naxis=2) if resampled else None
            for band_index, band in enumerate(bands):
                reading = references["images"][band]
                band_wcs = WCS(read_header(reading), naxis=2) if band in resampled else None
                cut, padded_px = _cut_band(reading, grid, band_wcs, x, y, size_px)
                for kind in ("masks", "weights"):
                    reading = references[kind].get(band, reading)
                    bad = _bad_pixels(references[kind], kind, band, grid, band_wcs, x, y, size_px)
                    if bad is not None:
                        cut[bad] = np.nan
                stamps[positions, band_index] = cut
                padded[positions] = np.maximum(padded[positions], padded_px)
        except FITS_ERRORS as error:
            stamps[positions] = np.nan
            reason[positions] = "unreadable_tile"
            detail[positions] = f"{reading}: {type(error).__name__}: {error}"
    flags, empty = stamp_flags(stamps, padded, objects["crowded"].to_numpy())
    newly_empty = empty & (reason == None)  # noqa: E711 (elementwise on an object array)
    reason[newly_empty] = "empty_stamp"
    detail[newly_empty] = "a band of the stamp has no finite pixel"
    store.write_shard(store_path, start, stamps, flags)
    status = pa.table(
        {
            "cutout_index": pa.array(np.arange(start, start + n), pa.int64()),
            "flags": pa.array(flags, pa.int32()),
            "reason": pa.array(reason, pa.string()),
            "detail": pa.array(detail, pa.string()),
        }
    )
    atomic_write_parquet(status, part_path)
    return part_path


def score_shard(store_path: str, cut_part: str, part_path: str, start: int, stop: int,
                batch_size: int | None) -> str:
    """Score the usable stamps of one shard with the worker's model; write their logits."""
    status = pd.read_parquet(cut_part)
    usable = status["reason"].isna().to_numpy()
    stamps = store.read_stamps(store_path, start, stop)[usable]
    plugin = worker_model()
    by_model = plugin.score(stamps, batch_size) if len(stamps) else {
        loaded.config.name or loaded.path.name: np.empty(0, np.float32) for loaded in plugin.loaded}
    columns = {"cutout_index": pa.array(status["cutout_index"].to_numpy()[usable], pa.int64())}
    if len(by_model) == 1:
        columns["logit"] = pa.array(next(iter(by_model.values())), pa.float32())
    else:
        # The ensemble's logit is that of the models' mean probability.
        stacked = torch.from_numpy(np.stack(list(by_model.values())).astype(np.float64))
        columns["logit"] = pa.array(mean_probability_logit(stacked).numpy().astype(np.float32), pa.float32())
        columns.update({f"{MODEL_LOGIT_PREFIX}{name}": pa.array(values, pa.float32()) for name, values in by_model.items()})
    table = pa.table(columns)
    atomic_write_parquet(table, part_path)
    return part_path


def existing(path: str | Path) -> str:
    """A stand-in task result for a part file that an earlier attempt already wrote."""
    return str(path)
