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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lensnet.models import create_model

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SHIPPED_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = "default"


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
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model-config keys: {sorted(unknown)}")
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


def load_config(name_or_path: str | Path) -> ModelConfig:
    """Only the config of a checkpoint (cheap: no weights are read)."""
    return ModelConfig.from_json((resolve_checkpoint(name_or_path) / CONFIG_FILE).read_text())


def load_model(name_or_path: str | Path = DEFAULT_MODEL, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild a checkpoint's module, load its weights and put it in eval mode."""
    directory = resolve_checkpoint(name_or_path)
    config = load_config(directory)
    module = config.build()
    state = load_file(directory / WEIGHTS_FILE, device=str(device))
    module.load_state_dict(state)
    module.to(device).eval()
    return LoadedModel(module, config, directory, sha256_of(directory / WEIGHTS_FILE))


def save_checkpoint(module: nn.Module, config: ModelConfig, directory: str | Path) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in module.state_dict().items()}
    save_file(state, directory / WEIGHTS_FILE)
    (directory / CONFIG_FILE).write_text(config.to_json() + "\n")
    return directory
