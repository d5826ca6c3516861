"""Writing and reading catalogues: Parquet with provenance in the file's key-value metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

PROVENANCE_KEY = b"lensfinder.provenance"


def atomic_write_parquet(table: pa.Table, path: str | Path, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``table`` to ``path`` via a temporary file and a rename, so a reader (or a
    resumed run) never sees a half-written file. ``provenance`` goes into the schema
    metadata as JSON under ``lensfinder.provenance``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if provenance is not None:
        metadata = dict(table.schema.metadata or {})
        metadata[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True, default=str).encode()
        table = table.replace_schema_metadata(metadata)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, temporary, compression="zstd")
    os.replace(temporary, path)
    return path


def read_provenance(path: str | Path) -> dict[str, Any]:
    """The provenance dictionary stored in a catalogue written by this package."""
    metadata = pq.read_schema(path).metadata or {}
    if PROVENANCE_KEY not in metadata:
        raise KeyError(f"{path} carries no {PROVENANCE_KEY.decode()} metadata")
    return json.loads(metadata[PROVENANCE_KEY])
