"""Evaluate a checkpoint on a labelled stamp set: ``python -m lensnet.evaluate --model NAME --data SPEC``.

The stamps are scored with the checkpoint's own normalisation, and every number is
computed exactly from the ranked logits with :mod:`lensnet.metrics`:

* AUROC, PR-AUC (average precision), TPR0 and TPR10;
* maximum F_beta, by default for beta^2 = 0.001 (Bom et al. 2022) and beta = 0.03
  (Wilde et al.), with the threshold where it is reached;
* two operating points: the threshold at a target false-positive rate (DeepLens: 1%) and
  the checkpoint's own threshold, each with completeness, FPR and the purity expected at a
  survey's lens prevalence (from the measured rates, and from the prior-shifted
  probabilities of Lanusse et al. 2018, eq. 5);
* the selection function: completeness against Einstein radius, arc S/N and arc pixel
  count (truth columns ``theta_e_arcsec``, ``arc_snr``, ``npix_arc_1sigma``) with binomial
  intervals;
* stratified percentile-bootstrap 95% intervals on the headline numbers.

``--out DIR`` receives ``report.json``, ``summary.txt``, ``scores.parquet`` (truth plus
logit and score per stamp) and the PNG plots of :mod:`lensnet.plots`.

``--model a,b,...`` measures an ensemble exactly as ``run_survey.py --model a,b`` would
score with it (:mod:`lensnet.scorer`): the mean of the members' probabilities, flagged at
the mean of their thresholds; ``scores.parquet`` adds each member's ``logit_<name>``.

Longer than the project's ~400-line guide: every number of an evaluation report is defined here,
next to the others it is compared with; the side-by-side tables live in lensnet.crosssim.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from scipy import stats

from lensnet import crosssim, metrics, sanity
from lensnet.checkpoint import LoadedModel, ModelConfig
from lensnet.data import StampSet, describe_spec, stamp_set_from_spec
from lensnet.plots import format_summary, write_plots
from lensnet.predict import forward_logits
from lensnet.preprocess import normalise
from lensnet.scorer import Scorer, split_models

__all__ = [
    "DEFAULT_BINS",
    "EvaluationSettings",
    "evaluate",
    "evaluation_report",
    "full_report",
    "predict_logits",
    "score_stamps",
    "selection_function",
]

#: Bin edges of the selection function per truth column. The outer edges widen to take in
#: every finite lens value of the data (see :func:`selection_function`).
DEFAULT_BINS: dict[str, tuple[float, ...]] = {
    "theta_e_arcsec": (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0),
    "arc_snr": (0.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0),
    "npix_arc_1sigma": (0.0, 1.0, 10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0),
}
#: One-sigma probability content of the binomial intervals on completeness.
ONE_SIGMA = 0.6827
Metric = Callable[[np.ndarray, np.ndarray], float]


@dataclass
class EvaluationSettings:
    """What to measure (CLI flags share these names).

    Attributes:
        betas: F_beta weights (small beta favours purity).
        target_fpr: false-positive rate that sets the comparison threshold.
        target_prevalence: lens fraction of the survey for prior-shift recalibration.
        n_bootstrap: bootstrap resamples for the 95% intervals (0: no intervals).
        seed: bootstrap seed.
        bins: selection-function bin edges per truth column.
        interval: binomial interval on completeness ("wilson", "jeffreys", "clopper-pearson").
    """

    betas: tuple[float, ...] = (metrics.BETA_BOM, metrics.BETA_WILDE)
    target_fpr: float = 0.01
    target_prevalence: float = 1e-4
    n_bootstrap: int = 1000
    seed: int = 0
    bins: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_BINS))
    interval: str = "wilson"
    required_columns: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------


@torch.no_grad()
def predict_logits(module: torch.nn.Module, inputs: torch.Tensor, device: torch.device,
                   batch_size: int = 512) -> np.ndarray:
    """Logits of already normalised inputs, in eval mode and batches, as a float32 array."""
    module.eval()
    outputs = [module(inputs[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(inputs), batch_size)]
    return torch.cat(outputs).numpy() if outputs else np.empty(0, np.float32)


def score_stamps(loaded: LoadedModel, stamps: np.ndarray, device: torch.device, batch_size: int = 256,
                 chunk_size: int = 4096, tta: bool = False) -> np.ndarray:
    """Logits of raw stamps, normalised as the checkpoint's config says, chunk by chunk.

    With ``tta`` each stamp is scored in its 8 dihedral orientations and the logit of the
    mean probability is returned, as ``run_survey.py --tta`` does.
    """
    config = loaded.config
    parts = []
    for start in range(0, len(stamps), chunk_size):
        inputs, _ = normalise(stamps[start : start + chunk_size], config.normalisation, **config.normalisation_params)
        if tta:
            parts.append(forward_logits(loaded, torch.from_numpy(inputs), batch_size, precision="fp32", tta=True))
        else:
            parts.append(predict_logits(loaded.module, torch.from_numpy(inputs), device, batch_size))
    return np.concatenate(parts) if parts else np.empty(0, np.float32)


def check_compatible(data: StampSet, config: ModelConfig) -> None:
    """Refuse data whose bands, stamp size or pixel scale differ from the model's."""
    if data.bands and list(data.bands) != list(config.bands):
        raise ValueError(f"the data's bands {data.bands} differ from the model's {config.bands}")
    if data.stamps.shape[-1] != config.stamp_size_px:
        raise ValueError(f"the data's stamps are {data.stamps.shape[-1]} px; the model expects "
                         f"{config.stamp_size_px} px (resample with lensnet.preprocess.resample)")
    scale = float(data.attrs.get("pixel_scale_arcsec", float("nan")))
    if math.isfinite(scale) and math.isfinite(config.pixel_scale_arcsec) and \
            not math.isclose(scale, config.pixel_scale_arcsec, rel_tol=0.01):
        raise ValueError(f"the data's pixel scale {scale}″ differs from the model's {config.pixel_scale_arcsec}″")


