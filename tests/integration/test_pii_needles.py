"""Planted PII is found nowhere the README says it is removed: a black-box audit.

One ``evothesis serve`` process (access log on, debug logging) on a PostgreSQL of the
test's own, three clients (standard, gdpr, hipaa). Needles (an e-mail, a card number, an
SSN, phone numbers, the visitor's IP) go in through every field a sender controls: the
envelope's ids and URLs, ``eventData`` keys and values (strings and numbers), headers,
inner events that fail validation, requests refused whole, a lookup URL. Half of them
arrive while the database is down, so they sit in the spool first. Then the buffer is
exported and processed by the CLI, and everything is read back: every table, the data
folder (spool, registry snapshot, keys), every object of every bucket (decoded: gzip,
Parquet), the collector's and the CLI's logs, PostgreSQL's own log, ``/metrics`` and
``/health``.

The README's promises, checked: PII in data and URLs is redacted at every privacy level;
a gdpr client's raw IP is written nowhere (HMAC only), a hipaa client's not at all; the
standard client keeps its IP as received (so its IP is no needle).
"""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from tests.support.loopback import free_port
from tests.support.postgres import StoppablePostgres, register_client, stoppable_postgres
from tests.support.s3 import S3, Buckets, decode_file, s3_environment
from tests.support.servers import (
    OPERATOR_HEADERS,
    killed_on_exit,
    process_env,
    start_process,
    stop_process,
)

EMAIL = "olga.needle@example.com"
#: client id → (privacy level, site, export format, the visitor's IP).
CLIENTS = {
    "needle_standard": ("standard", "standard.example", "json", "198.51.100.7"),
    "needle_gdpr": ("gdpr", "gdpr.example", "csv", "203.0.113.77"),
    "needle_hipaa": ("hipaa", "hipaa.example", "parquet", "203.0.113.88"),
}
#: Between a needle's digit groups: nothing, a separator, or a percent-encoded one.
_SEP = rb"(?:[^0-9]|%[0-9A-Fa-f]{2}){0,3}"
NEEDLES = {
    "e-mail": re.compile(rb"olga\.needle", re.IGNORECASE),
    "card": re.compile(_SEP.join([rb"4111", rb"1111", rb"1111", rb"1111"])),
    "ssn": re.compile(_SEP.join([rb"078", rb"05", rb"1120"])),
    "us phone": re.compile(_SEP.join([rb"415", rb"555", rb"2671"])),
    "uk phone": re.compile(_SEP.join([rb"20", rb"7946", rb"0958"])),
    "mobile number": re.compile(rb"447700900123"),
    "gdpr ip": re.compile(rb"203\.0\.113\.77"),
    "hipaa ip": re.compile(rb"203\.0\.113\.88"),
}


def planted(site: str, ip: str, *, strict: bool) -> dict[str, Any]:
    """Every field of an event a page controls, each holding needles."""
    data: dict[str, Any] = {
        "note": f"call (415) 555-2671 or +44 20 7946 0958, or mail {EMAIL}",
        "reference": 4111111111111111,  # a card number as a JSON number
        "callback": 14155552671,  # a North American number with its 1, as a number
        "mobile": 447700900123,  # a mobile number with its country code
        "ssn": 78051120,  # under a sensitive key, whatever its type
        "items": [{"text": "SSN 078051120"}, "4111 1111 1111 1111", "4111.1111.1111.1111"],
        EMAIL: "an e-mail as a key",
        "deep": {"deeper": {"id": "078-05-1120", "contact": f"mailto:{EMAIL}"}},
    }
    if strict:
        data["seen_from"] = f"request from {ip}"  # hipaa redacts IPs in text too
    return {
        "eventType": f"signup {EMAIL}",
        "eventId": str(uuid.uuid4()),
        "siteId": site,
        "visitorId": EMAIL,
        "sessionId": "s (415) 555-2671",
        "url": (
            f"https://{site}/account/4111-1111-1111-1111?email=olga.needle%40example.com"
            "&ssn=078-05-1120&phone=%2B44%2020%207946%200958#tel=415-555-2671"
        ),
        "path": f"/users/{EMAIL}/078-05-1120",
        "referrer": f"https://mail.example/?to={EMAIL}&card=4111.1111.1111.1111",
        "pageTitle": "Order for 078 05 1120",
        "eventData": data,
    }


def send_round(base: str, client_id: str) -> tuple[list[int], int]:
    """One round of a client's traffic; (statuses of the accepted requests, events sent)."""
    level, site, _, ip = CLIENTS[client_id]
    strict = level == "hipaa"
    headers = {
        "Origin": f"https://{site}",
        "User-Agent": f"Mozilla/5.0 (X11; contact {EMAIL}; +1 415 555 2671) Firefox/120.0",
        "Referer": f"https://{site}/checkout?card=4111-1111-1111-1111&mail={EMAIL}",
        "X-Forwarded-For": ip,
    }
    single = planted(site, ip, strict=strict)
    batch = {
        **planted(site, ip, strict=strict),
        "eventType": "batch",
        "events": [
            planted(site, ip, strict=strict),
            {"eventType": "click", "eventId": EMAIL, "eventData": {"card": "4111111111111111"}},
            {"eventType": "click", "timestamp": f"{EMAIL} 078-05-1120"},
        ],
    }
    statuses = []
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        for body in (single, batch):
            statuses.append(client.post("/collect", json=body).status_code)
        # Refused whole: an invalid event id, then bytes that are not JSON.
        refused = client.post(
            "/collect", json={**planted(site, ip, strict=strict), "eventId": EMAIL}
        )
        assert refused.status_code == 422, refused.text
        broken = client.post(
            "/collect",
            content=f'{{"eventType": "{EMAIL}", "url": "4111 1111 1111 1111"'.encode(),
            headers={"Content-Type": "application/json"},
        )
        assert broken.status_code == 400, broken.text
        lookup = client.get(f"/api/v1/config/domain/{EMAIL}", params={"card": "4111111111111111"})
        assert lookup.status_code in (404, 503), lookup.text  # 503 during the outage
    return statuses, 3


