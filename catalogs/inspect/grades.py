"""Visual-inspection grades: validation and a safe append-only store.

Grades follow the SuGOHI scale (Sonnenfeld et al. 2018): 3 = sure lens, 2 = probable
lens, 1 = possible lens, 0 = not a lens.

Every grade is one row of ``RUN_DIR/inspections.parquet`` with the columns ``grader``
(string), ``object_id`` (the catalogue's type), ``grade`` (int8) and ``graded_utc``
(timestamp, UTC). A revised grade is a new row; the latest row of a (grader, object)
pair counts and the earlier ones stay as history.

Appending rewrites the file through a temporary file and a rename
(:func:`catalogs.io.atomic_write_parquet`) while holding an exclusive lock on
``RUN_DIR/.inspections.lock`` (``fcntl.flock``; a thread lock as well within one
process). Concurrent graders, in one server or in several processes on the same
machine, therefore never lose a grade, and a reader never sees a half-written file.
(``flock`` is advisory and may not work across machines on some network file systems:
run one server per run directory there.)
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from catalogs.io import atomic_write_parquet
from catalogs.layout import CANDIDATES_FILE, RunLayout

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: only the in-process lock applies
    fcntl = None  # type: ignore[assignment]


#: The SuGOHI grading scale.
GRADE_SCALE: dict[int, str] = {3: "sure lens", 2: "probable lens", 1: "possible lens", 0: "not a lens"}
#: Grader names: 1-40 characters, letters, digits, space, dot, underscore, hyphen,
#: starting with a letter or digit.
GRADER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,39}")
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,19}")


class ValidationError(ValueError):
    """A grade, grader name or object id that the store refuses."""


def validate_grader(value: Any) -> str:
    """The grader's name with surrounding spaces removed, or ValidationError."""
    if not isinstance(value, str):
        raise ValidationError("grader must be a string")
    name = value.strip()
    if not GRADER_PATTERN.fullmatch(name):
        raise ValidationError(
            "grader must be 1-40 characters: letters, digits, space, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def validate_grade(value: Any) -> int:
    """A grade 0-3 given as a JSON integer (not a bool, float or string)."""
    if isinstance(value, bool) or not isinstance(value, int) or value not in GRADE_SCALE:
        raise ValidationError("grade must be one of the integers 0, 1, 2, 3")
    return int(value)


def validate_object_id(value: Any, known: pd.Index) -> int | str:
    """``value`` as an object id of the catalogue whose ids are ``known``.

    Integer catalogues accept a JSON integer or its decimal text; string catalogues a
    string. The id must exist in the catalogue.
    """
    if pd.api.types.is_integer_dtype(known.dtype):
        if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value.strip()):
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError("object_id must be an integer for this catalogue")
    elif not isinstance(value, str) or not 0 < len(value) <= 200:
        raise ValidationError("object_id must be a non-empty string for this catalogue")
    if value not in known:
        raise ValidationError("object_id is not in the candidate catalogue")
    return value


def object_id_type_of(object_ids: pd.Series) -> pa.DataType:
    """Arrow type for storing these catalogue ids: int64 for integers, else string."""
    return pa.int64() if pd.api.types.is_integer_dtype(object_ids.dtype) else pa.string()


def inspections_schema(object_id_type: pa.DataType) -> pa.Schema:
    """Schema of ``inspections.parquet`` for a catalogue with this object-id type."""
    return pa.schema(
        [
            pa.field("grader", pa.string(), nullable=False),
            pa.field("object_id", object_id_type, nullable=False),
            pa.field("grade", pa.int8(), nullable=False, metadata={"description": _scale_text()}),
            pa.field("graded_utc", pa.timestamp("ms", tz="UTC"), nullable=False),
        ]
    )


def _scale_text() -> str:
    return "SuGOHI scale: " + ", ".join(f"{k} = {v}" for k, v in GRADE_SCALE.items())


