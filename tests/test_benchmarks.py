"""Correctness of the benchmark helpers (benchmarks/): no timings are asserted here, only that
what the benchmarks compare computes the same thing, and that the timings are summarised as
the team quotes them: medians of interleaved warm rounds with their spread and n, the cold
round apart, ratios per round, the load recorded (see benchmarks/common.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks import common, run_all
from benchmarks.cutouts import cutout2d_cutouts, write_tile
from benchmarks.fold import fold_batchnorm
from benchmarks.pipeline_e2e import replicate_survey, summarise
from lensnet.models import create_model
from pipeline.cutouts import assign_to_tiles, cut_stamps
from pipeline.images import read_image
from pipeline.tiles import discover_tiles, read_tile_headers


def _randomise_batchnorm(module: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(0)
    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.running_mean.copy_(torch.randn(layer.num_features, generator=generator) * 0.1)
            layer.running_var.copy_(torch.rand(layer.num_features, generator=generator) + 0.5)
            layer.weight.data.copy_(torch.rand(layer.num_features, generator=generator) + 0.5)
            layer.bias.data.copy_(torch.randn(layer.num_features, generator=generator) * 0.1)


@pytest.mark.parametrize("name, stages", [("lensresnet-small", 4), ("lensresnet-tiny", 3)])
def test_folded_batchnorm_gives_the_same_logits(name, stages):
    torch.manual_seed(0)
    module = create_model(name, bands=3).eval()
    _randomise_batchnorm(module)
    folded, report = fold_batchnorm(module)
    # Pre-activation blocks: the BN after each block's first conv and the BNs after the
    # conv+projection sums fold; the two whose input also feeds an identity shortcut stay.
    assert report == {"batchnorms": 2 * stages + 1, "folded_after_conv": stages,
                      "folded_after_conv_sum": stages - 1, "left": 2}
    x = torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        np.testing.assert_allclose(folded(x).numpy(), module(x).numpy(), rtol=1e-4, atol=1e-4)
        # The original is untouched.
        assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules()) == 2 * stages + 1


def test_cut_stamps_match_cutout2d_given_its_centring(tmp_path):
    paths, wcs = write_tile(tmp_path, 200)
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-0.5, 199.5, 40), rng.uniform(-0.5, 199.5, 40)  # some reach past the edges
    ra, dec = wcs.all_pix2world(x, y, 0)
    size = 32
    baseline = cutout2d_cutouts(paths, ra, dec, size)
    px, py = wcs.all_world2pix(ra, dec, 0)
    # Cutout2D puts an even-sized cutout's origin at ceil(x - S/2); give cut_stamps that centre.
    cx, cy = np.ceil(px - size / 2) + size // 2, np.ceil(py - size / 2) + size // 2
    ours = np.stack([cut_stamps(read_image(p), cx, cy, size)[0] for p in paths.values()], axis=1)
    np.testing.assert_array_equal(ours, baseline)
    assert np.isnan(ours).any()  # the edge case was exercised


def test_replicated_survey_puts_every_copy_on_the_same_pixels(tiny_survey, tmp_path):
    source = {"image_pattern": tiny_survey.image_pattern, "catalog": str(tiny_survey.catalog_path),
              "tiles": len(tiny_survey.tiles)}
    copies = replicate_survey(source, tmp_path / "x3", 3)
    catalog = pd.read_parquet(copies["catalog"])
    original = pd.read_parquet(tiny_survey.catalog_path)
    assert len(catalog) == 3 * len(original) == copies["objects"]
    tiles = read_tile_headers(discover_tiles(copies["image_pattern"], list(tiny_survey.bands)))
    assert len(tiles) == 3 * len(tiny_survey.tiles)
    placed = assign_to_tiles(catalog["ra"].to_numpy(), catalog["dec"].to_numpy(), tiles)
    n = len(original)
    first = placed.iloc[:n].reset_index(drop=True)
    for copy in (1, 2):
        other = placed.iloc[copy * n:(copy + 1) * n].reset_index(drop=True)
        on_tile = first["tile"].notna()
        assert (other["tile"].notna() == on_tile).all()
        assert (other["tile"][on_tile].str[2:] == first["tile"][on_tile].str[2:]).all()
        assert (other["tile"][on_tile].str[:2] == f"c{copy}").all()
        np.testing.assert_allclose(other[["x_px", "y_px"]][on_tile], first[["x_px", "y_px"]][on_tile], atol=1e-6)


def test_stage_costs_compare_like_with_like():
    from benchmarks.stage_costs import codecs, normalisation

    stamps = np.random.default_rng(0).normal(100.0, 5.0, (16, 3, 24, 24)).astype(np.float32)
    norm = normalisation(stamps, repeats=3)
    assert norm["max_abs_difference"] < 2e-6 and set(norm["stamps_per_s_one_thread"]) == {
        "float64 reference", "float32 (pipeline)"}
    # Medians of warm interleaved rounds, the cold one apart; the speed-up per round.
    reference, fast = norm["timings"]["float64 reference"], norm["timings"]["float32 (pipeline)"]
    assert reference["n"] == fast["n"] == norm["speed_up_spread"]["n"] == 3 and reference["cold_s"] > 0
    assert norm["speed_up_spread"]["per_round"] == pytest.approx(
        [r / f for r, f in zip(reference["warm_s"], fast["warm_s"])], rel=1e-3)
    assert norm["speed_up"] == norm["speed_up_spread"]["median"]
    assert norm["stamps_per_s_one_thread"]["float32 (pipeline)"] == pytest.approx(16 / np.median(fast["warm_s"]))
    store = codecs(stamps, repeats=2)["codecs"]
    for entry in store.values():
        for stage in ("write", "read"):
            assert entry[f"{stage}_timing"]["n"] == 2 and entry[f"{stage}_timing"]["cold_s"] > 0
            assert entry[f"{stage}_mb_per_s"] == entry[f"{stage}_mb_per_s_spread"]["median"]
    # Uncompressed stamps take exactly their bytes on disk; zstd's size is what it wrote.
    assert store["none"]["stamp_bytes_on_disk"] == stamps.nbytes and store["none"]["compression_ratio"] == 1.0
    assert 0 < store["zstd"]["stamp_bytes_on_disk"] < stamps.nbytes


# ----------------------------------------------------------------------------- how timings are summarised

def test_spread_is_the_median_with_min_max_quartiles_and_n():
    summary = common.spread([5.0, 1.0, 3.0, 100.0, 2.0])
    assert summary == {"median": 3.0, "min": 1.0, "max": 100.0, "q1": 2.0, "q3": 5.0, "n": 5}
    assert common.spread([4.0, 2.0])["median"] == 3.0
    assert common.spread([])["n"] == 0 and common.spread([])["median"] is None
    assert common.median_spread_text(summary, 1) == "3.0 [1.0–100.0]"
    assert common.median_spread_text(common.spread([2.5]), 1) == "2.5"  # n = 1: no range to show
    assert common.scale_spread(summary, 2.0)["max"] == 200.0 and common.scale_spread(summary, 2.0)["n"] == 5


class _FakeClock:
    """A clock the timed functions advance by given durations, so timings are exact."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_interleaved_runs_a_b_a_b_and_keeps_the_cold_round_apart():
    clock, calls = _FakeClock(), []
    durations = {"A": iter([50.0, 1.0, 2.0, 9.0]), "B": iter([70.0, 2.0, 2.0, 3.0])}

    def variant(name):
        def run():
            calls.append(name)
            clock.now += next(durations[name])
        return run

    timings = common.interleaved({"A": variant("A"), "B": variant("B")}, warm_rounds=3, clock=clock)
    assert calls == ["A", "B"] * 4  # interleaved, one cold round then three warm ones
    a, b = timings["A"], timings["B"]
    assert a["cold_s"] == 50.0 and a["cold_rounds"] == 1 and a["warm_s"] == [1.0, 2.0, 9.0]
    assert (a["median_s"], a["min_s"], a["max_s"], a["n"]) == (2.0, 1.0, 9.0, 3)  # the cold 50 s is not in them
    assert a["statistic"] == "median of warm rounds"
    assert len(a["other_cores_per_round"]) == 3 and "load_before" in a and "load_after" in a
    ratio = common.paired_ratios(a["warm_s"], b["warm_s"])
    assert ratio["per_round"] == [0.5, 1.0, 3.0] and ratio["median"] == 1.0 and ratio["n"] == 3
    # The best of each (1 s / 2 s = 0.5) is not what is reported.
    assert a["min_s"] / b["min_s"] == 0.5 != ratio["median"]
    with pytest.raises(ValueError, match="not paired"):
        common.paired_ratios([1.0, 2.0], [1.0])


