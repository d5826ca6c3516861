"""Train a registered architecture on a stamp set: ``python -m lensnet.train --config FILE.yaml``.

Recipe: normalisation from the config; augmentation applied alike to both classes;
class-weighted binary cross-entropy; AdamW with a cosine schedule; the checkpoint with
the best validation loss is kept; the decision threshold is set at a target false
positive rate on the validation set. ``last.pt`` allows resuming an interrupted run.

Validation: by default one random split (``validation_fraction``). With ``--folds K`` the
data are split into K class-stratified folds (deterministic given ``--seed``); each fold in
turn is the validation set of a checkpoint written to ``OUT/fold-I/``, and once all K have
finished ``OUT/cv_summary.json`` holds the per-fold validation metrics with their mean and
standard deviation. ``--fold I`` trains only fold I (e.g. one fold per batch job).

Fine-tuning: ``--init-from CHECKPOINT`` starts from a checkpoint (its architecture and
normalisation are kept); ``--freeze-backbone`` then trains only the last linear layer, with
the rest of the network, batch-norm statistics included, left exactly as it was.
``--patience N`` stops once the validation loss has not improved for N epochs (the best
checkpoint is kept, and a resumed run that had stopped stays stopped).

Precision: ``--precision auto`` (the default) trains under bf16 autocast on a GPU and in fp32 on
a CPU; ``--precision bf16`` uses bf16 autocast and channels-last batches on a CPU too, which on
CPUs with native bf16 instructions (AVX512-BF16, AMX) trains faster (a step 2.4x fp32's on a
2-core AVX512-BF16 CPU: ``benchmarks/train_throughput.py --precision bf16``,
``benchmarks/results/train/``); ``fp32`` never uses autocast.

Longer than the project's ~400-line guide: the recipe, its k-fold variant and the command line
that types and documents every key of it are one unit, and splitting them would scatter TrainConfig.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from tqdm import tqdm

from lensnet import metrics
from lensnet.augment import augment
from lensnet.checkpoint import (
    CONFIG_FILE,
    LoadedModel,
    ModelConfig,
    load_config,
    load_model,
    save_checkpoint,
)
from lensnet.data import StampSet, stamp_set_from_spec
from lensnet.evaluate import evaluation_report, predict_logits
from lensnet.preprocess import normalise

__all__ = ["TrainConfig", "TrainingPrecision", "check_config", "check_precision", "config_from_mapping",
           "drop_faint_lenses", "evaluation_report", "fold_directory", "holdout_split", "jsonable", "kfold_split",
           "predict_logits", "resolve_precision", "summarise_folds", "train"]

#: Per-fold file written when a fold has finished training; ``cv_summary.json`` collects them.
FOLD_RESULT_FILE = "validation.json"
CV_SUMMARY_FILE = "cv_summary.json"


@dataclass
class TrainConfig:
    """Every knob of a training run (YAML keys and ``--flags`` share these names)."""

    data: str | dict[str, Any] | list[Any]
    out: str
    test_data: str | dict[str, Any] | list[Any] | None = None
    architecture: str = "lensresnet-small"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    normalisation: str = "asinh_stretch"
    normalisation_params: dict[str, Any] = field(default_factory=dict)
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    validation_fraction: float = 0.1
    target_fpr: float = 0.01
    seed: int = 0
    device: str = "auto"
    augment: bool = True
    max_rotation_deg: float = 180.0
    zoom: tuple[float, float] = (0.8, 1.2)
    max_shift_px: float = 3.0
    init_from: str | None = None
    freeze_backbone: bool = False
    resume: bool = False
    stop_after_epochs: int | None = None
    patience: int | None = None
    limit: int | None = None
    train_arc_snr_min: float = 0.0
    threads: int | None = None
    name: str = ""
    folds: int = 1
    fold: int | None = None
    precision: str = "auto"


#: ``precision`` values: ``auto`` is bf16 autocast on a GPU and fp32 on a CPU (how every shipped
#: recipe trained), ``bf16`` bf16 autocast on either, ``fp32`` never autocast.
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class TrainingPrecision:
    """How a run at one ``precision`` trains on one device (:func:`resolve_precision`)."""

    bf16: bool  # under bf16 autocast
    channels_last: bool  # module and batches channels-last (on a GPU, and wherever bf16 runs)
    label: str  # "bf16 autocast" or "fp32", as config.json, last.pt and the model card record it


def check_precision(precision: str) -> None:
    """Raise ``ValueError`` for a ``precision`` that is not one of :data:`PRECISIONS`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")


