"""Writing and reading catalogues: Parquet that every common reader understands as-is.

Every table written by :func:`atomic_write_parquet` carries, in its file-level key-value
metadata, besides pandas' own key:

``lensfinder.provenance``
    JSON: model, weights hash, preprocessing, code version, inputs, settings, time.
``table_meta_yaml`` (and ``table::len::<column>`` for string columns)
    astropy's header, so ``astropy.table.Table.read(path)`` recovers units, descriptions
    and UCDs (``column.meta["ucd"]``) and gets the provenance in ``table.meta``.
``IVOA.VOTable-Parquet.version`` = ``1.0`` and ``IVOA.VOTable-Parquet.content``
    the IVOA VOParquet convention: a data-less VOTable whose FIELDs give each column's
    datatype, unit, UCD and description (TOPCAT, STILTS and astropy's ``parquet.votable``
    reader use it), with table-level PARAMs (threshold, prevalences) where given.

Units, descriptions and UCDs come from each Arrow field's metadata (``unit``,
``description``, ``ucd``; see :mod:`catalogs.schema`), which pyarrow, pandas and DuckDB
readers also see. Columns without metadata are described by name and type only.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from catalogs.schema import DESCRIPTION_KEY, UCD_KEY, UNIT_KEY

PROVENANCE_KEY = b"lensfinder.provenance"
ASTROPY_KEY = b"table_meta_yaml"
VOPARQUET_VERSION_KEY = b"IVOA.VOTable-Parquet.version"
VOPARQUET_CONTENT_KEY = b"IVOA.VOTable-Parquet.content"
VOPARQUET_VERSION = b"1.0"

# VOTable 1.4 documents use the 1.3 namespace (the schema was extended compatibly).
_VOTABLE_NS = "http://www.ivoa.net/xml/VOTable/v1.3"
_VOTABLE_VERSION = "1.4"

#: Table-level scalar metadata, written as VOTable PARAMs and into astropy's ``table.meta``:
#: name -> (value, unit, description).
Params = Mapping[str, tuple[float | int | str, str, str]]


def atomic_write_parquet(
    table: pa.Table,
    path: str | Path,
    provenance: dict[str, Any] | None = None,
    *,
    params: Params | None = None,
    description: str = "",
) -> Path:
    """Write ``table`` to ``path`` via a temporary file and a rename, so a reader (or a
    resumed run) never sees a half-written file.

    Args:
        table: the data; field metadata ``unit``/``description``/``ucd`` documents columns.
        path: the Parquet file to write.
        provenance: JSON-able dictionary stored under ``lensfinder.provenance``.
        params: table-level values (e.g. the decision threshold) for VOTable and astropy.
        description: one line describing the table, for the VOTable DESCRIPTION.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = with_reader_metadata(table, provenance, params=params, description=description)
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


def with_reader_metadata(
    table: pa.Table,
    provenance: dict[str, Any] | None = None,
    *,
    params: Params | None = None,
    description: str = "",
) -> pa.Table:
    """``table`` with provenance, astropy and VOParquet metadata added to its schema metadata.

    String lengths for astropy are measured on ``table``: a table later sliced into parts
    (HATS partitions) can share this metadata.
    """
    metadata = dict(table.schema.metadata or {})
    if provenance is not None:
        # Round-trip through JSON so that astropy's YAML gets plain types only.
        provenance = json.loads(json.dumps(provenance, sort_keys=True, default=str))
        metadata[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True).encode()
    lengths = string_lengths(table)
    metadata.update(_astropy_metadata(table.schema, lengths, provenance, params or {}))
    metadata[VOPARQUET_VERSION_KEY] = VOPARQUET_VERSION
    metadata[VOPARQUET_CONTENT_KEY] = votable_header(table.schema, params or {}, description, lengths).encode()
    return table.replace_schema_metadata(metadata)


def string_lengths(table: pa.Table) -> dict[str, int]:
    """Longest value (in characters, at least 1) of each string column of ``table``.

    astropy reads Parquet strings as fixed-width numpy unicode and a null as the text
    ``None``, so a column with nulls is given room for those four characters.
    """
    lengths = {}
    for field in table.schema:
        if _is_string(field.type):
            column = table.column(field.name)
            longest = pc.max(pc.utf8_length(column)).as_py() if table.num_rows else None
            lengths[field.name] = max(longest or 0, 4 if column.null_count else 1)
    return lengths


def _field_text(field: pa.Field, key: bytes) -> str:
    return (field.metadata or {}).get(key, b"").decode()


def _is_string(data_type: pa.DataType) -> bool:
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_string_view(
        data_type)


