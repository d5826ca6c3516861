"""Cross-simulator validation: one model measured on held-out sets of every simulator, side by side.

A model is only as good as its worst simulator: metrics on the simulator it was trained on
say little about real images. :func:`cross_report` scores a checkpoint on several stamp
sets (typically the held-out sets of the lenstronomy and GalSim engines, plus their
sanity lenses) and reports, for each set and for all together:

* AUROC, TPR0 and TPR10 with stratified bootstrap 95% intervals;
* completeness for θE > 1.4″ and arc S/N > 20 (the DeepLens headline population) at the
  threshold giving exactly FPR ≤ 1% on that set, with its bootstrap interval, and at the
  checkpoint's own threshold with the FPR that threshold gives there;
* the sanity table of :mod:`lensnet.sanity`: unmistakable lenses and every contaminant
  kind at the checkpoint's threshold, and which sanity lenses reach it (by source offset,
  deflector-to-arc brightness, arc coverage, θE, seeing and arc S/N: :func:`lensnet.sanity.by_truth`);
* AUROC by arc S/N (:data:`ARC_SNR_EDGES`): the lenses of each bin against every non-lens
  of the set, which shows where a ranking fails (lenses whose arcs cannot be seen can only
  be ranked by their deflector; a finder should rank the bright ones near 1).

``python -m lensnet.evaluate --model M --data A --data B [--record]`` runs it; with
``--record`` the result is written as ``evaluation.json`` beside the checkpoint, and the
model card (``python -m lensnet.card``) shows it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lensnet import metrics, sanity

EVALUATION_FILE = "evaluation.json"
#: The DeepLens headline population (Lanusse et al. 2018).
BRIGHT_CUTS = {"theta_e_arcsec": 1.4, "arc_snr": 20.0}
#: Lenses a visual search would confirm (arc S/N > 20, θE above the seeing): ``auroc_visible``.
VISIBLE_CUTS = {"theta_e_arcsec": 1.0, "arc_snr": 20.0}
#: Bin edges of arc S/N (Lanusse et al. eq. 10) for ``auroc_by_arc_snr``; the last bin is open.
ARC_SNR_EDGES = (0.0, 5.0, 10.0, 20.0, 50.0, 100.0)


def bright_lenses(truth: pd.DataFrame, cuts: dict[str, float] = BRIGHT_CUTS) -> np.ndarray:
    """Lenses above every lower limit in ``cuts`` (default θE > 1.4″ and arc S/N > 20)."""
    mask = truth["is_lens"].to_numpy().astype(bool).copy()
    for column, lower in cuts.items():
        mask &= truth[column].to_numpy(np.float64) > lower
    return mask


def visible_lenses(truth: pd.DataFrame) -> np.ndarray:
    """Lenses with θE > 1″ and arc S/N > 20 (:data:`VISIBLE_CUTS`)."""
    return bright_lenses(truth, VISIBLE_CUTS)


def _completeness(negatives: np.ndarray, chosen: np.ndarray, fpr: float) -> float:
    """Share of ``chosen`` at or above the lowest threshold with FPR ≤ ``fpr`` on ``negatives``."""
    threshold = metrics.threshold_at_fpr(np.zeros(negatives.size), negatives, fpr)
    return float(np.mean(chosen >= threshold)) if chosen.size else float("nan")


def completeness_at_fpr(labels: np.ndarray, logits: np.ndarray, selected: np.ndarray, fpr: float = 0.01,
                        n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Share of the ``selected`` lenses at or above the lowest threshold with FPR ≤ ``fpr``.

    The threshold is :func:`lensnet.metrics.threshold_at_fpr` on this set's non-lenses.
    The 95% interval resamples the non-lenses (threshold re-derived) and the selected
    lenses independently.
    """
    y = np.asarray(labels).astype(bool)
    s = np.asarray(logits, dtype=np.float64)
    wanted = np.asarray(selected).astype(bool) & y
    negatives, chosen = s[~y], s[wanted]
    if negatives.size == 0:
        raise ValueError("completeness at a false-positive rate needs non-lenses")

    # the threshold of the value (and of every resample): taken on the non-lenses alone, so
    # that the count and the share quoted together agree
    threshold = metrics.threshold_at_fpr(np.zeros(negatives.size), negatives, fpr)
    result: dict[str, Any] = {"value": _completeness(negatives, chosen, fpr), "n_lenses": int(chosen.size),
                              "n_detected": int(np.count_nonzero(chosen >= threshold)),
                              "logit_threshold": threshold, "fpr": float(np.mean(negatives >= threshold)),
                              "interval_95": None}
    if n_bootstrap > 0 and chosen.size:
        rng = np.random.default_rng(seed)
        draws = [_completeness(rng.choice(negatives, negatives.size), rng.choice(chosen, chosen.size), fpr)
                 for _ in range(n_bootstrap)]
        result["interval_95"] = [float(q) for q in np.quantile(draws, [0.025, 0.975])]
    return result


