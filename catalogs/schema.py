"""The candidate catalogue's Parquet schema: every core column, its type, unit and meaning.

This module is the one place that defines what ``candidates.parquet`` holds. Writers
build their tables against :data:`CANDIDATE_FIELDS`; readers can rely on it. Columns of
the input catalogue that are not core columns are carried through after these.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from catalogs.flags import documentation as flags_documentation


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    unit: str
    description: str

    def field(self) -> pa.Field:
        metadata = {"unit": self.unit, "description": self.description}
        return pa.field(self.name, self.type, nullable=False, metadata=metadata)


# object_id keeps the input catalogue's type (integer or string), so it is not listed here.
CANDIDATE_COLUMNS: tuple[Column, ...] = (
    Column("ra", pa.float64(), "deg", "right ascension (ICRS) from the input catalogue"),
    Column("dec", pa.float64(), "deg", "declination (ICRS) from the input catalogue"),
    Column("tile", pa.string(), "", "the tile the stamp was cut from"),
    Column("x_px", pa.float64(), "pix", "0-based column of the object's position in that tile"),
    Column("y_px", pa.float64(), "pix", "0-based row of the object's position in that tile"),
    Column("score", pa.float32(), "", "lens probability from the model, sigmoid(logit), in [0, 1]"),
    Column("logit", pa.float32(), "", "the model's raw output; score = 1 / (1 + exp(-logit))"),
    Column("rank", pa.int64(), "", "1 = most lens-like; ties in score share no rank (order by object_id)"),
    Column("is_candidate", pa.bool_(), "", "score >= the model's decision threshold (stored in metadata)"),
    Column("flags", pa.int32(), "", "quality bitmask, 0 = clean. " + flags_documentation()),
    Column("cutout_index", pa.int64(), "", "position of the object along the 'object' axis of cutouts.zarr"),
)

FAILURE_COLUMNS: tuple[Column, ...] = (
    Column("ra", pa.float64(), "deg", "right ascension from the input catalogue"),
    Column("dec", pa.float64(), "deg", "declination from the input catalogue"),
    Column("reason", pa.string(), "", "why the object was not scored (see FAILURE_REASONS)"),
    Column("detail", pa.string(), "", "the specific error, e.g. the unreadable file"),
)

#: Every value the ``reason`` column of failures.parquet can take.
FAILURE_REASONS: dict[str, str] = {
    "off_footprint": "the position falls on no tile",
    "invalid_coordinates": "ra or dec is missing or outside its range",
    "empty_stamp": "every pixel of the stamp is NaN, infinite or masked",
    "unreadable_tile": "a FITS file of the object's tile could not be read",
}

CORE_NAMES = frozenset({"object_id"} | {column.name for column in CANDIDATE_COLUMNS})


def candidate_schema(object_id_type: pa.DataType, extra: pa.Schema | None = None) -> pa.Schema:
    """The schema of a candidate catalogue, with the input catalogue's extra columns last."""
    fields = [pa.field("object_id", object_id_type, nullable=False, metadata={
        "unit": "", "description": "the input catalogue's id"})]
    fields += [column.field() for column in CANDIDATE_COLUMNS]
    if extra is not None:
        fields += [field for field in extra if field.name not in CORE_NAMES]
    return pa.schema(fields)


def failure_schema(object_id_type: pa.DataType) -> pa.Schema:
    fields = [pa.field("object_id", object_id_type, nullable=False)]
    return pa.schema(fields + [column.field() for column in FAILURE_COLUMNS])
