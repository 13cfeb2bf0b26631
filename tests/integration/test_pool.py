"""The connection pool as the seeds' operators watch it: waits for a connection counted,
timed and logged, on a real PostgreSQL, whichever way a connection is taken."""

from __future__ import annotations

import asyncio
import logging

import pytest

from evothesis.storage.pool import MonitoredPool, create_pool
from tests.support.sync import run_coroutine


async def _query(pool: MonitoredPool) -> int:
    async with pool.acquire() as connection:
        value: int = await connection.fetchval("SELECT 1")
        return value


def test_waiting_for_a_connection_is_counted_and_logged(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> None:
        pool = await create_pool(database_url, min_size=1, max_size=1)
        try:
            held = await pool.acquire()
            assert (pool.stats().in_use, pool.stats().size, pool.stats().max_size) == (1, 1, 1)
            waiter = asyncio.create_task(_query(pool))
            await asyncio.sleep(0.05)  # the task runs up to its wait for the one connection
            assert pool.stats().waiting == 1
            await pool.release(held)
            async with asyncio.timeout(10):
                assert await waiter == 1
            stats = pool.stats()
            assert (stats.in_use, stats.waiting, stats.waits) == (0, 0, 1)
            assert stats.wait_seconds >= 0.05

            held = await pool.acquire()
            with pytest.raises(TimeoutError):
                await pool.acquire(timeout=0.05)  # the awaited form, giving up
            stats = pool.stats()
            assert (stats.in_use, stats.waiting, stats.waits) == (1, 0, 2)
            await pool.release(held)
            assert pool.stats().in_use == 0
        finally:
            await pool.close()

    with caplog.at_level(logging.WARNING, logger="evothesis.storage"):
        run_coroutine(run)
    [line] = [r.getMessage() for r in caplog.records if "pool saturated" in r.getMessage()]
    assert "all 1 connections in use, 1 request(s) waited" in line