def paired_difference(labels: np.ndarray, baseline: np.ndarray, logits: np.ndarray, selected: np.ndarray,
                      fpr: float = 0.01, n_bootstrap: int = 1000, seed: int = 0,
                      visible: np.ndarray | None = None) -> dict[str, Any]:
    """How much better ``logits`` rank the same objects than ``baseline``: AUROC and completeness
    of the ``selected`` lenses at FPR ≤ ``fpr``, each model's threshold taken on its own scores;
    with ``visible`` (a mask of lenses), also the AUROC of those lenses against every non-lens.

    The intervals resample the *objects* (the same draw for both models), so they are intervals
    of the difference: two models whose separate intervals overlap can still differ here.
    ``p_better`` is the share of resamples in which the difference is above 0.
    """
    y = np.asarray(labels).astype(bool)
    a, b = np.asarray(baseline, dtype=np.float64), np.asarray(logits, dtype=np.float64)
    wanted = np.asarray(selected).astype(bool) & y

    def completeness(scores: np.ndarray, index: np.ndarray) -> float:
        return _completeness(scores[index][~y[index]], scores[index][wanted[index]], fpr)

    figures = {"auroc": lambda scores, index: metrics.auroc(y[index], scores[index]), "completeness_bright_at_fpr":
               completeness}
    if visible is not None:
        seen = np.asarray(visible).astype(bool) & y

        def auroc_visible(scores: np.ndarray, index: np.ndarray) -> float:
            keep = index[seen[index] | ~y[index]]
            return metrics.auroc(y[keep], scores[keep]) if seen[keep].any() and (~y[keep]).any() else float("nan")

        figures["auroc_visible"] = auroc_visible
        result_visible = int(seen.sum())
    everything = np.arange(y.size)
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, y.size, y.size) for _ in range(n_bootstrap)]
    draws = [index for index in draws if y[index].any() and (~y[index]).any()]
    result: dict[str, Any] = {"n": int(y.size), "n_lenses": int(y.sum()), "n_selected": int(wanted.sum()), "fpr": fpr}
    if visible is not None:
        result["n_visible"] = result_visible
    for name, figure in figures.items():
        differences = np.array([figure(b, index) - figure(a, index) for index in draws])
        differences = differences[np.isfinite(differences)]
        low, high = np.quantile(differences, [0.025, 0.975]) if differences.size else (np.nan, np.nan)
        result[name] = {"baseline": figure(a, everything), "value": figure(b, everything),
                        "difference": figure(b, everything) - figure(a, everything),
                        "interval_95": [float(low), float(high)],
                        "p_better": float(np.mean(differences > 0)) if differences.size else float("nan")}
    return result


def render_paired(comparison: dict[str, Any], baseline: str, label: str) -> str:
    """The paired comparison as one Markdown table (two models of one name get "baseline"/"measured" tags)."""
    if baseline == label:
        baseline, label = f"{baseline} (baseline)", f"{label} (measured)"
    lines = [f"| on the same {comparison['n']:,} objects ({comparison['n_lenses']} lenses) | {baseline} | {label} | "
             "difference [95%, paired] | resamples with a gain |", "|---|---|---|---|---|"]
    names = {"auroc": "AUROC", "auroc_visible": f"AUROC, visible lenses θE>1″, S/N>20 ({comparison.get('n_visible')})",
             "completeness_bright_at_fpr":
             f"completeness θE>1.4″, S/N>20 at FPR ≤ {comparison['fpr']:.0%} ({comparison['n_selected']} lenses)"}
    for key, name in names.items():
        if key not in comparison:
            continue
        entry = comparison[key]
        low, high = entry["interval_95"]
        lines.append(f"| {name} | {entry['baseline']:.4f} | {entry['value']:.4f} | {entry['difference']:+.4f} "
                     f"[{low:+.4f}, {high:+.4f}] | {entry['p_better']:.0%} |")
    return "\n".join(lines)


def render_paired_sets(paired: dict[str, Any], label: str) -> str:
    """``report["paired"]`` of :func:`lensnet.evaluate.evaluate_sets`: one paired table per held-out set."""
    baseline = paired["baseline"]["name"]
    parts = [f"Against `{baseline}` on the same stamps (paired bootstrap 95% intervals of the difference):"]
    for set_label, comparison in paired["sets"].items():
        parts += ["", f"{set_label}:", "", render_paired(comparison, baseline, label)]
    return "\n".join(parts)


