"""What ``lensnet.evaluate --model`` scores with: one checkpoint, or an ensemble of several.

``--model a,b`` averages the members' probabilities, as ``run_survey.py --model a,b``
does: the ensemble's logit is ``logit(mean(sigmoid(logit_i)))`` and its decision threshold
the mean of the members' thresholds (the calibration a survey run uses for
``is_candidate``). Evaluating the ensemble this way measures what a survey run with it
would rank and flag, so an ensemble can be chosen or refused by the same cross-simulator
tables as a single model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from lensnet.checkpoint import LoadedModel, ModelConfig, load_model
from lensnet.predict import mean_probability_logit

__all__ = ["Scorer", "check_members", "combine_logits", "split_models"]


def split_models(models: str | Path | Sequence[str | Path]) -> list[str]:
    """The members of ``--model``: a comma-separated string, a path, or a list of either."""
    if isinstance(models, (str, Path)):
        items = [part.strip() for part in str(models).split(",")]
    else:
        items = [str(item).strip() for item in models]
    items = [item for item in items if item]
    if not items:
        raise ValueError("--model names no model")
    return items


@dataclass(frozen=True)
class Scorer:
    """One loaded checkpoint, or several whose probabilities are averaged."""

    members: tuple[LoadedModel, ...]

    @classmethod
    def load(cls, models: str | Path | Sequence[str | Path], device: str | torch.device = "cpu") -> Scorer:
        """Load every member of ``models`` (see :func:`split_models`) onto ``device``.

        Raises:
            ValueError: see :func:`check_members`.
        """
        members = tuple(load_model(item, device=device) for item in split_models(models))
        check_members([(_name(member), member.config) for member in members])
        return cls(members)

    @property
    def is_ensemble(self) -> bool:
        return len(self.members) > 1

    @property
    def names(self) -> list[str]:
        return [_name(member) for member in self.members]

    @property
    def name(self) -> str:
        """The member's name, or the members' joined by ``+``."""
        return "+".join(self.names)

    @property
    def config(self) -> ModelConfig:
        """The first member's config (inputs, normalisation), with the ensemble's name, threshold and prevalence."""
        if not self.is_ensemble:
            return self.members[0].config
        configs = [member.config for member in self.members]
        return dataclasses.replace(configs[0], name=self.name,
                                   threshold=float(np.mean([config.threshold for config in configs])),
                                   train_prevalence=float(np.mean([config.train_prevalence for config in configs])))

    @property
    def path(self) -> Path:
        """The checkpoint directory of a single model (an ensemble has none: ValueError)."""
        if self.is_ensemble:
            raise ValueError(f"the ensemble {self.name} has no checkpoint directory of its own")
        return self.members[0].path

    @property
    def weights_sha256(self) -> str:
        """The weights' sha256; for an ensemble the members' joined by ``+`` in order."""
        return "+".join(member.weights_sha256 for member in self.members)

    def describe(self) -> dict:
        """JSON-able identity: name, and for an ensemble each member's name, path and weights."""
        if not self.is_ensemble:
            member = self.members[0]
            return {"name": self.name, "path": str(member.path), "weights_sha256": member.weights_sha256}
        return {"name": self.name, "weights_sha256": self.weights_sha256,
                "combination": "logit of the members' mean probability; threshold: the mean of theirs "
                               "(as run_survey.py --model a,b)",
                "members": [{"name": _name(member), "path": str(member.path), "weights_sha256": member.weights_sha256,
                             "threshold": member.config.threshold} for member in self.members]}

    def member_logits(self, score: Callable[[LoadedModel], np.ndarray]) -> dict[str, np.ndarray]:
        """Each member's logits, ``score(member)``, by name."""
        return {_name(member): np.asarray(score(member), dtype=np.float32) for member in self.members}

    @staticmethod
    def combine(by_member: Mapping[str, npt.ArrayLike]) -> np.ndarray:
        """The ensemble's logits from its members' (:func:`combine_logits`)."""
        return combine_logits(by_member)


def check_members(members: Sequence[tuple[str, ModelConfig]]) -> None:
    """Refuse an empty ensemble, two members of one name, and members that take other inputs
    (bands, stamp size, pixel scale): an ensemble's members score the same stamps.

    ``members`` are ``(name, config)`` pairs. Raises ValueError.
    """
    if not members:
        raise ValueError("--model is empty")
    names = [name for name, _ in members]
    if len(set(names)) != len(names):
        raise ValueError(f"--model: two models share a name ({', '.join(names)}); give each checkpoint its own name")
    first_name, first = members[0]
    for name, config in members[1:]:
        if (config.bands, config.stamp_size_px, config.pixel_scale_arcsec) != (
                first.bands, first.stamp_size_px, first.pixel_scale_arcsec):
            raise ValueError(
                f"--model: {name} takes {config.bands} at {config.stamp_size_px} px, {config.pixel_scale_arcsec}\"/px, "
                f"but {first_name} takes {first.bands} at {first.stamp_size_px} px, {first.pixel_scale_arcsec}\"/px; "
                "an ensemble scores one cutout store, so its models must share bands, stamp size and pixel scale")


def combine_logits(by_member: Mapping[str, npt.ArrayLike]) -> np.ndarray:
    """The ensemble's float32 logit from each member's logits: the logit of their mean probability.

    One member: its logits as they are. Several: ``logit(mean(sigmoid(logits)))`` in float64,
    without overflow for confident members (:func:`lensnet.predict.mean_probability_logit`).
    Raises ValueError when there are none.
    """
    if not by_member:
        raise ValueError("no model's logits to combine")
    values = [np.asarray(item) for item in by_member.values()]
    if len(values) == 1:
        return values[0].astype(np.float32)
    stacked = torch.from_numpy(np.stack(values).astype(np.float64))
    return mean_probability_logit(stacked).numpy().astype(np.float32)


def _name(member: LoadedModel) -> str:
    return member.config.name or member.path.name
