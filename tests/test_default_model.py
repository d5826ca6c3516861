"""The shipped default model: loadable, self-describing, and a working lens finder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lensnet import list_models, load_model
from lensnet.card import render_card
from lensnet.metrics import auroc
from lensnet.preprocess import NORMALISATIONS
from lensnet.simulate import simulate_stamps
from lensnet.predict import score_stamps

ROOT = Path(__file__).resolve().parent.parent


def test_default_model_config_is_complete():
    loaded = load_model("default")
    config = loaded.config
    assert config.architecture in list_models()
    assert config.normalisation in NORMALISATIONS
    assert config.bands == ["g", "r", "i"] and config.stamp_size_px == 64
    assert 0 < config.threshold < 1
    assert len(loaded.weights_sha256) == 64
    assert (loaded.path / "model.safetensors").stat().st_size < 20 * 2**20


@pytest.mark.parametrize("engine", ["lenstronomy", "galsim"])
def test_default_model_separates_fresh_simulated_lenses(engine):
    # A seed the training and test sets never used, from each simulator. On 20,000 held-out
    # stamps of each the default's AUROC is 0.92 counting every lens, down to invisible arcs
    # (model card); lenses with arc S/N > 20 and θE > 1″ are clearly better separated.
    stamps, truth = simulate_stamps(240, "ground-gri", seed=12345, lens_fraction=0.5, engine=engine)
    logits = score_stamps(load_model("default"), stamps, batch_size=64)
    is_lens = truth["is_lens"].to_numpy()
    assert auroc(is_lens, logits) > 0.85
    visible = is_lens & (truth["arc_snr"].to_numpy() > 20) & (truth["theta_e_arcsec"].to_numpy() > 1.0)
    keep = visible | ~is_lens
    assert visible.sum() > 40 and auroc(visible[keep], logits[keep]) > 0.92


def test_model_card_is_generated_from_the_config():
    card = render_card("default")
    assert card == (ROOT / "lensnet" / "weights" / "default" / "MODEL_CARD.md").read_text()
    recorded = load_model("default").config.metrics["auroc"]["value"]
    assert f"{recorded:.4f}" in card


@pytest.mark.slow
def test_demo_runs_end_to_end_and_ranks_the_injected_lenses(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "run_survey.py"), "--demo", "--demo-objects", "600", "--out", str(tmp_path / "demo"),
         "--workers", "2", "--dashboard-address", ":0"],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    match = re.search(r"demo AUROC against the truth table: ([0-9.]+) \((\d+) lenses", result.stdout)
    assert match, result.stdout[-2000:]
    assert float(match[1]) >= 0.85 and int(match[2]) > 30
    visible = re.search(r"demo AUROC for visible lenses \(arc S/N > 20, θE > 1.0″\): ([0-9.]+) \((\d+) lenses",
                        result.stdout)
    assert visible, result.stdout[-2000:]
    assert float(visible[1]) >= 0.88 and int(visible[2]) > 15
    for product in ("candidates.parquet", "failures.parquet", "cutouts.zarr", "dask-report.html", "summary.json"):
        assert (tmp_path / "demo" / product).exists()
