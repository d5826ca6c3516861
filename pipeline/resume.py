"""Resuming a run: a settings fingerprint, per-shard done-markers and atomic writes.

Every shard's outputs are written under a temporary name and renamed into place, so a
file that exists is complete. Rerunning the same command on the same output directory
skips the shards whose part files exist and yields the same catalogue as an
uninterrupted run. A run with different inputs, model or settings refuses to mix its
results into the old directory unless forced.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from catalogs.layout import LOCK_FILE, NOT_OUTPUTS, PROGRESS_DIR, RUN_DIRECTORIES, RUN_FILES, STATE_FILE, RunLayout

__all__ = ["LOCK_FILE", "NOT_OUTPUTS", "PROGRESS_DIR", "STATE_FILE", "OutputLocked", "ResumeError", "RunDirectory",
           "file_identity", "fingerprint", "locked_output", "make_output_directory"]


class ResumeError(RuntimeError):
    """The output directory holds a run made with other settings, or cannot be used."""


class OutputLocked(ResumeError):
    """Another run holds the output directory's lock."""


# Locks this process holds: resolved directory -> (open lock file, depth), so that nested
# users (the command line around a demo, then the run itself) share one lock.
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()


def make_output_directory(root: str | Path) -> Path:
    """Create ``root`` (and parents) or raise :class:`ResumeError` saying what is in the way."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ResumeError(f"--out {root} is a file, not a directory; give a directory for the run's outputs") \
            from None
    except NotADirectoryError:
        raise ResumeError(f"--out {root}: a part of the path is a file, not a directory; give another --out") \
            from None
    except OSError as error:
        raise ResumeError(f"--out {root} cannot be created ({error.strerror or error}); "
                          "choose a writable place") from None
    if not root.is_dir():
        raise ResumeError(f"--out {root} is not a directory; give a directory for the run's outputs")
    return root


@contextmanager
def locked_output(root: str | Path, log: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold ``root/.lock`` for the duration: a second run on the same directory is refused.

    The lock is ``fcntl.flock`` on the lock file, released by the kernel when the process
    ends however it ends, so a crashed run never leaves a stale lock. The file holds the
    holder's pid, host and start time for the refusal message. Reentrant within a process.
    """
    root = make_output_directory(root)
    key = str(root.resolve())
    with _HELD_GUARD:
        if key in _HELD:
            _HELD[key][1] += 1
            held = True
        else:
            held = False
    if held:
        try:
            yield root
        finally:
            with _HELD_GUARD:
                _HELD[key][1] -= 1
        return
    path = RunLayout(root).lock
    try:
        handle = open(path, "a+")
    except OSError as error:
        raise ResumeError(f"--out {root} is not writable ({error.strerror or error} creating {path}); "
                          "choose a writable directory") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "a process that has not yet said who it is"
        handle.close()
        raise OutputLocked(f"--out {root} is in use by another run ({holder}); wait for it to finish, "
                           "or give another --out") from None
    except OSError as error:
        if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            handle.close()
            raise ResumeError(f"--out {root}: cannot lock {path} ({error.strerror or error})") from None
        if log is not None:
            log(f"warning: the file system of {root} does not support locks; make sure no other run uses it")
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on host {socket.gethostname()}, since "
                 f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}\n")
    handle.flush()
    with _HELD_GUARD:
        _HELD[key] = [handle, 1]
    try:
        yield root
    finally:
        with _HELD_GUARD:
            _HELD[key][1] -= 1
            release = _HELD[key][1] == 0
            if release:
                del _HELD[key]
        if release:
            try:
                handle.truncate(0)
            except OSError:
                pass
            handle.close()  # releases the flock


def fingerprint(items: dict[str, Any]) -> str:
    """A stable hash of everything that determines a run's outputs."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_identity(path: str | Path) -> dict[str, Any]:
    """Path, size and modification time: cheap and enough to notice a replaced input."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class RunDirectory(RunLayout):
    """The output directory of one run (its paths: :class:`catalogs.layout.RunLayout`), claimed and cleared here."""

    def prepare(self, run_fingerprint: str, description: dict[str, Any], force: bool = False) -> bool:
        """Claim the directory for this run; return True when resuming an earlier attempt.

        Raises ResumeError if the directory holds a run with another fingerprint, unless
        ``force``, which deletes that run's outputs first.
        """
        state_path = self.state
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
        for name in RUN_DIRECTORIES:
            shutil.rmtree(self.root / name, ignore_errors=True)
        for name in RUN_FILES:
            (self.root / name).unlink(missing_ok=True)
