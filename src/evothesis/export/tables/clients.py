"""Each client's table, as the export and data-subject requests use it: every call runs in a
table worker process, where each table is opened once and kept (its log or metadata is then
brought up to date instead of read again)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from evothesis.errors import ObjectStoreError, TableError
from evothesis.export.keys import table_key
from evothesis.export.tables.core import Appended, EventTable, Maintained, crowded, maintain
from evothesis.export.tables.delta import DeltaEventTable, storage
from evothesis.export.tables.iceberg import TABLE_NAME, IcebergEventTable
from evothesis.export.tables.schema import PARTITION_COLUMN, rows_from_ipc
from evothesis.objects.buckets import BucketSpec
from evothesis.objects.cpu import run_in_table_worker

logger = logging.getLogger("evothesis.export")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TableRef:
    """Which table: a client's, in a format, in a destination (picklable, for workers)."""

    fmt: str
    spec: BucketSpec
    client_id: str
    iceberg_catalog: str

    @property
    def location(self) -> str:
        """How readers name the table: its URI (Delta), its catalog identifier (Iceberg)."""
        if self.fmt == "iceberg":
            return f"{self.client_id}.{TABLE_NAME}"
        return self.uri

    @property
    def uri(self) -> str:
        """Where the table's files are: one table's, whatever its format."""
        return storage(self.spec, table_key(self.client_id, self.fmt))[0]


class ClientTables:
    """Tables in clients' destinations; Iceberg ones registered in ``iceberg_catalog`` (a
    PostgreSQL or REST catalog URL)."""

    def __init__(self, *, iceberg_catalog: str, retention: timedelta) -> None:
        self._iceberg_catalog = iceberg_catalog
        self.retention = retention
        #: One append at a time per table from this process (by its location): appends
        #: racing for the same table's next commit only make all but one write again.
        self._appending: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def ref(self, fmt: str, spec: BucketSpec, client_id: str) -> TableRef:
        if fmt not in ("delta", "iceberg"):
            raise ValueError(f"{fmt!r} is not a table format")
        return TableRef(fmt, spec, client_id, self._iceberg_catalog)

    async def append(
        self,
        ref: TableRef,
        rows_ipc: Sequence[bytes],
        identity: str,
        metadata: Mapping[str, str],
        held_by: Collection[str],
    ) -> Appended:
        """Append the rows (Arrow IPC, in parts appended as one) exactly once under
        ``identity`` (``EventTable.append``); ``crowded`` says whether the table now needs
        compacting. Other processes' appends to the table are kept apart by its commits."""
        async with self._appending[ref.uri]:
            appended: Appended = await run_in_table_worker(
                append_rows, ref, list(rows_ipc), identity, dict(metadata), frozenset(held_by)
            )
        return appended

    async def maintain(
        self, ref: TableRef, *, retention: timedelta | None, full: bool
    ) -> Maintained | None:
        """One maintenance pass (``core.maintain``; vacuum keeps removed files for
        ``retention``, by default the operator's); ``None`` when it failed, which is logged:
        a delivery stands either way, and the next one tries again."""
        try:
            done: Maintained = await run_in_table_worker(
                maintain_table, ref, self.retention if retention is None else retention, full
            )
        except ObjectStoreError as exc:
            logger.warning("Maintenance of %s failed: %s", ref.location, exc)
            return None
        if done.partitions_compacted or done.files_removed:
            logger.info(
                "Maintained %s: %d partition(s) compacted, %d file(s) vacuumed",
                ref.location,
                done.partitions_compacted,
                done.files_removed,
            )
        return done

    async def delete_subject(
        self,
        ref: TableRef,
        visitor_ids: Collection[str],
        user_ids: Collection[str],
        metadata: Mapping[str, str],
    ) -> int:
        deleted: int = await run_in_table_worker(
            delete_rows, ref, sorted(visitor_ids), sorted(user_ids), dict(metadata)
        )
        return deleted


# ------------------------------------------------------------------- in the worker processes

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
