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
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(SIMULATION_CACHE_ENV, raising=False)  # a developer's cache must not stand in for OUT/data
        assert lensbuild.main(["--config", str(recipe), "--out", str(out), "--budget-min", "30",
                               "--device", "cpu"]) == 0
    return recipe, out


def test_one_command_writes_weights_evaluation_timings_and_card_into_one_folder(built):
    _, out = built
    for product in ("model.safetensors", "config.json", "evaluation.json", "build.json", "MODEL_CARD.md"):
        assert (out / product).is_file(), product
    record = json.loads((out / lensbuild.BUILD_FILE).read_text())
    assert record["finished"] and len(record["invocations"]) == 1
    assert set(record["stages_seconds"]) == {"simulate", "train", "evaluate"}
    assert all(seconds > 0 for seconds in record["stages_seconds"].values())
    assert record["total_seconds"] == pytest.approx(sum(record["stages_seconds"].values()), abs=0.2)
    assert record["budget_min"] == 30 and record["within_budget"] is (record["total_seconds"] <= 1800)
    assert record["device"].startswith("cpu")
    # three distinct sets (the test set is also an evaluation set): simulated once each, into DIR/data
    simulated = record["invocations"][0]["simulated_sets"]
    assert len(simulated) == 3 and not any(entry["cached"] for entry in simulated)
    assert Path(record["simulation_cache"]) == out / "data" and len(list((out / "data").iterdir())) == 3
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert list(evaluation["sets"]) == ["lenstronomy/ground-gri/seed 2/population 2",
                                        "galsim/ground-gri/seed 3/population 2", "all"]
    assert evaluation["command"].startswith("python -m lensnet.build")
    card = (out / "MODEL_CARD.md").read_text()
    assert "python -m lensnet.build --config" in card and "built end to end in" in card


