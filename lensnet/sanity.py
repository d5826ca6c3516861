"""Sanity checks a lens finder must pass whatever its AUROC: obvious lenses, each kind of look-alike.

A finder that ranks well on average can still miss the lenses any astronomer would spot,
or flag every ring galaxy. This module measures, at a given score threshold:

* the **sanity lenses**: unmistakable lenses (``theta_e_arcsec > 1.2``, ``arc_snr > 50``,
  and a complete ring, a cross or a long arc: ``arc_azimuth_fraction >= 0.25``), of which
  at least 99% should be found;
* the **complete rings** among them (``arc_azimuth_fraction >= 0.75``): the brightest,
  most obvious lenses, and the ones a model trained on faint partial arcs can miss
  (reported apart so that this failure is never averaged away);
* the sanity lenses with **red sources** (``source_red``, where the truth has it): arcs of
  the lens galaxy's colour, which a finder that learnt "blue arcs" misses;
* every **kind** of object in the truth table (``lens``, ``ring``, ``sf-ring``,
  ``companion``, ...): the share scored above the threshold, which for each contaminant
  kind should stay at or below 1%;
* **which sanity lenses are missed** (:func:`by_truth`): the share above the threshold in bins
  of the source's offset from the caustic centre, the deflector's brightness against its arcs',
  the arcs' azimuthal coverage, θE, seeing and arc S/N, so that a failure is traced to the
  lenses it concerns rather than averaged away.

Shares come with Wilson 95% intervals. The truth columns are those of
:mod:`lensnet.simulate.definitions`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

#: Lower bounds (exclusive for theta_e and S/N, inclusive for azimuth) of the sanity lenses.
SANITY_LENS_CUTS: dict[str, float] = {"theta_e_arcsec": 1.2, "arc_snr": 50.0, "arc_azimuth_fraction": 0.25}
#: The sanity lenses whose arcs cover at least this share of the Einstein ring: complete rings.
COMPLETE_RING_AZIMUTH = 0.75
#: What the sanity lenses and contaminants must reach (the project's acceptance bar).
SANITY_LENS_TARGET = 0.99
CONTAMINANT_TARGET = 0.01


def sanity_lenses(truth: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the unmistakable lenses (see the module docstring); all False without the columns."""
    if not set(SANITY_LENS_CUTS) <= set(truth.columns):
        return np.zeros(len(truth), dtype=bool)
    mask = truth["is_lens"].to_numpy().astype(bool).copy()
    mask &= truth["theta_e_arcsec"].to_numpy(np.float64) > SANITY_LENS_CUTS["theta_e_arcsec"]
    mask &= truth["arc_snr"].to_numpy(np.float64) > SANITY_LENS_CUTS["arc_snr"]
    mask &= truth["arc_azimuth_fraction"].to_numpy(np.float64) >= SANITY_LENS_CUTS["arc_azimuth_fraction"]
    return mask


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n (NaN for n = 0)."""
    if n == 0:
        return float("nan"), float("nan")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _row(label: str, above: np.ndarray, target: float | None, passes: str) -> dict[str, Any]:
    n, k = int(above.size), int(np.count_nonzero(above))
    interval = list(wilson_interval(k, n)) if n else None
    share = k / n if n else None
    ok = None if target is None or share is None else (share >= target if passes == "at_least" else share <= target)
    return {"group": label, "n": n, "n_above": k, "share_above": share, "interval_95": interval,
            "target": target, "target_is": passes if target is not None else None, "meets_target": ok}


def by_kind(truth: pd.DataFrame, scores: np.ndarray, threshold: float) -> list[dict[str, Any]]:
    """Share of each group scored at or above ``threshold`` (probabilities, like the checkpoint's).

    Rows: ``sanity lenses`` (target >= 99%), ``complete rings`` and ``red sources`` among them
    (the same target; the latter only where the truth has ``source_red``),
    ``lens`` (all lenses, no target), then each non-lens kind (target <= 1%), in order of appearance.
    """
    scores = np.asarray(scores, dtype=np.float64)
    above = scores >= threshold
    sane = sanity_lenses(truth)
    rows = [_row("sanity lenses", above[sane], SANITY_LENS_TARGET, "at_least")]
    if sane.any():
        rings = sane & (truth["arc_azimuth_fraction"].to_numpy(np.float64) >= COMPLETE_RING_AZIMUTH)
        rows.append(_row("complete rings", above[rings], SANITY_LENS_TARGET, "at_least"))
        if "source_red" in truth:
            red = sane & truth["source_red"].astype("boolean").fillna(False).to_numpy(dtype=bool)
            rows.append(_row("red sources", above[red], SANITY_LENS_TARGET, "at_least"))
    if "kind" not in truth:
        is_lens = truth["is_lens"].to_numpy().astype(bool)
        return rows + [_row("lens", above[is_lens], None, ""), _row("non-lens", above[~is_lens], CONTAMINANT_TARGET,
                                                                     "at_most")]
    kinds = truth["kind"].astype(str).to_numpy()
    rows.append(_row("lens", above[kinds == "lens"], None, ""))
    for kind in pd.unique(kinds):
        if kind != "lens":
            rows.append(_row(str(kind), above[kinds == kind], CONTAMINANT_TARGET, "at_most"))
    return rows


def _offset_over_theta_e(truth: pd.DataFrame) -> np.ndarray:
    return truth["source_offset_arcsec"].to_numpy(np.float64) / truth["theta_e_arcsec"].to_numpy(np.float64)


def _lens_minus_arc_mag(truth: pd.DataFrame) -> np.ndarray:
    return truth["lens_mag"].to_numpy(np.float64) - truth["lensed_source_mag"].to_numpy(np.float64)


#: The breakdowns of :func:`by_truth`: (label, truth columns it needs, the quantity, bin edges).
#: Bins are ``[edges[i], edges[i+1])``, the first open below where its edge is -inf, the last open above.
TRUTH_BREAKDOWNS: tuple[tuple[str, tuple[str, ...], Any, tuple[float, ...]], ...] = (
    ("source offset / θE (0: behind the caustic centre)", ("source_offset_arcsec", "theta_e_arcsec"),
     _offset_over_theta_e, (0.0, 0.2, 0.5, 1.0)),
    ("deflector mag − lensed-source mag (> 0: arcs brighter)", ("lens_mag", "lensed_source_mag"),
     _lens_minus_arc_mag, (-np.inf, -2.0, -1.0, 0.0, 1.0)),
    ("arc azimuthal coverage", ("arc_azimuth_fraction",), "arc_azimuth_fraction",
     (SANITY_LENS_CUTS["arc_azimuth_fraction"], 0.5, COMPLETE_RING_AZIMUTH)),
    ("θE (″)", ("theta_e_arcsec",), "theta_e_arcsec", (SANITY_LENS_CUTS["theta_e_arcsec"], 2.0, 3.0)),
    ("PSF FWHM (″)", ("psf_fwhm_arcsec",), "psf_fwhm_arcsec", (0.0, 0.7, 0.9, 1.1)),
    ("arc S/N", ("arc_snr",), "arc_snr", (SANITY_LENS_CUTS["arc_snr"], 100.0, 300.0, 1000.0)),
)


def _bin_name(low: float, high: float | None) -> str:
    if high is None:
        return f"≥ {low:g}"
    return f"< {high:g}" if low == -np.inf else f"{low:g}–{high:g}"


def by_truth(truth: pd.DataFrame, scores: np.ndarray, threshold: float) -> list[dict[str, Any]]:
    """Share of the sanity lenses scored at or above ``threshold``, in bins of their truth.

    One entry per breakdown of :data:`TRUTH_BREAKDOWNS` whose columns the truth has:
    ``{"quantity", "bins": [{"bin", "low", "high", "n", "n_above", "share_above",
    "interval_95"}, ...]}`` (``low`` None for a first bin open below, ``high`` None for the last
    bin, open above). A sanity lens whose quantity is not finite falls in no bin. Empty without
    sanity lenses.
    """
    sane = sanity_lenses(truth)
    if not sane.any():
        return []
    above = np.asarray(scores, dtype=np.float64) >= threshold
    chosen = truth[sane]
    out = []
    for label, columns, quantity, edges in TRUTH_BREAKDOWNS:
        if not set(columns) <= set(truth.columns):
            continue
        values = quantity(chosen) if callable(quantity) else chosen[quantity].to_numpy(np.float64)
        bins = []
        for index, low in enumerate(edges):
            high = edges[index + 1] if index + 1 < len(edges) else None
            inside = np.isfinite(values) & (values >= low) & (values < high if high is not None else True)
            row = _row(_bin_name(low, high), above[sane][inside], None, "")
            bins.append({"bin": row["group"], "low": None if low == -np.inf else float(low),
                         "high": None if high is None else float(high),
                         **{key: row[key] for key in ("n", "n_above", "share_above", "interval_95")}})
        out.append({"quantity": label, "bins": bins})
    return out


def format_by_truth(breakdowns: list[dict[str, Any]]) -> str:
    """:func:`by_truth` as Markdown: one row per quantity, each bin as ``range: share (above/in the bin)``."""
    if not breakdowns:
        return ""
    lines = ["| sanity lenses by | share above the threshold in each bin (above / sanity lenses in the bin) |",
             "|---|---|"]
    for entry in breakdowns:
        cells = [f"{b['bin']}: " + ("—" if not b["n"] else f"{b['share_above']:.1%}")
                 + f" ({b['n_above']:,}/{b['n']:,})" for b in entry["bins"]]
        lines.append(f"| {entry['quantity']} | " + " · ".join(cells) + " |")
    return "\n".join(lines)


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The by-kind table as Markdown."""
    lines = ["| group | n | above threshold | share [95%] | target |", "|---|---:|---:|---|---|"]
    for row in rows:
        share = "—" if row["n"] == 0 else \
            f"{row['share_above']:.4f} [{row['interval_95'][0]:.4f}, {row['interval_95'][1]:.4f}]"
        target = "" if row["target"] is None else ("≥ " if row["target_is"] == "at_least" else "≤ ") + \
            f"{row['target']:.0%}" + ("" if row["meets_target"] is None else (" ✓" if row["meets_target"] else " ✗"))
        lines.append(f"| {row['group']} | {row['n']:,} | {row['n_above']:,} | {share} | {target} |")
    return "\n".join(lines)
