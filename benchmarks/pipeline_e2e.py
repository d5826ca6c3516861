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
  normalises them (not timed) and times only ``lensnet.predict.forward_logits`` at
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
from catalogs.layout import RunLayout
from lensnet.predict import DEFAULT_BATCH

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


def survey_inputs(survey: dict, n: int) -> np.ndarray:
    """The default model's normalised inputs for the first ``n`` planned objects of a survey.

    Cut and normalised exactly as the pipeline does (plan, ``cut_stamps``, the model's
    normalisation), so that the model benchmarks time the data the pipeline feeds the
    model rather than random numbers (on this model the two ran at the same speed within
    noise, but an activation with a data-dependent fast path would not).
    """
    from pipeline.cutouts import cut_stamps
    from pipeline.images import read_image
    from lensnet.predict import preprocess
    from pipeline.run import prepare_run

    prepared = prepare_run(make_settings(survey, Path(survey["catalog"]).parent / "unused-out", 1, 1),
                           lambda message: None)
    objects = prepared.plan.objects.iloc[:n]
    size = prepared.model_config.stamp_size_px
    stamps = np.empty((len(objects), len(prepared.bands), size, size), dtype=np.float32)
    for tile_name, group in objects.groupby("tile", sort=False):
        rows = objects.index.get_indexer(group.index)
        tile = prepared.plan.tiles[tile_name]
        for band_index, band in enumerate(prepared.bands):
            stamps[rows, band_index] = cut_stamps(read_image(tile.paths[band]), group["x_px"].to_numpy(),
                                                  group["y_px"].to_numpy(), size)[0]
    inputs, _ = preprocess(stamps, prepared.model_config)
    return inputs


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


# ----------------------------------------------------------------------------- timing a run

#: The phases a run records in summary.json (``phases_s``), by the labels of the results.
PHASE_LABELS = {
    "create_store": "create zarr store",
    "register_plugin": "register plugin (model load on workers)",
    "compute": "compute (cut + score tasks)",
    "performance_report": "dask performance report",
    "merge": "merge (catalogue, Parquet)",
}
OTHER_PHASE = "other (fingerprint, provenance, summary)"


def phases_of(summary: dict, execute_s: float) -> dict[str, float]:
    """The run's own phase timings (summary.json), labelled; the rest of ``execute_s`` as ``other``."""
    phases = {PHASE_LABELS.get(name, name): seconds for name, seconds in summary.get("phases_s", {}).items()}
    phases[OTHER_PHASE] = execute_s - sum(phases.values())
    return phases


def make_settings(survey: dict, out: Path, workers: int, threads: int, device: str = "cpu", **extra):
    from pipeline.config import resolve

    return resolve(None, images=survey["image_pattern"], catalog=survey["catalog"], out=str(out), workers=workers,
                   threads_per_worker=threads, device=device, progress=False, dashboard_address=":0", force=True,
                   **extra)


def timed_run(client, survey: dict, out: Path, workers: int, threads: int, label: str, device: str = "cpu",
              batch_size: int | None = None) -> dict:
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
    with get_task_stream(client) as stream:
        result = execute(prepared, client, quiet)
    finished = time.perf_counter()
    memory = sampler.stop()
    memory_after = client.run(worker_memory)
    watched = watch.stop()

    execute_s = finished - prepared_at
    phases = phases_of(result.summary, execute_s)
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
        "shard_size": settings.shard_size, "batch_size": settings.batch_size or DEFAULT_BATCH[device],
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

class BareForward:
    """Forward-only throughput on a run's own stamps (normalised beforehand, not timed).

    ``setups`` maps a label to ``{"threads", "batch"}``. Each call of
    :meth:`one_round` times one pass of every setup through
    ``lensnet.predict.forward_logits``; :meth:`result` reports the best pass of each,
    so the bare passes can be interleaved with the end-to-end runs they are compared to.
    """

    def __init__(self, store_path: Path, candidates: Path, setups: dict[str, dict], max_images: int,
                 device: str = "cpu"):
        from lensnet.checkpoint import load_model
        from pipeline import store
        from lensnet.predict import preprocess

        scored = np.sort(pd.read_parquet(candidates, columns=["cutout_index"])["cutout_index"].to_numpy())
        stamps = store.read_stamps(store_path, 0, int(scored.max()) + 1)[scored][:max_images]
        self.loaded = load_model("default", device=device)
        started = time.perf_counter()
        self.inputs, _ = preprocess(stamps, self.loaded.config)
        self.preprocess_rate = len(stamps) / (time.perf_counter() - started)
        if device != "cpu":  # untested here: inputs resident on the device
            self.inputs = torch.from_numpy(self.inputs).to(device)
        # As the pipeline's ModelPlugin does: the model in channels_last (forward_logits
        # converts each batch).
        self.loaded.module.to(memory_format=torch.channels_last)
        self.setups, self.device = setups, device
        self.seconds: dict[str, list[float]] = {label: [] for label in setups}
        self.watch = None
        for label in setups:  # warm-up
            self._pass(label)

    def _pass(self, label: str) -> float:
        from lensnet.predict import forward_logits

        setup = self.setups[label]
        torch.set_num_threads(setup["threads"])
        started = time.perf_counter()
        forward_logits(self.loaded, self.inputs, setup["batch"])
        if self.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    def one_round(self) -> None:
        self.watch = self.watch or CpuWatch()
        for label in self.setups:
            self.seconds[label].append(self._pass(label))

    def result(self) -> dict:
        watched = self.watch.stop() if self.watch else {}
        return {"images": len(self.inputs), "device": self.device,
                "preprocess_images_per_s_one_thread": self.preprocess_rate,
                "setups": {label: {**setup, "images_per_s": len(self.inputs) / min(self.seconds[label]),
                                   "best_s": min(self.seconds[label]), "repeats": len(self.seconds[label]),
                                   "all_s": [round(x, 4) for x in self.seconds[label]], **watched}
                           for label, setup in self.setups.items()}}


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
    summary = RunLayout(out).read_summary()
    return {"command": " ".join(command), "wall_s": wall, "execute_s_from_summary": summary["seconds"],
            "scored": summary["scored"], "objects_per_s_wall": summary["scored"] / wall,
            **watch.stop()}


