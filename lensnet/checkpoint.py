"""A trained model on disk: weights (safetensors) beside the config that describes them.

The config is the one source of truth for what a model needs from the data — bands and
their order, stamp size, pixel scale, normalisation — and for how to read its scores
(decision threshold, the class prevalence it was trained at). The pipeline reads it;
no stage repeats these numbers.

Layout of a checkpoint directory::

    model.safetensors   the state dict
    config.json         ModelConfig as JSON
    MODEL_CARD.md       optional human-readable description
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lensnet.models import create_model, list_models

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
#: Marks a directory of K fold checkpoints as one cross-fitted adaptation (lensnet.adapt.crossfit).
CROSSFIT_FILE = "crossfit.json"
SHIPPED_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = "default"


class CheckpointError(ValueError):
    """A checkpoint's config or weights are unusable; the message names the file and what to do."""


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model and feed it correctly.

    Attributes:
        architecture: registry name (see ``lensnet.list_models()``).
        bands: band names in the order of the input channels.
        stamp_size_px: side of the square stamp the model was trained on.
        pixel_scale_arcsec: pixel scale of those stamps.
        normalisation: name of a function in ``lensnet.preprocess.NORMALISATIONS``.
        normalisation_params: keyword arguments for it.
        arch_kwargs: keyword arguments for the architecture's entry point.
        threshold: score above which an object is called a candidate.
        train_prevalence: fraction of lenses in the training set (for prior-shift recalibration).
        name: a short label for catalogues and reports.
        training: recipe, data description and command that produced the weights.
        metrics: held-out evaluation of these weights.
    """

    architecture: str
    bands: list[str]
    stamp_size_px: int
    pixel_scale_arcsec: float
    normalisation: str
    normalisation_params: dict[str, Any] = field(default_factory=dict)
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.5
    train_prevalence: float = 0.5
    name: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        """Parse and check a config; :class:`CheckpointError` (a ValueError) says what is wrong."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CheckpointError(f"is not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise CheckpointError("must hold a JSON object of config keys")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(fields)
        if unknown:
            raise CheckpointError(f"has unknown model-config keys: {sorted(unknown)}")
        required = [name for name, f in fields.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise CheckpointError(f"lacks the key(s) {', '.join(missing)}")
        _check_config_values(data)
        return cls(**data)

    def build(self) -> nn.Module:
        """A freshly initialised module of this architecture."""
        return create_model(self.architecture, bands=len(self.bands), **self.arch_kwargs)


@dataclass
class LoadedModel:
    """A module in eval mode, its config, and where its weights came from."""

    module: nn.Module
    config: ModelConfig
    path: Path
    weights_sha256: str


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """The directory of a shipped model name (e.g. ``"default"``) or a checkpoint path."""
    candidate = Path(name_or_path)
    if candidate.is_file() and candidate.name in (WEIGHTS_FILE, CONFIG_FILE):
        candidate = candidate.parent
    if candidate.is_dir():
        directory = candidate
    elif (SHIPPED_DIR / str(name_or_path)).is_dir():
        directory = SHIPPED_DIR / str(name_or_path)
    else:
        shipped = sorted(p.name for p in SHIPPED_DIR.iterdir() if p.is_dir()) if SHIPPED_DIR.is_dir() else []
        raise FileNotFoundError(
            f"model {str(name_or_path)!r} is neither a checkpoint directory nor a shipped model "
            f"(shipped: {', '.join(shipped) or 'none'})"
        )
    for required in (WEIGHTS_FILE, CONFIG_FILE):
        if not (directory / required).is_file():
            raise FileNotFoundError(f"checkpoint {directory} lacks {required}")
    return directory


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_config_values(data: dict[str, Any]) -> None:
    """The types and ranges of a config's values (raises CheckpointError naming the key)."""
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    architecture = data["architecture"]
    if not isinstance(architecture, str) or architecture not in list_models():
        raise CheckpointError(f"names architecture {architecture!r}, which is not registered "
                              f"(registered: {', '.join(list_models())})")
    bands = data["bands"]
    if not (isinstance(bands, list) and bands and all(isinstance(band, str) and band for band in bands)
            and len(set(bands)) == len(bands)):
        raise CheckpointError(f"bands must be a list of distinct band names, not {bands!r}")
    size = data["stamp_size_px"]
    if not (isinstance(size, int) and not isinstance(size, bool) and size > 0):
        raise CheckpointError(f"stamp_size_px must be a positive integer, not {size!r}")
    if not (number(data["pixel_scale_arcsec"]) and data["pixel_scale_arcsec"] > 0):
        raise CheckpointError(f"pixel_scale_arcsec must be a positive number, not {data['pixel_scale_arcsec']!r}")
    from lensnet.preprocess import NORMALISATIONS

    if data["normalisation"] not in NORMALISATIONS:
        raise CheckpointError(f"normalisation {data['normalisation']!r} is not one of {', '.join(NORMALISATIONS)}")
    for key in ("normalisation_params", "arch_kwargs", "training", "metrics"):
        if key in data and not isinstance(data[key], dict):
            raise CheckpointError(f"{key} must be a JSON object, not {data[key]!r}")
    if "threshold" in data and not (number(data["threshold"]) and 0 <= data["threshold"] <= 1):
        raise CheckpointError(f"threshold must be a number in [0, 1], not {data['threshold']!r}")
    if "train_prevalence" in data and not (number(data["train_prevalence"]) and 0 < data["train_prevalence"] < 1):
        raise CheckpointError(f"train_prevalence must lie strictly between 0 and 1, not {data['train_prevalence']!r}")
    if "name" in data and not isinstance(data["name"], str):
        raise CheckpointError(f"name must be a string, not {data['name']!r}")


def load_config(name_or_path: str | Path) -> ModelConfig:
    """Only the config of a checkpoint (cheap: no weights are read).

    Raises :class:`CheckpointError` naming the file when it is unreadable or invalid.
    """
    path = resolve_checkpoint(name_or_path) / CONFIG_FILE
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} cannot be read ({error})") from None
    try:
        return ModelConfig.from_json(text)
    except CheckpointError as error:
        raise CheckpointError(f"{path} {error}; restore the checkpoint's config.json from its training run") \
            from None


