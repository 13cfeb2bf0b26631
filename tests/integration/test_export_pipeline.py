"""The export pipeline end to end: real collectors, real PostgreSQL, a real S3 API (moto).

Events go in through ``POST /collect`` (or, where a test needs control over transactions,
straight into ``events_log``), come out of the raw, processed and backup buckets, and every
object is read back and compared with the database row by row. Nothing of ours is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import os
import random
import re
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pyarrow.parquet as pq
import pytest
from psycopg.rows import dict_row

from evothesis.app import create_app
from evothesis.clock import FixedClock
from evothesis.config import Settings
from evothesis.domain import DeliveryTrigger, SchedulerRole
from evothesis.export.deliveries import MAX_DELIVERY_EVENTS, Cut, Share
from evothesis.export.formats import (
    EXPORT_COLUMNS,
    PARQUET_METADATA_KEY,
    PARQUET_SCHEMA,
)
from evothesis.export.keys import metering_key, raw_key
from evothesis.export.pipeline import GROUP_EVENTS, ExportPipeline, Retention
from evothesis.export.process import SPOOL_PREFIX
from evothesis.export.scheduler import (
    SchedulerState,
    run_scheduler,
    runner_name,
    schedule_status,
)
from evothesis.services import Services
from evothesis.storage.queries import query
from tests.support.loopback import free_port
from tests.support.postgres import register_client
from tests.support.s3 import (
    S3,
    Buckets,
    assert_exactly_once,
    client_credentials,
    decode_file,
    duplicates,
    insert_events,
    raw_events,
    run_pipeline,
    run_services,
    s3_environment,
    sql,
    stored_events,
    wait_until,
)
from tests.support.servers import LOCAL_ORIGIN, RunningCollector, collector_folders, serve_in_thread

StartCollector = Callable[..., RunningCollector]
#: A metering record's grouping: client, site, day of arrival (UTC).
Meter = tuple[str, str, str]

#: Clients of the multi-client tests: id, format, the page they post from, their sites.
CLIENTS = {
    "client_json": ("json", "http://a.test", ("a.test", "shop.a.test")),
    "client_csv": ("csv", "http://b.test", ("b.test", "blog.b.test")),
    "client_parquet": ("parquet", "http://c.test", ("c.test", "docs.c.test")),
    "client_jsonl": ("jsonl", "http://d.test", ("d.test", "feed.d.test")),
}
#: The development client every test database has.
DEV_SITES = ("localhost", "127.0.0.1")

TEXT_COLUMNS = (
    "event_type",
    "session_id",
    "visitor_id",
    "site_id",
    "client_id",
    "url",
    "path",
    "referrer",
    "ip_address",
    "user_agent",
)
PROCESSED_KEY = re.compile(
    r"^(?P<prefix>.*?)processed-events/(?P<client>[^/]+)/(?P<day>\d{4}/\d\d/\d\d)/"
    r"(?P<name>batch|delivery)-(?P<number>\d{12})\.(?P<ext>jsonl|json|csv|parquet)$"
)

# Values a tabular format must survive: separators, quotes, line breaks, non-ASCII text.
AWKWARD = [
    'comma, "double quotes", and a trailing comma,',
    "line one\nline two\r\nline three\rend",
    "héllo wörld, naïve café \u2013 日本語 / Ελληνικά / emoji 🎉🚀",
    "tab\tseparated\tvalue; semicolon; 'single quotes'",
    "",
    "=SUM(A1:A9)",
    'back\\slash and "escaped" \\n not a newline',
]
# Values that look like personal data: whatever the collector makes of them is what the
# database holds, and the exports must hold exactly that.
PII_LIKE = [
    {"email": "jane.doe@example.com", "note": "mail me at jane.doe@example.com"},
    {"phone": "+1 415 555 2671", "text": "call +44 20 7946 0958 today"},
    {"card": "4111 1111 1111 1111", "comment": "card 4111-1111-1111-1111 exp 12/29"},
    {"ssn": "123-45-6789", "ip": "203.0.113.7", "user": {"name": "Zoë O'Brien, Jr."}},
]
TIMESTAMPS = [
    None,  # the collector stamps the arrival
    "2025-07-11T12:00:00Z",
    "2025-07-11T14:30:15.123+02:00",
    "2025-12-31T23:59:59.999999-05:00",
    "2024-02-29T00:00:00.5+00:00",
]


# ------------------------------------------------------------------------------- posting


def event_payload(rng: random.Random, site: str, index: int) -> dict[str, Any]:
    """One event with a known id and a mix of awkward, personal-looking and nested data."""
    event: dict[str, Any] = {
        "eventType": rng.choice(["click", "pageview", "scroll", "form_submit", "custom ✓"]),
        "eventId": str(uuid.uuid4()),
        "siteId": site,
        "eventData": {
            "index": index,
            "label": rng.choice(AWKWARD),
            "nested": {"list": [1, 2.5, None, True, "x,y"], "deep": {"text": rng.choice(AWKWARD)}},
        },
    }
    if index % 3 == 0:
        event["eventData"].update(rng.choice(PII_LIKE))
    if index % 5 == 1:  # separators and line breaks in the flat columns, not only in JSON
        event["sessionId"] = rng.choice(AWKWARD[:4])
        event["visitorId"] = AWKWARD[1]
        event["path"] = f"/p/{rng.choice(AWKWARD[:3])}"
    if index % 4 == 0:
        event["url"] = f"https://{site}/checkout?email=jane%40example.com&q=a,b&n={index}"
        event["path"] = f"/checkout/{index}"
        event["referrer"] = "https://search.example/?q=caf%C3%A9+%22quoted%22"
    timestamp = rng.choice(TIMESTAMPS)
    if timestamp is not None:
        event["timestamp"] = timestamp
    return event


def post_traffic(
    collector: RunningCollector,
    origin: str,
    sites: tuple[str, ...],
    *,
    seed: int,
    requests: int = 6,
) -> dict[str, str]:
    """A client's traffic: single events and batch envelopes; event id -> site id."""
    rng = random.Random(seed)
    posted: dict[str, str] = {}
    with collector.client(origin=origin) as client:
        for number in range(requests):
            site = sites[number % len(sites)]
            if number % 3 == 0:
                body = event_payload(rng, site, number)
                ids = [body["eventId"]]
            else:
                inner = [event_payload(rng, site, i) for i in range(rng.randint(5, 25))]
                for event in inner:
                    del event["siteId"]  # inherited from the envelope
                body = {
                    "eventType": "batch",
                    "eventId": str(uuid.uuid4()),
                    "siteId": site,
                    "sessionId": f"sess-{seed}-{number}",
                    "visitorId": f"vis-{seed}",
                    "url": f"https://{site}/page?utm_source=x,y&name=Zo%C3%AB",
                    "timestamp": "2025-07-11T12:00:00.250Z",
                    "events": inner,
                }
                ids = [body["eventId"], *(event["eventId"] for event in inner)]
            response = client.post("/collect", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["events_processed"] == len(ids)
            posted.update(dict.fromkeys(ids, site))
        # A browser retrying a request it thinks was lost: same ids, no new rows.
        retry = client.post("/collect", json=body)
        assert retry.status_code == 200, retry.text
    return posted


def post_batch(collector: RunningCollector, count: int, *, site: str = "localhost") -> list[str]:
    """``count`` events of the development client in one request; their ids."""
    inner = [{"eventType": "click", "eventId": str(uuid.uuid4())} for _ in range(count - 1)]
    body = {"eventType": "batch", "eventId": str(uuid.uuid4()), "siteId": site, "events": inner}
    with collector.client(origin=LOCAL_ORIGIN) as client:
        response = client.post("/collect", json=body)
    assert response.status_code == 200, response.text
    return [body["eventId"], *(event["eventId"] for event in inner)]


# -------------------------------------------------------------------------- the database


def db_events(database_url: str) -> dict[str, dict[str, Any]]:
    """Every buffered event by event id, with its commit-order position."""
    with psycopg.connect(database_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT id, event_id, event_type, session_id, visitor_id, site_id, client_id,"
            ' "timestamp", url, path, referrer, ip_address, user_agent, raw_event_data,'
            " created_at, xid::text::bigint AS xid FROM events_log ORDER BY xid, id"
        )
        return {str(row["event_id"]): row for row in cur.fetchall()}


def db_batches(database_url: str) -> dict[int, dict[str, Any]]:
    with psycopg.connect(database_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT batch_id, claimed_at, after_xid::text AS after_xid, after_id,"
            " upto_xid::text AS upto_xid, upto_id, event_count, state, raw_key, attempts,"
            " last_error, exported_at, purged_at FROM export_batches ORDER BY batch_id"
        )
        return {row["batch_id"]: row for row in cur.fetchall()}


def execute(database_url: str, sql: str, *params: Any) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql, params or None)


