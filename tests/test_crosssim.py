"""Cross-simulator validation: per-set metrics, completeness at a fixed FPR, sanity tables, data lists."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lensnet import crosssim, sanity
from lensnet.card import render_card
from lensnet.data import SIMULATION_CACHE_ENV, describe_spec, stamp_set_from_spec
from lensnet.evaluate import main
from tests.test_evaluate import checkpoint, toy_data  # noqa: F401 (fixtures)
from tests.test_train import write_stamp_set


def test_completeness_at_fpr_is_exact_with_ties():
    labels = np.array([0] * 200 + [1] * 4)
    logits = np.concatenate([np.arange(200, dtype=float), [250.0, 199.0, 198.5, 10.0]])
    selected = np.ones(len(labels), dtype=bool)
    # 1% of 200 non-lenses = 2 may pass: the lowest admissible threshold is 198 (198 and 199
    # pass); a lens tied with it counts, a lens below it does not
    result = crosssim.completeness_at_fpr(labels, logits, selected, 0.01, n_bootstrap=0)
    assert result["logit_threshold"] == 198.0
    assert result["n_detected"] == 3 and result["n_lenses"] == 4 and result["value"] == 0.75
    assert result["fpr"] == 0.01
    only_last = selected & (np.arange(len(labels)) == 203)
    assert crosssim.completeness_at_fpr(labels, logits, only_last, 0.01, n_bootstrap=0)["value"] == 0.0
    with_interval = crosssim.completeness_at_fpr(labels, logits, selected, 0.01, n_bootstrap=200)
    low, high = with_interval["interval_95"]
    assert 0.0 <= low <= 0.75 <= high <= 1.0
    with pytest.raises(ValueError, match="non-lenses"):
        crosssim.completeness_at_fpr(np.ones(3), np.zeros(3), np.ones(3, bool))


def test_sanity_rows_count_each_kind_against_its_target():
    truth = pd.DataFrame({
        "kind": ["lens"] * 4 + ["ring"] * 3 + ["spiral"] * 2,
        "is_lens": [True] * 4 + [False] * 5,
        "theta_e_arcsec": [2.0, 2.0, 1.0, 2.0] + [np.nan] * 5,
        "arc_snr": [100.0, 60.0, 100.0, 30.0] + [np.nan] * 5,
        "arc_azimuth_fraction": [1.0, 0.3, 1.0, 1.0] + [np.nan] * 5,
    })
    assert sanity.sanity_lenses(truth).tolist() == [True, True] + [False] * 7
    scores = np.array([0.9, 0.1, 0.9, 0.9, 0.95, 0.2, 0.1, 0.0, 0.0])
    rows = {row["group"]: row for row in sanity.by_kind(truth, scores, threshold=0.5)}
    assert rows["sanity lenses"]["n"] == 2 and rows["sanity lenses"]["share_above"] == 0.5
    assert rows["sanity lenses"]["meets_target"] is False
    # the complete ring (azimuth 1.0) is found, the long arc (0.3) is not: reported apart
    assert rows["complete rings"]["n"] == 1 and rows["complete rings"]["share_above"] == 1.0
    assert list(rows)[:3] == ["sanity lenses", "complete rings", "lens"]
    assert "red sources" not in rows  # no source_red column: no row
    red = sanity.by_kind(truth.assign(source_red=[True, True, False, True] + [None] * 5), scores, threshold=0.5)
    red = {row["group"]: row for row in red}
    assert list(red)[:4] == ["sanity lenses", "complete rings", "red sources", "lens"]
    assert red["red sources"]["n"] == 2 and red["red sources"]["n_above"] == 1
    # non-lenses without the column's value (NaN in a float column) are simply not red
    floats = truth.assign(source_red=[1.0, 0.0, 0.0, 1.0] + [np.nan] * 5)
    red = {row["group"]: row for row in sanity.by_kind(floats, scores, threshold=0.5)}
    assert red["red sources"]["n"] == 1 and red["red sources"]["n_above"] == 1
    assert rows["lens"]["n_above"] == 3 and rows["lens"]["target"] is None
    assert rows["ring"]["share_above"] == pytest.approx(1 / 3) and rows["ring"]["meets_target"] is False
    assert rows["spiral"]["share_above"] == 0.0 and rows["spiral"]["meets_target"] is True
    low, high = rows["spiral"]["interval_95"]
    assert low == 0.0 and 0.5 < high < 0.9  # Wilson: 0 of 2 still allows a lot
    table = sanity.format_rows(list(rows.values()))
    assert "| ring | 3 | 1 |" in table and "✗" in table and "✓" in table


def test_sanity_lenses_are_broken_down_by_their_truth():
    # five sanity lenses (θE > 1.2, S/N > 50, azimuth >= 0.25), one faint lens and two non-lenses
    truth = pd.DataFrame({
        "is_lens": [True] * 6 + [False] * 2,
        "theta_e_arcsec": [2.0, 2.0, 2.0, 1.5, 3.5, 2.0, np.nan, np.nan],
        "arc_snr": [80.0, 80.0, 500.0, 2000.0, 60.0, 10.0, np.nan, np.nan],
        "arc_azimuth_fraction": [1.0, 0.3, 0.9, 0.6, 0.8, 1.0, np.nan, np.nan],
        "source_offset_arcsec": [0.1, 1.6, 0.0, 0.45, np.nan, 0.0, np.nan, np.nan],
        "lens_mag": [18.0, 18.0, 20.0, 21.0, 19.0, 18.0, 18.0, 19.0],
        "lensed_source_mag": [21.0, 20.5, 19.5, 19.0, 19.5, 24.0, np.nan, np.nan],
    })
    scores = np.array([0.9, 0.1, 0.95, 0.6, 0.2, 0.99, 0.99, 0.0])
    rows = {entry["quantity"]: entry["bins"] for entry in sanity.by_truth(truth, scores, threshold=0.5)}
    # no psf_fwhm_arcsec column: no PSF breakdown
    assert not any(label.startswith("PSF") for label in rows)
    offset = {b["bin"]: b for b in rows["source offset / θE (0: behind the caustic centre)"]}
    # offsets / θE: 0.05, 0.8, 0.0, 0.3, NaN (in no bin); the faint lens is not a sanity lens
    assert [(offset[k]["n"], offset[k]["n_above"]) for k in ("0–0.2", "0.2–0.5", "0.5–1", "≥ 1")] == \
        [(2, 2), (1, 1), (1, 0), (0, 0)]
    assert offset["≥ 1"]["share_above"] is None
    flux = {b["bin"]: (b["n"], b["n_above"]) for b in rows["deflector mag − lensed-source mag (> 0: arcs brighter)"]}
    # lens - arc: -3, -2.5, 0.5, 2.0, -0.5
    assert flux == {"< -2": (2, 1), "-2–-1": (0, 0), "-1–0": (1, 0), "0–1": (1, 1), "≥ 1": (1, 1)}
    snr = {b["bin"]: (b["n"], b["n_above"]) for b in rows["arc S/N"]}
    assert snr == {"50–100": (3, 1), "100–300": (0, 0), "300–1000": (1, 1), "≥ 1000": (1, 1)}
    low, high = offset["0–0.2"]["interval_95"]
    assert 0.0 < low < 1.0 == high
    table = sanity.format_by_truth(sanity.by_truth(truth, scores, threshold=0.5))
    assert "| arc S/N | 50–100: 33.3% (1/3) · 100–300: — (0/0) · 300–1000: 100.0% (1/1) · ≥ 1000: 100.0% (1/1) |" \
        in table
    first = rows["deflector mag − lensed-source mag (> 0: arcs brighter)"][0]
    assert first["low"] is None and first["high"] == -2.0  # open below, and JSON without -inf
    # without sanity lenses there is nothing to break down, and the headline row carries it
    assert sanity.by_truth(truth.assign(arc_snr=10.0), scores, 0.5) == []
    row = crosssim.headline(truth, np.log(scores.clip(1e-6, 1 - 1e-6) / (1 - scores.clip(1e-6, 1 - 1e-6))),
                            threshold=0.5, n_bootstrap=0)
    assert row["sanity_by_truth"] == sanity.by_truth(truth, scores, 0.5)
    assert "Which sanity lenses reach the threshold" in crosssim.render_tables(
        {"threshold": 0.5, "sets": {"one": row}})


def test_data_lists_concatenate_and_are_labelled(tmp_path):
    first = write_stamp_set(tmp_path / "a", n=10)
    second = write_stamp_set(tmp_path / "b", n=6, seed=2)
    both = stamp_set_from_spec([str(first), str(second)])
    assert both.stamps.shape[0] == 16 and list(both.truth["data_set"]) == ["a"] * 10 + ["b"] * 6
    assert len(both.attrs["members"]) == 2 and both.attrs["pixel_scale_arcsec"] == 0.2
    assert describe_spec({"simulate": {"engine": "galsim", "profile": "ground-gri", "seed": 4}}) == \
        "galsim/ground-gri/seed 4"
    assert describe_spec([str(first), {"simulate": {"profile": "ground-gri", "seed": 1}}]) == \
        "a + lenstronomy/ground-gri/seed 1"
    assert describe_spec({"simulate": {"engine": "galsim", "profile": "ground-gri", "seed": 4, "population": 2}}) == \
        "galsim/ground-gri/seed 4/population 2"
    assert describe_spec({"simulate": {"profile": "ground-gri", "seed": 4, "population": 1}}) == \
        "lenstronomy/ground-gri/seed 4"
    with pytest.raises(ValueError, match="must not be empty"):
        stamp_set_from_spec([])


def test_a_population_has_its_own_cache_entry_and_population_1_keeps_the_old_one():
    from lensnet.data import cache_name

    base = {"engine": "galsim", "profile": "ground-gri", "n": 6, "seed": 3}
    assert cache_name({**base, "population": 1}) == cache_name(base)
    assert cache_name({**base, "population": 2}) == cache_name(base) + "-population2"
    with pytest.raises(ValueError, match="population must be one of"):
        cache_name({**base, "population": 7})


def test_simulation_cache_writes_once_and_gives_the_same_stamps(tmp_path, monkeypatch):
    spec = {"simulate": {"engine": "lenstronomy", "profile": "ground-gri", "n": 6, "seed": 3, "chunk_size": 3,
                         "size_px": 24}}
    in_memory = stamp_set_from_spec(spec)
    monkeypatch.setenv(SIMULATION_CACHE_ENV, str(tmp_path / "cache"))
    cached = stamp_set_from_spec(spec)
    np.testing.assert_array_equal(cached.stamps, in_memory.stamps)
    (entry,) = list((tmp_path / "cache").iterdir())
    stamp_file = next((entry / "stamps.zarr").rglob("c/*/*/*/*"))
    before = stamp_file.stat().st_mtime_ns
    again = stamp_set_from_spec(spec)  # read back, not simulated again
    np.testing.assert_array_equal(again.stamps, in_memory.stamps)
    assert stamp_file.stat().st_mtime_ns == before


def test_evaluating_several_sets_side_by_side_and_recording_them(checkpoint, toy_data, tmp_path,  # noqa: F811
                                                                   capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(checkpoint, model)
    other = write_stamp_set(tmp_path / "other", n=64, seed=5)
    out = tmp_path / "cross"
    assert main(["--model", str(model), "--data", str(toy_data), "--data", str(other), "--out", str(out),
                 "--bootstrap", "30", "--threads", "1", "--record"]) == 0
    printed = capsys.readouterr().out
    assert "| data |" in printed and "| other |" in printed and "| all |" in printed and "sanity lenses" in printed
    report = json.loads((out / "cross_simulator.json").read_text())
    assert set(report["sets"]) == {"data", "other", "all"}
    assert report["sets"]["all"]["n"] == report["sets"]["data"]["n"] + report["sets"]["other"]["n"]
    for row in report["sets"].values():
        low, high = row["auroc"]["interval_95"]
        assert low <= row["auroc"]["value"] <= high
        assert row["completeness_all_at_fpr"]["fpr"] <= 0.01
    scores = pd.read_parquet(out / "other" / "scores.parquet")
    assert len(scores) == 64 and {"logit", "score", "is_lens"} <= set(scores.columns)
    recorded = json.loads((model / crosssim.EVALUATION_FILE).read_text())
    assert recorded["command"].startswith("python -m lensnet.evaluate") and len(recorded["data"]) == 2
    card = render_card(model)
    assert "## Cross-simulator evaluation" in card and "| other |" in card
    # survey rows of these weights survive a new evaluation; rows of other weights are dropped, and said so
    weights = recorded["model"]["weights_sha256"]
    row = {**recorded["sets"]["data"], "description": "", "command": ""}
    crosssim.record_survey(model, "mine", row, {"weights_sha256": weights})
    crosssim.record_survey(model, "older", row, {"weights_sha256": "0" * 64})
    assert crosssim.stale_surveys(model, weights) == ["older"]
    crosssim.record_survey(model, "unknown", row, {})  # recorded before weights were hashed
    assert crosssim.stale_surveys(model, weights) == ["older", "unknown"]
    assert main(["--model", str(model), "--data", str(toy_data), "--bootstrap", "30", "--threads", "1",
                 "--no-plots", "--record"]) == 0
    assert "not shown in the model card: 2 survey row(s) not measured with these weights: older, unknown" in \
        capsys.readouterr().err
    # kept (a survey run is costly to remake), but the card shows only this model's own row
    assert set(json.loads((model / crosssim.EVALUATION_FILE).read_text())["surveys"]) == {"mine", "older", "unknown"}
    card = render_card(model)
    assert "| mine |" in card and "| older |" not in card and "| unknown |" not in card
    assert "Not shown: 2 mock-survey row(s) not measured with these weights (older, unknown)" in card
    # weights replaced after the evaluation: the card says its tables describe other weights
    from safetensors.torch import load_file, save_file

    tensors = load_file(model / "model.safetensors")
    save_file({key: value + 1 for key, value in tensors.items()}, model / "model.safetensors")
    card = render_card(model)
    assert "was measured with other weights" in card and "| other |" not in card


def test_evaluating_against_a_baseline_pairs_the_same_stamps(checkpoint, toy_data, tmp_path, capsys):  # noqa: F811
    import shutil

    from safetensors.torch import load_file, save_file

    model, reversed_model = tmp_path / "model", tmp_path / "reversed"
    shutil.copytree(checkpoint, model)
    shutil.copytree(checkpoint, reversed_model)
    weights = load_file(reversed_model / "model.safetensors")
    last = [key for key, value in weights.items() if value.dim() == 2][-1]  # the last linear layer
    weights[last] = -weights[last]
    weights[last.replace("weight", "bias")] = -weights[last.replace("weight", "bias")]
    save_file(weights, reversed_model / "model.safetensors")
    other = write_stamp_set(tmp_path / "other", n=64, seed=5)
    assert main(["--model", str(model), "--data", str(toy_data), "--data", str(other), "--baseline", str(model),
                 "--bootstrap", "30", "--threads", "1", "--no-plots"]) == 0
    assert "Against `" in capsys.readouterr().out
    assert main(["--model", str(model), "--data", str(toy_data), "--data", str(other), "--baseline",
                 str(reversed_model), "--bootstrap", "30", "--threads", "1", "--out", str(tmp_path / "out"),
                 "--record"]) == 0
    report = json.loads((tmp_path / "out" / "cross_simulator.json").read_text())
    assert set(report["paired"]["sets"]) == {"data", "other"}
    for comparison in report["paired"]["sets"].values():
        # the reversed model ranks every stamp the other way round: its AUROC is 1 - the model's
        assert comparison["auroc"]["baseline"] == pytest.approx(1 - comparison["auroc"]["value"], abs=1e-9)
        assert comparison["n"] in (len(pd.read_parquet(toy_data / "truth.parquet")), 64)
    assert "Against `" in render_card(model)


def test_paired_difference_is_zero_for_the_same_scores_and_positive_for_better_ones():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(60, bool), np.zeros(600, bool)]
    baseline = rng.normal(0, 1, labels.size) + 1.0 * labels
    selected = np.r_[np.arange(60) % 2 == 0, np.zeros(600, bool)]
    same = crosssim.paired_difference(labels, baseline, baseline, selected, n_bootstrap=200)
    for key in ("auroc", "completeness_bright_at_fpr"):
        assert same[key]["difference"] == 0 and same[key]["interval_95"] == [0.0, 0.0] and same[key]["p_better"] == 0
    better = crosssim.paired_difference(labels, baseline, baseline + 2.0 * labels, selected, n_bootstrap=200)
    assert better["auroc"]["interval_95"][0] > 0 and better["auroc"]["p_better"] == 1.0
    assert better["completeness_bright_at_fpr"]["difference"] > 0.3 and better["n_selected"] == 30
    assert "difference [95%, paired]" in crosssim.render_paired(better, "parent", "adapted")


def test_the_visible_lenses_auroc_counts_only_those_lenses_against_every_non_lens():
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(80, bool), np.zeros(500, bool)]
    visible = np.r_[np.arange(80) < 40, np.zeros(500, bool)]
    baseline = rng.normal(0, 1, labels.size) + 1.0 * labels
    # better only on the visible lenses: invisible ones are pushed down
    logits = baseline + 3.0 * visible - 1.0 * (labels & ~visible)
    paired = crosssim.paired_difference(labels, baseline, logits, visible, n_bootstrap=200, visible=visible)
    from lensnet.metrics import auroc

    keep = visible | ~labels
    assert paired["auroc_visible"]["value"] == pytest.approx(auroc(labels[keep], logits[keep]))
    assert paired["auroc_visible"]["interval_95"][0] > 0 and paired["n_visible"] == 40
    assert "AUROC, visible lenses θE>1″, S/N>20 (40)" in crosssim.render_paired(paired, "parent", "adapted")
    # a retrained model keeps its parent's name: the columns must still say which is which
    header = crosssim.render_paired(paired, "default", "default").splitlines()[0]
    assert "| default (baseline) | default (measured) |" in header
    truth = pd.DataFrame({"is_lens": [True, True, True, False], "arc_snr": [30.0, 30.0, 5.0, np.nan],
                          "theta_e_arcsec": [1.5, 0.8, 2.0, np.nan]})
    assert crosssim.visible_lenses(truth).tolist() == [True, False, False, False]


def test_the_count_of_detected_bright_lenses_agrees_with_the_completeness_beside_it():
    # a lens scored between the last admitted non-lens and the next one: one threshold for both
    labels = np.r_[np.ones(3, bool), np.zeros(100, bool)]
    logits = np.r_[[5.0, 0.985, -3.0], np.linspace(-2.0, 1.0, 100)]
    result = crosssim.completeness_at_fpr(labels, logits, labels, fpr=0.01, n_bootstrap=0)
    assert result["n_detected"] == round(result["value"] * result["n_lenses"])
    assert result["fpr"] <= 0.01


def test_auroc_by_arc_snr_ranks_each_bins_lenses_against_every_non_lens():
    from lensnet.crosssim import auroc_by_bin, headline, render_tables

    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    snr = np.array([2.0, 8.0, 30.0, 500.0, np.nan, np.nan, np.nan, np.nan])
    logits = np.array([-1.0, 0.5, 3.0, 4.0, -2.0, 0.0, 1.0, 2.0])
    bins = auroc_by_bin(labels, logits, snr, (0.0, 5.0, 20.0, 100.0))
    assert [b["n_lenses"] for b in bins] == [1, 1, 1, 1]
    # S/N 2 beats one of four non-lenses, S/N 8 two of four, S/N 30 and 500 all four
    assert [b["auroc"] for b in bins] == pytest.approx([0.25, 0.5, 1.0, 1.0])
    assert bins[-1]["high"] is None and bins[0]["low"] == 0.0
    empty = auroc_by_bin(labels, logits, snr, (0.0, 1000.0))
    assert empty[1] == {"low": 1000.0, "high": None, "n_lenses": 0, "auroc": None}

    truth = pd.DataFrame({"is_lens": labels, "arc_snr": snr, "theta_e_arcsec": np.where(labels, 2.0, np.nan)})
    row = headline(truth, logits, threshold=0.5, n_bootstrap=0)
    assert [b["auroc"] for b in row["auroc_by_arc_snr"]][:2] == pytest.approx([0.25, 0.5])
    table = render_tables({"threshold": 0.5, "target_fpr": 0.01, "sets": {"toy": row}})
    assert "| arc S/N of the lenses | 0–5 | 5–10 |" in table and "| toy | 0.250 (1) | 0.500 (1) |" in table
