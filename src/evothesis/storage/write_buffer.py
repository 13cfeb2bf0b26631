"""Group commit for events: many concurrent requests, one COPY per flush.

A request hands its rows to ``write()`` and waits; a single coalescing loop gathers what
arrives during a short window (``max_delay``) into one flush of at most ``max_events``
rows, and up to ``concurrency`` flushes run at once. When every flush slot is busy,
requests keep arriving and the next flush simply gets bigger: batch size grows with load
instead of latency. A request's rows always travel in one flush, so its answer means all
of them are committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

from evothesis.domain import AuditRecord, EventRow, FailedEvent
from evothesis.errors import BufferClosed, BufferOverloaded, StorageUnavailable
from evothesis.storage.events import InsertedCount
from evothesis.storage.spool import Spool

logger = logging.getLogger("evothesis.ingest")

#: Writes rows, audit records and failed events in one transaction.
Sink = Callable[
    [Sequence[EventRow], Sequence[AuditRecord], Sequence[FailedEvent]],
    Awaitable[list[InsertedCount]],
]


class _Request(NamedTuple):
    """One caller's rows, the future it waits on, its log line, audit record (if any) and
    failed events."""

    rows: Sequence[EventRow]
    #: Resolves to ``True`` when the rows went to the disk spool instead of the database.
    done: asyncio.Future[bool]
    note: str | None
    audit: AuditRecord | None
    failed: Sequence[FailedEvent]


class BufferStats(NamedTuple):
    """What the write buffer has done so far, for ``/health`` and ``/metrics``."""

    pending_rows: int
    flushed_batches: int
    flushed_rows: int
    flush_seconds_total: float
    failed_flushes: int
    spooled_batches: int
    spooled_rows: int


class WriteBuffer:
    """Coalesce rows from concurrent requests into bulk flushes to ``sink``."""

    def __init__(
        self,
        sink: Sink,
        *,
        max_events: int,
        max_delay: float,
        concurrency: int,
        max_pending: int,
        spool: Spool | None = None,
    ) -> None:
        self._sink = sink
        self._spool = spool
        self._max_events = max_events
        self._max_delay = max_delay
        self._max_pending = max_pending
        self._slots = asyncio.Semaphore(concurrency)
        self._pending: list[_Request] = []
        self._pending_rows = 0
        self._wakeup = asyncio.Event()
        self._flushes: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False
        self.flushed_batches = 0
        self.flushed_rows = 0
        self.flush_seconds_total = 0.0
        self.failed_flushes = 0
        self.spooled_batches = 0
        self.spooled_rows = 0

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def stats(self) -> BufferStats:
        return BufferStats(
            self.pending_rows,
            self.flushed_batches,
            self.flushed_rows,
            self.flush_seconds_total,
            self.failed_flushes,
            self.spooled_batches,
            self.spooled_rows,
        )

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._coalesce(), name="write-buffer")

    async def write(
        self,
        rows: Sequence[EventRow],
        note: str | None = None,
        audit: AuditRecord | None = None,
        failed: Sequence[FailedEvent] = (),
    ) -> bool:
        """Return once ``rows`` are durable: ``False`` when committed in the database,
        ``True`` when fsync'ed to the disk spool; raise ``StorageUnavailable`` otherwise.

        ``note`` is an INFO line about this request; notes are logged together with their
        flush as one log record, because a record per request costs more than the request.
        ``audit`` and ``failed`` are committed in the same transaction as the rows.
        """
        if self._closing:
            raise BufferClosed()
        if self._pending_rows + len(rows) > self._max_pending:
            raise BufferOverloaded(
                f"write buffer holds {self._pending_rows} events waiting for the database"
            )
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(rows, done, note, audit, failed))
        self._pending_rows += len(rows)
        self._wakeup.set()
        return await done

    async def close(self) -> None:
        """Flush everything already accepted, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)

    async def _coalesce(self) -> None:
        while True:
            await self._wakeup.wait()
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                continue
            if not self._closing and self._pending_rows < self._max_events:
                await asyncio.sleep(self._max_delay)
            await self._slots.acquire()
            batch = self._take()
            task = asyncio.create_task(self._flush(batch))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
            if not self._pending and not self._closing:
                self._wakeup.clear()

    def _take(self) -> list[_Request]:
        """Whole requests, oldest first, up to ``max_events`` rows (at least one request)."""
        taken = 0
        count = 0
        for rows, *_ in self._pending:
            if count and taken + len(rows) > self._max_events:
                break
            taken += len(rows)
            count += 1
        batch, self._pending = self._pending[:count], self._pending[count:]
        self._pending_rows -= taken
        return batch

    async def _flush(self, batch: list[_Request]) -> None:
        rows = [row for request in batch for row in request.rows]
        notes = [request.note for request in batch if request.note is not None]
        audits = [request.audit for request in batch if request.audit is not None]
        failed = [event for request in batch for event in request.failed]
        started = time.monotonic()
        try:
            inserted = await self._sink(rows, audits, failed)
        except StorageUnavailable as exc:
            self.failed_flushes += 1
            await self._spool_or_refuse(batch, rows, audits, failed, notes, exc)
        except Exception as exc:
            self.failed_flushes += 1
            logger.exception("Flush of %d events failed unexpectedly", len(rows))
            failure = StorageUnavailable(f"could not store events: {exc!r}")
            await self._spool_or_refuse(batch, rows, audits, failed, notes, failure)
        else:
            self.flushed_batches += 1
            self.flushed_rows += len(rows)
            self.flush_seconds_total += time.monotonic() - started
            _settle(batch, None)
            if logger.isEnabledFor(logging.INFO):
                lines = notes + [
                    f"Bulk inserted {c.inserted} events for client {c.client_id} "
                    f"from site {c.site_id}"
                    for c in inserted
                ]
                logger.info("\n".join(lines))
        finally:
            self._slots.release()

    async def _spool_or_refuse(
        self,
        batch: list[_Request],
        rows: list[EventRow],
        audits: list[AuditRecord],
        failed: list[FailedEvent],
        notes: list[str],
        failure: StorageUnavailable,
    ) -> None:
        """The database failed this flush: make it durable on disk, or refuse it (503)."""
        if self._spool is None:
            logger.warning(
                "\n".join([*notes, f"Flush of {len(rows)} events failed: {failure.message}"])
            )
            _settle(batch, failure)
            return
        try:
            await asyncio.to_thread(self._spool.append, rows, audits, failed)
        except StorageUnavailable as full:
            logger.error("Flush of %d events refused: %s", len(rows), full.message)
            _settle(batch, full)
        except OSError as exc:
            logger.error("Flush of %d events failed and could not be spooled: %s", len(rows), exc)
            _settle(batch, StorageUnavailable(f"{failure.message}; the disk spool failed too"))
        else:
            self.spooled_batches += 1
            self.spooled_rows += len(rows)
            logger.warning(
                "\n".join([*notes, f"Spooled {len(rows)} events to disk: {failure.message}"])
            )
            _settle(batch, None, spooled=True)


def _settle(batch: list[_Request], error: BaseException | None, *, spooled: bool = False) -> None:
    for _, done, *_ in batch:
        if done.done():
            continue
        if error is None:
            done.set_result(spooled)
        else:
            done.set_exception(error)
