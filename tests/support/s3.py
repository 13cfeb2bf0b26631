"""What the export tests share: a real S3 HTTP API (moto server on loopback), buckets in it,
settings pointing at it, readers that turn every object back into events, and the
exactly-once check the fault and scale-out tests share."""

from __future__ import annotations

import csv
import gzip
import io
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import orjson
import psycopg
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from evothesis.clock import Clock
from evothesis.config import Settings
from evothesis.export.pipeline import ExportPipeline
from evothesis.services import CLI_POOL, Services, open_services
from tests.support.sync import run_coroutine

REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"


@dataclass
class S3:
    """A moto server: ``endpoint`` for the pipeline, ``client`` (boto3) to inspect it."""

    endpoint: str
    client: Any

    def new_bucket(self, prefix: str = "bucket") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        keys: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            keys.extend(item["Key"] for item in page.get("Contents", []))
        return sorted(keys)

    def get(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    yield S3(endpoint, client)
    server.stop()


@dataclass
class Buckets:
    raw: str
    processed: str
    backup: str


@pytest.fixture
def buckets(s3: S3) -> Buckets:
    return Buckets(s3.new_bucket("raw"), s3.new_bucket("processed"), s3.new_bucket("backup"))


def s3_environment(s3: S3, buckets: Buckets, **extra: Any) -> dict[str, Any]:
    """Settings (as environment names) that send every bucket to the moto server."""
    return {
        "RAW_S3_BUCKET": buckets.raw,
        "PROCESSED_S3_BUCKET": buckets.processed,
        "BACKUP_S3_BUCKET": buckets.backup,
        "S3_ENDPOINT_URL": s3.endpoint,
        "S3_REGION": REGION,
        "RAW_S3_ACCESS_KEY": ACCESS_KEY,
        "RAW_S3_SECRET_KEY": SECRET_KEY,
        "PROCESSED_S3_ACCESS_KEY": ACCESS_KEY,
        "PROCESSED_S3_SECRET_KEY": SECRET_KEY,
        "BACKUP_S3_ACCESS_KEY": ACCESS_KEY,
        "BACKUP_S3_SECRET_KEY": SECRET_KEY,
        **extra,
    }


def client_credentials(s3: S3) -> dict[str, str]:
    """A client's own destination credentials for the moto server."""
    return {
        "endpoint": s3.endpoint,
        "region": REGION,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
    }


def run_pipeline(database_url: str, work: Callable[[ExportPipeline], Any], **env: Any) -> Any:
    """Run ``work(pipeline)`` (a coroutine function) with a pipeline built from ``env``."""
    return run_services(database_url, lambda services: work(services.pipeline), **env)


def run_services(
    database_url: str, work: Callable[[Services], Any], *, clock: Clock | None = None, **env: Any
) -> Any:
    """Run ``work(services)`` (a coroutine function) with services built from ``env``."""
    settings = Settings(_env_file=None, ENVIRONMENT="test", **env)

    async def run() -> Any:
        async with open_services(
            settings, database_url=database_url, pool_size=CLI_POOL, clock=clock
        ) as services:
            return await work(services)

    return run_coroutine(run)


# ----------------------------------------------------------------------------- readers


def raw_events(s3: S3, bucket: str) -> list[dict[str, Any]]:
    """Every event of every raw object, in key order."""
    events: list[dict[str, Any]] = []
    for key in s3.keys(bucket, "raw-events/"):
        for line in gzip.decompress(s3.get(bucket, key)).splitlines():
            events.append(orjson.loads(line))
    return events


def decode_file(key: str, data: bytes) -> list[dict[str, Any]]:
    """A processed file back into events, whatever its format (by extension)."""
    if key.endswith(".jsonl"):
        return [orjson.loads(line) for line in data.splitlines()]
    if key.endswith(".json"):  # the seed's document: metadata and events
        events: list[dict[str, Any]] = orjson.loads(data)["events"]
        return events
    if key.endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
        for row in rows:
            row["id"] = int(row["id"])
            row["raw_event_data"] = orjson.loads(row["raw_event_data"])
        return rows
    if key.endswith(".parquet"):
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
        for row in rows:
            row["raw_event_data"] = orjson.loads(row["raw_event_data"])
        return rows
    raise AssertionError(f"unexpected processed object {key}")


def processed_events(s3: S3, bucket: str, client_id: str) -> list[dict[str, Any]]:
    """Every event in a client's processed files (manifests skipped)."""
    events: list[dict[str, Any]] = []
    for key in s3.keys(bucket, f"processed-events/{client_id}/"):
        if not key.endswith(".manifest.json"):
            events.extend(decode_file(key, s3.get(bucket, key)))
    return events


def duplicates(event_ids: list[str]) -> dict[str, int]:
    return {event_id: n for event_id, n in Counter(event_ids).items() if n > 1}


# ----------------------------------------------------------------------------- checks


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it is truthy (and return it) or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)
    return result


