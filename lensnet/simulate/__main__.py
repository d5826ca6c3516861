"""Command line: ``python -m lensnet.simulate --out DIR -n N [--profile NAME] ...``.

Writes ``DIR/stamps.zarr`` and ``DIR/truth.parquet`` with
:func:`lensnet.simulate.generate_dataset`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lensnet.simulate.dataset import generate_dataset
from lensnet.simulate.definitions import ENGINES, POPULATION, POPULATIONS
from lensnet.simulate.profiles import PROFILES


def build_parser() -> argparse.ArgumentParser:
    """Argument parser of the ``python -m lensnet.simulate`` command."""
    parser = argparse.ArgumentParser(
        prog="python -m lensnet.simulate",
        description="Simulate lens and non-lens stamps into a Zarr cube and a Parquet truth table, with one of two "
        "independent engines: lenstronomy, or GalSim + caustics.",
    )
    parser.add_argument("--out", required=True, help="output directory (stamps.zarr, truth.parquet)")
    parser.add_argument("-n", type=int, required=True, help="number of stamps")
    parser.add_argument("--profile", default="ground-gri", choices=sorted(PROFILES), help="survey profile")
    parser.add_argument("--engine", default="lenstronomy", choices=ENGINES,
                        help="simulator: lenstronomy (default) or galsim (GalSim light and PSFs, caustics lensing)")
    parser.add_argument("--population", type=int, choices=POPULATIONS, default=POPULATION,
                        help=f"version of the object population (default: {POPULATION}); 2 gives the deflectors the "
                             "non-lens early types' size-luminosity relation, so that a deflector is not larger than "
                             "a non-lens of its brightness (population 1 ties its size to θE)")
    parser.add_argument("--seed", type=int, default=0, help="master random seed (default: 0)")
    parser.add_argument("--lens-fraction", type=float, default=0.5, help="fraction of lenses (default: 0.5)")
    parser.add_argument("--chunk-size", type=int, default=500, help="stamps per task and Zarr chunk (default: 500)")
    parser.add_argument("--size", type=int, default=None, help="stamp side in pixels (default: the profile's)")
    parser.add_argument("--workers", type=int, default=None, help="local worker processes (default: all cores)")
    parser.add_argument(
        "--scheduler-address", default=None, help="address of a running dask.distributed scheduler to use instead"
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = build_parser().parse_args(argv)
    client = None
    if args.scheduler_address:
        from distributed import Client

        client = Client(args.scheduler_address)
    try:
        out = generate_dataset(
            args.out,
            n=args.n,
            profile=args.profile,
            seed=args.seed,
            lens_fraction=args.lens_fraction,
            chunk_size=args.chunk_size,
            client=client,
            progress=not args.no_progress,
            n_workers=args.workers,
            size_px=args.size,
            engine=args.engine,
            population=args.population,
        )
    finally:
        if client is not None:
            client.close()
    print(f"wrote {out / 'stamps.zarr'} and {out / 'truth.parquet'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
