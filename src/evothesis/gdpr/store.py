"""What data-subject requests read and write in PostgreSQL: the alias links between ids, the
subject's buffered events, the exported batches that hold the client's events, the exclusive
export lock, the audit log.
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
from evothesis.export.keys import failed_events_key
from evothesis.gdpr.lines import FoundEvent, found_events
from evothesis.gdpr.subjects import IdentityLink, Subject
from evothesis.storage.pool import Connection
from evothesis.storage.queries import query
from evothesis.storage.sessions import session_lock, with_connection


@dataclass(frozen=True, slots=True)
class ClientBatch:
    """An exported raw object that holds events of the client, and the client's delivery
    that carries them (``None`` until one is cut) with its state and format."""

    batch_id: int
    claimed_at: datetime
    raw_key: str
    delivery_seq: int | None
    delivery_state: str | None
    delivery_format: str | None

    @property
    def delivered(self) -> bool:
        return self.delivery_state == "delivered"

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ClientBatch:
        return cls(
            row["batch_id"],
            row["claimed_at"],
            row["raw_key"],
            row["delivery_seq"],
            row["delivery_state"],
            row["delivery_format"],
        )


@dataclass(frozen=True, slots=True)
class ClientReplay:
    """Where one of the client's replays wrote its deliveries again: in ``format``, to
    ``destination`` (``None``: the client's own), the first ``done`` of ``seqs``."""

    format: str
    destination: str | None
    seqs: list[int]
    done: int

    def wrote(self, seq: int) -> bool:
        return seq in self.seqs[: self.done]


@dataclass(frozen=True, slots=True)
class ClientObjects:
    """Every exported object that may hold the client's events or failed events."""

    batches: list[ClientBatch]
    #: The backup bucket's failed-events files that hold failed events of the client.
    failed_files: list[str]
    #: Copies of the client's deliveries that replays wrote.
    replays: list[ClientReplay]

    @property
    def count(self) -> int:
        return len(self.batches) + len(self.failed_files)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a subject's export reads from PostgreSQL, at one moment."""

    objects: ClientObjects
    #: The subject's events and failed events still in the buffer, as exported lines.
    events: list[FoundEvent]
    failed: list[FoundEvent]


class SubjectStore:
    """Driver errors come out as ``StorageUnavailable``, as everywhere else."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def client_exists(self, client_id: str) -> bool:
        """Registered, or has exported data (a client removed from the registry still has
        files a visitor may ask about)."""
        return bool(await self._run(lambda c: c.fetchval(query("gdpr_client_exists"), client_id)))

    async def links(
        self, client_id: str, user_forms: frozenset[str], visitor_ids: frozenset[str]
    ) -> list[IdentityLink]:
        """The client's alias links that touch these user-id forms or visitor ids."""
        rows = await self._run(
            lambda c: c.fetch(
                query("gdpr_identity_links"), client_id, sorted(user_forms), sorted(visitor_ids)
            )
        )
        return [IdentityLink(r["previous_id"], r["user_id"], r["anonymous_id"]) for r in rows]

    async def snapshot(self, client_id: str, subject: Subject) -> Snapshot:
        """The client's exported batches and the subject's buffered events and failed
        events, as of one moment.

        One repeatable-read snapshot: an event or a failed event leaves the buffer (purge)
        only after its batch was recorded as exported, so each is in one of the answers.
        """

        async def read(connection: Connection) -> Snapshot:
            ids = (client_id, sorted(subject.visitor_ids), sorted(subject.user_ids))
            async with connection.transaction(isolation="repeatable_read", readonly=True):
                objects = await _client_objects(connection, client_id)
                events = await connection.fetch(query("gdpr_buffer_lines"), *ids)
                failed = await connection.fetch(query("gdpr_buffer_failed_lines"), *ids)
            return Snapshot(
                objects,
                found_events([row["line"].encode() for row in events]),
                found_events([row["line"].encode() for row in failed], arrived="received_at"),
            )

        snapshot: Snapshot = await self._run(read)
        return snapshot

    async def client_objects(self, client_id: str) -> ClientObjects:
        objects: ClientObjects = await self._run(lambda c: _client_objects(c, client_id))
        return objects

    async def delete_buffered(self, client_id: str, subject: Subject) -> tuple[int, int, int]:
        """Remove the subject's events, failed events and alias links from the buffer; how
        many of each there were."""
        row = await self._run(
            lambda c: c.fetchrow(
                query("gdpr_delete_buffer"),
                client_id,
                sorted(subject.visitor_ids),
                sorted(subject.user_ids),
            )
        )
        return int(row["events"]), int(row["failed"]), int(row["links"])

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


async def _client_objects(connection: Connection, client_id: str) -> ClientObjects:
    batches = await connection.fetch(query("gdpr_client_batches"), client_id)
    failed = await connection.fetch(query("gdpr_failed_batches"), client_id)
    replays = await connection.fetch(query("gdpr_client_replays"), client_id)
    return ClientObjects(
        [ClientBatch.from_row(row) for row in batches],
        [failed_events_key(row["batch_id"], row["claimed_at"]) for row in failed],
        [
            ClientReplay(row["format"], row["destination"], list(row["seqs"]), row["done"])
            for row in replays
        ],
    )