# ----------------------------------------------------------------------------- the benchmark

def _cluster(workers: int, tune_malloc: bool = True):
    """A LocalCluster as ``pipeline.cluster`` starts one for ``--cluster local`` (one Dask
    thread per worker process); ``tune_malloc=False`` turns the workers' malloc tuning
    off (``pipeline.inference.keep_activations_on_the_heap``) for the ablation."""
    import dask
    from distributed import Client, LocalCluster

    from pipeline.inference import TUNE_MALLOC_KEY

    # The nanny hands the configuration current at its start to its worker process.
    with dask.config.set({TUNE_MALLOC_KEY: tune_malloc}):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    return cluster, Client(cluster)


def worker_forward(batch: int, images: int = 512, repeats: int = 2) -> dict:
    """Forward-only images/s inside a worker, with the registered plugin's model (runs as a task)."""
    from lensnet.predict import forward_images_per_second
    from pipeline.inference import worker_model

    plugin = worker_model()
    loaded = plugin.loaded[0] if isinstance(plugin.loaded, list) else plugin.loaded
    inputs = torch.randn(images, 3, loaded.config.stamp_size_px, loaded.config.stamp_size_px,
                         generator=torch.Generator().manual_seed(0)).numpy()
    return {"images_per_s": forward_images_per_second(loaded, inputs, batch, repeats),
            "torch_threads": torch.get_num_threads(),
            "malloc_tuned": plugin.malloc_tuned}


def configs_for(total_threads: int, quick: bool = False) -> dict[str, dict]:
    """The LocalCluster configurations compared, all with the pipeline's own defaults (batch
    ``DEFAULT_BATCH["cpu"]``, channels_last, malloc tuned by the model plugin):

    A: 1 worker x all threads;
    B-untuned: B with the workers' malloc left as Dask's nanny sets it (ablation);
    B: one single-threaded worker per core, the command line's default (scaled to 4x).
    """
    base = {"workers": 1, "threads": total_threads, "batch": DEFAULT_BATCH["cpu"], "tune_malloc": True}
    configs = {"A": dict(base)}
    if total_threads > 1:
        if not quick:
            configs["B-untuned"] = {**base, "workers": total_threads, "threads": 1, "tune_malloc": False}
        configs["B"] = {**base, "workers": total_threads, "threads": 1}
    for config in configs.values():
        config["label"] = (f"{config['workers']} worker(s) x {config['threads']} torch thread(s), batch "
                           f"{config['batch']}{'' if config['tune_malloc'] else ', malloc not tuned'}")
    return configs


def _bare_key(threads: int, batch: int) -> str:
    return f"{threads} thread(s), batch {batch}"


