"""Train several architectures (and training sets) with one recipe and compare them side by side.

``python -m lensnet.compare --config lensnet/weights/population1/train.yaml
--architectures lensresnet-fast,lensresnet-tiny --out runs/compare``

Every architecture gets the recipe of ``--config`` (flags override it) with only the
architecture changed: the same training and test stamps, normalisation, augmentation,
schedule, epochs and seed. ``--variant NAME=SPEC`` (repeatable) also varies the training
data: e.g. ``--variant lenstronomy=DIR_A --variant galsim=DIR_B --variant both='[DIR_A, DIR_B]'``
trains on each simulator alone and on both, which measures how a model trained on one
simulator fares on the other (leave one simulator out).

Simulated data sets (``{"simulate": {...}}``) are generated once into ``OUT/data/`` and read
back by every run, so all of them see identical pixels. Each run is trained into
``OUT/<architecture>/`` (or ``OUT/<variant>/<architecture>/``); a rerun skips finished ones,
so an interrupted comparison resumes. Each is then measured on every member of
``test_data`` (a spec or a list of specs, e.g. one held-out set per simulator):

* AUROC with its bootstrap interval, TPR0 and TPR10;
* completeness for θE > 1.4″ and arc S/N > 20 at exactly FPR ≤ 1% on that test set, and
  at the model's own threshold (set at ``target_fpr`` on its validation split);
* CPU images/s of the forward pass as the survey pipeline runs it (channels_last, batch
  32, on this machine's cores), and the training time and device.

The table goes to ``OUT/comparison.json`` and ``OUT/comparison.md``; a model card
(``python -m lensnet.card``) shows a ``comparison.json`` found next to a checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from lensnet.checkpoint import CONFIG_FILE, LoadedModel, load_model
from lensnet.crosssim import completeness_at_fpr, headline
from lensnet.data import SIMULATION_CACHE_ENV, cache_name, describe_spec, materialise, stamp_set_from_spec
from lensnet.evaluate import score_stamps
from lensnet.models import list_models
from lensnet.predict import forward_images_per_second
from lensnet.train import TrainConfig, jsonable, train

__all__ = ["COMPARISON_FILE", "compare", "completeness_at_fpr", "materialise", "render_table"]

COMPARISON_FILE = "comparison.json"
#: Bootstrap resamples of the comparison's intervals.
N_BOOTSTRAP = 300


def cpu_images_per_second(loaded: LoadedModel, threads: int | None = None, batch: int = 32,
                          images: int = 256) -> float:
    """Forward images/s of a CPU model, run as the survey pipeline runs it (channels_last)."""
    if threads:
        torch.set_num_threads(threads)
    loaded.module.to(memory_format=torch.channels_last)
    size = loaded.config.stamp_size_px
    inputs = torch.randn(images, len(loaded.config.bands), size, size, generator=torch.Generator().manual_seed(0))
    return forward_images_per_second(loaded, inputs, batch)


def measure(checkpoint: Path, tests: dict[str, Any], device: torch.device, threads: int | None) -> dict[str, Any]:
    """The comparison row of one trained checkpoint: its numbers on every test set."""
    loaded = load_model(checkpoint, device=device)
    results = {}
    for label, test in tests.items():
        logits = score_stamps(loaded, test.stamps, device)
        row = headline(test.truth, logits, loaded.config.threshold, N_BOOTSTRAP)
        row.pop("sanity")
        row.pop("sanity_by_truth")
        results[label] = row
    training = loaded.config.training or {}
    history = training.get("history", [])
    best = min(history, key=lambda entry: entry["val_loss"]) if history else {}
    return {
        "architecture": loaded.config.architecture,
        "parameters": sum(p.numel() for p in loaded.module.parameters()),
        "test": results,
        "cpu_images_per_s": cpu_images_per_second(loaded if device.type == "cpu" else
                                                  load_model(checkpoint, device="cpu"), threads),
        "best_epoch": best.get("epoch", len(history)), "train_seconds": round(sum(h.get("seconds", 0)
                                                                                for h in history), 1),
        "device": training.get("device"),
    }


def compare(base: TrainConfig, architectures: list[str], out: str | Path, command: str = "",
            note: str = "", variants: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train (or reuse) every architecture on every training-data variant; write ``OUT/comparison.{json,md}``.

    ``variants`` maps a name to a training-data spec (default: the recipe's own data,
    unnamed); ``note`` is printed under the table (e.g. what the budget means).
    """
    unknown = sorted(set(architectures) - set(list_models()))
    if unknown:
        raise ValueError(f"unknown architecture(s) {', '.join(unknown)}; registered: {', '.join(list_models())}")
    if base.test_data is None:
        raise ValueError("a comparison needs test_data (held-out stamps) in the config or --test-data")
    variants = dict(variants) if variants else {"": base.data}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trained = {name: _materialise(spec, out / "data" / (f"train-{name}" if name else "train"))
               for name, spec in variants.items()}
    test_specs = base.test_data if isinstance(base.test_data, list) else [base.test_data]
    test_dirs = _materialise(test_specs, out / "data" / "test")
    device = torch.device("cuda" if base.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if base.device == "auto" else base.device))
    runs = []
    for name, data in trained.items():
        for architecture in architectures:
            directory = out / name / architecture if name else out / architecture
            config = dataclasses.replace(base, architecture=architecture, arch_kwargs={}, out=str(directory),
                                         name=architecture, data=data, test_data=None, resume=True, init_from=None)
            if not _finished(directory, config.epochs):
                print(f"== {name + ' / ' if name else ''}{architecture}", flush=True)
                train(config, command)
            runs.append((name, directory))
    tests = {describe_spec(spec): stamp_set_from_spec(path) for spec, path in zip(test_specs, test_dirs, strict=True)}
    rows = []
    for name, directory in runs:
        row = measure(directory, tests, device, base.threads)
        row["variant"] = name
        row["train_data"] = describe_spec(variants[name])
        rows.append(row)
    result = {
        "recipe": jsonable(dataclasses.asdict(dataclasses.replace(base, out=str(out)))),
        "data": {"train": {name: spec for name, spec in variants.items()}, "test": test_specs,
                 "n_test": {label: len(test.labels) for label, test in tests.items()}},
        "command": command,
        "note": note,
        "measured_on": _machine(),
        "rows": rows,
    }
    (out / COMPARISON_FILE).write_text(json.dumps(jsonable(result), indent=2) + "\n")
    (out / "comparison.md").write_text(render_table(result) + "\n")
    return result


