"""The deployment files (deploy/) and the SLURM cluster helpers, without a running SLURM.

The jobqueue templates must produce the batch headers they promise, the shell scripts must
parse, and ``pipeline.cluster`` must fail with messages that say what to check. The tests
that submit real jobs are in test_slurm.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dask
import pytest
import yaml
from dask.utils import parse_timedelta

from pipeline import cluster as cluster_module
from pipeline.cluster import (ClusterError, describe_jobs, job_states, start_slurm_cluster,
                              wait_for_slurm_worker)
from pipeline.config import Settings, SettingsError

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SBATCH_SCRIPT = DEPLOY / "slurm" / "run_survey.sbatch"
SHELL_SCRIPTS = [SBATCH_SCRIPT, DEPLOY / "ci" / "start-slurm.sh", DEPLOY / "ci" / "stop-slurm.sh"]


def dask_config_with(path: Path) -> dict:
    """Dask's current configuration with the YAML file at ``path`` merged on top."""
    return dask.config.merge(dask.config.config, yaml.safe_load(path.read_text()))


def job_script_for(config_file: Path, work_dir: Path, monkeypatch) -> str:
    """The batch script that dask-jobqueue would submit for one worker, from ``config_file``."""
    dask_jobqueue = pytest.importorskip("dask_jobqueue")
    monkeypatch.chdir(work_dir)  # dask-jobqueue creates the log directory here
    with dask.config.set(dask_config_with(config_file)):
        with dask_jobqueue.SLURMCluster(scheduler_options={"dashboard_address": ":0"}) as cluster:
            return cluster.job_script()


