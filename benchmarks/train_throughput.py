#!/usr/bin/env python
"""Does the training loop keep its device busy? ``lensnet.train``'s epoch loop against a bare step.

On inputs already normalised and resident on the device (as ``lensnet.train`` holds them),
times in interleaved rounds, each over the same number of stamps:

1. **loop**: :func:`lensnet.train.train_one_epoch` as a training run calls it (index
   gathering, augmentation, autocast on GPUs, AdamW + one-cycle step, loss bookkeeping);
2. **loop, no augmentation**: the same without the augmentation;
3. **bare step**: forward, backward and optimiser step on one fixed resident batch: the
   most a training loop could reach with this model, batch and precision;
4. **forward**: the forward pass alone (no gradients), the inference rate;
5. with ``--precision bf16`` on a CPU, **bare step, fp32**: the same bare step without autocast
   in the default layout, as a CPU run trains by default, so the per-round ratio bf16 / fp32 says
   what ``lensnet.train --precision bf16`` gains on this CPU.

Reports stamps/s per variant (median [min-max] of the warm rounds; the first round is cold
and reported apart) and the per-round ratios loop / bare step and bare step / forward. A
loop far below its bare step is losing its time outside the network (waiting for the
device, the augmentation, the bookkeeping). Writes ``train_throughput.{json,md}`` to --out.

    python benchmarks/train_throughput.py --out benchmarks/results/train           # ~1 min on 2 cores
    python benchmarks/train_throughput.py --device cuda --stamps 65536 --out OUT    # a GPU
    python benchmarks/train_throughput.py --precision bf16 --out OUT                # a CPU, bf16 against fp32
    python benchmarks/train_throughput.py --architecture lensresnet-wide --precision bf16 --out OUT
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0]).resolve() == _HERE:
    sys.path.pop(0)
sys.path.insert(0, str(_HERE.parent))

import numpy as np
import torch

from benchmarks.common import (
    interleaved,
    log,
    machine_info,
    markdown_table,
    median_spread_text,
    paired_ratios,
    per_second,
)
from lensnet import list_models
from lensnet.checkpoint import ModelConfig, load_config
from lensnet.train import (
    PRECISIONS,
    arch_kwargs_for,
    optimiser_and_schedule,
    resolve_precision,
    to_training_device,
    train_one_epoch,
    train_step,
)


def model_config(model: str, architecture: str | None = None) -> ModelConfig:
    """``model``'s config; with ``architecture``, that registered architecture instead (its default
    keywords, sized for ``model``'s bands and stamps, as ``lensnet.train`` would build it)."""
    config = load_config(model)
    if architecture is None or architecture == config.architecture:
        return config
    if architecture not in list_models():
        raise SystemExit(f"--architecture {architecture!r} is not registered; choose from {list_models()}")
    return dataclasses.replace(config, architecture=architecture,
                               arch_kwargs=arch_kwargs_for(architecture, {}, config.stamp_size_px))


def build(config: ModelConfig, device: torch.device, steps: int, learning_rate: float = 1e-3,
          channels_last: bool | None = None):
    """A fresh module of ``config``'s architecture, its AdamW and one-cycle schedule, as ``lensnet.train``
    sets them (channels-last as :func:`lensnet.train.to_training_device` decides unless told)."""
    module = config.build()
    to_training_device(module, device, channels_last)
    module.train()
    optimizer, scheduler = optimiser_and_schedule(list(module.parameters()), learning_rate, 1e-4, steps)
    return config, module, optimizer, scheduler