def load_model(name_or_path: str | Path = DEFAULT_MODEL, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a checkpoint's module, load its weights and put it in eval mode.

    A truncated or corrupt weights file, or weights that do not fit the architecture the
    config names, raise :class:`CheckpointError` with one line naming the file.
    """
    directory = resolve_checkpoint(name_or_path)
    config = load_config(directory)
    weights = directory / WEIGHTS_FILE
    try:
        module = config.build()
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{directory / CONFIG_FILE}: architecture {config.architecture!r} cannot be built "
                              f"with arch_kwargs {config.arch_kwargs} ({error})") from None
    try:
        state = load_file(weights, device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights} cannot be read ({error}): the file is truncated or corrupt; "
                              "copy the checkpoint again") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(key for key in set(expected) & set(state) if expected[key].shape != state[key].shape)
    if missing or unexpected or reshaped:
        problems = [f"{len(keys)} {what} (e.g. {keys[0]})" for keys, what in
                    ((missing, "missing"), (unexpected, "unexpected"), (reshaped, "of another shape")) if keys]
        raise CheckpointError(
            f"{weights} does not fit architecture {config.architecture!r} with {len(config.bands)} band(s) as "
            f"{directory / CONFIG_FILE} describes it: tensors {'; '.join(problems)}; the config names the wrong "
            "architecture, bands or arch_kwargs for these weights")
    module.load_state_dict(state)
    module.to(device).eval()
    return LoadedModel(module, config, directory, sha256_of(weights))


def save_checkpoint(module: nn.Module, config: ModelConfig, directory: str | Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}
    from lensnet.data import write_text_atomically

    # each file is written aside and moved into place, so a kill never leaves a truncated one
    save_file(state, directory / (WEIGHTS_FILE + ".partial"))
    os.replace(directory / (WEIGHTS_FILE + ".partial"), directory / WEIGHTS_FILE)
    write_text_atomically(directory / CONFIG_FILE, config.to_json() + "\n")
    return directory