def test_a_variant_is_kept_on_its_median_per_round_gain_not_on_one_lucky_round():
    from benchmarks.forward import VariantSearch

    search = VariantSearch(torch.nn.Identity(), images=4, rounds=5, threads=1, peak={1: 1e9}, flops=1)
    candidates = {"base": {"name": "base"}, "lucky": {"name": "lucky"}, "steady": {"name": "steady"}}
    results = {"base": {"warm_s": [1.0, 1.0, 1.0, 1.0, 1.0]},
               "lucky": {"warm_s": [0.2, 1.1, 1.1, 1.1, 1.1]},  # best 5x faster, median 10% slower
               "steady": {"warm_s": [0.8, 0.8, 0.8, 0.8, 0.8]}}
    kept = search.keep_if_faster("stage", candidates, results, "base")
    assert kept == "steady"
    assert results["lucky"]["ratio_vs_stage_baseline"]["per_round"] == pytest.approx([5.0] + [1 / 1.1] * 4, 1e-3)
    assert results["lucky"]["gain_vs_stage_baseline"] == pytest.approx(1 / 1.1 - 1)
    assert results["steady"]["gain_vs_stage_baseline"] == pytest.approx(0.25)
    assert [results[name]["kept"] for name in candidates] == [False, False, True]
    results["steady"]["warm_s"] = [0.95] * 5  # +5%: below the 10% margin, the baseline stays
    assert search.keep_if_faster("stage", candidates, results, "base") == "base"


