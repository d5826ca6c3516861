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

:class:`Ensemble` is the set of models a run or a rescore scores with (``--model a,b``):
its members, the check that they can score one cutout store, its calibration (decision
threshold and training prevalence) and how it combines the members' logits into the
catalogue's ``score`` -- the ``mean`` rule, computed in logit space so that confident
members do not overflow.

A cross-fitted adaptation (``python -m pipeline.adapt --folds K``) is one entry of ``--model``
that brings K members: :class:`CrossFit` scores each object with the one fold model that did
not train on it (objects no fold held out get the mean of the K), and that out-of-fold score
then counts as one model in the ``mean`` rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

if TYPE_CHECKING:  # lensnet (and torch) are imported when an ensemble is loaded or combined
    from lensnet.checkpoint import ModelConfig

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


# ----------------------------------------------------------------------------- the models of a run


class EnsembleError(ValueError):
    """The models cannot score together (no model, two of one name, different inputs)."""


class Member(NamedTuple):
    """One model of an ensemble: its name (catalogue columns ``score_<name>``), checkpoint and config."""

    name: str
    checkpoint: Path
    config: ModelConfig


@dataclass(frozen=True)
class Calibration:
    """What turns an ensemble's score into decisions: ``is_candidate = score >= threshold``,
    and the lens fraction ``p_survey`` is shifted from."""

    threshold: float
    train_prevalence: float


@dataclass(frozen=True, eq=False)
class CrossFit:
    """The K fold models of a cross-fitted adaptation, scoring each object out of sample.

    Attributes:
        name: the cross-fit directory's name.
        members: the fold models' member names, fold 1 first.
        shifts: added to each fold's logit, so that every fold's own threshold (at the target
            false-positive rate on its held-out survey stamps) falls on one value.
        threshold: the decision threshold on the out-of-fold score, measured on all folds'
            held-out survey stamps together.
        train_prevalence: the folds' training lens fraction (their mean).
        folds: each object's fold (0-based position in ``members``), indexed by ``object_id``.
        directory: the cross-fit directory (its ``selection_function.json`` applies to the score).
    """

    name: str
    members: tuple[str, ...]
    shifts: tuple[float, ...]
    threshold: float
    train_prevalence: float
    folds: pd.Series
    directory: Path | None = None

    @classmethod
    def load(cls, directory: Path) -> tuple[CrossFit, list[Member]]:
        """The cross-fit written in ``directory``, and its fold models as ensemble members."""
        import json

        from lensnet.checkpoint import CROSSFIT_FILE, load_config

        record = json.loads((directory / CROSSFIT_FILE).read_text())
        if not {"folds", "assignment", "threshold"} <= set(record):
            raise EnsembleError(f"--model {directory}: an unfinished cross-fit; run the python -m pipeline.adapt "
                                "command that made it again to finish it")
        members = []
        for fold in record["folds"]:
            checkpoint = directory / fold["checkpoint"]
            config = load_config(checkpoint)
            members.append(Member(config.name or f"{directory.name}-{checkpoint.name}", checkpoint, config))
        assignment = pd.read_parquet(directory / record["assignment"], columns=["object_id", "fold"])
        centre = float(np.mean([fold["threshold_logit"] for fold in record["folds"]]))
        crossfit = cls(directory.name, tuple(member.name for member in members),
                       tuple(centre - float(fold["threshold_logit"]) for fold in record["folds"]),
                       float(record["threshold"]), float(np.mean([m.config.train_prevalence for m in members])),
                       pd.Series(assignment["fold"].to_numpy(np.int64) - 1, index=assignment["object_id"].to_numpy()),
                       directory)
        return crossfit, members

    def logits(self, object_ids: npt.ArrayLike, by_member: Mapping[str, npt.ArrayLike]) -> np.ndarray:
        """Each object's out-of-fold logit (float64): its fold model's, shifted; objects that no
        fold held out (the adaptation did not read them) get the logit of the folds' mean probability."""
        shifted = np.stack([np.asarray(by_member[name], dtype=np.float64) + shift
                            for name, shift in zip(self.members, self.shifts, strict=True)])
        fold = self.folds.reindex(np.asarray(object_ids)).to_numpy(np.float64)
        known = np.isfinite(fold)
        out = np.empty(shifted.shape[1], dtype=np.float64)
        out[known] = shifted[fold[known].astype(np.int64), np.flatnonzero(known)]
        if not known.all():
            out[~known] = combine_logits({name: row[~known] for name, row in zip(self.members, shifted,
                                                                                 strict=True)})
        return out


def crossfit_members(crossfits: Sequence[CrossFit]) -> set[str]:
    """The names of the members that belong to one of ``crossfits``."""
    return {name for crossfit in crossfits for name in crossfit.members}


def combine_units(object_ids: npt.ArrayLike, by_member: Mapping[str, npt.ArrayLike],
                  crossfits: Sequence[CrossFit] = ()) -> np.ndarray:
    """The ensemble's float32 logit when some members form cross-fits: each cross-fit's
    out-of-fold logit and each other member's logit, combined by the ``mean`` rule."""
    in_crossfit = crossfit_members(crossfits)
    units = {name: np.asarray(values) for name, values in by_member.items() if name not in in_crossfit}
    for number, crossfit in enumerate(crossfits):  # two cross-fits may share a directory name
        units[f"crossfit:{number}:{crossfit.name}"] = crossfit.logits(object_ids, by_member)
    return combine_logits(units)


