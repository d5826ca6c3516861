"""``--dry-run``: what a run would do, and about how long it would take here, without doing it.

The plan is the run's own (:func:`pipeline.run.prepare_run`: the same checks, the same
assignment of objects to tiles, the same shards), so the numbers are those of the real run.
Nothing is written and no Dask worker starts. The time estimate times the model on
synthetic stamps in this process, with the threads one worker would get, and scales that by
the number of workers; cutting (tens of thousands of objects per second per core in
``make bench``) and the final merge are small beside it on CPUs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pipeline.config import Settings, usable_cpus

#: Stamps timed per model for the estimate (a few batches: about a second on a laptop CPU).
TIMED_STAMPS = 96
#: End-to-end runs reached ~0.9 of the bare forward rate in make bench (benchmarks/RESULTS.md);
#: the estimate divides by this.
PIPELINE_EFFICIENCY = 0.9
#: Seconds to start a local cluster and load the model in every worker, roughly.
STARTUP_SECONDS = 15.0


@dataclass
class DryRunReport:
    """The plan of a run and its time estimate."""

    catalogue_objects: int
    to_cut: int
    objects_per_tile: dict[str, int]
    not_cut: dict[str, int]
    shards: int
    shard_size: int
    bands: list[str]
    models: list[str]
    tiles: int
    unreadable_tiles: list[str]
    workers: int
    threads_per_worker: int
    device: str
    images_per_second: float | None = None
    estimated_seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def plan_run(settings: Settings, log: Callable[[str], None] = print, measure: bool = True) -> DryRunReport:
    """Check the inputs and plan the run exactly as a run would; time the model unless ``measure`` is false."""
    from pipeline.run import prepare_run

    prepared = prepare_run(settings, log)
    plan = prepared.plan
    per_tile = plan.objects.groupby("tile").size().sort_index()
    not_cut = plan.failures["reason"].value_counts().sort_index()
    local = settings.scheduler is None and settings.cluster == "local"
    workers, threads = settings.resolved_workers(), settings.resolved_threads()
    device = _device(settings)
    report = DryRunReport(
        catalogue_objects=len(prepared.catalog), to_cut=len(plan.objects),
        objects_per_tile={str(tile): int(count) for tile, count in per_tile.items()},
        not_cut={str(reason): int(count) for reason, count in not_cut.items()},
        shards=len(plan.shards), shard_size=settings.shard_size, bands=list(prepared.bands),
        models=[name for name, _, _ in prepared.ensemble], tiles=len(prepared.tiles),
        unreadable_tiles=sorted(tile.name for tile in prepared.tiles if tile.error is not None),
        workers=workers, threads_per_worker=threads, device=device,
    )
    if not measure:
        return report
    if not local:
        report.notes.append(f"the estimate assumes {workers} local worker(s) on this machine; the run uses "
                            f"{'the scheduler ' + settings.scheduler if settings.scheduler else '--cluster ' + settings.cluster}")
    rate = measure_images_per_second(prepared.ensemble, settings, device, threads)
    if device == "cpu":
        # Workers share the cores: beyond the usable CPUs more workers do not add speed.
        parallel = min(workers, max(1, usable_cpus() // threads))
        total_rate = rate * parallel
    else:
        total_rate = rate * max(1, workers if settings.cluster == "cuda" else 1)
    report.images_per_second = round(total_rate, 1)
    report.estimated_seconds = round(STARTUP_SECONDS + len(plan.objects) / (total_rate * PIPELINE_EFFICIENCY), 1)
    if settings.tta:
        report.notes.append("--tta: 8 forward passes per stamp (included)")
    return report


def _device(settings: Settings) -> str:
    import torch

    if settings.device == "cuda" or (settings.device == "auto" and settings.cluster == "cuda"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if settings.device == "auto" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def measure_images_per_second(ensemble, settings: Settings, device: str, threads: int,
                              stamps: int = TIMED_STAMPS) -> float:
    """Stamps per second one worker scores (normalisation and forward pass of every model)."""
    import torch

    from lensnet.checkpoint import load_model
    from pipeline.inference import DEFAULT_BATCH, score_stamps

    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    try:
        seconds = 0.0
        for _, path, config in ensemble:
            loaded = load_model(path, device=device)
            batch = settings.batch_size or DEFAULT_BATCH.get(device, 32)
            rng = np.random.default_rng(0)
            raw = rng.normal(100.0, 10.0, size=(stamps, len(config.bands), config.stamp_size_px,
                                                config.stamp_size_px)).astype(np.float32)
            score_stamps(loaded, raw[:batch], batch, tta=settings.tta)  # warm-up
            started = time.perf_counter()
            score_stamps(loaded, raw, batch, tta=settings.tta)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds += time.perf_counter() - started
        return stamps / seconds
    finally:
        torch.set_num_threads(previous)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_report(report: DryRunReport) -> str:
    """The plan as lines for a terminal."""
    lines = [
        f"dry run: nothing was written and no worker was started",
        f"catalogue objects: {report.catalogue_objects}; to cut and score: {report.to_cut}",
        "not cut: " + (", ".join(f"{reason} {count}" for reason, count in report.not_cut.items()) or "none"),
        f"tiles: {report.tiles} ({len(report.unreadable_tiles)} unreadable"
        + (f": {', '.join(report.unreadable_tiles[:5])}" if report.unreadable_tiles else "") + f"); "
        f"bands: {','.join(report.bands)}; model(s): {', '.join(report.models)}",
        f"shards: {report.shards} of up to {report.shard_size} objects",
        "objects per tile:",
    ]
    width = max((len(name) for name in report.objects_per_tile), default=4)
    lines += [f"  {name:<{width}}  {count}" for name, count in report.objects_per_tile.items()]
    if report.estimated_seconds is not None:
        lines.append(f"estimated time on this machine: about {_duration(report.estimated_seconds)} "
                     f"({report.images_per_second:g} stamps/s measured on {report.device} with "
                     f"{report.workers} worker(s) x {report.threads_per_worker} thread(s))")
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)
