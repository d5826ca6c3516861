"""Exact evaluation metrics for ranked binary lens scores.

Everything is computed from the sorted scores, never on a grid of thresholds: a
threshold ``t`` selects the objects with ``score >= t``, and the candidate thresholds
are the distinct scores. Objects that share a score (ties) therefore always fall on the
same side of any threshold, so a tie group containing a non-lens can never be split to
gain completeness. (Sampling thresholds on a fixed grid, as some published lens finders
do for TPR0, misses the thresholds between closely spaced high scores and can report
an artefactual TPR0 of zero.)

Conventions: ``labels`` are 0/1 (or boolean), 1 = lens; ``scores`` are finite floats,
higher = more lens-like. "Positive" objects are lenses, TPR is completeness and FPR is
the fraction of non-lenses selected.

References (plain text in ``shared/seeds``): Magro et al. (LEXACTUM) and Metcalf et al.
(2019) for TPR0/TPR10; Bom et al. 2022, eq. 6-7 (F_beta with beta^2 = 0.001) and Wilde
et al., eq. 3 (beta = 0.03); Lanusse et al. 2018 (threshold at FPR = 1 per cent, sec. 5;
prior shift, eq. 5, after Saerens, Latinne & Decaestecker 2002).

Longer than the project's ~400-line guide: a library of small, independently tested metric
functions that share one validated ranking; nothing else lives here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from astropy.stats import binom_conf_interval
from scipy import stats

__all__ = [
    "BETA_BOM",
    "BETA_WILDE",
    "auroc",
    "average_precision",
    "bootstrap_interval",
    "completeness_by_bin",
    "fbeta_curve",
    "max_fbeta",
    "predicted_detections",
    "prior_shift",
    "roc_curve",
    "summary",
    "threshold_at_fpr",
    "tpr_at_fp",
]

#: F_beta weight of the II Strong Gravitational Lens Challenge: beta^2 = 0.001 (Bom et al.).
BETA_BOM = math.sqrt(0.001)
#: F_beta weight used by Wilde et al.: beta = 0.03.
BETA_WILDE = 0.03


# --------------------------------------------------------------------------------------
# Validation and the ranked table every metric is built from
# --------------------------------------------------------------------------------------


def _validate(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    *,
    need_positive: bool = True,
    need_negative: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert labels/scores to 1-D boolean and float64 arrays.

    Raises:
        ValueError: mismatched lengths, empty input, non-binary labels, non-finite scores,
            or a missing class the caller needs.
    """
    y = np.asarray(labels)
    s = np.asarray(scores)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D; got shapes {y.shape} and {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} != {s.size}")
    if y.size == 0:
        raise ValueError("labels and scores are empty")
    if y.dtype != np.bool_:
        if not (np.issubdtype(y.dtype, np.number) and np.all((y == 0) | (y == 1))):
            raise ValueError("labels must be binary: 0/1 or boolean (1 = lens)")
        y = y == 1
    if not np.issubdtype(s.dtype, np.number) or np.issubdtype(s.dtype, np.complexfloating):
        raise ValueError(f"scores must be real numbers; got dtype {s.dtype}")
    s = s.astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    n_positive = int(np.count_nonzero(y))
    if need_positive and n_positive == 0:
        raise ValueError("this metric needs at least one positive (lens) label")
    if need_negative and n_positive == y.size:
        raise ValueError("this metric needs at least one negative (non-lens) label")
    return y, s


@dataclass(frozen=True)
class _Ranked:
    """Cumulative counts at each distinct-score threshold, highest score first.

    Row ``i`` describes the selection ``score >= thresholds[i]``.
    """

    thresholds: np.ndarray  # distinct scores, descending
    tp: np.ndarray  # lenses selected (int64, non-decreasing)
    fp: np.ndarray  # non-lenses selected
    n_positive: int
    n_negative: int


def _rank(y: np.ndarray, s: np.ndarray) -> _Ranked:
    """Group validated labels by distinct score and accumulate TP/FP counts."""
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    # Last index of each tie group: where the next score differs, plus the final element.
    group_end = np.r_[np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1]
    tp = np.cumsum(y_sorted, dtype=np.int64)[group_end]
    fp = (group_end + 1) - tp
    n_positive = int(tp[-1])
    return _Ranked(s_sorted[group_end], tp, fp, n_positive, s.size - n_positive)


