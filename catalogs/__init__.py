"""catalogs: the products that people and downstream code read — schema, flags, Parquet I/O."""

from catalogs.flags import Flag
from catalogs.io import atomic_write_parquet, read_provenance
from catalogs.schema import FAILURE_REASONS, candidate_schema, failure_schema

__all__ = ["FAILURE_REASONS", "Flag", "atomic_write_parquet", "candidate_schema", "failure_schema", "read_provenance"]
