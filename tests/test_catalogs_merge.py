"""pipeline.merge fills the catalogue's new columns and writes the HATS catalogue for large runs.

Builds a plan and part files by hand, so no survey, model or Dask cluster is needed.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalogs.healpix import healpix_29
from catalogs.io import read_provenance
from catalogs.schema import HEALPIX_COLUMN
from lensnet.metrics import prior_shift
from pipeline.merge import HATS_DIR, merge_outputs
from pipeline.plan import Plan

N_OBJECTS = 300
PROVENANCE = {"model": {"name": "tiny", "threshold": 0.6, "train_prevalence": 0.4}}


def make_inputs(tmp_path, n: int = N_OBJECTS, seed: int = 4):
    """A catalogue of ``n + 2`` objects: ``n`` planned (2 shards, one empty stamp) and 2 off the footprint."""
    rng = np.random.default_rng(seed)
    total = n + 2
    catalog = pd.DataFrame({"id": np.arange(1000, 1000 + total), "ra": rng.uniform(150, 151, total),
                            "dec": rng.uniform(2, 3, total), "mag_r": rng.uniform(18, 24, total)})
    objects = pd.DataFrame({"row": np.arange(n), "object_id": catalog["id"].iloc[:n].to_numpy(),
                            "ra": catalog["ra"].iloc[:n].to_numpy(), "dec": catalog["dec"].iloc[:n].to_numpy(),
                            "tile": "t0", "x_px": rng.uniform(0, 100, n), "y_px": rng.uniform(0, 100, n),
                            "crowded": False})
    objects.index.name = "cutout_index"
    failures = pd.DataFrame({"row": [n, n + 1], "object_id": catalog["id"].iloc[n:].to_numpy(),
                             "ra": catalog["ra"].iloc[n:].to_numpy(), "dec": catalog["dec"].iloc[n:].to_numpy(),
                             "reason": "off_footprint", "detail": "on no tile"})
    half = n // 2
    plan = Plan(objects, failures, [(0, half), (half, n)], {})
    cut_parts, score_parts = [], []
    for shard, (start, stop) in enumerate(plan.shards):
        index = np.arange(start, stop)
        reason = np.full(len(index), None, dtype=object)
        detail = np.full(len(index), None, dtype=object)
        if shard == 0:
            reason[0], detail[0] = "empty_stamp", "a band of the stamp has no finite pixel"
        cut = pa.table({"cutout_index": pa.array(index, pa.int64()),
                        "flags": pa.array(np.zeros(len(index)), pa.int32()), "reason": pa.array(reason, pa.string()), "detail": pa.array(detail, pa.string())})
        usable = index[[r is None for r in reason]]
        score = pa.table({"cutout_index": pa.array(usable, pa.int64()),
                          "logit": pa.array(rng.normal(0, 3, len(usable)), pa.float32())})
        cut_parts.append(str(tmp_path / f"cut-{shard}.parquet"))
        score_parts.append(str(tmp_path / f"score-{shard}.parquet"))
        pq.write_table(cut, cut_parts[-1])
        pq.write_table(score, score_parts[-1])
    return plan, catalog, cut_parts, score_parts


def test_merge_fills_healpix_and_p_survey_and_records_the_prevalences(tmp_path):
    plan, catalog, cut_parts, score_parts = make_inputs(tmp_path)
    out = tmp_path / "out"
    summary = merge_outputs(plan, catalog, cut_parts, score_parts, 0.6, out, PROVENANCE, target_prevalence=2e-3)
    candidates = pd.read_parquet(out / "candidates.parquet")
    assert len(candidates) == N_OBJECTS - 1 and summary["failed"] == 3
    assert candidates.columns[:4].tolist() == ["object_id", "ra", "dec", HEALPIX_COLUMN]
    np.testing.assert_array_equal(candidates[HEALPIX_COLUMN], healpix_29(candidates["ra"], candidates["dec"]))
    probability = 1 / (1 + np.exp(-candidates["logit"].to_numpy(np.float64)))
    np.testing.assert_allclose(candidates["p_survey"], prior_shift(probability, 0.4, 2e-3), rtol=1e-6)
    assert (candidates["p_survey"] <= candidates["score"]).all()  # a rarer class: every probability drops
    assert list(candidates["rank"]) == list(range(1, len(candidates) + 1))
    assert (candidates["is_candidate"] == (candidates["score"] >= 0.6)).all()
    assert summary["train_prevalence"] == 0.4 and summary["target_prevalence"] == 2e-3
    catalogue = read_provenance(out / "candidates.parquet")["catalogue"]
    assert catalogue["target_prevalence"] == 2e-3 and catalogue["train_prevalence"] == 0.4
    assert not (out / HATS_DIR).exists()  # small catalogue: one file is enough
    json.dumps(summary)  # summary.json can hold it


def test_explicit_train_prevalence_wins_over_the_provenance(tmp_path):
    plan, catalog, cut_parts, score_parts = make_inputs(tmp_path)
    out = tmp_path / "out"
    merge_outputs(plan, catalog, cut_parts, score_parts, 0.6, out, PROVENANCE,
                  train_prevalence=2e-3, target_prevalence=2e-3)
    candidates = pd.read_parquet(out / "candidates.parquet")
    np.testing.assert_allclose(candidates["p_survey"], candidates["score"], rtol=1e-6)


def test_large_catalogue_is_also_written_as_hats(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    plan, catalog, cut_parts, score_parts = make_inputs(tmp_path)
    out = tmp_path / "out"
    summary = merge_outputs(plan, catalog, cut_parts, score_parts, 0.6, out, PROVENANCE,
                            hats_min_rows=100, hats_partition_rows=40)
    hats_dir = out / HATS_DIR
    assert (hats_dir / "collection.properties").is_file() and summary["hats_partitions"] >= N_OBJECTS // 40
    assert (hats_dir / "candidates" / "hats.properties").is_file()
    union = duckdb.connect().execute(
        f"SELECT * FROM read_parquet('{hats_dir}/candidates/dataset/Norder=*/Dir=*/Npix=*.parquet', "
        "hive_partitioning = false)"
    ).df().sort_values("rank").reset_index(drop=True)
    single = pd.read_parquet(out / "candidates.parquet")
    pd.testing.assert_frame_equal(union, single, check_dtype=False)
    # A later merge of a catalogue under the limit removes the stale partitioned copy.
    merge_outputs(plan, catalog, cut_parts, score_parts, 0.6, out, PROVENANCE)
    assert not hats_dir.exists()


def test_known_lenses_are_cross_matched_and_reported(tmp_path):
    plan, catalog, cut_parts, score_parts = make_inputs(tmp_path)
    out = tmp_path / "out"
    first = plan.objects.iloc[5]
    known = pd.DataFrame({"name": ["KNOWN1", "AWAY"], "ra": [first["ra"], 20.0], "dec": [first["dec"], -30.0],
                          "grade": ["confident", "probable"]})
    summary = merge_outputs(plan, catalog, cut_parts, score_parts, 0.6, out, PROVENANCE, known_lenses=known)
    candidates = pd.read_parquet(out / "candidates.parquet")
    hit = candidates[candidates["object_id"] == first["object_id"]]
    assert hit["known_lens_name"].tolist() == ["KNOWN1"]
    assert candidates["known_lens_name"].notna().sum() == 1
    report = summary["known_lenses"]
    assert report["in_footprint"] == 1 and report["matched"] == 1
    assert report["above_threshold"] == int(hit["score"].iloc[0] >= 0.6)
    separation = pq.read_schema(out / "candidates.parquet").field("known_lens_separation_arcsec")
    assert separation.metadata[b"unit"] == b"arcsec"
