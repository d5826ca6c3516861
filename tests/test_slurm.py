"""The pipeline under a real SLURM: the batch script and dask-jobqueue worker jobs.

Needs a running SLURM controller on this machine, such as the single-node one that
``deploy/ci/start-slurm.sh`` starts (CI runs it before the tests); without one every test
here is skipped with the reason. Jobs run on this machine, so the worker jobs can use this
Python (``sys.executable``) and see the test's temporary files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SBATCH_SCRIPT = ROOT / "deploy" / "slurm" / "run_survey.sbatch"
JOBQUEUE_TEMPLATE = ROOT / "deploy" / "jobqueue.yaml"

# Job states after which a job does nothing more (see `man squeue`, JOB STATE CODES).
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
                "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT"}
JOB_TIMEOUT_S = 240


def slurm_unavailable() -> str | None:
    """Why SLURM cannot run jobs here, or None when it can."""
    missing = [command for command in ("sinfo", "sbatch", "squeue", "scontrol", "scancel") if not shutil.which(command)]
    if missing:
        return f"SLURM client commands not found ({', '.join(missing)}); start one with deploy/ci/start-slurm.sh"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "`scontrol ping` did not answer within 20 s"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        answer = (ping.stdout + ping.stderr).strip().splitlines()
        return f"slurmctld is not answering (`scontrol ping`: {answer[0] if answer else 'no answer'})"
    return None


SKIP_REASON = slurm_unavailable()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or "")]


def job_state(job_id: str) -> str:
    """The job's state from `scontrol show job` (no accounting database needed); ``PURGED`` if forgotten."""
    answer = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], capture_output=True, text=True,
                            timeout=30)
    if answer.returncode != 0:
        if "Invalid job id" in answer.stderr:
            return "PURGED"
        raise RuntimeError(f"scontrol show job {job_id}: {answer.stderr.strip()}")
    match = re.search(r"\bJobState=(\S+)", answer.stdout)
    return match.group(1) if match else "UNKNOWN"


