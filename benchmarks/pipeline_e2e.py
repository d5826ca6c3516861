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
* Timing: everything compared runs in interleaved rounds. A round is one 1x run of
  every config, the 4x run of the command line's config, one pass of every bare-forward
  setup and one pass of the forward alone in each config's workers. Round 0 is the cold
  one (first run on a fresh cluster: worker imports, model load, page cache of the
  tiles) and is reported apart; the warm rounds give medians with their spread, and
  every ratio (end to end / bare forward, 4x / 1x time, config / config) is computed
  per round, from the things timed in that round, before its median is taken. The
  command line is timed once and is cold by nature (interpreter start, imports,
  cluster start).
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

from benchmarks.common import REPO_ROOT, CpuWatch, log, paired_ratios, per_second, spread, timing_summary
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

    ``setups`` maps a label to ``{"threads", "batch"}``. Each call of :meth:`one_round`
    times one pass of every setup through ``lensnet.predict.forward_logits``, so that the
    bare passes interleave with the end-to-end runs they are compared to; the first
    round is the cold one. :meth:`result` reports, per setup, the median of the warm
    rounds with its spread and the rate of every warm round (``images_per_s_all``, for
    per-round ratios).
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
        self.round_watch: list[dict] = []
        self.watch = None

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
        if len(self.round_watch) == 1:
            self.watch = CpuWatch()  # the load stamps cover the warm rounds
        watch = CpuWatch()
        for label in self.setups:
            self.seconds[label].append(self._pass(label))
        self.round_watch.append(watch.stop())

    def result(self, cold_rounds: int = 1) -> dict:
        watched = {**(self.watch.stop() if self.watch else {}),
                   "other_cores_per_round": [w.get("other_cores") for w in self.round_watch[cold_rounds:]]}
        setups = {}
        for label, setup in self.setups.items():
            seconds = self.seconds[label]
            timing = timing_summary(seconds[:cold_rounds], seconds[cold_rounds:], watched)
            rates = per_second(len(self.inputs), timing["warm_s"])
            setups[label] = {**setup, "images_per_s": spread(rates)["median"], "images_per_s_spread": spread(rates),
                             "images_per_s_all": rates,
                             "images_per_s_cold": len(self.inputs) / timing["cold_s"] if timing["cold_s"] else None,
                             **timing}
        return {"images": len(self.inputs), "device": self.device,
                "preprocess_images_per_s_one_thread": self.preprocess_rate, "setups": setups}


# ----------------------------------------------------------------------------- command line

def cli_run(survey: dict, out: Path, extra: list[str] | None = None) -> dict:
    """Wall time of ``run_survey.py`` as a user runs it (interpreter, imports, cluster, run): one cold run."""
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
            "scored": summary["scored"], "objects_per_s_wall": summary["scored"] / wall, "cold": True, "n": 1,
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


def worker_forward(batch: int, images: int = 512, repeats: int = 1) -> dict:
    """Forward-only images/s inside a worker, with the registered plugin's model (runs as a task).

    One warm-up batch, then the best of ``repeats`` passes (one per round in :func:`measure`)."""
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


#: Warm rounds of the end-to-end comparison (after one cold round): full run and --quick.
WARM_ROUNDS = 5
WARM_ROUNDS_QUICK = 2


def in_workers_forward(client, batch: int, images: int) -> dict:
    """The forward alone in all of a cluster's workers at once (they share the cores and memory
    bandwidth as in a run), with the model the runs used; images/s summed over the workers."""
    watch = CpuWatch()
    addresses = sorted(client.scheduler_info()["workers"])
    futures = [client.submit(worker_forward, batch, images, pure=False, workers=[address], allow_other_workers=False)
               for address in addresses]
    per_worker = client.gather(futures)
    return {"images_per_s": sum(item["images_per_s"] for item in per_worker), "per_worker": per_worker,
            **watch.stop()}


