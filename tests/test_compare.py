"""The architecture comparison: one recipe, the same stamps, a side-by-side table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lensnet import compare


def test_completeness_at_fpr_is_exact_with_ties():
    labels = np.array([0] * 200 + [1] * 4)
    logits = np.concatenate([np.arange(200, dtype=float), [250.0, 199.0, 198.5, 10.0]])
    selected = np.ones(len(labels), dtype=bool)
    # 1% of 200 non-lenses = 2 may pass: the threshold is the third highest, 197; a lens
    # tied with it would not count.
    result = compare.completeness_at_fpr(labels, logits, selected, 0.01)
    assert result["logit_threshold"] == 197.0
    assert result["n_detected"] == 3 and result["n_lenses"] == 4 and result["value"] == 0.75
    assert result["fpr"] == 0.01
    only_last = selected & (np.arange(len(labels)) == 203)
    assert compare.completeness_at_fpr(labels, logits, only_last, 0.01)["value"] == 0.0
    tied = np.concatenate([np.zeros(200), [0.0, 1.0, 1.0, 0.0]])
    assert compare.completeness_at_fpr(labels, tied, selected, 0.01)["n_detected"] == 2


@pytest.mark.slow
def test_compare_trains_each_architecture_on_the_same_data_and_resumes(tmp_path, capsys):
    simulate = {"profile": "ground-gri", "lens_fraction": 0.5, "chunk_size": 40}
    config = tmp_path / "recipe.yaml"
    config.write_text(json.dumps({
        "data": {"simulate": {**simulate, "n": 80, "seed": 1}},
        "test_data": {"simulate": {**simulate, "n": 80, "seed": 2}},
        "out": "unused", "epochs": 1, "batch_size": 16, "normalisation_params": {"scale": 3.0}, "threads": 1}))
    out = tmp_path / "cmp"
    argv = ["--config", str(config), "--architectures", "lensresnet-tiny,ou-66", "--out", str(out)]
    assert compare.main(argv) == 0
    result = json.loads((out / compare.COMPARISON_FILE).read_text())
    assert [row["architecture"] for row in result["rows"]] == ["lensresnet-tiny", "ou-66"]
    for row in result["rows"]:
        assert 0.0 <= row["auroc"]["value"] <= 1.0 and row["cpu_images_per_s"] > 0
        assert row["completeness_bright_at_test_fpr_1pc"]["fpr"] <= 0.01
    assert result["data"]["n_test"] == 80
    # Both models were trained from the one materialised data set.
    for architecture in ("lensresnet-tiny", "ou-66"):
        recorded = json.loads((out / architecture / "config.json").read_text())["training"]["data"]["path"]
        assert recorded == str(out / "data" / "train")
    table = (out / "comparison.md").read_text()
    assert "lensresnet-tiny" in table and "ou-66" in table
    # A rerun finds both trained and only measures again.
    capsys.readouterr()
    assert compare.main(argv) == 0
    assert "== " not in capsys.readouterr().out


def test_unknown_architectures_and_a_missing_test_set_are_refused(tmp_path):
    from lensnet.train import TrainConfig

    base = TrainConfig(data="x", out=str(tmp_path), test_data="y")
    with pytest.raises(ValueError, match="unknown architecture"):
        compare.compare(base, ["lensresnet-tiny", "no-such-net"], tmp_path)
    with pytest.raises(ValueError, match="test_data"):
        compare.compare(TrainConfig(data="x", out=str(tmp_path)), ["lensresnet-tiny"], tmp_path)


def _row(architecture: str, auroc: float) -> dict:
    interval = {"value": auroc, "interval_95": [auroc - 0.01, auroc + 0.01]}
    bright = {"value": 0.5, "n_lenses": 10, "n_detected": 5, "fpr": 0.01, "logit_threshold": 1.0}
    return {"architecture": architecture, "parameters": 1234, "auroc": interval, "average_precision": interval,
            "tpr0": interval, "tpr10": {"value": 0.25}, "fpr_at_threshold": 0.009,
            "completeness_bright_at_threshold": {"value": 0.4, "n_lenses": 10, "n_detected": 4},
            "completeness_bright_at_test_fpr_1pc": bright, "completeness_all_at_test_fpr_1pc": bright,
            "cpu_images_per_s": 321.0, "best_epoch": 3, "train_seconds": 10.0, "device": "cpu"}


def test_a_comparison_next_to_a_checkpoint_appears_in_its_card(tiny_model, tmp_path):
    import shutil

    from lensnet.card import render_card

    checkpoint = tmp_path / "model"
    shutil.copytree(tiny_model, checkpoint)
    assert "Architecture comparison" not in render_card(checkpoint)
    result = {"recipe": {"epochs": 4, "batch_size": 256, "learning_rate": 0.003, "seed": 0},
              "data": {"train": {"simulate": {"n": 100}}, "test": {"simulate": {"n": 50}}, "n_test": 50},
              "command": "python -m lensnet.compare ...", "measured_on": "a CPU", "note": "a budget remark",
              "rows": [_row("ou-66", 0.91), _row("lensresnet-small", 0.95)]}
    (checkpoint / compare.COMPARISON_FILE).write_text(json.dumps(result))
    card = render_card(checkpoint)
    section = card[card.index("## Architecture comparison"):]
    # Best AUROC first, with its interval, and the budget of the comparison stated.
    assert section.index("| lensresnet-small |") < section.index("| ou-66 |")
    assert "0.9500 [0.9400, 0.9600]" in section and "0.500 (5/10)" in section
    assert "4 epochs, batch 256" in section
    assert "a budget remark" in section
