"""The architecture comparison: one recipe, the same stamps, a side-by-side table."""

from __future__ import annotations

import json

import pytest

from lensnet import compare


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
        (test,) = row["test"].values()
        assert 0.0 <= test["auroc"]["value"] <= 1.0 and row["cpu_images_per_s"] > 0
        assert test["completeness_bright_at_fpr"]["fpr"] <= 0.01
    assert result["data"]["n_test"] == {"lenstronomy/ground-gri/seed 2": 80}
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


def _row(architecture: str, auroc: float, variant: str = "", other: float | None = None) -> dict:
    def test(value: float) -> dict:
        interval = {"value": value, "interval_95": [value - 0.01, value + 0.01]}
        bright = {"value": 0.5, "n_lenses": 10, "n_detected": 5, "fpr": 0.01, "logit_threshold": 1.0,
                  "interval_95": [0.2, 0.8]}
        return {"auroc": interval, "tpr0": interval, "tpr10": {"value": 0.25}, "fpr_at_threshold": 0.009,
                "completeness_bright_at_threshold": 0.4, "completeness_bright_at_fpr": bright}

    tests = {"lenstronomy/ground-gri/seed 2": test(auroc)}
    if other is not None:
        tests["galsim/ground-gri/seed 2"] = test(other)
    return {"architecture": architecture, "parameters": 1234, "test": tests, "variant": variant,
            "train_data": variant, "cpu_images_per_s": 321.0, "best_epoch": 3, "train_seconds": 10.0,
            "device": "cpu"}


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
    assert "0.9500 [0.9400, 0.9600]" in section and "0.5000 [0.2000, 0.8000] (5/10)" in section
    assert "4 epochs, batch 256" in section
    assert "a budget remark" in section


def test_training_data_variants_get_a_column_per_test_set():
    result = {"recipe": {"epochs": 4, "batch_size": 256, "learning_rate": 0.003, "seed": 0},
              "data": {"train": {"lenstronomy": "a", "galsim": "b"}, "test": ["a-test", "b-test"],
                       "n_test": {"x": 1}},
              "command": "c", "measured_on": "a CPU", "note": "",
              "rows": [_row("lensresnet-fast", 0.97, "lenstronomy", other=0.70),
                       _row("lensresnet-fast", 0.90, "galsim", other=0.96)]}
    table = compare.render_table(result)
    header = table.splitlines()[0]
    assert "training data" in header and "AUROC on lenstronomy/ground-gri/seed 2" in header
    assert "AUROC on galsim/ground-gri/seed 2" in header
    # ordered by the worst AUROC over the test sets: the galsim-trained model (0.90) first
    body = table.splitlines()[2:4]
    assert body[0].startswith("| galsim |") and body[1].startswith("| lenstronomy |")
    assert "0.7000 [0.6900, 0.7100]" in body[1]


def test_variants_must_be_named(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: x\ntest_data: y\n")
    argv = ["--config", str(recipe), "--architectures", "a", "--out", "o"]
    with pytest.raises(SystemExit):
        compare.parse_args([*argv, "--variant", "nameless"])
    *_, variants = compare.parse_args([*argv, "--variant", "both=[a, b]", "--variant", "one=c"])
    assert variants == {"both": ["a", "b"], "one": "c"}


def test_a_training_data_comparison_is_named_so_in_the_card(tiny_model, tmp_path):
    import shutil

    from lensnet.card import render_card

    checkpoint = tmp_path / "model"
    shutil.copytree(tiny_model, checkpoint)
    result = {"recipe": {"epochs": 4, "batch_size": 256, "learning_rate": 0.003, "seed": 0},
              "data": {"train": {"lenstronomy": "a"}, "test": ["a-test", "b-test"], "n_test": {"x": 1}},
              "command": "c", "measured_on": "a CPU", "note": "",
              "rows": [_row("lensresnet-fast", 0.97, "lenstronomy", other=0.70)]}
    (checkpoint / compare.COMPARISON_FILE).write_text(json.dumps(result))
    card = render_card(checkpoint)
    assert "## Training-data comparison" in card and "## Architecture comparison" not in card
    assert "Every training set below" in card