def resolve_precision(precision: str, device: torch.device) -> TrainingPrecision:
    """What ``precision`` (see :data:`PRECISIONS`) means on ``device``."""
    check_precision(precision)
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return TrainingPrecision(bf16=bf16, channels_last=device.type == "cuda" or bf16,
                             label="bf16 autocast" if bf16 else "fp32")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX); without them bf16 runs emulated, slower."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def set_seeds(seed: int) -> torch.Generator:
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


#: Stamps normalised at a time: the reference normalisations work in float64 copies.
NORMALISE_CHUNK = 4096


def prepare_inputs(stamps: np.ndarray, config: TrainConfig) -> torch.Tensor:
    """The normalised float32 network inputs of ``stamps``, computed chunk by chunk."""
    inputs = torch.empty(stamps.shape, dtype=torch.float32)
    for start in range(0, len(stamps), NORMALISE_CHUNK):
        chunk, _ = normalise(stamps[start : start + NORMALISE_CHUNK], config.normalisation,
                             **config.normalisation_params)
        inputs[start : start + len(chunk)] = torch.from_numpy(chunk)
    return inputs


def drop_faint_lenses(data: StampSet, arc_snr_min: float) -> StampSet:
    """``data`` without the lenses whose truth ``arc_snr`` is below ``arc_snr_min`` (no-op at 0).

    A lens whose arcs are buried in the noise can only be told from a non-lens by its deflector,
    so training on it labels plain massive galaxies as lenses: a cue real surveys do not share.
    The number left out is recorded in ``data.attrs["faint_lenses_left_out"]``.

    Raises:
        ValueError: a positive ``arc_snr_min`` for data whose truth has no ``arc_snr`` column.
    """
    if arc_snr_min <= 0:
        return data
    if "arc_snr" not in data.truth:
        raise ValueError(f"train_arc_snr_min {arc_snr_min:g} needs an arc_snr column in the training truth "
                         "(simulated stamp sets have one); set it to 0 for these data")
    lenses = data.labels.astype(bool)
    faint = lenses & ~(data.truth["arc_snr"].to_numpy(np.float64) >= arc_snr_min)  # NaN S/N counts as faint
    keep, n_faint = np.flatnonzero(~faint), int(np.count_nonzero(faint))
    print(f"train_arc_snr_min {arc_snr_min:g}: leaving out {n_faint} of {int(np.count_nonzero(lenses))} lenses",
          flush=True)
    attrs = {**data.attrs, "faint_lenses_left_out": n_faint, "train_arc_snr_min": float(arc_snr_min)}
    return StampSet(stamps=data.stamps[keep], truth=data.truth.iloc[keep].reset_index(drop=True),
                    bands=data.bands, attrs=attrs)


def holdout_split(n: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The default single split: ``(train_index, validation_index)`` from a seeded permutation."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(validation_fraction * n)))
    return order[n_val:], order[:n_val]


def kfold_split(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Class-stratified K-fold split: ``[(train_index, validation_index), ...]``, one per fold.

    Each class is permuted with ``numpy.random.default_rng(seed)`` and cut into ``folds``
    near-equal parts; fold ``i`` validates on part ``i`` of every class and trains on the
    rest. The validation sets are disjoint and together cover every object once. Indices
    are sorted.

    Raises:
        ValueError: fewer than two folds, or a class with fewer members than folds.
    """
    labels = np.asarray(labels).astype(bool)
    if folds < 2:
        raise ValueError(f"k-fold needs at least 2 folds; got {folds}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(folds)]
    for value in (False, True):
        members = np.flatnonzero(labels == value)
        if len(members) < folds:
            raise ValueError(f"{len(members)} {'lenses' if value else 'non-lenses'} cannot fill {folds} folds")
        for index, chunk in enumerate(np.array_split(rng.permutation(members), folds)):
            parts[index].append(chunk)
    everything = np.arange(len(labels))
    splits = []
    for chunks in parts:
        validation = np.sort(np.concatenate(chunks))
        splits.append((np.setdiff1d(everything, validation, assume_unique=True), validation))
    return splits


def fold_directory(out: str | Path, fold: int) -> Path:
    """Where fold ``fold``'s checkpoint goes: ``OUT/fold-I``."""
    return Path(out) / f"fold-{fold}"


def train(config: TrainConfig, command: str | None = None) -> Path:
    """Run the recipe; return the checkpoint directory.

    That is ``config.out`` for a single split, ``OUT/fold-I`` with ``fold`` set, and ``OUT``
    (holding every ``fold-I/`` and ``cv_summary.json``) for a loop over all folds.
    """
    check_config(config)  # before any stamp is loaded or simulated
    config = _with_init_checkpoint_settings(config)
    if config.init_from:  # check_config checked a recipe's own architecture; this is the checkpoint's, extended
        _check_architecture(config)
    if config.threads:
        torch.set_num_threads(config.threads)
    # Data first: simulating in worker processes must happen before CUDA is initialised.
    data = drop_faint_lenses(stamp_set_from_spec(config.data, config.limit), config.train_arc_snr_min)
    test = stamp_set_from_spec(config.test_data) if config.test_data is not None else None
    if config.init_from:
        bands = load_config(config.init_from).bands
        if data.bands and list(data.bands) != list(bands):
            raise ValueError(f"the data's bands {data.bands} differ from {config.init_from}'s {bands}")
    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if config.device == "auto" else config.device))
    inputs = prepare_inputs(data.stamps, config)
    # the raw pixels are no longer needed: free them (a [:0] view would keep the buffer alive)
    data.stamps = np.empty((0, *data.stamps.shape[1:]), dtype=np.float32)
    labels = torch.from_numpy(data.labels)
    if device.type == "cuda":
        # The whole training set sits on the GPU: no host-device copies per batch.
        inputs, labels = inputs.to(device), labels.to(device)
    if config.folds == 1:
        split = holdout_split(len(labels), config.validation_fraction, config.seed)
        return _fit(config, data, inputs, labels, split, test, Path(config.out), device, command)
    splits = kfold_split(data.labels, config.folds, config.seed)
    for fold in range(config.folds) if config.fold is None else [config.fold]:
        print(f"fold {fold + 1}/{config.folds}", flush=True)
        _fit(config, data, inputs, labels, splits[fold], test, fold_directory(config.out, fold), device, command,
             fold=fold)
    summarise_folds(config.out, config.folds)
    return Path(config.out) if config.fold is None else fold_directory(config.out, config.fold)


