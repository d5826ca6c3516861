"""The functions that run on Dask workers, one call per shard and stage (GPU workers: a run of shards per score task).

Each writes its outputs under a temporary name and renames them into place; the part
file it leaves is the shard's done-marker for that stage. Beside each score part file a
``shard-NNNNNN.timings.json`` records where that shard's scoring time went (read,
normalise, forward, ...; see :data:`pipeline.inference.TIMING_STAGES`) and which worker
scored it; :func:`read_timings` collects them for benchmarks.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.wcs import WCS
from distributed import get_worker

from catalogs.catalogue import MODEL_LOGIT_PREFIX
from catalogs.ensemble import combine_logits
from catalogs.io import atomic_write_parquet
from catalogs.layout import timings_path
from pipeline import store
from pipeline.cutouts import cut_stamps, resample_stamps, stamp_flags
from pipeline.images import InputError, read_header, read_image
from pipeline.inference import DEFAULT_PREFETCH, ScoredShard, ShardStamps, worker_model

logger = logging.getLogger(__name__)


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


def _usable(cut_part: str) -> tuple[np.ndarray, np.ndarray]:
    """Which of a shard's objects the cut stage left usable, and their cutout indices."""
    status = pq.read_table(cut_part, columns=["cutout_index", "reason"])
    usable = status.column("reason").is_null().to_numpy(zero_copy_only=False)
    return usable, status.column("cutout_index").to_numpy()[usable]


def read_timings(part_paths: list[str | Path]) -> list[dict]:
    """The timings recorded beside these score part files (those that have them)."""
    records = []
    for part in part_paths:
        path = timings_path(part)
        if path.is_file():
            records.append(json.loads(path.read_text()))
    return records


def _write_timings(part_path: str, timings: dict) -> None:
    path = timings_path(part_path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(timings, default=float) + "\n")
    temporary.replace(path)


def _write_score_part(cutout_index: np.ndarray, by_model: dict[str, np.ndarray], part_path: str) -> None:
    # The ensemble's logit is that of the models' mean probability (one model: its own).
    columns = {"cutout_index": pa.array(cutout_index, pa.int64()),
               "logit": pa.array(combine_logits(by_model), pa.float32())}
    if len(by_model) > 1:
        columns.update({f"{MODEL_LOGIT_PREFIX}{name}": pa.array(values, pa.float32()) for name, values in by_model.items()})
    atomic_write_parquet(pa.table(columns), part_path)


def _where() -> dict[str, str]:
    try:
        worker = get_worker()
        return {"worker": worker.address, "worker_name": str(worker.name)}
    except ValueError:  # not on a Dask worker
        return {"worker": None, "worker_name": None}


def score_shard(store_path: str, cut_part: str, part_path: str, start: int, stop: int,
                batch_size: int | None) -> str:
    """Score the usable stamps of one shard with the worker's model; write their logits.

    Beside the part file, ``shard-NNNNNN.timings.json`` records where the time went (read,
    normalise, forward, write) and on which worker.
    """
    started = time.perf_counter()
    status = pd.read_parquet(cut_part)
    usable = status["reason"].isna().to_numpy()
    stamps = store.read_stamps(store_path, start, stop)[usable]
    timings = {"objects": int(usable.sum()), "read_s": time.perf_counter() - started}
    plugin = worker_model()
    by_model = plugin.score(stamps, batch_size, timings) if len(stamps) else {
        loaded.config.name or loaded.path.name: np.empty(0, np.float32) for loaded in plugin.ensure_loaded()}
    started = time.perf_counter()
    _write_score_part(status["cutout_index"].to_numpy()[usable], by_model, part_path)
    timings.update(write_s=time.perf_counter() - started, stage="score", shards=1, prefetch=False,
                   device=str(next(plugin.loaded[0].module.parameters()).device), **_where())
    _write_timings(part_path, timings)
    return part_path


def score_shards(store_path: str, cut_parts: list[str], part_paths: list[str], ranges: list[tuple[int, int]],
                 batch_size: int | None, prefetch: int = DEFAULT_PREFETCH) -> list[str]:
    """Score a run of consecutive shards in one task, streaming them through the worker's model.

    The GPU workers' score task: reader threads read the next shards while the GPU runs
    the forward passes of the blocks before (:func:`pipeline.inference.stream_scores`);
    a writer thread writes the part files. Each shard still gets its own part file (its
    done-marker, the same columns as :func:`score_shard`'s) and timings side file, so
    resuming and merging do not know how the shards were grouped.
    """
    plugin = worker_model()
    where = _where()
    task_started = time.perf_counter()

    def read(index: int) -> ShardStamps:
        usable, cutout_index = _usable(cut_parts[index])
        start, stop = ranges[index]
        return ShardStamps(store.read_stamps(store_path, start, stop)[usable], cutout_index)

    def write(scored: ScoredShard) -> None:
        started = time.perf_counter()
        _write_score_part(scored.meta, scored.logits, part_paths[scored.index])
        _write_timings(part_paths[scored.index], {
            **scored.timings, "write_s": time.perf_counter() - started, "stage": "score",
            "shards": len(part_paths), "task_first_shard": Path(part_paths[0]).name, **where})

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="lensfinder-write") as writer:
        pending = [writer.submit(write, scored)
                   for scored in plugin.score_stream(read, len(part_paths), batch_size, prefetch=prefetch)]
        for future in pending:
            future.result()
    logger.debug("scored %d shards in %.2f s", len(part_paths), time.perf_counter() - task_started)
    return list(part_paths)


def existing(path: str | Path) -> str:
    """A stand-in task result for a part file that an earlier attempt already wrote."""
    return str(path)
