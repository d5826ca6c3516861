"""Making a Dask client: a local CPU cluster, a GPU node, SLURM, or an existing scheduler.

Kept apart from running the survey: tests and notebooks pass their own client to
``pipeline.run.run_with_client``.

GPU nodes. A node with GPUs (``--cluster cuda``, or ``--cluster local`` when GPUs are
visible and ``--device`` is not ``cpu``) gets two kinds of worker processes: one GPU
worker per GPU, which sees only its own GPU (``CUDA_VISIBLE_DEVICES``) and declares the
Dask resource ``GPU=1``, and single-threaded CPU workers on the remaining cores, which see
no GPU and declare ``CPU=1``. :func:`placement` reads the resources the workers declare
and says where each stage goes: score tasks ask for a share of a ``GPU``, cut tasks for a
``CPU`` slot. The same resources steer SLURM GPU jobs (``deploy/jobqueue-gpu.yaml``:
``--resources GPU=1,CPU=6`` on a job's one worker) and any cluster given with
``--scheduler`` whose workers declare them. A cluster without ``GPU`` resources gets no
annotations at all: CPU-only runs are scheduled as they always were.

SLURM (``--cluster slurm``) starts its workers as batch jobs through dask-jobqueue. What
each job asks for (partition, cores, memory, walltime, GPUs, the worker's Python) comes
from Dask's configuration under ``jobqueue.slurm``, which Dask reads at start-up from
``~/.config/dask/*.yaml``, ``/etc/dask/`` and the file or directory named by the
``DASK_CONFIG`` environment variable; ``deploy/jobqueue.yaml`` is a template. Two
settings of this project live in the same configuration:

``lensfinder.slurm.worker-timeout``
    how long to wait for the first worker job to start and connect (default 30 minutes;
    seconds or a string such as ``"10 minutes"``); also settable as the environment
    variable ``DASK_LENSFINDER__SLURM__WORKER_TIMEOUT``.
``lensfinder.slurm.poll-interval``
    how often to look at the scheduler and at ``squeue`` while waiting (default 5 s).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import dask
from dask.utils import parse_timedelta
from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster

from pipeline.config import Settings, SettingsError, usable_cpus

logger = logging.getLogger(__name__)

# Dask configuration keys of this project (see the module docstring).
WORKER_TIMEOUT_KEY = "lensfinder.slurm.worker-timeout"
POLL_INTERVAL_KEY = "lensfinder.slurm.poll-interval"
DEFAULT_WORKER_TIMEOUT = "30 minutes"
DEFAULT_POLL_INTERVAL = "5 s"

#: Dask worker resources (``--resources`` of ``dask worker``; ``resources=`` of a Worker).
#: A GPU worker declares ``GPU=1`` per GPU it owns; a worker that may run cut tasks
#: declares one ``CPU`` slot per cut task it may run at once.
GPU_RESOURCE = "GPU"
CPU_RESOURCE = "CPU"
#: Score tasks that share one GPU at a time: while one runs its forward passes, the other
#: reads and stages its next block, so the GPU does not wait between tasks.
SCORE_TASKS_PER_GPU = 2
#: Cores kept free for each GPU worker on a GPU node: the thread that feeds the GPU, its
#: reader threads and its staging thread.
CORES_PER_GPU_WORKER = 3
#: Objects per score task on GPU workers: several shards, so that each task streams
#: enough blocks to keep the GPU busy, and few enough that scoring starts soon after the
#: first shards are cut.
GPU_TASK_OBJECTS = 16384

# squeue states of a job that may still start a worker.
ALIVE_JOB_STATES = frozenset({
    "PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED",
})


class ClusterError(SettingsError):
    """The cluster did not come up; the message says what to check.

    A :class:`SettingsError` so that ``run_survey.py`` reports it as a one-line error:
    almost always the cause is the queue or the jobqueue configuration, not the code.
    """


@contextmanager
def make_client(settings: Settings) -> Iterator[Client]:
    """A client for ``settings``; clusters started here are closed on exit.

    With ``--cluster slurm`` the client is handed out once at least one worker job has
    connected; leaving the context cancels the worker jobs that are still queued or running.
    """
    if settings.scheduler:
        with Client(settings.scheduler) as client:
            yield client
        return
    with _start_cluster(settings) as cluster, Client(cluster) as client:
        if settings.cluster == "slurm":
            wait_for_slurm_worker(client, cluster)
        yield client


def _start_cluster(settings: Settings):
    if settings.cluster == "local":
        gpus = visible_gpus() if settings.device != "cpu" else []
        if gpus:
            return start_gpu_node_cluster(settings, gpus)
        # Inference tasks run one at a time per worker; parallelism comes from the workers
        # and from PyTorch's intra-op threads, so Dask threads per worker stay at 1.
        return LocalCluster(
            n_workers=settings.resolved_workers(),
            threads_per_worker=1,
            processes=True,
            dashboard_address=settings.dashboard_address,
        )
    if settings.cluster == "cuda":
        if settings.device == "cpu":
            raise SettingsError("--cluster cuda scores on GPUs; --device cpu contradicts it (use --cluster local)")
        gpus = visible_gpus()
        if not gpus:
            raise SettingsError(
                "--cluster cuda: this machine shows no CUDA device to PyTorch "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')!s}, "
                "torch.cuda.device_count() == 0); check nvidia-smi and that the installed torch is a CUDA build")
        return start_gpu_node_cluster(settings, gpus)
    if settings.cluster == "slurm":
        return start_slurm_cluster(settings)
    raise SettingsError(f"unknown cluster {settings.cluster!r}")


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` entries for one worker each.

    Within a ``CUDA_VISIBLE_DEVICES`` list (a SLURM allocation, say) its own entries, so a
    worker gets exactly the device SLURM gave; otherwise the indices 0 .. n-1.
    """
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        entries = [entry.strip() for entry in listed.split(",") if entry.strip()]
        return entries[:count]
    return [str(index) for index in range(count)]