def check_config(config: TrainConfig) -> None:
    """Raise ``ValueError`` for settings that cannot train: folds, patience, a negative arc S/N cut, an unknown architecture
    or normalisation (those two only when not taken from ``init_from``)."""
    if config.folds < 1 or (config.fold is not None and not 0 <= config.fold < config.folds):
        raise ValueError(f"need folds >= 1 and 0 <= fold < folds; got folds={config.folds}, fold={config.fold}")
    if config.folds == 1 and config.fold is not None:
        raise ValueError("--fold needs --folds K with K >= 2")
    if not config.train_arc_snr_min >= 0:
        raise ValueError(f"train_arc_snr_min must be >= 0; got {config.train_arc_snr_min}")
    if config.patience is not None and config.patience < 1:
        raise ValueError(f"--patience must be at least 1 epoch; got {config.patience}")
    check_precision(config.precision)
    if not config.init_from:
        from lensnet.models import model_spec
        from lensnet.preprocess import NORMALISATIONS

        try:
            model_spec(config.architecture)
        except KeyError as error:
            raise ValueError(error.args[0]) from None
        if config.normalisation not in NORMALISATIONS:
            raise ValueError(f"unknown normalisation {config.normalisation!r}; known: {', '.join(NORMALISATIONS)}")
        _check_architecture(config)


def _with_init_checkpoint_settings(config: TrainConfig) -> TrainConfig:
    """With ``init_from``, the architecture and normalisation of that checkpoint, not the config's."""
    if not config.init_from:
        return config
    source = load_config(config.init_from)
    clashing = {key: (value, source.arch_kwargs[key]) for key, value in config.arch_kwargs.items()
                if key in source.arch_kwargs and source.arch_kwargs[key] != value}
    if clashing:
        raise ValueError(f"arch_kwargs {', '.join(f'{key}={mine!r}' for key, (mine, _) in clashing.items())} "
                         f"differ from {config.init_from}'s "
                         f"{', '.join(f'{key}={theirs!r}' for key, (_, theirs) in clashing.items())}: a fine-tune "
                         "keeps its checkpoint's architecture and may only add keywords")
    # keywords the checkpoint does not set extend its architecture (checked in _init_module)
    added = {key: value for key, value in config.arch_kwargs.items() if key not in source.arch_kwargs}
    if added and config.freeze_backbone:
        raise ValueError("--freeze-backbone would keep the layers that arch_kwargs "
                         f"{', '.join(added)} add at their zero start: drop one or the other")
    inherited = {"architecture": source.architecture, "arch_kwargs": {**source.arch_kwargs, **added},
                 "normalisation": source.normalisation, "normalisation_params": dict(source.normalisation_params)}
    changed = [key for key, value in inherited.items()
               if getattr(config, key) != value and not (key == "arch_kwargs" and added)]
    if changed:
        print(f"--init-from {config.init_from}: using its {', '.join(changed)}", flush=True)
    if added:
        print(f"--init-from {config.init_from}: extending its architecture with "
              f"{', '.join(f'{key}={value!r}' for key, value in added.items())}", flush=True)
    return dataclasses.replace(config, **inherited)