def sbatch_lines(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


# --- jobqueue templates --------------------------------------------------------------------

def test_cpu_template_makes_one_single_threaded_worker_per_job(tmp_path, monkeypatch):
    script = job_script_for(DEPLOY / "jobqueue.yaml", tmp_path, monkeypatch)
    header = sbatch_lines(script)
    for directive in ("#SBATCH -J lensfinder-worker", "#SBATCH -n 1", "#SBATCH --cpus-per-task=8",
                      "#SBATCH --mem=16G", "#SBATCH -t 04:00:00",
                      "#SBATCH -e lensfinder-worker-logs/lensfinder-worker-%J.err",
                      "#SBATCH -o lensfinder-worker-logs/lensfinder-worker-%J.out"):
        assert directive in header, f"{directive!r} missing from\n{script}"
    assert not any(line.startswith("#SBATCH -p") for line in header), "queue: null must leave the partition out"
    command = script.strip().splitlines()[-1]
    assert "-m distributed.cli.dask_worker" in command
    assert "--nthreads 1" in command and "--nworkers" not in command
    assert "--death-timeout 120" in command
    assert (tmp_path / "lensfinder-worker-logs").is_dir()


def test_gpu_template_books_one_gpu_per_worker_job(tmp_path, monkeypatch):
    script = job_script_for(DEPLOY / "jobqueue-gpu.yaml", tmp_path, monkeypatch)
    header = sbatch_lines(script)
    for directive in ("#SBATCH -J lensfinder-gpu-worker", "#SBATCH -p gpu", "#SBATCH --gres=gpu:1",
                      "#SBATCH -n 1", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G"):
        assert directive in header, f"{directive!r} missing from\n{script}"
    command = script.strip().splitlines()[-1]
    # One worker per job: 2 threads score on the GPU, 6 cut on the CPU slots.
    assert "--nthreads 8" in command and "--nworkers" not in command and "--resources GPU=1,CPU=6" in command


def test_gpu_template_workers_score_on_the_gpu_and_cut_on_their_cpu_slots():
    from pipeline.cluster import CPU_RESOURCE, GPU_RESOURCE, SCORE_TASKS_PER_GPU, placement_for

    slurm = yaml.safe_load((DEPLOY / "jobqueue-gpu.yaml").read_text())["jobqueue"]["slurm"]
    arguments = slurm["worker-extra-args"]
    resources = {key: float(value) for key, value in
                 (pair.split("=") for pair in arguments[arguments.index("--resources") + 1].split(","))}
    assert resources[GPU_RESOURCE] == 1
    # Every thread has a stage: score tasks fill the GPU's share, cut tasks the CPU slots.
    assert slurm["cores"] == SCORE_TASKS_PER_GPU + resources[CPU_RESOURCE] <= slurm["job-cpu"]
    where = placement_for({"tcp://node1:1234": {"resources": resources}})
    assert where.score == {"resources": {GPU_RESOURCE: 1 / SCORE_TASKS_PER_GPU}}
    assert where.cut == {"resources": {CPU_RESOURCE: 1}}


@pytest.mark.parametrize("name", ["jobqueue.yaml", "jobqueue-gpu.yaml"])
def test_templates_set_the_project_keys(name):
    config = yaml.safe_load((DEPLOY / name).read_text())
    timeout = config["lensfinder"]["slurm"]["worker-timeout"]
    assert parse_timedelta(timeout) >= 60
    assert config["jobqueue"]["slurm"]["processes"] == 1
    if name == "jobqueue.yaml":  # CPU jobs: one task at a time, PyTorch threads inside it
        assert config["jobqueue"]["slurm"]["cores"] == 1


# --- shell scripts -------------------------------------------------------------------------

@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda path: path.name)
def test_shell_scripts_parse(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shell_scripts_pass_shellcheck():
    result = subprocess.run(["shellcheck", *map(str, SHELL_SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_sbatch_directives_precede_the_first_command():
    """sbatch stops reading #SBATCH lines at the first command; a late one is silently ignored."""
    lines = SBATCH_SCRIPT.read_text().splitlines()
    assert lines[0].startswith("#!")
    first_command = next(i for i, line in enumerate(lines[1:], 1) if line.strip() and not line.startswith("#"))
    directives = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    assert directives and max(directives) < first_command
    header = [lines[i] for i in directives]
    for directive in ("--requeue", "--signal=B:USR1@", "--time=", "--output=", "--cpus-per-task="):
        assert any(directive in line for line in header), directive


def run_sbatch_script_here(*args: str, **env: str) -> subprocess.CompletedProcess:
    """Run the batch script with bash, as SLURM would on a node, but outside SLURM."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    environment.update(env)
    return subprocess.run(["bash", str(SBATCH_SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env=environment)


def test_sbatch_script_passes_its_arguments_to_run_survey():
    result = run_sbatch_script_here("--help", LENSFINDER_DIR=str(ROOT), LENSFINDER_PYTHON=sys.executable)
    assert result.returncode == 0, result.stderr
    assert "usage: run_survey.py" in result.stdout
    assert f"python: {sys.executable}" in result.stdout
    assert "ssh -N -L 8787:" in result.stdout


def test_sbatch_script_says_where_run_survey_is_missing(tmp_path):
    result = run_sbatch_script_here("--help", LENSFINDER_DIR=str(tmp_path))
    assert result.returncode == 2
    assert "no run_survey.py in" in result.stderr and "LENSFINDER_DIR" in result.stderr


# --- pipeline.cluster without SLURM -------------------------------------------------------

class NoWorkersClient:
    """Stands in for a distributed.Client whose scheduler never sees a worker."""

    def scheduler_info(self):
        return {"workers": {}}


class FakeJob:
    def __init__(self, job_id):
        self.job_id = job_id
        self.log_directory = "logs"
        self.job_name = "lensfinder-worker"


class FakeCluster:
    def __init__(self, *job_ids):
        self.workers = {f"worker-{i}": FakeJob(job_id) for i, job_id in enumerate(job_ids)}


def fake_squeue(tmp_path, monkeypatch, output: str, status: int = 0, stderr: str = "") -> None:
    """Put an `squeue` that prints ``output`` first on the PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "squeue"
    script.write_text(f"#!/bin/sh\nprintf '%s' '{output}'\nprintf '%s' '{stderr}' >&2\nexit {status}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_waiting_gives_up_with_the_jobs_states(tmp_path, monkeypatch):
    fake_squeue(tmp_path, monkeypatch, "17 PENDING (Priority)\n")
    with pytest.raises(ClusterError) as error:
        wait_for_slurm_worker(NoWorkersClient(), FakeCluster("17"), timeout=0.3, poll_interval=0.1)
    message = str(error.value)
    assert "no SLURM worker started within 0 s" in message
    assert "17 PENDING (Priority)" in message
    assert "squeue" in message and "logs/lensfinder-worker-17.err" in message
    assert "DASK_LENSFINDER__SLURM__WORKER_TIMEOUT" in message


def test_a_running_job_without_worker_points_at_the_network(tmp_path, monkeypatch):
    fake_squeue(tmp_path, monkeypatch, "17 RUNNING node01\n")
    with pytest.raises(ClusterError, match="17 RUNNING on node01.*jobqueue.slurm.interface"):
        wait_for_slurm_worker(NoWorkersClient(), FakeCluster("17"), timeout=0.2, poll_interval=0.1)


def test_waiting_stops_early_when_the_jobs_ended(tmp_path, monkeypatch):
    fake_squeue(tmp_path, monkeypatch, "17 FAILED None\n")
    with pytest.raises(ClusterError, match="ended before a worker connected \\(17 FAILED\\)"):
        wait_for_slurm_worker(NoWorkersClient(), FakeCluster("17"), timeout=60, poll_interval=0.1)


def test_waiting_stops_early_when_squeue_forgot_the_jobs(tmp_path, monkeypatch):
    fake_squeue(tmp_path, monkeypatch, "", status=1, stderr="slurm_load_jobs error: Invalid job id specified")
    with pytest.raises(ClusterError, match="17 ENDED"):
        wait_for_slurm_worker(NoWorkersClient(), FakeCluster("17"), timeout=60, poll_interval=0.1)


def test_waiting_returns_once_a_worker_is_there():
    class OneWorkerClient:
        def scheduler_info(self):
            return {"workers": {"tcp://10.0.0.1:1234": {}}}

    wait_for_slurm_worker(OneWorkerClient(), FakeCluster(), timeout=0)


def test_job_states_parse_squeue(tmp_path, monkeypatch):
    fake_squeue(tmp_path, monkeypatch, "17 RUNNING node01\n18 PENDING (ReqNodeNotAvail, Reserved)\n")
    states = job_states(["17", "18", "19"])
    assert states == {"17": ("RUNNING", "node01"), "18": ("PENDING", "(ReqNodeNotAvail, Reserved)")}
    assert describe_jobs(["17", "18", "19"], states) == \
        "17 RUNNING on node01, 18 PENDING (ReqNodeNotAvail, Reserved), 19 ENDED"
    assert describe_jobs(["18"], None) == "18 state unknown"


def test_slurm_cluster_without_jobqueue_settings_says_where_to_put_them(monkeypatch):
    pytest.importorskip("dask_jobqueue")
    monkeypatch.setattr(cluster_module.shutil, "which", lambda name: f"/usr/bin/{name}")
    settings = Settings(out="out", demo=True, cluster="slurm")
    with dask.config.set({"jobqueue.slurm.cores": None, "jobqueue.slurm.memory": None}):
        with pytest.raises(SettingsError) as error:
            start_slurm_cluster(settings)
    message = str(error.value)
    assert "jobqueue.slurm.cores or .memory" in message
    assert "deploy/jobqueue.yaml" in message and "DASK_CONFIG" in message


def test_slurm_cluster_needs_sbatch(monkeypatch):
    pytest.importorskip("dask_jobqueue")
    monkeypatch.setattr(cluster_module.shutil, "which", lambda name: None)
    with pytest.raises(SettingsError, match="needs SLURM's sbatch"):
        start_slurm_cluster(Settings(out="out", demo=True, cluster="slurm"))


def test_default_torch_threads_that_do_not_fit_the_worker_jobs_are_flagged(caplog):
    settings = Settings(out="out", demo=True, cluster="slurm", workers=4)
    with dask.config.set({"jobqueue.slurm.job-cpu": 64, "jobqueue.slurm.cores": 1, "jobqueue.slurm.processes": 1}):
        with caplog.at_level("WARNING", logger="pipeline.cluster"):
            cluster_module._warn_about_torch_threads(settings)
            assert "set threads_per_worker: 64" in caplog.text
            caplog.clear()
            settings.threads_per_worker = 64
            cluster_module._warn_about_torch_threads(settings)
            assert caplog.text == ""
