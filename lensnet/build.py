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

Nothing is lost when a run is killed (a batch job's walltime, a 10-minute limit): the same
command again reuses every simulated set and resumes training from ``DIR/last.pt``.
``--budget-min`` states the time the whole build is meant to fit in; ``build.json`` and the
exit message say whether it did.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from lensnet.data import SIMULATION_CACHE_ENV, DataSpec, check_spec, describe_spec

__all__ = ["BUILD_FILE", "BuildRecipe", "build", "load_recipe", "main"]

#: Written into the output folder; the model card reads it.
BUILD_FILE = "build.json"


@dataclasses.dataclass
class BuildRecipe:
    """A training recipe plus the sets to evaluate on."""

    train: dict[str, Any]
    evaluate_data: list[DataSpec]
    baseline: str | None = None
    bootstrap: int = 1000


def load_recipe(path: str | Path) -> BuildRecipe:
    """Read ``path``: a lensnet.train recipe with an optional ``evaluate`` mapping.

    Raises:
        ValueError: not a mapping, unknown keys, or no set to evaluate on.
        FileNotFoundError: no such file.
    """
    from lensnet.train import config_from_mapping

    text = Path(path).read_text()
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {' '.join(str(error).split())}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} must hold a mapping of key: value")
    evaluate = loaded.pop("evaluate", None) or {}
    if not isinstance(evaluate, dict):
        raise ValueError(f"{path}: evaluate must be a mapping with data, baseline and bootstrap")
    unknown = sorted(set(evaluate) - {"data", "baseline", "bootstrap"})
    if unknown:
        raise ValueError(f"{path}: unknown evaluate key(s) {', '.join(unknown)}; known: baseline, bootstrap, data")
    if "data" not in loaded:
        raise ValueError(f"{path}: no training data (data: ...)")
    try:
        config_from_mapping({"out": "", **loaded})
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    data = evaluate.get("data", loaded.get("test_data"))
    if data is None:
        raise ValueError(f"{path}: nothing to evaluate on; give evaluate.data or test_data")
    for spec in [loaded["data"], loaded.get("test_data"), data]:
        if spec is not None:
            try:
                check_spec(spec)
            except ValueError as error:
                raise ValueError(f"{path}: {error}") from None
    bootstrap = evaluate.get("bootstrap", 1000)
    if not isinstance(bootstrap, int) or isinstance(bootstrap, bool) or bootstrap < 0:
        raise ValueError(f"{path}: evaluate.bootstrap must be a whole number >= 0, not {bootstrap!r}")
    return BuildRecipe(train=loaded, evaluate_data=data if isinstance(data, list) else [data],
                       baseline=evaluate.get("baseline"), bootstrap=bootstrap)


def _specs(value: Any) -> list[DataSpec]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _unique(specs: list[DataSpec]) -> list[DataSpec]:
    seen: list[str] = []
    unique = []
    for spec in specs:
        key = json.dumps(spec, sort_keys=True)
        if key not in seen:
            seen.append(key)
            unique.append(spec)
    return unique


def simulate_all(specs: list[DataSpec]) -> list[dict[str, Any]]:
    """Simulate (or find in the cache) every simulate spec; seconds per set."""
    from lensnet.data import cache_name, materialise

    cache = Path(os.environ[SIMULATION_CACHE_ENV])
    timings = []
    for spec in specs:
        if not isinstance(spec, dict):
            continue  # a directory of stamps: nothing to simulate
        started = time.perf_counter()
        materialise(spec, cache / cache_name(spec["simulate"]))
        timings.append({"set": describe_spec(spec), "n": spec["simulate"]["n"],
                        "seconds": round(time.perf_counter() - started, 1)})
        print(f"simulated {describe_spec(spec)}: {timings[-1]['seconds']:.0f} s", flush=True)
    return timings


def build(recipe: BuildRecipe, out: str | Path, command: str = "", budget_min: float | None = None,
          device: str = "auto") -> dict[str, Any]:
    """Run the four stages (module docstring) into ``out``; return what ``build.json`` holds.

    Simulated sets go to ``$LENSNET_SIMULATION_CACHE`` when it is set, else to ``out/data``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    user_cache = os.environ.get(SIMULATION_CACHE_ENV)
    os.environ[SIMULATION_CACHE_ENV] = user_cache or str(out / "data")
    try:
        return _stages(recipe, out, command, budget_min, device)
    finally:
        if user_cache is None:
            del os.environ[SIMULATION_CACHE_ENV]


def _stages(recipe: BuildRecipe, out: Path, command: str, budget_min: float | None, device: str) -> dict[str, Any]:
    from lensnet.card import render_card
    from lensnet.checkpoint import load_config
    from lensnet.evaluate import EvaluationSettings, evaluate_sets
    from lensnet.train import config_from_mapping, train

    config = config_from_mapping({**recipe.train, "out": str(out), "resume": True, "device": device})
    stages: dict[str, float] = {}
    began = time.perf_counter()

    started = time.perf_counter()
    sets = simulate_all(_unique(_specs(config.data) + _specs(config.test_data) + recipe.evaluate_data))
    stages["simulate"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    train(config, command)
    stages["train"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    settings = EvaluationSettings(target_fpr=config.target_fpr, n_bootstrap=recipe.bootstrap)
    evaluate_sets(out, recipe.evaluate_data, out / "evaluation", settings, device=device, command=command,
                  record=True, baseline=recipe.baseline)
    stages["evaluate"] = round(time.perf_counter() - started, 1)

    total = round(time.perf_counter() - began, 1)
    record = {"command": command, "device": load_config(out).training.get("device", device), "cores": os.cpu_count(),
              "stages_seconds": stages, "total_seconds": total, "simulated_sets": sets,
              "simulation_cache": os.environ[SIMULATION_CACHE_ENV],
              "budget_min": budget_min, "within_budget": None if budget_min is None else total <= 60 * budget_min,
              "finished_utc": datetime.now(UTC).isoformat(timespec="seconds")}
    (out / BUILD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    (out / "MODEL_CARD.md").write_text(render_card(out))
    return record


def describe_build(record: dict[str, Any]) -> str:
    """One line for the model card and the console: stage times, device, budget."""
    stages = ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in record["stages_seconds"].items())
    budget = ""
    if record.get("budget_min") is not None:
        verdict = "within" if record["within_budget"] else "over"
        budget = f"; {verdict} its {record['budget_min']:g}-minute budget"
    return (f"built end to end in {record['total_seconds'] / 60:.1f} min ({stages} min) on `{record['device']}`, "
            f"{record['cores']} cores{budget}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lensnet.build", description=__doc__.splitlines()[0],
                                     epilog="Stages, resumption and the recipe's evaluate mapping: see the module "
                                            "docstring (python -c 'import lensnet.build; help(lensnet.build)').")
    parser.add_argument("--config", required=True, help="recipe YAML: lensnet.train keys plus an evaluate mapping")
    parser.add_argument("--out", help="output folder (default: the recipe's out); run the same command again to "
                                      "resume an interrupted build")
    parser.add_argument("--budget-min", type=float, help="minutes the whole build should take (recorded, and "
                                                         "reported when exceeded)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
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
    except (ValueError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"python -m lensnet.build: error: {message}", file=sys.stderr)
        return 2
    print(describe_build(record))
    print(f"model card: {Path(out) / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