def _interval(function: Any, y: np.ndarray, s: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"value": float(function(y, s)), "interval_95": None}
    if n_bootstrap > 0:
        entry["interval_95"] = list(metrics.bootstrap_interval(function, y, s, n_resamples=n_bootstrap, seed=seed))
    return entry


def headline(truth: pd.DataFrame, logits: np.ndarray, threshold: float, n_bootstrap: int = 1000,
             seed: int = 0, target_fpr: float = 0.01) -> dict[str, Any]:
    """The cross-simulator row of one stamp set (see the module docstring)."""
    y = truth["is_lens"].to_numpy().astype(bool)
    s = np.asarray(logits, dtype=np.float64)
    scores = 1.0 / (1.0 + np.exp(-np.clip(s, -700, 700)))
    bright = bright_lenses(truth)
    row: dict[str, Any] = {"n": int(y.size), "n_lenses": int(y.sum())}
    if y.any() and (~y).any():
        row["auroc"] = _interval(metrics.auroc, y, s, n_bootstrap, seed)
        row["tpr0"] = _interval(lambda a, b: metrics.tpr_at_fp(a, b, 0), y, s, n_bootstrap, seed)
        row["tpr10"] = _interval(lambda a, b: metrics.tpr_at_fp(a, b, 10), y, s, n_bootstrap, seed)
        row["completeness_bright_at_fpr"] = completeness_at_fpr(y, s, bright, target_fpr, n_bootstrap, seed)
        row["completeness_all_at_fpr"] = completeness_at_fpr(y, s, y, target_fpr, 0, seed)
    if (~y).any():
        row["fpr_at_threshold"] = float(np.mean(scores[~y] >= threshold))
    if bright.any():
        row["completeness_bright_at_threshold"] = float(np.mean(scores[bright] >= threshold))
    row["sanity"] = sanity.by_kind(truth, scores, threshold)
    row["sanity_by_truth"] = sanity.by_truth(truth, scores, threshold)
    if "arc_snr" in truth.columns and y.any() and (~y).any():
        row["auroc_by_arc_snr"] = auroc_by_bin(y, s, truth["arc_snr"].to_numpy(np.float64), ARC_SNR_EDGES)
    return row


