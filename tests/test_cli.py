"""The command line: help, clear one-line errors, configuration layering."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.config import SettingsError, resolve
from run_survey import main

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "run_survey.py"), *args], capture_output=True, text=True,
                          timeout=120)


def test_help_documents_every_flag():
    result = run_cli("--help")
    assert result.returncode == 0
    for flag in ("--images", "--catalog", "--bands", "--out", "--model", "--workers", "--scheduler",
                 "--config", "--demo", "--cluster", "--force"):
        assert flag in result.stdout
    assert "{tile}" in result.stdout and "flags bitmask" in result.stdout


def test_missing_catalogue_is_a_one_line_error(tmp_path):
    result = run_cli("--images", str(tmp_path / "{tile}_{band}.fits"), "--catalog", str(tmp_path / "nope.parquet"),
                     "--out", str(tmp_path / "out"), "--no-progress")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "nope.parquet: no such file" in result.stderr


def test_catalogue_without_coordinates_is_rejected(tmp_path, capsys):
    catalog = tmp_path / "cat.csv"
    pd.DataFrame({"id": [1, 2], "RA_deg": [1.0, 2.0]}).to_csv(catalog, index=False)
    code = main(["--images", str(tmp_path / "{tile}_{band}.fits"), "--catalog", str(catalog),
                 "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    error = capsys.readouterr().err
    assert "lacks column(s) ra, dec" in error and "RA_deg" in error


def test_duplicate_ids_are_rejected(tmp_path, capsys):
    catalog = tmp_path / "cat.csv"
    pd.DataFrame({"id": [1, 1], "ra": [1.0, 2.0], "dec": [0.0, 0.0]}).to_csv(catalog, index=False)
    assert main(["--images", str(tmp_path / "{tile}_{band}.fits"), "--catalog", str(catalog),
                 "--out", str(tmp_path / "out")]) == 2
    assert "duplicate id" in capsys.readouterr().err


def test_pattern_without_placeholders_is_rejected(capsys, tmp_path):
    assert main(["--images", "tiles/a.fits", "--catalog", "c.csv", "--out", str(tmp_path)]) == 2
    assert "lacks the placeholder {tile}" in capsys.readouterr().err


def test_yaml_is_layered_under_flags(tmp_path):
    config = tmp_path / "survey.yaml"
    config.write_text(yaml.safe_dump({"images": "t/{tile}_{band}.fits", "catalog": "c.parquet", "out": "o",
                                      "shard-size": 64, "bands": "g,r,i", "workers": 3}))
    settings = resolve(config, workers=5, out=None)
    assert settings.shard_size == 64 and settings.workers == 5 and settings.out == "o"
    assert settings.bands == ["g", "r", "i"]


def test_unknown_yaml_key_is_rejected(tmp_path):
    config = tmp_path / "survey.yaml"
    config.write_text("shard_sise: 3\n")
    with pytest.raises(SettingsError, match="unknown key.*shard_sise"):
        resolve(config)


def test_demo_scores_count_every_lens_and_the_visible_ones_apart(tmp_path):
    from pipeline.demo import score_demo

    truth = pd.DataFrame({"id": [1, 2, 3, 4, 5, 6], "is_lens": [True, True, True, False, False, False],
                          "arc_snr": [100.0, 3.0, 50.0, 0.0, 0.0, 0.0],
                          "theta_e_arcsec": [2.0, 2.0, 0.6, 0.0, 0.0, 0.0]})
    # The invisible lens (S/N 3) ranks below a non-lens; the visible one (S/N 100, θE 2″) ranks first.
    candidates = pd.DataFrame({"object_id": [1, 2, 3, 4, 5, 6], "logit": [5.0, -3.0, 0.5, 1.0, -1.0, -2.0]})
    candidates["score"] = 1 / (1 + np.exp(-candidates["logit"]))
    truth.to_parquet(tmp_path / "truth.parquet")
    candidates.to_parquet(tmp_path / "candidates.parquet")
    scores = score_demo(tmp_path / "candidates.parquet", tmp_path / "truth.parquet")
    assert scores["lenses"] == 3 and scores["objects"] == 6
    assert scores["auroc"] == pytest.approx(5 / 9)  # pairs (lens above non-lens): 3 + 0 + 2 of 9
    assert scores["visible_lenses"] == 1 and scores["auroc_visible"] == pytest.approx(1.0)