class GradeStore:
    """Append-only grades of one run directory.

    Args:
        run_dir: the run directory; the store writes only ``inspections.parquet`` and
            ``.inspections.lock`` there.
        object_id_type: Arrow type of the catalogue's ``object_id`` (default int64).
    """

    def __init__(self, run_dir: str | Path, object_id_type: pa.DataType | None = None):
        self.run_dir = Path(run_dir)
        self.path = RunLayout(self.run_dir).inspections
        self.schema = inspections_schema(object_id_type if object_id_type is not None else pa.int64())
        self._thread_lock = threading.Lock()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            if fcntl is None:
                yield
                return
            with open(RunLayout(self.run_dir).inspections_lock, "a+b") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def read(self) -> pd.DataFrame:
        """Every grade ever given (history included), in the order given."""
        if not self.path.is_file():
            return self.schema.empty_table().to_pandas()
        return pd.read_parquet(self.path)

    def append(self, grader: str, object_id: int | str, grade: int, when: datetime | None = None) -> dict[str, Any]:
        """Record one (already validated) grade; returns the row written."""
        when = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
        row = {"grader": [grader], "object_id": [object_id], "grade": [grade], "graded_utc": [when]}
        new = pa.Table.from_pydict(row, schema=self.schema)
        with self._locked():
            if self.path.is_file():
                import pyarrow.parquet as pq

                old = pq.read_table(self.path).cast(self.schema)
                new = pa.concat_tables([old, new])
            provenance = {"content": "visual inspection grades", "scale": _scale_text(),
                          "catalogue": CANDIDATES_FILE}
            atomic_write_parquet(new, self.path, provenance=provenance)
        return {"grader": grader, "object_id": object_id, "grade": grade,
                "graded_utc": when.isoformat(timespec="milliseconds")}

    def latest_for(self, grader: str) -> pd.DataFrame:
        """The current grade of every object this grader has graded."""
        table = self.read()
        mine = table[table["grader"] == grader]
        return mine.drop_duplicates("object_id", keep="last").reset_index(drop=True)


def export_graded(run_dir: str | Path, out_prefix: str | Path) -> tuple[Path, Path]:
    """Write the graded objects with their consensus to ``OUT_PREFIX.parquet`` and ``.csv``.

    Rows are the objects with at least one grade, sorted by ``combined_rank``; columns
    are ``combined_rank``, ``object_id``, the consensus columns (see
    :mod:`catalogs.inspect.consensus`), ``known_lens_name`` if the catalogue has it,
    then the catalogue's columns. The Parquet file carries the run's provenance plus
    an ``inspection`` entry describing the grades and classes.
    """
    from catalogs.inspect.consensus import CLASS_THRESHOLDS, CONSENSUS_COLUMNS, combined_ranking, consensus
    from catalogs.io import read_provenance

    run_dir = Path(run_dir)
    catalogue_path = RunLayout(run_dir).candidates
    candidates = pd.read_parquet(catalogue_path)
    inspections = GradeStore(run_dir, object_id_type_of(candidates["object_id"])).read()
    table = combined_ranking(candidates, consensus(inspections), graded_only=True)
    first = ["combined_rank", "object_id", *CONSENSUS_COLUMNS]
    if "known_lens_name" in table.columns:
        first.append("known_lens_name")
    table = table[first + [c for c in table.columns if c not in first]]

    try:
        provenance = read_provenance(catalogue_path)
    except KeyError:
        provenance = {}
    provenance["inspection"] = {
        "scale": _scale_text(),
        "classes": {name: f"mean_grade >= {lowest}" for name, lowest in CLASS_THRESHOLDS},
        "combined_rank": "mean_grade descending, then score descending, then network rank",
        "graders": sorted(inspections["grader"].unique().tolist()),
        "grades": int(len(inspections)),
        "exported_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    parquet_path = prefix.with_name(prefix.name + ".parquet")
    csv_path = prefix.with_name(prefix.name + ".csv")
    atomic_write_parquet(pa.Table.from_pandas(table, preserve_index=False), parquet_path, provenance=provenance)
    temporary = csv_path.with_name(f".{csv_path.name}.tmp")
    table.to_csv(temporary, index=False)
    temporary.replace(csv_path)
    return parquet_path, csv_path
