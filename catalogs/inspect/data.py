"""What inspection reads from a run directory: the ranked catalogue, stamps, the model.

Only the run directory's own products are read (the catalogue and the cutout store, as
:mod:`catalogs.layout` names them) plus the model checkpoint named in the catalogue's
provenance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from catalogs.io import read_provenance
from catalogs.layout import CANDIDATES_FILE, STORE_DIR, RunLayout, read_cutouts, store_bands
from lensnet.checkpoint import LoadedModel, load_model

log = logging.getLogger(__name__)

#: Optional catalogue column naming a previously known lens that the object matches.
KNOWN_LENS_COLUMN = "known_lens_name"


class RunError(ValueError):
    """The directory is not a usable run directory."""


@dataclass
class InspectionRun:
    """A run directory opened for inspection.

    Attributes:
        run_dir: the directory (resolved).
        catalogue: every scored object, in rank order (1 first).
        top: the first ``n`` rows of ``catalogue``, the ones shown to graders.
        bands: band names of the stamps, in channel order.
        provenance: the catalogue's provenance dictionary (empty if it has none).
    """

    run_dir: Path
    catalogue: pd.DataFrame
    top: pd.DataFrame
    bands: list[str]
    provenance: dict[str, Any]

    @property
    def object_ids(self) -> pd.Index:
        """The catalogue's object ids (for validating posted grades)."""
        return pd.Index(self.catalogue["object_id"])

    @property
    def has_known_lens_column(self) -> bool:
        return KNOWN_LENS_COLUMN in self.catalogue.columns


def open_run(run_dir: str | Path, top: int = 100) -> InspectionRun:
    """Read the ranked catalogue of ``run_dir`` and select its ``top`` candidates."""
    if top < 1:
        raise RunError(f"--top must be at least 1; got {top}")
    run_dir = Path(run_dir).resolve()
    layout = RunLayout(run_dir)
    path = layout.candidates
    if not path.is_file():
        raise RunError(f"{run_dir} holds no {CANDIDATES_FILE}: is it the --out directory of a run?")
    if not layout.store.is_dir():
        raise RunError(f"{run_dir} holds no {STORE_DIR}: the stamps are needed to show the candidates")
    catalogue = pd.read_parquet(path)
    missing = {"object_id", "score", "rank", "cutout_index"} - set(catalogue.columns)
    if missing:
        raise RunError(f"{path} lacks the column(s) {sorted(missing)}")
    if catalogue["object_id"].duplicated().any():
        raise RunError(f"{path} lists some object_id more than once")
    catalogue = catalogue.sort_values("rank", kind="stable").reset_index(drop=True)
    try:
        provenance = read_provenance(path)
    except KeyError:
        provenance = {}
    bands = store_bands(layout.store) or list(provenance.get("bands", []))
    return InspectionRun(run_dir, catalogue, catalogue.head(top).copy(), bands, provenance)


def read_stamps(run: InspectionRun, cutout_indices: np.ndarray | list[int]) -> np.ndarray:
    """Raw stamps ``(n, bands, H, W)`` float32 for these rows of the run's cutout store, in
    the order given (NaN where the tile had no data)."""
    indices = np.asarray(cutout_indices, dtype=np.int64)
    if len(indices) == 0:
        return np.empty((0, len(run.bands), 0, 0), dtype=np.float32)
    return read_cutouts(RunLayout(run.run_dir).store, indices)


@dataclass
class RunModel:
    """The run's model, ready to explain its scores.

    Attributes:
        loaded: module (eval mode) and config.
        normalisation: name of the normalisation the run applied.
        normalisation_params: its keyword arguments.
    """

    loaded: LoadedModel
    normalisation: str
    normalisation_params: dict[str, Any]

    def normalise(self, stamps: np.ndarray) -> np.ndarray:
        """Model inputs for raw stamps, exactly as the run computed them."""
        from lensnet.preprocess import normalise

        inputs, _ = normalise(stamps, self.normalisation, **self.normalisation_params)
        return inputs


def load_run_model(run: InspectionRun, device: str = "cpu") -> tuple[RunModel | None, str]:
    """The model that scored the run, or ``(None, why)`` when it cannot be found.

    The checkpoint path in the provenance is tried first, then the model's name as a
    shipped model; either must carry the weights (sha256) the run recorded, since the
    maps of another model would explain scores it did not give.
    """
    model_info = run.provenance.get("model", {})
    recorded_sha = model_info.get("weights_sha256")
    tried = []
    for reference in (model_info.get("checkpoint"), model_info.get("name")):
        if not reference:
            continue
        try:
            loaded = load_model(reference, device=device)
        except (FileNotFoundError, OSError, ValueError, RuntimeError) as error:
            tried.append(f"{reference}: {error}")
            continue
        if recorded_sha and loaded.weights_sha256 != recorded_sha:
            tried.append(f"{reference}: weights differ from the run's (sha256 {loaded.weights_sha256[:12]}...)")
            continue
        preprocessing = run.provenance.get("preprocessing", {})
        normalisation = preprocessing.get("normalisation", loaded.config.normalisation)
        params = preprocessing.get("params", loaded.config.normalisation_params)
        return RunModel(loaded, normalisation, dict(params)), ""
    why = "; ".join(tried) if tried else "the catalogue's provenance names no model"
    log.warning("no interpretability maps: %s", why)
    return None, why
