"""Train several architectures with one recipe on the same data and compare them side by side.

``python -m lensnet.compare --config lensnet/weights/default/train.yaml
--architectures lensresnet-small,lensresnet-tiny,ou-66,deeplens --out runs/compare``

Every architecture gets the recipe of ``--config`` (flags override it) with only the
architecture changed: the same training and test stamps, normalisation, augmentation,
schedule, epochs and seed. A simulated data set (``{"simulate": {...}}``) is generated
once into ``OUT/data/`` and read back by every run, so all of them see identical pixels.
Each architecture is trained into ``OUT/<architecture>/`` (a rerun skips finished ones,
so an interrupted comparison resumes) and then measured on the test set:

* AUROC with its bootstrap interval, TPR0 and TPR10;
* completeness for θE > 1.4″ and arc S/N > 20 at the model's own threshold (set at
  ``target_fpr`` on its validation split) and at exactly FPR ≤ 1% on the test set;
* CPU images/s of the forward pass as the survey pipeline runs it (channels_last, batch
  32, on this machine's cores), and the training time and device.

The table goes to ``OUT/comparison.json`` and ``OUT/comparison.md``; a model card
(``python -m lensnet.card``) shows a ``comparison.json`` found next to a checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from lensnet.checkpoint import CONFIG_FILE, LoadedModel, load_model
from lensnet.data import StampSet, stamp_set_from_spec
from lensnet.evaluate import evaluation_report, score_stamps
from lensnet.models import list_models
from lensnet.train import TrainConfig, _jsonable, train

COMPARISON_FILE = "comparison.json"
#: Where completeness is quoted (the CMU DeepLens headline population).
BRIGHT = {"theta_e_arcsec": 1.4, "arc_snr": 20.0}


def completeness_at_fpr(labels: np.ndarray, logits: np.ndarray, selected: np.ndarray, fpr: float = 0.01) -> dict:
    """Share of the ``selected`` lenses scored above the strictest threshold that admits at
    most ``fpr`` of the non-lenses (ties at the threshold count as not detected)."""
    negatives = np.sort(np.asarray(logits)[labels == 0])[::-1]
    if len(negatives) == 0:
        raise ValueError("completeness at a false positive rate needs non-lenses")
    allowed = int(np.floor(fpr * len(negatives)))
    threshold = negatives[allowed] if allowed < len(negatives) else -np.inf
    wanted = selected & (labels == 1)
    detected = int((np.asarray(logits)[wanted] > threshold).sum())
    return {"value": detected / max(int(wanted.sum()), 1), "n_lenses": int(wanted.sum()), "n_detected": detected,
            "fpr": float((negatives > threshold).mean()), "logit_threshold": float(threshold)}


def cpu_images_per_second(loaded: LoadedModel, threads: int | None = None, batch: int = 32,
                          images: int = 256) -> float:
    """Forward images/s of a CPU model, run as the survey pipeline runs it (channels_last)."""
    from pipeline.inference import forward_images_per_second

    if threads:
        torch.set_num_threads(threads)
    loaded.module.to(memory_format=torch.channels_last)
    size = loaded.config.stamp_size_px
    inputs = torch.randn(images, len(loaded.config.bands), size, size, generator=torch.Generator().manual_seed(0))
    return forward_images_per_second(loaded, inputs, batch)


def materialise(spec: str | dict, directory: Path) -> str | dict:
    """A simulated data spec written once to ``directory`` (reused when there); paths pass through."""
    if not isinstance(spec, dict):
        return spec
    from lensnet.simulate import generate_dataset

    settings = dict(spec["simulate"])
    marker = directory / "spec.json"
    if not (marker.is_file() and json.loads(marker.read_text()) == settings):
        generate_dataset(directory, **settings)
        marker.write_text(json.dumps(settings, sort_keys=True) + "\n")
    return str(directory)


def measure(checkpoint: Path, test: StampSet, device: torch.device, threads: int | None) -> dict[str, Any]:
    """The comparison row of one trained checkpoint."""
    loaded = load_model(checkpoint, device=device)
    logits = score_stamps(loaded, test.stamps, device)
    labels = test.truth["is_lens"].to_numpy().astype(int)
    report = evaluation_report(test.truth, logits, loaded.config.threshold)
    bright = np.ones(len(labels), dtype=bool)
    for column, lower in BRIGHT.items():
        bright &= test.truth[column].to_numpy() > lower
    training = loaded.config.training or {}
    history = training.get("history", [])
    return {
        "architecture": loaded.config.architecture,
        "parameters": sum(p.numel() for p in loaded.module.parameters()),
        "auroc": report["auroc"], "average_precision": report["average_precision"],
        "tpr0": report["tpr0"], "tpr10": report["tpr10"],
        "fpr_at_threshold": report["fpr_at_threshold"],
        "completeness_bright_at_threshold": report.get("completeness_theta_e_gt_1.4_snr_gt_20"),
        "completeness_bright_at_test_fpr_1pc": completeness_at_fpr(labels, logits, bright, 0.01),
        "completeness_all_at_test_fpr_1pc": completeness_at_fpr(labels, logits, np.ones_like(bright), 0.01),
        "cpu_images_per_s": cpu_images_per_second(loaded if device.type == "cpu" else
                                                  load_model(checkpoint, device="cpu"), threads),
        "best_epoch": len(history), "train_seconds": round(sum(h.get("seconds", 0) for h in history), 1),
        "device": training.get("device"),
    }


def compare(base: TrainConfig, architectures: list[str], out: str | Path, command: str = "",
            note: str = "") -> dict[str, Any]:
    """Train (or reuse) every architecture and write ``OUT/comparison.{json,md}``.

    ``note`` is printed under the table (e.g. what the budget of this comparison means).
    """
    unknown = sorted(set(architectures) - set(list_models()))
    if unknown:
        raise ValueError(f"unknown architecture(s) {', '.join(unknown)}; registered: {', '.join(list_models())}")
    if base.test_data is None:
        raise ValueError("a comparison needs test_data (held-out stamps) in the config or --test-data")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = materialise(base.data, out / "data" / "train")
    test_spec = materialise(base.test_data, out / "data" / "test")
    device = torch.device("cuda" if base.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if base.device == "auto" else base.device))
    rows = []
    for architecture in architectures:
        directory = out / architecture
        config = dataclasses.replace(base, architecture=architecture, arch_kwargs={}, out=str(directory),
                                     name=architecture, data=data, test_data=None, resume=True, init_from=None)
        if not _finished(directory, config.epochs):
            print(f"== {architecture}", flush=True)
            train(config, command)
        rows.append(directory)
    test = stamp_set_from_spec(test_spec)
    result = {
        "recipe": _jsonable(dataclasses.asdict(dataclasses.replace(base, out=str(out)))),
        "data": {"train": base.data, "test": base.test_data, "n_test": len(test.labels)},
        "command": command,
        "note": note,
        "measured_on": _machine(),
        "rows": [measure(directory, test, device, base.threads) for directory in rows],
    }
    (out / COMPARISON_FILE).write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    (out / "comparison.md").write_text(render_table(result) + "\n")
    return result


def _finished(directory: Path, epochs: int) -> bool:
    """A checkpoint whose ``last.pt`` has reached the last epoch of this schedule."""
    state = directory / "last.pt"
    if not (state.is_file() and (directory / CONFIG_FILE).is_file()):
        return False
    saved = torch.load(state, map_location="cpu", weights_only=False)
    return saved.get("epochs") == epochs and saved.get("epoch") == epochs - 1


def _machine() -> str:
    import platform

    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def _interval(entry: dict) -> str:
    low, high = entry["interval_95"]
    return f"{entry['value']:.4f} [{low:.4f}, {high:.4f}]"


def render_table(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table, best AUROC first."""
    rows = sorted(result["rows"], key=lambda row: -row["auroc"]["value"])
    lines = ["| architecture | parameters | AUROC [95%] | TPR10 | completeness θE>1.4″, S/N>20, test FPR ≤ 1% "
             "| same, at the model's threshold (test FPR) | CPU images/s | best epoch | trained on |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        at_fpr = row["completeness_bright_at_test_fpr_1pc"]
        at_threshold = row["completeness_bright_at_threshold"] or {}
        lines.append(
            f"| {row['architecture']} | {row['parameters']:,} | {_interval(row['auroc'])} | {row['tpr10']['value']:.3f} "
            f"| {at_fpr['value']:.3f} ({at_fpr['n_detected']}/{at_fpr['n_lenses']}) "
            f"| {at_threshold.get('value', float('nan')):.3f} ({row['fpr_at_threshold']:.4f}) "
            f"| {row['cpu_images_per_s']:,.0f} | {row['best_epoch']} | {row['device']} |")
    recipe = result["recipe"]
    lines.append("")
    lines.append(f"Recipe: {recipe['epochs']} epochs, batch {recipe['batch_size']}, learning rate "
                 f"{recipe['learning_rate']}, seed {recipe['seed']}; train data {json.dumps(result['data']['train'])}; "
                 f"test data {json.dumps(result['data']['test'])} ({result['data']['n_test']:,} stamps). "
                 f"CPU images/s measured on {result['measured_on']}. Command: `{result['command']}`.")
    if result.get("note"):
        lines += ["", result["note"]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, list[str], str, str]:
    parser = argparse.ArgumentParser(prog="python -m lensnet.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="training recipe (YAML with TrainConfig keys)")
    parser.add_argument("--architectures", required=True, help="comma-separated registered architectures")
    parser.add_argument("--out", required=True, help="directory for the data, the checkpoints and the table")
    parser.add_argument("--data", help="training data: a stamp-set directory or JSON {\"simulate\": {...}}")
    parser.add_argument("--test-data", help="held-out data, as --data")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--device")
    parser.add_argument("--threads", type=int, help="torch threads for training and the CPU images/s")
    parser.add_argument("--note", default="", help="a remark printed under the table (e.g. on the budget)")
    args = parser.parse_args(argv)
    values = yaml.safe_load(Path(args.config).read_text()) or {}
    for key in ("data", "test_data"):
        text = getattr(args, key)
        if text is not None:
            values[key] = json.loads(text) if text.lstrip().startswith("{") else text
    for key in ("epochs", "batch_size", "learning_rate", "device", "threads"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    values["out"] = args.out
    architectures = [item.strip() for item in args.architectures.split(",") if item.strip()]
    return TrainConfig(**values), architectures, args.out, args.note


def main(argv: list[str] | None = None) -> int:
    base, architectures, out, note = parse_args(argv)
    command = "python -m lensnet.compare " + " ".join(shlex.quote(arg) for arg in (argv or sys.argv[1:]))
    result = compare(base, architectures, out, command, note)
    print(render_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
