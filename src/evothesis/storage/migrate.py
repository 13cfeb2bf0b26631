"""Run the Alembic migration chain programmatically (no alembic.ini to ship or find), and
remember which database a data folder has migrated, for starts during an outage."""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

#: Serialises concurrent ``migrate`` runs (several collectors starting at once).
MIGRATION_LOCK_KEY = 0x65766F74

#: In the data folder: which database this folder's collector last migrated, to which head.
MIGRATED_FILE_NAME: Final = "schema-migrated"


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


def head_revision() -> str:
    """The newest revision of the migrations shipped with this version."""
    head = ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()
    assert head is not None  # the chain is never empty
    return head


def _database_identity(database_url: str) -> str:
    """The URL without its password, hashed: the same server and database however its
    password is rotated, and no secret (nor even a guessable digest of one) on disk."""
    parts = urlsplit(database_url)
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "password"]
    bare = urlunsplit(
        (parts.scheme, f"{user}@{netloc[2]}", parts.path, urlencode(query), parts.fragment)
    )
    return hashlib.sha256(bare.encode()).hexdigest()


def record_migration(database_url: str, data_dir: Path) -> None:
    """Note in ``data_dir`` that ``database_url`` is at this version's head revision."""
    data_dir.mkdir(parents=True, exist_ok=True)
    record = {"database": _database_identity(database_url), "revision": head_revision()}
    temporary = data_dir / f".{MIGRATED_FILE_NAME}.{os.getpid()}"
    temporary.write_bytes(orjson.dumps(record))
    temporary.replace(data_dir / MIGRATED_FILE_NAME)


def migrated_before(database_url: str, data_dir: Path) -> bool:
    """Whether ``data_dir`` records migrating ``database_url`` to this version's head (a
    missing or unreadable record says no)."""
    try:
        record = orjson.loads((data_dir / MIGRATED_FILE_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(record, dict) and record == {
        "database": _database_identity(database_url),
        "revision": head_revision(),
    }