def test_variant_comparison_records_medians_spreads_cold_and_load():
    from benchmarks.forward import VariantSearch

    torch.manual_seed(0)
    module = create_model("lensresnet-tiny", bands=3).eval()
    search = VariantSearch(module, images=8, rounds=2, threads=1, peak={1: 1e9}, flops=1000)
    base = dict(search.best, batch=4)
    results = search.compare("grad mode", {"inference_mode": base, "no_grad": {**base, "context": torch.no_grad}})
    for trial in results.values():
        assert trial["n"] == 2 and len(trial["warm_s"]) == 2 and trial["cold_s"] > 0
        rates = trial["images_per_s_spread"]
        assert rates["min"] <= trial["images_per_s"] == rates["median"] <= rates["max"]
        assert trial["roofline_fraction"] == pytest.approx(1000 * trial["images_per_s"] / 1e9)
        assert trial["images_per_s_cold"] == pytest.approx(8 / trial["cold_s"])
        assert len(trial["other_cores_per_round"]) == 2 and trial["load_before"] is not None
    assert len(search.trials) == 2


def test_peak_is_the_median_of_warm_repeats_with_its_spread():
    from benchmarks.peak import matmul_peak

    threads = torch.get_num_threads()
    try:
        row = matmul_peak(1, size=64, repeats=5)
    finally:
        torch.set_num_threads(threads)
    assert row["n"] == 5 and len(row["flops_per_s_all"]) == 5 and row["cold_rounds"] == 2
    assert len(row["all_s"]) == 7 and row["cold_s"] == row["all_s"][0]  # the cold repeats are not in the median
    assert row["flops_per_s"] == row["flops_per_s_spread"]["median"] == pytest.approx(
        2 * 64**3 / np.median(row["warm_s"]), rel=1e-9)
    assert row["flops_per_s_spread"]["min"] == pytest.approx(2 * 64**3 / row["max_s"])


def test_cutout_speed_up_is_the_median_of_per_round_speed_ups(tmp_path):
    from benchmarks.cutouts import measure

    result = measure(tile_px=200, n_objects=60, subset=6, size_px=16, repeats=3)
    assert result["identical_stamps_fraction"] == 1.0
    project, baseline = result["project_timing"], result["baseline_timing"]
    assert project["n"] == baseline["n"] == result["n"] == 3 and project["cold_s"] > 0
    per_round = [(b / 6) / (p / 60) for p, b in zip(project["warm_s"], baseline["warm_s"])]
    assert result["speed_up_spread"]["per_round"] == pytest.approx(per_round, rel=1e-3)
    assert result["speed_up"] == pytest.approx(float(np.median(per_round)), rel=1e-3)
    assert result["speed_up_spread"]["min"] <= result["speed_up"] <= result["speed_up_spread"]["max"]
    assert result["project_cutouts_per_s"] == pytest.approx(60 / float(np.median(project["warm_s"])))
    assert result["cold_speed_up"] == pytest.approx((baseline["cold_s"] / 6) / (project["cold_s"] / 60))
    assert len(result["other_cores_per_round"]) == 3