# --------------------------------------------------------------------------------------
# Curves and areas
# --------------------------------------------------------------------------------------


def roc_curve(
    labels: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ROC curve: one point per distinct score, plus the (0, 0) start.

    Equal to ``sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)``.

    Returns:
        ``(fpr, tpr, thresholds)``, with ``thresholds`` descending; point ``i`` is the
        selection ``score >= thresholds[i]``, and ``thresholds[0] = +inf`` selects nothing.

    Raises:
        ValueError: invalid input or a single class.
    """
    ranked = _rank(*_validate(labels, scores))
    fpr = np.r_[0.0, ranked.fp / ranked.n_negative]
    tpr = np.r_[0.0, ranked.tp / ranked.n_positive]
    return fpr, tpr, np.r_[np.inf, ranked.thresholds]


def auroc(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve, ties counted as one half.

    Computed exactly in integers as the Mann-Whitney statistic: the number of
    (lens, non-lens) pairs ranked correctly plus half the tied pairs, over all pairs.
    Equals ``sklearn.metrics.roc_auc_score`` (the trapezoidal area of the exact ROC).

    Raises:
        ValueError: invalid input or a single class.
    """
    ranked = _rank(*_validate(labels, scores))
    tp_in_group = np.diff(ranked.tp, prepend=0)
    fp_in_group = np.diff(ranked.fp, prepend=0)
    tp_above = ranked.tp - tp_in_group
    # Twice the pair count, so that tied pairs contribute integers.
    twice_correct = int(np.sum(fp_in_group * (2 * tp_above + tp_in_group)))
    return twice_correct / (2 * ranked.n_positive * ranked.n_negative)