def _sigmoid(logit: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logit, np.float64), -700, 700)))


def _logit(probability: float) -> float:
    if probability <= 0.0:
        return -math.inf
    if probability >= 1.0:
        return math.inf
    return math.log(probability) - math.log1p(-probability)


# --------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------


def _with_interval(metric: Metric, y: np.ndarray, s: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """``{"value", "interval_95"}``; the interval is None without resamples."""
    entry: dict[str, Any] = {"value": float(metric(y, s)), "interval_95": None}
    if n_bootstrap > 0:
        low, high = metrics.bootstrap_interval(metric, y, s, n_resamples=n_bootstrap, seed=seed)
        entry["interval_95"] = [low, high]
    return entry


def _ranking_metrics(y: np.ndarray, s: np.ndarray, n_bootstrap: int, seed: int) -> dict[str, Any]:
    functions: dict[str, Metric] = {
        "auroc": metrics.auroc, "average_precision": metrics.average_precision,
        "tpr0": lambda yy, ss: metrics.tpr_at_fp(yy, ss, 0), "tpr10": lambda yy, ss: metrics.tpr_at_fp(yy, ss, 10)}
    return {name: _with_interval(function, y, s, n_bootstrap, seed) for name, function in functions.items()}


def evaluation_report(truth: pd.DataFrame, logits: np.ndarray, threshold: float,
                      n_resamples: int = 200) -> dict[str, Any]:
    """Headline metrics with bootstrap intervals, and completeness where DeepLens quotes it.

    This is what the trainer records in a checkpoint's config (and the model card shows):
    ``auroc``, ``average_precision``, ``tpr0``, ``tpr10`` as ``{"value", "interval_95"}``,
    ``fpr_at_threshold``, ``completeness_all_lenses`` and, when the truth has
    ``theta_e_arcsec`` and ``arc_snr``, ``completeness_theta_e_gt_1.4_snr_gt_20``.
    ``threshold`` is a probability, applied as ``sigmoid(logit) >= threshold``.
    """
    labels = truth["is_lens"].to_numpy().astype(int)
    scores = _sigmoid(logits)
    report: dict[str, Any] = {"n": int(len(labels)), "n_lenses": int(labels.sum())}
    report.update(_ranking_metrics(labels, np.asarray(logits, np.float64), n_resamples, seed=0))
    report["fpr_at_threshold"] = float((scores[labels == 0] >= threshold).mean())
    if {"theta_e_arcsec", "arc_snr"} <= set(truth.columns):
        bright = (labels == 1) & (truth["theta_e_arcsec"].to_numpy() > 1.4) & (truth["arc_snr"].to_numpy() > 20)
        detected = int((scores[bright] >= threshold).sum())
        report["completeness_theta_e_gt_1.4_snr_gt_20"] = {
            "value": detected / max(int(bright.sum()), 1), "n_lenses": int(bright.sum()), "n_detected": detected}
    report["completeness_all_lenses"] = float((scores[labels == 1] >= threshold).mean())
    return report


def _purity(tpr: float, fpr: float, prevalence: float) -> float:
    """Fraction of lenses among the selected objects of a population with this prevalence."""
    selected = prevalence * tpr + (1.0 - prevalence) * fpr
    return prevalence * tpr / selected if selected > 0 else float("nan")


def _operating_point(y: np.ndarray, s: np.ndarray, logit_threshold: float, train_prevalence: float,
                     settings: EvaluationSettings) -> dict[str, Any]:
    """Completeness, FPR and purity of the selection ``logit >= logit_threshold``.

    Purity at the survey prevalence p' comes two ways: from the measured rates,
    ``p' TPR / (p' TPR + (1 - p') FPR)`` (with a conservative 95% lower bound from
    Clopper-Pearson limits on TPR and FPR), and as the mean prior-shifted probability of the
    selected objects, the evaluation set being reweighted to p' (right if the scores are
    calibrated).
    """
    p_target = settings.target_prevalence
    selected = s >= logit_threshold
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    tp, fp = int(np.count_nonzero(selected & y)), int(np.count_nonzero(selected & ~y))
    tpr_low = stats.beta.ppf(0.025, tp, n_pos - tp + 1) if tp > 0 else 0.0
    fpr_high = stats.beta.ppf(0.975, fp + 1, n_neg - fp) if fp < n_neg else 1.0
    shift = _logit(p_target) - _logit(train_prevalence)
    weights = np.where(y, p_target * len(y) / n_pos, (1.0 - p_target) * len(y) / n_neg)[selected]
    shifted = _sigmoid(s[selected] + shift)

    def completeness(yy: np.ndarray, ss: np.ndarray) -> float:
        return float(np.mean(ss[yy] >= logit_threshold))

    def false_positive_rate(yy: np.ndarray, ss: np.ndarray) -> float:
        return float(np.mean(ss[~yy] >= logit_threshold))

    def purity(yy: np.ndarray, ss: np.ndarray) -> float:
        return _purity(completeness(yy, ss), false_positive_rate(yy, ss), p_target)

    boot = (settings.n_bootstrap, settings.seed)
    return {
        "threshold": float(_sigmoid(logit_threshold)), "logit_threshold": float(logit_threshold),
        "n_selected": tp + fp, "n_lenses_selected": tp,
        "tpr": _with_interval(completeness, y, s, *boot), "fpr": _with_interval(false_positive_rate, y, s, *boot),
        "precision_at_evaluation_prevalence": tp / (tp + fp) if tp + fp else None,
        "shifted_threshold": float(_sigmoid(logit_threshold + shift)),
        "purity_at_target_prevalence": {**_with_interval(purity, y, s, *boot),
                                        "lower_95_binomial": _purity(float(tpr_low), float(fpr_high), p_target)},
        "expected_purity_from_shifted_probabilities":
            float(np.sum(weights * shifted) / np.sum(weights)) if selected.any() else None,
    }


def _edges(default: Sequence[float], values: np.ndarray) -> np.ndarray:
    """Default edges, the outer ones widened to the finite values' range."""
    edges = np.asarray(default, np.float64).copy()
    finite = values[np.isfinite(values)]
    if finite.size:
        edges[0], edges[-1] = min(edges[0], finite.min()), max(edges[-1], finite.max())
    return edges


def selection_function(truth: pd.DataFrame, logits: np.ndarray, logit_threshold: float,
                       bins: Mapping[str, Sequence[float]] | None = None, interval: str = "wilson",
                       confidence: float = ONE_SIGMA) -> dict[str, Any]:
    """Completeness of ``logit >= logit_threshold`` in bins of each truth column present.

    The outer bin edges widen to include every finite lens value; lenses whose value is
    NaN are counted in ``n_missing``. Intervals: :func:`lensnet.metrics.completeness_by_bin`.

    Returns:
        ``{column: {"bins", "n_missing", "rows": [{bin_lo, bin_hi, n_lenses, n_detected,
        completeness, ci_lower, ci_upper}, ...]}}``; empty bins have None for the ratios.
    """
    is_lens = truth["is_lens"].to_numpy().astype(bool)
    result: dict[str, Any] = {}
    for column, default in (bins if bins is not None else DEFAULT_BINS).items():
        if column not in truth.columns:
            continue
        values = truth[column].to_numpy(np.float64)
        edges = _edges(default, values[is_lens])
        table = metrics.completeness_by_bin(is_lens, logits, logit_threshold, values, edges,
                                            confidence=confidence, interval=interval)  # type: ignore[arg-type]
        result[column] = {"bins": edges.tolist(), "n_missing": int(np.isnan(values[is_lens]).sum()),
                          "rows": table.to_dict(orient="records")}
    return json_safe(result)


def full_report(truth: pd.DataFrame, logits: np.ndarray, threshold: float, train_prevalence: float,
                settings: EvaluationSettings | None = None) -> dict[str, Any]:
    """Every number of an evaluation, JSON-ready (no NaN: None instead).

    Args:
        truth: one row per stamp with ``is_lens`` and, optionally, the selection-function columns.
        logits: the model's logits, same order.
        threshold: the checkpoint's decision threshold (a probability).
        train_prevalence: lens fraction the model was trained at.
        settings: what to measure; defaults of :class:`EvaluationSettings` if None.
    """
    settings = settings or EvaluationSettings()
    y = truth["is_lens"].to_numpy().astype(bool)
    s = np.asarray(logits, np.float64)
    boot = (settings.n_bootstrap, settings.seed)
    report: dict[str, Any] = {
        "n": int(y.size), "n_lenses": int(y.sum()), "n_non_lenses": int((~y).sum()), "prevalence": float(y.mean()),
        **_ranking_metrics(y, s, *boot), "fbeta": []}
    for beta in settings.betas:
        best, at = metrics.max_fbeta(y, s, beta)
        entry = _with_interval(lambda yy, ss, b=beta: metrics.max_fbeta(yy, ss, b)[0], y, s, *boot)
        report["fbeta"].append({"beta": float(beta), "beta_squared": float(beta) ** 2, "max_fbeta": entry,
                                "threshold": float(_sigmoid(at)), "logit_threshold": at,
                                "tpr": float(np.mean(s[y] >= at)), "fpr": float(np.mean(s[~y] >= at))})
    at_fpr = metrics.threshold_at_fpr(y, s, settings.target_fpr)
    checkpoint_logit = _logit(threshold)
    shift_to_half = _logit(train_prevalence) - _logit(settings.target_prevalence)
    report["operating_points"] = {
        "target_fpr": {"target_fpr": settings.target_fpr, **_operating_point(y, s, at_fpr, train_prevalence, settings)},
        "checkpoint": _operating_point(y, s, checkpoint_logit, train_prevalence, settings),
        "shifted_probability_0.5": _operating_point(y, s, shift_to_half, train_prevalence, settings),
    }
    tpr_at_fpr = _with_interval(
        lambda yy, ss: float(np.mean(ss[yy] >= metrics.threshold_at_fpr(yy, ss, settings.target_fpr))), y, s, *boot)
    report["operating_points"]["target_fpr"]["tpr"] = tpr_at_fpr  # threshold re-derived in every resample
    report["prior_shift"] = {"train_prevalence": train_prevalence, "target_prevalence": settings.target_prevalence,
                             "logit_offset": _logit(settings.target_prevalence) - _logit(train_prevalence)}
    report["selection_function"] = {
        "confidence": ONE_SIGMA, "interval": settings.interval,
        "checkpoint": selection_function(truth, s, checkpoint_logit, settings.bins, settings.interval),
        "target_fpr": selection_function(truth, s, at_fpr, settings.bins, settings.interval)}
    legacy = evaluation_report(truth, logits, threshold, n_resamples=0)
    for key in ("fpr_at_threshold", "completeness_theta_e_gt_1.4_snr_gt_20", "completeness_all_lenses"):
        if key in legacy:
            report[key] = legacy[key]
    return json_safe(report)


def _add_member_logits(scores: pd.DataFrame, by_member: dict[str, np.ndarray] | None) -> None:
    """An ensemble's scores.parquet also holds each member's logit, as ``logit_<name>``."""
    for name, values in (by_member or {}).items():
        scores[f"logit_{name}"] = values


def json_safe(value: Any) -> Any:
    """Plain Python containers and numbers; NaN and infinities become None."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(item) for item in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


# --------------------------------------------------------------------------------------
# Running an evaluation
# --------------------------------------------------------------------------------------


def _simulation_key(spec: Any) -> tuple | None:
    if isinstance(spec, dict) and "simulate" in spec:
        settings = spec["simulate"]
        # chunk k of (engine, profile, seed) is seeded [seed, k] whatever n is: the same stamps
        return settings.get("engine", "lenstronomy"), settings.get("profile"), settings.get("seed")
    if isinstance(spec, str):
        return ("directory", str(Path(spec).resolve()))
    return None


def _shares_simulation(spec: str | dict, config: ModelConfig) -> str | None:
    """``"data"`` if ``spec`` repeats (part of) the data the checkpoint was trained and validated on."""
    mine = _simulation_key(spec)
    if mine is None:
        return None
    recipe = config.training.get("recipe", {})
    for role in ("data",):
        theirs = recipe.get(role)
        for member in theirs if isinstance(theirs, list) else [theirs]:
            if _simulation_key(member) == mine:
                return role
    return None


def _score(model: str | Path, data: str | dict | list, device: str, batch_size: int, limit: int | None,
           tta: bool) -> tuple[Scorer, StampSet, np.ndarray, dict[str, np.ndarray], str | None, torch.device]:
    """Load (or simulate) a stamp set, check it against the model(s) and score it.

    Returns the scorer, the stamps, the (ensemble's) logits, each member's logits, whether
    the data repeats a member's training data, and the device.
    """
    stamp_set = stamp_set_from_spec(data, limit)  # simulate before CUDA is initialised
    chosen = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                          ("cpu" if device == "auto" else device))
    scorer = Scorer.load(model, device=chosen)
    for member in scorer.members:
        check_compatible(stamp_set, member.config)
    overlap = next(filter(None, (_shares_simulation(part, member.config) for member in scorer.members
                                 for part in (data if isinstance(data, list) else [data]))), None)
    if overlap:
        print(f"warning: {describe_spec(data)} repeats (part of) the training data of {scorer.name} (same stamps): it "
              "is not held-out data", file=sys.stderr)
    by_member = scorer.member_logits(lambda member: score_stamps(member, stamp_set.stamps, chosen, batch_size, tta=tta))
    return scorer, stamp_set, Scorer.combine(by_member), by_member, overlap, chosen


def _write(out: Path, report: dict[str, Any], stamp_set: StampSet, logits: np.ndarray, plots: bool,
           by_member: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        report["plots"] = {name: path.name for name, path in write_plots(
            out, stamp_set.truth["is_lens"].to_numpy().astype(bool), logits, report).items()}
    scores = stamp_set.truth.copy()
    scores["logit"], scores["score"] = logits, _sigmoid(logits).astype(np.float32)
    _add_member_logits(scores, by_member)
    scores.to_parquet(out / "scores.parquet")
    report = json_safe(report)
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False, default=str) + "\n")
    (out / "summary.txt").write_text(format_summary(report) + "\n")
    return report


def evaluate(model: str | Path, data: str | dict, out: str | Path | None = None,
             settings: EvaluationSettings | None = None, device: str = "auto", batch_size: int = 256,
             limit: int | None = None, plots: bool = True, command: str = "", tta: bool = False) -> dict[str, Any]:
    """Score a stamp set with a checkpoint, build the report and, with ``out``, write it.

    Args:
        model: shipped model name or checkpoint directory; ``"a,b"`` or a list of them: an ensemble
            (:class:`lensnet.scorer.Scorer`).
        data: dataset directory or ``{"simulate": {...}}`` (see ``lensnet.data.stamp_set_from_spec``).
        out: output directory for report.json, summary.txt, scores.parquet and plots; None: none.
        settings: what to measure.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: forward-pass batch size.
        limit: evaluate only the first stamps of a dataset directory.
        plots: write the PNG plots (needs matplotlib).
        command: the command line, recorded in the report.
        tta: average each stamp's probability over its 8 flips and rotations (``--tta``).
    """
    settings = settings or EvaluationSettings()
    started = time.perf_counter()
    scorer, stamp_set, logits, by_member, overlap, chosen = _score(model, data, device, batch_size, limit, tta)
    config = scorer.config
    missing = [column for column in settings.required_columns if column not in stamp_set.truth.columns]
    if missing:
        raise ValueError(f"--bins names column(s) {', '.join(missing)} that the truth table lacks; it has: "
                         f"{', '.join(map(str, stamp_set.truth.columns))}")
    report: dict[str, Any] = {
        "tta": tta,
        "model": {**scorer.describe(), "architecture": config.architecture, "threshold": config.threshold,
                  "train_prevalence": config.train_prevalence},
        "data": {"spec": data, "attrs": stamp_set.attrs, "shares_simulation_with": overlap},
        "settings": asdict(settings),
        **full_report(stamp_set.truth, logits, config.threshold, config.train_prevalence, settings),
    }
    report["by_kind"] = sanity.by_kind(stamp_set.truth, _sigmoid(logits), config.threshold)
    report.update({"command": command, "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   "device": str(chosen), "seconds": round(time.perf_counter() - started, 1)})
    if out is not None:
        report = _write(Path(out), report, stamp_set, logits, plots, by_member if scorer.is_ensemble else None)
    return json_safe(report)


def evaluate_sets(model: str | Path, specs: Sequence[str | dict | list], out: str | Path | None = None,
                  settings: EvaluationSettings | None = None, device: str = "auto", batch_size: int = 256,
                  limit: int | None = None, command: str = "", tta: bool = False, record: bool = False,
                  baseline: str | Path | None = None) -> dict[str, Any]:
    """Measure one checkpoint on several held-out sets side by side (:mod:`lensnet.crosssim`).

    With ``out``, ``cross_simulator.json`` and ``cross_simulator.md`` go there and each
    set's ``scores.parquet`` into a subdirectory named after it; with ``record``, the
    tables are also written to ``evaluation.json`` beside the checkpoint. With ``baseline``
    (another checkpoint), every set holding lenses and non-lenses is also scored by it and
    ``report["paired"]`` holds the differences on the same stamps, with paired bootstrap
    intervals (:func:`lensnet.crosssim.paired_difference`).
    """
    settings = settings or EvaluationSettings()
    if record and len(split_models(model)) > 1:
        raise ValueError("--record writes beside one checkpoint, and an ensemble (--model a,b) has none; measure it "
                         "with --out DIR instead")
    truths, logits, labels = [], [], []
    scorer = None
    reference = None
    paired: dict[str, Any] = {}
    for spec in specs:
        scorer, stamp_set, set_logits, by_member, _, chosen = _score(model, spec, device, batch_size, limit, tta)
        label = describe_spec(spec)
        if baseline is not None:
            if reference is None:
                reference = Scorer.load(baseline, device=chosen)
                for member in reference.members:
                    check_compatible(stamp_set, member.config)
            is_lens = stamp_set.truth["is_lens"].to_numpy().astype(bool)
            if is_lens.any() and not is_lens.all():
                reference_logits = Scorer.combine(reference.member_logits(
                    lambda member, stamps=stamp_set.stamps, on=chosen: score_stamps(member, stamps, on, batch_size,
                                                                                    tta=tta)))
                paired[label] = crosssim.paired_difference(
                    is_lens, reference_logits, set_logits, crosssim.bright_lenses(stamp_set.truth),
                    fpr=settings.target_fpr, n_bootstrap=settings.n_bootstrap, seed=settings.seed,
                    visible=crosssim.visible_lenses(stamp_set.truth))
        missing = [column for column in settings.required_columns if column not in stamp_set.truth.columns]
        if missing:
            raise ValueError(f"--bins names column(s) {', '.join(missing)} that {label}'s truth table lacks")
        truths.append(stamp_set.truth)
        logits.append(set_logits)
        labels.append(label)
        if out is not None:
            directory = Path(out) / label.replace("/", "_").replace(" ", "")
            directory.mkdir(parents=True, exist_ok=True)
            scores = stamp_set.truth.copy()
            scores["logit"], scores["score"] = set_logits, _sigmoid(set_logits).astype(np.float32)
            _add_member_logits(scores, by_member if scorer.is_ensemble else None)
            scores.to_parquet(directory / "scores.parquet")
    assert scorer is not None
    report = crosssim.cross_report(truths, logits, labels, scorer.config.threshold, settings.n_bootstrap,
                                   settings.seed, settings.target_fpr)
    report["model"] = {**scorer.describe(), "tta": tta}
    if reference is not None:
        report["paired"] = {"baseline": {"name": reference.name, "checkpoint": str(baseline),
                                         "weights_sha256": reference.weights_sha256}, "sets": paired}
    report = json_safe(report)
    if out is not None:
        Path(out, "cross_simulator.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
        Path(out, "cross_simulator.md").write_text(crosssim.render_tables(report) + "\n")
    if record:
        path = crosssim.record(scorer.path, report, command, list(specs))
        stale = crosssim.stale_surveys(scorer.path, scorer.weights_sha256)
        if stale:
            print(f"kept but not shown in the model card: {len(stale)} survey row(s) not measured with these "
                  f"weights: {', '.join(stale)} (score and record them again: run_survey.py --rescore, "
                  "pipeline.against_truth --record)", file=sys.stderr)
        print(f"recorded: {path}")
    return report


def parse_data_spec(text: str) -> str | dict[str, Any]:
    """A dataset directory, a YAML/JSON file, or inline YAML/JSON such as ``{simulate: {...}}``."""
    path = Path(text)
    if path.is_dir():
        return text
    value = yaml.safe_load(path.read_text()) if path.is_file() else yaml.safe_load(text)
    if not isinstance(value, dict):
        raise ValueError(f"--data {text!r} is neither a directory nor a mapping like "
                         "'{\"simulate\": {\"profile\": \"ground-gri\", \"n\": 1000, \"seed\": 7}}'")
    return value


def _parse_bins(items: Sequence[str]) -> dict[str, tuple[float, ...]]:
    bins = dict(DEFAULT_BINS)
    for item in items:
        column, _, edges = item.partition("=")
        bins[column] = tuple(float(edge) for edge in edges.split(","))
    return bins


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lensnet.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default",
                        help="shipped model name or checkpoint directory; a,b,... scores with an ensemble, as "
                             "run_survey.py --model a,b does (mean probability; threshold: the mean of the members')")
    parser.add_argument("--data", required=True, action="append",
                        help="dataset directory, or YAML/JSON '{simulate: {...}}' (or a file); repeat it to measure "
                             "several held-out sets side by side, e.g. one per simulation engine")
    parser.add_argument("--record", action="store_true",
                        help="write the side-by-side tables to evaluation.json beside the checkpoint (its model card "
                             "shows them)")
    parser.add_argument("--baseline", help="another checkpoint (or a,b,... ensemble) to score the same stamps: the "
                        "differences (AUROC, visible-lens AUROC, bright-lens completeness at --fpr) with paired "
                        "bootstrap intervals")
    parser.add_argument("--out", help="directory for report.json, summary.txt, scores.parquet and PNG plots")
    parser.add_argument("--beta", type=float, nargs="+", default=[metrics.BETA_BOM, metrics.BETA_WILDE],
                        help="F_beta weights (default sqrt(0.001), Bom et al.; and 0.03, Wilde et al.)")
    parser.add_argument("--fpr", type=float, default=0.01, help="target false-positive rate (default 0.01)")
    parser.add_argument("--target-prevalence", type=float, default=1e-4, help="survey lens fraction (default 1e-4)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000; 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--bins", action="append", default=[], metavar="COLUMN=E0,E1,...",
                        help="selection-function bin edges for a truth column (repeatable)")
    parser.add_argument("--interval", default="wilson", choices=["wilson", "jeffreys", "clopper-pearson"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--limit", type=int, help="only the first N stamps of a dataset directory")
    parser.add_argument("--threads", type=int, help="PyTorch CPU threads")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--tta", action="store_true",
                        help="score each stamp in its 8 flips/rotations and average, as run_survey.py --tta")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        bins = _parse_bins(args.bins)
    except ValueError:
        print(f"python -m lensnet.evaluate: error: --bins must be COLUMN=E0,E1,... with numbers, not {args.bins}",
              file=sys.stderr)
        return 2
    settings = EvaluationSettings(betas=tuple(args.beta), target_fpr=args.fpr, target_prevalence=args.target_prevalence,
                                  n_bootstrap=args.bootstrap, seed=args.seed, bins=bins, interval=args.interval,
                                  required_columns=tuple(item.partition("=")[0] for item in args.bins))
    command = "python -m lensnet.evaluate " + " ".join(shlex.quote(arg) for arg in (argv or sys.argv[1:]))
    try:
        return _run(args, settings, command)
    except (ValueError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"python -m lensnet.evaluate: error: {message}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, settings: EvaluationSettings, command: str) -> int:
    specs = [parse_data_spec(text) for text in args.data]
    if len(specs) > 1 or args.record or args.baseline:
        report = evaluate_sets(args.model, specs, args.out, settings, device=args.device, batch_size=args.batch_size,
                               limit=args.limit, command=command, tta=args.tta, record=args.record,
                               baseline=args.baseline)
        print(crosssim.render_tables(report))
        if "paired" in report:
            print("\n" + crosssim.render_paired_sets(report["paired"], report["model"]["name"]))
        if args.out:
            print(f"report: {Path(args.out) / 'cross_simulator.json'}")
        return 0
    report = evaluate(args.model, specs[0], args.out, settings, device=args.device,
                      batch_size=args.batch_size, limit=args.limit, plots=not args.no_plots, command=command,
                      tta=args.tta)
    print(format_summary(report))
    print(sanity.format_rows(report["by_kind"]))
    if args.out:
        print(f"report: {Path(args.out) / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
