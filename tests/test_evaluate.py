"""Evaluation CLI and report, k-fold cross-validation, and fine-tuning with a frozen backbone."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from lensnet import metrics
from lensnet.checkpoint import load_model
from lensnet.evaluate import EvaluationSettings, full_report, main, parse_data_spec, selection_function
from lensnet.train import TrainConfig, fold_directory, kfold_split, train
from lensnet.train import main as train_main
from tests.test_train import write_stamp_set

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    """The toy ring/blob set of test_train, with varied selection-function truth columns."""
    directory = write_stamp_set(tmp_path_factory.mktemp("evaluate") / "data", n=96)
    truth = pd.read_parquet(directory / "truth.parquet")
    rng = np.random.default_rng(1)
    lens = truth["is_lens"].to_numpy()
    truth["theta_e_arcsec"] = np.where(lens, rng.uniform(0.5, 3.0, len(truth)), np.nan)
    truth["arc_snr"] = np.where(lens, rng.uniform(0.0, 60.0, len(truth)), np.nan)
    truth["npix_arc_1sigma"] = np.where(lens, rng.integers(0, 300, len(truth)), np.nan)
    truth.to_parquet(directory / "truth.parquet")
    return directory


@pytest.fixture(scope="module")
def checkpoint(toy_data, tmp_path_factory):
    config = TrainConfig(data=str(toy_data), out=str(tmp_path_factory.mktemp("evaluate") / "model"),
                         architecture="lensresnet-tiny", epochs=2, batch_size=16, learning_rate=5e-3,
                         validation_fraction=0.25, threads=1, seed=3)
    return train(config)


def _strict_json(path):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_cli_writes_a_complete_report_and_valid_plots(checkpoint, toy_data, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["--model", str(checkpoint), "--data", str(toy_data), "--out", str(out), "--bootstrap", "20",
                 "--beta", str(math.sqrt(0.001)), "0.03", "1", "--fpr", "0.05", "--target-prevalence", "0.001",
                 "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "AUROC" in printed and "TPR10" in printed and "purity at prevalence 0.001" in printed

    report = _strict_json(out / "report.json")
    for key in ("model", "data", "settings", "n", "n_lenses", "n_non_lenses", "prevalence", "auroc",
                "average_precision", "tpr0", "tpr10", "fbeta", "operating_points", "prior_shift",
                "selection_function", "fpr_at_threshold", "completeness_all_lenses",
                "completeness_theta_e_gt_1.4_snr_gt_20", "command", "created_utc", "plots"):
        assert key in report, key
    assert report["n"] == 96 and report["n_lenses"] == 48
    for key in ("auroc", "average_precision", "tpr0", "tpr10"):
        low, high = report[key]["interval_95"]
        assert low <= high and 0.0 <= report[key]["value"] <= 1.0
    assert [entry["beta_squared"] for entry in report["fbeta"]] == pytest.approx([0.001, 0.0009, 1.0])
    points = report["operating_points"]
    assert set(points) == {"target_fpr", "checkpoint", "shifted_probability_0.5"}
    assert points["target_fpr"]["fpr"]["value"] <= 0.05
    assert points["checkpoint"]["threshold"] == pytest.approx(load_model(checkpoint).config.threshold)
    for point in points.values():
        for key in ("threshold", "logit_threshold", "n_selected", "tpr", "fpr", "purity_at_target_prevalence",
                    "shifted_threshold", "expected_purity_from_shifted_probabilities"):
            assert key in point
    for name in ("checkpoint", "target_fpr"):
        assert set(report["selection_function"][name]) == {"theta_e_arcsec", "arc_snr", "npix_arc_1sigma"}
        rows = report["selection_function"][name]["theta_e_arcsec"]["rows"]
        assert sum(row["n_lenses"] for row in rows) == 48

    # The numbers are those of lensnet.metrics on the written scores.
    scores = pd.read_parquet(out / "scores.parquet")
    assert report["auroc"]["value"] == metrics.auroc(scores["is_lens"], scores["logit"].astype(np.float64))
    assert report["tpr10"]["value"] == metrics.tpr_at_fp(scores["is_lens"], scores["logit"].astype(np.float64), 10)

    assert set(report["plots"]) == {"roc", "pr", "selection_function", "scores"}
    import matplotlib.image

    for name in report["plots"].values():
        path = out / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert (out / "summary.txt").read_text().startswith("96 stamps, 48 lenses")


def test_data_specs_parse_from_directories_inline_yaml_json_and_files(toy_data, tmp_path):
    assert parse_data_spec(str(toy_data)) == str(toy_data)
    expected = {"simulate": {"profile": "ground-gri", "n": 20, "seed": 7}}
    assert parse_data_spec('{"simulate": {"profile": "ground-gri", "n": 20, "seed": 7}}') == expected
    assert parse_data_spec("{simulate: {profile: ground-gri, n: 20, seed: 7}}") == expected
    (tmp_path / "spec.yaml").write_text("simulate:\n  profile: ground-gri\n  n: 20\n  seed: 7\n")
    assert parse_data_spec(str(tmp_path / "spec.yaml")) == expected
    with pytest.raises(ValueError, match="neither a directory"):
        parse_data_spec(str(tmp_path / "missing"))


def _wilson(k: int, n: int, confidence: float = 0.6827) -> tuple[float, float]:
    z = stats.norm.ppf(0.5 + confidence / 2)
    centre = (k + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * math.sqrt(k * (n - k) / n + z * z / 4)
    return centre - half, centre + half


def test_selection_function_matches_a_hand_computed_case():
    # Lenses: theta_E and whether logit >= 0. The non-lenses (NaN theta_E) must be ignored
    # even when they score high; the lens at 3.5" widens the last bin; one lens has no value.
    truth = pd.DataFrame({
        "is_lens": [1, 1, 1, 1, 1, 1, 1, 1, 0, 0],
        "theta_e_arcsec": [0.6, 0.9, 1.2, 1.5, 1.9, 2.5, 3.5, np.nan, np.nan, np.nan],
    })
    logits = np.array([-1.0, 2.0, 3.0, -2.0, 1.0, 4.0, -3.0, 5.0, 9.0, -9.0])
    result = selection_function(truth, logits, 0.0, {"theta_e_arcsec": (0.5, 1.0, 2.0, 3.0)})
    entry = result["theta_e_arcsec"]
    assert entry["bins"] == [0.5, 1.0, 2.0, 3.5]
    assert entry["n_missing"] == 1
    rows = entry["rows"]
    # [0.5, 1): 0.6 missed, 0.9 found; [1, 2): 1.2 found, 1.5 missed, 1.9 found; [2, 3.5]: 2.5 found, 3.5 missed
    assert [row["n_lenses"] for row in rows] == [2, 3, 2]
    assert [row["n_detected"] for row in rows] == [1, 2, 1]
    assert [row["completeness"] for row in rows] == pytest.approx([0.5, 2 / 3, 0.5])
    for row in rows:
        low, high = _wilson(row["n_detected"], row["n_lenses"])
        assert row["ci_lower"] == pytest.approx(low, abs=1e-9) and row["ci_upper"] == pytest.approx(high, abs=1e-9)
    # Columns the truth lacks are skipped; an empty bin gives None, not NaN.
    empty = selection_function(truth, logits, 0.0, {"theta_e_arcsec": (0.5, 0.55, 10.0), "arc_snr": (0, 1)})
    assert set(empty) == {"theta_e_arcsec"}
    assert empty["theta_e_arcsec"]["rows"][0]["completeness"] is None


def test_operating_points_and_prior_shift_by_hand():
    truth = pd.DataFrame({"is_lens": [1, 1, 1, 1, 0, 0, 0, 0, 0]})
    logits = np.array([3.0, 1.0, 0.5, -1.0, 2.0, -0.5, -2.0, -3.0, -4.0])
    settings = EvaluationSettings(betas=(1.0,), target_fpr=0.2, target_prevalence=0.1, n_bootstrap=0, bins={})
    report = full_report(truth, logits, threshold=0.5, train_prevalence=0.5, settings=settings)
    point = report["operating_points"]["checkpoint"]  # p >= 0.5, i.e. logit >= 0
    assert point["n_selected"] == 4 and point["n_lenses_selected"] == 3
    assert point["tpr"]["value"] == 0.75 and point["fpr"]["value"] == 0.2
    assert point["precision_at_evaluation_prevalence"] == 0.75
    purity = 0.1 * 0.75 / (0.1 * 0.75 + 0.9 * 0.2)
    assert point["purity_at_target_prevalence"]["value"] == pytest.approx(purity)
    assert point["purity_at_target_prevalence"]["lower_95_binomial"] < purity
    assert point["shifted_threshold"] == pytest.approx(float(metrics.prior_shift(0.5, 0.5, 0.1)))
    # At FPR <= 0.2 the lowest admissible score is 0.5 (the non-lens at 2.0 is the one false positive).
    assert report["operating_points"]["target_fpr"]["logit_threshold"] == 0.5
    # Shifted probability >= 0.5  <=>  logit >= logit(0.5) - logit(0.1) = log 9: only the top lens.
    shifted = report["operating_points"]["shifted_probability_0.5"]
    assert shifted["logit_threshold"] == pytest.approx(math.log(9.0))
    assert shifted["n_selected"] == 1 and shifted["purity_at_target_prevalence"]["value"] == 1.0
    # F1 = 2 TP / (2 TP + FN + FP): 0.75 at logit >= 0.5 (3, 1, 1); maximal, 0.8, at logit >= -1 (4, 0, 2).
    assert report["fbeta"][0]["max_fbeta"]["value"] == pytest.approx(0.8)
    assert report["fbeta"][0]["logit_threshold"] == -1.0
    assert report["auroc"]["value"] == pytest.approx(metrics.auroc(truth["is_lens"], logits))
    json.dumps(report, allow_nan=False)


def test_kfold_splits_are_disjoint_stratified_covering_and_seeded():
    labels = np.r_[np.ones(23), np.zeros(40)].astype(bool)
    splits = kfold_split(labels, 5, seed=11)
    validation = np.concatenate([val for _, val in splits])
    assert np.array_equal(np.sort(validation), np.arange(63))  # disjoint and covering
    for train_index, val_index in splits:
        assert np.intersect1d(train_index, val_index).size == 0
        assert np.union1d(train_index, val_index).size == 63
        assert labels[val_index].sum() in (4, 5) and (~labels[val_index]).sum() == 8
    again = kfold_split(labels, 5, seed=11)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(splits, again))
    assert not all(np.array_equal(a, b) for (_, a), (_, b) in zip(splits, kfold_split(labels, 5, seed=12)))
    with pytest.raises(ValueError, match="cannot fill"):
        kfold_split(labels[:3], 5, seed=0)


def test_kfold_training_writes_every_fold_and_a_summary_deterministically(toy_data, tmp_path):
    config = TrainConfig(data=str(toy_data), out=str(tmp_path / "cv"), architecture="lensresnet-tiny", epochs=1,
                         batch_size=16, learning_rate=5e-3, threads=1, seed=5, folds=3)
    assert train(config) == tmp_path / "cv"
    summary = json.loads((tmp_path / "cv" / "cv_summary.json").read_text())
    assert summary["folds"] == 3 and [entry["fold"] for entry in summary["per_fold"]] == [0, 1, 2]
    assert sum(entry["n_val"] for entry in summary["per_fold"]) == 96
    assert all(entry["n_train"] + entry["n_val"] == 96 for entry in summary["per_fold"])
    aurocs = [entry["auroc"] for entry in summary["per_fold"]]
    assert summary["mean"]["auroc"] == pytest.approx(np.mean(aurocs))
    assert summary["std"]["auroc"] == pytest.approx(np.std(aurocs, ddof=1))
    for fold in range(3):
        loaded = load_model(fold_directory(tmp_path / "cv", fold))
        assert loaded.config.training["fold"] == {"index": fold, "folds": 3}

    # One fold alone, from the command line, gives that fold's weights bit for bit.
    train_main(["--data", str(toy_data), "--out", str(tmp_path / "one"), "--architecture", "lensresnet-tiny",
                "--epochs", "1", "--batch-size", "16", "--learning-rate", "5e-3", "--threads", "1", "--seed", "5",
                "--folds", "3", "--fold", "1"])
    assert not (tmp_path / "one" / "fold-0").exists() and not (tmp_path / "one" / "cv_summary.json").exists()
    alone = torch.load(tmp_path / "one" / "fold-1" / "last.pt", weights_only=True)["model"]
    looped = torch.load(tmp_path / "cv" / "fold-1" / "last.pt", weights_only=True)["model"]
    for key, value in looped.items():
        torch.testing.assert_close(alone[key], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match="fold"):
        train(TrainConfig(**{**config.__dict__, "fold": 3}))


def test_fine_tuning_with_a_frozen_backbone_trains_only_the_last_linear_layer(checkpoint, toy_data, tmp_path):
    before = load_model(checkpoint).module.state_dict()
    # The config's architecture is the default (lensresnet-small): the checkpoint's must win.
    config = TrainConfig(data=str(toy_data), out=str(tmp_path / "tuned"), init_from=str(checkpoint),
                         freeze_backbone=True, epochs=2, batch_size=16, learning_rate=5e-2, threads=1, seed=0)
    out = train(config)
    tuned = load_model(out)
    assert tuned.config.architecture == "lensresnet-tiny"
    parent = load_model(checkpoint)
    assert tuned.config.training["parent"] == {"checkpoint": str(checkpoint), "name": parent.config.name,
                                               "weights_sha256": parent.weights_sha256}
    last_linear = [name for name, layer in tuned.module.named_modules() if isinstance(layer, torch.nn.Linear)][-1]
    trainable = {f"{last_linear}.weight", f"{last_linear}.bias"}
    after = torch.load(out / "last.pt", weights_only=True)["model"]
    assert set(after) == set(before)
    for key, value in before.items():
        if key in trainable:
            assert not torch.equal(after[key], value), f"{key} did not train"
        else:  # weights and batch-norm statistics alike
            assert torch.equal(after[key], value), f"{key} changed"


def test_tta_evaluation_scores_the_mean_over_the_eight_orientations(checkpoint, toy_data):
    from lensnet.checkpoint import load_model
    from lensnet.data import load_stamp_set
    from lensnet.evaluate import evaluate, score_stamps
    from lensnet.predict import mean_probability_logit

    loaded = load_model(checkpoint)
    stamps = load_stamp_set(toy_data).stamps[:24]
    device = torch.device("cpu")
    tta = score_stamps(loaded, stamps, device, batch_size=8, tta=True)
    views = [np.rot90(view, turns, axes=(-2, -1)) for view in (stamps, stamps[..., ::-1]) for turns in range(4)]
    by_view = torch.stack([torch.from_numpy(score_stamps(loaded, np.ascontiguousarray(view), device)) for view in views])
    np.testing.assert_allclose(tta, mean_probability_logit(by_view).numpy(), rtol=1e-4, atol=1e-4)
    # Invariant to a flip of the input; the plain scores are not.
    flipped = np.ascontiguousarray(stamps[..., ::-1])
    np.testing.assert_allclose(score_stamps(loaded, flipped, device, tta=True), tta, rtol=1e-4, atol=1e-4)
    assert not np.allclose(score_stamps(loaded, stamps, device), tta, atol=1e-4)
    report = evaluate(checkpoint, str(toy_data), None, tta=True, plots=False)
    assert report["tta"] is True and report["model"]["threshold"] == loaded.config.threshold


def test_a_misspelt_bin_column_is_an_error_not_ignored(checkpoint, toy_data, capsys):
    assert main(["--model", str(checkpoint), "--data", str(toy_data), "--bins", "theta_E=0.5,1,2",
                 "--bootstrap", "0", "--no-plots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("python -m lensnet.evaluate: error:") and "theta_E" in err and "theta_e_arcsec" in err
    assert main(["--model", str(checkpoint), "--data", str(toy_data), "--bins", "theta_e_arcsec=a,b"]) == 2


def _renamed_copy(checkpoint, directory, name, threshold=None, reverse=False):
    """A copy of ``checkpoint`` named ``name`` (optionally another threshold, or every logit negated)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(checkpoint, directory)
    config = json.loads((directory / "config.json").read_text())
    config["name"] = name
    if threshold is not None:
        config["threshold"] = threshold
    (directory / "config.json").write_text(json.dumps(config))
    if reverse:
        weights = load_file(directory / "model.safetensors")
        last = [key for key, value in weights.items() if value.dim() == 2][-1]  # the last linear layer
        for key in (last, last.replace("weight", "bias")):
            weights[key] = -weights[key]
        save_file(weights, directory / "model.safetensors")
    return directory


