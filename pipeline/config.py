"""The settings of one survey run: one validated object, layered defaults < YAML < flags.

Every command-line flag of ``run_survey.py`` has a YAML key of the same name with ``_``
for ``-``; the resolved settings are saved as ``run.yaml`` in the output directory and in
the catalogue's metadata.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.where import WhereError, parse_where

CLUSTERS = ("local", "cuda", "slurm")
DEVICES = ("auto", "cpu", "cuda")
STAMP_COMPRESSIONS = ("none", "zstd")
#: Where the Dask dashboard listens unless told otherwise: loopback only, like the
#: inspection server (reach it through an SSH tunnel); an explicit address opens it.
DEFAULT_DASHBOARD_ADDRESS = "127.0.0.1:8787"
#: Simulation engines of the demo's mock survey (lensnet.simulate.definitions.ENGINES).
DEMO_ENGINES = ("lenstronomy", "galsim")


def usable_cpus() -> int:
    """CPUs this process may run on: a SLURM allocation or cpuset, not the whole node."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not available on macOS
        return os.cpu_count() or 1


class SettingsError(ValueError):
    """A setting is missing or wrong; the message says which and what to do."""


@dataclass
class Settings:
    """Everything a survey run needs. Paths are as given (relative to the working directory).

    Attributes:
        images: path pattern with ``{tile}`` and ``{band}``, e.g. ``tiles/{tile}_{band}.fits``; without
            ``{band}``, one multi-extension file per tile with extensions named after the bands.
        masks: optional pattern of mask images (non-zero = bad pixel), same placeholders.
        weights: optional pattern of weight maps (zero = bad pixel), same placeholders.
        catalog: CSV, FITS table or Parquet with columns ``id``, ``ra``, ``dec`` (degrees).
        bands: band names in the order the model expects; default: the model's own bands.
        where: preselection on catalogue columns, e.g. ``mag_r < 22 and flag == 0``: comparisons,
            and/or/not, ``in [...]``, arithmetic and a few functions, parsed and evaluated by
            :mod:`pipeline.where` (never by ``eval``: a shared configuration cannot run code).
        out: output directory (created; a rerun resumes into it).
        model: a shipped model name (``default``) or a checkpoint directory; a comma-separated list
            scores an ensemble (per-model ``score_<name>`` columns, ``score`` = their mean probability).
        workers: number of Dask worker processes to start (ignored with ``scheduler``).
        threads_per_worker: PyTorch threads per worker; default: cores / workers.
        scheduler: address of an existing Dask scheduler to use instead of starting workers.
        cluster: ``local`` (CPU), ``cuda`` (one dask-cuda worker per GPU) or ``slurm`` (dask-jobqueue).
        device: where the model runs: ``auto`` picks CUDA when the worker has a GPU.
        shard_size: objects per Zarr chunk and per inference task.
        stamp_compression: codec of the stamps in the cutout store: ``none`` (default) or
            ``zstd``. Noise-dominated float32 stamps shrink by only ~7% with zstd, which
            writes them ~5x and reads them ~3x slower (benchmarks/stage_costs.py).
        batch_size: stamps per forward pass; default 32 on CPUs, 1024 on GPUs (measured best on CPUs).
        tta: test-time augmentation: average each stamp's probability over its 8 dihedral orientations.
        target_prevalence: lens fraction assumed in the survey for the recalibrated ``p_survey`` column.
        known_lenses: cross-match the catalogue with known lenses: ``lenscat`` (the catalogue shipped
            with the lenscat package) or a CSV in lenscat's format; none by default.
        hats_min_rows: also write a HEALPix-partitioned (HATS) copy when the catalogue has more rows.
        force: discard an output directory made with other settings instead of refusing.
        progress: draw a progress bar in the terminal.
        rescore: a finished run's directory whose cutout store is scored again with ``model``
            (no tile is read; see :mod:`pipeline.rescore`).
        demo: generate a mock survey into ``out/mock_survey`` and run on it.
        demo_objects: size of the demo's mock survey.
        demo_engine: simulation engine of the demo's mock survey: ``lenstronomy`` or ``galsim``
            (an independent simulator, for measuring a model off its training simulator).
        demo_lens_fraction: fraction of lenses in the demo's mock survey.
        seed: seed of the demo's mock survey.
        dashboard_address: where the Dask dashboard listens; default 127.0.0.1:8787 (this
            machine only; ``:8787`` or ``0.0.0.0:8787`` opens it to the network).
    """

    images: str | None = None
    masks: str | None = None
    weights: str | None = None
    catalog: str | None = None
    bands: list[str] | None = None
    where: str | None = None
    out: str | None = None
    model: str = "default"
    workers: int | None = None
    threads_per_worker: int | None = None
    scheduler: str | None = None
    cluster: str = "local"
    device: str = "auto"
    shard_size: int = 512
    stamp_compression: str = "none"
    batch_size: int | None = None
    tta: bool = False
    target_prevalence: float = 1e-3
    known_lenses: str | None = None
    hats_min_rows: int = 1_000_000
    force: bool = False
    progress: bool = True
    rescore: str | None = None
    demo: bool = False
    demo_objects: int = 1200
    demo_engine: str = "lenstronomy"
    demo_lens_fraction: float = 0.1
    seed: int = 0
    dashboard_address: str = DEFAULT_DASHBOARD_ADDRESS
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.name != "extra"]

    def validate(self) -> "Settings":
        """Check values that do not need the file system; return self.

        Every value is first checked against its declared type (a YAML file can hold
        anything): booleans must be real booleans (``true``/``false``, not the string
        ``'no'``), integers integers, numbers numbers.
        """
        self._check_types()
        if self.out is None:
            raise SettingsError("--out is required: the directory for the catalogue and the cutout store")
        if self.rescore and self.demo:
            raise SettingsError("--rescore and --demo exclude each other")
        if not self.demo:
            if not self.images:
                raise SettingsError("--images is required: a path pattern such as 'tiles/{tile}_{band}.fits'")
            if not self.catalog:
                raise SettingsError("--catalog is required: a CSV, FITS or Parquet file with id, ra, dec")
            if "{tile}" not in self.images:
                raise SettingsError(
                    f"--images {self.images!r} lacks the placeholder {{tile}}; write e.g. "
                    "'tiles/{tile}_{band}.fits' (or 'tiles/{tile}.fits' for one multi-extension file per tile)"
                )
        if self.cluster not in CLUSTERS:
            raise SettingsError(f"--cluster must be one of {', '.join(CLUSTERS)}, not {self.cluster!r}")
        if self.device not in DEVICES:
            raise SettingsError(f"--device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.stamp_compression not in STAMP_COMPRESSIONS:
            raise SettingsError(f"--stamp-compression must be one of {', '.join(STAMP_COMPRESSIONS)}, "
                                f"not {self.stamp_compression!r}")
        for name in ("shard_size", "demo_objects"):
            if getattr(self, name) < 1:
                raise SettingsError(f"--{name.replace('_', '-')} must be a positive integer")
        for name in ("workers", "threads_per_worker", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SettingsError(f"--{name.replace('_', '-')} must be a positive integer")
        if self.demo_engine not in DEMO_ENGINES:
            raise SettingsError(f"--demo-engine must be one of {', '.join(DEMO_ENGINES)}, not {self.demo_engine!r}")
        if not 0 <= self.demo_lens_fraction <= 1:
            raise SettingsError(f"--demo-lens-fraction must lie in [0, 1], not {self.demo_lens_fraction}")
        if not 0 < self.target_prevalence < 1:
            raise SettingsError(f"--target-prevalence must lie strictly between 0 and 1, not {self.target_prevalence}")
        if self.bands is not None and len(set(self.bands)) != len(self.bands):
            raise SettingsError(f"--bands lists a band twice: {','.join(self.bands)}")
        if self.where is not None:
            try:
                parse_where(self.where)
            except WhereError as error:
                raise SettingsError(str(error)) from None
        return self

    def _check_types(self) -> None:
        hints = typing.get_type_hints(type(self))
        for name in self.keys():
            value = getattr(self, name)
            allowed = _allowed_types(hints[name])
            if value is None and type(None) in allowed:
                continue
            if str in allowed and isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))
                continue
            if _fits(value, allowed):
                continue
            raise SettingsError(_type_message(name, value, allowed))

    def resolved_workers(self) -> int:
        return self.workers or max(1, min(4, usable_cpus()))

    def resolved_threads(self) -> int:
        return self.threads_per_worker or max(1, usable_cpus() // self.resolved_workers())

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.keys()}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _allowed_types(annotation: Any) -> tuple[type, ...]:
    """``int | None`` -> ``(int, NoneType)``; ``list[str]`` -> ``(list,)``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(t for arg in typing.get_args(annotation) for t in _allowed_types(arg))
    return (typing.get_origin(annotation) or annotation,)


def _fits(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # bool is an int in Python, never in a setting
        return bool in allowed
    if isinstance(value, int):
        return int in allowed or float in allowed
    if isinstance(value, float):
        return float in allowed
    if isinstance(value, list):
        return list in allowed and all(isinstance(item, str) for item in value)
    return isinstance(value, tuple(t for t in allowed if t not in (bool, int, float, list)))


_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             list: "a list of names"}


def _type_message(name: str, value: Any, allowed: tuple[type, ...]) -> str:
    expected = " or ".join(_EXPECTED.get(t, t.__name__) for t in allowed if t is not type(None))
    hint = ""
    if isinstance(value, str) and bool in allowed:
        hint = "; write true or false without quotes"
    elif isinstance(value, str) and (int in allowed or float in allowed):
        try:
            float(value)
            hint = "; write the number without quotes"
        except ValueError:
            pass
    elif isinstance(value, list):
        hint = "; every item must be a name (a string)"
    return (f"setting {name} (--{name.replace('_', '-')}, or '{name}:' in a --config file) must be {expected}, "
            f"not {value!r} ({type(value).__name__}){hint}")


def parse_bands(value: str | list[str] | None) -> list[str] | None:
    """``"g,r,i"`` or ``["g", "r", "i"]`` -> ``["g", "r", "i"]``."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        items = list(value)
    elif isinstance(value, str):
        items = value.split(",")
    else:
        raise SettingsError(f"setting bands must be a comma-separated string such as g,r,i or a list of band "
                            f"names, not {value!r} ({type(value).__name__})")
    bands = [item.strip() for item in items if item.strip()]
    if not bands:
        raise SettingsError("--bands is empty; give a comma-separated list such as g,r,i")
    return bands


class _SettingsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-3`` as a number as YAML 1.2 does (1.1 needs ``1.0e-3``)."""


_SettingsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a settings YAML file, rejecting keys that are not settings."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(), Loader=_SettingsLoader) or {}
    except FileNotFoundError:
        raise SettingsError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"--config {path} cannot be read: {error}") from None
    except yaml.YAMLError as error:
        raise SettingsError(f"--config {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"--config {path} must hold a mapping of setting: value")
    data = {str(key).replace("-", "_"): value for key, value in data.items()}
    unknown = sorted(set(data) - set(Settings.keys()))
    if unknown:
        raise SettingsError(f"--config {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(Settings.keys())}")
    return data


def resolve(config_file: str | Path | None = None, **flags: Any) -> Settings:
    """Layer the defaults, then the YAML file, then the flags that were given (not None)."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(load_yaml(config_file))
    values.update({key: value for key, value in flags.items() if value is not None})
    values["bands"] = parse_bands(values.get("bands"))
    try:
        settings = Settings(**values)
    except TypeError as error:
        raise SettingsError(str(error)) from None
    return settings.validate()
