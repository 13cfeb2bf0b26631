"""Alembic environment: async engine over asyncpg, one migrator at a time."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from evothesis.storage.migrate import MIGRATION_LOCK_KEY


def _run(connection: Connection) -> None:
    # The lock makes a second process wait, then find nothing left to do.
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    context.configure(connection=connection, transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()


async def _main() -> None:
    url = context.config.attributes["database_url"]
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `evothesis migrate`")
asyncio.run(_main())
