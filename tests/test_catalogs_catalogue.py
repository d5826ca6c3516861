"""catalogs.catalogue builds the ranked catalogue from scored objects alone: no part files, no Dask."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from catalogs.catalogue import CatalogueOptions, build_catalogue
from catalogs.schema import HEALPIX_COLUMN, model_score_column


def scored_objects(n: int = 40, seed: int = 2, members=()):
    rng = np.random.default_rng(seed)
    catalog = pd.DataFrame({"id": np.arange(500, 500 + n + 1), "ra": rng.uniform(10, 11, n + 1),
                            "dec": rng.uniform(-1, 1, n + 1), "mag_r": rng.uniform(18, 24, n + 1),
                            "score": rng.uniform(0, 1, n + 1)})  # an input column named like a core one
    scored = pd.DataFrame({"row": np.arange(n), "object_id": catalog["id"].iloc[:n].to_numpy(),
                           "ra": catalog["ra"].iloc[:n].to_numpy(), "dec": catalog["dec"].iloc[:n].to_numpy(),
                           "tile": "t0", "x_px": rng.uniform(0, 99, n), "y_px": rng.uniform(0, 99, n),
                           "flags": np.where(np.arange(n) % 7 == 0, 4, 0),
                           "logit": rng.normal(0, 3, n).astype(np.float32)},
                          index=pd.Index(np.arange(n) + 100, name="cutout_index"))
    for name in members:
        scored[f"logit:{name}"] = rng.normal(0, 3, n).astype(np.float32)
    failed = pd.DataFrame({"row": [n], "object_id": [int(catalog["id"].iloc[n])], "ra": [catalog["ra"].iloc[n]],
                           "dec": [catalog["dec"].iloc[n]], "reason": ["off_footprint"], "detail": ["on no tile"]})
    return scored, failed, catalog


def test_catalogue_is_ranked_by_logit_with_counts_and_calibration():
    scored, failed, catalog = scored_objects()
    options = CatalogueOptions(threshold=0.7, target_prevalence=1e-3)
    built = build_catalogue(scored, failed, catalog, {"model": {"train_prevalence": 0.25}}, options)
    candidates = built.candidates.to_pandas()
    assert candidates.columns[:4].tolist() == ["object_id", "ra", "dec", HEALPIX_COLUMN]
    assert list(candidates["rank"]) == list(range(1, len(scored) + 1))
    assert (np.diff(candidates["logit"].to_numpy()) <= 0).all()
    assert (candidates["is_candidate"] == (candidates["score"] >= 0.7)).all()
    assert "input_score" in candidates and "mag_r" in candidates
    assert set(candidates["cutout_index"]) == set(scored.index)
    assert built.failures.to_pandas()["reason"].tolist() == ["off_footprint"]
    assert built.counts == {"catalogue_objects": len(catalog), "scored": len(scored), "failed": 1,
                            "failures_by_reason": {"off_footprint": 1},
                            "candidates_above_threshold": int((candidates["score"] >= 0.7).sum()),
                            "flagged": int((scored["flags"] != 0).sum())}
    assert built.calibration == {"threshold": 0.7, "train_prevalence": 0.25, "target_prevalence": 1e-3}
    assert built.provenance["catalogue"]["score"] == "sigmoid(logit) of the one model"
    assert built.known_lenses is None


def test_an_ensembles_members_get_their_own_score_columns():
    scored, failed, catalog = scored_objects(members=("a", "b"))
    built = build_catalogue(scored, failed, catalog, {}, CatalogueOptions(threshold=0.5, model_names=("a", "b")))
    candidates = built.candidates.to_pandas().set_index("cutout_index")
    for name in ("a", "b"):
        expected = 1 / (1 + np.exp(-scored[f"logit:{name}"].astype(np.float64)))
        np.testing.assert_allclose(candidates[model_score_column(name)].sort_index(), expected.sort_index(),
                                   rtol=1e-6)
    assert built.provenance["catalogue"]["score"] == "mean probability of the models a, b"
    assert built.calibration["train_prevalence"] == 0.5  # nothing recorded: balanced training sets


def test_options_of_an_ensemble_take_its_calibration():
    from pathlib import Path

    from catalogs.ensemble import Ensemble, Member
    from lensnet.checkpoint import ModelConfig

    def member(name, threshold, prevalence):
        return Member(name, Path(name), ModelConfig(architecture="lensresnet-tiny", bands=["g"], stamp_size_px=8,
                                                    pixel_scale_arcsec=0.2, normalisation="asinh_stretch",
                                                    threshold=threshold, train_prevalence=prevalence))

    options = CatalogueOptions.for_ensemble(Ensemble((member("a", 0.4, 0.1), member("b", 0.6, 0.3))),
                                            target_prevalence=2e-3)
    assert options.threshold == pytest.approx(0.5) and options.train_prevalence == pytest.approx(0.2)
    assert list(options.model_names) == ["a", "b"] and options.target_prevalence == 2e-3
    assert options.member_logit_columns() == ["logit:a", "logit:b"]
