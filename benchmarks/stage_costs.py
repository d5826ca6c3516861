"""Two per-stamp costs of the CPU pipeline, each against its alternative, in one process.

* Normalisation: the float64 reference ``lensnet.preprocess.normalise`` vs the float32
  ``lensnet.preprocess.fast.normalise`` the CPU pipeline uses (``asinh_stretch``, the
  default model's), stamps/s on one thread, interleaved (one cold round, then
  ``--repeats`` warm ones: median [min–max], the speed-up per round); and the largest
  difference between their outputs.
* Cutout store codec: ``pipeline.store`` with the stamps uncompressed (the default) vs
  zstd (``--stamp-compression zstd``): write and read MB/s of one shard (codecs
  interleaved, one cold round apart, median of the warm ones with the spread), and the
  bytes on disk.

Both run on stamps simulated with lenstronomy (``ground-gri``, raw float32 pixels as the
cut stage stores them). ``python benchmarks/stage_costs.py [--stamps N]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    interleaved,
    log,
    median_spread_text,
    paired_ratios,
    per_second,
    spread,
    timing_summary,
)


def normalisation(stamps: np.ndarray, repeats: int) -> dict:
    from lensnet import preprocess
    from lensnet.preprocess import fast as preprocess_fast

    functions = {"float64 reference": preprocess.normalise, "float32 (pipeline)": preprocess_fast.normalise}
    timings = interleaved({label: (lambda f=function: f(stamps, "asinh_stretch", scale=3.0))
                           for label, function in functions.items()}, repeats, cold_rounds=1)
    difference = np.abs(functions["float64 reference"](stamps, "asinh_stretch", scale=3.0)[0]
                        - functions["float32 (pipeline)"](stamps, "asinh_stretch", scale=3.0)[0]).max()
    rates = {label: spread(per_second(len(stamps), timing["warm_s"])) for label, timing in timings.items()}
    speed_up = paired_ratios(timings["float64 reference"]["warm_s"], timings["float32 (pipeline)"]["warm_s"])
    return {"stamps": len(stamps), "statistic": "median of warm interleaved rounds; speed-up per round",
            "stamps_per_s_one_thread": {label: rate["median"] for label, rate in rates.items()},
            "stamps_per_s_one_thread_spread": rates,
            "speed_up": speed_up["median"], "speed_up_spread": speed_up,
            "timings": timings, "max_abs_difference": float(difference)}


def codecs(stamps: np.ndarray, repeats: int) -> dict:
    from catalogs.layout import STAMPS
    from pipeline import store

    n = len(stamps)
    objects = pd.DataFrame({"object_id": np.arange(n), "ra": np.zeros(n), "dec": np.zeros(n), "tile": ["t"] * n,
                            "x_px": np.zeros(n), "y_px": np.zeros(n)})
    flags = np.zeros(n, np.int32)
    out = {}
    with tempfile.TemporaryDirectory(prefix="codec-") as scratch:
        for _ in range(1 + repeats):  # the first round is cold; codecs interleaved
            for codec in store.STAMP_CODECS:
                path = Path(scratch) / codec
                store.create_store(path, objects, ["g", "r", "i"], stamps.shape[-1], n, compression=codec)
                started = time.perf_counter()
                store.write_shard(path, 0, stamps, flags)
                written = time.perf_counter()
                store.read_stamps(path, 0, n)
                read = time.perf_counter()
                entry = out.setdefault(codec, {"write_s": [], "read_s": []})
                entry["write_s"].append(written - started)
                entry["read_s"].append(read - written)
                entry["stamp_bytes_on_disk"] = sum(f.stat().st_size for f in (path / STAMPS).rglob("*")
                                                   if f.is_file() and f.name != "zarr.json")
    for entry in out.values():
        for stage in ("write", "read"):
            seconds = entry.pop(f"{stage}_s")
            entry[f"{stage}_timing"] = timing_summary(seconds[:1], seconds[1:])
            rates = spread(per_second(stamps.nbytes / 1e6, seconds[1:]))
            entry[f"{stage}_mb_per_s"] = rates["median"]
            entry[f"{stage}_mb_per_s_spread"] = rates
        entry["compression_ratio"] = stamps.nbytes / entry["stamp_bytes_on_disk"]
    return {"stamps": n, "megabytes": stamps.nbytes / 1e6, "codecs": out}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stamps", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5, help="warm rounds after the cold one (default 5)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "stage_costs.json")
    args = parser.parse_args(argv)
    from lensnet.data import simulated_stamp_set

    torch.set_num_threads(1)
    log(f"simulating {args.stamps} stamps (not timed)")
    stamps = np.ascontiguousarray(simulated_stamp_set("ground-gri", args.stamps, seed=5, progress=False).stamps,
                                  dtype=np.float32)
    result = {"normalisation": normalisation(stamps, args.repeats), "store": codecs(stamps, args.repeats)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    norm = result["normalisation"]
    print(f"median [min-max] of {args.repeats} warm interleaved rounds (one cold round apart)")
    print("normalisation, stamps/s on one thread: "
          + ", ".join(f"{label} {median_spread_text(rate, 0)}"
                      for label, rate in norm["stamps_per_s_one_thread_spread"].items())
          + f" ({median_spread_text(norm['speed_up_spread'], 2)}x per round; "
            f"max |difference| {norm['max_abs_difference']:.1e})")
    for codec, entry in result["store"]["codecs"].items():
        print(f"stamps {codec}: write {median_spread_text(entry['write_mb_per_s_spread'], 0)} MB/s, "
              f"read {median_spread_text(entry['read_mb_per_s_spread'], 0)} MB/s, "
              f"compression {entry['compression_ratio']:.2f}x")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
