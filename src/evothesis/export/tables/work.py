"""Client tables' work in the table worker processes (``objects.cpu.run_in_table_worker``):
each table is opened once per worker and kept, so its log or metadata is brought up to date
instead of read again. ``export.tables.clients`` names these functions; only the workers
import this module and the libraries it needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from evothesis.errors import TableError
from evothesis.export.keys import table_key
from evothesis.export.tables.core import (
    Appended,
    EventTable,
    Maintained,
    TableRef,
    crowded,
    maintain,
)
from evothesis.export.tables.delta import DeltaEventTable
from evothesis.export.tables.iceberg import IcebergEventTable
from evothesis.export.tables.schema import PARTITION_COLUMN, rows_from_ipc

T = TypeVar("T")

_open: dict[tuple[str, ...], EventTable] = {}


def open_table(ref: TableRef) -> EventTable:
    """The table, opened once per worker process."""
    options = (f"{k}={v}" for k, v in sorted(ref.spec.options.items()))
    cache_key = (ref.fmt, ref.client_id, ref.iceberg_catalog, ref.spec.url, *options)
    table = _open.get(cache_key)
    if table is None:
        key = table_key(ref.client_id, ref.fmt)
        if ref.fmt == "delta":
            table = DeltaEventTable(ref.spec, key)
        else:
            table = IcebergEventTable(ref.iceberg_catalog, ref.spec, key, ref.client_id)
        _open[cache_key] = table
    return table


def append_rows(
    ref: TableRef,
    rows_ipc: list[bytes],
    identity: str,
    metadata: dict[str, str],
    held_by: frozenset[str],
) -> Appended:
    """The append, and whether the table now needs compacting (so that the exporter calls
    maintenance only when there is some to do)."""

    def append(table: EventTable) -> Appended:
        rows = pa.concat_tables([rows_from_ipc(part) for part in rows_ipc])
        appended = table.append(rows, identity, metadata, held_by)
        days = pc.unique(rows.column(PARTITION_COLUMN)).cast(pa.string()).to_pylist()
        return replace(appended, crowded=bool(crowded(table, days)))

    return _guarded(ref, append)


def maintain_table(ref: TableRef, retention: timedelta, full: bool) -> Maintained:
    return _guarded(ref, lambda t: maintain(t, retention, full=full))


def delete_rows(
    ref: TableRef, visitor_ids: list[str], user_ids: list[str], metadata: dict[str, str]
) -> int:
    return _guarded(ref, lambda t: t.delete_subject(visitor_ids, user_ids, metadata))


def _guarded(ref: TableRef, work: Callable[[EventTable], T]) -> T:
    """``work`` on the table; what the libraries raise beyond our own errors becomes a
    ``TableError``, which is all that may cross back to the parent (their exception
    classes cannot be unpickled there)."""
    try:
        return work(open_table(ref))
    except TableError:
        raise
    except Exception as exc:
        text = (str(exc).strip() or type(exc).__name__).splitlines()[0][:500]
        raise TableError(f"{ref.location}: {type(exc).__name__}: {text}") from None