def client_format(database_url: str, client_id: str) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT export_format FROM clients WHERE client_id = %s", (client_id,)
        ).fetchone()
    assert row is not None
    return str(row[0])


def wait_out_backoff(database_url: str) -> None:
    """Stand-in for waiting out the retry backoff (seconds to minutes, with jitter): make
    every paused destination and every waiting batch or delivery due now."""
    execute(database_url, "UPDATE export_destination_state SET paused_until = now()")
    execute(
        database_url, "UPDATE export_deliveries SET next_attempt_at = now() WHERE state = 'pending'"
    )
    execute(
        database_url, "UPDATE export_batches SET next_attempt_at = now() WHERE state = 'pending'"
    )


# --------------------------------------------------------------------------- comparisons


def instant(value: Any) -> datetime:
    """A timestamp as an aware datetime, whether the file held text or a real timestamp."""
    if isinstance(value, datetime):
        assert value.tzinfo is not None, value
        return value
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def assert_same_event(event: dict[str, Any], row: dict[str, Any], *, csv: bool = False) -> None:
    """An exported event carries exactly the database row (CSV cannot tell null from "")."""
    where = f"event {row['event_id']}"
    assert event["id"] == row["id"], where
    assert event["event_id"] == str(row["event_id"]), where
    for column in TEXT_COLUMNS:
        got, want = event[column], row[column]
        if csv:
            got, want = got or None, want or None
        assert got == want, f"{where}: {column} {got!r} != {want!r}"
    for column in ("timestamp", "created_at"):
        assert instant(event[column]) == row[column], f"{where}: {column}"
    assert event["raw_event_data"] == row["raw_event_data"], where