def measure(scratch: Path, objects: int, quick: bool, total_threads: int, warm_rounds: int | None = None) -> dict:
    """The configs of :func:`configs_for` on clusters that are all up at once, in interleaved
    rounds (module doc): per round the 1x run of every config, the 4x run of the last config
    (the command line's layout), one pass of every bare-forward setup and the forward alone
    in each config's workers. Then the command line, once."""
    survey = mock_survey(scratch / f"mock-{objects}", objects)
    result: dict[str, Any] = {"survey_1x": survey, "configs": {}, "cold_rounds": 1}
    configs = configs_for(total_threads, quick)
    warm_rounds = warm_rounds or (WARM_ROUNDS_QUICK if quick else WARM_ROUNDS)
    result["warm_rounds"] = warm_rounds
    last = list(configs)[-1]  # scaling on the config the CLI uses by default
    log(f" replicating the survey 4x for config {last} (not timed)")
    big = replicate_survey(survey, scratch / f"mock-{objects}-x4", 4)
    result["survey_4x"] = big
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
            result["configs"][name] = {**spec, "runs_1x": [], "worker_forward_rounds": []}
        result["configs"][last]["runs_4x"] = []
        bare = None
        for index in range(1 + warm_rounds):
            tag = "cold" if index == 0 else f"warm {index}"
            for name, spec in configs.items():
                config = result["configs"][name]
                if "error" in config:
                    continue
                sizes = [("1x", survey)] + ([("4x", big)] if name == last and "error_4x" not in config else [])
                for size, source in sizes:
                    try:
                        # One output folder per config and size: each run replaces the last (untimed).
                        config[f"runs_{size}"].append(timed_run(
                            clients[name], source, scratch / f"run-{name}-{size}", spec["workers"],
                            spec["threads"], f"{name} {size} {tag}", batch_size=spec["batch"]))
                    except Exception as error:  # keep the other configs' (and this config's 1x) results
                        config["error" if size == "1x" else "error_4x"] = (
                            f"{size}, round {index}: {type(error).__name__}: {error}")
                        log(f"  config {name} {size} failed: {error}")
                        break
            if bare is None:
                done = next((c["runs_1x"][0]["out"] for c in result["configs"].values() if c["runs_1x"]), None)
                if done is None:
                    break
                # Its stamps are read into memory now, before the next round replaces the folder.
                bare = BareForward(RunLayout(done).store, RunLayout(done).candidates, setups,
                                   max_images=256 if quick else 512)
            bare.one_round()
            for name, spec in configs.items():
                config = result["configs"][name]
                if "error" not in config:
                    config["worker_forward_rounds"].append(
                        in_workers_forward(clients[name], spec["batch"], 256 if quick else 512))
            torch.set_num_threads(total_threads)
            log(f"  round {index} ({tag}): bare forward " + ", ".join(
                f"{label}: {len(bare.inputs) / times[-1]:.1f} img/s" for label, times in bare.seconds.items())
                + "; in workers " + ", ".join(f"{name}: {c['worker_forward_rounds'][-1]['images_per_s']:.1f} img/s"
                                               for name, c in result["configs"].items() if c["worker_forward_rounds"]))
        if bare is not None:
            result["bare_forward"] = bare.result(cold_rounds=1)
        for config in result["configs"].values():
            rounds = config.pop("worker_forward_rounds")
            if rounds:
                warm = [r["images_per_s"] for r in rounds[1:]]
                config["worker_forward"] = {
                    "images_per_s": spread(warm)["median"], "images_per_s_spread": spread(warm),
                    "images_per_s_all": warm, "images_per_s_cold": rounds[0]["images_per_s"], "rounds": rounds,
                    "other_cores_per_round": [r.get("other_cores") for r in rounds[1:]],
                    "load_before": rounds[min(1, len(rounds) - 1)].get("load_before"),
                    "load_after": rounds[-1].get("load_after")}
        torch.set_num_threads(total_threads)
    log(" command line (run_survey.py, default workers and threads; one cold run)")
    result["cli_default"] = cli_run(survey, scratch / "run-cli")
    return result