@dataclass(frozen=True)
class Ensemble:
    """The models that score a run together: one model, or several averaged by probability.

    Iterating gives the :class:`Member` tuples ``(name, checkpoint, config)`` in the order
    given; the first member's config describes the inputs (bands, stamp size, pixel scale)
    that every member shares.
    """

    members: tuple[Member, ...]
    crossfits: tuple[CrossFit, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(Member(*member) for member in self.members))
        self.check()

    @classmethod
    def from_models(cls, models: str | Sequence[str]) -> Ensemble:
        """The ensemble of a comma-separated list (``--model a,b``) of shipped names or checkpoint directories."""
        from lensnet.checkpoint import CROSSFIT_FILE, load_config, resolve_checkpoint

        items = str(models).split(",") if isinstance(models, (str, Path)) else [str(item) for item in models]
        members, crossfits = [], []
        for item in [part.strip() for part in items if part.strip()]:
            if (Path(item) / CROSSFIT_FILE).is_file():
                crossfit, folds = CrossFit.load(Path(item))
                crossfits.append(crossfit)
                members += folds
                continue
            checkpoint = resolve_checkpoint(item)
            config = load_config(checkpoint)
            members.append(Member(config.name or checkpoint.name, checkpoint, config))
        return cls(tuple(members), tuple(crossfits))

    def check(self) -> None:
        """Refuse an empty ensemble, two members of one name, and members that take other inputs
        (:func:`lensnet.scorer.check_members`)."""
        from lensnet.scorer import check_members

        try:
            check_members([(member.name, member.config) for member in self.members])
        except ValueError as error:
            raise EnsembleError(str(error)) from None

    def __iter__(self) -> Iterator[Member]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, index: int) -> Member:
        return self.members[index]

    @property
    def names(self) -> list[str]:
        return [member.name for member in self.members]

    @property
    def first(self) -> Member:
        """The member whose config describes the inputs and whose provenance heads the catalogue's."""
        return self.members[0]

    @property
    def averaged(self) -> bool:
        """Whether the score is an average of several members (then each also has a ``score_<name>`` column)."""
        return len(self.members) > 1

    @property
    def member_names(self) -> list[str]:
        """The names of the members with their own catalogue columns: all of them when averaged, else none."""
        return self.names if self.averaged else []

    def calibration(self) -> Calibration:
        """Decision threshold and training prevalence for the ensemble's mean probability.

        One model: its own. Several: the means of theirs -- an approximation, since the mean
        probability's false-positive rate at that threshold was never measured; evaluate the
        ensemble (python -m lensnet.evaluate) before relying on is_candidate.
        """
        in_crossfit = crossfit_members(self.crossfits)
        plain = [member.config for member in self.members if member.name not in in_crossfit]
        thresholds = [config.threshold for config in plain] + [crossfit.threshold for crossfit in self.crossfits]
        prevalences = [config.train_prevalence for config in plain] + [c.train_prevalence for c in self.crossfits]
        return Calibration(float(np.mean(thresholds)), float(np.mean(prevalences)))

    def describe_score(self) -> str:
        """What the catalogue's ``score`` is, for its provenance."""
        return describe_score(self.names, self.crossfits)

    def provenance(self) -> list[dict[str, Any]]:
        """One entry per member: name, checkpoint, weights sha256, threshold, normalisation."""
        from lensnet.checkpoint import WEIGHTS_FILE, sha256_of

        return [{"name": name, "checkpoint": str(path), "weights_sha256": sha256_of(path / WEIGHTS_FILE),
                 "threshold": config.threshold, "normalisation": config.normalisation}
                for name, path, config in self.members]


def describe_score(names: Sequence[str], crossfits: Sequence[CrossFit] = ()) -> str:
    """What the catalogue's ``score`` is when the models ``names`` scored it, for its provenance."""
    if crossfits:
        in_crossfit = crossfit_members(crossfits)
        units = [name for name in names if name not in in_crossfit] + [
            f"the cross-fit {crossfit.name} (each object scored by the one of {', '.join(crossfit.members)} that "
            "did not train on it)" for crossfit in crossfits]
        return units[0] if len(units) == 1 else f"mean probability of {'; '.join(units)}"
    if len(names) > 1:
        return f"mean probability of the models {', '.join(names)}"
    return "sigmoid(logit) of the one model"


def combine_logits(by_model: Mapping[str, npt.ArrayLike]) -> np.ndarray:
    """The ensemble's float32 logit from each member's logits: the logit of their mean probability.

    One member: its logits as they are. Several: ``logit(mean(sigmoid(logits)))`` in float64,
    without overflow for confident members (:func:`lensnet.predict.mean_probability_logit`);
    its sigmoid is the ``mean`` rule's score.
    """
    from lensnet.scorer import combine_logits as combine

    try:
        return combine(by_model)
    except ValueError as error:
        raise EnsembleError(str(error)) from None
