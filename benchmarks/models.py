"""Size, cost and CPU throughput of every registered lens-finder architecture.

For each model (at its registered input size) this reports the number of parameters, the
FLOPs needed for one stamp and the images per second a CPU sustains in inference mode.
FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix
products only, one multiply-add counted as 2 FLOPs; element-wise work (activations, batch
norm, pooling, softmax) is not counted. Throughput is the median over timed iterations of
``batch / seconds per batch``, after warm-up iterations, under ``torch.inference_mode``.

Example::

    python benchmarks/models.py --threads 2 --models 'ou-*' deeplens
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lensnet.models import create_model, list_models, model_spec

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "models.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["*"],
        metavar="PATTERN",
        help="registry names or shell patterns to benchmark (default: all)",
    )
    parser.add_argument("--bands", type=int, default=4, help="input channels (default: 4)")
    parser.add_argument("--batch", type=int, default=32, help="stamps per batch (default: 32)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches (default: 2)")
    parser.add_argument("--iters", type=int, default=5, help="timed batches (default: 5)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default: {DEFAULT_OUT})"
    )
    return parser.parse_args(argv)


def select_models(patterns: list[str]) -> list[str]:
    names = list_models()
    selected = [name for name in names if any(fnmatch.fnmatch(name, p) for p in patterns)]
    if not selected:
        raise SystemExit(f"no model matches {patterns}; registered: {', '.join(names)}")
    return selected


def make_inputs(
    model: nn.Module, name: str, bands: int, batch: int
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Random stamps at the model's registered size; two-branch models get their band split."""
    spec = model_spec(name)
    if spec.branches == 1:
        size = spec.input_size_px[0]
        return torch.randn(batch, bands, size, size)
    split = (model.high_res_bands, model.low_res_bands)
    return tuple(
        torch.randn(batch, channels, size, size)
        for channels, size in zip(split, spec.input_size_px)
    )


def flops_per_image(model: nn.Module, inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> int:
    """FLOPs (multiply-add = 2) of one forward pass on a batch of one."""
    single = tuple(t[:1] for t in inputs) if isinstance(inputs, tuple) else inputs[:1]
    counter = FlopCounterMode(display=False)
    # The fused inference fast path of nn.TransformerEncoder/MultiheadAttention runs its
    # matrix products inside one kernel the counter cannot see; count the unfused path.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.inference_mode(), counter:
            model(single)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops()


def images_per_second(
    model: nn.Module, inputs: torch.Tensor | tuple[torch.Tensor, ...], warmup: int, iters: int
) -> tuple[float, float]:
    """(median images/s, median seconds per batch) over ``iters`` timed batches."""
    batch = (inputs[0] if isinstance(inputs, tuple) else inputs).shape[0]
    seconds: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(inputs)
        for _ in range(iters):
            start = time.perf_counter()
            model(inputs)
            seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return batch / median, median


def benchmark(name: str, args: argparse.Namespace) -> dict:
    spec = model_spec(name)
    torch.manual_seed(0)
    model = create_model(name, bands=args.bands).eval()
    inputs = make_inputs(model, name, args.bands, args.batch)
    rate, seconds = images_per_second(model, inputs, args.warmup, args.iters)
    return {
        "name": name,
        "reference": spec.reference,
        "branches": spec.branches,
        "input_size_px": list(spec.input_size_px),
        "bands": args.bands,
        "parameters": sum(p.numel() for p in model.parameters()),
        "flops_per_image": flops_per_image(model, inputs),
        "images_per_s": rate,
        "seconds_per_batch": seconds,
    }


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| model | input (px) | parameters | GFLOPs / image | CPU images / s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        size = " + ".join(f"{s}x{s}" for s in row["input_size_px"])
        lines.append(
            f"| {row['name']} | {size} | {row['parameters']:,} | "
            f"{row['flops_per_image'] / 1e9:.3f} | {row['images_per_s']:,.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # Other work on a shared machine slows the timings down; the load is recorded with them.
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = []
    for name in select_models(args.models):
        row = benchmark(name, args)
        rows.append(row)
        print(
            f"{name:28s} {row['parameters']:>12,d} params "
            f"{row['flops_per_image'] / 1e9:8.3f} GFLOPs/img {row['images_per_s']:10,.1f} img/s",
            flush=True,
        )
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "device": "cpu",
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_before": load_before,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "bands": args.bands,
        "warmup": args.warmup,
        "iters": args.iters,
        "flops": "FlopCounterMode: convolutions and matmuls, 1 multiply-add = 2 FLOPs",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "models": rows}, indent=2) + "\n")
    print()
    print(markdown_table(rows))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
