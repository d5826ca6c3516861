"""The machine's own ceilings, measured in the same run as the model timings.

* fp32 matrix-multiply FLOP/s: ``torch.matmul`` of two N x N float32 matrices
  (2 N^3 FLOPs), the median of several warm repeats (the first calls, which start the
  thread pool and fill the caches, are reported apart as cold), at a given torch
  thread count. This is the "roofline"
  that model throughputs are divided by: what the same BLAS/oneDNN backend sustains on a
  compute-bound kernel on this machine, today, under today's load.
* memory bandwidth: ``Tensor.copy_`` of a 256 MiB float32 buffer into another, counted as
  2 x bytes (read + write) per copy, likewise the median of warm repeats.

Each result carries the per-repeat rates (``*_all``) and their spread (median, min, max,
quartiles, n), so that ``run_all.py`` can pool the repeats of the peak measurements it
takes before, between and after the model sections and use their median as the roofline.

On a CUDA machine the same two numbers are taken on the GPU as well (fp32 with TF32 off,
plus bf16). That path is not exercised on CPU-only machines.

    python benchmarks/peak.py --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import per_second, repeated_time, spread  # noqa: E402


def matmul_peak(threads: int | None, size: int = 2048, repeats: int = 7, device: str = "cpu",
                dtype: torch.dtype = torch.float32) -> dict:
    """Median FLOP/s over ``repeats`` warm ``size`` x ``size`` matrix products (2 size^3 FLOPs each)."""
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else None
    timing = repeated_time(lambda: torch.matmul(a, b), repeats, cold=2, synchronize=sync)
    flops = 2 * size**3
    per_repeat = per_second(flops, timing["warm_s"])
    return {"device": device, "dtype": str(dtype).replace("torch.", ""), "size": size,
            "threads": torch.get_num_threads() if device == "cpu" else None,
            "flops_per_s": spread(per_repeat)["median"], "flops_per_s_spread": spread(per_repeat),
            "flops_per_s_all": per_repeat, **timing}


def memory_bandwidth(threads: int | None, mebibytes: int = 256, repeats: int = 7, device: str = "cpu") -> dict:
    """Median bytes/s over ``repeats`` warm copies of a ``mebibytes`` float32 buffer (read + write counted)."""
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    source = torch.ones(mebibytes * 2**20 // 4, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    sync = torch.cuda.synchronize if device == "cuda" else None
    timing = repeated_time(lambda: target.copy_(source), repeats, cold=2, synchronize=sync)
    moved = 2 * source.numel() * 4
    per_repeat = per_second(moved, timing["warm_s"])
    return {"device": device, "mebibytes": mebibytes,
            "threads": torch.get_num_threads() if device == "cpu" else None,
            "bytes_per_s": spread(per_repeat)["median"], "bytes_per_s_spread": spread(per_repeat),
            "bytes_per_s_all": per_repeat, **timing}


def measure(thread_counts: list[int], quick: bool = False, repeats: int | None = None) -> dict:
    """Matmul FLOP/s and copy bandwidth at each thread count (and on the GPU where there is one):
    the median of ``repeats`` warm repeats (default 9, 5 with ``quick``) after two cold ones."""
    repeats = repeats or (5 if quick else 9)
    result: dict = {"cpu": {}}
    for threads in thread_counts:
        result["cpu"][str(threads)] = {
            "matmul_fp32": matmul_peak(threads, 2048, repeats),
            "copy_bandwidth": memory_bandwidth(threads, 128 if quick else 256, repeats),
        }
    if torch.cuda.is_available():  # untested on the CPU-only development machine
        torch.backends.cuda.matmul.allow_tf32 = False
        result["cuda"] = {
            "matmul_fp32": matmul_peak(None, 8192, repeats, "cuda", torch.float32),
            "matmul_bf16": matmul_peak(None, 8192, repeats, "cuda", torch.bfloat16),
            "copy_bandwidth": memory_bandwidth(None, 1024, repeats, "cuda"),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.threads, args.quick)
    for threads, row in result["cpu"].items():
        matmul, copy = row["matmul_fp32"], row["copy_bandwidth"]
        print(f"{threads} thread(s): matmul {matmul['flops_per_s'] / 1e9:.1f} GFLOP/s "
              f"[{matmul['flops_per_s_spread']['min'] / 1e9:.1f}-{matmul['flops_per_s_spread']['max'] / 1e9:.1f}], "
              f"copy {copy['bytes_per_s'] / 1e9:.1f} GB/s "
              f"[{copy['bytes_per_s_spread']['min'] / 1e9:.1f}-{copy['bytes_per_s_spread']['max'] / 1e9:.1f}] "
              f"(median [min-max] of {matmul['n']} warm repeats; other cores busy: {matmul.get('other_cores')})")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
