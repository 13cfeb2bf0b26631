"""Scale-out as deployed, without Docker: Debian's nginx (the project's template) in front
of two collector processes and a pixel-management process, two export workers, one
PostgreSQL and a moto S3, all on loopback.

Load goes through nginx from several client addresses (127.0.0.11-16: all of 127/8 is
loopback); every accepted event must reach the raw bucket and the client's processed files
exactly once, both collectors must have served, and the address each event is stored with
must be the one its client connected from (nginx forwards it; a forged X-Forwarded-For
from the client is not believed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.loopback import free_port
from tests.support.nginx import Nginx
from tests.support.s3 import S3, Buckets, assert_exactly_once, s3_environment, sql, wait_until
from tests.support.servers import LOCAL_ORIGIN, start_process

SERVICE_TOKEN = "scale-out-service-token"
#: Client addresses the load comes from, one per sending thread.
CLIENT_ADDRESSES = tuple(f"127.0.0.{n}" for n in range(11, 17))
#: The first client also claims to be someone else; nginx must not pass that on.
FORGED = "203.0.113.7"
REQUESTS_PER_CLIENT = 120
EVENTS_PER_BATCH = 5
EXPORT_TIMEOUT = 120.0


@dataclass
class Processes:
    """Everything started for one test, stopped (by PID) at its end."""

    folder: Path
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, **settings: object) -> dict[str, str]:
        return {**os.environ, **{name: str(value) for name, value in settings.items()}}

    def server(self, name: str, args: list[str], port: int, **settings: object) -> str:
        """``python -m evothesis <args> --port <port>``, once its /health answers."""
        url = f"http://127.0.0.1:{port}"
        process = start_process(
            [sys.executable, "-m", "evothesis", *args, "--port", str(port)],
            env=self.env(**settings),
            log=self.folder / f"{name}.log",
            health_url=f"{url}/health",
        )
        self.started.append(process)
        return url

    def worker(self, name: str, **settings: object) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "evothesis", "worker"],
                env=self.env(**settings),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.started.append(process)
        return process

    def stop(self) -> None:
        for process in self.started:
            process.terminate()
        for process in self.started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.stop()


def send_load(base: str, address: str) -> dict[str, str]:
    """Batches from ``address`` through nginx as a page of localhost; returns the event ids
    acknowledged with 200 (envelope and inner events carry ids chosen here)."""
    headers = {"Origin": LOCAL_ORIGIN}
    if address == CLIENT_ADDRESSES[0]:
        headers["X-Forwarded-For"] = FORGED
    accepted: dict[str, str] = {}
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(base_url=base, headers=headers, transport=transport, timeout=30) as client:
        for n in range(REQUESTS_PER_CLIENT):
            ids = [str(uuid.uuid4()) for _ in range(EVENTS_PER_BATCH + 1)]
            body = {
                "eventType": "batch",
                "eventId": ids[0],
                "sessionId": f"sess-{address}",
                "visitorId": f"vis-{address}",
                "siteId": "localhost",
                "url": f"http://localhost/page/{n}",
                "events": [
                    {"eventType": "click", "eventId": event_id, "eventData": {"n": n}}
                    for event_id in ids[1:]
                ],
            }
            response = client.post("/collect", json=body)
            assert response.status_code == 200, (response.status_code, response.text)
            assert response.json()["events_processed"] == len(ids)
            accepted.update(dict.fromkeys(ids, address))
    return accepted


def test_load_through_nginx_on_two_collectors_and_two_workers_is_exported_exactly_once(
    database_url: str,
    s3: S3,
    buckets: Buckets,
    tmp_path: Path,
    processes: Processes,
    nginx_factory: Callable[..., Nginx],
) -> None:
    common = {"DATABASE_URL": database_url, "ENVIRONMENT": "test", "LOG_LEVEL": "WARNING"}
    pixel_management = processes.server(
        "pixel-management",
        ["pixel-management"],
        free_port(),
        PIXEL_MANAGEMENT_TOKEN=SERVICE_TOKEN,
        EVOTHESIS_DATA_DIR=tmp_path / "pm",
        **common,
    )
    collectors = [
        processes.server(
            f"collector-{n}",
            ["serve"],
            free_port(),
            PIXEL_MANAGEMENT_URL=pixel_management,
            PIXEL_MANAGEMENT_TOKEN=SERVICE_TOKEN,
            EXPORT_IN_SERVE="false",
            EVOTHESIS_DATA_DIR=tmp_path / f"collector-{n}",
            **common,
        )
        for n in (1, 2)
    ]
    workers = [
        processes.worker(
            f"worker-{n}",
            EXPORT_INTERVAL="1s",
            EXPORT_BATCH_SIZE=500,
            EVOTHESIS_DATA_DIR=tmp_path / f"worker-{n}",
            **s3_environment(s3, buckets, **common),
        )
        for n in (1, 2)
    ]
    nginx = nginx_factory(
        [url.removeprefix("http://") for url in collectors],
        [pixel_management.removeprefix("http://")],
    )

    with ThreadPoolExecutor(len(CLIENT_ADDRESSES)) as pool:
        sent = pool.map(lambda address: send_load(nginx.url, address), CLIENT_ADDRESSES)
        accepted = {event_id: address for part in sent for event_id, address in part.items()}
    expected_total = len(CLIENT_ADDRESSES) * REQUESTS_PER_CLIENT * (EVENTS_PER_BATCH + 1)
    assert len(accepted) == expected_total

    # nginx spread the requests over both collectors (its log names the upstream).
    requests = len(CLIENT_ADDRESSES) * REQUESTS_PER_CLIENT
    upstreams = Counter(nginx.upstreams("POST /collect", requests))
    assert set(upstreams) == {url.removeprefix("http://") for url in collectors}, upstreams
    assert sum(upstreams.values()) == requests

    # The real client address arrived through the proxy; the forged one did not.
    stored_ips = dict(sql(database_url, "SELECT event_id::text, ip_address FROM events_log"))
    assert stored_ips == accepted
    assert FORGED not in set(stored_ips.values())

    def exported() -> bool:
        assert all(worker.poll() is None for worker in workers), "an export worker died"
        stored, batched, pending, deliveries = sql(
            database_url,
            "SELECT (SELECT count(*) FROM events_log),"
            " (SELECT coalesce(sum(event_count), 0) FROM export_batches"
            "  WHERE state = 'exported'),"
            " (SELECT count(*) FROM export_deliveries WHERE state = 'pending'),"
            " (SELECT count(*) FROM export_deliveries)",
        )[0]
        return stored == batched and pending == 0 and deliveries > 0

    wait_until(exported, EXPORT_TIMEOUT, "both workers to export and process everything")
    assert_exactly_once(s3, buckets, database_url, dict.fromkeys(accepted, "client_test"))
