"""Writing a catalogue as a HATS collection (read by hats and LSDB): partitions, margin cache, MOC.

Layout (HATS IVOA Note 1.0 and the ``hats`` package's documentation)::

    out_dir/                                 a HATS collection
    ├── collection.properties                the catalogue and its default margin cache
    ├── candidates/                          the catalogue
    │   ├── dataset/
    │   │   ├── Norder=k/Dir=d/Npix=n.parquet   one partition: the rows in NESTED pixel n of order k,
    │   │   │                                    d = (n // 10000) * 10000, sorted by _healpix_29
    │   │   ├── _common_metadata             the schema (with units, VOParquet, provenance)
    │   │   └── _metadata                    the schema plus every partition's row groups
    │   ├── partition_info.csv               Norder,Npix of every partition
    │   ├── skymap.fits, point_map.fits      objects per order-9 HEALPix pixel: the catalogue's MOC
    │   ├── hats.properties                  catalogue properties (key=value)
    │   └── properties                       the same, under the name older readers look for
    └── candidates_10arcs/                   the margin cache (same layout, dataproduct_type=margin):
                                             for each partition, the objects outside it within 10"

Partitions are chosen adaptively: every non-empty pixel of ``lowest_order`` whose row
count exceeds ``max_rows`` is split into its four children, recursively, so dense sky
areas get small pixels and no partition holds more than ``max_rows`` rows — unless more
than that many objects share one pixel of ``highest_order`` (under 1 arcsec^2 at the
default 20), which is then kept whole.

``lsdb.open_catalog(out_dir)`` opens the catalogue with its margin cache, so crossmatches
up to the margin's radius also find neighbours across partition borders, and filters by
the MOC. Any Parquet reader can read the whole catalogue with a glob, e.g. DuckDB:
``SELECT * FROM read_parquet('out_dir/candidates/dataset/Norder=*/Dir=*/Npix=*.parquet')``
(DuckDB adds the hive-style ``Norder`` and ``Dir`` path keys as columns; pass
``hive_partitioning = false`` to leave them out).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from catalogs.healpix import healpix_29, pixel_range
from catalogs.io import Params, with_reader_metadata
from catalogs.schema import CANDIDATE_COLUMNS, HEALPIX_COLUMN, HEALPIX_ORDER

DEFAULT_MAX_ROWS = 1_000_000
DEFAULT_LOWEST_ORDER = 0
DEFAULT_HIGHEST_ORDER = 20
#: Pixels per Dir=... folder, as in HATS: keeps directories small on parallel file systems.
PIXELS_PER_DIR = 10_000
#: The HATS format version and release date of its IVOA Note that this layout follows.
HATS_VERSION, HATS_RELEASE_DATE = "v1.0", "2025-08-22"
#: Width of the margin cache: crossmatches up to this radius find every neighbour, also
#: across partition borders (LSDB's crossmatch radius must not exceed it).
DEFAULT_MARGIN_ARCSEC = 10.0
#: Order of the object-count map whose non-empty pixels are the catalogue's MOC (~6.9' pixels).
DEFAULT_SKYMAP_ORDER = 9
#: Probes per circle and circle radii (in units of the margin) of :func:`margin_members`.
MARGIN_SAMPLES = 36
MARGIN_RADII = (0.5, 1.0, 1.5)
COLLECTION_PROPERTIES = "collection.properties"


@dataclass(frozen=True)
class Partition:
    """One HEALPix partition: pixel ``pixel`` of ``order`` (NESTED) and its row count."""

    order: int
    pixel: int
    rows: int

    @property
    def directory(self) -> int:
        return (self.pixel // PIXELS_PER_DIR) * PIXELS_PER_DIR

    @property
    def relative_path(self) -> str:
        """Path below ``dataset/``."""
        return f"Norder={self.order}/Dir={self.directory}/Npix={self.pixel}.parquet"


def plan_partitions(sorted_healpix_29: np.ndarray, max_rows: int, lowest_order: int = DEFAULT_LOWEST_ORDER,
                    highest_order: int = DEFAULT_HIGHEST_ORDER) -> list[Partition]:
    """Adaptive partitions for ascending ``_healpix_29`` values, ordered by sky position.

    Each pixel of order ``k`` is one contiguous range of order-29 indices, so its row
    count is two binary searches in the sorted index: no pass over the data per order.
    """
    if max_rows < 1:
        raise ValueError("max_rows must be at least 1")
    if not 0 <= lowest_order <= highest_order <= HEALPIX_ORDER:
        raise ValueError(f"need 0 <= lowest_order <= highest_order <= {HEALPIX_ORDER}")
    values = np.asarray(sorted_healpix_29, dtype=np.int64)

    def count(order: int, pixel: int) -> int:
        start, stop = pixel_range(order, pixel)
        return int(np.searchsorted(values, stop) - np.searchsorted(values, start))

    partitions: list[Partition] = []
    # A stack in reverse order keeps the output in ascending sky (NESTED) order.
    top = np.unique(values >> np.int64(2 * (HEALPIX_ORDER - lowest_order)))
    stack = [(lowest_order, int(pixel)) for pixel in top[::-1]]
    while stack:
        order, pixel = stack.pop()
        rows = count(order, pixel)
        if rows == 0:
            continue
        if rows <= max_rows or order == highest_order:
            partitions.append(Partition(order, pixel, rows))
        else:
            stack.extend((order + 1, 4 * pixel + child) for child in (3, 2, 1, 0))
    return partitions


def _as_table(table_or_frame: pa.Table | pd.DataFrame) -> pa.Table:
    if isinstance(table_or_frame, pd.DataFrame):
        return pa.Table.from_pandas(table_or_frame, preserve_index=False)
    return table_or_frame


def write_hats(
    table_or_frame: pa.Table | pd.DataFrame,
    out_dir: str | Path,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    lowest_order: int = DEFAULT_LOWEST_ORDER,
    highest_order: int = DEFAULT_HIGHEST_ORDER,
    catalog_name: str | None = None,
    ra_column: str = "ra",
    dec_column: str = "dec",
    provenance: dict[str, Any] | None = None,
    params: Params | None = None,
    description: str = "",
    margin_arcsec: float | None = DEFAULT_MARGIN_ARCSEC,
    skymap_order: int = DEFAULT_SKYMAP_ORDER,
) -> list[Partition]:
    """Write ``table_or_frame`` as a HATS collection in ``out_dir``; return the catalogue's partitions.

    ``out_dir`` holds ``collection.properties``, the catalogue in ``out_dir/<name>/`` and,
    unless ``margin_arcsec`` is None or 0, its margin cache in ``out_dir/<name>_<N>arcs/``
    (see the module docstring). ``_healpix_29`` is computed from ``ra_column``/``dec_column``
    when the table lacks it. The collection is built beside ``out_dir`` and renamed into
    place, replacing any previous one, so a reader never sees a half-written catalogue.

    Args:
        max_rows: most rows in one partition (see the module docstring for the exception).
        lowest_order, highest_order: HEALPix orders to start splitting at and stop at.
        catalog_name: the catalogue's directory and ``obs_collection``; default ``candidates``.
        provenance, params, description: metadata for every file, as in
            :func:`catalogs.io.atomic_write_parquet`.
        margin_arcsec: width of the margin cache: every object within this distance of a
            partition, outside it, is copied into that partition's margin file.
        skymap_order: HEALPix order of the object-count map (``skymap.fits``, ``point_map.fits``)
            from which HATS readers take the catalogue's MOC.
    """
    out_dir = Path(out_dir)
    name = catalog_name or "candidates"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"catalog_name {name!r} must be a plain directory name")
    if not 0 <= skymap_order <= HEALPIX_ORDER:
        raise ValueError(f"skymap_order must lie in [0, {HEALPIX_ORDER}]")
    table = _as_table(table_or_frame)
    if HEALPIX_COLUMN not in table.column_names:
        index = healpix_29(table.column(ra_column).to_numpy(), table.column(dec_column).to_numpy())
        documented = next(column for column in CANDIDATE_COLUMNS if column.name == HEALPIX_COLUMN)
        table = table.append_column(documented.field(), pa.array(index, pa.int64()))
    # HATS keeps each partition sorted by the spatial index; sorting all rows once also makes
    # every partition a contiguous slice.
    order = np.argsort(table.column(HEALPIX_COLUMN).to_numpy(), kind="stable")
    table = table.take(pa.array(order))
    table = with_reader_metadata(table, provenance, params=params, description=description)
    spatial = table.column(HEALPIX_COLUMN).to_numpy()
    partitions = plan_partitions(spatial, max_rows, lowest_order, highest_order)

    building = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    catalog_dir = building / name
    offsets = np.concatenate([[0], np.cumsum([p.rows for p in partitions])])
    _write_dataset(table, [(p, np.arange(offsets[k], offsets[k + 1])) for k, p in enumerate(partitions)],
                   catalog_dir / "dataset")
    pd.DataFrame({"Norder": [p.order for p in partitions], "Npix": [p.pixel for p in partitions]}).to_csv(
        catalog_dir / "partition_info.csv", index=False)
    pixels, counts = np.unique(spatial >> np.int64(2 * (HEALPIX_ORDER - skymap_order)), return_counts=True)
    _write_skymap(pixels, counts, skymap_order, catalog_dir)
    common = {"hats_col_ra": ra_column, "hats_col_dec": dec_column, "hats_col_healpix": HEALPIX_COLUMN,
              "hats_col_healpix_order": HEALPIX_ORDER, "hats_npix_suffix": ".parquet"}
    _write_properties(catalog_dir, {
        "obs_collection": name, "dataproduct_type": "object", "hats_nrows": table.num_rows, **common,
        "hats_max_rows": max_rows, "hats_skymap_order": skymap_order,
        "moc_sky_fraction": f"{len(pixels) / (12 * 4**skymap_order):.8f}",
    })
    collection = {"obs_collection": name, "hats_primary_table_url": name}
    if margin_arcsec:
        margin_name = f"{name}_{margin_arcsec:g}arcs"
        members = margin_members(table.column(ra_column).to_numpy(), table.column(dec_column).to_numpy(),
                                 spatial, partitions, margin_arcsec)
        margin_dir = building / margin_name
        written = [(partition, rows) for partition, rows in zip(partitions, members) if len(rows)]
        _write_dataset(table, written, margin_dir / "dataset")
        pd.DataFrame({"Norder": [p.order for p, _ in written], "Npix": [p.pixel for p, _ in written]}).to_csv(
            margin_dir / "partition_info.csv", index=False)
        _write_properties(margin_dir, {
            "obs_collection": margin_name, "dataproduct_type": "margin",
            "hats_nrows": int(sum(len(rows) for _, rows in written)), **common,
            "hats_primary_table_url": name, "hats_margin_threshold": f"{margin_arcsec:g}",
        })
        collection.update(all_margins=margin_name, default_margin=margin_name)
    (building / COLLECTION_PROPERTIES).write_text(
        "#HATS collection\n" + "".join(f"{key}={value}\n" for key, value in collection.items()), encoding="utf-8")

    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(building, out_dir)
    return partitions


def _write_dataset(table: pa.Table, parts: list[tuple[Partition, np.ndarray]], dataset: Path) -> None:
    """One Parquet file per partition (the rows at ``indices``, in order), plus _metadata files."""
    file_metadata = []
    for partition, indices in parts:
        path = dataset / partition.relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        collector: list[pq.FileMetaData] = []
        pq.write_table(table.take(pa.array(indices, pa.int64())), path, compression="zstd",
                       metadata_collector=collector)
        collector[0].set_file_path(partition.relative_path)
        file_metadata += collector
    dataset.mkdir(parents=True, exist_ok=True)
    pq.write_metadata(table.schema, dataset / "_common_metadata")
    pq.write_metadata(table.schema, dataset / "_metadata", metadata_collector=file_metadata)


def _write_skymap(pixels: np.ndarray, counts: np.ndarray, order: int, directory: Path) -> None:
    """Objects per HEALPix pixel as an explicit (sparse) HEALPix FITS map, the format HATS reads.

    ``skymap.fits`` is the current name; ``point_map.fits`` the one from which ``hats`` (and
    so LSDB) builds the catalogue's MOC.
    """
    from cdshealpix.skymap.skymap import SkymapExplicit

    skymap = SkymapExplicit(np.asarray(pixels, dtype=np.uint64), np.asarray(counts, dtype=np.int64), order)
    skymap.to_fits(directory / "skymap.fits")
    shutil.copyfile(directory / "skymap.fits", directory / "point_map.fits")


def margin_members(ra_deg: np.ndarray, dec_deg: np.ndarray, spatial: np.ndarray, partitions: list[Partition],
                   margin_arcsec: float, chunk: int = 20_000) -> list[np.ndarray]:
    """For each partition, the (ascending) row indices of the objects outside it but within
    ``margin_arcsec`` of it.

    Rows must be sorted by ``spatial`` (``_healpix_29``) and ``partitions`` be those of
    :func:`plan_partitions` for them. Each object is probed at :data:`MARGIN_SAMPLES` points
    on circles of :data:`MARGIN_RADII` times the margin around it; every partition a probe
    falls in, other than the object's own, gets the object. The outer circle (1.5x) makes
    the result a superset: a partition whose border (edge or corner) comes within the margin
    of an object always holds a probe, for partitions wider than the margin (HATS partitions
    are arcminutes to degrees wide; a margin is arcseconds). A few objects up to 1.5x the
    margin away are included too, which a crossmatch filters by distance anyway.
    """
    if margin_arcsec <= 0:
        raise ValueError("margin_arcsec must be positive")
    shifts = np.array([2 * (HEALPIX_ORDER - p.order) for p in partitions], dtype=np.int64)
    pixels = np.array([p.pixel for p in partitions], dtype=np.int64)
    starts, stops = pixels << shifts, (pixels + 1) << shifts
    own = np.repeat(np.arange(len(partitions)), [p.rows for p in partitions])
    bearings = np.linspace(0, 2 * np.pi, MARGIN_SAMPLES, endpoint=False)
    radii = np.radians(np.asarray(MARGIN_RADII) * margin_arcsec / 3600.0)
    angle = np.repeat(radii, len(bearings))[None, :]
    bearing = np.tile(bearings, len(radii))[None, :]
    found: list[np.ndarray] = []
    for first in range(0, len(spatial), chunk):
        ra = np.radians(ra_deg[first : first + chunk])[:, None]
        dec = np.radians(dec_deg[first : first + chunk])[:, None]
        # The point at angular distance ``angle`` along ``bearing`` from (ra, dec), on the sphere.
        sin_dec = np.clip(np.sin(dec) * np.cos(angle) + np.cos(dec) * np.sin(angle) * np.cos(bearing), -1, 1)
        probe_dec = np.arcsin(sin_dec)
        probe_ra = ra + np.arctan2(np.sin(bearing) * np.sin(angle) * np.cos(dec), np.cos(angle) - np.sin(dec) * sin_dec)
        probes = healpix_29(np.degrees(probe_ra).ravel() % 360.0, np.degrees(probe_dec).ravel())
        where = np.searchsorted(starts, probes, side="right") - 1
        inside = (where >= 0) & (probes < stops[np.clip(where, 0, None)])
        rows = np.repeat(np.arange(first, first + len(ra)), angle.shape[1])
        keep = inside & (where != own[rows])
        found.append(np.unique(np.stack([where[keep], rows[keep]], axis=1), axis=0)
                     if keep.any() else np.empty((0, 2), dtype=np.int64))
    pairs = np.concatenate(found) if found else np.empty((0, 2), dtype=np.int64)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    bounds = np.searchsorted(pairs[:, 0], np.arange(len(partitions) + 1))
    return [pairs[bounds[k] : bounds[k + 1], 1] for k in range(len(partitions))]


def _package_version() -> str:
    try:
        return importlib.metadata.version("lensfinder")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _write_properties(directory: Path, values: dict[str, Any]) -> None:
    """The ``key=value`` properties file HATS readers parse (keys of the HATS IVOA Note), under
    both names readers look for."""
    size_kib = sum(path.stat().st_size for path in (directory / "dataset").rglob("*") if path.is_file()) // 1024
    values = {
        **values,
        "hats_builder": f"lensfinder {_package_version()} (catalogs.hats)",
        "hats_creation_date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MUTC"),
        "hats_estsize": size_kib,
        "hats_release_date": HATS_RELEASE_DATE,
        "hats_version": HATS_VERSION,
    }
    text = "#HATS catalog\n" + "".join(f"{key}={value}\n" for key, value in values.items())
    for name in ("hats.properties", "properties"):
        (directory / name).write_text(text, encoding="utf-8")
