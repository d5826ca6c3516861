"""Cross-matching with known lenses, on synthetic catalogues (no network, lenscat optional)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from catalogs.crossmatch import crossmatch, known_lens_report, load_known_lenses

ARCSEC_DEG = 1 / 3600


def write_lenscat_csv(path, rows) -> None:
    """A CSV in lenscat's own format (its column names)."""
    frame = pd.DataFrame(rows, columns=["name", "RA [deg]", "DEC [deg]", "zlens", "type", "grading", "ref"])
    frame.to_csv(path, index=False)


@pytest.fixture
def known(tmp_path):
    path = tmp_path / "known.csv"
    write_lenscat_csv(path, [
        ("NEAR", 150.0 + 1.0 * ARCSEC_DEG, 2.0, "0.5", "galaxy", "confident", "ref1"),  # 1" from object 0
        ("FAR", 150.1, 2.0 + 5.0 * ARCSEC_DEG, "-", "galaxy", "probable", "ref2"),  # 5" from object 1
        ("CLOSE", 150.2, 2.2 + 0.3 * ARCSEC_DEG, "-", "galaxy", "probable", "ref3"),  # 0.3" from object 2
        ("ALSO_CLOSE", 150.2, 2.2 + 1.5 * ARCSEC_DEG, "-", "galaxy", "confident", "ref4"),  # 1.5" from object 2
        ("ELSEWHERE", 30.0, -40.0, "-", "cluster", "confident", "ref5"),  # outside the footprint
    ])
    return load_known_lenses(path)


@pytest.fixture
def candidates():
    # A dense 0.5 x 0.5 deg field (the footprint) with three objects near known lenses.
    rng = np.random.default_rng(0)
    ra = np.concatenate([[150.0, 150.1, 150.2], rng.uniform(149.9, 150.4, 400)])
    dec = np.concatenate([[2.0, 2.0, 2.2], rng.uniform(1.9, 2.4, 400)])
    score = np.concatenate([[0.95, 0.99, 0.2], np.full(400, 0.01)])
    return pd.DataFrame({"object_id": np.arange(len(ra)), "ra": ra, "dec": dec, "score": score},
                        index=np.arange(len(ra)) + 100)


def test_load_known_lenses_renames_lenscat_columns(known):
    assert {"name", "ra", "dec", "grade", "type", "zlens", "ref"} <= set(known.columns)
    assert known["ra"].dtype == np.float64 and len(known) == 5


def test_load_known_lenses_rejects_a_file_without_positions(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"name": ["x"], "grading": ["confident"]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="lacks"):
        load_known_lenses(path)


def test_crossmatch_adds_the_nearest_known_lens_within_the_radius(candidates, known):
    matched = crossmatch(candidates, known, radius_arcsec=2.0)
    assert "known_lens_name" not in candidates  # the input is left alone
    assert matched.index.equals(candidates.index)
    first = matched.iloc[:3]
    assert first["known_lens_name"].tolist() == ["NEAR", None, "CLOSE"]  # FAR is beyond 2", CLOSE beats ALSO_CLOSE
    assert first["known_lens_grade"].tolist() == ["confident", None, "probable"]
    np.testing.assert_allclose(first["known_lens_separation_arcsec"].to_numpy()[[0, 2]], [1.0, 0.3], atol=1e-3)
    assert np.isnan(first["known_lens_separation_arcsec"].iloc[1])
    assert matched["known_lens_name"].iloc[3:].isna().all()
    assert crossmatch(candidates, known, radius_arcsec=6.0)["known_lens_name"].iloc[1] == "FAR"


def test_crossmatch_with_empty_catalogues(candidates, known):
    assert crossmatch(candidates, known.iloc[:0])["known_lens_name"].isna().all()
    assert len(crossmatch(candidates.iloc[:0], known)) == 0
    with pytest.raises(ValueError):
        crossmatch(candidates, known, radius_arcsec=0)


def test_known_lens_report_counts_footprint_matches_and_recoveries(candidates, known):
    report = known_lens_report(candidates, known, threshold=0.9, radius_arcsec=2.0, footprint_order=8)
    assert report.in_footprint == 4  # ELSEWHERE is not in the field
    assert report.matched == 3  # NEAR -> 0, CLOSE -> 2, ALSO_CLOSE -> 2; FAR is 5" from everything
    assert report.above_threshold == 1  # only object 0 (0.95) of the matched ones is above 0.9
    assert report.recovered == ["NEAR"]
    assert report.by_grade["confident"] == {"in_footprint": 2, "matched": 2, "above_threshold": 1}
    assert report.by_grade["probable"] == {"in_footprint": 2, "matched": 1, "above_threshold": 0}
    assert report.footprint_area_deg2 > 0.2
    assert report.to_dict()["threshold"] == 0.9


@pytest.mark.skipif(importlib.util.find_spec("lenscat") is None, reason="lenscat is not installed")
def test_the_shipped_lenscat_catalogue_loads():
    lenses = load_known_lenses()
    assert len(lenses) > 30_000
    assert lenses["ra"].between(0, 360).all() and lenses["dec"].between(-90, 90).all()
    assert {"confident", "probable"} <= set(lenses["grade"])
