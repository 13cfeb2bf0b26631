"""What data-subject requests read and write in PostgreSQL: the visitor's buffered events,
the exported batches that hold the client's events, the exclusive export lock, the audit log.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from evothesis.errors import ExportsRunning, LockBusy
from evothesis.export.ledger import Delivery
from evothesis.gdpr.lines import FoundEvent, found_events
from evothesis.storage.pool import Connection
from evothesis.storage.queries import query
from evothesis.storage.sessions import session_lock, with_connection


@dataclass(frozen=True, slots=True)
class ClientBatch:
    """An exported raw object that holds events of the client, and the client's file of it."""

    batch_id: int
    claimed_at: datetime
    raw_key: str
    delivery: Delivery
    delivered: bool
    object_key: str | None

    @classmethod
    def from_row(cls, client_id: str, row: asyncpg.Record) -> ClientBatch:
        delivery = Delivery(
            row["batch_id"],
            client_id,
            row["event_count"],
            row["format"],
            row["attempts"],
            row["raw_key"],
            row["claimed_at"],
        )
        return cls(
            row["batch_id"],
            row["claimed_at"],
            row["raw_key"],
            delivery,
            row["state"] == "delivered",
            row["object_key"],
        )


class SubjectStore:
    """Driver errors come out as ``StorageUnavailable``, as everywhere else."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def client_exists(self, client_id: str) -> bool:
        """Registered, or has exported data (a client removed from the registry still has
        files a visitor may ask about)."""
        return bool(await self._run(lambda c: c.fetchval(query("gdpr_client_exists"), client_id)))

    async def snapshot(
        self, client_id: str, visitor_id: str
    ) -> tuple[list[ClientBatch], list[FoundEvent]]:
        """The client's exported batches and the visitor's buffered events, as of one moment.

        One repeatable-read snapshot: an event leaves the buffer (purge) only after its batch
        was recorded as exported, so every event is in one of the two answers.
        """

        async def read(connection: Connection) -> tuple[list[ClientBatch], list[Any]]:
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                batches = await connection.fetch(query("gdpr_client_batches"), client_id)
                buffered = await connection.fetch(query("gdpr_buffer_lines"), client_id, visitor_id)
            return [ClientBatch.from_row(client_id, row) for row in batches], buffered

        batches, buffered = await self._run(read)
        return batches, found_events([row["line"].encode() for row in buffered])

    async def client_batches(self, client_id: str) -> list[ClientBatch]:
        rows = await self._run(lambda c: c.fetch(query("gdpr_client_batches"), client_id))
        return [ClientBatch.from_row(client_id, row) for row in rows]

    async def delete_buffered(self, client_id: str, visitor_id: str) -> int:
        """Remove the visitor's events from the buffer; how many there were."""
        return int(
            await self._run(
                lambda c: c.fetchval(query("gdpr_delete_buffer"), client_id, visitor_id)
            )
        )

    @contextlib.asynccontextmanager
    async def exclusive(self, wait_s: float) -> AsyncIterator[None]:
        """Keep every export and processing run out (see ``ExportLedger.running``).

        Waits at most ``wait_s`` for running runs to end, then raises ``ExportsRunning``;
        while waiting, new runs queue behind this request instead of starving it.
        """
        try:
            async with session_lock(
                self._pool,
                "gdpr_exclusive_lock",
                "gdpr_exclusive_unlock",
                what="data-subject request",
                wait_s=wait_s,
            ):
                yield
        except LockBusy:
            raise ExportsRunning(
                f"export runs kept the buffer for more than {wait_s:g} s; "
                "retry the request (nothing was changed)"
            ) from None

    async def audit(
        self,
        request_id: uuid.UUID,
        *,
        kind: str,
        step: str,
        client_id: str,
        visitor_sha256: str,
        receipt: dict[str, Any],
    ) -> None:
        await self._run(
            lambda c: c.execute(
                query("gdpr_audit_insert"),
                request_id,
                kind,
                step,
                client_id,
                visitor_sha256,
                orjson.dumps(receipt).decode(),
            )
        )

    async def audit_log(self, client_id: str | None, limit: int) -> list[dict[str, Any]]:
        rows = await self._run(lambda c: c.fetch(query("gdpr_audit_list"), client_id, limit))
        return [
            {
                "request_id": str(row["request_id"]),
                "kind": row["kind"],
                "step": row["step"],
                "client_id": row["client_id"],
                "visitor_sha256": row["visitor_sha256"],
                "recorded_at": row["recorded_at"].isoformat(),
                "receipt": orjson.loads(row["receipt"]),
            }
            for row in rows
        ]

    async def _run(self, work: Any) -> Any:
        return await with_connection(self._pool, work, what="data-subject request")