def measure(scratch: Path, objects: int, quick: bool, total_threads: int) -> dict:
    """The configs of :func:`configs_for` on the 1x survey, run round-robin on clusters that
    are all up at once (A B C A B C ...), with one pass of every bare-forward setup after
    each round; then the 4x survey on the last config, the forward alone inside each
    config's worker, and the command line."""
    survey = mock_survey(scratch / f"mock-{objects}", objects)
    result: dict[str, Any] = {"survey_1x": survey, "configs": {}}
    configs = configs_for(total_threads, quick)
    rounds = 1 + (0 if quick else 2)
    setups = {}
    for spec in configs.values():
        for threads in {spec["workers"] * spec["threads"], spec["threads"]}:
            setups[_bare_key(threads, spec["batch"])] = {"threads": threads, "batch": spec["batch"]}
    with contextlib.ExitStack() as stack:
        clients = {}
        for name, spec in configs.items():
            log(f" starting config {name}: {spec['label']}")
            cluster, client = _cluster(spec["workers"], spec["tune_malloc"])
            stack.enter_context(cluster)
            stack.enter_context(client)
            client.wait_for_workers(spec["workers"])
            clients[name] = client
            result["configs"][name] = {**spec, "runs_1x": []}
        bare = None
        for index in range(rounds):
            for name, spec in configs.items():
                config = result["configs"][name]
                if "error" in config:
                    continue
                label = f"{name} 1x {'cold' if index == 0 else f'warm {index}'}"
                try:
                    config["runs_1x"].append(timed_run(clients[name], survey, scratch / f"run-{name}-1x-{index}",
                                                       spec["workers"], spec["threads"], label,
                                                       batch_size=spec["batch"]))
                except Exception as error:  # keep the other configs' results
                    config["error"] = f"{type(error).__name__}: {error}"
                    log(f"  config {name} failed: {error}")
            if bare is None:
                done = next((c["runs_1x"][0]["out"] for c in result["configs"].values() if c["runs_1x"]), None)
                if done is None:
                    break
                bare = BareForward(RunLayout(done).store, RunLayout(done).candidates, setups,
                                   max_images=256 if quick else 768)
                torch.set_num_threads(total_threads)
            bare.one_round()
            if quick:
                bare.one_round()
            log("  bare forward: " + ", ".join(f"{label}: {len(bare.inputs) / min(times):.1f} img/s"
                                               for label, times in bare.seconds.items()))
        if bare is not None:
            result["bare_forward"] = bare.result()
        last = list(configs)[-1]  # scaling on the config the CLI uses by default
        if "error" not in result["configs"][last]:
            spec = configs[last]
            big = replicate_survey(survey, scratch / f"mock-{objects}-x4", 4)
            result["survey_4x"] = big
            result["configs"][last]["runs_4x"] = [
                timed_run(clients[last], big, scratch / f"run-{last}-4x", spec["workers"], spec["threads"],
                          f"{last} 4x warm", batch_size=spec["batch"])]
        # The forward alone inside the workers of each config, all workers at once (so that
        # they share the cores and memory bandwidth as in a run), with the model the runs
        # used; configs interleaved, best of 2.
        for _ in range(1 if quick else 2):
            for name, spec in configs.items():
                config = result["configs"][name]
                if "error" in config:
                    continue
                watch = CpuWatch()
                addresses = sorted(clients[name].scheduler_info()["workers"])
                futures = [clients[name].submit(worker_forward, spec["batch"], 256 if quick else 512, pure=False,
                                                workers=[address], allow_other_workers=False)
                           for address in addresses]
                per_worker = clients[name].gather(futures)
                measured = {"images_per_s": sum(item["images_per_s"] for item in per_worker),
                            "per_worker": per_worker, **watch.stop()}
                if measured["images_per_s"] > config.get("worker_forward", {}).get("images_per_s", 0):
                    config["worker_forward"] = measured
        for name, config in result["configs"].items():
            if "worker_forward" in config:
                log(f"  [{name}] forward alone in all its workers at once: "
                    f"{config['worker_forward']['images_per_s']:.1f} img/s")
        torch.set_num_threads(total_threads)
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
    bare = BareForward(RunLayout(last).store, RunLayout(last).candidates,
                       {"cuda, batch 1024": {"threads": 1, "batch": 1024}},
                       max_images=4096, device="cuda")
    for _ in range(3):
        bare.one_round()
    out["bare_forward"] = bare.result()
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
        in_workers = config.get("worker_forward", {}).get("images_per_s")
        reference = max(filter(None, [bare.get(_bare_key(total, config["batch"]), {}).get("images_per_s"),
                                      in_workers]), default=None)
        entry = {
            "label": config["label"],
            "bare_forward_per_worker_threads": bare.get(_bare_key(config["threads"], config["batch"]),
                                                        {}).get("images_per_s"),
            "execute_objects_per_s_best_warm": best["objects_per_s_execute"],
            "prepare_execute_objects_per_s_best_warm": best["objects_per_s_prepare_execute"],
            "execute_objects_per_s_cold": cold["objects_per_s_execute"],
            "bare_forward_same_settings": bare.get(_bare_key(total, config["batch"]), {}).get("images_per_s"),
            "bare_forward_in_all_workers_at_once": in_workers,
            "bare_forward_best_same_cores": reference,
            "ratio_execute_vs_bare": best["objects_per_s_execute"] / reference if reference else None,
            "ratio_prepare_execute_vs_bare": best["objects_per_s_prepare_execute"] / reference if reference else None,
            "best_run": best["label"],
        }
        if reference:
            entry["overhead_breakdown_s"] = _breakdown(best, config["workers"], reference,
                                                       result["bare_forward"]["preprocess_images_per_s_one_thread"])
        if config["workers"] > 1:
            one = bare.get(_bare_key(config["threads"], config["batch"]), {})
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
                "execute_objects_per_s_4x": big["objects_per_s_execute"],
                "ratio_execute_4x_vs_bare": big["objects_per_s_execute"] / reference if reference else None,
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
        reference = max((entry["bare_forward_best_same_cores"] for entry in summary.values()
                         if entry.get("bare_forward_best_same_cores")), default=None)
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
        "normalisation (estimated, 1 thread)": normalise,
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
