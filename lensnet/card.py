"""Write a checkpoint's model card from the numbers recorded in its config.

``python -m lensnet.card lensnet/weights/default`` rewrites ``MODEL_CARD.md`` so that the
card never quotes a figure that the training run did not measure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lensnet.checkpoint import WEIGHTS_FILE, load_config, resolve_checkpoint, sha256_of
from lensnet.models import create_model


def _interval(entry: dict) -> str:
    low, high = entry["interval_95"]
    return f"{entry['value']:.4f} (95% bootstrap interval {low:.4f}–{high:.4f})"


def _engines(data: object) -> str:
    members = data if isinstance(data, list) else [data]
    names = []
    for member in members:
        if isinstance(member, dict) and "simulate" in member:
            names.append(member["simulate"].get("engine", "lenstronomy"))
        else:
            names.append(f"stamps in {member}")
    return " and ".join(dict.fromkeys(names))


def _held_out(attrs: dict) -> str:
    members = attrs.get("members") if isinstance(attrs, dict) else None
    if not members:
        return _compact(attrs)
    return " + ".join(f"{m.get('engine', 'lenstronomy')}/{m.get('profile')}/seed {m.get('seed')}"
                      f"{'/population ' + str(m['population']) if m.get('population', 1) != 1 else ''} (n={m.get('n')})"
                      for m in members)


def _populations(data: object) -> list[str]:
    """The line on the simulated populations of a data spec (population 1 when a spec names none)."""
    members = data if isinstance(data, list) else [data]
    populations = sorted({member["simulate"].get("population", 1) for member in members
                          if isinstance(member, dict) and "simulate" in member})
    if not populations:
        return []
    described = {1: "population 1 (a deflector's size follows its Einstein radius, so large-θE deflectors are larger "
                    "than any non-lens of their brightness: a cue real lenses do not offer)",
                 2: "population 2 (deflectors follow the non-lens early types' size-luminosity relation)"}
    return ["- Simulated " + " and ".join(described.get(p, f"population {p}") for p in populations) + "."]


def _shipped_with_weights(sha256: str) -> str | None:
    """The shipped model whose weights have this sha256, if any."""
    from lensnet.checkpoint import SHIPPED_DIR

    for directory in sorted(SHIPPED_DIR.iterdir()):
        if (directory / WEIGHTS_FILE).is_file() and sha256_of(directory / WEIGHTS_FILE) == sha256:
            return directory.name
    return None


def _parent(recipe: dict, training: dict) -> list[str]:
    """The recipe line naming the checkpoint a fine-tuned model started from (and, when that was a copy
    of a model shipped here, which one, found by its weights)."""
    name = recipe.get("init_from")
    if not name:
        return []
    from lensnet.checkpoint import SHIPPED_DIR

    parent = training.get("parent", {})
    shipped = str(name) if "/" not in str(name) and (SHIPPED_DIR / str(name)).is_dir() else None
    notes = [f"weights sha256 {parent['weights_sha256'][:12]}…"] if parent.get("weights_sha256") else []
    if shipped is None and parent.get("weights_sha256"):
        shipped = _shipped_with_weights(parent["weights_sha256"])
        if shipped:
            notes.append(f"the weights shipped as `{shipped}`")
    digest = f" ({', '.join(notes)})" if notes else ""
    card = (f"; its card: `lensnet/weights/{shipped}/MODEL_CARD.md`"
            if shipped and (SHIPPED_DIR / shipped / "MODEL_CARD.md").is_file() else "")
    return [f"- Fine-tuned from `{name}`{digest}{card}; the figures below are this model's own."]


def _reproduce(directory: Path, recipe: dict, history: list, training: dict) -> list[str]:
    """How to train it again: the end-to-end build that made it (``build.json``), ``make train-default``
    for the shipped models, else the recorded command."""
    from lensnet.build import BUILD_FILE, describe_build
    from lensnet.checkpoint import SHIPPED_DIR

    path = directory / BUILD_FILE
    record = json.loads(path.read_text()) if path.is_file() else {}
    if record.get("finished"):
        return [f"- Reproduce: `{record['command']}` (simulate, train, evaluate); {describe_build(record)}."]
    if directory.resolve().parent == SHIPPED_DIR.resolve():
        return [f"- Reproduce: `make train-default`"
                f"{' (the stages it was fine-tuned from first, then this one)' if recipe.get('init_from') else ''}"
                f"{_duration(history, training)}."]
    return [f"- Reproduce: the command above{_duration(history, training)}."]


def _faint_lenses(recipe: dict, data: dict) -> list[str]:
    """The line saying which lenses ``train_arc_snr_min`` kept out of training, if any."""
    cut = recipe.get("train_arc_snr_min") or 0.0
    if cut <= 0:
        return []
    return [f"- Lenses with arc S/N below {cut:g} left out of training and validation "
            f"({data.get('faint_lenses_left_out', '?')} of them); the held-out sets below keep every lens."]


def _compact(data: object) -> str:
    return json.dumps(data, separators=(", ", ": "))


def _duration(history: list, training: dict) -> str:
    seconds = sum(entry.get("seconds", 0) for entry in history)
    if not seconds:
        return ""
    return f"; the recorded run trained for {seconds / 60:.0f} min on `{training.get('device', '?')}`"


def render_card(directory: str | Path) -> str:
    directory = resolve_checkpoint(directory)
    config = load_config(directory)
    training, metrics = config.training, config.metrics
    recipe = training.get("recipe", {})
    parameters = sum(p.numel() for p in create_model(config.architecture, len(config.bands), **config.arch_kwargs)
                     .parameters())
    history = training.get("history", [])
    best = min(history, key=lambda entry: entry["val_loss"]) if history else {}
    bright = metrics.get("completeness_theta_e_gt_1.4_snr_gt_20", {})
    lines = [
        f"# Model card: `{config.name}`",
        "",
        "## What it is",
        f"- Architecture `{config.architecture}`"
        + (f" with {', '.join(f'`{key}: {value}`' for key, value in config.arch_kwargs.items())}"
           if config.arch_kwargs else "")
        + f" ({parameters:,} parameters), one logit per stamp; score = sigmoid(logit).",
        f"- Input: bands {', '.join(config.bands)} (in this order), {config.stamp_size_px}×{config.stamp_size_px} px "
        f"at {config.pixel_scale_arcsec}″/px, normalised with `{config.normalisation}` "
        f"{config.normalisation_params or ''}.",
        f"- Decision threshold {config.threshold:.4f}: the score at a false-positive rate of "
        f"{recipe.get('target_fpr', 0.01):.0%} on the validation set.",
        f"- Trained at a lens prevalence of {config.train_prevalence:.3f}; recalibrate scores to a survey's "
        "prevalence with `lensnet.metrics.prior_shift` (Lanusse et al. 2018, eq. 5).",
        "",
        "## Training data",
        f"- Simulated by `lensnet.simulate` ({_engines(recipe.get('data'))}): `{_compact(recipe.get('data'))}`.",
        "- See `lensnet/simulate/objects.py` (lenstronomy) and `lensnet/simulate/galsim_engine/population.py` "
        "(GalSim + caustics) for the populations: lenses from complete rings to single arcs, arc S/N from "
        "invisible to thousands, θE 0.5–4″; ring galaxies, star-forming rings, blue (some tangential) companions, "
        "spirals, mergers, edge-on discs; seeing, depth, PSF wings, correlated noise, neighbours, stars and "
        "detector artefacts varied per stamp.",
        *_populations(recipe.get("data")),
        f"- {training.get('data', {}).get('n_train', '?')} training and {training.get('data', {}).get('n_val', '?')} "
        "validation stamps; augmentation (dihedral symmetries, rotation, zoom 0.8–1.2, shifts) applied alike to "
        "both classes.",
        *_faint_lenses(recipe, training.get("data", {})),
        "",
        "## Recipe",
        f"- {recipe.get('epochs')} epochs, batch {recipe.get('batch_size')}, AdamW (lr {recipe.get('learning_rate')}, "
        f"weight decay {recipe.get('weight_decay')}) with a one-cycle schedule, class-weighted BCE"
        f"{', ' + training['precision'] if training.get('precision') else ''}; "
        f"checkpoint at the best validation loss (epoch {best.get('epoch', '?')}, val loss "
        f"{best.get('val_loss', float('nan')):.4f}).",
        *_parent(recipe, training),
        f"- Trained on `{training.get('device', '?')}` with: `{training.get('command', '')}`.",
        *_reproduce(directory, recipe, history, training),
        "",
        "## Held-out evaluation",
        f"On `{_held_out(metrics.get('data', {}))}` ({metrics.get('n', '?')} stamps, {metrics.get('n_lenses', '?')} "
        "lenses):",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key, label in (("auroc", "AUROC"), ("tpr0", "TPR0"), ("tpr10", "TPR10")):
        if key in metrics:
            lines.append(f"| {label} | {_interval(metrics[key])} |")
    if "fpr_at_threshold" in metrics:
        lines.append(f"| FPR at the threshold | {metrics['fpr_at_threshold']:.4f} |")
    if bright:
        lines.append(f"| completeness at the threshold, θE > 1.4″ and arc S/N > 20 | {bright['value']:.4f} "
                     f"({bright['n_detected']}/{bright['n_lenses']}) |")
    if "completeness_all_lenses" in metrics:
        lines.append(f"| completeness at the threshold, all lenses | {metrics['completeness_all_lenses']:.4f} |")
    if metrics.get("by_data"):
        lines += ["", "The same, held-out set by held-out set:", "",
                  "| held-out set | AUROC | TPR0 | TPR10 | FPR at the threshold | completeness at the threshold, "
                  "θE > 1.4″ and arc S/N > 20 |", "|---|---|---|---|---|---|"]
        for label, part in metrics["by_data"].items():
            bright_part = part.get("completeness_theta_e_gt_1.4_snr_gt_20", {})
            lines.append(f"| {label} | {_interval(part['auroc'])} | {part['tpr0']['value']:.4f} | "
                         f"{part['tpr10']['value']:.4f} | {part['fpr_at_threshold']:.4f} | "
                         f"{bright_part.get('value', float('nan')):.4f} ({bright_part.get('n_detected', 0)}/"
                         f"{bright_part.get('n_lenses', 0)}) |")
    evaluation = directory / "evaluation.json"
    if evaluation.is_file():
        from lensnet.crosssim import render_tables

        result = json.loads(evaluation.read_text())
        weights = directory / WEIGHTS_FILE
        current = sha256_of(weights) if weights.is_file() else None
        measured = (result.get("model") or {}).get("weights_sha256")
        if "sets" in result and measured != current:
            which = "does not say which weights it measured" if measured is None else \
                f"was measured with other weights (sha256 {measured[:12]}…)"
            lines += ["", "## Cross-simulator evaluation",
                      f"`evaluation.json` {which}; run its command again to measure these: "
                      f"`{result.get('command', '')}`."]
        elif "sets" in result:
            lines += [
                "",
                "## Cross-simulator evaluation",
                "Held-out sets of each simulator, measured by `lensnet.evaluate` (bootstrap 95% intervals); the "
                "sanity table counts unmistakable lenses (θE > 1.2″, arc S/N > 50, complete rings, crosses and "
                "long arcs) and each kind of look-alike above the model's threshold. Command: "
                f"`{result.get('command', '')}`.",
                "",
                render_tables(result),
            ]
            if result.get("paired"):
                from lensnet.crosssim import render_paired_sets

                lines += ["", render_paired_sets(result["paired"], config.name)]
        from lensnet.crosssim import stale_labels

        recorded = result.get("surveys") or {}
        stale = sorted(stale_labels(recorded, current))
        surveys = {label + (" (test-time augmentation)" if row.get("tta") else ""): row
                   for label, row in recorded.items() if label not in stale}
        if stale:
            lines += ["", f"Not shown: {len(stale)} mock-survey row(s) not measured with these weights "
                      f"({', '.join(stale)}); record them again with `pipeline.against_truth --record`."]
        if surveys:
            from lensnet.crosssim import render_rows

            lines += ["", "## Mock surveys through run_survey.py",
                      "Whole mock surveys (FITS tiles and a catalogue) run by `run_survey.py` with this model and "
                      "measured against their truth by `python -m pipeline.against_truth` (bootstrap 95% intervals):",
                      "", render_rows(surveys, "survey"), ""]
            lines += [f"- {label}: {row.get('description', '')} Command: `{row.get('command', '')}`."
                      for label, row in surveys.items()]
    comparison = directory / "comparison.json"
    if comparison.is_file():
        from lensnet.compare import render_table

        result = json.loads(comparison.read_text())
        variants = any(row.get("variant") for row in result.get("rows", []))
        lines += [
            "",
            "## Training-data comparison" if variants else "## Architecture comparison",
            f"Every {'training set' if variants else 'architecture'} below was trained with one recipe and measured "
            f"on the same held-out sets by `python -m lensnet.compare` (`{comparison.name}` next to this card; the "
            "budget of that comparison is in its recipe line, and may be smaller than this model's own).",
            "",
            render_table(result),
        ]
    lines += [
        "",
        "## Limits",
        "- Trained on simulations of one ground-based survey profile (`ground-gri`), from two independent "
        "simulators; real images have other PSFs, noise, artefacts and galaxy populations, so expect more false "
        "positives on real data, as every published finder reported. Fine-tune on a few hundred labelled stamps "
        "of the target survey (`--init-from`).",
        "- Scores are probabilities at the training prevalence, not at the ~1e-4 prevalence of lenses in a survey.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lensnet.card", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="checkpoint directory or shipped model name")
    args = parser.parse_args(argv)
    try:
        directory = resolve_checkpoint(args.checkpoint)
    except (FileNotFoundError, ValueError) as error:
        print(f"python -m lensnet.card: error: {error}", file=sys.stderr)
        return 2
    (directory / "MODEL_CARD.md").write_text(render_card(directory))
    print(directory / "MODEL_CARD.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
