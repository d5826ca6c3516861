"""Consensus of visual-inspection grades: pure functions on pandas tables.

Grades are on the SuGOHI scale (3 sure lens, 2 probable, 1 possible, 0 not a lens).
Per object, with each grader's **latest** grade only:

* ``mean_grade``: the mean over graders; ``n_graders``: how many graded it;
  ``grade_std``: the population standard deviation (ddof = 0, so 0 for one grader), a
  measure of disagreement;
* ``final_class``: **A** if mean >= 2.5, **B** if mean >= 1.5, **C** if mean >= 0.5,
  else no class (null). These are the thresholds on the mean grade of the SuGOHI
  papers (Sonnenfeld et al. 2018, PASJ 70, S29: A = definite, B = probable,
  C = possible lens); later HSC searches and the Euclid visual inspections grade on
  the same kind of 0-3 scale and report A/B/C classes in the same way.

Combined ranking (:func:`combined_ranking`): objects are ordered by mean grade
(descending; ungraded objects after all graded ones), ties broken by the network score
(descending) and then by the network rank. This follows the practice of the KiDS
searches (e.g. Li et al. 2020, ApJ 899, 30), whose final candidate lists are ordered
by the graders' average score with the network's output as the secondary key.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["CLASS_THRESHOLDS", "classify", "combined_ranking", "consensus", "latest_grades"]

#: (class, lowest mean grade) from best to worst; below the last: no class.
CLASS_THRESHOLDS: tuple[tuple[str, float], ...] = (("A", 2.5), ("B", 1.5), ("C", 0.5))

CONSENSUS_COLUMNS = ["mean_grade", "n_graders", "grade_std", "final_class", "grades"]


def latest_grades(inspections: pd.DataFrame) -> pd.DataFrame:
    """One row per (grader, object_id): the grader's latest grade.

    "Latest" is the last row in the order written (rows are appended under a lock, so
    this is also the order of ``graded_utc``).
    """
    return inspections.drop_duplicates(["grader", "object_id"], keep="last").reset_index(drop=True)


def classify(mean_grade: float) -> str | None:
    """A, B, C (see :data:`CLASS_THRESHOLDS`) or None for a mean grade (None if NaN)."""
    if mean_grade is None or not np.isfinite(mean_grade):
        return None
    for name, lowest in CLASS_THRESHOLDS:
        if mean_grade >= lowest:
            return name
    return None


def consensus(inspections: pd.DataFrame) -> pd.DataFrame:
    """Per-object consensus of the graders' latest grades.

    Args:
        inspections: rows with ``grader``, ``object_id``, ``grade`` (history allowed).

    Returns:
        A table indexed by ``object_id`` with ``mean_grade`` (float), ``n_graders``
        (int), ``grade_std`` (float, ddof = 0), ``final_class`` (A/B/C or null) and
        ``grades`` (``"grader=grade;..."`` sorted by grader, for people and CSV).
    """
    latest = latest_grades(inspections)
    if latest.empty:
        empty = pd.DataFrame(columns=CONSENSUS_COLUMNS, index=pd.Index([], name="object_id"))
        return empty.astype({"mean_grade": float, "n_graders": "int64", "grade_std": float})
    latest = latest.assign(
        grade=latest["grade"].astype(float),
        pair=latest["grader"].astype(str) + "=" + latest["grade"].astype(int).astype(str),
    ).sort_values(["object_id", "grader"], kind="stable")
    grouped = latest.groupby("object_id", sort=True)
    table = pd.DataFrame(
        {
            "mean_grade": grouped["grade"].mean(),
            "n_graders": grouped["grade"].size().astype("int64"),
            "grade_std": grouped["grade"].std(ddof=0),
        }
    )
    table["final_class"] = pd.array([classify(value) for value in table["mean_grade"]], dtype="string")
    table["grades"] = grouped["pair"].agg(";".join)
    return table


def combined_ranking(candidates: pd.DataFrame, grades: pd.DataFrame, graded_only: bool = False) -> pd.DataFrame:
    """Candidates with consensus columns and a ``combined_rank`` (1 = best).

    Args:
        candidates: the ranked catalogue (needs ``object_id``, ``score``, ``rank``).
        grades: output of :func:`consensus`.
        graded_only: keep only objects with at least one grade.

    Returns:
        ``combined_rank`` first, then the catalogue's columns and the consensus
        columns, sorted by ``combined_rank`` (see the module docstring for the order).
    """
    merged = candidates.merge(grades, how="left", left_on="object_id", right_index=True, validate="one_to_one")
    merged["n_graders"] = merged["n_graders"].fillna(0).astype("int64")
    if graded_only:
        merged = merged[merged["n_graders"] > 0]
    merged = merged.assign(_has_grade=merged["n_graders"] > 0).sort_values(
        ["_has_grade", "mean_grade", "score", "rank"], ascending=[False, False, False, True],
        kind="stable", na_position="last",
    )
    merged = merged.drop(columns="_has_grade").reset_index(drop=True)
    merged.insert(0, "combined_rank", np.arange(1, len(merged) + 1, dtype=np.int64))
    return merged
