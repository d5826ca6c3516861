"""Presenting an evaluation report: a plain-text summary table and PNG plots.

Plots: ROC, precision-recall, selection function, score distributions. Figures are drawn
with matplotlib's object-oriented API on the Agg canvas (no pyplot, no display, no global
state), so this module is safe in workers and headless jobs; matplotlib is imported only
when a figure is drawn. Inputs are the labels, the logits and the report built by
:func:`lensnet.evaluate.full_report`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lensnet import metrics

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["format_summary", "plot_pr", "plot_roc", "plot_scores", "plot_selection_function", "write_plots"]

#: Axis labels of the selection-function columns; unknown columns use their own name.
PROPERTY_LABELS = {
    "theta_e_arcsec": "Einstein radius θE (arcsec)",
    "arc_snr": "arc S/N (Lanusse et al. eq. 10)",
    "npix_arc_1sigma": "arc pixels above 1σ (Bom et al.)",
}
#: Columns whose distribution spans decades and starts at 0: symmetric-log x axis.
LOG_PROPERTIES = {"arc_snr", "npix_arc_1sigma"}
_POINT_STYLES = {"checkpoint": ("o", "C3"), "target_fpr": ("s", "C0"), "shifted_probability_0.5": ("^", "C2")}


def _figure(n_panels: int, width: float = 5.0, height: float = 4.2) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * n_panels, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, [figure.add_subplot(1, n_panels, index + 1) for index in range(n_panels)]


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=110)
    return path


def _point_label(name: str, point: Mapping[str, Any]) -> str:
    names = {"checkpoint": "checkpoint threshold", "shifted_probability_0.5": "shifted p' ≥ 0.5"}
    label = names.get(name, f"FPR {point.get('target_fpr', 0):.1%} threshold")
    return f"{label} (p ≥ {point['threshold']:.4g})"


def plot_roc(path: Path, is_lens: np.ndarray, logits: np.ndarray, report: Mapping[str, Any]) -> Path:
    """ROC curve on linear and logarithmic FPR axes, with the report's operating points."""
    fpr, tpr, _ = metrics.roc_curve(is_lens, logits)
    n_negative = int((~is_lens).sum())
    figure, axes = _figure(2)
    for axis, log in zip(axes, (False, True)):
        axis.step(fpr, tpr, where="post", color="k", lw=1.2, label=f"AUROC {report['auroc']['value']:.4f}")
        for name, point in report["operating_points"].items():
            marker, colour = _POINT_STYLES.get(name, ("D", "C4"))
            axis.plot(point["fpr"]["value"], point["tpr"]["value"], marker, color=colour, label=_point_label(name, point))
        if log:
            axis.set_xscale("log")
            axis.set_xlim(0.5 / n_negative, 1.0)
            axis.set_title(f"TPR0 {report['tpr0']['value']:.3f}, TPR10 {report['tpr10']['value']:.3f}")
        else:
            axis.plot([0, 1], [0, 1], ls=":", color="grey")
            axis.set_title(f"{report['n_lenses']} lenses, {report['n_non_lenses']} non-lenses")
        axis.set_xlabel("false-positive rate")
        axis.set_ylabel("true-positive rate (completeness)")
        axis.set_ylim(0, 1.01)
        axis.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def plot_pr(path: Path, is_lens: np.ndarray, logits: np.ndarray, report: Mapping[str, Any]) -> Path:
    """Precision against recall at the evaluation set's prevalence and at the survey's."""
    fpr, tpr, _ = metrics.roc_curve(is_lens, logits)
    fpr, tpr = fpr[1:], tpr[1:]  # drop the empty selection
    n_pos, n_neg = int(is_lens.sum()), int((~is_lens).sum())
    precision = tpr * n_pos / (tpr * n_pos + fpr * n_neg)
    prevalence = report["prior_shift"]["target_prevalence"]
    purity = prevalence * tpr / (prevalence * tpr + (1 - prevalence) * fpr)
    figure, axes = _figure(2)
    axes[0].step(tpr, precision, where="post", color="k", lw=1.2,
                 label=f"PR-AUC {report['average_precision']['value']:.4f}")
    axes[0].set_title(f"evaluation prevalence {report['prevalence']:.3g}")
    axes[1].step(tpr, purity, where="post", color="k", lw=1.2, label="from TPR and FPR")
    axes[1].set_yscale("log")
    axes[1].set_title(f"survey prevalence {prevalence:g} (prior shift)")
    for name, point in report["operating_points"].items():
        marker, colour = _POINT_STYLES.get(name, ("D", "C4"))
        purity_value = point["purity_at_target_prevalence"]["value"]
        if point["precision_at_evaluation_prevalence"] is not None:
            axes[0].plot(point["tpr"]["value"], point["precision_at_evaluation_prevalence"], marker, color=colour,
                         label=_point_label(name, point))
        if purity_value:
            axes[1].plot(point["tpr"]["value"], purity_value, marker, color=colour, label=_point_label(name, point))
    for axis, ylabel in zip(axes, ("precision", "purity")):
        axis.set_xlabel("recall (completeness)")
        axis.set_ylabel(ylabel)
        axis.set_xlim(0, 1.01)
        axis.grid(alpha=0.3)
        axis.legend(loc="lower left", fontsize=8)
    return _save(figure, path)