def scan(name: str, data: bytes) -> list[str]:
    """The needles found in ``data``, each with a little context."""
    found = []
    for needle, pattern in NEEDLES.items():
        for match in pattern.finditer(data):
            context = data[max(0, match.start() - 60) : match.end() + 60]
            found.append(f"{needle} in {name}: …{context!r}…")
            break
    return found


def database_text(url: str) -> Iterator[tuple[str, bytes]]:
    """Every row of every table, as PostgreSQL renders it."""
    with psycopg.connect(url) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
        ]
        for table in tables:
            rows = conn.execute(f'SELECT t::text FROM "{table}" t').fetchall()
            yield f"table {table}", "\n".join(row for (row,) in rows).encode()


def object_text(key: str, data: bytes) -> bytes:
    if key.endswith(".gz"):
        return gzip.decompress(data)
    if key.endswith(".parquet"):
        return orjson.dumps(decode_file(key, data), default=str)
    return data


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def database() -> Iterator[StoppablePostgres]:
    with stoppable_postgres() as server:
        for client_id, (level, site, fmt, _) in CLIENTS.items():
            register_client(server.url, client_id, site, privacy_level=level, export_format=fmt)
        yield server


def test_planted_pii_is_nowhere_the_readme_says_it_is_removed(
    database: StoppablePostgres, s3: S3, buckets: Buckets, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    settings = {
        k: str(v)
        for k, v in s3_environment(
            s3,
            buckets,
            DATABASE_URL=database.url,
            EVOTHESIS_DATA_DIR=str(data_dir),
            EXPORT_IN_SERVE="false",
            TRUSTED_PROXIES="127.0.0.1",
            LOG_LEVEL="DEBUG",
        ).items()
    }
    env = process_env(**settings)
    command = [sys.executable, "-m", "evothesis", "serve", "--port", str(port), "--access-log"]
    log = tmp_path / "serve.log"
    sent = 0
    findings: list[str] = []

    with killed_on_exit(start_process(command, env=env, log=log, health_url=f"{base}/health")) as (
        collector
    ):
        for client_id in CLIENTS:
            statuses, events = send_round(base, client_id)
            assert statuses == [200, 200]
            sent += events
        # An outage: the same traffic is acknowledged from the spool.
        database.stop()
        for client_id in CLIENTS:
            statuses, events = send_round(base, client_id)
            assert statuses == [202, 202]
            sent += events
        for path in sorted(data_dir.rglob("*")):
            if path.is_file():
                findings += scan(
                    f"data folder {path.relative_to(data_dir)} (outage)", path.read_bytes()
                )
        database.start()

        def stored() -> int:
            try:
                with psycopg.connect(database.url) as conn:
                    row = conn.execute("SELECT count(*) FROM events_log").fetchone()
            except psycopg.OperationalError:
                return -1
            return int(row[0]) if row else -1

        wait_until(lambda: stored() == sent, 60, f"{sent} events stored after the outage")
        for path in ("/metrics", "/health", "/events/recent?limit=50"):
            answer = httpx.get(f"{base}{path}", headers=OPERATOR_HEADERS, timeout=10)
            assert answer.status_code == 200, (path, answer.text)
            findings += scan(f"GET {path}", answer.content)
        assert stop_process(collector) == 0

    cli = [sys.executable, "-m", "evothesis"]
    for step in (["export", "run"], ["process", "run"]):
        run = subprocess.run([*cli, *step], env=env, capture_output=True, timeout=180, check=False)
        assert run.returncode == 0, run.stderr.decode()
        findings += scan(f"`evothesis {' '.join(step)}` output", run.stdout + run.stderr)

    # Everything written, read back.
    tables = dict(database_text(database.url))
    for name, text in tables.items():
        findings += scan(name, text)
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            findings += scan(f"data folder {path.relative_to(data_dir)}", path.read_bytes())
    objects = 0
    for bucket in (buckets.raw, buckets.processed, buckets.backup):
        for key in s3.keys(bucket):
            objects += 1
            findings += scan(f"s3://{bucket}/{key}", object_text(key, s3.get(bucket, key)))
    findings += scan("the collector's log", log.read_bytes())
    findings += scan("PostgreSQL's log", Path(database.server.log).read_bytes())

    # The audit reached what it audits: the forwarded IP was read (the standard client keeps
    # it as received), failures were recorded, and every client's data was exported.
    assert b"198.51.100.7" in tables["table events_log"]
    assert tables["table failed_events"].count(b"\n") + 1 == 2 * 2 * len(CLIENTS)
    assert objects >= 8, f"only {objects} objects written"
    assert b'"GET /api/v1/config/domain/[REDACTED]' in log.read_bytes()  # access log on
    assert not findings, "\n".join(findings)
