"""The one declared schema of every client table, the rows appended to it, and the rule for
changing it.

The columns are the Parquet files' (``formats.PARQUET_SCHEMA``: times as UTC instants,
``is_bot`` a boolean, ``raw_event_data`` JSON text) plus ``event_date``, the UTC day of the
event's ``timestamp``, which partitions the table (``event_date=YYYY-MM-DD/`` folders).

Evolution is additive only: a later release may add a column (nullable, at the end); it
never removes, renames or retypes one. Rows of a newer schema are appended after the table
gains the new columns (rows already written read them as null); rows of an older schema are
read back with the missing columns null. Anything else is refused before a byte is written.
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from evothesis.errors import SchemaChangeRefused
from evothesis.export.formats import PARQUET_SCHEMA

#: The partition column, derived from ``timestamp``.
PARTITION_COLUMN: Final = "event_date"

TABLE_SCHEMA: Final[pa.Schema] = PARQUET_SCHEMA.append(
    pa.field(PARTITION_COLUMN, pa.date32(), nullable=False)
)


def table_rows(typed: pa.Table) -> pa.Table:
    """``PARQUET_SCHEMA`` rows (``formats.typed_columns``) as table rows: ``event_date``
    added, the schema's metadata dropped (a table keeps its own)."""
    days = pc.cast(typed.column("timestamp"), pa.date32())
    return typed.append_column(TABLE_SCHEMA.field(PARTITION_COLUMN), days).replace_schema_metadata(
        None
    )


def added_columns(current: pa.Schema, rows: pa.Schema) -> list[pa.Field]:
    """The columns ``rows`` add to ``current``, after checking the change is additive.

    Nullability is compared loosely: engines disagree on how they report it (an Iceberg
    table read back through Arrow marks every column nullable)."""
    names = set(current.names)
    for field in current:
        if field.name not in rows.names:
            raise SchemaChangeRefused(f"the rows lack the table's column {field.name!r}")
        wanted = rows.field(field.name).type
        if not _same_type(field.type, wanted):
            raise SchemaChangeRefused(
                f"column {field.name!r} is {field.type} in the table, {wanted} in the rows"
            )
    added = [field for field in rows if field.name not in names]
    for field in added:
        if not field.nullable:
            raise SchemaChangeRefused(f"a new column must be nullable: {field.name!r}")
    return added


def _same_type(table: pa.DataType, rows: pa.DataType) -> bool:
    """Equal, allowing the large/view string spellings engines read text back as."""
    text = (pa.string(), pa.large_string(), pa.string_view())
    if table in text and rows in text:
        return True
    if pa.types.is_timestamp(table) and pa.types.is_timestamp(rows):
        return table.unit == rows.unit and (table.tz is None) == (rows.tz is None)
    return bool(table == rows)


def rows_to_ipc(rows: pa.Table) -> bytes:
    """Table rows as Arrow IPC bytes: how they travel back from an export worker process."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def rows_from_ipc(data: bytes) -> pa.Table:
    with pa.ipc.open_stream(data) as reader:
        table: pa.Table = reader.read_all()
    return table