def measure_cuda(scratch: Path, survey: dict) -> dict:
    """GPU end to end and bare forward (one worker, bf16 autocast). Untested on the CPU machine."""
    out: dict[str, Any] = {}
    cluster, client = _cluster(1)
    with cluster, client:
        client.wait_for_workers(1)
        runs = [timed_run(client, survey, scratch / f"run-cuda-{i}", 1, 1, f"cuda {'cold' if i == 0 else i}",
                          device="cuda", batch_size=1024) for i in range(4)]
    out["runs"] = runs
    warm = [run["objects_per_s_execute"] for run in runs[1:]]
    out["execute_objects_per_s_spread"] = spread(warm)
    last = Path(runs[-1]["out"])
    bare = BareForward(RunLayout(last).store, RunLayout(last).candidates,
                       {"cuda, batch 1024": {"threads": 1, "batch": 1024}},
                       max_images=4096, device="cuda")
    for _ in range(4):
        bare.one_round()
    out["bare_forward"] = bare.result(cold_rounds=1)
    return out


def _warm(runs: list[dict], cold_rounds: int) -> list[dict]:
    return runs[cold_rounds:] or runs


def median_run(runs: list[dict]) -> dict:
    """The run whose execute time is the median (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda run: run["execute_s"])
    return ordered[(len(ordered) - 1) // 2]


def summarise(result: dict) -> dict:
    """The headline numbers per config, all from the warm rounds: median rates with their
    spread, and ratios computed per round (a run against the bare forward timed in the same
    round) and then summarised; the cold round apart; 4x/1x time and peak memory per worker.

    The bare-forward reference of a config is the better (by median) of two ways to spend
    the same cores on the forward alone: one process with all threads, or the forward in
    all of the config's workers at once; its rate in round i divides the run's in round i.
    """
    summary: dict[str, Any] = {}
    cold_rounds = result.get("cold_rounds", 1)
    bare = result.get("bare_forward", {}).get("setups", {})
    last = next((name for name, config in result["configs"].items() if "runs_4x" in config), None)
    last_rates = None
    if last and "error" not in result["configs"][last]:
        last_rates = [run["objects_per_s_execute"] for run in _warm(result["configs"][last]["runs_1x"], cold_rounds)]
    for name, config in result["configs"].items():
        if "error" in config:
            continue
        warm = _warm(config["runs_1x"], cold_rounds)
        cold = config["runs_1x"][0]
        execute_rates = [run["objects_per_s_execute"] for run in warm]
        prepare_execute_rates = [run["objects_per_s_prepare_execute"] for run in warm]
        total = config["workers"] * config["threads"]
        one_process = bare.get(_bare_key(total, config["batch"]), {})
        in_workers = config.get("worker_forward", {})
        candidates = {"one process, all threads": one_process.get("images_per_s_all"),
                      "in all its workers at once": in_workers.get("images_per_s_all")}
        candidates = {label: values for label, values in candidates.items() if values}
        reference_name = max(candidates, key=lambda label: spread(candidates[label])["median"], default=None)
        reference = candidates.get(reference_name)
        typical = median_run(warm)
        entry = {
            "label": config["label"],
            "warm_rounds": len(warm),
            "execute_objects_per_s_cold": cold["objects_per_s_execute"],
            "execute_objects_per_s_median_warm": spread(execute_rates)["median"],
            "execute_objects_per_s_spread": spread(execute_rates),
            "prepare_execute_objects_per_s_median_warm": spread(prepare_execute_rates)["median"],
            "prepare_execute_objects_per_s_spread": spread(prepare_execute_rates),
            "bare_forward_same_settings": one_process.get("images_per_s"),
            "bare_forward_same_settings_spread": one_process.get("images_per_s_spread"),
            "bare_forward_in_all_workers_at_once": in_workers.get("images_per_s"),
            "bare_forward_in_all_workers_at_once_spread": in_workers.get("images_per_s_spread"),
            "bare_forward_per_worker_threads": bare.get(_bare_key(config["threads"], config["batch"]),
                                                        {}).get("images_per_s"),
            "bare_forward_reference": reference_name,
            "bare_forward_best_same_cores": spread(reference)["median"] if reference else None,
            "median_run": typical["label"],
            "other_cores_per_round": [run.get("other_cores") for run in warm],
            "load_before": warm[0].get("load_before"), "load_after": warm[-1].get("load_after"),
        }
        if reference:
            ratio = paired_ratios(execute_rates, reference)
            entry["ratio_execute_vs_bare"] = ratio["median"]
            entry["ratio_execute_vs_bare_spread"] = ratio
            ratio = paired_ratios(prepare_execute_rates, reference)
            entry["ratio_prepare_execute_vs_bare"] = ratio["median"]
            entry["ratio_prepare_execute_vs_bare_spread"] = ratio
            entry["overhead_breakdown_s"] = _breakdown(typical, config["workers"], spread(reference)["median"],
                                                       result["bare_forward"]["preprocess_images_per_s_one_thread"])
        else:
            entry["ratio_execute_vs_bare"] = None
        if last_rates and name != last:
            ratio = paired_ratios(execute_rates, last_rates)
            entry[f"execute_ratio_vs_{last}"] = ratio["median"]
            entry[f"execute_ratio_vs_{last}_spread"] = ratio
        one = bare.get(_bare_key(config["threads"], config["batch"]), {})
        if config["workers"] > 1 and one.get("images_per_s_all"):
            workers_x_one = [config["workers"] * rate for rate in one["images_per_s_all"]]
            ratio = paired_ratios(execute_rates, workers_x_one)
            entry["bare_forward_workers_x_single_process"] = spread(workers_x_one)["median"]
            entry["ratio_execute_vs_workers_x_bare"] = ratio["median"]
            entry["ratio_execute_vs_workers_x_bare_spread"] = ratio
        if config.get("runs_4x") and "error_4x" not in config:
            entry["scaling"] = _scaling(warm, _warm(config["runs_4x"], cold_rounds), reference)
        summary[name] = entry
    cli = result.get("cli_default", {})
    if "wall_s" in cli:
        reference = max((entry["bare_forward_best_same_cores"] for entry in summary.values()
                         if entry.get("bare_forward_best_same_cores")), default=None)
        summary["cli"] = {"wall_s": cli["wall_s"], "objects_per_s_wall": cli["objects_per_s_wall"],
                          "execute_s_from_summary": cli["execute_s_from_summary"], "cold": True, "n": 1,
                          "ratio_wall_vs_bare": cli["objects_per_s_wall"] / reference if reference else None}
    return summary


def _scaling(warm_1x: list[dict], warm_4x: list[dict], reference: list[float] | None) -> dict:
    """4x against 1x, round by round (the 4x run of round i against the 1x run of round i)."""
    paired = min(len(warm_1x), len(warm_4x))
    time_ratio = paired_ratios([run["execute_s"] for run in warm_4x[:paired]],
                               [run["execute_s"] for run in warm_1x[:paired]])
    rates_4x = [run["objects_per_s_execute"] for run in warm_4x]
    scaling = {
        "objects_1x": warm_1x[0]["scored"], "objects_4x": warm_4x[0]["scored"],
        "execute_s_1x": spread([run["execute_s"] for run in warm_1x])["median"],
        "execute_s_1x_spread": spread([run["execute_s"] for run in warm_1x]),
        "execute_s_4x": spread([run["execute_s"] for run in warm_4x])["median"],
        "execute_s_4x_spread": spread([run["execute_s"] for run in warm_4x]),
        "time_ratio_4x_over_1x": time_ratio["median"], "time_ratio_4x_over_1x_spread": time_ratio,
        "execute_objects_per_s_4x": spread(rates_4x)["median"], "execute_objects_per_s_4x_spread": spread(rates_4x),
        "ratio_execute_4x_vs_bare": None,
        "worker_rss_before_run_mib": round(max(max(v.get("VmRSS", 0) for v in run["memory"]["before"].values())
                                               for run in warm_4x) / 2**20, 1),
    }
    if reference:
        ratio = paired_ratios(rates_4x[:len(reference)], reference[:len(rates_4x)])
        scaling["ratio_execute_4x_vs_bare"] = ratio["median"]
        scaling["ratio_execute_4x_vs_bare_spread"] = ratio
    # Peak memory per worker: the median over the warm runs of each run's largest worker
    # peak, and the largest of all of them.
    for size, runs in (("1x", warm_1x), ("4x", warm_4x)):
        for label, key in (("hwm", "hwm"), ("anon", "RssAnon"), ("rss_sampled", "VmRSS")):
            values = [_peak(run, key) for run in runs]
            scaling[f"peak_worker_{label}_mib_{size}"] = spread(values)["median"]
            scaling[f"peak_worker_{label}_mib_{size}_max"] = spread(values)["max"]
    return scaling


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
