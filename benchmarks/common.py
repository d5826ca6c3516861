"""Helpers shared by the benchmark scripts: machine description, load-stamped timings, tables.

Every timing on a shared machine is taken as the best of several repeats and stamped
with the 1-, 5- and 15-minute load averages before and after it, so that a reader can
tell a slow number from a busy machine.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parent.parent


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, rounded; None where the OS has none."""
    if not hasattr(os, "getloadavg"):
        return None
    return [round(value, 2) for value in os.getloadavg()]


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The vector-unit flags that matter for fp32/bf16 throughput (avx2, avx512*, amx*, fma)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")) or "bf16" in f)
    except OSError:
        pass
    return []


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    import numpy
    import torch

    info: dict[str, Any] = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "usable_cpus": usable_cpus(),
        "os_cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "numpy": numpy.__version__,
        "cuda": torch.cuda.is_available(),
        "load_average_at_start": load_average(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    try:
        import psutil

        info["memory_total_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _busy_jiffies() -> tuple[float, float] | None:
    """(busy, steal) seconds of all CPUs since boot from /proc/stat; None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    values = [int(v) for v in fields]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / ticks, steal / ticks


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and its live descendants (Dask workers included)."""
    try:
        import psutil

        me = psutil.Process()
        total = sum(me.cpu_times()[:2])
        for child in me.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.Error:
                pass
    except ImportError:
        return sum(os.times()[:4])
    # Children that have exited and been waited for (a finished run_survey.py and its workers).
    import resource

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return total + children.ru_utime + children.ru_stime


class CpuWatch:
    """Load averages and how many cores *other* processes kept busy during a measurement.

    ``other_cores`` = (busy CPU seconds of the whole machine from /proc/stat - CPU seconds
    of this process tree) / wall seconds: 0 on an idle machine, 1.0 when another job kept
    one core busy throughout. ``steal_cores`` is the hypervisor's steal time, likewise.
    (Workers that exit during the interval make ``other_cores`` read slightly high.)
    """

    def __init__(self):
        self.load_before = load_average()
        self.wall = time.perf_counter()
        self.busy = _busy_jiffies()
        self.own = _own_cpu_seconds()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.wall
        busy, own = _busy_jiffies(), _own_cpu_seconds()
        result: dict[str, Any] = {"load_before": self.load_before, "load_after": load_average()}
        if busy and self.busy and wall > 0:
            result["other_cores"] = round(max(0.0, (busy[0] - self.busy[0]) - (own - self.own)) / wall, 2)
            result["steal_cores"] = round((busy[1] - self.busy[1]) / wall, 2)
        return result


def stamped(function: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """Run ``function``; return its result and {load_before, load_after, wall_s}."""
    watch = CpuWatch()
    started = time.perf_counter()
    result = function()
    return result, {**watch.stop(), "wall_s": round(time.perf_counter() - started, 3)}


def best_time(function: Callable[[], Any], repeats: int, warmup: int = 1,
              synchronize: Callable[[], None] | None = None) -> dict[str, Any]:
    """Best (smallest) seconds of ``repeats`` calls after ``warmup`` untimed ones, load-stamped."""
    for _ in range(warmup):
        function()
    if synchronize:
        synchronize()
    watch = CpuWatch()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        if synchronize:
            synchronize()
        seconds.append(time.perf_counter() - started)
    return {"best_s": min(seconds), "all_s": [round(s, 6) for s in seconds], "repeats": repeats, **watch.stop()}


def round_robin(functions: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1,
                synchronize: Callable[[], None] | None = None) -> dict[str, dict[str, Any]]:
    """Time several variants interleaved (A B C A B C ...), best of ``rounds`` each.

    Interleaving spreads a change in the machine's load over all variants instead of
    penalising whichever happened to run while another job was busy.
    """
    for function in functions.values():
        for _ in range(warmup):
            function()
    if synchronize:
        synchronize()
    watch = CpuWatch()
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            started = time.perf_counter()
            function()
            if synchronize:
                synchronize()
            seconds[name].append(time.perf_counter() - started)
    watched = watch.stop()
    return {name: {"best_s": min(values), "all_s": [round(s, 6) for s in values], "repeats": rounds, **watched}
            for name, values in seconds.items()}


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; numbers right-aligned."""
    def cell(value: Any) -> str:
        return "" if value is None else str(value)

    aligns = ["---:" if rows and isinstance(rows[0][i], (int, float)) else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 1) -> str | None:
    """A number with thousands separators and ``digits`` decimals (None stays None)."""
    if value is None:
        return None
    return f"{value:,.{digits}f}"


def log(message: str) -> None:
    print(f"[{datetime.datetime.now().strftime('%H:%M:%S')} load {load_average()}] {message}", flush=True)


TIMING_KEYS = ("best_s", "all_s", "repeats", "load_before", "load_after", "other_cores", "steal_cores")
