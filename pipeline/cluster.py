"""Making a Dask client: a local CPU cluster, dask-cuda GPUs, SLURM, or an existing scheduler.

Kept apart from running the survey: tests and notebooks pass their own client to
``pipeline.run.run_with_client``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from distributed import Client, LocalCluster

from pipeline.config import Settings, SettingsError


@contextmanager
def make_client(settings: Settings) -> Iterator[Client]:
    """A client for ``settings``; clusters started here are closed on exit."""
    if settings.scheduler:
        with Client(settings.scheduler) as client:
            yield client
        return
    with _start_cluster(settings) as cluster, Client(cluster) as client:
        yield client


def _start_cluster(settings: Settings):
    if settings.cluster == "local":
        # Inference tasks run one at a time per worker; parallelism comes from the workers
        # and from PyTorch's intra-op threads, so Dask threads per worker stay at 1.
        return LocalCluster(
            n_workers=settings.resolved_workers(),
            threads_per_worker=1,
            processes=True,
            dashboard_address=settings.dashboard_address,
        )
    if settings.cluster == "cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise SettingsError("--cluster cuda needs dask-cuda: pip install 'lensfinder[gpu]'") from None
        # One worker per visible GPU; each worker sees its own device as cuda:0.
        return LocalCUDACluster(threads_per_worker=1, dashboard_address=settings.dashboard_address)
    if settings.cluster == "slurm":
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError:
            raise SettingsError("--cluster slurm needs dask-jobqueue: pip install 'lensfinder[slurm]'") from None
        # Queue, cores, memory and walltime come from dask's jobqueue.slurm configuration
        # (see deploy/); only the number of jobs is set here.
        cluster = SLURMCluster(scheduler_options={"dashboard_address": settings.dashboard_address})
        cluster.scale(jobs=settings.resolved_workers())
        return cluster
    raise SettingsError(f"unknown cluster {settings.cluster!r}")
