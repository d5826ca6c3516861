"""Resuming a run: a settings fingerprint, per-shard done-markers and atomic writes.

Every shard's outputs are written under a temporary name and renamed into place, so a
file that exists is complete. Rerunning the same command on the same output directory
skips the shards whose part files exist and yields the same catalogue as an
uninterrupted run. A run with different inputs, model or settings refuses to mix its
results into the old directory unless forced.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

PROGRESS_DIR = "_progress"
STATE_FILE = "run-state.json"
#: Entries of an output directory that belong to no run (the demo's generated inputs).
NOT_OUTPUTS = frozenset({"mock_survey"})


class ResumeError(RuntimeError):
    """The output directory holds a run made with other settings."""


def fingerprint(items: dict[str, Any]) -> str:
    """A stable hash of everything that determines a run's outputs."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_identity(path: str | Path) -> dict[str, Any]:
    """Path, size and modification time: cheap and enough to notice a replaced input."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class RunDirectory:
    """The output directory of one run and the done-markers inside it."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def store(self) -> Path:
        return self.root / "cutouts.zarr"

    def part(self, stage: str, shard: int) -> Path:
        """The part file that marks ``shard`` done for ``stage`` (``cut`` or ``score``)."""
        return self.root / PROGRESS_DIR / stage / f"shard-{shard:06d}.parquet"

    def done(self, stage: str, shard: int) -> bool:
        return self.part(stage, shard).is_file()

    def prepare(self, run_fingerprint: str, description: dict[str, Any], force: bool = False) -> bool:
        """Claim the directory for this run; return True when resuming an earlier attempt.

        Raises ResumeError if the directory holds a run with another fingerprint, unless
        ``force``, which deletes that run's outputs first.
        """
        state_path = self.root / STATE_FILE
        if state_path.is_file():
            previous = json.loads(state_path.read_text())
            if previous.get("fingerprint") == run_fingerprint:
                return True
            if not force:
                changed = sorted(
                    key for key in set(previous.get("inputs", {})) | set(description)
                    if previous.get("inputs", {}).get(key) != description.get(key)
                )
                raise ResumeError(
                    f"{self.root} holds a run with other settings (changed: {', '.join(changed) or 'unknown'}); "
                    "use a new --out, or --force to discard the old results"
                )
            self.clear()
        elif self.root.is_dir() and any(p.name not in NOT_OUTPUTS for p in self.root.iterdir()) and not force:
            raise ResumeError(f"{self.root} exists and is not a run directory; use a new --out or --force")
        self.root.mkdir(parents=True, exist_ok=True)
        temporary = state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"fingerprint": run_fingerprint, "inputs": description}, indent=2, default=str))
        temporary.replace(state_path)
        return False

    def clear(self) -> None:
        """Delete every output of an earlier run in this directory (not the mock survey of a demo)."""
        for name in (PROGRESS_DIR, "cutouts.zarr"):
            shutil.rmtree(self.root / name, ignore_errors=True)
        for name in (STATE_FILE, "candidates.parquet", "failures.parquet", "summary.json", "run.yaml", "dask-report.html"):
            (self.root / name).unlink(missing_ok=True)
