"""A collector restarted during a database outage: it starts, says it is degraded, accepts
(and spools) the events of the sites it knew from its registry snapshot, asks the others to
retry, and everything it acknowledged is stored once PostgreSQL returns.

The collectors are ``evothesis serve`` processes on a PostgreSQL of the test's own, which
the test stops as an outage does.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from evothesis.config import Settings
from evothesis.registry.snapshot import SNAPSHOT_FILE_NAME
from evothesis.services import open_ingestion, open_services
from tests.support.loopback import free_port
from tests.support.postgres import (
    StoppablePostgres,
    register_client,
    stoppable_postgres,
    with_registry,
)
from tests.support.servers import (
    OPERATOR_HEADERS,
    RunningCollector,
    killed_on_exit,
    process_env,
    start_process,
    stop_process,
)
from tests.support.sync import run_coroutine

#: Short, so the first collector learns of the deactivation within the test.
CACHE_TTL = "0.5"


@pytest.fixture
def database() -> Iterator[StoppablePostgres]:
    with stoppable_postgres() as server:
        register_client(server.url, "client_gone", "gone.example")
        yield server


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


def post(base: str, site: str, acknowledged: set[str] | None = None) -> httpx.Response:
    """A batch of three events (with their own ids) from a page of ``site``; the ids go to
    ``acknowledged`` when the answer is a 200 or a 202."""
    ids = [str(uuid.uuid4()) for _ in range(3)]
    body = {
        "eventType": "batch",
        "eventId": ids[0],
        "siteId": site,
        "events": [{"eventType": "click", "eventId": event_id} for event_id in ids[1:]],
    }
    answer = httpx.post(
        f"{base}/collect", json=body, headers={"Origin": f"http://{site}"}, timeout=10
    )
    if acknowledged is not None and answer.status_code in (200, 202):
        acknowledged.update(ids)
    return answer


def test_a_collector_restarted_during_a_database_outage_serves_the_sites_it_knew(
    database: StoppablePostgres, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "evothesis", "serve", "--port", str(port)]
    env = process_env(
        DATABASE_URL=database.url,
        EVOTHESIS_DATA_DIR=str(tmp_path / "data"),
        EXPORT_IN_SERVE="false",
        REGISTRY_CACHE_TTL=CACHE_TTL,
        REGISTRY_NEGATIVE_TTL=CACHE_TTL,
    )
    log = tmp_path / "serve.log"
    acknowledged: set[str] = set()

    # Before the outage: a collector learns localhost and gone.example, then that
    # gone.example's client was deactivated; it stops (and writes its snapshot).
    with killed_on_exit(start_process(command, env=env, log=log, health_url=f"{base}/health")) as (
        first
    ):
        assert post(base, "localhost", acknowledged).status_code == 200
        assert post(base, "gone.example", acknowledged).status_code == 200
        with_registry(
            database.url, lambda store: store.update_client("client_gone", {"active": False})
        )
        time.sleep(float(CACHE_TTL) + 0.2)
        assert post(base, "gone.example").status_code == 403
        assert stop_process(first) == 0
    assert (tmp_path / "data" / SNAPSHOT_FILE_NAME).exists()

    database.stop()

    # A data folder that never migrated this database cannot vouch for its schema.
    fresh = subprocess.run(
        command,
        env={**env, "EVOTHESIS_DATA_DIR": str(tmp_path / "fresh")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert fresh.returncode == 1
    assert "has no record of migrating this database" in fresh.stderr
    assert "Traceback" not in fresh.stderr

    # The collector restarted during the outage.
    with killed_on_exit(start_process(command, env=env, log=log, health_url=f"{base}/health")) as (
        second
    ):
        health = httpx.get(f"{base}/health", headers=OPERATOR_HEADERS, timeout=10).json()
        assert (health["status"], health["database"]) == ("degraded", "disconnected")

        spooled = [post(base, "localhost", acknowledged) for _ in range(10)]
        assert [answer.status_code for answer in spooled] == [202] * 10
        assert {answer.json()["client_id"] for answer in spooled} == {"client_test"}
        for site in ("unknown.example", "gone.example"):
            refused = post(base, site)
            assert refused.status_code == 503, (site, refused.text)
            assert refused.json()["error"]["code"] == "registry_unavailable"
            assert refused.headers["retry-after"] == "1"
        health = httpx.get(f"{base}/health", headers=OPERATOR_HEADERS, timeout=10).json()
        assert health["client_attribution"]["stale_answers"] >= 1

        database.start()

        def drained() -> bool:
            health = httpx.get(f"{base}/health", headers=OPERATOR_HEADERS, timeout=10).json()
            return bool(health["status"] == "healthy" and health["spool"]["segments"] == 0)

        wait_until(drained, 60, "the spool to be replayed")
        assert post(base, "localhost", acknowledged).status_code == 200
        assert stop_process(second) == 0

    stored = database.stored_ids()
    assert len(stored) == len(set(stored)), "an event was stored twice"
    assert set(stored) == acknowledged
    text = log.read_text()
    assert "migrations skipped" in text
    assert "Registry snapshot: 1 of 1 answers" in text
    assert "Replayed" in text


def test_a_damaged_snapshot_is_refused_and_the_collector_starts_without_it(
    start_collector: Callable[..., RunningCollector],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / SNAPSHOT_FILE_NAME).write_bytes(b"gAAAAAB" + b"x" * 200)
    caplog.set_level(logging.INFO, logger="evothesis.registry")
    collector = start_collector(EVOTHESIS_DATA_DIR=str(data))
    with collector.client() as api:
        assert api.get("/health").json()["status"] == "healthy"
        assert (
            api.post("/collect", json={"eventType": "pageview", "siteId": "localhost"}).status_code
            == 200
        )
    collector.stop()
    assert "refused" in caplog.text and "starting without it" in caplog.text
    # Replaced by a good one at the next write.
    assert "Replacing the registry snapshot" in caplog.text


def test_a_collector_without_a_secret_key_keeps_no_snapshot(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A production collector that leaves the registry to pixel management needs no secret
    key; without one it cannot seal a snapshot, so it keeps none, and says so once."""
    settings = Settings(
        _env_file=None,
        ENVIRONMENT="production",
        EVOTHESIS_SECRET_KEY=None,
        PIXEL_MANAGEMENT_URL=f"http://127.0.0.1:{free_port()}",
        EVOTHESIS_DATA_DIR=str(tmp_path / "data"),
        EXPORT_IN_SERVE=False,
    )
    caplog.set_level(logging.INFO)

    async def work() -> None:
        async with (
            open_services(settings, database_url=database_url) as services,
            open_ingestion(services),
        ):
            assert services.box is None

    run_coroutine(work)
    assert caplog.text.count("no registry snapshot is kept") == 1
    assert not (tmp_path / "data" / SNAPSHOT_FILE_NAME).exists()