def test_a_finished_build_run_again_does_nothing_and_leaves_the_environment_alone(built, monkeypatch, capsys):
    monkeypatch.delenv(SIMULATION_CACHE_ENV, raising=False)
    recipe, out = built
    before = {name: (out / name).read_bytes() for name in ("model.safetensors", "build.json", "evaluation.json")}
    capsys.readouterr()
    assert lensbuild.main(["--config", str(recipe), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "already holds this build" in printed and "epoch" not in printed
    assert SIMULATION_CACHE_ENV not in os.environ
    assert {name: (out / name).read_bytes() for name in before} == before


def test_a_folder_holding_another_recipe_or_a_foreign_model_is_refused(built, tmp_path, capsys):
    _, out = built
    other = write_recipe(tmp_path / "other.yaml", {**TOY, "learning_rate": 0.01})
    assert lensbuild.main(["--config", str(other), "--out", str(out)]) == 2
    assert "holds a build of another recipe" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "last.pt").write_bytes(b"")
    assert lensbuild.main(["--config", str(other), "--out", str(foreign)]) == 2
    assert "did not train" in capsys.readouterr().err


def test_an_interrupted_build_resumes_where_it_stopped(tmp_path, capsys, monkeypatch):
    # A build killed after one of its two epochs (left as lensnet.train leaves it) is run again:
    # training continues from last.pt, and ends with the weights of an uninterrupted build.
    from lensnet.train import config_from_mapping, train

    recipe = write_recipe(tmp_path / "recipe.yaml", TOY)
    cache = tmp_path / "cache"
    monkeypatch.setenv(SIMULATION_CACHE_ENV, str(cache))
    loaded = lensbuild.load_recipe(recipe)
    lensbuild.build(loaded, tmp_path / "whole", device="cpu")
    killed = tmp_path / "resumed"
    record = {"recipe_sha256": lensbuild.fingerprint(loaded), "invocations": [], "finished": False}
    killed.mkdir()
    (killed / lensbuild.BUILD_FILE).write_text(json.dumps(record))
    train(config_from_mapping({**loaded.train, "out": str(killed), "device": "cpu", "stop_after_epochs": 1}))
    assert _epochs_done(killed) == 1
    capsys.readouterr()
    resumed = lensbuild.build(lensbuild.load_recipe(recipe), killed, device="cpu")
    trained = capsys.readouterr().out
    assert "epoch 2/2: train loss" in trained and "epoch 1/2: train loss" not in trained  # continued
    assert _epochs_done(killed) == 2
    assert load_model(killed).weights_sha256 == load_model(tmp_path / "whole").weights_sha256
    # the user's cache was used (and found full the second time), not DIR/data
    assert not (tmp_path / "whole" / "data").exists() and len(list(cache.iterdir())) == 3
    assert all(entry["cached"] for entry in resumed["invocations"][-1]["simulated_sets"])
    assert os.environ[SIMULATION_CACHE_ENV] == str(cache)


def test_an_unreadable_cache_marker_is_simulated_again(tmp_path):
    # a kill while the marker was written must not block every later run
    from lensnet.data import is_materialised, materialise

    spec = {"simulate": {"engine": "lenstronomy", "profile": "ground-gri", "n": 4, "seed": 9, "chunk_size": 4,
                         "population": 2}}
    materialise(spec, tmp_path / "set")
    assert is_materialised(spec, tmp_path / "set")
    (tmp_path / "set" / "spec.json").write_text("{")
    assert not is_materialised(spec, tmp_path / "set")
    materialise(spec, tmp_path / "set")
    assert is_materialised(spec, tmp_path / "set")


_LT = {"engine": "lenstronomy", "profile": "ground-gri", "n": 10, "seed": 1}


@pytest.mark.parametrize(("change", "message"), [
    ({"evaluate": ["not", "a", "mapping"]}, "evaluate must be a mapping"),
    ({"evaluate": {"data": TOY["test_data"], "baseline_model": "default"}}, "unknown evaluate key(s) baseline_model"),
    ({"evaluate": {"data": TOY["test_data"], "bootstrap": -1}}, "bootstrap must be a whole number"),
    ({"evaluate": {"data": TOY["test_data"], "baseline": "no-such-model"}}, "evaluate.baseline"),
    ({"evaluate": {"data": None}}, "evaluate.data names no set"),
    ({"epoch": 3}, "unknown key(s) epoch"),
    ({"epochs": "many"}, "epochs: 'many' is not a int"),
    ({"architecture": "nope"}, "no model named 'nope'"),
    ({"normalisation": "nope"}, "unknown normalisation 'nope'"),
    ({"init_from": "no-such-model"}, "init_from"),
    ({"folds": 3}, "a build trains one model"),
    ({"stop_after_epochs": 1}, "stop_after_epochs has no place in a build"),
    ({"device": "gpu"}, "device must be one of auto, cpu, cuda"),
    ({"data": {"simulate": {"profile": "ground-gri", "seed": 1}}}, "missing n"),
    ({"data": {"simulate": {**_LT, "n": "many"}}}, "n must be a whole number > 0"),
    ({"data": {"simulate": {**_LT, "engine": "pixie"}}}, "unknown engine 'pixie'"),
    ({"data": {"simulate": {**_LT, "profile": "hubble"}}}, "unknown survey profile 'hubble'"),
    ({"data": {"simulate": {**_LT, "population": 7}}}, "population must be one of"),
    ({"data": {"simulate": {**_LT, "lens_fraction": 2}}}, "lens_fraction must lie in [0, 1]"),
    ({"data": [{"simulate": _LT}, "no/such/dir"]}, "no/such/dir is not a stamp set"),
    ({"evaluate": {"data": {"simulate": {"n": 10, "seed": 1, "profile": "ground-gri", "lens": 1}}}}, "unknown lens"),
])
def test_a_bad_recipe_is_one_line_before_anything_is_written(tmp_path, capsys, change, message):
    recipe = write_recipe(tmp_path / "recipe.yaml", {**TOY, **change})
    assert lensbuild.main(["--config", str(recipe), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_no_data_no_evaluation_set_a_missing_file_and_a_bad_device_are_reported(tmp_path, capsys):
    no_data = {key: value for key, value in TOY.items() if key != "data"}
    assert lensbuild.main(["--config", str(write_recipe(tmp_path / "a.yaml", no_data)), "--out", "x"]) == 2
    assert "no training data" in capsys.readouterr().err
    nothing = {key: value for key, value in TOY.items() if key not in ("evaluate", "test_data")}
    assert lensbuild.main(["--config", str(write_recipe(tmp_path / "b.yaml", nothing)), "--out", "x"]) == 2
    assert "nothing to evaluate on" in capsys.readouterr().err
    assert lensbuild.main(["--config", str(tmp_path / "missing.yaml"), "--out", "x"]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        lensbuild.main(["--config", str(tmp_path / "a.yaml"), "--device", "gpu"])
    assert stop.value.code == 2 and "invalid choice: 'gpu'" in capsys.readouterr().err
    assert not Path("x").exists()


def test_asking_for_cuda_where_there_is_none_is_one_line(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    recipe = write_recipe(tmp_path / "recipe.yaml", TOY)
    assert lensbuild.main(["--config", str(recipe), "--out", str(tmp_path / "out"), "--device", "cuda"]) == 2
    assert "no CUDA device is visible here" in capsys.readouterr().err and not (tmp_path / "out").exists()


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


def test_only_the_shipped_models_cards_point_at_make_train_default(tiny_model, tmp_path):
    import shutil

    from lensnet.card import render_card

    assert "Reproduce: `make train-default`" in render_card("default")
    copy = tmp_path / "mine"
    shutil.copytree(tiny_model, copy)
    card = render_card(copy)
    assert "make train-default" not in card and "Reproduce: the command above" in card
    (copy / lensbuild.BUILD_FILE).write_text(json.dumps({"recipe_sha256": "x", "invocations": [], "finished": False}))
    assert "Reproduce: the command above" in render_card(copy)  # an unfinished build is not quoted


def test_the_deflector_ab_recipes_differ_only_in_the_deflector_subtracted_view():
    # The README quotes the paired difference of these two arms as the effect of the view alone:
    # the recipes must stay identical in everything else, and parse as training configs.
    from lensnet.train import check_config, config_from_mapping

    arms = {arm: yaml.safe_load((ROOT / "lensnet" / "recipes" / f"deflector-ab-{arm}.yaml").read_text())
            for arm in ("plain", "subtracted")}
    assert arms["subtracted"].pop("arch_kwargs") == {"deflector_subtracted": True}
    assert "arch_kwargs" not in arms["plain"]
    for arm, recipe in arms.items():
        assert recipe.pop("name") == f"deflector-ab-{arm}" and recipe.pop("out") == f"runs/deflector-ab-{arm}"
    assert arms["plain"] == arms["subtracted"]
    for arm in arms:
        config = config_from_mapping(yaml.safe_load((ROOT / "lensnet" / "recipes" / f"deflector-ab-{arm}.yaml")
                                                    .read_text()))
        check_config(config)
        assert config.normalisation == "asinh_stretch" and config.init_from is None
