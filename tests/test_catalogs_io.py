"""The catalogue schema, the HEALPix index, and that every common reader understands our Parquet."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalogs.healpix import coverage, degrade, healpix_29, in_coverage, pixel_area_deg2, radec_to_healpix
from catalogs.io import (
    ASTROPY_KEY,
    VOPARQUET_CONTENT_KEY,
    VOPARQUET_VERSION_KEY,
    atomic_write_parquet,
    read_provenance,
)
from catalogs.schema import (
    CANDIDATE_COLUMNS,
    CROSSMATCH_COLUMNS,
    HEALPIX_COLUMN,
    candidate_schema,
    failure_schema,
    model_score_column,
)

PROVENANCE = {"model": {"name": "tiny", "threshold": 0.5}, "code_version": "0.1.0"}
PARAMS = {"threshold": (0.5, "", "decision threshold"), "target_prevalence": (1e-3, "", "survey prevalence")}


def candidate_table(n: int = 5, seed: int = 0) -> pa.Table:
    """A small catalogue with every core and known-lens column, some nulls, and one extra column."""
    rng = np.random.default_rng(seed)
    ra, dec = rng.uniform(0, 360, n), rng.uniform(-60, 60, n)
    score = rng.uniform(size=n).astype(np.float32)
    frame = pd.DataFrame({
        "object_id": np.arange(n, dtype=np.int64), "ra": ra, "dec": dec, HEALPIX_COLUMN: healpix_29(ra, dec),
        "tile": [f"tile_{i % 2}" for i in range(n)], "x_px": rng.uniform(0, 100, n), "y_px": rng.uniform(0, 100, n),
        "score": score, "p_survey": score / 100, "logit": np.log(score / (1 - score)).astype(np.float32),
        "rank": np.arange(1, n + 1), "is_candidate": score > 0.5, "flags": np.zeros(n, np.int32),
        "cutout_index": np.arange(n), "known_lens_name": ["J0001+0001"] + [None] * (n - 1),
        "known_lens_grade": ["confident"] + [None] * (n - 1),
        "known_lens_separation_arcsec": [0.5] + [np.nan] * (n - 1), "mag_r": rng.uniform(18, 24, n),
    })
    extra = pa.schema([pa.field("mag_r", pa.float64())])
    return pa.Table.from_pandas(frame, schema=candidate_schema(pa.int64(), extra, crossmatch=True),
                                preserve_index=False)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    path = tmp_path_factory.mktemp("io") / "candidates.parquet"
    table = candidate_table()
    atomic_write_parquet(table, path, PROVENANCE, params=PARAMS, description="test catalogue")
    return path, table


# --- schema -----------------------------------------------------------------------------------------------


def test_schema_orders_core_columns_and_documents_each():
    schema = candidate_schema(pa.string(), pa.schema([pa.field("mag_r", pa.float64()),
                                                      pa.field("ra", pa.float64())]))
    core = ["object_id"] + [column.name for column in CANDIDATE_COLUMNS]
    assert schema.names == core + ["mag_r"]  # an extra named like a core column is not added twice
    assert schema.names[1:4] == ["ra", "dec", HEALPIX_COLUMN]
    for field in schema:
        if field.name != "mag_r":
            assert field.metadata[b"description"] and field.metadata[b"ucd"], field.name
    assert schema.field("ra").metadata[b"unit"] == b"deg"
    assert schema.field("ra").metadata[b"ucd"] == b"pos.eq.ra;meta.main"
    assert schema.field(HEALPIX_COLUMN).type == pa.int64()
    assert candidate_schema(pa.int64(), crossmatch=True).names[-3:] == [c.name for c in CROSSMATCH_COLUMNS]
    assert failure_schema(pa.int64()).names == ["object_id", "ra", "dec", "reason", "detail"]


def test_model_score_columns_exist_only_for_several_models():
    assert model_score_column("LensResNet-small v2") == "score_lensresnet_small_v2"
    with pytest.raises(ValueError):
        model_score_column("---")
    single = candidate_schema(pa.int64(), model_names=["default"])
    assert not [name for name in single.names if name.startswith("score_")]
    several = candidate_schema(pa.int64(), model_names=["resnet", "vit-b"])
    at = several.names.index("score")
    assert several.names[at + 1:at + 4] == ["score_resnet", "score_vit_b", "p_survey"]
    with pytest.raises(ValueError, match="same score column"):
        candidate_schema(pa.int64(), model_names=["a-b", "a_b"])


# --- HEALPix ----------------------------------------------------------------------------------------------


def test_healpix_29_matches_reference_values():
    # NESTED order-29 indices of M31, the Orion nebula and Cen A, checked against healpy.
    ra = np.array([10.68470833, 83.82208333, 201.365063])
    dec = np.array([41.26875, -5.39111111, -43.019112])
    expected = [190633513587146697, 1508682038474907582, 3044352322598061019]
    assert healpix_29(ra, dec).tolist() == expected
    assert healpix_29(ra, dec).dtype == np.int64
    assert radec_to_healpix(ra, dec, 0).tolist() == [0, 5, 10]


def test_coarser_orders_are_bit_shifts_of_order_29():
    rng = np.random.default_rng(1)
    ra, dec = rng.uniform(0, 360, 1000), np.degrees(np.arcsin(rng.uniform(-1, 1, 1000)))
    fine = healpix_29(ra, dec)
    for order in (0, 5, 12):
        np.testing.assert_array_equal(degrade(fine, 29, order), radec_to_healpix(ra, dec, order))
    with pytest.raises(ValueError):
        degrade(fine, 5, 6)


def test_healpix_rejects_bad_coordinates():
    with pytest.raises(ValueError, match="finite"):
        healpix_29([np.nan], [0.0])
    with pytest.raises(ValueError):
        healpix_29([0.0], [91.0])
    assert healpix_29([], []).shape == (0,)


def test_coverage_map_contains_its_points_and_not_far_ones():
    ra, dec = np.array([150.0, 150.1]), np.array([2.0, 2.1])
    pixels = coverage(ra, dec, 8)
    assert in_coverage(ra, dec, pixels, 8).all()
    assert not in_coverage([30.0, 150.0], [-40.0, 60.0], pixels, 8).any()
    assert not in_coverage([1.0], [1.0], [], 8).any()
    assert pixel_area_deg2(0) * 12 == pytest.approx(41252.96, rel=1e-5)


# --- readers ----------------------------------------------------------------------------------------------


def test_pandas_and_pyarrow_read_data_and_field_metadata(written):
    path, table = written
    frame = pd.read_parquet(path)
    assert list(frame.columns) == table.column_names and len(frame) == table.num_rows
    assert frame["known_lens_name"].isna().sum() == table.num_rows - 1
    schema = pq.read_schema(path)
    assert schema.field("ra").metadata[b"unit"] == b"deg"
    assert schema.field("known_lens_separation_arcsec").metadata[b"unit"] == b"arcsec"
    assert read_provenance(path) == PROVENANCE


def test_duckdb_queries_the_file_with_sql(written):
    duckdb = pytest.importorskip("duckdb")
    path, table = written
    connection = duckdb.connect()
    rows = connection.execute(
        f"SELECT object_id, ra, known_lens_name FROM read_parquet('{path}') WHERE score > 0.5 ORDER BY object_id"
    ).fetchall()
    frame = table.to_pandas()
    expected = frame[frame["score"] > 0.5].sort_values("object_id")
    assert [row[0] for row in rows] == expected["object_id"].tolist()
    assert [row[1] for row in rows] == pytest.approx(expected["ra"].tolist())
    count, = connection.execute(f"SELECT count(*) FROM '{path}' WHERE known_lens_name IS NULL").fetchone()
    assert count == table.num_rows - 1


def test_astropy_recovers_units_descriptions_ucds_and_provenance(written):
    from astropy import units as u
    from astropy.table import Table

    path, table = written
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "guessing the string length" warnings
        read = Table.read(path)
    assert read.colnames == table.column_names and len(read) == table.num_rows
    assert read["ra"].unit == u.deg and read["dec"].unit == u.deg
    assert read["x_px"].unit == u.pix
    assert read["known_lens_separation_arcsec"].unit == u.arcsec
    assert read["score"].description.startswith("lens probability")
    assert read["ra"].meta["ucd"] == "pos.eq.ra;meta.main"
    assert read.meta["lensfinder.provenance"] == PROVENANCE
    assert read.meta["threshold"] == 0.5
    assert read["tile"].tolist() == table.column("tile").to_pylist()
    np.testing.assert_array_equal(read[HEALPIX_COLUMN], table.column(HEALPIX_COLUMN).to_numpy())


def test_voparquet_header_is_a_valid_votable_with_units_and_ucds(written):
    from astropy.io.votable import parse
    from astropy.io.votable.ucd import check_ucd

    path, table = written
    metadata = pq.read_schema(path).metadata
    assert metadata[VOPARQUET_VERSION_KEY] == b"1.0"
    assert ASTROPY_KEY in metadata
    votable = parse(io.BytesIO(metadata[VOPARQUET_CONTENT_KEY]), verify="exception")
    header = votable.get_first_table()
    fields = {field.name: field for field in header.fields}
    assert list(fields) == table.column_names  # one FIELD per column, in order
    assert str(fields["ra"].unit) == "deg" and fields["ra"].ucd == "pos.eq.ra;meta.main"
    assert fields["dec"].ucd == "pos.eq.dec;meta.main"
    assert fields["object_id"].datatype == "long" and fields["score"].datatype == "float"
    assert fields["tile"].datatype == "char"
    assert "HEALPix" in fields[HEALPIX_COLUMN].description
    for field in header.fields:
        if field.ucd:
            assert check_ucd(field.ucd, check_controlled_vocabulary=True), field.ucd
    params = {param.name: param.value for param in header.params}
    assert params["threshold"] == pytest.approx(0.5)
    assert params["target_prevalence"] == pytest.approx(1e-3)
    assert header.description == "test catalogue"


def test_astropy_voparquet_reader_reads_the_file(written):
    from astropy import units as u
    from astropy.table import Table

    path, table = written
    read = Table.read(path, format="parquet.votable")
    assert len(read) == table.num_rows and read["ra"].unit == u.deg


def test_failure_catalogue_is_readable_too(tmp_path):
    from astropy.table import Table

    failures = pd.DataFrame({"object_id": ["a", "b"], "ra": [1.0, np.nan], "dec": [2.0, np.nan],
                             "reason": ["off_footprint", "invalid_coordinates"], "detail": ["on no tile", None]})
    path = atomic_write_parquet(pa.Table.from_pandas(failures, schema=failure_schema(pa.string()),
                                                     preserve_index=False), tmp_path / "failures.parquet")
    read = Table.read(path)
    assert read["reason"].tolist() == ["off_footprint", "invalid_coordinates"]
    assert pq.read_schema(path).metadata[VOPARQUET_VERSION_KEY] == b"1.0"
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed away