def wait_for_job(job_id: str, output: Path, timeout: float = JOB_TIMEOUT_S) -> str:
    """Poll until the job reaches a final state; cancel it and fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job_state(job_id)
        if state in FINAL_STATES or state == "PURGED":
            return state
        time.sleep(1)
    subprocess.run(["scancel", job_id], timeout=30)
    pytest.fail(f"job {job_id} did not finish within {timeout} s (state {state}); its output:\n{read(output)}")


def read(path: Path) -> str:
    return path.read_text() if path.is_file() else f"({path} does not exist)"


def submit_batch_script(work_dir: Path, *run_survey_args: str) -> tuple[str, Path]:
    """Submit deploy/slurm/run_survey.sbatch as a user would, sized for this small machine."""
    output = work_dir / "lensfinder-%j.out"
    environment = dict(os.environ, LENSFINDER_DIR=str(ROOT), LENSFINDER_PYTHON=sys.executable)
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--job-name=lensfinder-test", "--cpus-per-task=2", "--mem=4G",
         "--time=00:30:00", f"--output={output}", f"--chdir={work_dir}",
         str(SBATCH_SCRIPT), *run_survey_args],
        capture_output=True, text=True, env=environment, cwd=work_dir, timeout=60,
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().split(";")[0]
    return job_id, Path(str(output).replace("%j", job_id))


def check_catalogue(out: Path) -> pd.DataFrame:
    """candidates.parquet holds every scored object once, ranked by descending score."""
    candidates = pd.read_parquet(out / "candidates.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert len(candidates) == summary["scored"] > 0
    assert candidates["object_id"].is_unique
    assert (np.diff(candidates["score"].to_numpy()) <= 0).all()
    assert list(candidates["rank"]) == list(range(1, len(candidates) + 1))
    return candidates


@pytest.mark.slow
def test_batch_script_runs_the_demo_and_a_resubmission_resumes(tmp_path):
    out = tmp_path / "demo"
    args = ("--demo", "--demo-objects", "200", "--workers", "1", "--threads-per-worker", "1",
            "--out", str(out), "--no-progress", "--dashboard-address", ":0")

    job_id, output = submit_batch_script(tmp_path, *args)
    state = wait_for_job(job_id, output)
    assert state == "COMPLETED", f"job {job_id} ended {state}; its output:\n{read(output)}"
    log = read(output)
    assert f"job {job_id}" in log and "run_survey.py exited with status 0" in log
    assert "demo AUROC" in log
    first = check_catalogue(out)
    assert len(first) == 200

    # The same submission again: every shard is already scored, the catalogue is the same.
    job_id, output = submit_batch_script(tmp_path, *args)
    state = wait_for_job(job_id, output)
    assert state == "COMPLETED", f"job {job_id} ended {state}; its output:\n{read(output)}"
    assert "resuming:" in read(output)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shards_resumed"] == summary["shards"]
    pd.testing.assert_frame_equal(check_catalogue(out), first)


def jobqueue_config(work_dir: Path, **overrides) -> Path:
    """deploy/jobqueue.yaml with the sizes of this machine and this Python, as a DASK_CONFIG file."""
    config = yaml.safe_load(JOBQUEUE_TEMPLATE.read_text())
    slurm = config["jobqueue"]["slurm"]
    slurm.update({
        "name": "lensfinder-test-worker", "job-cpu": 1, "memory": "2GiB", "walltime": "00:10:00",
        "python": sys.executable, "log-directory": str(work_dir / "worker-logs"),
        "local-directory": str(work_dir / "worker-scratch"), "death-timeout": 30,
    })
    slurm.update(overrides)
    config["lensfinder"]["slurm"].update({"worker-timeout": "120 s", "poll-interval": "1 s"})
    path = work_dir / "jobqueue.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_survey_on_slurm(work_dir: Path, survey, model, config: Path) -> subprocess.CompletedProcess:
    environment = dict(os.environ, DASK_CONFIG=str(config),
                       PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run(
        [sys.executable, str(ROOT / "run_survey.py"), "--cluster", "slurm", "--workers", "1",
         "--threads-per-worker", "1", "--images", survey.image_pattern, "--catalog", str(survey.catalog_path),
         "--bands", ",".join(survey.bands), "--model", str(model), "--out", str(work_dir / "out"),
         "--shard-size", "16", "--batch-size", "8", "--no-progress", "--dashboard-address", ":0"],
        capture_output=True, text=True, env=environment, cwd=work_dir, timeout=JOB_TIMEOUT_S,
    )


def our_jobs(name: str) -> list[str]:
    answer = subprocess.run(["squeue", "--noheader", f"--name={name}", "--format=%i %T"], capture_output=True,
                            text=True, timeout=30)
    return answer.stdout.splitlines() if answer.returncode == 0 else [answer.stderr.strip()]


def wait_until_no_jobs(name: str, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while (jobs := our_jobs(name)) and time.monotonic() < deadline:
        time.sleep(1)
    return jobs


def test_dask_jobqueue_workers_score_a_tiny_survey(tmp_path, tiny_survey, tiny_model):
    pytest.importorskip("dask_jobqueue")
    result = run_survey_on_slurm(tmp_path, tiny_survey, tiny_model, jobqueue_config(tmp_path))
    logs = "\n".join(f"--- {path.name}\n{read(path)}" for path in sorted((tmp_path / "worker-logs").glob("*")))
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}\nworker jobs:\n{logs}"

    candidates = check_catalogue(tmp_path / "out")
    failures = pd.read_parquet(tmp_path / "out" / "failures.parquet")
    assert len(candidates) + len(failures) == len(pd.read_parquet(tiny_survey.catalog_path))
    # The worker was a SLURM job: it wrote its log where the configuration said.
    assert list((tmp_path / "worker-logs").glob("lensfinder-test-worker-*.err")), logs
    # Closing the cluster cancelled the worker job.
    assert wait_until_no_jobs("lensfinder-test-worker") == []


def test_worker_job_that_cannot_start_is_a_clear_error(tmp_path, tiny_survey, tiny_model):
    pytest.importorskip("dask_jobqueue")
    config = jobqueue_config(tmp_path, python=str(tmp_path / "no-such-python"))
    started = time.monotonic()
    result = run_survey_on_slurm(tmp_path, tiny_survey, tiny_model, config)
    assert result.returncode == 2, result.stderr
    assert "ended before a worker connected" in result.stderr
    assert "worker-logs/lensfinder-test-worker-" in result.stderr
    # Found out from squeue, well before the configured 120 s timeout.
    assert time.monotonic() - started < 100
    assert wait_until_no_jobs("lensfinder-test-worker") == []
