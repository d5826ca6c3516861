"""End to end: ``run_with_client`` on a mock survey vs bare forward passes; scaling to 4x.

* The survey is ``pipeline.mock.make_mock_survey`` (2 x 2 tiles of 1600 px, g r i);
  generating it is not timed. The 4x survey is the same 2 x 2 block of tiles written
  four times, each copy shifted by ``COPY_SHIFT_DEG`` in right ascension (tile CRVAL1 and
  catalogue RA alike: a rotation about the celestial pole, so every object lands on
  exactly the same pixels of its copy). 4x the objects on 4x the tiles, same density.
* A run is timed as ``prepare_run`` (catalogue, tile headers, plan) plus ``execute``
  (Zarr store, model load on the workers, the cut and score tasks, the Dask performance
  report, the merge) on a client whose LocalCluster is already up; cluster start is
  excluded there and included in the separately timed command line
  (``run_survey.py``: interpreter start and imports, cluster start, run, shutdown).
* The bare forward reference reads the run's own stamps back from ``cutouts.zarr``,
  normalises them (not timed) and times only ``pipeline.inference.forward_logits`` at
  the same batch size and torch thread count as the run.
* Memory: every ``SAMPLE_INTERVAL_S`` a background thread asks each worker for its
  ``/proc/self/status`` (VmRSS, RssAnon, RssFile) via ``client.run``; each worker's peak
  RSS high-water mark (VmHWM) is reset before a run (``/proc/self/clear_refs``) and read
  after it, so the peak between samples is not missed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from astropy.io import fits

from benchmarks.common import REPO_ROOT, CpuWatch, log
from pipeline.inference import ModelPlugin

COPY_SHIFT_DEG = 0.5
#: The environment before any LocalCluster started here (nannies leak theirs into it);
#: the command-line run gets this one, as a user's shell would give it.
ORIGINAL_ENVIRONMENT = dict(os.environ)
SAMPLE_INTERVAL_S = 0.25
MOCK_SETTINGS = {"lens_fraction": 0.1, "seed": 7, "tiles_x": 2, "tiles_y": 2, "tile_size_px": 1600,
                 "overlap_px": 100}


# ----------------------------------------------------------------------------- surveys

def mock_survey(directory: Path, n_objects: int) -> dict:
    """A mock survey in ``directory`` (reused if one with the same settings is there)."""
    from pipeline.mock import make_mock_survey

    wanted = {"n_objects": n_objects, **MOCK_SETTINGS}
    settings_file = directory / "survey.json"
    if settings_file.is_file():
        existing = json.loads(settings_file.read_text())
        if all(existing.get(key) == value for key, value in wanted.items()):
            log(f"  reusing mock survey {directory}")
            return {"image_pattern": str(directory / "tiles" / "{tile}_{band}.fits"),
                    "catalog": str(directory / "sources.parquet"), "objects": n_objects, "generation_s": None,
                    "tiles": len(list((directory / "tiles").glob("*_g.fits")))}
    started = time.perf_counter()
    survey = make_mock_survey(directory, n_objects=n_objects, **MOCK_SETTINGS)
    seconds = time.perf_counter() - started
    log(f"  generated mock survey of {n_objects} objects in {seconds:.0f} s (not timed)")
    return {"image_pattern": survey.image_pattern, "catalog": str(survey.catalog_path), "objects": n_objects,
            "generation_s": seconds, "tiles": len(survey.tiles)}


def replicate_survey(source: dict, directory: Path, copies: int) -> dict:
    """``copies`` RA-shifted copies of a survey's tiles and catalogue (see the module doc)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tiles").mkdir(exist_ok=True)
    pattern = source["image_pattern"]
    tiles_dir = Path(pattern).parent
    catalog = pd.read_parquet(source["catalog"])
    catalogs = []
    n = len(catalog)
    for copy in range(copies):
        for path in sorted(tiles_dir.glob("*.fits")):
            with fits.open(path, memmap=True) as hdul:
                header = hdul[0].header.copy()
                header["CRVAL1"] = (header["CRVAL1"] + copy * COPY_SHIFT_DEG) % 360
                fits.PrimaryHDU(hdul[0].data, header=header).writeto(
                    directory / "tiles" / f"c{copy}{path.name}", overwrite=True)
        shifted = catalog.copy()
        shifted["id"] = catalog["id"] + copy * n
        shifted["ra"] = (catalog["ra"] + copy * COPY_SHIFT_DEG) % 360
        catalogs.append(shifted)
    catalog_path = directory / "sources.parquet"
    pd.concat(catalogs, ignore_index=True).to_parquet(catalog_path, index=False)
    return {"image_pattern": str(directory / "tiles" / "{tile}_{band}.fits"), "catalog": str(catalog_path),
            "objects": n * copies, "generation_s": None, "tiles": source["tiles"] * copies,
            "replicated_from": source["catalog"], "copies": copies}


