"""benchmarks/gpu_bench.py: its survey is usable, and the whole benchmark runs end to end on CPUs.

No timings are checked, only that the benchmark measures what it says it measures.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from benchmarks import gpu_bench
from pipeline.config import Settings


def test_the_noise_survey_puts_every_object_on_a_tile(tmp_path):
    from pipeline.run import prepare_run

    survey = gpu_bench.make_noise_survey(tmp_path, objects=50, bands=["g", "r", "i"], tile_size_px=256,
                                         objects_per_tile=20, pixel_scale_arcsec=0.2, stamp_px=64)
    assert survey["tiles"] == 3 and survey["objects"] == 50
    catalog = pd.read_parquet(survey["catalog"])
    assert list(catalog["id"]) == list(range(50))
    settings = Settings(images=survey["images"], catalog=survey["catalog"], out=str(tmp_path / "out"),
                        shard_size=16, progress=False).validate()
    prepared = prepare_run(settings, log=lambda _: None)
    assert len(prepared.plan.objects) == 50 and len(prepared.plan.failures) == 0
    assert sorted(prepared.plan.objects["tile"].unique()) == ["T000", "T001", "T002"]


def test_stage_sums_and_task_spans():
    records = [{"objects": 10, "read_s": 0.5, "forward_s": 1.0, "device": "cuda:0", "worker": "w1"},
               {"objects": 30, "read_s": 0.5, "forward_s": 1.0, "wait_s": 0.25, "device": "cuda:0", "worker": "w1"}]
    summary = gpu_bench.stage_summary(records)
    assert summary["objects"] == 40 and summary["seconds"]["read_s"] == 1.0 and summary["seconds"]["wait_s"] == 0.25
    assert summary["objects_per_s_if_only"]["forward_s"] == 20.0 and summary["workers"] == ["w1"]

    def record(key, worker, start, stop):
        return {"key": key, "worker": worker, "startstops": [{"action": "compute", "start": start, "stop": stop}]}

    spans = gpu_bench.task_spans([record("cut-000000", "a", 0, 1), record("cut-000001", "b", 0.5, 2),
                                  record("score-000000-000001", "g", 2, 3), record("resumed-cut-000002", "a", 0, 9)])
    assert spans["cut"] == {"tasks": 2, "span_s": 2.0, "busy_s": 2.5, "workers": 2}
    assert spans["score"] == {"tasks": 1, "span_s": 1.0, "busy_s": 1.0, "workers": 1}


@pytest.mark.slow
def test_the_benchmark_runs_end_to_end_on_cpus(tmp_path):
    out = tmp_path / "bench"
    assert gpu_bench.main(["--quick", "--simulate-gpu-node", "--workers", "1", "--out", str(out)]) == 0
    report = json.loads((out / "gpu_bench.json").read_text())
    assert report["device"] in (out / "gpu_bench.md").read_text()
    assert report["cluster"]["kind"] == "simulated-gpu-node" and report["cluster"]["gpu_workers"] == 1
    assert report["bare_forward"]["best_images_per_s"] > 0
    (run,) = report["runs"]
    whole = run["whole_run"]
    assert whole["objects"] == report["survey"]["objects"] == 240
    # Cut tasks on the CPU worker, score tasks on the GPU-resource worker: two workers, one each.
    assert whole["tasks"]["cut"]["workers"] == 1 and whole["tasks"]["score"]["workers"] == 1
    assert whole["stages"]["objects"] == 240 and whole["stages"]["seconds"]["forward_s"] > 0
    assert [stage["mode"] for stage in run["score_stage"]] == ["prefetch", "serial"]
    assert all(stage["objects"] == 240 for stage in run["score_stage"])
    assert not (out / "scratch").exists()
