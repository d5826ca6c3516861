"""lensnet.build: simulate, train and evaluate in one command, into one folder, resumable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from lensnet import build as lensbuild
from lensnet.checkpoint import load_model
from lensnet.data import SIMULATION_CACHE_ENV

ROOT = Path(__file__).resolve().parents[1]
GPU_RECIPE = ROOT / "lensnet" / "recipes" / "gpu-population2.yaml"

TOY = {
    "name": "toy",
    "architecture": "lensresnet-tiny",
    "data": {"simulate": {"engine": "lenstronomy", "profile": "ground-gri", "n": 48, "seed": 1, "chunk_size": 24,
                          "population": 2}},
    "test_data": {"simulate": {"engine": "lenstronomy", "profile": "ground-gri", "n": 32, "seed": 2,
                               "chunk_size": 16, "population": 2}},
    "evaluate": {"data": [
        {"simulate": {"engine": "lenstronomy", "profile": "ground-gri", "n": 32, "seed": 2, "chunk_size": 16,
                      "population": 2}},
        {"simulate": {"engine": "galsim", "profile": "ground-gri", "n": 16, "seed": 3, "chunk_size": 8,
                      "population": 2}},
    ], "bootstrap": 10},
    "epochs": 2,
    "batch_size": 16,
}


def _epochs_done(out: Path) -> int:
    import torch

    return len(torch.load(out / "last.pt", weights_only=True)["history"])


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("build")
    recipe = write_recipe(root / "recipe.yaml", TOY)
    out = root / "out"
    assert lensbuild.main(["--config", str(recipe), "--out", str(out), "--budget-min", "30", "--device", "cpu"]) == 0
    return recipe, out


def test_one_command_writes_weights_evaluation_timings_and_card_into_one_folder(built):
    _, out = built
    for product in ("model.safetensors", "config.json", "evaluation.json", "build.json", "MODEL_CARD.md"):
        assert (out / product).is_file(), product
    record = json.loads((out / lensbuild.BUILD_FILE).read_text())
    assert set(record["stages_seconds"]) == {"simulate", "train", "evaluate"}
    assert all(seconds > 0 for seconds in record["stages_seconds"].values())
    assert record["total_seconds"] >= sum(record["stages_seconds"].values()) - 1
    assert record["budget_min"] == 30 and record["within_budget"] is (record["total_seconds"] <= 1800)
    assert record["device"].startswith("cpu")
    # three distinct sets (the test set is also an evaluation set): simulated once each, into DIR/data
    assert len(record["simulated_sets"]) == 3
    assert Path(record["simulation_cache"]) == out / "data" and len(list((out / "data").iterdir())) == 3
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert list(evaluation["sets"]) == ["lenstronomy/ground-gri/seed 2/population 2",
                                        "galsim/ground-gri/seed 3/population 2", "all"]
    assert evaluation["command"].startswith("python -m lensnet.build")
    card = (out / "MODEL_CARD.md").read_text()
    assert "python -m lensnet.build --config" in card and "built end to end in" in card


def test_a_finished_build_run_again_changes_no_weights_and_leaves_the_environment_alone(built, monkeypatch):
    monkeypatch.delenv(SIMULATION_CACHE_ENV, raising=False)
    recipe, out = built
    before = (out / "model.safetensors").read_bytes()
    assert lensbuild.main(["--config", str(recipe), "--out", str(out), "--device", "cpu"]) == 0
    assert SIMULATION_CACHE_ENV not in os.environ
    assert (out / "model.safetensors").read_bytes() == before
    record = json.loads((out / lensbuild.BUILD_FILE).read_text())
    assert record["budget_min"] is None and record["within_budget"] is None


def test_an_interrupted_build_resumes_where_it_stopped(tmp_path, capsys):
    # Stop after one of two epochs (as a killed job would leave it), then run the build again:
    # training continues from last.pt and ends with the weights of an uninterrupted build.
    recipe = write_recipe(tmp_path / "recipe.yaml", TOY)
    cache = tmp_path / "cache"
    interrupted = lensbuild.load_recipe(recipe)
    interrupted.train = {**interrupted.train, "stop_after_epochs": 1}
    os.environ[SIMULATION_CACHE_ENV] = str(cache)
    try:
        from lensnet.train import config_from_mapping, train

        train(config_from_mapping({**interrupted.train, "out": str(tmp_path / "resumed"), "device": "cpu"}))
        assert _epochs_done(tmp_path / "resumed") == 1
        capsys.readouterr()
        lensbuild.build(lensbuild.load_recipe(recipe), tmp_path / "resumed", device="cpu")
        trained = capsys.readouterr().out
        assert "epoch 2/2: train loss" in trained and "epoch 1/2: train loss" not in trained  # continued
        lensbuild.build(lensbuild.load_recipe(recipe), tmp_path / "whole", device="cpu")
    finally:
        del os.environ[SIMULATION_CACHE_ENV]
    resumed, whole = load_model(tmp_path / "resumed"), load_model(tmp_path / "whole")
    assert _epochs_done(tmp_path / "resumed") == 2
    assert resumed.weights_sha256 == whole.weights_sha256
    # the user's cache was used, not DIR/data
    assert not (tmp_path / "whole" / "data").exists() and len(list(cache.iterdir())) == 3


@pytest.mark.parametrize(("change", "message"), [
    ({"evaluate": ["not", "a", "mapping"]}, "evaluate must be a mapping"),
    ({"evaluate": {"data": TOY["test_data"], "baseline_model": "default"}}, "unknown evaluate key(s) baseline_model"),
    ({"evaluate": {"data": TOY["test_data"], "bootstrap": -1}}, "bootstrap must be a whole number"),
    ({"epoch": 3}, "unknown key(s) epoch"),
    ({"epochs": "many"}, "epochs: 'many' is not a int"),
    ({"data": {"simulate": {"profile": "ground-gri", "seed": 1}}}, "missing n"),
    ({"evaluate": {"data": {"simulate": {"n": 10, "seed": 1, "profile": "ground-gri", "lens": 1}}}}, "unknown lens"),
])
def test_a_bad_recipe_is_one_line_before_anything_is_simulated(tmp_path, capsys, change, message):
    recipe = write_recipe(tmp_path / "recipe.yaml", {**TOY, **change})
    assert lensbuild.main(["--config", str(recipe), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_no_data_no_evaluation_set_and_a_missing_file_are_reported(tmp_path, capsys):
    no_data = {key: value for key, value in TOY.items() if key != "data"}
    assert lensbuild.main(["--config", str(write_recipe(tmp_path / "a.yaml", no_data)), "--out", "x"]) == 2
    assert "no training data" in capsys.readouterr().err
    nothing = {key: value for key, value in TOY.items() if key not in ("evaluate", "test_data")}
    assert lensbuild.main(["--config", str(write_recipe(tmp_path / "b.yaml", nothing)), "--out", "x"]) == 2
    assert "nothing to evaluate on" in capsys.readouterr().err
    assert lensbuild.main(["--config", str(tmp_path / "missing.yaml"), "--out", "x"]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_the_gpu_recipe_trains_and_measures_on_population_2_without_overlap():
    # The GPU recipe is meant for a node this test suite never sees: check what can be checked
    # here, that it parses, names a registered wide network, and never evaluates on its training stamps.
    from lensnet.models import create_model

    recipe = lensbuild.load_recipe(GPU_RECIPE)
    assert sum(p.numel() for p in create_model(recipe.train["architecture"]).parameters()) > 1_500_000
    assert recipe.train.get("init_from") is None and recipe.baseline == "default"
    training = {(s["simulate"]["engine"], s["simulate"]["seed"]) for s in recipe.train["data"]}
    held_out = [s["simulate"] for s in recipe.evaluate_data]
    assert not training & {(s["engine"], s["seed"]) for s in held_out}
    assert all(s["population"] == 2 for s in [*(x["simulate"] for x in recipe.train["data"]), *held_out])
    for engine in ("lenstronomy", "galsim"):  # >= 20,000 held-out stamps and a sanity set of each simulator
        assert any(s["engine"] == engine and s["n"] >= 20_000 and s.get("lens_fraction", 0.5) < 1 for s in held_out)
        assert any(s["engine"] == engine and s.get("lens_fraction") == 1.0 for s in held_out)
