"""Each client's table, as the export and data-subject requests use it: every call runs in a
table worker process (``export.tables.work``), where each table is opened once and kept."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta
from typing import Final

from evothesis.domain import TABLE_FORMATS
from evothesis.errors import ObjectStoreError
from evothesis.export.tables.core import Appended, Maintained, TableRef
from evothesis.objects.buckets import BucketSpec
from evothesis.objects.cpu import ByName, run_in_table_worker

logger = logging.getLogger("evothesis.export")

#: The calls ``export.tables.work`` answers in the table worker processes.
_WORK: Final = "evothesis.export.tables.work"
_APPEND_ROWS: Final[ByName[Appended]] = ByName(_WORK, "append_rows")
_MAINTAIN_TABLE: Final[ByName[Maintained]] = ByName(_WORK, "maintain_table")
_DELETE_ROWS: Final[ByName[int]] = ByName(_WORK, "delete_rows")


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
        if fmt not in TABLE_FORMATS:
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
                _APPEND_ROWS, ref, list(rows_ipc), identity, dict(metadata), frozenset(held_by)
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
                _MAINTAIN_TABLE, ref, self.retention if retention is None else retention, full
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
            _DELETE_ROWS, ref, sorted(visitor_ids), sorted(user_ids), dict(metadata)
        )
        return deleted
