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
