"""Measure a finished run against a truth table: ``python -m pipeline.against_truth RUN TRUTH``.

For mock surveys (``pipeline.mock`` writes ``truth.parquet``) and any survey with a list
of confirmed lenses and non-lenses: joins the run's ``candidates.parquet`` to the truth on
the object id and reports, with bootstrap 95% intervals, what :mod:`lensnet.crosssim`
reports for held-out stamp sets — AUROC, TPR0, TPR10, completeness for θE > 1.4″ and arc
S/N > 20 at exactly FPR ≤ 1% among this survey's non-lenses and at the model's threshold
— plus the share of each kind of object above the threshold. Objects the run could not
score are counted and left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from catalogs.layout import RunLayout
from lensnet import crosssim
from lensnet.checkpoint import (
    CROSSFIT_FILE,
    WEIGHTS_FILE,
    resolve_checkpoint,
    sha256_of,
)


def trained_objects(adapted: str | Path) -> set:
    """Ids of the survey objects an adaptation fine-tuned on (``ADAPTED/data/train``: hosts and negatives).

    An adapted model has seen these stamps with their training labels, so its scores for them
    are in-sample; a fair comparison with the parent leaves them out of both. A cross-fit
    (``pipeline.adapt --folds``) scores every object with a fold model that did not train on
    it: none is left out.
    """
    if (Path(adapted) / CROSSFIT_FILE).is_file():
        return set()
    path = Path(adapted) / "data" / "train" / "truth.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --exclude-trained takes the output directory of "
                                "python -m pipeline.adapt")
    return set(pd.read_parquet(path, columns=["object_id"])["object_id"].tolist())


def weights_for_record(candidates: str | Path, checkpoint: str | Path) -> tuple[Path, str, bool]:
    """``checkpoint``'s directory, the sha256 of its weights, and whether the run averaged test-time
    augmentations, if the run was scored by exactly those weights.

    A recorded row lands in that checkpoint's model card; a run scored by an ensemble, by other
    weights, or whose catalogue does not say, would put unknown numbers there: ``ValueError``.
    """
    from catalogs.io import read_provenance

    directory = resolve_checkpoint(checkpoint)
    expected = sha256_of(directory / WEIGHTS_FILE)
    rescore = f"score it with this checkpoint first (run_survey.py --rescore RUN --model {checkpoint})"
    try:
        provenance = read_provenance(candidates)
    except KeyError:
        raise ValueError(f"--record {checkpoint}: {candidates} does not say which weights scored it; "
                         f"{rescore}") from None
    if provenance.get("models"):
        raise ValueError(f"--record {checkpoint}: the run was scored by an ensemble of "
                         f"{len(provenance['models'])} models, not by this checkpoint alone")
    model = provenance.get("model") or {}
    scored = model.get("weights_sha256")
    if scored is None:
        raise ValueError(f"--record {checkpoint}: the run's catalogue predates recorded weight hashes; {rescore}")
    if scored != expected:
        raise ValueError(f"--record {checkpoint}: the run was scored by weights sha256 {scored[:12]}… "
                         f"({model.get('checkpoint', 'unknown checkpoint')}), but {directory} holds "
                         f"{expected[:12]}…; {rescore}")
    return directory, expected, bool((provenance.get("settings") or {}).get("tta"))


def _joined(candidates: str | Path, truth: str | Path, exclude: set | None) -> pd.DataFrame:
    scored = pd.read_parquet(candidates, columns=["object_id", "logit", "score"])
    known = pd.read_parquet(truth)
    if "id" not in known or "is_lens" not in known:
        raise ValueError(f"{truth} must have columns id and is_lens")
    joined = scored.merge(known, left_on="object_id", right_on="id", how="inner")
    if exclude:
        joined = joined[~joined["object_id"].isin(exclude)]
    return joined.reset_index(drop=True)


def measure(candidates: str | Path, truth: str | Path, n_bootstrap: int = 1000,
            exclude: set | None = None) -> dict[str, Any]:
    """The cross-simulator row of a run's catalogue against a truth table (columns id, is_lens, ...).

    ``exclude``: object ids to leave out (e.g. :func:`trained_objects` of an adaptation).
    """
    known = pd.read_parquet(truth, columns=["id"])
    joined = _joined(candidates, truth, exclude)
    from catalogs.io import read_provenance

    threshold = float((read_provenance(candidates).get("catalogue") or {}).get("threshold", 0.5))
    row = crosssim.headline(joined, joined["logit"].to_numpy(), threshold, n_bootstrap)
    excluded = int(known["id"].isin(exclude).sum()) if exclude else 0
    row["excluded_truth_rows"] = excluded
    row["unscored_truth_rows"] = int(len(known) - len(joined) - excluded)
    row["threshold"] = threshold
    return row


def paired(baseline: str | Path, candidates: str | Path, truth: str | Path, exclude: set | None = None,
           n_bootstrap: int = 1000) -> dict[str, Any]:
    """This run's gain over ``baseline`` (another run's catalogue of the same survey) on the
    objects both scored, with paired bootstrap intervals (:func:`lensnet.crosssim.paired_difference`)."""
    ours = _joined(candidates, truth, exclude)
    theirs = pd.read_parquet(baseline, columns=["object_id", "logit"]).rename(columns={"logit": "baseline_logit"})
    both = ours.merge(theirs, on="object_id", how="inner")
    if both.empty:
        raise ValueError("the two runs share no scored object with the truth table")
    visible = crosssim.visible_lenses(both) if set(crosssim.VISIBLE_CUTS) <= set(both.columns) else None
    return crosssim.paired_difference(both["is_lens"].to_numpy(), both["baseline_logit"].to_numpy(),
                                      both["logit"].to_numpy(), crosssim.bright_lenses(both), 0.01, n_bootstrap,
                                      visible=visible)


def compare_selection(candidates: str | Path, truth: str | Path, selection: str | Path,
                      exclude: set | None = None) -> dict[str, Any]:
    """True lenses' completeness against the injection-recovery selection function, bin by bin.

    ``selection`` is the ``selection_function.json`` that ``python -m pipeline.adapt`` wrote
    beside the adapted model that scored ``candidates``; the true lenses are counted at that
    model's threshold in the same bins of θE and arc S/N, with the same (Wilson, 68%)
    intervals, and each bin says whether the two intervals overlap.

    The injections' completeness in a θE bin averages over their own arc S/N distribution
    (log-uniform by design), not the true lenses'; so each bin also gets the count of its
    true lenses that the two-dimensional (θE × arc S/N) selection function expects
    (:func:`lensnet.metrics.predicted_detections`, from the injections' scores beside
    ``selection``), with 68% and 95% intervals, and whether the observed count lies within
    the 95% one.
    """
    from lensnet import metrics

    report = json.loads(Path(selection).read_text())
    joined = _joined(candidates, truth, exclude)
    is_lens = joined["is_lens"].to_numpy().astype(bool)
    logit_threshold = float(report["adapted"]["threshold"]["logit"])
    out: dict[str, Any] = {"threshold": report["adapted"]["threshold"], "bins": {}}
    columns = ("theta_e_arcsec", "arc_snr")
    grid = {}
    for column in columns:
        injected = report["adapted"]["by_bin"][column]
        grid[column] = np.asarray([row["bin_lo"] for row in injected] + [injected[-1]["bin_hi"]], dtype=np.float64)
    scores_file = Path(selection).with_name(Path(selection).stem + "_scores.parquet")
    scored = pd.read_parquet(scores_file) if scores_file.is_file() else None
    lenses = joined[is_lens]
    if scored is not None:  # the θE × arc S/N selection function, applied to each true lens
        injections = scored[scored["is_lens"].astype(bool)]

        def predict(group: np.ndarray, n_groups: int) -> pd.DataFrame:
            return metrics.predicted_detections(
                injections[list(columns)].to_numpy(float),
                injections["logit_adapted"].to_numpy(float) >= logit_threshold,
                lenses[list(columns)].to_numpy(float), [grid[name] for name in columns], group, n_groups,
                targets_detected=lenses["logit"].to_numpy() >= logit_threshold)
    for column in columns:
        injected = report["adapted"]["by_bin"][column]
        edges = grid[column]
        table = metrics.completeness_by_bin(is_lens, joined["logit"].to_numpy(), logit_threshold,
                                            joined[column].to_numpy(float), edges, confidence=0.6827,
                                            interval="wilson").to_dict(orient="records")
        predicted = None
        if scored is not None:  # lenses off the grid are left out by predicted_detections, whatever their group
            values = np.nan_to_num(lenses[column].to_numpy(float), nan=edges[0])
            group = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
            predicted = predict(group, len(edges) - 1).to_dict(orient="records")
        rows = []
        for index, (mine, theirs) in enumerate(zip(table, injected, strict=True)):
            both = mine["n_lenses"] and theirs["n_lenses"]
            row = {"bin_lo": theirs["bin_lo"], "bin_hi": theirs["bin_hi"],
                   "true_lenses": mine["n_lenses"], "true_completeness": mine["completeness"],
                   "true_interval_68": [mine["ci_lower"], mine["ci_upper"]],
                   "injections": theirs["n_lenses"], "injection_completeness": theirs["completeness"],
                   "injection_interval_68": [theirs["ci_lower"], theirs["ci_upper"]],
                   "intervals_overlap": bool(both and mine["ci_lower"] <= theirs["ci_upper"]
                                             and theirs["ci_lower"] <= mine["ci_upper"]) if both else None}
            if predicted is not None:
                cell = predicted[index]
                covered = int(cell["n_covered"])
                row.update(covered_lenses=covered, observed_detected=int(cell["observed"]),
                           expected_detected=float(cell["expected"]),
                           expected_interval_68=[float(cell["lo68"]), float(cell["hi68"])],
                           expected_interval_95=[float(cell["lo95"]), float(cell["hi95"])],
                           within_95=bool(cell["lo95"] <= cell["observed"] <= cell["hi95"]) if covered else None)
            rows.append(row)
        out["bins"][column] = rows
    out["two_dimensional"] = scored is not None
    if scored is not None:  # all the true lenses on the grid together
        whole = predict(np.zeros(len(lenses), dtype=np.int64), 1).iloc[0]
        found = int(whole["observed"])
        out["all_lenses"] = {"lenses": int(whole["n_covered"]), "observed_detected": found,
                             "expected_detected": float(whole["expected"]),
                             "expected_interval_95": [float(whole["lo95"]), float(whole["hi95"])],
                             "within_95": bool(whole["lo95"] <= found <= whole["hi95"])}
    return out


def render_selection(comparison: dict[str, Any]) -> str:
    """The bin-by-bin comparison as Markdown."""
    lines = []
    if comparison.get("two_dimensional"):
        agree = [row["within_95"] for rows in comparison["bins"].values() for row in rows
                 if row.get("within_95") is not None]
        lines += ["", ("Found among the true lenses, against the count the θE × arc S/N selection function expects "
                       "for those same lenses (each takes its own cell's injection completeness):"), ""]
        for column, rows in comparison["bins"].items():
            lines += [f"| {column} | true lenses | found | expected [68%] [95%] | within 95% |", "|---|---:|---:|---|---|"]
            for row in rows:
                if not row["true_lenses"]:
                    continue
                low68, high68 = row["expected_interval_68"]
                low95, high95 = row["expected_interval_95"]
                covered = row["covered_lenses"]
                note = "" if covered == row["true_lenses"] else f" (of {covered} on the grid)"
                verdict = "—" if row["within_95"] is None else ("yes" if row["within_95"] else "no")
                lines.append(f"| {row['bin_lo']:.3g}–{row['bin_hi']:.3g} | {row['true_lenses']} | "
                             f"{row['observed_detected']}{note} | {row['expected_detected']:.1f} [{low68:.0f}, "
                             f"{high68:.0f}] [{low95:.0f}, {high95:.0f}] | {verdict} |")
            lines.append("")
        whole = comparison["all_lenses"]
        low95, high95 = whole["expected_interval_95"]
        lines.append(f"{sum(agree)} of {len(agree)} bins within the 95% interval. All {whole['lenses']} true lenses "
                     f"with injections in their cell: {whole['observed_detected']} found, {whole['expected_detected']:.1f} expected "
                     f"[{low95:.0f}, {high95:.0f}] ({'within' if whole['within_95'] else 'outside'} the 95% interval).")
    for column, rows in comparison["bins"].items():
        lines += ["", f"| {column} | true lenses | completeness [68%] | injections | completeness [68%] | overlap |",
                  "|---|---:|---|---:|---|---|"]
        for row in rows:
            if not row["true_lenses"] and not row["injections"]:
                continue
            def cell(value, interval):
                return "—" if value is None else f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"
            lines.append(f"| {row['bin_lo']:.3g}–{row['bin_hi']:.3g} | {row['true_lenses']} | "
                         f"{cell(row['true_completeness'], row['true_interval_68'])} | {row['injections']} | "
                         f"{cell(row['injection_completeness'], row['injection_interval_68'])} | "
                         f"{'—' if row['intervals_overlap'] is None else ('yes' if row['intervals_overlap'] else 'no')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.against_truth", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished run directory (candidates.parquet)")
    parser.add_argument("truth", help="truth table: id, is_lens and optionally kind, theta_e_arcsec, arc_snr, ...")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--record", metavar="CHECKPOINT",
                        help="add this survey's row to the checkpoint's evaluation.json (its model card shows it)")
    parser.add_argument("--label", help="the survey's name in the recorded table (default: the truth's folder)")
    parser.add_argument("--description", default="", help="one sentence on the survey, for the model card")
    parser.add_argument("--selection-function", metavar="JSON",
                        help="an adaptation's selection_function.json: compare its injection-recovery completeness "
                             "with the true lenses' in the same θE and arc S/N bins")
    parser.add_argument("--exclude-trained", metavar="ADAPTED",
                        help="leave out the objects that adaptation fine-tuned on (its data/train set), so that "
                             "an adapted model and its parent are compared on stamps neither was trained on")
    parser.add_argument("--baseline", metavar="RUN",
                        help="another run over the same survey (e.g. the parent model's): report this run's gain "
                             "over it on the same objects, with paired bootstrap intervals of the difference")
    args = parser.parse_args(argv)
    try:
        exclude = trained_objects(args.exclude_trained) if args.exclude_trained else None
        row = measure(RunLayout(args.run).candidates, args.truth, args.bootstrap, exclude)
    except (OSError, ValueError, KeyError) as error:
        print(f"python -m pipeline.against_truth: error: {error}", file=sys.stderr)
        return 2
    label = Path(args.run).name
    print(crosssim.render_tables({"threshold": row["threshold"], "target_fpr": 0.01, "sets": {label: row}}))
    if row["unscored_truth_rows"]:
        print(f"({row['unscored_truth_rows']} truth rows were not scored by the run and are left out)")
    if exclude:
        print(f"({row['excluded_truth_rows']} objects the adaptation trained on are left out)")
    elif args.exclude_trained:
        print(f"({args.exclude_trained} is a cross-fit: every object was scored out of sample, none is left out)")
    if args.baseline:
        try:
            row["paired"] = paired(RunLayout(args.baseline).candidates, RunLayout(args.run).candidates, args.truth,
                                   exclude, args.bootstrap)
        except (OSError, ValueError, KeyError) as error:
            print(f"python -m pipeline.against_truth: error: --baseline {args.baseline}: {error}", file=sys.stderr)
            return 2
        print()
        print(crosssim.render_paired(row["paired"], Path(args.baseline).name, label))
    if args.selection_function:
        row["selection_function_comparison"] = compare_selection(RunLayout(args.run).candidates, args.truth,
                                                                 args.selection_function, exclude)
        print(render_selection(row["selection_function_comparison"]))
    from lensnet.evaluate import json_safe

    if args.json:  # written first: a refused --record loses nothing measured
        Path(args.json).write_text(json.dumps(json_safe(row), indent=2) + "\n")
    if args.record:
        try:
            directory, weights, tta = weights_for_record(RunLayout(args.run).candidates, args.record)
        except (OSError, ValueError) as error:
            print(f"python -m pipeline.against_truth: error: {error}", file=sys.stderr)
            return 2
        label = args.label or Path(args.truth).resolve().parent.name
        summary = {key: row[key] for key in ("n", "n_lenses", "auroc", "tpr0", "tpr10", "completeness_bright_at_fpr",
                                              "completeness_bright_at_threshold", "fpr_at_threshold", "sanity",
                                              "threshold") if key in row}
        command = "python -m pipeline.against_truth " + " ".join(argv if argv is not None else sys.argv[1:])
        path = crosssim.record_survey(directory, label, json_safe(summary), {
            "description": args.description, "command": command, "run": str(Path(args.run).resolve()),
            "weights_sha256": weights, "tta": tta})
        print(f"recorded: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
