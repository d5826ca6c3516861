"""Cross-fitted adaptation: every survey object scored by a model that never trained on it.

An adapted model learns "not a lens" from most of the survey's own stamps, and the survey's
real lenses are among them (the parent's top-ranked objects are left out, the rest are not).
Scoring those objects with that model afterwards is scoring them in sample: the model was told
they are not lenses. ``python -m pipeline.adapt RUN --folds K`` deals the survey's objects into K
folds and adapts K models, model k holding out fold k (neither its hosts nor its negatives
come from it); ``run_survey.py --rescore RUN --model OUT`` then scores each object with the
model of its own fold (:class:`catalogs.ensemble.CrossFit`). Every object of the survey then
has an out-of-sample adapted score, and the selection function is measured on K times as many
held-out injections. It costs K fine-tunes.

``OUT`` holds:

``fold-1`` ... ``fold-K``      adapted checkpoints (each a complete ``pipeline.adapt`` output)
``data/rehearsal``             with ``rehearse``: the simulated stamps every fold trains on alongside
``folds.parquet``              ``object_id``, ``cutout_index`` and ``fold`` (1..K) of every object read
``crossfit.json``              the recipe, each fold's checkpoint and threshold, the pooled threshold
``selection_function.*``       the selection function of all folds' held-out injections together,
                               each fold's scores shifted so that the folds' thresholds coincide

Rerunning the command resumes: finished folds are kept, an unfinished one resumes its training.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lensnet.adapt import runner
from lensnet.adapt.runner import AdaptConfig, AdaptError, Survey
from lensnet.checkpoint import CROSSFIT_FILE

ASSIGNMENT_FILE = "folds.parquet"
SCORES_FILE = f"{runner.SELECTION_FILE}_scores.parquet"


def fold_directory(out: Path, fold: int) -> Path:
    """The checkpoint directory of fold ``fold`` (0-based)."""
    return out / f"fold-{fold + 1}"


def adapt_crossfit(config: AdaptConfig, survey: Survey, command: str = "") -> dict[str, Any]:
    """Adapt ``config.folds`` models, each holding out one fold of the survey's objects; pool
    their held-out measurements; returns the pooled selection function report."""
    if config.folds < 2:
        raise AdaptError(f"--folds {config.folds}: a cross-fit needs at least 2 folds")
    if len(survey.catalogue) < 10 * config.folds:
        raise AdaptError(f"--folds {config.folds}: the run has only {len(survey.catalogue)} objects; give fewer folds")
    recipe = runner.injection_recipe(config, survey)
    model_config = runner.load_config(survey.parent)
    sources = runner.rehearsal_sources(config, survey.bands, model_config.stamp_size_px,
                                       model_config.pixel_scale_arcsec)
    out = config.out_dir
    recorded = out / CROSSFIT_FILE
    if (out / runner.RECIPE_FILE).is_file() and not recorded.is_file():
        raise AdaptError(f"{out} holds a single adaptation; give the cross-fit another --out")
    state = runner.open_state(recorded, runner._recipe_record(config, survey, recipe), config.force, "a cross-fit")
    rehearsal_dir = out / "data" / "rehearsal" if config.rehearse else None
    if config.rehearse and "rehearsal" not in state:
        state["rehearsal"] = runner.build_rehearsal(config, sources, survey.bands, rehearsal_dir)
    recorded.write_text(json.dumps(state, indent=2) + "\n")

    catalogue = survey.catalogue.reset_index(drop=True)
    fold_of = runner.fold_of_objects(len(catalogue), config.folds, config.seed)
    assignment = pd.DataFrame({"object_id": catalogue["object_id"].to_numpy(),
                               "cutout_index": catalogue["cutout_index"].to_numpy(), "fold": fold_of + 1})
    if (out / ASSIGNMENT_FILE).is_file():  # resuming: the folds must hold out the objects they held out before
        before = pd.read_parquet(out / ASSIGNMENT_FILE)
        if not (before[["object_id", "fold"]].reset_index(drop=True).equals(assignment[["object_id", "fold"]])):
            raise AdaptError(f"the objects of {config.run} changed since the cross-fit in {out} began; use another "
                             "--out, or --force to start it again")
    else:
        assignment.to_parquet(out / ASSIGNMENT_FILE, index=False)
    folds = []
    for fold in range(config.folds):
        runner._log(config, f"fold {fold + 1} of {config.folds}: {int(np.sum(fold_of == fold))} objects held out")
        fold_config = dataclasses.replace(config, out=str(fold_directory(out, fold)), fold=fold, force=False)
        report = runner.adapt(fold_config, survey, command, rehearsal_dir=rehearsal_dir)
        folds.append({"checkpoint": fold_directory(out, fold).name, "objects": int(np.sum(fold_of == fold)),
                      "threshold_logit": report["threshold"]["logit"],
                      "auroc": report["adapted"]["auroc"]["value"]})
    report = pooled_selection(config, survey.parent, out, folds)
    state.update(folds=folds, assignment=ASSIGNMENT_FILE, threshold=report["threshold"]["value"],
                 threshold_logit=report["threshold"]["logit"], selection_function=f"{runner.SELECTION_FILE}.json")
    runner.write_report(out, report)
    recorded.write_text(json.dumps(state, indent=2) + "\n")
    return report


def pooled_selection(config: AdaptConfig, parent: str, out: Path, folds: list[dict[str, Any]]) -> dict[str, Any]:
    """The selection function of every fold's held-out injections and survey stamps, the adapted
    logits shifted as :class:`catalogs.ensemble.CrossFit` shifts them when it scores a survey."""
    centre = float(np.mean([fold["threshold_logit"] for fold in folds]))
    parts = []
    for number, fold in enumerate(folds, start=1):
        part = pd.read_parquet(out / fold["checkpoint"] / SCORES_FILE)
        part["logit_adapted"] = part["logit_adapted"] + (centre - fold["threshold_logit"])
        parts.append(part.assign(fold=number))
    pooled = pd.concat(parts, ignore_index=True)
    pooled.to_parquet(out / SCORES_FILE, index=False)
    report = runner.selection_report(pooled, {"parent": parent, "adapted": str(out)}, config.target_fpr,
                                     config.seed)
    report["folds"] = len(folds)
    return report
