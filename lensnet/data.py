"""Reading simulated (or labelled real) stamp sets: ``stamps.zarr`` beside ``truth.parquet``.

A *data spec* names a stamp set: a directory written by ``python -m lensnet.simulate``;
``{"simulate": {"profile", "n", "seed", "engine", ...}}`` to simulate one in memory; or a
list of these, concatenated (e.g. the same survey from both simulation engines).

Simulating takes longer than training on a small machine. With the environment variable
``LENSNET_SIMULATION_CACHE`` set to a directory, a ``simulate`` spec is written there once
(as ``python -m lensnet.simulate`` would write it; the same seeds give the same stamps)
and read back by every later run that names it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
                    size_px: int | None, engine: str, population: int) -> tuple[np.ndarray, pd.DataFrame]:
    from lensnet.simulate import simulate_stamps

    return simulate_stamps(n, profile, np.random.SeedSequence([seed, chunk_index]), lens_fraction=lens_fraction,
                           size_px=size_px, index_offset=start, engine=engine, population=population)


def simulated_stamp_set(
    profile: str,
    n: int,
    seed: int,
    lens_fraction: float = 0.5,
    chunk_size: int = 500,
    size_px: int | None = None,
    processes: int | None = None,
    progress: bool = True,
    engine: str = "lenstronomy",
    population: int | None = None,
) -> StampSet:
    """Simulate a stamp set in memory, in parallel processes, without touching the disk.

    Chunks are seeded exactly as ``lensnet.simulate.generate_dataset`` seeds them, so
    the same (engine, population, profile, n, seed, lens_fraction, chunk_size) gives the
    same stamps either way.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    from lensnet.simulate import get_profile

    survey = get_profile(profile)
    population = _default_population() if population is None else population
    starts = list(range(0, n, chunk_size))
    # spawn, not fork: the parent may already hold torch/CUDA state that must not be forked.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        futures = [pool.submit(_simulate_chunk, profile, min(chunk_size, n - start), seed, index, start,
                               lens_fraction, size_px, engine, population) for index, start in enumerate(starts)]
        results = [future.result() for future in tqdm(futures, desc=f"simulating {n} {engine} stamps",
                                                       disable=not progress)]
    return StampSet(
        stamps=np.concatenate([stamps for stamps, _ in results]),
        truth=pd.concat([truth for _, truth in results], ignore_index=True),
        bands=list(survey.bands),
        attrs={"engine": engine, "population": population, "profile": survey.name,
               "pixel_scale_arcsec": survey.pixel_scale_arcsec,
               "seed": seed, "n": n, "lens_fraction": lens_fraction, "chunk_size": chunk_size},
    )


DataSpec = str | dict | list


def describe_spec(spec: DataSpec) -> str:
    """A short label of a data spec for tables: ``galsim/ground-gri/seed 202`` or a directory name."""
    if isinstance(spec, list):
        return " + ".join(describe_spec(item) for item in spec)
    if isinstance(spec, dict):
        settings = spec.get("simulate", {})
        label = f"{settings.get('engine', 'lenstronomy')}/{settings.get('profile', '?')}/seed {settings.get('seed', '?')}"
        population = settings.get("population") or _default_population()
        return label if population == 1 else f"{label}/population {population}"
    return Path(spec).name or str(spec)


def _check_spec(spec: DataSpec) -> None:
    if isinstance(spec, dict) and set(spec) != {"simulate"}:
        raise ValueError(f"a data mapping must be {{'simulate': {{...}}}}, got keys {sorted(spec)}")
    if isinstance(spec, list) and not spec:
        raise ValueError("a list of data specs must not be empty")