def test_an_ensemble_is_scored_by_mean_probability_at_the_mean_threshold(checkpoint, toy_data, tmp_path, capsys):
    from lensnet.evaluate import evaluate

    single = evaluate(checkpoint, str(toy_data), tmp_path / "single", plots=False)
    twin = _renamed_copy(checkpoint, tmp_path / "twin", "twin", threshold=0.9)
    reversed_model = _renamed_copy(checkpoint, tmp_path / "reversed", "reversed", reverse=True)

    # Two members with the same logits: the ensemble ranks as either one, at the mean of their thresholds.
    both = evaluate(f"{checkpoint},{twin}", str(toy_data), tmp_path / "both", plots=False)
    own = load_model(checkpoint).config
    assert both["model"]["name"] == f"{own.name}+twin" and len(both["model"]["members"]) == 2
    assert both["model"]["threshold"] == pytest.approx((own.threshold + 0.9) / 2)
    assert both["auroc"]["value"] == pytest.approx(single["auroc"]["value"])
    scores = pd.read_parquet(tmp_path / "both" / "scores.parquet")
    np.testing.assert_allclose(scores["logit"], scores[f"logit_{own.name}"], atol=1e-5)
    np.testing.assert_allclose(scores["logit_twin"], scores[f"logit_{own.name}"], atol=1e-6)

    # A model and its mirror image (p and 1 - p): the mean probability is 1/2 for every stamp.
    mirrored = evaluate([str(checkpoint), str(reversed_model)], str(toy_data), tmp_path / "mirrored", plots=False)
    np.testing.assert_allclose(pd.read_parquet(tmp_path / "mirrored" / "scores.parquet")["logit"], 0.0, atol=1e-5)
    assert mirrored["auroc"]["value"] == pytest.approx(0.5)

    # An ensemble as the baseline of a paired comparison; --record refused before anything is scored.
    assert main(["--model", str(checkpoint), "--data", str(toy_data), "--baseline", f"{checkpoint},{reversed_model}",
                 "--bootstrap", "10", "--threads", "1", "--no-plots", "--out", str(tmp_path / "paired")]) == 0
    paired = json.loads((tmp_path / "paired" / "cross_simulator.json").read_text())["paired"]
    assert paired["baseline"]["name"] == f"{own.name}+reversed"
    assert next(iter(paired["sets"].values()))["auroc"]["baseline"] == pytest.approx(0.5)
    capsys.readouterr()
    assert main(["--model", f"{checkpoint},{twin}", "--data", str(toy_data), "--record"]) == 2
    assert "an ensemble (--model a,b) has none" in capsys.readouterr().err
    assert not (checkpoint / "evaluation.json").exists() or "twin" not in (checkpoint / "evaluation.json").read_text()


def test_an_ensemble_refuses_two_members_of_one_name_and_an_empty_list(checkpoint, toy_data, capsys):
    assert main(["--model", f"{checkpoint},{checkpoint}", "--data", str(toy_data), "--no-plots"]) == 2
    assert "two models share a name" in capsys.readouterr().err
    assert main(["--model", " , ", "--data", str(toy_data), "--no-plots"]) == 2
    assert "--model names no model" in capsys.readouterr().err
