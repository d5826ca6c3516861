"""``--log-level``: one switch for lensfinder's progress lines and the libraries' log records.

``INFO`` (the default) prints the run's progress lines as before; ``WARNING`` and ``ERROR``
leave only warnings, errors and the final summary; ``DEBUG`` also shows Dask's and the other
libraries' own log records. Dask's worker processes read their level from the environment
(``DASK_LOGGING__DISTRIBUTED``), so it is set there too, before any worker starts.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Loggers of the libraries whose records follow --log-level (never below WARNING unless DEBUG).
LIBRARY_LOGGERS = ("distributed", "dask", "bokeh", "tornado", "fsspec", "numcodecs", "zarr", "hats", "lsdb")


def parse_level(name: str) -> int:
    """``"info"`` -> ``logging.INFO``; ValueError naming the allowed levels otherwise."""
    upper = str(name).upper()
    if upper not in LEVELS:
        raise ValueError(f"--log-level must be one of {', '.join(LEVELS)}, not {name!r}")
    return getattr(logging, upper)


def configure(name: str) -> Callable[[str], None]:
    """Set the levels for ``name``; return the function the run prints its progress lines with."""
    level = parse_level(name)
    library_level = logging.DEBUG if level == logging.DEBUG else max(level, logging.WARNING)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    root.setLevel(level)
    for logger in LIBRARY_LOGGERS:
        logging.getLogger(logger).setLevel(library_level)
    os.environ["DASK_LOGGING__DISTRIBUTED"] = logging.getLevelName(library_level).lower()
    logging.getLogger("lensfinder").setLevel(level)
    if level <= logging.INFO:
        return print
    return lambda message: logging.getLogger("lensfinder").info(message)
