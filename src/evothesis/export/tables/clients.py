"""Each client's table, opened once per destination and format, and the async face the
export and data-subject requests use (every table call runs in a thread)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import timedelta

import pyarrow as pa

from evothesis.errors import ObjectStoreError
from evothesis.export.keys import table_key
from evothesis.export.tables.core import Appended, EventTable, Maintenance
from evothesis.export.tables.delta import DeltaEventTable
from evothesis.export.tables.iceberg import IcebergEventTable
from evothesis.objects.buckets import BucketSpec

logger = logging.getLogger("evothesis.export")


class ClientTables:
    """Opens ``delta`` tables in the client's destination and ``iceberg`` tables in it,
    registered in ``iceberg_catalog`` (a PostgreSQL or REST catalog URL)."""

    def __init__(self, *, iceberg_catalog: str, retention: timedelta) -> None:
        self._iceberg_catalog = iceberg_catalog
        self.retention = retention
        self._maintenance = Maintenance()
        self._open: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], EventTable] = {}

    def table(self, fmt: str, spec: BucketSpec, client_id: str) -> EventTable:
        cache_key = (fmt, client_id, spec.url, tuple(sorted(spec.options.items())))
        table = self._open.get(cache_key)
        if table is None:
            key = table_key(client_id, fmt)
            if fmt == "delta":
                table = DeltaEventTable(spec, key)
            elif fmt == "iceberg":
                table = IcebergEventTable(self._iceberg_catalog, spec, key, client_id)
            else:
                raise ValueError(f"{fmt!r} is not a table format")
            self._open[cache_key] = table
        return table

    async def append(
        self,
        table: EventTable,
        rows: pa.Table,
        identity: str,
        metadata: Mapping[str, str],
        *,
        retention: timedelta | None = None,
    ) -> Appended:
        """Append exactly once, then maintain the table (vacuum keeps removed files for
        ``retention``, by default the operator's). A failed maintenance pass does not undo
        a delivery: it is logged and tried again after the next append."""
        appended = await asyncio.to_thread(table.append, rows, identity, metadata)
        try:
            done = await asyncio.to_thread(
                self._maintenance.after_append,
                table,
                self.retention if retention is None else retention,
            )
        except ObjectStoreError as exc:
            logger.warning("Maintenance of %s failed: %s", table.location, exc)
        else:
            if done.partitions_compacted or done.files_removed:
                logger.info(
                    "Maintained %s: %d partition(s) compacted, %d file(s) vacuumed",
                    table.location,
                    done.partitions_compacted,
                    done.files_removed,
                )
        return appended

    async def delete_visitor(
        self, table: EventTable, visitor_id: str, metadata: Mapping[str, str]
    ) -> int:
        deleted: int = await asyncio.to_thread(table.delete_visitor, visitor_id, metadata)
        return deleted
