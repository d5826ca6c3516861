"""Building the catalogue products from scored objects: pure functions on frames, no I/O.

:func:`build_catalogue` takes what a run knows once its shards are scored -- one row per
scored object (position, tile, flags, logit, and with several models each member's
logit), the unscored objects with their reasons, and the input catalogue -- and returns
the ranked candidate table and the failure table as Arrow tables in the schema of
:mod:`catalogs.schema`, with their provenance and the summary counts. Nothing here
reads part files or knows about Dask (:mod:`pipeline.merge` joins the part files with
the plan and calls this); :mod:`catalogs.products` writes the result.

Every setting of the products is one :class:`CatalogueOptions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from catalogs.crossmatch import DEFAULT_RADIUS_ARCSEC, crossmatch, known_lens_report
from catalogs.ensemble import CrossFit, combine_units, describe_score
from catalogs.hats import DEFAULT_MAX_ROWS as DEFAULT_HATS_PARTITION_ROWS
from catalogs.healpix import healpix_29
from catalogs.io import Params
from catalogs.schema import (CORE_NAMES, DEFAULT_TARGET_PREVALENCE, HEALPIX_COLUMN, candidate_schema, failure_schema,
                             model_score_column)
from lensnet.metrics import prior_shift

if TYPE_CHECKING:
    from catalogs.ensemble import Ensemble

#: Catalogues with more rows than this are also written as a HATS catalogue.
DEFAULT_HATS_MIN_ROWS = 1_000_000
#: Per-model logit columns of the scored objects of an ensemble: ``logit:<model name>``.
MODEL_LOGIT_PREFIX = "logit:"
#: Training prevalence assumed when neither the options nor the provenance give one: the
#: model config's own default (balanced training sets).
FALLBACK_TRAIN_PREVALENCE = 0.5
#: Columns of the scored objects that :func:`build_catalogue` reads (plus the member logits).
SCORED_COLUMNS = ("row", "object_id", "ra", "dec", "tile", "x_px", "y_px", "flags", "logit")
#: Columns of the unscored objects.
FAILURE_COLUMNS = ("row", "object_id", "ra", "dec", "reason", "detail")
CANDIDATES_DESCRIPTION = "lensfinder candidate catalogue: every scored object, most lens-like first"
FAILURES_DESCRIPTION = "lensfinder failures: every catalogue object that was not scored, and why"


@dataclass(frozen=True, eq=False)
class CatalogueOptions:
    """Everything that shapes the catalogue products besides the scores themselves.

    Attributes:
        threshold: the decision threshold on ``score`` (``is_candidate``).
        train_prevalence: lens fraction the model was trained at; None: the provenance's
            ``model.train_prevalence`` (a run records the model config's), else 0.5.
        target_prevalence: lens fraction expected in the survey, for ``p_survey``.
        model_names: with two or more models, the ensemble members whose ``logit:<name>``
            columns become ``score_<name>`` catalogue columns (one or none: no such columns).
        known_lenses: a frame from :func:`catalogs.crossmatch.load_known_lenses`; when given,
            the catalogue gets the known-lens columns and the summary a ``known_lenses`` report.
        crossmatch_radius_arcsec: match radius for ``known_lenses``.
        hats_min_rows: the products include ``candidates_hats/`` when the catalogue has more rows.
        hats_partition_rows: most rows in one HATS partition.
    """

    threshold: float
    train_prevalence: float | None = None
    target_prevalence: float = DEFAULT_TARGET_PREVALENCE
    model_names: Sequence[str] = ()
    known_lenses: pd.DataFrame | None = None
    crossmatch_radius_arcsec: float = DEFAULT_RADIUS_ARCSEC
    hats_min_rows: int = DEFAULT_HATS_MIN_ROWS
    hats_partition_rows: int = DEFAULT_HATS_PARTITION_ROWS
    crossfits: Sequence[CrossFit] = ()

    @classmethod
    def for_ensemble(cls, ensemble: Ensemble, **options: Any) -> CatalogueOptions:
        """The options of a catalogue scored by ``ensemble``: its calibration and member columns."""
        calibration = ensemble.calibration()
        return cls(threshold=calibration.threshold, train_prevalence=calibration.train_prevalence,
                   model_names=ensemble.member_names, crossfits=ensemble.crossfits, **options)

    @property
    def members(self) -> list[str]:
        """The members with their own score columns: all of several, none of one."""
        return list(self.model_names) if len(self.model_names) > 1 else []

    def member_logit_columns(self) -> list[str]:
        return [f"{MODEL_LOGIT_PREFIX}{name}" for name in self.members]


@dataclass(frozen=True, eq=False)
class Catalogue:
    """The products of one run, built and not yet written.

    Attributes:
        candidates: the ranked catalogue in the candidate schema.
        failures: every unscored object in the failure schema, in catalogue order.
        provenance: the run's provenance plus a ``catalogue`` entry (calibration, score rule).
        params: the calibration as table parameters (astropy/VOTable readers show them).
        counts: the summary's counts and calibration, in the order ``summary.json`` lists them.
        known_lenses: the known-lens report, when the options named known lenses.
    """

    candidates: pa.Table
    failures: pa.Table
    provenance: dict[str, Any]
    params: Params
    counts: dict[str, Any]
    calibration: dict[str, float]
    known_lenses: dict[str, Any] | None = None


def train_prevalence_of(explicit: float | None, provenance: dict[str, Any]) -> float:
    """The options' value, else the model config's as a run records it in the provenance, else 0.5."""
    if explicit is not None:
        return float(explicit)
    recorded = (provenance.get("model") or {}).get("train_prevalence")
    return float(recorded) if recorded is not None else FALLBACK_TRAIN_PREVALENCE


def sigmoid(logit: np.ndarray) -> np.ndarray:
    """Probabilities of logits, in float64."""
    return 1.0 / (1.0 + np.exp(-np.asarray(logit, dtype=np.float64)))


def build_catalogue(scored: pd.DataFrame, failed: pd.DataFrame, catalog: pd.DataFrame,
                    provenance: dict[str, Any], options: CatalogueOptions) -> Catalogue:
    """The ranked candidates and the failures (see the module docstring).

    Args:
        scored: one row per scored object, indexed by ``cutout_index``, with the columns of
            :data:`SCORED_COLUMNS` (``row`` is the object's row in ``catalog``) and, for an
            ensemble, ``logit:<name>`` per member.
        failed: one row per unscored object with the columns of :data:`FAILURE_COLUMNS`.
        catalog: the input catalogue (``id``, ``ra``, ``dec`` and any other columns, which
            the candidates carry after their own; a name clash gets the prefix ``input_``).
        provenance: stored in every product; a ``catalogue`` entry is added.
    """
    train_prevalence = train_prevalence_of(options.train_prevalence, provenance)
    threshold, target_prevalence = float(options.threshold), float(options.target_prevalence)
    members = options.members
    extra_columns = [name for name in catalog.columns if name not in ("id", "ra", "dec")]
    extras = catalog.iloc[scored["row"].to_numpy()][extra_columns].reset_index(drop=True)
    # An input column named like a core column is kept under another name, not overwritten.
    extras = extras.rename(columns={name: f"input_{name}" for name in extras.columns if name in CORE_NAMES})
    logit = scored["logit"].to_numpy(np.float32)
    if options.crossfits:  # each object's score from the fold model that did not train on it
        logit = combine_units(scored["object_id"].to_numpy(), {
            name: scored[column].to_numpy(np.float64) for name, column in zip(members, options.member_logit_columns())},
            options.crossfits)
    probability = sigmoid(logit)
    ra, dec = scored["ra"].to_numpy(np.float64), scored["dec"].to_numpy(np.float64)
    candidates = pd.DataFrame(
        {
            "object_id": scored["object_id"].to_numpy(),
            "ra": ra,
            "dec": dec,
            HEALPIX_COLUMN: healpix_29(ra, dec),
            "tile": scored["tile"].astype(str).to_numpy(),
            "x_px": scored["x_px"].to_numpy(np.float64),
            "y_px": scored["y_px"].to_numpy(np.float64),
            "score": probability.astype(np.float32),
            "p_survey": prior_shift(probability, train_prevalence, target_prevalence).astype(np.float32),
            "logit": logit,
            "flags": scored["flags"].to_numpy(np.int32),
            "cutout_index": scored.index.to_numpy(np.int64),
        }
    )
    for name, column in zip(members, options.member_logit_columns()):
        candidates[model_score_column(name)] = sigmoid(scored[column].to_numpy(np.float64)).astype(np.float32)
    candidates = pd.concat([candidates, extras], axis=1)
    # Rank by the logit: float32 scores saturate at 1.0 for confident objects, logits do not.
    candidates = candidates.sort_values(["logit", "object_id"], ascending=[False, True], kind="stable")
    candidates["rank"] = np.arange(1, len(candidates) + 1, dtype=np.int64)
    candidates["is_candidate"] = candidates["score"].to_numpy() >= threshold
    known = options.known_lenses
    report = None
    if known is not None:
        candidates = crossmatch(candidates, known, options.crossmatch_radius_arcsec)
        report = known_lens_report(candidates, known, threshold, radius_arcsec=options.crossmatch_radius_arcsec
                                   ).to_dict()

    calibration = {"threshold": threshold, "train_prevalence": train_prevalence,
                   "target_prevalence": target_prevalence}
    catalogue_provenance: dict[str, Any] = {**calibration, "score": describe_score(members, options.crossfits)}
    if known is not None:
        catalogue_provenance["known_lens_radius_arcsec"] = float(options.crossmatch_radius_arcsec)
    provenance = {**provenance, "catalogue": catalogue_provenance}
    params: Params = {
        "threshold": (threshold, "", "decision threshold on score: is_candidate = score >= threshold"),
        "train_prevalence": (train_prevalence, "", "lens fraction of the model's training set"),
        "target_prevalence": (target_prevalence, "", "survey lens fraction p_survey is calibrated to"),
    }
    id_type = pa.array(catalog["id"].iloc[:1]).type
    extra_schema = pa.Schema.from_pandas(extras, preserve_index=False)
    schema = candidate_schema(id_type, extra_schema, crossmatch=known is not None, model_names=members)
    candidate_table = pa.Table.from_pandas(candidates, schema=schema, preserve_index=False)

    failures = failed[list(FAILURE_COLUMNS)].sort_values("row").drop(columns="row").reset_index(drop=True)
    failure_table = pa.Table.from_pandas(failures, schema=failure_schema(id_type), preserve_index=False)
    counts = {
        "catalogue_objects": int(len(catalog)),
        "scored": int(len(candidates)),
        "failed": int(len(failures)),
        "failures_by_reason": {str(k): int(v) for k, v in failures["reason"].value_counts().sort_index().items()},
        "candidates_above_threshold": int(candidates["is_candidate"].sum()),
        "flagged": int((candidates["flags"] != 0).sum()),
    }
    return Catalogue(candidate_table, failure_table, provenance, params, counts, calibration, report)
