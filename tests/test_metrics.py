"""Tests for lensnet.metrics: hand-worked cases, ties, agreement with scikit-learn."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from astropy.stats import binom_conf_interval
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn import metrics as skm

from lensnet import metrics as m

# --------------------------------------------------------------------------------------
# Hand-worked cases
# --------------------------------------------------------------------------------------

# Four objects, no ties.
LABELS_A = np.array([1, 0, 1, 0])
SCORES_A = np.array([0.9, 0.8, 0.7, 0.1])

# Ties: the 0.8 group holds a lens and a non-lens, the 0.3 group a lens and a non-lens.
LABELS_T = np.array([1, 1, 0, 0, 1])
SCORES_T = np.array([0.9, 0.8, 0.8, 0.3, 0.3])


def test_roc_curve_hand_worked() -> None:
    fpr, tpr, thresholds = m.roc_curve(LABELS_A, SCORES_A)
    np.testing.assert_array_equal(fpr, [0.0, 0.0, 0.5, 0.5, 1.0])
    np.testing.assert_array_equal(tpr, [0.0, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.9, 0.8, 0.7, 0.1])


def test_roc_curve_ties_give_one_point_per_distinct_score() -> None:
    fpr, tpr, thresholds = m.roc_curve(LABELS_T, SCORES_T)
    np.testing.assert_array_equal(thresholds, [np.inf, 0.9, 0.8, 0.3])
    np.testing.assert_allclose(fpr, [0.0, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(tpr, [0.0, 1 / 3, 2 / 3, 1.0])


def test_auroc_and_ap_hand_worked() -> None:
    # Pairs (lens, non-lens) ranked correctly: 0.9 beats both, 0.7 beats 0.1 -> 3 of 4.
    assert m.auroc(LABELS_A, SCORES_A) == 0.75
    # AP: recall 1/2 at precision 1 (t = 0.9), recall 1 at precision 2/3 (t = 0.7).
    expected = 0.5 * 1.0 + 0.5 * 2 / 3
    assert m.average_precision(LABELS_A, SCORES_A) == pytest.approx(expected, abs=1e-15)


def test_auroc_with_ties_counts_half() -> None:
    # Lens 0.9: beats both (2). Lens 0.8: ties 0.8 (1/2), beats 0.3 (1).
    # Lens 0.3: loses to 0.8 (0), ties 0.3 (1/2). Total 4 of 6 pairs.
    assert m.auroc(LABELS_T, SCORES_T) == pytest.approx(4 / 6, abs=1e-15)


def test_all_equal_scores() -> None:
    labels = np.array([1, 0, 1, 0, 0])
    scores = np.full(5, 0.5)
    assert m.auroc(labels, scores) == 0.5
    assert m.average_precision(labels, scores) == pytest.approx(0.4)  # the prevalence
    fpr, tpr, thresholds = m.roc_curve(labels, scores)
    np.testing.assert_array_equal(fpr, [0.0, 1.0])
    np.testing.assert_array_equal(tpr, [0.0, 1.0])
    # The single group holds 3 non-lenses: it cannot be split.
    assert m.tpr_at_fp(labels, scores, 0) == 0.0
    assert m.tpr_at_fp(labels, scores, 2) == 0.0
    assert m.tpr_at_fp(labels, scores, 3) == 1.0


def test_tpr_at_fp_with_ties() -> None:
    # Groups: 0.9 (TP 1, FP 0), 0.8 (TP 2, FP 1), 0.3 (TP 3, FP 2).
    assert m.tpr_at_fp(LABELS_T, SCORES_T, 0) == pytest.approx(1 / 3)
    assert m.tpr_at_fp(LABELS_T, SCORES_T, 1) == pytest.approx(2 / 3)
    assert m.tpr_at_fp(LABELS_T, SCORES_T, 2) == 1.0
    # The top-scoring group contains a non-lens: TPR0 is 0.
    assert m.tpr_at_fp([1, 0, 1], [0.9, 0.9, 0.2], 0) == 0.0


def test_tpr10_hand_worked() -> None:
    # 4 lenses at the top, then 10 non-lenses, a lens, 2 non-lenses and a last lens.
    labels = np.array([1] * 4 + [0] * 10 + [1] + [0] * 2 + [1])
    scores = np.linspace(1.0, 0.0, labels.size)
    assert m.tpr_at_fp(labels, scores, 0) == pytest.approx(4 / 6)
    assert m.tpr_at_fp(labels, scores, 10) == pytest.approx(5 / 6)
    assert m.tpr_at_fp(labels, scores, 11) == pytest.approx(5 / 6)
    assert m.tpr_at_fp(labels, scores, 12) == 1.0


def _tpr0_on_grid(labels: np.ndarray, scores: np.ndarray, n_grid: int = 1001) -> float:
    """TPR0 as computed on a fixed threshold grid (the approach this module avoids)."""
    best = 0.0
    for threshold in np.linspace(0.0, 1.0, n_grid):
        selected = scores >= threshold
        if not np.any(selected & (labels == 0)):
            best = max(best, np.count_nonzero(selected & (labels == 1)) / np.count_nonzero(labels))
    return best


def test_tpr0_exact_where_a_threshold_grid_fails() -> None:
    # The best lens (0.9999) and the best non-lens (0.9995) fall between the last two grid
    # thresholds 0.999 and 1.0: the grid sees either both or neither and reports TPR0 = 0.
    labels = np.array([1, 0, 1, 0, 0])
    scores = np.array([0.9999, 0.9995, 0.99, 0.5, 0.1])
    assert _tpr0_on_grid(labels, scores) == 0.0
    assert m.tpr_at_fp(labels, scores, 0) == 0.5


def test_fbeta_hand_worked() -> None:
    labels = np.array([1, 1, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # beta = 1: F1 at t = 0.9, 0.8, 0.7, 0.6 is 1/2, 4/5, 2/3, 6/7.
    fbeta, thresholds = m.fbeta_curve(labels, scores, 1.0)
    np.testing.assert_allclose(fbeta, [1 / 2, 4 / 5, 2 / 3, 6 / 7])
    np.testing.assert_array_equal(thresholds, scores)
    assert m.max_fbeta(labels, scores, 1.0) == (pytest.approx(6 / 7), 0.6)
    # beta^2 = 0.001 (Bom et al.) favours purity: the best cut keeps the two pure lenses.
    best, threshold = m.max_fbeta(labels, scores, m.BETA_BOM)
    assert threshold == 0.8
    assert best == pytest.approx(1.001 * (2 / 3) / (0.001 + 2 / 3))
    assert m.max_fbeta(labels, scores, m.BETA_WILDE)[1] == 0.8


def test_max_fbeta_prefers_highest_threshold_on_ties() -> None:
    labels = np.array([1, 0, 0, 1])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # F1 = 2 TP / (2 TP + FN + FP): 2/3, 2/4, 2/5, then 4/6 = 2/3 again at t = 0.6.
    fbeta, _ = m.fbeta_curve(labels, scores, 1.0)
    np.testing.assert_allclose(fbeta, [2 / 3, 1 / 2, 2 / 5, 2 / 3])
    assert m.max_fbeta(labels, scores, 1.0)[1] == 0.9


def test_threshold_at_fpr_hand_worked() -> None:
    # 100 non-lenses scored 0.00..0.99 and 5 lenses scored 1: 1 per cent admits one
    # non-lens, so the threshold is the top non-lens score 0.99.
    negatives = np.arange(100) / 100
    labels = np.r_[np.ones(5), np.zeros(100)]
    scores = np.r_[np.ones(5), negatives]
    assert m.threshold_at_fpr(labels, scores, 0.01) == 0.99
    assert m.threshold_at_fpr(labels, scores, 0.0) == 1.0
    assert m.threshold_at_fpr(labels, scores, 0.05) == 0.95
    assert m.threshold_at_fpr(labels, scores, 1.0) == 0.0


def test_threshold_at_fpr_impossible_returns_value_above_max() -> None:
    # The top group holds 2 of 3 non-lenses: no non-empty selection has FPR <= 0.5.
    labels = np.array([1, 0, 0, 0])
    scores = np.array([0.7, 0.7, 0.7, 0.1])
    threshold = m.threshold_at_fpr(labels, scores, 0.5)
    assert np.isfinite(threshold) and threshold > 0.7
    assert not np.any(scores >= threshold)


# --------------------------------------------------------------------------------------
# Agreement with scikit-learn on data with many ties
# --------------------------------------------------------------------------------------

_tied_data = st.lists(
    st.tuples(st.booleans(), st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5000001, 0.9, 1.0])),
    min_size=2,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(data=_tied_data)
def test_agrees_with_sklearn_on_tied_scores(data: list[tuple[bool, float]]) -> None:
    labels = np.array([label for label, _ in data])
    scores = np.array([score for _, score in data])
    assume(labels.any() and not labels.all())
    assert m.auroc(labels, scores) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    assert m.average_precision(labels, scores) == pytest.approx(
        skm.average_precision_score(labels, scores), abs=1e-12
    )
    fpr, tpr, thresholds = m.roc_curve(labels, scores)
    sk_fpr, sk_tpr, sk_thresholds = skm.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-15)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-15)
    np.testing.assert_array_equal(thresholds[1:], sk_thresholds[1:])
    assert thresholds[0] == np.inf


def test_agrees_with_sklearn_on_large_random_sample() -> None:
    rng = np.random.default_rng(42)
    labels = rng.random(5000) < 0.1
    scores = np.round(rng.normal(labels * 1.5, 1.0), 1)  # rounding creates many ties
    assert m.auroc(labels, scores) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-12)
    assert m.average_precision(labels, scores) == pytest.approx(
        skm.average_precision_score(labels, scores), abs=1e-12
    )


@settings(max_examples=100, deadline=None)
@given(data=_tied_data, beta=st.sampled_from([m.BETA_BOM, m.BETA_WILDE, 0.5, 1.0, 2.0]))
def test_fbeta_curve_matches_sklearn_fbeta_score(
    data: list[tuple[bool, float]], beta: float
) -> None:
    labels = np.array([label for label, _ in data])
    scores = np.array([score for _, score in data])
    assume(labels.any())
    fbeta, thresholds = m.fbeta_curve(labels, scores, beta)
    for value, threshold in zip(fbeta, thresholds):
        expected = skm.fbeta_score(labels, scores >= threshold, beta=beta, zero_division=0.0)
        assert value == pytest.approx(expected, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(data=_tied_data, target=st.sampled_from([0.0, 0.01, 0.1, 0.3, 0.5, 1.0]))
def test_threshold_at_fpr_is_the_lowest_admissible(
    data: list[tuple[bool, float]], target: float
) -> None:
    labels = np.array([label for label, _ in data])
    scores = np.array([score for _, score in data])
    assume(not labels.all())
    threshold = m.threshold_at_fpr(labels, scores, target)
    n_negative = np.count_nonzero(~labels)

    def fpr(t: float) -> float:
        return np.count_nonzero((scores >= t) & ~labels) / n_negative

    assert fpr(threshold) <= target
    lower = scores[scores < threshold]
    if lower.size:  # the next lower distinct score would exceed the target
        assert fpr(lower.max()) > target


@settings(max_examples=100, deadline=None)
@given(data=_tied_data, max_fp=st.integers(0, 12))
def test_tpr_at_fp_matches_brute_force(data: list[tuple[bool, float]], max_fp: int) -> None:
    labels = np.array([label for label, _ in data])
    scores = np.array([score for _, score in data])
    assume(labels.any())
    best = 0.0
    for t in np.unique(scores):
        selected = scores >= t
        if np.count_nonzero(selected & ~labels) <= max_fp:
            best = max(best, np.count_nonzero(selected & labels) / np.count_nonzero(labels))
    assert m.tpr_at_fp(labels, scores, max_fp) == best


# --------------------------------------------------------------------------------------
# Prior shift
# --------------------------------------------------------------------------------------


def test_prior_shift_fixed_points_and_known_value() -> None:
    q = np.array([0.0, 0.5, 1.0])
    shifted = m.prior_shift(q, train_prevalence=0.5, target_prevalence=0.01)
    assert shifted[0] == 0.0 and shifted[2] == 1.0
    # A score equal to the training prevalence maps to the target prevalence.
    assert shifted[1] == pytest.approx(0.01, rel=1e-14)
    assert m.prior_shift(0.2, 0.2, 1e-4) == pytest.approx(1e-4, rel=1e-12)
    np.testing.assert_array_equal(m.prior_shift(q, 0.3, 0.3), q)


def test_prior_shift_round_trip_and_monotonic() -> None:
    rng = np.random.default_rng(0)
    q = np.sort(rng.random(1000))
    shifted = m.prior_shift(q, 0.5, 1e-3)
    assert np.all(np.diff(shifted) >= 0)
    np.testing.assert_allclose(m.prior_shift(shifted, 1e-3, 0.5), q, rtol=1e-12, atol=1e-15)
    assert m.prior_shift(np.array([[0.1, np.nan]]), 0.5, 0.1).shape == (1, 2)


def test_prior_shift_errors() -> None:
    with pytest.raises(ValueError, match="train_prevalence"):
        m.prior_shift([0.5], 0.0, 0.1)
    with pytest.raises(ValueError, match="target_prevalence"):
        m.prior_shift([0.5], 0.5, 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.prior_shift([1.5], 0.5, 0.1)


# --------------------------------------------------------------------------------------
# Completeness, bootstrap, summary
# --------------------------------------------------------------------------------------


def test_completeness_by_bin_hand_worked() -> None:
    is_lens = np.array([1, 1, 1, 1, 1, 0, 0, 1])
    scores = np.array([0.9, 0.2, 0.8, 0.7, 0.1, 0.99, 0.0, 0.95])
    theta_e = np.array([0.5, 0.7, 1.2, 1.5, 2.0, 0.6, np.nan, np.nan])
    # Lenses by bin: [0, 1): 0.5 (detected), 0.7; [1, 2): 1.2, 1.5 (both detected);
    # [2, 3): 2.0; [3, 4]: none. Non-lenses and the lens with unknown theta_E are ignored.
    table = m.completeness_by_bin(is_lens, scores, 0.5, theta_e, [0.0, 1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(table["n_lenses"], [2, 2, 1, 0])
    np.testing.assert_array_equal(table["n_detected"], [1, 2, 0, 0])
    np.testing.assert_allclose(table["completeness"][:3], [0.5, 1.0, 0.0])
    assert np.isnan(table["completeness"][3]) and np.isnan(table["ci_lower"][3])
    lower, upper = binom_conf_interval(np.array([1, 2, 0]), np.array([2, 2, 1]), 0.6827, "wilson")
    np.testing.assert_allclose(table["ci_lower"][:3], lower)
    np.testing.assert_allclose(table["ci_upper"][:3], upper)
    assert list(table.columns) == [
        "bin_lo", "bin_hi", "n_lenses", "n_detected", "completeness", "ci_lower", "ci_upper"
    ]


def test_completeness_last_edge_inclusive_and_clopper_pearson() -> None:
    table = m.completeness_by_bin(
        [1, 1, 1], [0.9, 0.9, 0.1], 0.5, [0.0, 1.0, 2.0], [0.0, 1.0, 2.0],
        confidence=0.95, interval="clopper-pearson",
    )
    np.testing.assert_array_equal(table["n_lenses"], [1, 2])
    np.testing.assert_array_equal(table["n_detected"], [1, 1])
    exact = stats.binomtest(1, 2).proportion_ci(confidence_level=0.95, method="exact")
    assert table["ci_lower"][1] == pytest.approx(exact.low)
    assert table["ci_upper"][1] == pytest.approx(exact.high)
    assert table["ci_upper"][0] == 1.0
    with pytest.raises(ValueError, match="bins"):
        m.completeness_by_bin([1], [0.5], 0.5, [1.0], [1.0, 0.0])


def test_predicted_detections_use_each_targets_own_cell() -> None:
    # injections: completeness 0.1 at low S/N and 0.9 at high S/N, whatever theta_E is
    rng = np.random.default_rng(2)
    n = 4000
    injected = np.column_stack([rng.uniform(0.5, 4.0, n), rng.uniform(0.0, 2.0, n)])
    rate = np.where(injected[:, 1] < 1.0, 0.1, 0.9)
    detected = rng.random(n) < rate
    edges = [np.array([0.5, 2.0, 4.0]), np.array([0.0, 1.0, 2.0])]
    # targets: small theta_E lenses all bright, large ones all faint; a marginal completeness
    # in theta_E (0.5 in both bins) would expect 20 and 20 of them
    targets = np.array([[1.0, 1.5]] * 40 + [[3.0, 0.5]] * 40 + [[5.0, 1.5]] * 3)
    groups = np.array([0] * 40 + [1] * 40 + [1] * 3)
    table = m.predicted_detections(injected, detected, targets, edges, groups, 2, n_resamples=500, seed=1)
    np.testing.assert_array_equal(table["n_targets"], [40, 43])
    np.testing.assert_array_equal(table["n_covered"], [40, 40])  # theta_E = 5 lies off the grid
    assert table["expected"][0] == pytest.approx(36.0, abs=1.5) and table["expected"][1] == pytest.approx(4.0, abs=1.0)
    assert table["expected_completeness"][0] == pytest.approx(0.9, abs=0.04)
    for group, found_like_the_injections in ((0, 36), (1, 4)):
        assert table["lo95"][group] <= found_like_the_injections <= table["hi95"][group]
        assert table["lo95"][group] <= table["lo68"][group] <= table["hi68"][group] <= table["hi95"][group]
    assert not table["lo95"][0] <= 20 <= table["hi95"][0]  # what the marginal would have said
    found = np.arange(len(targets)) % 2 == 0  # the off-grid targets (the last 3) are not counted
    observed = m.predicted_detections(injected, detected, targets, edges, groups, 2, n_resamples=10,
                                      targets_detected=found)["observed"]
    np.testing.assert_array_equal(observed, [20, 20])
    with pytest.raises(ValueError, match="groups"):
        m.predicted_detections(injected, detected, targets, edges, groups + 1, 2)
    with pytest.raises(ValueError, match="edges"):
        m.predicted_detections(injected, detected, targets, [np.array([1.0, 0.0]), edges[1]], groups, 2)


def test_bootstrap_interval_contains_point_estimate() -> None:
    rng = np.random.default_rng(1)
    labels = rng.random(3000) < 0.2
    scores = rng.normal(labels * 1.0, 1.0)
    point = m.auroc(labels, scores)
    lower, upper = m.bootstrap_interval(m.auroc, labels, scores, n_resamples=300, seed=3)
    assert lower < point < upper
    assert upper - lower < 0.1
    assert (lower, upper) == m.bootstrap_interval(m.auroc, labels, scores, n_resamples=300, seed=3)


def test_bootstrap_is_stratified() -> None:
    labels = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    scores = np.linspace(0, 1, 10)

    def class_count(y: np.ndarray, s: np.ndarray) -> float:
        assert np.count_nonzero(y) == 1 and y.size == 10
        return m.auroc(y, s)

    m.bootstrap_interval(class_count, labels, scores, n_resamples=50)
    tpr10 = functools.partial(m.tpr_at_fp, max_false_positives=10)
    assert m.bootstrap_interval(tpr10, labels, scores, n_resamples=20) == (1.0, 1.0)


def test_summary_is_json_serialisable() -> None:
    rng = np.random.default_rng(2)
    labels = rng.random(500) < 0.3
    scores = np.round(rng.random(500) + 0.3 * labels, 2)
    result = m.summary(labels, scores)
    json.dumps(result, allow_nan=False)
    assert result["auroc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    assert result["fpr_at_threshold"] <= 0.01
    assert [entry["beta"] for entry in result["fbeta"]] == [m.BETA_BOM, m.BETA_WILDE, 1.0]
    assert result["n"] == 500 and result["n_lenses"] + result["n_non_lenses"] == 500


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "scores", "match"),
    [
        ([1, 0, 1], [0.1, 0.2], "length"),
        ([1, 0, 2], [0.1, 0.2, 0.3], "binary"),
        ([1.0, 0.0, np.nan], [0.1, 0.2, 0.3], "binary"),
        (["a", "b"], [0.1, 0.2], "binary"),
        ([1, 0, 1], [0.1, np.nan, 0.3], "NaN"),
        ([1, 1, 1], [0.1, 0.2, 0.3], "negative"),
        ([0, 0, 0], [0.1, 0.2, 0.3], "positive"),
        ([], [], "empty"),
        ([[1, 0]], [[0.1, 0.2]], "1-D"),
    ],
)
def test_invalid_input_raises(labels: list, scores: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        m.auroc(labels, scores)


def test_single_class_where_allowed_or_not() -> None:
    # AP and TPR need lenses only; the FPR threshold needs non-lenses only.
    assert m.average_precision([1, 1], [0.2, 0.4]) == 1.0
    assert m.tpr_at_fp([1, 1], [0.2, 0.4]) == 1.0
    assert m.threshold_at_fpr([0, 0], [0.2, 0.4], 0.5) == 0.4
    with pytest.raises(ValueError, match="positive"):
        m.average_precision([0, 0], [0.2, 0.4])
    with pytest.raises(ValueError, match="negative"):
        m.threshold_at_fpr([1, 1], [0.2, 0.4])
    with pytest.raises(ValueError, match="negative"):
        m.roc_curve([1, 1], [0.2, 0.4])
    with pytest.raises(ValueError, match="max_false_positives"):
        m.tpr_at_fp([1, 0], [0.2, 0.4], -1)
    with pytest.raises(ValueError, match="beta"):
        m.max_fbeta([1, 0], [0.2, 0.4], 0.0)
    with pytest.raises(ValueError, match="target_fpr"):
        m.threshold_at_fpr([1, 0], [0.2, 0.4], 1.5)