def sql(database_url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def insert_events(database_url: str, count: int, clients: tuple[str, ...]) -> None:
    """``count`` events spread round-robin over ``clients``, in one statement."""
    sql(
        database_url,
        """
        INSERT INTO events_log (event_id, event_type, session_id, visitor_id, site_id,
                                client_id, "timestamp", url, path, referrer, user_agent,
                                raw_event_data)
        SELECT gen_random_uuid(), 'pageview', 'session-' || mod(g, 97), 'visitor-' || mod(g, 89),
               c.client_id || '.example', c.client_id, now() - make_interval(secs => g),
               'https://' || c.client_id || '.example/page/' || g, '/page/' || g,
               NULL, 'fault-test', jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g))
        FROM generate_series(1, %(count)s) AS g,
             LATERAL (SELECT (%(clients)s::text[])[1 + mod(g, %(k)s)] AS client_id) AS c
        """,
        {"count": count, "clients": list(clients), "k": len(clients)},
    )


def stored_events(database_url: str) -> dict[str, str]:
    """event_id -> client_id of every event in the buffer (retention keeps them here)."""
    rows = sql(database_url, "SELECT event_id::text, client_id FROM events_log")
    return {event_id: client_id for event_id, client_id in rows}


def assert_exactly_once(
    s3: S3, buckets: Buckets, database_url: str, expected: dict[str, str] | None = None
) -> None:
    """Every event of ``events_log`` (which must equal ``expected`` when given) exactly once
    in the raw bucket and in its client's processed files, nothing else, and the ledger
    settled (no batch or delivery left pending)."""
    stored = stored_events(database_url)
    if expected is not None:
        assert stored == expected, "events_log differs from what the test committed"
    assert stored, "nothing to check"

    raw_ids = [event["event_id"] for event in raw_events(s3, buckets.raw)]
    assert not duplicates(raw_ids), f"raw duplicates: {list(duplicates(raw_ids).items())[:5]}"
    missing = stored.keys() - set(raw_ids)
    extra = set(raw_ids) - stored.keys()
    assert not missing, f"{len(missing)} events missing from the raw bucket"
    assert not extra, f"{len(extra)} unknown events in the raw bucket"

    clients = sorted(set(stored.values()))
    keys = s3.keys(buckets.processed, "processed-events/")
    assert sorted({key.split("/")[1] for key in keys}) == clients
    for client in clients:
        events = processed_events(s3, buckets.processed, client)
        ids = [event["event_id"] for event in events]
        assert not duplicates(ids), f"{client}: duplicates {list(duplicates(ids).items())[:5]}"
        assert {event["client_id"] for event in events} == {client}
        want = {event_id for event_id, owner in stored.items() if owner == client}
        assert set(ids) == want, (
            f"{client}: {len(want - set(ids))} missing, {len(set(ids) - want)} unexpected"
        )

    pending = sql(
        database_url,
        "SELECT (SELECT count(*) FROM export_batches WHERE state = 'pending'),"
        " (SELECT count(*) FROM export_deliveries WHERE state = 'pending')",
    )[0]
    assert pending == (0, 0), f"pending batches, deliveries: {pending}"
