"""The one place that names what a run directory holds, and reads its cutout store.

A run's ``--out`` directory, as ``run_survey.py`` writes it::

    candidates.parquet    the ranked catalogue            (catalogs.schema)
    candidates_hats/      its HATS copy, for large runs   (catalogs.hats)
    failures.parquet      every object not scored, and why
    cutouts.zarr/         the cutout store (variables below)
    run.yaml              the resolved settings
    summary.json          counts and phase timings
    dask-report.html      Dask's performance report
    run-state.json        the run's fingerprint (resuming)
    _progress/<stage>/shard-NNNNNN.parquet         per-shard done-markers (stage: cut, score)
    _progress/score/shard-NNNNNN.timings.json      where each shard's scoring time went
    .lock                 held while a run writes here
    mock_survey/          the demo's generated inputs (``--demo`` only)
    inspections.parquet, .inspections.lock, inspect_cache/    visual inspection (catalogs.inspect)

Writers (the pipeline, the inspection page) and readers (inspection, the Zooniverse
export, rescoring, ``pipeline.adapt``) all take these names from here. The read side of
the cutout store lives here too (:func:`open_store`, :func:`read_stamps`,
:func:`read_cutouts`); ``pipeline.store`` creates it and writes its shards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # xarray and zarr are imported when a store is read
    import xarray as xr

CANDIDATES_FILE = "candidates.parquet"
FAILURES_FILE = "failures.parquet"
STORE_DIR = "cutouts.zarr"
SETTINGS_FILE = "run.yaml"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "dask-report.html"
STATE_FILE = "run-state.json"
HATS_DIR = "candidates_hats"
PROGRESS_DIR = "_progress"
#: The stages that leave per-shard done-markers under ``_progress/<stage>/``.
STAGES = ("cut", "score")
PART_PATTERN = "shard-*.parquet"
#: Name ending of the per-shard timings beside each score part file.
TIMINGS_SUFFIX = ".timings.json"
#: The lock file a run holds (fcntl.flock) in its output directory while it runs.
LOCK_FILE = ".lock"
#: The demo's mock survey (tiles, catalogue, truth) inside the output directory.
MOCK_DIR = "mock_survey"
INSPECTIONS_FILE = "inspections.parquet"
INSPECTIONS_LOCK_FILE = ".inspections.lock"
INSPECT_CACHE_DIR = "inspect_cache"

#: Entries of an output directory that belong to no run (the demo's generated inputs, the lock).
NOT_OUTPUTS = frozenset({MOCK_DIR, LOCK_FILE})
#: What an earlier run left that a forced run deletes: directories, then files.
RUN_DIRECTORIES = (PROGRESS_DIR, STORE_DIR)
RUN_FILES = (STATE_FILE, CANDIDATES_FILE, FAILURES_FILE, SUMMARY_FILE, SETTINGS_FILE, REPORT_FILE)

# The cutout store (an xarray Dataset in Zarr v3):
#   stamps (object, band, y, x) float32, NaN where there was no data; flags (object) int32;
#   coordinates object_id, ra, dec, tile, x_px, y_px (per object) and band (names).
STAMPS = "stamps"
FLAGS = "flags"
OBJECT_DIM = "object"
BAND = "band"
COORDINATES = ("object_id", "ra", "dec", "tile", "x_px", "y_px")


class RunLayout:
    """The paths inside one run directory (nothing is read or created by naming them)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    @property
    def candidates(self) -> Path:
        return self.root / CANDIDATES_FILE

    @property
    def failures(self) -> Path:
        return self.root / FAILURES_FILE

    @property
    def store(self) -> Path:
        return self.root / STORE_DIR

    @property
    def settings(self) -> Path:
        return self.root / SETTINGS_FILE

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY_FILE

    @property
    def report(self) -> Path:
        return self.root / REPORT_FILE

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE

    @property
    def hats(self) -> Path:
        return self.root / HATS_DIR

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def mock_survey(self) -> Path:
        return self.root / MOCK_DIR

    @property
    def inspections(self) -> Path:
        return self.root / INSPECTIONS_FILE

    @property
    def inspections_lock(self) -> Path:
        return self.root / INSPECTIONS_LOCK_FILE

    @property
    def inspect_cache(self) -> Path:
        return self.root / INSPECT_CACHE_DIR

    @property
    def progress(self) -> Path:
        return self.root / PROGRESS_DIR

    def stage_dir(self, stage: str) -> Path:
        """``_progress/<stage>``: the part files of one stage."""
        return self.progress / stage

    def part(self, stage: str, shard: int) -> Path:
        """The part file that marks ``shard`` done for ``stage`` (``cut`` or ``score``)."""
        return self.stage_dir(stage) / f"shard-{shard:06d}.parquet"

    def done(self, stage: str, shard: int) -> bool:
        return self.part(stage, shard).is_file()

    def parts(self, stage: str) -> list[Path]:
        """The part files of ``stage`` that exist, in shard order."""
        return sorted(self.stage_dir(stage).glob(PART_PATTERN))

    def read_summary(self) -> dict[str, Any]:
        return json.loads(self.summary.read_text())

    def open_store(self) -> xr.Dataset:
        return open_store(self.store)

    def read_cutouts(self, cutout_indices: np.ndarray | list[int]) -> np.ndarray:
        return read_cutouts(self.store, cutout_indices)


def timings_path(part_path: str | Path) -> Path:
    """The side file beside a score part file with that shard's timings (JSON)."""
    part = Path(part_path)
    return part.with_name(part.name.removesuffix(".parquet") + TIMINGS_SUFFIX)


# ----------------------------------------------------------------------------- the cutout store, read side


def open_store(path: str | Path) -> xr.Dataset:
    """The cutout store as a lazy xarray Dataset (stores from older versions, without
    consolidated metadata, open as well)."""
    import xarray as xr

    consolidated = bool(_root_metadata(path).get("consolidated_metadata"))
    return xr.open_zarr(path, consolidated=consolidated)


def read_stamps(path: str | Path, start: int, stop: int) -> np.ndarray:
    """The stamps of objects ``start:stop`` as a float32 array (n, band, y, x)."""
    import zarr

    return zarr.open_group(str(path), mode="r")[STAMPS][start:stop]


def read_cutouts(path: str | Path, cutout_indices: np.ndarray | list[int]) -> np.ndarray:
    """Raw stamps ``(n, bands, H, W)`` float32 at these cutout indices, in the order given
    (repeats allowed; NaN where the tile had no data)."""
    indices = np.asarray(cutout_indices, dtype=np.int64)
    with open_store(path) as dataset:
        if len(indices) == 0:
            _, bands, height, width = dataset[STAMPS].shape
            return np.empty((0, bands, height, width), dtype=np.float32)
        unique, inverse = np.unique(indices, return_inverse=True)
        stamps = dataset[STAMPS].isel({OBJECT_DIM: unique}).values.astype(np.float32)
    return stamps[inverse]


def store_bands(path: str | Path) -> list[str]:
    """The band names of the store's stamps, in channel order."""
    with open_store(path) as dataset:
        return [str(band) for band in dataset[BAND].values]


def _root_metadata(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / "zarr.json").read_text())
    except (OSError, ValueError):
        return {}
