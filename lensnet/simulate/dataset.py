"""Large simulated training sets on disk: a Zarr stamp cube plus a Parquet truth table.

Layout of ``out_dir``::

    stamps.zarr     xarray-readable Zarr store; variable "stamps" (object, band, y, x),
                    float32 counts, coordinates "object" and "band" (band names)
    truth.parquet   one row per stamp; "stamp_index" is the position along "object"

The stamps are simulated in chunks of ``chunk_size`` objects, one dask task per chunk.
Each chunk draws from its own random stream seeded by ``SeedSequence([seed, chunk])``
and writes exactly one Zarr chunk, so the result depends only on ``(n, seed,
chunk_size, ...)``, never on the number of workers or the order in which tasks run.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from lensnet.simulate.definitions import ENGINES, POPULATION, check_population
from lensnet.simulate.profiles import SurveyProfile, get_profile
from lensnet.simulate.stamps import simulate_stamps

if TYPE_CHECKING:
    import distributed

STAMPS_STORE = "stamps.zarr"
TRUTH_FILE = "truth.parquet"
STAMPS_VARIABLE = "stamps"


def _create_store(
    store: Path, n: int, profile: SurveyProfile, size_px: int, chunk_size: int, attrs: dict[str, Any]
) -> None:
    """Write the store's metadata and coordinates; the stamp data are left to the chunk tasks."""
    shape = (n, profile.n_bands, size_px, size_px)
    chunks = (chunk_size, profile.n_bands, size_px, size_px)
    placeholder = da.zeros(shape, chunks=chunks, dtype=np.float32)  # never computed
    dataset = xr.Dataset(
        {STAMPS_VARIABLE: (("object", "band", "y", "x"), placeholder, {"units": "counts"})},
        coords={"object": np.arange(n, dtype=np.int64), "band": np.array(profile.bands, dtype=object)},
        attrs=attrs,
    )
    with warnings.catch_warnings():
        # consolidated metadata is not (yet) in the Zarr v3 spec, but xarray readers
        # expect it and warn loudly without it
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        dataset.to_zarr(store, mode="w", compute=False, encoding={STAMPS_VARIABLE: {"chunks": chunks}})


def _simulate_chunk(
    store: str,
    chunk_index: int,
    start: int,
    stop: int,
    profile: SurveyProfile,
    seed: int,
    lens_fraction: float,
    kind_weights: dict[str, float] | None,
    size_px: int,
    engine: str,
    population: int,
) -> pd.DataFrame:
    """Simulate objects ``start:stop``, write them as one Zarr chunk, return their truth rows."""
    stamps, truth = simulate_stamps(
        stop - start,
        profile,
        np.random.SeedSequence([seed, chunk_index]),
        lens_fraction=lens_fraction,
        kind_weights=kind_weights,
        size_px=size_px,
        index_offset=start,
        engine=engine,
        population=population,
    )
    zarr.open_array(store, path=STAMPS_VARIABLE, mode="r+")[start:stop] = stamps
    return truth


def _compute(
    tasks: list[Any],
    client: distributed.Client | None,
    scheduler: str,
    n_workers: int | None,
    progress: bool,
) -> list[pd.DataFrame]:
    """Run the chunk tasks on ``client`` or a local dask scheduler, with a progress bar."""
    from tqdm.auto import tqdm

    if client is not None:
        from distributed import as_completed

        futures = client.compute(tasks)
        for _ in tqdm(as_completed(futures), total=len(futures), desc="chunks", unit="chunk", disable=not progress):
            pass
        return client.gather(futures)
    workers = n_workers or os.cpu_count() or 1
    if workers == 1:
        scheduler = "synchronous"
    if progress:
        from tqdm.dask import TqdmCallback

        with TqdmCallback(desc="chunks", unit="chunk"):
            return list(dask.compute(*tasks, scheduler=scheduler, num_workers=workers))
    return list(dask.compute(*tasks, scheduler=scheduler, num_workers=workers))


def generate_dataset(
    out_dir: str | Path,
    n: int,
    profile: str | SurveyProfile,
    seed: int,
    lens_fraction: float = 0.5,
    chunk_size: int = 500,
    client: distributed.Client | None = None,
    progress: bool = True,
    n_workers: int | None = None,
    scheduler: Literal["processes", "threads"] = "processes",
    size_px: int | None = None,
    kind_weights: dict[str, float] | None = None,
    engine: str = "lenstronomy",
    population: int = POPULATION,
) -> Path:
    """Simulate ``n`` stamps in parallel and write ``stamps.zarr`` and ``truth.parquet``.

    Args:
        out_dir: output directory (created; an existing store there is overwritten).
        n: number of stamps.
        profile: survey profile or its name.
        seed: master seed; chunk ``k`` uses ``np.random.SeedSequence([seed, k])``.
        lens_fraction: fraction of lenses in every chunk.
        chunk_size: objects per task and per Zarr chunk.
        client: a ``distributed.Client`` to run on; ``None`` uses a local dask scheduler.
        progress: show a progress bar over chunks.
        n_workers: local workers when ``client`` is None (default: all cores; 1 runs
            in this process).
        scheduler: local dask scheduler when ``client`` is None. Processes scale with
            cores (the simulation holds the GIL); threads start instantly.
        size_px: stamp side (default: the profile's ``stamp_size_px``).
        kind_weights: relative frequencies of the non-lens kinds.
        engine: simulation engine, ``"lenstronomy"`` or ``"galsim"``.
        population: version of the object population
            (:data:`lensnet.simulate.definitions.POPULATIONS`; default
            :data:`lensnet.simulate.definitions.POPULATION`).

    Returns:
        ``out_dir`` as a Path.
    """
    if n <= 0 or chunk_size <= 0:
        raise ValueError(f"n and chunk_size must be positive (got {n}, {chunk_size})")
    if engine not in ENGINES:
        raise ValueError(f"unknown simulation engine {engine!r}; known engines: {', '.join(ENGINES)}")
    population = check_population(population)
    profile = get_profile(profile)
    size = int(size_px or profile.stamp_size_px)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    store = out / STAMPS_STORE
    attrs = {
        "generator": "lensnet.simulate.generate_dataset",
        "engine": engine,
        "population": population,
        "profile": profile.name,
        "bands": list(profile.bands),
        "pixel_scale_arcsec": profile.pixel_scale_arcsec,
        "stamp_size_px": size,
        "seed": int(seed),
        "lens_fraction": float(lens_fraction),
        "n": int(n),
        "chunk_size": int(chunk_size),
        "units": "counts; mag = zeropoint_mag - 2.5 log10(counts)",
        "zeropoint_mag": list(profile.zeropoint_mag),
    }
    _create_store(store, n, profile, size, chunk_size, attrs)
    simulate = dask.delayed(_simulate_chunk, pure=True)
    tasks = [
        simulate(
            str(store), k, start, min(start + chunk_size, n), profile, int(seed), lens_fraction, kind_weights, size,
            engine, population,
        )
        for k, start in enumerate(range(0, n, chunk_size))
    ]
    truth = pd.concat(_compute(tasks, client, scheduler, n_workers, progress), ignore_index=True)
    truth = truth.sort_values("stamp_index", ignore_index=True)
    truth.to_parquet(out / TRUTH_FILE, index=False)
    return out
