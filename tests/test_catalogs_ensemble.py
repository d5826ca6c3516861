"""Ensemble scores: mean of probabilities and rank average."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from catalogs.ensemble import combine, combine_columns, mean_probability, normalised_rank, rank_average


def test_single_model_mean_is_the_identity():
    scores = np.array([0.1, 0.9, 0.5, 0.5])
    np.testing.assert_array_equal(mean_probability({"only": scores}), scores)
    np.testing.assert_array_equal(combine([scores]), scores)


def test_single_model_rank_average_is_its_normalised_rank():
    scores = np.array([0.1, 0.9, 0.5, 0.3])
    np.testing.assert_allclose(rank_average([scores]), [0.0, 1.0, 2 / 3, 1 / 3])
    assert np.array_equal(np.argsort(rank_average([scores])), np.argsort(scores))


def test_equal_models_give_back_one_model():
    scores = np.array([0.2, 0.7, 0.4])
    np.testing.assert_allclose(mean_probability([scores, scores, scores]), scores)
    np.testing.assert_allclose(rank_average([scores, scores]), normalised_rank(scores))


def test_mean_of_probabilities():
    np.testing.assert_allclose(mean_probability({"a": [0.2, 1.0], "b": [0.4, 0.0]}), [0.3, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mean_probability([[0.2, 1.2]])


def test_ties_share_the_average_rank():
    np.testing.assert_allclose(normalised_rank([0.5, 0.5, 0.1, 0.9]), [0.5, 0.5, 0.0, 1.0])
    np.testing.assert_allclose(normalised_rank([0.3, 0.3, 0.3]), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(normalised_rank([0.7]), [0.5])


def test_rank_average_ignores_calibration():
    # Model b is squeezed near 0 but orders the objects like a reversed a: every object ties.
    a = np.array([0.1, 0.5, 0.9])
    b = np.array([0.003, 0.002, 0.001])
    np.testing.assert_allclose(rank_average([a, b]), [0.5, 0.5, 0.5])
    assert mean_probability([a, b])[2] > mean_probability([a, b])[0]  # the mean follows a


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        combine([[0.1, 0.2], [0.3]])
    with pytest.raises(ValueError, match="finite"):
        rank_average([[0.1, np.nan]])
    with pytest.raises(ValueError, match="unknown ensemble method"):
        combine([[0.1]], method="median")
    with pytest.raises(ValueError):
        combine(np.empty((0, 3)))
    assert combine([[], []]).shape == (0,)


def test_combine_columns_keeps_the_frame_index():
    frame = pd.DataFrame({"score_a": [0.2, 0.8], "score_b": [0.4, 0.6]}, index=[10, 20])
    mean = combine_columns(frame, ["score_a", "score_b"])
    assert mean.index.tolist() == [10, 20] and mean.tolist() == pytest.approx([0.3, 0.7])
    assert combine_columns(frame, ["score_a", "score_b"], "rank").tolist() == pytest.approx([0.0, 1.0])
    with pytest.raises(KeyError):
        combine_columns(frame, ["score_c"])


# ----------------------------------------------------------------------------- the Ensemble of a run


def _member(name, threshold=0.5, prevalence=0.5, bands=("g", "r", "i"), size=32):
    from pathlib import Path

    from catalogs.ensemble import Member
    from lensnet.checkpoint import ModelConfig

    config = ModelConfig(architecture="lensresnet-tiny", bands=list(bands), stamp_size_px=size, pixel_scale_arcsec=0.2,
                         normalisation="asinh_stretch",
                         threshold=threshold, train_prevalence=prevalence, name=name)
    return Member(name, Path(f"/models/{name}"), config)


def test_ensemble_calibration_is_the_members_mean_and_one_model_keeps_its_own():
    from catalogs.ensemble import Ensemble

    one = Ensemble((_member("a", 0.7, 0.1),))
    assert not one.averaged and one.member_names == [] and one.names == ["a"]
    assert (one.calibration().threshold, one.calibration().train_prevalence) == (0.7, 0.1)
    both = Ensemble((_member("a", 0.7, 0.1), _member("b", 0.5, 0.3)))
    assert both.averaged and both.member_names == ["a", "b"]
    assert both.calibration().threshold == pytest.approx(0.6)
    assert both.calibration().train_prevalence == pytest.approx(0.2)
    assert [name for name, _, _ in both] == ["a", "b"] and both[0].name == "a" and len(both) == 2
    assert "a, b" in both.describe_score()


@pytest.mark.parametrize("members, message", [
    ((), "empty"),
    (("a", "a"), "share a name"),
    (("a", "wide"), "must share bands, stamp size and pixel scale"),
])
def test_ensembles_that_cannot_score_one_store_are_refused(members, message):
    from catalogs.ensemble import Ensemble, EnsembleError

    built = [_member(name, size=64) if name == "wide" else _member(name) for name in members]
    with pytest.raises(EnsembleError, match=message):
        Ensemble(tuple(built))


def test_combined_logits_are_the_logit_of_the_mean_probability():
    from catalogs.ensemble import combine_logits

    rng = np.random.default_rng(1)
    logits = {"a": rng.normal(0, 4, 50).astype(np.float32), "b": rng.normal(0, 4, 50).astype(np.float32)}
    combined = combine_logits(logits)
    assert combined.dtype == np.float32
    probability = 1 / (1 + np.exp(-combined.astype(np.float64)))
    np.testing.assert_allclose(probability, mean_probability({name: 1 / (1 + np.exp(-v.astype(np.float64)))
                                                              for name, v in logits.items()}), rtol=1e-6)
    np.testing.assert_array_equal(combine_logits({"a": logits["a"]}), logits["a"])
    # confident members do not overflow
    assert np.isfinite(combine_logits({"a": np.array([200.0, -200.0]), "b": np.array([150.0, -150.0])})).all()