def auroc_by_bin(labels: np.ndarray, logits: np.ndarray, values: np.ndarray,
                 edges: Sequence[float]) -> list[dict[str, Any]]:
    """AUROC of the lenses whose ``values`` lie in each bin ``[edges[i], edges[i+1])`` (the last bin
    open above) against every non-lens; ``auroc`` is None for a bin without lenses."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(logits, dtype=np.float64)
    negatives = s[~y]
    bins = []
    for index, low in enumerate(edges):
        high = edges[index + 1] if index + 1 < len(edges) else None
        chosen = y & (values >= low) & (values < high if high is not None else True)
        auroc = None
        if chosen.any():
            auroc = float(metrics.auroc(np.r_[np.ones(int(chosen.sum())), np.zeros(negatives.size)],
                                        np.r_[s[chosen], negatives]))
        bins.append({"low": float(low), "high": None if high is None else float(high),
                     "n_lenses": int(chosen.sum()), "auroc": auroc})
    return bins


def render_auroc_by_bin(rows: dict[str, dict[str, Any]], key: str = "auroc_by_arc_snr",
                        quantity: str = "arc S/N") -> str:
    """One row per set of :func:`auroc_by_bin` (empty when no row has ``key``)."""
    measured = {label: row[key] for label, row in rows.items() if row.get(key)}
    if not measured:
        return ""
    bins = next(iter(measured.values()))
    names = [f"{b['low']:g}–{b['high']:g}" if b["high"] is not None else f"≥ {b['low']:g}" for b in bins]
    lines = [f"| {quantity} of the lenses | " + " | ".join(names) + " |", "|---|" + "---|" * len(bins)]
    for label, entries in measured.items():
        cells = ["—" if e["auroc"] is None else f"{e['auroc']:.3f} ({e['n_lenses']:,})" for e in entries]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cross_report(truths: Sequence[pd.DataFrame], logits: Sequence[np.ndarray], labels: Sequence[str],
                 threshold: float, n_bootstrap: int = 1000, seed: int = 0, target_fpr: float = 0.01
                 ) -> dict[str, Any]:
    """Rows for every stamp set and for all of them together (``"all"``)."""
    rows = {label: headline(truth, logit, threshold, n_bootstrap, seed, target_fpr)
            for truth, logit, label in zip(truths, logits, labels, strict=True)}
    if len(truths) > 1:
        rows["all"] = headline(pd.concat(list(truths), ignore_index=True), np.concatenate(list(logits)), threshold,
                               n_bootstrap, seed, target_fpr)
    return {"threshold": threshold, "target_fpr": target_fpr, "sets": rows}


def _fmt(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "—"
    interval = entry.get("interval_95")
    if interval:
        return f"{entry['value']:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]"
    return f"{entry['value']:.4f}"


def render_rows(rows: dict[str, dict[str, Any]], first_column: str = "held-out set") -> str:
    """The cross-simulator table (one row per stamp set or survey) as Markdown."""
    lines = [f"| {first_column} | stamps (lenses) | AUROC [95%] | TPR0 | TPR10 | completeness θE>1.4″, S/N>20 at "
             "FPR ≤ 1% [95%] | at the model's threshold (FPR there) |",
             "|---|---|---|---|---|---|---|"]
    for label, row in rows.items():
        bright = row.get("completeness_bright_at_fpr") or {}
        at_threshold = row.get("completeness_bright_at_threshold")
        fpr = row.get("fpr_at_threshold")
        lines.append(
            f"| {label} | {row['n']:,} ({row['n_lenses']:,}) | {_fmt(row.get('auroc'))} | "
            f"{_fmt({'value': row['tpr0']['value']}) if 'tpr0' in row else '—'} | "
            f"{_fmt({'value': row['tpr10']['value']}) if 'tpr10' in row else '—'} | "
            f"{_fmt(bright)} ({bright.get('n_detected', 0)}/{bright.get('n_lenses', 0)}) | "
            f"{'—' if at_threshold is None else f'{at_threshold:.4f}'} "
            f"({'—' if fpr is None else f'{fpr:.4f}'}) |")
    return "\n".join(lines)


def render_tables(report: dict[str, Any]) -> str:
    """The cross-simulator table and the sanity table of the combined sets, as Markdown."""
    combined = report["sets"].get("all") or next(iter(report["sets"].values()))
    lines = [render_rows(report["sets"]), "", f"At the model's threshold (p ≥ {report['threshold']:.4f}), all sets "
             "together:", "", sanity.format_rows(combined["sanity"])]
    missed = sanity.format_by_truth(combined.get("sanity_by_truth") or [])
    if missed:
        lines += ["", "Which sanity lenses reach the threshold, all sets together:", "", missed]
    by_snr = render_auroc_by_bin(report["sets"])
    if by_snr:
        lines += ["", "AUROC of the lenses in each arc S/N bin against every non-lens of the set (lenses in the bin):",
                  "", by_snr]
    return "\n".join(lines)


def record_survey(directory: str | Path, label: str, row: dict[str, Any], details: dict[str, Any]) -> Path:
    """Add a whole survey's row (``pipeline.against_truth --record``) to ``evaluation.json``.

    ``details`` should carry the ``weights_sha256`` of the model that scored the survey: the model
    card shows only rows measured with the weights it describes.
    """
    path = Path(directory) / EVALUATION_FILE
    content = json.loads(path.read_text()) if path.is_file() else {}
    content.setdefault("surveys", {})[label] = {**row, **details}
    path.write_text(json.dumps(content, indent=2, allow_nan=False, default=_json_default) + "\n")
    return path


def record(directory: str | Path, report: dict[str, Any], command: str, data: Sequence[Any]) -> Path:
    """Write ``evaluation.json`` beside a checkpoint (the model card reads it).

    Survey rows recorded earlier by ``pipeline.against_truth`` are kept; the model card shows
    only those measured with the weights beside it (:func:`stale_surveys` names the others).
    """
    path = Path(directory) / EVALUATION_FILE
    content = {**report, "command": command, "data": list(data),
               "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if path.is_file():  # keep the surveys recorded by pipeline.against_truth
        surveys = json.loads(path.read_text()).get("surveys")
        if surveys:
            content["surveys"] = surveys
    path.write_text(json.dumps(content, indent=2, allow_nan=False, default=_json_default) + "\n")
    return path


def stale_labels(surveys: dict[str, dict[str, Any]], weights_sha256: str | None) -> list[str]:
    """Labels of the survey rows not measured with these weights (other or unknown ones)."""
    return [label for label, row in surveys.items()
            if weights_sha256 is None or row.get("weights_sha256") != weights_sha256]


def stale_surveys(directory: str | Path, weights_sha256: str | None) -> list[str]:
    """:func:`stale_labels` of the survey rows in a checkpoint's ``evaluation.json``."""
    path = Path(directory) / EVALUATION_FILE
    return stale_labels((json.loads(path.read_text()).get("surveys") or {}) if path.is_file() else {}, weights_sha256)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
