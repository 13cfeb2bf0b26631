"""Pool connections for work off the hot path (status, exports, billing, data-subject
requests): one bound on how long a call may wait, one translation of driver errors into
``StorageUnavailable``, and session-level advisory locks that outlive a transaction."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import asyncpg

from evothesis.errors import LockBusy, StorageUnavailable
from evothesis.storage.pool import Connection
from evothesis.storage.queries import query

T = TypeVar("T")

#: Failures that mean "the database is not there right now", as opposed to our bugs.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def with_connection(
    pool: asyncpg.Pool,
    work: Callable[[Connection], Awaitable[T]],
    *,
    what: str,
    timeout_s: float = 60,
) -> T:
    """``work`` on a pooled connection within ``timeout_s``; driver errors become
    ``StorageUnavailable`` prefixed with ``what``."""
    try:
        async with asyncio.timeout(timeout_s):
            async with pool.acquire() as connection:
                return await work(connection)
    except UNAVAILABLE_ERRORS as exc:
        raise StorageUnavailable(f"{what}: {describe_error(exc)}") from exc


@contextlib.asynccontextmanager
async def session_lock(
    pool: asyncpg.Pool, lock: str, unlock: str, *, what: str, wait_s: float | None = None
) -> AsyncIterator[None]:
    """Hold an advisory lock (the named ``lock``/``unlock`` queries) on one pooled
    connection for the body's length, across the body's own transactions and connections.

    ``wait_s`` bounds the wait for the lock (``LockBusy`` after it). The pool does not reset
    connections on release, so nothing of the lock may stay on its session: the bound is
    set for the locking transaction only, and a session whose unlock failed is ended (which
    releases the lock) rather than handed back to the pool.
    """
    try:
        async with asyncio.timeout(60):
            connection = await pool.acquire()
    except UNAVAILABLE_ERRORS as exc:
        raise StorageUnavailable(f"{what}: {describe_error(exc)}") from exc
    try:
        try:
            await _lock(connection, lock, wait_s)
        except asyncpg.LockNotAvailableError:
            raise LockBusy(what) from None
        except UNAVAILABLE_ERRORS as exc:
            raise StorageUnavailable(f"{what}: {describe_error(exc)}") from exc
        try:
            yield
        finally:
            await _unlock(connection, unlock)
    finally:
        await pool.release(connection)


async def _lock(connection: Connection, lock: str, wait_s: float | None) -> None:
    if wait_s is None:
        await connection.execute(query(lock))
        return
    # SET LOCAL ends with this transaction; the advisory lock, taken at session level,
    # outlives it.
    async with connection.transaction():
        await connection.execute(query("set_local_lock_timeout"), str(int(wait_s * 1000)))
        await connection.execute(query(lock))


async def _unlock(connection: Connection, unlock: str) -> None:
    try:
        await connection.execute(query(unlock))
    except Exception:
        connection.terminate()  # the session may still hold the lock: end it
    except BaseException:  # cancelled mid-unlock: the same, then let the cancel through
        connection.terminate()
        raise