def plot_selection_function(path: Path, selection: Mapping[str, Any]) -> Path:
    """Completeness with binomial intervals in bins of each truth column, per threshold."""
    columns = list(selection.get("checkpoint", {}))
    figure, axes = _figure(max(len(columns), 1))
    if not columns:
        axes[0].text(0.5, 0.5, "no selection-function truth columns", ha="center", va="center")
    for axis, column in zip(axes, columns):
        counts = axis.twinx()
        for name in ("checkpoint", "target_fpr"):
            entry = selection.get(name, {}).get(column)
            if entry is None:
                continue
            rows = [row for row in entry["rows"] if row["completeness"] is not None]
            lo = np.array([row["bin_lo"] for row in rows])
            hi = np.array([row["bin_hi"] for row in rows])
            centre = (lo + hi) / 2
            value = np.array([row["completeness"] for row in rows])
            error = np.array([[v - row["ci_lower"], row["ci_upper"] - v] for v, row in zip(value, rows)]).T
            error = np.clip(error, 0.0, None)  # rounding can put a bound a hair inside 0 or 1
            marker, colour = _POINT_STYLES[name]
            axis.errorbar(centre, value, yerr=error.reshape(2, -1), xerr=np.vstack([centre - lo, hi - centre]),
                          fmt=marker, color=colour, ms=4, capsize=2, lw=1,
                          label="checkpoint threshold" if name == "checkpoint" else "target-FPR threshold")
            if name == "checkpoint":
                edges = np.asarray(entry["bins"])
                counts.stairs([row["n_lenses"] for row in entry["rows"]], edges, color="grey", alpha=0.4)
        counts.set_ylabel("lenses per bin", color="grey")
        axis.set_zorder(counts.get_zorder() + 1)
        axis.patch.set_visible(False)
        if column in LOG_PROPERTIES:
            axis.set_xscale("symlog", linthresh=1.0)
        axis.set_xlabel(PROPERTY_LABELS.get(column, column))
        axis.set_ylabel(f"completeness ({selection.get('interval', 'wilson')} 1σ interval)")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    if columns:
        axes[0].legend(loc="lower right", fontsize=8)
    return _save(figure, path)


