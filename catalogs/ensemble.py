"""Combining several models' scores of the same objects into one ensemble score.

Two rules, both pure functions of a ``(models, objects)`` set of scores:

``mean``
    the mean of the models' probabilities. It is itself a probability (at the training
    prevalence, if all models were trained at the same one), so ``p_survey`` and the
    decision threshold keep their meaning. This is what ``score`` holds in a catalogue
    scored by several models (see :mod:`catalogs.schema`).
``rank``
    the mean of each model's normalised rank, ``(rank - 1) / (n - 1)`` in [0, 1] with
    ties given their average rank. It ignores how each model's scores are calibrated, so
    a model whose probabilities are squeezed near 0 or 1 weighs as much as the others;
    the result orders objects but is not a probability.

With a single model, ``mean`` returns its scores unchanged and ``rank`` its normalised
ranks (the same order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

Method = Literal["mean", "rank"]
METHODS: tuple[Method, ...] = ("mean", "rank")


def _stack(scores: Mapping[str, npt.ArrayLike] | Sequence[npt.ArrayLike] | npt.ArrayLike) -> np.ndarray:
    """A ``(models, objects)`` float64 array from a mapping, a list of arrays or a 2-D array."""
    if isinstance(scores, Mapping):
        scores = list(scores.values())
    stacked = np.asarray(scores, dtype=np.float64)
    if stacked.ndim == 1:
        stacked = stacked[np.newaxis]
    if stacked.ndim != 2 or stacked.shape[0] == 0:
        raise ValueError(f"need scores shaped (models, objects), got shape {stacked.shape}")
    if not np.isfinite(stacked).all():
        raise ValueError("scores must be finite (an object no model scored has no ensemble score)")
    return stacked


def mean_probability(scores: Mapping[str, npt.ArrayLike] | Sequence[npt.ArrayLike] | npt.ArrayLike) -> np.ndarray:
    """Mean of the models' probabilities per object (float64).

    Args:
        scores: one array of probabilities in [0, 1] per model, all of one length, as a
            mapping (model name -> scores), a sequence, or a ``(models, objects)`` array.

    Raises:
        ValueError: no model, ragged or non-finite input, or values outside [0, 1].
    """
    stacked = _stack(scores)
    if stacked.size and (stacked.min() < 0.0 or stacked.max() > 1.0):
        raise ValueError("probabilities must lie in [0, 1]")
    return stacked.mean(axis=0)


def normalised_rank(values: npt.ArrayLike) -> np.ndarray:
    """``(rank - 1) / (n - 1)`` of each value (0 = lowest, 1 = highest; ties averaged).

    One object gets 0.5: with nothing to compare it to, it is neither end.
    """
    from scipy.stats import rankdata  # here, not at the top: scipy.stats takes ~1 s to import

    values = np.asarray(values, dtype=np.float64)
    if values.size == 1:
        return np.full(1, 0.5)
    return (rankdata(values, method="average") - 1.0) / max(values.size - 1, 1)


def rank_average(scores: Mapping[str, npt.ArrayLike] | Sequence[npt.ArrayLike] | npt.ArrayLike) -> np.ndarray:
    """Mean over models of each object's normalised rank, in [0, 1] (higher = more lens-like)."""
    stacked = _stack(scores)
    return np.mean([normalised_rank(row) for row in stacked], axis=0)


def combine(
    scores: Mapping[str, npt.ArrayLike] | Sequence[npt.ArrayLike] | npt.ArrayLike, method: Method = "mean"
) -> np.ndarray:
    """The ensemble score by ``method`` (``"mean"`` or ``"rank"``; see the module docstring)."""
    if method == "mean":
        return mean_probability(scores)
    if method == "rank":
        return rank_average(scores)
    raise ValueError(f"unknown ensemble method {method!r}; choose one of {', '.join(METHODS)}")


def combine_columns(frame: pd.DataFrame, columns: Sequence[str], method: Method = "mean") -> pd.Series:
    """The ensemble of ``frame``'s score ``columns`` (e.g. ``score_<model>``), indexed like ``frame``."""
    if not columns:
        raise ValueError("name at least one score column to combine")
    missing = [name for name in columns if name not in frame]
    if missing:
        raise KeyError(f"no column(s) {missing} in the frame")
    values = combine([frame[name].to_numpy(np.float64) for name in columns], method)
    return pd.Series(values, index=frame.index, name=f"score_{method}")
