"""The machine's own ceilings, measured in the same run as the model timings.

* fp32 matrix-multiply FLOP/s: ``torch.matmul`` of two N x N float32 matrices
  (2 N^3 FLOPs), best of several, at a given torch thread count. This is the "roofline"
  that model throughputs are divided by: what the same BLAS/oneDNN backend sustains on a
  compute-bound kernel on this machine, today, under today's load.
* memory bandwidth: ``Tensor.copy_`` of a 256 MiB float32 buffer into another, counted as
  2 x bytes (read + write) per copy.

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

from benchmarks.common import best_time  # noqa: E402


def matmul_peak(threads: int | None, size: int = 2048, repeats: int = 7, device: str = "cpu",
                dtype: torch.dtype = torch.float32) -> dict:
    """Best FLOP/s of ``size`` x ``size`` matrix products (2 size^3 FLOPs each)."""
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    generator = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else None
    timing = best_time(lambda: torch.matmul(a, b), repeats, warmup=2, synchronize=sync)
    flops = 2 * size**3
    return {"device": device, "dtype": str(dtype).replace("torch.", ""), "size": size,
            "threads": torch.get_num_threads() if device == "cpu" else None,
            "flops_per_s": flops / timing["best_s"], **timing}


def memory_bandwidth(threads: int | None, mebibytes: int = 256, repeats: int = 7, device: str = "cpu") -> dict:
    """Best bytes/s of copying a ``mebibytes`` float32 buffer (read + write counted)."""
    if device == "cpu" and threads:
        torch.set_num_threads(threads)
    source = torch.ones(mebibytes * 2**20 // 4, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    sync = torch.cuda.synchronize if device == "cuda" else None
    timing = best_time(lambda: target.copy_(source), repeats, warmup=2, synchronize=sync)
    moved = 2 * source.numel() * 4
    return {"device": device, "mebibytes": mebibytes,
            "threads": torch.get_num_threads() if device == "cpu" else None,
            "bytes_per_s": moved / timing["best_s"], **timing}


def measure(thread_counts: list[int], quick: bool = False) -> dict:
    """Matmul FLOP/s and copy bandwidth at each thread count (and on the GPU where there is one)."""
    repeats = 4 if quick else 7
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
        print(f"{threads} thread(s): matmul {row['matmul_fp32']['flops_per_s'] / 1e9:.1f} GFLOP/s, "
              f"copy {row['copy_bandwidth']['bytes_per_s'] / 1e9:.1f} GB/s")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
