"""Computing a run's task graph and timing the phases of a run (``summary.json``'s ``phases_s``)."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Callable

from distributed import Client, as_completed, performance_report, progress


class Phases:
    """Seconds spent in the named phases of a run (``summary.json``'s ``phases_s``).

    ``with phases("merge"): ...`` adds the block's wall time to ``merge``. The phases of a
    run: ``create_store`` (not when resuming), ``register_plugin`` (the models load on the
    workers), ``compute`` (the cut and score tasks), ``performance_report`` (writing Dask's
    report) and ``merge`` (the catalogue products); what they leave of ``seconds`` went to
    the fingerprint, the provenance and the summary.
    """

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def rounded(self, digits: int = 3) -> dict[str, float]:
        return {name: round(value, digits) for name, value in self.seconds.items()}


def compute(client: Client, tasks: list, report: Path, phases: Phases, progress: bool,
            log: Callable[[str], None]) -> None:
    """Run ``tasks`` under Dask's performance report (written to ``report``), timing both."""
    report_context = performance_report(filename=str(report))
    with report_context:
        with phases("compute"):
            futures = client.compute(tasks)
            if progress and futures:
                _show_progress(futures, log)
            client.gather(futures)
        writing = time.perf_counter()
    phases.add("performance_report", time.perf_counter() - writing)


def _show_progress(futures: list, log: Callable[[str], None]) -> None:
    """A live bar in a terminal; in batch logs (no TTY), a line at every tenth of the shards."""
    if sys.stdout.isatty():
        progress(futures)
        return
    started, total, next_report = time.perf_counter(), len(futures), 0.1
    for done, _ in enumerate(as_completed(futures), start=1):
        if done / total >= next_report or done == total:
            log(f"{done}/{total} shards scored ({time.perf_counter() - started:.0f} s)")
            next_report = done / total + 0.1
