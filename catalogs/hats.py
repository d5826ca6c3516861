"""Writing a catalogue as a HEALPix-partitioned dataset in the HATS layout (read by LSDB).

Layout (HATS IVOA Note 1.0 and the ``hats`` package's documentation)::

    out_dir/
    ├── dataset/
    │   ├── Norder=k/Dir=d/Npix=n.parquet   one partition: the rows in NESTED pixel n of order k,
    │   │                                    d = (n // 10000) * 10000, sorted by _healpix_29
    │   ├── _common_metadata                 the schema (with units, VOParquet, provenance)
    │   └── _metadata                        the schema plus every partition's row groups
    ├── partition_info.csv                   Norder,Npix of every partition
    ├── hats.properties                      catalogue properties (key=value)
    └── properties                           the same, under the name older readers look for

Partitions are chosen adaptively: every non-empty pixel of ``lowest_order`` whose row
count exceeds ``max_rows`` is split into its four children, recursively, so dense sky
areas get small pixels and no partition holds more than ``max_rows`` rows — unless more
than that many objects share one pixel of ``highest_order`` (under 1 arcsec^2 at the
default 20), which is then kept whole.

Any Parquet reader can read the whole dataset with a glob, e.g. DuckDB:
``SELECT * FROM read_parquet('out_dir/dataset/Norder=*/Dir=*/Npix=*.parquet')`` (DuckDB
adds the hive-style ``Norder`` and ``Dir`` path keys as columns; pass
``hive_partitioning = false`` to leave them out).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from catalogs.healpix import healpix_29, pixel_area_deg2, pixel_range
from catalogs.io import Params, with_reader_metadata
from catalogs.schema import CANDIDATE_COLUMNS, HEALPIX_COLUMN, HEALPIX_ORDER

DEFAULT_MAX_ROWS = 1_000_000
DEFAULT_LOWEST_ORDER = 0
DEFAULT_HIGHEST_ORDER = 20
#: Pixels per Dir=... folder, as in HATS: keeps directories small on parallel file systems.
PIXELS_PER_DIR = 10_000
#: The HATS format version and release date of its IVOA Note that this layout follows.
HATS_VERSION, HATS_RELEASE_DATE = "v1.0", "2025-08-22"


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
) -> list[Partition]:
    """Write ``table_or_frame`` as a HATS catalogue in ``out_dir``; return its partitions.

    ``_healpix_29`` is computed from ``ra_column``/``dec_column`` when the table lacks it.
    The catalogue is built beside ``out_dir`` and renamed into place, replacing any
    previous one, so a reader never sees a half-written catalogue.

    Args:
        max_rows: most rows in one partition (see the module docstring for the exception).
        lowest_order, highest_order: HEALPix orders to start splitting at and stop at.
        catalog_name: ``obs_collection`` in the properties; default: ``out_dir``'s name.
        provenance, params, description: metadata for every file, as in
            :func:`catalogs.io.atomic_write_parquet`.
    """
    out_dir = Path(out_dir)
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
    partitions = plan_partitions(table.column(HEALPIX_COLUMN).to_numpy(), max_rows, lowest_order, highest_order)

    building = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    dataset = building / "dataset"
    file_metadata = []
    offset = 0
    for partition in partitions:
        path = dataset / partition.relative_path
        path.parent.mkdir(parents=True, exist_ok=True)
        collector: list[pq.FileMetaData] = []
        pq.write_table(table.slice(offset, partition.rows), path, compression="zstd", metadata_collector=collector)
        collector[0].set_file_path(partition.relative_path)
        file_metadata += collector
        offset += partition.rows
    dataset.mkdir(parents=True, exist_ok=True)
    pq.write_metadata(table.schema, dataset / "_common_metadata")
    pq.write_metadata(table.schema, dataset / "_metadata", metadata_collector=file_metadata)
    pd.DataFrame({"Norder": [p.order for p in partitions], "Npix": [p.pixel for p in partitions]}).to_csv(
        building / "partition_info.csv", index=False)
    properties = _properties(catalog_name or out_dir.name, table.num_rows, partitions, max_rows,
                             ra_column, dec_column, dataset)
    for name in ("hats.properties", "properties"):
        (building / name).write_text(properties, encoding="utf-8")

    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(building, out_dir)
    return partitions


def _package_version() -> str:
    try:
        return importlib.metadata.version("lensfinder")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _properties(name: str, rows: int, partitions: list[Partition], max_rows: int, ra_column: str,
                dec_column: str, dataset: Path) -> str:
    """The ``key=value`` properties file HATS readers parse (keys of the HATS IVOA Note)."""
    size_kib = sum(path.stat().st_size for path in dataset.rglob("*") if path.is_file()) // 1024
    sky_fraction = sum(pixel_area_deg2(p.order) for p in partitions) / (4 * np.pi * (180 / np.pi) ** 2)
    values = {
        "obs_collection": name,
        "dataproduct_type": "object",
        "hats_nrows": rows,
        "hats_col_ra": ra_column,
        "hats_col_dec": dec_column,
        "hats_col_healpix": HEALPIX_COLUMN,
        "hats_col_healpix_order": HEALPIX_ORDER,
        "hats_max_rows": max_rows,
        "hats_npix_suffix": ".parquet",
        "moc_sky_fraction": f"{sky_fraction:.8f}",
        "hats_builder": f"lensfinder {_package_version()} (catalogs.hats)",
        "hats_creation_date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%MUTC"),
        "hats_estsize": size_kib,
        "hats_release_date": HATS_RELEASE_DATE,
        "hats_version": HATS_VERSION,
    }
    return "#HATS catalog\n" + "".join(f"{key}={value}\n" for key, value in values.items())