def average_precision(labels: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the precision-recall curve, as ``sklearn.metrics.average_precision_score``.

    ``AP = sum_k (R_k - R_(k-1)) P_k`` over the distinct-score thresholds in descending
    order (step-wise, no interpolation). Needs at least one lens; with no non-lens it is 1.

    Raises:
        ValueError: invalid input or no positive label.
    """
    ranked = _rank(*_validate(labels, scores, need_negative=False))
    tp_in_group = np.diff(ranked.tp, prepend=0)
    precision = ranked.tp / (ranked.tp + ranked.fp)
    return float(np.sum(tp_in_group * precision) / ranked.n_positive)


def tpr_at_fp(
    labels: npt.ArrayLike, scores: npt.ArrayLike, max_false_positives: int = 0
) -> float:
    """Highest TPR over thresholds admitting at most ``max_false_positives`` non-lenses.

    ``max_false_positives=0`` gives TPR0 and ``10`` gives TPR10 (Metcalf et al. 2019;
    Magro et al.). Thresholds are the distinct scores, so a tie group containing a
    non-lens is admitted whole or not at all. If the top-scoring group alone contains more
    non-lenses than allowed, the result is 0.

    Raises:
        ValueError: invalid input, no positive label, or a negative count.
    """
    if int(max_false_positives) != max_false_positives or max_false_positives < 0:
        raise ValueError(
            f"max_false_positives must be a non-negative integer; got {max_false_positives}"
        )
    ranked = _rank(*_validate(labels, scores, need_negative=False))
    # fp is non-decreasing, so the admissible thresholds are a prefix of the table and
    # the best TPR is at its end.
    n_admissible = int(np.searchsorted(ranked.fp, max_false_positives, side="right"))
    if n_admissible == 0:
        return 0.0
    return float(ranked.tp[n_admissible - 1] / ranked.n_positive)


def fbeta_curve(
    labels: npt.ArrayLike, scores: npt.ArrayLike, beta: float
) -> tuple[np.ndarray, np.ndarray]:
    """F_beta at every distinct-score threshold.

    ``F_beta = (1 + b^2) P R / (b^2 P + R) = (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP)``
    (Bom et al. 2022, eq. 6; Wilde et al., eq. 3). Small beta favours precision:
    ``beta**2 = 0.001`` (:data:`BETA_BOM`) in the II Lens Challenge, ``beta = 0.03``
    (:data:`BETA_WILDE`) in Wilde et al. F_beta is 0 where no lens is selected.

    Returns:
        ``(fbeta, thresholds)``, thresholds descending, for the selections
        ``score >= thresholds[i]``.

    Raises:
        ValueError: invalid input, no positive label, or a non-positive beta.
    """
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be positive and finite; got {beta}")
    ranked = _rank(*_validate(labels, scores, need_negative=False))
    beta2 = beta * beta
    fn = ranked.n_positive - ranked.tp
    numerator = (1.0 + beta2) * ranked.tp
    # The denominator is > 0: either TP > 0, or FN = n_positive > 0.
    fbeta = numerator / (numerator + beta2 * fn + ranked.fp)
    return fbeta, ranked.thresholds.copy()


def max_fbeta(labels: npt.ArrayLike, scores: npt.ArrayLike, beta: float) -> tuple[float, float]:
    """Maximum of F_beta over thresholds (Bom et al. 2022, eq. 7) and where it is reached.

    Returns:
        ``(max F_beta, threshold)``, selection ``score >= threshold``; among thresholds
        reaching the maximum, the highest (purest selection) is returned.

    Raises:
        ValueError: as :func:`fbeta_curve`.
    """
    fbeta, thresholds = fbeta_curve(labels, scores, beta)
    best = int(np.argmax(fbeta))  # first maximum = highest threshold
    return float(fbeta[best]), float(thresholds[best])


def threshold_at_fpr(
    labels: npt.ArrayLike, scores: npt.ArrayLike, target_fpr: float = 0.01
) -> float:
    """The lowest threshold ``t`` such that selecting ``score >= t`` has FPR <= target.

    This is how Lanusse et al. (2018, sec. 5) set the DeepLens detection threshold
    (fiducial FPR of 1 per cent). The returned value is always one of the scores (the
    lowest admissible distinct score), so it must be applied with ``>=``: with ``>`` its
    tie group would be dropped. Since FPR is measured on non-lenses only, the threshold
    does not depend on the lens fraction of the evaluation set.

    If even the top-scoring tie group exceeds the target, no selection except the empty
    one qualifies and the value just above the highest score,
    ``nextafter(max(scores), +inf)``, is returned: it is finite (JSON-safe) and selects
    nothing.

    Raises:
        ValueError: invalid input, no negative label, or a target outside [0, 1].
    """
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must lie in [0, 1]; got {target_fpr}")
    ranked = _rank(*_validate(labels, scores, need_positive=False))
    # FPR is non-decreasing down the table, so the admissible thresholds are a prefix.
    # Comparing FP / N itself (not FP with target * N) matches the definition to the bit.
    n_admissible = int(np.count_nonzero(ranked.fp / ranked.n_negative <= target_fpr))
    if n_admissible == 0:
        return float(np.nextafter(ranked.thresholds[0], np.inf))
    return float(ranked.thresholds[n_admissible - 1])


# --------------------------------------------------------------------------------------
# Calibration and population-level summaries
# --------------------------------------------------------------------------------------


def prior_shift(
    probability: npt.ArrayLike, train_prevalence: float, target_prevalence: float
) -> np.ndarray:
    """Map classifier probabilities to a different lens prevalence.

    Lanusse et al. (2018) eq. 5, after Saerens, Latinne & Decaestecker (2002)::

        q' = lambda q / (lambda q + mu (1 - q)),
        lambda = p' / p,  mu = (1 - p') / (1 - p),

    with ``p`` the lens fraction the model was trained at and ``p'`` the target one.
    The map is monotonic (rankings, ROC and TPR at fixed FPR are unchanged), keeps 0 and
    1 fixed exactly, and shifting to ``p'`` and back to ``p`` is the identity.

    Args:
        probability: scores in [0, 1], any shape; NaN propagates.
        train_prevalence: ``p``, in (0, 1).
        target_prevalence: ``p'``, in (0, 1).

    Returns:
        float64 array of the input's shape.

    Raises:
        ValueError: prevalences outside (0, 1) or probabilities outside [0, 1].
    """
    prevalences = {"train_prevalence": train_prevalence, "target_prevalence": target_prevalence}
    for name, value in prevalences.items():
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must lie strictly between 0 and 1; got {value}")
    q = np.asarray(probability, dtype=np.float64)
    if np.any((q < 0.0) | (q > 1.0)):  # NaN compares False and passes through
        raise ValueError("probabilities must lie in [0, 1]")
    lam = target_prevalence / train_prevalence
    mu = (1.0 - target_prevalence) / (1.0 - train_prevalence)
    weighted = lam * q
    return weighted / (weighted + mu * (1.0 - q))


def _binomial_interval(
    k: np.ndarray, n: np.ndarray, confidence: float, interval: str
) -> tuple[np.ndarray, np.ndarray]:
    """Confidence interval on k/n for each bin; NaN where n = 0."""
    lower = np.full(k.shape, np.nan)
    upper = np.full(k.shape, np.nan)
    filled = n > 0
    if not filled.any():
        return lower, upper
    kf, nf = k[filled], n[filled]
    if interval == "clopper-pearson":
        alpha = 1.0 - confidence
        # Exact (Clopper & Pearson 1934) bounds from beta quantiles; fixed at 0 and 1.
        lo = np.where(kf > 0, stats.beta.ppf(alpha / 2, kf, nf - kf + 1), 0.0)
        hi = np.where(kf < nf, stats.beta.ppf(1 - alpha / 2, kf + 1, nf - kf), 1.0)
    else:
        lo, hi = binom_conf_interval(kf, nf, confidence_level=confidence, interval=interval)
    lower[filled], upper[filled] = lo, hi
    return lower, upper


def completeness_by_bin(
    is_lens: npt.ArrayLike,
    scores: npt.ArrayLike,
    threshold: float,
    values: npt.ArrayLike,
    bins: npt.ArrayLike,
    *,
    confidence: float = 0.6827,
    interval: Literal["wilson", "jeffreys", "clopper-pearson"] = "wilson",
) -> pd.DataFrame:
    """Completeness of the selection ``score >= threshold`` in bins of a lens property.

    For instance completeness versus Einstein radius or arc S/N (Lanusse et al. 2018,
    fig. 6-7). Only lenses enter; their ``values`` are binned like :func:`numpy.histogram`
    (half-open bins, the last one closed); lenses with NaN or out-of-range values are left
    out, and non-lens values are ignored (they may be NaN).

    Args:
        is_lens: 0/1 or boolean labels.
        scores: finite scores.
        threshold: detection threshold, applied as ``score >= threshold``.
        values: the binned property, same length.
        bins: increasing bin edges (at least two).
        confidence: probability content of the interval (default 1 sigma).
        interval: "wilson" or "jeffreys" (:func:`astropy.stats.binom_conf_interval`), or
            "clopper-pearson" (exact, from beta-distribution quantiles).

    Returns:
        DataFrame with one row per bin and columns ``bin_lo``, ``bin_hi``, ``n_lenses``,
        ``n_detected``, ``completeness``, ``ci_lower``, ``ci_upper`` (NaN for empty bins).

    Raises:
        ValueError: invalid labels/scores, mismatched lengths, or invalid bins/options.
    """
    y, s = _validate(is_lens, scores, need_positive=False, need_negative=False)
    v = np.asarray(values, dtype=np.float64)
    edges = np.asarray(bins, dtype=np.float64)
    if v.shape != y.shape:
        raise ValueError(f"values differ in length from labels: {v.size} != {y.size}")
    well_formed = edges.ndim == 1 and edges.size >= 2 and bool(np.all(np.isfinite(edges)))
    if not (well_formed and np.all(np.diff(edges) > 0)):
        raise ValueError("bins must be at least two finite, strictly increasing edges")
    if interval not in ("wilson", "jeffreys", "clopper-pearson"):
        raise ValueError(
            f"interval must be 'wilson', 'jeffreys' or 'clopper-pearson'; got {interval!r}"
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")

    n_bins = edges.size - 1
    v_lens = v[y]
    detected = s[y] >= threshold
    inside = (v_lens >= edges[0]) & (v_lens <= edges[-1])  # False for NaN
    index = np.searchsorted(edges, v_lens[inside], side="right") - 1
    index = np.minimum(index, n_bins - 1)  # the last edge belongs to the last bin
    n_lenses = np.bincount(index, minlength=n_bins)
    n_detected = np.bincount(index, weights=detected[inside], minlength=n_bins).astype(np.int64)
    completeness = np.divide(n_detected, n_lenses, out=np.full(n_bins, np.nan), where=n_lenses > 0)
    ci_lower, ci_upper = _binomial_interval(n_detected, n_lenses, confidence, interval)
    return pd.DataFrame(
        {
            "bin_lo": edges[:-1],
            "bin_hi": edges[1:],
            "n_lenses": n_lenses,
            "n_detected": n_detected,
            "completeness": completeness,
            "ci_lower": ci_lower,
            "ci_upper": ci_upper,
        }
    )


def _cell_index(values: np.ndarray, edges: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Flat index of each row's cell on a grid of bin edges, and whether the row lies on it."""
    inside = np.ones(len(values), dtype=bool)
    flat = np.zeros(len(values), dtype=np.int64)
    for axis, edge in enumerate(edges):
        column = values[:, axis]
        inside &= (column >= edge[0]) & (column <= edge[-1])  # False for NaN
        index = np.clip(np.searchsorted(edge, np.nan_to_num(column, nan=edge[0]), side="right") - 1, 0, edge.size - 2)
        flat = flat * (edge.size - 1) + index
    return flat, inside


