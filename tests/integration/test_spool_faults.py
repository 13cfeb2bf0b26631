"""Nothing acknowledged is lost: PostgreSQL stopped under load, the collector SIGKILLed,
bytes of the spool damaged on disk.

A private PostgreSQL per test (so it can be stopped), a load generator of a few threads
posting events with their own ids and recording every id answered 200 or 202, and at the
end one count per id in ``events_log``: each acknowledged id exactly once (each undamaged
one, where the test damages the spool).
"""

from __future__ import annotations

import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.loopback import free_port
from tests.support.postgres import StoppablePostgres, stoppable_postgres
from tests.support.servers import LOCAL_ORIGIN, process_env, run_collector, start_process
from tests.support.spool import HEADER, record_spans, segment_files

EVENTS_PER_REQUEST = 4


@dataclass
class Load:
    """Threads posting batches until stopped; keeps every acknowledged event id."""

    base_url: str
    threads: int = 4
    acknowledged: set[str] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)

    def _run(self) -> None:
        headers = {"Origin": LOCAL_ORIGIN}
        with httpx.Client(base_url=self.base_url, timeout=10, headers=headers) as api:
            while not self._stop.is_set():
                ids = [str(uuid.uuid4()) for _ in range(EVENTS_PER_REQUEST)]
                body = {
                    "eventType": "batch",
                    "eventId": ids[0],
                    "siteId": "localhost",
                    "events": [{"eventType": "click", "eventId": i} for i in ids[1:]],
                }
                try:
                    status = api.post("/collect", json=body).status_code
                except httpx.TransportError:
                    status = 0  # the collector was killed: not acknowledged
                    time.sleep(0.05)
                with self._lock:
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                    if status in (200, 202):
                        self.acknowledged.update(ids)
                if status not in (200, 202):
                    time.sleep(0.02)  # as the pixel does: back off, then retry later


@pytest.fixture
def database() -> Iterator[StoppablePostgres]:
    with stoppable_postgres() as server:
        yield server


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def serve_command(
    database: StoppablePostgres, tmp_path: Path
) -> tuple[str, list[str], dict[str, str]]:
    """Base URL, command and environment of an ``evothesis serve`` process on ``database``
    with its spool and data folder under ``tmp_path``."""
    port = free_port()
    env = process_env(
        DATABASE_URL=database.url,
        SPOOL_DIR=str(tmp_path / "spool"),
        EVOTHESIS_DATA_DIR=str(tmp_path / "data"),
    )
    command = [sys.executable, "-m", "evothesis", "serve", "--port", str(port)]
    return f"http://127.0.0.1:{port}", command, env


def assert_exactly_once(acknowledged: set[str], stored: list[str]) -> None:
    assert len(stored) == len(set(stored)), "an event was stored twice"
    missing = acknowledged - set(stored)
    assert not missing, f"{len(missing)} acknowledged events are missing"


def test_database_outage_under_load_loses_nothing(
    database: StoppablePostgres, tmp_path: Path
) -> None:
    collector = run_collector(database.url, SPOOL_DIR=str(tmp_path / "spool"))
    load = Load(collector.url)
    try:
        load.start()
        time.sleep(1.0)
        database.stop()
        time.sleep(2.0)
        with collector.client() as api:
            assert api.get("/health").json()["status"] == "degraded"
        database.start()
        time.sleep(1.0)
        load.stop()

        def drained() -> bool:
            with collector.client() as api:
                health = api.get("/health").json()
            return health["status"] == "healthy" and health["spool"]["segments"] == 0

        wait_until(drained, 60, "the spool to drain")
    finally:
        load.stop()
        collector.stop()
    assert load.statuses.get(202, 0) > 0, load.statuses  # the spool took the outage
    assert load.statuses.get(200, 0) > 0
    assert_exactly_once(load.acknowledged, database.stored_ids())


def test_collector_killed_while_spooling_loses_nothing(
    database: StoppablePostgres, tmp_path: Path
) -> None:
    base, command, env = serve_command(database, tmp_path)
    log = tmp_path / "collector.log"
    first = start_process(command, env=env, log=log, health_url=f"{base}/health")
    load = Load(base)
    try:
        load.start()
        time.sleep(1.0)
        database.stop()
        time.sleep(1.5)  # spooling now
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        load.stop()
        assert load.statuses.get(202, 0) > 0, load.statuses
        assert list((tmp_path / "spool").glob("*/segment-*.spool")), "nothing was spooled"

        database.start()
        second = start_process(command, env=env, log=log, health_url=f"{base}/health")
        try:
            wait_until(
                lambda: not list((tmp_path / "spool").glob("*/segment-*.spool")),
                60,
                "the new collector to adopt and replay the dead one's spool",
            )
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=30) == 0
    finally:
        load.stop()
        if first.poll() is None:
            first.kill()
            first.wait()
    assert_exactly_once(load.acknowledged, database.stored_ids())
    assert "Replayed" in log.read_text()


