"""Reading the input source catalogue (CSV, FITS table or Parquet)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from astropy.table import Table

from pipeline.images import InputError

REQUIRED_COLUMNS = ("id", "ra", "dec")


def read_catalog(path: str | Path, log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """The catalogue as a DataFrame with at least ``id``, ``ra``, ``dec`` (degrees).

    Column names are matched case-insensitively and returned in lower case for the three
    required ones; other columns keep their names and are carried into the outputs.
    Refused, before anything runs: a catalogue without rows, missing or duplicate ids
    (every output row must name one input object), and ra/dec values that are not
    numbers (e.g. ``"150.0deg"``; empty cells are fine and become ``invalid_coordinates``).
    ra is wrapped into [0, 360) (-10 is 350), and ``log`` is told how many were; objects
    with |dec| > 90 are kept for the planner to list as ``invalid_coordinates``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--catalog {path}: no such file")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".csv.gz"):
            frame = pd.read_csv(path)
        elif suffix in (".fits", ".fit", ".fits.gz"):
            frame = Table.read(path).to_pandas()
        else:
            raise InputError(f"--catalog {path}: unknown format {suffix!r}; use .parquet, .csv or .fits")
    except InputError:
        raise
    except Exception as error:  # pandas/pyarrow/astropy raise many types for corrupt files
        raise InputError(f"--catalog {path} could not be read: {error}") from None
    lower = {str(name).lower(): name for name in frame.columns}
    missing = [name for name in REQUIRED_COLUMNS if name not in lower]
    if missing:
        raise InputError(
            f"--catalog {path} lacks column(s) {', '.join(missing)}; it has: {', '.join(map(str, frame.columns))}"
        )
    frame = frame.rename(columns={lower[name]: name for name in REQUIRED_COLUMNS}).reset_index(drop=True)
    if len(frame) == 0:
        raise InputError(f"--catalog {path} has no rows: there is nothing to look for")
    missing_ids = np.flatnonzero(frame["id"].isna().to_numpy())
    if len(missing_ids):
        raise InputError(f"--catalog {path}: {len(missing_ids)} row(s) have no id (data rows "
                         f"{', '.join(str(row + 1) for row in missing_ids[:5])}); every object needs a unique id")
    duplicated = frame["id"][frame["id"].duplicated()]
    if len(duplicated):
        examples = ", ".join(map(str, duplicated.unique()[:5]))
        raise InputError(f"--catalog {path}: {len(duplicated)} duplicate id(s), e.g. {examples}; ids must be unique")
    for name in ("ra", "dec"):
        values = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        unparsed = values.isna() & frame[name].notna()
        if unparsed.any():
            examples = ", ".join(repr(value) for value in frame.loc[unparsed, name].unique()[:3])
            raise InputError(f"--catalog {path}: column {name} holds {int(unparsed.sum())} value(s) that are not "
                             f"numbers, e.g. {examples}; give {name} in decimal degrees")
        frame[name] = values
    ra = frame["ra"].to_numpy()
    outside = np.isfinite(ra) & ((ra < 0) | (ra >= 360))
    if outside.any():
        frame["ra"] = wrap_ra(ra)
        if log is not None:
            before, after = ra[outside][0], frame["ra"].to_numpy()[outside][0]
            log(f"--catalog {path}: wrapped {int(outside.sum())} ra value(s) outside [0, 360) into it "
                f"(e.g. {before:g} -> {after:g})")
    return frame


def wrap_ra(ra: np.ndarray) -> np.ndarray:
    """Right ascensions in degrees wrapped into [0, 360); NaN and inf stay as they are."""
    ra = np.asarray(ra, dtype=np.float64)
    finite = np.isfinite(ra)
    wrapped = ra.copy()
    wrapped[finite] = np.mod(ra[finite], 360.0)
    wrapped[finite & (wrapped >= 360.0)] = 0.0  # np.mod(-1e-17, 360) rounds to 360.0
    return wrapped
