"""Run the Alembic migration chain programmatically (no alembic.ini to ship or find)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources

from alembic import command
from alembic.config import Config

#: Serialises concurrent ``migrate`` runs (several collectors starting at once).
MIGRATION_LOCK_KEY = 0x65766F74


_ALEMBIC_LOCK = threading.Lock()


def sqlalchemy_url(database_url: str) -> str:
    """SQLAlchemy needs the driver named in the scheme; operators write plain URLs."""
    scheme, sep, rest = database_url.partition("://")
    if not sep:
        raise ValueError(f"DATABASE_URL is not a URL: {database_url!r}")
    if scheme in {"postgres", "postgresql"}:
        scheme = "postgresql+asyncpg"
    return f"{scheme}://{rest}"


def alembic_config(database_url: str) -> Config:
    config = Config()
    location = resources.files(__package__).joinpath("migrations")
    config.set_main_option("script_location", str(location))
    config.attributes["database_url"] = sqlalchemy_url(database_url)
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to run from several processes at once.

    The Alembic environment runs its own event loop, which ``asyncio.run`` refuses to start
    on a thread that already has one running, so the migration gets a short-lived thread.
    Alembic keeps its context in module globals, so one migration runs per process at a time
    (the advisory lock in the environment serialises processes).
    """
    with _ALEMBIC_LOCK, ThreadPoolExecutor(max_workers=1, thread_name_prefix="migrate") as pool:
        pool.submit(command.upgrade, alembic_config(database_url), revision).result()