def _check_architecture(config: TrainConfig) -> None:
    """Raise ``ValueError`` before any stamp is loaded when the architecture keywords cannot build the
    network (an unknown keyword, say) or ``deflector_subtracted`` meets a normalisation it cannot invert."""
    from lensnet.models import create_model

    if config.arch_kwargs.get("deflector_subtracted") and config.normalisation != "asinh_stretch":
        source = f"{config.init_from}'s normalisation" if config.init_from else "this recipe normalises with"
        raise ValueError(f"deflector_subtracted inverts the asinh_stretch normalisation; {source} "
                         f"{config.normalisation}")
    if not config.arch_kwargs:
        return
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            create_model(config.architecture, **config.arch_kwargs)
    except TypeError as error:  # an unknown or mistyped keyword; anything else surfaces at the real build
        raise ValueError(f"{config.architecture} cannot be built with arch_kwargs {config.arch_kwargs}: {error}") \
            from None


def _init_module(model_config: ModelConfig, parent: LoadedModel) -> nn.Module:
    """The module to fine-tune from ``parent``: its own, or one built from ``model_config`` when the
    recipe added architecture keywords, holding every parent weight and scoring exactly as the parent.

    Raises:
        ValueError: when the added keywords change or drop a parent weight, or change the scores
            (an extension must start at zero, as ``deflector_subtracted`` does).
    """
    if model_config.arch_kwargs == parent.config.arch_kwargs:
        return parent.module
    module = model_config.build()
    added = ", ".join(sorted(set(model_config.arch_kwargs) - set(parent.config.arch_kwargs)))
    try:
        missing, unexpected = module.load_state_dict(parent.module.state_dict(), strict=False)
    except RuntimeError as error:  # a weight of another shape
        raise ValueError(f"arch_kwargs {added} reshape weights of {parent.config.name}: "
                         f"{str(error).splitlines()[-1].strip()}") from None
    if unexpected:
        raise ValueError(f"arch_kwargs {added} drop weights of {parent.config.name}: {', '.join(unexpected)}")
    module.eval()
    generator = torch.Generator().manual_seed(0)
    size = model_config.stamp_size_px
    probe = torch.randn(8, len(model_config.bands), size, size, generator=generator) * 3.0
    with torch.no_grad():
        before, after = parent.module.eval()(probe), module(probe)
    if not torch.allclose(before, after, rtol=1e-4, atol=1e-4):
        raise ValueError(f"arch_kwargs {added} change {parent.config.name}'s scores before any training "
                         f"(largest logit change {float((before - after).abs().max()):.3g}); only an extension "
                         "that starts at zero can be added to a trained network")
    new = f"new parameters {', '.join(missing)} start at zero" if missing else "no new parameters"
    print(f"extended {parent.config.name} with {added}: {new}; scores unchanged", flush=True)
    return module