# ----------------------------------------------------------------------------- memory

def worker_memory() -> dict[str, int]:
    """This process's VmRSS, VmHWM, RssAnon, RssFile in bytes (runs on the workers)."""
    values: dict[str, int] = {}
    try:
        with open("/proc/self/status") as status:
            for line in status:
                key = line.split(":", 1)[0]
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    values[key] = int(line.split()[1]) * 1024
    except OSError:
        import psutil

        values["VmRSS"] = psutil.Process().memory_info().rss
    return values


def reset_peak_memory() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); runs on the workers."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class MemorySampler(threading.Thread):
    """Samples every worker's memory through ``client.run`` until stopped."""

    def __init__(self, client, interval: float = SAMPLE_INTERVAL_S):
        super().__init__(daemon=True)
        self.client, self.interval = client, interval
        self.samples: list[tuple[float, dict[str, dict[str, int]]]] = []
        self.stopped = threading.Event()
        self.errors = 0
        self.started_at = time.perf_counter()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.samples.append((time.perf_counter() - self.started_at, self.client.run(worker_memory)))
            except Exception:  # a worker restarting, the loop closing: skip the sample
                self.errors += 1
            self.stopped.wait(self.interval)

    def stop(self) -> dict:
        self.stopped.set()
        self.join()
        peaks: dict[str, dict[str, int]] = {}
        for _, per_worker in self.samples:
            for worker, values in per_worker.items():
                peak = peaks.setdefault(worker, {})
                for key in ("VmRSS", "RssAnon", "RssFile"):
                    if key in values:
                        peak[key] = max(peak.get(key, 0), values[key])
        return {"samples": len(self.samples), "errors": self.errors, "peak_sampled": peaks}


# ----------------------------------------------------------------------------- a tuned plugin