def _materialise(spec: Any, directory: Path) -> Any:
    """Simulated specs on disk: in the simulation cache when one is set, else in ``directory``."""
    if isinstance(spec, list):
        return [_materialise(member, directory / str(index)) for index, member in enumerate(spec)]
    cache = os.environ.get(SIMULATION_CACHE_ENV)
    if cache and isinstance(spec, dict):
        return materialise(spec, Path(cache) / cache_name(spec["simulate"]))
    return materialise(spec, directory)


def _finished(directory: Path, epochs: int) -> bool:
    """A checkpoint whose ``last.pt`` has reached the last epoch of this schedule."""
    state = directory / "last.pt"
    if not (state.is_file() and (directory / CONFIG_FILE).is_file()):
        return False
    saved = torch.load(state, map_location="cpu", weights_only=True)  # never unpickle code
    return saved.get("epochs") == epochs and saved.get("epoch") == epochs - 1


def _machine() -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def _interval(entry: dict | None) -> str:
    if not entry:
        return "—"
    if not entry.get("interval_95"):
        return f"{entry['value']:.4f}"
    low, high = entry["interval_95"]
    return f"{entry['value']:.4f} [{low:.4f}, {high:.4f}]"


def render_table(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table: one row per run, AUROC and completeness per test set."""
    rows = result["rows"]
    labels = list(rows[0]["test"]) if rows else []
    first = labels[0] if labels else None
    rows = sorted(rows, key=lambda row: -min(row["test"][label]["auroc"]["value"] for label in labels))
    with_variants = any(row.get("variant") for row in rows)
    header = ["training data"] if with_variants else []
    header += ["architecture", "parameters"]
    for label in labels:
        header += [f"AUROC on {label} [95%]", f"completeness θE>1.4″, S/N>20 at FPR ≤ 1% on {label}"]
    header += ["model threshold: completeness (FPR) on " + (first or ""), "CPU images/s", "best epoch", "trained on"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [row.get("train_data", "")] if with_variants else []
        cells += [row["architecture"], f"{row['parameters']:,}"]
        for label in labels:
            entry = row["test"][label]
            bright = entry.get("completeness_bright_at_fpr") or {}
            cells += [_interval(entry.get("auroc")),
                      f"{_interval(bright)} ({bright.get('n_detected', 0)}/{bright.get('n_lenses', 0)})"]
        own = row["test"][first] if first else {}
        at_threshold = own.get("completeness_bright_at_threshold")
        cells += [f"{'—' if at_threshold is None else f'{at_threshold:.3f}'} ({own.get('fpr_at_threshold', 0):.4f})",
                  f"{row['cpu_images_per_s']:,.0f}", str(row["best_epoch"]), str(row["device"])]
        lines.append("| " + " | ".join(cells) + " |")
    recipe = result["recipe"]
    lines.append("")
    lines.append(f"Recipe: {recipe['epochs']} epochs, batch {recipe['batch_size']}, learning rate "
                 f"{recipe['learning_rate']}, seed {recipe['seed']}; train data {json.dumps(result['data']['train'])}; "
                 f"test data {json.dumps(result['data']['test'])} ({json.dumps(result['data']['n_test'])} stamps). "
                 f"CPU images/s measured on {result['measured_on']}. Command: `{result['command']}`.")
    if result.get("note"):
        lines += ["", result["note"]]
    return "\n".join(lines)


def _spec(text: str) -> Any:
    value = yaml.safe_load(text) if text.lstrip().startswith(("{", "[")) else text
    return value


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, list[str], str, str, dict[str, Any] | None]:
    parser = argparse.ArgumentParser(prog="python -m lensnet.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="training recipe (YAML with TrainConfig keys)")
    parser.add_argument("--architectures", required=True, help="comma-separated registered architectures")
    parser.add_argument("--out", required=True, help="directory for the data, the checkpoints and the table")
    parser.add_argument("--data", help="training data: a stamp-set directory, or JSON/YAML {simulate: {...}} or a list")
    parser.add_argument("--test-data", help="held-out data, as --data; a list gives one column per member")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=SPEC",
                        help="a named training-data variant (repeatable), e.g. galsim=data/gs-train; every "
                             "architecture is trained on each")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--device")
    parser.add_argument("--threads", type=int, help="torch threads for training and the CPU images/s")
    parser.add_argument("--note", default="", help="a remark printed under the table (e.g. on the budget)")
    args = parser.parse_args(argv)
    try:
        values = yaml.safe_load(Path(args.config).read_text()) or {}
    except FileNotFoundError:
        parser.error(f"--config {args.config}: no such file")
    except yaml.YAMLError as error:
        parser.error(f"--config {args.config} is not valid YAML: {' '.join(str(error).split())}")
    for key in ("data", "test_data"):
        text = getattr(args, key)
        if text is not None:
            values[key] = _spec(text)
    for key in ("epochs", "batch_size", "learning_rate", "device", "threads"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    values["out"] = args.out
    variants = {}
    for item in args.variant:
        name, separator, text = item.partition("=")
        if not separator or not name:
            parser.error(f"--variant must be NAME=SPEC, not {item!r}")
        variants[name] = _spec(text)
    architectures = [item.strip() for item in args.architectures.split(",") if item.strip()]
    return TrainConfig(**values), architectures, args.out, args.note, variants or None


def main(argv: list[str] | None = None) -> int:
    base, architectures, out, note, variants = parse_args(argv)
    command = "python -m lensnet.compare " + " ".join(shlex.quote(arg) for arg in (argv or sys.argv[1:]))
    try:
        result = compare(base, architectures, out, command, note, variants)
    except (ValueError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"python -m lensnet.compare: error: {message}", file=sys.stderr)
        return 2
    print(render_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