def assert_raw_bucket_matches(
    s3: S3, bucket: str, database_url: str, rows: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every row exactly once in the raw bucket, one object per exported batch, keyed by
    the batch alone."""
    batches = db_batches(database_url)
    assert all(batch["state"] == "exported" for batch in batches.values()), batches
    assert s3.keys(bucket, "raw-events/") == sorted(
        raw_key(batch_id, batch["claimed_at"]) for batch_id, batch in batches.items()
    )
    assert all(batch["raw_key"] == raw_key(i, batch["claimed_at"]) for i, batch in batches.items())
    for batch_id, batch in batches.items():
        lines = gzip.decompress(s3.get(bucket, batch["raw_key"])).splitlines()
        assert len(lines) == batch["event_count"], batch_id
    events = raw_events(s3, bucket)
    ids = [event["event_id"] for event in events]
    assert duplicates(ids) == {}
    assert set(ids) == set(rows)
    for event in events:
        assert_same_event(event, rows[event["event_id"]])
    # Commit order inside and across objects (keys list in batch order).
    positions = [(rows[i]["xid"], rows[i]["id"]) for i in ids]
    assert positions == sorted(positions)
    return events


def assert_exported_once_for_the_dev_client(
    s3: S3, buckets: Buckets, database_url: str, rows: dict[str, dict[str, Any]]
) -> None:
    """Every row exactly once in the raw bucket and in the files of ``client_test``, the
    only client the calling tests post as."""
    assert_raw_bucket_matches(s3, buckets.raw, database_url, rows)
    assert_dev_client_files(s3, buckets, database_url, rows)


def assert_dev_client_files(
    s3: S3, buckets: Buckets, database_url: str, rows: dict[str, dict[str, Any]]
) -> None:
    """``client_test``'s files in the processed bucket, in its format, hold exactly its rows."""
    assert_client_files(
        s3,
        buckets.processed,
        "client_test",
        client_format(database_url, "client_test"),
        rows,
        database_url,
    )


def assert_client_files(
    s3: S3,
    bucket: str,
    client_id: str,
    fmt: str,
    rows: dict[str, dict[str, Any]],
    database_url: str,
    *,
    prefix: str = "",
) -> list[dict[str, Any]]:
    """A client's processed files: well named (a real-time delivery after its batch, any
    other after its number, in the claim day of its batches), with manifests, holding
    exactly its rows in commit order."""
    batches = db_batches(database_url)
    deliveries = delivered(database_url, client_id)
    keys = s3.keys(bucket, f"{prefix}processed-events/{client_id}/")
    data_keys = [key for key in keys if not key.endswith(".manifest.json")]
    assert data_keys, f"no files for {client_id} in {bucket}/{prefix}"
    assert set(keys) - set(data_keys) == {f"{key}.manifest.json" for key in data_keys}
    found: list[dict[str, Any]] = []
    recorded: dict[str, int] = {}
    for key in data_keys:
        match = PROCESSED_KEY.match(key)
        assert match, key
        assert match["prefix"] == prefix
        assert match["client"] == client_id
        assert match["ext"] == fmt
        number = int(match["number"])
        seq, trigger, shares, files = next(
            d
            for d in deliveries
            if (d[1] == "real_time" and d[2] == [number])
            or (d[1] != "real_time" and d[0] == number)
        )
        assert (match["name"] == "batch") == (trigger == "real_time"), key
        in_file = [
            b for b in shares if batches[b]["claimed_at"].strftime("%Y/%m/%d") == match["day"]
        ]
        assert in_file, key
        recorded.update({prefix + f["key"]: f["bytes"] for f in files})
        data = s3.get(bucket, key)
        events = decode_file(key, data)
        assert events, key
        for event in events:
            assert event["client_id"] == client_id, key
            assert_same_event(event, rows[event["event_id"]], csv=fmt == "csv")
        positions = [(rows[e["event_id"]]["xid"], e["id"]) for e in events]
        assert positions == sorted(positions), f"{key} is not in commit order"

        metadata = orjson.loads(s3.get(bucket, f"{key}.manifest.json"))["export_metadata"]
        assert metadata["event_count"] == len(events)
        assert metadata["client_id"] == client_id
        assert metadata["delivery"] == seq
        assert metadata["trigger"] == trigger
        assert metadata["batch_ids"] == in_file
        assert metadata["batch_id"] == (in_file[0] if len(in_file) == 1 else None)
        assert metadata["day"].replace("-", "/") == match["day"]
        assert metadata["format"] == fmt
        assert metadata["columns"] == list(EXPORT_COLUMNS)
        times = [instant(event["timestamp"]) for event in events]
        assert instant(metadata["time_range"]["start"]) == min(times)
        assert instant(metadata["time_range"]["end"]) == max(times)

        if fmt == "json":
            document = orjson.loads(data)
            assert list(document) == ["export_metadata", "events"]
            assert document["export_metadata"] == metadata
            assert all(list(event) == list(EXPORT_COLUMNS) for event in document["events"])
        elif fmt == "jsonl":
            assert data.endswith(b"\n")
            lines = data[:-1].split(b"\n")
            assert all(list(orjson.loads(line)) == list(EXPORT_COLUMNS) for line in lines)
        elif fmt == "csv":
            assert data.startswith(",".join(EXPORT_COLUMNS).encode() + b"\r\n")
            assert data.endswith(b"\r\n")
        else:
            schema = pq.read_schema(io.BytesIO(data))
            assert schema.remove_metadata().equals(PARQUET_SCHEMA), schema
            assert orjson.loads(schema.metadata[PARQUET_METADATA_KEY]) == metadata
        found.extend(events)
    # The ledger records each file where it is, with its size.
    assert recorded == {key: len(s3.get(bucket, key)) for key in data_keys}
    ids = [event["event_id"] for event in found]
    assert duplicates(ids) == {}
    assert sorted(ids) == sorted(i for i, row in rows.items() if row["client_id"] == client_id)
    return found


def delivered(database_url: str, client_id: str) -> list[tuple[int, str, list[int], list[Any]]]:
    """The client's delivered deliveries: number, trigger, batches, files."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT d.seq, d.trigger, array_agg(s.batch_id ORDER BY s.batch_id), d.files"
            " FROM export_deliveries d JOIN export_shares s"
            " ON s.client_id = d.client_id AND s.delivery_seq = d.seq"
            " WHERE d.client_id = %s AND d.state = 'delivered'"
            " GROUP BY d.seq, d.trigger, d.files ORDER BY d.seq",
            (client_id,),
        ).fetchall()
    return [(seq, trigger, list(shares), files) for seq, trigger, shares, files in rows]


def metering_totals(s3: S3, bucket: str) -> tuple[Counter[Meter], Counter[Meter]]:
    """Events and bytes per (client, site, day) in every metering record."""
    events: Counter[Meter] = Counter()
    size: Counter[Meter] = Counter()
    for key in s3.keys(bucket, "metering/"):
        for line in s3.get(bucket, key).splitlines():
            record = orjson.loads(line)
            where = (record["client_id"], record["site_id"], record["day"])
            events[where] += record["events"]
            size[where] += record["bytes"]
    return events, size


def arrival_day(created_at: Any) -> str:
    return instant(created_at).astimezone(UTC).date().isoformat()


async def _export_and_process(pipeline: ExportPipeline) -> tuple[Any, Any]:
    return await pipeline.export(), await pipeline.process()


# ------------------------------------------------------------------------------- servers


@contextlib.contextmanager
def serve(database_url: str, **values: Any) -> Iterator[RunningCollector]:
    """A collector with exactly these settings (``start_collector`` fixes ENVIRONMENT=test)."""
    scratch = collector_folders(values)
    settings = Settings(_env_file=None, **values)
    port = free_port()
    server, thread = serve_in_thread(create_app(settings, database_url=database_url), port)
    running = RunningCollector(f"http://127.0.0.1:{port}", settings, server, thread, scratch)
    try:
        yield running
    finally:
        running.stop()


# --------------------------------------------------------------------------------- tests


def test_every_format_end_to_end(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    for client_id, (fmt, _, sites) in CLIENTS.items():
        register_client(database_url, client_id, *sites, export_format=fmt)
    collector = start_collector()
    posted: dict[str, tuple[str, str]] = {}
    for seed, (client_id, (_, origin, sites)) in enumerate(
        [*CLIENTS.items(), ("client_test", ("", LOCAL_ORIGIN, DEV_SITES))]
    ):
        for event_id, site in post_traffic(collector, origin, sites, seed=seed).items():
            posted[event_id] = (client_id, site)
    rows = db_events(database_url)
    assert len(posted) >= 200
    assert {i: (r["client_id"], r["site_id"]) for i, r in rows.items()} == posted

    env = s3_environment(s3, buckets, EXPORT_BATCH_SIZE=100)
    exported, processed = run_pipeline(database_url, _export_and_process, **env)

    batch_count = -(-len(rows) // 100)
    assert exported.failed_batches == []
    assert (exported.batches, exported.events) == (batch_count, len(rows))
    assert processed.failed == []
    assert processed.events == len(rows)
    raw = assert_raw_bucket_matches(s3, buckets.raw, database_url, rows)

    formats = {client_id: spec[0] for client_id, spec in CLIENTS.items()}
    formats["client_test"] = client_format(database_url, "client_test")
    files = 0
    for client_id, fmt in formats.items():
        assert_client_files(s3, buckets.processed, client_id, fmt, rows, database_url)
        files += len(s3.keys(buckets.processed, f"processed-events/{client_id}/")) // 2
    assert processed.files == files
    # Nothing else in the processed bucket: no stray client folder, no partial file.
    assert {key.split("/")[1] for key in s3.keys(buckets.processed)} == set(formats)

    # Metering: one file per batch and event day, summing to exactly the stored events and
    # raw bytes.
    events, size = metering_totals(s3, buckets.backup)
    assert events == Counter(
        (r["client_id"], r["site_id"], arrival_day(r["created_at"])) for r in rows.values()
    )
    assert {(client, site) for client, site, _ in events} == {
        (client, site) for client, site in posted.values()
    }
    assert len({(client, site) for client, site, _ in events}) == 2 * len(formats)
    raw_size: Counter[Meter] = Counter()
    metering_keys = set()
    for key in s3.keys(buckets.raw):
        batch_id = int(key.rsplit("batch-", 1)[1].split(".", 1)[0])
        for line in gzip.decompress(s3.get(buckets.raw, key)).splitlines():
            event = orjson.loads(line)
            where = (event["client_id"], event["site_id"], arrival_day(event["created_at"]))
            raw_size[where] += len(line) + 1
            metering_keys.add(metering_key(batch_id, date.fromisoformat(where[2])))
    assert size == raw_size
    assert s3.keys(buckets.backup) == sorted(metering_keys)
    assert len(raw) == sum(events.values())

    # The collector redacted the personal-looking values before storing them, and no
    # export brings them back: the rows were compared above (Parquet is compressed), and the
    # text objects are searched here.
    personal = (b"jane.doe@example.com", b"4111 1111 1111 1111", b"123-45-6789")
    stored = b"\n".join(orjson.dumps({k: str(v) for k, v in r.items()}) for r in rows.values())
    assert b"[REDACTED]" in stored
    assert not [value for value in personal if value in stored]
    for bucket in (buckets.raw, buckets.processed, buckets.backup):
        for key in s3.keys(bucket):
            if not key.endswith(".parquet"):
                data = s3.get(bucket, key)
                text = gzip.decompress(data) if key.endswith(".gz") else data
                assert not [value for value in personal if value in text], (bucket, key)

    # A second round finds nothing to do and writes nothing new.
    before = {b: s3.keys(getattr(buckets, b)) for b in ("raw", "processed", "backup")}
    again_exported, again_processed = run_pipeline(database_url, _export_and_process, **env)
    assert (again_exported.batches, again_exported.events) == (0, 0)
    assert (again_processed.files, again_processed.events) == (0, 0)
    assert before == {b: s3.keys(getattr(buckets, b)) for b in ("raw", "processed", "backup")}


def test_client_with_its_own_destination(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    destination = s3.new_bucket("client-dest")
    register_client(
        database_url,
        "client_own",
        "own.test",
        export_format="csv",
        export_destination=f"s3://{destination}/some/prefix",
        export_credentials=client_credentials(s3),
    )
    register_client(
        database_url, "client_json", "a.test", export_format="json", export_schedule="real-time"
    )
    collector = start_collector()
    post_traffic(collector, "http://own.test", ("own.test",), seed=11, requests=4)
    post_traffic(collector, "http://a.test", ("a.test",), seed=12, requests=3)
    rows = db_events(database_url)

    async def export_and_cut(pipeline: ExportPipeline) -> Any:
        exported = await pipeline.export()
        await pipeline.cut_due()  # the real-time client's deliveries
        return exported

    env = s3_environment(s3, buckets)
    exported = run_pipeline(database_url, export_and_cut, **env)
    # A format change applies to deliveries cut after it: a delivery already cut keeps the
    # format (and so the keys) it was cut with.
    execute(
        database_url,
        "UPDATE clients SET export_format = 'parquet' WHERE client_id = %s",
        "client_json",
    )
    processed = run_pipeline(database_url, lambda p: p.process(), **env)
    assert exported.failed_batches == [] and processed.failed == []
    assert processed.events == len(rows)

    own = assert_client_files(
        s3, destination, "client_own", "csv", rows, database_url, prefix="some/prefix/"
    )
    assert len(own) == sum(r["client_id"] == "client_own" for r in rows.values())
    # Only under the prefix, only that client; nothing of it in the default bucket.
    assert all(
        key.startswith("some/prefix/processed-events/client_own/") for key in s3.keys(destination)
    )
    assert s3.keys(buckets.processed, "processed-events/client_own/") == []
    assert_client_files(s3, buckets.processed, "client_json", "json", rows, database_url)
    assert {key.split("/")[1] for key in s3.keys(buckets.processed)} == {"client_json"}


def test_failing_destination_pauses_only_its_client(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    missing = f"client-dest-{uuid.uuid4().hex[:10]}"  # not created yet
    register_client(
        database_url,
        "client_broken",
        "broken.test",
        export_format="parquet",
        export_destination=f"s3://{missing}/exports",
        export_credentials=client_credentials(s3),
    )
    register_client(database_url, "client_json", "a.test", export_format="json")
    env = s3_environment(s3, buckets, EXPORT_BATCH_SIZE=40)
    collector = start_collector(**env)
    post_traffic(collector, "http://broken.test", ("broken.test",), seed=21, requests=4)
    post_traffic(collector, "http://a.test", ("a.test",), seed=22, requests=4)
    post_batch(collector, 15)
    rows = db_events(database_url)
    per_client = Counter(row["client_id"] for row in rows.values())

    exported, processed = run_pipeline(database_url, _export_and_process, **env)
    assert exported.failed_batches == [] and exported.events == len(rows)
    failed_clients = {failure["client_id"] for failure in processed.failed}
    assert failed_clients == {"client_broken"}
    assert all(missing in failure["error"] for failure in processed.failed), processed.failed
    # The others were delivered in the same run.
    assert processed.events == len(rows) - per_client["client_broken"]
    assert_client_files(s3, buckets.processed, "client_json", "json", rows, database_url)
    assert_dev_client_files(s3, buckets, database_url, rows)
    assert s3.keys(buckets.processed, "processed-events/client_broken/") == []

    with collector.client(origin=None) as http:
        status = http.get("/process/status").json()
        pipeline = http.get("/pipeline/status").json()
    assert status["paused_clients"] == ["client_broken"]
    broken = next(c for c in status["clients"] if c["client_id"] == "client_broken")
    assert broken["paused"] is True
    assert broken["paused_until"] is not None
    assert broken["consecutive_failures"] >= 1
    assert missing in broken["last_error"]
    assert broken["pending_events"] == per_client["client_broken"]
    assert (broken["pending_deliveries"], broken["delivered_deliveries"]) == (1, 0)
    healthy = next(c for c in status["clients"] if c["client_id"] == "client_json")
    assert (healthy["paused"], healthy["pending_deliveries"]) == (False, 0)
    assert healthy["delivered_events"] == per_client["client_json"]
    # The raw objects the waiting delivery will read.
    shares = sql(
        database_url, "SELECT batch_id FROM export_shares WHERE client_id = %s", ("client_broken",)
    )
    assert status["unprocessed_objects"] == len(shares) >= 1
    assert pipeline["status"] == "degraded"
    assert pipeline["process"]["paused_clients"] == ["client_broken"]

    # While paused, new batches keep flowing for the others; the paused client's new file
    # waits and is not even attempted (its destination would only fail again).
    more_broken = post_traffic(collector, "http://broken.test", ("broken.test",), seed=23)
    more_json = post_traffic(collector, "http://a.test", ("a.test",), seed=24, requests=3)
    later_exported, later = run_pipeline(database_url, _export_and_process, **env)
    assert later_exported.events == len(more_broken) + len(more_json)
    assert later.failed == []
    assert later.events == len(more_json)
    rows = db_events(database_url)
    per_client = Counter(row["client_id"] for row in rows.values())
    assert_client_files(s3, buckets.processed, "client_json", "json", rows, database_url)
    with collector.client(origin=None) as http:
        status = http.get("/process/status").json()
    broken = next(c for c in status["clients"] if c["client_id"] == "client_broken")
    assert broken["paused"] is True
    assert broken["pending_events"] == per_client["client_broken"]
    assert (broken["pending_deliveries"], broken["delivered_deliveries"]) == (2, 0)

    # Stand-in for waiting out the pause: the bucket appears, the backoff is cut short.
    s3.client.create_bucket(Bucket=missing)
    wait_out_backoff(database_url)
    recovered = run_pipeline(database_url, lambda p: p.process(), **env)
    assert recovered.failed == []
    assert recovered.events == per_client["client_broken"]
    # Only the paused client's files were written; the others' were not delivered again.
    assert recovered.deliveries == recovered.files == broken["pending_deliveries"]
    assert_client_files(
        s3, missing, "client_broken", "parquet", rows, database_url, prefix="exports/"
    )
    assert_client_files(s3, buckets.processed, "client_json", "json", rows, database_url)
    with collector.client(origin=None) as http:
        status = http.get("/process/status").json()
        assert http.get("/pipeline/status").json()["status"] == "healthy"
    assert status["paused_clients"] == []
    assert status["unprocessed_objects"] == 0
    broken = next(c for c in status["clients"] if c["client_id"] == "client_broken")
    assert (broken["paused"], broken["consecutive_failures"], broken["pending_deliveries"]) == (
        False,
        0,
        0,
    )
    assert broken["delivered_events"] == per_client["client_broken"]


def test_unreachable_raw_bucket_keeps_the_batch_and_retries_it(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    collector = start_collector()
    for _ in range(3):
        post_batch(collector, 30)
    rows = db_events(database_url)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    down = s3_environment(s3, buckets, S3_ENDPOINT_URL=closed, EXPORT_BATCH_SIZE=40)

    async def failing(pipeline: ExportPipeline) -> tuple[Any, dict[str, Any]]:
        return await pipeline.export(), await pipeline.export_status()

    report, status = run_pipeline(database_url, failing, **down)
    assert report.batches == 0 and report.events == 0
    assert report.failed_batches, report
    assert all("127.0.0.1" in failure["error"] for failure in report.failed_batches)
    failed_ids = sorted(failure["batch_id"] for failure in report.failed_batches)
    assert [f["batch_id"] for f in status["failed_batches"]] == failed_ids
    assert all(f["last_error"] for f in status["failed_batches"])
    assert status["exported_events"] == 0
    assert status["pending_rows"] == len(rows)
    claimed = db_batches(database_url)
    assert sorted(claimed) == failed_ids
    assert all(b["state"] == "pending" and b["last_error"] for b in claimed.values())
    assert db_events(database_url).keys() == rows.keys()  # nothing lost or purged
    assert s3.keys(buckets.raw) == [] and s3.keys(buckets.backup) == []

    # Within their backoff the failed batches are left alone; the rest of the buffer may
    # still be claimed (and fails the same way), so the claims are read again afterwards.
    early = run_pipeline(database_url, lambda p: p.export(), **down)
    assert early.batches == 0
    retried = {failure["batch_id"] for failure in early.failed_batches}
    assert not retried & set(failed_ids)
    claimed = db_batches(database_url)
    assert sorted(claimed) == sorted([*failed_ids, *retried])
    assert all(batch["attempts"] == 1 for batch in claimed.values())
    assert s3.keys(buckets.raw) == []

    # Through HTTP: new events claimed while the store is down make the run answer 502
    # naming the failure, and the status lists every waiting batch with its error.
    token = f"admin-{uuid.uuid4().hex}"
    collector_down = start_collector(**down, EVOTHESIS_ADMIN_TOKEN=token)
    post_batch(collector, 20)
    rows = db_events(database_url)
    with collector_down.client(origin=None) as http:
        run = http.post("/export/run", headers={"Authorization": f"Bearer {token}"})
        status = http.get("/export/status").json()
    assert run.status_code == 502, run.text
    assert run.json()["status"] == "error"
    assert run.json()["error"]["code"] == "export_failed"
    assert "127.0.0.1" in run.json()["error"]["message"]
    assert run.json()["export"]["events"] == 0
    assert run.json()["pending_rows"] == len(rows)
    claimed = db_batches(database_url)
    assert [f["batch_id"] for f in status["failed_batches"]] == sorted(claimed)
    assert all("127.0.0.1" in f["last_error"] for f in status["failed_batches"])
    assert sum(batch["event_count"] for batch in claimed.values()) == len(rows)
    assert s3.keys(buckets.raw) == []

    wait_out_backoff(database_url)
    up = s3_environment(s3, buckets, EXPORT_BATCH_SIZE=40)
    recovered = run_pipeline(database_url, lambda p: p.export(), **up)
    assert recovered.failed_batches == []
    assert recovered.events == len(rows)
    assert recovered.batches == len(claimed)
    after = db_batches(database_url)
    assert sorted(after) == sorted(claimed) == list(range(1, len(claimed) + 1))
    for batch_id, first in claimed.items():
        # The same batch, the same range, the key it was always going to have.
        same = ("claimed_at", "after_xid", "after_id", "upto_xid", "upto_id", "event_count")
        assert {k: after[batch_id][k] for k in same} == {k: first[k] for k in same}
        assert after[batch_id]["raw_key"] == raw_key(batch_id, first["claimed_at"])
        assert after[batch_id]["attempts"] == 2
    assert_raw_bucket_matches(s3, buckets.raw, database_url, rows)
    status = run_pipeline(database_url, lambda p: p.export_status(), **up)
    assert status["failed_batches"] == []
    assert (status["pending_rows"], status["exported_events"]) == (0, len(rows))


def test_pipeline_endpoints(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    token = f"admin-{uuid.uuid4().hex}"
    access_key = f"AKIA{uuid.uuid4().hex[:16].upper()}"
    secret_key = f"operator-secret-{uuid.uuid4().hex}"
    client_secret = f"client-secret-{uuid.uuid4().hex}"
    destination = s3.new_bucket("client-dest")
    register_client(
        database_url,
        "client_own",
        "own.test",
        export_format="parquet",
        export_destination=f"s3://{destination}",
        export_credentials={**client_credentials(s3), "secret_access_key": client_secret},
    )
    keys = {
        f"{bucket}_S3_{kind}_KEY": value
        for bucket in ("RAW", "PROCESSED", "BACKUP")
        for kind, value in (("ACCESS", access_key), ("SECRET", secret_key))
    }
    env = s3_environment(s3, buckets, EVOTHESIS_ADMIN_TOKEN=token, EXPORT_BATCH_SIZE=50, **keys)
    collector = start_collector(**env)
    ids = post_batch(collector, 70) + post_batch(collector, 10)
    own = post_traffic(collector, "http://own.test", ("own.test",), seed=5, requests=2)
    total = len(ids) + len(own)
    bearer = {"Authorization": f"Bearer {token}"}
    bodies: list[str] = []

    with collector.client(origin=None) as http:
        refused = http.post("/export/run")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "unauthorized"
        wrong = http.post("/export/run", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401

        before = http.get("/export/status")
        assert before.status_code == 200
        assert before.json()["pending_rows"] == total
        assert before.json()["unclaimed_rows"] == total
        assert before.json()["lag_seconds"] is not None

        run = http.post("/export/run", headers=bearer)
        assert run.status_code == 200, run.text
        body = run.json()
        assert body["status"] == "success"
        assert body["export"]["events"] == total
        assert body["export"]["batches"] == -(-total // 50)
        assert body["export"]["failed_batches"] == []
        assert body["pending_rows"] == 0
        assert (
            body["message"] == f"{total} event(s) exported in {body['export']['batches']} batch(es)"
        )

        status = http.get("/export/status").json()
        assert status["exported_events"] == total
        assert status["exported_batches"] == body["export"]["batches"]
        assert status["failed_batches"] == [] and status["pending_rows"] == 0
        assert status["last_run"]["raw_key"].startswith("raw-events/")
        assert status["interval_seconds"] == 60.0

        config = http.get("/export/config").json()
        assert config["buckets"]["raw"]["url"] == f"s3://{buckets.raw}"
        assert config["buckets"]["raw"]["endpoint"] == s3.endpoint
        assert config["buckets"]["raw"]["credentials"] is True
        assert config["batch_size"] == 50

        process = http.post("/process/run", headers=bearer)
        assert process.status_code == 200, process.text
        assert process.json()["status"] == "success"
        assert process.json()["process"]["events"] == total
        assert process.json()["unprocessed_objects"] == 0

        processing = http.get("/process/status").json()
        assert processing["unprocessed_objects"] == 0
        assert processing["pending_deliveries"] == 0
        assert processing["paused_clients"] == []
        delivered = {c["client_id"]: c["delivered_events"] for c in processing["clients"]}
        assert delivered == {"client_test": len(ids), "client_own": len(own)}

        overall = http.get("/pipeline/status").json()
        assert overall["status"] == "healthy"
        # No process runs the schedule (this collector does not, and there is no worker).
        assert overall["scheduler"]["running"] is False
        assert overall["scheduler"]["runners"] == []
        assert overall["scheduler"]["last_round"] is None
        assert overall["export"]["exported_events"] == total
        assert overall["config"] == config

        for response in (before, run, process):
            bodies.append(response.text)
        for path in ("/export/status", "/export/config", "/process/status", "/pipeline/status"):
            bodies.append(http.get(path).text)

    for text in bodies:
        for secret in (secret_key, access_key, client_secret, token):
            assert secret not in text
    rows = db_events(database_url)
    assert_raw_bucket_matches(s3, buckets.raw, database_url, rows)
    assert_client_files(s3, destination, "client_own", "parquet", rows, database_url)
    assert_dev_client_files(s3, buckets, database_url, rows)


@pytest.mark.parametrize(
    ("environment", "token", "header", "expected"),
    [
        pytest.param("development", None, None, 200, id="development-open"),
        pytest.param("test", None, None, 401, id="test-closed-without-token"),
        pytest.param("production", None, None, 401, id="production-closed-without-token"),
        pytest.param("production", "tok-123", None, 401, id="production-no-bearer"),
        pytest.param("production", "tok-123", "Bearer wrong", 401, id="production-wrong-bearer"),
        pytest.param("production", "tok-123", "Bearer tok-123", 200, id="production-bearer"),
        pytest.param("development", "tok-123", None, 401, id="development-token-set"),
    ],
)
def test_who_may_trigger_runs(
    database_url: str,
    s3: S3,
    buckets: Buckets,
    environment: str,
    token: str | None,
    header: str | None,
    expected: int,
) -> None:
    """The documented rule: the admin token; without one configured, a development process
    answers callers on its own machine (the test client is on loopback)."""
    env = s3_environment(s3, buckets, ENVIRONMENT=environment)
    if token:
        env["EVOTHESIS_ADMIN_TOKEN"] = token
    headers = {"Authorization": header} if header else {}
    with serve(database_url, **env) as collector, collector.client(origin=None) as http:
        for path, kind in (("/export/run", "export"), ("/process/run", "process")):
            response = http.post(path, headers=headers)
            assert response.status_code == expected, response.text
            body = response.json()
            if expected == 401:
                assert body["status"] == "error"
                assert body["error"]["code"] == "unauthorized"
                assert "EVOTHESIS_ADMIN_TOKEN" in body["error"]["message"]
            else:
                assert body["status"] == "success"
                assert body[kind]["failed" if kind == "process" else "failed_batches"] == []
        # Reading the pipeline's state follows the same rule (the operator token would do
        # too, where one is configured).
        assert http.get("/export/status", headers=headers).status_code == expected


def test_retention_drops_a_day_only_once_every_event_of_it_is_exported(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    """Retention drops a day's partition of the buffer whole: only after that day and the
    next have ended (the deduplication window), and once every event it holds is in a batch
    exported longer than the retention ago; an event of a day without a partition (in the
    DEFAULT partition) goes by itself with its batch."""
    collector = start_collector()
    first = post_batch(collector, 30) + post_batch(collector, 12)
    assert_counts(collector, total=42, buffered=42)
    env = s3_environment(s3, buckets, BUFFER_RETENTION="1s", EXPORT_BATCH_SIZE=25)
    exported = run_pipeline(database_url, lambda p: p.export(), **env)
    export_ended = time.monotonic()
    assert exported.events == len(first)
    later = post_batch(collector, 20)
    assert_counts(collector, total=62, buffered=62)
    [today] = {buffer_partition(database_url, event_id) for event_id in first + later}
    days_later = FixedClock(datetime.now(UTC) + timedelta(days=3))

    def purge(clock: FixedClock | None, **values: Any) -> Retention:
        retention: Retention = run_services(
            database_url, lambda s: s.pipeline.purge(), clock=clock, **{**env, **values}
        )
        return retention

    # Not yet as old as the retention (an hour here), though the day is long over.
    # (Days that were empty go at once.)
    assert today not in purge(days_later, BUFFER_RETENTION="1h").dropped
    assert all(b["purged_at"] is None for b in db_batches(database_url).values())
    time.sleep(max(0.0, 1.3 - (time.monotonic() - export_ended)))
    # Past the retention, but the day (and the next, the deduplication window) still runs.
    retention = purge(None)
    assert retention.deleted == 0 and today not in retention.dropped
    assert all(b["purged_at"] is not None for b in db_batches(database_url).values())
    # Days later: 20 events of the day are still to be exported, so it stays whole.
    assert today not in purge(days_later).dropped
    assert set(db_events(database_url)) == set(first) | set(later)
    assert_counts(collector, total=62, buffered=62)

    # The survivors are exported once, and then the day goes.
    again = run_pipeline(database_url, lambda p: p.export(), **env)
    assert again.events == len(later)
    time.sleep(1.3)
    retention = purge(days_later)
    assert today in retention.dropped
    assert db_events(database_url) == {}
    with collector.client() as client:  # retention lowers the buffer only
        counts = client.get("/events/count").json()
    assert (counts["count"], counts["buffer"]["count"]) == (62, 0)
    ids = [event["event_id"] for event in raw_events(s3, buckets.raw)]
    assert duplicates(ids) == {} and set(ids) == set(first) | set(later)

    # A spool replay of that day, now gone, lands in the DEFAULT partition: exported once,
    # then deleted with its batch.
    replayed = str(uuid.uuid4())
    execute(
        database_url,
        "INSERT INTO events_log (event_id, event_type, site_id, client_id, timestamp, "
        "raw_event_data, created_at) VALUES (%s, 'click', 'localhost', 'client_test', now(), "
        "'{}', now() - interval '1 minute')",
        replayed,
    )
    assert buffer_partition(database_url, replayed) == "events_log_default"
    assert run_pipeline(database_url, lambda p: p.export(), **env).events == 1
    time.sleep(1.3)
    assert purge(days_later).deleted == 1
    assert db_events(database_url) == {}
    status = run_pipeline(database_url, lambda p: p.export_status(), **env)
    assert status["purged_batches"] == len(db_batches(database_url))
    # Claimed into a batch that is not exported yet: counted once all the same.
    post_batch(collector, 3)
    assert run_pipeline(database_url, lambda p: p.ledger.claim(25), **env).event_count == 3
    assert_counts(collector, total=66, buffered=3)


def buffer_partition(database_url: str, event_id: str) -> str:
    """The partition of events_log that holds an event."""
    with psycopg.connect(database_url) as conn:
        [(table,)] = conn.execute(
            "SELECT tableoid::regclass::text FROM events_log WHERE event_id = %s", (event_id,)
        ).fetchall()
    return str(table)


def assert_counts(collector: RunningCollector, *, total: int, buffered: int) -> None:
    """/events/count of the development client: all time, and in the buffer."""
    with collector.client() as client:
        counts = client.get("/events/count").json()
    assert (counts["count"], counts["by_client"]) == (total, {"client_test": total})
    assert counts["buffer"] == {"count": buffered, "by_client": {"client_test": buffered}}


def test_scheduler_exports_early_when_the_backlog_reaches_a_batch(
    database_url: str, start_collector: StartCollector, s3: S3, buckets: Buckets
) -> None:
    collector = start_collector()
    initial = post_batch(collector, 10)
    env = s3_environment(s3, buckets, EXPORT_BATCH_SIZE=50)

    async def wait_until(condition: Callable[[], bool], limit_s: float) -> float:
        started = time.monotonic()
        while not condition():
            assert time.monotonic() - started < limit_s, "timed out"
            await asyncio.sleep(0.02)
        return time.monotonic() - started

    async def work(services: Services) -> tuple[SchedulerState, list[str]]:
        pipeline = services.pipeline
        state = SchedulerState(runner_name(pipeline.ledger), SchedulerRole.WORKER)
        scheduler = run_scheduler(
            pipeline,
            state,
            interval_s=3600,
            notices=services.notices,
            replays=services.replays,
            poll_s=0.1,
        )
        task = asyncio.create_task(scheduler)
        try:
            await wait_until(lambda: state.rounds >= 1, 10)
            assert state.running
            # What any collector reads: the schedule as this runner records it.
            recorded = await schedule_status(pipeline.ledger)
            assert recorded["running"] is True
            assert recorded["ran_by"] == {"runner": state.runner, "role": "worker"}
            assert recorded["last_round"]["export"]["events"] == len(initial)
            [runner] = recorded["runners"]
            assert (runner["rounds"], runner["interval_seconds"]) == (1, 3600)
            assert runner["triggers"] == {"schedule": 1}
            assert recorded["next_due_at"] > recorded["last_round_at"]
            assert state.last_round is not None
            assert state.last_round["trigger"] == "schedule"
            assert state.last_round["export"]["events"] == len(initial)
            # Below the threshold nothing happens for a while (the interval is an hour).
            few = await asyncio.to_thread(post_batch, collector, 49)
            await asyncio.sleep(0.6)
            assert state.rounds == 1
            assert state.triggers == {"schedule": 1, "threshold": 0, "delivery": 0}
            more = await asyncio.to_thread(post_batch, collector, 11)
            # The round starts within a few polls (the trigger is counted as it starts) and
            # finishes soon after, an hour before the schedule would have run it.
            await wait_until(lambda: state.triggers["threshold"] == 1, 2)
            await wait_until(lambda: state.rounds >= 2, 20)
            assert state.last_round["trigger"] == "threshold"
            assert state.last_round["export"]["events"] == len(few) + len(more)
            assert state.last_round["process"]["events"] == len(few) + len(more)
            assert state.triggers == {"schedule": 1, "threshold": 1, "delivery": 0}
            assert state.last_error is None
            [runner] = (await schedule_status(pipeline.ledger))["runners"]
            assert runner["triggers"] == {"schedule": 1, "threshold": 1}
            assert runner["rounds"] == 2
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Stopped: no longer running, its last round still shown.
        stopped = await schedule_status(pipeline.ledger)
        assert stopped["running"] is False and stopped["runners"] == []
        assert stopped["last_round"]["trigger"] == "threshold"
        return state, initial + few + more

    state, posted = run_services(database_url, work, **env)
    assert state.running is False
    rows = db_events(database_url)
    assert set(rows) == set(posted)
    assert_exported_once_for_the_dev_client(s3, buckets, database_url, rows)


def test_a_scheduler_that_fell_silent_is_not_running(
    database_url: str, s3: S3, buckets: Buckets
) -> None:
    """A worker killed without stopping keeps its row; its silence says it is gone."""

    async def work(pipeline: ExportPipeline) -> tuple[dict[str, Any], dict[str, Any]]:
        await pipeline.ledger.scheduler_started("host:1/abc", SchedulerRole.WORKER, 60)
        alive = await schedule_status(pipeline.ledger)
        await asyncio.to_thread(
            sql,
            database_url,
            "UPDATE export_schedulers SET heartbeat_at = now() - interval '31 seconds'",
        )
        return alive, await schedule_status(pipeline.ledger)

    alive, silent = run_pipeline(database_url, work, **s3_environment(s3, buckets))
    assert alive["running"] is True
    assert [(r["runner"], r["role"], r["rounds"]) for r in alive["runners"]] == [
        ("host:1/abc", "worker", 0)
    ]
    assert alive["next_due_at"] is not None and alive["last_round"] is None
    assert silent["running"] is False and silent["runners"] == []


def _insert_event(conn: psycopg.Connection[Any], label: str) -> str:
    event_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO events_log (event_id, event_type, site_id, client_id, timestamp,"
        " raw_event_data) VALUES (%s, 'custom', 'localhost', 'client_test', now(), %s)",
        (event_id, orjson.dumps({"eventType": "custom", "label": label}).decode()),
    )
    return event_id


def test_a_late_commit_is_not_skipped(database_url: str, s3: S3, buckets: Buckets) -> None:
    env = s3_environment(s3, buckets)
    with psycopg.connect(database_url, autocommit=True) as conn:
        before = _insert_event(conn, "committed before T1 began")
    with (
        psycopg.connect(database_url) as slow,
        psycopg.connect(database_url, autocommit=True) as fast,
    ):
        early = _insert_event(slow, "inserted first, committed last")  # T1 stays open
        late = _insert_event(fast, "inserted second, committed first")
        assert set(db_events(database_url)) == {before, late}  # T1's row is invisible

        # While T1 is open nothing at or after its xid is final: E2 waits too, the row
        # committed before T1 began goes.
        waiting = run_pipeline(database_url, lambda p: p.export(), **env)
        assert (waiting.batches, waiting.events, waiting.failed_batches) == (1, 1, [])
        assert [event["event_id"] for event in raw_events(s3, buckets.raw)] == [before]
        assert run_pipeline(database_url, lambda p: p.export(), **env).events == 0

        slow.commit()

    rows = db_events(database_url)
    assert rows[early]["id"] < rows[late]["id"]  # ids out of commit order
    assert rows[early]["xid"] < rows[late]["xid"]
    exported, processed = run_pipeline(database_url, _export_and_process, **env)
    assert (exported.batches, exported.events, processed.events) == (1, 2, 3)
    assert_exported_once_for_the_dev_client(s3, buckets, database_url, rows)

    # A later event lands in a new batch, and nothing is exported twice.
    with psycopg.connect(database_url, autocommit=True) as conn:
        third = _insert_event(conn, "after the second batch")
    exported = run_pipeline(database_url, lambda p: p.export(), **env)
    assert (exported.batches, exported.events) == (1, 1)
    ids = [event["event_id"] for event in raw_events(s3, buckets.raw)]
    assert sorted(ids) == sorted([before, early, late, third])


def test_deliveries_are_leased_a_whole_batch_at_a_time(
    database_url: str, s3: S3, buckets: Buckets
) -> None:
    """A lease holds every due real-time delivery of the oldest batch, so each raw object is
    read once for all its clients; a second exporter gets the next batch, a paused client
    waits."""
    env = s3_environment(s3, buckets, EXPORT_BATCH_SIZE=3, EXPORT_SCHEDULE="real-time")
    clients = ("client_a", "client_b", "client_c")
    with psycopg.connect(database_url, autocommit=True) as conn:
        for client_id in clients * 3:
            conn.execute(
                "INSERT INTO events_log (event_id, event_type, site_id, client_id, timestamp,"
                " raw_event_data) VALUES (gen_random_uuid(), 'custom', 'localhost', %s, now(),"
                " '{}')",
                (client_id,),
            )
        conn.execute(
            "INSERT INTO export_destination_state (client_id, paused_until)"
            " VALUES ('client_b', now() + interval '1 hour')"
        )

    async def lease(pipeline: ExportPipeline) -> list[list[tuple[int, str]]]:
        exported = await pipeline.export()
        assert exported.batches == 3, exported
        assert await pipeline.cut_due() == 9
        leases = []
        for owner in ("one exporter", "another exporter", "a third", "a fourth"):
            pipeline.ledger.owner = owner
            leases.append(await pipeline.ledger.lease_deliveries(group_events=1000))
        return [
            sorted((share.batch_id, d.client_id) for d in leased for share in d.shares)
            for leased in leases
        ]

    *leases, rest = run_pipeline(database_url, lease, **env)
    batches = sorted(db_batches(database_url))
    assert leases == [[(batch, "client_a"), (batch, "client_c")] for batch in batches]
    assert rest == []


def test_a_batch_being_leased_elsewhere_is_skipped_not_waited_for(
    database_url: str, s3: S3, buckets: Buckets
) -> None:
    """While another exporter's lease of the oldest batch is still being written (its rows
    locked), a lease takes the next batch instead of finding nothing and stopping."""
    env = s3_environment(s3, buckets, EXPORT_BATCH_SIZE=2)

    async def export_and_cut(pipeline: ExportPipeline) -> int:
        exported = await pipeline.export()
        await pipeline.cut_due()  # client_test delivers in real time: one per batch
        return exported.batches

    with psycopg.connect(database_url, autocommit=True) as conn:
        for label in ("a", "b", "c", "d"):
            _insert_event(conn, label)
    assert run_pipeline(database_url, export_and_cut, **env) == 2
    oldest, newest = sorted(db_batches(database_url))
    with psycopg.connect(database_url) as other:
        other.execute(
            "SELECT 1 FROM export_deliveries WHERE first_batch = %s FOR UPDATE", (oldest,)
        )

        async def lease(pipeline: ExportPipeline) -> list[int]:
            leased = await pipeline.ledger.lease_deliveries(group_events=1000)
            return [share.batch_id for delivery in leased for share in delivery.shares]

        assert run_pipeline(database_url, lease, **env) == [newest]
        other.rollback()


def test_a_round_delivers_exported_batches_while_its_raw_export_goes_on(
    database_url: str, s3: S3, buckets: Buckets
) -> None:
    """A scheduled round processes each batch as soon as it is exported, not after the last.

    Here the round's raw export exports a batch left by an exporter that died, then has to
    wait at the claim of the next one (the test holds the claim lock): that batch's client
    files must be delivered meanwhile. Once the claim goes through, the round finishes the
    backlog, and every event is in the raw bucket and the client's files exactly once.
    """
    env = s3_environment(s3, buckets, EXPORT_BATCH_SIZE=2)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for label in "abcdef":
            _insert_event(conn, label)
    run_pipeline(database_url, lambda p: p.ledger.claim(2), **env)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE export_batches SET lease_owner = NULL, lease_until = NULL")

    # The lock is released first on the way out, so a failing check never leaves the round
    # waiting for it.
    with ThreadPoolExecutor(1) as background, psycopg.connect(database_url) as claims:
        claims.execute(query("export_claim_lock"))
        round_ = background.submit(run_pipeline, database_url, lambda p: p.run_once(), **env)
        wait_until(lambda: delivered_files(database_url) or round_.done(), 60, "a delivered file")
        delivered_while_claiming = delivered_files(database_url)
        claims.rollback()
        result = round_.result(timeout=120)

    assert delivered_while_claiming == 1
    assert (result["export"]["batches"], result["export"]["events"]) == (3, 6)
    assert (result["process"]["files"], result["process"]["events"]) == (3, 6)
    rows = db_events(database_url)
    assert_exported_once_for_the_dev_client(s3, buckets, database_url, rows)


def delivered_files(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM export_deliveries WHERE state = 'delivered'")
        return int(row.fetchone()[0])  # type: ignore[index]


def test_every_clients_backlog_is_one_group_that_reads_each_raw_object_once(
    database_url: str, s3: S3, buckets: Buckets
) -> None:
    """With a backlog, each client's delivery spans the same batches as every other
    client's: one lease takes them all (``GROUP_EVENTS`` bounds a group, not a delivery's
    size), each raw object is read once for all of them, and each delivery's lines wait on
    disk until its last object is read. Every event then reaches its client exactly once,
    and the folder of those lines is gone, as is one that a killed exporter left behind."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = Path(tempfile.gettempdir(), f"{SPOOL_PREFIX}{dead.pid}-killed")
    stale.mkdir()
    (stale / "0.jsonl").write_bytes(b"{}\n")
    clients = ("client_a", "client_b", "client_c")
    insert_events(database_url, 90, clients)
    expected = stored_events(database_url)
    env = s3_environment(s3, buckets, EXPORT_BATCH_SIZE=10, EXPORT_SCHEDULE="hourly")
    reads: Counter[str] = Counter()

    async def work(pipeline: ExportPipeline) -> list[tuple[str, int]]:
        assert (await pipeline.export()).batches == 9
        for client_id in clients:
            await pipeline.ledger.cut(
                client_id, Cut(DeliveryTrigger.MANUAL), max_events=MAX_DELIVERY_EVENTS
            )
        group = await pipeline.ledger.lease_deliveries(group_events=GROUP_EVENTS)
        processor = pipeline.processor

        async def source(share: Share) -> bytes:
            reads[share.raw_key] += 1
            return await processor.read_raw(share)

        rendered = await processor.render(group, fmt=None, source=source)
        assert [item.error for item in rendered] == [None] * len(clients)
        results = await processor.process(group)
        return sorted((result.client_id, result.events) for result in results)

    assert run_pipeline(database_url, work, **env) == [(client, 30) for client in clients]
    assert len(reads) == 9 and set(reads.values()) == {1}, reads
    assert_exactly_once(s3, buckets, database_url, expected)
    assert not stale.exists()
    assert not list(Path(tempfile.gettempdir()).glob(f"{SPOOL_PREFIX}{os.getpid()}-*"))
