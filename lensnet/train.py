"""Train a registered architecture on a stamp set: ``python -m lensnet.train --config FILE.yaml``.

Recipe: normalisation from the config; augmentation applied alike to both classes;
class-weighted binary cross-entropy; AdamW with a cosine schedule; the checkpoint with
the best validation loss is kept; the decision threshold is set at a target false
positive rate on the validation set. ``last.pt`` allows resuming an interrupted run.
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
from tqdm import tqdm

from lensnet import metrics
from lensnet.augment import augment
from lensnet.checkpoint import ModelConfig, load_model, save_checkpoint
from lensnet.data import stamp_set_from_spec
from lensnet.preprocess import normalise


@dataclass
class TrainConfig:
    """Every knob of a training run (YAML keys and ``--flags`` share these names)."""

    data: str | dict[str, Any]
    out: str
    test_data: str | dict[str, Any] | None = None
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
    limit: int | None = None
    threads: int | None = None
    name: str = ""


def set_seeds(seed: int) -> torch.Generator:
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def prepare_inputs(stamps: np.ndarray, config: TrainConfig) -> torch.Tensor:
    inputs, _ = normalise(stamps, config.normalisation, **config.normalisation_params)
    return torch.from_numpy(inputs)


@torch.no_grad()
def predict_logits(module: torch.nn.Module, inputs: torch.Tensor, device: torch.device, batch_size: int = 512) -> np.ndarray:
    module.eval()
    outputs = [module(inputs[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(inputs), batch_size)]
    return torch.cat(outputs).numpy()


def train(config: TrainConfig, command: str | None = None) -> Path:
    """Run the recipe; return the checkpoint directory (``config.out``)."""
    generator = set_seeds(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    # Data first: simulating in worker processes must happen before CUDA is initialised.
    data = stamp_set_from_spec(config.data, config.limit)
    test = stamp_set_from_spec(config.test_data) if config.test_data is not None else None
    device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if config.device == "auto" else config.device))
    inputs = prepare_inputs(data.stamps, config)
    labels = torch.from_numpy(data.labels)
    if device.type == "cuda":
        # The whole training set sits on the GPU: no host-device copies per batch.
        inputs, labels = inputs.to(device), labels.to(device)
    order = np.random.default_rng(config.seed).permutation(len(labels))
    n_val = max(1, int(round(config.validation_fraction * len(labels))))
    val_index, train_index = order[:n_val], order[n_val:]

    model_config = ModelConfig(
        architecture=config.architecture, bands=data.bands, stamp_size_px=int(inputs.shape[-1]),
        pixel_scale_arcsec=float(data.attrs.get("pixel_scale_arcsec", float("nan"))),
        normalisation=config.normalisation, normalisation_params=dict(config.normalisation_params),
        arch_kwargs=dict(config.arch_kwargs), train_prevalence=float(labels[train_index].mean()),
        name=config.name or Path(config.out).name,
    )
    if config.init_from:
        module = load_model(config.init_from).module
    else:
        module = model_config.build()
    module.to(device)
    if config.freeze_backbone:
        _freeze_all_but_last_linear(module)
    parameters = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = int(np.ceil(len(train_index) / config.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch, pct_start=0.15)
    n_pos = float(labels[train_index].sum())
    pos_weight = torch.tensor((len(train_index) - n_pos) / max(n_pos, 1.0), device=device)

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "last.pt"
    start_epoch, best_val, history = 0, float("inf"), []
    if config.resume and state_path.is_file():
        state = torch.load(state_path, map_location=device, weights_only=False)
        if state.get("epochs") != config.epochs:
            raise ValueError(f"{state_path} belongs to a {state.get('epochs')}-epoch schedule; resume with "
                             f"--epochs {state.get('epochs')}")
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

    use_amp = device.type == "cuda"
    last_epoch = config.epochs
    if config.stop_after_epochs is not None:
        # Stop early in this invocation (e.g. before a batch job's walltime) and --resume later.
        last_epoch = min(config.epochs, start_epoch + config.stop_after_epochs)
    for epoch in range(start_epoch, last_epoch):
        module.train()
        permutation = torch.randperm(len(train_index), generator=generator).numpy()
        running, seen, started = 0.0, 0, time.perf_counter()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not sys.stderr.isatty())
        for step in bar:
            batch_index = torch.from_numpy(
                train_index[permutation[step * config.batch_size : (step + 1) * config.batch_size]]).to(inputs.device)
            batch, target = inputs[batch_index].to(device), labels[batch_index].to(device)
            if config.augment:
                batch = augment(batch, generator, max_rotation_deg=config.max_rotation_deg,
                                zoom=tuple(config.zoom), max_shift_px=config.max_shift_px)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = module(batch)
            loss = F.binary_cross_entropy_with_logits(logits.float(), target, pos_weight=pos_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += float(loss.detach()) * len(batch_index)
            seen += len(batch_index)
            bar.set_postfix(loss=f"{running / seen:.4f}")
        val_logits = predict_logits(module, inputs[torch.from_numpy(val_index).to(inputs.device)], device)
        val_labels = labels[torch.from_numpy(val_index).to(labels.device)].cpu().numpy()
        val_loss = float(F.binary_cross_entropy_with_logits(
            torch.from_numpy(val_logits), torch.from_numpy(val_labels), pos_weight=pos_weight.cpu()))
        val_auroc = metrics.auroc(val_labels, val_logits)
        history.append({"epoch": epoch + 1, "train_loss": running / seen, "val_loss": val_loss,
                        "val_auroc": val_auroc, "seconds": round(time.perf_counter() - started, 1)})
        improved = val_loss < best_val
        print(f"epoch {epoch + 1}/{config.epochs}: train loss {running / seen:.4f}, val loss {val_loss:.4f}, "
              f"val AUROC {val_auroc:.4f}{'  (best)' if improved else ''}", flush=True)
        if improved:
            best_val = val_loss
            model_config.threshold = _threshold(val_labels, val_logits, config.target_fpr)
            model_config.training = {"recipe": _jsonable(dataclasses.asdict(config)), "history": history,
                                     "data": {"path": config.data, "n_train": len(train_index), "n_val": n_val,
                                              **_jsonable(data.attrs)},
                                     "command": command or "", "device": _device_description(device)}
            save_checkpoint(module, model_config, out)
        torch.save({"model": module.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                    "epoch": epoch, "epochs": config.epochs, "best_val": best_val, "history": history}, state_path)
    if test is not None and last_epoch == config.epochs:
        evaluate_checkpoint(out, test, config, device)
    return out


def evaluate_checkpoint(out: Path, test, config: TrainConfig, device: torch.device) -> dict[str, Any]:
    """Score a held-out set with the best checkpoint and store the metrics in its config."""
    from lensnet.checkpoint import CONFIG_FILE

    loaded = load_model(out, device=device)
    logits = predict_logits(loaded.module, prepare_inputs(test.stamps, config), device)
    report = evaluation_report(test.truth, logits, loaded.config.threshold)
    report["data"] = _jsonable(test.attrs)
    loaded.config.metrics = report
    (out / CONFIG_FILE).write_text(loaded.config.to_json() + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "completeness_by_theta_e"}, indent=2))
    return report


def evaluation_report(truth, logits: np.ndarray, threshold: float, n_resamples: int = 200) -> dict[str, Any]:
    """Headline metrics with bootstrap intervals, and completeness where DeepLens quotes it."""
    labels = truth["is_lens"].to_numpy().astype(int)
    scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    report: dict[str, Any] = {"n": int(len(labels)), "n_lenses": int(labels.sum())}
    for name, function in (("auroc", metrics.auroc),
                           ("tpr0", lambda y, s: metrics.tpr_at_fp(y, s, 0)),
                           ("tpr10", lambda y, s: metrics.tpr_at_fp(y, s, 10))):
        low, high = metrics.bootstrap_interval(function, labels, logits, n_resamples=n_resamples, seed=0)
        report[name] = {"value": float(function(labels, logits)), "interval_95": [float(low), float(high)]}
    negatives = labels == 0
    report["fpr_at_threshold"] = float((scores[negatives] >= threshold).mean())
    bright = (labels == 1) & (truth["theta_e_arcsec"].to_numpy() > 1.4) & (truth["arc_snr"].to_numpy() > 20)
    detected = int((scores[bright] >= threshold).sum())
    report["completeness_theta_e_gt_1.4_snr_gt_20"] = {
        "value": detected / max(int(bright.sum()), 1), "n_lenses": int(bright.sum()), "n_detected": detected}
    report["completeness_all_lenses"] = float((scores[labels == 1] >= threshold).mean())
    return report


def _device_description(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return f"{device.type} ({name}), torch {torch.__version__}"


def _threshold(labels: np.ndarray, logits: np.ndarray, target_fpr: float) -> float:
    """Probability threshold at the target false-positive rate on validation data."""
    logit_threshold = metrics.threshold_at_fpr(labels, logits, target_fpr)
    return float(1.0 / (1.0 + np.exp(-np.clip(logit_threshold, -80, 80))))


def _freeze_all_but_last_linear(module: torch.nn.Module) -> None:
    """Fine-tuning with few labels: train only the final linear layer."""
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    for parameter in module.parameters():
        parameter.requires_grad = False
    for parameter in linears[-1].parameters():
        parameter.requires_grad = True


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="python -m lensnet.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML file with TrainConfig keys; flags override it")
    for item in dataclasses.fields(TrainConfig):
        if item.name in ("arch_kwargs", "normalisation_params", "zoom"):
            continue
        flag = "--" + item.name.replace("_", "-")
        if item.type in ("bool",):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float, "int | None": int}.get(item.type, str)
            parser.add_argument(flag, type=kind, default=None)
    args = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    if args.pop("config"):
        values.update(yaml.safe_load(Path(parser.parse_args(argv).config).read_text()) or {})
    values.update({key: value for key, value in args.items() if value is not None})
    missing = [name for name in ("data", "out") if name not in values]
    if missing:
        parser.error(f"missing {', '.join('--' + name for name in missing)}")
    return TrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    command = "python -m lensnet.train " + " ".join(shlex.quote(arg) for arg in (argv or sys.argv[1:]))
    out = train(config, command)
    print(f"checkpoint: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