# ----------------------------------------------------------------------------- end to end, verdicts, report

def _run(label: str, execute_s: float, scored: int, hwm_mib: float, other_cores: float = 0.0) -> dict:
    mib = 2**20
    return {"label": label, "objects": scored, "scored": scored, "failed": 0, "prepare_s": 0.1,
            "execute_s": execute_s, "objects_per_s_execute": scored / execute_s,
            "objects_per_s_prepare_execute": scored / (execute_s + 0.1),
            "phases_s": {"compute (cut + score tasks)": execute_s - 0.5, "merge (catalogue, Parquet)": 0.2},
            "task_compute_s": {"cut": 0.4, "score": 2 * (execute_s - 1)},
            "memory": {"peak_hwm_per_worker": {"w1": hwm_mib * mib, "w2": (hwm_mib - 10) * mib},
                       "peak_sampled": {"w1": {"VmRSS": hwm_mib * mib, "RssAnon": 900 * mib}},
                       "before": {"w1": {"VmRSS": 1100 * mib}}},
            "load_before": [1.0, 1.0, 1.0], "load_after": [1.1, 1.0, 1.0], "other_cores": other_cores}


def _e2e_result(other_cores: float = 0.0) -> dict:
    """Round 0 cold, then 5 warm rounds; in warm round 3 config B had one lucky 1x run."""
    b_1x = [20.0, 10.0, 10.0, 5.0, 10.0, 10.0]
    a_1x = [25.0, 12.5, 12.5, 12.5, 12.5, 10.0]
    b_4x = [60.0, 40.0, 40.0, 40.0, 40.0, 40.0]
    warm = 5

    def forward(rates):
        return {"images_per_s": float(np.median(rates)), "images_per_s_spread": common.spread(rates),
                "images_per_s_all": rates, "images_per_s_cold": 100.0, "n": len(rates),
                "other_cores_per_round": [other_cores] * warm, "load_before": [1.0] * 3, "load_after": [1.0] * 3}

    return {
        "survey_1x": {"objects": 2000, "tiles": 4}, "survey_4x": {"objects": 8000, "tiles": 16},
        "cold_rounds": 1, "warm_rounds": warm,
        "configs": {
            "A": {"workers": 1, "threads": 2, "batch": 32, "label": "1 worker(s) x 2 torch thread(s), batch 32",
                  "runs_1x": [_run(f"A 1x {i}", t, 2000, 1300, other_cores) for i, t in enumerate(a_1x)],
                  "worker_forward": forward([240.0] * warm)},
            "B": {"workers": 2, "threads": 1, "batch": 32, "label": "2 worker(s) x 1 torch thread(s), batch 32",
                  "runs_1x": [_run(f"B 1x {i}", t, 2000, 1200, other_cores) for i, t in enumerate(b_1x)],
                  "runs_4x": [_run(f"B 4x {i}", t, 8000, 1230, other_cores) for i, t in enumerate(b_4x)],
                  "worker_forward": forward([245.0] * warm)},
        },
        "bare_forward": {"images": 512, "device": "cpu", "preprocess_images_per_s_one_thread": 4000.0,
                         "setups": {"2 thread(s), batch 32": forward([250.0] * warm),
                                    "1 thread(s), batch 32": forward([125.0] * warm)}},
        "cli_default": {"wall_s": 20.0, "execute_s_from_summary": 12.0, "scored": 2000, "objects_per_s_wall": 100.0,
                        "cold": True, "n": 1, "load_before": [1.0] * 3, "load_after": [1.0] * 3, "other_cores": 0.0},
    }


