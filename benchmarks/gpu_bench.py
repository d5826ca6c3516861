#!/usr/bin/env python
"""A GPU node at the speed of its GPU? Bare forward vs score stage vs whole run, in one call.

Builds its own survey on this machine (noise tiles with a TAN WCS and a random catalogue;
nothing is downloaded), starts the cluster a run would start here (``--cluster cuda`` on
a machine with GPUs: one GPU worker per GPU plus CPU workers; a LocalCluster without),
and measures in one process on one machine:

1. **bare forward**: the model's forward passes on inputs already normalised and resident
   on the device, at the pipeline's precision (bf16 autocast on GPUs) and batch sizes;
2. **score stage**: the pipeline's score tasks alone on the run's cutout store, as the run
   places them (GPU workers, streamed: ``prefetch``), and the same tasks with the staging
   done serially (``serial``), to show what the overlap gains;
3. **whole run**: ``pipeline.run`` (cut on the CPU workers + score on the GPU workers +
   merge) on the survey, once per ``--shard-sizes`` entry, with the per-stage seconds
   the score tasks record beside their part files (read, pin, host-to-device, normalise,
   forward, waiting for data) and GPU utilisation sampled by NVML or nvidia-smi;
4. on GPUs, the largest difference between GPU (fp32, bf16) and CPU fp32 logits.

Writes ``gpu_bench.json`` and ``gpu_bench.md`` (a table naming the device) into ``--out``.
Sized to finish within about 8 minutes on one H200 with 16 cores (160,000 objects);
``--quick`` runs the same steps at toy sizes (a CPU smoke run, ~1 minute on 2 cores).

    python benchmarks/gpu_bench.py --out benchmarks/results/gpu
    python benchmarks/gpu_bench.py --quick --out /tmp/gpu-bench        # smoke run, any machine
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

_HERE = Path(__file__).resolve().parent
# Run as a script, the benchmarks folder is sys.path[0]; import its modules as a package instead.
if sys.path and Path(sys.path[0]).resolve() == _HERE:
    sys.path.pop(0)
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import fmt, log, machine_info, markdown_table  # noqa: E402

#: Pixels of each noise tile's side, and objects per tile at most (random positions).
TILE_SIZE_PX = 4096
OBJECTS_PER_TILE = 20_000
#: Tiles sit this far apart in RA (deg): no overlap at 0.2"/px (4096 px = 0.23 deg).
TILE_SPACING_DEG = 0.3
QUICK = {"objects": 240, "tile_size_px": 384, "objects_per_tile": 120, "shard_sizes": [32], "batch_sizes": [32],
         "forward_stamps": 128, "check_stamps": 64}
FULL = {"objects": 160_000, "tile_size_px": TILE_SIZE_PX, "objects_per_tile": OBJECTS_PER_TILE,
        "shard_sizes": [512, 4096], "batch_sizes": [1024, 4096], "forward_stamps": 16_384, "check_stamps": 2048}


# ----------------------------------------------------------------------------- survey

def make_noise_survey(directory: Path, objects: int, bands: list[str], tile_size_px: int, objects_per_tile: int,
                      pixel_scale_arcsec: float, stamp_px: int, seed: int = 0) -> dict[str, Any]:
    """Gaussian-noise tiles (one FITS per tile and band, TAN WCS) and a catalogue of random positions on them."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from pipeline.mock import tan_header

    rng = np.random.default_rng(seed)
    (directory / "tiles").mkdir(parents=True, exist_ok=True)
    n_tiles = max(1, math.ceil(objects / objects_per_tile))
    centre = (tile_size_px + 1) / 2
    margin = stamp_px  # keep stamps off the borders
    frames = []
    for tile in range(n_tiles):
        header = tan_header((150.0 + TILE_SPACING_DEG * tile, 2.0), (centre, centre), pixel_scale_arcsec, 0.0)
        for band_index, band in enumerate(bands):
            image = rng.standard_normal((tile_size_px, tile_size_px), dtype=np.float32)
            image *= 1.0 + 0.2 * band_index
            fits.PrimaryHDU(image, header=header).writeto(directory / "tiles" / f"T{tile:03d}_{band}.fits",
                                                         overwrite=True)
        count = min(objects_per_tile, objects - tile * objects_per_tile)
        x, y = (rng.uniform(margin, tile_size_px - margin, count) for _ in range(2))
        ra, dec = WCS(header).all_pix2world(x, y, 0)
        frames.append(pd.DataFrame({"ra": ra, "dec": dec, "mag_r": rng.uniform(18, 23, count)}))
    catalog = pd.concat(frames, ignore_index=True)
    catalog.insert(0, "id", np.arange(len(catalog), dtype=np.int64))
    catalog.to_parquet(directory / "catalog.parquet", index=False)
    return {"images": str(directory / "tiles" / "{tile}_{band}.fits"), "catalog": str(directory / "catalog.parquet"),
            "tiles": n_tiles, "tile_size_px": tile_size_px, "objects": len(catalog)}


