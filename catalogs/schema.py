"""The candidate catalogue's Parquet schema: every core column, its type, unit, UCD and meaning.

This module is the one place that defines what ``candidates.parquet`` holds. Writers
build their tables against :func:`candidate_schema`; readers can rely on it. Columns of
the input catalogue that are not core columns are carried through after these.

Scores of several models
------------------------
``score`` is always *the* score of the run: the one model's probability when one model
scored the run (today's case), the ensemble's when several did. With several models the
catalogue also has one ``score_<model>`` column per model, right after ``score``, named by
:func:`model_score_column` (the model's name lower-cased, every run of characters other
than ``a-z``, ``0-9`` and ``_`` replaced by one ``_``). With one model there is no
``score_<model>`` column: it would repeat ``score``. ``logit``, ``rank``,
``is_candidate`` and ``p_survey`` always follow ``score``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from catalogs.flags import documentation as flags_documentation

#: HEALPix order of the ``_healpix_29`` spatial index (NESTED scheme), as in HATS/LSDB.
HEALPIX_ORDER = 29
HEALPIX_COLUMN = f"_healpix_{HEALPIX_ORDER}"

#: Default lens prevalence that ``p_survey`` is recalibrated to: about one strong lens per
#: thousand massive galaxies, the order of magnitude expected in wide ground-based surveys
#: (Collett 2015). Override it per run; the value used is stored in the metadata.
DEFAULT_TARGET_PREVALENCE = 1e-3

#: Field-metadata keys every documented column carries (Parquet stores bytes).
UNIT_KEY, DESCRIPTION_KEY, UCD_KEY = b"unit", b"description", b"ucd"


@dataclass(frozen=True)
class Column:
    """One documented column: Arrow type, unit (astropy/VOUnit string, "" if none), UCD, meaning."""

    name: str
    type: pa.DataType
    unit: str
    description: str
    ucd: str = ""
    nullable: bool = False

    def field(self) -> pa.Field:
        return pa.field(self.name, self.type, nullable=self.nullable, metadata=_metadata(
            self.unit, self.description, self.ucd))


def _metadata(unit: str, description: str, ucd: str) -> dict[bytes, bytes]:
    return {UNIT_KEY: unit.encode(), DESCRIPTION_KEY: description.encode(), UCD_KEY: ucd.encode()}


def object_id_field(object_id_type: pa.DataType) -> pa.Field:
    """``object_id`` keeps the input catalogue's type (integer or string), so it is built here."""
    return pa.field("object_id", object_id_type, nullable=False, metadata=_metadata(
        "", "the input catalogue's id", "meta.id;meta.main"))


_PROBABILITY = "stat.probability"

# The core columns, in catalogue order; per-model scores (if any) are inserted after "score".
CANDIDATE_COLUMNS: tuple[Column, ...] = (
    Column("ra", pa.float64(), "deg", "right ascension (ICRS) from the input catalogue", "pos.eq.ra;meta.main"),
    Column("dec", pa.float64(), "deg", "declination (ICRS) from the input catalogue", "pos.eq.dec;meta.main"),
    Column(HEALPIX_COLUMN, pa.int64(), "",
           f"HEALPix index of (ra, dec) at order {HEALPIX_ORDER}, NESTED scheme (the HATS/LSDB spatial index)",
           "pos.healpix"),
    Column("tile", pa.string(), "", "the tile the stamp was cut from", "meta.id;obs.field"),
    Column("x_px", pa.float64(), "pix", "0-based column of the object's position in that tile",
           "pos.cartesian.x;instr.det"),
    Column("y_px", pa.float64(), "pix", "0-based row of the object's position in that tile",
           "pos.cartesian.y;instr.det"),
    Column("score", pa.float32(), "",
           "lens probability in [0, 1] at the training prevalence: sigmoid(logit) of the model, or the "
           "ensemble's mean probability when several models scored the run (a cross-fit counting as one "
           "model: each object's score from the fold model that did not train on it)", _PROBABILITY),
    Column("p_survey", pa.float32(), "",
           "score recalibrated by prior shift from the training prevalence to the survey prevalence "
           "(both stored in the metadata): the probability that the object is a lens in this survey",
           _PROBABILITY),
    Column("logit", pa.float32(), "", "log-odds of score: score = 1 / (1 + exp(-logit))", "stat.value"),
    Column("rank", pa.int64(), "", "1 = most lens-like; ties in score share no rank (order by object_id)",
           "meta.number"),
    Column("is_candidate", pa.bool_(), "", "score >= the decision threshold (stored in the metadata)",
           "meta.code.class"),
    Column("flags", pa.int32(), "", "quality bitmask, 0 = clean. " + flags_documentation(), "meta.code.qual"),
    Column("cutout_index", pa.int64(), "", "position of the object along the 'object' axis of cutouts.zarr",
           "meta.record"),
)

