"""WriteBuffer: group commit in front of a sink; here the sink records instead of COPYing.

The sink is a plain async function standing where the database would be, so these tests see
exactly which rows travel together, how many flushes run at once and what writers are told.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import pytest

from evothesis.domain import AuditRecord, EventRow, FailedEvent
from evothesis.errors import BufferClosed, BufferOverloaded, StorageUnavailable
from evothesis.storage.events import InsertedCount
from evothesis.storage.write_buffer import WriteBuffer

T = TypeVar("T")
NOW = datetime(2026, 1, 2, tzinfo=UTC)


def rows_for(request: int, count: int, *, site: str = "localhost") -> list[EventRow]:
    """``count`` rows whose event ids say which request they belong to: ``r<request>-<i>``."""
    return [
        EventRow(
            f"r{request}-{i}",
            "click",
            None,
            None,
            site,
            "client_test",
            NOW,
            None,
            None,
            None,
            None,
            None,
            "{}",
            NOW,
        )
        for i in range(count)
    ]


def request_of(row: EventRow) -> int:
    return int(row.event_id[1:].split("-", 1)[0])


class RecordingSink:
    """Records each flush; optionally slow, blocked until released, or failing."""

    def __init__(self, *, delay: float = 0.0, error: BaseException | None = None) -> None:
        self.delay = delay
        self.error = error
        self.batches: list[list[EventRow]] = []
        self.audits: list[AuditRecord] = []
        self.failed: list[FailedEvent] = []
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate: asyncio.Event | None = None

    async def insert(
        self,
        rows: Sequence[EventRow],
        audits: Sequence[AuditRecord] = (),
        failed: Sequence[FailedEvent] = (),
    ) -> list[InsertedCount]:
        self.calls += 1
        self.audits.extend(audits)
        self.failed.extend(failed)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(self.delay)
            if self.error is not None:
                raise self.error
            self.batches.append(list(rows))
        finally:
            self.in_flight -= 1
        counts = Counter((row.client_id, row.site_id) for row in rows)
        return [InsertedCount(c, s, n) for (c, s), n in sorted(counts.items())]

    @property
    def flushed(self) -> list[EventRow]:
        return [row for batch in self.batches for row in batch]


def run(main: Callable[[], Awaitable[T]], timeout: float = 10) -> T:
    """Run one test body on a fresh event loop, bounded so a hang fails instead of blocking."""

    async def bounded() -> T:
        return await asyncio.wait_for(main(), timeout)

    return asyncio.run(bounded())


def make_buffer(
    sink: RecordingSink,
    *,
    max_events: int = 1000,
    max_delay: float = 0.005,
    concurrency: int = 4,
    max_pending: int = 100_000,
) -> WriteBuffer:
    buffer = WriteBuffer(
        sink.insert,
        max_events=max_events,
        max_delay=max_delay,
        concurrency=concurrency,
        max_pending=max_pending,
    )
    buffer.start()
    return buffer


async def until(condition: Callable[[], bool]) -> None:
    """Poll, for at most about 5 s, until the buffer and sink reach the state a test needs."""
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the buffer never reached the expected state")


# --------------------------------------------------------------------------- coalescing


def test_concurrent_writes_are_coalesced_into_fewer_flushes() -> None:
    async def main() -> None:
        sink = RecordingSink(delay=0.002)
        buffer = make_buffer(sink, max_delay=0.02)
        await asyncio.gather(*(buffer.write(rows_for(i, 2)) for i in range(50)))
        await buffer.close()

        assert len(sink.batches) < 50
        assert sorted(row.event_id for row in sink.flushed) == sorted(
            f"r{i}-{j}" for i in range(50) for j in range(2)
        )
        assert buffer.flushed_batches == len(sink.batches)
        assert buffer.flushed_rows == 100
        assert buffer.pending_rows == 0

    run(main)


def test_a_lone_write_is_flushed_and_returns() -> None:
    async def main() -> None:
        sink = RecordingSink()
        buffer = make_buffer(sink)
        await buffer.write(rows_for(1, 3))

        assert [[row.event_id for row in batch] for batch in sink.batches] == [
            ["r1-0", "r1-1", "r1-2"]
        ]
        await buffer.close()

    run(main)


def test_rows_are_flushed_in_arrival_order() -> None:
    async def main() -> None:
        sink = RecordingSink()
        buffer = make_buffer(sink, max_events=7, concurrency=1)
        await asyncio.gather(*(buffer.write(rows_for(i, 3)) for i in range(20)))
        await buffer.close()

        assert [request_of(row) for row in sink.flushed] == [i for i in range(20) for _ in "abc"]

    run(main)


@pytest.mark.parametrize("seed", range(5))
def test_a_requests_rows_always_travel_in_one_flush_and_batches_respect_max_events(
    seed: int,
) -> None:
    sizes = random.Random(seed).choices([1, 2, 3, 5, 8, 13, 30], k=120)
    max_events = 20

    async def main() -> None:
        sink = RecordingSink(delay=0.001)
        buffer = make_buffer(sink, max_events=max_events, concurrency=2)

        async def writer(request: int, size: int) -> None:
            await asyncio.sleep(random.Random(request).random() * 0.01)
            await buffer.write(rows_for(request, size))

        await asyncio.gather(*(writer(i, n) for i, n in enumerate(sizes)))
        await buffer.close()

        seen: dict[int, int] = {}
        for flush, batch in enumerate(sink.batches):
            requests = [request_of(row) for row in batch]
            for request in set(requests):
                assert request not in seen, f"request {request} split across flushes"
                seen[request] = flush
                ids = [row.event_id for row in batch if request_of(row) == request]
                assert ids == [f"r{request}-{i}" for i in range(sizes[request])]
            if len(batch) > max_events:
                assert len(set(requests)) == 1, "an oversized flush must be one request alone"
                assert sizes[requests[0]] > max_events
        assert sorted(seen) == list(range(len(sizes)))

    run(main)


def test_a_request_larger_than_max_events_goes_alone() -> None:
    async def main() -> None:
        sink = RecordingSink()
        buffer = make_buffer(sink, max_events=5, concurrency=1)
        sink.gate = asyncio.Event()
        first = asyncio.create_task(buffer.write(rows_for(0, 1)))
        await until(lambda: sink.in_flight == 1)  # request 0 holds the only flush slot
        others = [
            asyncio.create_task(buffer.write(rows))
            for rows in (rows_for(1, 2), rows_for(2, 12), rows_for(3, 2))
        ]
        await until(lambda: buffer.pending_rows == 16)
        sink.gate.set()
        await asyncio.gather(first, *others)
        await buffer.close()

        assert [sorted({request_of(r) for r in batch}) for batch in sink.batches] == [
            [0],
            [1],
            [2],
            [3],
        ]
        assert [len(batch) for batch in sink.batches] == [1, 2, 12, 2]

    run(main)


def test_a_full_window_is_flushed_at_max_events_rows() -> None:
    async def main() -> None:
        sink = RecordingSink()
        buffer = make_buffer(sink, max_events=10, concurrency=1)
        sink.gate = asyncio.Event()
        writes = [asyncio.create_task(buffer.write(rows_for(i, 4))) for i in range(6)]
        await until(lambda: sink.in_flight == 1)
        sink.gate.set()
        await asyncio.gather(*writes)
        await buffer.close()

        # 4 + 4 fit in 10 rows, a third request would not: three flushes of two requests.
        assert [len(batch) for batch in sink.batches] == [8, 8, 8]

    run(main)


@pytest.mark.parametrize("concurrency", [1, 2, 3])
def test_no_more_flushes_run_at_once_than_the_concurrency_limit(concurrency: int) -> None:
    async def main() -> None:
        sink = RecordingSink(delay=0.02)
        buffer = make_buffer(sink, max_events=1, max_delay=0, concurrency=concurrency)
        await asyncio.gather(*(buffer.write(rows_for(i, 1)) for i in range(12)))
        await buffer.close()

        assert sink.max_in_flight == concurrency
        assert len(sink.batches) == 12

    run(main)


# --------------------------------------------------------------------------- failures


def test_when_the_sink_is_unavailable_every_waiting_writer_is_told_so() -> None:
    async def main() -> None:
        sink = RecordingSink(delay=0.005, error=StorageUnavailable("database is down"))
        buffer = make_buffer(sink, max_delay=0.02)
        results = await asyncio.gather(
            *(buffer.write(rows_for(i, 2)) for i in range(10)), return_exceptions=True
        )
        await buffer.close()

        assert all(isinstance(result, StorageUnavailable) for result in results)
        assert {result.message for result in results if isinstance(result, StorageUnavailable)} == {
            "database is down"
        }
        assert sink.calls >= 1
        assert buffer.flushed_batches == buffer.flushed_rows == 0

    run(main)


@pytest.mark.parametrize(
    "error",
    [RuntimeError("boom"), ValueError("bad row"), KeyError("missing"), ZeroDivisionError("x")],
    ids=lambda e: type(e).__name__,
)
def test_an_unexpected_sink_error_reaches_writers_as_storage_unavailable(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> list[object]:
        sink = RecordingSink(error=error)
        buffer = make_buffer(sink)
        results = await asyncio.gather(
            *(buffer.write(rows_for(i, 1)) for i in range(3)), return_exceptions=True
        )
        await buffer.close()
        return results

    with caplog.at_level(logging.ERROR, logger="evothesis.ingest"):
        results = run(main)

    for result in results:
        assert type(result) is StorageUnavailable
        assert type(error).__name__ in result.message
    assert any("failed unexpectedly" in r.getMessage() for r in caplog.records)


def test_the_buffer_keeps_working_after_a_failed_flush() -> None:
    async def main() -> None:
        sink = RecordingSink(error=StorageUnavailable("down"))
        buffer = make_buffer(sink)
        with pytest.raises(StorageUnavailable):
            await buffer.write(rows_for(1, 2))
        sink.error = None
        await buffer.write(rows_for(2, 2))
        await buffer.close()

        assert [row.event_id for row in sink.flushed] == ["r2-0", "r2-1"]
        assert buffer.pending_rows == 0

    run(main)


def test_writes_beyond_max_pending_are_refused_as_overloaded() -> None:
    async def main() -> None:
        sink = RecordingSink()
        sink.gate = asyncio.Event()
        buffer = make_buffer(sink, concurrency=1, max_pending=10)
        flushing = asyncio.create_task(buffer.write(rows_for(0, 8)))
        await until(lambda: sink.in_flight == 1)  # taken by the only flush: no longer pending
        waiting = asyncio.create_task(buffer.write(rows_for(1, 6)))
        await until(lambda: buffer.pending_rows == 6)

        with pytest.raises(BufferOverloaded) as error:
            await buffer.write(rows_for(2, 5))
        assert error.value.code == "overloaded"
        assert isinstance(error.value, StorageUnavailable)
        assert "6" in error.value.message
        fits = asyncio.create_task(buffer.write(rows_for(3, 4)))  # 6 + 4 == max_pending
        await until(lambda: buffer.pending_rows == 10)

        sink.gate.set()
        await asyncio.gather(flushing, waiting, fits)
        await buffer.close()
        assert sorted({request_of(row) for row in sink.flushed}) == [0, 1, 3]

    run(main)


def test_a_single_write_larger_than_max_pending_is_always_overloaded() -> None:
    async def main() -> None:
        sink = RecordingSink()
        buffer = make_buffer(sink, max_pending=10)
        with pytest.raises(BufferOverloaded):
            await buffer.write(rows_for(1, 11))
        await buffer.write(rows_for(2, 10))
        await buffer.close()
        assert len(sink.flushed) == 10

    run(main)


# --------------------------------------------------------------------------- shutdown


def test_close_flushes_everything_already_accepted() -> None:
    async def main() -> None:
        sink = RecordingSink(delay=0.01)
        buffer = make_buffer(sink, max_events=3, concurrency=1)
        writes = [asyncio.create_task(buffer.write(rows_for(i, 2))) for i in range(10)]
        await until(lambda: sink.in_flight == 1 and buffer.pending_rows > 0)
        try:
            await asyncio.wait_for(buffer.close(), 5)
        except TimeoutError:
            pytest.fail(
                f"close() did not return within 5 s; {sum(w.done() for w in writes)} of 10 "
                f"writes done, {len(sink.flushed)} of 20 rows flushed"
            )

        assert all(write.done() and write.exception() is None for write in writes)
        assert len(sink.flushed) == 20
        assert buffer.pending_rows == 0
        assert sink.in_flight == 0

    run(main)


def test_writes_after_close_are_refused_as_closed() -> None:
    async def main() -> None:
        sink = RecordingSink()
        buffer = make_buffer(sink)
        await buffer.write(rows_for(1, 1))
        await buffer.close()

        with pytest.raises(BufferClosed) as error:
            await buffer.write(rows_for(2, 1))
        assert error.value.code == "shutting_down"
        assert isinstance(error.value, StorageUnavailable)
        assert [row.event_id for row in sink.flushed] == ["r1-0"]

    run(main)


def test_close_waits_for_flushes_in_flight_and_refuses_writes_meanwhile() -> None:
    async def main() -> None:
        sink = RecordingSink()
        sink.gate = asyncio.Event()
        buffer = make_buffer(sink, concurrency=1)
        accepted = asyncio.create_task(buffer.write(rows_for(1, 1)))
        await until(lambda: sink.in_flight == 1 and buffer.pending_rows == 0)
        closing = asyncio.create_task(buffer.close())
        await asyncio.sleep(0.02)
        assert not closing.done()
        with pytest.raises(BufferClosed):
            await buffer.write(rows_for(2, 1))
        sink.gate.set()
        await asyncio.gather(accepted, closing)

        assert [row.event_id for row in sink.flushed] == ["r1-0"]

    run(main)


def test_closing_twice_is_harmless() -> None:
    async def main() -> None:
        buffer = make_buffer(RecordingSink())
        await buffer.close()
        await buffer.close()

    run(main)


# --------------------------------------------------------------------------- log lines


def test_request_notes_are_logged_with_their_flush_as_one_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        sink = RecordingSink()
        sink.gate = asyncio.Event()
        buffer = make_buffer(sink, concurrency=1)
        first = asyncio.create_task(buffer.write(rows_for(0, 1)))
        await until(lambda: sink.in_flight == 1)
        second = asyncio.create_task(buffer.write(rows_for(1, 4), note="note one"))
        third = asyncio.create_task(
            buffer.write(rows_for(2, 2, site="shop.example"), note="note two")
        )
        await until(lambda: buffer.pending_rows == 6)
        sink.gate.set()
        await asyncio.gather(first, second, third)
        await buffer.close()

    with caplog.at_level(logging.INFO, logger="evothesis.ingest"):
        run(main)

    messages = [r.getMessage() for r in caplog.records if r.name == "evothesis.ingest"]
    assert "note one\nnote two\n" in messages[-1]
    assert messages[-1].splitlines() == [
        "note one",
        "note two",
        "Bulk inserted 4 events for client client_test from site localhost",
        "Bulk inserted 2 events for client client_test from site shop.example",
    ]


def test_a_failed_flush_logs_its_notes_with_the_failure(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        buffer = make_buffer(RecordingSink(error=StorageUnavailable("db gone")))
        with pytest.raises(StorageUnavailable):
            await buffer.write(rows_for(1, 3), note="Processing batch with 2 events")
        await buffer.close()

    with caplog.at_level(logging.WARNING, logger="evothesis.ingest"):
        run(main)

    [record] = [r for r in caplog.records if r.name == "evothesis.ingest"]
    assert record.levelno == logging.WARNING
    assert record.getMessage().splitlines() == [
        "Processing batch with 2 events",
        "Flush of 3 events failed: db gone",
    ]