def test_end_to_end_ratios_are_medians_of_per_round_ratios_without_the_cold_round():
    summary = summarise(_e2e_result())
    b = summary["B"]
    assert b["warm_rounds"] == 5 and b["execute_objects_per_s_cold"] == 100.0
    assert b["bare_forward_reference"] == "one process, all threads"  # 250 > 245 img/s in the workers
    ratio = b["ratio_execute_vs_bare_spread"]
    assert ratio["per_round"] == [0.8, 0.8, 1.6, 0.8, 0.8]  # the lucky round is one of five
    assert b["ratio_execute_vs_bare"] == ratio["median"] == 0.8 and (ratio["min"], ratio["max"]) == (0.8, 1.6)
    assert b["execute_objects_per_s_median_warm"] == 200.0
    assert b["ratio_execute_vs_workers_x_bare"] == 0.8  # 200 / (2 x 125)
    assert b["median_run"].startswith("B 1x") and b["execute_objects_per_s_spread"]["n"] == 5
    scaling = b["scaling"]
    assert scaling["time_ratio_4x_over_1x_spread"]["per_round"] == [4.0, 4.0, 8.0, 4.0, 4.0]
    assert scaling["time_ratio_4x_over_1x"] == 4.0 and scaling["execute_s_4x"] == 40.0
    assert scaling["ratio_execute_4x_vs_bare"] == 0.8 and scaling["ratio_execute_4x_vs_bare_spread"]["n"] == 5
    assert scaling["peak_worker_hwm_mib_1x"] == 1200 and scaling["peak_worker_hwm_mib_4x"] == 1230
    a = summary["A"]
    assert a["ratio_execute_vs_bare_spread"]["per_round"] == [0.64, 0.64, 0.64, 0.64, 0.8]
    assert a["ratio_execute_vs_bare"] == 0.64
    assert a["execute_ratio_vs_B_spread"]["per_round"] == [0.8, 0.8, 0.4, 0.8, 1.0]
    assert summary["cli"]["cold"] is True and summary["cli"]["ratio_wall_vs_bare"] == pytest.approx(0.4)


def _results(other_cores: float = 0.0) -> dict:
    e2e = _e2e_result(other_cores)
    cutouts = {"tile_px": 200, "objects": 60, "baseline_objects_timed": 6, "baseline_extrapolated": True, "n": 3,
               "project_cutouts_per_s": 3000.0, "project_cutouts_per_s_spread": common.spread([2900.0, 3000, 3100]),
               "baseline_cutouts_per_s": 100.0, "baseline_cutouts_per_s_spread": common.spread([90.0, 100, 110]),
               "project_first_pass_cutouts_per_s": 1000.0, "baseline_first_pass_cutouts_per_s": 80.0,
               "speed_up": 30.0, "speed_up_spread": common.paired_ratios([2900.0, 3000, 3600], [100.0, 100, 90]),
               "cold_speed_up": 12.5, "identical_stamps_fraction": 1.0,
               "load_before": [1.0] * 3, "load_after": [1.0] * 3, "other_cores": other_cores,
               "other_cores_per_round": [other_cores] * 3}
    results = {"machine": {"cpu_model": "test CPU", "usable_cpus": 2, "cpu_flags": ["avx2"], "torch": "x",
                           "date_utc": "today", "load_average_at_start": [1.0] * 3, "command": "test"},
               "quick": False, "threads": 2, "sizes": {"warm_rounds": run_all.WARM_ROUNDS},
               "cutouts": cutouts, "e2e": e2e, "e2e_summary": summarise(e2e), "total_seconds": 1.0}
    results["verdicts"] = run_all.verdicts(results)
    results["load_during_timing"] = run_all.load_during_timing(results)
    return results


def test_verdicts_use_the_median_per_round_ratio_and_show_the_spread():
    verdicts = _results()["verdicts"]
    overhead = verdicts["pipeline_overhead"]
    assert overhead["headline"] == "B 4x" and overhead["ratio_B_4x"] == 0.8 and overhead["met"] is False
    assert overhead["ratio_B_1x"] == 0.8 and overhead["ratio_B_1x_spread"]["max"] == 1.6  # not the lucky 1.6
    assert "B 4x: 0.80 [0.80–0.80] (n=5)" in overhead["measured"]
    assert "B 1x: 0.80 [0.80–1.60] (n=5)" in overhead["measured"]
    cut = verdicts["cutouts"]
    assert cut["speed_up"] == 30.0 and cut["met"] is True
    assert cut["measured"] == "30.0x [29.0x–40.0x] (n=3) warm; cold 12.5x"
    memory = verdicts["memory_flat"]
    assert memory["growth"] == pytest.approx(1230 / 1200 - 1) and memory["met"] is True
    assert memory["time_ratio_4x_over_1x"] == 4.0