class ChannelsLastPlugin(ModelPlugin):
    """``ModelPlugin`` with the change recommended in RESULTS.md: CPU models in channels_last.

    Registered under the same name as the pipeline's plugin, so its tasks use it
    unchanged; the NCHW input batches are converted by the first convolution.
    """

    def setup(self, worker=None) -> None:
        super().setup(worker)
        loaded_models = self.loaded if isinstance(self.loaded, list) else [self.loaded]
        for loaded in loaded_models:
            if next(loaded.module.parameters()).device.type == "cpu":
                loaded.module.to(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- timing a run

class _Timed:
    """Wraps pipeline functions to time the phases of ``execute`` (benchmark process only)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, name: str, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        return timed

    def report_context(self, real):
        timer = self

        @contextlib.contextmanager
        def timed(*args, **kwargs):
            context = real(*args, **kwargs)
            context.__enter__()
            entered = time.perf_counter()
            try:
                yield
            finally:
                exiting = time.perf_counter()
                timer.seconds["compute (cut + score tasks)"] = exiting - entered
                context.__exit__(None, None, None)
                timer.seconds["dask performance report"] = time.perf_counter() - exiting
        return timed


@contextlib.contextmanager
def instrumented(client, channels_last: bool = False):
    """Time create_store, plugin registration, the task graph, the report and the merge.

    With ``channels_last`` the run registers :class:`ChannelsLastPlugin` instead of
    the pipeline's ``ModelPlugin`` (same name, so the tasks find it).
    """
    import pipeline.run as run_module
    from pipeline import store

    timer = _Timed()
    saved = (store.create_store, run_module.merge_outputs, run_module.performance_report, client.register_plugin,
             run_module.ModelPlugin)
    if channels_last:
        run_module.ModelPlugin = ChannelsLastPlugin
    store.create_store = timer.wrap("create zarr store", store.create_store)
    run_module.merge_outputs = timer.wrap("merge (catalogue, Parquet)", run_module.merge_outputs)
    run_module.performance_report = timer.report_context(run_module.performance_report)
    client.register_plugin = timer.wrap("register plugin (model load on workers)", client.register_plugin)
    try:
        yield timer
    finally:
        store.create_store, run_module.merge_outputs, run_module.performance_report = saved[:3]
        run_module.ModelPlugin = saved[4]
        del client.register_plugin


def make_settings(survey: dict, out: Path, workers: int, threads: int, device: str = "cpu", **extra):
    from pipeline.config import resolve

    return resolve(None, images=survey["image_pattern"], catalog=survey["catalog"], out=str(out), workers=workers,
                   threads_per_worker=threads, device=device, progress=False, dashboard_address=":0", force=True,
                   **extra)


def timed_run(client, survey: dict, out: Path, workers: int, threads: int, label: str, device: str = "cpu",
              batch_size: int = 256, channels_last: bool = False) -> dict:
    """One ``prepare_run`` + ``execute`` on ``client``, with its phases, task times and memory."""
    from distributed import get_task_stream

    from pipeline.run import execute, prepare_run

    if out.exists():
        shutil.rmtree(out)
    settings = make_settings(survey, out, workers, threads, device, batch_size=batch_size)
    quiet = lambda message: None  # noqa: E731
    hwm_reset = client.run(reset_peak_memory)
    memory_before = client.run(worker_memory)
    watch = CpuWatch()
    sampler = MemorySampler(client)
    sampler.start()
    started = time.perf_counter()
    prepared = prepare_run(settings, quiet)
    prepared_at = time.perf_counter()
    with instrumented(client, channels_last) as timer, get_task_stream(client) as stream:
        result = execute(prepared, client, quiet)
    finished = time.perf_counter()
    memory = sampler.stop()
    memory_after = client.run(worker_memory)
    watched = watch.stop()

    execute_s = finished - prepared_at
    phases = dict(timer.seconds)
    phases["other (fingerprint, provenance, summary)"] = execute_s - sum(phases.values())
    task_seconds: dict[str, float] = {}
    task_count: dict[str, int] = {}
    for task in stream.data:
        prefix = str(task["key"]).split("-")[0].strip("('\"")
        for startstop in task.get("startstops", ()):
            if startstop["action"] == "compute":
                task_seconds[prefix] = task_seconds.get(prefix, 0.0) + startstop["stop"] - startstop["start"]
        task_count[prefix] = task_count.get(prefix, 0) + 1
    scored = result.summary["scored"]
    run = {
        "label": label, "objects": survey["objects"], "scored": scored, "failed": result.summary["failed"],
        "workers": workers, "torch_threads_per_worker": threads, "shards": result.summary["shards"],
        "shard_size": settings.shard_size, "batch_size": settings.batch_size, "channels_last": channels_last,
        "prepare_s": prepared_at - started, "execute_s": execute_s, "total_s": finished - started,
        "objects_per_s_execute": scored / execute_s,
        "objects_per_s_prepare_execute": scored / (finished - started),
        "phases_s": phases, "task_compute_s": task_seconds, "task_count": task_count,
        "memory": {
            "hwm_reset": all(hwm_reset.values()),
            "before": memory_before, "after": memory_after, **memory,
            "peak_hwm_per_worker": {w: v.get("VmHWM") for w, v in memory_after.items()},
        },
        **watched,
        "out": str(out),
    }
    peak = max((v.get("VmHWM") or v.get("VmRSS", 0)) for v in memory_after.values())
    log(f"  [{label}] {scored} objects: prepare {run['prepare_s']:.1f} s, execute {execute_s:.1f} s "
        f"({run['objects_per_s_execute']:.1f} obj/s), peak worker RSS {peak / 2**20:.0f} MiB")
    return run


# ----------------------------------------------------------------------------- bare forward

def bare_forward(store_path: Path, candidates: Path, setups: dict[str, dict], rounds: int, max_images: int,
                 device: str = "cpu") -> dict:
    """Forward-only throughput on a run's own stamps (normalised beforehand, not timed).

    ``setups`` maps a label to ``{"threads", "batch", "channels_last"}``; all are timed
    interleaved, best of ``rounds``, through ``pipeline.inference.forward_logits``.
    """
    import copy
    import dataclasses

    from benchmarks.common import TIMING_KEYS, round_robin
    from lensnet.checkpoint import load_model
    from pipeline import store
    from pipeline.inference import forward_logits, preprocess

    scored = np.sort(pd.read_parquet(candidates, columns=["cutout_index"])["cutout_index"].to_numpy())
    stamps = store.read_stamps(store_path, 0, int(scored.max()) + 1)[scored][:max_images]
    loaded = load_model("default", device=device)
    started = time.perf_counter()
    inputs, _ = preprocess(stamps, loaded.config)
    preprocess_s = time.perf_counter() - started
    tensor = torch.from_numpy(inputs).to(device)
    # As ChannelsLastPlugin does: the model in channels_last, the batches as the pipeline makes them.
    loaded_cl = dataclasses.replace(loaded, module=copy.deepcopy(loaded.module).to(memory_format=torch.channels_last))

    def forward(setup: dict):
        def run():
            torch.set_num_threads(setup["threads"])
            if setup["channels_last"]:
                forward_logits(loaded_cl, inputs if device == "cpu" else tensor, setup["batch"])
            else:
                forward_logits(loaded, inputs if device == "cpu" else tensor, setup["batch"])
        return run

    sync = torch.cuda.synchronize if device == "cuda" else None
    timings = round_robin({label: forward(setup) for label, setup in setups.items()}, rounds, warmup=1,
                          synchronize=sync)
    return {"images": len(inputs), "device": device,
            "preprocess_images_per_s_one_thread": len(stamps) / preprocess_s,
            "setups": {label: {**setup, "images_per_s": len(inputs) / timings[label]["best_s"],
                               **{k: timings[label][k] for k in TIMING_KEYS if k in timings[label]}}
                       for label, setup in setups.items()}}


# ----------------------------------------------------------------------------- command line

def cli_run(survey: dict, out: Path, extra: list[str] | None = None) -> dict:
    """Wall time of ``run_survey.py`` as a user runs it (interpreter, imports, cluster, run)."""
    if out.exists():
        shutil.rmtree(out)
    command = [sys.executable, str(REPO_ROOT / "run_survey.py"), "--images", survey["image_pattern"],
               "--catalog", survey["catalog"], "--out", str(out), "--no-progress", "--dashboard-address", ":0",
               *(extra or [])]
    watch = CpuWatch()
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=ORIGINAL_ENVIRONMENT)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        return {"error": completed.stderr[-2000:], "command": command}
    summary = json.loads((out / "summary.json").read_text())
    return {"command": " ".join(command), "wall_s": wall, "execute_s_from_summary": summary["seconds"],
            "scored": summary["scored"], "objects_per_s_wall": summary["scored"] / wall,
            **watch.stop()}


# ----------------------------------------------------------------------------- the benchmark

#: Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 (distributed.yaml). Setting
#: a glibc malloc threshold turns off glibc's dynamic mmap threshold, so every tensor above
#: 128 KiB is mmap'ed and unmapped again, and the heap is trimmed back after every batch:
#: page faults and zeroing for every activation of every forward pass. The "+malloc"
#: configs start the workers with thresholds that keep activations on the heap instead.
MALLOC_ENVIRONMENT = {"MALLOC_TRIM_THRESHOLD_": str(256 * 2**20), "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
                      "MALLOC_ARENA_MAX": "1"}


def _cluster(workers: int, tuned_malloc: bool = False):
    import dask
    from distributed import Client, LocalCluster

    overrides = ({f"distributed.nanny.pre-spawn-environ.{key}": value for key, value in MALLOC_ENVIRONMENT.items()}
                 if tuned_malloc else {})
    # A nanny copies its pre-spawn environment into os.environ of the process that hosts it
    # (here: this one) before spawning, and os.environ wins over the configuration: clear
    # what an earlier cluster left there, and restore it afterwards.
    saved = {key: os.environ.pop(key) for key in MALLOC_ENVIRONMENT if key in os.environ}
    try:
        with dask.config.set(overrides):
            # As pipeline.cluster does for --cluster local: one Dask thread per worker process.
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    finally:
        for key in MALLOC_ENVIRONMENT:
            os.environ.pop(key, None)
        os.environ.update(saved)
    return cluster, Client(cluster)


def worker_forward(batch: int, images: int = 512, repeats: int = 2) -> dict:
    """Forward-only images/s inside a worker, with the registered plugin's model (runs as a task)."""
    from pipeline.inference import forward_logits, worker_model

    plugin = worker_model()
    loaded = plugin.loaded[0] if isinstance(plugin.loaded, list) else plugin.loaded
    inputs = torch.randn(images, 3, loaded.config.stamp_size_px, loaded.config.stamp_size_px,
                         generator=torch.Generator().manual_seed(0)).numpy()
    forward_logits(loaded, inputs[:batch], batch)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        forward_logits(loaded, inputs, batch)
        best = min(best, time.perf_counter() - started)
    return {"images_per_s": images / best, "torch_threads": torch.get_num_threads(),
            "malloc_environment": {key: os.environ.get(key) for key in MALLOC_ENVIRONMENT}}


def configs_for(total_threads: int, tuned: dict | None, quick: bool = False) -> dict[str, dict]:
    """The LocalCluster configurations compared (see RESULTS.md):

    A: 1 worker x all threads, the pipeline's settings (batch 256, NCHW, Dask's malloc env);
    A+malloc: A with malloc thresholds that keep activations on the heap (MALLOC_ENVIRONMENT);
    A-tuned: A with the default-model section's best batch size and memory format;
    A-tuned+malloc: both;
    B: one single-threaded worker per core, the pipeline's settings (the CLI's default here).
    """
    base = {"workers": 1, "threads": total_threads, "batch": 256, "channels_last": False, "malloc": False,
            "warm_runs": 0 if quick else 2}
    configs = {"A": dict(base)}
    if tuned and not quick:
        configs["A+malloc"] = {**base, "malloc": True, "warm_runs": 1}
        configs["A-tuned"] = {**base, "batch": tuned["batch"], "channels_last": tuned["channels_last"]}
        configs["A-tuned+malloc"] = {**configs["A-tuned"], "malloc": True}
    if total_threads > 1:
        configs["B"] = {**base, "workers": total_threads, "threads": 1}
    for config in configs.values():
        config["label"] = (f"{config['workers']} worker(s) x {config['threads']} torch thread(s), batch "
                           f"{config['batch']}{', channels_last' if config['channels_last'] else ''}"
                           f"{', malloc thresholds 32/256 MiB' if config['malloc'] else ''}")
    return configs


def _bare_key(threads: int, batch: int, channels_last: bool) -> str:
    return f"{threads} thread(s), batch {batch}{', channels_last' if channels_last else ''}"


def measure(scratch: Path, objects: int, quick: bool, total_threads: int, tuned: dict | None = None) -> dict:
    """Configs of :func:`configs_for` on the 1x survey, the 4x survey on the last, bare forward, CLI."""
    survey = mock_survey(scratch / f"mock-{objects}", objects)
    result: dict[str, Any] = {"survey_1x": survey, "configs": {}}
    configs = configs_for(total_threads, tuned, quick)
    last_out = None
    for name, spec in configs.items():
        log(f" config {name}: {spec['label']}")
        cluster, client = _cluster(spec["workers"], spec["malloc"])
        try:
            with cluster, client:
                client.wait_for_workers(spec["workers"])
                runs = []
                for index in range(1 + spec["warm_runs"]):
                    run_label = f"{name} 1x {'cold' if index == 0 else f'warm {index}'}"
                    runs.append(timed_run(client, survey, scratch / f"run-{name}-1x-{index}", spec["workers"],
                                          spec["threads"], run_label, batch_size=spec["batch"],
                                          channels_last=spec["channels_last"]))
                config = {**spec, "runs_1x": runs}
                if name == list(configs)[-1]:  # scaling on the config the CLI uses by default
                    big = replicate_survey(survey, scratch / f"mock-{objects}-x4", 4)
                    result["survey_4x"] = big
                    config["runs_4x"] = [timed_run(client, big, scratch / f"run-{name}-4x", spec["workers"],
                                                   spec["threads"], f"{name} 4x warm", batch_size=spec["batch"],
                                                   channels_last=spec["channels_last"])]
                # The forward alone inside one worker, with the model the runs used.
                watch = CpuWatch()
                config["worker_forward"] = {**client.submit(worker_forward, spec["batch"], 256 if quick else 512,
                                                            pure=False).result(), **watch.stop()}
                log(f"  [{name}] forward alone inside a worker: "
                    f"{config['worker_forward']['images_per_s']:.1f} img/s")
                result["configs"][name] = config
                last_out = Path(runs[-1]["out"])
        except Exception as error:  # keep the other configs' results
            result["configs"][name] = {**spec, "error": f"{type(error).__name__}: {error}"}
            log(f"  config {name} failed: {error}")
    if last_out is not None:
        log(" bare forward on the run's own stamps")
        setups = {}
        for spec in configs.values():
            for threads in {spec["workers"] * spec["threads"], spec["threads"]}:
                setups[_bare_key(threads, spec["batch"], spec["channels_last"])] = {
                    "threads": threads, "batch": spec["batch"], "channels_last": spec["channels_last"]}
        result["bare_forward"] = bare_forward(last_out / "cutouts.zarr", last_out / "candidates.parquet", setups,
                                              rounds=2 if quick else 3, max_images=256 if quick else 768)
    log(" command line (run_survey.py, default workers and threads)")
    result["cli_default"] = cli_run(survey, scratch / "run-cli")
    return result


def measure_cuda(scratch: Path, survey: dict) -> dict:
    """GPU end to end and bare forward (one worker, bf16 autocast). Untested on the CPU machine."""
    out: dict[str, Any] = {}
    cluster, client = _cluster(1)
    with cluster, client:
        client.wait_for_workers(1)
        runs = [timed_run(client, survey, scratch / f"run-cuda-{i}", 1, 1, f"cuda {i}", device="cuda",
                          batch_size=1024) for i in range(2)]
    out["runs"] = runs
    last = Path(runs[-1]["out"])
    out["bare_forward"] = bare_forward(last / "cutouts.zarr", last / "candidates.parquet",
                                       {"cuda, batch 1024": {"threads": 1, "batch": 1024, "channels_last": False}},
                                       rounds=3, max_images=4096, device="cuda")
    return out


def summarise(result: dict) -> dict:
    """The headline ratios: overhead per config, 4x/1x time, peak memory per worker."""
    summary: dict[str, Any] = {}
    bare = result.get("bare_forward", {}).get("setups", {})
    for name, config in result["configs"].items():
        if "error" in config:
            continue
        warm = config["runs_1x"][1:] or config["runs_1x"]
        best = max(warm, key=lambda run: run["objects_per_s_execute"])
        cold = config["runs_1x"][0]
        total = config["workers"] * config["threads"]
        reference = bare.get(_bare_key(total, config["batch"], config["channels_last"]), {}).get("images_per_s")
        entry = {
            "label": config["label"],
            "worker_forward_images_per_s": config.get("worker_forward", {}).get("images_per_s"),
            "bare_forward_per_worker_threads": bare.get(_bare_key(config["threads"], config["batch"],
                                                                  config["channels_last"]), {}).get("images_per_s"),
            "execute_objects_per_s_best_warm": best["objects_per_s_execute"],
            "prepare_execute_objects_per_s_best_warm": best["objects_per_s_prepare_execute"],
            "execute_objects_per_s_cold": cold["objects_per_s_execute"],
            "bare_forward_same_settings": reference,
            "ratio_execute_vs_bare": best["objects_per_s_execute"] / reference if reference else None,
            "ratio_prepare_execute_vs_bare": best["objects_per_s_prepare_execute"] / reference if reference else None,
            "best_run": best["label"],
        }
        if reference:
            entry["overhead_breakdown_s"] = _breakdown(best, config["workers"], reference,
                                                       result["bare_forward"]["preprocess_images_per_s_one_thread"])
        if config["workers"] > 1:
            one = bare.get(_bare_key(config["threads"], config["batch"], config["channels_last"]), {})
            if one:
                entry["bare_forward_workers_x_single_process"] = config["workers"] * one["images_per_s"]
                entry["ratio_execute_vs_workers_x_bare"] = (best["objects_per_s_execute"]
                                                            / entry["bare_forward_workers_x_single_process"])
        if "runs_4x" in config:
            big = config["runs_4x"][0]
            entry["scaling"] = {
                "objects_1x": best["scored"], "objects_4x": big["scored"],
                "execute_s_1x": best["execute_s"], "execute_s_4x": big["execute_s"],
                "time_ratio_4x_over_1x": big["execute_s"] / best["execute_s"],
                "peak_worker_hwm_mib_1x": _peak(best, "hwm"), "peak_worker_hwm_mib_4x": _peak(big, "hwm"),
                "peak_worker_anon_mib_1x": _peak(best, "RssAnon"), "peak_worker_anon_mib_4x": _peak(big, "RssAnon"),
                "peak_worker_rss_sampled_mib_1x": _peak(best, "VmRSS"),
                "peak_worker_rss_sampled_mib_4x": _peak(big, "VmRSS"),
                "worker_rss_before_run_mib": round(max(v.get("VmRSS", 0) for v in big["memory"]["before"].values())
                                                   / 2**20, 1),
            }
        summary[name] = entry
    cli = result.get("cli_default", {})
    if "wall_s" in cli:
        reference = bare.get(_bare_key(max(c["workers"] * c["threads"] for c in result["configs"].values()), 256,
                                       False), {}).get("images_per_s")
        summary["cli"] = {"wall_s": cli["wall_s"], "objects_per_s_wall": cli["objects_per_s_wall"],
                          "execute_s_from_summary": cli["execute_s_from_summary"],
                          "ratio_wall_vs_bare": cli["objects_per_s_wall"] / reference if reference else None}
    return summary


def _breakdown(run: dict, workers: int, bare_rate: float, preprocess_rate: float) -> dict[str, float]:
    """Split a run's execute wall time into the bare forward time and what else it spent."""
    scored = run["scored"]
    bare_s = scored / bare_rate
    wall = run["phases_s"].get("compute (cut + score tasks)", 0.0)
    cut = run["task_compute_s"].get("cut", 0.0) / workers
    score = run["task_compute_s"].get("score", 0.0) / workers
    normalise = scored / preprocess_rate / workers
    parts = {
        "bare forward (same settings, same total threads)": bare_s,
        "normalisation (estimated, NumPy, 1 thread)": normalise,
        "score tasks, rest (Zarr read, Parquet write, forward slower than bare)": score - normalise - bare_s,
        "cut tasks": cut,
        "idle/scheduling inside the task graph": wall - cut - score,
        "outside the graph (store, model load, perf. report, merge)": run["execute_s"] - wall,
    }
    return {key: round(value, 2) for key, value in parts.items()}


def _peak(run: dict, key: str) -> float | None:
    memory = run["memory"]
    if key == "hwm":
        values = [v for v in memory["peak_hwm_per_worker"].values() if v]
    else:
        values = [v.get(key) for v in memory["peak_sampled"].values() if v.get(key)]
    return round(max(values) / 2**20, 1) if values else None


def environment_for_workers() -> None:
    """Make ``benchmarks`` importable in worker processes (they run worker_memory by reference)."""
    paths = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
