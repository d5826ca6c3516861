"""The demo: a mock survey with known lenses, run end to end, scored against its truth."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd

from catalogs.layout import RunLayout
from lensnet.checkpoint import load_config
from lensnet.crosssim import VISIBLE_CUTS
from lensnet.metrics import auroc
from pipeline.config import Settings, SettingsError
from pipeline.mock import make_mock_survey

READY_MARKER = ".complete"


def prepare_demo(settings: Settings, log=print) -> tuple[Settings, Path]:
    """Generate (once) the mock survey inside ``out`` and point the settings at it."""
    root = RunLayout(settings.out).mock_survey
    config = load_config(settings.model.split(",")[0])
    wanted = json.dumps({"objects": settings.demo_objects, "seed": settings.seed, "engine": settings.demo_engine,
                         "lens_fraction": settings.demo_lens_fraction}, sort_keys=True)
    marker = root / READY_MARKER
    made = marker.read_text() if marker.is_file() else None
    other = made is not None and made != wanted
    if other and not settings.force:
        raise SettingsError(f"the mock survey in {root} was made with other demo settings ({made or 'unrecorded'}); "
                            "use another --out, or --force to make it again")
    if made is None or other:
        log(f"generating a mock survey of {settings.demo_objects} objects ({settings.demo_engine} engine) in {root} ...")
        marker.unlink(missing_ok=True)
        make_mock_survey(root, n_objects=settings.demo_objects, seed=settings.seed,
                         lens_fraction=settings.demo_lens_fraction, engine=settings.demo_engine)
        marker.write_text(wanted)
    else:
        log(f"using the mock survey already in {root}")
    demo_settings = replace(
        settings,
        images=str(root / "tiles" / "{tile}_{band}.fits"),
        catalog=str(root / "sources.parquet"),
        bands=settings.bands or list(config.bands),
    )
    return demo_settings, root / "truth.parquet"


VISIBLE_ARC_SNR = VISIBLE_CUTS["arc_snr"]
VISIBLE_THETA_E_ARCSEC = VISIBLE_CUTS["theta_e_arcsec"]


def score_demo(candidates_path: str | Path, truth_path: str | Path) -> dict[str, float]:
    """AUROC of the catalogue's scores against the mock survey's truth table.

    ``auroc`` counts every simulated lens, down to arcs no one could see (arc S/N < 5, or
    θE under the seeing); ``auroc_visible`` counts as lenses only those with arc S/N >
    :data:`VISIBLE_ARC_SNR` and θE > :data:`VISIBLE_THETA_E_ARCSEC` (against every non-lens),
    the population a visual search would confirm.
    """
    candidates = pd.read_parquet(candidates_path, columns=["object_id", "score", "logit"])
    truth = pd.read_parquet(truth_path)
    joined = candidates.merge(truth, left_on="object_id", right_on="id", how="inner")
    is_lens = joined["is_lens"].to_numpy().astype(bool)
    result = {
        "auroc": float(auroc(is_lens, joined["logit"].to_numpy())),
        "lenses": int(is_lens.sum()),
        "objects": int(len(joined)),
    }
    if {"arc_snr", "theta_e_arcsec"} <= set(joined.columns):
        visible = is_lens & (joined["arc_snr"].to_numpy(float) > VISIBLE_ARC_SNR) & (
            joined["theta_e_arcsec"].to_numpy(float) > VISIBLE_THETA_E_ARCSEC)
        keep = visible | ~is_lens
        if visible.any() and (~is_lens).any():
            result["auroc_visible"] = float(auroc(visible[keep], joined["logit"].to_numpy()[keep]))
            result["visible_lenses"] = int(visible.sum())
    return result