def _fit(config: TrainConfig, data: StampSet, inputs: torch.Tensor, labels: torch.Tensor,
         split: tuple[np.ndarray, np.ndarray], test: StampSet | None, out: Path, device: torch.device,
         command: str | None, fold: int | None = None) -> Path:
    """Train one model on ``split = (train_index, val_index)`` and write its checkpoint to ``out``."""
    generator = set_seeds(config.seed)
    train_index, val_index = split
    n_val = len(val_index)
    name = config.name or Path(config.out).name
    model_config = ModelConfig(
        architecture=config.architecture, bands=data.bands, stamp_size_px=int(inputs.shape[-1]),
        pixel_scale_arcsec=float(data.attrs.get("pixel_scale_arcsec", float("nan"))),
        normalisation=config.normalisation, normalisation_params=dict(config.normalisation_params),
        arch_kwargs=arch_kwargs_for(config.architecture, config.arch_kwargs, int(inputs.shape[-1])),
        train_prevalence=float(labels[train_index].mean()),
        name=name if fold is None else f"{name}-fold-{fold}",
    )
    parent: dict[str, Any] = {}
    if config.init_from:
        loaded = load_model(config.init_from)
        module = _init_module(model_config, loaded)
        # which weights it started from, so that a card can name them after a rename or a retraining
        parent = {"checkpoint": str(config.init_from), "name": loaded.config.name,
                  "weights_sha256": loaded.weights_sha256}
    else:
        module = model_config.build()
    precision = resolve_precision(config.precision, device)
    if precision.bf16 and device.type == "cpu" and not cpu_has_native_bf16():
        print("precision bf16: this CPU has no bf16 instructions (AVX512-BF16, AMX), so bf16 runs emulated and "
              "slower than fp32 here", flush=True)
    to_training_device(module, device, precision.channels_last)
    if config.freeze_backbone:
        _freeze_all_but_last_linear(module)
    steps_per_epoch = int(np.ceil(len(train_index) / config.batch_size))
    optimizer, scheduler = optimiser_and_schedule([p for p in module.parameters() if p.requires_grad],
                                                  config.learning_rate, config.weight_decay,
                                                  config.epochs * steps_per_epoch)
    n_pos = float(labels[train_index].sum())
    pos_weight = torch.tensor((len(train_index) - n_pos) / max(n_pos, 1.0), device=device)

    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "last.pt"
    start_epoch, best_val, history = 0, float("inf"), []
    validation: dict[str, Any] = {}
    if config.resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=True)  # never unpickle code
        if state.get("epochs") != config.epochs:
            raise ValueError(f"{state_path} belongs to a {state.get('epochs')}-epoch schedule; resume with "
                             f"--epochs {state.get('epochs')}")
        # (a last.pt from before precision was recorded trained as auto does)
        started_in = state.get("precision", resolve_precision("auto", device).label)
        if started_in != precision.label:
            raise ValueError(f"{state_path} was trained in {started_in}, not {precision.label}: resume with the "
                             "precision it started with (--precision)")
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        # Dropout draws from the global generators: restore them too, so a resumed run
        # continues exactly where the interrupted one stopped.
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        start_epoch, best_val, history = state["epoch"] + 1, state["best_val"], state["history"]
        validation = state.get("validation", {})

    last_epoch = config.epochs
    if config.patience is not None and _stale_epochs(history) >= config.patience:
        last_epoch = start_epoch  # a resumed run that had already stopped early
    if config.stop_after_epochs is not None:
        # Stop early in this invocation (e.g. before a batch job's walltime) and --resume later.
        last_epoch = min(config.epochs, start_epoch + config.stop_after_epochs)
    augmentation = ({"max_rotation_deg": config.max_rotation_deg, "zoom": tuple(config.zoom),
                     "max_shift_px": config.max_shift_px} if config.augment else None)
    for epoch in range(start_epoch, last_epoch):
        _set_train_mode(module, config.freeze_backbone)
        permutation = torch.randperm(len(train_index), generator=generator).numpy()
        started = time.perf_counter()
        train_loss = train_one_epoch(module, optimizer, scheduler, inputs, labels, train_index[permutation],
                                     batch_size=config.batch_size, generator=generator, pos_weight=pos_weight,
                                     device=device, augmentation=augmentation, use_amp=precision.bf16,
                                     channels_last=precision.channels_last,
                                     desc=f"epoch {epoch + 1}/{config.epochs}")
        val_logits = predict_logits(module, inputs[torch.from_numpy(val_index).to(inputs.device)], device)
        val_labels = labels[torch.from_numpy(val_index).to(labels.device)].cpu().numpy()
        val_loss = float(F.binary_cross_entropy_with_logits(
            torch.from_numpy(val_logits), torch.from_numpy(val_labels), pos_weight=pos_weight.cpu()))
        val_auroc = metrics.auroc(val_labels, val_logits)
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss,
                        "val_auroc": val_auroc, "seconds": round(time.perf_counter() - started, 1)})
        improved = val_loss < best_val
        print(f"epoch {epoch + 1}/{config.epochs}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
              f"val AUROC {val_auroc:.4f}{'  (best)' if improved else ''}", flush=True)
        if improved:
            best_val = val_loss
            model_config.threshold = _threshold(val_labels, val_logits, config.target_fpr)
            validation = _validation_metrics(val_labels, val_logits, epoch + 1, val_loss, model_config.threshold)
            model_config.training = {"recipe": jsonable(dataclasses.asdict(config)), "history": history,
                                     "data": {"path": config.data, "n_train": len(train_index), "n_val": n_val,
                                              **jsonable(data.attrs)},
                                     "validation": validation,
                                     "command": command or "", "device": _device_description(device),
                                     "precision": precision.label}
            if parent:
                model_config.training["parent"] = parent
            if fold is not None:
                model_config.training["fold"] = {"index": fold, "folds": config.folds}
            save_checkpoint(module, model_config, out)
        torch.save({"model": module.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                    "epoch": epoch, "epochs": config.epochs, "best_val": best_val, "history": history,
                    "validation": validation, "precision": precision.label}, state_path.with_suffix(".pt.partial"))
        state_path.with_suffix(".pt.partial").replace(state_path)  # a kill never leaves a truncated last.pt
        if config.patience is not None and _stale_epochs(history) >= config.patience:
            print(f"stopping early: no better validation loss for {config.patience} epochs", flush=True)
            break
    if last_epoch == config.epochs or (config.patience is not None and _stale_epochs(history) >= config.patience):
        test_metrics = evaluate_checkpoint(out, test, config, device) if test is not None else None
        if fold is not None:
            result = {"fold": fold, "n_train": len(train_index), "n_val": n_val, **validation}
            if test_metrics is not None:
                result["test"] = {key: test_metrics[key]["value"] for key in ("auroc", "average_precision", "tpr0",
                                                                             "tpr10")}
            (out / FOLD_RESULT_FILE).write_text(json.dumps(jsonable(result), indent=2) + "\n")
    return out


