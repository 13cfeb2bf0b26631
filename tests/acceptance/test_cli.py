"""The `evothesis` command as an operator runs it, beyond the embedded-default walk-through in
test_cli_embedded.py: version, `migrate`, an external DATABASE_URL, configuration errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from evothesis.storage.migrate import head_revision
from tests.support.cli import EVOTHESIS, clean_env, evothesis
from tests.support.loopback import free_port
from tests.support.postgres import PostgresServer, fresh_database
from tests.support.seed import SEED_SINGLE
from tests.support.servers import LOCAL_ORIGIN, killed_on_exit, start_process, stop_process


def processes_mentioning(path: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if str(path) in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


@pytest.fixture
def empty_database(postgres: PostgresServer) -> Iterator[str]:
    with fresh_database(postgres, template=None) as url:
        yield url


def test_version_prints_the_package_version() -> None:
    result = evothesis("--version", env=clean_env(Path("unused")))
    assert result.returncode == 0
    assert result.stdout.strip() == "evothesis 0.1.0"


def test_no_command_shows_help_instead_of_doing_anything(tmp_path: Path) -> None:
    result = evothesis(env=clean_env(tmp_path / "data"))
    assert "serve" in result.stdout + result.stderr
    assert "migrate" in result.stdout + result.stderr
    assert not (tmp_path / "data").exists()


def test_migrate_help_documents_both_database_choices() -> None:
    result = evothesis("migrate", "--help", env=clean_env(Path("unused")))
    assert result.returncode == 0
    assert "DATABASE_URL" in result.stdout
    assert "EVOTHESIS_DATA_DIR" in result.stdout


@pytest.mark.parametrize("command", ["serve", "migrate"])
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_POOL_SIZE", "0"),
        ("DATABASE_MAX_OVERFLOW", "lots"),
        ("REGISTRY_CACHE_TTL", "-1"),
        ("TRUSTED_PROXIES", "not-an-ip"),
        ("ENVIRONMENT", "staging"),
        ("MAX_BATCH_EVENTS", "0"),
    ],
)
def test_invalid_configuration_exits_2_naming_the_variable_before_touching_anything(
    tmp_path: Path, command: str, name: str, value: str
) -> None:
    data_dir = tmp_path / "data"
    result = evothesis(command, env=clean_env(data_dir, **{name: value}), timeout=60)

    assert result.returncode == 2
    assert result.stderr.startswith("Invalid configuration:")
    assert name in result.stderr
    assert "Traceback" not in result.stderr
    assert not data_dir.exists(), "no embedded PostgreSQL may be started for a bad config"


def test_migrate_brings_an_external_database_to_head_and_is_repeatable(
    tmp_path: Path, empty_database: str
) -> None:
    env = clean_env(tmp_path / "data", DATABASE_URL=empty_database)
    for _ in range(2):
        result = evothesis("migrate", env=env)
        assert result.returncode == 0, result.stderr
        assert "Database schema is up to date." in result.stdout

    with psycopg.connect(empty_database) as conn:
        versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        assert versions == [(head_revision(),)]
        assert conn.execute("SELECT count(*) FROM events_log").fetchone() == (0,)
    assert not (tmp_path / "data").exists()


def test_migrate_on_the_embedded_default_leaves_no_server_running(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    try:
        result = evothesis("migrate", env=clean_env(data_dir))
        assert result.returncode == 0, result.stderr
        assert "Database schema is up to date." in result.stdout
        assert (data_dir / "postgres").is_dir()
        deadline = time.monotonic() + 15
        while processes_mentioning(data_dir) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_mentioning(data_dir) == []
    finally:
        for proc in processes_mentioning(data_dir):
            proc.kill()


def test_serve_with_database_url_stores_there_and_starts_no_embedded_server(
    tmp_path: Path, database_url: str
) -> None:
    data_dir = tmp_path / "data"
    log = tmp_path / "serve.log"
    port = free_port()
    env = clean_env(data_dir, DATABASE_URL=database_url)
    base = f"http://127.0.0.1:{port}"
    command = [EVOTHESIS, "serve", "--port", str(port)]
    process = start_process(command, env=env, log=log, health_url=f"{base}/health")
    with killed_on_exit(process):
        with httpx.Client(base_url=base, timeout=10) as api:
            response = api.post("/collect", json=SEED_SINGLE, headers={"Origin": LOCAL_ORIGIN})
            assert response.status_code == 200
            assert response.json()["events_processed"] == 1

        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT event_type, client_id FROM events_log").fetchall() == [
                ("pageview", "client_test")
            ]
        assert stop_process(process) == 0

    output = log.read_text()
    assert "Bulk inserted 1 events for client client_test from site localhost" in output
    assert "embedded" not in output.lower()
    assert not (data_dir / "postgres").exists()


def command_line(process: psutil.Process) -> str:
    """A process's command line; empty for one that has exited meanwhile (a short-lived
    helper the server started)."""
    try:
        return " ".join(process.cmdline())
    except (psutil.ZombieProcess, psutil.NoSuchProcess):
        return ""


def test_serve_workers_share_the_port_each_with_its_own_pool(
    tmp_path: Path, database_url: str
) -> None:
    """``serve --workers 2`` with DATABASE_URL: two worker processes, each holding its own
    DATABASE_POOL_SIZE connections to PostgreSQL, both storing what they accept."""
    port = free_port()
    env = clean_env(tmp_path / "data", DATABASE_URL=database_url, DATABASE_POOL_SIZE="3")
    base = f"http://127.0.0.1:{port}"
    command = [EVOTHESIS, "serve", "--port", str(port), "--workers", "2"]
    process = start_process(
        command, env=env, log=tmp_path / "serve.log", health_url=f"{base}/health"
    )
    with killed_on_exit(process):
        workers = [
            child
            for child in psutil.Process(process.pid).children()
            if "spawn_main" in command_line(child)
        ]
        assert len(workers) == 2, [child.cmdline() for child in workers]

        # Each worker opens DATABASE_POOL_SIZE connections at start; the parent holds none.
        def connections() -> int:
            with psycopg.connect(database_url) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
            return int(row[0]) if row else 0

        deadline = time.monotonic() + 30
        while connections() < 2 * 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert connections() >= 2 * 3

        # Many short connections, so the kernel hands them to both workers.
        for n in range(40):
            event = {**SEED_SINGLE, "url": f"https://example.com/{n}"}
            response = httpx.post(f"{base}/collect", json=event, headers={"Origin": LOCAL_ORIGIN})
            assert response.status_code == 200, response.text
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT count(*) FROM events_log").fetchone() == (40,)
        assert stop_process(process) == 0