def _astropy_metadata(
    schema: pa.Schema, lengths: Mapping[str, int], provenance: dict[str, Any] | None, params: Params
) -> dict[bytes, bytes]:
    """``table_meta_yaml`` as astropy's own Parquet writer makes it, plus string lengths.

    astropy's reader looks up every column of the file in this header, so all are listed.
    """
    import numpy as np
    from astropy.table import Column, Table
    from astropy.table import meta as table_meta

    columns = []
    for field in schema:
        if field.name in lengths:
            dtype: Any = "U1"
        else:
            try:
                dtype = np.dtype(field.type.to_pandas_dtype())
            except (NotImplementedError, TypeError):
                dtype = object
        unit = _field_text(field, UNIT_KEY) or None
        ucd = _field_text(field, UCD_KEY)
        columns.append(Column(name=field.name, dtype=dtype, length=0, unit=unit,
                              description=_field_text(field, DESCRIPTION_KEY) or None,
                              meta={"ucd": ucd} if ucd else None))
    meta: dict[str, Any] = {name: value for name, (value, _, _) in params.items()}
    if provenance is not None:
        meta[PROVENANCE_KEY.decode()] = provenance
    header = Table(columns, meta=meta, copy=False)
    yaml_text = "\n".join(table_meta.get_yaml_from_table(header))
    # astropy needs each string column's width up front (it reads them as fixed-width unicode).
    widths = {f"table::len::{name}".encode(): str(length).encode() for name, length in lengths.items()}
    return {ASTROPY_KEY: yaml_text.encode(), **widths}


def _votable_datatype(data_type: pa.DataType, length: int | None) -> tuple[str, str | None]:
    """VOTable (datatype, arraysize) for an Arrow type; strings for anything VOTable lacks.

    A string column of known longest ``length`` gets ``arraysize="<length>*"`` (variable,
    at most that long) rather than ``"*"``, so that readers which build fixed-width string
    columns from the header (astropy's ``parquet.votable``) can hold the Parquet data.
    """
    if pa.types.is_boolean(data_type):
        return "boolean", None
    if pa.types.is_integer(data_type):
        # VOTable has no unsigned types above 8 bits: each goes to the next signed width.
        width = data_type.bit_width + (0 if pa.types.is_signed_integer(data_type) else 1)
        name = "short" if width <= 16 else "int" if width <= 32 else "long"
        return ("unsignedByte", None) if data_type == pa.uint8() else (name, None)
    if pa.types.is_float16(data_type) or pa.types.is_float32(data_type):
        return "float", None
    if pa.types.is_float64(data_type):
        return "double", None
    if _is_string(data_type) and length:
        return "char", f"{length}*"
    # The VOParquet note recommends char/* for types with no VOTable counterpart.
    return "char", "*"


def votable_header(
    schema: pa.Schema,
    params: Params | None = None,
    description: str = "",
    lengths: Mapping[str, int] | None = None,
) -> str:
    """The data-less VOTable document of the VOParquet convention for ``schema``."""
    ET.register_namespace("", _VOTABLE_NS)

    def element(parent: ET.Element, tag: str, **attributes: str) -> ET.Element:
        return ET.SubElement(parent, f"{{{_VOTABLE_NS}}}{tag}", attributes)

    root = ET.Element(f"{{{_VOTABLE_NS}}}VOTABLE", {"version": _VOTABLE_VERSION})
    resource = element(root, "RESOURCE", type="results")
    has_position = {"ra", "dec"} <= set(schema.names)
    if has_position:
        element(resource, "COOSYS", ID="icrs", system="ICRS")
    votable = element(resource, "TABLE", name="lensfinder")
    if description:
        element(votable, "DESCRIPTION").text = description
    for name, (value, unit, text) in (params or {}).items():
        if isinstance(value, str):
            attributes = {"datatype": "char", "arraysize": "*"}
        else:
            attributes = {"datatype": "boolean" if isinstance(value, bool) else
                          "long" if isinstance(value, int) else "double"}
        if unit:
            attributes["unit"] = unit
        param = element(votable, "PARAM", name=name, value=str(value), **attributes)
        if text:
            element(param, "DESCRIPTION").text = text
    for field in schema:
        datatype, arraysize = _votable_datatype(field.type, (lengths or {}).get(field.name))
        attributes = {"name": field.name, "datatype": datatype}
        if arraysize:
            attributes["arraysize"] = arraysize
        for attribute, key in (("unit", UNIT_KEY), ("ucd", UCD_KEY)):
            if text := _field_text(field, key):
                attributes[attribute] = text
        if has_position and field.name in ("ra", "dec"):
            attributes["ref"] = "icrs"
        node = element(votable, "FIELD", **attributes)
        if text := _field_text(field, DESCRIPTION_KEY):
            element(node, "DESCRIPTION").text = text
    return ET.tostring(root, encoding="unicode", xml_declaration=True)