def to_training_device(module: torch.nn.Module, device: torch.device, channels_last: bool | None = None) -> None:
    """Move ``module`` to ``device``; channels-last where asked (by default on a GPU), and on a GPU
    with cuDNN autotuning (fixed input shape)."""
    module.to(device)
    if channels_last is None:
        channels_last = device.type == "cuda"
    if channels_last:
        module.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def optimiser_and_schedule(parameters: list[torch.nn.Parameter], learning_rate: float, weight_decay: float,
                           total_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The recipe's AdamW and its one-cycle schedule over ``total_steps`` steps."""
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=total_steps,
                                                    pct_start=0.15)
    return optimizer, scheduler


def train_step(module: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, batch: torch.Tensor, target: torch.Tensor,
               pos_weight: torch.Tensor, use_amp: bool = False) -> torch.Tensor:
    """One optimiser step on one batch (bf16 autocast with ``use_amp``); the loss, still on the device."""
    with torch.autocast(batch.device.type, dtype=torch.bfloat16, enabled=use_amp):
        logits = module(batch)
    loss = F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=pos_weight)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.detach()


def train_one_epoch(module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, inputs: torch.Tensor, labels: torch.Tensor,
                    order: np.ndarray, *, batch_size: int, generator: torch.Generator, pos_weight: torch.Tensor,
                    device: torch.device, augmentation: dict[str, Any] | None = None, use_amp: bool = False,
                    desc: str = "", channels_last: bool | None = None) -> float:
    """One pass over ``inputs[order]`` in batches of ``batch_size``; the mean training loss.

    Nothing in the loop waits for the device: the indices move to the inputs' device once,
    the augmentation selects without boolean indexing, and the loss is summed on the device
    and read once at the end (and every 50 steps for a progress bar on a terminal). On a GPU
    the batches go channels-last, the layout its convolutions run fastest in (and on a CPU with
    ``channels_last``, as bf16 runs there).
    """
    order_on_device = torch.from_numpy(np.ascontiguousarray(order)).to(inputs.device)
    channels_last = device.type == "cuda" if channels_last is None else channels_last
    total = torch.zeros((), dtype=torch.float64, device=device)
    steps = int(np.ceil(len(order) / batch_size))
    bar = tqdm(range(steps), desc=desc, leave=False, disable=not sys.stderr.isatty())
    for step in bar:
        batch_index = order_on_device[step * batch_size : (step + 1) * batch_size]
        batch = inputs[batch_index].to(device, non_blocking=True)
        target = labels[batch_index].to(device, non_blocking=True)
        if augmentation is not None:
            batch = augment(batch, generator, **augmentation)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        loss = train_step(module, optimizer, scheduler, batch, target, pos_weight, use_amp)
        total += loss.double() * len(batch_index)
        if not bar.disable and step % 50 == 0:
            bar.set_postfix(loss=f"{float(total) / min((step + 1) * batch_size, len(order)):.4f}")
    return float(total) / len(order)


def _stale_epochs(history: list[dict[str, Any]]) -> int:
    """Epochs since the best validation loss (0 when the last epoch was the best)."""
    if not history:
        return 0
    best = min(range(len(history)), key=lambda index: history[index]["val_loss"])
    return len(history) - 1 - best


