"""The asyncpg connection pool, set up once per process in the app's lifespan."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from evothesis.storage.queries import query

#: What a pool hands out; every connection of ours comes from a pool. (Generic in the
#: stubs only: the class itself cannot be subscripted at run time.)
if TYPE_CHECKING:
    Connection: TypeAlias = PoolConnectionProxy[asyncpg.Record]
else:
    Connection = PoolConnectionProxy

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


async def create_pool(database_url: str, *, min_size: int, max_size: int) -> asyncpg.Pool:
    """Open the pool; raises ``OSError``/``asyncpg`` errors when the database is down."""
    pool = await asyncpg.create_pool(
        database_url,
        min_size=min(min_size, max_size),
        max_size=max_size,
        init=_prepare_session,
        reset=_keep_session,
        command_timeout=30,
        max_inactive_connection_lifetime=300,
        # Exports render timestamps in SQL (json_build_object); they are always UTC.
        server_settings={"timezone": "UTC"},
    )
    assert pool is not None
    return pool