#: Filled by :func:`catalogs.crossmatch.crossmatch`; null where no known lens lies within the radius.
CROSSMATCH_COLUMNS: tuple[Column, ...] = (
    Column("known_lens_name", pa.string(), "", "name of the nearest known lens or candidate (lenscat) "
           "within the match radius", "meta.id.cross", nullable=True),
    Column("known_lens_grade", pa.string(), "", "its grading in the known-lens catalogue "
           "(e.g. confident, probable)", "meta.code.qual", nullable=True),
    Column("known_lens_separation_arcsec", pa.float64(), "arcsec", "angular distance to that known lens",
           "pos.angDistance", nullable=True),
)

FAILURE_COLUMNS: tuple[Column, ...] = (
    Column("ra", pa.float64(), "deg", "right ascension from the input catalogue", "pos.eq.ra;meta.main",
           nullable=True),
    Column("dec", pa.float64(), "deg", "declination from the input catalogue", "pos.eq.dec;meta.main",
           nullable=True),
    Column("reason", pa.string(), "", "why the object was not scored (see FAILURE_REASONS)", "meta.code"),
    Column("detail", pa.string(), "", "the specific error, e.g. the unreadable file", "meta.note",
           nullable=True),
)

#: Every value the ``reason`` column of failures.parquet can take.
FAILURE_REASONS: dict[str, str] = {
    "off_footprint": "the position falls on no tile",
    "invalid_coordinates": "ra or dec is missing or outside its range",
    "empty_stamp": "every pixel of the stamp is NaN, infinite or masked",
    "unreadable_tile": "a FITS file of the object's tile could not be read",
    "not_selected": "rejected by the run's preselection (--where)",
}

#: Names an input catalogue's column may not take (merge renames such a column ``input_<name>``).
CORE_NAMES = frozenset({"object_id"} | {column.name for column in CANDIDATE_COLUMNS + CROSSMATCH_COLUMNS})


def model_score_column(model_name: str) -> str:
    """The name of a model's own score column in a multi-model catalogue: ``score_<model>``."""
    slug = re.sub(r"[^a-z0-9_]+", "_", model_name.lower()).strip("_")
    if not slug:
        raise ValueError(f"model name {model_name!r} has no letter or digit to name a column after")
    return f"score_{slug}"


def model_score_columns(model_names: Iterable[str]) -> list[Column]:
    """The ``score_<model>`` columns for ``model_names``: none for a single model (``score`` is it)."""
    names = list(model_names)
    if len(names) < 2:
        return []
    columns = [Column(model_score_column(name), pa.float32(), "",
                      f"lens probability from model {name!r} alone, sigmoid of its logit", _PROBABILITY)
               for name in names]
    if len({column.name for column in columns}) != len(columns):
        raise ValueError(f"model names {names} give the same score column twice")
    return columns


def candidate_schema(
    object_id_type: pa.DataType,
    extra: pa.Schema | None = None,
    *,
    model_names: Iterable[str] = (),
    crossmatch: bool = False,
) -> pa.Schema:
    """The schema of a candidate catalogue.

    Args:
        object_id_type: Arrow type of the input catalogue's id.
        extra: the input catalogue's other columns, appended last (core names are skipped).
        model_names: the models that scored the run; with two or more, their ``score_<model>``
            columns follow ``score`` (see the module docstring).
        crossmatch: include the known-lens columns of :data:`CROSSMATCH_COLUMNS`.
    """
    fields = [object_id_field(object_id_type)]
    for column in CANDIDATE_COLUMNS:
        fields.append(column.field())
        if column.name == "score":
            fields += [model_column.field() for model_column in model_score_columns(model_names)]
    if crossmatch:
        fields += [column.field() for column in CROSSMATCH_COLUMNS]
    if extra is not None:
        taken = {field.name for field in fields}
        fields += [field for field in extra if field.name not in CORE_NAMES and field.name not in taken]
    return pa.schema(fields)


def failure_schema(object_id_type: pa.DataType) -> pa.Schema:
    """The schema of ``failures.parquet``: the objects that were not scored, and why."""
    return pa.schema([object_id_field(object_id_type)] + [column.field() for column in FAILURE_COLUMNS])
