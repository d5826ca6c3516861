"""catalogs: the products that people and downstream code read.

schema (the one catalogue definition), flags (the one bitmask), io (Parquet readable by
pandas, pyarrow, DuckDB, astropy and TOPCAT, with provenance), healpix (the
``_healpix_29`` index), hats (HEALPix-partitioned catalogues for LSDB), crossmatch
(known lenses), ensemble (combining models' scores). Never imports ``pipeline``.
"""

from catalogs.crossmatch import crossmatch, known_lens_report, load_known_lenses
from catalogs.ensemble import combine, mean_probability, rank_average
from catalogs.flags import Flag
from catalogs.hats import write_hats
from catalogs.healpix import healpix_29
from catalogs.io import atomic_write_parquet, read_provenance
from catalogs.schema import (
    DEFAULT_TARGET_PREVALENCE,
    FAILURE_REASONS,
    HEALPIX_COLUMN,
    candidate_schema,
    failure_schema,
    model_score_column,
)

__all__ = [
    "DEFAULT_TARGET_PREVALENCE",
    "FAILURE_REASONS",
    "Flag",
    "HEALPIX_COLUMN",
    "atomic_write_parquet",
    "candidate_schema",
    "combine",
    "crossmatch",
    "failure_schema",
    "healpix_29",
    "known_lens_report",
    "load_known_lenses",
    "mean_probability",
    "model_score_column",
    "rank_average",
    "read_provenance",
    "write_hats",
]