def plot_scores(path: Path, is_lens: np.ndarray, logits: np.ndarray, report: Mapping[str, Any]) -> Path:
    """Histograms of the logits of lenses and non-lenses, with the thresholds."""
    figure, axes = _figure(1, width=6.5)
    axis = axes[0]
    edges = np.histogram_bin_edges(logits, bins=80)
    axis.hist(logits[~is_lens], bins=edges, histtype="step", color="C0", label="non-lenses")
    axis.hist(logits[is_lens], bins=edges, histtype="step", color="C3", label="lenses")
    for name, point in report["operating_points"].items():
        if point["logit_threshold"] is not None:
            axis.axvline(point["logit_threshold"], ls="--", lw=1, color=_POINT_STYLES.get(name, ("", "C4"))[1],
                         label=_point_label(name, point))
    axis.set_yscale("log")
    axis.set_xlabel("logit")
    axis.set_ylabel("stamps")
    axis.legend(loc="upper left", fontsize=8)
    return _save(figure, path)


def write_plots(out: Path, is_lens: np.ndarray, logits: np.ndarray, report: Mapping[str, Any]) -> dict[str, Path]:
    """All plots into ``out``: roc.png, pr.png, selection_function.png, scores.png."""
    out = Path(out)
    is_lens = np.asarray(is_lens, dtype=bool)
    logits = np.asarray(logits, dtype=np.float64)
    return {
        "roc": plot_roc(out / "roc.png", is_lens, logits, report),
        "pr": plot_pr(out / "pr.png", is_lens, logits, report),
        "selection_function": plot_selection_function(out / "selection_function.png", report["selection_function"]),
        "scores": plot_scores(out / "scores.png", is_lens, logits, report),
    }


def format_summary(report: Mapping[str, Any]) -> str:
    """The headline numbers as a plain-text table."""
    def cell(entry: Any) -> tuple[str, str]:
        if isinstance(entry, Mapping):
            interval = entry.get("interval_95")
            bounds = f"[{interval[0]:.4f}, {interval[1]:.4f}]" if interval and None not in interval else ""
            if entry.get("lower_95_binomial") is not None:
                bounds += f"  >= {entry['lower_95_binomial']:.3g} (binomial bound)"
            value = entry.get("value")
            return (f"{value:.4f}" if value is not None else "n/a"), bounds
        return (f"{entry:.4f}" if isinstance(entry, (int, float)) else "n/a"), ""

    rows = [("AUROC", report["auroc"]), ("PR-AUC (average precision)", report["average_precision"]),
            ("TPR0", report["tpr0"]), ("TPR10", report["tpr10"])]
    for entry in report["fbeta"]:
        rows.append((f"max F_beta, beta={entry['beta']:.4g} (beta^2={entry['beta_squared']:.4g}, at p>="
                     f"{entry['threshold']:.4f})",
                     entry["max_fbeta"]))
    p_target = report["prior_shift"]["target_prevalence"]
    for name, label in (("target_fpr", f"FPR {report['operating_points']['target_fpr']['target_fpr']:.2%} threshold"),
                        ("checkpoint", "checkpoint threshold"), ("shifted_probability_0.5", "shifted p'>=0.5")):
        point = report["operating_points"][name]
        rows += [(f"{label} p>={point['threshold']:.4f}: completeness", point["tpr"]),
                 (f"{label}: FPR", point["fpr"]),
                 (f"{label}: purity at prevalence {p_target:g}", point["purity_at_target_prevalence"]),
                 (f"{label}: purity from shifted probabilities", point["expected_purity_from_shifted_probabilities"])]
    if "completeness_theta_e_gt_1.4_snr_gt_20" in report:
        rows.append(("completeness θE>1.4″, S/N>20 (checkpoint threshold)",
                     report["completeness_theta_e_gt_1.4_snr_gt_20"]["value"]))
    width = max(len(label) for label, _ in rows)
    lines = [f"{report['n']} stamps, {report['n_lenses']} lenses", f"{'metric':<{width}}  {'value':>8}  95% interval"]
    lines += [f"{label:<{width}}  {value:>8}  {bounds}" for label, (value, bounds) in
              ((label, cell(entry)) for label, entry in rows)]
    return "\n".join(lines)
