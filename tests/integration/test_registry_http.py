"""The collector with pixel management as a separate process, reached over HTTP.

Pixel management runs as ``python -m evothesis pixel-management`` (its own process and
pool); the collector gets ``PIXEL_MANAGEMENT_URL`` and a service token. The registry is
stopped and restarted mid-test to show that cached answers keep events flowing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.loopback import free_port
from tests.support.postgres import register_client, with_registry
from tests.support.servers import RunningCollector, process_env, start_process

TOKEN = "service-token-for-tests"
SALT = bytes(range(100, 132))
RAW_IP = "198.51.100.203"


class Registry:
    """A pixel-management process on a fixed port that can be stopped and started again."""

    def __init__(self, database_url: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = process_env(
            DATABASE_URL=database_url,
            PIXEL_MANAGEMENT_TOKEN=TOKEN,
            EVOTHESIS_DATA_DIR=str(log.parent / "pixel-management-data"),
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "evothesis", "pixel-management", "--port", str(self.port)]
        self.process = start_process(
            command, env=self.env, log=self.log, health_url=f"{self.url}/health"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


@pytest.fixture
def registry(database_url: str, tmp_path: Path) -> Iterator[Registry]:
    register_client(database_url, "client_acme", "acme.example", "*.shop.acme.example")
    register_client(database_url, "client_eu", "eu.example", privacy_level="gdpr", ip_salt=SALT)
    process = Registry(database_url, tmp_path / "pixel-management.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def remote_collector(
    registry: Registry, start_collector: Callable[..., RunningCollector]
) -> RunningCollector:
    return start_collector(
        PIXEL_MANAGEMENT_URL=registry.url,
        PIXEL_MANAGEMENT_TOKEN=TOKEN,
        REGISTRY_CACHE_TTL=0.5,
        REGISTRY_NEGATIVE_TTL=0.5,
    )


def post(collector: RunningCollector, site: str, **headers: str) -> httpx.Response:
    with collector.client(origin=f"https://{site}") as api:
        return api.post("/collect", json={"eventType": "pageview", "siteId": site}, headers=headers)


def attribution(collector: RunningCollector) -> dict[str, Any]:
    with collector.client() as api:
        return dict(api.get("/health").json()["client_attribution"])


def test_events_keep_flowing_from_cache_while_the_registry_restarts(
    registry: Registry,
    remote_collector: RunningCollector,
    database_url: str,
    db: psycopg.Connection[Any],
) -> None:
    assert post(remote_collector, "acme.example").json()["client_id"] == "client_acme"
    assert post(remote_collector, "unknown.example").status_code == 403
    status = attribution(remote_collector)
    assert (status["source"], status["registry_reachable"]) == ("http", True)

    registry.stop()
    time.sleep(0.6)  # past the TTL: the next request must go to the (absent) registry
    assert post(remote_collector, "acme.example").status_code == 200  # stale answer
    refused = post(remote_collector, "never-seen.example")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "registry_unavailable"
    assert "127.0.0.1" not in refused.text  # internal addresses stay in logs and /health
    status = attribution(remote_collector)
    assert status["registry_reachable"] is False and status["stale_answers"] >= 1
    assert registry.url in status["last_error"]

    register_client(database_url, "client_new", "new.example")
    registry.start()
    assert post(remote_collector, "new.example").json()["client_id"] == "client_new"
    assert post(remote_collector, "acme.example").status_code == 200
    assert attribution(remote_collector)["registry_reachable"] is True
    rows = db.execute("SELECT client_id FROM events_log ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["client_acme", "client_acme", "client_new", "client_acme"]


def test_gdpr_salt_travels_to_the_collector_and_the_raw_ip_is_written_nowhere(
    registry: Registry,
    remote_collector: RunningCollector,
    db: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    response = post(remote_collector, "eu.example", **{"X-Forwarded-For": RAW_IP})
    assert response.status_code == 200
    registry.stop()  # flush its log
    [(ip, row)] = db.execute("SELECT ip_address, t::text FROM events_log t").fetchall()
    assert ip == hmac.new(SALT, RAW_IP.encode(), hashlib.sha256).hexdigest()
    assert RAW_IP not in row
    assert RAW_IP not in caplog.text
    assert "Domain eu.example authorized for client client_eu" in caplog.text
    assert RAW_IP not in registry.log.read_text()


def test_a_wrong_service_token_is_an_outage_not_a_refusal(
    registry: Registry, start_collector: Callable[..., RunningCollector]
) -> None:
    collector = start_collector(PIXEL_MANAGEMENT_URL=registry.url, PIXEL_MANAGEMENT_TOKEN="nope")
    response = post(collector, "acme.example")
    assert response.status_code == 503
    assert "PIXEL_MANAGEMENT_TOKEN" in attribution(collector)["last_error"]


def test_wildcards_origin_checks_and_deactivation_hold_over_http(
    registry: Registry,
    remote_collector: RunningCollector,
    database_url: str,
    db: psycopg.Connection[Any],
) -> None:
    assert post(remote_collector, "eu.shop.acme.example").json()["client_id"] == "client_acme"
    assert post(remote_collector, "shop.acme.example").status_code == 403  # not the wildcard
    with remote_collector.client(origin="https://eu.example") as api:
        mismatch = api.post("/collect", json={"eventType": "pageview", "siteId": "acme.example"})
    assert (mismatch.status_code, mismatch.json()["error"]["code"]) == (403, "origin_mismatch")

    with_registry(database_url, lambda s: s.update_client("client_acme", {"active": False}))
    time.sleep(0.6)  # the collector's TTL; the registry itself answers from the database
    assert post(remote_collector, "acme.example").status_code == 403
    assert post(remote_collector, "eu.shop.acme.example").status_code == 403
    assert [r[0] for r in db.execute("SELECT site_id FROM events_log")] == ["eu.shop.acme.example"]


def test_a_collector_restarted_while_pixel_management_is_down_serves_the_sites_it_knew(
    registry: Registry,
    start_collector: Callable[..., RunningCollector],
    tmp_path: Path,
    db: psycopg.Connection[Any],
) -> None:
    """The registry snapshot in the collector's data folder carries the answers, secrets
    included, across the restart: the gdpr client's salt still hashes its visitors' IPs."""
    settings = {
        "PIXEL_MANAGEMENT_URL": registry.url,
        "PIXEL_MANAGEMENT_TOKEN": TOKEN,
        "EVOTHESIS_DATA_DIR": str(tmp_path / "collector-data"),
    }
    first = start_collector(**settings)
    assert post(first, "acme.example").status_code == 200
    assert post(first, "eu.example").status_code == 200
    first.stop()
    registry.stop()

    second = start_collector(**settings)
    assert post(second, "acme.example").json()["client_id"] == "client_acme"
    gdpr = post(second, "eu.example", **{"X-Forwarded-For": RAW_IP})
    assert (gdpr.status_code, gdpr.json()["client_id"]) == (200, "client_eu")
    unseen = post(second, "eu.shop.acme.example")  # registered, but never asked about
    assert (unseen.status_code, unseen.json()["error"]["code"]) == (503, "registry_unavailable")
    status = attribution(second)
    assert status["registry_reachable"] is False and status["stale_answers"] >= 2

    registry.start()
    assert post(second, "eu.shop.acme.example").json()["client_id"] == "client_acme"
    rows = db.execute("SELECT ip_address FROM events_log WHERE client_id = 'client_eu'")
    assert hmac.new(SALT, RAW_IP.encode(), hashlib.sha256).hexdigest() in {r[0] for r in rows}


def test_a_write_key_selects_its_client_over_http_and_the_salt_hashes_user_ids(
    registry: Registry,
    remote_collector: RunningCollector,
    database_url: str,
    db: psycopg.Connection[Any],
) -> None:
    key = register_client(database_url, "client_app", privacy_level="gdpr", ip_salt=SALT)
    message = {"userId": "user-7", "event": "Signed Up"}
    with remote_collector.client(origin=None) as api:
        accepted = api.post("/v1/track", json=message, auth=(key, ""))
        refused = api.post("/v1/track", json=message, auth=("wk_nobody", ""))
    assert accepted.status_code == 200 and accepted.json()["client_id"] == "client_app"
    assert (refused.status_code, refused.json()["code"]) == (401, "invalid_write_key")
    [(user_id,)] = db.execute("SELECT user_id FROM events_log").fetchall()
    assert user_id == hmac.new(SALT, b"user-7", hashlib.sha256).hexdigest()
