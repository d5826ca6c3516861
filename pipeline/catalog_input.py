"""Reading the input source catalogue (CSV, FITS table or Parquet)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from astropy.table import Table

from pipeline.images import InputError

REQUIRED_COLUMNS = ("id", "ra", "dec")


def read_catalog(path: str | Path) -> pd.DataFrame:
    """The catalogue as a DataFrame with at least ``id``, ``ra``, ``dec`` (degrees).

    Column names are matched case-insensitively and returned in lower case for the three
    required ones; other columns keep their names and are carried into the outputs.
    Duplicate ids are rejected: every output row must name one input object.
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
    frame = frame.rename(columns={lower[name]: name for name in REQUIRED_COLUMNS})
    duplicated = frame["id"][frame["id"].duplicated()]
    if len(duplicated):
        examples = ", ".join(map(str, duplicated.unique()[:5]))
        raise InputError(f"--catalog {path}: {len(duplicated)} duplicate id(s), e.g. {examples}; ids must be unique")
    for name in ("ra", "dec"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    return frame.reset_index(drop=True)
