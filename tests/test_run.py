"""End-to-end runs of the pipeline on a tiny mock survey."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import xarray as xr

from catalogs.io import read_provenance
from lensnet.checkpoint import load_model
from pipeline import store
from pipeline.config import Settings, SettingsError
from lensnet.predict import score_stamps
from pipeline.resume import ResumeError
from pipeline.run import run_with_client


def settings_for(survey, model, out, **overrides) -> Settings:
    values = dict(images=survey.image_pattern, catalog=str(survey.catalog_path), bands=list(survey.bands),
                  out=str(out), model=str(model), progress=False, shard_size=16, batch_size=8,
                  threads_per_worker=1)
    values.update(overrides)
    return Settings(**values).validate()


@pytest.fixture(scope="module")
def first_run(tiny_survey, tiny_model, client, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    return run_with_client(settings_for(tiny_survey, tiny_model, out), client, log=lambda _: None)


def test_catalogue_is_ranked_and_accounts_for_every_object(first_run, tiny_survey):
    candidates = pd.read_parquet(first_run.candidates)
    failures = pd.read_parquet(first_run.failures)
    catalog = pd.read_parquet(tiny_survey.catalog_path)

    assert len(candidates) + len(failures) == len(catalog)
    assert set(candidates["object_id"]) | set(failures["object_id"]) == set(catalog["id"])
    assert not set(candidates["object_id"]) & set(failures["object_id"])
    assert (failures["reason"] == "off_footprint").sum() == 3
    assert list(candidates["rank"]) == list(range(1, len(candidates) + 1))
    assert (np.diff(candidates["logit"].to_numpy()) <= 0).all()
    assert candidates["score"].between(0, 1).all()
    np.testing.assert_allclose(candidates["score"], 1 / (1 + np.exp(-candidates["logit"].astype(float))), rtol=1e-6)
    for column in ("object_id", "ra", "dec", "tile", "score", "rank", "flags", "cutout_index", "mag_r"):
        assert column in candidates
    merged = candidates.merge(catalog, left_on="object_id", right_on="id", suffixes=("", "_in"))
    np.testing.assert_array_equal(merged["ra"], merged["ra_in"])
    np.testing.assert_array_equal(merged["mag_r"], merged["mag_r_in"])
    summary = json.loads((first_run.out / "summary.json").read_text())
    assert summary["scored"] == len(candidates) and summary["failed"] == len(failures)


def test_catalogue_carries_units_and_provenance(first_run, tiny_model):
    schema = pq.read_schema(first_run.candidates)
    assert schema.field("ra").metadata[b"unit"] == b"deg"
    provenance = read_provenance(first_run.candidates)
    assert provenance["model"]["weights_sha256"] == load_model(tiny_model).weights_sha256
    assert provenance["preprocessing"]["normalisation"] == "asinh_stretch"
    for key in ("code_version", "command_line", "inputs", "created_utc", "settings"):
        assert key in provenance


def test_cutout_store_is_xarray_readable_and_indexed_by_the_catalogue(first_run):
    candidates = pd.read_parquet(first_run.candidates)
    dataset = xr.open_zarr(first_run.store, consolidated=False)
    assert dataset["stamps"].dims == ("object", "band", "y", "x")
    assert list(dataset["band"].values) == ["g", "r", "i"]
    row = candidates.iloc[0]
    slot = dataset.isel(object=int(row["cutout_index"]))
    assert slot["object_id"].values.item() == row["object_id"]
    assert slot["tile"].values.item() == row["tile"]
    assert slot["ra"].values.item() == row["ra"]


def test_sharded_dask_scores_equal_a_single_process_pass(first_run, tiny_model):
    candidates = pd.read_parquet(first_run.candidates).sort_values("cutout_index")
    stamps = store.read_stamps(first_run.store, 0, int(candidates["cutout_index"].max()) + 1)
    stamps = stamps[candidates["cutout_index"].to_numpy()]
    single = score_stamps(load_model(tiny_model), stamps, batch_size=1000)
    np.testing.assert_allclose(candidates["logit"].to_numpy(), single, rtol=1e-4, atol=1e-5)


def test_resumed_run_equals_uninterrupted_run(first_run, tiny_survey, tiny_model, client, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(first_run.out, out)
    # Pretend the run died: some shards lost their score, one lost its cutouts too.
    for part in sorted((out / "_progress" / "score").glob("*.parquet"))[1:3]:
        part.unlink()
    sorted((out / "_progress" / "cut").glob("*.parquet"))[2].unlink()
    (out / "candidates.parquet").unlink()
    result = run_with_client(settings_for(tiny_survey, tiny_model, out), client, log=lambda _: None)
    assert result.summary["shards_resumed"] == result.summary["shards"] - 2
    pd.testing.assert_frame_equal(pd.read_parquet(result.candidates), pd.read_parquet(first_run.candidates))
    pd.testing.assert_frame_equal(pd.read_parquet(result.failures), pd.read_parquet(first_run.failures))


def test_other_settings_refuse_to_resume_unless_forced(first_run, tiny_survey, tiny_model, client, tmp_path):
    out = tmp_path / "changed"
    shutil.copytree(first_run.out, out)
    with pytest.raises(ResumeError, match="shard_size"):
        run_with_client(settings_for(tiny_survey, tiny_model, out, shard_size=32), client, log=lambda _: None)
    result = run_with_client(settings_for(tiny_survey, tiny_model, out, shard_size=32, force=True), client,
                             log=lambda _: None)
    pd.testing.assert_frame_equal(pd.read_parquet(result.candidates).drop(columns="cutout_index"),
                                  pd.read_parquet(first_run.candidates).drop(columns="cutout_index"),
                                  check_exact=False, rtol=1e-5)


def test_known_lenses_are_crossmatched_and_scores_recalibrated(tiny_survey, tiny_model, client, tmp_path):
    catalog = pd.read_parquet(tiny_survey.catalog_path)
    known = catalog.iloc[[3, 7]]
    lenscat_csv = tmp_path / "known.csv"
    pd.DataFrame({"name": ["KNOWN-A", "KNOWN-B"], "RA [deg]": known["ra"].to_numpy() + 0.3 / 3600,
                  "DEC [deg]": known["dec"].to_numpy(), "grading": ["confident", "probable"]}).to_csv(
        lenscat_csv, index=False)
    result = run_with_client(
        settings_for(tiny_survey, tiny_model, tmp_path / "out", known_lenses=str(lenscat_csv), target_prevalence=1e-4),
        client, log=lambda _: None)
    candidates = pd.read_parquet(result.candidates).set_index("object_id")
    matched = candidates.loc[known["id"].to_numpy()]
    assert list(matched["known_lens_name"]) == ["KNOWN-A", "KNOWN-B"]
    np.testing.assert_allclose(matched["known_lens_separation_arcsec"], 0.3 * np.cos(np.radians(known["dec"])),
                               rtol=1e-3)
    assert candidates["known_lens_name"].notna().sum() == 2
    # At a prevalence far below the training one, recalibrated probabilities shrink, keeping the order.
    assert (candidates["p_survey"] <= candidates["score"] + 1e-7).all()
    order = candidates.sort_values("rank")
    assert (np.diff(order["p_survey"].to_numpy()) <= 1e-12).all()


@pytest.fixture(scope="module")
def second_model(tmp_path_factory):
    import torch

    from lensnet.checkpoint import ModelConfig, save_checkpoint
    from tests.conftest import TINY_BANDS, TINY_STAMP_PX

    torch.manual_seed(1)
    config = ModelConfig(architecture="lensresnet-tiny", bands=TINY_BANDS, stamp_size_px=TINY_STAMP_PX,
                         pixel_scale_arcsec=0.2, normalisation="zscale", threshold=0.7, name="second")
    return save_checkpoint(config.build().eval(), config, tmp_path_factory.mktemp("second"))


def test_an_ensemble_scores_each_model_and_averages_their_probabilities(
        first_run, tiny_survey, tiny_model, second_model, client, tmp_path):
    single_second = run_with_client(settings_for(tiny_survey, second_model, tmp_path / "second"), client,
                                    log=lambda _: None)
    ensemble = run_with_client(settings_for(tiny_survey, f"{tiny_model},{second_model}", tmp_path / "both"), client,
                               log=lambda _: None)
    both = pd.read_parquet(ensemble.candidates).set_index("object_id")
    first = pd.read_parquet(first_run.candidates).set_index("object_id").loc[both.index]
    second = pd.read_parquet(single_second.candidates).set_index("object_id").loc[both.index]
    np.testing.assert_allclose(both["score_tiny_test"], first["score"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both["score_second"], second["score"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both["score"], (first["score"] + second["score"]) / 2, rtol=1e-4, atol=1e-6)
    assert list(both["rank"].sort_values()) == list(range(1, len(both) + 1))
    provenance = read_provenance(ensemble.candidates)
    assert [model["name"] for model in provenance["models"]] == ["tiny-test", "second"]
    assert provenance["catalogue"]["threshold"] == pytest.approx((0.5 + 0.7) / 2)


def test_stamps_are_stored_uncompressed_by_default_and_zstd_on_request(first_run, tiny_survey, tiny_model, client,
                                                                       tmp_path):
    import zarr

    assert zarr.open_group(str(first_run.store), mode="r")["stamps"].compressors == ()
    result = run_with_client(settings_for(tiny_survey, tiny_model, tmp_path / "zstd", stamp_compression="zstd"),
                             client, log=lambda _: None)
    codecs = zarr.open_group(str(result.store), mode="r")["stamps"].compressors
    assert [type(codec).__name__ for codec in codecs] == ["ZstdCodec"]
    candidates = pd.read_parquet(first_run.candidates).sort_values("cutout_index")
    np.testing.assert_array_equal(store.read_stamps(result.store, 0, len(candidates)),
                                  store.read_stamps(first_run.store, 0, len(candidates)))
    pd.testing.assert_frame_equal(pd.read_parquet(result.candidates), pd.read_parquet(first_run.candidates))
    with pytest.raises(SettingsError, match="stamp-compression"):
        settings_for(tiny_survey, tiny_model, tmp_path / "bad", stamp_compression="gzip")


def test_summary_records_the_phases_of_the_run(first_run):
    summary = first_run.summary
    assert json.loads(first_run.out.joinpath("summary.json").read_text())["phases_s"] == summary["phases_s"]
    phases = summary["phases_s"]
    assert {"create_store", "register_plugin", "compute", "performance_report", "merge"} <= set(phases)
    assert all(seconds >= 0 for seconds in phases.values())
    assert sum(phases.values()) <= summary["seconds"] + 0.01
