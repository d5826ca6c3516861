"""Merging per-shard parts into the ranked candidate catalogue and the failure list.

Products, all in ``out_dir``:

``candidates.parquet``
    every scored object, ranked, with the ``_healpix_29`` index and ``p_survey``; columns
    as :mod:`catalogs.schema` defines them; units, UCDs and provenance as :mod:`catalogs.io`
    writes them. Known-lens columns too when ``known_lenses`` is given.
``candidates_hats/``
    the same rows as a HEALPix-partitioned HATS collection (:mod:`catalogs.hats`: the
    catalogue in ``candidates/``, a 10-arcsec margin cache, a MOC), written only when the
    catalogue has more than ``hats_min_rows`` rows: one Parquet file of tens of millions of
    rows is slow to query by position, the partitioned one is not.
``failures.parquet``
    every catalogue object that was not scored, with the reason.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from catalogs.crossmatch import DEFAULT_RADIUS_ARCSEC, crossmatch, known_lens_report
from catalogs.hats import DEFAULT_MAX_ROWS as DEFAULT_HATS_PARTITION_ROWS
from catalogs.hats import write_hats
from catalogs.healpix import healpix_29
from catalogs.io import Params, atomic_write_parquet
from catalogs.layout import HATS_DIR, RunLayout  # noqa: F401 (HATS_DIR: importable from here as before)
from catalogs.schema import (CORE_NAMES, DEFAULT_TARGET_PREVALENCE, HEALPIX_COLUMN, candidate_schema, failure_schema,
                             model_score_column)
from lensnet.metrics import prior_shift
from pipeline.plan import Plan

#: Catalogues with more rows than this are also written as a HATS catalogue.
DEFAULT_HATS_MIN_ROWS = 1_000_000
#: Per-model logit columns of an ensemble's score part files: ``logit:<model name>``.
MODEL_LOGIT_PREFIX = "logit:"
#: Training prevalence assumed when neither the caller nor the provenance gives one: the
#: model config's own default (balanced training sets).
FALLBACK_TRAIN_PREVALENCE = 0.5


def _read_parts(paths: list[str]) -> pd.DataFrame:
    return pa.concat_tables([pq.read_table(path) for path in paths]).to_pandas() if paths else pd.DataFrame()


def _train_prevalence(explicit: float | None, provenance: dict[str, Any]) -> float:
    """The caller's value, else the model config's as run.py records it in the provenance."""
    if explicit is not None:
        return float(explicit)
    recorded = (provenance.get("model") or {}).get("train_prevalence")
    return float(recorded) if recorded is not None else FALLBACK_TRAIN_PREVALENCE


def merge_outputs(
    plan: Plan,
    catalog: pd.DataFrame,
    cut_parts: list[str],
    score_parts: list[str],
    threshold: float,
    out_dir: Path,
    provenance: dict[str, Any],
    *,
    train_prevalence: float | None = None,
    target_prevalence: float = DEFAULT_TARGET_PREVALENCE,
    hats_min_rows: int = DEFAULT_HATS_MIN_ROWS,
    hats_partition_rows: int = DEFAULT_HATS_PARTITION_ROWS,
    known_lenses: pd.DataFrame | None = None,
    crossmatch_radius_arcsec: float = DEFAULT_RADIUS_ARCSEC,
    model_names: Sequence[str] = (),
) -> dict[str, Any]:
    """Write the catalogue products (see the module docstring); return the summary counts.

    Args:
        threshold: the model's decision threshold on ``score``.
        provenance: stored in every product; a ``catalogue`` entry with the values below is added.
        train_prevalence: lens fraction the model was trained at; default: the provenance's
            ``model.train_prevalence`` (run.py records the model config's).
        target_prevalence: lens fraction expected in the survey, for ``p_survey``.
        hats_min_rows: write ``candidates_hats/`` when the catalogue has more rows than this.
        hats_partition_rows: most rows in one HATS partition.
        known_lenses: a frame from :func:`catalogs.crossmatch.load_known_lenses`; when given,
            the catalogue gets the known-lens columns and the summary a ``known_lenses`` report.
        crossmatch_radius_arcsec: match radius for ``known_lenses``.
        model_names: with two or more models, the ensemble members whose ``logit:<name>``
            part-file columns become ``score_<name>`` catalogue columns.
    """
    train_prevalence = _train_prevalence(train_prevalence, provenance)
    status = _read_parts(cut_parts).set_index("cutout_index").sort_index()
    scores = _read_parts(score_parts).set_index("cutout_index")
    member_columns = [f"{MODEL_LOGIT_PREFIX}{name}" for name in model_names] if len(model_names) > 1 else []
    objects = plan.objects.join(status[["flags"]]).join(scores[["logit", *member_columns]], how="inner")
    extra_columns = [name for name in catalog.columns if name not in ("id", "ra", "dec")]
    extras = catalog.iloc[objects["row"].to_numpy()][extra_columns].reset_index(drop=True)
    # An input column named like a core column is kept under another name, not overwritten.
    extras = extras.rename(columns={name: f"input_{name}" for name in extras.columns if name in CORE_NAMES})
    logit = objects["logit"].to_numpy(np.float32)
    probability = 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))
    ra, dec = objects["ra"].to_numpy(np.float64), objects["dec"].to_numpy(np.float64)
    candidates = pd.DataFrame(
        {
            "object_id": objects["object_id"].to_numpy(),
            "ra": ra,
            "dec": dec,
            HEALPIX_COLUMN: healpix_29(ra, dec),
            "tile": objects["tile"].astype(str).to_numpy(),
            "x_px": objects["x_px"].to_numpy(np.float64),
            "y_px": objects["y_px"].to_numpy(np.float64),
            "score": probability.astype(np.float32),
            "p_survey": prior_shift(probability, train_prevalence, target_prevalence).astype(np.float32),
            "logit": logit,
            "flags": objects["flags"].to_numpy(np.int32),
            "cutout_index": objects.index.to_numpy(np.int64),
        }
    )
    for name, column in zip(model_names if member_columns else (), member_columns):
        member = objects[column].to_numpy(np.float64)
        candidates[model_score_column(name)] = (1.0 / (1.0 + np.exp(-member))).astype(np.float32)
    candidates = pd.concat([candidates, extras], axis=1)
    # Rank by the logit: float32 scores saturate at 1.0 for confident objects, logits do not.
    candidates = candidates.sort_values(["logit", "object_id"], ascending=[False, True], kind="stable")
    candidates["rank"] = np.arange(1, len(candidates) + 1, dtype=np.int64)
    candidates["is_candidate"] = candidates["score"].to_numpy() >= threshold
    summary_extra: dict[str, Any] = {}
    if known_lenses is not None:
        candidates = crossmatch(candidates, known_lenses, crossmatch_radius_arcsec)
        summary_extra["known_lenses"] = known_lens_report(
            candidates, known_lenses, threshold, radius_arcsec=crossmatch_radius_arcsec).to_dict()

    calibration = {"threshold": float(threshold), "train_prevalence": train_prevalence,
                   "target_prevalence": float(target_prevalence)}
    catalogue_provenance: dict[str, Any] = {**calibration, "score": (
        f"mean probability of the models {', '.join(model_names)}" if member_columns else "sigmoid(logit) of the one model")}
    if known_lenses is not None:
        catalogue_provenance["known_lens_radius_arcsec"] = float(crossmatch_radius_arcsec)
    provenance = {**provenance, "catalogue": catalogue_provenance}
    params: Params = {
        "threshold": (float(threshold), "", "decision threshold on score: is_candidate = score >= threshold"),
        "train_prevalence": (train_prevalence, "", "lens fraction of the model's training set"),
        "target_prevalence": (float(target_prevalence), "", "survey lens fraction p_survey is calibrated to"),
    }
    id_type = pa.array(catalog["id"].iloc[:1]).type
    extra_schema = pa.Schema.from_pandas(extras, preserve_index=False)
    schema = candidate_schema(id_type, extra_schema, crossmatch=known_lenses is not None,
                              model_names=list(model_names) if member_columns else ())
    table = pa.Table.from_pandas(candidates, schema=schema, preserve_index=False)
    description = "lensfinder candidate catalogue: every scored object, most lens-like first"
    layout = RunLayout(out_dir)
    atomic_write_parquet(table, layout.candidates, provenance, params=params, description=description)
    hats_dir = layout.hats
    if len(candidates) > hats_min_rows:
        partitions = write_hats(table, hats_dir, max_rows=hats_partition_rows, catalog_name="candidates",
                                provenance=provenance, params=params, description=description)
        summary_extra["hats_partitions"] = len(partitions)
    elif hats_dir.exists():
        # A previous merge of a larger catalogue into this directory: it no longer matches.
        shutil.rmtree(hats_dir)

    cut_failed = status[status["reason"].notna()]
    failed_objects = plan.objects.loc[cut_failed.index, ["row", "object_id", "ra", "dec"]].assign(
        reason=cut_failed["reason"], detail=cut_failed["detail"])
    failures = pd.concat([plan.failures[["row", "object_id", "ra", "dec", "reason", "detail"]], failed_objects])
    failures = failures.sort_values("row").drop(columns="row").reset_index(drop=True)
    atomic_write_parquet(pa.Table.from_pandas(failures, schema=failure_schema(id_type), preserve_index=False),
                         layout.failures, provenance,
                         description="lensfinder failures: every catalogue object that was not scored, and why")
    unreadable = cut_failed.index[cut_failed["reason"] == "unreadable_tile"]
    unreadable_tiles = set(plan.objects.loc[unreadable, "tile"].astype(str)) | {
        name for name, tile in plan.tiles.items() if tile.error is not None}
    return {
        "catalogue_objects": int(len(catalog)),
        "scored": int(len(candidates)),
        "failed": int(len(failures)),
        "failures_by_reason": {str(k): int(v) for k, v in failures["reason"].value_counts().sort_index().items()},
        "candidates_above_threshold": int(candidates["is_candidate"].sum()),
        "flagged": int((candidates["flags"] != 0).sum()),
        "unreadable_tiles": sorted(unreadable_tiles),
        **calibration,
        **summary_extra,
    }