def predicted_detections(
    injected: npt.ArrayLike,
    injected_detected: npt.ArrayLike,
    targets: npt.ArrayLike,
    edges: Sequence[npt.ArrayLike],
    groups: npt.ArrayLike,
    n_groups: int,
    *,
    targets_detected: npt.ArrayLike | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """How many of a set of lenses an injection-recovery selection function expects to find.

    The selection function is the injections' detected fraction in each cell of a grid
    (for instance θE × arc S/N). A one-dimensional completeness averages over the other
    quantities with the injections' own distribution of them, which need not be the true
    lenses'; here each target lens instead takes the detected fraction of its own cell, and
    the targets are summed in their ``groups`` (for instance their θE bins). The spread of
    the expected count comes from resampling the injections (the cells' own uncertainty)
    and drawing each target's detection from its cell's fraction (the targets' binomial
    noise), so an observed count outside the interval disagrees with the selection function.

    Args:
        injected: (n, d) values of the gridded quantities for each injection.
        injected_detected: (n,) whether each injection was detected.
        targets: (m, d) the same quantities for the lenses to predict.
        edges: d increasing arrays of bin edges (values outside are not on the grid).
        groups: (m,) group of each target, integers in [0, n_groups).
        n_groups: number of groups.
        targets_detected: (m,) whether each target was found; adds ``observed``, the count
            found among the covered targets of each group, to compare with ``expected``.
        n_resamples: resamples of the injections and draws of the targets.
        seed: seed of the generator.

    Returns:
        DataFrame, one row per group: ``n_targets``, ``n_covered`` (targets on a cell that
        holds injections; the others are left out of the prediction), ``expected`` (count
        among the covered), ``expected_completeness``, and the 68% and 95% intervals of the
        count (``lo68``, ``hi68``, ``lo95``, ``hi95``).
    """
    grid = [np.asarray(edge, dtype=np.float64) for edge in edges]
    if any(edge.ndim != 1 or edge.size < 2 or not np.all(np.diff(edge) > 0) for edge in grid):
        raise ValueError("each axis needs at least two strictly increasing edges")
    x = np.asarray(injected, dtype=np.float64).reshape(-1, len(grid))
    hit = np.asarray(injected_detected, dtype=bool).ravel()
    t = np.asarray(targets, dtype=np.float64).reshape(-1, len(grid))
    g = np.asarray(groups, dtype=np.int64).ravel()
    if hit.size != len(x) or g.size != len(t):
        raise ValueError("injected and injected_detected, targets and groups must have the same lengths")
    if g.size and (g.min() < 0 or g.max() >= n_groups):
        raise ValueError(f"groups must lie in [0, {n_groups})")
    n_cells = int(np.prod([edge.size - 1 for edge in grid]))
    cell, on_grid = _cell_index(x, grid)
    cell, hit = cell[on_grid], hit[on_grid]
    target_cell, target_on = _cell_index(t, grid)
    counts = np.bincount(cell, minlength=n_cells)
    covered = target_on & (counts[target_cell] > 0)
    rate = np.bincount(cell, weights=hit, minlength=n_cells) / np.maximum(counts, 1)
    rng = np.random.default_rng(seed)
    draws = np.zeros((n_resamples, n_groups))
    tc, tg = target_cell[covered], g[covered]
    for index in range(n_resamples):
        pick = rng.integers(0, cell.size, cell.size)
        n_r = np.bincount(cell[pick], minlength=n_cells)
        rate_r = np.where(n_r > 0, np.bincount(cell[pick], weights=hit[pick], minlength=n_cells) / np.maximum(n_r, 1),
                          rate)
        found = rng.random(tc.size) < rate_r[tc]
        draws[index] = np.bincount(tg, weights=found, minlength=n_groups)
    n_targets = np.bincount(g, minlength=n_groups)
    n_covered = np.bincount(tg, minlength=n_groups)
    expected = np.bincount(tg, weights=rate[tc], minlength=n_groups)
    lo68, hi68, lo95, hi95 = np.quantile(draws, [0.15865, 0.84135, 0.025, 0.975], axis=0)
    table = pd.DataFrame({
        "n_targets": n_targets, "n_covered": n_covered, "expected": expected,
        "expected_completeness": np.divide(expected, n_covered, out=np.full(n_groups, np.nan), where=n_covered > 0),
        "lo68": lo68, "hi68": hi68, "lo95": lo95, "hi95": hi95})
    if targets_detected is not None:
        found = np.asarray(targets_detected, dtype=bool).ravel()
        if found.size != g.size:
            raise ValueError("targets_detected and targets must have the same length")
        table["observed"] = np.bincount(tg, weights=found[covered], minlength=n_groups).astype(np.int64)
    return table


def bootstrap_interval(
    metric: Callable[[np.ndarray, np.ndarray], float],
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of ``metric(labels, scores)``.

    Lenses and non-lenses are resampled separately with replacement (stratified), so
    every resample keeps the class sizes of the data and metrics needing both classes
    stay defined. Deterministic for a given ``seed``.

    Args:
        metric: function of ``(labels, scores)`` returning a float, e.g. :func:`auroc`
            or ``functools.partial(tpr_at_fp, max_false_positives=10)``.
        labels, scores: the evaluation data.
        n_resamples: number of bootstrap resamples (>= 1).
        confidence: probability content of the interval, in (0, 1).
        seed: seed of the :func:`numpy.random.default_rng` generator.

    Returns:
        ``(lower, upper)`` percentiles of the resampled metric values (NaN if the metric
        returned NaN for some resample).

    Raises:
        ValueError: invalid input, a single class, or invalid options.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1; got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")
    y, s = _validate(labels, scores)
    rng = np.random.default_rng(seed)
    positives = np.flatnonzero(y)
    negatives = np.flatnonzero(~y)
    values = np.empty(n_resamples)
    for i in range(n_resamples):
        index = np.concatenate(
            [rng.choice(positives, positives.size), rng.choice(negatives, negatives.size)]
        )
        values[i] = metric(y[index], s[index])
    tail = (1.0 - confidence) / 2.0
    lower, upper = np.quantile(values, [tail, 1.0 - tail])
    return float(lower), float(upper)


def summary(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    fpr_target: float = 0.01,
    betas: Sequence[float] = (BETA_BOM, BETA_WILDE, 1.0),
) -> dict[str, Any]:
    """All headline metrics in one JSON-serialisable dict (plain ints and floats).

    Keys: ``n``, ``n_lenses``, ``n_non_lenses``, ``prevalence``, ``auroc``,
    ``average_precision``, ``tpr0``, ``tpr10``, ``fpr_target``, ``threshold_at_fpr``
    (selection ``score >= threshold``), ``tpr_at_threshold`` and ``fpr_at_threshold``
    (the realised values at that threshold), and ``fbeta``: a list of
    ``{"beta", "beta_squared", "max_fbeta", "threshold"}`` dicts, one per beta.

    Raises:
        ValueError: invalid input or a single class.
    """
    y, s = _validate(labels, scores)
    ranked = _rank(y, s)
    threshold = threshold_at_fpr(y, s, fpr_target)
    selected = s >= threshold
    result: dict[str, Any] = {
        "n": int(y.size),
        "n_lenses": ranked.n_positive,
        "n_non_lenses": ranked.n_negative,
        "prevalence": ranked.n_positive / y.size,
        "auroc": auroc(y, s),
        "average_precision": average_precision(y, s),
        "tpr0": tpr_at_fp(y, s, 0),
        "tpr10": tpr_at_fp(y, s, 10),
        "fpr_target": float(fpr_target),
        "threshold_at_fpr": threshold,
        "tpr_at_threshold": int(np.count_nonzero(selected & y)) / ranked.n_positive,
        "fpr_at_threshold": int(np.count_nonzero(selected & ~y)) / ranked.n_negative,
        "fbeta": [],
    }
    for beta in betas:
        best, at = max_fbeta(y, s, beta)
        result["fbeta"].append(
            {
                "beta": float(beta),
                "beta_squared": float(beta) ** 2,
                "max_fbeta": best,
                "threshold": at,
            }
        )
    return result
