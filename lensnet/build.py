"""Simulate, train and evaluate a model in one command, into one folder:
``python -m lensnet.build --config RECIPE.yaml --out DIR``.

``RECIPE.yaml`` is a :mod:`lensnet.train` recipe (every key of :class:`~lensnet.train.TrainConfig`)
with one more mapping, ``evaluate``::

    evaluate:
      data: [...]          # held-out sets measured side by side (default: the recipe's test_data)
      baseline: default    # optional: paired differences against this checkpoint on the same stamps
      bootstrap: 1000      # bootstrap resamples of every interval

The stages, each timed:

1. **simulate** every set the recipe names (training, test and evaluation sets), once, into
   ``$LENSNET_SIMULATION_CACHE`` or else ``DIR/data``, in worker processes on all cores (before
   CUDA is initialised);
2. **train** (:func:`lensnet.train.train`; on a GPU the whole training set sits on the device);
3. **evaluate** the best checkpoint on every evaluation set (as ``lensnet.evaluate --record``:
   the tables go to ``DIR/evaluation.json``, the scores to ``DIR/evaluation/``);
4. write ``DIR/build.json`` (seconds per stage, device, cores, the time budget) and
   ``DIR/MODEL_CARD.md``, which shows both.

A killed build (a batch job's walltime, a 10-minute limit) is resumed by the same command:
every set simulated to the end is reused (one cut short is simulated again), training
resumes from ``DIR/last.pt`` (written atomically after each epoch), and ``build.json`` adds
up the stage times of every run of the command. A finished build run again does nothing; a
folder holding another recipe's build is refused.
``--budget-min`` states the time the whole build is meant to fit in; ``build.json`` and the
exit message say whether it did.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from lensnet.data import (
    SIMULATION_CACHE_ENV,
    DataSpec,
    check_spec,
    describe_spec,
    write_text_atomically,
)

__all__ = ["BUILD_FILE", "BuildRecipe", "build", "load_recipe", "main"]

#: Written into the output folder; the model card reads it.
BUILD_FILE = "build.json"
DEVICES = ("auto", "cpu", "cuda")


@dataclasses.dataclass
class BuildRecipe:
    """A training recipe plus the sets to evaluate on."""

    train: dict[str, Any]
    evaluate_data: list[DataSpec]
    baseline: str | None = None
    bootstrap: int = 1000


def load_recipe(path: str | Path) -> BuildRecipe:
    """Read and check ``path``: a lensnet.train recipe with an optional ``evaluate`` mapping.

    Everything that can be checked without simulating is checked here, so that a bad recipe
    fails in one line before anything is written or simulated.

    Raises:
        ValueError: not a mapping, unknown keys or values, a model or data set that does not
            exist, or no set to evaluate on.
        FileNotFoundError: no such file.
    """
    text = Path(path).read_text()
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} must hold a mapping of key: value")
    try:
        return _checked(loaded)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _checked(loaded: dict[str, Any]) -> BuildRecipe:
    from lensnet.train import check_config, config_from_mapping

    evaluate = loaded.pop("evaluate", {})
    if not isinstance(evaluate, dict):
        raise ValueError("evaluate must be a mapping with data, baseline and bootstrap")
    unknown = sorted(set(evaluate) - {"data", "baseline", "bootstrap"})
    if unknown:
        raise ValueError(f"unknown evaluate key(s) {', '.join(unknown)}; known: baseline, bootstrap, data")
    if "data" not in loaded:
        raise ValueError("no training data (data: ...)")
    for key in ("stop_after_epochs", "fold", "resume"):
        if loaded.get(key) is not None:
            raise ValueError(f"{key} has no place in a build, which trains to the end and resumes by itself")
    if loaded.get("folds", 1) != 1:
        raise ValueError("a build trains one model; train k-fold models with python -m lensnet.train --folds")
    config = config_from_mapping({"out": "", **loaded})
    check_config(config)
    if config.init_from:
        _check_checkpoint("init_from", config.init_from)
    if "data" in evaluate:
        data = evaluate["data"]
        if data is None or data == []:
            raise ValueError("evaluate.data names no set")
    else:
        data = loaded.get("test_data")
        if data is None:
            raise ValueError("nothing to evaluate on; give evaluate.data or test_data")
    for spec in (loaded["data"], loaded.get("test_data"), data):
        if spec is not None:
            check_spec(spec)
    baseline = evaluate.get("baseline")
    if baseline is not None:
        if not isinstance(baseline, str):
            raise ValueError(f"evaluate.baseline must name a checkpoint, not {baseline!r}")
        _check_checkpoint("evaluate.baseline", baseline)
    bootstrap = evaluate.get("bootstrap", 1000)
    if not isinstance(bootstrap, int) or isinstance(bootstrap, bool) or bootstrap < 0:
        raise ValueError(f"evaluate.bootstrap must be a whole number >= 0, not {bootstrap!r}")
    if config.device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {config.device!r}")
    return BuildRecipe(train=loaded, evaluate_data=data if isinstance(data, list) else [data],
                       baseline=baseline, bootstrap=bootstrap)


def _check_checkpoint(key: str, name: str) -> None:
    from lensnet.checkpoint import resolve_checkpoint

    try:
        resolve_checkpoint(name)
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(f"{key}: {error}") from None


def fingerprint(recipe: BuildRecipe) -> str:
    """sha256 of what a build trains and measures (not where it writes): a folder holds one recipe."""
    what = {key: value for key, value in recipe.train.items() if key not in ("out", "device", "threads", "name")}
    content = {"train": what, "evaluate": {"data": recipe.evaluate_data, "baseline": recipe.baseline,
                                           "bootstrap": recipe.bootstrap}}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _flat(value: Any) -> list[DataSpec]:
    if value is None:
        return []
    if isinstance(value, list):
        return [spec for member in value for spec in _flat(member)]
    return [value]


def simulate_all(specs: list[DataSpec]) -> list[dict[str, Any]]:
    """Simulate every distinct simulate spec not yet in the cache; seconds per set, and whether it was cached."""
    from lensnet.data import cache_name, is_materialised, materialise

    cache = Path(os.environ[SIMULATION_CACHE_ENV])
    timings, seen = [], set()
    for spec in specs:
        if not isinstance(spec, dict) or (name := cache_name(spec["simulate"])) in seen:
            continue  # a directory of stamps, or a set already listed
        seen.add(name)
        directory = cache / name
        cached = is_materialised(spec, directory)
        started = time.perf_counter()
        materialise(spec, directory)
        timings.append({"set": describe_spec(spec), "n": spec["simulate"]["n"], "cached": cached,
                        "seconds": round(time.perf_counter() - started, 1)})
        print(f"{'found' if cached else 'simulated'} {describe_spec(spec)}: {timings[-1]['seconds']:.0f} s", flush=True)
    return timings


def build(recipe: BuildRecipe, out: str | Path, command: str = "", budget_min: float | None = None,
          device: str | None = None) -> dict[str, Any]:
    """Run the four stages (module docstring) into ``out``; return what ``build.json`` holds.

    Simulated sets go to ``$LENSNET_SIMULATION_CACHE`` when it is set, else to ``out/data``.
    A finished build of the same recipe is returned as it is; a folder holding another
    recipe's build, or a training run the build did not start, is refused.

    Raises:
        ValueError: ``out`` holds something else, or the device is not available.
    """
    out = Path(out)
    device = device or recipe.train.get("device") or "auto"
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is visible here")
    digest = fingerprint(recipe)
    record = _previous(out, digest)
    if record.get("finished"):
        print(f"{out} already holds this build (run {len(record['invocations'])} time(s)); nothing to do", flush=True)
        return record
    out.mkdir(parents=True, exist_ok=True)
    record.update({"recipe_sha256": digest, "command": command, "budget_min": budget_min, "finished": False})
    _write_record(out, record)
    previous = os.environ.get(SIMULATION_CACHE_ENV)
    os.environ[SIMULATION_CACHE_ENV] = previous or str(out / "data")
    try:
        return _stages(recipe, out, record, device)
    finally:
        if previous is None:
            os.environ.pop(SIMULATION_CACHE_ENV, None)
        else:
            os.environ[SIMULATION_CACHE_ENV] = previous


def _previous(out: Path, digest: str) -> dict[str, Any]:
    path = out / BUILD_FILE
    if path.is_file():
        record = json.loads(path.read_text())
        if record.get("recipe_sha256") != digest:
            raise ValueError(f"{out} holds a build of another recipe (sha256 {str(record.get('recipe_sha256'))[:12]}…);"
                             " give another --out, or remove it")
        return record
    if (out / "last.pt").is_file() or (out / "model.safetensors").is_file():
        raise ValueError(f"{out} holds a model that lensnet.build did not train; give another --out")
    return {"invocations": []}


def _write_record(out: Path, record: dict[str, Any]) -> None:
    write_text_atomically(out / BUILD_FILE, json.dumps(record, indent=2) + "\n")


def _stages(recipe: BuildRecipe, out: Path, record: dict[str, Any], device: str) -> dict[str, Any]:
    from lensnet.card import render_card
    from lensnet.checkpoint import load_config
    from lensnet.evaluate import EvaluationSettings, evaluate_sets
    from lensnet.train import config_from_mapping, train

    config = config_from_mapping({**recipe.train, "out": str(out), "resume": True, "device": device})
    invocation: dict[str, Any] = {"started_utc": _now(), "stages_seconds": {}}
    record["invocations"].append(invocation)
    stages = invocation["stages_seconds"]

    started = time.perf_counter()
    invocation["simulated_sets"] = simulate_all(_flat(config.data) + _flat(config.test_data)
                                                + _flat(recipe.evaluate_data))
    stages["simulate"] = round(time.perf_counter() - started, 1)
    _write_record(out, record)

    started = time.perf_counter()
    train(config, record["command"])
    stages["train"] = round(time.perf_counter() - started, 1)
    _write_record(out, record)

    started = time.perf_counter()
    settings = EvaluationSettings(target_fpr=config.target_fpr, n_bootstrap=recipe.bootstrap)
    evaluate_sets(out, recipe.evaluate_data, out / "evaluation", settings, device=device, command=record["command"],
                  record=True, baseline=recipe.baseline)
    stages["evaluate"] = round(time.perf_counter() - started, 1)

    totals: dict[str, float] = {}
    for entry in record["invocations"]:
        for name, seconds in entry["stages_seconds"].items():
            totals[name] = round(totals.get(name, 0.0) + seconds, 1)
    total = round(sum(totals.values()), 1)
    budget = record["budget_min"]
    record.update({"device": load_config(out).training.get("device", device), "cores": _cores(),
                   "stages_seconds": totals, "total_seconds": total,
                   "simulation_cache": os.environ[SIMULATION_CACHE_ENV],
                   "within_budget": None if budget is None else total <= 60 * budget,
                   "finished": True, "finished_utc": _now()})
    _write_record(out, record)
    (out / "MODEL_CARD.md").write_text(render_card(out))
    return record


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def describe_build(record: dict[str, Any]) -> str:
    """One line for the model card and the console: stage times, device, budget."""
    stages = ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in record["stages_seconds"].items())
    runs = len(record.get("invocations", [])) or 1
    cached = sum(entry.get("cached", False) for invocation in record.get("invocations", [])
                 for entry in invocation.get("simulated_sets", []))
    notes = [f"over {runs} runs of the command" if runs > 1 else "",
             f"{cached} simulated set(s) found in the cache" if cached else ""]
    budget = ""
    if record.get("budget_min") is not None:
        verdict = "within" if record["within_budget"] else "over"
        budget = f"; {verdict} its {record['budget_min']:g}-minute budget"
    extra = "; ".join(note for note in notes if note)
    return (f"built end to end in {record['total_seconds'] / 60:.1f} min ({stages} min"
            f"{'; ' + extra if extra else ''}) on `{record['device']}`, {record['cores']} cores{budget}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lensnet.build",
        description="Simulate, train and evaluate a model in one command, into one folder (weights, "
                    "evaluation.json, build.json with the time of each stage, MODEL_CARD.md).",
        epilog="Simulated sets go to $LENSNET_SIMULATION_CACHE, else OUT/data. Run the same command again to "
               "resume a killed build. The recipe's evaluate mapping and the stages: "
               "python -c 'import lensnet.build; help(lensnet.build)'.")
    parser.add_argument("--config", required=True, help="recipe YAML: lensnet.train keys plus an evaluate mapping")
    parser.add_argument("--out", help="output folder (default: the recipe's out)")
    parser.add_argument("--budget-min", type=float, help="minutes the whole build should take (recorded in "
                                                         "build.json and the card, and reported when exceeded)")
    parser.add_argument("--device", choices=DEVICES, help="where to train and evaluate (default: the recipe's "
                                                          "device, else auto: CUDA when present)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m lensnet.build " + " ".join(shlex.quote(arg) for arg in (argv or sys.argv[1:]))
    try:
        recipe = load_recipe(args.config)
        out = args.out or recipe.train.get("out")
        if not out:
            raise ValueError(f"no output folder: give --out or set out in {args.config}")
        record = build(recipe, out, command, args.budget_min, args.device)
    except (ValueError, FileNotFoundError) as error:
        print(f"python -m lensnet.build: error: {error}", file=sys.stderr)
        return 2
    print(describe_build(record))
    if record.get("within_budget") is False:
        print(f"over budget: {record['total_seconds'] / 60:.1f} min against {record['budget_min']:g}")
    print(f"model card: {Path(out) / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
