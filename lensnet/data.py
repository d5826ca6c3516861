"""Reading simulated (or labelled real) stamp sets: ``stamps.zarr`` beside ``truth.parquet``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr


@dataclass
class StampSet:
    """Stamps (n, bands, S, S), their truth table (one row each) and the dataset's attributes."""

    stamps: np.ndarray
    truth: pd.DataFrame
    bands: list[str]
    attrs: dict

    @property
    def labels(self) -> np.ndarray:
        return self.truth["is_lens"].to_numpy().astype(np.float32)


def load_stamp_set(directory: str | Path, limit: int | None = None) -> StampSet:
    """Load a dataset written by ``lensnet.simulate.generate_dataset`` into memory."""
    directory = Path(directory)
    for required in ("stamps.zarr", "truth.parquet"):
        if not (directory / required).exists():
            raise FileNotFoundError(f"{directory} lacks {required}; make one with `python -m lensnet.simulate`")
    dataset = xr.open_zarr(directory / "stamps.zarr", consolidated=False)
    stamps = dataset["stamps"]
    if limit is not None:
        stamps = stamps.isel(object=slice(0, limit))
    truth = pd.read_parquet(directory / "truth.parquet")
    if "stamp_index" in truth:
        truth = truth.sort_values("stamp_index").reset_index(drop=True)
    truth = truth.iloc[: len(stamps)].reset_index(drop=True)
    return StampSet(
        stamps=stamps.to_numpy().astype(np.float32, copy=False),
        truth=truth,
        bands=[str(band) for band in dataset["band"].to_numpy()] if "band" in dataset.coords else [],
        attrs=dict(dataset.attrs),
    )


def _simulate_chunk(profile: str, n: int, seed: int, chunk_index: int, start: int, lens_fraction: float,
                    size_px: int | None) -> tuple[np.ndarray, pd.DataFrame]:
    from lensnet.simulate import simulate_stamps

    return simulate_stamps(n, profile, np.random.SeedSequence([seed, chunk_index]), lens_fraction=lens_fraction,
                           size_px=size_px, index_offset=start)


def simulated_stamp_set(
    profile: str,
    n: int,
    seed: int,
    lens_fraction: float = 0.5,
    chunk_size: int = 500,
    size_px: int | None = None,
    processes: int | None = None,
    progress: bool = True,
) -> StampSet:
    """Simulate a stamp set in memory, in parallel processes, without touching the disk.

    Chunks are seeded exactly as ``lensnet.simulate.generate_dataset`` seeds them, so
    the same (profile, n, seed, lens_fraction, chunk_size) gives the same stamps either way.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    from lensnet.simulate import get_profile

    survey = get_profile(profile)
    starts = list(range(0, n, chunk_size))
    # spawn, not fork: the parent may already hold torch/CUDA state that must not be forked.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        futures = [pool.submit(_simulate_chunk, profile, min(chunk_size, n - start), seed, index, start,
                               lens_fraction, size_px) for index, start in enumerate(starts)]
        results = [future.result() for future in tqdm(futures, desc=f"simulating {n} stamps", disable=not progress)]
    return StampSet(
        stamps=np.concatenate([stamps for stamps, _ in results]),
        truth=pd.concat([truth for _, truth in results], ignore_index=True),
        bands=list(survey.bands),
        attrs={"profile": survey.name, "pixel_scale_arcsec": survey.pixel_scale_arcsec, "seed": seed,
               "n": n, "lens_fraction": lens_fraction, "chunk_size": chunk_size},
    )


def stamp_set_from_spec(spec: str | dict, limit: int | None = None) -> StampSet:
    """A dataset directory, or ``{"simulate": {profile, n, seed, ...}}`` to simulate in memory."""
    if isinstance(spec, dict):
        if set(spec) != {"simulate"}:
            raise ValueError(f"a data mapping must be {{'simulate': {{...}}}}, got keys {sorted(spec)}")
        return simulated_stamp_set(**spec["simulate"])
    return load_stamp_set(spec, limit)
