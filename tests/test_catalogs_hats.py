"""The HATS-layout HEALPix-partitioned catalogue: complete, spatially correct, within the row limit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from catalogs.hats import PIXELS_PER_DIR, Partition, plan_partitions, write_hats
from catalogs.healpix import degrade, healpix_29
from catalogs.io import VOPARQUET_VERSION_KEY, read_provenance
from catalogs.schema import HEALPIX_COLUMN

MAX_ROWS = 150


def clustered_catalogue(n: int = 3000, seed: int = 2) -> pd.DataFrame:
    """Half spread over the sky, half in one 0.3-deg clump, so partition orders must differ."""
    rng = np.random.default_rng(seed)
    half = n // 2
    ra = np.concatenate([rng.uniform(0, 360, half), rng.normal(150.0, 0.3, n - half) % 360])
    dec = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, half))), rng.normal(2.0, 0.3, n - half)])
    return pd.DataFrame({"object_id": np.arange(n), "ra": ra, "dec": dec,
                         "score": rng.uniform(size=n).astype(np.float32),
                         "tile": [f"t{i % 5}" for i in range(n)]})


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    frame = clustered_catalogue()
    collection = tmp_path_factory.mktemp("hats") / "candidates_hats"
    partitions = write_hats(frame, collection, max_rows=MAX_ROWS, provenance={"run": "test"})
    return frame, collection / "candidates", partitions


def test_partitions_respect_the_row_limit_and_adapt_their_order(catalogue):
    frame, out, partitions = catalogue
    assert sum(p.rows for p in partitions) == len(frame)
    assert max(p.rows for p in partitions) <= MAX_ROWS
    orders = {p.order for p in partitions}
    assert min(orders) <= 2 and max(orders) >= 6  # coarse on the sparse sky, fine in the clump
    files = sorted((out / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet"))
    assert len(files) == len(partitions)
    for partition in partitions:
        assert pq.read_metadata(out / "dataset" / partition.relative_path).num_rows == partition.rows


def test_each_file_holds_exactly_the_rows_of_its_pixel_sorted(catalogue):
    _, out, partitions = catalogue
    for partition in partitions:
        assert partition.relative_path == (f"Norder={partition.order}/Dir={partition.directory}/"
                                           f"Npix={partition.pixel}.parquet")
        assert partition.directory == partition.pixel // PIXELS_PER_DIR * PIXELS_PER_DIR
        part = pq.read_table(out / "dataset" / partition.relative_path).to_pandas()
        index = part[HEALPIX_COLUMN].to_numpy()
        np.testing.assert_array_equal(index, healpix_29(part["ra"], part["dec"]))
        assert (degrade(index, 29, partition.order) == partition.pixel).all()
        assert (np.diff(index) >= 0).all()


def test_duckdb_reads_the_whole_dataset_with_a_glob(catalogue):
    duckdb = pytest.importorskip("duckdb")
    frame, out, _ = catalogue
    glob = f"{out}/dataset/Norder=*/Dir=*/Npix=*.parquet"
    union = duckdb.connect().execute(
        f"SELECT object_id, ra, dec, score, tile FROM read_parquet('{glob}', hive_partitioning = false)").df()
    union = union.sort_values("object_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(union, frame, check_dtype=False)
    # With hive partitioning (DuckDB's default for key=value paths) each row says its partition.
    orders = duckdb.connect().execute(
        f"SELECT DISTINCT CAST(Norder AS INTEGER) FROM read_parquet('{glob}', hive_partitioning = true)").fetchall()
    assert {row[0] for row in orders} == {p.order for p in catalogue[2]}


def test_metadata_files_describe_the_partitions(catalogue):
    frame, out, partitions = catalogue
    info = pd.read_csv(out / "partition_info.csv")
    assert list(info.columns) == ["Norder", "Npix"]
    assert list(zip(info["Norder"], info["Npix"])) == [(p.order, p.pixel) for p in partitions]
    metadata = pq.read_metadata(out / "dataset" / "_metadata")
    assert metadata.num_rows == len(frame)
    paths = {metadata.row_group(i).column(0).file_path for i in range(metadata.num_row_groups)}
    assert paths == {p.relative_path for p in partitions}
    common = pq.read_schema(out / "dataset" / "_common_metadata")
    assert HEALPIX_COLUMN in common.names and common.metadata[VOPARQUET_VERSION_KEY] == b"1.0"
    assert read_provenance(out / "dataset" / partitions[0].relative_path) == {"run": "test"}
    for name in ("hats.properties", "properties"):
        properties = dict(line.split("=", 1) for line in (out / name).read_text().splitlines()
                          if line and not line.startswith("#"))
        assert properties["dataproduct_type"] == "object"
        assert int(properties["hats_nrows"]) == len(frame)
        assert (properties["hats_col_ra"], properties["hats_col_dec"]) == ("ra", "dec")
        assert properties["hats_col_healpix"] == HEALPIX_COLUMN and properties["hats_col_healpix_order"] == "29"
        assert int(properties["hats_max_rows"]) == MAX_ROWS


def test_rewriting_replaces_the_catalogue(catalogue, tmp_path):
    frame = clustered_catalogue(400, seed=5)
    out = tmp_path / "cat"
    write_hats(frame, out, max_rows=1000)
    partitions = write_hats(frame.iloc[:100], out, max_rows=1000)
    assert sum(p.rows for p in partitions) == 100
    assert len(list((out / "candidates" / "dataset").glob("Norder=*/Dir=*/*.parquet"))) == len(partitions)
    assert not list(tmp_path.glob(".*tmp*"))


def test_plan_splits_only_crowded_pixels_and_stops_at_the_highest_order():
    # 10 rows in pixel 0 of order 0 and 1 row in pixel 5: only pixel 0 needs splitting.
    values = np.sort(np.concatenate([np.arange(10, dtype=np.int64) << 50, [5 << 58]]))
    partitions = plan_partitions(values, max_rows=4)
    assert sum(p.rows for p in partitions) == 11 and max(p.rows for p in partitions) <= 4
    assert Partition(0, 5, 1) in partitions
    # Twenty rows at one position cannot be split: kept whole at the highest order.
    same = np.full(20, 12345, dtype=np.int64)
    assert plan_partitions(same, max_rows=4, highest_order=10) == [Partition(10, 12345 >> 38, 20)]
    with pytest.raises(ValueError):
        plan_partitions(values, max_rows=0)
