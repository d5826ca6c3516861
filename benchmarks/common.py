"""Helpers shared by the benchmark scripts: machine description, load-stamped timings, tables.

How every timing is taken (the team's rule for numbers that get quoted):

* variants that are compared run in interleaved rounds (A B A B ...), so that a change in
  the machine's load hits all of them alike, and a ratio is computed per round
  (A_i / B_i) before it is summarised;
* the first round is the cold one (imports, page cache, allocator and oneDNN primitive
  caches, worker start) and is reported on its own, never mixed into the statistics;
* the warm rounds are summarised by their median with the spread (min, max and the
  quartiles) and their number n: :func:`spread`. Verdicts use medians, never the best;
* every timing carries the 1-, 5- and 15-minute load averages before and after it and
  ``other_cores``, the cores other processes kept busy meanwhile (:class:`CpuWatch`),
  for the whole measurement and per round, so that a reader can tell a slow number from
  a busy machine.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
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


# ----------------------------------------------------------------------------- statistics

def spread(values: list[float] | tuple[float, ...]) -> dict[str, Any]:
    """Median, min, max, quartiles (inclusive method) and n of ``values`` (None inside if empty)."""
    values = sorted(float(v) for v in values if v is not None)
    n = len(values)
    if not n:
        return {"median": None, "min": None, "max": None, "q1": None, "q3": None, "n": 0}
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if n > 1 else (values[0],) * 3
    return {"median": statistics.median(values), "min": values[0], "max": values[-1], "q1": q1, "q3": q3, "n": n}


def scale_spread(summary: dict[str, Any], factor: float) -> dict[str, Any]:
    """``summary`` (from :func:`spread`) with every statistic multiplied by ``factor`` > 0."""
    return {key: (value * factor if key not in ("n", "per_round") and value is not None else value)
            for key, value in summary.items()}


def per_second(work: float, seconds: list[float]) -> list[float]:
    """``work / s`` for each of ``seconds`` (images/s, objects/s, FLOP/s ...)."""
    return [work / s for s in seconds]


def paired_ratios(numerators: list[float], denominators: list[float]) -> dict[str, Any]:
    """Per-round ratios ``numerators[i] / denominators[i]`` and their :func:`spread`.

    Both lists hold one value per warm round of an interleaved measurement (rates or
    times); the ratio of each round compares two things timed under the same load.
    """
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} numerators for {len(denominators)} denominators: not paired rounds")
    per_round = [a / b for a, b in zip(numerators, denominators)]
    return {**spread(per_round), "per_round": [round(r, 4) for r in per_round]}


def median_spread_text(summary: dict[str, Any] | None, digits: int = 1, scale: float = 1.0,
                       suffix: str = "") -> str | None:
    """``median [min–max]`` of a :func:`spread` summary, for the Markdown tables."""
    if not summary or summary.get("median") is None:
        return None
    def number(value: float) -> str:
        return f"{value * scale:,.{digits}f}{suffix}"
    if summary.get("n", 0) <= 1:
        return number(summary["median"])
    return f"{number(summary['median'])} [{number(summary['min'])}–{number(summary['max'])}]"


# ----------------------------------------------------------------------------- timing

#: A round shorter than this gets no ``other_cores`` of its own: /proc/stat counts in ticks
#: of 10 ms, too coarse for it; the value over all the warm rounds stands for it.
MIN_ROUND_S_FOR_LOAD = 0.5


def interleaved(functions: dict[str, Callable[[], Any]], warm_rounds: int, cold_rounds: int = 1,
                synchronize: Callable[[], None] | None = None,
                clock: Callable[[], float] = time.perf_counter) -> dict[str, dict[str, Any]]:
    """Time several variants in interleaved rounds (A B C A B C ...); median of the warm ones.

    The first ``cold_rounds`` rounds are the cold ones (first calls: imports, caches,
    allocations) and are reported as ``cold_s``, outside the statistics. Each variant gets
    ``warm_s`` (one time per warm round, in round order, so that the rounds of two
    variants pair up for :func:`paired_ratios`), its :func:`spread` as ``median_s``,
    ``min_s``, ``max_s``, ``q1_s``, ``q3_s`` and ``n``, the load stamps of the warm
    rounds as a whole and ``other_cores`` of each warm round. ``best_s`` (= ``min_s``)
    and ``all_s`` (cold then warm) are kept for older readers of the JSON.
    """
    if warm_rounds < 1:
        raise ValueError("at least one warm round is needed")
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    round_watch: list[dict[str, Any]] = []
    watch = None
    for index in range(cold_rounds + warm_rounds):
        if index == cold_rounds:
            watch = CpuWatch()  # the load stamps cover the warm rounds only
        this_round = CpuWatch()
        round_started = time.perf_counter()
        for name, function in functions.items():
            started = clock()
            function()
            if synchronize:
                synchronize()
            seconds[name].append(clock() - started)
        watched_round = this_round.stop()
        if time.perf_counter() - round_started < MIN_ROUND_S_FOR_LOAD:
            watched_round["other_cores"] = None  # too short for /proc/stat's ticks; see the whole interval
        round_watch.append(watched_round)
    watched = watch.stop() if watch else {}
    other_per_round = [w.get("other_cores") for w in round_watch[cold_rounds:]]
    return {name: timing_summary(values[:cold_rounds], values[cold_rounds:],
                                 {**watched, "other_cores_per_round": other_per_round,
                                  "cold_other_cores": [w.get("other_cores") for w in round_watch[:cold_rounds]]})
            for name, values in seconds.items()}


def timing_summary(cold_s: list[float], warm_s: list[float], watched: dict[str, Any] | None = None) -> dict[str, Any]:
    """The timing record of one variant: cold times apart, warm ones as median and spread."""
    stats = spread(warm_s)
    return {
        "cold_s": cold_s[0] if cold_s else None,
        "cold_rounds": len(cold_s),
        "warm_s": list(warm_s),  # unrounded: per-round rates and ratios are computed from them
        **{f"{key}_s": value for key, value in stats.items() if key != "n"},
        "n": stats["n"],
        "statistic": "median of warm rounds",
        "best_s": stats["min"], "all_s": [*cold_s, *warm_s], "repeats": stats["n"],
        **(watched or {}),
    }


def repeated_time(function: Callable[[], Any], repeats: int, cold: int = 1,
                  synchronize: Callable[[], None] | None = None) -> dict[str, Any]:
    """One function timed ``cold`` + ``repeats`` times: :func:`interleaved` with one variant."""
    return interleaved({"only": function}, repeats, cold, synchronize)["only"]


def load_text(entry: dict[str, Any] | None) -> str:
    """``before → after`` of the 1-minute load average of a timing record."""
    entry = entry or {}
    before, after = entry.get("load_before"), entry.get("load_after")
    return f"{before[0] if before else '?'} → {after[0] if after else '?'}"


def other_cores_text(entry: dict[str, Any] | None) -> str | None:
    """Cores kept busy by other processes: over the whole timing, and per round where known."""
    entry = entry or {}
    per_round = [v for v in entry.get("other_cores_per_round") or [] if v is not None]
    if per_round:
        return median_spread_text(spread(per_round), 2)
    value = entry.get("other_cores")
    return None if value is None else f"{value:.2f}"


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


TIMING_KEYS = ("cold_s", "cold_rounds", "warm_s", "median_s", "min_s", "max_s", "q1_s", "q3_s", "n", "statistic",
               "best_s", "all_s", "repeats", "load_before", "load_after", "other_cores", "steal_cores",
               "other_cores_per_round", "cold_other_cores")