def test_report_shows_median_min_max_n_cold_and_the_load():
    results = _results()
    report = run_all.tables(results)
    assert "median of the warm rounds [min–max]" in report and "cold" in report
    # End to end: the cold rate apart, the warm median with its range, per-round ratios and n.
    b_row = next(line for line in report.splitlines() if line.startswith("| B | 2 worker"))
    cells = [cell.strip() for cell in b_row.strip("|").split("|")]
    assert cells[2] == "100.0"  # cold
    assert cells[3] == "200.0 [200.0–400.0]"  # execute obj/s, warm
    assert cells[8] == "**0.80** [0.80–1.60]"  # execute / reference, per round
    assert cells[11] == "5"  # n
    assert "one **cold** run" in report  # the command line
    assert "### 5. Scaling" in report and "4.00 [4.00–8.00]" in report
    assert "| cutouts | >= 30x Cutout2D" in report and "MET" in report and "**30.0x** [29.0x–40.0x]" in report
    assert "### Load during timing" in report and "quiet" in report
    assert run_all.verdict_lines(results)[-1] == "load during timing: quiet (no section saw other work on the cores)"


def test_load_from_other_work_is_reported_as_busy():
    results = _results(other_cores=0.9)
    load = results["load_during_timing"]
    assert load["e2e"]["busy"] and load["cutouts"]["busy"]
    assert load["e2e"]["other_cores_spread"]["median"] == pytest.approx(0.9)
    assert "BUSY" in run_all.tables(results)
    assert run_all.verdict_lines(results)[-1].startswith("load during timing: BUSY: other work on the cores in")


def test_training_throughput_times_the_real_epoch_loop_against_a_bare_step(tmp_path):
    from benchmarks import train_throughput

    assert train_throughput.train_one_epoch is __import__("lensnet.train").train.train_one_epoch
    report = train_throughput.measure("default", torch.device("cpu"), stamps=64, batch_size=32, warm_rounds=2)
    assert set(report["variants"]) == {"loop", "loop, no augmentation", "bare step", "forward"}
    for variant in report["variants"].values():
        assert len(variant["stamps_per_s"]) == 2 and all(rate > 0 for rate in variant["stamps_per_s"])
    ratio = report["ratios"]["loop / bare step"]
    assert ratio["per_round"] == [round(a / b, 4) for a, b in zip(report["variants"]["loop"]["stamps_per_s"],
                                                                  report["variants"]["bare step"]["stamps_per_s"])]
    report["device_name"] = "CPU"
    assert "| loop |" in train_throughput.markdown(report)
    # bf16 on a CPU also times the fp32 bare step, for the ratio lensnet.train --precision bf16 gains
    bf16 = train_throughput.measure("default", torch.device("cpu"), stamps=64, batch_size=32, warm_rounds=2,
                                    precision="bf16")
    assert bf16["precision"] == "bf16 autocast" and "bare step, fp32" in bf16["variants"]
    ratio = bf16["ratios"]["bare step bf16 / fp32"]
    assert ratio["per_round"] == [round(a / b, 4) for a, b in zip(bf16["variants"]["bare step"]["stamps_per_s"],
                                                                  bf16["variants"]["bare step, fp32"]["stamps_per_s"])]
    assert "bare step, fp32" not in report["variants"]


def test_training_throughput_can_time_another_architecture_at_the_models_input(tmp_path):
    from benchmarks import train_throughput
    from lensnet.checkpoint import load_config

    default = load_config("default")
    wide = train_throughput.measure("default", torch.device("cpu"), stamps=32, batch_size=32, warm_rounds=1,
                                    architecture="lensresnet-wide")
    assert wide["architecture"] == "lensresnet-wide" != default.architecture
    assert wide["parameters"] > 2 * sum(p.numel() for p in default.build().parameters())
    assert train_throughput.main(["--architecture", "lensresnet-wide", "--stamps", "32", "--batch-size", "32",
                                  "--rounds", "1", "--out", str(tmp_path)]) == 0
    assert "`lensresnet-wide` (" in (tmp_path / "train_throughput.md").read_text()
    with pytest.raises(SystemExit, match="not registered"):
        train_throughput.model_config("default", "no-such-net")