def evaluate_checkpoint(out: Path, test: StampSet, config: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Score a held-out set with the best checkpoint and store the metrics in its config.

    A held-out set made of several (``test_data`` as a list, e.g. one per simulation
    engine) is also reported member by member under ``metrics["by_data"]``.
    """
    loaded = load_model(out, device=device)
    logits = predict_logits(loaded.module, prepare_inputs(test.stamps, config), device)
    report = evaluation_report(test.truth, logits, loaded.config.threshold)
    report["data"] = jsonable(test.attrs)
    if "data_set" in test.truth:
        report["by_data"] = {}
        for label, rows in test.truth.groupby("data_set", sort=False).groups.items():
            index = np.asarray(rows)
            part = evaluation_report(test.truth.iloc[index].reset_index(drop=True), logits[index],
                                     loaded.config.threshold)
            report["by_data"][str(label)] = part
    loaded.config.metrics = report
    (out / CONFIG_FILE).write_text(loaded.config.to_json() + "\n")
    print(json.dumps(report, indent=2))
    return report


def _validation_metrics(labels: np.ndarray, logits: np.ndarray, epoch: int, val_loss: float,
                        threshold: float) -> dict[str, Any]:
    """Validation numbers of the kept (best) epoch, for the fold summary."""
    return {"epoch": epoch, "val_loss": val_loss, "auroc": metrics.auroc(labels, logits),
            "average_precision": metrics.average_precision(labels, logits),
            "tpr0": metrics.tpr_at_fp(labels, logits, 0), "tpr10": metrics.tpr_at_fp(labels, logits, 10),
            "threshold": threshold}


def summarise_folds(out: str | Path, folds: int) -> dict[str, Any] | None:
    """Collect the finished folds' validation metrics into ``OUT/cv_summary.json``.

    Returns None (and writes nothing) while some fold has not finished. Otherwise the
    summary: ``per_fold`` entries, and ``mean`` and ``std`` (sample standard deviation,
    ddof = 1) of every numeric validation metric (and of the test metrics, if recorded).
    """
    paths = [fold_directory(out, fold) / FOLD_RESULT_FILE for fold in range(folds)]
    if not all(path.is_file() for path in paths):
        return None
    per_fold = [json.loads(path.read_text()) for path in paths]
    keys = ["val_loss", "auroc", "average_precision", "tpr0", "tpr10", "threshold", "epoch"]
    columns = {key: [entry[key] for entry in per_fold] for key in keys}
    if all("test" in entry for entry in per_fold):
        columns.update({f"test_{key}": [entry["test"][key] for entry in per_fold] for key in per_fold[0]["test"]})
    summary = {"folds": folds, "per_fold": per_fold,
               "mean": {key: float(np.mean(values)) for key, values in columns.items()},
               "std": {key: float(np.std(values, ddof=1)) for key, values in columns.items()}}
    Path(out, CV_SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{folds}-fold cross-validation (mean ± std over folds):")
    for key in columns:
        print(f"  {key}: {summary['mean'][key]:.4f} ± {summary['std'][key]:.4f}")
    return summary


def _device_description(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return f"{device.type} ({name}), torch {torch.__version__}"


def arch_kwargs_for(architecture: str, arch_kwargs: dict[str, Any], stamp_size_px: int) -> dict[str, Any]:
    """The architecture's keywords, with ``input_size_px`` taken from the data when the
    architecture sizes a layer from it (flatten heads) and the recipe did not set it."""
    import inspect

    from lensnet.models import model_spec

    kwargs = dict(arch_kwargs)
    parameters = inspect.signature(model_spec(architecture).entry_point).parameters
    if "input_size_px" in parameters and "input_size_px" not in kwargs:
        kwargs["input_size_px"] = stamp_size_px
    return kwargs


def _threshold(labels: np.ndarray, logits: np.ndarray, target_fpr: float) -> float:
    """Probability threshold at the target false-positive rate on validation data."""
    logit_threshold = metrics.threshold_at_fpr(labels, logits, target_fpr)
    return float(1.0 / (1.0 + np.exp(-np.clip(logit_threshold, -80, 80))))


def _freeze_all_but_last_linear(module: torch.nn.Module) -> None:
    """Fine-tuning with few labels: train only the final linear layer (the last registered)."""
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    if not linears:
        raise ValueError(f"--freeze-backbone: {type(module).__name__} has no linear layer to train")
    for parameter in module.parameters():
        parameter.requires_grad = False
    for parameter in linears[-1].parameters():
        parameter.requires_grad = True


def _set_train_mode(module: torch.nn.Module, freeze_backbone: bool) -> None:
    """Training mode; with a frozen backbone, its frozen parts stay in eval mode.

    A submodule none of whose parameters train (frozen layers, and parameter-free ones such
    as dropout) keeps inference behaviour, so batch norm neither updates its running
    statistics nor normalises with batch statistics: the backbone is exactly the one that
    was loaded, and the head learns on the features it will see at inference.
    """
    module.train()
    if freeze_backbone:
        for submodule in module.modules():
            if not any(parameter.requires_grad for parameter in submodule.parameters()):
                submodule.eval()


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and tuples as lists, for JSON."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


#: Help text of every TrainConfig key (the flags are ``--key-with-dashes``).
FIELD_HELP: dict[str, str] = {
    "data": "training stamps: a directory from python -m lensnet.simulate, inline YAML/JSON "
            "'{simulate: {engine: galsim, profile: ground-gri, n: 60000, seed: 1}}', or a list of these",
    "out": "output directory: model.safetensors, config.json, last.pt (resume state)",
    "test_data": "held-out stamps measured with the best checkpoint (same forms as --data; a list is also "
                 "reported member by member)",
    "architecture": "registered architecture (python -c 'import lensnet; print(lensnet.list_models())')",
    "normalisation": "normalisation of lensnet.preprocess (default asinh_stretch)",
    "epochs": "epochs of the one-cycle schedule", "batch_size": "stamps per optimiser step",
    "learning_rate": "peak learning rate of the one-cycle schedule (AdamW)", "weight_decay": "AdamW weight decay",
    "validation_fraction": "share of the stamps held out for validation (best checkpoint, threshold)",
    "target_fpr": "false-positive rate on the validation stamps that sets the decision threshold",
    "seed": "seed of the split, the initialisation and the augmentation", "device": "auto, cpu or cuda",
    "augment": "random flips, rotations, zooms and shifts, alike for both classes",
    "max_rotation_deg": "largest random rotation", "max_shift_px": "largest random shift",
    "init_from": "start from this checkpoint (fine-tuning; its architecture and normalisation are kept)",
    "freeze_backbone": "with --init-from: train only the last linear layer",
    "resume": "continue from OUT/last.pt where an interrupted run stopped",
    "stop_after_epochs": "stop after this many epochs in this invocation (resume later, e.g. before a walltime)",
    "patience": "stop once the validation loss has not improved for this many epochs",
    "limit": "use only the first N stamps of a data directory", "threads": "PyTorch CPU threads",
    "train_arc_snr_min": "leave out of training and validation the lenses whose truth arc_snr is below this "
                         "(arcs no one could see; 0 keeps every lens); the test sets keep them",
    "name": "model name recorded in config.json (default: the --out directory's name)",
    "folds": "k-fold cross-validation: train K models, each validated on its own fold",
    "fold": "with --folds: train only this fold (0-based)",
    "precision": "auto (bf16 autocast on a GPU, fp32 on a CPU), fp32, or bf16 (also on a CPU: a step 2.4x fp32's "
                 "on a 2-core CPU with AVX512-BF16, benchmarks/results/train/; slower without bf16 instructions)",
}
_SCALAR_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _typed(name: str, value: Any, declared: str) -> Any:
    """``value`` checked against a field's declared type (``int``, ``float | None``, ...)."""
    options = [part.strip() for part in declared.split("|")]
    if value is None and "None" in options:
        return None
    for option in options:
        kind = _SCALAR_TYPES.get(option)
        if kind is None:
            return value  # a mapping, a list or a data spec: checked where it is used
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
    raise ValueError(f"{name}: {value!r} is not a {declared}")


def _data_spec(text: str) -> Any:
    """A directory, or inline YAML/JSON (a simulate mapping or a list)."""
    stripped = text.lstrip()
    return yaml.safe_load(text) if stripped.startswith(("{", "[")) else text


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Settings from ``--config FILE.yaml`` and the flags (flags win), type-checked."""
    parser = argparse.ArgumentParser(prog="python -m lensnet.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML file with the keys below (underscores); flags override it")
    for item in dataclasses.fields(TrainConfig):
        if item.name in ("arch_kwargs", "normalisation_params", "zoom"):
            continue
        flag = "--" + item.name.replace("_", "-")
        help_text = FIELD_HELP.get(item.name, "")
        if item.type in ("bool",):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif item.name in ("data", "test_data"):
            parser.add_argument(flag, type=_data_spec, default=None, help=help_text)
        else:
            kind = {"int": int, "float": float, "int | None": int}.get(item.type, str)
            parser.add_argument(flag, type=kind, default=None, help=help_text)
    args = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    config_file = args.pop("config")
    if config_file:
        try:
            loaded = yaml.safe_load(Path(config_file).read_text()) or {}
        except FileNotFoundError:
            parser.error(f"--config {config_file}: no such file")
        except yaml.YAMLError as error:
            parser.error(f"--config {config_file} is not valid YAML: {' '.join(str(error).split())}")
        if not isinstance(loaded, dict):
            parser.error(f"--config {config_file} must hold a mapping of key: value")
        known = {item.name for item in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(loaded) - known)
        if unknown:
            parser.error(f"--config {config_file}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values.update(loaded)
    values.update({key: value for key, value in args.items() if value is not None})
    missing = [name for name in ("data", "out") if name not in values]
    if missing:
        parser.error(f"missing {', '.join('--' + name for name in missing)}")
    try:
        return config_from_mapping(values)
    except ValueError as error:
        parser.error(str(error))


def config_from_mapping(values: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from recipe keys, each checked against its declared type.

    Raises:
        ValueError: an unknown key, or a value of the wrong type.
    """
    declared = {item.name: item.type for item in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(declared))}")
    return TrainConfig(**{key: _typed(key, value, str(declared[key])) for key, value in values.items()})


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    command = "python -m lensnet.train " + " ".join(shlex.quote(arg) for arg in (argv or sys.argv[1:]))
    try:
        out = train(config, command)
    except (ValueError, KeyError, FileNotFoundError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"python -m lensnet.train: error: {message}", file=sys.stderr)
        return 2
    print(f"checkpoint: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
