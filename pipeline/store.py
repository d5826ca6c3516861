"""The Zarr cutout store: the checkpoint between cutting and scoring (write side).

Layout (an xarray Dataset in Zarr v3; :mod:`catalogs.layout` names the variables)::

    stamps   (object, band, y, x) float32   raw pixel values, NaN where there was no data
    flags    (object,)            int32     catalogs.flags bitmask from the cut stage
    coordinates: object_id, ra, dec, tile, x_px, y_px (per object), band (names)

The ``object`` axis is chunked in shards of ``shard_size``; exactly one task writes each
chunk, so concurrent writers never share a chunk (two writers in one chunk lose data).
A second model or a re-run scores this store without reading the FITS tiles again.

The metadata is consolidated into the root ``zarr.json`` when the store is created (the
shards later write chunks only, never metadata), so ``xarray.open_zarr(path)`` opens it
with one read and without warning. Zarr-python writes consolidated metadata for format 3
as an extension it warns about; every reader falls back to the per-array ``zarr.json``
files, which stay complete.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import warnings

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.codecs import ZstdCodec

from catalogs.layout import BAND, COORDINATES, FLAGS, OBJECT_DIM, STAMPS
# The read side belongs to catalogs.layout (readers of a finished run use it without the
# pipeline); the pipeline's tasks read through the same functions.
from catalogs.layout import open_store, read_stamps  # noqa: F401

#: Stamp codecs by name (Zarr v3 ``compressors``).
STAMP_CODECS = {"none": None, "zstd": (ZstdCodec(level=1),)}


def create_store(
    path: str | Path,
    objects: pd.DataFrame,
    bands: list[str],
    size_px: int,
    shard_size: int,
    attrs: dict[str, Any] | None = None,
    compression: str = "none",
) -> None:
    """Write the store's metadata and coordinates; the stamps are filled later, shard by shard.

    ``objects`` holds one row per cutout slot, in store order, with the COORDINATES columns.
    ``compression`` is the stamps' codec: ``none`` or ``zstd`` (the flags and coordinates
    keep Zarr's default, zstd).
    """
    if compression not in STAMP_CODECS:
        raise ValueError(f"compression must be one of {', '.join(STAMP_CODECS)}, not {compression!r}")
    n = len(objects)
    chunks_stamps = (shard_size, len(bands), size_px, size_px)
    coords: dict[str, Any] = {name: (OBJECT_DIM, _zarr_friendly(objects[name].to_numpy())) for name in COORDINATES}
    coords[BAND] = (BAND, np.asarray(bands, dtype=object))
    template = xr.Dataset(
        {
            # Lazy placeholders: to_zarr(compute=False) writes only their metadata.
            STAMPS: ((OBJECT_DIM, BAND, "y", "x"), da.full((n, len(bands), size_px, size_px), np.nan,
                                                           dtype=np.float32, chunks=chunks_stamps)),
            FLAGS: ((OBJECT_DIM,), da.zeros(n, dtype=np.int32, chunks=shard_size)),
        },
        coords=coords,
        attrs=dict(attrs or {}),
    )
    template[STAMPS].attrs.update(units="image counts", description="raw stamp pixels, NaN where no data")
    template["ra"].attrs.update(units="deg")
    template["dec"].attrs.update(units="deg")
    encoding = {
        STAMPS: {"chunks": chunks_stamps, "compressors": STAMP_CODECS[compression]},
        FLAGS: {"chunks": (shard_size,)},
        # Coordinates are read whole by planners; a few large chunks keep that fast.
        **{name: {"chunks": (max(1, min(n, 1 << 20)),)} for name in COORDINATES},
    }
    with warnings.catch_warnings():
        # "Consolidated metadata is currently not part in the Zarr format 3 specification": known,
        # and harmless here (see the module docstring).
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        template.to_zarr(path, mode="w", compute=False, encoding=encoding, consolidated=True, zarr_format=3)


def consolidate(path: str | Path) -> None:
    """Consolidate the metadata of an existing store (one written before lensfinder did it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(str(path))


def _zarr_friendly(values: np.ndarray) -> np.ndarray:
    # Strings go in as Python objects, which Zarr v3 stores as variable-length UTF-8
    # (fixed-width numpy unicode has no Zarr v3 specification).
    if values.dtype.kind in "OUT":
        return np.asarray([str(value) for value in values], dtype=object)
    return values


def write_shard(path: str | Path, start: int, stamps: np.ndarray, flags: np.ndarray) -> None:
    """Write one shard's stamps and flags; ``start`` must be a multiple of the chunk size."""
    group = zarr.open_group(str(path), mode="r+")
    stop = start + len(stamps)
    group[STAMPS][start:stop] = stamps
    group[FLAGS][start:stop] = flags