# ----------------------------------------------------------------------------- GPU utilisation

class GpuSampler:
    """GPU utilisation (%) of device 0 every 100 ms, from NVML or else nvidia-smi; nothing without either."""

    def __init__(self):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> GpuSampler:
        if not torch.cuda.is_available():
            return self
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)

            def sample() -> None:
                while not self._stop.is_set():
                    self.samples.append(float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu))
                    time.sleep(0.1)
        except Exception:  # noqa: BLE001 (no NVML bindings, or NVML fails: nvidia-smi's own loop)
            if shutil.which("nvidia-smi") is None:
                return self
            self._process = subprocess.Popen(
                ["nvidia-smi", "--id=0", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

            def sample() -> None:
                for line in self._process.stdout:
                    if line.strip().isdigit():
                        self.samples.append(float(line))
        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def summary(self) -> dict[str, Any] | None:
        if not self.samples:
            return None
        return {"mean_pct": round(float(np.mean(self.samples)), 1), "samples": len(self.samples)}


# ----------------------------------------------------------------------------- measurements

def bare_forward(model: str, device: torch.device, stamps: np.ndarray, batch_sizes: list[int]) -> dict[str, Any]:
    """Images/s of the model's forward passes on normalised inputs already on ``device`` (best of 3)."""
    from lensnet.checkpoint import load_model
    from lensnet.predict import autocast_for, preprocess

    loaded = load_model(model, device=device)
    loaded.module.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    inputs = torch.from_numpy(preprocess(stamps, loaded.config)[0]).to(device).contiguous(
        memory_format=torch.channels_last)
    results: dict[str, Any] = {}
    precisions = ("bf16", "fp32") if device.type == "cuda" else ("fp32",)
    def one_pass(precision: str, batch: int) -> None:
        with torch.inference_mode(), autocast_for(device, precision):
            for start in range(0, len(inputs), batch):
                loaded.module(inputs[start:start + batch])
        if device.type == "cuda":
            torch.cuda.synchronize()

    for precision in precisions:
        for batch in batch_sizes:
            one_pass(precision, batch)  # warm-up: cuDNN's algorithm choice, the allocator
            best = min(_timed(lambda: one_pass(precision, batch)) for _ in range(3))  # noqa: B023 (called at once)
            results[f"{precision}_batch{batch}"] = round(len(inputs) / best, 1)
    best_key = max(results, key=results.get)
    loaded = inputs = None  # free the device memory for the runs
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"images_per_s": results, "best": best_key, "best_images_per_s": results[best_key],
            "stamps": len(stamps), "pipeline_precision": "bf16" if device.type == "cuda" else "fp32"}


def _timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def logits_agreement(model: str, stamps: np.ndarray) -> dict[str, float]:
    """Largest |GPU - CPU fp32| logit over ``stamps``, for the GPU at fp32 and bf16, through the streaming scorer."""
    from lensnet.checkpoint import load_model
    from lensnet.predict import score_stamps
    from pipeline.inference import ShardStamps, stream_scores

    reference = score_stamps(load_model(model), stamps, batch_size=256, precision="fp32")
    gpu = load_model(model, device="cuda")
    gpu.module.to(memory_format=torch.channels_last)
    name = gpu.config.name or gpu.path.name
    shards = [stamps[start:start + 512] for start in range(0, len(stamps), 512)]
    agreement = {}
    for precision in ("fp32", "bf16"):
        scored = stream_scores([gpu], lambda index: ShardStamps(shards[index]), len(shards), 1024, precision)
        logits = np.concatenate([item.logits[name] for item in scored])
        agreement[f"{precision}_max_abs_logit_difference"] = float(np.abs(logits - reference).max())
    return agreement


def stage_summary(records: list[dict]) -> dict[str, Any]:
    """Sums of the per-shard timings, and the objects/s each stage alone would allow."""
    from pipeline.inference import TIMING_STAGES

    objects = sum(record.get("objects", 0) for record in records)
    sums = {stage: round(sum(record.get(stage, 0.0) for record in records), 3) for stage in (*TIMING_STAGES, "write_s")}
    return {"objects": objects, "shards": len(records), "seconds": sums,
            "objects_per_s_if_only": {stage: round(objects / seconds, 1) for stage, seconds in sums.items() if seconds > 0},
            "devices": sorted({str(record.get("device")) for record in records}),
            "workers": sorted({str(record.get("worker")) for record in records})}


def task_spans(stream: list[dict]) -> dict[str, Any]:
    """First start to last stop of the cut and score tasks in a task stream."""
    spans: dict[str, Any] = {}
    for prefix in ("cut", "score"):
        records = [record for record in stream if str(record["key"]).startswith(f"{prefix}-")]
        if not records:
            continue
        starts = [part["start"] for record in records for part in record["startstops"] if part["action"] == "compute"]
        stops = [part["stop"] for record in records for part in record["startstops"] if part["action"] == "compute"]
        busy = sum(part["stop"] - part["start"] for record in records for part in record["startstops"]
                   if part["action"] == "compute")
        spans[prefix] = {"tasks": len(records), "span_s": round(max(stops) - min(starts), 3),
                         "busy_s": round(busy, 3), "workers": len({record["worker"] for record in records})}
    return spans


def whole_run(settings, client) -> dict[str, Any]:
    """``prepare_run`` + ``execute`` on an already started cluster, with the task stream and GPU utilisation."""
    from distributed import get_task_stream

    from catalogs.layout import RunLayout
    from pipeline.resume import locked_output
    from pipeline.run import execute, prepare_run
    from pipeline.tasks import read_timings

    started = time.perf_counter()
    prepared = prepare_run(settings, log=lambda _: None)
    prepare_s = time.perf_counter() - started
    with locked_output(settings.out), get_task_stream(client) as stream, GpuSampler() as gpu:
        started = time.perf_counter()
        result = execute(prepared, client, log=lambda _: None)
        execute_s = time.perf_counter() - started
    parts = RunLayout(result.out).parts("score")
    return {"shard_size": settings.shard_size, "objects": result.summary["scored"], "shards": result.summary["shards"],
            "prepare_s": round(prepare_s, 3), "execute_s": round(execute_s, 3),
            "objects_per_s": round(result.summary["scored"] / execute_s, 1), "gpu_utilisation": gpu.summary(),
            "tasks": task_spans(stream.data), "stages": stage_summary(read_timings(parts)), "out": str(result.out)}


def score_stage(run_out: Path, scratch: Path, client, batch_size: int | None, prefetch: int) -> dict[str, Any]:
    """The score tasks alone on a finished run's store and cut parts, placed as a run places them."""
    from distributed import get_task_stream

    from catalogs.layout import STAMPS, RunLayout
    from pipeline.cluster import placement
    from pipeline.run import score_tasks
    from pipeline.tasks import read_timings

    out = scratch / f"score-{'prefetch' if prefetch else 'serial'}-{run_out.name}"
    shutil.rmtree(out, ignore_errors=True)
    scored = RunLayout(out)
    scored.stage_dir("score").mkdir(parents=True)
    import zarr

    store = RunLayout(run_out).store
    cut_parts = RunLayout(run_out).parts("cut")
    stamps = zarr.open_group(str(store), mode="r")[STAMPS]
    total, chunk = stamps.shape[0], stamps.chunks[0]  # one Zarr chunk per shard
    pending = [(index, index * chunk, min(total, (index + 1) * chunk), str(part)) for index, part in enumerate(cut_parts)]
    # As a run builds them (a CPU cluster: one task per shard, the same in both modes).
    tasks = score_tasks(str(store), pending, lambda shard: scored.part("score", shard),
                        placement(client), batch_size, prefetch=prefetch)
    with get_task_stream(client) as stream, GpuSampler() as gpu:
        started = time.perf_counter()
        client.gather(client.compute(tasks))
        seconds = time.perf_counter() - started
    records = read_timings(scored.parts("score"))
    objects = sum(record["objects"] for record in records)
    shutil.rmtree(out, ignore_errors=True)
    return {"mode": "prefetch" if prefetch else "serial", "objects": objects, "seconds": round(seconds, 3),
            "objects_per_s": round(objects / seconds, 1), "gpu_utilisation": gpu.summary(),
            "tasks": task_spans(stream.data), "stages": stage_summary(records)}


@contextmanager
def cluster_for(args, device: torch.device) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The client a run on this machine would get (``--cluster cuda`` with GPUs), and how long it took to start."""
    from distributed import Client

    from pipeline.cluster import make_client, start_gpu_node_cluster
    from pipeline.config import Settings

    kind = "cuda" if device.type == "cuda" else "local"
    settings = Settings(images="x/{tile}_{band}.fits", catalog="x.parquet", out="x", cluster=kind,
                        workers=args.workers, dashboard_address=":0").validate()
    started = time.perf_counter()
    if args.simulate_gpu_node and device.type != "cuda":
        # The GPU-node layout on CPUs: one worker that declares a GPU (and scores on its CPU).
        with start_gpu_node_cluster(settings, ["0"]) as cluster, Client(cluster) as client:
            yield client, {"kind": "simulated-gpu-node", "start_s": round(time.perf_counter() - started, 2)}
        return
    with make_client(settings) as client:
        yield client, {"kind": kind, "start_s": round(time.perf_counter() - started, 2)}


def run_settings(survey: dict, out: Path, model: str, shard_size: int, batch_size: int | None, kind: str):
    from pipeline.config import Settings

    return Settings(images=survey["images"], catalog=survey["catalog"], out=str(out), model=model,
                    shard_size=shard_size, batch_size=batch_size, progress=False, force=True, cluster=kind,
                    dashboard_address=":0").validate()


# ----------------------------------------------------------------------------- report

def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        count = torch.cuda.device_count()
        return f"{count} x {torch.cuda.get_device_name(0)}" if count > 1 else torch.cuda.get_device_name(0)
    from benchmarks.common import cpu_model

    return f"CPU only ({cpu_model()})"


def markdown(report: dict[str, Any]) -> str:
    bare = report["bare_forward"]["best_images_per_s"]
    cluster, survey = report["cluster"], report["survey"]
    setting = (f"{report['machine'].get('usable_cpus')} CPU cores, torch {report['machine'].get('torch')}, "
               f"model `{report['model']}`, {survey['objects']:,} objects on {survey['tiles']} noise tiles of "
               f"{survey['tile_size_px']} px, {report['date_utc']}; cluster {cluster['kind']} (started in "
               f"{cluster['start_s']} s, {cluster.get('gpu_workers', 0)} GPU + {cluster.get('other_workers', 0)} "
               "other workers).")
    lines = [f"# GPU benchmark on {report['device']}", "", setting, "",
             f"Bare forward (inputs resident, {report['bare_forward']['best']}): **{bare:,.0f} images/s**.", ""]
    rows = []
    for run in report["runs"]:
        for label, entry in [("whole run", run["whole_run"]), *[(f"score stage, {s['mode']}", s)
                                                               for s in run["score_stage"]]]:
            stages = entry["stages"]["seconds"]
            utilisation = (entry.get("gpu_utilisation") or {}).get("mean_pct")
            rows.append([label, run["shard_size"], fmt(entry["objects_per_s"], 0),
                         fmt(entry["objects_per_s"] / bare, 3), fmt(utilisation),
                         fmt(stages["read_s"], 2), fmt(stages["pin_s"], 2), fmt(stages["h2d_s"], 2),
                         fmt(stages["normalise_s"], 2), fmt(stages["forward_s"], 2), fmt(stages["wait_s"], 2),
                         fmt(stages["write_s"], 2)])
    lines.append(markdown_table(["measurement", "shard size", "objects/s", "x bare forward", "GPU util %",
                                 "read s", "pin s", "h2d s", "normalise s", "forward s", "wait s", "write s"], rows))
    note = ("Stage seconds are sums over shards (reads run in parallel threads; h2d, normalise and forward "
            "are GPU times from CUDA events on GPUs); `wait` is the time the forward thread waited for data.")
    lines += ["", note, ""]
    if report.get("logits_agreement"):
        lines.append("GPU vs CPU fp32 logits, largest difference: " + ", ".join(
            f"{key.split('_')[0]} {value:.3g}" for key, value in report["logits_agreement"].items()) + ".")
    lines.append(f"Total benchmark time {report['seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", default="benchmarks/results/gpu", help="folder for gpu_bench.json and gpu_bench.md")
    parser.add_argument("--model", default="default")
    parser.add_argument("--objects", type=int, help="survey objects (default 160000; --quick 240)")
    parser.add_argument("--shard-sizes", help="comma-separated shard sizes, one whole run each (default 512,4096)")
    parser.add_argument("--batch-size", type=int, help="stamps per forward pass in the runs (default: the pipeline's)")
    parser.add_argument("--workers", type=int, help="CPU workers (default: the pipeline's for this machine)")
    parser.add_argument("--scratch", help="where to build the survey and the runs (default: OUT/scratch, deleted)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--quick", action="store_true", help="toy sizes: a smoke run on any machine")
    parser.add_argument("--simulate-gpu-node", action="store_true",
                        help="without CUDA, start the GPU-node layout anyway (a GPU-resource worker scoring on its CPU)")
    parser.add_argument("--time-budget", type=float, default=420.0,
                        help="seconds after which optional measurements are skipped (default 420)")
    args = parser.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    objects = args.objects or sizes["objects"]
    shard_sizes = [int(value) for value in args.shard_sizes.split(",")] if args.shard_sizes else sizes["shard_sizes"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(args.scratch) if args.scratch else out / "scratch"
    begun = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    from lensnet.checkpoint import load_config, resolve_checkpoint

    config = load_config(resolve_checkpoint(args.model))
    machine = machine_info()
    report: dict[str, Any] = {"device": device_name(device), "date_utc": machine["date_utc"], "machine": machine,
                              "model": args.model, "quick": args.quick, "runs": []}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(0)
        report["gpus"] = {"count": torch.cuda.device_count(), "name": properties.name,
                          "memory_gib": round(properties.total_memory / 2**30, 1)}
    try:
        log(f"building a noise survey of {objects} objects in {scratch}")
        started = time.perf_counter()
        survey = make_noise_survey(scratch / "survey", objects, list(config.bands), sizes["tile_size_px"],
                                   sizes["objects_per_tile"], config.pixel_scale_arcsec, config.stamp_size_px)
        survey["build_s"] = round(time.perf_counter() - started, 1)
        report["survey"] = survey

        rng = np.random.default_rng(1)
        sample = rng.standard_normal((sizes["forward_stamps"], len(config.bands), config.stamp_size_px,
                                      config.stamp_size_px), dtype=np.float32)
        log("bare forward")
        report["bare_forward"] = bare_forward(args.model, device, sample, sizes["batch_sizes"]
                                              if device.type == "cuda" else [32])
        if device.type == "cuda":
            log("GPU vs CPU logits")
            report["logits_agreement"] = logits_agreement(args.model, sample[:sizes["check_stamps"]])

        with cluster_for(args, device) as (client, cluster):
            workers = client.scheduler_info()["workers"].values()
            cluster["gpu_workers"] = sum(1 for info in workers if (info.get("resources") or {}).get("GPU"))
            cluster["other_workers"] = len(workers) - cluster["gpu_workers"]
            report["cluster"] = cluster
            kind = cluster["kind"] if cluster["kind"] != "simulated-gpu-node" else "local"
            log(f"cluster: {cluster}; warm-up run")
            warm = run_settings(survey, scratch / "warmup", args.model, shard_sizes[0], args.batch_size, kind)
            warm_catalog = scratch / "warmup_catalog.parquet"
            pd.read_parquet(survey["catalog"]).head(max(2 * shard_sizes[0], 64)).to_parquet(warm_catalog, index=False)
            warm.catalog = str(warm_catalog)
            report["warmup_s"] = whole_run(warm, client)["execute_s"]
            for shard_size in shard_sizes:
                if time.perf_counter() - begun > args.time_budget and report["runs"]:
                    log(f"time budget spent: skipping shard size {shard_size}")
                    report.setdefault("skipped", []).append(f"shard size {shard_size}")
                    continue
                log(f"whole run, shard size {shard_size}")
                settings = run_settings(survey, scratch / f"run-{shard_size}", args.model, shard_size,
                                        args.batch_size, kind)
                entry = {"shard_size": shard_size, "whole_run": whole_run(settings, client), "score_stage": []}
                for prefetch in (2, 0):
                    if time.perf_counter() - begun > args.time_budget:
                        report.setdefault("skipped", []).append(f"score stage prefetch={prefetch}, shard {shard_size}")
                        continue
                    log(f"score stage, shard size {shard_size}, prefetch {prefetch}")
                    entry["score_stage"].append(score_stage(Path(settings.out), scratch, client, args.batch_size,
                                                            prefetch))
                report["runs"].append(entry)
    finally:
        report["seconds"] = round(time.perf_counter() - begun, 1)
        (out / "gpu_bench.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    (out / "gpu_bench.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
