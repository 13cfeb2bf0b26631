"""The asyncpg connection pool, set up once per process in the app's lifespan, and watched.

The seeds' operators check the pool with ``docker compose logs fastapi | grep -i "pool"``
and alert on "database connection pool exhaustion". ``MonitoredPool`` is asyncpg's pool
counting, through its public ``acquire``/``release``, the connections in use and the
callers that found every connection taken and had to wait; ``PoolWatch`` keeps the counts,
logs saturation (at most once per ``SATURATION_LOG_SECONDS``, never per request) and feeds
``/metrics``. It costs a few integer operations per acquire.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import asyncpg
from asyncpg.pool import PoolAcquireContext, PoolConnectionProxy

from evothesis.storage.queries import query

logger = logging.getLogger("evothesis.storage")

#: Saturation is logged at most this often: a line per wait would flood the log exactly
#: when the database is the bottleneck.
SATURATION_LOG_SECONDS: Final = 30.0

#: What a pool hands out; every connection of ours comes from a pool. (Generic in the
#: stubs only: the class itself cannot be subscripted at run time.)
if TYPE_CHECKING:
    Connection: TypeAlias = PoolConnectionProxy[asyncpg.Record]
    _Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
    _Acquire: TypeAlias = PoolAcquireContext[asyncpg.Record]
else:
    Connection = PoolConnectionProxy
    _Pool = asyncpg.Pool
    _Acquire = PoolAcquireContext

#: What connecting raises when no PostgreSQL answers at all (refused, no socket, a name
#: that does not resolve, a timeout, a server starting up, shutting down or full), as
#: opposed to one that answers and refuses us (a wrong password, a missing database).
UNREACHABLE_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from (SQLAlchemy and Alembic wrap the
    driver's), says that no PostgreSQL answered."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UNREACHABLE_ERRORS):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


async def _prepare_session(connection: asyncpg.Connection) -> None:
    # Created once per connection: the staging table lives as long as the session.
    await connection.execute(query("create_staging"))


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Skip asyncpg's default RESET ALL on release: it would cost a round trip on every
    flush, and our connections keep nothing on their session. They change no session
    setting and listen to nothing; the one session-level lock (``storage.sessions``) is
    released, or its session ended, before its connection comes back.
    """


@dataclass(frozen=True, slots=True)
class PoolStats:
    """The pool as of one moment, for ``/metrics``."""

    #: Open connections.
    size: int
    #: The most the pool opens (DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW).
    max_size: int
    #: Connections handed out and not yet given back.
    in_use: int
    #: Callers waiting now because every connection is in use.
    waiting: int
    #: Acquires that had to wait, since the process started.
    waits: int
    #: Seconds those acquires waited, in all.
    wait_seconds: float


