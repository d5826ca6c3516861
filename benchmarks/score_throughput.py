#!/usr/bin/env python
"""Scoring throughput of a model: bare forward passes vs end to end from a Zarr cutout store.

Simulates ``--objects`` stamps (lenstronomy, in parallel processes), writes them as a
cutout store exactly like a survey run does, then measures in one run on one machine:

1. bare forward throughput on the chosen device (inputs already normalised and resident
   on the device), for fp32 and, on GPUs, bf16 autocast, over batch sizes;
2. CPU preprocessing throughput (the normalisation named in the model config);
3. end to end: the pipeline's own ``score`` task (read a Zarr chunk, normalise, forward,
   write a part file) on a Dask cluster — dask-cuda (one worker per GPU) with
   ``--cluster cuda``, else a LocalCluster — with GPU utilisation sampled by NVML;
4. on GPUs, agreement of GPU (fp32 and bf16) logits with CPU fp32 logits.

Writes a JSON report (``--out``) and prints a Markdown table.

    python benchmarks/score_throughput.py --objects 4000 --cluster local
    python benchmarks/score_throughput.py --objects 40000 --cluster cuda --threads-per-worker 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from catalogs.io import atomic_write_parquet
from catalogs.layout import STORE_DIR
from lensnet.checkpoint import load_model
from lensnet.data import simulated_stamp_set
from pipeline import store
from lensnet.predict import preprocess, score_stamps
from pipeline.inference import ModelPlugin
from pipeline.tasks import score_shard


def make_store(directory: Path, objects: int, shard_size: int, processes: int | None, bands: list[str]) -> np.ndarray:
    data = simulated_stamp_set("ground-gri", objects, seed=99, lens_fraction=0.1, processes=processes, progress=False)
    frame = pd.DataFrame({"object_id": np.arange(objects), "ra": np.zeros(objects), "dec": np.zeros(objects),
                          "tile": ["simulated"] * objects, "x_px": np.zeros(objects), "y_px": np.zeros(objects)})
    size = data.stamps.shape[-1]
    store.create_store(directory / STORE_DIR, frame, bands, size, shard_size)
    for start in range(0, objects, shard_size):
        chunk = data.stamps[start:start + shard_size]
        store.write_shard(directory / STORE_DIR, start, chunk, np.zeros(len(chunk), np.int32))
        status = pd.DataFrame({"cutout_index": np.arange(start, start + len(chunk)), "flags": 0,
                               "reason": pd.Series([None] * len(chunk), dtype=object),
                               "detail": pd.Series([None] * len(chunk), dtype=object)})
        import pyarrow as pa
        atomic_write_parquet(pa.Table.from_pandas(status, preserve_index=False),
                             directory / "cut" / f"shard-{start // shard_size:06d}.parquet")
    return data.stamps


def time_forward(loaded, inputs: torch.Tensor, batch_size: int, precision: str, repeats: int = 3) -> float:
    """Images/s of forward passes over ``inputs`` (already on the model's device)."""
    device = inputs.device
    numpy_inputs = inputs  # forward_logits copies to the device; keep a device-resident variant here
    with torch.inference_mode():
        from lensnet.predict import autocast_for

        def one_pass():
            for start in range(0, len(numpy_inputs), batch_size):
                with autocast_for(device, precision):
                    loaded.module(numpy_inputs[start:start + batch_size])
            if device.type == "cuda":
                torch.cuda.synchronize()

        one_pass()  # warm-up (cuDNN algorithm choice, allocator)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            one_pass()
            best = min(best, time.perf_counter() - started)
    return len(numpy_inputs) / best


class GpuSampler(threading.Thread):
    """Samples GPU utilisation (%) every 50 ms with NVML while running."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[int] = []
        self.stopped = threading.Event()

    def run(self):
        try:
            import pynvml
        except ImportError:
            return
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        while not self.stopped.is_set():
            self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            time.sleep(0.05)


def end_to_end(directory: Path, model: str, cluster_kind: str, workers: int, threads: int, shard_size: int,
               objects: int, batch_size: int) -> dict:
    from distributed import Client, LocalCluster, wait

    if cluster_kind == "cuda":
        from dask_cuda import LocalCUDACluster

        cluster = LocalCUDACluster(threads_per_worker=threads, dashboard_address=":0")
        device = "cuda"
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True, dashboard_address=":0")
        device = "cpu"
    torch_threads = max(1, (os.cpu_count() or 1) // workers) if device == "cpu" else None
    with cluster, Client(cluster) as client:
        client.register_plugin(ModelPlugin(model, device, torch_threads))
        shards = [(start, min(start + shard_size, objects)) for start in range(0, objects, shard_size)]

        def submit_all(stage: str):
            return [client.submit(score_shard, str(directory / STORE_DIR),
                                  str(directory / "cut" / f"shard-{i:06d}.parquet"),
                                  str(directory / stage / f"shard-{i:06d}.parquet"), start, stop, batch_size,
                                  key=f"score-{stage}-{i:06d}", pure=False)
                    for i, (start, stop) in enumerate(shards)]

        wait(submit_all("warmup")[:len(client.scheduler_info()["workers"])])
        sampler = GpuSampler() if device == "cuda" else None
        if sampler:
            sampler.start()
        started = time.perf_counter()
        wait(submit_all("timed"))
        seconds = time.perf_counter() - started
        if sampler:
            sampler.stopped.set()
            sampler.join()
        return {"objects_per_s": objects / seconds, "seconds": seconds, "workers": len(client.scheduler_info()["workers"]),
                "threads_per_worker": threads, "gpu_utilisation_mean_pct":
                    float(np.mean(sampler.samples)) if sampler and sampler.samples else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--objects", type=int, default=4000)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--cluster", choices=("local", "cuda"), default="local")
    parser.add_argument("--workers", type=int, default=1, help="local cluster workers")
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--processes", type=int, default=None, help="simulation processes")
    parser.add_argument("--out", default="benchmarks/results/score_throughput.json")
    args = parser.parse_args(argv)

    device = torch.device("cuda" if args.cluster == "cuda" else "cpu")
    report: dict = {"machine": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor(),
                    "model": args.model, "objects": args.objects, "shard_size": args.shard_size,
                    "batch_size": args.batch_size}
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        started = time.perf_counter()
        loaded_cpu = load_model(args.model)
        stamps = make_store(directory, args.objects, args.shard_size, args.processes, loaded_cpu.config.bands)
        report["simulation_seconds"] = time.perf_counter() - started

        sample = stamps[: min(len(stamps), 4096)]
        started = time.perf_counter()
        inputs, _ = preprocess(sample, loaded_cpu.config)
        report["preprocess_stamps_per_s_one_thread"] = len(sample) / (time.perf_counter() - started)

        loaded = load_model(args.model, device=device)
        device_inputs = torch.from_numpy(inputs).to(device)
        forward = {}
        for precision in (("fp32", "bf16") if device.type == "cuda" else ("fp32",)):
            for batch in ((256, 1024, 4096) if device.type == "cuda" else (64, 256)):
                forward[f"{precision}_batch{batch}"] = time_forward(loaded, device_inputs, batch, precision)
        report["forward_images_per_s"] = forward
        report["end_to_end"] = end_to_end(directory, args.model, args.cluster, args.workers, args.threads_per_worker,
                                          args.shard_size, args.objects, args.batch_size)
        best_forward = max(forward.values())
        report["end_to_end_over_best_forward"] = report["end_to_end"]["objects_per_s"] / best_forward

        if device.type == "cuda":
            check = sample[:2048]
            reference = score_stamps(loaded_cpu, check, batch_size=256, precision="fp32")
            report["gpu_vs_cpu_max_abs_logit_difference"] = {
                precision: float(np.max(np.abs(score_stamps(loaded, check, 1024, precision) - reference)))
                for precision in ("fp32", "bf16")}

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