def test_sigterm_under_load_stores_everything_acknowledged(
    database: StoppablePostgres, tmp_path: Path
) -> None:
    base, command, env = serve_command(database, tmp_path)
    process = start_process(
        command, env=env, log=tmp_path / "serve.log", health_url=f"{base}/health"
    )
    load = Load(base)
    try:
        load.start()
        time.sleep(1.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        load.stop()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert load.statuses.get(200, 0) > 0
    assert_exactly_once(load.acknowledged, database.stored_ids())
    assert not list((tmp_path / "spool").glob("*/segment-*.spool"))  # nothing left behind


def test_a_full_spool_is_a_503_with_retry_after_and_an_unhealthy_collector(
    database: StoppablePostgres, tmp_path: Path
) -> None:
    collector = run_collector(database.url, SPOOL_DIR=str(tmp_path / "spool"), SPOOL_MAX_BYTES=4096)
    event = {"eventType": "pageview", "siteId": "localhost"}
    try:
        with collector.client() as api:
            assert api.post("/collect", json=event).status_code == 200  # warms the cache
            database.stop()
            answers = [api.post("/collect", json=event) for _ in range(40)]
            statuses = [answer.status_code for answer in answers]
            assert statuses[0] == 202
            refused = answers[statuses.index(503)]
            assert refused.json()["error"]["code"] == "spool_full"
            assert refused.headers["retry-after"] == "1"
            health = api.get("/health")
            assert (health.status_code, health.json()["status"]) == (503, "unhealthy")
            database.start()
    finally:
        collector.stop()
    spooled = statuses.count(202)
    assert 0 < spooled < 40


def flip_bytes(segment: Path, rng: random.Random, flips: int) -> tuple[set[str], set[str], int]:
    """Flip a byte of the segment's first record (the issue's case), one in the header of a
    random record (headers are 1% of the bytes: chance alone would hardly hit one) and
    ``flips`` at random offsets; returns the event ids of the untouched and of the touched
    records, and how many damaged ranges a reader must find (touched records next to each
    other make one range)."""
    data = bytearray(segment.read_bytes())
    spans = list(record_spans(bytes(data)))
    offsets = {
        rng.randrange(spans[0].length),
        rng.choice(spans).offset + rng.randrange(HEADER.size),
        *(rng.randrange(len(data)) for _ in range(flips)),
    }
    for at in offsets:
        data[at] ^= rng.randrange(1, 256)
    segment.write_bytes(bytes(data))
    touched = [span.touched_by(offsets) for span in spans]
    runs = sum(1 for i, hit in enumerate(touched) if hit and (i == 0 or not touched[i - 1]))
    intact = {
        i for span, hit in zip(spans, touched, strict=True) if not hit for i in span.event_ids
    }
    damaged = {i for span, hit in zip(spans, touched, strict=True) if hit for i in span.event_ids}
    return intact, damaged, runs


@pytest.mark.parametrize("seed", [7, 1009, 65537])
def test_flipped_bytes_in_the_spool_lose_only_the_records_they_hit(
    database: StoppablePostgres, tmp_path: Path, seed: int
) -> None:
    """Events acknowledged (202) into the spool while PostgreSQL is down; bytes flipped at
    random offsets in the segments the stopped collector left; a new collector adopts and
    replays them: every event of an undamaged record is stored exactly once, no event of a
    damaged one is stored, and each damaged range is quarantined and counted."""
    spool_dir = tmp_path / "spool"
    first = run_collector(database.url, SPOOL_DIR=str(spool_dir))
    acknowledged: list[str] = []
    try:
        with first.client() as api:
            warm = {"eventType": "pageview", "siteId": "localhost", "eventId": str(uuid.uuid4())}
            assert api.post("/collect", json=warm).status_code == 200  # caches the site
            acknowledged.append(warm["eventId"])
            database.stop()
            for _ in range(120):  # one request at a time: one flush, one record each
                ids = [str(uuid.uuid4()) for _ in range(EVENTS_PER_REQUEST)]
                body = {
                    "eventType": "batch",
                    "eventId": ids[0],
                    "siteId": "localhost",
                    "events": [{"eventType": "click", "eventId": i} for i in ids[1:]],
                }
                assert api.post("/collect", json=body).status_code == 202
                acknowledged += ids
                time.sleep(0.02)  # long enough for the replayer to roll segments over
    finally:
        first.stop()

    segments = segment_files(spool_dir)
    assert len(segments) >= 2, segments
    rng = random.Random(seed)
    intact: set[str] = set()
    damaged: set[str] = set()
    ranges = 0
    for segment in segments:
        kept, lost, runs = flip_bytes(segment, rng, flips=3)
        intact |= kept
        damaged |= lost
        ranges += runs
    assert intact and damaged
    assert intact | damaged == set(acknowledged[1:])

    database.start()
    second = run_collector(database.url, SPOOL_DIR=str(spool_dir))
    try:

        def drained() -> bool:
            with second.client() as api:
                return bool(api.get("/health").json()["spool"]["segments"] == 0)

        wait_until(drained, 60, "the spool to drain")
        with second.client() as api:
            assert api.get("/health").json()["spool"]["quarantined"] == ranges
    finally:
        second.stop()

    stored = database.stored_ids()
    assert_exactly_once({acknowledged[0], *intact}, stored)
    assert not damaged & set(stored), "an event of a damaged record was stored"
    assert set(stored) <= set(acknowledged)
    quarantined = list((spool_dir / "quarantine").glob("*.bad"))
    assert len(quarantined) == ranges