def measure(model: str, device: torch.device, stamps: int, batch_size: int, warm_rounds: int,
            seed: int = 0, precision: str = "auto", architecture: str | None = None) -> dict:
    config = model_config(model, architecture)
    shape = (stamps, len(config.bands), config.stamp_size_px, config.stamp_size_px)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(shape, generator=generator).to(device)
    labels = (torch.rand(stamps, generator=generator) < 0.5).float().to(device)
    order = np.arange(stamps)
    steps = -(-stamps // batch_size)
    mode = resolve_precision(precision, device)  # autocast and layout as lensnet.train uses them
    use_amp, channels_last = mode.bf16, mode.channels_last
    with_fp32 = use_amp and device.type == "cpu"
    rounds = warm_rounds + 1
    # the two loop variants share a model and optimiser, the bare steps and forward have their own;
    # each schedule is sized for all the rounds' steps
    _, module, optimizer, scheduler = build(config, device, 2 * steps * rounds, channels_last=channels_last)
    _, bare_module, bare_optimizer, bare_scheduler = build(config, device, steps * rounds, channels_last=channels_last)
    pos_weight = torch.tensor(1.0, device=device)
    augmentation = {"max_rotation_deg": 180.0, "zoom": (0.8, 1.2), "max_shift_px": 3.0}
    batch = inputs[:batch_size].contiguous(memory_format=torch.channels_last) if channels_last else inputs[:batch_size]
    target = labels[:batch_size]

    def loop(augment: bool):
        return lambda: train_one_epoch(module, optimizer, scheduler, inputs, labels, order, batch_size=batch_size,
                                       generator=generator, pos_weight=pos_weight, device=device,
                                       augmentation=augmentation if augment else None, use_amp=use_amp,
                                       channels_last=channels_last)

    def bare(module, optimizer, scheduler, batch, amp):
        def run():
            for _ in range(steps):
                train_step(module, optimizer, scheduler, batch, target, pos_weight, amp)
        return run

    variants = {"loop": loop(True), "loop, no augmentation": loop(False),
                "bare step": bare(bare_module, bare_optimizer, bare_scheduler, batch, use_amp)}
    if with_fp32:  # the default layout without autocast, as a CPU run trains by default
        _, *fp32 = build(config, device, steps * rounds)
        variants["bare step, fp32"] = bare(*fp32, inputs[:batch_size].contiguous(), False)

    def forward():
        bare_module.eval()
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            for _ in range(steps):
                bare_module(batch)
        bare_module.train()

    synchronize = torch.cuda.synchronize if device.type == "cuda" else None
    timings = interleaved({**variants, "forward": forward}, warm_rounds=warm_rounds, synchronize=synchronize)
    work = steps * batch_size
    rates = {name: per_second(work, timing["warm_s"]) for name, timing in timings.items()}
    ratios = {"loop / bare step": paired_ratios(rates["loop"], rates["bare step"]),
              "loop without augmentation / bare step": paired_ratios(rates["loop, no augmentation"],
                                                                     rates["bare step"]),
              "bare step / forward": paired_ratios(rates["bare step"], rates["forward"])}
    if with_fp32:
        ratios["bare step bf16 / fp32"] = paired_ratios(rates["bare step"], rates["bare step, fp32"])
    return {
        "model": model, "architecture": config.architecture,
        "parameters": sum(p.numel() for p in module.parameters()), "device": str(device), "stamps_per_round": work,
        "batch_size": batch_size, "precision": mode.label,
        "threads": torch.get_num_threads(),
        "variants": {name: {**timing, "stamps_per_s": rates[name],
                            "cold_stamps_per_s": work / timing["cold_s"]}
                     for name, timing in timings.items()},
        "ratios": ratios,
    }


def markdown(report: dict) -> str:
    from benchmarks.common import spread

    rows = [[name, median_spread_text(spread(variant["stamps_per_s"]), digits=0),
             f"{variant['cold_stamps_per_s']:,.0f}", variant["other_cores"]]
            for name, variant in report["variants"].items()]
    ratios = [[name, median_spread_text(ratio, digits=3)] for name, ratio in report["ratios"].items()]
    return "\n".join([
        f"# Training throughput: `{report['architecture']}` ({report['parameters']:,} parameters) "
        f"on {report['device_name']}",
        "",
        (f"{report['stamps_per_round']:,} stamps per round, batch {report['batch_size']}, {report['precision']}, "
         f"{report['threads']} CPU threads; medians of {len(next(iter(report['variants'].values()))['warm_s'])} "
         "interleaved warm rounds [min–max], the cold first round apart."),
        "",
        markdown_table(["variant", "stamps/s", "cold", "other cores busy"], rows),
        "",
        markdown_table(["per-round ratio", "median [min–max]"], ratios),
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/train_throughput.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="shipped model or checkpoint whose architecture to train")
    parser.add_argument("--architecture", default=None,
                        help="train this registered architecture instead of --model's (same bands and stamp size), "
                             "e.g. lensresnet-wide")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--stamps", type=int, default=None,
                        help="stamps per round (default 65,536 on a GPU, 2,048 on a CPU)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size (default 256, the default's recipe)")
    parser.add_argument("--rounds", type=int, default=5, help="warm rounds (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="as lensnet.train --precision (default auto: bf16 autocast on a GPU, fp32 on a CPU); "
                             "bf16 on a CPU also times an fp32 bare step, for the ratio")
    parser.add_argument("--out", required=True, help="directory for train_throughput.json and .md")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    stamps = args.stamps or (65_536 if device.type == "cuda" else 2_048)
    trained = args.model if args.architecture is None else f"{args.architecture} (at {args.model}'s bands and stamp size)"
    log(f"training throughput of {trained} on {device}, {stamps} stamps per round")
    report = measure(args.model, device, stamps, args.batch_size, args.rounds, precision=args.precision,
                     architecture=args.architecture)
    report["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    report["machine"] = machine_info()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_throughput.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "train_throughput.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
