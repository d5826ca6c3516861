#!/usr/bin/env python
"""All speed benchmarks in one process and one run: ``make bench``.

1. machine peak: fp32 matmul FLOP/s and copy bandwidth at 1 and all torch threads;
2. forward throughput of every registered model and its fraction of that roofline,
   then the default model's variants (grad mode, channels_last, folded batch norm,
   torch.compile, batch size, threads);
3. cutouts: ``pipeline.cutouts.cut_stamps`` on memory-mapped FITS vs astropy ``Cutout2D``;
4. end to end: ``run_with_client`` on a mock survey vs bare forward passes on its stamps,
   plus the wall time of ``run_survey.py``;
5. scaling: the survey at 1x and 4x the objects (4x the tiles), time and peak memory
   per worker.

Prints Markdown tables and writes ``run_all.json`` (``run_all_quick.json`` with
``--quick``) and the same tables as ``run_all.md`` under ``--out``.

How the numbers are taken (``benchmarks/common.py``): everything that is compared runs in
interleaved rounds (A B A B ...); the first round is cold (imports, page cache, caches,
worker start) and is reported apart; every number is the MEDIAN of the warm rounds shown
with its spread [min–max] and n; every ratio, the verdicts' included, is computed per
round (A_i / B_i) and then summarised by its median. Every timing carries the load
averages before and after it and the cores other processes kept busy, per round, and
the report has a table of the load during each section. On a CUDA machine the GPU
variants of 1, 2 and 4 run as well (that path is untested on CPU-only machines).

    python benchmarks/run_all.py            # ~15-17 min on 2 quiet cores (WARM_ROUNDS below)
    python benchmarks/run_all.py --quick    # ~3 min smoke run, small sizes, 2-3 warm rounds
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# Run as a script, the benchmarks folder is sys.path[0]; import its modules as a package instead.
if sys.path and Path(sys.path[0]).resolve() == _HERE:
    sys.path.pop(0)
sys.path.insert(0, str(_HERE.parent))

from benchmarks.common import (  # noqa: E402
    fmt,
    load_average,
    load_text,
    log,
    machine_info,
    markdown_table,
    median_spread_text,
    other_cores_text,
    scale_spread,
    spread,
    usable_cpus,
)

DEFAULT_OUT = _HERE / "results"

TARGETS = {
    "default_model_roofline_fraction": 0.50,
    "pipeline_ratio_vs_bare_forward": 0.90,
    "cutout_speed_up_vs_cutout2d": 30.0,
    "peak_worker_memory_growth_4x": 0.10,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and few repeats (~2 min smoke run)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results folder (default: {DEFAULT_OUT})")
    parser.add_argument("--scratch", type=Path, default=None,
                        help="folder for mock surveys and run outputs; kept, and a survey there with the same "
                             "settings is reused (default: a temporary folder, deleted)")
    parser.add_argument("--sections", nargs="+", default=["peak", "models", "default", "cutouts", "e2e"],
                        choices=["peak", "models", "default", "cutouts", "e2e"], help="which benchmarks to run")
    parser.add_argument("--threads", type=int, default=usable_cpus(),
                        help="torch threads for the model benchmarks and the total for the pipeline (default: all)")
    parser.add_argument("--objects", type=int, default=None, help="objects of the 1x mock survey (default 2000; "
                                                                    "300 with --quick)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    return parser.parse_args(argv)


#: Warm rounds (after one cold round; two for the peak) per section: the full run and --quick.
#: At least 5 in the full run wherever things are compared; the cheap sections take more.
WARM_ROUNDS = {"peak": 9, "models": 5, "default_model": 5, "cutouts": 7, "e2e": 5}
WARM_ROUNDS_QUICK = {"peak": 5, "models": 3, "default_model": 2, "cutouts": 3, "e2e": 2}


def sizes(quick: bool) -> dict:
    if quick:
        return {"models_batch": 8, "warm_rounds": WARM_ROUNDS_QUICK, "objects": 300,
                "cutouts": {"tile_px": 2000, "n_objects": 1000, "subset": 100, "size_px": 64,
                            "repeats": WARM_ROUNDS_QUICK["cutouts"]}}
    return {"models_batch": 32, "warm_rounds": WARM_ROUNDS, "objects": 2000,
            "cutouts": {"tile_px": 4000, "n_objects": 5000, "subset": 500, "size_px": 64,
                        "repeats": WARM_ROUNDS["cutouts"]}}


def run_section(name: str, results: dict, function, *args, **kwargs):
    log(f"== {name}")
    started = time.perf_counter()
    try:
        results[name] = function(*args, **kwargs)
    except Exception as error:
        traceback.print_exc()
        results[name] = {"error": f"{type(error).__name__}: {error}"}
    results.setdefault("section_seconds", {})[name] = round(time.perf_counter() - started, 1)
    return results[name]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from benchmarks import cutouts, forward, peak, pipeline_e2e

    pipeline_e2e.environment_for_workers()
    torch.set_num_threads(args.threads)
    size = sizes(args.quick)
    objects = args.objects or size["objects"]
    results: dict = {"machine": machine_info(), "quick": args.quick, "threads": args.threads, "targets": TARGETS,
                     "sizes": {**size, "objects": objects}, "timing_method": TIMING_METHOD}
    started = time.perf_counter()
    thread_counts = sorted({1, args.threads})

    scratch_context = tempfile.TemporaryDirectory(prefix="bench-") if args.scratch is None else None
    scratch = Path(scratch_context.name) if scratch_context else args.scratch
    scratch.mkdir(parents=True, exist_ok=True)
    survey = None
    if "default" in args.sections or "e2e" in args.sections:
        log("== mock survey (generation not timed)")
        survey = pipeline_e2e.mock_survey(scratch / f"mock-{objects}", objects)
    peak_flops: dict[int, float] = {}
    peak_samples: dict[int, list[float]] = {}
    warm = size["warm_rounds"]

    def measure_peak(label: str) -> None:
        # The peak is measured before, between and after the model sections; the roofline is
        # the median of all their warm repeats pooled (a burst of other jobs during one
        # measurement moves it little; its spread is reported).
        peaks = run_section(label, results, peak.measure, thread_counts, args.quick, warm["peak"])
        if "cpu" in peaks:
            for threads, row in peaks["cpu"].items():
                peak_samples.setdefault(int(threads), []).extend(row["matmul_fp32"]["flops_per_s_all"])
                peak_flops[int(threads)] = spread(peak_samples[int(threads)])["median"]
        torch.set_num_threads(args.threads)

    model_sections = "models" in args.sections or "default" in args.sections
    if "peak" in args.sections or model_sections:
        measure_peak("peak")
    if "models" in args.sections:
        run_section("models", results, forward.all_models, 3, size["models_batch"], warm["models"],
                    peak_flops[args.threads])
        measure_peak("peak_after_models")
    if "default" in args.sections:
        try:
            inputs = pipeline_e2e.survey_inputs(survey, 128 if args.quick else 512)
        except Exception as error:  # fall back to random inputs, and say so in the results
            log(f"  no survey stamps for the default model ({error}); random inputs")
            inputs = None
        run_section("default_model", results, forward.default_model_variants, args.threads, peak_flops, args.quick,
                    compile_model=not (args.quick or args.no_compile), inputs=inputs,
                    warm_rounds=warm["default_model"])
        torch.set_num_threads(args.threads)
        measure_peak("peak_after_default_model")
    if peak_flops:
        results["roofline_flops_per_s"] = {str(t): v for t, v in peak_flops.items()}
        results["roofline_flops_per_s_spread"] = {str(t): spread(v) for t, v in peak_samples.items()}
        apply_roofline(results, peak_flops)
    if torch.cuda.is_available() and "default" in args.sections:  # untested on the CPU development machine
        run_section("default_model_cuda", results, forward.cuda_forward)
    if "cutouts" in args.sections:
        run_section("cutouts", results, cutouts.measure, **size["cutouts"])

    try:
        if "e2e" in args.sections:
            e2e = run_section("e2e", results, pipeline_e2e.measure, scratch, objects, args.quick, args.threads,
                              warm["e2e"])
            if "configs" in e2e:
                try:  # a failure here must not lose the measurements
                    results["e2e_summary"] = pipeline_e2e.summarise(e2e)
                except Exception as error:
                    traceback.print_exc()
                    results["e2e_summary"] = {"error": f"{type(error).__name__}: {error}"}
                if torch.cuda.is_available():  # untested on the CPU development machine
                    run_section("e2e_cuda", results, pipeline_e2e.measure_cuda, scratch, e2e["survey_1x"])
    finally:
        if scratch_context:
            scratch_context.cleanup()

    results["total_seconds"] = round(time.perf_counter() - started, 1)
    results["load_average_at_end"] = load_average()
    results["verdicts"] = verdicts(results)
    results["load_during_timing"] = load_during_timing(results)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "run_all_quick" if args.quick else "run_all"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    report = tables(results)
    (args.out / f"{stem}.md").write_text(report + "\n")
    print()
    print(report)
    print()
    for line in verdict_lines(results):
        print(line)
    print(f"\nwrote {args.out / (stem + '.json')} and {args.out / (stem + '.md')} in {results['total_seconds']:.0f} s")
    return 0


# ----------------------------------------------------------------------------- verdicts and tables

TIMING_METHOD = {
    "statistic": "median of the warm rounds, with [min–max], quartiles and n; never the best",
    "interleaving": "compared variants run in rounds A B A B ...; ratios are computed per round (A_i / B_i) "
                    "and summarised by their median, which the verdicts use",
    "cold": "the first round (two for the machine peak) is cold (imports, page cache, caches, worker start) "
            "and is reported apart, outside the statistics; the command line is one cold run",
    "load": "load averages before/after and other_cores (cores busy with other processes, from /proc/stat "
            "minus this process tree) per round; see load_during_timing",
}


def apply_roofline(results: dict, peak_flops: dict[int, float]) -> None:
    """Recompute every roofline fraction against the roofline of the whole run (the median of
    all the peak measurements' warm repeats)."""
    for row in results.get("models") or []:
        if isinstance(row, dict) and "achieved_flops_per_s" in row:
            peak = peak_flops[results["threads"]]
            row["roofline_fraction"] = row["achieved_flops_per_s"] / peak
            if "images_per_s_spread" in row:
                row["roofline_fraction_spread"] = scale_spread(row["images_per_s_spread"],
                                                               row["flops_per_image"] / peak)
    default = results.get("default_model", {})
    flops = default.get("choices", {}).get("flops_per_image")
    for trial in default.get("trials", []):
        trial["roofline_fraction"] = flops * trial["images_per_s"] / peak_flops[trial["threads"]]
        if "images_per_s_spread" in trial:
            trial["roofline_fraction_spread"] = scale_spread(trial["images_per_s_spread"],
                                                             flops / peak_flops[trial["threads"]])
    threads_compare = default.get("choices", {}).get("threads_compare")
    if threads_compare:
        for key in list(threads_compare):
            if key.startswith("roofline_fraction_"):
                threads = int(key.rsplit("_", 1)[1])
                rate = threads_compare[str(threads)]
                threads_compare[key] = flops * rate / peak_flops[threads]


def _range(summary: dict | None, digits: int = 2, suffix: str = "") -> str:
    """``median [min–max] (n=…)`` of a spread, or '?'."""
    text = median_spread_text(summary, digits, suffix=suffix)
    return f"{text} (n={summary['n']})" if text else "?"


def verdicts(results: dict) -> dict:
    """The targets' verdicts, each on a median (of per-round ratios where two things are
    compared), with the spread beside it and ``measured``: the same in words."""
    out = {}
    default = results.get("default_model", {})
    if "trials" in default:
        from lensnet.predict import DEFAULT_BATCH

        # The pipeline's CPU settings: inference_mode, channels_last, DEFAULT_BATCH["cpu"]
        # (the batch stage runs on the layout stage's choice; fall back to the starting point).
        layout = next((t for t in default["trials"] if t["stage"] == "layout/BN" and t.get("kept")), {})
        pipeline_trial = next((t for t in default["trials"] if t["stage"] == "batch"
                               and t["batch"] == DEFAULT_BATCH["cpu"] and layout.get("variant") == "channels_last"),
                              next(t for t in default["trials"] if t["variant"] == "torch.inference_mode (pipeline)"))
        at_threads = [t for t in default["trials"] if t["threads"] == results["threads"]]
        best = max(at_threads, key=lambda t: t["roofline_fraction"])
        target = TARGETS["default_model_roofline_fraction"]
        out["default_model_roofline"] = {
            "target": f">= {target:.0%} of the fp32 matmul peak (medians)",
            "pipeline_setting": pipeline_trial["roofline_fraction"],
            "pipeline_setting_spread": pipeline_trial.get("roofline_fraction_spread"),
            "pipeline_setting_name": f"{pipeline_trial['stage']}: {pipeline_trial['variant']}",
            "best_variant": best["roofline_fraction"],
            "best_variant_spread": best.get("roofline_fraction_spread"),
            "best_variant_name": f"{best['stage']}: {best['variant']} ({best['threads']} threads)",
            "met_by_pipeline_setting": pipeline_trial["roofline_fraction"] >= target,
            "met_by_best_variant": best["roofline_fraction"] >= target,
            "measured": f"pipeline setting ({pipeline_trial['stage']}: {pipeline_trial['variant']}) "
                        f"{_range(pipeline_trial.get('roofline_fraction_spread'))}; best variant ({best['variant']}) "
                        f"{_range(best.get('roofline_fraction_spread'))}",
        }
    summary = results.get("e2e_summary", {})
    ratios = {name: entry for name, entry in summary.items()
              if isinstance(entry, dict) and entry.get("ratio_execute_vs_bare") is not None}
    if ratios:
        # The verdict is the command line's default layout (the config scaled to 4x) on the
        # 4x survey, where a run's fixed costs (store, report, merge: ~1 s) are amortised
        # as they are over a survey; the 1x ratios are reported beside it. All are medians
        # of per-round ratios (a run / the bare forward timed in the same round).
        default = next((name for name, entry in summary.items() if isinstance(entry, dict) and "scaling" in entry),
                       None)
        scaling = summary[default]["scaling"] if default else {}
        ratio_4x = scaling.get("ratio_execute_4x_vs_bare")
        headline = ratio_4x if ratio_4x is not None else ratios.get(default or "A", next(iter(ratios.values())))[
            "ratio_execute_vs_bare"]
        words = ([f"{default} 4x: {_range(scaling.get('ratio_execute_4x_vs_bare_spread'))}"] if ratio_4x is not None
                 else []) + [f"{name} 1x: {_range(entry.get('ratio_execute_vs_bare_spread'))}"
                             for name, entry in ratios.items()]
        out["pipeline_overhead"] = {
            "target": f"end to end >= {TARGETS['pipeline_ratio_vs_bare_forward']} x the better bare forward on the "
                      "same cores (same stamps, batch and memory format); median of per-round ratios",
            **{f"ratio_{name}_1x": entry["ratio_execute_vs_bare"] for name, entry in ratios.items()},
            **{f"ratio_{name}_1x_spread": entry.get("ratio_execute_vs_bare_spread") for name, entry in ratios.items()},
            **({f"ratio_{default}_4x": ratio_4x, f"ratio_{default}_4x_spread":
                scaling.get("ratio_execute_4x_vs_bare_spread")} if ratio_4x is not None else {}),
            "headline": f"{default} 4x" if ratio_4x is not None else f"{default or 'A'} 1x",
            "met": headline >= TARGETS["pipeline_ratio_vs_bare_forward"],
            "measured": "; ".join(words),
        }
    cut = results.get("cutouts", {})
    if "speed_up" in cut:
        out["cutouts"] = {"target": f">= {TARGETS['cutout_speed_up_vs_cutout2d']:.0f}x Cutout2D (median of "
                                    "per-round speed-ups)",
                          "speed_up": cut["speed_up"], "speed_up_spread": cut.get("speed_up_spread"),
                          "cold_speed_up": cut.get("cold_speed_up"),
                          "met": cut["speed_up"] >= TARGETS["cutout_speed_up_vs_cutout2d"],
                          "measured": f"{_range(cut.get('speed_up_spread'), 1, 'x')} warm; cold "
                                      f"{cut.get('cold_speed_up', float('nan')):.1f}x"}
    scaling = next((entry["scaling"] for entry in summary.values() if isinstance(entry, dict) and "scaling" in entry),
                   None)
    if scaling and scaling.get("peak_worker_hwm_mib_1x"):
        growth = scaling["peak_worker_hwm_mib_4x"] / scaling["peak_worker_hwm_mib_1x"] - 1
        out["memory_flat"] = {
            "target": f"peak RSS per worker at 4x <= 1x + {TARGETS['peak_worker_memory_growth_4x']:.0%} (medians "
                      "over warm runs)",
            "growth": growth, "met": growth <= TARGETS["peak_worker_memory_growth_4x"],
            "time_ratio_4x_over_1x": scaling["time_ratio_4x_over_1x"],
            "time_ratio_4x_over_1x_spread": scaling.get("time_ratio_4x_over_1x_spread"),
            "measured": f"{100 * growth:+.1f}% ({scaling['peak_worker_hwm_mib_1x']:,.0f} → "
                        f"{scaling['peak_worker_hwm_mib_4x']:,.0f} MiB; largest at 4x "
                        f"{scaling.get('peak_worker_hwm_mib_4x_max') or 0:,.0f}); time ratio 4x/1x per round "
                        f"{_range(scaling.get('time_ratio_4x_over_1x_spread'))}"}
    return out


def verdict_word(verdict: dict) -> str:
    if "met" in verdict:
        return "MET" if verdict["met"] else "NOT MET"
    return ("MET" if verdict["met_by_pipeline_setting"] else
            "NOT MET with the pipeline's settings; " + ("MET" if verdict["met_by_best_variant"] else "NOT MET")
            + " with the best variant")


def verdict_lines(results: dict) -> list[str]:
    """One line per verdict, for the console."""
    load = results.get("load_during_timing", {})
    lines = [f"verdict {key}: {verdict_word(verdict)} -- {verdict['measured']}"
             for key, verdict in results.get("verdicts", {}).items()]
    busy = [f"{section} ({entry['other_cores']})" for section, entry in load.items() if entry.get("busy")]
    lines.append("load during timing: " + ("BUSY: other work on the cores in " + ", ".join(busy)
                                            if busy else "quiet (no section saw other work on the cores)"))
    return lines


# ----------------------------------------------------------------------------- load during timing

#: Other processes keeping this many cores busy (median over a section's rounds, or any one
#: round at more than twice it) make the section's numbers "busy".
BUSY_CORES = 0.1


def _walk(value, found: dict) -> None:
    if isinstance(value, dict):
        per_round = [v for v in value.get("other_cores_per_round") or [] if v is not None]
        if per_round:
            found["rounds"].extend(per_round)
        elif isinstance(value.get("other_cores"), (int, float)):  # short rounds: the whole interval's
            found["rounds"].append(value["other_cores"])
        for key in ("load_before", "load_after"):
            if isinstance(value.get(key), list) and value[key]:
                found["load"].append(value[key][0])
        for key, child in value.items():
            if key not in ("other_cores_per_round", "load_before", "load_after"):
                _walk(child, found)
    elif isinstance(value, list):
        for child in value:
            _walk(child, found)


def load_during_timing(results: dict) -> dict:
    """Per section: the 1-minute load average range and the cores other processes kept busy
    (over all the section's timed rounds), and whether that makes the section busy."""
    out = {}
    for section in ("peak", "models", "peak_after_models", "default_model", "peak_after_default_model",
                    "cutouts", "e2e"):
        if section not in results or "error" in results[section]:
            continue
        found: dict = {"rounds": [], "load": []}
        _walk(results[section], found)
        if not found["rounds"] and not found["load"]:
            continue
        other = spread(found["rounds"])
        out[section] = {
            "load_1min_min": min(found["load"]) if found["load"] else None,
            "load_1min_max": max(found["load"]) if found["load"] else None,
            "other_cores_spread": other,
            "other_cores": median_spread_text(other, 2),
            "busy": bool(other["n"]) and (other["median"] > BUSY_CORES or other["max"] > 2 * BUSY_CORES),
        }
    return out


# ----------------------------------------------------------------------------- tables

def _peak_mib(run: dict):
    values = [v for v in run["memory"]["peak_hwm_per_worker"].values() if v]
    return round(max(values) / 2**20) if values else None


def _ms(summary: dict | None, digits: int = 1, scale: float = 1.0, suffix: str = "") -> str | None:
    return median_spread_text(summary, digits, scale, suffix)


def _ratio(summary: dict | None, bold: bool = False, digits: int = 2, suffix: str = "") -> str | None:
    text = median_spread_text(summary, digits, suffix=suffix)
    if text is None:
        return None
    if bold:
        head, _, rest = text.partition(" ")
        text = f"**{head}** {rest}".strip()
    return text


def tables(results: dict) -> str:
    from benchmarks.forward import KEEP_MARGIN
    from lensnet.predict import DEFAULT_BATCH

    parts = []
    machine = results["machine"]
    warm = results.get("sizes", {}).get("warm_rounds", {})
    parts.append(f"Machine: {machine['cpu_model']}, {machine['usable_cpus']} usable CPUs "
                 f"({', '.join(machine['cpu_flags'])}), torch {machine['torch']}, "
                 f"{machine.get('memory_total_gib')} GiB; {machine['date_utc']}; load average at start "
                 f"{machine['load_average_at_start']}, at end {results.get('load_average_at_end')}; "
                 f"total {results.get('total_seconds')} s; command `{machine['command']}`"
                 f"{' (QUICK: small sizes, not for quoting)' if results['quick'] else ''}.")
    parts.append("How to read the numbers: each is the **median of the warm rounds [min–max]**, with n the number "
                 "of warm rounds; the first round of every measurement is **cold** (imports, page cache, caches, "
                 "worker start) and is shown apart, never mixed in. Compared variants ran interleaved (A B A B ...) "
                 "and every ratio is computed per round (A_i / B_i, same round) and then summarised; the verdicts "
                 "use the median. Warm rounds per section: "
                 + ", ".join(f"{k} {v}" for k, v in warm.items()) + ". `load 1-min` is the load average before "
                 "→ after; `other cores` is how many cores other processes kept busy, median [min–max] over the "
                 "rounds (0 on a quiet machine).")
    load = results.get("load_during_timing", {})
    if load:
        parts.append("### Load during timing\n\n" + markdown_table(
            ["section", "load 1-min (range)", "other cores, median [min–max] over rounds", "verdict"],
            [[section, f"{entry['load_1min_min']}–{entry['load_1min_max']}", entry["other_cores"],
              "BUSY: other work on the cores" if entry["busy"] else "quiet"] for section, entry in load.items()]))
    peaks = results.get("peak", {})
    if "cpu" in peaks:
        rows = []
        for label in ("peak", "peak_after_models", "peak_after_default_model"):
            for threads, row in results.get(label, {}).get("cpu", {}).items():
                matmul, copy = row["matmul_fp32"], row["copy_bandwidth"]
                rows.append([f"{threads} ({label.replace('_', ' ')})",
                             _ms(matmul.get("flops_per_s_spread"), 1, 1e-9),
                             fmt(2 * matmul["size"] ** 3 / matmul["cold_s"] / 1e9) if matmul.get("cold_s") else None,
                             _ms(copy.get("bytes_per_s_spread"), 1, 1e-9), matmul.get("n"),
                             load_text(matmul), other_cores_text(matmul)])
        for key in ("matmul_fp32", "matmul_bf16"):
            if key in peaks.get("cuda", {}):
                rows.append([f"cuda {key}", _ms(peaks["cuda"][key].get("flops_per_s_spread"), 1, 1e-9), None,
                             _ms(peaks["cuda"]["copy_bandwidth"].get("bytes_per_s_spread"), 1, 1e-9),
                             peaks["cuda"][key].get("n"), load_text(peaks["cuda"][key]),
                             other_cores_text(peaks["cuda"][key])])
        roofline = results.get("roofline_flops_per_s_spread", {})
        parts.append("### 1. Machine peak (measured three times: before, between and after the model sections; the "
                     "roofline is the median of all their warm repeats)\n\n"
                     + markdown_table(["torch threads", "fp32 matmul 2048² GFLOP/s", "cold GFLOP/s",
                                       "copy bandwidth GB/s (read+write)", "n", "load 1-min", "other cores"], rows)
                     + "\n\nRoofline used: " + ", ".join(f"{t} thread(s) {_ms(v, 1, 1e-9)} GFLOP/s (n={v['n']})"
                                                         for t, v in roofline.items()) + ".")
    models = results.get("models")
    if isinstance(models, list) and models:
        rows = [[m["name"], " + ".join(f"{s}²" for s in m["input_size_px"]), f"{m['parameters']:,}",
                 f"{m['flops_per_image'] / 1e9:.3f}", _ms(m.get("images_per_s_spread")),
                 fmt(m.get("images_per_s_cold")), f"{m['achieved_flops_per_s'] / 1e9:.1f}",
                 _ms(m.get("roofline_fraction_spread"), 1, 100, "%"), m.get("n")] for m in models]
        parts.append(f"### 2a. Forward throughput, every registered model ({results['threads']} threads, "
                     f"batch {models[0]['batch']}, 3 bands, inference_mode; models interleaved, one batch each per "
                     f"round)\n\n" + markdown_table(["model", "input", "parameters", "GFLOP/img", "img/s",
                                                    "cold img/s", "GFLOP/s (median)", "of matmul peak", "n"], rows)
                     + f"\n\nLoad 1-min {load_text(models[0])}; other cores per round "
                       f"{other_cores_text(models[0])}.")
    default = results.get("default_model", {})
    if "trials" in default:
        rows = [[t["stage"], t["variant"], t["threads"], t["batch"], _ms(t.get("images_per_s_spread")),
                 fmt(t.get("images_per_s_cold")), _ms(t.get("roofline_fraction_spread"), 1, 100, "%"),
                 _ratio(t.get("ratio_vs_stage_baseline")) or "", "yes" if t.get("kept") else "", t.get("n"),
                 f"{t['max_abs_logit_difference']:.1e}", load_text(t), other_cores_text(t)]
                for t in default["trials"]]
        choices = default["choices"]
        compile_note = choices.get("compile", {})
        from lensnet.checkpoint import load_config

        shipped = load_config("default")
        parts.append(f"### 2b. Default model ({shipped.architecture}, {shipped.stamp_size_px}×{shipped.stamp_size_px}"
                     f"×{len(shipped.bands)}) variants, interleaved with the stage's "
                     f"baseline, on {choices.get('inputs', 'random N(0, 1)')}\n\n"
                     + markdown_table(["stage", "variant", "threads", "batch", "img/s", "cold img/s",
                                       "of matmul peak", "speed × stage baseline's, per round", "kept",
                                       "n", "max |Δlogit|", "load 1-min", "other cores"], rows)
                     + f"\n\nA variant is kept if its median per-round speed ratio to the stage baseline exceeds "
                       f"{1 + KEEP_MARGIN:.2f}. `cold` is the first round of each comparison: truly cold only for "
                       "the variants new to it (the stage's baseline ran in the stage before). "
                       f"BN folding: {choices.get('batchnorm_folding')}; torch.compile: "
                     + (f"compile {compile_note['compile_s']:.0f} s (cold by nature)" if "compile_s" in compile_note
                        else str(compile_note.get("error") or compile_note.get("skipped")))
                     + f"; best: {choices.get('best')}; eager time shares: {default.get('profile')}")
    cut = results.get("cutouts", {})
    if "speed_up" in cut:
        parts.append(
            "### 3. Cutouts (one cutout = one object in 3 bands; the two methods interleaved)\n\n" + markdown_table(
                ["method", "objects timed", "cutouts/s", "cold cutouts/s", "speed-up, per round", "n", "load 1-min",
                 "other cores"],
                [["pipeline.cutouts.cut_stamps (memmap, vectorised WCS)", cut["objects"],
                  _ms(cut.get("project_cutouts_per_s_spread"), 0), fmt(cut.get("project_first_pass_cutouts_per_s"), 0),
                  _ratio(cut.get("speed_up_spread"), bold=True, digits=1, suffix="x"), cut.get("n"), load_text(cut),
                  other_cores_text(cut)],
                 ["astropy Cutout2D + SkyCoord per object" + (" (extrapolated)" if cut["baseline_extrapolated"]
                                                              else ""),
                  cut["baseline_objects_timed"], _ms(cut.get("baseline_cutouts_per_s_spread"), 0),
                  fmt(cut.get("baseline_first_pass_cutouts_per_s"), 0), "1x", cut.get("n"), load_text(cut),
                  other_cores_text(cut)]])
            + f"\n\n{cut['tile_px']}² float32 tile, {cut['objects']} objects; cold speed-up "
              f"{cut.get('cold_speed_up', float('nan')):.1f}x; stamps identical (given Cutout2D's centring): "
              f"{cut['identical_stamps_fraction']:.0%}.")
    e2e, summary = results.get("e2e", {}), results.get("e2e_summary", {})
    if "error" in summary:
        parts.append(f"### 4. End to end: summary failed: {summary['error']}")
    elif summary:
        bare = e2e.get("bare_forward", {})
        configs = [name for name, entry in summary.items() if name != "cli" and isinstance(entry, dict)]
        last = next((name for name in configs if "scaling" in summary[name]), None)
        rows = []
        for name in configs:
            entry = summary[name]
            rows.append([name, entry["label"], fmt(entry["execute_objects_per_s_cold"]),
                         _ms(entry.get("execute_objects_per_s_spread")),
                         _ms(entry.get("prepare_execute_objects_per_s_spread")),
                         _ms(entry.get("bare_forward_same_settings_spread")),
                         _ms(entry.get("bare_forward_in_all_workers_at_once_spread")),
                         entry.get("bare_forward_reference"),
                         _ratio(entry.get("ratio_execute_vs_bare_spread"), bold=True),
                         _ratio(entry.get("ratio_execute_vs_workers_x_bare_spread")) or "",
                         _ratio(entry.get(f"execute_ratio_vs_{last}_spread")) or "",
                         entry.get("warm_rounds"), other_cores_text(entry)])
        cli = summary.get("cli")
        parts.append(f"### 4. End to end ({e2e['survey_1x']['objects']} objects, {e2e['survey_1x']['tiles']} tiles × 3 "
                     f"bands, shards of 512; execute phase on a running LocalCluster; configs, the 4x run and the "
                     f"bare forwards interleaved, round 0 cold)\n\n"
                     + markdown_table(["config", "cluster", "execute obj/s (cold)", "execute obj/s (warm)",
                                       "prepare+execute obj/s (warm)", "bare forward img/s, one process, all threads",
                                       "bare forward img/s, in all its workers at once", "reference (better median)",
                                       "execute / reference, per round",
                                       "execute / (workers × one 1-thread process alone), per round",
                                       f"execute / {last}'s, per round", "n", "other cores"], rows)
                     + (f"\n\nCommand line `run_survey.py` (defaults: {results['threads']} workers × 1 thread, "
                        f"batch {DEFAULT_BATCH['cpu']}; one **cold** run: interpreter start, imports, cluster start "
                        f"and shutdown included): {cli['wall_s']:.1f} s wall for {e2e['cli_default']['scored']} "
                        f"objects ({cli['execute_s_from_summary']:.1f} s of it in execute) = "
                        f"{cli['objects_per_s_wall']:.1f} obj/s = {cli['ratio_wall_vs_bare']:.2f} × the bare forward "
                        f"reference (median); load 1-min {load_text(e2e['cli_default'])}, other cores "
                        f"{other_cores_text(e2e['cli_default'])}." if cli and cli.get("ratio_wall_vs_bare") else ""))
        if bare:
            parts.append(f"Bare forward on {bare['images']} of the run's own stamps (normalised beforehand; "
                         f"normalisation alone: {bare['preprocess_images_per_s_one_thread']:,.0f} stamps/s on one "
                         "thread), one pass of each setup per round:\n\n" + markdown_table(
                             ["setup", "img/s (warm)", "cold img/s", "n", "load 1-min", "other cores"],
                             [[label, _ms(v.get("images_per_s_spread")), fmt(v.get("images_per_s_cold")), v.get("n"),
                               load_text(v), other_cores_text(v)] for label, v in bare["setups"].items()]))
        breakdown_rows, keys = [], []
        for name in configs:
            entry = summary[name]
            if "overhead_breakdown_s" in entry:
                parts_s = entry["overhead_breakdown_s"]
                breakdown_rows.append([name, entry["median_run"], *[f"{v:.1f}" for v in parts_s.values()],
                                       f"{sum(parts_s.values()):.1f}"])
                keys = list(parts_s)
        if breakdown_rows:
            parts.append("What the execute time of the median warm run consists of (seconds; per worker where "
                         "work is spread over workers):\n\n" + markdown_table(["config", "run", *keys, "= execute"],
                                                                                  breakdown_rows))
        phase_rows = []
        for name, config in e2e.get("configs", {}).items():
            for run in config.get("runs_1x", []) + config.get("runs_4x", []):
                phase_rows.append([run["label"], f"{run['prepare_s']:.1f}", f"{run['execute_s']:.1f}",
                                   *[f"{run['phases_s'].get(key, 0):.1f}" for key in PHASES],
                                   f"{run['task_compute_s'].get('cut', 0):.1f}",
                                   f"{run['task_compute_s'].get('score', 0):.1f}",
                                   _peak_mib(run), load_text(run), run.get("other_cores")])
        parts.append("Where the time goes, every run (seconds; `cold` = round 0):\n\n" + markdown_table(
            ["run", "prepare", "execute", *PHASE_NAMES, "Σ cut tasks", "Σ score tasks", "peak RSS/worker MiB",
             "load 1-min", "other cores"], phase_rows))
        scaling_rows = []
        for name in configs:
            entry = summary[name]
            if "scaling" in entry:
                sc = entry["scaling"]
                scaling_rows.append([entry["label"], sc["objects_1x"], sc["objects_4x"],
                                     _ms(sc.get("execute_s_1x_spread")), _ms(sc.get("execute_s_4x_spread")),
                                     _ratio(sc.get("time_ratio_4x_over_1x_spread")),
                                     _ms(sc.get("execute_objects_per_s_4x_spread")),
                                     _ratio(sc.get("ratio_execute_4x_vs_bare_spread"), bold=True) or "",
                                     sc.get("time_ratio_4x_over_1x_spread", {}).get("n"),
                                     sc["worker_rss_before_run_mib"],
                                     *[f"{fmt(sc[f'peak_worker_hwm_mib_{x}'], 0)} "
                                       f"(max {fmt(sc[f'peak_worker_hwm_mib_{x}_max'], 0)})" for x in ("1x", "4x")],
                                     fmt(sc["peak_worker_anon_mib_1x"], 0), fmt(sc["peak_worker_anon_mib_4x"], 0)])
        if scaling_rows:
            parts.append("### 5. Scaling: 1x vs 4x objects (4x the tiles, same density; the 4x run of each round "
                         "against the 1x run and the bare forward of the same round)\n\n" + markdown_table(
                             ["cluster", "objects 1x", "objects 4x", "execute s 1x (warm)", "execute s 4x (warm)",
                              "time ratio 4x/1x per round (ideal 4)", "execute obj/s 4x", "4x execute / reference, "
                              "per round", "n", "worker RSS idle MiB", "peak RSS/worker MiB 1x (median of runs)",
                              "peak RSS/worker MiB 4x (median of runs)", "peak anon RSS MiB 1x (sampled, median)",
                              "peak anon RSS MiB 4x (sampled, median)"], scaling_rows))
    for key in ("default_model_cuda", "e2e_cuda"):  # GPU machines only; untested on the CPU development machine
        if key in results:
            parts.append(f"### GPU: {key}\n\n```json\n{json.dumps(_gpu_digest(results[key]), indent=1)}\n```")
    verdict_rows = [[key, verdict["target"], verdict["measured"], verdict_word(verdict)]
                    for key, verdict in results.get("verdicts", {}).items()]
    parts.append("### Targets (medians of warm rounds; ratios per round; [min–max] over the rounds, n rounds)\n\n"
                 + markdown_table(["benchmark", "target", "measured: median [min–max] (n)", "verdict"], verdict_rows)
                 + "\n\n" + verdict_lines(results)[-1] + ".")
    return "\n\n".join(parts)


def _gpu_digest(section: dict) -> dict:
    """Images/s (or objects/s) per entry of a GPU section, without the raw timings."""
    if "error" in section:
        return section
    digest = {}
    for key, value in section.items():
        if isinstance(value, dict) and "images_per_s" in value:
            digest[key] = _ms(value.get("images_per_s_spread")) or round(value["images_per_s"], 1)
        elif key == "runs":
            digest[key] = [round(run["objects_per_s_execute"], 1) for run in value]  # the first is cold
        elif key == "bare_forward":
            digest[key] = {label: _ms(v.get("images_per_s_spread")) for label, v in value["setups"].items()}
    return digest


PHASES = ["create zarr store", "register plugin (model load on workers)", "compute (cut + score tasks)",
          "dask performance report", "merge (catalogue, Parquet)", "other (fingerprint, provenance, summary)"]
PHASE_NAMES = ["zarr store", "plugin/model load", "cut+score tasks (wall)", "perf. report", "merge", "other"]


if __name__ == "__main__":
    raise SystemExit(main())