def check_spec(spec: DataSpec) -> None:
    """Raise ``ValueError`` unless ``spec`` is a directory name, a well-formed simulate mapping or a list of these."""
    _check_spec(spec)
    if isinstance(spec, list):
        for member in spec:
            check_spec(member)
        return
    if not isinstance(spec, dict):
        if not isinstance(spec, (str, Path)):
            raise ValueError(f"a data spec is a directory or {{'simulate': {{...}}}}, not {spec!r}")
        if not (Path(spec) / "truth.parquet").is_file():
            raise ValueError(f"{spec} is not a stamp set (no truth.parquet there; python -m lensnet.simulate writes one)")
        return
    settings = spec["simulate"]
    if not isinstance(settings, dict):
        raise ValueError(f"'simulate' must map settings to values, not {settings!r}")
    missing = [key for key in ("profile", "n", "seed") if key not in settings]
    known = {"profile", "n", "seed", "engine", "lens_fraction", "chunk_size", "size_px", "processes", "progress",
             "population"}
    unknown = sorted(set(settings) - known)
    if missing or unknown:
        raise ValueError(f"a simulate spec needs profile, n and seed (optional: engine, population, lens_fraction, "
                         f"chunk_size, size_px); {'missing ' + ', '.join(missing) if missing else ''}"
                         f"{'; ' if missing and unknown else ''}{'unknown ' + ', '.join(unknown) if unknown else ''}")
    _check_settings(settings)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_settings(settings: dict) -> None:
    """The values of a simulate spec: ValueError naming the first that cannot work."""
    from lensnet.simulate.definitions import ENGINES, check_population
    from lensnet.simulate.profiles import get_profile

    if not (_whole(settings["n"]) and settings["n"] > 0):
        raise ValueError(f"simulate: n must be a whole number > 0, not {settings['n']!r}")
    if not _whole(settings["seed"]) or settings["seed"] < 0:
        raise ValueError(f"simulate: seed must be a whole number >= 0, not {settings['seed']!r}")
    chunk = settings.get("chunk_size", 500)
    if not (_whole(chunk) and chunk > 0):
        raise ValueError(f"simulate: chunk_size must be a whole number > 0, not {chunk!r}")
    size = settings.get("size_px")
    if size is not None and not (_whole(size) and size > 0):
        raise ValueError(f"simulate: size_px must be a whole number > 0, not {size!r}")
    fraction = settings.get("lens_fraction", 0.5)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"simulate: lens_fraction must lie in [0, 1], not {fraction!r}")
    engine = settings.get("engine", "lenstronomy")
    if engine not in ENGINES:
        raise ValueError(f"simulate: unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    if "population" in settings:
        check_population(settings["population"])
    try:
        get_profile(settings["profile"])
    except KeyError as error:
        raise ValueError(error.args[0]) from None


SIMULATION_CACHE_ENV = "LENSNET_SIMULATION_CACHE"
#: The keyword defaults of a simulate spec, so that equal specs share one cache entry.
_SIMULATE_DEFAULTS = {"engine": "lenstronomy", "lens_fraction": 0.5, "chunk_size": 500, "size_px": None}


def _default_population() -> int:
    """The simulators' default population (imported here: they load only when a set is simulated)."""
    from lensnet.simulate.definitions import POPULATION

    return POPULATION


def _normalised(settings: dict) -> dict:
    """A simulate spec's settings with their defaults; population 1, which predates the
    ``population`` key, is left out, so that sets simulated before it keep their identity."""
    from lensnet.simulate.definitions import check_population

    merged = {**_SIMULATE_DEFAULTS, **settings}
    merged["population"] = check_population(merged.get("population", _default_population()))
    if merged["population"] == 1:
        del merged["population"]
    return merged


def materialise(spec: DataSpec, directory: str | Path) -> str | list:
    """Write a ``simulate`` spec to ``directory`` once (reused while its ``spec.json`` matches).

    Directories pass through; a list is materialised member by member into
    ``directory/0``, ``directory/1``, ... Returns the directory (or list of them).
    """
    directory = Path(directory)
    if isinstance(spec, list):
        return [materialise(member, directory / str(index)) for index, member in enumerate(spec)]
    if not isinstance(spec, dict):
        return spec
    from lensnet.simulate import generate_dataset

    if not is_materialised(spec, directory):
        settings = _stored_settings(spec)
        generate_dataset(directory, **{"population": 1, **settings})  # the key is left out for population 1
        write_text_atomically(directory / "spec.json", json.dumps(settings, sort_keys=True) + "\n")
    return str(directory)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` beside ``path`` and move it into place, so that a kill never leaves half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def _stored_settings(spec: dict) -> dict:
    """What a cache directory's ``spec.json`` records of a simulate spec (not how it was run)."""
    settings = _normalised(spec["simulate"])
    settings.pop("processes", None)
    settings.pop("progress", None)
    return settings


def is_materialised(spec: dict, directory: str | Path) -> bool:
    """Whether ``directory`` already holds the set a simulate spec describes (:func:`materialise` reuses it)."""
    directory = Path(directory)
    return _marker(directory / "spec.json") == _stored_settings(spec) and (directory / "truth.parquet").is_file()


def _marker(path: Path) -> Any:
    """The settings a cache directory was simulated with; None when absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def cache_name(settings: dict) -> str:
    """The simulation cache's directory name of a simulate spec's settings."""
    merged = _normalised(settings)
    population = f"-population{merged['population']}" if "population" in merged else ""
    return (f"{merged['engine']}-{merged['profile']}-n{merged['n']}-seed{merged['seed']}"
            f"-lens{merged['lens_fraction']}-chunk{merged['chunk_size']}-size{merged['size_px'] or 'default'}"
            f"{population}")


def stamp_set_from_spec(spec: DataSpec, limit: int | None = None) -> StampSet:
    """Load or simulate the stamp set a data spec names (see the module docstring).

    A list is concatenated in order: its members must share bands and stamp size; the
    truth gains a ``data_set`` column (the member's :func:`describe_spec` label) and its
    ``attrs`` list the members' under ``"members"``. ``limit`` applies to each directory.
    """
    _check_spec(spec)
    if isinstance(spec, list):
        parts = [stamp_set_from_spec(item, limit) for item in spec]
        return concatenate(parts, [describe_spec(item) for item in spec])
    if isinstance(spec, dict):
        check_spec(spec)
        cache = os.environ.get(SIMULATION_CACHE_ENV)
        if cache:
            return load_stamp_set(materialise(spec, Path(cache) / cache_name(spec["simulate"])))
        return simulated_stamp_set(**spec["simulate"])
    return load_stamp_set(spec, limit)


def concatenate(parts: list[StampSet], labels: list[str]) -> StampSet:
    """One stamp set from several with the same bands and stamp shape (truth labelled by ``labels``)."""
    first = parts[0]
    for part, label in zip(parts, labels, strict=True):
        if part.bands != first.bands or part.stamps.shape[1:] != first.stamps.shape[1:]:
            raise ValueError(f"cannot concatenate {label!r} (bands {part.bands}, stamps {part.stamps.shape[1:]}) with "
                             f"{labels[0]!r} (bands {first.bands}, stamps {first.stamps.shape[1:]})")
    stamps = np.empty((sum(len(p.stamps) for p in parts), *first.stamps.shape[1:]), dtype=np.float32)
    start, truths = 0, []
    for part, label in zip(parts, labels, strict=True):
        stamps[start : start + len(part.stamps)] = part.stamps
        start += len(part.stamps)
        part.stamps = np.empty((0, *stamps.shape[1:]), dtype=np.float32)  # let the member's pixels go
        truths.append(part.truth.assign(data_set=label))
    attrs = {key: first.attrs[key] for key in ("profile", "pixel_scale_arcsec") if key in first.attrs}
    attrs["members"] = [dict(part.attrs) for part in parts]
    return StampSet(stamps=stamps, truth=pd.concat(truths, ignore_index=True), bands=first.bands, attrs=attrs)
