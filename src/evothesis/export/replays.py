"""Backfill and replay: a client's past deliveries written again, from the raw objects.

A replay selects, when it is made, the client's delivered deliveries that hold a batch of a
range (by batch number, or by the arrival time of their events) and writes each again,
whole, in a format (the client's current one unless told) to a destination (the client's
current one unless told; the client's credentials are used either way). The buffer is not
needed: raw objects are kept. A delivery written again in its own format to the same place
gets the same keys and the same bytes, so a replay is idempotent, and one cut short goes on
where it stopped (``done`` counts the deliveries written, in order). To a table (delta,
iceberg), a delivery is appended under its id unless the table holds it already
(``Processor.commit``): a replay adds only what the table lacks, each delivery once (an
Iceberg table is the client's one table in the catalog, so it is replayed to in place).
Replays are leased like everything else, so any exporter may carry one on; a finished
replay is a notice for the client's webhook.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from evothesis.domain import ExportFormat
from evothesis.errors import BadRequest, InvalidRange, NotFound, ObjectStoreError
from evothesis.export.pipeline import ExportPipeline
from evothesis.export.timing import retry_delay
from evothesis.storage.pool import Connection
from evothesis.storage.queries import query
from evothesis.storage.sessions import with_connection

__all__ = ["ReplayRange", "Replays"]

logger = logging.getLogger("evothesis.export")

#: Progress callback: (deliveries written so far, deliveries of the replay).
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class ReplayRange:
    """Which deliveries a replay writes again: those holding a batch numbered in
    ``[from_batch, to_batch]`` and events that arrived in ``[since, until)`` (an open bound
    when ``None``)."""

    since: datetime | None = None
    until: datetime | None = None
    from_batch: int | None = None
    to_batch: int | None = None

    def check(self) -> None:
        if self.since and self.until and self.since >= self.until:
            raise InvalidRange("since must be before until")
        if (
            self.from_batch is not None
            and self.to_batch is not None
            and self.from_batch > self.to_batch
        ):
            raise InvalidRange("from_batch must not be above to_batch")
        for bound in (self.from_batch, self.to_batch):
            if bound is not None and bound < 1:
                raise InvalidRange("batch numbers start at 1")
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise InvalidRange("since and until need a time zone (e.g. 2026-01-05T00:00:00Z)")


class Replays:
    """Replays in PostgreSQL and the work of writing them (through the pipeline's
    processor: the same rendering and the same keys as the deliveries themselves)."""

    def __init__(self, pool: asyncpg.Pool, pipeline: ExportPipeline) -> None:
        self._pool = pool
        self._pipeline = pipeline

    async def create(
        self,
        client_id: str,
        selection: ReplayRange,
        *,
        fmt: ExportFormat | None = None,
        destination: str | None = None,
    ) -> dict[str, Any]:
        """Make a replay of the client's deliveries in ``selection``; it is written by
        ``run`` (here, or by any exporter's scheduler)."""
        selection.check()

        async def create(connection: Connection) -> dict[str, Any]:
            known = await connection.fetchval(query("gdpr_client_exists"), client_id)
            if not known:
                raise NotFound(f"no client {client_id!r}")
            seqs = [
                row["seq"]
                for row in await connection.fetch(
                    query("replay_select"),
                    client_id,
                    selection.from_batch,
                    selection.to_batch,
                    selection.since,
                    selection.until,
                )
            ]
            async with connection.transaction():
                row = await connection.fetchrow(
                    query("replay_insert"),
                    client_id,
                    fmt,
                    destination,
                    selection.since,
                    selection.until,
                    selection.from_batch,
                    selection.to_batch,
                    seqs,
                    self._pipeline.settings.default_format,
                )
                assert row is not None
                if row["format"] == ExportFormat.ICEBERG and destination is not None:
                    raise BadRequest(
                        "an Iceberg table is the client's one table in ICEBERG_CATALOG, where "
                        "its deliveries go: replay to it without a destination"
                    )
            return {"replay_id": row["replay_id"], "format": row["format"], "deliveries": len(seqs)}

        created: dict[str, Any] = await self._run(create)
        return created

    async def run(
        self,
        replay_id: int | None = None,
        *,
        deadline_s: float | None = None,
        progress: Progress | None = None,
    ) -> dict[str, Any] | None:
        """Write one due replay (``replay_id``, or the oldest due) until it is finished, it
        fails, or ``deadline_s`` passed; its status after, or ``None`` when none was due."""
        ledger = self._pipeline.ledger
        processor = self._pipeline.processor
        lease_s = self._pipeline.settings.lease_s
        row = await self._fetchrow("replay_lease", ledger.owner, lease_s, replay_id)
        if row is None:
            return None
        started = time.monotonic()
        replay, client_id, fmt = row["replay_id"], row["client_id"], row["format"]
        seqs: list[int] = list(row["seqs"])
        done = row["done"]
        try:
            bucket = await processor.bucket_for(client_id, row["destination"])
            while done < len(seqs):
                if deadline_s is not None and time.monotonic() - started >= deadline_s:
                    break
                (delivery,) = await ledger.deliveries(client_id, [seqs[done]])
                (rendered,) = await processor.render([delivery], fmt=fmt, source=processor.read_raw)
                if rendered.error is not None:
                    raise ObjectStoreError(rendered.error)
                await processor.write_files(bucket, delivery, fmt, rendered.files)
                done += 1
                await self._execute("replay_progress", replay, done, ledger.owner, lease_s)
                if progress:
                    progress(done, len(seqs))
            else:
                await self._fetchval("replay_finished", replay, ledger.owner)
                logger.info(
                    "Replay %d of client %s finished: %d deliveries", replay, client_id, done
                )
        except ObjectStoreError as exc:
            delay = retry_delay(row["attempts"])
            logger.warning(
                "Replay %d of client %s failed at delivery %d/%d, retry in %.0f s: %s",
                replay,
                client_id,
                done + 1,
                len(seqs),
                delay,
                exc,
            )
            await self._execute("replay_failed", replay, ledger.owner, str(exc)[:2000], delay)
        return (await self.list(replay_id=replay, limit=1))[0]

    async def run_due(self, *, deadline_s: float) -> int:
        """Carry on due replays for at most ``deadline_s``; how many were worked on."""
        started = time.monotonic()
        worked = 0
        while (left := deadline_s - (time.monotonic() - started)) > 0:
            if await self.run(deadline_s=left) is None:
                break
            worked += 1
        return worked

    async def retry_now(self, client_id: str | None) -> int:
        """Failing replays of a client (all: ``None``) due at once."""
        return int(await self._fetchval("replay_retry_now", client_id))

    async def list(
        self, *, replay_id: int | None = None, client_id: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        rows = await self._run(lambda c: c.fetch(query("replay_list"), replay_id, client_id, limit))
        if replay_id is not None and not rows:
            raise NotFound(f"no replay {replay_id}")
        return [_jsonable(dict(row)) for row in rows]

    async def _run(self, work: Any) -> Any:
        return await with_connection(self._pool, work, what="replays")

    async def _fetchrow(self, name: str, *args: object) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._run(lambda c: c.fetchrow(query(name), *args))
        return row

    async def _fetchval(self, name: str, *args: object) -> Any:
        return await self._run(lambda c: c.fetchval(query(name), *args))

    async def _execute(self, name: str, *args: object) -> None:
        await self._run(lambda c: c.execute(query(name), *args))


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