@dataclass
class GpuNodeLayout:
    """Worker processes of a GPU node: one GPU worker per GPU, CPU workers on the remaining cores."""

    gpus: list[str]
    cpu_workers: int
    gpu_threads: int = SCORE_TASKS_PER_GPU

    @classmethod
    def for_node(cls, gpus: list[str], cores: int, workers: int | None = None) -> GpuNodeLayout:
        """``workers`` (``--workers``) counts the CPU workers; by default every core not kept for a GPU worker."""
        if workers is None:
            workers = max(1, cores - CORES_PER_GPU_WORKER * len(gpus))
        return cls(list(gpus), workers)

    def worker_specs(self, memory_limit: int | str = "auto", dashboard: bool = False) -> dict[str, dict[str, Any]]:
        """``SpecCluster`` worker specifications (Nanny processes), named ``gpu-<device>`` and ``cpu-<i>``."""
        gpu_memory_limit = memory_limit
        if memory_limit == "auto":
            from distributed.system import MEMORY_LIMIT

            # An equal share each, as LocalCluster gives; a GPU worker holds several shards
            # in flight and pinned staging buffers, so it may use up to four shares.
            memory_limit = int(MEMORY_LIMIT // max(1, len(self.gpus) + self.cpu_workers))
            gpu_memory_limit = int(min(4 * memory_limit, MEMORY_LIMIT // max(1, len(self.gpus))))
        common = {"host": "127.0.0.1", "dashboard": dashboard, "silence_logs": logging.WARNING}
        specs: dict[str, dict[str, Any]] = {}
        for device in self.gpus:
            specs[f"gpu-{device}"] = {"cls": Nanny, "options": {
                **common, "memory_limit": gpu_memory_limit, "nthreads": self.gpu_threads,
                "resources": {GPU_RESOURCE: 1}, "env": {"CUDA_VISIBLE_DEVICES": device}}}
        for index in range(self.cpu_workers):
            # No GPU at all: a CPU worker can never put a model (or a CUDA context) on one.
            specs[f"cpu-{index}"] = {"cls": Nanny, "options": {
                **common, "memory_limit": memory_limit, "nthreads": 1, "resources": {CPU_RESOURCE: 1},
                "env": {"CUDA_VISIBLE_DEVICES": ""}}}
        return specs


def start_gpu_node_cluster(settings: Settings, gpus: list[str]) -> SpecCluster:
    """A local cluster of one GPU worker per GPU in ``gpus`` plus CPU workers for the cut stage."""
    layout = GpuNodeLayout.for_node(gpus, usable_cpus(), settings.workers)
    logger.info("GPU node: %d GPU worker(s) (devices %s) and %d CPU worker(s)", len(layout.gpus),
                ",".join(layout.gpus), layout.cpu_workers)
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": True,
                                               "dashboard_address": settings.dashboard_address}}
    return SpecCluster(workers=layout.worker_specs(), scheduler=scheduler, silence_logs=logging.WARNING,
                       name="lensfinder-gpu-node")


@dataclass(frozen=True)
class Placement:
    """Where each stage's tasks go, as ``dask.annotate`` keyword arguments (empty: anywhere).

    Attributes:
        cut: annotations of cut tasks.
        score: annotations of score tasks.
        gpu_workers: workers that declare a ``GPU`` resource (0: a CPU-only cluster).
        gpus: ``GPU`` resources declared in all.
    """

    cut: dict[str, Any] = field(default_factory=dict)
    score: dict[str, Any] = field(default_factory=dict)
    gpu_workers: int = 0
    gpus: float = 0

    @property
    def on_gpus(self) -> bool:
        return self.gpu_workers > 0

    def score_task_objects(self, total_objects: int) -> int:
        """Objects per score task: one shard's worth on CPUs (0); on GPUs enough for a stream of blocks,
        while leaving every score slot of every GPU a few tasks."""
        if not self.on_gpus:
            return 0
        slots = max(1, math.ceil(self.gpus * SCORE_TASKS_PER_GPU))
        return max(1, min(GPU_TASK_OBJECTS, math.ceil(total_objects / (2 * slots))))


def placement_for(workers: dict[str, dict[str, Any]]) -> Placement:
    """The :class:`Placement` for workers as ``Client.scheduler_info()["workers"]`` describes them.

    No worker with a ``GPU`` resource: no annotations (CPU-only runs as before). With GPU
    workers, score tasks ask for ``1/SCORE_TASKS_PER_GPU`` of a ``GPU``; cut tasks ask for a
    ``CPU`` slot where some worker declares them, else prefer the workers without a GPU
    (loosely, so they still run if those leave), else go anywhere.
    """
    gpu = {address: info for address, info in workers.items()
           if (info.get("resources") or {}).get(GPU_RESOURCE, 0) > 0}
    if not gpu:
        return Placement()
    score = {"resources": {GPU_RESOURCE: 1 / SCORE_TASKS_PER_GPU}}
    if any((info.get("resources") or {}).get(CPU_RESOURCE, 0) > 0 for info in workers.values()):
        cut: dict[str, Any] = {"resources": {CPU_RESOURCE: 1}}
    elif len(gpu) < len(workers):
        cut = {"workers": sorted(set(workers) - set(gpu)), "allow_other_workers": True}
    else:
        cut = {}
    gpus = sum(float(info["resources"][GPU_RESOURCE]) for info in gpu.values())
    return Placement(cut=cut, score=score, gpu_workers=len(gpu), gpus=gpus)


def placement(client: Client) -> Placement:
    """The :class:`Placement` for the workers connected to ``client`` now."""
    try:
        info = client.scheduler_info(n_workers=-1)  # every worker (some versions list 5 by default)
    except TypeError:  # versions without the argument list them all
        info = client.scheduler_info()
    return placement_for(info["workers"])


def start_slurm_cluster(settings: Settings):
    """A dask-jobqueue ``SLURMCluster`` from Dask's configuration, scaled to ``--workers`` jobs.

    The jobs are submitted in the background; :func:`wait_for_slurm_worker` waits for them.
    ``--workers`` counts jobs: a job whose configuration says ``processes: P`` gives P workers.
    """
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise SettingsError("--cluster slurm needs dask-jobqueue: pip install 'lensfinder[slurm]'") from None
    if shutil.which("sbatch") is None:
        raise SettingsError("--cluster slurm needs SLURM's sbatch on this machine's PATH "
                            "(run on a login node, or `module load slurm`)")
    missing = [key for key in ("cores", "memory") if dask.config.get(f"jobqueue.slurm.{key}", None) is None]
    if missing:
        raise SettingsError(
            f"--cluster slurm: Dask's configuration does not set jobqueue.slurm.{' or .'.join(missing)}. "
            "Copy deploy/jobqueue.yaml to ~/.config/dask/lensfinder-jobqueue.yaml and edit it, or point "
            "the DASK_CONFIG environment variable at your copy (searched: "
            f"{', '.join(dask.config.paths)})"
        )
    # Scheduler options from the configuration (e.g. the network interface), with the
    # dashboard address of this run.
    scheduler_options = dict(dask.config.get("jobqueue.slurm.scheduler-options", None) or {})
    scheduler_options["dashboard_address"] = settings.dashboard_address
    _warn_about_torch_threads(settings)
    cluster = SLURMCluster(scheduler_options=scheduler_options)
    cluster.scale(jobs=settings.resolved_workers())
    return cluster


def _warn_about_torch_threads(settings: Settings) -> None:
    """The default PyTorch threads per worker count this machine's cores, not the worker jobs' CPUs."""
    if settings.threads_per_worker is not None:
        return
    job_cpus = dask.config.get("jobqueue.slurm.job-cpu", None) or dask.config.get("jobqueue.slurm.cores")
    per_worker = max(1, int(job_cpus) // int(dask.config.get("jobqueue.slurm.processes", None) or 1))
    if per_worker != settings.resolved_threads():
        logger.warning(
            "--cluster slurm: each worker job has %d CPU(s) per worker, but without --threads-per-worker "
            "PyTorch uses %d thread(s) (this machine's cores / --workers); set threads_per_worker: %d",
            per_worker, settings.resolved_threads(), per_worker,
        )


def wait_for_slurm_worker(client: Client, cluster, timeout: float | str | None = None,
                          poll_interval: float | str | None = None) -> None:
    """Return once a worker has connected; otherwise raise :class:`ClusterError` with hints.

    Fails early when every submitted job has already left the queue without a worker
    connecting (a crash at start-up: wrong Python, unreachable scheduler, ...), and after
    ``timeout`` (default: the ``lensfinder.slurm.worker-timeout`` configuration) when the
    jobs are still pending.
    """
    timeout = parse_timedelta(timeout if timeout is not None
                              else dask.config.get(WORKER_TIMEOUT_KEY, DEFAULT_WORKER_TIMEOUT))
    poll_interval = parse_timedelta(poll_interval if poll_interval is not None
                                    else dask.config.get(POLL_INTERVAL_KEY, DEFAULT_POLL_INTERVAL))
    deadline = time.monotonic() + timeout
    while True:
        if client.scheduler_info().get("workers"):
            return
        job_ids = submitted_job_ids(cluster)
        states = job_states(job_ids)
        if job_ids and states is not None and not any(state in ALIVE_JOB_STATES for state, _ in states.values()):
            raise ClusterError(
                f"the SLURM worker job(s) ended before a worker connected ({describe_jobs(job_ids, states)}); "
                f"see the job's output file ({job_output_hint(cluster, job_ids)})"
            )
        if time.monotonic() >= deadline:
            jobs = f"jobs: {describe_jobs(job_ids, states)}" if job_ids else "no job was submitted; is sbatch working?"
            running = any(state == "RUNNING" for state, _ in (states or {}).values())
            hint = ("a running job whose worker does not connect cannot reach the scheduler: set "
                    "jobqueue.slurm.interface to the cluster network (e.g. ib0)" if running else
                    f"a busy queue needs a longer {WORKER_TIMEOUT_KEY} "
                    "(environment: DASK_LENSFINDER__SLURM__WORKER_TIMEOUT=3600)")
            raise ClusterError(
                f"no SLURM worker started within {timeout:.0f} s ({jobs}); check `squeue -u $USER` and "
                f"the job's output file ({job_output_hint(cluster, job_ids)}); {hint}"
            )
        time.sleep(max(0.05, min(poll_interval, deadline - time.monotonic())))


def submitted_job_ids(cluster) -> list[str]:
    """SLURM ids of the cluster's worker jobs that sbatch has accepted so far."""
    jobs = list(cluster.workers.values()) if hasattr(cluster, "workers") else []
    return [str(job.job_id) for job in jobs if getattr(job, "job_id", None)]


def job_states(job_ids: list[str]) -> dict[str, tuple[str, str]] | None:
    """``{job id: (state, reason)}`` from squeue; None when squeue cannot tell.

    Jobs that ended long enough ago (SLURM's ``MinJobAge``) are missing from the answer.
    """
    if not job_ids or shutil.which("squeue") is None:
        return None
    try:
        answer = subprocess.run(
            ["squeue", "--noheader", "--states=all", f"--jobs={','.join(job_ids)}", "--format=%i %T %R"],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if answer.returncode != 0:
        # squeue refuses the whole query when every id is unknown (purged after the end).
        return {} if "Invalid job id" in answer.stderr else None
    states = {}
    for line in answer.stdout.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) >= 2:
            states[parts[0]] = (parts[1], parts[2] if len(parts) == 3 else "")
    return states


def describe_jobs(job_ids: list[str], states: dict[str, tuple[str, str]] | None) -> str:
    """``"123 PENDING (Priority), 124 ENDED"`` for error messages."""
    described = []
    for job in job_ids:
        if states is None:
            described.append(f"{job} state unknown")
        elif job not in states:
            described.append(f"{job} ENDED")
        else:
            state, reason = states[job]
            if state == "RUNNING":
                described.append(f"{job} RUNNING on {reason}")  # squeue's %R is the node list then
            else:
                described.append(f"{job} {state}" + (f" ({reason.strip('()')})" if reason and reason != "None" else ""))
    return ", ".join(described)


def job_output_hint(cluster, job_ids: list[str]) -> str:
    """Where the worker jobs write their output, as a short phrase for error messages."""
    job = next(iter(cluster.workers.values()), None) if hasattr(cluster, "workers") else None
    log_directory = getattr(job, "log_directory", None) or dask.config.get("jobqueue.slurm.log-directory", None)
    example = job_ids[0] if job_ids else "JOBID"
    if log_directory:
        name = getattr(job, "job_name", None) or "dask-worker"
        return f"{log_directory}/{name}-{example}.err and .out"
    return f"slurm-{example}.out in the directory run_survey.py was started from, unless jobqueue.slurm.log-directory is set"
