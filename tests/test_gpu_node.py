"""GPU nodes on CPUs: the worker layout, the placement of each stage, and a whole run on such a cluster.

A "GPU worker" here is a worker that declares the ``GPU`` resource; on this CPU-only
machine it scores on its CPU, but the scheduling is the one a GPU node gets: every cut
task on the CPU workers, every score task on the GPU worker, the model loaded only there.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import cluster as cluster_module
from pipeline.cluster import (CPU_RESOURCE, GPU_RESOURCE, GPU_TASK_OBJECTS, SCORE_TASKS_PER_GPU, GpuNodeLayout,
                              Placement, placement_for, visible_gpus)
from pipeline.config import Settings, SettingsError
from pipeline.inference import PLUGIN_NAME, TIMING_STAGES, scores_here
from pipeline.run import _score_groups, run_with_client
from pipeline.tasks import read_timings, timings_path
from tests.test_run import settings_for


# --- layout -------------------------------------------------------------------------------

def test_a_gpu_node_gets_one_gpu_worker_per_gpu_and_cpu_workers_on_the_other_cores():
    layout = GpuNodeLayout.for_node(["0", "1"], cores=16)
    specs = layout.worker_specs(memory_limit=2**30)
    gpu = {name: spec["options"] for name, spec in specs.items() if name.startswith("gpu-")}
    cpu = {name: spec["options"] for name, spec in specs.items() if name.startswith("cpu-")}
    assert sorted(gpu) == ["gpu-0", "gpu-1"]
    assert [options["env"]["CUDA_VISIBLE_DEVICES"] for options in gpu.values()] == ["0", "1"]
    assert all(options["resources"] == {GPU_RESOURCE: 1} for options in gpu.values())
    assert all(options["nthreads"] == SCORE_TASKS_PER_GPU for options in gpu.values())
    # 16 cores - 3 per GPU worker = 10 single-threaded cut workers that see no GPU at all.
    assert len(cpu) == 10
    assert all(options["env"]["CUDA_VISIBLE_DEVICES"] == "" for options in cpu.values())
    assert all(options["resources"] == {CPU_RESOURCE: 1} and options["nthreads"] == 1 for options in cpu.values())
    assert all(options["host"] == "127.0.0.1" for options in {**gpu, **cpu}.values())


def test_workers_count_the_cpu_workers_and_a_small_node_keeps_one():
    assert GpuNodeLayout.for_node(["0"], cores=16, workers=4).cpu_workers == 4
    assert GpuNodeLayout.for_node(["0"], cores=2).cpu_workers == 1
    # A SLURM allocation's devices keep their own names.
    layout = GpuNodeLayout.for_node(["GPU-5e1c", "3"], cores=8)
    assert [spec["options"]["env"]["CUDA_VISIBLE_DEVICES"]
            for name, spec in layout.worker_specs(memory_limit=0).items() if name.startswith("gpu-")] == ["GPU-5e1c", "3"]


@pytest.mark.parametrize("environment, count, expected", [
    (None, 2, ["0", "1"]), ("2,3", 2, ["2", "3"]), ("", 0, []), ("7", 1, ["7"]), (None, 0, [])])
def test_visible_gpus_follow_cuda_visible_devices(monkeypatch, environment, count, expected):
    if environment is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", environment)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    assert visible_gpus() == expected


def _recorded_start(monkeypatch, gpus):
    started = {}

    class FakeLocalCluster:
        def __init__(self, **kwargs):
            started["local"] = kwargs

    monkeypatch.setattr(cluster_module, "visible_gpus", lambda: list(gpus))
    monkeypatch.setattr(cluster_module, "LocalCluster", FakeLocalCluster)
    monkeypatch.setattr(cluster_module, "start_gpu_node_cluster",
                        lambda settings, devices: started.setdefault("gpu_node", devices))
    return started


def _settings(**values) -> Settings:
    return Settings(images="t/{tile}_{band}.fits", catalog="c.csv", out="o", **values).validate()


@pytest.mark.parametrize("cluster, device, gpus, expected", [
    ("local", "auto", [], "local"),            # a CPU-only machine: the LocalCluster of old
    ("local", "auto", ["0"], "gpu_node"),      # GPUs visible: not one model per worker on the GPU
    ("local", "cuda", ["0", "1"], "gpu_node"),
    ("local", "cpu", ["0"], "local"),          # --device cpu keeps the CPU layout
    ("cuda", "auto", ["0", "1"], "gpu_node"),
])
def test_which_cluster_a_machine_gets(monkeypatch, cluster, device, gpus, expected):
    started = _recorded_start(monkeypatch, gpus)
    cluster_module._start_cluster(_settings(cluster=cluster, device=device))
    assert list(started) == [expected]
    if expected == "gpu_node":
        assert started["gpu_node"] == gpus
    else:
        assert started["local"]["threads_per_worker"] == 1 and started["local"]["processes"] is True


@pytest.mark.parametrize("device, gpus, message", [("auto", [], "shows no CUDA device"),
                                                   ("cpu", ["0"], "contradicts")])
def test_cluster_cuda_without_a_gpu_is_a_one_line_error(monkeypatch, device, gpus, message):
    _recorded_start(monkeypatch, gpus)
    with pytest.raises(SettingsError, match=message):
        cluster_module._start_cluster(_settings(cluster="cuda", device=device))


# --- placement ----------------------------------------------------------------------------

def _workers(*resources):
    return {f"tcp://127.0.0.1:{4000 + i}": {"resources": dict(r)} for i, r in enumerate(resources)}


def test_a_cpu_only_cluster_gets_no_annotations():
    where = placement_for(_workers({}, {}, {}))
    assert where == Placement() and not where.on_gpus and where.score_task_objects(10**6) == 0


def test_gpu_and_cpu_workers_split_the_stages_by_resource():
    where = placement_for(_workers({GPU_RESOURCE: 1}, {CPU_RESOURCE: 1}, {CPU_RESOURCE: 1}))
    assert where.score == {"resources": {GPU_RESOURCE: 1 / SCORE_TASKS_PER_GPU}}
    assert where.cut == {"resources": {CPU_RESOURCE: 1}}
    assert where.gpu_workers == 1 and where.gpus == 1


def test_slurm_gpu_jobs_cut_on_their_cpu_slots():
    # deploy/jobqueue-gpu.yaml: one worker per job with GPU=1,CPU=6.
    where = placement_for(_workers({GPU_RESOURCE: 1, CPU_RESOURCE: 6}, {GPU_RESOURCE: 1, CPU_RESOURCE: 6}))
    assert where.cut == {"resources": {CPU_RESOURCE: 1}} and where.gpu_workers == 2


def test_workers_without_resources_beside_gpu_workers_get_the_cut_tasks_loosely():
    workers = _workers({GPU_RESOURCE: 1}, {}, {})
    where = placement_for(workers)
    assert where.cut == {"workers": sorted(list(workers)[1:]), "allow_other_workers": True}
    assert placement_for(_workers({GPU_RESOURCE: 1})).cut == {}  # only GPU workers: they cut too


def test_score_tasks_on_gpus_cover_several_shards_but_leave_every_gpu_work():
    one_gpu = placement_for(_workers({GPU_RESOURCE: 1}, {CPU_RESOURCE: 1}))
    assert one_gpu.score_task_objects(10**7) == GPU_TASK_OBJECTS
    assert one_gpu.score_task_objects(8000) == 2000  # 2 score slots, 2 tasks each
    eight = placement_for(_workers(*[{GPU_RESOURCE: 1}] * 8))
    assert eight.score_task_objects(160_000) == 5000


def test_score_groups_are_consecutive_shards_of_bounded_size():
    pending = [(shard, shard * 10, shard * 10 + 10, f"cut-{shard}") for shard in (0, 1, 2, 3, 5, 6, 7)]
    assert [[item[0] for item in group] for group in _score_groups(pending, 25)] == [[0, 1], [2, 3], [5, 6], [7]]
    assert [[item[0] for item in group] for group in _score_groups(pending, 0)] == [[s] for s in (0, 1, 2, 3, 5, 6, 7)]
    assert [[item[0] for item in group] for group in _score_groups(pending, 5)] == [[s] for s in (0, 1, 2, 3, 5, 6, 7)]


@pytest.mark.parametrize("resources, loads", [({}, True), ({GPU_RESOURCE: 1}, True), ({CPU_RESOURCE: 1}, False),
                                              ({GPU_RESOURCE: 1, CPU_RESOURCE: 6}, True)])
def test_only_workers_that_score_load_the_model(resources, loads):
    assert scores_here(resources) is loads


# --- a whole run on a GPU-node layout -----------------------------------------------------

#: Small shards, so that the 57 stamps of the tiny survey make 15 shards, which the GPU
#: worker scores in groups of 3 (about a quarter of the objects per score slot each).
SHARD_SIZE = 4


@pytest.fixture(scope="module")
def gpu_node_client():
    """One GPU-resource worker (2 threads) and one CPU worker, started as a GPU node would start them."""
    from distributed import Client

    from pipeline.cluster import start_gpu_node_cluster

    settings = Settings(images="t/{tile}_{band}.fits", catalog="c.csv", out="o", workers=1,
                        dashboard_address=":0").validate()
    with start_gpu_node_cluster(settings, ["0"]) as node, Client(node) as client:
        yield client


@pytest.fixture(scope="module")
def gpu_node_run(gpu_node_client, tiny_survey, tiny_model, tmp_path_factory):
    from distributed import get_task_stream

    out = tmp_path_factory.mktemp("gpu_node") / "out"
    with get_task_stream(gpu_node_client) as stream:
        result = run_with_client(settings_for(tiny_survey, tiny_model, out, shard_size=SHARD_SIZE), gpu_node_client,
                                 log=lambda _: None)
    return result, stream.data


def _roles(client) -> dict[str, str]:
    return {address: "gpu" if GPU_RESOURCE in info["resources"] else "cpu"
            for address, info in client.scheduler_info()["workers"].items()}


def test_every_cut_runs_on_a_cpu_worker_and_every_score_on_the_gpu_worker(gpu_node_client, gpu_node_run):
    result, stream = gpu_node_run
    roles = _roles(gpu_node_client)
    assert sorted(roles.values()) == ["cpu", "gpu"]
    ran = {}
    for record in stream:
        ran.setdefault(record["key"], set()).add(roles[record["worker"]])
    cuts = {key: where for key, where in ran.items() if str(key).startswith("cut-")}
    scores = {key: where for key, where in ran.items() if str(key).startswith("score-")}
    assert len(cuts) == result.summary["shards"] > 1
    assert cuts and all(where == {"cpu"} for where in cuts.values())
    assert scores and all(where == {"gpu"} for where in scores.values())
    # Score tasks cover several shards each: score-FIRST-LAST.
    assert len(scores) < len(cuts)
    assert any(str(key).count("-") == 2 for key in scores)


def test_the_model_is_loaded_on_the_gpu_worker_only(gpu_node_client, gpu_node_run):
    loaded = gpu_node_client.run(lambda dask_worker: len(dask_worker.plugins[PLUGIN_NAME].loaded))
    roles = _roles(gpu_node_client)
    assert {roles[address]: count for address, count in loaded.items()} == {"gpu": 1, "cpu": 0}
    # The CPU workers see no GPU; the GPU worker sees only its own.
    visible = gpu_node_client.run(lambda: __import__("os").environ.get("CUDA_VISIBLE_DEVICES"))
    assert {roles[address]: value for address, value in visible.items()} == {"gpu": "0", "cpu": ""}


def test_each_shard_records_its_timings_and_worker(gpu_node_client, gpu_node_run):
    result, _ = gpu_node_run
    parts = sorted((result.out / "_progress" / "score").glob("shard-*.parquet"))
    records = read_timings(parts)
    assert len(records) == len(parts) == result.summary["shards"]
    gpu_address = next(address for address, role in _roles(gpu_node_client).items() if role == "gpu")
    assert {record["worker"] for record in records} == {gpu_address}
    assert all(record["prefetch"] for record in records if record["shards"] > 1)
    for record in records:
        for stage in (*TIMING_STAGES, "write_s"):
            assert record[stage] >= 0
    assert sum(record["objects"] for record in records) == result.summary["scored"]
    assert json.loads(timings_path(parts[0]).read_text()) == records[0]


def test_the_catalogue_equals_the_cpu_clusters(gpu_node_run, tiny_survey, tiny_model, client, tmp_path):
    result, _ = gpu_node_run
    cpu = run_with_client(settings_for(tiny_survey, tiny_model, tmp_path / "cpu", shard_size=SHARD_SIZE), client,
                          log=lambda _: None)
    on_gpu_node, on_cpu = pd.read_parquet(result.candidates), pd.read_parquet(cpu.candidates)
    pd.testing.assert_frame_equal(on_gpu_node.drop(columns=["logit", "score", "p_survey", "rank"]).sort_values(
        "object_id").reset_index(drop=True), on_cpu.drop(columns=["logit", "score", "p_survey", "rank"]).sort_values(
        "object_id").reset_index(drop=True))
    merged = on_gpu_node.merge(on_cpu, on="object_id")
    np.testing.assert_allclose(merged["logit_x"], merged["logit_y"], rtol=1e-5, atol=1e-5)
    pd.testing.assert_frame_equal(pd.read_parquet(result.failures), pd.read_parquet(cpu.failures))


def test_a_resumed_run_on_the_gpu_node_equals_the_uninterrupted_one(gpu_node_client, gpu_node_run, tiny_survey,
                                                                    tiny_model, tmp_path):
    import shutil

    result, _ = gpu_node_run
    out = tmp_path / "resumed"
    shutil.copytree(result.out, out)
    parts = sorted((out / "_progress" / "score").glob("shard-*.parquet"))
    for part in (parts[0], parts[2]):  # two gaps: groups must not span the scored shard between
        part.unlink()
    (out / "candidates.parquet").unlink()
    resumed = run_with_client(settings_for(tiny_survey, tiny_model, out, shard_size=SHARD_SIZE), gpu_node_client,
                              log=lambda _: None)
    assert resumed.summary["shards_resumed"] == resumed.summary["shards"] - 2
    pd.testing.assert_frame_equal(pd.read_parquet(resumed.candidates), pd.read_parquet(result.candidates))


# --- on a real GPU node -------------------------------------------------------------------

#: Tiny random model, bf16 autocast on the GPU vs fp32 on CPUs: largest logit difference allowed.
GPU_RUN_LOGIT_ATOL = 0.3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_node_only_gpu_workers_hold_the_model_and_on_their_gpu(tiny_survey, tiny_model, client, tmp_path):
    from pipeline.cluster import make_client

    settings = settings_for(tiny_survey, tiny_model, tmp_path / "gpu", cluster="cuda", workers=2,
                            dashboard_address=":0", shard_size=SHARD_SIZE)
    with make_client(settings) as gpu_client:
        result = run_with_client(settings, gpu_client, log=lambda _: None)
        roles = _roles(gpu_client)
        devices = gpu_client.run(lambda dask_worker: [str(next(model.module.parameters()).device)
                                                      for model in dask_worker.plugins[PLUGIN_NAME].loaded])
        visible = gpu_client.run(lambda: __import__("torch").cuda.device_count())
    assert sum(role == "gpu" for role in roles.values()) == torch.cuda.device_count()
    for address, role in roles.items():
        if role == "gpu":
            assert devices[address] == ["cuda:0"] and visible[address] == 1
        else:
            assert devices[address] == [] and visible[address] == 0
    records = read_timings(sorted((result.out / "_progress" / "score").glob("shard-*.parquet")))
    assert {record["device"] for record in records} == {"cuda:0"}
    assert all(record["h2d_s"] > 0 for record in records if record["objects"])
    cpu = run_with_client(settings_for(tiny_survey, tiny_model, tmp_path / "cpu", shard_size=SHARD_SIZE), client,
                          log=lambda _: None)
    merged = pd.read_parquet(result.candidates).merge(pd.read_parquet(cpu.candidates), on="object_id")
    assert len(merged) == result.summary["scored"] == cpu.summary["scored"]
    assert np.abs(merged["logit_x"] - merged["logit_y"]).max() <= GPU_RUN_LOGIT_ATOL
