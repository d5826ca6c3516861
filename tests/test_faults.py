"""Messy inputs and failing machines: nothing is lost, nothing changes."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from distributed import Client, LocalCluster

from catalogs.flags import Flag
from pipeline.config import Settings
from pipeline.mock import make_mock_survey
from pipeline.run import run_with_client
from tests.conftest import TINY_STAMP_PX


def settings_for(survey, model, out, **overrides) -> Settings:
    values = dict(images=survey.image_pattern, catalog=str(survey.catalog_path), bands=list(survey.bands),
                  out=str(out), model=str(model), progress=False, shard_size=16, batch_size=16, threads_per_worker=1)
    values.update(overrides)
    return Settings(**values).validate()


@pytest.fixture(scope="module")
def messy_survey(tmp_path_factory):
    """Four tiles: one truncated on disk, one with a NaN strip; plus off-footprint rows."""
    root = tmp_path_factory.mktemp("messy")
    survey = make_mock_survey(root, n_objects=80, lens_fraction=0.2, seed=11, tiles_x=2, tiles_y=2,
                              tile_size_px=256, overlap_px=40, n_off_footprint=4)
    truncated = root / "tiles" / f"{survey.tiles[0]}_r.fits"
    raw = truncated.read_bytes()
    truncated.write_bytes(raw[: len(raw) // 2])  # the header survives, the data do not
    with fits.open(root / "tiles" / f"{survey.tiles[1]}_g.fits", mode="update") as hdul:
        hdul[0].data[100:140, :] = np.nan  # a bad strip 40 rows high, wider than a stamp is tall
    return survey


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_accounting_holds_with_a_truncated_tile_a_nan_strip_and_off_footprint_objects(
        messy_survey, tiny_model, client, tmp_path):
    result = run_with_client(settings_for(messy_survey, tiny_model, tmp_path / "out"), client, log=lambda _: None)
    candidates = pd.read_parquet(result.candidates)
    failures = pd.read_parquet(result.failures)
    catalog = pd.read_parquet(messy_survey.catalog_path)

    assert len(candidates) + len(failures) == len(catalog)
    assert set(candidates["object_id"]).isdisjoint(failures["object_id"])
    reasons = failures["reason"].value_counts()
    assert reasons["off_footprint"] == 4
    assert reasons["unreadable_tile"] > 0
    # Only the truncated tile's own objects fail for it, and the reason names the file.
    unreadable = failures[failures["reason"] == "unreadable_tile"]
    assert unreadable["detail"].str.contains(f"{messy_survey.tiles[0]}_r.fits").all()
    assert messy_survey.tiles[0] not in set(candidates["tile"])
    # The NaN strip: stamps crossing it are flagged, stamps inside it are empty in g.
    in_strip_tile = candidates[candidates["tile"] == messy_survey.tiles[1]]
    half = TINY_STAMP_PX // 2 - 1  # a pixel inside the exact boundary, whatever the rounding
    crossing = in_strip_tile[(in_strip_tile["y_px"] > 100 - half) & (in_strip_tile["y_px"] < 140 + half)]
    assert len(crossing) > 0
    assert ((crossing["flags"] & int(Flag.BAD_PIXELS)) != 0).all()
    assert np.isfinite(candidates["score"]).all()
    summary = result.summary
    assert summary["scored"] + summary["failed"] == summary["catalogue_objects"] == len(catalog)


def test_a_worker_killed_mid_run_changes_nothing(tiny_survey, tiny_model, client, tmp_path):
    reference = run_with_client(settings_for(tiny_survey, tiny_model, tmp_path / "reference", shard_size=4),
                                client, log=lambda _: None)
    out = tmp_path / "killed"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as own_client:
        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.setdefault("result", run_with_client(
            settings_for(tiny_survey, tiny_model, out, shard_size=4), own_client, log=lambda _: None)))
        runner.start()
        score_parts = out / "_progress" / "score"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(score_parts.glob("*.parquet"))) < 2:
            time.sleep(0.005)
        done_at_kill = len(list(score_parts.glob("*.parquet")))
        victim = next(iter(own_client.run(os.getpid).values()))
        os.kill(victim, signal.SIGKILL)
        runner.join(timeout=300)
        assert not runner.is_alive()
    total = reference.summary["shards"]
    assert 0 < done_at_kill < total, "the kill must land while shards remain"
    pd.testing.assert_frame_equal(pd.read_parquet(outcome["result"].candidates), pd.read_parquet(reference.candidates))
    shutil.rmtree(out)


def test_preselection_rejects_objects_into_the_failure_list(tiny_survey, tiny_model, client, tmp_path):
    catalog = pd.read_parquet(tiny_survey.catalog_path)
    cut = float(np.nanmedian(catalog["mag_r"]))
    result = run_with_client(settings_for(tiny_survey, tiny_model, tmp_path / "out", where=f"mag_r < {cut}"),
                             client, log=lambda _: None)
    candidates = pd.read_parquet(result.candidates)
    failures = pd.read_parquet(result.failures)
    assert (candidates["mag_r"] < cut).all()
    rejected = failures[failures["reason"] == "not_selected"]
    assert set(rejected["object_id"]) == set(catalog.loc[~(catalog["mag_r"] < cut), "id"])
    assert len(candidates) + len(failures) == len(catalog)


def test_a_bad_preselection_is_a_clear_error(tiny_survey, tiny_model, client, tmp_path):
    from pipeline.config import SettingsError

    with pytest.raises(SettingsError, match="magnitude"):
        run_with_client(settings_for(tiny_survey, tiny_model, tmp_path / "out", where="magnitude < 3"), client)