class PoolWatch:
    """Counts of one pool's use; pure bookkeeping (``clock`` is injected for tests).

    ``log_saturation``: whether waits are worth a warning. They are for a pool sized by
    ``DATABASE_POOL_SIZE``/``DATABASE_MAX_OVERFLOW`` (a collector's, pixel management's);
    a command's small fixed pool waits by design, and is counted only.
    """

    __slots__ = (
        "_clock",
        "_last_log",
        "_log_saturation",
        "_window_longest",
        "_window_seconds",
        "_window_waits",
        "in_use",
        "max_size",
        "wait_seconds",
        "waiting",
        "waits",
    )

    def __init__(
        self,
        max_size: int,
        *,
        log_saturation: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_size = max_size
        self._log_saturation = log_saturation
        self._clock = clock
        self.in_use = 0
        self.waiting = 0
        self.waits = 0
        self.wait_seconds = 0.0
        self._last_log: float | None = None
        self._window_waits = 0
        self._window_seconds = 0.0
        self._window_longest = 0.0

    def acquiring(self) -> float | None:
        """An acquire begins: when every connection is in use it will wait, and its start
        time comes back (``None`` otherwise)."""
        if self.in_use < self.max_size:
            return None
        self.waiting += 1
        return self._clock()

    def acquired(self, started: float | None) -> None:
        self.in_use += 1
        self._waited(started)

    def gave_up(self, started: float | None) -> None:
        """The acquire failed (timeout, cancelled, database down)."""
        self._waited(started)

    def released(self) -> None:
        self.in_use -= 1

    def _waited(self, started: float | None) -> None:
        if started is None:
            return
        now = self._clock()
        seconds = now - started
        self.waiting -= 1
        self.waits += 1
        self.wait_seconds += seconds
        self._window_waits += 1
        self._window_seconds += seconds
        self._window_longest = max(self._window_longest, seconds)
        if not self._log_saturation:
            return
        if self._last_log is None or now - self._last_log >= SATURATION_LOG_SECONDS:
            self._log(now)

    def _log(self, now: float) -> None:
        since = "" if self._last_log is None else f" in the last {now - self._last_log:.0f} s"
        logger.warning(
            "Connection pool saturated: all %d connections in use, %d request(s) waited for "
            "one%s (%.3f s in all, longest %.3f s; %d waiting now); raise "
            "DATABASE_POOL_SIZE/DATABASE_MAX_OVERFLOW if PostgreSQL has room",
            self.max_size,
            self._window_waits,
            since,
            self._window_seconds,
            self._window_longest,
            self.waiting,
        )
        self._last_log = now
        self._window_waits = 0
        self._window_seconds = 0.0
        self._window_longest = 0.0


class _WatchedAcquire(_Acquire):
    """asyncpg's acquire (``async with pool.acquire()`` or ``await pool.acquire()``), told
    to the pool's watch."""

    __slots__ = ("_watch",)

    def __init__(self, pool: MonitoredPool, timeout: float | None) -> None:
        super().__init__(pool, timeout)
        self._watch = pool.watch

    async def __aenter__(self) -> Connection:
        started = self._watch.acquiring()
        try:
            connection = await super().__aenter__()
        except BaseException:
            self._watch.gave_up(started)
            raise
        self._watch.acquired(started)
        return connection

    def __await__(self) -> Generator[Any, None, Connection]:
        started = self._watch.acquiring()
        try:
            connection = yield from super().__await__()
        except BaseException:
            self._watch.gave_up(started)
            raise
        self._watch.acquired(started)
        return connection


class MonitoredPool(_Pool):
    """asyncpg's pool with a ``PoolWatch``: every acquire and release of ours, and of
    asyncpg's own helpers, goes through the two methods below."""

    __slots__ = ("watch",)

    def __init__(self, *args: Any, max_size: int, log_saturation: bool, **kwargs: Any) -> None:
        super().__init__(*args, max_size=max_size, **kwargs)
        self.watch = PoolWatch(max_size, log_saturation=log_saturation)

    def acquire(self, *, timeout: float | None = None) -> _Acquire:
        return _WatchedAcquire(self, timeout)

    async def release(
        self,
        connection: Connection,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (asyncpg's signature, overridden)
    ) -> None:
        try:
            await super().release(connection, timeout=timeout)
        finally:
            self.watch.released()

    def stats(self) -> PoolStats:
        watch = self.watch
        return PoolStats(
            size=self.get_size(),
            max_size=self.get_max_size(),
            in_use=watch.in_use,
            waiting=watch.waiting,
            waits=watch.waits,
            wait_seconds=watch.wait_seconds,
        )


async def create_pool(
    database_url: str, *, min_size: int, max_size: int, log_saturation: bool = True
) -> MonitoredPool:
    """Open the pool; raises ``OSError``/``asyncpg`` errors when the database is down.

    The options are ``asyncpg.create_pool``'s, which builds its own class: this builds ours
    the same way. ``log_saturation``: see ``PoolWatch``.
    """
    pool = MonitoredPool(
        database_url,
        log_saturation=log_saturation,
        min_size=min(min_size, max_size),
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300,
        init=_prepare_session,
        reset=_keep_session,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        command_timeout=30,
        # Exports render timestamps in SQL (json_build_object); they are always UTC.
        server_settings={"timezone": "UTC"},
    )
    return await pool
