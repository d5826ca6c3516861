"""The functions that run on Dask workers, one call per shard and stage.

Each writes its outputs under a temporary name and renames them into place; the part
file it leaves is the shard's done-marker for that stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from astropy.io import fits

from catalogs.io import atomic_write_parquet
from pipeline import store
from pipeline.cutouts import cut_stamps, stamp_flags
from pipeline.inference import worker_model
from pipeline.tiles import find_image_hdu

# Errors a damaged or unreadable FITS file raises while being opened or read.
FITS_ERRORS = (OSError, ValueError, TypeError, IndexError, KeyError, EOFError)


def cut_shard(
    store_path: str,
    part_path: str,
    start: int,
    objects: pd.DataFrame,
    tile_paths: dict[str, dict[str, str]],
    size_px: int,
) -> str:
    """Cut the stamps of one shard, write them into the store, record each object's status.

    ``objects`` are the shard's rows of the plan (columns tile, x_px, y_px, crowded) in
    store order. An unreadable tile fails only its own objects.
    """
    bands = list(next(iter(tile_paths.values())))
    n = len(objects)
    stamps = np.full((n, len(bands), size_px, size_px), np.nan, dtype=np.float32)
    padded = np.zeros(n, dtype=np.int64)
    reason = np.full(n, None, dtype=object)
    detail = np.full(n, None, dtype=object)
    for tile, group in objects.groupby("tile", sort=False):
        positions = objects.index.get_indexer(group.index)
        try:
            for band_index, band in enumerate(bands):
                with fits.open(tile_paths[tile][band], memmap=True) as hdul:
                    image = hdul[find_image_hdu(hdul)].data
                    if image is None or image.ndim != 2:
                        raise ValueError("no 2-D image data")
                    cut, padded_px = cut_stamps(image, group["x_px"].to_numpy(), group["y_px"].to_numpy(), size_px)
                stamps[positions, band_index] = cut
                padded[positions] = padded_px
        except FITS_ERRORS as error:
            stamps[positions] = np.nan
            reason[positions] = "unreadable_tile"
            detail[positions] = f"{tile_paths[tile][band]}: {type(error).__name__}: {error}"
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


def score_shard(store_path: str, cut_part: str, part_path: str, start: int, stop: int, batch_size: int) -> str:
    """Score the usable stamps of one shard with the worker's model; write their logits."""
    status = pd.read_parquet(cut_part)
    usable = status["reason"].isna().to_numpy()
    stamps = store.read_stamps(store_path, start, stop)[usable]
    logits = worker_model().score(stamps, batch_size) if len(stamps) else np.empty(0, np.float32)
    table = pa.table(
        {
            "cutout_index": pa.array(status["cutout_index"].to_numpy()[usable], pa.int64()),
            "logit": pa.array(logits, pa.float32()),
        }
    )
    atomic_write_parquet(table, part_path)
    return part_path


def existing(path: str | Path) -> str:
    """A stand-in task result for a part file that an earlier attempt already wrote."""
    return str(path)
