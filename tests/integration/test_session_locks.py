"""Session-level advisory locks on pooled connections, against a real PostgreSQL.

The pool does not reset connections on release (``storage.pool``: it would cost a round
trip per flush), so nothing a lock leaves on its session may outlive the lock: not the
lock itself, not the time bound of the wait.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from evothesis.errors import LockBusy
from evothesis.storage.pool import create_pool
from evothesis.storage.sessions import session_lock


def run(database_url: str, work: object) -> None:
    async def main() -> None:
        pool = await create_pool(database_url, min_size=1, max_size=1)
        try:
            await work(pool)  # type: ignore[operator]
        finally:
            await pool.close()

    asyncio.run(main())


def exclusive(pool: asyncpg.Pool, wait_s: float | None = 2.0) -> object:
    return session_lock(
        pool, "gdpr_exclusive_lock", "gdpr_exclusive_unlock", what="test lock", wait_s=wait_s
    )


async def session_state(pool: asyncpg.Pool) -> tuple[str, int]:
    """``lock_timeout`` and the advisory locks held by the pool's (only) connection."""
    async with pool.acquire() as connection:
        timeout = await connection.fetchval("SHOW lock_timeout")
        held = await connection.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        )
        return timeout, held


def test_a_bounded_wait_leaves_no_lock_timeout_on_the_pooled_connection(
    database_url: str,
) -> None:
    async def work(pool: asyncpg.Pool) -> None:
        assert await session_state(pool) == ("0", 0)
        async with exclusive(pool, wait_s=0.75):  # type: ignore[attr-defined]
            pass
        assert await session_state(pool) == ("0", 0)

    run(database_url, work)


def test_a_wait_that_runs_out_is_lock_busy_and_leaves_the_session_clean(
    database_url: str,
) -> None:
    async def work(pool: asyncpg.Pool) -> None:
        holder = await asyncpg.connect(database_url)
        try:
            await holder.execute("SELECT pg_advisory_lock(7461707468657370)")
            with pytest.raises(LockBusy):
                async with exclusive(pool, wait_s=0.2):  # type: ignore[attr-defined]
                    raise AssertionError("the lock was taken while another session held it")
        finally:
            await holder.close()
        assert await session_state(pool) == ("0", 0)

    run(database_url, work)


def test_a_session_lost_while_locked_releases_the_lock_and_the_pool_recovers(
    database_url: str,
) -> None:
    """The lock's session dies under it (a restarted server, a killed backend): leaving the
    lock raises nothing, no lock survives, and the pool hands out a working connection."""

    async def work(pool: asyncpg.Pool) -> None:
        async with exclusive(pool):  # type: ignore[attr-defined]
            watcher = await asyncpg.connect(database_url)
            try:
                pid = await watcher.fetchval(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                )
                assert await watcher.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await watcher.close()
        watcher = await asyncpg.connect(database_url)
        try:
            assert (
                await watcher.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
                == 0
            )
        finally:
            await watcher.close()
        assert await session_state(pool) == ("0", 0)

    run(database_url, work)
